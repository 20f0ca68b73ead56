//! SIGTERM and SIGINT: stop accepting, deliver what is owed, exit 0.

mod common;

use common::{Server, WAIT, numbers};
use rustix::process::Signal;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn sigterm_drains_clients_and_exits_0() {
    let mut server = Server::start(&[]);
    let mut a = server.connect();
    let mut b = server.connect();
    assert!((1..=99).contains(&a.ask("before")));
    // Lines the server has received but whose answers `b` has not read yet.
    b.send(b"one\ntwo\nthree\nhalf a line");
    server.log.wait_for_nth("serving", 2);
    // Wait until the server has taken b's bytes: the answers are queued.
    assert!(b.peek_within(WAIT).expect("answers queued") > 0);

    server.signal(Signal::TERM);
    server.log.wait_for("shutting down");
    assert_eq!(
        numbers(&b.rest_until_eof()).len(),
        3,
        "every complete line answered"
    );
    a.expect_eof();
    assert_eq!(server.wait_exit().code(), Some(0));
    server.log.wait_for("shutdown complete");

    // The listener is gone.
    assert!(TcpStream::connect(server.addr).is_err());
}

#[test]
fn sigint_is_handled_like_sigterm() {
    let mut server = Server::start(&[]);
    let mut c = server.connect();
    assert!((1..=99).contains(&c.ask("x")));
    server.signal(Signal::INT);
    c.expect_eof();
    assert_eq!(server.wait_exit().code(), Some(0));
}

#[test]
fn a_client_that_never_reads_is_cut_at_the_grace_period() {
    let mut server = Server::start(&["--shutdown-timeout", "1"]);
    let c = server.connect();
    // Fill its output (it never reads) until the server stops reading it.
    let max = 64 << 20;
    let sent = c.fill_until_blocked(Duration::from_millis(500), max);
    assert!(sent < max, "the server never pushed back");
    let start = Instant::now();
    server.signal(Signal::TERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "exited after {took:?}, before the grace period"
    );
    server.log.wait_for("grace period over");
}

#[test]
fn an_idle_server_exits_at_once() {
    let mut server = Server::start(&["--shutdown-timeout", "30"]);
    let start = Instant::now();
    server.signal(Signal::TERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn unix_socket_file_is_removed_on_shutdown() {
    let path = std::env::temp_dir().join(format!("randline-shutdown-{}.sock", std::process::id()));
    let mut cmd = std::process::Command::new(common::bin());
    cmd.args(["--listen", "127.0.0.1:0", "--unix"]).arg(&path);
    let mut server = Server::spawn(cmd);
    server.log.wait_for("listening on unix:");
    assert!(path.exists());
    server.signal(Signal::TERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    assert!(!path.exists(), "socket file left behind");
}

#[test]
fn a_stale_unix_socket_file_is_replaced() {
    let path = std::env::temp_dir().join(format!("randline-stale-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    // A socket file nobody listens on, as a killed server leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(path.exists());
    let mut cmd = std::process::Command::new(common::bin());
    cmd.args(["--listen", "127.0.0.1:0", "--unix"]).arg(&path);
    let server = Server::spawn(cmd);
    server.log.wait_for("listening on unix:");
    let mut u = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    u.write_all(b"x\n").expect("write");
    drop(server);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn sigterm_and_sigint_together_still_drain() {
    // Both signals are read from the pipe in one go: that is one request
    // to shut down, not "again, exit now".
    let mut server = Server::start(&[]);
    let mut c = server.connect();
    assert!((1..=99).contains(&c.ask("x")));
    server.pause();
    c.send(&b"line\n".repeat(10));
    server.signal(Signal::TERM);
    server.signal(Signal::INT);
    server.resume();
    assert_eq!(numbers(&c.rest_until_eof()).len(), 10);
    assert_eq!(server.wait_exit().code(), Some(0));
}

#[test]
fn a_second_signal_exits_at_once_with_0() {
    // A client that never reads would hold the drain for the whole 30 s.
    let mut server = Server::start(&["--shutdown-timeout", "30"]);
    let c = server.connect();
    let _writer = c.send_lines_in_background(400_000, false);
    server.log.wait_for("serving 127.0.0.1");
    server.signal(Signal::TERM);
    server.log.wait_for("SIGTERM: shutting down");
    let started = Instant::now();
    server.signal(Signal::TERM);
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    server.log.wait_for("SIGTERM again: exiting now");
    server.log.wait_for("stats: ");
}
