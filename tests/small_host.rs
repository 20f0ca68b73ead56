//! Small hosts, as the defaults are sized for them (issue 18 item 4): the
//! release server with its DEFAULT flags in a cgroup v1 memory cgroup of
//! 16, 32 and 64 MiB, at 10% of one core. 20 honest ping-pong clients
//! connect first, then 15,000 idle clients, then 600 that pipeline lines
//! and never read, each from its own loopback address (so that no
//! per-address limit is what stops them). The server must never be
//! OOM-killed, answer every honest line, tell the clients over its limit
//! `ERR server busy`, give its descriptors back, and keep its memory
//! cgroup's usage plus its sockets' kernel memory under the limit.
//!
//! The group charges TCP memory as a cgroup v2 host does (v1 does only
//! once `memory.kmem.tcp.limit_in_bytes` is written; it is set to the
//! limit): a socket then costs what the memory rule counts.
//!
//! What is not here: the arithmetic of the rule (src/limits.rs's unit
//! tests), reading the limit on a v2 host (src/sys.rs's, on fixtures), and
//! an attack with hundreds of non-readers admitted (tests/hostile.rs).
//!
//! Needs root and a cgroup v1 memory controller: skipped with a reason
//! without them outside CI.

mod common;

use common::cgroup::{CPU_ROOT, Cgroup, MEMORY_ROOT};
use common::{Client, Server, WAIT};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const HONEST: usize = 20;
const IDLE: usize = 15_000;
const NON_READERS: usize = 600;
/// How long the non-readers push at most (and the honest clients keep
/// asking): a refused one is done at once.
const PUSH_FOR: Duration = Duration::from_secs(5);
/// The liveness bound asserted, generous: at 10% of a core a request may
/// wait out the accept bursts of thousands of clients.
const LIVENESS: Duration = Duration::from_secs(5);
/// Descriptors this process needs beside the clients' (stdio, pipes to
/// the server and to `ss`, cargo's).
const OWN_FDS: usize = 64;

/// One size at a time: each holds 15,620 client sockets, and the
/// open-file limit here (20,000) has room for one such set.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn defaults_hold_15000_idle_and_600_non_readers_in_16_mib() {
    small_host(16);
}

#[test]
fn defaults_hold_15000_idle_and_600_non_readers_in_32_mib() {
    small_host(32);
}

#[test]
fn defaults_hold_15000_idle_and_600_non_readers_in_64_mib() {
    small_host(64);
}

/// True when this process can make cgroup v1 memory and cpu groups.
/// Outside CI a test without them skips, saying why; CI runs as root on a
/// host that has them, so there it must run.
fn available() -> bool {
    let why = if !rustix::process::geteuid().is_root() {
        "needs root (cgroups)"
    } else if !Path::new(MEMORY_ROOT)
        .join("memory.limit_in_bytes")
        .exists()
    {
        "needs a cgroup v1 memory controller at /sys/fs/cgroup/memory"
    } else if !Path::new(CPU_ROOT).join("cpu.cfs_quota_us").exists() {
        "needs a cgroup v1 cpu controller at /sys/fs/cgroup/cpu"
    } else {
        return true;
    };
    assert!(std::env::var_os("CI").is_none(), "small_host {why}");
    eprintln!("skipped small_host: {why}");
    false
}

/// A client socket from `source`, connected (bounded) to `addr`.
fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> Result<TcpStream, String> {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::from((source, 0)).into())
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    s.connect_timeout(&addr.into(), WAIT)
        .map_err(|e| format!("connect from {source}: {e}"))?;
    Ok(s.into())
}

/// The `i`-th address of the block `127.block.0.0/16`, never `.0`.
fn address(block: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, block, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// `ss` on the server's sockets (source port `port`): how many, and the
/// sum of their kernel memory (skmem's r, w and f: received, queued to
/// send, allocated ahead), and the listener's accept queue.
fn ss(args: &[&str]) -> String {
    let out = common::run_cmd({
        let mut c = Command::new("ss");
        c.args(args);
        c
    });
    assert!(out.status.success(), "ss {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn server_socket_memory(port: u16) -> (usize, u64) {
    let text = ss(&[
        "-Htmn",
        "state",
        "established",
        "sport",
        &format!("= :{port}"),
    ]);
    let mut sockets = 0;
    let mut bytes = 0;
    for part in text.split("skmem:(").skip(1) {
        sockets += 1;
        let inner = part.split(')').next().unwrap_or("");
        for kv in inner.split(',') {
            let key: String = kv.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
            if matches!(key.as_str(), "r" | "w" | "f") {
                bytes += kv[key.len()..].parse::<u64>().unwrap_or(0);
            }
        }
    }
    (sockets, bytes)
}

/// Connections complete but not yet accepted by the server.
fn accept_queue(port: u16) -> u64 {
    let text = ss(&["-Hltn", "sport", &format!("= :{port}")]);
    text.split_whitespace()
        .nth(1)
        .and_then(|q| q.parse().ok())
        .unwrap_or(0)
}

/// Connects `n` clients from block `block`, never more than half a
/// backlog ahead of the server's accepts (at 10% of a core it accepts in
/// bursts; a full backlog would drop SYNs and stall connects for seconds).
/// Stops at the first that fails (the server died?), saying why.
fn connect_many(addr: SocketAddr, block: u8, n: usize) -> (Vec<TcpStream>, Option<String>) {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if i % 256 == 0 {
            common::wait_until("the server takes the clients queued", WAIT, || {
                accept_queue(addr.port()) < 512
            });
        }
        match connect_from(address(block, i), addr) {
            Ok(s) => out.push(s),
            Err(e) => return (out, Some(format!("client {i} of {n}: {e}"))),
        }
    }
    (out, None)
}

/// What one honest client saw: requests made, the slowest answer, and
/// what went wrong, if anything did.
struct Honest {
    requests: usize,
    slowest: Duration,
    failure: Option<String>,
}

/// Ping-pong until `stop`: each line is answered with one number in
/// [1, 99] before the next is sent (a missing, extra or late answer
/// fails the read or the parse), then STOP and EOF.
fn ask_until(mut c: Client, stop: Arc<AtomicBool>) -> Honest {
    let mut h = Honest {
        requests: 0,
        slowest: Duration::ZERO,
        failure: None,
    };
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let sent = c.write_all(format!("honest request {}\n", h.requests).as_bytes());
        let answer = sent.ok().and_then(|()| c.try_line());
        match answer.as_deref().map(str::parse::<i64>) {
            Some(Ok(n)) if (1..=99).contains(&n) => {}
            other => {
                h.failure = Some(format!("request {} got {other:?}", h.requests));
                return h;
            }
        }
        h.slowest = h.slowest.max(t.elapsed());
        h.requests += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    c.send(b"STOP\n");
    c.expect_eof();
    h
}

/// Pushes lines at every socket, never reading, for `PUSH_FOR`; a socket
/// the server closed is done. Returns the bytes pushed, and the most
/// sockets the server held and the most kernel memory they held (`ss`,
/// every quarter second meanwhile).
fn push(socks: &[TcpStream], port: u16) -> (usize, usize, u64) {
    for s in socks {
        s.set_nonblocking(true).expect("non-blocking");
    }
    let chunk = vec![b'\n'; 64 * 1024];
    let mut open = vec![true; socks.len()];
    let (mut total, mut sockets, mut memory) = (0, 0, 0);
    let sample = |sockets: &mut usize, memory: &mut u64| {
        let (n, bytes) = server_socket_memory(port);
        *sockets = n.max(*sockets);
        *memory = bytes.max(*memory);
    };
    let started = Instant::now();
    let mut sampled = started;
    while started.elapsed() < PUSH_FOR && open.iter().any(|o| *o) {
        for (mut s, o) in socks.iter().zip(&mut open) {
            if !*o {
                continue;
            }
            match s.write(&chunk) {
                Ok(n) => total += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => *o = false,
            }
        }
        if sampled.elapsed() >= Duration::from_millis(250) {
            sample(&mut sockets, &mut memory);
            sampled = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    sample(&mut sockets, &mut memory);
    (total, sockets, memory)
}

/// What a client got from the server so far.
#[derive(Default)]
struct Seen {
    got: Vec<u8>,
    /// EOF, or a reset (a refused non-reader's unread lines make the
    /// server's close a reset, which may come after the line).
    ended: bool,
}

impl Seen {
    /// Reads what `s` has without waiting.
    fn update(&mut self, mut s: &TcpStream) {
        let mut buf = [0u8; 64];
        while !self.ended {
            match s.read(&mut buf) {
                Ok(0) => self.ended = true,
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => self.ended = true,
            }
        }
    }

    /// Told `ERR server busy`, and closed.
    fn busy(&self) -> bool {
        self.ended && self.got == b"ERR server busy\n"
    }
}

/// How many of `socks` were told `ERR server busy` and closed, waiting
/// (bounded) for `expected` of them; fails on any other `ERR` line.
fn count_busy(socks: &[&TcpStream], expected: usize) -> usize {
    for s in socks {
        s.set_nonblocking(true).expect("non-blocking");
    }
    let mut seen: Vec<Seen> = socks.iter().map(|_| Seen::default()).collect();
    let mut busy = 0;
    common::poll(WAIT, || {
        for (s, seen) in socks.iter().zip(&mut seen) {
            seen.update(s);
        }
        busy = seen.iter().filter(|s| s.busy()).count();
        (busy >= expected).then_some(())
    });
    for s in &seen {
        // Served clients get numbers (a non-reader admitted); a refused
        // one gets this line and nothing else.
        assert!(
            !s.got.starts_with(b"E") || b"ERR server busy\n".starts_with(&s.got),
            "a client got {:?}",
            String::from_utf8_lossy(&s.got)
        );
    }
    busy
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn small_host(mib: u64) {
    if !available() || !common::have("ss", "iproute2") {
        return;
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).expect("the open-file limit") as usize;
    let (idle, non_readers) = if fd_limit >= HONEST + IDLE + NON_READERS + OWN_FDS {
        (IDLE, NON_READERS)
    } else {
        // Keep the proportions, within what this process may hold.
        let room = fd_limit.saturating_sub(HONEST + OWN_FDS);
        let idle = room * IDLE / (IDLE + NON_READERS);
        println!(
            "small_host: open-file limit {fd_limit}: {idle} idle clients and {} non-readers \
             instead of {IDLE} and {NON_READERS}",
            room - idle
        );
        (idle, room - idle)
    };
    let limit = mib << 20;
    let server_bin = common::release_bin();
    let group = Cgroup::new(
        &format!("randline-small-{mib}-{}", std::process::id()),
        limit,
        limit,
    );
    // Into both groups, then exec: the server is in them from its first
    // allocation. Its flags are the defaults: only where to listen.
    let script = format!(
        "echo $$ > {}/cgroup.procs && echo $$ > {}/cgroup.procs && exec {} --listen 127.0.0.1:0",
        group.memory.display(),
        group.cpu.display(),
        server_bin.display(),
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]).env("RUST_LOG", "info");
    let server = Server::spawn(cmd);
    let addr = server.addr;
    let limits_line = server.log.wait_for("limits: ");
    let memory_read = format!("memory {mib} MiB (cgroup v1)");
    assert!(limits_line.contains(&memory_read), "{limits_line}");
    let max_connections: usize = limits_line
        .split("max connections ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no max connections in {limits_line}"));
    // Counted once it sleeps in epoll_wait: until then its start-up may
    // hold a descriptor of its own for a moment (reading /proc or the
    // cgroup's files).
    common::wait_until("the server asleep in epoll_wait", WAIT, || {
        std::fs::read_to_string(format!("/proc/{}/wchan", server.pid()))
            .is_ok_and(|w| w.contains("epoll_wait"))
    });
    let base_fds = open_fds(server.pid());
    let started = Instant::now();

    // What a cgroup v2 host would charge at once: memory and TCP buffers
    // together (v1 keeps two counters with a peak each, and the peaks of
    // the two fall at different times), sampled every few milliseconds
    // until the clients are done.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sampling, dir) = (Arc::clone(&sampling), group.memory.clone());
        std::thread::spawn(move || {
            let read = |file: &str| -> u64 {
                std::fs::read_to_string(dir.join(file))
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0)
            };
            let mut most = 0;
            while sampling.load(Ordering::Relaxed) {
                let now = read("memory.usage_in_bytes") + read("memory.kmem.tcp.usage_in_bytes");
                most = most.max(now);
                std::thread::sleep(Duration::from_millis(2));
            }
            most
        })
    };

    // The honest clients first, asking all along.
    let stop = Arc::new(AtomicBool::new(false));
    let honest: Vec<_> = (0..HONEST)
        .map(|i| {
            let s = connect_from(address(10, i), addr).expect("an honest client connects");
            let c = Client::from_stream(s);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || ask_until(c, stop))
        })
        .collect();
    let (idle_socks, idle_failed) = connect_many(addr, 20, idle);
    let connected_idle = started.elapsed();
    let (pushers, pushers_failed) = connect_many(addr, 30, non_readers);
    let (pushed, sockets, socket_memory) = push(&pushers, addr.port());
    stop.store(true, Ordering::Relaxed);
    let mut requests = 0;
    let mut slowest = Duration::ZERO;
    let mut failures = Vec::new();
    for h in honest {
        let h = h.join().expect("an honest client's thread");
        requests += h.requests;
        slowest = slowest.max(h.slowest);
        failures.extend(h.failure);
    }
    failures.extend(idle_failed);
    failures.extend(pushers_failed);

    sampling.store(false, Ordering::Relaxed);
    let together = sampler.join().expect("the memory sampler");
    // First: did the server live? (Nothing else is worth asking if not.)
    let peak = group.value("memory.max_usage_in_bytes");
    let tcp_peak = group.value("memory.kmem.tcp.max_usage_in_bytes");
    let failcnt = group.value("memory.failcnt");
    let oom_kills = group.oom_kills();
    let memory = format!(
        "memcg peak {} KiB (failcnt {failcnt}, oom_kill {oom_kills}), its TCP memory peak {} \
         KiB, both at once at most {} KiB (sampled), server sockets at most {sockets} holding at \
         most {} KiB (ss skmem r+w+f); limit {} KiB",
        peak >> 10,
        tcp_peak >> 10,
        together >> 10,
        socket_memory >> 10,
        limit >> 10,
    );
    assert_eq!(
        oom_kills, 0,
        "{mib} MiB: the server was OOM-killed, {memory}; failures: {failures:?}"
    );
    assert_ne!(
        server.state(),
        'Z',
        "{mib} MiB: the server died: {memory}; failures: {failures:?}"
    );

    // Everyone past the limit was told so: the first max_connections
    // (honest ones included) were served, every later one turned away.
    let expected_busy = (HONEST + idle + non_readers).saturating_sub(max_connections);
    let everyone: Vec<&TcpStream> = idle_socks.iter().chain(&pushers).collect();
    let busy = count_busy(&everyone, expected_busy);
    drop(everyone);
    // The counters, if the server still answers (SIGUSR1): one pressed
    // against its limit may be too busy reclaiming memory to.
    let before = server.log.count("stats: ");
    server.signal(rustix::process::Signal::USR1);
    let stats = match common::poll(WAIT, || {
        (server.log.count("stats: ") > before).then_some(())
    }) {
        Some(()) => common::parse_stats(&server.log.wait_for_nth("stats: ", before + 1)),
        None => {
            failures.push(format!("no stats line within {WAIT:?} of SIGUSR1"));
            Default::default()
        }
    };
    let rss = server.rss_kib();
    let report = format!(
        "{mib} MiB: {memory_read}, max connections {max_connections}; {HONEST} honest, {idle} \
         idle (connected in {connected_idle:.1?}), {non_readers} non-readers ({} KiB pushed): \
         {busy} told busy (expected {expected_busy}; server: rejected_busy {}, peak {}); \
         {requests} honest requests, slowest {slowest:.0?}; {memory}; RSS {rss} KiB",
        pushed >> 10,
        stats.get("rejected_busy").copied().unwrap_or(0),
        stats.get("peak").copied().unwrap_or(0),
    );
    println!("small_host: {report}");
    assert!(failures.is_empty(), "{failures:?}: {report}");
    assert_eq!(busy, expected_busy, "clients over the limit: {report}");
    assert!(requests >= HONEST * 10, "too few honest requests: {report}");
    assert!(
        slowest <= LIVENESS,
        "an honest request waited {slowest:?}: {report}"
    );
    // What the host pays: the group's peak plus what ss saw in the
    // server's sockets; and memory and TCP buffers at the same moment, as
    // a v2 host charges them (its TCP buffers include connections still
    // in the listen backlog, which the server has not accepted yet).
    let paid = (peak + socket_memory).max(together);
    assert!(paid <= limit, "{} KiB paid: {report}", paid >> 10);

    // Everyone leaves: the descriptors come back.
    drop(idle_socks);
    drop(pushers);
    // At 10% of a core it closes 15,620 sockets: about 10 s here alone,
    // longer on a loaded host.
    let back = common::poll(6 * WAIT, || {
        (open_fds(server.pid()) == base_fds).then_some(())
    });
    if back.is_none() {
        let now = open_fds(server.pid());
        let before = server.log.count("stats: ");
        server.signal(rustix::process::Signal::USR1);
        let stats = common::poll(WAIT, || {
            (server.log.count("stats: ") > before)
                .then(|| server.log.wait_for_nth("stats: ", before + 1))
        });
        panic!(
            "the server's descriptors not back to {base_fds} within {:?}: {now} open; {stats:?}",
            6 * WAIT,
        );
    }

    println!("small_host: {mib} MiB: {:.1?} in all", started.elapsed());
}
