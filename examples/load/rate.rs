//! `rate`: one mio poll loop, C connections, D lines in flight on each.

use crate::args::Args;
use crate::net::connect_from;
use crate::record::{Record, f1};
use crate::report::{Errors, Latency, Progress, new_histogram};
use crate::settle;
use crate::{EVENTS, READ_BUF, TICK, TIMEOUT};
use hdrhistogram::Histogram;
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

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

pub(crate) fn rate(a: &Args) -> Result<bool, String> {
    let mut rec = Record::new("rate", a.server_pid);
    rec.sample("start");
    let threads_at_start = rec.server_threads();
    let mut poll = Poll::new().map_err(|e| format!("cannot create a poll: {e}"))?;
    // Connect everyone first: the clock starts once all are up.
    let mut conns = Vec::with_capacity(a.conns);
    for i in 0..a.conns {
        let mut stream = connect_from(None, a.addr())
            .and_then(|s| {
                s.set_nonblocking(true)?;
                Ok(MioStream::from_std(s))
            })
            .map_err(|e| format!("cannot connect to {} (connection {}): {e}", a.addr(), i + 1))?;
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

    // The window's edges, sampled on the first turn past each.
    let mut sampled = (false, false);
    loop {
        let now = Instant::now();
        if !sampled.0 && now >= from {
            rec.sample("window_start");
            sampled.0 = true;
        }
        if !sampled.1 && now >= until {
            rec.sample("window_end");
            sampled.1 = true;
        }
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

    // The connections closed; then the server is given time to see the
    // closes (threaded: for their threads to exit), so that `end` holds
    // all the CPU time the run cost it.
    rec.sample("drained");
    drop(conns);
    drop(poll);
    settle(&rec, threads_at_start);
    rec.sample("end");

    let lines_measured = tally.hist.len();
    let per_sec = lines_measured as f64 / a.secs;
    let lat = Latency::of(&tally.hist);
    if a.json {
        rec.set("addr", a.addr().to_string());
        rec.set("conns", a.conns);
        rec.set("depth", a.depth);
        rec.set("secs", a.secs);
        rec.set("warmup", a.warmup);
        rec.set(
            "line",
            String::from_utf8_lossy(&a.line).trim_end().to_string(),
        );
        rec.set("lines", lines_measured);
        rec.set("lines_total", tally.answered);
        rec.set("lines_per_sec", f1(per_sec));
        rec.set("p50_us", f1(lat.p50));
        rec.set("p99_us", f1(lat.p99));
        rec.set("p999_us", f1(lat.p999));
        rec.set("max_us", f1(lat.max));
        rec.set("errors", tally.errors.count);
        rec.set("error_kinds", tally.errors.to_json());
        rec.set("unanswered", tally.unanswered);
        rec.print();
    } else {
        println!(
            "rate {}: {} connections, depth {}, {} s measured after {} s warm-up",
            a.addr(),
            a.conns,
            a.depth,
            a.secs,
            a.warmup
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
