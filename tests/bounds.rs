//! What one client can cost, and how long it can hold what it holds: the
//! kernel's socket buffers (TCP and Unix), the output budget, the output
//! timeout, TCP keepalive (a dead peer on a real link, in network
//! namespaces), the per-address limit, an idle timeout that a drip cannot
//! defeat, and its share of a loop turn's reading.
//!
//! Each test fails on c6ef8e1, which had none of these bounds; the Unix
//! non-reader's and the turn's share fail on 0efa829 too (a Unix socket's
//! send buffer at the default; the again-list driving a client twice a
//! turn).

mod common;

use common::netns::{self, Hosts};
use common::{Client, LONG_ANSWERS, Proc, Server, WAIT, eventually};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Sends `lines` lines of `x` from a thread and never reads; stops quietly
/// when the server closes the connection.
fn never_reader(addr: SocketAddr, lines: usize) -> (TcpStream, JoinHandle<()>) {
    let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    let mut w = stream.try_clone().expect("clone");
    w.set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let t = std::thread::spawn(move || {
        let batch = b"x\n".repeat(1000);
        for _ in 0..lines / 1000 {
            if w.write_all(&batch).is_err() {
                return;
            }
        }
    });
    (stream, t)
}

/// `ss -tmoi` for the server's end of its established connections: one
/// string per socket (address line and details joined).
fn server_sockets(port: u16) -> Vec<String> {
    ss_sockets(&[
        "-Htmnoi",
        "state",
        "established",
        &format!("( sport = :{port} )"),
    ])
}

/// `ss ARGS`, one string per socket: each socket is an address line, then
/// its indented details, joined here.
fn ss_sockets(args: &[&str]) -> Vec<String> {
    let out = common::run_cmd({
        let mut c = Command::new("ss");
        c.args(args);
        c
    });
    assert!(out.status.success(), "ss failed (iproute2 installed?)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut sockets: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) {
            if let Some(last) = sockets.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            sockets.push(line.to_string());
        }
    }
    sockets
}

/// A field of `skmem:(r0,rb65536,t0,...)`, such as `rb` or `w`.
fn skmem(socket: &str, field: &str) -> u64 {
    let inner = socket
        .split("skmem:(")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| panic!("no skmem in {socket}"));
    inner
        .split(',')
        .find_map(|kv| {
            let digits = kv.trim_start_matches(|c: char| c.is_ascii_alphabetic());
            (&kv[..kv.len() - digits.len()] == field).then(|| digits.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {field} in skmem of {socket}"))
}

#[test]
fn every_client_socket_inherits_the_listeners_bounds() {
    let server = Server::start(&["--tcp-keepalive", "120"]);
    let mut c = server.connect();
    c.ask("hello");
    let sockets = server_sockets(server.addr.port());
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    let s = &sockets[0];
    // SO_RCVBUF 32 KiB (the kernel doubles it), keepalive armed: no
    // setsockopt per connection, and still in force.
    assert_eq!(skmem(s, "rb"), 64 * 1024, "{s}");
    assert!(s.contains("timer:(keepalive"), "{s}");
}

#[test]
fn a_client_that_never_reads_pins_at_most_256_kib_kernel_included() {
    let server = Server::start(&[]);
    let (_stream, writer) = never_reader(server.addr, 512 * 1024);
    // 512 Ki lines: the server answers until its buffers and the client's
    // fill, then stops reading. Wait for that to settle.
    let mut last = None;
    let settled = eventually("the connection settles", WAIT, || {
        // Samples 100 ms apart: settled when two agree.
        std::thread::sleep(Duration::from_millis(100));
        let s = server_sockets(server.addr.port()).pop()?;
        let now = (
            skmem(&s, "r"),
            skmem(&s, "w"),
            server.stats()["pending_out"],
        );
        let same = last == Some(now);
        last = Some(now);
        same.then_some(now)
    });
    let (rmem, wmem, user) = settled;
    let total = rmem + wmem + user;
    println!("kernel receive {rmem} B, kernel send {wmem} B, server's own {user} B: {total} B");
    assert!(user <= 64 * 1024 + 64, "user space {user} B");
    assert!(total <= 256 * 1024, "one non-reader holds {total} B");
    drop(writer);
}

#[test]
fn a_unix_client_that_never_reads_pins_at_most_256_kib_of_the_servers() {
    // On a Unix stream the answers a client has not read wait in its
    // receive queue, charged to the server's socket: bounded by the
    // server's send buffer (UNIX_SEND_BUF, doubled by the kernel, plus one
    // message), not the default 208 KiB. The client's own unread lines are
    // charged to its own socket (its send buffer, which it sets; up to
    // twice wmem_max): printed, not bounded. 20-byte answers, so that its
    // answers, not its lines, fill what it pins.
    let mut args = vec!["--listen", "127.0.0.1:0", "--unix"];
    let dir = std::env::temp_dir().join(format!("randline-nonreader-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("s.sock");
    args.push(path.to_str().expect("path"));
    args.extend(LONG_ANSWERS);
    let mut cmd = Command::new(common::bin());
    cmd.args(&args);
    let server = Server::spawn(cmd);
    server.log.wait_for("listening on unix:");
    let stream = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    let mut w = stream.try_clone().expect("clone");
    w.set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let writer = std::thread::spawn(move || {
        let batch = b"x\n".repeat(1000);
        for _ in 0..512 {
            if w.write_all(&batch).is_err() {
                return;
            }
        }
    });
    let mut last = None;
    let (server_kernel, client_kernel, user) = eventually("the connection settles", WAIT, || {
        std::thread::sleep(Duration::from_millis(100));
        let (ours, theirs) = unix_pair(&path)?;
        let now = (
            skmem(&ours, "t"),
            skmem(&theirs, "t"),
            server.stats()["pending_out"],
        );
        let same = last == Some(now);
        last = Some(now);
        same.then_some(now)
    });
    let total = server_kernel + user;
    println!(
        "server: kernel {server_kernel} B (answers queued to the client), own {user} B: \
         {total} B; client: kernel {client_kernel} B (its unread lines)"
    );
    // Twice UNIX_SEND_BUF, plus one message of at most half that (and
    // its overhead).
    assert!(server_kernel <= 128 * 1024, "kernel {server_kernel} B");
    assert!(user <= 64 * 1024 + 64, "user space {user} B");
    assert!(total <= 256 * 1024, "one non-reader holds {total} B");
    drop(stream);
    drop(writer);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `ss -xm` for the established Unix connection at `path`: the server's
/// end (named by the path), then the client's (whose inode the server's
/// end names as its peer). `None` until it is there.
fn unix_pair(path: &std::path::Path) -> Option<(String, String)> {
    let sockets = ss_sockets(&["-Hxmn", "state", "established"]);
    // Netid Recv-Q Send-Q Local Inode Peer PeerInode skmem (no State
    // column with a state filter).
    let fields = |s: &String| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let path = path.to_str()?.to_string();
    let ours = sockets.iter().find(|s| fields(s).get(3) == Some(&path))?;
    let peer = fields(ours).get(6)?.clone();
    let theirs = sockets.iter().find(|s| fields(s).get(4) == Some(&peer))?;
    Some((ours.clone(), theirs.clone()))
}

#[test]
fn past_the_output_budget_clients_with_answers_waiting_are_not_read() {
    // 20-byte answers; clients that never read, each of which alone could
    // park 64 KiB. A budget of one byte: every client but the first comes
    // when the server is past it already. They come one at a time, each
    // once the one before is stopped, so that each finds its socket
    // buffers full and every answer it is given stays in the server.
    let mut args = LONG_ANSWERS.to_vec();
    args.extend(["--output-budget", "1"]);
    let server = Server::start(&args);
    let clients = 12;
    let mut pushers = Vec::new();
    let mut last = None;
    let mut pending = 0;
    for n in 1..=clients {
        pushers.push(never_reader(server.addr, 100_000));
        // Stopped (paused by its own backlog or the budget), and settled.
        pending = eventually("pending output settles", Duration::from_secs(20), || {
            let stats = server.stats();
            let now = stats["pending_out"];
            let same = last == Some(now);
            last = Some(now);
            std::thread::sleep(Duration::from_millis(200));
            (stats["paused"] >= n as u64 && same).then_some(now)
        });
    }
    // The documented bound: budget + one client's cap (the one that
    // crossed it) + OVER_BUDGET_BATCH per client after that.
    let bound = 1 + (64 * 1024 + 64) + clients * (4 * 1024 + 64);
    println!("pending output with {clients} non-readers: {pending} B (bound {bound} B)");
    assert!(
        pending <= bound as u64,
        "{pending} B pending, bound {bound} B"
    );
    // An honest client is still answered at once.
    let mut honest = server.connect();
    for i in 0..20 {
        let t = Instant::now();
        honest.ask(&format!("still there {i}"));
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "answer {i} took {:?}",
            t.elapsed()
        );
    }
    drop(pushers);
}

#[test]
fn a_client_whose_answers_stay_backed_up_is_closed_after_the_output_timeout() {
    let mut args = LONG_ANSWERS.to_vec();
    args.extend(["--output-timeout", "2"]);
    let server = Server::start(&args);
    let started = Instant::now();
    let (mut stream, writer) = never_reader(server.addr, 400_000);
    server.log.wait_for("none taken (output timeout)");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "closed after {took:?}");
    assert_eq!(server.stats()["output_closed"], 1);
    // Closed for real: the socket reports EOF or a reset, not a timeout.
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut buf = vec![0; 1 << 16];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    writer.join().expect("writer");
}

#[test]
fn a_drip_without_newlines_does_not_hold_a_slot_past_the_idle_timeout() {
    let server = Server::start(&["--idle-timeout", "1"]);
    let mut c = server.connect();
    let mut w = c.writer();
    let drip = std::thread::spawn(move || {
        // One byte every 300 ms, never a newline, for at most 6 s.
        for _ in 0..20 {
            if w.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let started = Instant::now();
    c.set_read_timeout(Duration::from_secs(5));
    let mut buf = [0u8; 64];
    let closed = matches!(c.read(&mut buf), Ok(0));
    assert!(closed, "a drip kept its slot for {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(4));
    drip.join().expect("drip");
}

#[test]
fn a_paused_client_taking_its_answers_is_not_idle() {
    if !netns::available("a_paused_client_taking_its_answers_is_not_idle") {
        return;
    }
    // Over a real link (1500-byte MTU) into a small receive buffer, so
    // the server sees the client's progress every few KB (loopback's 64 KiB
    // segments, or a big buffer, would hide it for seconds). 3,000 lines of
    // 20-byte answers (60 KB), taken at about 20 KB/s: the server stops
    // reading this client for about 2 s at a time while its answers drain.
    // No line arrives then, but answer bytes are taken, which is activity:
    // with 1 s timeouts it must not be cut. Then one more line.
    let hosts = Hosts::server_only(3);
    let mut cmd = hosts.command(&hosts.server, common::bin());
    cmd.args(["--listen", &format!("{}:0", hosts.server_ip)])
        .args(LONG_ANSWERS)
        .args(["--idle-timeout", "1", "--output-timeout", "1"]);
    let server = Server::spawn(cmd);
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
        .connect_timeout(&server.addr.into(), WAIT)
        .expect("connect");
    let mut c = Client::from_stream(socket.into());
    let lines = 3_000;
    c.send(&b"x\n".repeat(lines));
    let mut got = 0;
    let mut buf = vec![0; 1024];
    let started = Instant::now();
    while got < lines {
        let n = c
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("{e} after {got} answers; log:\n{}", server.log.text()));
        assert!(n > 0, "closed while taking its answers, after {got}");
        got += buf[..n].iter().filter(|&&b| b == b'\n').count();
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("took its answers in {:?}", started.elapsed());
    c.ask("one more");
    let stats = server.stats();
    assert!(stats["paused"] >= 1, "never paused: {stats:?}");
}

#[test]
fn a_paused_client_that_reads_its_answers_loses_nothing() {
    // 100,000 lines sent at once, answers read slowly (about 50 KB/s,
    // 6 s in all): the server stops reading this client for most of that
    // time, and resumes as its answers drain. (Loopback's 64 KiB segments
    // make that progress come in bursts about 1.3 s apart: the timeouts
    // leave room for that.)
    let server = Server::start(&["--idle-timeout", "3", "--output-timeout", "3"]);
    let mut c = server.connect();
    let lines = 100_000;
    let writer = c.send_lines_in_background(lines, true);
    let mut got = 0;
    let mut buf = vec![0; 2048];
    loop {
        let n = c
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("{e} after {got} answers; log:\n{}", server.log.text()));
        if n == 0 {
            break;
        }
        got += buf[..n].iter().filter(|&&b| b == b'\n').count();
        std::thread::sleep(Duration::from_millis(40));
    }
    writer.join().expect("writer");
    assert_eq!(got, lines, "a slow reader lost answers");
}

#[test]
fn one_address_cannot_take_every_slot() {
    // The default: max(64, max-connections / 16).
    let server = Server::start(&["--max-connections", "200"]);
    let mut mine: Vec<Client> = (0..64).map(|_| server.connect()).collect();
    for c in &mut mine {
        c.ask("hello");
    }
    let mut one_more = server.connect();
    assert_eq!(
        one_more.rest_until_eof(),
        b"ERR too many connections from your address\n"
    );
    // Another address is served...
    let other =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    other
        .bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .expect("bind 127.0.0.2");
    other
        .connect_timeout(&server.addr.into(), WAIT)
        .expect("connect");
    Client::from_stream(other.into()).ask("from elsewhere");
    // ... and a slot comes back when one of ours leaves.
    let mut leaving = mine.pop().expect("a client");
    leaving.send(b"STOP\n");
    leaving.expect_eof();
    drop(leaving);
    eventually("the address's slot comes back", WAIT, || {
        let mut c = server.connect();
        c.send(b"again\n");
        c.try_line()?.parse::<i64>().ok()
    });
    // The 65th, and any retry above that came before the slot was back.
    assert!(server.stats()["rejected_per_ip"] >= 1);
}

#[test]
fn behind_a_proxy_the_limit_counts_the_client_the_header_names() {
    let server = Server::start(&["--proxy-protocol", "--max-connections-per-ip", "2"]);
    let with = |header: &str| {
        let mut c = server.connect();
        c.send(header.as_bytes());
        c.send(b"hello\n");
        c
    };
    let answered = |c: &mut Client| c.try_line().is_some_and(|l| l.parse::<i64>().is_ok());
    let v4 = "PROXY TCP4 192.0.2.1 192.0.2.9 4000 80\r\n";
    let mut held = vec![with(v4), with(v4)];
    for c in &mut held {
        assert!(answered(c));
    }
    let mut refused = with(v4);
    assert_eq!(
        refused.rest_until_eof(),
        b"ERR too many connections from your address\n"
    );
    assert!(answered(&mut with(
        "PROXY TCP4 192.0.2.2 192.0.2.9 4000 80\r\n"
    )));
    // IPv6: one /64 is one client.
    let mut v6 = vec![
        with("PROXY TCP6 2001:db8::1 2001:db8::9 4000 80\r\n"),
        with("PROXY TCP6 2001:db8::2 2001:db8::9 4000 80\r\n"),
    ];
    for c in &mut v6 {
        assert!(answered(c));
    }
    let mut same_64 = with("PROXY TCP6 2001:db8::ffff:3 2001:db8::9 4000 80\r\n");
    assert_eq!(
        same_64.rest_until_eof(),
        b"ERR too many connections from your address\n"
    );
    assert!(answered(&mut with(
        "PROXY TCP6 2001:db8:0:1::1 2001:db8::9 4000 80\r\n"
    )));
    // A header that names no client (a health check) is the proxy speaking
    // for itself: never counted, however many.
    let mut checks: Vec<Client> = (0..4).map(|_| with("PROXY UNKNOWN\r\n")).collect();
    for c in &mut checks {
        assert!(answered(c), "a LOCAL/UNKNOWN connection was refused");
    }
}

/// `nc` in the client host: connects, sends `hello`, returns the process
/// (killed when dropped) and the answer line.
fn nc_client(hosts: &Hosts, port: u16) -> (Proc, String) {
    let mut nc = Proc::spawn_piped(
        hosts
            .command(&hosts.client, "nc")
            .args([hosts.server_ip.as_str(), &port.to_string()]),
    );
    nc.stdin().write_all(b"hello\n").expect("send");
    let stdout = nc.take_stdout();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(WAIT).unwrap_or_default();
    (nc, line)
}

/// The server in its own host, `--max-connections 1`.
fn server_in(hosts: &Hosts, extra: &[&str]) -> Server {
    let mut cmd = hosts.command(&hosts.server, common::bin());
    cmd.args(["--listen", &format!("{}:0", hosts.server_ip)])
        .args(["--max-connections", "1"])
        .args(extra);
    Server::spawn(cmd)
}

#[test]
fn a_dead_idle_peer_gives_its_slot_back() {
    if !netns::available("a_dead_idle_peer_gives_its_slot_back") {
        return;
    }
    let hosts = Hosts::new(1);
    let server = server_in(&hosts, &["--tcp-keepalive", "2"]);
    let port = server.addr.port();
    let (first, answer) = nc_client(&hosts, port);
    assert!(answer.trim().parse::<i64>().is_ok(), "got {answer:?}");
    // The client's host drops off the network: no FIN, no RST, ever.
    hosts.client_link(false);
    drop(first); // killed
    let started = Instant::now();
    server.log.wait_for_nth("closed", 1);
    let took = started.elapsed();
    println!("dead idle peer dropped after {took:?}");
    assert!(took < Duration::from_secs(9), "dropped after {took:?}");
    // Closed as a socket failure (timed out, or the host unreachable).
    assert_eq!(server.stats()["failed"], 1, "{}", server.log.text());
    // The one slot is free again.
    hosts.client_link(true);
    let (second, answer) = nc_client(&hosts, port);
    drop(second);
    assert!(
        answer.trim().parse::<i64>().is_ok(),
        "the slot did not come back: {answer:?}"
    );
    assert!(server.stats()["failed"] >= 1);
}

#[test]
fn a_peer_that_stops_acknowledging_answers_is_dropped() {
    if !netns::available("a_peer_that_stops_acknowledging_answers_is_dropped") {
        return;
    }
    let hosts = Hosts::new(2);
    let server = server_in(&hosts, &["--tcp-keepalive", "2"]);
    let (mut nc, answer) = nc_client(&hosts, server.addr.port());
    assert!(answer.trim().parse::<i64>().is_ok(), "got {answer:?}");
    // Lines arrive while the server is stopped; the link goes down before
    // it answers them: its answers wait unacknowledged, where keepalive
    // does not probe. TCP_USER_TIMEOUT must drop the peer.
    server.pause();
    nc.stdin().write_all(b"1\n2\n3\n").expect("send");
    std::thread::sleep(Duration::from_millis(200));
    hosts.client_link(false);
    drop(nc); // killed
    server.resume();
    let started = Instant::now();
    server.log.wait_for_nth("closed", 1);
    let took = started.elapsed();
    println!("unacknowledging peer dropped after {took:?}");
    assert!(took < Duration::from_secs(9), "dropped after {took:?}");
    // Closed as a socket failure (timed out, or the host unreachable).
    assert_eq!(server.stats()["failed"], 1, "{}", server.log.text());
}

/// `READ_BUDGET`, `TURN_READ_BUDGET` and `MIN_READ_BUDGET` (src/conn.rs).
const READ_BUDGET: u64 = 64 * 1024;
const TURN_READ_BUDGET: u64 = 2 << 20;
const MIN_READ_BUDGET: u64 = 4 * 1024;

/// A Unix listener at a fresh path beside a TCP one, with `RUST_LOG`.
fn unix_server(name: &str, rust_log: &str) -> (Server, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("randline-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("s.sock");
    let mut cmd = Command::new(common::bin());
    cmd.args(["--listen", "127.0.0.1:0", "--unix"])
        .arg(&path)
        .env("RUST_LOG", rust_log);
    let server = Server::spawn(cmd);
    server.log.wait_for("listening on unix:");
    (server, path)
}

#[test]
fn every_client_reads_at_most_its_share_of_a_turn() {
    // Unix clients that pipeline and read their answers: a Unix client's
    // unsent lines wait in its own send buffer (about 200 KiB), so each
    // runs its budget out turn after turn. The trace says, per turn, how
    // many events woke it, every read, and who went on the again-list; the
    // loop's share for a turn is TURN_READ_BUDGET divided among the events
    // and the again-list the turn took, between MIN_READ_BUDGET and
    // READ_BUDGET. No client may read more than that share in one turn,
    // and all together at most TURN_READ_BUDGET, or the share's floor
    // times the clients driven if that is more.
    let (server, path) = unix_server("share", "randline=trace");
    let clients = 24;
    let run = Duration::from_millis(1500);
    let mut threads = Vec::new();
    for _ in 0..clients {
        let c = std::os::unix::net::UnixStream::connect(&path).expect("connect");
        c.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut w = c.try_clone().expect("clone");
        let mut r = c;
        threads.push(std::thread::spawn(move || {
            let batch = b"x\n".repeat(4096);
            let end = Instant::now() + run;
            while Instant::now() < end {
                w.write_all(&batch).expect("write");
            }
            w.shutdown(std::net::Shutdown::Write).expect("shutdown");
        }));
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0; 1 << 16];
            while r.read(&mut buf).expect("read answers") > 0 {}
        }));
    }
    for t in threads {
        t.join().expect("client");
    }
    let log = server.log.text();
    let (mut turns, mut full) = (0, 0);
    let (mut events, mut queued, mut queued_next) = (0u64, 0u64, 0u64);
    let mut read: std::collections::BTreeMap<&str, u64> = Default::default();
    let mut check = |events: u64, queued: u64, read: &mut std::collections::BTreeMap<&str, u64>| {
        let driven = (events + queued).max(1);
        let share = (TURN_READ_BUDGET / driven).clamp(MIN_READ_BUDGET, READ_BUDGET);
        for (token, &n) in read.iter() {
            assert!(
                n <= share,
                "{token} read {n} B in one turn, its share {share} B"
            );
            full += u64::from(n == share);
        }
        let total: u64 = read.values().sum();
        let bound = TURN_READ_BUDGET.max(driven * MIN_READ_BUDGET);
        assert!(total <= bound, "a turn read {total} B, bound {bound} B");
        read.clear();
    };
    for line in log.lines() {
        let Some((_, msg)) = line.split_once(" TRACE ") else {
            continue;
        };
        if let Some(rest) = msg.strip_prefix("poll: woke after ") {
            check(events, queued, &mut read);
            turns += 1;
            events = rest
                .split(" with ")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .and_then(|n| n.parse().ok())
                .expect("event count");
            queued = std::mem::take(&mut queued_next);
        } else if let Some((token, rest)) = msg.split_once(": read ")
            && let Some(n) = rest
                .split(" bytes")
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        {
            *read.entry(token).or_default() += n;
        } else if msg.ends_with(", again next turn") {
            queued_next += 1;
        }
    }
    check(events, queued, &mut read);
    let yields = log.matches("read budget used up").count();
    println!("{turns} turns, {yields} budgets used up, {full} reads of a whole share");
    assert!(yields > 100, "the clients did not run their budgets out");
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}
