//! One client: its socket, its place in a line, its unsent answers, and the
//! phase of its life. [`Conn::drive`] does all of a connection's I/O.
//!
//! What is *not* here: accepting, polling, timers and the slab, which are
//! the loop's business ([`crate::server`]); and the meaning of bytes, which
//! is the framer's ([`crate::line`]).
//!
//! ```text
//!            accept                 STOP, line too long, shutdown,    answers
//!   (refused) ──────┐               idle timeout, bad PROXY header    flushed
//!   accept ──► Open ─┴──────────────────────────► Closing{linger} ───────► Lingering ──► closed
//!               │ │ client EOF                                            (shut down write,
//!               │ └──────────────────────────► Closing{no linger} ──► closed  discard input
//!               │                               (answers flushed)             until EOF or 2 s)
//!               └── output timeout, socket error ──────────────────────────────────► closed
//! ```
//!
//! The rules of edge-triggered readiness that this file obeys:
//! - **Readiness is a latch, not a message.** An event sets `readable` or
//!   `writable`; only the kernel's answer clears it (`WouldBlock`, or a
//!   short read, below). An event is a hint: the read or write result is
//!   the truth (spurious events happen).
//! - **Drain until the socket is empty.** No new edge comes for bytes
//!   already in the socket. Empty means `WouldBlock`, or, on Linux, a read
//!   that returned less than asked, unless the client's FIN is known to be
//!   queued (then read on to EOF). A read loop that stops early must
//!   remember why: the per-turn budget ran out ([`Status::Again`]: the loop
//!   calls us again), or output is backed up (we resume ourselves when a
//!   write drains it).
//! - **Write first, wait only for the rest.** Answers are written as soon as
//!   a read batch is framed; only what the kernel refuses waits in `out` for
//!   a writable edge. Nobody re-registers interest, ever.

use crate::answers::Loan;
use crate::line::{Frame, LineFramer};
use crate::net::{Peer, Stream};
use crate::numbers::Numbers;
use crate::per_ip::PerAddress;
use crate::proxy::{Header, HeaderParser};
use crate::stats::Stats;
use log::{debug, info, trace};
use mio::Token;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

/// Output kept for a client that does not read. Past [`OUT_LOW`] we stop
/// reading from it; every read is sized so that its answers fit below
/// `OUT_CAP` (plus one short error line), so this is a hard bound.
pub const OUT_CAP: usize = 64 * 1024;
/// Room above `OUT_CAP` for the one error line that may follow the answers.
const OUT_SLACK: usize = 64;
/// Reading resumes once pending output is at or below this.
pub const OUT_LOW: usize = 16 * 1024;
/// Over `--output-budget`, a client with no answers waiting may still read,
/// but only as many lines as make this many bytes of answers until they
/// are written: a client that reads its answers hardly notices, and one
/// that does not can add at most this much (plus one error line) before
/// it is stopped (see `Conn::gated`).
pub const OVER_BUDGET_BATCH: usize = 4 * 1024;
/// Bytes one connection may read per loop turn before others get a go.
pub const READ_BUDGET: usize = 64 * 1024;
/// Bytes all connections together should read in one loop turn: a turn's
/// length is what every client waits for its next go, so it must not grow
/// with the number of busy clients. Each client's share for a turn is this
/// divided among the turn's events, between [`MIN_READ_BUDGET`] and
/// [`READ_BUDGET`]. 2 MiB of lines is about 40 ms of CPU (release build):
/// with hundreds of clients pushing, an honest one still gets a go every
/// few tenths of a second on a tenth of a core.
pub const TURN_READ_BUDGET: usize = 2 << 20;
/// A client's share of a turn never falls below this: a request still fits.
pub const MIN_READ_BUDGET: usize = 4 * 1024;
/// How long a closing connection may take to flush its answers.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long input is discarded after our FIN before the socket is closed.
pub const LINGER: Duration = Duration::from_secs(2);
/// With `--proxy-protocol`: how long after accept the PROXY header must be
/// complete. A proxy sends it at once; dripping it does not extend this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Sent when a line passes `--max-line`, before a lingering close.
pub const ERR_TOO_LONG: &[u8] = b"ERR line too long\n";
/// Sent to one client too many, before a lingering close.
pub const ERR_BUSY: &[u8] = b"ERR server busy\n";
/// Sent to one client too many from the same address, before a lingering close.
pub const ERR_TOO_MANY: &[u8] = b"ERR too many connections from your address\n";

/// The time limits a connection's deadline depends on (the command line's).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    /// `--idle-timeout`: no activity (a complete line received, answer
    /// bytes taken) for this long closes the client gracefully.
    pub idle: Option<Duration>,
    /// `--output-timeout`: answers waiting and none taken for this long
    /// closes the client at once.
    pub output: Option<Duration>,
}

/// What a connection borrows from the loop while it runs.
pub struct Shared {
    /// Every read lands here; only the framer's small state survives it.
    /// Only `rbuf[..n]` of a read of `n` bytes is ever looked at, so what an
    /// earlier client's read left beyond it is never seen.
    pub rbuf: Box<[u8]>,
    /// The one number source.
    pub numbers: Numbers,
    /// `--max-line`.
    pub max_line: Option<usize>,
    /// The time of this loop turn (one clock read per wake-up).
    pub now: Instant,
    /// The loop's counters; a connection bumps the per-byte ones.
    pub stats: Stats,
    /// Connections per client address; a connection is counted here after
    /// its PROXY header names its client (the loop counts the others).
    pub per_ip: PerAddress,
    /// Answers waiting in every connection's `out`, all together. Kept by
    /// [`Conn::drive`] (what a drive changes) and by the loop (a
    /// connection's `out` enters it at accept and leaves it when freed).
    pub pending_out: usize,
    /// `--output-budget`: past it, a client with answers waiting is not
    /// read from until they drain.
    pub output_budget: usize,
    /// Bytes each connection may read this turn (the loop sets it per turn
    /// from [`TURN_READ_BUDGET`]).
    pub read_budget: usize,
}

impl Shared {
    /// True while pending answers are over `--output-budget`.
    fn over_budget(&self) -> bool {
        self.pending_out > self.output_budget
    }
}

/// Why a connection ended, for the debug log.
#[derive(Debug)]
pub enum Why {
    /// The client sent EOF; its complete lines were answered.
    ClientClosed,
    /// The client sent `STOP`.
    Stop,
    /// A line passed `--max-line`.
    TooLong,
    /// Rejected at accept: `--max-connections` reached.
    Busy,
    /// Rejected: `--max-connections-per-ip` reached for its address.
    TooMany,
    /// Its answers stayed backed up, none taken, for `--output-timeout`.
    OutputTimeout,
    /// The server is shutting down.
    Shutdown,
    /// Nothing received for `--idle-timeout`.
    Idle,
    /// The client did not take its answers (or its FIN) in time.
    Timeout,
    /// `--proxy-protocol`: the connection did not start with a valid header
    /// (the reason is logged when it is found: a `&str` here would make
    /// every connection 8 bytes bigger).
    BadHeader,
    /// `--proxy-protocol`: no complete header within [`HEADER_TIMEOUT`].
    NoHeader,
    /// The socket failed (reset by peer, broken pipe...).
    Failed(io::Error),
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::ClientClosed => f.write_str("client closed"),
            Why::Stop => f.write_str("STOP"),
            Why::TooLong => f.write_str("line too long"),
            Why::Busy => f.write_str("server busy"),
            Why::TooMany => f.write_str("too many connections from its address"),
            Why::OutputTimeout => f.write_str("answers backed up, none taken (output timeout)"),
            Why::Shutdown => f.write_str("shutdown"),
            Why::Idle => f.write_str("idle timeout"),
            Why::Timeout => f.write_str("timed out while closing"),
            Why::BadHeader => f.write_str("no valid PROXY header"),
            Why::NoHeader => f.write_str("no PROXY header in time"),
            Why::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// Where a connection is in its life (see the picture at the top).
#[derive(Debug)]
enum Phase {
    /// Reading lines, answering them. With `--proxy-protocol`, first the
    /// PROXY header (boxed, and inside the phase, so that connections
    /// without one pay nothing: an idle `Conn` must stay small).
    Open { header: Option<Box<HeaderParser>> },
    /// No more lines will be read. Once `out` is flushed: shut down our
    /// write side and linger if the client may still be sending, else close.
    Closing { linger: bool, why: Why },
    /// Our FIN is sent. Input is read and thrown away until the client's
    /// EOF or the deadline, so that closing never answers unread input with
    /// a reset that could destroy answers the client has not read yet.
    Lingering { why: Why },
    /// Finished; the loop frees the slot at the end of the turn.
    Closed,
}

/// What the loop should do with a connection after driving it.
#[derive(Debug)]
pub enum Status {
    /// Nothing more to do until the next event (or deadline).
    Wait,
    /// The read budget ran out before `WouldBlock`: drive it again next turn.
    Again,
    /// Deregister and drop it.
    Closed(Why),
}

/// Which of the loop's limits a connection counts against. One field, not
/// two flags: a connection is never both a client and a rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seat {
    /// Open, counted against `--max-connections`.
    Client,
    /// Turned away, lingering: counted against the busy slots.
    Rejected,
    /// Closing after being a client: counts against nothing (lingering
    /// must not block a newcomer).
    Released,
}

/// One client connection.
pub struct Conn {
    stream: Stream,
    /// Who is on the other end, for logs.
    pub peer: Peer,
    framer: LineFramer,
    /// Answers the kernel has not taken yet. No allocation while empty:
    /// an idle client owns no buffer.
    out: Vec<u8>,
    phase: Phase,
    /// The socket may have input: set by events, cleared by `WouldBlock`.
    readable: bool,
    /// The socket may take output: set by events, cleared by `WouldBlock`.
    writable: bool,
    /// An event said the client's FIN has arrived: read on to EOF, even
    /// after a short read (see `read_lines`).
    read_closed: bool,
    /// In phase `Open`: the client's last activity (a complete line
    /// received, answer bytes taken), for `--idle-timeout` and
    /// `--output-timeout`; with a PROXY header still to come, the accept.
    /// In the closing phases: when to give up on the client.
    clock: Instant,
    /// Already in the loop's "drive again" list.
    pub queued: bool,
    /// What this connection holds of `--max-connections` (or of the loop's
    /// slots for rejections).
    pub seat: Seat,
    /// Counted in [`Shared::per_ip`] under its peer's address.
    pub ip_counted: bool,
    /// The client sent urgent (out-of-band) data: a short read may then
    /// stop at the urgent mark with more queued, so read to `WouldBlock`.
    urgent: bool,
    /// Not read from because its answers backed up (for the trace and the
    /// `paused` counter: one pause, however many turns it lasts).
    paused: bool,
    /// Unique per accepted connection: tells timer entries armed for an
    /// earlier connection in the same slab slot from this one's.
    pub serial: u64,
}

impl Conn {
    /// A fresh client, ready for lines.
    pub fn new(stream: Stream, peer: Peer, serial: u64, now: Instant) -> Self {
        Conn {
            stream,
            peer,
            framer: LineFramer::new(),
            out: Vec::new(),
            phase: Phase::Open { header: None },
            readable: false,
            // A new socket's send buffer is empty: writing will succeed.
            writable: true,
            read_closed: false,
            clock: now,
            queued: false,
            seat: Seat::Client,
            ip_counted: false,
            urgent: false,
            paused: false,
            serial,
        }
    }

    /// A client turned away at accept (`why`: [`Why::Busy`] or
    /// [`Why::TooMany`]): it gets `message`, then a lingering close.
    pub fn refused(
        stream: Stream,
        peer: Peer,
        serial: u64,
        now: Instant,
        message: &[u8],
        why: Why,
    ) -> Self {
        let mut c = Conn::new(stream, peer, serial, now);
        c.out.extend_from_slice(message);
        c.close(why, now + FLUSH_TIMEOUT);
        c.seat = Seat::Rejected;
        c
    }

    /// `--proxy-protocol`: the first bytes must be a PROXY header. Until
    /// it is complete nothing is answered, and the deadline is the header's.
    pub fn expect_proxy_header(&mut self) {
        self.phase = Phase::Open {
            header: Some(Box::new(HeaderParser::new())),
        };
    }

    /// The socket, for (de)registration.
    pub fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// Latches what an event reported. Error and hang-up flags latch both
    /// directions: the next read or write returns the real error.
    pub fn mark_ready(&mut self, event: &mio::event::Event) {
        let failed = event.is_error();
        self.readable |= event.is_readable() || event.is_read_closed() || failed;
        // Sticky: the FIN may come in the same event as the last data.
        self.read_closed |= event.is_read_closed() || failed;
        self.urgent |= event.is_priority();
        self.writable |= event.is_writable() || event.is_write_closed() || failed;
    }

    /// True while the connection is still reading and answering lines.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open { .. })
    }

    /// True while not read from because its answers backed up.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// True while only waiting for the client's EOF (answers all sent).
    pub fn is_lingering(&self) -> bool {
        matches!(self.phase, Phase::Lingering { .. })
    }

    /// True once the connection has finished (its slot is freed at the end
    /// of the loop turn).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Answers waiting in this connection (counted in [`Shared::pending_out`]).
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// When this connection next needs the loop's attention without an event.
    pub fn deadline(&self, t: Timeouts) -> Option<Instant> {
        match self.phase {
            Phase::Open { header: Some(_) } => Some(self.clock + HEADER_TIMEOUT),
            Phase::Open { header: None } => {
                let idle = t.idle.map(|d| self.clock + d);
                let output = t
                    .output
                    .filter(|_| !self.out.is_empty())
                    .map(|d| self.clock + d);
                match (idle, output) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Phase::Closing { .. } | Phase::Lingering { .. } => Some(self.clock),
            Phase::Closed => None,
        }
    }

    /// Its deadline has passed. An idle client is closed gracefully (drive
    /// it next); one that was already closing is given up now: a lingering
    /// one has simply lingered long enough, one still flushing timed out.
    /// A client whose answers are stuck (`--output-timeout`) is closed at
    /// once: it is not reading, so a graceful close would only wait.
    pub fn expire(&mut self, now: Instant, t: Timeouts, stats: &mut Stats) -> Option<Status> {
        match self.phase {
            Phase::Open { header: None }
                if !self.out.is_empty() && t.output.is_some_and(|d| self.clock + d <= now) =>
            {
                stats.output_closed += 1;
                Some(self.finish(Some(Why::OutputTimeout)))
            }
            Phase::Open { ref header } => {
                let why = if header.is_some() {
                    Why::NoHeader
                } else {
                    stats.idle_closed += 1;
                    Why::Idle
                };
                self.close(why, now + LINGER);
                None
            }
            Phase::Lingering { .. } => Some(self.finish(None)),
            Phase::Closing { .. } | Phase::Closed => Some(self.finish(Some(Why::Timeout))),
        }
    }

    /// Stop answering lines (after the ones already answered) and close
    /// gracefully by `by` at the latest.
    pub fn close(&mut self, why: Why, by: Instant) {
        match self.phase {
            Phase::Open { .. } => {
                self.phase = Phase::Closing { linger: true, why };
                self.clock = by;
            }
            // Already closing: only the deadline can come closer.
            _ => self.clock = self.clock.min(by),
        }
    }

    /// Does all the I/O the connection is ready for: read and answer lines
    /// (within the budget), write answers, and move through the closing
    /// phases. Called for every event and for every "again" entry.
    ///
    /// `answers` is the loop's shared answer buffer, lent for this call:
    /// taken by value, it is emptied when this returns, by any path (see
    /// [`crate::answers`]), so no answer framed here can reach another client.
    pub fn drive(&mut self, token: Token, sh: &mut Shared, answers: Loan<'_>) -> Status {
        debug_assert!(
            answers.is_empty(),
            "token {}: the shared answer buffer holds another client's bytes",
            token.0
        );
        // Whatever path the drive takes, the total follows this `out`.
        let before = self.out.len();
        let status = self.drive_io(token, sh, answers);
        sh.pending_out = sh.pending_out - before + self.out.len();
        status
    }

    fn drive_io(&mut self, token: Token, sh: &mut Shared, mut answers: Loan<'_>) -> Status {
        let mut budget = sh.read_budget;
        loop {
            let mut client_done = false;
            let io = match self.phase {
                Phase::Open { .. } => self.read_lines(token, sh, &mut answers, &mut budget),
                Phase::Lingering { .. } => self
                    .discard_input(token, &mut sh.rbuf, &mut sh.stats, &mut budget)
                    .map(|eof| client_done = eof),
                Phase::Closing { .. } | Phase::Closed => Ok(()),
            };
            // On an error, answers framed before it are dropped with the loan.
            let wrote = match io.and_then(|()| self.flush(token, &mut answers, &mut sh.stats)) {
                Ok(wrote) => wrote,
                Err(e) => return self.finish(Some(Why::Failed(e))),
            };
            let gated = self.gated(sh);
            self.note_backpressure(token, gated, &mut sh.stats);
            if wrote > 0 {
                match self.phase {
                    // Answer bytes taken: activity (the client is reading).
                    Phase::Open { header: None } => self.clock = sh.now,
                    // A slow reader that is still reading is not cut off:
                    // the flush deadline counts from its latest progress.
                    // (Shutdown has its own, absolute, grace period.)
                    Phase::Closing { .. } => self.clock = self.clock.max(sh.now + FLUSH_TIMEOUT),
                    _ => {}
                }
            }
            if client_done {
                return self.finish(None);
            }

            if let Phase::Closing { linger, .. } = self.phase
                && self.out.is_empty()
            {
                // Every answer is with the kernel now.
                if !linger {
                    return self.finish(None);
                }
                // Our FIN goes out behind the answers: the client reads
                // them, then EOF. Its own unread bytes we read and drop.
                if let Err(e) = self.stream.shutdown(Shutdown::Write) {
                    return self.finish(Some(Why::Failed(e)));
                }
                trace!("token {}: shut down write side, lingering", token.0);
                if let Phase::Closing { why, .. } =
                    std::mem::replace(&mut self.phase, Phase::Closed)
                {
                    self.phase = Phase::Lingering { why };
                }
                self.clock = self.clock.min(sh.now + LINGER);
            }

            // Go round again only if reading stopped for backpressure and
            // the write just made room: no event would come to resume it.
            if !(self.reads() && self.readable && budget > 0 && !self.gated(sh)) {
                break;
            }
        }
        if self.reads() && self.readable && budget == 0 {
            sh.stats.yields += 1;
            trace!("token {}: read budget used up, again next turn", token.0);
            Status::Again
        } else {
            Status::Wait
        }
    }

    /// Gives up the connection now; a failure overrides the planned reason.
    pub fn finish(&mut self, failure: Option<Why>) -> Status {
        let planned = match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Closing { why, .. } | Phase::Lingering { why } => why,
            Phase::Open { .. } | Phase::Closed => Why::ClientClosed,
        };
        Status::Closed(failure.unwrap_or(planned))
    }

    /// Backpressure: not read from while its answers back up, past
    /// [`OUT_LOW`] of its own, or at all while every client's together are
    /// over `--output-budget`. Either way `out` is not empty, so the socket
    /// refused a write and a writable event will come when the client
    /// reads: that event resumes it, and no list of paused clients is kept.
    fn gated(&self, sh: &Shared) -> bool {
        self.out.len() > OUT_LOW || (!self.out.is_empty() && sh.over_budget())
    }

    /// Traces and counts backpressure pauses; the rule itself is
    /// [`Conn::gated`], checked in `read_lines`.
    fn note_backpressure(&mut self, token: Token, backed_up: bool, stats: &mut Stats) {
        if !self.is_open() {
            // Closing: no more reading either way.
            self.paused = false;
            return;
        }
        if backed_up == self.paused {
            return;
        }
        self.paused = backed_up;
        if backed_up {
            stats.paused += 1;
            trace!(
                "token {}: paused reading: {} bytes of answers pending",
                token.0,
                self.out.len()
            );
        } else {
            trace!(
                "token {}: resumed reading: {} bytes of answers pending",
                token.0,
                self.out.len()
            );
        }
    }

    /// In a phase that reads from the socket.
    fn reads(&self) -> bool {
        matches!(self.phase, Phase::Open { .. } | Phase::Lingering { .. })
    }

    /// Reads until `WouldBlock`, EOF, the budget, or backpressure; frames
    /// what it reads and appends one answer per complete line.
    fn read_lines(
        &mut self,
        token: Token,
        sh: &mut Shared,
        answers: &mut Vec<u8>,
        budget: &mut usize,
    ) -> io::Result<()> {
        let max_answer = sh.numbers.max_len();
        while self.readable && *budget > 0 {
            let over_budget = !self.out.is_empty() && sh.over_budget();
            // Answers go straight to the lent answer buffer, unless older
            // ones are still waiting: then behind them, to keep the order.
            let out = if self.out.is_empty() {
                &mut *answers
            } else {
                &mut self.out
            };
            if out.len() > OUT_LOW || over_budget {
                // Write these before reading more (`drive` comes back here
                // if the kernel takes them; see `gated` if not).
                return Ok(());
            }
            if !out.is_empty() && out.capacity() < OUT_CAP + OUT_SLACK {
                // Queueing behind a slow reader's answers: size its buffer
                // for the cap once, so that doubling never overshoots it.
                out.reserve_exact(OUT_CAP + OUT_SLACK - out.len());
            }
            // Every byte read could end a line: read no more than the
            // answers that still fit under OUT_CAP; over the output budget,
            // no more than OVER_BUDGET_BATCH of answers (only a client with
            // none waiting gets here then).
            let room = if sh.over_budget() {
                OVER_BUDGET_BATCH.saturating_sub(out.len())
            } else {
                OUT_CAP - out.len()
            };
            let want = (room / max_answer).min(sh.rbuf.len()).min(*budget);
            if want == 0 {
                // This batch's answers fill the over-budget share: write
                // them first (`drive` comes back if the kernel takes them).
                // A read of 0 bytes would look like EOF.
                return Ok(());
            }
            sh.stats.reads += 1;
            let n = match self.stream.read(&mut sh.rbuf[..want]) {
                Ok(0) => {
                    // The client is done sending; it still gets every
                    // answer owed. Nothing more can arrive, so no linger.
                    trace!("token {}: read EOF", token.0);
                    self.phase = Phase::Closing {
                        linger: false,
                        why: Why::ClientClosed,
                    };
                    self.clock = sh.now + FLUSH_TIMEOUT;
                    return Ok(());
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sh.stats.wouldblock += 1;
                    trace!("token {}: read WouldBlock", token.0);
                    self.readable = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            *budget -= n;
            sh.stats.bytes_in += n as u64;
            // A short read emptied the socket: on Linux (epoll) a read that
            // returns less than asked took everything queued, and any byte
            // that arrives later raises a new edge. So skip the read that
            // would only say WouldBlock: one syscall less per request
            // (tokio does the same, tokio#4840; mio promises nothing, mio#1611).
            // Except when the FIN is already known: then read on to EOF, or
            // a FIN that came with the last data would never be seen.
            if n < want && !self.read_closed && !self.urgent {
                self.readable = false;
                trace!("token {}: read {n} bytes (short: socket drained)", token.0);
            } else {
                trace!("token {}: read {n} bytes", token.0);
            }

            let lines_before = sh.stats.lines;
            let mut input = &sh.rbuf[..n];
            // --proxy-protocol: the header comes first (and may take several
            // reads); whatever follows it in `input` is lines.
            let mut outcome = None; // None: no header, or all of `input` was header
            if let Phase::Open {
                header: Some(parser),
            } = &mut self.phase
            {
                let used;
                (used, outcome) = parser.advance(input);
                input = &input[used..];
            }
            match outcome {
                None => {}
                Some(Ok(header)) => {
                    self.phase = Phase::Open { header: None };
                    self.clock = sh.now;
                    // Counted under the client the header names; a header
                    // that names none (LOCAL, UNKNOWN, UDP or Unix) is the
                    // proxy speaking for itself: not counted, as a Unix
                    // socket's clients are not.
                    if let Header::Client(addr) = header {
                        if !sh.per_ip.admit(addr.ip()) {
                            sh.stats.rejected_per_ip += 1;
                            debug!(
                                "refused {addr} (proxied by {}): too many connections from its address",
                                self.peer
                            );
                            out.extend_from_slice(ERR_TOO_MANY);
                            self.close(Why::TooMany, sh.now + FLUSH_TIMEOUT);
                            return Ok(());
                        }
                        self.ip_counted = true;
                    }
                    on_header(token, &mut self.peer, header);
                }
                Some(Err(why)) => {
                    // Never answered: whatever this is, it is not ours.
                    debug!("{}: PROXY header refused: {why}", self.peer);
                    self.phase = Phase::Closing {
                        linger: true,
                        why: Why::BadHeader,
                    };
                    self.clock = sh.now + FLUSH_TIMEOUT;
                    return Ok(());
                }
            }
            let mut end = None;
            while !input.is_empty() {
                let (used, frame) = self.framer.advance(input, sh.max_line);
                input = &input[used..];
                match frame {
                    None => {}
                    Some(Frame::Line) => {
                        sh.numbers.write_next(out);
                        sh.stats.lines += 1;
                    }
                    // Bytes after STOP are not lines: the rest of this
                    // read is dropped, later input discarded while lingering.
                    Some(Frame::Stop) => {
                        end = Some(Why::Stop);
                        break;
                    }
                    Some(Frame::TooLong) => {
                        out.extend_from_slice(ERR_TOO_LONG);
                        end = Some(Why::TooLong);
                        break;
                    }
                }
            }
            if sh.stats.lines > lines_before {
                // A complete line is activity; bytes that end no line are
                // not, so a client dripping them cannot hold its slot.
                self.clock = sh.now;
            }
            trace!(
                "token {}: answered {}{}",
                token.0,
                plural(sh.stats.lines - lines_before, "line"),
                match end {
                    Some(Why::Stop) => ", then STOP",
                    Some(_) => ", then a line too long: ERR",
                    None => "",
                }
            );
            if let Some(why) = end {
                self.close(why, sh.now + FLUSH_TIMEOUT);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Lingering: reads and drops input until EOF, `WouldBlock` or the
    /// budget. Returns true at EOF.
    fn discard_input(
        &mut self,
        token: Token,
        rbuf: &mut [u8],
        stats: &mut Stats,
        budget: &mut usize,
    ) -> io::Result<bool> {
        while self.readable && *budget > 0 {
            stats.reads += 1;
            let want = rbuf.len().min(*budget);
            match self.stream.read(&mut rbuf[..want]) {
                Ok(0) => {
                    trace!("token {}: read EOF while lingering", token.0);
                    return Ok(true);
                }
                Ok(n) => {
                    stats.bytes_in += n as u64;
                    trace!("token {}: read {n} bytes, discarded (lingering)", token.0);
                    *budget = budget.saturating_sub(n);
                    // The short-read rule, as in `read_lines`.
                    if n < want && !self.read_closed && !self.urgent {
                        self.readable = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    stats.wouldblock += 1;
                    trace!("token {}: read WouldBlock while lingering", token.0);
                    self.readable = false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Writes pending answers until done or `WouldBlock`; returns how many
    /// bytes the kernel took. Leaves `answers` empty (the next read batch of
    /// this drive frames into it again); what the kernel did not take is
    /// kept in `out`.
    fn flush(
        &mut self,
        token: Token,
        answers: &mut Vec<u8>,
        stats: &mut Stats,
    ) -> io::Result<usize> {
        if !answers.is_empty() {
            let written = write_some(token, &mut self.stream, answers, &mut self.writable, stats);
            if let Ok(n) = written {
                self.out.extend_from_slice(&answers[n..]);
            }
            answers.clear();
            written
        } else if !self.out.is_empty() {
            let n = write_some(
                token,
                &mut self.stream,
                &self.out,
                &mut self.writable,
                stats,
            )?;
            self.out.drain(..n);
            if self.out.is_empty() {
                // Give the memory back: an idle client owns no buffer.
                self.out = Vec::new();
            }
            Ok(n)
        } else {
            Ok(0)
        }
    }
}

/// A complete PROXY header: the client it names is who we serve.
fn on_header(token: Token, peer: &mut Peer, header: Header) {
    trace!("token {}: PROXY header read", token.0);
    match header {
        Header::Client(addr) => {
            let proxy = std::mem::replace(peer, Peer::Tcp(addr));
            info!("serving {addr} (proxied by {proxy})");
        }
        // Health checks (LOCAL) are frequent: not worth an info line.
        Header::Local => {
            debug!("serving {peer} (its PROXY header names no client: LOCAL or UNKNOWN)")
        }
    }
}

/// `1 line`, `2 lines`: for the trace, which is read like a story.
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Writes as much of `buf` as the socket takes; returns how much it took.
fn write_some(
    token: Token,
    stream: &mut Stream,
    buf: &[u8],
    writable: &mut bool,
    stats: &mut Stats,
) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() && *writable {
        stats.writes += 1;
        match stream.write(&buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                stats.bytes_out += n as u64;
                trace!("token {}: wrote {n} of {} bytes", token.0, buf.len() - done);
                done += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                stats.wouldblock += 1;
                trace!(
                    "token {}: write WouldBlock, {} bytes wait for a writable event",
                    token.0,
                    buf.len() - done
                );
                *writable = false;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-client memory budget: the README promises a few hundred
    /// bytes per idle client, and this struct is most of it.
    #[test]
    fn an_idle_connection_stays_small() {
        let size = std::mem::size_of::<Conn>();
        println!("size_of::<Conn>() = {size}");
        assert!(size <= 160, "Conn grew to {size} bytes");
    }
}
