//! The event loop: one thread, one `mio::Poll`, every socket registered on it.
//!
//! [`Server::run`] is the whole loop, readable top to bottom:
//!
//! ```text
//!  ┌─► poll(timeout)        timeout = none if nothing is armed (idle = asleep)
//!  │     for each event:
//!  │       listener ──► accept until WouldBlock ──► register READABLE|WRITABLE once
//!  │       signals  ──► SIGTERM/SIGINT: stop accepting, close every client gracefully;
//!  │                    SIGUSR1: log the counters
//!  │       client   ──► latch readiness, Conn::drive (read, answer, write)
//!  │       metrics  ──► accept a scrape / read its head, answer, close (--metrics)
//!  │     drive the "again" list (clients whose read budget ran out)
//!  │     fire due deadlines (idle, output and header timeouts, lingering close,
//!  │                         accept retry, stats, slow scrapes)
//!  │     free the slots of connections closed this turn
//!  └──── until shut down and every client is gone (or the grace period ends)
//! ```
//!
//! Connections live in a `Slab`; a connection's key is its `Token`.
//! Listener and signal tokens sit far above any slab key. Per-connection
//! work is in [`crate::conn`]; this file decides *when* each one runs.

use crate::answers::AnswerBuf;
use crate::config::{Cidr, Config};
use crate::conn::{
    Conn, ERR_BUSY, ERR_TOO_MANY, MIN_READ_BUDGET, READ_BUDGET, Seat, Shared, Status,
    TURN_READ_BUDGET, Timeouts, Why,
};
use crate::metrics::{Gauges, MAX_SCRAPES, Scrape, Step};
use crate::net::{ClientSockets, Listener, Peer, Stream};
use crate::numbers::Numbers;
use crate::per_ip::PerAddress;
use crate::stats::Stats;
use crate::timers::{Entry, Timers};
use log::{Level, debug, info, log_enabled, trace, warn};
use mio::event::Event;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// The signal pipe's token; listener `i` is `LISTENERS + i`; the metrics
/// listener is `METRICS`, and metrics connection `k` is `SCRAPES + k`. All
/// far above any slab key, so an event can never be mistaken for a
/// client's, and the loop tells the kinds apart by the token alone.
const SIGNALS: Token = Token(1 << 40);
const LISTENERS: usize = (1 << 40) + 1;
const METRICS: Token = Token((1 << 41) - 1);
const SCRAPES: usize = 1 << 41;
/// Events per poll: enough that a turn sees every busy client (a small
/// number here delays clients behind a few chatty ones).
const EVENTS_CAPACITY: usize = 1024;
/// Shared read buffer size.
const READ_BUF: usize = 16 * 1024;
/// Rejected clients that may be lingering at once, at least; more when
/// `--max-connections` leaves descriptors to spare (see `Server::bind`).
/// Past this, one more is sent `ERR server busy` and closed at once.
const MIN_BUSY_SLOTS: usize = 16;
/// ... and at most.
const MAX_BUSY_SLOTS: usize = 1024;
/// File descriptors kept back from `--max-connections` by default: stdio,
/// the poll, the signal pipe, listeners, the metrics listener and its
/// scrapes (at most `MAX_SCRAPES`, 4), and rejected clients in flight.
/// Under a small limit, half of it is kept back instead.
pub const RESERVED_FDS: u64 = 32;
/// A client socket is registered once, for everything we will ever want
/// from it. PRIORITY (Linux) reports TCP urgent data, which stops a read
/// short: see `Conn::mark_ready`.
#[cfg(any(target_os = "linux", target_os = "android"))]
const CLIENT_INTEREST: Interest = Interest::READABLE
    .add(Interest::WRITABLE)
    .add(Interest::PRIORITY);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const CLIENT_INTEREST: Interest = Interest::READABLE.add(Interest::WRITABLE);
/// While out of file descriptors, try accepting again this often (and at
/// once whenever one of our clients closes).
const ACCEPT_RETRY: Duration = Duration::from_millis(500);
/// At most one "out of file descriptors" warning this often.
const FD_WARNING_EVERY: Duration = Duration::from_secs(10);
/// At most one "refused: not in --proxy-from" warning this often: a scan
/// of the port must not flood the log.
const UNTRUSTED_WARNING_EVERY: Duration = Duration::from_secs(10);

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    poll: Poll,
    listeners: Vec<Listener>,
    signals: Signals,
    conns: Slab<Conn>,
    shared: Shared,
    /// Lent to one connection per drive, and empty again when it returns:
    /// the one piece of per-client data the loop keeps outside a `Conn`.
    answers: AnswerBuf,
    /// Open clients, counted against `max_connections`. A client stops
    /// counting when it starts closing: lingering must not block a newcomer.
    clients: usize,
    /// Rejected (busy) clients still lingering, at most `busy_slots`.
    rejected: usize,
    busy_slots: usize,
    max_connections: usize,
    /// `--idle-timeout` and `--output-timeout`.
    timeouts: Timeouts,
    shutdown_timeout: Duration,
    /// Idle and closing deadlines (see [`crate::timers`]).
    timers: Timers,
    /// Numbers each accepted connection, so a timer entry can tell the
    /// connection it was armed for from a later one in the same slot.
    next_serial: u64,
    /// Connections to drive next turn without waiting for an event.
    again: Vec<usize>,
    /// Closed this turn; freed at the end of it, so that a later event of
    /// the same batch cannot reach a new client that reused the slot.
    closed: Vec<usize>,
    /// Out of descriptors: accepting resumes at this time (or on a close).
    accept_retry: Option<Instant>,
    fd_warned: Option<Instant>,
    /// Set by SIGTERM/SIGINT: the time by which every client must be gone.
    stopping: Option<Instant>,
    /// Clients given up on during the drain, for the last log line.
    cut: usize,
    /// A second SIGTERM/SIGINT: `run` returns at the end of this turn.
    exit_now: bool,
    /// `--proxy-protocol`.
    proxy_protocol: bool,
    /// `--proxy-from`: who may send a PROXY header; empty: anyone.
    proxy_from: Vec<Cidr>,
    /// When a refused `--proxy-from` peer was last logged.
    untrusted_warned: Option<Instant>,
    /// `--stats-interval`, and when the next periodic `stats:` line is due.
    stats_interval: Option<Duration>,
    stats_due: Option<Instant>,
    /// `--metrics`: its listener and open scrapes, if asked for.
    metrics: Option<Metrics>,
    /// Descriptors open at start (stdio, the poll, the signal pipe,
    /// listeners): with the connections, the `process_open_fds` gauge.
    base_fds: u64,
    fd_limit: u64,
}

/// The metrics listener and its connections (at most `MAX_SCRAPES`).
struct Metrics {
    listener: mio::net::TcpListener,
    scrapes: Slab<Scrape>,
}

/// Why the server could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

impl Server {
    /// Binds every listener and registers it, with the signal pipe, on a
    /// new poll, after the `inherited` ones (systemd's). `fd_limit` is the
    /// soft open-file limit in force.
    pub fn bind(
        cfg: &Config,
        fd_limit: u64,
        inherited: Vec<Listener>,
    ) -> Result<Server, StartError> {
        let fail = |what: String| move |e: io::Error| StartError(format!("{what}: {e}"));
        let poll = Poll::new().map_err(fail("cannot create the poll".into()))?;

        // Signals first: once a `listening on` line is out, SIGTERM must
        // already mean "drain and exit 0", not the default "die".
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGUSR1])
            .map_err(fail("cannot install signal handlers".into()))?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(fail("cannot register the signal pipe".into()))?;

        if !inherited.is_empty() {
            info!(
                "socket activation: {} listening sockets passed",
                inherited.len()
            );
        }
        let clients = ClientSockets {
            keepalive: cfg.tcp_keepalive,
        };
        let mut listeners = inherited;
        for l in &listeners {
            l.tune(clients)
                .map_err(fail("cannot set the options of a passed socket".into()))?;
        }
        for &addr in &cfg.listen {
            let what = format!("cannot listen on {addr}");
            listeners.push(Listener::bind_tcp(addr, cfg.reuse_port, clients).map_err(fail(what))?);
        }
        for path in &cfg.unix {
            let what = format!("cannot listen on unix:{}", path.display());
            listeners.push(Listener::bind_unix(path, cfg.unix_mode).map_err(fail(what))?);
        }
        for (i, l) in listeners.iter_mut().enumerate() {
            let addr = l
                .local_addr()
                .map_err(fail("cannot read the bound address".into()))?;
            poll.registry()
                .register(l, Token(LISTENERS + i), Interest::READABLE)
                .map_err(fail(format!("cannot register {addr}")))?;
            info!("listening on {addr}");
        }

        if cfg.proxy_protocol && cfg.proxy_from.is_empty() {
            warn!(
                "--proxy-protocol without --proxy-from: any peer that reaches the port can claim \
                 any client address (in logs, and to --max-connections-per-ip); name your \
                 proxies with --proxy-from, or firewall the port"
            );
        }
        let metrics = match cfg.metrics {
            None => None,
            Some(addr) => {
                let what = format!("cannot serve metrics on {addr}");
                let std_listener = std::net::TcpListener::bind(addr).map_err(fail(what.clone()))?;
                std_listener
                    .set_nonblocking(true)
                    .map_err(fail(what.clone()))?;
                let mut listener = mio::net::TcpListener::from_std(std_listener);
                poll.registry()
                    .register(&mut listener, METRICS, Interest::READABLE)
                    .map_err(fail(what.clone()))?;
                let bound = listener.local_addr().map_err(fail(what))?;
                info!("serving metrics on http://{bound}/metrics");
                Some(Metrics {
                    listener,
                    scrapes: Slab::with_capacity(MAX_SCRAPES),
                })
            }
        };
        let numbers =
            Numbers::new(cfg.min, cfg.max, cfg.seed).map_err(|e| StartError(e.to_string()))?;
        // Keep RESERVED_FDS back, but never more than half of a small limit.
        let fd_room = fd_limit
            .saturating_sub(RESERVED_FDS)
            .max(fd_limit / 2)
            .max(1);
        let fd_room = usize::try_from(fd_room).unwrap_or(usize::MAX);
        let max_connections = match cfg.max_connections {
            None => fd_room,
            Some(n) => {
                if n > fd_room {
                    warn!(
                        "--max-connections {n} is more than the open-file limit {fd_limit} allows \
                         (about {fd_room}): past that, clients wait in the backlog until one leaves"
                    );
                }
                n
            }
        };
        // Descriptors left over by --max-connections serve rejections.
        let spare = usize::try_from(fd_limit.saturating_sub(RESERVED_FDS / 2))
            .unwrap_or(usize::MAX)
            .saturating_sub(max_connections);
        let busy_slots = spare.clamp(MIN_BUSY_SLOTS, MAX_BUSY_SLOTS);
        let per_ip = match cfg.max_per_ip {
            None => Some(default_per_ip(max_connections)),
            Some(0) => None,
            Some(n) => Some(n),
        };
        let secs = |d: Option<Duration>| d.map_or("none".into(), |d| format!("{}s", d.as_secs()));
        info!(
            "limits: open files {fd_limit}, max connections {max_connections}, per address {}, \
             max line {}, output per client {} KiB, output budget {} KiB, idle timeout {}, \
             output timeout {}, TCP keepalive {}",
            per_ip.map_or("none".into(), |n| n.to_string()),
            cfg.max_line.map_or("none".into(), |n| format!("{n} bytes")),
            crate::conn::OUT_CAP / 1024,
            cfg.output_budget / 1024,
            secs(cfg.idle_timeout),
            secs(cfg.output_timeout),
            secs(cfg.tcp_keepalive),
        );

        Ok(Server {
            poll,
            listeners,
            signals,
            // Room for the expected clients up front: untouched capacity
            // costs address space, not memory, and growing would copy.
            conns: Slab::with_capacity(max_connections.min(1 << 16) + busy_slots),
            shared: Shared {
                rbuf: vec![0; READ_BUF].into_boxed_slice(),
                numbers,
                max_line: cfg.max_line,
                now: Instant::now(),
                stats: Stats::default(),
                per_ip: PerAddress::new(per_ip),
                pending_out: 0,
                output_budget: cfg.output_budget,
                read_budget: crate::conn::READ_BUDGET,
            },
            answers: AnswerBuf::with_capacity(crate::conn::OUT_CAP + 64),
            clients: 0,
            rejected: 0,
            busy_slots,
            max_connections,
            timeouts: Timeouts {
                idle: cfg.idle_timeout,
                output: cfg.output_timeout,
            },
            shutdown_timeout: cfg.shutdown_timeout,
            timers: Timers::default(),
            next_serial: 0,
            again: Vec::new(),
            closed: Vec::new(),
            accept_retry: None,
            fd_warned: None,
            stopping: None,
            cut: 0,
            exit_now: false,
            proxy_protocol: cfg.proxy_protocol,
            proxy_from: cfg.proxy_from.clone(),
            untrusted_warned: None,
            stats_interval: cfg.stats_interval,
            stats_due: cfg.stats_interval.map(|d| Instant::now() + d),
            metrics,
            base_fds: crate::metrics::open_fds_now(),
            fd_limit,
        })
    }

    /// Runs until SIGTERM/SIGINT and the drain that follows. Returns an
    /// error only if polling itself fails.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let timeout = self.next_timeout();
            // Read once per turn: the trace must cost nothing when it is off.
            let tracing = log_enabled!(Level::Trace);
            let slept_from = tracing.then(Instant::now);
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                // A signal arrived during epoll_wait: not an error; the
                // signal pipe's event is reported by the next poll.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    trace!("poll: interrupted by a signal, polling again");
                    continue;
                }
                Err(e) => return Err(e),
            }
            self.shared.now = Instant::now();
            self.shared.stats.wakeups += 1;
            // This turn's share of TURN_READ_BUDGET for each client driven.
            let driven = events.iter().count() + self.again.len();
            self.shared.read_budget =
                (TURN_READ_BUDGET / driven.max(1)).clamp(MIN_READ_BUDGET, READ_BUDGET);
            if let Some(from) = slept_from {
                trace_wakeup(&events, self.shared.now - from, timeout);
            }

            for event in events.iter() {
                self.shared.stats.events += 1;
                if tracing {
                    self.trace_event(event);
                }
                match event.token() {
                    SIGNALS => self.on_signal(),
                    METRICS => self.accept_scrapes(),
                    Token(t) if t >= SCRAPES => self.scrape(t - SCRAPES),
                    Token(t) if t >= LISTENERS => self.accept(t - LISTENERS),
                    Token(key) => {
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.mark_ready(event);
                        }
                        self.drive(key);
                    }
                }
            }

            // Clients whose read budget ran out (in an earlier turn, or in
            // this turn's events): their sockets may still hold data, and no
            // new edge will announce it.
            for key in std::mem::take(&mut self.again) {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.queued = false;
                }
                self.drive(key);
            }

            self.fire_timers();
            self.free_closed();

            if self.exit_now {
                self.log_stats();
                return Ok(());
            }
            if let Some(deadline) = self.stopping {
                if self.shared.now >= deadline {
                    self.cut += self.conns.iter().filter(|(_, c)| !c.is_lingering()).count();
                }
                if self.conns.is_empty() || self.shared.now >= deadline {
                    if self.cut > 0 {
                        warn!("shutdown: grace period over, cut {} clients", self.cut);
                    }
                    info!("shutdown complete");
                    self.log_stats();
                    return Ok(());
                }
            }
        }
    }

    /// How long poll may sleep: not at all if work is queued, until the
    /// earliest deadline if one is armed, forever otherwise.
    fn next_timeout(&self) -> Option<Duration> {
        if !self.again.is_empty() {
            return Some(Duration::ZERO);
        }
        let scrapes_due = self
            .metrics
            .as_ref()
            .and_then(|m| m.scrapes.iter().map(|(_, s)| s.deadline).min());
        let earliest = [
            self.timers.next(),
            self.accept_retry,
            self.stopping,
            self.stats_due,
            scrapes_due,
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(earliest.saturating_duration_since(Instant::now()))
    }

    /// Accepts every pending connection on listener `i`. Edge-triggered: a
    /// connection left in the backlog would get no new event.
    fn accept(&mut self, i: usize) {
        if self.stopping.is_some() {
            return;
        }
        loop {
            let Some(listener) = self.listeners.get(i) else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.accept_retry = None;
                    if let Err(e) = self.admit(stream, peer) {
                        debug!("could not register {peer}: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_out_of_fds(&e) => {
                    self.shared.stats.accept_emfile += 1;
                    // The client stays queued in the backlog. Trying again
                    // now would spin; stopping for good would stall it. So:
                    // retry when one of ours closes, or after a short wait.
                    self.accept_retry = Some(self.shared.now + ACCEPT_RETRY);
                    let due = self
                        .fd_warned
                        .is_none_or(|t| self.shared.now.duration_since(t) >= FD_WARNING_EVERY);
                    if due {
                        warn!(
                            "out of file descriptors ({e}) with {} clients: \
                             new clients wait in the backlog",
                            self.clients
                        );
                        self.fd_warned = Some(self.shared.now);
                    }
                    return;
                }
                // Errors of one connection (aborted before accept, a
                // firewall's EPERM, a network error): skip it, carry on.
                Err(e) if is_per_connection(&e) => debug!("accept: {e}"),
                Err(e) => {
                    warn!("accept failed: {e}; retrying shortly");
                    self.accept_retry = Some(self.shared.now + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Takes a new connection into the slab and registers it, once, for
    /// both directions: nothing will ever be re-registered.
    fn admit(&mut self, stream: Stream, peer: Peer) -> io::Result<()> {
        let now = self.shared.now;
        let stats = &mut self.shared.stats;
        stats.accepted += 1;
        // --proxy-from: only the proxies named may speak here. Anyone else
        // is closed unanswered (Unix-socket peers are trusted: the file's
        // permissions guard them).
        if let Peer::Tcp(addr) = peer
            && !self.proxy_from.is_empty()
            && !self.proxy_from.iter().any(|n| n.contains(addr.ip()))
        {
            stats.rejected_untrusted += 1;
            let due = self
                .untrusted_warned
                .is_none_or(|t| now.duration_since(t) >= UNTRUSTED_WARNING_EVERY);
            if due {
                warn!(
                    "refused {peer}: not in --proxy-from ({} refused so far; logged at most every {}s)",
                    stats.rejected_untrusted,
                    UNTRUSTED_WARNING_EVERY.as_secs()
                );
                self.untrusted_warned = Some(now);
            }
            return Ok(()); // dropped: closed unanswered
        }
        // Turned away: over --max-connections, or (counted here unless a
        // PROXY header will name the real client) over the per-address limit.
        let refusal = if self.clients >= self.max_connections {
            stats.rejected_busy += 1;
            Some((ERR_BUSY, Why::Busy))
        } else if let Peer::Tcp(addr) = peer
            && !self.proxy_protocol
            && !self.shared.per_ip.admit(addr.ip())
        {
            stats.rejected_per_ip += 1;
            Some((ERR_TOO_MANY, Why::TooMany))
        } else {
            None
        };
        let busy = refusal.is_some();
        let ip_counted = matches!(peer, Peer::Tcp(_)) && !self.proxy_protocol && !busy;
        if let Some((message, ref why)) = refusal
            && self.rejected >= self.busy_slots
        {
            // Too many rejections lingering already: a best-effort word,
            // then close. Reading what the client already sent first makes
            // a reset (which could destroy the word) less likely.
            let mut stream = stream;
            stats.writes += 1;
            if let Ok(n) = stream.write(message) {
                stats.bytes_out += n as u64;
            }
            let _ = stream.shutdown(std::net::Shutdown::Write);
            // What has arrived already, within one buffer: never a loop
            // that a fast sender could keep going.
            stats.reads += 1;
            if let Ok(n) = stream.read(&mut self.shared.rbuf) {
                stats.bytes_in += n as u64;
            }
            debug!("rejected {peer}: {why} (closed at once)");
            return Ok(());
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let serial = self.next_serial;
        self.next_serial += 1;
        let mut conn = match refusal {
            Some((message, why)) => {
                // Logged here, where the reason is at hand (formatted only
                // when debug logging is on).
                debug!("rejected {peer}: {why} ({} clients)", self.clients);
                Conn::refused(stream, peer, serial, now, message, why)
            }
            None => Conn::new(stream, peer, serial, now),
        };
        if self.proxy_protocol && !busy {
            conn.expect_proxy_header();
        }
        conn.ip_counted = ip_counted;
        if let Err(e) = self
            .poll
            .registry()
            .register(conn.stream(), Token(key), CLIENT_INTEREST)
        {
            if let (true, Peer::Tcp(addr)) = (ip_counted, peer) {
                self.shared.per_ip.release(addr.ip());
            }
            return Err(e);
        }
        // Its `out` (a refusal's message) joins the total until freed.
        self.shared.pending_out += conn.pending();
        entry.insert(conn);
        if busy {
            self.rejected += 1;
        } else {
            self.clients += 1;
            let stats = &mut self.shared.stats;
            stats.peak = stats.peak.max(self.clients as u64);
            if self.proxy_protocol {
                // `serving` names the real client, once its header is read.
                debug!("accepted {peer} as token {key}, waiting for its PROXY header");
            } else {
                info!("serving {peer}");
                debug!("accepted {peer} as token {key}");
            }
        }
        if let Some(at) = self.conns[key].deadline(self.timeouts) {
            self.arm(at, key);
        }
        // A rejected client has its error line to send.
        if busy {
            self.drive(key);
        }
        Ok(())
    }

    /// Runs one connection and acts on what it reports.
    fn drive(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.is_closed() {
            // A late event for a connection closed earlier in this batch.
            return;
        }
        let before = conn.deadline(self.timeouts);
        let status = conn.drive(Token(key), &mut self.shared, self.answers.lend());
        self.after_drive(key, before, status);
    }

    fn after_drive(&mut self, key: usize, before: Option<Instant>, status: Status) {
        let conn = &mut self.conns[key];
        if conn.seat == Seat::Client && !conn.is_open() {
            // Closing: its place is free for the next client already.
            conn.seat = Seat::Released;
            self.clients -= 1;
        }
        match status {
            Status::Wait => {}
            Status::Again => {
                if !conn.queued {
                    conn.queued = true;
                    self.again.push(key);
                }
            }
            Status::Closed(why) => {
                if self.stopping.is_some() && matches!(why, Why::Timeout) {
                    self.cut += 1;
                }
                if let Why::Failed(_) = why {
                    self.shared.stats.failed += 1;
                }
                debug!("closed {} (token {key}): {why}", conn.peer);
                self.closed.push(key);
                return;
            }
        }
        // Keep a timer entry no later than the connection's deadline.
        if let Some(after) = conn.deadline(self.timeouts)
            && before.is_none_or(|b| after < b)
        {
            self.arm(after, key);
        }
    }

    /// Adds a timer entry for the connection at `key`.
    fn arm(&mut self, at: Instant, key: usize) {
        let serial = self.conns[key].serial;
        self.timers.push(Entry { at, key, serial });
        if self.timers.is_bloated(self.conns.len()) {
            // Entries of closed connections, and of live ones whose
            // deadline moved: start again from one true entry per
            // connection. O(n), once per n pushes or so: amortised O(1).
            let timeouts = self.timeouts;
            self.timers
                .rebuild(self.conns.iter().filter_map(|(key, c)| {
                    c.deadline(timeouts).map(|at| Entry {
                        at,
                        key,
                        serial: c.serial,
                    })
                }));
        }
    }

    /// Pops the timer entries that are due and checks each against its
    /// connection's real deadline.
    fn fire_timers(&mut self) {
        let now = self.shared.now;
        // Scrapes too slow to send their head or take their answer.
        if let Some(m) = &mut self.metrics {
            let late: Vec<usize> = m
                .scrapes
                .iter()
                .filter(|(_, s)| s.deadline <= now)
                .map(|(k, _)| k)
                .collect();
            for key in late {
                debug!("metrics connection {key} timed out");
                self.close_scrape(key);
            }
        }
        if self.accept_retry.is_some_and(|at| at <= now) {
            self.accept_retry = None;
            self.accept_all();
        }
        if let (Some(due), Some(every)) = (self.stats_due, self.stats_interval)
            && due <= now
        {
            self.log_stats();
            // The next one on the grid, skipping any a long turn missed.
            let mut next = due + every;
            while next <= now {
                next += every;
            }
            self.stats_due = Some(next);
        }
        // The earliest entry decides how long poll may sleep, so it is
        // settled here, due or not, until it is true: entries of closed
        // connections and deadlines that went away are dropped, deadlines
        // that moved later are re-armed. So an idle server, whose clients
        // are all gone, has an empty heap and sleeps without a timeout.
        while let Some(Entry { at, key, serial }) = self.timers.peek() {
            // Stale entries: the connection is gone, or the slot is another's.
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.serial == serial) else {
                self.timers.pop();
                continue;
            };
            match conn.deadline(self.timeouts) {
                // True, and not due yet: nothing earlier is armed.
                Some(d) if d == at && d > now => break,
                Some(d) if d <= now => {
                    self.timers.pop();
                    let before = Some(d);
                    match conn.expire(now, self.timeouts, &mut self.shared.stats) {
                        Some(status) => self.after_drive(key, before, status),
                        None => {
                            debug!("deadline for {} (token {key})", conn.peer);
                            let status =
                                conn.drive(Token(key), &mut self.shared, self.answers.lend());
                            // Its new deadline is later than the old one:
                            // arm it whatever `before` says.
                            self.after_drive(key, None, status);
                        }
                    }
                }
                // The deadline moved (the client was active): re-arm.
                Some(d) => {
                    self.timers.pop();
                    self.timers.push(Entry { at: d, key, serial });
                }
                None => {
                    self.timers.pop();
                }
            }
        }
    }

    /// Frees the slots of connections closed this turn. Each freed
    /// descriptor is a chance to accept a client that was waiting for one.
    fn free_closed(&mut self) {
        if self.closed.is_empty() {
            return;
        }
        for key in std::mem::take(&mut self.closed) {
            let mut conn = self.conns.remove(key);
            match conn.seat {
                Seat::Client => self.clients -= 1,
                Seat::Rejected => self.rejected -= 1,
                Seat::Released => {}
            }
            self.shared.pending_out -= conn.pending();
            if conn.ip_counted
                && let Peer::Tcp(addr) = conn.peer
            {
                self.shared.per_ip.release(addr.ip());
            }

            // Deregister before the socket is dropped (closed).
            if let Err(e) = self.poll.registry().deregister(conn.stream()) {
                debug!("deregister token {key}: {e}");
            }
        }
        if self.accept_retry.is_some() {
            self.accept_retry = None;
            self.accept_all();
        }
    }

    /// Accepts metrics connections until `WouldBlock`; past
    /// `MAX_SCRAPES` open, a new one is closed at once.
    fn accept_scrapes(&mut self) {
        let Some(m) = &mut self.metrics else {
            return;
        };
        loop {
            match m.listener.accept() {
                Ok((stream, peer)) => {
                    if m.scrapes.len() >= MAX_SCRAPES {
                        debug!("metrics: refused {peer}, {MAX_SCRAPES} scrapes open");
                        continue; // dropped: closed
                    }
                    let entry = m.scrapes.vacant_entry();
                    let token = Token(SCRAPES + entry.key());
                    let mut scrape = Scrape::new(stream, self.shared.now);
                    if let Err(e) = self.poll.registry().register(
                        scrape.stream(),
                        token,
                        Interest::READABLE.add(Interest::WRITABLE),
                    ) {
                        debug!("metrics: could not register {peer}: {e}");
                        continue;
                    }
                    entry.insert(scrape);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // One connection's error: the next may be fine, and no new
                // edge would announce it.
                Err(e) if is_per_connection(&e) => debug!("metrics: accept: {e}"),
                // Out of descriptors: line clients come first; a scraper
                // retries at its next interval, and its connect waits in
                // the backlog meanwhile.
                Err(e) => {
                    debug!("metrics: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Drives metrics connection `key`: read its head, answer, close. The
    /// gauges are computed only when a complete head asks for them.
    fn scrape(&mut self, key: usize) {
        let Some(m) = &mut self.metrics else {
            return;
        };
        let scrapes = m.scrapes.len();
        let Some(scrape) = m.scrapes.get_mut(key) else {
            return;
        };
        let (conns, shared) = (&self.conns, &self.shared);
        let gauges = || Gauges {
            open: self.clients as u64,
            max_connections: self.max_connections as u64,
            peak: shared.stats.peak,
            pending_out: shared.pending_out as u64,
            open_fds: self.base_fds + (conns.len() + scrapes) as u64,
            max_fds: self.fd_limit,
            resident_bytes: crate::metrics::resident_bytes(),
            ..count_clients(conns)
        };
        match scrape.drive(|| crate::metrics::render(&shared.stats, &gauges())) {
            Step::Wait => {}
            Step::Close => self.close_scrape(key),
        }
    }

    fn close_scrape(&mut self, key: usize) {
        if let Some(m) = &mut self.metrics
            && let Some(mut scrape) = m.scrapes.try_remove(key)
        {
            let _ = self.poll.registry().deregister(scrape.stream());
        }
    }

    fn accept_all(&mut self) {
        for i in 0..self.listeners.len() {
            self.accept(i);
        }
    }

    /// SIGTERM or SIGINT: the first starts a graceful drain, a second one
    /// while draining gives up on it.
    fn on_signal(&mut self) {
        // Both signals may come back from one read of the pipe: only a
        // signal that arrives in a later turn counts as "again".
        let was_stopping = self.stopping.is_some();
        let pending: Vec<i32> = self.signals.pending().collect();
        for signal in pending {
            let name = match signal {
                SIGUSR1 => {
                    self.log_stats();
                    continue;
                }
                SIGTERM => "SIGTERM",
                _ => "SIGINT",
            };
            if was_stopping {
                warn!(
                    "{name} again: exiting now, cutting {} clients",
                    self.conns.len()
                );
                // `run` returns at the end of this turn: one way out.
                self.exit_now = true;
                return;
            }
            if self.stopping.is_some() {
                continue;
            }
            let deadline = self.shared.now + self.shutdown_timeout;
            self.stopping = Some(deadline);
            info!(
                "{name}: shutting down, draining {} clients for up to {}s",
                self.conns.len(),
                self.shutdown_timeout.as_secs()
            );
            // Stop accepting: close the listeners (a Unix socket's file goes
            // too), and the metrics endpoint with its scrapes.
            for mut l in self.listeners.drain(..) {
                let _ = self.poll.registry().deregister(&mut l);
            }
            if let Some(mut m) = self.metrics.take() {
                let _ = self.poll.registry().deregister(&mut m.listener);
                for mut scrape in m.scrapes.drain() {
                    let _ = self.poll.registry().deregister(scrape.stream());
                }
            }
            self.accept_retry = None;
            // Every client: answers already owed are flushed, then FIN,
            // then a short linger, all within the grace period.
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                let conn = &mut self.conns[key];
                if conn.is_closed() {
                    continue;
                }
                let before = conn.deadline(self.timeouts);
                conn.close(Why::Shutdown, deadline);
                let status = conn.drive(Token(key), &mut self.shared, self.answers.lend());
                self.after_drive(key, before, status);
            }
        }
    }

    /// The counters, as one `stats:` line (format: [`crate::stats`]).
    fn log_stats(&self) {
        info!(
            "{}",
            self.shared
                .stats
                .line(self.clients, self.shared.pending_out)
        );
    }

    /// One trace line per readiness event: who, and the flags mio saw.
    fn trace_event(&self, event: &Event) {
        let who = match event.token() {
            SIGNALS => "signals".to_string(),
            METRICS => "metrics listener".to_string(),
            Token(t) if t >= SCRAPES => format!("metrics connection {}", t - SCRAPES),
            Token(t) if t >= LISTENERS => format!("listener {}", t - LISTENERS),
            Token(t) => match self.conns.get(t) {
                Some(conn) => format!("token {t} ({})", conn.peer),
                None => format!("token {t}"),
            },
        };
        trace!("event {who}: {}", event_flags(event));
    }
}

/// Lingering and paused clients, for a scrape: one walk of the slab, a
/// few hundred microseconds at 20,000 clients, once per answered scrape
/// (Prometheus's default is one every 15 s), never per event.
fn count_clients(conns: &Slab<Conn>) -> Gauges {
    let (mut lingering, mut paused) = (0, 0);
    for (_, conn) in conns {
        lingering += u64::from(conn.is_lingering());
        paused += u64::from(conn.is_paused());
    }
    Gauges {
        lingering,
        paused,
        ..Gauges::default()
    }
}

/// The default `--max-connections-per-ip`: a sixteenth of the connections,
/// so that one address cannot take them all, but never under 64, so that a
/// NAT of a few dozen users or a test box is not refused.
fn default_per_ip(max_connections: usize) -> usize {
    (max_connections / 16).max(64)
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: the system is short of something; the
/// connection is still queued and will be accepted when it is not.
fn is_out_of_fds(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Errors accept(2) reports for one pending connection, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::ECONNRESET
                | libc::ETIMEDOUT
        )
    )
}

/// One trace line per return from poll: how long it slept, how many events.
fn trace_wakeup(events: &Events, slept: Duration, timeout: Option<Duration>) {
    let n = events.iter().count();
    let timeout = timeout.map_or("none".to_string(), |t| format!("{} ms", Ms(t)));
    trace!(
        "poll: woke after {} ms (timeout {timeout}) with {n} event{}",
        Ms(slept),
        if n == 1 { "" } else { "s" }
    );
}

/// A duration as milliseconds with three decimals, in integer arithmetic
/// (float formatting would add 20 KB to the binary for one trace line).
struct Ms(Duration);

impl std::fmt::Display for Ms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = self.0.as_micros();
        write!(f, "{}.{:03}", us / 1000, us % 1000)
    }
}

/// The readiness flags mio reported, as words.
fn event_flags(event: &Event) -> String {
    let flags = [
        (event.is_readable(), "readable"),
        (event.is_writable(), "writable"),
        (event.is_read_closed(), "read-closed"),
        (event.is_write_closed(), "write-closed"),
        (event.is_error(), "error"),
        (event.is_priority(), "priority"),
    ];
    let names: Vec<&str> = flags
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
    names.join(" ")
}
