//! The io_uring peer (examples/uring.rs) keeps randline's contract with a
//! real client: ping-pong, a pipelined batch, STOP then EOF, a line split
//! across sends, a line too long, several clients at once. Where io_uring
//! is unavailable (an old kernel, `kernel.io_uring_disabled`, a seccomp
//! filter), the example says so and exits: each test is then skipped with
//! that message.

mod common;

use common::{Client, Proc, WAIT, eventually, listening_addr, numbers};
use std::net::SocketAddr;
use std::process::Command;

/// The example listening on a port the OS picks, or `None` (after saying
/// why) where io_uring cannot be set up.
fn start() -> Option<(Proc, SocketAddr)> {
    let mut cmd = Command::new(common::example("uring"));
    cmd.args(["--listen", "127.0.0.1:0"]);
    let mut proc = Proc::spawn(&mut cmd);
    let started = eventually("uring listens or reports io_uring missing", WAIT, || {
        let log = proc.log.text();
        if let Some(line) = log.lines().find(|l| l.contains("listening on ")) {
            return Some(Ok(listening_addr(line)));
        }
        log.contains("io_uring is not available")
            .then(|| Err(log.clone()))
    });
    match started {
        Ok(addr) => Some((proc, addr)),
        Err(log) => {
            assert!(!proc.wait_exit().success(), "it should fail: {log}");
            eprintln!("skipped: io_uring is unavailable here: {log}");
            None
        }
    }
}

#[test]
fn ping_pong() {
    let Some((_server, addr)) = start() else {
        return;
    };
    let mut c = Client::connect(addr);
    for i in 0..200 {
        let n = c.ask(&format!("line {i}"));
        assert!((1..=99).contains(&n), "{n} out of 1..=99");
    }
    // Whitespace and `\r\n` lines are lines too.
    for line in ["", "  spaced  ", "\r"] {
        assert!((1..=99).contains(&c.ask(line)));
    }
}

#[test]
fn pipelined_batch_is_answered_in_full() {
    let Some((_server, addr)) = start() else {
        return;
    };
    let mut c = Client::connect(addr);
    // 10,000 lines in one write (20,000 bytes: several receives), then
    // the write side closed: every answer, then EOF.
    let lines = 10_000;
    let sender = c.send_lines_in_background(lines, true);
    let rest = c.rest_until_eof();
    sender.join().expect("sender");
    let got = numbers(&rest);
    assert_eq!(got.len(), lines);
    assert!(got.iter().all(|n| (1..=99).contains(n)));
}

#[test]
fn stop_answers_what_came_before_then_closes() {
    let Some((_server, addr)) = start() else {
        return;
    };
    let mut c = Client::connect(addr);
    assert!((1..=99).contains(&c.ask("first")));
    // Two lines and STOP in one segment, then a line after STOP: two
    // answers, then EOF; the line after STOP is never answered.
    c.send(b"a\nb\n\t STOP \r\nafter\n");
    let rest = c.rest_until_eof();
    assert_eq!(
        numbers(&rest).len(),
        2,
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn split_and_too_long_lines() {
    let Some((_server, addr)) = start() else {
        return;
    };
    let mut c = Client::connect(addr);
    // One line in three sends: one answer.
    c.send(b"he");
    std::thread::sleep(std::time::Duration::from_millis(20));
    c.send(b"ll");
    std::thread::sleep(std::time::Duration::from_millis(20));
    c.send(b"o\n");
    assert!((1..=99).contains(&c.number()));
    // 8,193 bytes with no end of line: an error line, then the close.
    c.send(&[b'x'; 8193]);
    assert_eq!(c.line(), "ERR line too long");
    c.expect_eof();
    // A line of exactly 8,192 bytes is answered.
    let mut c = Client::connect(addr);
    let mut line = vec![b'y'; 8192];
    line.push(b'\n');
    c.send(&line);
    assert!((1..=99).contains(&c.number()));
}

#[test]
fn several_clients_at_once() {
    let Some((_server, addr)) = start() else {
        return;
    };
    let mut clients: Vec<Client> = (0..16).map(|_| Client::connect(addr)).collect();
    // Every client has a line in flight before any answer is read.
    for round in 0..20 {
        for c in clients.iter_mut() {
            c.send(format!("round {round}\n").as_bytes());
        }
        for c in clients.iter_mut() {
            assert!((1..=99).contains(&c.number()));
        }
    }
    // Each stops on its own; the others are unaffected.
    for (i, mut c) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            c.send(b"STOP\n");
            c.expect_eof();
        } else {
            assert!((1..=99).contains(&c.ask("still here")));
        }
    }
}
