//! The chaos client over a lossy, slow link (scripts/lossy-link): server
//! and clients in two network namespaces joined by a veth pair, both ends
//! shaped by `tc tbf` with a small queue, so that segments are really
//! dropped and retransmitted. Every chaos invariant must still hold.
//!
//! Needs root (network namespaces). Outside CI, a non-root run skips with a
//! message; under CI (`CI=true`, where .ci/run runs as root) it must run.

mod common;

use std::process::Command;
use std::time::Duration;

#[test]
fn chaos_over_a_lossy_link_loses_nothing() {
    if !common::netns::available("the lossy-link test") {
        return;
    }
    let seconds = 20;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lossy-link");
    let mut cmd = Command::new(script);
    cmd.arg(seconds.to_string())
        .env("RANDLINE", common::bin())
        .env("CHAOS", common::example("chaos"));
    if let Ok(seed) = std::env::var("CHAOS_SEED") {
        cmd.arg(seed);
    }
    let out = common::run_cmd_within(cmd, Duration::from_secs(seconds + 120));
    let status = out.status;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let errors = String::from_utf8_lossy(&out.stderr).into_owned();
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
