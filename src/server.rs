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
//!  │       metrics  ──► accept a scrape / Endpoint::ready (--metrics)
//!  │     drive the "again" list taken before the events (clients whose read
//!  │       budget ran out in an earlier turn: each client reads once a turn)
//!  │     fire due deadlines (idle, output and header timeouts, lingering close,
//!  │                         accept retry, stats, slow scrapes)
//!  │     free the slots of connections closed this turn
//!  └──── until shut down and every client is gone (or the grace period ends)
//! ```
//!
//! Connections live in a `Slab`; a connection's key is its `Token`.
//! Listener and signal tokens sit far above any slab key, and an event's
//! token is decoded once, into a [`Source`]. Per-connection work is in
//! [`crate::conn`] (and a scrape's in [`crate::metrics`]); this file
//! decides *when* each one runs.

use crate::answers::AnswerBuf;
use crate::config::{Cidr, Config};
use crate::conn::{
    Conn, ERR_BUSY, ERR_TOO_MANY, MIN_READ_BUDGET, OUT_CAP, READ_BUDGET, Rules, Shared, Status,
    TURN_READ_BUDGET, Timeouts, Wake, Why, turn_away,
};
use crate::limits::{Asked, Limits, MAX_KEYS};
use crate::metrics::{Endpoint, Gauges, MAX_SCRAPES};
use crate::net::{ClientSockets, Listener, Peer, Stream};
use crate::numbers::Numbers;
use crate::per_ip::PerAddress;
use crate::sys::MemoryLimit;
use crate::timers::{Entry, Timers};
use log::{Level, debug, info, log_enabled, trace, warn};
use mio::event::Event;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::io;
use std::time::{Duration, Instant};

/// What an event's token stands for: every token the loop registers is
/// made by [`Source::token`], and every event's is read back once by
/// [`Source::decode`], for the dispatch in `run` and for its trace line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The signal pipe.
    Signals,
    /// A listener.
    Listener(Listening),
    /// Metrics connection `k` ([`crate::metrics`]).
    Scrape(usize),
    /// The client in slab slot `key`.
    Client(usize),
}

/// Which listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listening {
    /// Line listener `i` (TCP or Unix).
    Line(usize),
    /// `--metrics`.
    Metrics,
}

/// The signal pipe's token; listener `i` is `LISTENERS + i`; the metrics
/// listener is `METRICS`, and metrics connection `k` is `SCRAPES + k`. All
/// at or above [`MAX_KEYS`], which no slab key reaches (see `admit`), so an
/// event can never be mistaken for a client's. In a 32-bit `usize` too:
/// 2^30 and up.
const SIGNALS: usize = MAX_KEYS;
const LISTENERS: usize = MAX_KEYS + 1;
const METRICS: usize = 2 * MAX_KEYS - 1;
const SCRAPES: usize = 2 * MAX_KEYS;
// Checked when compiling, for the target's `usize`: the ranges are in
// order and the last one fits.
const _: () = assert!(LISTENERS < METRICS && METRICS < SCRAPES);
const _: () = assert!(SCRAPES.checked_add(MAX_SCRAPES).is_some());

impl Source {
    /// The token to register this source under.
    pub fn token(self) -> Token {
        Token(match self {
            Source::Signals => SIGNALS,
            Source::Listener(Listening::Line(i)) => LISTENERS + i,
            Source::Listener(Listening::Metrics) => METRICS,
            Source::Scrape(k) => SCRAPES + k,
            Source::Client(key) => key,
        })
    }

    /// What an event's token stands for: the inverse of [`Source::token`].
    pub fn decode(Token(t): Token) -> Source {
        match t {
            key if key < MAX_KEYS => Source::Client(key),
            SIGNALS => Source::Signals,
            METRICS => Source::Listener(Listening::Metrics),
            t if t >= SCRAPES => Source::Scrape(t - SCRAPES),
            t => Source::Listener(Listening::Line(t - LISTENERS)),
        }
    }
}
/// Events per poll: enough that a turn sees every busy client (a small
/// number here delays clients behind a few chatty ones).
const EVENTS_CAPACITY: usize = 1024;
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
/// At most one warning of each kind this often ("out of file descriptors",
/// "refused: not in --proxy-from", "could not register"): a flood or a
/// scan of the port must not flood the log.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    // What the loop polls.
    poll: Poll,
    listeners: Vec<Listener>,
    signals: Signals,
    /// `--metrics`: its listener and open scrapes, if asked for.
    metrics: Option<Endpoint>,

    // The clients.
    conns: Slab<Slot>,
    /// What their seats hold, counted against the limits.
    counts: Counts,
    /// Deadlines (see [`crate::timers`]).
    timers: Timers,
    /// What a connection borrows while it is driven.
    shared: Shared,
    /// Lent to one connection per drive, and empty again when it returns:
    /// the one piece of per-client data the loop keeps outside a `Conn`.
    answers: AnswerBuf,

    // Fixed at start.
    limits: Limits,
    settings: Settings,

    // What the loop keeps track of from turn to turn.
    state: State,
}

/// A connection and what the loop keeps about it: the connection itself
/// knows nothing of the slab, the timer heap, or the limits it counts in
/// (after a PROXY header it only asks: [`crate::conn::Admit`]).
struct Slot {
    conn: Conn,
    /// The time of its current timer entry (see [`crate::timers`]).
    armed: Option<Instant>,
    /// What it holds of the loop's limits.
    seat: Seat,
    /// Its place on the "drive again" list.
    queued: Queued,
}

/// Where a connection stands with the again-list. A connection is on it at
/// most once; each turn drives those queued before the turn began, and a
/// connection queued during the turn waits for the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    /// Not on the list.
    No,
    /// On the list, for the next turn.
    Next,
    /// On the list this turn took: its events only latch readiness, and
    /// the list drives it once, after the events.
    Now,
}

/// Which of the loop's limits a connection counts against. One field, not
/// two flags: a connection is never both a client and a rejection. Taken
/// when the loop admits it, given back only by [`Slot::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seat {
    /// Open, counted against `--max-connections`; if `per_ip`, also under
    /// its peer's address (`--max-connections-per-ip`). A peer is fixed
    /// once counted: only a PROXY header changes it, before the count.
    Client { per_ip: bool },
    /// Turned away, lingering: counted against the busy slots.
    Rejected,
    /// Closing after being a client: counts against nothing (lingering
    /// must not block a newcomer, not even one from the same address).
    Released,
}

impl Slot {
    /// Gives back what its seat holds, once that is due: a client's seat
    /// and its per-address count as soon as it stops being open (so its
    /// close and linger keep no newcomer out), a rejection's busy slot when
    /// its slot is `freed` (its descriptor stays open until then). The one
    /// place a count is given back; the seat is `Released` after it, so
    /// nothing is given back twice.
    fn release(&mut self, counts: &mut Counts, freed: bool) {
        let due = match self.seat {
            Seat::Client { .. } => !self.conn.is_open(),
            Seat::Rejected => freed,
            Seat::Released => false,
        };
        if !due {
            return;
        }
        match std::mem::replace(&mut self.seat, Seat::Released) {
            Seat::Client { per_ip } => {
                debug_assert!(counts.clients > 0, "more clients released than counted");
                counts.clients -= 1;
                if per_ip && let Some(ip) = self.conn.peer.ip() {
                    counts.per_ip.release(ip);
                }
            }
            Seat::Rejected => {
                debug_assert!(counts.rejected > 0, "more rejections freed than counted");
                counts.rejected -= 1;
            }
            Seat::Released => {}
        }
    }
}

/// What the seats hold, counted: the limits across clients. Counted when
/// the loop admits a connection (`admit`, or, for the client a PROXY
/// header names, the closure `drive` lends), given back by
/// [`Slot::release`] alone.
struct Counts {
    /// `Client` seats: open clients, at most `max_connections`.
    clients: usize,
    /// `Rejected` seats: rejected (busy) clients still lingering, at most
    /// `busy_slots`.
    rejected: usize,
    /// `Client { per_ip: true }` seats, per address.
    per_ip: PerAddress,
}

/// What to do with a new connection ([`Counts::classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// Not in `--proxy-from`: closed unanswered.
    Drop,
    /// Served; `per_ip`: counted under its address (a TCP peer, with no
    /// PROXY header to name another).
    Serve { per_ip: bool },
    /// Over a limit: `message`, then a lingering close in a busy slot.
    Reject(&'static [u8], Why),
    /// Over a limit, every busy slot taken (or no key left): `message`,
    /// closed at once ([`turn_away`]).
    TurnAway(&'static [u8], Why),
}

impl Counts {
    /// Decides what to do with a connection from `peer` that would get
    /// slab key `key`; counts nothing (the caller does, once the
    /// connection is registered). Pure: tested without sockets.
    fn classify(
        &self,
        peer: Peer,
        key: usize,
        limits: &Limits,
        proxy_from: &[Cidr],
        proxy_header: bool,
    ) -> Admission {
        // `--proxy-from`: only the proxies named may speak here (Unix-socket
        // peers are trusted: the file's permissions guard them).
        if let Some(ip) = peer.ip()
            && !proxy_from.is_empty()
            && !proxy_from.iter().any(|n| n.contains(ip))
        {
            return Admission::Drop;
        }
        if key >= MAX_KEYS {
            // Never reached while each key holds a descriptor (the limits
            // stay far below); checked so that a key can never be read as
            // one of the loop's own tokens.
            return Admission::TurnAway(ERR_BUSY, Why::Busy);
        }
        // With a PROXY header to come, the address that counts is the one
        // it names: counted then (see `drive`).
        let per_ip = !proxy_header && peer.ip().is_some();
        let refusal = if self.clients >= limits.max_connections {
            (ERR_BUSY, Why::Busy)
        } else if let Some(ip) = peer.ip().filter(|_| per_ip)
            && !self.per_ip.has_room(ip)
        {
            (ERR_TOO_MANY, Why::TooMany)
        } else {
            return Admission::Serve { per_ip };
        };
        if self.rejected >= limits.busy_slots {
            Admission::TurnAway(refusal.0, refusal.1)
        } else {
            Admission::Reject(refusal.0, refusal.1)
        }
    }
}

/// The command line's settings the loop consults (the connections' own
/// are in [`Shared`]).
struct Settings {
    shutdown_timeout: Duration,
    /// `--proxy-protocol`.
    proxy_protocol: bool,
    /// `--proxy-from`: who may send a PROXY header; empty: anyone.
    proxy_from: Vec<Cidr>,
    /// `--stats-interval`.
    stats_interval: Option<Duration>,
    /// The soft open-file limit in force.
    fd_limit: u64,
    /// Descriptors open at start (stdio, the poll, the signal pipe,
    /// listeners): with the connections, the `process_open_fds` gauge.
    base_fds: u64,
}

/// The loop's state between turns.
#[derive(Default)]
struct State {
    /// Connections to drive next turn without waiting for an event.
    again: Vec<usize>,
    /// Closed this turn; freed at the end of it, so that a later event of
    /// the same batch cannot reach a new client that reused the slot.
    closed: Vec<usize>,
    /// Out of descriptors: accepting resumes at this time (or on a close).
    accept_retry: Option<Instant>,
    /// When the next periodic `stats:` line is due (`--stats-interval`).
    stats_due: Option<Instant>,
    /// Set by SIGTERM/SIGINT: the time by which every client must be gone.
    stopping: Option<Instant>,
    /// Clients given up on during the drain, for the last log line.
    cut: usize,
    /// A second SIGTERM/SIGINT: `run` returns at the end of this turn.
    exit_now: bool,
    /// When each kind of rate-limited warning was last logged.
    fd_warned: Warned,
    untrusted_warned: Warned,
    register_warned: Warned,
}

/// When a rate-limited warning was last logged (see [`WARN_EVERY`]).
#[derive(Default)]
struct Warned(Option<Instant>);

impl Warned {
    /// True (and remembered) if a warning may be logged at `now`.
    fn due(&mut self, now: Instant) -> bool {
        let due = self.0.is_none_or(|t| now.duration_since(t) >= WARN_EVERY);
        if due {
            self.0 = Some(now);
        }
        due
    }
}

/// Why the server could not start: what it was doing, and the system's
/// error (kept as the source, so a caller can match its kind).
#[derive(Debug)]
pub struct StartError {
    what: String,
    source: Option<io::Error>,
}

impl StartError {
    /// The system error's kind, if a system call failed.
    pub fn kind(&self) -> Option<io::ErrorKind> {
        self.source.as_ref().map(io::Error::kind)
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(e) => write!(f, "{}: {e}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// `.map_err(failed("cannot ..."))`: a system call's error, with context.
fn failed(what: impl Into<String>) -> impl FnOnce(io::Error) -> StartError {
    let what = what.into();
    move |e| StartError {
        what,
        source: Some(e),
    }
}

impl Server {
    /// Binds every listener and registers it, with the signal pipe, on a
    /// new poll, after the `inherited` ones (systemd's). `fd_limit` is the
    /// soft open-file limit in force, `memory` what the process may use
    /// (`None`: unknown).
    pub fn bind(
        cfg: &Config,
        fd_limit: u64,
        memory: Option<MemoryLimit>,
        inherited: Vec<Listener>,
    ) -> Result<Server, StartError> {
        let poll = Poll::new().map_err(failed("cannot create the poll"))?;
        // Signals first: once a `listening on` line is out, SIGTERM must
        // already mean "drain and exit 0", not the default "die".
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGUSR1])
            .map_err(failed("cannot install signal handlers"))?;
        poll.registry()
            .register(&mut signals, Source::Signals.token(), Interest::READABLE)
            .map_err(failed("cannot register the signal pipe"))?;
        let listeners = bind_listeners(&poll, cfg, inherited)?;
        if cfg.proxy_protocol && cfg.proxy_from.is_empty() {
            warn!(
                "--proxy-protocol without --proxy-from: any peer that reaches the port can claim \
                 any client address (in logs, and to --max-connections-per-ip); name your \
                 proxies with --proxy-from, or firewall the port"
            );
        }
        let metrics = cfg.metrics.map(|addr| {
            Endpoint::bind(addr, poll.registry())
                .map_err(failed(format!("cannot serve metrics on {addr}")))
        });
        let metrics = metrics.transpose()?;
        let numbers = Numbers::new(cfg.min, cfg.max, cfg.seed).map_err(|e| StartError {
            what: e.to_string(),
            source: None,
        })?;
        let asked = Asked {
            max_connections: cfg.max_connections,
            max_per_ip: cfg.max_per_ip,
            output_budget: cfg.output_budget,
        };
        let limits = Limits::new(asked, fd_limit, memory.map(|m| m.bytes));
        log_limits(cfg, &limits, fd_limit, memory);
        let rules = Rules {
            max_line: cfg.max_line,
            timeouts: Timeouts {
                idle: cfg.idle_timeout,
                output: cfg.output_timeout,
            },
            output_budget: limits.output_budget,
        };
        let now = Instant::now();

        Ok(Server {
            poll,
            listeners,
            signals,
            metrics,
            // Room for the expected clients up front: untouched capacity
            // costs address space, not memory, and growing would copy.
            conns: Slab::with_capacity(limits.max_connections.min(1 << 16) + limits.busy_slots),
            timers: Timers::default(),
            counts: Counts {
                clients: 0,
                rejected: 0,
                per_ip: PerAddress::new(limits.per_ip),
            },
            shared: Shared::new(rules, numbers, now),
            answers: AnswerBuf::with_capacity(OUT_CAP + 64),
            limits,
            settings: Settings {
                shutdown_timeout: cfg.shutdown_timeout,
                proxy_protocol: cfg.proxy_protocol,
                proxy_from: cfg.proxy_from.clone(),
                stats_interval: cfg.stats_interval,
                fd_limit,
                base_fds: crate::metrics::open_fds_now(),
            },
            state: State {
                stats_due: cfg.stats_interval.map(|d| Instant::now() + d),
                ..State::default()
            },
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
            let now = Instant::now();
            if let Some(from) = slept_from {
                trace_wakeup(&events, now - from, timeout);
            }
            self.turn(&events, now, tracing);
            if self.finished() {
                return Ok(());
            }
        }
    }

    /// One turn of the loop after `poll` returned `events` at `now`: the
    /// again-list, every event, due deadlines, then the slots closed in
    /// the turn are freed. (`run` is poll, this, and the check whether to
    /// stop; the unit tests turn the loop through this too.)
    fn turn(&mut self, events: &Events, now: Instant, tracing: bool) {
        self.shared.set_now(now);
        self.shared.stats.wakeups += 1;
        // Clients whose read budget ran out in an earlier turn: their
        // sockets may still hold data, and no new edge will announce
        // it. Taken before the events, so that a client whose budget
        // runs out in this turn's events waits for the next turn: each
        // client reads once per turn (see `Queued`).
        let again = std::mem::take(&mut self.state.again);
        for &key in &again {
            if let Some(slot) = self.conns.get_mut(key)
                && slot.queued == Queued::Next
            {
                slot.queued = Queued::Now;
            }
        }
        // This turn's share of TURN_READ_BUDGET for each client driven.
        let driven = events.iter().count() + again.len();
        self.shared.set_read_budget(
            (TURN_READ_BUDGET / driven.max(1)).clamp(MIN_READ_BUDGET, READ_BUDGET),
        );

        for event in events.iter() {
            self.shared.stats.events += 1;
            let source = Source::decode(event.token());
            if tracing {
                self.trace_event(source, event);
            }
            match source {
                Source::Signals => self.on_signal(),
                Source::Listener(from) => self.accept(from),
                Source::Scrape(k) => self.scrape(k),
                Source::Client(key) => {
                    if let Some(slot) = self.conns.get_mut(key) {
                        slot.conn.mark_ready(event);
                        if slot.queued == Queued::Now {
                            // Driven below, with this readiness latched.
                            continue;
                        }
                    }
                    self.drive(key, Wake::Ready);
                }
            }
        }

        for key in again {
            // Skips an entry left by a connection closed since (its
            // slot free, or reused by a client not queued for now).
            match self.conns.get_mut(key) {
                Some(slot) if slot.queued == Queued::Now => slot.queued = Queued::No,
                _ => continue,
            }
            self.drive(key, Wake::Ready);
        }

        self.fire_timers();
        self.free_closed();
    }

    /// True when `run` should return: a second signal, or the drain that
    /// follows the first one is over (every client gone, or time is up).
    fn finished(&mut self) -> bool {
        if self.state.exit_now {
            self.log_stats();
            return true;
        }
        let Some(deadline) = self.state.stopping else {
            return false;
        };
        let now = self.shared.now();
        if now >= deadline {
            self.state.cut += self
                .conns
                .iter()
                .filter(|(_, s)| !s.conn.is_lingering())
                .count();
        }
        if !self.conns.is_empty() && now < deadline {
            return false;
        }
        if self.state.cut > 0 {
            warn!(
                "shutdown: grace period over, cut {} clients",
                self.state.cut
            );
        }
        info!("shutdown complete");
        self.log_stats();
        true
    }

    /// How long poll may sleep: not at all if work is queued, until the
    /// earliest deadline if one is armed, forever otherwise.
    fn next_timeout(&self) -> Option<Duration> {
        if !self.state.again.is_empty() {
            return Some(Duration::ZERO);
        }
        let earliest = [
            self.timers.next(),
            self.state.accept_retry,
            self.state.stopping,
            self.state.stats_due,
            self.metrics.as_ref().and_then(Endpoint::deadline),
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(earliest.saturating_duration_since(Instant::now()))
    }

    /// Accepts every pending connection on `from`, a line listener's
    /// clients or the metrics endpoint's scrapes. Edge-triggered: a
    /// connection left in the backlog would get no new event.
    fn accept(&mut self, from: Listening) {
        if self.state.stopping.is_some() {
            return;
        }
        while let Some((stream, peer)) = self.next_pending(from) {
            match (from, &mut self.metrics) {
                (Listening::Line(_), _) => self.admit(stream, peer),
                (Listening::Metrics, Some(m)) => {
                    m.admit(stream, peer, self.poll.registry(), self.shared.now());
                }
                (Listening::Metrics, None) => {}
            }
        }
    }

    /// The next connection waiting on `from`; `None` when there is none
    /// for now: its backlog is empty (the next connection brings an
    /// event), or accepting must wait, and `accept_retry` (or a close)
    /// comes back to every listener, the metrics one included. A success
    /// cancels no retry: it says nothing of another listener's backlog.
    fn next_pending(&mut self, from: Listening) -> Option<(Stream, Peer)> {
        loop {
            let listener = match from {
                Listening::Line(i) => self.listeners.get(i),
                Listening::Metrics => self.metrics.as_ref().map(Endpoint::listener),
            }?;
            match listener.accept() {
                Ok(pending) => return Some(pending),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_out_of_fds(&e) => {
                    self.shared.stats.accept_emfile += 1;
                    // The connection stays queued in the backlog. Trying
                    // again now would spin; stopping for good would stall
                    // it. So: retry when one of ours closes, or after a
                    // short wait.
                    self.state.accept_retry = Some(self.shared.now() + ACCEPT_RETRY);
                    if self.state.fd_warned.due(self.shared.now()) {
                        warn!(
                            "out of file descriptors ({e}) with {} clients: \
                             new clients wait in the backlog",
                            self.counts.clients
                        );
                    }
                    return None;
                }
                // Errors of one connection (aborted before accept, a
                // firewall's EPERM, a network error): skip it, carry on.
                Err(e) if is_per_connection(&e) => debug!("accept: {e}"),
                Err(e) => {
                    warn!("accept failed: {e}; retrying shortly");
                    self.state.accept_retry = Some(self.shared.now() + ACCEPT_RETRY);
                    return None;
                }
            }
        }
    }

    /// Takes a new connection into the slab and registers it, once, for
    /// both directions: nothing will ever be re-registered. Or turns it
    /// away: unanswered if it is not a trusted proxy, with an `ERR` line
    /// if over a limit. What to do is [`Counts::classify`]'s decision;
    /// here it is carried out, and counted once the connection is seated.
    fn admit(&mut self, mut stream: Stream, peer: Peer) {
        self.shared.stats.accepted += 1;
        let settings = &self.settings;
        let admission = self.counts.classify(
            peer,
            self.conns.vacant_key(),
            &self.limits,
            &settings.proxy_from,
            settings.proxy_protocol,
        );
        let stats = &mut self.shared.stats;
        match admission {
            Admission::Drop => return self.untrusted(peer),
            Admission::Serve { .. } => {}
            Admission::Reject(_, why) | Admission::TurnAway(_, why) => match why {
                Why::TooMany => stats.rejected_per_ip += 1,
                _ => stats.rejected_busy += 1,
            },
        }
        if let Admission::TurnAway(message, why) = admission {
            // Too many rejections lingering already: no slot for this one.
            let sh = &mut self.shared;
            turn_away(stream, message, &mut sh.rbuf, &mut sh.stats);
            debug!("rejected {peer}: {why} (closed at once)");
            return;
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), CLIENT_INTEREST)
        {
            // Nothing counted yet: nothing to give back.
            if self.state.register_warned.due(self.shared.now()) {
                warn!("could not register {peer}: {e}; closed it (logged at most every 10s)");
            }
            return;
        }
        let (conn, seat) = match admission {
            Admission::Reject(message, why) => {
                // Logged here, where the reason is at hand (formatted only
                // when debug logging is on).
                debug!("rejected {peer}: {why} ({} clients)", self.counts.clients);
                let conn = Conn::refused(stream, peer, message, why, &mut self.shared);
                self.counts.rejected += 1;
                (conn, Seat::Rejected)
            }
            Admission::Serve { per_ip } => {
                let proxied = self.settings.proxy_protocol;
                let conn = Conn::new(stream, peer, proxied, &self.shared);
                if per_ip && let Some(ip) = peer.ip() {
                    self.counts.per_ip.count(ip);
                }
                self.counts.clients += 1;
                (conn, Seat::Client { per_ip })
            }
            // Carried out above.
            Admission::Drop | Admission::TurnAway(..) => return,
        };
        entry.insert(Slot {
            conn,
            armed: None,
            seat,
            queued: Queued::No,
        });
        if seat == Seat::Rejected {
            // Its error line is to be sent.
            self.drive(key, Wake::Ready);
            return;
        }
        let stats = &mut self.shared.stats;
        stats.peak = stats.peak.max(self.counts.clients as u64);
        if self.settings.proxy_protocol {
            // `serving` names the real client, once its header is read.
            debug!("accepted {peer} as token {key}, waiting for its PROXY header");
        } else {
            info!("serving {peer}");
            debug!("accepted {peer} as token {key}");
        }
        self.settle(key, Status::Wait);
    }

    /// A peer not in `--proxy-from`, closed unanswered: counted, and
    /// warned about at most every [`WARN_EVERY`].
    fn untrusted(&mut self, peer: Peer) {
        let now = self.shared.now();
        let stats = &mut self.shared.stats;
        stats.rejected_untrusted += 1;
        if self.state.untrusted_warned.due(now) {
            warn!(
                "refused {peer}: not in --proxy-from ({} refused so far; logged at most every {}s)",
                stats.rejected_untrusted,
                WARN_EVERY.as_secs()
            );
        }
    }

    /// Runs the connection at `key` after `wake`, then settles it.
    fn drive(&mut self, key: usize, wake: Wake) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        if slot.conn.is_closed() {
            // A late event for a connection closed earlier in this batch.
            return;
        }
        // With --proxy-protocol, the connection asks about the client its
        // header names: admitted under that address, the count held by the
        // seat, or refused, as at accept.
        let Slot { conn, seat, .. } = slot;
        let per_ip = &mut self.counts.per_ip;
        let admit = &mut |ip| {
            debug_assert_eq!(*seat, Seat::Client { per_ip: false });
            let room = per_ip.has_room(ip);
            if room {
                per_ip.count(ip);
                *seat = Seat::Client { per_ip: true };
            }
            room
        };
        let answers = self.answers.lend();
        let status = conn.drive(Token(key), wake, &mut self.shared, answers, admit);
        self.settle(key, status);
    }

    /// The one place that acts on what happened to a connection (an
    /// event, a deadline, shutdown, accept): frees its seat once it stops
    /// being open, queues it to be driven again, marks it for freeing, or
    /// arms its next deadline. The connection reports that deadline
    /// itself; nobody carries an earlier one around.
    fn settle(&mut self, key: usize, status: Status) {
        let slot = &mut self.conns[key];
        // Closing: its place is free for the next client already.
        slot.release(&mut self.counts, false);
        let closed = match status {
            Status::Wait => false,
            Status::Again => {
                if slot.queued == Queued::No {
                    slot.queued = Queued::Next;
                    self.state.again.push(key);
                }
                false
            }
            Status::Closed(why) => {
                if self.state.stopping.is_some() && why == Why::Timeout {
                    self.state.cut += 1;
                }
                debug!("closed {} (token {key}): {why}", slot.conn.peer);
                true
            }
            Status::Failed(e) => {
                self.shared.stats.failed += 1;
                debug!("closed {} (token {key}): {e}", slot.conn.peer);
                true
            }
        };
        if closed {
            // Its timer entry goes stale now, not when the slot is freed:
            // the heap's next settling drops it, and the loop sleeps as if
            // the connection had never armed one.
            self.timers.disarm(&mut slot.armed);
            self.state.closed.push(key);
            return;
        }
        if self.timers.arm(&mut slot.armed, slot.conn.deadline(), key) {
            // Mostly stale entries: start again from the current ones.
            self.timers.rebuild(
                self.conns
                    .iter()
                    .filter_map(|(key, s)| s.armed.map(|at| Entry { at, key })),
            );
        }
    }

    /// Fires what is due: slow scrapes, the accept retry, the periodic
    /// `stats:` line, and connection deadlines.
    fn fire_timers(&mut self) {
        let now = self.shared.now();
        if let Some(m) = &mut self.metrics {
            m.expire(now, self.poll.registry());
        }
        if self.state.accept_retry.is_some_and(|at| at <= now) {
            self.state.accept_retry = None;
            self.accept_all();
        }
        if let (Some(due), Some(every)) = (self.state.stats_due, self.settings.stats_interval)
            && due <= now
        {
            self.log_stats();
            // The next one on the grid, skipping any a long turn missed.
            let mut next = due + every;
            while next <= now {
                next += every;
            }
            self.state.stats_due = Some(next);
        }
        self.fire_deadlines();
    }

    /// Fires the deadlines that are due. Stale entries at the top are
    /// dropped at once (a closing connection's entry goes stale in
    /// `settle`), so a server whose clients are all gone has an empty heap
    /// and sleeps without a timeout. A current entry is only
    /// looked at when due: if its connection's deadline moved later since
    /// (an active client), it is armed again there, so an active client
    /// wakes the loop early at most once per timeout; settling it every
    /// turn instead would cost a heap pop and push per turn while clients
    /// are active (docs/performance.md). A due deadline drives its
    /// connection with [`Wake::Deadline`].
    fn fire_deadlines(&mut self) {
        let now = self.shared.now();
        while let Some(Entry { at, key }) = self.timers.peek() {
            // Stale: the connection is gone or closing, or armed an
            // earlier entry since.
            let Some(slot) = self.conns.get_mut(key).filter(|s| s.armed == Some(at)) else {
                self.timers.pop();
                continue;
            };
            if at > now {
                break;
            }
            self.timers.pop();
            self.timers.disarm(&mut slot.armed);
            if slot.conn.deadline().is_some_and(|d| d <= now) {
                self.drive(key, Wake::Deadline);
            } else {
                // Moved later (the client was active), or went away.
                self.settle(key, Status::Wait);
            }
        }
    }

    /// Frees the slots of connections closed this turn. Each freed
    /// descriptor is a chance to accept a client that was waiting for one.
    fn free_closed(&mut self) {
        if self.state.closed.is_empty() {
            return;
        }
        for key in std::mem::take(&mut self.state.closed) {
            let mut slot = self.conns.remove(key);
            slot.release(&mut self.counts, true);
            debug_assert_eq!(slot.seat, Seat::Released, "a freed slot still holds a seat");
            debug_assert!(slot.armed.is_none(), "a closed connection still armed");
            // Deregister before the socket is dropped (closed).
            if let Err(e) = self.poll.registry().deregister(slot.conn.stream()) {
                debug!("deregister token {key}: {e}");
            }
        }
        if self.state.accept_retry.is_some() {
            self.state.accept_retry = None;
            self.accept_all();
        }
    }

    /// Metrics connection `k` had an event. The gauges are computed only
    /// when a complete head asks for them.
    fn scrape(&mut self, k: usize) {
        let Some(m) = &mut self.metrics else {
            return;
        };
        let (conns, shared) = (&self.conns, &self.shared);
        let open_fds = self.settings.base_fds + (conns.len() + m.open()) as u64;
        let gauges = || {
            // One walk of the slab, a few hundred microseconds at 20,000
            // clients, once per answered scrape (Prometheus's default is
            // one every 15 s), never per event.
            let (lingering, paused) = conns.iter().fold((0, 0), |(l, p), (_, s)| {
                (
                    l + u64::from(s.conn.is_lingering()),
                    p + u64::from(s.conn.is_paused()),
                )
            });
            Gauges {
                open: self.counts.clients as u64,
                lingering,
                paused,
                max_connections: self.limits.max_connections as u64,
                peak: shared.stats.peak,
                pending_out: shared.pending_out() as u64,
                open_fds,
                max_fds: self.settings.fd_limit,
                resident_bytes: crate::metrics::resident_bytes(),
            }
        };
        let render = || crate::metrics::render(&shared.stats, &gauges());
        m.ready(k, self.poll.registry(), shared.now(), render);
    }

    /// Accepts on every listener: descriptors may be back.
    fn accept_all(&mut self) {
        for i in 0..self.listeners.len() {
            self.accept(Listening::Line(i));
        }
        self.accept(Listening::Metrics);
    }

    /// SIGTERM or SIGINT: the first starts a graceful drain, a second one
    /// while draining gives up on it.
    fn on_signal(&mut self) {
        // Both signals may come back from one read of the pipe: only a
        // signal that arrives in a later turn counts as "again".
        let was_stopping = self.state.stopping.is_some();
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
                self.state.exit_now = true;
                return;
            }
            if self.state.stopping.is_some() {
                continue;
            }
            let deadline = self.shared.now() + self.settings.shutdown_timeout;
            self.state.stopping = Some(deadline);
            info!(
                "{name}: shutting down, draining {} clients for up to {}s",
                self.conns.len(),
                self.settings.shutdown_timeout.as_secs()
            );
            // Stop accepting: close the listeners (a Unix socket's file goes
            // too), and the metrics endpoint with its scrapes.
            for mut l in self.listeners.drain(..) {
                let _ = self.poll.registry().deregister(&mut l);
            }
            if let Some(m) = self.metrics.take() {
                m.close_all(self.poll.registry());
            }
            self.state.accept_retry = None;
            // Every client: answers already owed are flushed, then FIN,
            // then a short linger, all within the grace period.
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                self.drive(key, Wake::Shutdown(deadline));
            }
        }
    }

    /// The counters, as one `stats:` line (format: [`crate::stats`]).
    fn log_stats(&self) {
        info!(
            "{}",
            self.shared
                .stats
                .line(self.counts.clients, self.shared.pending_out())
        );
    }

    /// One trace line per readiness event: who, and the flags mio saw.
    fn trace_event(&self, source: Source, event: &Event) {
        let who = match source {
            Source::Signals => "signals".to_string(),
            Source::Listener(Listening::Metrics) => "metrics listener".to_string(),
            Source::Scrape(k) => format!("metrics connection {k}"),
            Source::Listener(Listening::Line(i)) => format!("listener {i}"),
            Source::Client(t) => match self.conns.get(t) {
                Some(slot) => format!("token {t} ({})", slot.conn.peer),
                None => format!("token {t}"),
            },
        };
        trace!("event {who}: {}", event_flags(event));
    }
}

/// Binds the TCP and Unix listeners asked for, after the `inherited`
/// ones, tunes each for its clients, and registers it on `poll`.
fn bind_listeners(
    poll: &Poll,
    cfg: &Config,
    inherited: Vec<Listener>,
) -> Result<Vec<Listener>, StartError> {
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
            .map_err(failed("cannot set the options of a passed socket"))?;
    }
    for &addr in &cfg.listen {
        let l = Listener::bind_tcp(addr, cfg.reuse_port, clients);
        listeners.push(l.map_err(failed(format!("cannot listen on {addr}")))?);
    }
    for path in &cfg.unix {
        let l = Listener::bind_unix(path, cfg.unix_mode);
        listeners.push(l.map_err(failed(format!("cannot listen on unix:{}", path.display())))?);
    }
    for (i, l) in listeners.iter_mut().enumerate() {
        let addr = l
            .local_addr()
            .map_err(failed("cannot read the bound address"))?;
        poll.registry()
            .register(
                l,
                Source::Listener(Listening::Line(i)).token(),
                Interest::READABLE,
            )
            .map_err(failed(format!("cannot register {addr}")))?;
        info!("listening on {addr}");
    }
    Ok(listeners)
}

/// The `limits:` line at start: the memory read and what follows from it
/// (and a warning if `--max-connections` was lowered to fit the tokens,
/// asks for more than the descriptors allow, or the limits cannot fit the
/// memory).
fn log_limits(cfg: &Config, limits: &Limits, fd_limit: u64, memory: Option<MemoryLimit>) {
    if limits.clamped(cfg.max_connections) {
        warn!(
            "--max-connections {} lowered to {}: the most this build's {}-bit tokens allow",
            cfg.max_connections.unwrap_or_default(),
            limits.max_connections,
            usize::BITS
        );
    }
    if cfg.max_connections.is_some() && limits.over_fd_room() {
        warn!(
            "--max-connections {} is more than the open-file limit {fd_limit} allows \
             (about {}): past that, clients wait in the backlog until one leaves",
            limits.max_connections, limits.fd_room
        );
    }
    let memory_text = memory.map_or("memory unknown".into(), |m| {
        format!("memory {} MiB ({})", m.bytes >> 20, m.source.name())
    });
    if limits.over_memory() {
        warn!(
            "max connections {} and output budget {} KiB may need {} MiB (the worst case in \
             docs/reliability.md), more than the {memory_text}: the server may be OOM-killed",
            limits.max_connections,
            limits.output_budget / 1024,
            limits.worst_case() >> 20,
        );
    }
    let secs = |d: Option<Duration>| d.map_or("none".into(), |d| format!("{}s", d.as_secs()));
    info!(
        "limits: {memory_text}, open files {fd_limit}, max connections {}, per address {}, \
         max line {}, output per client {} KiB, output budget {} KiB, idle timeout {}, \
         output timeout {}, TCP keepalive {}",
        limits.max_connections,
        limits.per_ip.map_or("none".into(), |n| n.to_string()),
        cfg.max_line.map_or("none".into(), |n| format!("{n} bytes")),
        OUT_CAP / 1024,
        limits.output_budget / 1024,
        secs(cfg.idle_timeout),
        secs(cfg.output_timeout),
        secs(cfg.tcp_keepalive),
    );
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
                | ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::ECONNRESET
                | libc::ETIMEDOUT
        )
    )
}

/// Linux's "machine is not on the network", which accept(2) may pass on;
/// other systems have no such error (and no errno is negative).
#[cfg(any(target_os = "linux", target_os = "android"))]
const ENONET: i32 = libc::ENONET;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const ENONET: i32 = -1;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Command;

    fn config(args: &[&str]) -> Config {
        match Config::parse(args.iter().copied()) {
            Ok(Command::Serve(cfg)) => cfg,
            other => panic!("{args:?} is not a server command line: {other:?}"),
        }
    }

    /// What the slab keeps per connection, an idle one included: the README
    /// promises about 136 bytes per idle client (plus the kernel's socket).
    /// The bound is for the release build (CI runs `cargo test --release
    /// --lib`); a debug build's mio socket carries 16 bytes more.
    #[test]
    fn a_slot_stays_small() {
        let size = std::mem::size_of::<Option<Slot>>();
        // Measured: 136 bytes on 64-bit targets, 112 on 32-bit ones
        // (armv7, i686: `cargo test --release --lib --target ...`).
        let release = if cfg!(target_pointer_width = "64") {
            136
        } else {
            112
        };
        let bound = if cfg!(debug_assertions) {
            release + 16
        } else {
            release
        };
        println!("a slab entry: {size} bytes");
        assert!(
            size <= bound,
            "a slab entry grew to {size} bytes (bound {bound})"
        );
    }

    /// Every token decodes to the source it was made for, at the edges of
    /// each range too.
    #[test]
    fn tokens_decode_to_what_they_were_made_for() {
        let sources = [
            Source::Client(0),
            Source::Client(MAX_KEYS - 1),
            Source::Signals,
            Source::Listener(Listening::Line(0)),
            Source::Listener(Listening::Line(7)),
            Source::Listener(Listening::Metrics),
            Source::Scrape(0),
            Source::Scrape(MAX_SCRAPES - 1),
        ];
        for source in sources {
            assert_eq!(
                Source::decode(source.token()),
                source,
                "{:?}",
                source.token()
            );
        }
    }

    // Admission, decided without sockets.

    fn limits(max_connections: usize, busy_slots: usize, per_ip: usize) -> Limits {
        Limits {
            max_connections,
            busy_slots,
            per_ip: Some(per_ip),
            fd_room: max_connections,
            output_budget: 1 << 20,
            memory: None,
        }
    }

    fn counts(limits: &Limits) -> Counts {
        Counts {
            clients: 0,
            rejected: 0,
            per_ip: PerAddress::new(limits.per_ip),
        }
    }

    fn tcp(ip: &str) -> Peer {
        Peer::tcp(std::net::SocketAddr::new(ip.parse().expect("ip"), 4000))
    }

    #[test]
    fn classify_serves_rejects_turns_away_and_drops() {
        let l = limits(2, 1, 1);
        let mut c = counts(&l);
        let a = tcp("192.0.2.1");
        assert_eq!(
            c.classify(a, 0, &l, &[], false),
            Admission::Serve { per_ip: true }
        );
        c.clients = 1;
        c.per_ip.count(a.ip().expect("ip"));
        // Its address is at its limit: this one is told so.
        let over = Admission::Reject(ERR_TOO_MANY, Why::TooMany);
        assert_eq!(c.classify(a, 1, &l, &[], false), over);
        // With a PROXY header to come, the proxy's address counts nothing.
        assert_eq!(
            c.classify(a, 1, &l, &[], true),
            Admission::Serve { per_ip: false }
        );
        assert_eq!(
            c.classify(Peer::Unix, 1, &l, &[], false),
            Admission::Serve { per_ip: false }
        );
        // Every busy slot taken: closed at once.
        c.rejected = 1;
        let at_once = Admission::TurnAway(ERR_TOO_MANY, Why::TooMany);
        assert_eq!(c.classify(a, 1, &l, &[], false), at_once);
        c.rejected = 0;
        c.clients = 2;
        let busy = Admission::Reject(ERR_BUSY, Why::Busy);
        assert_eq!(c.classify(tcp("192.0.2.2"), 2, &l, &[], false), busy);
        assert_eq!(
            c.classify(tcp("192.0.2.2"), MAX_KEYS, &l, &[], false),
            Admission::TurnAway(ERR_BUSY, Why::Busy)
        );
        // `--proxy-from`: anyone else is dropped, whatever the counts.
        let from = [Cidr {
            net: "198.51.100.0".parse().expect("ip"),
            len: 24,
        }];
        assert_eq!(c.classify(a, 0, &l, &from, true), Admission::Drop);
        assert_eq!(
            c.classify(Peer::Unix, 0, &l, &from, true),
            busy,
            "a Unix peer is trusted: only the limits apply"
        );
    }

    // The per-address count, given back on each path, once: a real server
    // on loopback, its loop turned by hand (`turn`), its counts read
    // directly. A second release would trip `PerAddress::release`'s
    // debug assertion, so every path here also checks "exactly once".

    use std::io::{Read, Write};
    use std::net::TcpStream;

    const LOCAL: &str = "127.0.0.1";

    fn started(args: &[&str]) -> (Server, std::net::SocketAddr) {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let server = Server::bind(&config(&all), 1024, None, Vec::new()).expect("bind");
        let addr = match server.listeners[0].local_addr().expect("addr") {
            crate::net::LocalAddr::Tcp(a) => a,
            crate::net::LocalAddr::Unix(p) => panic!("not TCP: {}", p.display()),
        };
        (server, addr)
    }

    /// One turn of the loop, as `run` takes it (`Server::turn`), after a
    /// poll of at most 5 ms.
    fn turn(s: &mut Server) {
        let mut events = Events::with_capacity(64);
        s.poll
            .poll(&mut events, Some(Duration::from_millis(5)))
            .expect("poll");
        s.turn(&events, Instant::now(), false);
    }

    fn turn_until(s: &mut Server, what: &str, done: impl Fn(&Server) -> bool) {
        for _ in 0..1000 {
            if done(s) {
                return;
            }
            turn(s);
        }
        panic!("never: {what}");
    }

    fn held(s: &Server, ip: &str) -> usize {
        s.counts.per_ip.held(ip.parse().expect("ip"))
    }

    fn connect(addr: std::net::SocketAddr) -> TcpStream {
        let c = TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c
    }

    /// Reads until EOF, turning the loop meanwhile.
    fn read_to_end(s: &mut Server, c: &mut TcpStream) -> String {
        c.set_nonblocking(true).expect("nonblocking");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..250 {
            turn(s);
            match c.read(&mut buf) {
                Ok(0) => return String::from_utf8_lossy(&got).into_owned(),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        panic!("no EOF");
    }

    #[test]
    fn close_gives_the_address_back_when_closing_starts_not_when_freed() {
        let (mut s, addr) = started(&["--max-connections-per-ip", "1"]);
        let mut a = connect(addr);
        turn_until(&mut s, "a counted", |s| held(s, LOCAL) == 1);
        a.write_all(b"1\nSTOP\n").expect("send");
        let got = read_to_end(&mut s, &mut a);
        assert_eq!(got.lines().count(), 1, "{got:?}");
        // Its connection lingers (our FIN sent, its EOF not yet), holding
        // nothing: a reconnect from the same address is served.
        assert_eq!(s.conns.len(), 1);
        assert_eq!((held(&s, LOCAL), s.counts.clients), (0, 0));
        let _b = connect(addr);
        turn_until(&mut s, "b served", |s| s.counts.clients == 1);
        assert_eq!(held(&s, LOCAL), 1);
        drop(a);
        turn_until(&mut s, "a freed", |s| s.conns.len() == 1);
        assert_eq!(held(&s, LOCAL), 1, "a's close gave nothing back twice");
    }

    #[test]
    fn a_rejection_counts_no_address_and_frees_its_busy_slot() {
        let (mut s, addr) = started(&["--max-connections-per-ip", "1"]);
        let mut a = connect(addr);
        turn_until(&mut s, "a counted", |s| held(s, LOCAL) == 1);
        let mut b = connect(addr);
        turn_until(&mut s, "b rejected", |s| s.counts.rejected == 1);
        assert_eq!(held(&s, LOCAL), 1, "the rejected one is not counted");
        assert_eq!(s.shared.stats.rejected_per_ip, 1);
        let got = read_to_end(&mut s, &mut b);
        assert_eq!(got, "ERR too many connections from your address\n");
        drop(b);
        turn_until(&mut s, "b freed", |s| s.counts.rejected == 0);
        assert_eq!((held(&s, LOCAL), s.counts.clients), (1, 1));
        a.write_all(b"STOP\n").expect("send");
        turn_until(&mut s, "a closing", |s| s.counts.clients == 0);
        assert_eq!(held(&s, LOCAL), 0);
    }

    #[test]
    fn a_proxied_client_is_counted_under_the_address_its_header_names() {
        let (mut s, addr) = started(&["--proxy-protocol", "--max-connections-per-ip", "1"]);
        let named = "192.0.2.9";
        let mut a = connect(addr);
        turn_until(&mut s, "a seated", |s| s.counts.clients == 1);
        assert_eq!(held(&s, LOCAL), 0, "the proxy's address counts nothing");
        a.write_all(b"PROXY TCP4 192.0.2.9 127.0.0.1 5555 80\r\n1\n")
            .expect("send");
        let mut line = [0u8; 64];
        turn_until(&mut s, "a counted", |s| held(s, named) == 1);
        let n = a.read(&mut line).expect("answer");
        assert!(line[..n].ends_with(b"\n"), "an answer");
        // Another connection naming the same client: refused, never counted.
        let mut b = connect(addr);
        b.write_all(b"PROXY TCP4 192.0.2.9 127.0.0.1 5556 80\r\n1\n")
            .expect("send");
        let got = read_to_end(&mut s, &mut b);
        assert_eq!(got, "ERR too many connections from your address\n");
        assert_eq!(s.shared.stats.rejected_per_ip, 1);
        assert_eq!((held(&s, named), held(&s, LOCAL)), (1, 0));
        assert_eq!(s.counts.clients, 1, "b's seat given back as it closed");
        a.write_all(b"STOP\n").expect("send");
        drop((a, b));
        turn_until(&mut s, "all freed", |s| s.conns.is_empty());
        assert_eq!((held(&s, named), s.counts.clients), (0, 0));
        assert_eq!(s.counts.per_ip.addresses(), 0);
    }

    #[test]
    fn an_output_timeout_gives_the_address_back() {
        let (mut s, addr) = started(&["--max-connections-per-ip", "1", "--output-timeout", "5"]);
        let mut a = connect(addr);
        turn_until(&mut s, "a counted", |s| held(s, LOCAL) == 1);
        // Lines, never reading the answers, until the server stops reading.
        a.set_nonblocking(true).expect("nonblocking");
        let lines = b"1\n".repeat(32 * 1024);
        for _ in 0..2000 {
            let _ = a.write(&lines);
            turn(&mut s);
            if s.conns.iter().any(|(_, slot)| slot.conn.is_paused()) {
                break;
            }
        }
        assert!(s.conns.iter().any(|(_, slot)| slot.conn.is_paused()));
        // Five seconds on, none taken: closed at once.
        s.shared.set_now(Instant::now() + Duration::from_secs(6));
        s.fire_timers();
        assert_eq!(s.shared.stats.output_closed, 1);
        assert_eq!((held(&s, LOCAL), s.counts.clients), (0, 0));
        s.free_closed();
        assert!(s.conns.is_empty());
    }

    /// Random connects, lines, STOPs and closes from three addresses,
    /// against a model: a newcomer is served exactly when its address
    /// holds fewer than the limit in clients still served (none over it
    /// is served, none under it refused, a closing one holding nothing),
    /// the counts match the seats after every step, and all are back to
    /// zero at the end. Replay a failure with RANDLINE_TEST_SEED=<seed>.
    #[test]
    fn random_sessions_keep_the_per_address_count_exact() {
        use rand::rngs::StdRng;
        use rand::{RngExt, SeedableRng};
        let seed = std::env::var("RANDLINE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_nanos() as u64
            });
        println!("RANDLINE_TEST_SEED={seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        const LIMIT: usize = 2;
        let (mut s, addr) = started(&["--max-connections-per-ip", "2"]);
        let sources = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
        // Clients the model says are served and open, per source.
        let mut open: Vec<(usize, TcpStream)> = Vec::new();
        // Stopped clients keep their sockets (the server lingers on them).
        let mut stopped = Vec::new();
        let mut refused = 0;
        for step in 0..150 {
            let why = format!("seed {seed}, step {step}");
            match rng.random_range(0..4) {
                // A newcomer: served iff its address is under the limit.
                0 | 1 => {
                    let i = rng.random_range(0..sources.len());
                    let mut c = connect_from(addr, sources[i]);
                    let served = open.iter().filter(|(j, _)| *j == i).count() < LIMIT;
                    let answer = ask(&mut s, &mut c, &why);
                    if served {
                        assert!(answer.parse::<u64>().is_ok(), "{why}: {answer:?}");
                        open.push((i, c));
                    } else {
                        assert_eq!(
                            answer, "ERR too many connections from your address",
                            "{why}"
                        );
                        refused += 1;
                    }
                }
                // A served client asks again.
                2 if !open.is_empty() => {
                    let k = rng.random_range(0..open.len());
                    let answer = ask(&mut s, &mut open[k].1, &why);
                    assert!(answer.parse::<u64>().is_ok(), "{why}: {answer:?}");
                }
                // A served client ends: STOP (read to our EOF, its socket
                // kept, so the server lingers), or it closes its socket.
                _ if !open.is_empty() => {
                    let (i, mut c) = open.swap_remove(rng.random_range(0..open.len()));
                    if rng.random_bool(0.5) {
                        c.write_all(b"STOP\n").expect("send");
                        read_to_end(&mut s, &mut c);
                        stopped.push(c);
                    } else {
                        drop(c);
                        let ip = sources[i];
                        let want = open.iter().filter(|(j, _)| *j == i).count();
                        turn_until(&mut s, &why, |s| held(s, ip) == want);
                    }
                }
                _ => {}
            }
            for (i, ip) in sources.iter().enumerate() {
                let want = open.iter().filter(|(j, _)| *j == i).count();
                let seated = s
                    .conns
                    .iter()
                    .filter(|(_, slot)| slot.seat == Seat::Client { per_ip: true })
                    .filter(|(_, slot)| slot.conn.peer.ip() == ip.parse().ok())
                    .count();
                assert_eq!((held(&s, ip), seated), (want, want), "{why}: {ip}");
            }
        }
        println!("{refused} refused, {} stopped", stopped.len());
        drop((open, stopped));
        turn_until(&mut s, "every client gone", |s| s.conns.is_empty());
        let c = &s.counts;
        assert_eq!((c.clients, c.rejected), (0, 0), "seed {seed}");
        assert_eq!(c.per_ip.addresses(), 0, "seed {seed}");
    }

    /// A client whose connection comes from `source` (a loopback address).
    fn connect_from(addr: std::net::SocketAddr, source: &str) -> TcpStream {
        use socket2::{Domain, Socket, Type};
        let c = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let from = std::net::SocketAddr::new(source.parse().expect("ip"), 0);
        c.bind(&from.into()).expect("bind the source address");
        c.connect(&addr.into()).expect("connect");
        c.into()
    }

    /// Sends a line and reads one line back, turning the loop meanwhile.
    fn ask(s: &mut Server, c: &mut TcpStream, why: &str) -> String {
        c.write_all(b"hi\n").expect("send");
        c.set_nonblocking(true).expect("nonblocking");
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        for _ in 0..250 {
            turn(s);
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{why}: read: {e}"),
            }
            if got.ends_with(b"\n") {
                got.pop();
                return String::from_utf8_lossy(&got).into_owned();
            }
        }
        panic!("{why}: no answer line, got {got:?}");
    }

    /// A start-up failure keeps the system's error: a caller matches its
    /// kind, and the message still names what was being done.
    #[test]
    fn a_taken_port_is_an_addr_in_use_error_naming_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr").to_string();
        let Err(e) = Server::bind(&config(&["--listen", &addr]), 1024, None, Vec::new()) else {
            panic!("bound {addr} twice");
        };
        assert_eq!(e.kind(), Some(io::ErrorKind::AddrInUse));
        assert!(std::error::Error::source(&e).is_some());
        assert!(
            e.to_string()
                .starts_with(&format!("cannot listen on {addr}: ")),
            "{e}"
        );
    }
}
