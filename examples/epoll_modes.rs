//! Level-triggered, edge-triggered, one-shot: what `epoll_wait` reports in
//! the hard cases, shown on real loopback sockets under all three modes.
//! mio (and so randline) offers only edges; this example calls epoll
//! itself, through rustix's safe binding, to show the other two.
//!
//! ```text
//! cargo run --example epoll_modes -- all          # or: leftover, paused, write-interest, emfile
//! ```
//!
//! It prints one Markdown table: for each case, each step, and each mode,
//! how many of the step's waits reported the socket. Every count is exact
//! (the test asserts them), except the paused reader's under LT, which is
//! however many times the loop could call `epoll_wait` in 100 ms.
//!
//! # The three modes
//! - **Level-triggered** (`EPOLLIN`): a wait reports the socket whenever
//!   it *is* ready, every time, until the condition goes away.
//! - **Edge-triggered** (`EPOLLIN | EPOLLET`): a wait reports the socket
//!   when it *becomes* ready (data arrived, room freed, a connection
//!   queued), once; then nothing until the next such change.
//! - **One-shot** (`EPOLLIN | EPOLLONESHOT`): reported once, then disarmed
//!   until the program re-arms it (`EPOLL_CTL_MOD`), a system call each
//!   time.
//!
//! # The hard cases
//! | case | level-triggered | edge-triggered | one-shot |
//! |---|---|---|---|
//! | leftover bytes: the reader takes one chunk per event | reported again on every wait: a leftover is never lost, but every turn repeats | reported once: bytes left unread are stranded until more arrive, so a reader must read to `WouldBlock` (or remember that it did not) | reported once, and not even new bytes bring it back: the reader re-arms after each event |
//! | a paused reader (backpressure: it stops reading one client) | spins: every wait returns at once for the client it will not read, unless it removes the interest (a system call to pause, one to resume) | one report, then quiet; resuming needs no event, as the reader remembers that the socket was readable | quiet after one report; resuming is a re-arm |
//! | permanent write interest (registered once for both directions) | every wait returns "writable" while there is room, which is nearly always: interest must be added when output is stuck and removed after (two `epoll_ctl` per stall) | "writable" once at registration, then only when room frees after a full buffer: the interest can stay forever, free | once per arm |
//! | EMFILE with a connection in the backlog | the listener is reported on every wait while `accept` fails: a spin until a descriptor frees | one report: after it, nothing, even once a descriptor frees, as long as no new connection arrives: the queued client is stranded unless the program retries on its own (a timer, or when it closes a connection) | one report; retrying is a re-arm at the right time |
//!
//! # Why randline (and mio) chose edges
//! Under edges a socket is registered once, for both directions, and never
//! touched again (src/server.rs: `admit`): no `epoll_ctl` per stall, per
//! pause or per turn, where level triggering would need one to stop a
//! permanent write interest, a paused client or a refused accept from
//! spinning the loop; and a wait returns only the sockets where something
//! changed, not every socket that stays ready. The price is the rule edges
//! impose: an event says "something changed", not "go and read once", so
//! the program keeps what it learnt. randline's `Readiness` latches
//! (src/conn.rs) stay set until the kernel answers `WouldBlock`; a client
//! with input left after its read budget goes on the "again" list rather
//! than waiting for an edge that will not come; and an accept that fails
//! with EMFILE is retried after a short wait or when a client closes
//! (`accept_retry`), never on an event. mio offers only edges because they
//! map onto every platform's notification (kqueue's `EV_CLEAR`, IOCP's
//! completions) and cost nothing when a socket stays ready.
//!
//! The process lowers its own open-file limit for the EMFILE case and
//! restores it after; every wait has a timeout; nothing leaves loopback.

use rustix::buffer::spare_capacity;
use rustix::event::{Timespec, epoll};
use rustix::process::{Resource, getrlimit, setrlimit};
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The waits of a counted step, each with a zero timeout.
const WAITS: usize = 5;
/// How long the paused reader's loop runs.
const PAUSE: Duration = Duration::from_millis(100);
/// The bound on any wait for the kernel (bytes to arrive, room to free).
const SETTLE: Duration = Duration::from_secs(5);
/// The timeout of a one-off wait that expects nothing.
const QUIET: Duration = Duration::from_millis(50);

/// How a socket is registered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Level,
    Edge,
    OneShot,
}

const MODES: [Mode; 3] = [Mode::Level, Mode::Edge, Mode::OneShot];

impl Mode {
    fn flags(self, interest: epoll::EventFlags) -> epoll::EventFlags {
        match self {
            Mode::Level => interest,
            Mode::Edge => interest | epoll::EventFlags::ET,
            Mode::OneShot => interest | epoll::EventFlags::ONESHOT,
        }
    }
}

/// One row of the table: a step of a case and its count in each mode.
struct Row {
    case: &'static str,
    step: &'static str,
    counts: Vec<String>,
}

/// One epoll instance watching one descriptor, in one mode.
struct Watch {
    epoll: OwnedFd,
    mode: Mode,
    interest: epoll::EventFlags,
}

impl Watch {
    fn new(fd: impl AsFd, mode: Mode, interest: epoll::EventFlags) -> io::Result<Watch> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &epoll,
            fd,
            epoll::EventData::new_u64(1),
            mode.flags(interest),
        )?;
        Ok(Watch {
            epoll,
            mode,
            interest,
        })
    }

    /// One `epoll_wait`: did it report the descriptor?
    fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let ts = Timespec {
            tv_sec: timeout.as_secs() as _,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        let mut events = Vec::with_capacity(4);
        loop {
            match epoll::wait(&self.epoll, spare_capacity(&mut events), Some(&ts)) {
                Ok(_) => return Ok(!events.is_empty()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `n` zero-timeout waits; `on_report` runs after each that reported.
    /// Returns how many reported.
    fn count(&self, n: usize, mut on_report: impl FnMut() -> io::Result<()>) -> io::Result<usize> {
        let mut reported = 0;
        for _ in 0..n {
            if self.wait(Duration::ZERO)? {
                reported += 1;
                on_report()?;
            }
        }
        Ok(reported)
    }

    /// `EPOLL_CTL_MOD` with the same interest: re-arms a one-shot
    /// registration (and, in any mode, makes the kernel look again).
    fn rearm(&self, fd: impl AsFd) -> io::Result<()> {
        epoll::modify(
            &self.epoll,
            fd,
            epoll::EventData::new_u64(1),
            self.mode.flags(self.interest),
        )?;
        Ok(())
    }
}

/// A connected loopback pair: (the peer, blocking with timeouts; the
/// watched socket, non-blocking).
fn pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let peer = TcpStream::connect(listener.local_addr()?)?;
    peer.set_read_timeout(Some(SETTLE))?;
    peer.set_write_timeout(Some(SETTLE))?;
    let (watched, _) = listener.accept()?;
    watched.set_nonblocking(true)?;
    Ok((peer, watched))
}

/// Waits (bounded) until `n` bytes are queued on `s`, without taking
/// them: every count starts from the same state.
fn settle(s: &TcpStream, n: usize) -> io::Result<()> {
    let deadline = Instant::now() + SETTLE;
    let mut buf = vec![0u8; n];
    while Instant::now() < deadline {
        match s.peek(&mut buf) {
            Ok(got) if got >= n => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(io::Error::new(ErrorKind::TimedOut, "bytes did not arrive"))
}

/// Reads at most `n` bytes from the non-blocking `s` (one "chunk").
fn read_chunk(mut s: &TcpStream, n: usize) -> io::Result<usize> {
    let mut buf = vec![0u8; n];
    match s.read(&mut buf) {
        Ok(got) => Ok(got),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

/// Leftover bytes: 100 bytes arrive, and each report reads 10 of them.
fn leftover() -> io::Result<Vec<Row>> {
    let mut rows = vec![
        (
            "leftover",
            "reports over 5 waits, 10 of 100 bytes read per report",
        ),
        ("leftover", "then 1 wait after 10 new bytes"),
        ("leftover", "then 1 wait after EPOLL_CTL_MOD (re-arm)"),
    ];
    let mut counts = vec![Vec::new(), Vec::new(), Vec::new()];
    for mode in MODES {
        let (mut peer, watched) = pair()?;
        let w = Watch::new(&watched, mode, epoll::EventFlags::IN)?;
        peer.write_all(&[b'x'; 100])?;
        settle(&watched, 100)?;
        let n = w.count(WAITS, || read_chunk(&watched, 10).map(drop))?;
        counts[0].push(format!("{n}/{WAITS}"));
        let queued = 100 - 10 * n;
        peer.write_all(&[b'y'; 10])?;
        settle(&watched, queued + 10)?;
        counts[1].push(w.count(1, || Ok(()))?.to_string());
        w.rearm(&watched)?;
        counts[2].push(w.count(1, || Ok(()))?.to_string());
    }
    Ok(rows
        .drain(..)
        .zip(counts)
        .map(|((case, step), counts)| Row { case, step, counts })
        .collect())
}

/// A paused reader: input is queued, the reader will not read it now, and
/// waits in a loop for 100 ms (each wait's timeout is the time left).
fn paused() -> io::Result<Vec<Row>> {
    let mut wakeups = Vec::new();
    let mut resumed = Vec::new();
    for mode in MODES {
        let (mut peer, watched) = pair()?;
        let w = Watch::new(&watched, mode, epoll::EventFlags::IN)?;
        peer.write_all(&[b'x'; 100])?;
        settle(&watched, 100)?;
        let deadline = Instant::now() + PAUSE;
        let mut n = 0u64;
        // Bounded by time, and by a count no loop reaches in 100 ms.
        for _ in 0..10_000_000 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            n += u64::from(w.wait(left)?);
        }
        wakeups.push(n.to_string());
        // Resuming: the reader reads what it knows is there, with no event.
        resumed.push(format!("{} bytes", read_chunk(&watched, 4096)?));
    }
    Ok(vec![
        Row {
            case: "paused",
            step: "wake-ups in 100 ms while not reading",
            counts: wakeups,
        },
        Row {
            case: "paused",
            step: "on resuming, read without waiting for an event",
            counts: resumed,
        },
    ])
}

/// Permanent write interest: registered for output, nothing to write.
fn write_interest() -> io::Result<Vec<Row>> {
    let (mut always, mut refill) = (Vec::new(), Vec::new());
    for mode in MODES {
        let (mut peer, watched) = pair()?;
        let w = Watch::new(&watched, mode, epoll::EventFlags::OUT)?;
        let n = w.count(WAITS, || Ok(()))?;
        always.push(format!("{n}/{WAITS}"));
        // Fill the send buffer (and the peer's receive buffer) until
        // WouldBlock, bounded; then the peer takes every byte, and room
        // frees: one wait, bounded, for the report that may come.
        let chunk = [b'x'; 64 * 1024];
        let mut sent = 0usize;
        for _ in 0..10_000 {
            match (&watched).write(&chunk) {
                Ok(k) => sent += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        // Under LT nothing is writable now; under ET the edge at
        // registration was already taken: no wait may report yet.
        let early = w.count(1, || Ok(()))?;
        let mut sink = vec![0u8; 64 * 1024];
        let mut taken = 0;
        while taken < sent {
            match peer.read(&mut sink)? {
                0 => return Err(io::Error::new(ErrorKind::UnexpectedEof, "peer saw EOF")),
                k => taken += k,
            }
        }
        let timeout = if mode == Mode::OneShot { QUIET } else { SETTLE };
        let later = usize::from(w.wait(timeout)?);
        refill.push(format!("{early} then {later}"));
    }
    Ok(vec![
        Row {
            case: "write-interest",
            step: "reports over 5 waits, nothing to write",
            counts: always,
        },
        Row {
            case: "write-interest",
            step: "buffer full: 1 wait, then 1 after the peer drains it",
            counts: refill,
        },
    ])
}

/// EMFILE: a connection waits in the listener's backlog, and every
/// `accept` fails because the process is out of descriptors.
fn emfile() -> io::Result<Vec<Row>> {
    let (mut refused, mut freed, mut retry) = (Vec::new(), Vec::new(), Vec::new());
    for mode in MODES {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let w = Watch::new(&listener, mode, epoll::EventFlags::IN)?;
        let _client = TcpStream::connect(listener.local_addr()?)?;
        // The connection is queued (the handshake completes on loopback)
        // once the listener polls readable: a bounded wait, not counted,
        // on an epoll instance of its own, which takes nothing from `w`.
        let probe = Watch::new(&listener, Mode::Level, epoll::EventFlags::IN)?;
        if !probe.wait(SETTLE)? {
            return Err(io::Error::new(ErrorKind::TimedOut, "no pending connection"));
        }
        drop(probe);
        let n = {
            let _fillers = exhaust_descriptors()?;
            w.count(WAITS, || match listener.accept() {
                Err(e) if is_emfile(&e) => Ok(()),
                Ok(_) => Err(io::Error::other("accept succeeded at the descriptor limit")),
                Err(e) => Err(e),
            })?
        };
        // The fillers are closed and the limit restored: a descriptor is
        // free, but no new connection has arrived.
        refused.push(format!("{n}/{WAITS}"));
        freed.push(w.count(1, || Ok(()))?.to_string());
        // The retry a timer would make: accept without an event.
        retry.push(match listener.accept() {
            Ok(_) => "accepted".to_string(),
            Err(e) => format!("{:?}", e.kind()),
        });
    }
    Ok(vec![
        Row {
            case: "emfile",
            step: "reports over 5 waits, accept fails with EMFILE after each",
            counts: refused,
        },
        Row {
            case: "emfile",
            step: "then 1 wait after a descriptor frees",
            counts: freed,
        },
        Row {
            case: "emfile",
            step: "then accept without an event (a timer's retry)",
            counts: retry,
        },
    ])
}

/// Descriptors opened until the process's limit is reached: while this
/// lives, every new descriptor fails with EMFILE. Dropping it closes them
/// and restores the limit.
struct Exhausted {
    files: Vec<File>,
    old: rustix::process::Rlimit,
}

impl Drop for Exhausted {
    fn drop(&mut self) {
        self.files.clear();
        let _ = setrlimit(Resource::Nofile, self.old);
    }
}

/// Lowers the soft open-file limit to a little above the highest open
/// descriptor, then opens /dev/null until EMFILE (bounded: the new limit
/// is at most 64 above what is open).
fn exhaust_descriptors() -> io::Result<Exhausted> {
    let old = getrlimit(Resource::Nofile);
    let probe = File::open("/dev/null")?;
    let highest = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        .max(probe.as_raw_fd() as u64);
    drop(probe);
    let mut lowered = old;
    lowered.current = Some(old.current.map_or(highest + 64, |c| c.min(highest + 64)));
    setrlimit(Resource::Nofile, lowered)?;
    let mut held = Exhausted {
        files: Vec::new(),
        old,
    };
    for _ in 0..=(highest + 64) {
        match File::open("/dev/null") {
            Ok(f) => held.files.push(f),
            Err(e) if is_emfile(&e) => return Ok(held),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("the descriptor limit was not reached"))
}

fn is_emfile(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::MFILE.raw_os_error())
}

fn main() -> ExitCode {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let cases: Vec<fn() -> io::Result<Vec<Row>>> = match which.as_str() {
        "leftover" => vec![leftover],
        "paused" => vec![paused],
        "write-interest" => vec![write_interest],
        "emfile" => vec![emfile],
        "all" => vec![leftover, paused, write_interest, emfile],
        "-h" | "--help" => {
            println!("usage: epoll_modes [leftover|paused|write-interest|emfile|all]");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!(
                "epoll_modes: unknown case {other:?}: leftover, paused, write-interest, emfile or all"
            );
            return ExitCode::from(2);
        }
    };
    println!("| case | step | LT | ET | ONESHOT |");
    println!("|---|---|---|---|---|");
    for case in cases {
        match case() {
            Ok(rows) => {
                for r in rows {
                    println!("| {} | {} | {} |", r.case, r.step, r.counts.join(" | "));
                }
            }
            Err(e) => {
                eprintln!("epoll_modes: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
