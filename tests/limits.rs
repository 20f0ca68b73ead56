//! Resource rules: slow readers, floods, connection caps, long lines, idle
//! clients, running out of file descriptors.

mod common;

use common::{Client, Server, WAIT};
use std::io::{ErrorKind, Read, Write};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a ping beside a flood may wait for its answer: generous for a
/// debug build on a busy two-core machine (a few ms is usual); scaled for
/// a server under qemu ([`common::scaled`]).
const PING_LIVENESS: Duration = Duration::from_secs(2);
/// How late after its timeout an idle client may be closed: the server
/// keeps exact deadlines; this is room for a busy machine (scaled too).
const IDLE_MARGIN: Duration = Duration::from_secs(1);

/// Reads answers until `lines` newlines have arrived; checks they are numbers.
fn read_answers(client: &mut Client, lines: usize) {
    read_answers_pausing(client, lines, Duration::ZERO);
}

/// The same, pausing after every read like a slow client.
fn read_answers_pausing(client: &mut Client, lines: usize, pause: Duration) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = 0;
    while seen < lines {
        std::thread::sleep(pause);
        let n = client.read(&mut buf).expect("read answers");
        assert!(n > 0, "EOF after {seen} of {lines} answers");
        for &b in &buf[..n] {
            match b {
                b'\n' => seen += 1,
                b'0'..=b'9' => {}
                other => panic!("unexpected byte {other:#x} in answers"),
            }
        }
    }
    assert_eq!(seen, lines, "more answers than lines");
}

#[test]
fn a_client_that_does_not_read_is_held_to_bounded_memory_and_loses_nothing() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    assert!((1..=99).contains(&c.ask("warm up")));
    let rss_before = server.rss_kib();

    // Write without reading until the server stops taking input: its
    // output for us is full, so it stopped reading (backpressure).
    let sent = c.fill_until_blocked(Duration::from_millis(700), 64 << 20);
    assert!(sent < 64 << 20, "the server never pushed back");
    let rss_stalled = server.rss_kib();
    if common::skip_under_emulation(
        "the RSS bound",
        "qemu-user's resident size grows with the code it translates",
    ) {
        // The server's own count of the answers it holds instead (its
        // `pending_out` gauge): within the same bound.
        let pending = server.stats()["pending_out"];
        assert!(
            pending < 2048 * 1024,
            "{pending} bytes of answers held for one stalled client ({sent} bytes sent)"
        );
    } else {
        assert!(
            rss_stalled < rss_before + 2048,
            "RSS grew from {rss_before} KiB to {rss_stalled} KiB for one stalled client ({sent} bytes sent)"
        );
    }

    // Another client is served meanwhile.
    assert!((1..=99).contains(&server.connect().ask("other")));

    // Now read: every complete line sent gets its answer, in order.
    read_answers(&mut c, sent / 2);
    if sent % 2 == 1 {
        c.send(b"\n"); // finish the half-sent line "x"
        read_answers(&mut c, 1);
    }
    assert!((1..=99).contains(&c.ask("after")));
}

#[test]
fn a_flooding_client_does_not_starve_others() {
    let server = Server::start(&[]);
    let mut flood = server.connect();
    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));

    // The flood: pipelined lines as fast as the socket takes them, with a
    // reader that keeps up so the server never pauses it; bounded to 20 s.
    let mut w = flood.writer();
    let closer = flood.writer();
    let stop = done.clone();
    let writer = std::thread::spawn(move || {
        let chunk = b"flood\n".repeat(8 * 1024);
        let until = Instant::now() + Duration::from_secs(20);
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            if w.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let count = answered.clone();
    let stop = done.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            match flood.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => count.fetch_add(
                    buf[..n].iter().filter(|&&b| b == b'\n').count(),
                    Ordering::Relaxed,
                ),
            };
        }
    });

    // Wait until the flood is really flowing, then ping-pong beside it:
    // each ping answered within the liveness bound (generous for a debug
    // build on a busy machine; a server that makes the other client wait
    // for the flood fails it long before WAIT).
    common::wait_until("the flood is answered", WAIT, || {
        answered.load(Ordering::Relaxed) >= 100_000
    });
    let flood_before = answered.load(Ordering::Relaxed);
    let mut other = server.connect();
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let asked = Instant::now();
        assert!((1..=99).contains(&other.ask(&format!("ping {i}"))));
        slowest = slowest.max(asked.elapsed());
    }
    let flood_during = answered.load(Ordering::Relaxed) - flood_before;
    done.store(true, Ordering::Relaxed);
    assert!(
        !writer.is_finished(),
        "the flood ended before the other client was served"
    );
    writer.join().expect("writer");
    closer.shutdown(std::net::Shutdown::Both).expect("shutdown");
    reader.join().expect("reader");
    println!("slowest ping {slowest:?}; {flood_during} flood answers meanwhile");
    assert!(
        slowest < common::scaled(PING_LIVENESS),
        "a ping beside the flood waited {slowest:?}"
    );
    // And the flood was not stopped to serve the pings.
    assert!(flood_during > 0, "the flood got no answer during the pings");
}

#[test]
fn one_client_over_max_connections_is_told_busy_and_closed() {
    let server = Server::start(&["--max-connections", "2"]);
    let mut a = server.connect();
    let mut b = server.connect();
    assert!((1..=99).contains(&a.ask("a")));
    assert!((1..=99).contains(&b.ask("b")));

    let mut c = server.connect();
    c.send(b"let me in\n");
    assert_eq!(c.rest_until_eof(), b"ERR server busy\n");

    // Existing clients are untouched; a freed place is taken again.
    assert!((1..=99).contains(&a.ask("a again")));
    b.send(b"STOP\n");
    b.expect_eof();
    server.log.wait_for("closed 127.0.0.1");
    let mut d = server.connect();
    assert!((1..=99).contains(&d.ask("d")));
}

#[test]
fn a_line_longer_than_max_line_gets_an_error_without_waiting_for_newline() {
    let server = Server::start(&["--max-line", "10"]);
    let mut c = server.connect();
    // Exactly 10 bytes is fine, whitespace counts.
    assert!((1..=99).contains(&c.ask("0123456789")));
    // The long line goes on and on: the error must not wait for its end,
    // and the unread rest must not turn the close into a reset.
    let mut w = c.writer();
    let t = std::thread::spawn(move || {
        let mut burst = b"ok\n   4567890X".to_vec();
        burst.extend(std::iter::repeat_n(b'z', 300_000));
        let _ = w.write_all(&burst);
    });
    let rest = c.rest_until_eof();
    t.join().expect("writer");
    let text = String::from_utf8_lossy(&rest);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text:?}");
    assert!(lines[0].parse::<i64>().is_ok(), "{text:?}");
    assert_eq!(lines[1], "ERR line too long");
}

#[test]
fn max_line_zero_means_no_limit() {
    let server = Server::start(&["--max-line", "0"]);
    let mut c = server.connect();
    let long = "y".repeat(1 << 20);
    let mut w = c.writer();
    let t = std::thread::spawn(move || w.write_all(format!("{long}\n").as_bytes()));
    assert!((1..=99).contains(&c.number()));
    t.join().expect("writer").expect("write");
}

#[test]
fn idle_clients_are_closed_and_active_ones_are_not() {
    let server = Server::start(&["--idle-timeout", "1"]);
    let timeout = Duration::from_secs(1);
    // The idle client, on a thread: when is it closed? Timed from before
    // it connects, so that all its activity (and the server's clock for
    // it) comes after `started`: closed no earlier than one timeout later.
    let addr = server.addr;
    let idle = std::thread::spawn(move || {
        let started = Instant::now();
        let mut idle = Client::connect(addr);
        assert!((1..=99).contains(&idle.ask("hello")));
        let closed = idle.closed_by_server();
        (closed, started.elapsed())
    });
    // Meanwhile `active` sends a complete line every 300 ms for 2.4 s
    // (over two timeouts): never idle for a second, never closed.
    let mut active = server.connect();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(300));
        assert!((1..=99).contains(&active.ask("still here")));
    }
    let (closed, after) = idle.join().expect("idle client");
    println!("idle client closed after {after:?}");
    assert!(closed, "idle client was not closed within {WAIT:?}");
    assert!(
        after >= timeout && after < timeout + common::scaled(IDLE_MARGIN),
        "idle client closed after {after:?}, for a {timeout:?} timeout"
    );
    assert!((1..=99).contains(&active.ask("after")));
    // (Not the log's "idle timeout": the startup `limits:` line has it.)
    assert_eq!(server.stats()["idle_closed"], 1, "only the idle one");
}

/// Starts randline under `prlimit --nofile=N:N`.
fn start_with_fd_limit(limit: u32, args: &[&str]) -> Server {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={limit}:{limit}"))
        .arg(common::bin())
        .args(["--listen", "127.0.0.1:0"])
        .args(args);
    Server::spawn(cmd)
}

#[test]
fn default_max_connections_fits_the_fd_limit() {
    let server = start_with_fd_limit(64, &[]);
    server.log.wait_for("open files 64, max connections 32");
    let mut clients: Vec<Client> = (0..32).map(|_| server.connect()).collect();
    for c in &mut clients {
        assert!((1..=99).contains(&c.ask("in")));
    }
    let mut extra = server.connect();
    assert_eq!(extra.rest_until_eof(), b"ERR server busy\n");
}

#[test]
fn out_of_file_descriptors_keeps_serving_and_resumes_accepting() {
    // 40 descriptors, but up to 100 clients allowed: accept will hit EMFILE.
    let server = start_with_fd_limit(40, &["--max-connections", "100"]);
    let mut served = Vec::new();
    let mut waiting = Vec::new();
    for _ in 0..50 {
        let mut c = server.connect();
        c.send(b"hello\n");
        if waiting.is_empty() {
            match c.peek_within(Duration::from_millis(500)) {
                Ok(0) => panic!("closed instead of waiting"),
                Ok(_) => {
                    assert!((1..=99).contains(&c.number()));
                    served.push(c);
                    continue;
                }
                Err(e) => assert!(
                    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                    "{e}"
                ),
            }
        }
        waiting.push(c);
    }
    assert!(
        served.len() >= 20,
        "only {} served before EMFILE",
        served.len()
    );
    assert!(!waiting.is_empty(), "never ran out of descriptors");
    server.log.wait_for("out of file descriptors");

    // Existing clients are still served, and the server does not spin.
    let ticks = server.cpu_ticks();
    for c in served.iter_mut().take(5) {
        assert!((1..=99).contains(&c.ask("still served")));
    }
    std::thread::sleep(Duration::from_secs(1));
    let used = server.cpu_ticks() - ticks;
    assert!(
        used < 30,
        "{used} ticks of CPU in ~1 s while out of descriptors: a busy loop?"
    );

    // Free descriptors: every waiting client is accepted and answered.
    let freed = waiting.len() + 2;
    for mut c in served.drain(..freed.min(served.len())) {
        c.send(b"STOP\n");
        c.expect_eof();
    }
    for c in &mut waiting {
        assert!(
            (1..=99).contains(&c.number()),
            "a waiting client was not served"
        );
    }
    assert_eq!(
        server.log.count("out of file descriptors"),
        1,
        "the warning is rate-limited"
    );
}

#[test]
fn an_idle_server_is_one_thread_that_never_wakes() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    assert!((1..=99).contains(&c.ask("then silence")));
    let pid = server.pid();
    if !common::skip_under_emulation("the thread count", "qemu-user adds threads of its own") {
        assert_eq!(common::proc_status_number(pid, "Threads:"), 1, "one thread");
    }
    // The main thread's switches (/proc/PID/status counts the leader's
    // only): under qemu-user too, the loop's own thread.
    let wakeups = || {
        common::proc_status_number(pid, "voluntary_ctxt_switches:")
            + common::proc_status_number(pid, "nonvoluntary_ctxt_switches:")
    };
    // Let the loop settle into its poll, then watch it for 1.5 s.
    std::thread::sleep(Duration::from_millis(200));
    let before = wakeups();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(wakeups(), before, "an idle server woke up");
}

#[test]
fn a_half_closed_client_that_reads_slowly_gets_every_answer() {
    // Many lines, then EOF, then a reader that takes its time: the answers
    // owed outlive the client's EOF and the server's output cap.
    // Long answers (19 digits) so that they overflow the kernel's buffers.
    let server = Server::start(&common::LONG_ANSWERS);
    let mut c = server.connect();
    let lines = 2_000_000;
    let writer = c.send_lines_in_background(lines, true);
    std::thread::sleep(Duration::from_millis(500));
    read_answers_pausing(&mut c, lines, Duration::from_millis(5));
    writer.join().expect("writer");
    c.expect_eof();
}

#[test]
fn a_closing_client_does_not_hold_a_place() {
    // The first client says STOP but keeps its socket open (so the server
    // lingers on it); its place is free for the next client at once.
    let server = Server::start(&["--max-connections", "1"]);
    let mut first = server.connect();
    assert!((1..=99).contains(&first.ask("hi")));
    first.send(b"STOP\n");
    first.expect_eof();
    let mut second = server.connect();
    assert!((1..=99).contains(&second.ask("my turn")));
}

#[test]
fn a_client_that_stops_and_reconnects_at_the_per_address_limit_is_served() {
    // The same for the per-address count: the first connection lingers
    // (its client read the answer and our EOF but keeps its socket), and
    // its address is free for the reconnect at once. Before the count was
    // given back with the seat, the reconnect got "ERR too many
    // connections from your address" for up to LINGER.
    let server = Server::start(&["--max-connections-per-ip", "1"]);
    let mut first = server.connect();
    first.send(b"hi\nSTOP\n");
    let rest = first.rest_until_eof();
    assert_eq!(rest.iter().filter(|&&b| b == b'\n').count(), 1, "{rest:?}");
    let mut again = server.connect();
    assert!((1..=99).contains(&again.ask("my turn")));
    drop(first);
}

#[test]
fn many_rejected_clients_all_get_the_busy_line_without_a_reset() {
    let server = Server::start(&["--max-connections", "1"]);
    let mut holder = server.connect();
    assert!((1..=99).contains(&holder.ask("mine")));
    let mut rejected: Vec<Client> = (0..40)
        .map(|_| {
            let mut c = server.connect();
            c.send(&b"hello\n".repeat(10));
            c
        })
        .collect();
    for c in &mut rejected {
        assert_eq!(c.rest_until_eof(), b"ERR server busy\n");
    }
    assert!((1..=99).contains(&holder.ask("still mine")));
}

#[test]
fn urgent_data_does_not_hide_the_lines_behind_it() {
    // TCP urgent data stops a read short at the urgent mark with more
    // bytes queued: a "short read means empty" shortcut would strand the
    // lines after it. The server is paused so that everything is queued
    // before it reads.
    let server = Server::start(&[]);
    let mut c = server.connect();
    assert!((1..=99).contains(&c.ask("warm up")));
    server.pause();
    for _ in 0..5 {
        c.send(b"a\n");
        c.send_urgent(b"!");
    }
    c.send(b"c\nd\n");
    server.resume();
    for _ in 0..7 {
        assert!((1..=99).contains(&c.number()));
    }
}

#[test]
fn a_unix_client_passing_descriptors_gets_every_answer() {
    // On a Unix socket, Linux ends a read after a message that carries
    // descriptors (SCM_RIGHTS), with more bytes queued behind it: a "short
    // read means empty" shortcut would strand the lines after it until the
    // client sent more. Everything is queued while the server is paused,
    // ten descriptors among the lines. The server reads with plain
    // read(2), which takes no descriptors: the kernel closes them, and the
    // server's descriptor count is what it was.
    use rustix::net::{
        RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, recv, sendmsg,
    };
    use std::mem::MaybeUninit;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    let dir = std::env::temp_dir().join(format!("randline-scm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("s.sock");
    let mut cmd = Command::new(common::bin());
    cmd.args(["--listen", "127.0.0.1:0", "--unix"]).arg(&path);
    let server = Server::spawn(cmd);
    server.log.wait_for("listening on unix:");
    let mut c = UnixStream::connect(&path).expect("connect");
    c.set_read_timeout(Some(WAIT)).expect("timeout");
    c.write_all(b"warm up\n").expect("write");
    let mut one = [0u8; 8];
    let n = c.read(&mut one).expect("first answer");
    assert!(n > 0 && one[..n].ends_with(b"\n"), "{:?}", &one[..n]);
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .expect("fd")
            .count()
    };
    let before = fds();
    let passed = std::fs::File::open("/dev/null").expect("/dev/null");
    server.pause();
    let mut sent = 0;
    for _ in 0..10 {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let rights = [passed.as_fd()];
        assert!(control.push(SendAncillaryMessage::ScmRights(&rights)));
        let line = [std::io::IoSlice::new(b"with a descriptor\n")];
        sendmsg(&c, &line, &mut control, SendFlags::empty()).expect("sendmsg");
        c.write_all(b"a\nb\nc\nd\ne\n").expect("write");
        sent += 6;
    }
    drop(passed);
    server.resume();
    // The answers are only peeked at, not taken: taking them would wake
    // the server's socket (room to write), and that event would hide a
    // stall by reporting the input still queued.
    let mut buf = [0u8; 4096];
    let mut answered = || {
        let (n, _) =
            recv(&c, &mut buf[..], RecvFlags::PEEK | RecvFlags::DONTWAIT).unwrap_or((0, 0));
        buf[..n].iter().filter(|&&b| b == b'\n').count()
    };
    let all = common::poll(PING_LIVENESS, || (answered() >= sent).then_some(()));
    assert!(
        all.is_some(),
        "{} of {sent} answers after {PING_LIVENESS:?}",
        answered()
    );
    assert_eq!(fds(), before, "the server kept passed descriptors");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_small_fd_limit_still_serves_half_of_it() {
    let server = start_with_fd_limit(20, &[]);
    server.log.wait_for("open files 20, max connections 10");
    let mut clients: Vec<Client> = (0..10).map(|_| server.connect()).collect();
    for c in &mut clients {
        assert!((1..=99).contains(&c.ask("in")));
    }
    assert_eq!(server.connect().rest_until_eof(), b"ERR server busy\n");
}

#[test]
fn a_burst_of_connects_waits_in_a_deep_backlog() {
    // While the loop is not accepting (here: paused), the kernel completes
    // handshakes into the listen backlog. std's default of 128 would leave
    // the rest of a burst retrying SYNs for a second or more.
    let server = Server::start(&[]);
    server.pause();
    let mut clients = Vec::new();
    for i in 0..400 {
        let stream = std::net::TcpStream::connect_timeout(&server.addr, Duration::from_millis(800))
            .unwrap_or_else(|e| panic!("connect #{i} while the server is paused: {e}"));
        clients.push(stream);
    }
    server.resume();
    for stream in clients.iter().step_by(40) {
        let mut c = Client::from_stream(stream.try_clone().expect("clone"));
        assert!((1..=99).contains(&c.ask("made it")));
    }
}

#[test]
fn the_soft_fd_limit_is_raised_to_the_hard_limit() {
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=256:4096")
        .arg(common::bin())
        .args(["--listen", "127.0.0.1:0"]);
    let server = Server::spawn(cmd);
    server.log.wait_for("open files 4096, max connections 4064");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    assert_eq!(line.split_whitespace().nth(3), Some("4096"), "{line}");
}
