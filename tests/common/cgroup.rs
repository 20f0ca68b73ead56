//! A cgroup v1 pair (memory and cpu) for the tests that put the server on
//! a small host: tests/small_host.rs and tests/hostile.rs. Made with its
//! limits, read back, and removed when dropped, also when a test fails.
//! What is not here: deciding whether the test can run (each test says
//! why it skips), starting the server in the group.

use std::path::{Path, PathBuf};

pub const MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";
pub const CPU_ROOT: &str = "/sys/fs/cgroup/cpu";

/// A memory and a cpu group of one name; processes still inside are moved
/// back to the root groups and both directories removed when dropped.
pub struct Cgroup {
    pub memory: PathBuf,
    pub cpu: PathBuf,
}

impl Cgroup {
    /// Groups limited to `memory` bytes, of which TCP buffers at most
    /// `tcp` bytes (which also turns on their accounting: cgroup v1
    /// charges socket buffers to a group only once this is set), and to
    /// 10% of one core.
    pub fn new(name: &str, memory: u64, tcp: u64) -> Cgroup {
        let g = Cgroup {
            memory: Path::new(MEMORY_ROOT).join(name),
            cpu: Path::new(CPU_ROOT).join(name),
        };
        std::fs::create_dir_all(&g.memory).expect("create the memory cgroup");
        std::fs::create_dir_all(&g.cpu).expect("create the cpu cgroup");
        // TCP accounting first: it starts with the limit, before any
        // socket of the group exists.
        write(&g.memory, "memory.kmem.tcp.limit_in_bytes", tcp);
        write(&g.memory, "memory.limit_in_bytes", memory);
        write(&g.cpu, "cpu.cfs_period_us", 100_000);
        write(&g.cpu, "cpu.cfs_quota_us", 10_000);
        g
    }

    /// A number from one of the memory group's files.
    pub fn value(&self, file: &str) -> u64 {
        let text = std::fs::read_to_string(self.memory.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        text.trim().parse().expect("a number")
    }

    /// `oom_kill N` of memory.oom_control.
    pub fn oom_kills(&self) -> u64 {
        let text = std::fs::read_to_string(self.memory.join("memory.oom_control"))
            .expect("memory.oom_control");
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for (dir, root) in [(&self.memory, MEMORY_ROOT), (&self.cpu, CPU_ROOT)] {
            if !dir.exists() {
                continue;
            }
            // Whatever is still inside (the server if the test failed
            // before killing it) goes back to the root group.
            if let Ok(pids) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in pids.lines() {
                    let _ = std::fs::write(Path::new(root).join("cgroup.procs"), pid);
                }
            }
            // The kernel may take a moment to let go of an emptied group.
            let gone = super::poll(super::WAIT, || std::fs::remove_dir(dir).ok());
            if gone.is_none() {
                eprintln!("could not remove {}", dir.display());
            }
        }
    }
}

fn write(dir: &Path, file: &str, value: u64) {
    std::fs::write(dir.join(file), value.to_string())
        .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()));
}
