//! `churn`: C clients, each in a loop: connect, one line, its answer, the
//! stop line, the server's close. Connections/s.

use crate::args::Args;
use crate::net::{check_refusal, connect_from, is_timeout};
use crate::record::{Record, f1};
use crate::report::{Errors, Latency, Progress, new_histogram};
use crate::settle;
use crate::{TICK, TIMEOUT};
use hdrhistogram::Histogram;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// What one `churn` client did.
struct Client {
    /// Connect-to-close times of completed cycles, ns.
    hist: Histogram<u64>,
    errors: Errors,
}

pub(crate) fn churn(a: &Args) -> Result<bool, String> {
    let mut rec = Record::new("churn", a.server_pid);
    rec.sample("start");
    let threads_at_start = rec.server_threads();
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
    rec.sample("drained");
    settle(&rec, threads_at_start);
    rec.sample("end");
    if a.json {
        rec.set("addr", a.addr().to_string());
        rec.set("conns", a.conns);
        rec.set("secs", a.secs);
        rec.set(
            "line",
            String::from_utf8_lossy(&a.line).trim_end().to_string(),
        );
        rec.set(
            "stop",
            String::from_utf8_lossy(&a.stop).trim_end().to_string(),
        );
        rec.set("connections", connections);
        rec.set("connections_per_sec", f1(per_sec));
        rec.set("p50_us", f1(lat.p50));
        rec.set("p99_us", f1(lat.p99));
        rec.set("max_us", f1(lat.max));
        rec.set("errors", errors.count);
        rec.set("error_kinds", errors.to_json());
        rec.print();
    } else {
        println!("churn {}: {} clients, {} s", a.addr(), a.conns, a.secs);
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
    let mut s = connect_from(None, a.addr()).map_err(|e| format!("cannot connect: {e}"))?;
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
