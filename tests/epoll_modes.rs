//! The epoll modes demonstration (examples/epoll_modes.rs) reports what
//! the kernel does, and the docs quote its table: every count but one is
//! exact, so each is asserted here. The one that is not (how often a
//! level-triggered loop wakes in 100 ms for a socket it will not read) is
//! asserted to be a spin: far more than the one wake-up of the other modes.

mod common;

use common::{WAIT, run_cmd_within};
use std::collections::BTreeMap;
use std::process::Command;

/// Runs the example on `case`; its table as (case, step) -> [LT, ET,
/// ONESHOT].
fn table(case: &str) -> BTreeMap<(String, String), [String; 3]> {
    let mut cmd = Command::new(common::example("epoll_modes"));
    cmd.arg(case);
    let out = run_cmd_within(cmd, WAIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "epoll_modes {case} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .skip(2) // the header and its rule
        .map(|line| {
            let cells: Vec<String> = line
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect();
            let [case, step, lt, et, oneshot] = <[String; 5]>::try_from(cells)
                .unwrap_or_else(|c| panic!("not a row of five cells: {c:?}"));
            ((case, step), [lt, et, oneshot])
        })
        .collect()
}

/// The row of `case` whose step starts with `step`.
fn row<'a>(t: &'a BTreeMap<(String, String), [String; 3]>, case: &str, step: &str) -> [&'a str; 3] {
    let (_, counts) = t
        .iter()
        .find(|((c, s), _)| c == case && s.starts_with(step))
        .unwrap_or_else(|| panic!("no row {case} / {step}... in {t:?}"));
    [&counts[0], &counts[1], &counts[2]]
}

#[test]
fn leftover_bytes() {
    let t = table("leftover");
    assert_eq!(t.len(), 3, "{t:?}");
    // LT reports the 90 bytes left on every wait; ET and ONESHOT once.
    assert_eq!(row(&t, "leftover", "reports over 5"), ["5/5", "1/5", "1/5"]);
    // New bytes make a new edge; a one-shot stays disarmed.
    assert_eq!(row(&t, "leftover", "then 1 wait after 10"), ["1", "1", "0"]);
    // EPOLL_CTL_MOD looks again, in every mode.
    assert_eq!(
        row(&t, "leftover", "then 1 wait after EPOLL"),
        ["1", "1", "1"]
    );
}

#[test]
fn paused_reader() {
    let t = table("paused");
    let [lt, et, oneshot] = row(&t, "paused", "wake-ups");
    let lt: u64 = lt.parse().expect("a count");
    // A spin: even a busy machine runs a zero-wait loop far more than
    // 100 times in 100 ms (this one: about 100,000).
    assert!(lt > 100, "LT woke only {lt} times in 100 ms");
    assert_eq!([et, oneshot], ["1", "1"]);
    assert_eq!(
        row(&t, "paused", "on resuming"),
        ["100 bytes", "100 bytes", "100 bytes"]
    );
}

#[test]
fn permanent_write_interest() {
    let t = table("write-interest");
    assert_eq!(
        row(&t, "write-interest", "reports over 5"),
        ["5/5", "1/5", "1/5"]
    );
    // A full buffer reports nothing; room freed by the peer is an edge
    // (and a level), but a one-shot is not re-armed.
    assert_eq!(
        row(&t, "write-interest", "buffer full"),
        ["0 then 1", "0 then 1", "0 then 0"]
    );
}

#[test]
fn emfile_with_a_queued_connection() {
    let t = table("emfile");
    assert_eq!(row(&t, "emfile", "reports over 5"), ["5/5", "1/5", "1/5"]);
    // The stranded client: once a descriptor frees, LT reports the
    // listener again; ET and ONESHOT never will, with no new connection.
    assert_eq!(row(&t, "emfile", "then 1 wait after"), ["1", "0", "0"]);
    // Which is why an edge-triggered server retries on a timer.
    assert_eq!(
        row(&t, "emfile", "then accept without"),
        ["accepted", "accepted", "accepted"]
    );
}

#[test]
fn all_runs_every_case_and_bad_arguments_are_refused() {
    let t = table("all");
    let cases: std::collections::BTreeSet<&str> = t.keys().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        cases.into_iter().collect::<Vec<_>>(),
        ["emfile", "leftover", "paused", "write-interest"]
    );
    assert_eq!(t.len(), 10, "{t:?}");
    let mut cmd = Command::new(common::example("epoll_modes"));
    cmd.arg("sideways");
    let out = run_cmd_within(cmd, WAIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown case"));
}
