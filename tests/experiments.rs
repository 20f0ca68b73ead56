//! docs/experiments.md stays true: every lab on that page is run here, as
//! written (on free ports), by bash, against the server this `cargo test`
//! built. Each `<!-- expect: ... -->` line after a lab must be in the lab's
//! output and in the output the page shows under "You should see", so a
//! figure the page quotes is a figure the test checks. Figures that depend
//! on timing are not expected; where the page promises a bound or an
//! arithmetic instead (lab 2's counters and memory, lab 4's room for
//! clients), the lab's test checks that.
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

/// A lab as the page has it.
struct Lab {
    /// The `sh` block after `<!-- lab: NAME -->`.
    script: String,
    /// The `expect` lines that follow it.
    expect: Vec<&'static str>,
    /// The first `text` block after them: what "You should see".
    shown: &'static str,
}

fn lab(name: &str) -> Lab {
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
    let rest = &PAGE[start..];
    let shown = rest
        .find("\n```text\n")
        .filter(|&i| !rest[..i].contains("\n## "))
        .map(|i| {
            let body = &rest[i + "\n```text\n".len()..];
            &body[..body.find("\n```").expect("an unclosed text block")]
        })
        .unwrap_or_default();
    Lab {
        script: script.join("\n"),
        expect,
        shown,
    }
}

/// `text` with every run of whitespace made one space, so that a column's
/// padding does not matter: `"     1000           sendto"` is
/// `"1000 sendto"`.
fn squeeze(text: &str) -> String {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The script with each of the page's ports (71xx) replaced by a free one,
/// so that a lab cannot collide with another run of these tests.
fn on_free_ports(script: &str) -> String {
    let mut script = script.to_string();
    for port in 7100..7200 {
        let forms = [":", "/", " "].map(|sep| format!("127.0.0.1{sep}{port}"));
        if forms.iter().any(|f| script.contains(f.as_str())) {
            let new = free_port();
            for (sep, old) in [":", "/", " "].iter().zip(&forms) {
                script = script.replace(old.as_str(), &format!("127.0.0.1{sep}{new}"));
            }
        }
    }
    script
}

/// Runs the setup block and lab `name` with bash, checks what the page
/// expects, and returns the lab's output.
fn run_lab(name: &str) -> String {
    for tool in ["nc", "strace", "prlimit"] {
        assert!(
            common::installed(tool),
            "{tool} is needed to run docs/experiments.md (see .ci/run)"
        );
    }
    let setup = lab("setup").script;
    let lab = lab(name);
    assert!(!lab.expect.is_empty(), "lab {name} checks nothing");
    let shown = squeeze(lab.shown);
    for want in &lab.expect {
        assert!(
            shown.contains(&squeeze(want)),
            "lab {name}: {want:?} is expected, but the page does not show it under \"You should see\""
        );
    }

    let dir = std::env::temp_dir().join(format!("randline-lab-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("lab directory");
    let bin_dir = Path::new(common::bin()).parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = on_free_ports(&lab.script);
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
    let got = squeeze(&stdout);
    for want in &lab.expect {
        assert!(
            got.contains(&squeeze(want)),
            "lab {name}: output has no {want:?}\n{report}"
        );
    }
    stdout
}

/// The value of `key=` in the first line of `text` that has it.
fn counter(text: &str, key: &str) -> u64 {
    let tag = format!("{key}=");
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(tag.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {tag} in:\n{text}"))
}

#[test]
fn lab_1_syscalls_per_request() {
    run_lab("syscalls");
}

#[test]
fn lab_2_backpressure() {
    let out = run_lab("backpressure");
    // How often the reader fell behind is timing; that it did is not.
    for key in ["paused", "wouldblock"] {
        assert!(counter(&out, key) >= 1, "{key} is 0:\n{out}");
    }
    // The answers wait in the kernel, not in the server: the page says
    // about 2 MiB mid-stall, against 14.5 MB of answers.
    let rss_kib: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in:\n{out}"));
    assert!(rss_kib < 8 * 1024, "VmRSS {rss_kib} kB mid-stall:\n{out}");
}

#[test]
fn lab_3_pipelining_versus_ping_pong() {
    run_lab("pipelining");
}

/// The `fd N: TARGET` lines of a listing, as (N, TARGET).
fn descriptors(text: &str) -> Vec<(u32, &str)> {
    text.lines()
        .filter_map(|l| {
            let (fd, target) = l.strip_prefix("fd ")?.split_once(": ")?;
            Some((fd.parse().ok()?, target))
        })
        .collect()
}

#[test]
fn lab_4_max_connections_and_fd_exhaustion() {
    const LIMIT: u32 = 16;
    let out = run_lab("limits");
    // The room is what the descriptors below the limit leave, and the
    // server serves exactly that many before `accept` fails.
    let held = descriptors(&out);
    let below = held.iter().filter(|(fd, _)| *fd < LIMIT).count() as u32;
    let room = LIMIT - below;
    assert!(
        out.contains(&format!("room for {room} clients")),
        "the lab's arithmetic: {below} descriptors below {LIMIT}:\n{out}"
    );
    assert!(
        out.contains(&format!("with {room} clients: new clients wait")),
        "the EMFILE warning should come after {room} clients:\n{out}"
    );
    assert_eq!(counter(&out, "peak"), u64::from(room), "{out}");
    assert!(counter(&out, "accept_emfile") >= 1, "{out}");

    // The page's figure, from a shell that passes nothing on: the server's
    // own descriptors are stdin, stdout, stderr, the epoll instance and
    // sockets (the signal pair and the listener); the rest was inherited.
    let own = held
        .iter()
        .filter(|(fd, target)| {
            *fd < 3 || target.starts_with("socket:") || *target == "anon_inode:[eventpoll]"
        })
        .count() as u32;
    let page_room = LIMIT - own;
    let shown = lab("limits").shown;
    for figure in [
        format!("room for {page_room} clients"),
        format!("with {page_room} clients: new clients wait"),
        format!("peak={page_room} "),
    ] {
        assert!(
            shown.contains(&figure),
            "the server holds {own} descriptors of its own, so the page should show {figure:?}"
        );
    }
    let page_listing = descriptors(shown).len() as u32;
    assert_eq!(
        page_listing, own,
        "the page lists {page_listing} descriptors; the server has {own} of its own"
    );
}

#[test]
fn lab_5_an_idle_server_sleeps() {
    run_lab("idle");
}

#[test]
fn squeezing_and_ports_work_as_the_labs_need() {
    assert_eq!(squeeze("     2         1 accept4 "), "2 1 accept4");
    let script = on_free_ports("x 127.0.0.1:7101 /dev/tcp/127.0.0.1/7101 nc -N 127.0.0.1 7101");
    assert!(!script.contains("7101"), "{script}");
    let port = script
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .expect("a port");
    assert!(script.contains(&format!("127.0.0.1/{port} ")), "{script}");
    assert!(script.ends_with(&format!("127.0.0.1 {port}")), "{script}");
    assert!(!lab("syscalls").shown.is_empty());
}
