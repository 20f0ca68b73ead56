//! Watching the loop: the `stats:` counters (exact for a known workload,
//! on SIGUSR1, every `--stats-interval`) and what the trace says about
//! backpressure.

mod common;

use common::{Server, parse_stats};
use rustix::process::Signal;
use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

/// Checks `expected` against `stats`, naming every mismatch at once.
fn assert_counts(stats: &BTreeMap<String, u64>, expected: &[(&str, u64)]) {
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(k, v)| stats.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: expected {v}, got {:?}", stats.get(*k)))
        .collect();
    assert!(wrong.is_empty(), "{}\nall: {stats:?}", wrong.join("\n"));
}

#[test]
fn the_shutdown_summary_counts_a_known_workload_exactly() {
    // Every answer is two digits and '\n': bytes out are 3 per line.
    let mut server = Server::start(&[
        "--min",
        "10",
        "--max",
        "99",
        "--max-connections",
        "2",
        "--idle-timeout",
        "1",
    ]);

    // D: says nothing, is closed by --idle-timeout 1, then closes. Reads:
    // its EOF while lingering. (First, so that the others are never idle
    // for a second.)
    let mut d = server.connect();
    d.expect_eof();
    drop(d);
    server.log.wait_for_nth("closed 127.0.0.1", 1);

    // A: five lines in ping-pong, then STOP; it waits for the server's FIN
    // before closing. Reads: 5 + STOP + EOF while lingering. Writes: 5.
    let mut a = server.connect();
    for i in 0..5 {
        a.ask(&format!("line {i}"));
    }
    // B: two lines in one write, both answers in one write, then EOF.
    // Reads: 1 + EOF. Writes: 1.
    let mut b = server.connect();
    b.send(b"x\ny\n");
    assert!((10..=99).contains(&b.number()));
    assert!((10..=99).contains(&b.number()));
    server.log.wait_for_nth("serving 127.0.0.1", 3);
    // C: one too many: `ERR server busy` (one write), then its own line is
    // read and dropped while lingering, then its EOF. Reads: 2.
    let mut c = server.connect();
    assert_eq!(c.line(), "ERR server busy");
    c.send(b"ignored\n");
    c.half_close();
    c.expect_eof();
    server.log.wait_for_nth("closed 127.0.0.1", 2);

    a.send(b"STOP\n");
    a.expect_eof();
    drop(a);
    b.half_close();
    b.expect_eof();
    server.log.wait_for_nth("closed 127.0.0.1", 4);

    server.signal(Signal::TERM);
    assert!(server.wait_exit().success());
    let stats = parse_stats(&server.log.wait_for("stats: "));
    let bytes_in =
        (5 * "line N\n".len() + "x\ny\n".len() + "ignored\n".len() + "STOP\n".len()) as u64;
    assert_counts(
        &stats,
        &[
            ("accepted", 4),
            ("rejected_busy", 1),
            ("accept_emfile", 0),
            ("active", 0),
            ("peak", 2),
            ("lines", 7),
            ("bytes_in", bytes_in),
            ("bytes_out", 7 * 3 + "ERR server busy\n".len() as u64),
            ("reads", 7 + 2 + 2 + 1),
            ("writes", 5 + 1 + 1),
            ("wouldblock", 0),
            ("paused", 0),
            ("yields", 0),
            ("idle_closed", 1),
        ],
    );
    // Wake-ups and events depend on how the kernel batches readiness (and
    // on deadlines), but this workload was sequenced so that each of these
    // needed an event of its own: 4 accepts, 7 reads of A, 2 of B, C's
    // line, D's EOF and SIGTERM.
    assert!(stats["events"] >= 16, "{stats:?}");
    assert!(stats["wakeups"] >= 16, "{stats:?}");
}

#[test]
fn sigusr1_logs_the_counters_and_the_server_carries_on() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    c.ask("one");
    server.signal(Signal::USR1);
    let first = parse_stats(&server.log.wait_for("stats: "));
    assert_counts(&first, &[("accepted", 1), ("active", 1), ("lines", 1)]);

    c.ask("two");
    c.ask("three");
    server.signal(Signal::USR1);
    let second = parse_stats(&server.log.wait_for_nth("stats: ", 2));
    assert_counts(&second, &[("accepted", 1), ("active", 1), ("lines", 3)]);
}

#[test]
fn stats_interval_logs_on_a_clock_and_each_line_is_a_wakeup() {
    let server = Server::start(&["--stats-interval", "1"]);
    let started = Instant::now();
    let first = parse_stats(&server.log.wait_for_nth("stats: ", 1));
    let second = parse_stats(&server.log.wait_for_nth("stats: ", 2));
    // Two lines take two intervals: never early.
    assert!(started.elapsed() >= Duration::from_millis(1900));
    // Nothing else happened: the second line's only wake-up was its own.
    assert_eq!(
        second["wakeups"],
        first["wakeups"] + 1,
        "{first:?} {second:?}"
    );
    assert_eq!(second["events"], first["events"]);
}

#[test]
fn a_client_that_stops_reading_is_paused_and_resumed() {
    // 20-byte answers: 400,000 of them are 8 MB, far beyond what loopback
    // socket buffers hold, so the server must stop reading this client.
    let server = Server::start(&common::LONG_ANSWERS);
    let mut c = server.connect();
    let lines = 400_000;
    let writer = c.send_lines_in_background(lines, false);
    // Not reading: wait until the server reports a pause.
    common::wait_until("the server pauses the client", common::WAIT, || {
        server.stats()["paused"] >= 1
    });
    // Now read everything: every answer arrives, and reading resumed.
    let mut got = 0;
    let mut buf = vec![0; 64 * 1024];
    while got < lines {
        let n = c.read(&mut buf).expect("read answers");
        assert!(n > 0, "EOF after {got} answers");
        got += buf[..n].iter().filter(|&&b| b == b'\n').count();
    }
    writer.join().expect("writer");
    assert_eq!(got, lines);
    let stats = server.stats();
    assert_eq!(stats["lines"], lines as u64, "{stats:?}");
    assert!(
        stats["paused"] >= 1 && stats["wouldblock"] >= 1,
        "{stats:?}"
    );
    assert_eq!(stats["bytes_in"], 2 * lines as u64);
}

/// Once its last client has gone, the server sleeps without a timeout: no
/// deadline of a closed connection may wake it later. The client here
/// lingers (STOP), then closes: its 2 s linger deadline must go with it.
/// The trace says how the first poll after the close was timed; the probe
/// 2.5 s later, past that deadline, is what ends it.
#[test]
fn a_closed_clients_deadline_does_not_wake_the_server_later() {
    let mut cmd = std::process::Command::new(common::bin());
    cmd.args(["--listen", "127.0.0.1:0", "--idle-timeout", "60"])
        .env("RUST_LOG", "randline=trace");
    let server = Server::spawn(cmd);
    let mut c = server.connect();
    c.ask("one");
    c.send(b"STOP\n");
    c.expect_eof();
    drop(c);
    server.log.wait_for("closed");
    std::thread::sleep(Duration::from_millis(2500));
    server.stats();
    let log = server.log.text();
    let after_close = &log[log.find("closed").expect("a closed line")..];
    let first_poll = after_close
        .lines()
        .find(|l| l.contains("poll: woke after"))
        .expect("a wake-up after the close");
    assert!(
        first_poll.contains("(timeout none) with 1 event"),
        "after its last client closed, the server did not sleep until the probe: {first_poll}"
    );
}
