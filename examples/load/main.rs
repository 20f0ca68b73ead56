//! The load tool: drives a line server over loopback TCP and measures it.
//! It speaks only "send a line, count the `\n` that comes back", so the same
//! runs work against randline, the threaded baseline and Redis (inline
//! `PING` is answered by `+PONG\r\n`; `QUIT` by `+OK\r\n` and a close).
//!
//! ```text
//! cargo run --release --example load -- rate  --addr 127.0.0.1:7000 --conns 50 --depth 32
//! cargo run --release --example load -- hold  --addr 127.0.0.1:7000 --conns 10000 --secs 30
//! cargo run --release --example load -- churn --addr 127.0.0.1:7000 --conns 4 --secs 5
//! ```
//!
//! - `rate`: C connections, each keeping exactly D lines in flight (D = 1 is
//!   ping-pong), all on one mio poll loop so the tool itself stays cheap
//!   when it is pinned to one CPU. Answered lines/s and latency percentiles.
//! - `hold`: N connections, each answered once, then held idle, so the
//!   server's memory per idle client can be read off from outside. Source
//!   addresses are spread over 127.0.0.2, 127.0.0.3, … (bind before
//!   connect), so ephemeral ports never run out; the connections are
//!   released with a reset, so no TIME_WAIT is left to block the next run.
//!   A line `hold: holding N connections` on stderr says they are all up.
//!   Redis refuses clients from 127.0.0.2 unless started with
//!   `--protected-mode no`, and holds at most `--maxclients` (10,000).
//! - `churn`: C clients, each in a loop: connect, one line, its answer,
//!   `STOP`, wait for the server's close. Connections/s.
//!
//! Every wait has a timeout ([`TIMEOUT`]) and every mode a deadline, so a
//! broken server gives errors and exit code 1, never a hang. Exit codes:
//! 0 when every line was answered, 1 on any error, 2 for a bad command line.
//! Results go to stdout (one JSON object with `--json`); a progress line,
//! rewritten in place about once a second, and error messages go to stderr.

#![forbid(unsafe_code)]

use hdrhistogram::Histogram;
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any one wait may last: a connection that gets no answer (or
/// no close, in `churn`) for this long is counted as an error and dropped.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How often the progress line is rewritten, and stalled connections looked for.
const TICK: Duration = Duration::from_secs(1);
/// Longest `--secs` and `--warmup`: every run stops by itself.
const MAX_SECS: f64 = 3600.0;
/// `hold` without `--secs` lasts until SIGINT/SIGTERM, but never longer.
const HOLD_MAX_SECS: f64 = 600.0;
/// `hold` gives up opening connections after this long.
const HOLD_CONNECT_MAX: Duration = Duration::from_secs(120);
/// Connections per loopback source address in `hold`. `bind` picks the
/// source port at bind time, per address, from the odd half of the
/// ephemeral range first (14,116 ports with Linux's default 32768-60999);
/// past that, every bind scans the whole half before trying the even one,
/// and connecting slows to about 100 a second. So: well below the half.
const PER_SOURCE: usize = 10_000;
/// Lines in flight per connection, at most.
const MAX_DEPTH: usize = 1 << 16;
/// Longest `--line` / `--stop`, in bytes.
const MAX_LINE: usize = 64 * 1024;
/// Most connections in any mode; the open-file limit is checked too.
const MAX_CONNS: usize = 1_000_000;
/// Most `churn` clients (each one is a thread).
const MAX_CHURN_CLIENTS: usize = 1024;
/// Descriptors the tool needs besides its connections (stdio, the poll, signals).
const SPARE_FDS: u64 = 16;
/// Never ask for more open files than the kernel's default `fs.nr_open`.
const FD_CEILING: u64 = 1 << 20;
/// The `rate` loop's one read buffer: any number of answers per read.
const READ_BUF: usize = 64 * 1024;
/// Poll events per turn: enough that one turn sees every busy connection.
const EVENTS: usize = 1024;
/// Latencies are recorded in nanoseconds (loopback round trips are tens of
/// microseconds: whole microseconds would be too coarse), up to 100 s.
const HIST_MAX_NS: u64 = 100_000_000_000;
/// Distinct error messages kept for the summary; more are only counted.
const ERROR_KINDS: usize = 8;

const HELP: &str = "\
load: drives a line server over loopback TCP and measures it.

usage: load rate  --addr A [--conns C] [--depth D] [--secs S] [--warmup W] [--line TEXT] [--json]
       load hold  --addr A [--conns N] [--secs S] [--line TEXT] [--json]
       load churn --addr A [--conns C] [--secs S] [--line TEXT] [--stop TEXT] [--json]

  rate    C connections, each keeping D lines in flight (D = 1: ping-pong);
          answered lines/s over S seconds after W seconds of warm-up, latency
          percentiles, errors, lines never answered
  hold    open N connections (source addresses 127.0.0.2, 127.0.0.3, ...),
          send each one line, read its answer, hold them all for S seconds
          (default: until SIGINT/SIGTERM, at most 600 s)
  churn   C clients, each in a loop for S seconds: connect, send one line, read
          the answer, send the stop line, wait for the server to close

  --addr A       the server, IP:PORT on a loopback address (127.0.0.1:7000, [::1]:7000)
  --conns N      connections, or churn clients (default 1)
  --depth D      lines in flight per connection (default 1)
  --secs S       how long to measure or hold, seconds (default 5; hold: until a signal)
  --warmup W     seconds of load before measuring starts (default 1)
  --line TEXT    the line to send, without its '\\n' (default 'x'; Redis: 'PING')
  --stop TEXT    the line that ends a session in churn (default 'STOP'; Redis: 'QUIT')
  --json         print the result as one JSON object
  -h, --help     print this help

An answer is counted at each '\\n'. Every wait times out after 5 s. Exit code 0
when every line was answered, 1 after any error, 2 for a bad command line.";

fn main() -> ExitCode {
    let args = match parse(std::env::args_os().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("load: {msg}");
            return ExitCode::from(2);
        }
    };

    // Every connection is a descriptor, and the usual soft limit is 1024.
    let limit = match rlimit::increase_nofile_limit(FD_CEILING) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("load: cannot raise the open-file limit: {e}");
            return ExitCode::FAILURE;
        }
    };
    let needed = args.conns as u64 + SPARE_FDS;
    if needed > limit {
        eprintln!(
            "load: invalid value '{}' for --conns: needs about {needed} open files, \
             the limit here is {limit}",
            args.conns
        );
        return ExitCode::from(2);
    }

    let outcome = match args.mode {
        Mode::Rate => rate(&args),
        Mode::Hold => hold(&args),
        Mode::Churn => churn(&args),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(msg) => {
            eprintln!("load: {msg}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// rate: one poll loop, C connections, D lines in flight on each
// ---------------------------------------------------------------------------

/// One `rate` connection. Its lines in flight are `sent.len()`, always D
/// while the run lasts: every answer makes room for one more line.
struct Conn {
    /// `None` once given up on.
    stream: Option<MioStream>,
    /// Send times of the lines in flight, oldest first: each `\n` that comes
    /// back answers the front one. Capacity D, so it never reallocates.
    sent: VecDeque<Instant>,
    /// Lines the kernel has not taken yet. Capacity D lines: it holds only
    /// lines counted in `sent`, so it never reallocates either.
    out: Vec<u8>,
    /// Writable latch: set by an event, cleared when the kernel refuses.
    writable: bool,
    /// When this connection last got an answer (or, from idle, sent a line):
    /// the start of the [`TIMEOUT`].
    progress: Instant,
}

/// What the `rate` loop counts.
struct Tally {
    /// Latency of every line answered inside the measured window, in ns.
    hist: Histogram<u64>,
    /// Answers received so far, all phases (for the progress line).
    answered: u64,
    /// Lines sent and not yet answered, over live connections.
    in_flight: u64,
    /// Lines of connections given up on that never got an answer.
    unanswered: u64,
    errors: Errors,
    /// Connections not given up on.
    alive: usize,
}

/// The fixed part of a `rate` run that [`Conn`] methods need.
struct Plan<'a> {
    /// `--line` repeated D times: a batch of k lines is its first k lines,
    /// copied with one `extend_from_slice`.
    lines: &'a [u8],
    line_len: usize,
    depth: usize,
    /// Measured window: answers received in `[from, until)` are counted.
    from: Instant,
    until: Instant,
}

impl Conn {
    /// Tops the connection up to D lines in flight. The lines are queued,
    /// not written: [`Conn::flush`] sends them all in one write.
    fn refill(&mut self, plan: &Plan, now: Instant, tally: &mut Tally) {
        let k = plan.depth - self.sent.len();
        if k == 0 {
            return;
        }
        if self.sent.is_empty() {
            self.progress = now;
        }
        self.out.extend_from_slice(&plan.lines[..k * plan.line_len]);
        self.sent.extend(std::iter::repeat_n(now, k));
        tally.in_flight += k as u64;
    }

    /// Writes what is queued, until the kernel refuses.
    fn flush(&mut self) -> Result<(), String> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.writable && !self.out.is_empty() {
            match stream.write(&self.out) {
                Ok(0) => return Err("the server stopped taking input".into()),
                Ok(n) => {
                    // A short write means the socket buffer is full (Linux):
                    // skip the write that would only say WouldBlock; the
                    // kernel sends an edge when room comes back.
                    if n < self.out.len() {
                        self.writable = false;
                    }
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write failed: {e}")),
            }
        }
        Ok(())
    }

    /// Reads every answer the socket holds and matches each `\n` with the
    /// oldest line in flight. Returns the time of the last read that brought
    /// data, for the refill that follows.
    fn read(
        &mut self,
        rbuf: &mut [u8],
        read_closed: bool,
        plan: &Plan,
        tally: &mut Tally,
    ) -> Result<Option<Instant>, String> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(None);
        };
        let mut last = None;
        loop {
            match stream.read(rbuf) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => {
                    // One clock read per read: every answer in it arrived now.
                    let now = Instant::now();
                    let answers = memchr::memchr_iter(b'\n', &rbuf[..n]).count();
                    let measured = now >= plan.from && now < plan.until;
                    for _ in 0..answers {
                        let Some(at) = self.sent.pop_front() else {
                            return Err("more answers than lines sent".into());
                        };
                        if measured {
                            let ns = u64::try_from((now - at).as_nanos()).unwrap_or(u64::MAX);
                            tally.hist.saturating_record(ns);
                        }
                    }
                    if answers > 0 {
                        self.progress = now;
                        tally.answered += answers as u64;
                        tally.in_flight -= answers as u64;
                    }
                    last = Some(now);
                    // Short read: the socket is drained (Linux), so no read
                    // that only says WouldBlock. Unless the server's FIN is
                    // known to be queued: then read on to see it.
                    if n < rbuf.len() && !read_closed {
                        return Ok(last);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(last),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// Drops the connection and counts its lines in flight as never answered.
    fn give_up(&mut self, poll: &Poll, why: String, tally: &mut Tally) {
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        let _ = poll.registry().deregister(&mut stream);
        let lost = self.sent.len() as u64;
        tally.in_flight -= lost;
        tally.unanswered += lost;
        tally.alive -= 1;
        tally.errors.add(why);
        self.sent.clear();
        self.out.clear();
    }
}

fn rate(a: &Args) -> Result<bool, String> {
    let mut poll = Poll::new().map_err(|e| format!("cannot create a poll: {e}"))?;
    // Connect everyone first: the clock starts once all are up.
    let mut conns = Vec::with_capacity(a.conns);
    for i in 0..a.conns {
        let mut stream = connect_from(None, a.addr)
            .and_then(|s| {
                s.set_nonblocking(true)?;
                Ok(MioStream::from_std(s))
            })
            .map_err(|e| format!("cannot connect to {} (connection {}): {e}", a.addr, i + 1))?;
        // Both directions, once: edge-triggered, never re-registered.
        poll.registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("cannot register connection {}: {e}", i + 1))?;
        conns.push(Conn {
            stream: Some(stream),
            sent: VecDeque::with_capacity(a.depth),
            out: Vec::with_capacity(a.depth * a.line.len()),
            // A fresh socket has room: the first lines go out at once.
            writable: true,
            progress: Instant::now(),
        });
    }

    let lines = a.line.repeat(a.depth);
    let start = Instant::now();
    let from = start + Duration::from_secs_f64(a.warmup);
    let until = from + Duration::from_secs_f64(a.secs);
    // After `until`: no new lines; answers to those in flight are awaited,
    // each connection for at most TIMEOUT (the stall check), and the whole
    // drain for at most this long.
    let drain_end = until + TIMEOUT + TICK;
    let plan = Plan {
        lines: &lines,
        line_len: a.line.len(),
        depth: a.depth,
        from,
        until,
    };
    let mut tally = Tally {
        hist: new_histogram()?,
        answered: 0,
        in_flight: 0,
        unanswered: 0,
        errors: Errors::default(),
        alive: a.conns,
    };
    let mut rbuf = vec![0u8; READ_BUF];
    let mut events = Events::with_capacity(EVENTS);
    let mut progress = Progress::default();
    let mut next_tick = start + TICK;
    // The previous tick, and the answers counted by then.
    let mut last = (start, 0);

    for conn in &mut conns {
        conn.refill(&plan, start, &mut tally);
        if let Err(why) = conn.flush() {
            conn.give_up(&poll, why, &mut tally);
        }
    }

    loop {
        let now = Instant::now();
        let sending = now < until;
        if tally.alive == 0 || (!sending && tally.in_flight == 0) || now >= drain_end {
            break;
        }
        if now >= next_tick {
            // Stalled connections: no answer for TIMEOUT while lines are out.
            for conn in &mut conns {
                if conn.stream.is_some() && !conn.sent.is_empty() && now - conn.progress >= TIMEOUT
                {
                    let why = format!("no answer for {} s", TIMEOUT.as_secs());
                    conn.give_up(&poll, why, &mut tally);
                }
            }
            let phase = if now < from {
                format!("warm-up {:.0}/{} s", (now - start).as_secs_f64(), a.warmup)
            } else if sending {
                format!("measuring {:.0}/{} s", (now - from).as_secs_f64(), a.secs)
            } else {
                format!("draining, {} lines in flight", tally.in_flight)
            };
            let per_sec = (tally.answered - last.1) as f64 / (now - last.0).as_secs_f64();
            last = (now, tally.answered);
            progress.show(&format!(
                "rate: {phase}, {per_sec:.0} lines/s, {} connections, {} errors",
                tally.alive, tally.errors.count,
            ));
            next_tick = now + TICK;
        }

        // Sleep no later than the next tick or phase boundary.
        let mut wake = next_tick.min(drain_end);
        for boundary in [from, until] {
            if boundary > now {
                wake = wake.min(boundary);
            }
        }
        match poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll failed: {e}")),
        }

        for event in events.iter() {
            let Some(conn) = conns.get_mut(event.token().0) else {
                continue;
            };
            if conn.stream.is_none() {
                // Given up on earlier in this batch.
                continue;
            }
            if event.is_writable() {
                conn.writable = true;
            }
            let closed = event.is_read_closed() || event.is_error();
            let result = (|| {
                let mut read_at = None;
                if event.is_readable() || closed {
                    read_at = conn.read(&mut rbuf, closed, &plan, &mut tally)?;
                }
                // New lines go out right after the answers that made room
                // for them: the read's clock is their send time, and a
                // clock read per batch is saved.
                let now = read_at.unwrap_or_else(Instant::now);
                if now < until {
                    conn.refill(&plan, now, &mut tally);
                }
                conn.flush()
            })();
            if let Err(why) = result {
                conn.give_up(&poll, why, &mut tally);
            }
        }
    }

    // Whatever is still out after the drain was never answered.
    for conn in &mut conns {
        if conn.stream.is_some() && !conn.sent.is_empty() {
            let why = "no answer by the end of the run".to_string();
            conn.give_up(&poll, why, &mut tally);
        }
    }
    progress.show(&format!(
        "rate: done, {} lines answered, {} errors",
        tally.answered, tally.errors.count
    ));
    progress.finish();
    tally.errors.print();

    let lines_measured = tally.hist.len();
    let per_sec = lines_measured as f64 / a.secs;
    let lat = Latency::of(&tally.hist);
    if a.json {
        println!(
            "{{\"mode\":\"rate\",\"addr\":\"{}\",\"conns\":{},\"depth\":{},\"secs\":{},\
             \"lines\":{lines_measured},\"lines_per_sec\":{per_sec:.1},\"p50_us\":{:.1},\
             \"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\"errors\":{},\
             \"unanswered\":{}}}",
            a.addr,
            a.conns,
            a.depth,
            a.secs,
            lat.p50,
            lat.p99,
            lat.p999,
            lat.max,
            tally.errors.count,
            tally.unanswered
        );
    } else {
        println!(
            "rate {}: {} connections, depth {}, {} s measured after {} s warm-up",
            a.addr, a.conns, a.depth, a.secs, a.warmup
        );
        println!("  answered   {lines_measured} lines, {per_sec:.1} lines/s");
        println!(
            "  latency    p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
            lat.p50, lat.p99, lat.p999, lat.max
        );
        println!(
            "  errors     {}, lines never answered {}",
            tally.errors.count, tally.unanswered
        );
    }
    Ok(tally.errors.count == 0 && tally.unanswered == 0)
}

// ---------------------------------------------------------------------------
// hold: N idle connections, each answered once
// ---------------------------------------------------------------------------

fn hold(a: &Args) -> Result<bool, String> {
    let started = Instant::now();
    let mut errors = Errors::default();
    let mut progress = Progress::default();
    let mut next_tick = started;

    // Connect and send in one pass: blocking connects on loopback are fast,
    // and the server answers while we go on connecting. The first failure
    // ends this pass (a refusing server would fail every one after it).
    let mut streams = Vec::with_capacity(a.conns);
    for i in 0..a.conns {
        let now = Instant::now();
        if now >= next_tick {
            progress.show(&format!("hold: connecting, {i}/{}", a.conns));
            next_tick = now + TICK;
        }
        if now - started >= HOLD_CONNECT_MAX {
            let secs = HOLD_CONNECT_MAX.as_secs();
            errors.add(format!("gave up connecting after {secs} s"));
            break;
        }
        let opened = connect_from(source_for(i, a.addr), a.addr).and_then(|mut s| {
            // Close with a reset: a normal close would leave this source
            // port in TIME_WAIT for a minute, and the next run, binding the
            // same few addresses, would find its ports taken.
            SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
            s.write_all(&a.line)?;
            Ok(s)
        });
        match opened {
            Ok(s) => streams.push(s),
            Err(e) => {
                errors.add(format!("cannot connect: {e}"));
                break;
            }
        }
    }

    // One answer each, all within one TIMEOUT from here.
    let deadline = Instant::now() + TIMEOUT;
    let mut held = Vec::with_capacity(streams.len());
    for s in streams {
        match read_answer(&s, deadline) {
            Ok(()) => held.push(s),
            Err(why) => errors.add(why),
        }
    }
    let opened_in = started.elapsed().as_secs_f64();
    if held.is_empty() {
        progress.finish();
        errors.print();
        return Err(format!("no connection to {} could be held", a.addr));
    }

    // Hold: one poll on every connection, so a close by the server (an idle
    // timeout, a crash) is seen and counted, and on the signals that end it.
    let mut poll = Poll::new().map_err(|e| format!("cannot create a poll: {e}"))?;
    let mut signals = signal_hook_mio::v1_0::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let signals_token = Token(usize::MAX);
    poll.registry()
        .register(&mut signals, signals_token, Interest::READABLE)
        .map_err(|e| format!("cannot register the signals: {e}"))?;
    let mut conns: Vec<Option<MioStream>> = Vec::with_capacity(held.len());
    for (i, s) in held.into_iter().enumerate() {
        s.set_nonblocking(true)
            .map_err(|e| format!("cannot make a connection non-blocking: {e}"))?;
        let mut s = MioStream::from_std(s);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE)
            .map_err(|e| format!("cannot register connection {}: {e}", i + 1))?;
        conns.push(Some(s));
    }
    let mut holding = conns.len();

    let hold_for = Duration::from_secs_f64(a.secs);
    progress.show(&format!(
        "hold: {holding} of {} connections open and answered in {opened_in:.2} s",
        a.conns
    ));
    progress.finish();
    progress.show(&if a.until_signal {
        format!(
            "hold: holding {holding} connections until SIGINT/SIGTERM (at most {HOLD_MAX_SECS} s)"
        )
    } else {
        format!("hold: holding {holding} connections for {} s", a.secs)
    });
    progress.finish();

    let hold_start = Instant::now();
    let hold_end = hold_start + hold_for;
    let mut events = Events::with_capacity(EVENTS);
    let mut buf = [0u8; 512];
    let mut next_tick = hold_start;
    'hold: loop {
        let now = Instant::now();
        if now >= hold_end {
            break;
        }
        if now >= next_tick {
            let secs = (now - hold_start).as_secs();
            progress.show(&format!(
                "hold: holding {holding} connections, {secs} s, {} errors",
                errors.count
            ));
            next_tick = now + TICK;
        }
        let wake = next_tick.min(hold_end);
        match poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll failed: {e}")),
        }
        for event in events.iter() {
            if event.token() == signals_token {
                if signals.pending().next().is_some() {
                    break 'hold;
                }
                continue;
            }
            let Some(slot) = conns.get_mut(event.token().0) else {
                continue;
            };
            let Some(stream) = slot.as_mut() else {
                continue;
            };
            // An idle connection hears nothing: anything readable is news.
            let why = match stream.read(&mut buf) {
                Ok(0) => "the server closed a held connection".to_string(),
                Ok(_) => "the server sent data on a held connection".to_string(),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted =>
                {
                    continue;
                }
                Err(e) => format!("a held connection failed: {e}"),
            };
            if let Some(mut s) = slot.take() {
                let _ = poll.registry().deregister(&mut s);
            }
            holding -= 1;
            errors.add(why);
        }
    }
    let held_secs = hold_start.elapsed().as_secs_f64();
    progress.show(&format!(
        "hold: released {holding} connections after {held_secs:.1} s"
    ));
    progress.finish();
    errors.print();

    if a.json {
        println!(
            "{{\"mode\":\"hold\",\"addr\":\"{}\",\"conns\":{},\"held\":{holding},\
             \"secs\":{held_secs:.1},\"connect_secs\":{opened_in:.3},\"errors\":{}}}",
            a.addr, a.conns, errors.count
        );
    } else {
        println!(
            "hold {}: {holding} of {} connections held for {held_secs:.1} s \
             (opened and answered in {opened_in:.2} s), errors {}",
            a.addr, a.conns, errors.count
        );
    }
    Ok(errors.count == 0 && holding == a.conns)
}

/// Source address of `hold`'s connection `i`: 127.0.0.2 for the first
/// [`PER_SOURCE`], then 127.0.0.3, … Each address has its own ephemeral
/// ports. IPv6 has one loopback address: no spreading there.
fn source_for(i: usize, dst: SocketAddr) -> Option<IpAddr> {
    match dst {
        SocketAddr::V4(_) => {
            let k = u32::try_from(2 + i / PER_SOURCE).unwrap_or(u32::MAX);
            Some(IpAddr::V4(Ipv4Addr::from(
                u32::from(Ipv4Addr::new(127, 0, 0, 0)).saturating_add(k),
            )))
        }
        SocketAddr::V6(_) => None,
    }
}

/// Reads one answer line by `deadline`. The stream may be left
/// non-blocking: the hold loop makes it so anyway.
fn read_answer(mut s: &TcpStream, deadline: Instant) -> Result<(), String> {
    let mut buf = [0u8; 512];
    let mut got = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Past the deadline, only an answer already here counts.
        let io = if left.is_zero() {
            s.set_nonblocking(true)
        } else {
            s.set_read_timeout(Some(left))
        };
        io.map_err(|e| format!("cannot set a read timeout: {e}"))?;
        match s.read(&mut buf[got..]) {
            Ok(0) => return Err("the server closed the connection before answering".into()),
            Ok(n) => {
                got += n;
                check_refusal(&buf[..got])?;
                if buf[..got].contains(&b'\n') {
                    return Ok(());
                }
                if got == buf.len() {
                    return Err("an answer longer than 512 bytes".into());
                }
            }
            Err(e) if is_timeout(&e) => {
                return Err(format!("no answer within {} s", TIMEOUT.as_secs()));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}

/// randline's `ERR server busy`, or a Redis error (`-ERR max number of
/// clients reached`, `-DENIED ...`), is a refusal, not an answer. A
/// negative number (`-5`) is an answer.
fn check_refusal(answer: &[u8]) -> Result<(), String> {
    let redis_error =
        answer.first() == Some(&b'-') && answer.get(1).is_some_and(u8::is_ascii_alphabetic);
    if answer.starts_with(b"ERR") || redis_error {
        let line = answer.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(&line[..line.len().min(120)]);
        return Err(format!("refused: {}", line.trim_end()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// churn: C clients, each connecting, asking once, and closing, in a loop
// ---------------------------------------------------------------------------

/// What one `churn` client did.
struct Client {
    /// Connect-to-close times of completed cycles, ns.
    hist: Histogram<u64>,
    errors: Errors,
}

fn churn(a: &Args) -> Result<bool, String> {
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(a.secs);
    let done = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let mut progress = Progress::default();

    let clients: Vec<Client> = thread::scope(|scope| {
        let mut handles = Vec::with_capacity(a.conns);
        for _ in 0..a.conns {
            let spawned = thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn_scoped(scope, || churn_client(a, until, &done, &failed));
            match spawned {
                Ok(h) => handles.push(h),
                // Those already running stop by themselves at `until`.
                Err(e) => return Err(format!("cannot start a client thread: {e}")),
            }
        }
        // This thread only shows progress; each client stops by itself, at
        // most a few TIMEOUTs after `until`.
        let mut last = (start, 0);
        while !handles.iter().all(|h| h.is_finished()) {
            thread::sleep(Duration::from_millis(50));
            let now = Instant::now();
            if now - last.0 >= TICK {
                let n = done.load(Ordering::Relaxed);
                let per_sec = (n - last.1) as f64 / (now - last.0).as_secs_f64();
                progress.show(&format!(
                    "churn: {:.0}/{} s, {per_sec:.0} connections/s, {} errors",
                    (now - start).as_secs_f64().min(a.secs),
                    a.secs,
                    failed.load(Ordering::Relaxed)
                ));
                last = (now, n);
            }
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "a client thread panicked".to_string())?
            })
            .collect()
    })?;

    let mut hist = new_histogram()?;
    let mut errors = Errors::default();
    for c in &clients {
        hist.add(&c.hist)
            .map_err(|e| format!("cannot merge histograms: {e}"))?;
        errors.merge(&c.errors);
    }
    progress.show(&format!(
        "churn: done, {} connections, {} errors",
        hist.len(),
        errors.count
    ));
    progress.finish();
    errors.print();

    let connections = hist.len();
    let per_sec = connections as f64 / a.secs;
    let lat = Latency::of(&hist);
    if a.json {
        println!(
            "{{\"mode\":\"churn\",\"addr\":\"{}\",\"conns\":{},\"secs\":{},\
             \"connections\":{connections},\"connections_per_sec\":{per_sec:.1},\
             \"p50_us\":{:.1},\"p99_us\":{:.1},\"max_us\":{:.1},\"errors\":{}}}",
            a.addr, a.conns, a.secs, lat.p50, lat.p99, lat.max, errors.count
        );
    } else {
        println!("churn {}: {} clients, {} s", a.addr, a.conns, a.secs);
        println!("  completed  {connections} connections, {per_sec:.1} connections/s");
        println!(
            "  one cycle  p50 {:.1} us, p99 {:.1} us, max {:.1} us (connect to close)",
            lat.p50, lat.p99, lat.max
        );
        println!("  errors     {}", errors.count);
    }
    Ok(errors.count == 0)
}

/// One `churn` client: cycles until `until`. Only cycles that end before
/// `until` count, so connections/s is over exactly `--secs`.
fn churn_client(
    a: &Args,
    until: Instant,
    done: &AtomicU64,
    failed: &AtomicU64,
) -> Result<Client, String> {
    let mut me = Client {
        hist: new_histogram()?,
        errors: Errors::default(),
    };
    loop {
        let begun = Instant::now();
        if begun >= until {
            return Ok(me);
        }
        match churn_cycle(a) {
            Ok(()) => {
                let end = Instant::now();
                if end < until {
                    let ns = u64::try_from((end - begun).as_nanos()).unwrap_or(u64::MAX);
                    me.hist.saturating_record(ns);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(why) => {
                me.errors.add(why);
                failed.fetch_add(1, Ordering::Relaxed);
                // A refusing server fails at once: do not spin on it.
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Connect, one line, its answer, the stop line, the server's close.
fn churn_cycle(a: &Args) -> Result<(), String> {
    let give_up = Instant::now() + TIMEOUT;
    let late = || format!("the cycle took more than {} s", TIMEOUT.as_secs());
    let mut s = connect_from(None, a.addr).map_err(|e| format!("cannot connect: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| format!("cannot set a read timeout: {e}"))?;
    s.write_all(&a.line)
        .map_err(|e| format!("write failed: {e}"))?;

    let mut buf = [0u8; 512];
    let mut first = true;
    loop {
        let n = read_some(&mut s, &mut buf, "answer")?;
        if n == 0 {
            return Err("the server closed the connection before answering".into());
        }
        if first {
            check_refusal(&buf[..n])?;
            first = false;
        }
        if memchr::memchr(b'\n', &buf[..n]).is_some() {
            break;
        }
        if Instant::now() >= give_up {
            return Err(late());
        }
    }

    s.write_all(&a.stop)
        .map_err(|e| format!("write of the stop line failed: {e}"))?;
    // Anything before the close is fine (Redis answers QUIT with +OK).
    loop {
        if read_some(&mut s, &mut buf, "close")? == 0 {
            return Ok(());
        }
        if Instant::now() >= give_up {
            return Err(late());
        }
    }
}

/// One blocking read, its errors named after what was awaited.
fn read_some(s: &mut TcpStream, buf: &mut [u8], awaited: &str) -> Result<usize, String> {
    loop {
        match s.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                return Err(format!("no {awaited} within {} s", TIMEOUT.as_secs()));
            }
            Err(e) => return Err(format!("read failed awaiting the {awaited}: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------
// shared pieces
// ---------------------------------------------------------------------------

/// A blocking TCP connection to `dst`, from `src` if given (bind before
/// connect), with TCP_NODELAY: a line is sent when written.
fn connect_from(src: Option<IpAddr>, dst: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(ip) = src {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    // On Linux a blocking connect honours SO_SNDTIMEO: a bounded connect in
    // one syscall (a full backlog drops SYNs, and the kernel would retry
    // them for two minutes). It also bounds every later blocking write.
    socket.set_write_timeout(Some(TIMEOUT))?;
    if let Err(e) = socket.connect(&dst.into()) {
        if e.raw_os_error() == Some(libc::EINPROGRESS) {
            let secs = TIMEOUT.as_secs();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timed out after {secs} s"),
            ));
        }
        return Err(e);
    }
    socket.set_tcp_nodelay(true)?;
    Ok(socket.into())
}

/// A read timeout set with SO_RCVTIMEO shows up as WouldBlock on Unix.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).map_err(|e| format!("histogram: {e}"))
}

/// Percentiles in microseconds, 0 when nothing was recorded.
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| {
            if h.is_empty() {
                0.0
            } else {
                ns as f64 / 1000.0
            }
        };
        Latency {
            p50: us(h.value_at_quantile(0.50)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}

/// Errors counted, with the first few distinct messages kept for the end.
#[derive(Default)]
struct Errors {
    count: u64,
    kinds: Vec<(String, u64)>,
}

impl Errors {
    fn add(&mut self, why: String) {
        self.add_n(why, 1);
    }

    fn add_n(&mut self, why: String, n: u64) {
        self.count += n;
        if let Some(kind) = self.kinds.iter_mut().find(|(w, _)| *w == why) {
            kind.1 += n;
        } else if self.kinds.len() < ERROR_KINDS {
            self.kinds.push((why, n));
        }
    }

    fn merge(&mut self, other: &Errors) {
        let listed: u64 = other.kinds.iter().map(|(_, n)| n).sum();
        for (why, n) in &other.kinds {
            self.add_n(why.clone(), *n);
        }
        // Errors whose message did not fit in `other`'s list.
        self.count += other.count - listed;
    }

    /// One line per distinct message, on stderr.
    fn print(&self) {
        let listed: u64 = self.kinds.iter().map(|(_, n)| n).sum();
        for (why, n) in &self.kinds {
            eprintln!("load: error: {why} (x{n})");
        }
        if self.count > listed {
            eprintln!("load: error: {} more of other kinds", self.count - listed);
        }
    }
}

/// The progress line on stderr, rewritten in place with `\r`. Always
/// printed (a log file gets every state, separated by `\r`) and ended
/// with a newline by [`Progress::finish`].
#[derive(Default)]
struct Progress {
    /// Length of the line on screen, to blank out what a shorter one leaves.
    width: usize,
}

impl Progress {
    fn show(&mut self, text: &str) {
        let pad = self.width.saturating_sub(text.len());
        self.width = text.len();
        // One write per line; a closed stderr is no reason to stop.
        let line = format!("\r{text}{:pad$}", "");
        let _ = io::stderr().write_all(line.as_bytes());
    }

    fn finish(&mut self) {
        self.width = 0;
        let _ = io::stderr().write_all(b"\n");
    }
}

// ---------------------------------------------------------------------------
// the command line
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Rate,
    Hold,
    Churn,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Rate => "rate",
            Mode::Hold => "hold",
            Mode::Churn => "churn",
        }
    }

    /// The options this mode takes (without their `--`).
    fn takes(self, flag: &str) -> bool {
        let only = match self {
            Mode::Rate => ["depth", "warmup"].as_slice(),
            Mode::Hold => [].as_slice(),
            Mode::Churn => ["stop"].as_slice(),
        };
        matches!(flag, "addr" | "conns" | "secs" | "line" | "json") || only.contains(&flag)
    }
}

/// A checked command line.
struct Args {
    mode: Mode,
    addr: SocketAddr,
    conns: usize,
    depth: usize,
    /// Seconds to measure (`rate`, `churn`) or to hold (at most
    /// [`HOLD_MAX_SECS`]).
    secs: f64,
    /// `hold` without `--secs`: until SIGINT/SIGTERM, or `secs`.
    until_signal: bool,
    warmup: f64,
    /// The line sent, with its `\n`.
    line: Vec<u8>,
    /// `churn`'s last line, with its `\n`.
    stop: Vec<u8>,
    json: bool,
}

/// The command line as [`Args`], `None` for `--help`, or a one-line error
/// that names the bad value.
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Option<Args>, String> {
    use lexopt::prelude::*;

    let mut p = lexopt::Parser::from_args(args);
    let mut mode = None;
    let mut addr = None;
    let mut conns = 1;
    let mut depth = 1;
    let mut secs = None;
    let mut warmup = 1.0;
    let mut line = b"x\n".to_vec();
    let mut stop = b"STOP\n".to_vec();
    let mut json = false;

    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        let flag = match arg {
            Short('h') | Long("help") => return Ok(None),
            Value(v) if mode.is_none() => {
                mode = Some(match v.to_str() {
                    Some("rate") => Mode::Rate,
                    Some("hold") => Mode::Hold,
                    Some("churn") => Mode::Churn,
                    _ => {
                        let v = v.to_string_lossy();
                        return Err(format!("invalid mode '{v}': expected rate, hold or churn"));
                    }
                });
                continue;
            }
            Long(
                f @ ("addr" | "conns" | "depth" | "secs" | "warmup" | "line" | "stop" | "json"),
            ) => f.to_string(),
            _ => return Err(arg.unexpected().to_string()),
        };
        let Some(m) = mode else {
            return Err(format!(
                "--{flag} before the mode: the first argument is rate, hold or churn"
            ));
        };
        if !m.takes(&flag) {
            return Err(format!("{} does not take --{flag}", m.name()));
        }
        let name = format!("--{flag}");
        match flag.as_str() {
            "addr" => addr = Some(parse_addr(&text(&mut p, &name)?)?),
            "conns" => conns = whole(&mut p, &name, MAX_CONNS)?,
            "depth" => depth = whole(&mut p, &name, MAX_DEPTH)?,
            "secs" => secs = Some(seconds(&mut p, &name, false)?),
            "warmup" => warmup = seconds(&mut p, &name, true)?,
            "line" => line = line_value(&mut p, &name)?,
            "stop" => stop = line_value(&mut p, &name)?,
            _ => json = true,
        }
    }

    let Some(mode) = mode else {
        return Err("missing mode: rate, hold or churn (try --help)".into());
    };
    let Some(addr) = addr else {
        return Err(format!(
            "{}: missing --addr (e.g. --addr 127.0.0.1:7000)",
            mode.name()
        ));
    };
    if mode == Mode::Hold
        && let Some(s) = secs
        && s > HOLD_MAX_SECS
    {
        return Err(format!(
            "invalid value '{s}' for --secs: hold lasts at most {HOLD_MAX_SECS} s"
        ));
    }
    if mode == Mode::Churn && conns > MAX_CHURN_CLIENTS {
        return Err(format!(
            "invalid value '{conns}' for --conns: churn runs at most {MAX_CHURN_CLIENTS} clients"
        ));
    }
    let until_signal = mode == Mode::Hold && secs.is_none();
    let secs = secs.unwrap_or(if until_signal { HOLD_MAX_SECS } else { 5.0 });
    Ok(Some(Args {
        mode,
        addr,
        conns,
        depth,
        secs,
        until_signal,
        warmup,
        line,
        stop,
        json,
    }))
}

fn invalid(flag: &str, value: &str, why: &str) -> String {
    format!("invalid value '{value}' for {flag}: {why}")
}

fn text(p: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    let raw = p.value().map_err(|e| e.to_string())?;
    raw.into_string()
        .map_err(|raw| invalid(flag, &raw.to_string_lossy(), "not valid UTF-8"))
}

/// A count from 1 to `max`.
fn whole(p: &mut lexopt::Parser, flag: &str, max: usize) -> Result<usize, String> {
    let v = text(p, flag)?;
    match v.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(invalid(
            flag,
            &v,
            &format!("expected a whole number from 1 to {max}"),
        )),
    }
}

/// Seconds, fractions allowed, up to [`MAX_SECS`]; zero only if `zero_ok`.
fn seconds(p: &mut lexopt::Parser, flag: &str, zero_ok: bool) -> Result<f64, String> {
    let v = text(p, flag)?;
    let low = if zero_ok { "0" } else { "more than 0" };
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s <= MAX_SECS && (s > 0.0 || (zero_ok && s == 0.0)) => Ok(s),
        _ => Err(invalid(
            flag,
            &v,
            &format!("expected seconds, {low} to {MAX_SECS}"),
        )),
    }
}

/// A line to send: any bytes but `\n`; the `\n` is added here.
fn line_value(p: &mut lexopt::Parser, flag: &str) -> Result<Vec<u8>, String> {
    let mut v = p.value().map_err(|e| e.to_string())?.into_vec();
    // Escaped and cut short, so the message stays one short line.
    let shown: String = String::from_utf8_lossy(&v)
        .escape_debug()
        .take(60)
        .collect();
    if v.contains(&b'\n') {
        return Err(invalid(flag, &shown, "a line must not contain a newline"));
    }
    if v.len() > MAX_LINE {
        return Err(invalid(
            flag,
            &shown,
            &format!("longer than {MAX_LINE} bytes"),
        ));
    }
    v.push(b'\n');
    Ok(v)
}

/// `IP:PORT` on a loopback address: the tool only ever loads this machine.
fn parse_addr(v: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = v
        .parse()
        .map_err(|_| invalid("--addr", v, "expected IP:PORT, e.g. 127.0.0.1:7000"))?;
    if !addr.ip().is_loopback() {
        return Err(invalid(
            "--addr",
            v,
            "not a loopback address (127.0.0.0/8 or ::1): the load tool only loads this machine",
        ));
    }
    if addr.port() == 0 {
        return Err(invalid("--addr", v, "port 0 cannot be connected to"));
    }
    Ok(addr)
}
