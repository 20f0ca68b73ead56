//! A small host under attack: the server in a 32 MiB memory cgroup whose
//! TCP memory is capped too (cgroup v1 `memory.kmem.tcp.limit_in_bytes`: a
//! plain memory limit does not count socket buffers), at 10% of one core,
//! in its own network namespace (so `ss` there sees only its sockets).
//! 2,000 idle clients, 600 clients that pipeline 512 KiB each and never
//! read, and 20 honest ping-pong clients, all at once. The honest clients
//! must each be answered within 2 s, every time; nothing is OOM-killed.
//!
//! Needs root (cgroups, namespaces): skipped without it outside CI.

mod common;

use common::cgroup::Cgroup;
use common::netns::{self, Hosts};
use common::{Client, Server, WAIT};
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const MEMORY: u64 = 32 << 20;
const TCP_MEMORY: u64 = 16 << 20;
const IDLE: usize = 2_000;
const NON_READERS: usize = 600;
const PUSH: usize = 512 * 1024;
const HONEST: usize = 20;
/// How long the honest clients keep asking while the others push.
const RUN: Duration = Duration::from_secs(15);
/// The liveness bound: every honest request answered within this.
const LIVENESS: Duration = Duration::from_secs(2);

/// Sum of `skmem` r and w over the server's sockets (its namespace only).
fn server_socket_memory(hosts: &Hosts) -> u64 {
    let out = common::run_cmd({
        let mut c = hosts.command(&hosts.server, "ss");
        c.args(["-Htm"]);
        c
    });
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("skmem:(")
        .skip(1)
        .map(|s| {
            let inner = s.split(')').next().unwrap_or("");
            inner
                .split(',')
                .filter(|kv| kv.starts_with('r') && !kv.starts_with("rb") || kv.starts_with('w'))
                .filter_map(|kv| kv[1..].parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

#[test]
fn honest_clients_are_served_while_hundreds_of_non_readers_push_on_a_small_host() {
    if !netns::available("the small-host test") {
        return;
    }
    // The release build: the bound is about CPU, and a debug build spends
    // twenty times as much per line.
    let server_bin = common::release_bin();
    let hosts = Hosts::server_only(4);
    let group = Cgroup::new(
        &format!("randline-test-{}", std::process::id()),
        MEMORY,
        TCP_MEMORY,
    );
    // Into both groups, then exec: the server is in them from its first
    // allocation and socket. Every client comes from one address here, so
    // the per-address limit is off; it is not what this test is about.
    let script = format!(
        "echo $$ > {}/cgroup.procs && echo $$ > {}/cgroup.procs && exec ip netns exec {} {} \
         --listen {}:0 --max-connections-per-ip 0",
        group.memory.display(),
        group.cpu.display(),
        hosts.server,
        server_bin.display(),
        hosts.server_ip
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]).env("RUST_LOG", "info");
    let server = Server::spawn(cmd);
    let addr = server.addr;

    let started = Instant::now();
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect_timeout(&addr, WAIT).expect("idle client"))
        .collect();
    let pushers = std::thread::spawn(move || push(addr));
    let honest: Vec<_> = (0..HONEST)
        .map(|i| std::thread::spawn(move || ask_for(addr, i)))
        .collect();
    let mut worst = Duration::ZERO;
    let mut asked = 0;
    for h in honest {
        let (n, slowest) = h.join().expect("an honest client failed");
        asked += n;
        worst = worst.max(slowest);
    }
    let (pushed, non_readers) = pushers.join().expect("pushers");
    let socket_memory = server_socket_memory(&hosts);
    let rss = server.rss_kib();
    let stats = server.stats();
    let report = format!(
        "{IDLE} idle, {NON_READERS} non-readers ({} MB pushed), {HONEST} honest clients: \
         {asked} requests, slowest {worst:?}; server sockets {} KiB (ss, its namespace), \
         RSS {rss} KiB, cgroup peak memory {} KiB, peak TCP memory {} KiB (limit {} KiB, \
         hit {} times), pending answers {} B, paused {}; {:?} in all",
        pushed >> 20,
        socket_memory >> 10,
        group.value("memory.max_usage_in_bytes") >> 10,
        group.value("memory.kmem.tcp.max_usage_in_bytes") >> 10,
        TCP_MEMORY >> 10,
        group.value("memory.kmem.tcp.failcnt"),
        stats.get("pending_out").copied().unwrap_or(0),
        stats.get("paused").copied().unwrap_or(0),
        started.elapsed(),
    );
    println!("{report}");
    assert_eq!(group.oom_kills(), 0, "OOM-killed: {report}");
    assert!(
        worst <= LIVENESS,
        "an honest request waited {worst:?}: {report}"
    );
    assert!(asked >= HONEST * 10, "too few honest requests: {report}");
    drop(non_readers);
    drop(idle);
}

/// 600 connections, each sent 512 KiB of empty lines, none ever read:
/// one thread, non-blocking sockets, for at most `RUN`.
fn push(addr: SocketAddr) -> (usize, Vec<TcpStream>) {
    let mut socks: Vec<(TcpStream, usize)> = (0..NON_READERS)
        .map(|_| {
            let s = TcpStream::connect_timeout(&addr, WAIT).expect("non-reader");
            s.set_nonblocking(true).expect("non-blocking");
            (s, 0)
        })
        .collect();
    let chunk = vec![b'\n'; 64 * 1024];
    let deadline = Instant::now() + RUN;
    let mut total = 0;
    while Instant::now() < deadline && socks.iter().any(|(_, sent)| *sent < PUSH) {
        let mut progress = false;
        for (s, sent) in &mut socks {
            let want = (PUSH - *sent).min(chunk.len());
            if want == 0 {
                continue;
            }
            match s.write(&chunk[..want]) {
                Ok(n) => {
                    *sent += n;
                    total += n;
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => *sent = PUSH, // closed by the server: done
            }
        }
        if !progress {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    (total, socks.into_iter().map(|(s, _)| s).collect())
}

/// Ping-pong for `RUN`; returns the requests made and the slowest answer.
fn ask_for(addr: SocketAddr, i: usize) -> (usize, Duration) {
    let mut c = Client::connect(addr);
    let deadline = Instant::now() + RUN;
    let (mut n, mut slowest) = (0, Duration::ZERO);
    while Instant::now() < deadline {
        let t = Instant::now();
        c.ask(&format!("honest {i} request {n}"));
        slowest = slowest.max(t.elapsed());
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    (n, slowest)
}
