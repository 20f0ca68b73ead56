//! The tokio peer (examples/tokio.rs) keeps the protocol's basics, on both
//! runtimes: every line answered in order, STOP ends the session after the
//! earlier answers, 10,000 pipelined lines all answered. The benchmark
//! compares it with randline, so it must keep the same contract.

mod common;

use common::{Client, Server, numbers};
use std::process::Command;
use std::time::{Duration, Instant};

fn start(runtime: &str, extra: &[&str]) -> Server {
    let mut cmd = Command::new(common::example("tokio"));
    cmd.args(["--listen", "127.0.0.1:0", "--runtime", runtime])
        .args(extra);
    Server::spawn(cmd)
}

fn in_order_and_stop(runtime: &str) {
    let server = start(runtime, &["--min", "5", "--max", "7"]);
    let mut c = server.connect();
    for line in ["hello", "", "  spaced  ", "\r"] {
        let n = c.ask(line);
        assert!((5..=7).contains(&n), "{runtime}: {n} out of 5..=7");
    }
    // Two lines and STOP in one segment, then a line after STOP: two
    // answers, then the close; the line after STOP is never answered.
    c.send(b"a\nb\n\t STOP \r\nafter\n");
    let rest = c.rest_until_eof();
    let got = numbers(&rest);
    assert_eq!(
        got.len(),
        2,
        "{runtime}: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(got.iter().all(|n| (5..=7).contains(n)));
}

fn pipelined(runtime: &str) {
    let server = start(runtime, &[]);
    let mut c = server.connect();
    // 10,000 lines ("x\n") written in batches by another thread, then
    // STOP: every line answered, then the close.
    let started = Instant::now();
    let sender = c.send_lines_in_background(10_000, false);
    sender.join().expect("sender");
    c.send(b"STOP\n");
    let rest = c.rest_until_eof();
    let got = numbers(&rest);
    assert_eq!(got.len(), 10_000, "{runtime}: answers to 10,000 lines");
    assert!(got.iter().all(|n| (1..=99).contains(n)));
    assert!(started.elapsed() < Duration::from_secs(10));
}

fn partial_line_and_split(runtime: &str) {
    let server = start(runtime, &[]);
    let mut c = server.connect();
    // One line cut into three segments: one answer.
    c.send(b"sp");
    std::thread::sleep(Duration::from_millis(30));
    c.send(b"li");
    std::thread::sleep(Duration::from_millis(30));
    c.send(b"t\n");
    let n = c.number();
    assert!((1..=99).contains(&n));
    // A line without its `\n` before end of input is not answered.
    c.send(b"no newline");
    c.half_close();
    assert!(c.rest_until_eof().is_empty(), "{runtime}");
}

fn too_long(runtime: &str) {
    let server = start(runtime, &["--max-line", "10"]);
    let mut c: Client = server.connect();
    c.send(b"0123456789\n");
    assert!((1..=99).contains(&c.number()));
    c.send(b"0123456789A\n");
    assert_eq!(c.line(), "ERR line too long");
    c.expect_eof();
}

#[test]
fn current_thread_answers_in_order_and_stops() {
    in_order_and_stop("current");
}

#[test]
fn multi_thread_answers_in_order_and_stops() {
    in_order_and_stop("multi");
}

#[test]
fn current_thread_answers_10000_pipelined_lines() {
    pipelined("current");
}

#[test]
fn multi_thread_answers_10000_pipelined_lines() {
    pipelined("multi");
}

#[test]
fn current_thread_frames_split_and_partial_lines() {
    partial_line_and_split("current");
}

#[test]
fn multi_thread_frames_split_and_partial_lines() {
    partial_line_and_split("multi");
}

#[test]
fn current_thread_closes_a_too_long_line() {
    too_long("current");
}

#[test]
fn multi_thread_closes_a_too_long_line() {
    too_long("multi");
}

#[test]
fn a_bad_command_line_is_refused() {
    for args in [
        &["--runtime", "fast", "0"][..],
        &[][..],
        &["--workers", "2", "0"][..],
    ] {
        let out = common::run_cmd({
            let mut c = Command::new(common::example("tokio"));
            c.args(args);
            c
        });
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}
