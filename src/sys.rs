//! The few process-level facts and settings std does not offer: the
//! open-file limit (raised here), and the memory the process may use (read
//! here: its memory cgroup's limit, else the host's memory).
//!
//! What is *not* here: what follows from them (how many clients, how much
//! output may wait: [`crate::limits`]). The parsers of the files read are
//! pure functions of their text, tested on fixtures of cgroup v1 and v2
//! hosts; only [`memory_limit`] touches the file system.

use std::io;
use std::path::Path;

/// Never ask for more than this, even where the hard limit is "unlimited":
/// the kernel's own ceiling (`fs.nr_open`) is 1,048,576 by default.
const FD_CEILING: u64 = 1 << 20;

/// Raises the soft open-file limit to the hard limit (every client is a
/// descriptor, and the usual soft default is only 1024). Returns the limit
/// now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(FD_CEILING)
}

/// The memory the process may use, and where that figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit {
    /// Bytes.
    pub bytes: u64,
    /// What set it.
    pub source: MemorySource,
}

/// Where a [`MemoryLimit`] was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySource {
    /// `memory.limit_in_bytes` of the process's memory cgroup (v1), or of
    /// an ancestor's, whichever is smallest.
    CgroupV1,
    /// `memory.max` of the process's cgroup (v2), or of an ancestor's.
    CgroupV2,
    /// No cgroup limit under the host's memory: `MemTotal` of /proc/meminfo.
    Host,
}

impl MemorySource {
    /// How the start line names it: `cgroup v1`, `cgroup v2`, `host memory`.
    pub fn name(self) -> &'static str {
        match self {
            MemorySource::CgroupV1 => "cgroup v1",
            MemorySource::CgroupV2 => "cgroup v2",
            MemorySource::Host => "host memory",
        }
    }
}

/// The memory this process may use: its cgroup's limit if it has one
/// below the host's memory, else the host's memory. `None` where it cannot
/// be read (not Linux, or /proc is not mounted): the limits then follow
/// from the open-file limit alone, as before memory was read.
pub fn memory_limit() -> Option<MemoryLimit> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let read = |p: &Path| std::fs::read_to_string(p).ok();
        memory_limit_from(
            &read(Path::new("/proc/self/cgroup")).unwrap_or_default(),
            &read(Path::new("/proc/self/mountinfo")).unwrap_or_default(),
            &read(Path::new("/proc/meminfo"))?,
            &read,
        )
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        None
    }
}

/// [`memory_limit`] from the text of /proc/self/cgroup, /proc/self/mountinfo
/// and /proc/meminfo, reading a cgroup's files through `read` (their
/// contents, `None` when missing). A cgroup limit counts only if it is
/// below the host's memory (v1 writes "no limit" as a huge number).
// Run once, at start: kept out of line, it costs 480 bytes less of binary.
#[inline(never)]
pub fn memory_limit_from(
    cgroup: &str,
    mountinfo: &str,
    meminfo: &str,
    read: &dyn Fn(&Path) -> Option<String>,
) -> Option<MemoryLimit> {
    let host = mem_total(meminfo)?;
    let host = MemoryLimit {
        bytes: host,
        source: MemorySource::Host,
    };
    let group = cgroup_limit(cgroup, mountinfo, read);
    Some(group.filter(|g| g.bytes < host.bytes).unwrap_or(host))
}

/// `MemTotal:` of /proc/meminfo, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    kib.checked_mul(1024)
}

/// The smallest memory limit on the way from the process's cgroup up to
/// the root of its mount: v1's memory controller if the process is in one,
/// else v2's unified hierarchy.
fn cgroup_limit(
    cgroup: &str,
    mountinfo: &str,
    read: &dyn Fn(&Path) -> Option<String>,
) -> Option<MemoryLimit> {
    // /proc/self/cgroup: `ID:CONTROLLERS:PATH`, one line per hierarchy;
    // v1's memory controller is named in CONTROLLERS, v2's line is `0::PATH`.
    let v1 = cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    let (path, source, fstype, file) = match v1 {
        Some(path) => (
            path,
            MemorySource::CgroupV1,
            "cgroup",
            "memory.limit_in_bytes",
        ),
        None => {
            let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
            (path, MemorySource::CgroupV2, "cgroup2", "memory.max")
        }
    };
    let (root, mut dir) = cgroup_mount(mountinfo, fstype, source == MemorySource::CgroupV1)?;
    // The mount shows the hierarchy from `root` down (a container sees its
    // own subtree): the group's directory is the rest of its path. Each
    // directory on the way down may hold a limit; the smallest binds.
    let below = path.strip_prefix(root.as_str()).unwrap_or(path);
    let mut smallest = u64::MAX;
    for part in std::iter::once("").chain(below.split('/')) {
        if !part.is_empty() {
            dir.push('/');
            dir.push_str(part);
        }
        let limit = read(Path::new(&dir).join(file).as_path()).and_then(|t| parse_limit(&t));
        smallest = smallest.min(limit.unwrap_or(u64::MAX));
    }
    (smallest < u64::MAX).then_some(MemoryLimit {
        bytes: smallest,
        source,
    })
}

/// The root and mount point of the cgroup hierarchy of type `fstype`
/// (`cgroup`: v1, with the memory controller if `memory`; `cgroup2`).
/// Both as mountinfo writes them, which escapes a space, tab, newline or
/// backslash (`\040`, `\011`, `\012`, `\134`): a root holding one (a
/// systemd-nspawn `machine-a\x2db.scope`) does not prefix the group's
/// path, and then only the limit at the mount's root, the container's own
/// group, is found. Unescaping cost 500 bytes of binary.
/// mountinfo: `ID PARENT MAJ:MIN ROOT POINT OPTIONS [TAGS...] - TYPE SOURCE SUPER`.
fn cgroup_mount(mountinfo: &str, fstype: &str, memory: bool) -> Option<(String, String)> {
    mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        // The optional tags end at a lone `-`; then TYPE SOURCE SUPER.
        let dash = f.iter().position(|w| *w == "-")?;
        let (root, point) = (f.get(3)?, f.get(4)?);
        let (kind, options) = (f.get(dash + 1)?, f.get(dash + 3).unwrap_or(&""));
        if *kind != fstype || (memory && !options.split(',').any(|o| o == "memory")) {
            return None;
        }
        Some((root.to_string(), point.to_string()))
    })
}

/// A limit file's value: bytes, `None` for "max" (v2: no limit) or text
/// that is not a number.
fn parse_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::PathBuf;

    const MEMINFO: &str = "MemTotal:       24683904 kB\nMemFree:        22183720 kB\n";
    const HOST: u64 = 24_683_904 * 1024;

    /// The files of a fake cgroup tree, read as the real ones would be.
    fn files(entries: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let map: HashMap<PathBuf, String> = entries
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        move |p: &Path| map.get(p).cloned()
    }

    // This machine's own: cgroup v1, and an empty unified (v2) mount.
    const V1_CGROUP: &str = "9:name=systemd:/\n4:memory:/process_api/16e5\n1:cpu:/\n0::/\n";
    const V1_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    /// What cgroup v1 writes for "no limit".
    const V1_NONE: &str = "9223372036854771712\n";

    #[test]
    fn v1_takes_the_smallest_limit_from_the_group_up() {
        let read = files(&[
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", V1_NONE),
            (
                "/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes",
                "1073741824\n",
            ),
            (
                "/sys/fs/cgroup/memory/process_api/16e5/memory.limit_in_bytes",
                "33554432\n",
            ),
        ]);
        let got = memory_limit_from(V1_CGROUP, V1_MOUNTINFO, MEMINFO, &read);
        assert_eq!(
            got,
            Some(MemoryLimit {
                bytes: 32 << 20,
                source: MemorySource::CgroupV1
            })
        );
        // The parent's limit is the smaller: it is the one that binds.
        let read = files(&[
            (
                "/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes",
                "16777216",
            ),
            (
                "/sys/fs/cgroup/memory/process_api/16e5/memory.limit_in_bytes",
                "33554432",
            ),
        ]);
        let got = memory_limit_from(V1_CGROUP, V1_MOUNTINFO, MEMINFO, &read).unwrap();
        assert_eq!(got.bytes, 16 << 20);
    }

    #[test]
    fn no_cgroup_limit_is_the_hosts_memory() {
        let read = files(&[
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", V1_NONE),
            (
                "/sys/fs/cgroup/memory/process_api/16e5/memory.limit_in_bytes",
                V1_NONE,
            ),
        ]);
        let host = Some(MemoryLimit {
            bytes: HOST,
            source: MemorySource::Host,
        });
        assert_eq!(
            memory_limit_from(V1_CGROUP, V1_MOUNTINFO, MEMINFO, &read),
            host
        );
        // A limit above the host's memory binds nothing either.
        let read = files(&[(
            "/sys/fs/cgroup/memory/process_api/16e5/memory.limit_in_bytes",
            "68719476736",
        )]);
        assert_eq!(
            memory_limit_from(V1_CGROUP, V1_MOUNTINFO, MEMINFO, &read),
            host
        );
        // No cgroup files at all (not mounted, or no /proc/self/cgroup).
        let nothing = files(&[]);
        assert_eq!(memory_limit_from("", "", MEMINFO, &nothing), host);
        assert_eq!(
            memory_limit_from(V1_CGROUP, V1_MOUNTINFO, MEMINFO, &nothing),
            host
        );
        // Without MemTotal, nothing is known.
        assert_eq!(
            memory_limit_from(V1_CGROUP, V1_MOUNTINFO, "", &nothing),
            None
        );
    }

    // A cgroup v2 host: systemd's unified hierarchy only.
    const V2_CGROUP: &str = "0::/system.slice/randline.service\n";
    const V2_MOUNTINFO: &str = "\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn v2_reads_memory_max_and_max_means_none() {
        let read = files(&[
            ("/sys/fs/cgroup/system.slice/memory.max", "max\n"),
            (
                "/sys/fs/cgroup/system.slice/randline.service/memory.max",
                "67108864\n",
            ),
        ]);
        let got = memory_limit_from(V2_CGROUP, V2_MOUNTINFO, MEMINFO, &read);
        assert_eq!(
            got,
            Some(MemoryLimit {
                bytes: 64 << 20,
                source: MemorySource::CgroupV2
            })
        );
        let read = files(&[
            ("/sys/fs/cgroup/system.slice/memory.max", "max\n"),
            (
                "/sys/fs/cgroup/system.slice/randline.service/memory.max",
                "max\n",
            ),
        ]);
        let got = memory_limit_from(V2_CGROUP, V2_MOUNTINFO, MEMINFO, &read).unwrap();
        assert_eq!(got.source, MemorySource::Host);
    }

    #[test]
    fn a_container_sees_its_own_subtree_from_the_mounts_root() {
        // Docker on v2 with a cgroup namespace: the path is `/`, and the
        // mount's root is the container's group.
        let read = files(&[("/sys/fs/cgroup/memory.max", "268435456\n")]);
        let mounts = "30 25 0:26 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        let got = memory_limit_from("0::/\n", mounts, MEMINFO, &read).unwrap();
        assert_eq!(got.bytes, 256 << 20);
        // v1 without a namespace: the mount's root is the container's
        // group, and /proc/self/cgroup names the group from the top.
        let mounts = "40 31 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n";
        let read = files(&[("/sys/fs/cgroup/memory/memory.limit_in_bytes", "134217728")]);
        let got = memory_limit_from("5:memory:/docker/abc\n", mounts, MEMINFO, &read).unwrap();
        assert_eq!((got.bytes, got.source), (128 << 20, MemorySource::CgroupV1));
    }

    #[test]
    fn controllers_may_share_a_line_and_an_escaped_root_still_finds_its_own_limit() {
        let cgroup = "7:cpu,memory,cpuacct:/machine.slice/machine-a\\x2db.scope\n";
        let mounts = "35 31 0:32 /machine.slice/machine-a\\134x2db.scope /sys/fs/cgroup/memory rw \
                      - cgroup cgroup rw,cpu,memory,cpuacct\n";
        let read = files(&[("/sys/fs/cgroup/memory/memory.limit_in_bytes", "8388608")]);
        let got = memory_limit_from(cgroup, mounts, MEMINFO, &read).unwrap();
        assert_eq!(got.bytes, 8 << 20);
    }
}
