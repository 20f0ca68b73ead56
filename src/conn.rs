//! One client: its socket, its place in a line, its unsent answers, and the
//! phase of its life, each phase with its own deadline. Every read and
//! write on a client socket happens in this file: [`Conn::drive`] for a
//! served client, [`turn_away`] for one refused with no slot to linger in.
//!
//! What is *not* here: accepting, polling, the timer heap, the slab and
//! the limits counted across clients, which are the loop's business
//! ([`crate::server`]: after a PROXY header a connection only asks, with
//! the address it names, and the loop's [`Admit`] counts it or refuses);
//! and the meaning of bytes, which is the framer's ([`crate::line`]) and
//! the PROXY parser's ([`crate::proxy`]).
//!
//! ```text
//!  accept ──┬──────────────────────► Open ── STOP, line too long, idle timeout, shutdown ──┐
//!           │                         ▲ │                                                  │
//!           │   --proxy-protocol      │ └── client EOF ──► Closing (no linger) ──► closed   │
//!           ├──► Header ── admitted ──┘                     (answers flushed)              ▼
//!           │      └── bad or late header, refused per address, shutdown ────► Closing (linger)
//!           └── refused: its ERR line ───────────────────────────────────────►       │
//!                                                                       answers flushed,
//!                                                                       our FIN sent
//!                                                                                    ▼
//!                                       closed ◄── client EOF, or 2 s ── Lingering (input
//!                                                                        read, discarded)
//!  Any phase ──► closed at once: a socket error; Open: the output timeout; Closing: no
//!  progress for FLUSH_STALL_TIMEOUT (or shutdown's grace period over).
//! ```
//!
//! The rules of edge-triggered readiness that this file obeys:
//! - **Readiness is a latch, not a message.** An event sets `readable` or
//!   `writable` (`Readiness`); only the kernel's answer clears it
//!   (`WouldBlock`, or a short read, below). An event is a hint: the read
//!   or write result is the truth (spurious events happen).
//! - **Drain until the socket is empty.** No new edge comes for bytes
//!   already in the socket. Empty means `WouldBlock`, or, on Linux and for
//!   TCP only, a read that returned less than asked, unless the client's
//!   FIN is known to be queued (then read on to EOF); a Unix socket's read
//!   also stops short at passed descriptors. One function reads
//!   (`Socket::read_chunk`), so the rule is stated once. A read loop that
//!   stops early must remember why: the per-turn budget ran out
//!   ([`Status::Again`]: the loop calls us again next turn), or output is
//!   backed up (we resume ourselves when a write drains it).
//! - **Write first, wait only for the rest.** Answers are written as soon as
//!   a read batch is framed; only what the kernel refuses waits in `out` for
//!   a writable edge. Nobody re-registers interest, ever.

use crate::answers::Loan;
use crate::line::{Frame, LineFramer};
use crate::net::{Peer, Stream};
use crate::numbers::Numbers;
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
/// Per turn in fact: the loop reads a client in at most one drive per turn
/// (its event, or its place on the again-list taken at the turn's start);
/// drives for a deadline or shutdown read nothing (see [`Conn::drive`]).
pub const READ_BUDGET: usize = 64 * 1024;
/// Bytes all connections together should read in one loop turn: a turn's
/// length is what every client waits for its next go, so it must not grow
/// with the number of busy clients. Each client's share for a turn is this
/// divided among the clients the turn may drive (its events, plus the
/// again-list taken at its start), between [`MIN_READ_BUDGET`] and
/// [`READ_BUDGET`]. So a turn reads at most this while it drives at most
/// 512 clients (this / `MIN_READ_BUDGET`); past that, `MIN_READ_BUDGET`
/// each: driven × 4 KiB, with driven at most the poll's 1,024 events plus
/// one again-list entry per connection of the turn before (tests/bounds.rs
/// holds both bounds). 2 MiB of lines is about 40 ms of CPU (release build): with
/// hundreds of clients pushing, an honest one still gets a go every few
/// tenths of a second on a tenth of a core.
pub const TURN_READ_BUDGET: usize = 2 << 20;
/// A client's share of a turn never falls below this: a request still fits
/// (which is why a turn of more than 512 clients reads more than
/// [`TURN_READ_BUDGET`]).
pub const MIN_READ_BUDGET: usize = 4 * 1024;
/// A closing connection is given up when its client takes none of its
/// answers for this long. A stall limit, not a flush limit: every write
/// that makes progress moves the deadline to this long after it, so a slow
/// reader that is still reading is never cut off (shutdown has its own,
/// absolute, grace period).
pub const FLUSH_STALL_TIMEOUT: Duration = Duration::from_secs(10);
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

/// The time limits a connection's deadlines are computed from (the
/// command line's).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    /// `--idle-timeout`: no activity (a complete line received, answer
    /// bytes taken) for this long closes the client gracefully.
    pub idle: Option<Duration>,
    /// `--output-timeout`: answers waiting and none taken for this long
    /// closes the client at once.
    pub output: Option<Duration>,
}

/// Every read lands in a buffer this big (the loop's one, in [`Shared`]).
const READ_BUF: usize = 16 * 1024;

/// The command line's settings every connection follows, fixed at start.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// `--max-line`.
    pub max_line: Option<usize>,
    /// `--idle-timeout` and `--output-timeout`.
    pub timeouts: Timeouts,
    /// `--output-budget`: past it, a client with answers waiting is not
    /// read from until they drain.
    pub output_budget: usize,
}

/// What a connection borrows from the loop while it runs, in four parts:
/// the turn's inputs, which the loop sets and connections only read; the
/// settings and the number source, set at start; scratch space, which
/// holds nothing from one use to the next; and counters, which both
/// sides bump. The one total both sides depend on, the answers waiting,
/// is written by connections alone and read by the loop through a method.
pub struct Shared {
    // The turn's inputs (the loop writes them, through methods).
    /// The time of this loop turn (one clock read per wake-up). Every
    /// deadline is computed from it, never from the system clock, so a
    /// test can drive a connection through time it sets itself. Set with
    /// [`Shared::set_now`], which keeps `active` in step; read with
    /// [`Shared::now`].
    now: Instant,
    /// The deadlines of a client active at `now`: computed once per turn,
    /// copied into every connection active in it (recomputing them per
    /// line cost instructions per line: docs/performance.md).
    active: Active,
    /// Bytes each connection may read this turn, in its one reading drive
    /// of the turn (the loop sets it per turn from [`TURN_READ_BUDGET`],
    /// with [`Shared::set_read_budget`]).
    read_budget: usize,

    // Fixed at start.
    rules: Rules,
    /// The one number source.
    numbers: Numbers,

    // Scratch space.
    /// Every read lands here; only the framer's small state survives it.
    /// Only `rbuf[..n]` of a read of `n` bytes is ever looked at, so what an
    /// earlier client's read left beyond it is never seen.
    pub rbuf: Box<[u8]>,

    // Counters.
    /// The loop's counters; a connection bumps the per-byte ones.
    pub stats: Stats,
    /// Answers waiting in every connection's `out`, all together. Written
    /// in this file only: by [`Conn::drive`] (what a drive changes) and by
    /// [`Conn::refused`] (the one line a refusal starts with); a closed
    /// connection's `out` is emptied before its drive returns. The loop
    /// reads it ([`Shared::pending_out`]).
    pending_out: usize,
}

impl Shared {
    /// What connections will borrow, at `now`, before the first turn.
    pub fn new(rules: Rules, numbers: Numbers, now: Instant) -> Shared {
        Shared {
            now,
            active: Active::at(now, rules.timeouts),
            read_budget: READ_BUDGET,
            rules,
            numbers,
            rbuf: vec![0; READ_BUF].into_boxed_slice(),
            stats: Stats::default(),
            pending_out: 0,
        }
    }

    /// A new turn: the time is `now`.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.active = Active::at(now, self.rules.timeouts);
    }

    /// The time of this loop turn.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// This turn's read budget for each connection driven.
    pub fn set_read_budget(&mut self, bytes: usize) {
        self.read_budget = bytes;
    }

    /// Bytes of answers waiting in the server now, all clients together.
    pub fn pending_out(&self) -> usize {
        self.pending_out
    }

    /// True while pending answers are over `--output-budget`.
    fn over_budget(&self) -> bool {
        self.pending_out > self.rules.output_budget
    }
}

/// Why a connection ends, for the debug log: a plain reason, one byte,
/// kept in the closing phases (a socket's failure is not planned, so it is
/// never kept: it ends the connection at once, see [`Status::Failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Closing, it took none of its answers for [`FLUSH_STALL_TIMEOUT`]
    /// (or, at shutdown, did not take them all within the grace period).
    /// A lingering client whose EOF does not come is closed with the
    /// reason its close was planned for, not this one.
    Timeout,
    /// `--proxy-protocol`: the connection did not start with a valid header
    /// (the reason is logged when it is found: a `&str` here would make
    /// every connection 8 bytes bigger).
    BadHeader,
    /// `--proxy-protocol`: no complete header within [`HEADER_TIMEOUT`].
    NoHeader,
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
        }
    }
}

/// Where a connection is in its life (see the picture at the top). Each
/// phase holds the deadline that belongs to it, and nothing else does.
#[derive(Debug)]
enum Phase {
    /// `--proxy-protocol`: the PROXY header comes first, complete `by`
    /// then. Boxed, so that connections without one pay nothing: an idle
    /// `Conn` must stay small.
    Header {
        parser: Box<HeaderParser>,
        by: Instant,
    },
    /// Reading lines, answering them. Its deadlines count from the last
    /// activity (a complete line received, answer bytes taken).
    Open(Active),
    /// No more lines will be read. Once `out` is flushed: close, if the
    /// close came from the client's own EOF (`Why::ClientClosed`: nothing
    /// more can arrive); else shut down our write side and linger, since
    /// the client may still be sending. Given up `by` then (moved later by
    /// every write that makes progress, see [`FLUSH_STALL_TIMEOUT`]).
    Closing { why: Why, by: Instant },
    /// Our FIN is sent. Input is read and thrown away until the client's
    /// EOF or `until`, so that closing never answers unread input with a
    /// reset that could destroy answers the client has not read yet.
    Lingering { why: Why, until: Instant },
    /// Finished; the loop frees the slot at the end of the turn.
    Closed,
}

/// The deadlines of an open client, counted from its last activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Active {
    /// `--idle-timeout`.
    idle_by: Option<Instant>,
    /// `--output-timeout`: due only while answers wait in `out`.
    stuck_by: Option<Instant>,
}

impl Active {
    /// The deadlines of a client active at `now`.
    fn at(now: Instant, t: Timeouts) -> Active {
        Active {
            idle_by: t.idle.map(|d| now + d),
            stuck_by: t.output.map(|d| now + d),
        }
    }
}

/// How a connection asks the loop to admit the client its PROXY header
/// names: true if it may be served (the loop counted it under that
/// address, in the connection's seat), false if that address is at
/// `--max-connections-per-ip`. The loop decides and counts; the
/// connection only asks, once, and never counts anything itself.
pub type Admit<'a> = &'a mut dyn FnMut(std::net::IpAddr) -> bool;

/// What brings the loop to a connection.
#[derive(Debug)]
pub enum Wake {
    /// An event for its socket, or its turn on the "again" list.
    Ready,
    /// Its deadline has passed.
    Deadline,
    /// The server is shutting down: close gracefully, by this time at the
    /// latest.
    Shutdown(Instant),
}

/// What the loop should do with a connection after driving it.
#[derive(Debug)]
pub enum Status {
    /// Nothing more to do until the next event (or deadline).
    Wait,
    /// The socket may still hold input (the read budget ran out before
    /// `WouldBlock`, or the drive had none): drive it again next turn.
    Again,
    /// Deregister and drop it.
    Closed(Why),
    /// The socket failed (reset by peer, broken pipe, a dead peer...):
    /// deregister and drop it.
    Failed(io::Error),
}

/// What the latest events said the socket can do. Each flag is set by an
/// event and cleared only by the kernel's answer (see the rules above).
#[derive(Debug, Clone, Copy, Default)]
struct Readiness {
    /// It may have input.
    readable: bool,
    /// It may take output.
    writable: bool,
    /// The client's FIN has arrived: read on to EOF, even after a short read.
    read_closed: bool,
    /// The client sent urgent (out-of-band) data: a short read may then
    /// stop at the urgent mark with more queued, so read to `WouldBlock`.
    urgent: bool,
}

/// A client socket and what is known of its readiness: every read and
/// write of a served client goes through here.
struct Socket {
    stream: Stream,
    ready: Readiness,
}

/// What one read returned.
enum Chunk {
    /// `n` bytes; `drained` if the read was short on TCP, so the socket is
    /// empty (the readable latch is cleared already).
    Data { n: usize, drained: bool },
    /// The client will send nothing more.
    Eof,
    /// `WouldBlock`: nothing queued (the latch is cleared already).
    Empty,
}

impl Socket {
    /// One read into `buf`, obeying the rules of edge-triggered reading.
    fn read_chunk(&mut self, buf: &mut [u8], stats: &mut Stats) -> io::Result<Chunk> {
        loop {
            stats.reads += 1;
            return match self.stream.read(buf) {
                Ok(0) => Ok(Chunk::Eof),
                Ok(n) => {
                    stats.bytes_in += n as u64;
                    // A short read emptied a TCP socket: on Linux (epoll) a
                    // read that returns less than asked took everything
                    // queued, and any byte that arrives later raises a new
                    // edge. So skip the read that would only say
                    // WouldBlock: one syscall less per request (tokio does
                    // the same, tokio#4840; mio promises nothing,
                    // mio#1611). Except when the FIN is already known: then
                    // read on to EOF, or a FIN that came with the last data
                    // would never be seen; and after urgent data. Not on a
                    // Unix socket: there a read also ends at a message that
                    // passed descriptors (SCM_RIGHTS; Linux's
                    // `unix_stream_read_generic`), with more queued behind
                    // it, so only `WouldBlock` says it is empty. (Plain
                    // read(2) takes no descriptors: the kernel closes the
                    // ones passed, so none is kept.)
                    let drained = n < buf.len()
                        && matches!(self.stream, Stream::Tcp(_))
                        && !self.ready.read_closed
                        && !self.ready.urgent;
                    self.ready.readable &= !drained;
                    Ok(Chunk::Data { n, drained })
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    stats.wouldblock += 1;
                    self.ready.readable = false;
                    Ok(Chunk::Empty)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Writes as much of `buf` as the socket takes; returns how much it took.
    fn write_some(&mut self, token: Token, buf: &[u8], stats: &mut Stats) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() && self.ready.writable {
            stats.writes += 1;
            match self.stream.write(&buf[done..]) {
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
                    self.ready.writable = false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

/// One client connection.
pub struct Conn {
    socket: Socket,
    /// Who is on the other end, for logs (the client a PROXY header names,
    /// once read).
    pub peer: Peer,
    framer: LineFramer,
    /// Answers the kernel has not taken yet. No allocation while empty:
    /// an idle client owns no buffer.
    out: Vec<u8>,
    phase: Phase,
    /// Not read from because its answers backed up (for the trace and the
    /// `paused` counter: one pause, however many turns it lasts).
    paused: bool,
}

impl Conn {
    /// A fresh client at `sh.now`, ready for lines (or, with
    /// `proxy_header`, for its PROXY header first).
    pub fn new(stream: Stream, peer: Peer, proxy_header: bool, sh: &Shared) -> Self {
        let phase = if proxy_header {
            Phase::Header {
                parser: Box::new(HeaderParser::new()),
                by: sh.now + HEADER_TIMEOUT,
            }
        } else {
            Phase::Open(sh.active)
        };
        Conn {
            socket: Socket {
                stream,
                // A new socket's send buffer is empty: writing will succeed.
                ready: Readiness {
                    writable: true,
                    ..Readiness::default()
                },
            },
            peer,
            framer: LineFramer::new(),
            out: Vec::new(),
            phase,
            paused: false,
        }
    }

    /// A client turned away at accept (`why`: [`Why::Busy`] or
    /// [`Why::TooMany`]): it gets `message` on its first drive, then a
    /// lingering close. The message joins [`Shared::pending_out`] here.
    pub fn refused(stream: Stream, peer: Peer, message: &[u8], why: Why, sh: &mut Shared) -> Self {
        let mut c = Conn::new(stream, peer, false, sh);
        c.out.extend_from_slice(message);
        sh.pending_out += c.out.len();
        c.close(why, sh.now + FLUSH_STALL_TIMEOUT);
        c
    }

    /// The socket, for (de)registration.
    pub fn stream(&mut self) -> &mut Stream {
        &mut self.socket.stream
    }

    /// Latches what an event reported. Error and hang-up flags latch both
    /// directions: the next read or write returns the real error.
    pub fn mark_ready(&mut self, event: &mio::event::Event) {
        let failed = event.is_error();
        let ready = &mut self.socket.ready;
        ready.readable |= event.is_readable() || event.is_read_closed() || failed;
        // Sticky: the FIN may come in the same event as the last data.
        ready.read_closed |= event.is_read_closed() || failed;
        ready.urgent |= event.is_priority();
        ready.writable |= event.is_writable() || event.is_write_closed() || failed;
    }

    /// True while the connection is still reading and answering lines
    /// (its PROXY header included).
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Header { .. } | Phase::Open(_))
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

    /// When this connection next needs the loop's attention without an
    /// event: its phase's deadline.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Header { by, .. } => Some(by),
            Phase::Open(Active { idle_by, stuck_by }) => {
                let stuck_by = stuck_by.filter(|_| !self.out.is_empty());
                match (idle_by, stuck_by) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Phase::Closing { by, .. } => Some(by),
            Phase::Lingering { until, .. } => Some(until),
            Phase::Closed => None,
        }
    }

    /// Runs the connection after `wake`: does all the I/O it is ready for
    /// (read and answer lines within the budget, write answers, move
    /// through the closing phases) and says what the loop should do next.
    /// Its next deadline is [`Conn::deadline`]'s answer after this returns.
    ///
    /// `answers` is the loop's shared answer buffer, lent for this call:
    /// taken by value, it is emptied when this returns, by any path (see
    /// [`crate::answers`]), so no answer framed here can reach another client.
    /// `admit` is asked about the client a PROXY header names, if one is
    /// read in this drive.
    pub fn drive(
        &mut self,
        token: Token,
        wake: Wake,
        sh: &mut Shared,
        answers: Loan<'_>,
        admit: Admit<'_>,
    ) -> Status {
        debug_assert!(
            answers.is_empty(),
            "token {}: the shared answer buffer holds another client's bytes",
            token.0
        );
        // Whatever path the drive takes, the total follows this `out`.
        let before = self.out.len();
        // Only a drive for readiness reads. A deadline or shutdown may come
        // in the same turn as the client's event or its place on the
        // again-list: its drive only closes (and writes), and input still
        // to discard waits for the again-list, so a client reads at most
        // once per turn.
        let status = match wake {
            Wake::Ready => self.drive_io(token, sh, answers, sh.read_budget, admit),
            Wake::Deadline => match self.expire(sh) {
                Some(status) => status,
                None => {
                    debug!("deadline for {} (token {})", self.peer, token.0);
                    self.drive_io(token, sh, answers, 0, admit)
                }
            },
            Wake::Shutdown(by) => {
                self.close(Why::Shutdown, by);
                self.drive_io(token, sh, answers, 0, admit)
            }
        };
        if let Status::Closed(_) | Status::Failed(_) = status {
            // Nobody will take these answers now.
            self.out = Vec::new();
        }
        debug_assert!(sh.pending_out >= before, "pending_out went below zero");
        sh.pending_out = sh.pending_out - before + self.out.len();
        status
    }

    /// Its deadline has passed. An idle client, or one whose PROXY header
    /// is late, is closed gracefully (`None`: drive it next); one that was
    /// already closing is given up now: a lingering one has simply lingered
    /// long enough, one still flushing stalled. A client whose answers are
    /// stuck (`--output-timeout`) is closed at once: it is not reading, so
    /// a graceful close would only wait.
    fn expire(&mut self, sh: &mut Shared) -> Option<Status> {
        let now = sh.now;
        match self.phase {
            Phase::Header { .. } => {
                self.close(Why::NoHeader, now + LINGER);
                None
            }
            Phase::Open(Active { stuck_by, .. })
                if !self.out.is_empty() && stuck_by.is_some_and(|at| at <= now) =>
            {
                sh.stats.output_closed += 1;
                Some(self.finish(Some(Why::OutputTimeout)))
            }
            Phase::Open(_) => {
                sh.stats.idle_closed += 1;
                self.close(Why::Idle, now + LINGER);
                None
            }
            Phase::Lingering { .. } => Some(self.finish(None)),
            Phase::Closing { .. } | Phase::Closed => Some(self.finish(Some(Why::Timeout))),
        }
    }

    /// Stop answering lines (after the ones already answered) and close
    /// gracefully by `by` at the latest.
    fn close(&mut self, why: Why, by: Instant) {
        match &mut self.phase {
            Phase::Header { .. } | Phase::Open(_) => {
                self.phase = Phase::Closing { why, by };
            }
            // Already closing: only the deadline can come closer.
            Phase::Closing { by: at, .. } | Phase::Lingering { until: at, .. } => {
                *at = (*at).min(by);
            }
            Phase::Closed => {}
        }
    }

    /// Gives up the connection now, for the reason planned when it began
    /// to close, or for `instead`.
    fn finish(&mut self, instead: Option<Why>) -> Status {
        let planned = match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Closing { why, .. } | Phase::Lingering { why, .. } => why,
            Phase::Header { .. } | Phase::Open(_) | Phase::Closed => Why::ClientClosed,
        };
        Status::Closed(instead.unwrap_or(planned))
    }

    /// The socket failed: the connection ends now.
    fn fail(&mut self, e: io::Error) -> Status {
        self.phase = Phase::Closed;
        Status::Failed(e)
    }

    /// Reads (at most `budget` bytes), answers and writes until nothing
    /// more can be done now.
    fn drive_io(
        &mut self,
        token: Token,
        sh: &mut Shared,
        mut answers: Loan<'_>,
        mut budget: usize,
        admit: Admit<'_>,
    ) -> Status {
        let had_budget = budget > 0;
        loop {
            let mut client_done = false;
            let io = match self.phase {
                Phase::Header { .. } | Phase::Open(_) => {
                    self.read_lines(token, sh, &mut answers, &mut budget, &mut *admit)
                }
                Phase::Lingering { .. } => self
                    .discard_input(token, sh, &mut budget)
                    .map(|eof| client_done = eof),
                Phase::Closing { .. } | Phase::Closed => Ok(()),
            };
            // On an error, answers framed before it are dropped with the loan.
            let wrote = match io.and_then(|()| self.flush(token, &mut answers, &mut sh.stats)) {
                Ok(wrote) => wrote,
                Err(e) => return self.fail(e),
            };
            let gated = self.gated(sh);
            // What resumes a paused client is the writable event that
            // follows a refused write (see `gated`): so paused means the
            // last write said WouldBlock. True while `write_some` writes
            // until WouldBlock; a write budget would strand it.
            debug_assert!(
                !gated || !self.socket.ready.writable,
                "token {}: paused with no writable event to come",
                token.0
            );
            self.note_backpressure(token, gated, &mut sh.stats);
            if wrote > 0 {
                self.progressed(sh);
            }
            if client_done {
                return self.finish(None);
            }
            match self.close_when_flushed(token, sh.now) {
                Ok(false) => {}
                Ok(true) => return self.finish(None),
                Err(e) => return self.fail(e),
            }
            // Go round again only if reading stopped for backpressure and
            // the write just made room: no event would come to resume it.
            if !(self.reads() && self.socket.ready.readable && budget > 0 && !self.gated(sh)) {
                break;
            }
        }
        if self.reads() && self.socket.ready.readable && budget == 0 {
            if had_budget {
                sh.stats.yields += 1;
                trace!("token {}: read budget used up, again next turn", token.0);
            } else {
                trace!("token {}: still readable, again next turn", token.0);
            }
            Status::Again
        } else {
            Status::Wait
        }
    }

    /// The client took answer bytes: activity while open; while closing,
    /// the stall deadline counts from now.
    fn progressed(&mut self, sh: &Shared) {
        match &mut self.phase {
            Phase::Open(active) => *active = sh.active,
            Phase::Closing { by, .. } => *by = (*by).max(sh.now + FLUSH_STALL_TIMEOUT),
            _ => {}
        }
    }

    /// Closing, with every answer with the kernel: true if the
    /// connection is done (the client's EOF came already); else our FIN
    /// goes out behind the answers and the connection lingers.
    fn close_when_flushed(&mut self, token: Token, now: Instant) -> io::Result<bool> {
        let Phase::Closing { why, by } = self.phase else {
            return Ok(false);
        };
        if !self.out.is_empty() {
            return Ok(false);
        }
        if why == Why::ClientClosed {
            return Ok(true);
        }
        // The client reads the answers, then EOF. Its own unread bytes we
        // read and drop.
        self.socket.stream.shutdown(Shutdown::Write)?;
        trace!("token {}: shut down write side, lingering", token.0);
        self.phase = Phase::Lingering {
            why,
            until: by.min(now + LINGER),
        };
        Ok(false)
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
    /// [`Conn::gated`], checked in `read_size`.
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
        let (what, pending) = (if backed_up { "paused" } else { "resumed" }, self.out.len());
        if backed_up {
            stats.paused += 1;
        }
        trace!(
            "token {}: {what} reading: {pending} bytes of answers pending",
            token.0
        );
    }

    /// In a phase that reads from the socket.
    fn reads(&self) -> bool {
        !matches!(self.phase, Phase::Closing { .. } | Phase::Closed)
    }

    /// Header or Open: reads until `WouldBlock`, EOF, the budget, or
    /// backpressure; takes the PROXY header, then frames what it reads and
    /// appends one answer per complete line.
    fn read_lines(
        &mut self,
        token: Token,
        sh: &mut Shared,
        answers: &mut Vec<u8>,
        budget: &mut usize,
        admit: Admit<'_>,
    ) -> io::Result<()> {
        while self.socket.ready.readable && *budget > 0 && self.is_open() {
            let queued = !self.out.is_empty();
            let out = if queued { &mut self.out } else { &mut *answers };
            let Some(want) = read_size(out, queued, sh, *budget) else {
                // Write these first (`drive_io` comes back here if the
                // kernel takes them; see `gated` if not). A read of 0
                // bytes would look like EOF.
                return Ok(());
            };
            let n = match self
                .socket
                .read_chunk(&mut sh.rbuf[..want], &mut sh.stats)?
            {
                Chunk::Data { n, drained } => {
                    let short = if drained {
                        " (short: socket drained)"
                    } else {
                        ""
                    };
                    trace!("token {}: read {n} bytes{short}", token.0);
                    n
                }
                Chunk::Eof => {
                    // The client is done sending; it still gets every
                    // answer owed. Nothing more can arrive, so no linger.
                    trace!("token {}: read EOF", token.0);
                    self.close(Why::ClientClosed, sh.now + FLUSH_STALL_TIMEOUT);
                    return Ok(());
                }
                Chunk::Empty => {
                    trace!("token {}: read WouldBlock", token.0);
                    return Ok(());
                }
            };
            *budget -= n;
            let start = match self.phase {
                Phase::Header { .. } => {
                    match self.take_header(token, n, sh, answers, &mut *admit) {
                        Some(start) => start,
                        None => return Ok(()),
                    }
                }
                _ => 0,
            };
            self.answer(token, start..n, sh, answers);
        }
        Ok(())
    }

    /// `--proxy-protocol`: feeds `rbuf[..n]` to the header parser (nothing
    /// is answered before the header, so an error line goes to `answers`).
    /// Returns where the lines start in it once the header is complete and
    /// the client admitted; `None` while the header is incomplete or after
    /// it closed the connection (a bad header, too many from its address).
    fn take_header(
        &mut self,
        token: Token,
        n: usize,
        sh: &mut Shared,
        answers: &mut Vec<u8>,
        admit: Admit<'_>,
    ) -> Option<usize> {
        debug_assert!(self.out.is_empty(), "answers queued before the header");
        let Phase::Header { parser, .. } = &mut self.phase else {
            return Some(0);
        };
        let (used, outcome) = parser.advance(&sh.rbuf[..n]);
        let header = match outcome? {
            Ok(header) => header,
            Err(why) => {
                // Never answered: whatever this is, it is not ours.
                debug!("{}: PROXY header refused: {why}", self.peer);
                self.close(Why::BadHeader, sh.now + FLUSH_STALL_TIMEOUT);
                return None;
            }
        };
        self.phase = Phase::Open(sh.active);
        // The loop admits the client the header names, or refuses it; a
        // header that names none (LOCAL, UNKNOWN, UDP or Unix) is the proxy
        // speaking for itself: not counted, as a Unix socket's clients are
        // not.
        if let Header::Client(addr) = header
            && !admit(addr.ip())
        {
            sh.stats.rejected_per_ip += 1;
            debug!(
                "refused {addr} (proxied by {}): too many connections from its address",
                self.peer
            );
            answers.extend_from_slice(ERR_TOO_MANY);
            self.close(Why::TooMany, sh.now + FLUSH_STALL_TIMEOUT);
            return None;
        }
        on_header(token, &mut self.peer, header);
        Some(used)
    }

    /// Frames `rbuf[range]` and appends one answer per complete line;
    /// `STOP` or a line too long starts the close.
    fn answer(
        &mut self,
        token: Token,
        range: std::ops::Range<usize>,
        sh: &mut Shared,
        answers: &mut Vec<u8>,
    ) {
        // Answers go straight to the lent answer buffer, unless older ones
        // are still waiting: then behind them, to keep the order.
        let out = if self.out.is_empty() {
            answers
        } else {
            &mut self.out
        };
        let lines_before = sh.stats.lines;
        let mut input = &sh.rbuf[range];
        let mut end = None;
        while !input.is_empty() {
            let (used, frame) = self.framer.advance(input, sh.rules.max_line);
            input = &input[used..];
            match frame {
                None => {}
                Some(Frame::Line) => {
                    sh.numbers.write_next(out);
                    sh.stats.lines += 1;
                }
                // Bytes after STOP are not lines: the rest of this read is
                // dropped, later input discarded while lingering.
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
        let answered = sh.stats.lines - lines_before;
        if answered > 0 {
            // A complete line is activity; bytes that end no line are
            // not, so a client dripping them cannot hold its slot.
            if let Phase::Open(active) = &mut self.phase {
                *active = sh.active;
            }
        }
        trace!(
            "token {}: answered {}{}",
            token.0,
            plural(answered, "line"),
            match end {
                Some(Why::Stop) => ", then STOP",
                Some(_) => ", then a line too long: ERR",
                None => "",
            }
        );
        if let Some(why) = end {
            self.close(why, sh.now + FLUSH_STALL_TIMEOUT);
        }
    }

    /// Lingering: reads and drops input until EOF, `WouldBlock` or the
    /// budget. Returns true at EOF.
    fn discard_input(
        &mut self,
        token: Token,
        sh: &mut Shared,
        budget: &mut usize,
    ) -> io::Result<bool> {
        while self.socket.ready.readable && *budget > 0 {
            let want = sh.rbuf.len().min(*budget);
            match self
                .socket
                .read_chunk(&mut sh.rbuf[..want], &mut sh.stats)?
            {
                Chunk::Data { n, .. } => {
                    trace!("token {}: read {n} bytes, discarded (lingering)", token.0);
                    *budget -= n;
                }
                Chunk::Eof => {
                    trace!("token {}: read EOF while lingering", token.0);
                    return Ok(true);
                }
                Chunk::Empty => trace!("token {}: read WouldBlock while lingering", token.0),
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
            // New answers go to `answers` only while `out` is empty (else
            // behind it, see `answer`): so writing them first keeps the order.
            debug_assert!(
                self.out.is_empty(),
                "token {}: new answers ahead of older ones",
                token.0
            );
            let written = self.socket.write_some(token, answers, stats);
            if let Ok(n) = written {
                self.out.extend_from_slice(&answers[n..]);
            }
            answers.clear();
            written
        } else if !self.out.is_empty() {
            let n = self.socket.write_some(token, &self.out, stats)?;
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

/// How many bytes the next read may take, with `out` the answers it will
/// add to (`queued`: older ones wait in the connection's own `out`);
/// `None`: none now (write these first). Every byte read could end
/// a line, so a read takes no more than the answers that still fit under
/// [`OUT_CAP`]; over the output budget, no more than [`OVER_BUDGET_BATCH`]
/// of answers (only a client with none waiting reads then); and never more
/// than the connection's budget for this turn.
fn read_size(out: &mut Vec<u8>, queued: bool, sh: &Shared, budget: usize) -> Option<usize> {
    if out.len() > OUT_LOW || (queued && sh.over_budget()) {
        return None;
    }
    if !out.is_empty() && out.capacity() < OUT_CAP + OUT_SLACK {
        // Queueing behind a slow reader's answers: size its buffer for the
        // cap once, so that doubling never overshoots it.
        out.reserve_exact(OUT_CAP + OUT_SLACK - out.len());
    }
    let room = if sh.over_budget() {
        OVER_BUDGET_BATCH.saturating_sub(out.len())
    } else {
        OUT_CAP - out.len()
    };
    let want = (room / sh.numbers.max_len()).min(sh.rbuf.len()).min(budget);
    (want > 0).then_some(want)
}

/// Turns a client away at once, with no slot to linger in (every busy
/// slot is taken): a best-effort `message`, our FIN, then close (when
/// `stream` is dropped). Reading what the client already sent first makes
/// a reset, which could destroy the message, less likely; one read into
/// `rbuf` at most, never a loop that a fast sender could keep going.
pub fn turn_away(mut stream: Stream, message: &[u8], rbuf: &mut [u8], stats: &mut Stats) {
    stats.writes += 1;
    if let Ok(n) = stream.write(message) {
        stats.bytes_out += n as u64;
    }
    let _ = stream.shutdown(Shutdown::Write);
    stats.reads += 1;
    if let Ok(n) = stream.read(rbuf) {
        stats.bytes_in += n as u64;
    }
}

/// A complete PROXY header, its client admitted: the client it names is
/// who we serve (and the address it was counted under).
fn on_header(token: Token, peer: &mut Peer, header: Header) {
    trace!("token {}: PROXY header read", token.0);
    match header {
        Header::Client(addr) => {
            let proxy = std::mem::replace(peer, Peer::tcp(addr));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answers::AnswerBuf;
    use std::io::{BufRead, BufReader};
    use std::net::{TcpListener, TcpStream};

    /// The per-client memory budget: the README promises a few hundred
    /// bytes per idle client, and this struct is most of it. The bound is
    /// for the release build (`cargo test --release --lib`, run by CI); a
    /// debug build's mio socket carries 16 bytes more (its selector's id).
    #[test]
    fn an_idle_connection_stays_small() {
        let size = std::mem::size_of::<Conn>();
        let bound = if cfg!(debug_assertions) {
            136 + 16
        } else {
            136
        };
        println!("size_of::<Conn>() = {size}");
        assert!(size <= bound, "Conn grew to {size} bytes (bound {bound})");
    }

    // The deadline logic, driven through time the test sets: `Shared::now`
    // is the only clock a connection reads, so nothing here sleeps. The
    // sockets are real (loopback); the events are not: a test latches
    // readiness itself, as an event would.

    const T: Token = Token(7);

    /// A connection served over loopback at `t0`, its client's end, and
    /// what the loop would lend it.
    struct Rig {
        conn: Conn,
        client: BufReader<TcpStream>,
        sh: Shared,
        answers: AnswerBuf,
        t0: Instant,
        /// What the loop answers when a PROXY header names a client.
        admit: bool,
    }

    impl Rig {
        fn new(timeouts: Timeouts, proxy_header: bool) -> Rig {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
            let (server, addr) = listener.accept().expect("accept");
            server.set_nonblocking(true).expect("nonblocking");
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let t0 = Instant::now();
            let rules = Rules {
                max_line: Some(1024),
                timeouts,
                output_budget: 1 << 20,
            };
            let numbers = Numbers::new(1, 100, Some(1)).expect("numbers");
            let sh = Shared::new(rules, numbers, t0);
            let stream = Stream::Tcp(mio::net::TcpStream::from_std(server));
            let conn = Conn::new(stream, Peer::tcp(addr), proxy_header, &sh);
            Rig {
                conn,
                client: BufReader::new(client),
                sh,
                answers: AnswerBuf::with_capacity(OUT_CAP + 64),
                t0,
                admit: true,
            }
        }

        /// Sends `bytes` from the client; its event arrives `at` seconds.
        fn send(&mut self, bytes: &[u8], at: u64) -> Status {
            self.client.get_mut().write_all(bytes).expect("send");
            self.conn.socket.ready.readable = true;
            self.wake(Wake::Ready, at)
        }

        fn wake(&mut self, wake: Wake, at: u64) -> Status {
            self.sh.set_now(self.t0 + Duration::from_secs(at));
            let admit = self.admit;
            let admit = &mut |_| admit;
            self.conn
                .drive(T, wake, &mut self.sh, self.answers.lend(), admit)
        }

        fn at(&self, secs: u64) -> Option<Instant> {
            Some(self.t0 + Duration::from_secs(secs))
        }

        /// What the client reads up to EOF.
        fn rest(&mut self) -> Vec<String> {
            self.client
                .by_ref()
                .lines()
                .map(|l| l.expect("read"))
                .collect()
        }
    }

    fn idle(secs: u64) -> Timeouts {
        Timeouts {
            idle: Some(Duration::from_secs(secs)),
            output: None,
        }
    }

    #[test]
    fn the_idle_deadline_moves_with_complete_lines_not_with_bytes() {
        let mut r = Rig::new(idle(60), false);
        assert_eq!(r.conn.deadline(), r.at(60));
        assert!(matches!(r.send(b"abc", 30), Status::Wait));
        assert_eq!(
            r.conn.deadline(),
            r.at(60),
            "a line's first bytes are not activity"
        );
        assert!(matches!(r.send(b"\n", 40), Status::Wait));
        assert_eq!(r.conn.deadline(), r.at(100), "a complete line is");
        assert_eq!(r.sh.stats.lines, 1);

        // Due: closed gracefully, its answer sent, then our FIN and a linger.
        assert!(matches!(r.wake(Wake::Deadline, 100), Status::Wait));
        assert_eq!(r.sh.stats.idle_closed, 1);
        assert!(r.conn.is_lingering());
        assert_eq!(
            r.conn.deadline(),
            Some(r.t0 + Duration::from_secs(100) + LINGER)
        );
        assert_eq!(r.rest().len(), 1, "the one answer, then EOF");
        match r.wake(Wake::Deadline, 102) {
            Status::Closed(Why::Idle) => {}
            other => panic!("expected closed for idleness, got {other:?}"),
        }
        assert_eq!(r.conn.deadline(), None);
    }

    #[test]
    fn the_output_deadline_runs_only_while_answers_wait() {
        let mut r = Rig::new(
            Timeouts {
                idle: None,
                output: Some(Duration::from_secs(5)),
            },
            false,
        );
        assert_eq!(r.conn.deadline(), None, "nothing armed for an idle client");
        // The kernel refuses our writes (as if the client's window were full).
        r.conn.socket.ready.writable = false;
        r.send(b"1\n2\n", 10);
        assert_eq!(r.sh.pending_out, r.conn.out.len());
        assert!(r.sh.pending_out > 0);
        assert_eq!(r.conn.deadline(), r.at(15));
        match r.wake(Wake::Deadline, 15) {
            Status::Closed(Why::OutputTimeout) => {}
            other => panic!("expected an output timeout, got {other:?}"),
        }
        assert_eq!(r.sh.stats.output_closed, 1);
        assert_eq!(
            r.sh.pending_out, 0,
            "a closed connection's answers leave the total"
        );
    }

    #[test]
    fn answers_taken_are_activity() {
        let mut r = Rig::new(
            Timeouts {
                idle: Some(Duration::from_secs(60)),
                output: Some(Duration::from_secs(5)),
            },
            false,
        );
        r.conn.socket.ready.writable = false;
        r.send(b"1\n", 10);
        assert_eq!(
            r.conn.deadline(),
            r.at(15),
            "the output deadline is the earlier"
        );
        // A writable event at 14 s: the kernel takes them.
        r.conn.socket.ready.writable = true;
        r.wake(Wake::Ready, 14);
        assert_eq!(r.sh.pending_out, 0);
        assert_eq!(r.conn.deadline(), r.at(74), "idle again, counted from 14 s");
    }

    #[test]
    fn a_proxy_header_must_be_complete_in_time_however_it_drips() {
        let mut r = Rig::new(idle(60), true);
        let by = r.t0 + HEADER_TIMEOUT;
        assert_eq!(r.conn.deadline(), Some(by));
        r.send(b"PROXY TCP4 ", 5);
        assert_eq!(r.conn.deadline(), Some(by), "dripping does not extend it");
        assert!(matches!(r.wake(Wake::Deadline, 10), Status::Wait));
        assert!(r.conn.is_lingering());
        assert_eq!(r.rest(), Vec::<String>::new(), "never answered");
        match r.wake(Wake::Deadline, 12) {
            Status::Closed(Why::NoHeader) => {}
            other => panic!("expected no header, got {other:?}"),
        }
    }

    #[test]
    fn a_complete_header_opens_the_connection_with_fresh_deadlines() {
        let mut r = Rig::new(idle(60), true);
        r.send(b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 80\r\n7\n", 3);
        assert!(matches!(r.conn.peer, Peer::Tcp { port: 1234, .. }));
        assert_eq!(r.sh.stats.lines, 1);
        assert_eq!(r.conn.deadline(), r.at(63));
    }

    #[test]
    fn a_client_the_loop_refuses_after_its_header_gets_err_and_no_answer() {
        let mut r = Rig::new(idle(60), true);
        r.admit = false;
        r.send(b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 80\r\n7\n8\n", 3);
        assert!(!r.conn.is_open(), "closing: its seat is given back now");
        assert_eq!(r.sh.stats.lines, 0);
        assert_eq!(r.sh.stats.rejected_per_ip, 1);
        assert_eq!(r.rest(), ["ERR too many connections from your address"]);
    }

    #[test]
    fn shutdown_only_brings_a_closing_deadline_closer() {
        let mut r = Rig::new(idle(60), false);
        r.conn.socket.ready.writable = false;
        r.send(b"1\nSTOP\n", 0);
        let flush_by = r.t0 + FLUSH_STALL_TIMEOUT;
        assert_eq!(r.conn.deadline(), Some(flush_by));
        r.wake(Wake::Shutdown(flush_by + Duration::from_secs(20)), 1);
        assert_eq!(
            r.conn.deadline(),
            Some(flush_by),
            "a later grace period changes nothing"
        );
        r.wake(Wake::Shutdown(r.t0 + Duration::from_secs(3)), 2);
        assert_eq!(r.conn.deadline(), r.at(3));
        match r.wake(Wake::Deadline, 3) {
            Status::Closed(Why::Timeout) => {}
            other => panic!("expected a timeout while closing, got {other:?}"),
        }
    }
}
