//! The chaos client (examples/chaos/) against the debug server, in every
//! mode: seeded random clients, each checked against the protocol model;
//! descriptors, memory and idle wake-ups checked after every round.
//!
//! A debug build, so that the server's debug assertions (the answer buffer
//! is empty at the start of every drive) fire on the way; scripts/cross
//! runs it against other targets' release builds instead (`RANDLINE_BIN`,
//! see tests/common/mod.rs). The seed is new
//! each run, so CI explores; a failure prints it, and `CHAOS_SEED=N cargo
//! test --test chaos` (or the printed `--seed N --only R:C`) replays it.
//! `CHAOS_SECONDS` sets the time per mode (default 12: about 60 s in all).

mod common;

use std::process::Command;
use std::time::Duration;

#[test]
fn chaos_clients_in_every_mode_keep_every_invariant() {
    let seed = std::env::var("CHAOS_SEED").unwrap_or_else(|_| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock");
        (t.as_nanos() as u64 % 1_000_000_007).to_string()
    });
    let seconds: u64 = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut cmd = Command::new(common::example("chaos"));
    cmd.args(["--server", common::bin(), "--mode", "all"])
        .args(["--seed", &seed, "--seconds", &seconds.to_string()]);
    if common::skip_under_emulation(
        "the 4 MiB bound on RSS growth (16 MiB instead)",
        "qemu-user's resident size grows with the code it translates",
    ) {
        cmd.args(["--rss-tolerance", &(16 * 1024).to_string()]);
    }
    // Five modes; each ends its last round within the client deadline and
    // settles within seconds: a hang is a failure, never a stuck CI.
    let out = common::run_cmd_within(cmd, Duration::from_secs(5 * (seconds + 90)));
    let status = out.status;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{report}");
    assert!(
        status.success() && report.contains("all invariants held"),
        "chaos run failed (seed {seed}; replay: CHAOS_SEED={seed} cargo test --test chaos):\n{report}"
    );
    for mode in ["tcp", "unix", "proxy", "busy", "limits"] {
        assert!(
            report.contains(&format!("mode {mode}: ")) && report.contains(" rounds, "),
            "mode {mode} did not run:\n{report}"
        );
    }
}
