//! `--metrics ADDR`: the loop's counters for Prometheus, over just enough
//! HTTP/1.x to answer `GET /metrics`, on the same poll loop as the clients.
//!
//! A scrape is a second kind of connection: [`Scrape`] reads a request
//! head (at most [`MAX_HEAD`] bytes, within [`SCRAPE_TIMEOUT`]), answers it
//! once (`200` with the text format 0.0.4, `404` for any other path, `405`
//! for any other method, `400` for anything else) and closes. At most
//! [`MAX_SCRAPES`] are open at once; more are closed at accept. They never
//! count against `--max-connections`, and their work is one small render
//! and one write: they never delay line clients.
//!
//! What is not here: accepting and polling (`server.rs`), and the counters
//! themselves ([`crate::stats`]).

use crate::stats::{Entry, Stats};
use mio::net::TcpStream;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// Scrapes open at once; more are closed at accept. Prometheus scrapes one
/// at a time; a few more allow a person with curl alongside. Their
/// descriptors come out of `RESERVED_FDS`.
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

/// What a scrape needs from the loop after it reads a complete head.
pub enum Step {
    /// Wait for more readiness.
    Wait,
    /// Finished (answered, refused, or failed): close it.
    Close,
}

/// One metrics connection: its head so far, then its answer.
pub struct Scrape {
    stream: TcpStream,
    head: Vec<u8>,
    /// The answer, once the head is complete, and how much of it is written.
    answer: Option<(Vec<u8>, usize)>,
    /// Closed unanswered if not done by then.
    pub deadline: Instant,
}

impl Scrape {
    /// A new scrape, accepted at `now`.
    pub fn new(stream: TcpStream, now: Instant) -> Self {
        Scrape {
            stream,
            head: Vec::new(),
            answer: None,
            deadline: now + SCRAPE_TIMEOUT,
        }
    }

    /// The socket, for (de)registration.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Reads what has arrived (edge-triggered: until `WouldBlock`), answers
    /// a complete head with `metrics()` rendered, writes what the socket
    /// takes. Events are only hints here: every call tries both.
    pub fn drive(&mut self, metrics: impl FnOnce() -> String) -> Step {
        if self.answer.is_none() {
            let mut buf = [0u8; READ_CHUNK];
            let mut eof = false;
            loop {
                match self.stream.read(&mut buf) {
                    // The head is what came before: a client may half-close
                    // after its request (`printf ... | nc -N` does).
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        self.head.extend_from_slice(&buf[..n]);
                        if self.head.len() > MAX_HEAD {
                            return Step::Close;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Step::Close,
                }
            }
            let Some(end) = find(&self.head, b"\r\n\r\n").or_else(|| find(&self.head, b"\n\n"))
            else {
                // Incomplete: wait for more, unless no more can come.
                return if eof { Step::Close } else { Step::Wait };
            };
            self.answer = Some((respond(&self.head[..end], metrics), 0));
        }
        let Some((answer, written)) = &mut self.answer else {
            return Step::Wait;
        };
        while *written < answer.len() {
            match self.stream.write(&answer[*written..]) {
                Ok(0) => return Step::Close,
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Close,
            }
        }
        // All written: our FIN follows it (the head was read to the end,
        // so closing resets nothing unread).
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        Step::Close
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The whole HTTP answer to a request head (without its blank line).
fn respond(head: &[u8], metrics: impl FnOnce() -> String) -> Vec<u8> {
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
