//! The chaos client over a lossy, slow link (scripts/lossy-link): server
//! and clients in two network namespaces joined by a veth pair, both ends
//! shaped by `tc tbf` with a small queue, so that segments are really
//! dropped and retransmitted. Every chaos invariant must still hold.
//!
//! Needs root (network namespaces). Outside CI, a non-root run skips with a
//! message; under CI (`CI=true`, where .ci/run runs as root) it must run.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn chaos_over_a_lossy_link_loses_nothing() {
    let root = rustix::process::geteuid().is_root();
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "the lossy-link test must run as root under CI"
        );
        eprintln!("skipped: the lossy-link test needs root (ip netns, tc)");
        return;
    }
    let seconds = 20;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lossy-link");
    let mut cmd = Command::new(script);
    cmd.arg(seconds.to_string())
        .env("RANDLINE", common::bin())
        .env("CHAOS", common::chaos_bin())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Ok(seed) = std::env::var("CHAOS_SEED") {
        cmd.arg(seed);
    }
    let mut child = cmd.spawn().expect("run scripts/lossy-link");
    // Read on threads: a long failure report must not fill the pipe.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let limit = Duration::from_secs(seconds + 120);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("scripts/lossy-link did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let report = stdout.join().expect("stdout");
    let errors = stderr.join().expect("stderr");
    println!("{report}{errors}");
    assert!(
        status.success() && report.contains("all invariants held"),
        "chaos over the lossy link failed:\n{report}{errors}"
    );
    // The link must really have been lossy, or this proved nothing.
    let retransmitted: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("lossy-link: server retransmitted "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no retransmit figure in:\n{report}"));
    assert!(
        retransmitted > 0,
        "no segment was retransmitted: the link dropped nothing\n{report}"
    );
}
