//! `--metrics ADDR`: the loop's counters for Prometheus, over just enough
//! HTTP/1.x to answer `GET /metrics`, on the same poll loop as the clients.
//!
//! The whole endpoint is here, behind the few calls the loop makes on an
//! [`Endpoint`]: `bind` (through [`crate::net`]), `admit` a connection the
//! loop accepted, `ready` on a scrape's event, `deadline` and `expire` for
//! its timer, `close_all` at shutdown. A scrape reads a request head (at
//! most [`MAX_HEAD`] bytes, within [`SCRAPE_TIMEOUT`]), answers it once
//! (`200` with the text format 0.0.4, `404` for any other path, `405` for
//! any other method, `400` for anything else), and closes. At most
//! [`MAX_SCRAPES`] are open at once; a newcomer past that closes the
//! oldest. They never count against `--max-connections`, and their work
//! is one small render and one write: they never delay line clients.
//!
//! What is not here: accepting (one helper in `server.rs` serves every
//! listener, out-of-descriptor retry included), the poll itself, the
//! counters ([`crate::stats`]), and the gauges' values (the loop's).

use crate::net::{Listener, Peer, Stream};
use crate::server::{Listening, Source};
use crate::stats::{Entry, Stats};
use log::{debug, info};
use mio::{Interest, Registry};
use slab::Slab;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Scrapes open at once; a newcomer past that closes the oldest (see
/// [`Endpoint::admit`]). Prometheus scrapes one at a time; a few more allow
/// a person with curl alongside. Their descriptors come out of
/// `RESERVED_FDS`.
pub const MAX_SCRAPES: usize = 4;
/// The longest request head read; a longer one is closed unanswered.
pub const MAX_HEAD: usize = 4 * 1024;
/// A scrape must have sent its head and taken its answer within this.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of a request head read per `read` call (a head is a few hundred).
const READ_CHUNK: usize = 1024;

/// What the loop knows now, besides the counters: the gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Clients being served (the `stats:` line's `active`).
    pub open: u64,
    /// Clients whose answers are sent, waiting for their EOF.
    pub lingering: u64,
    /// Clients not read from because their answers backed up.
    pub paused: u64,
    /// `--max-connections`.
    pub max_connections: u64,
    /// The most clients ever open at once.
    pub peak: u64,
    /// Answers waiting in the server, all clients together.
    pub pending_out: u64,
    /// Open descriptors (a running count: a scrape never lists /proc).
    pub open_fds: u64,
    /// The open-file limit.
    pub max_fds: u64,
    /// Resident memory.
    pub resident_bytes: u64,
}

/// The gauges' names and help.
fn gauges(g: &Gauges) -> [(&'static str, &'static str, u64); 9] {
    [
        ("randline_clients_open", "Clients being served now.", g.open),
        (
            "randline_clients_lingering",
            "Clients answered and closed, waiting for their EOF.",
            g.lingering,
        ),
        (
            "randline_clients_paused",
            "Clients not read from now: their answers backed up.",
            g.paused,
        ),
        (
            "randline_max_connections",
            "The --max-connections limit.",
            g.max_connections,
        ),
        (
            "randline_clients_peak",
            "The most clients open at once so far.",
            g.peak,
        ),
        (
            "randline_pending_output_bytes",
            "Answers waiting in the server, all clients together.",
            g.pending_out,
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            g.open_fds,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            g.max_fds,
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            g.resident_bytes,
        ),
    ]
}

/// The most bytes [`render`] writes (every value 20 digits; 3.9 KB when
/// all are 0): it allocates once.
const RENDER_MAX: usize = 4608;

/// The Prometheus text format (version 0.0.4) of the counters and gauges.
pub fn render(stats: &Stats, g: &Gauges) -> String {
    let mut out = String::with_capacity(RENDER_MAX);
    // The counts of the `stats:` line, with the help written there.
    for Entry {
        key, help, value, ..
    } in stats.counts()
    {
        let _ = write!(
            out,
            "# HELP randline_{key}_total {help}\n# TYPE randline_{key}_total counter\n\
             randline_{key}_total {value}\n"
        );
    }
    for (name, help, value) in gauges(g) {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        );
    }
    out
}

/// The metrics listener and its open scrapes: what the loop calls.
pub struct Endpoint {
    listener: Listener,
    /// At most [`MAX_SCRAPES`]; key `k` is polled as `Source::Scrape(k)`.
    scrapes: Slab<Scrape>,
}

impl Endpoint {
    /// Binds the listener (through [`crate::net`]) and registers it.
    pub fn bind(addr: SocketAddr, registry: &Registry) -> io::Result<Endpoint> {
        let mut listener = Listener::bind_metrics(addr)?;
        let token = Source::Listener(Listening::Metrics).token();
        registry.register(&mut listener, token, Interest::READABLE)?;
        info!(
            "serving metrics on http://{}/metrics",
            listener.local_addr()?
        );
        Ok(Endpoint {
            listener,
            scrapes: Slab::with_capacity(MAX_SCRAPES),
        })
    }

    /// The listener, for the loop's accept helper.
    pub fn listener(&self) -> &Listener {
        &self.listener
    }

    /// Scrapes open now (each holds a descriptor).
    pub fn open(&self) -> usize {
        self.scrapes.len()
    }

    /// Takes a scrape just accepted. With every slot taken, the oldest
    /// yields: an honest scrape is answered within a round trip or two of
    /// its connect, so the oldest open one has had longest to send its
    /// head and has not (or is slow to take its answer). A few connections
    /// sending a byte now and then can no longer keep a real scrape out,
    /// as they could when the newcomer was the one refused; a flood of
    /// connections still can, as it can fill the backlog.
    pub fn admit(&mut self, stream: Stream, peer: Peer, registry: &Registry, now: Instant) {
        let oldest = self.scrapes.iter().min_by_key(|(_, s)| s.since);
        if let Some((k, _)) = oldest.filter(|_| self.scrapes.len() >= MAX_SCRAPES) {
            debug!("metrics: closed scrape {k}, the oldest, for {peer}");
            self.close(k, registry);
        }
        let entry = self.scrapes.vacant_entry();
        let k = entry.key();
        let mut scrape = Scrape::new(stream, now);
        let both = Interest::READABLE.add(Interest::WRITABLE);
        if let Err(e) = registry.register(&mut scrape.stream, Source::Scrape(k).token(), both) {
            debug!("metrics: could not register {peer}: {e}");
            return;
        }
        debug!("metrics: accepted {peer} as scrape {k}");
        entry.insert(scrape);
    }

    /// Scrape `k` had an event: drives it (rendering `metrics()` if its
    /// head asks for them), and closes it once done. A stale event (`k`
    /// closed earlier in the batch, or taken by a newcomer since) only
    /// makes a scrape try what its socket allows.
    pub fn ready(
        &mut self,
        k: usize,
        registry: &Registry,
        now: Instant,
        metrics: impl FnOnce() -> String,
    ) {
        if let Some(scrape) = self.scrapes.get_mut(k)
            && scrape.drive(now, metrics) == Step::Close
        {
            self.close(k, registry);
        }
    }

    /// The earliest scrape deadline, for the loop's poll timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.scrapes.iter().map(|(_, s)| s.deadline).min()
    }

    /// Closes the scrapes whose deadline has passed (a scan of at most
    /// [`MAX_SCRAPES`]: cheaper than the loop's heap).
    pub fn expire(&mut self, now: Instant, registry: &Registry) {
        for k in 0..self.scrapes.capacity() {
            if self.scrapes.get(k).is_some_and(|s| s.deadline <= now) {
                debug!("metrics: scrape {k} timed out");
                self.close(k, registry);
            }
        }
    }

    /// Shutdown: closes the listener and every scrape.
    pub fn close_all(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.listener);
        for mut scrape in self.scrapes.drain() {
            let _ = registry.deregister(&mut scrape.stream);
        }
    }

    fn close(&mut self, k: usize, registry: &Registry) {
        if let Some(mut scrape) = self.scrapes.try_remove(k) {
            let _ = registry.deregister(&mut scrape.stream);
        }
    }
}

/// What a drive leaves a scrape needing.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Wait for more readiness.
    Wait,
    /// Finished (answered, refused, or failed): close it.
    Close,
}

/// Where a scrape is in its life.
enum Phase {
    /// Reading its request head.
    Head(Head),
    /// Writing its answer: the bytes, and how many are written.
    Answer(Vec<u8>, usize),
    /// Answered, our FIN sent after it: reading and dropping what the
    /// client still sends (a pipelined request, a body) until its EOF,
    /// and how much that was. Closing a socket with unread bytes sends a
    /// reset, which can destroy the answer before the client has read it.
    /// At most [`MAX_HEAD`] bytes, within [`LINGER`]: past either, the
    /// close may reset, and a client that sends what it was not asked for
    /// may lose its answer.
    Drain(usize),
}

/// How long an answered scrape waits for the client's EOF.
const LINGER: Duration = Duration::from_secs(1);

/// One metrics connection.
struct Scrape {
    stream: Stream,
    phase: Phase,
    /// When it was accepted: the oldest yields to a newcomer.
    since: Instant,
    /// Closed if not done by then.
    deadline: Instant,
}

impl Scrape {
    fn new(stream: Stream, now: Instant) -> Self {
        Scrape {
            stream,
            phase: Phase::Head(Head::default()),
            since: now,
            deadline: now + SCRAPE_TIMEOUT,
        }
    }

    /// Reads what has arrived (edge-triggered: until `WouldBlock`), answers
    /// a complete head with `metrics()` rendered, writes what the socket
    /// takes, then drains. Events are only hints: each call does what the
    /// phase needs until the socket says `WouldBlock`.
    fn drive(&mut self, now: Instant, metrics: impl FnOnce() -> String) -> Step {
        let mut metrics = Some(metrics);
        let mut buf = [0u8; READ_CHUNK];
        loop {
            let next = match &mut self.phase {
                Phase::Head(head) => match io(|| self.stream.read(&mut buf)) {
                    Err(step) => return step,
                    Ok(0) => return Step::Close, // ended before its head did
                    Ok(n) => match head.push(&buf[..n]) {
                        Parsed::Partial => continue,
                        Parsed::TooLong => return Step::Close,
                        Parsed::Complete => {
                            // (Once per scrape: the phase moves on.)
                            let render = || metrics.take().map_or_else(String::new, |m| m());
                            Phase::Answer(respond(head.bytes(), render), 0)
                        }
                    },
                },
                Phase::Answer(answer, written) if *written == answer.len() => {
                    // All written: our FIN follows it.
                    let _ = self.stream.shutdown(std::net::Shutdown::Write);
                    self.deadline = self.deadline.min(now + LINGER);
                    Phase::Drain(0)
                }
                Phase::Answer(answer, written) => {
                    match io(|| self.stream.write(&answer[*written..])) {
                        Err(step) => return step,
                        Ok(0) => return Step::Close,
                        Ok(n) => {
                            *written += n;
                            continue;
                        }
                    }
                }
                Phase::Drain(dropped) => match io(|| self.stream.read(&mut buf)) {
                    Err(step) => return step,
                    // The client's EOF (done), or more than a drain allows.
                    Ok(n) if n == 0 || *dropped + n > MAX_HEAD => return Step::Close,
                    Ok(n) => {
                        *dropped += n;
                        continue;
                    }
                },
            };
            self.phase = next;
        }
    }
}

/// One read or write, again if interrupted. `Err`: what the scrape needs
/// next, `Wait` after `WouldBlock` and `Close` after any other error.
fn io(mut op: impl FnMut() -> io::Result<usize>) -> Result<usize, Step> {
    loop {
        match op() {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(Step::Wait),
            Err(_) => return Err(Step::Close),
        }
    }
}

/// How far a request head has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// No empty line yet: read more.
    Partial,
    /// Complete: it ends at its first empty line (`\r\n`, or a bare `\n`
    /// as some clients send), which is not kept.
    Complete,
    /// [`MAX_HEAD`] bytes and no empty line in them: close unanswered.
    TooLong,
}

/// A request head, read in pieces. Only its first [`MAX_HEAD`] bytes are
/// kept, and the outcome depends on them alone, not on how reads cut them
/// (fuzz/fuzz_targets/scrape_head.rs checks both).
#[derive(Debug, Default)]
pub struct Head {
    bytes: Vec<u8>,
}

impl Head {
    /// Adds what a read returned. After `Complete` or `TooLong`, call no
    /// more.
    pub fn push(&mut self, read: &[u8]) -> Parsed {
        // An empty line may straddle two reads: look from 2 bytes back.
        let from = self.bytes.len().saturating_sub(2);
        let room = MAX_HEAD - self.bytes.len();
        self.bytes.extend_from_slice(&read[..read.len().min(room)]);
        let b = &self.bytes;
        let empty_line_after =
            |i: usize| b[i + 1..].starts_with(b"\n") || b[i + 1..].starts_with(b"\r\n");
        match (from..b.len()).find(|&i| b[i] == b'\n' && empty_line_after(i)) {
            Some(i) => {
                // What follows (a pipelined request, a body) is dropped.
                self.bytes.truncate(i);
                Parsed::Complete
            }
            None if b.len() == MAX_HEAD => Parsed::TooLong,
            None => Parsed::Partial,
        }
    }

    /// The head so far; once complete, up to its empty line.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The whole HTTP answer to a request head (without its empty line).
pub fn respond(head: &[u8], metrics: impl FnOnce() -> String) -> Vec<u8> {
    let request_line = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let request_line = request_line.strip_suffix(b"\r").unwrap_or(request_line);
    let parts: Vec<&[u8]> = request_line.split(|&b| b == b' ').collect();
    let (status, content_type, body, allow) = match parts.as_slice() {
        [method, target, version] if version.starts_with(b"HTTP/1.") => {
            let path = target.split(|&b| b == b'?').next().unwrap_or(&[]);
            match (*method, path) {
                (b"GET", b"/metrics") => (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics(),
                    false,
                ),
                (b"GET", _) => (
                    "404 Not Found",
                    "text/plain",
                    "not found: try /metrics\n".into(),
                    false,
                ),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "only GET\n".into(),
                    true,
                ),
            }
        }
        _ => (
            "400 Bad Request",
            "text/plain",
            "bad request\n".into(),
            false,
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{}\r\n",
        body.len(),
        if allow { "Allow: GET\r\n" } else { "" }
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Resident memory in bytes, from `/proc/self/status` (one small read; the
/// `VmRSS` line is in KiB, so no page size is needed). 0 where unavailable,
/// and on systems other than Linux (whose `/proc`, if any, differs).
pub fn resident_bytes() -> u64 {
    if !cfg!(any(target_os = "linux", target_os = "android")) {
        return 0;
    }
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Open descriptors now, by listing `/proc/self/fd`: done once at start;
/// the loop keeps a running count from there. 0 on systems other than
/// Linux.
pub fn open_fds_now() -> u64 {
    if !cfg!(any(target_os = "linux", target_os = "android")) {
        return 0;
    }
    // The listing holds a descriptor of its own while it runs: not ours.
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| (d.count() as u64).saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Kind;

    #[test]
    fn every_key_of_the_stats_line_is_exported() {
        let text = render(&Stats::default(), &Gauges::default());
        for e in Stats::default().line(0, 0).entries() {
            let exported = match (e.kind, e.key) {
                (Kind::Count, key) => format!("randline_{key}_total"),
                // Levels, not counts: exported as gauges, named here.
                (Kind::Level, "active") => "randline_clients_open".to_string(),
                (Kind::Level, "peak") => "randline_clients_peak".to_string(),
                (Kind::Level, "pending_out") => "randline_pending_output_bytes".to_string(),
                (Kind::Level, key) => panic!("{key}: which gauge exports it?"),
            };
            assert!(
                text.contains(&format!("# TYPE {exported} ")),
                "{} is not exported as {exported}",
                e.key
            );
            if e.kind == Kind::Count {
                assert!(
                    text.contains(&format!("# HELP {exported} {}\n", e.help)),
                    "{} is not exported with its help",
                    e.key
                );
            }
        }
    }

    #[test]
    fn the_largest_render_fits_in_one_allocation() {
        let m = u64::MAX;
        let stats = Stats {
            accepted: m,
            rejected_busy: m,
            accept_emfile: m,
            peak: m,
            lines: m,
            bytes_in: m,
            bytes_out: m,
            wakeups: m,
            events: m,
            reads: m,
            writes: m,
            wouldblock: m,
            paused: m,
            yields: m,
            idle_closed: m,
            rejected_per_ip: m,
            failed: m,
            output_closed: m,
            rejected_untrusted: m,
        };
        let gauges = Gauges {
            open: m,
            lingering: m,
            paused: m,
            max_connections: m,
            peak: m,
            pending_out: m,
            open_fds: m,
            max_fds: m,
            resident_bytes: m,
        };
        let text = render(&stats, &gauges);
        assert!(text.len() <= RENDER_MAX, "{} bytes", text.len());
        assert!(RENDER_MAX - text.len() < 512, "RENDER_MAX is far too big");
    }

    #[test]
    fn a_head_ends_at_its_first_empty_line_however_it_is_cut() {
        let parse = |stream: &[u8], cut: usize| {
            let mut head = Head::default();
            let mut last = Parsed::Partial;
            for piece in stream.chunks(cut) {
                last = head.push(piece);
                if last != Parsed::Partial {
                    break;
                }
            }
            (last, head.bytes().to_vec())
        };
        let complete = |head: &str| (Parsed::Complete, head.as_bytes().to_vec());
        for cut in [1, 2, 3, 1000] {
            let p = |s: &str| parse(s.as_bytes(), cut);
            assert_eq!(
                p("GET / HTTP/1.1\r\nA: b\r\n\r\nbody"),
                complete("GET / HTTP/1.1\r\nA: b\r")
            );
            assert_eq!(p("GET / HTTP/1.1\n\r\n"), complete("GET / HTTP/1.1"));
            assert_eq!(
                p("GET / HTTP/1.1\nA: b\n\nGET"),
                complete("GET / HTTP/1.1\nA: b")
            );
            assert_eq!(p("GET / HTTP/1.1\r\n\rX\r\n").0, Parsed::Partial);
        }
        let long = vec![b'x'; MAX_HEAD + 10];
        assert_eq!(parse(&long, 1000).0, Parsed::TooLong);
        // The empty line must be within the first MAX_HEAD bytes.
        let mut late = vec![b'x'; MAX_HEAD - 2];
        late.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&late, 7).0, Parsed::TooLong);
        late.drain(..2);
        assert_eq!(parse(&late, 7).0, Parsed::Complete);
    }

    #[test]
    fn only_get_metrics_is_answered_with_metrics() {
        let answer =
            |head: &str| String::from_utf8(respond(head.as_bytes(), || "m 1\n".into())).unwrap();
        assert!(answer("GET /metrics HTTP/1.1\r\nHost: x").starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(answer("GET /metrics?x=1 HTTP/1.0").ends_with("\r\n\r\nm 1\n"));
        assert!(answer("GET / HTTP/1.1").starts_with("HTTP/1.1 404 "));
        assert!(answer("POST /metrics HTTP/1.1").starts_with("HTTP/1.1 405 "));
        assert!(answer("GET /metrics").starts_with("HTTP/1.1 400 "));
        assert!(answer("\x16\x03\x01 garbage").starts_with("HTTP/1.1 400 "));
    }
}
