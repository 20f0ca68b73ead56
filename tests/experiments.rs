//! docs/experiments.md stays true: every lab on that page is run here, as
//! written, by bash, against the server this `cargo test` built, and its
//! output must contain what the page's `<!-- expect: ... -->` lines name.
//!
//! Each lab runs in its own directory and process group, with a time limit;
//! whatever it started is killed afterwards, even when it fails.

mod common;

use rustix::process::{Pid, Signal, kill_process_group};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const PAGE: &str = include_str!("../docs/experiments.md");
/// The slowest lab takes about 6 s; this is for a broken server.
const LAB_LIMIT: Duration = Duration::from_secs(60);

/// The `sh` block after `<!-- lab: NAME -->`, and the `expect` lines that
/// follow it.
fn lab(name: &str) -> (String, Vec<&'static str>) {
    let tag = format!("<!-- lab: {name} -->");
    let start = PAGE
        .find(&tag)
        .unwrap_or_else(|| panic!("docs/experiments.md has no {tag}"));
    let mut lines = PAGE[start..].lines().skip(1);
    assert_eq!(
        lines.next(),
        Some("```sh"),
        "{tag} is not followed by an sh block"
    );
    let script: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
    let expect = lines
        .map_while(|l| l.strip_prefix("<!-- expect: ")?.strip_suffix(" -->"))
        .collect();
    (script.join("\n"), expect)
}

/// Runs the setup block and lab `name` with bash, checks its output.
fn run_lab(name: &str) {
    for tool in ["nc", "strace", "prlimit"] {
        assert!(
            common::installed(tool),
            "{tool} is needed to run docs/experiments.md (see .ci/run)"
        );
    }
    let (setup, _) = lab("setup");
    let (script, expect) = lab(name);
    assert!(!expect.is_empty(), "lab {name} checks nothing");

    let dir = std::env::temp_dir().join(format!("randline-lab-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("lab directory");
    let bin_dir = Path::new(common::bin()).parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &format!("{setup}\n{script}")])
        .current_dir(&dir)
        .env("PATH", path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start bash");
    let group = Pid::from_raw(child.id() as i32).expect("pid");

    // Read the output on threads, so a chatty lab cannot block on a pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || std::io::read_to_string(&mut stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(&mut stderr).unwrap_or_default());

    let status = common::poll(LAB_LIMIT, || child.try_wait().expect("lab status"));
    // Whatever the lab left behind (a server, a client) goes now.
    let _ = kill_process_group(group, Signal::KILL);
    let _ = child.wait();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);

    let report = format!("--- stdout:\n{stdout}\n--- stderr:\n{stderr}");
    let status = status.unwrap_or_else(|| panic!("lab {name} ran over {LAB_LIMIT:?}\n{report}"));
    assert!(status.success(), "lab {name} failed: {status}\n{report}");
    for want in expect {
        assert!(
            stdout.contains(want),
            "lab {name}: output has no {want:?}\n{report}"
        );
    }
}

#[test]
fn lab_1_syscalls_per_request() {
    run_lab("syscalls");
}

#[test]
fn lab_2_backpressure() {
    run_lab("backpressure");
}

#[test]
fn lab_3_pipelining_versus_ping_pong() {
    run_lab("pipelining");
}

#[test]
fn lab_4_max_connections_and_fd_exhaustion() {
    run_lab("limits");
}

#[test]
fn lab_5_an_idle_server_sleeps() {
    run_lab("idle");
}
