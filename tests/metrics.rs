//! `--metrics ADDR`: the Prometheus endpoint, scraped with real `curl` and
//! checked with `promtool check metrics` (Debian package `prometheus`).

mod common;

use common::{Server, WAIT, parse_stats};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A server with `--metrics 127.0.0.1:0`, and the metrics address it logs.
fn start(args: &[&str]) -> (Server, SocketAddr) {
    let mut all = vec!["--metrics", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    let addr = metrics_addr(&server.log.wait_for("serving metrics on http://"));
    (server, addr)
}

/// The address in a `serving metrics on http://ADDR/metrics` line.
fn metrics_addr(line: &str) -> SocketAddr {
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {line:?}"))
}

/// `curl -s` of `path`: the HTTP status and the body.
fn curl(addr: SocketAddr, path: &str) -> (u16, String) {
    let out = common::run_cmd({
        let mut c = Command::new("curl");
        c.args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
            .arg(format!("http://{addr}{path}"));
        c
    });
    assert!(out.status.success(), "curl failed: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (body, code) = text.rsplit_once('\n').expect("a status");
    (code.parse().expect("a status code"), body.to_string())
}

/// `name value` samples of the text format.
fn samples(body: &str) -> BTreeMap<String, u64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.split_once(' ').expect("name value");
            (name.to_string(), value.parse().expect("an integer"))
        })
        .collect()
}

#[test]
fn the_counters_equal_the_stats_line_for_a_known_workload() {
    let (server, metrics) = start(&["--max-connections", "2"]);
    let mut a = server.connect();
    let mut b = server.connect();
    for i in 0..5 {
        a.ask(&format!("a{i}"));
        b.ask(&format!("b{i}"));
    }
    let mut busy = server.connect(); // over --max-connections
    assert_eq!(busy.rest_until_eof(), b"ERR server busy\n");
    a.send(b"x\ny\nSTOP\n");
    assert_eq!(common::numbers(&a.rest_until_eof()).len(), 2);
    drop(a);
    server.log.wait_for("closed 127.0.0.1");

    let n = server.log.count("stats: ");
    server.signal(rustix::process::Signal::USR1);
    let stats = parse_stats(&server.log.wait_for_nth("stats: ", n + 1));
    let (code, body) = curl(metrics, "/metrics");
    assert_eq!(code, 200);
    let got = samples(&body);
    for (key, value) in &stats {
        let name = match key.as_str() {
            "active" => "randline_clients_open".to_string(),
            "peak" => "randline_clients_peak".to_string(),
            "pending_out" => "randline_pending_output_bytes".to_string(),
            _ => format!("randline_{key}_total"),
        };
        let scraped = got.get(&name).copied();
        match key.as_str() {
            // The scrape itself wakes the loop: at least as many.
            "wakeups" | "events" => assert!(
                scraped.is_some_and(|s| s >= *value),
                "{name}: {scraped:?} < {value}"
            ),
            _ => assert_eq!(scraped, Some(*value), "{name}\n{body}"),
        }
    }
    assert_eq!(got["randline_lines_total"], 12);
    assert_eq!(got["randline_rejected_busy_total"], 1);
    assert_eq!(got["randline_max_connections"], 2);
    assert!(got["process_open_fds"] >= 5 && got["process_max_fds"] > 0);
    assert!(got["process_resident_memory_bytes"] > 1 << 20);
}

#[test]
fn promtool_accepts_the_exposition() {
    if !common::have("promtool", "prometheus") {
        return;
    }
    let (server, metrics) = start(&[]);
    server.connect().ask("hello");
    let (_, body) = curl(metrics, "/metrics");
    let out = common::run_cmd_with_input(
        Command::new("promtool").args(["check", "metrics"]),
        body.as_bytes(),
        WAIT,
    );
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn other_paths_and_methods_are_refused_and_bad_heads_closed() {
    let (_server, metrics) = start(&[]);
    assert_eq!(curl(metrics, "/").0, 404);
    assert_eq!(curl(metrics, "/metricsx").0, 404);
    let out = common::run_cmd({
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .arg(format!("http://{metrics}/metrics"));
        c
    });
    assert_eq!(String::from_utf8_lossy(&out.stdout), "405");
    // A request followed by a half-close (as `printf ... | nc -N` sends it)
    // is still answered.
    let mut half = TcpStream::connect_timeout(&metrics, WAIT).expect("connect");
    half.set_read_timeout(Some(WAIT)).expect("timeout");
    half.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("send");
    half.shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let mut answer = String::new();
    half.read_to_string(&mut answer).expect("read the answer");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    // A head that never ends: closed once past 4 KiB, unanswered.
    let mut big = TcpStream::connect_timeout(&metrics, WAIT).expect("connect");
    big.set_read_timeout(Some(WAIT)).expect("timeout");
    let _ = big.write_all(&[b'x'; 5000]);
    let mut rest = Vec::new();
    let _ = big.read_to_end(&mut rest);
    assert!(rest.is_empty(), "answered a 5 KB head: {rest:?}");
    // A silent one: closed after its 5 s.
    let started = Instant::now();
    let mut silent = TcpStream::connect_timeout(&metrics, WAIT).expect("connect");
    silent.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut buf = [0u8; 16];
    assert!(matches!(silent.read(&mut buf), Ok(0)), "not closed");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(8),
        "{took:?}"
    );
}

#[test]
fn scrapes_never_count_against_line_clients_and_are_capped() {
    let (server, metrics) = start(&["--max-connections", "1"]);
    let mut line_client = server.connect();
    line_client.ask("hello");
    // Four idle metrics connections: the cap.
    let started = Instant::now();
    let mut held: Vec<TcpStream> = Vec::new();
    for n in 1..=4 {
        held.push(TcpStream::connect_timeout(&metrics, WAIT).expect("connect"));
        server.log.wait_for_nth("metrics: accepted", n);
    }
    // A fifth is answered: the oldest of the four is closed for it, long
    // before its own timeout.
    assert_eq!(scrape(metrics), Some(200));
    held[0].set_read_timeout(Some(WAIT)).expect("timeout");
    let mut buf = [0u8; 16];
    assert!(
        matches!(held[0].read(&mut buf), Ok(0)),
        "the oldest was kept"
    );
    assert!(
        started.elapsed() < SCRAPE_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    // The line client is served throughout, and the one line slot is its.
    line_client.ask("still here");
    let mut second = server.connect();
    assert_eq!(second.rest_until_eof(), b"ERR server busy\n");
}

/// The metrics timeout (src/metrics.rs `SCRAPE_TIMEOUT`).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// One scrape over a raw socket, bounded: the status of its answer, or
/// `None` if it was closed unanswered or not answered within 3 s.
fn scrape(addr: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Four connections that each send a request head one byte a second (and
/// connect again when closed) once held every scrape slot, for 5 s each,
/// and a real scrape was closed at accept: none was answered. The oldest
/// now yields to a newcomer.
#[test]
fn four_dripping_connections_cannot_deny_a_real_scrape() {
    let (_server, metrics) = start(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicUsize::new(0));
    let drippers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, connected) = (stop.clone(), connected.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect_timeout(&metrics, WAIT) else {
                        continue;
                    };
                    connected.fetch_add(1, Ordering::Relaxed);
                    // Never an empty line: the head never ends.
                    for b in b"GET /metrics HTTP/1.1\r\nX: y\r\n".iter().cycle() {
                        if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            })
        })
        .collect();
    // Connected before any real scrape: the backlog is first come, first
    // accepted, so the four hold every slot when the first one arrives.
    common::wait_until("four drippers connected", WAIT, || {
        connected.load(Ordering::Relaxed) >= 4
    });
    let started = Instant::now();
    let answered = (0..10).filter(|_| scrape(metrics) == Some(200)).count();
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for d in drippers {
        d.join().expect("dripper");
    }
    assert_eq!(
        answered, 10,
        "real scrapes answered of 10, beside 4 drippers"
    );
    assert!(took < Duration::from_secs(5), "10 scrapes took {took:?}");
}

/// A scrape that connects while the server is out of descriptors waits in
/// the backlog, and is accepted and answered once descriptors are back
/// (it once waited for another scrape to connect: the metrics listener's
/// accept gave up on EMFILE, and no retry came back to it).
#[test]
fn a_scrape_arriving_while_descriptors_are_out_is_served_once_they_return() {
    // 40 descriptors, up to 100 clients allowed: accept hits EMFILE.
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=40:40")
        .arg(common::bin())
        .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .args(["--max-connections", "100"]);
    let server = Server::spawn(cmd);
    let metrics = metrics_addr(&server.log.wait_for("serving metrics on http://"));
    let clients: Vec<_> = (0..50).map(|_| server.connect()).collect();
    server.log.wait_for("out of file descriptors");
    let mut waiting = TcpStream::connect_timeout(&metrics, WAIT).expect("connect");
    waiting
        .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        .expect("send");
    // Descriptors come back as the clients leave.
    drop(clients);
    waiting.set_read_timeout(Some(WAIT)).expect("timeout");
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = waiting.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
