//! `hold`: N idle connections, each answered once, held until `--secs`
//! or a signal, so the server's memory per idle client can be read.

use crate::args::Args;
use crate::net::{check_refusal, connect_from, is_timeout};
use crate::record::{Record, f3};
use crate::report::{Errors, Progress};
use crate::{EVENTS, HOLD_CONNECT_MAX, HOLD_MAX_SECS, PER_SOURCE, TICK, TIMEOUT};

/// How long after every connection is answered the `held` sample is taken.
const HOLD_SETTLE: Duration = Duration::from_secs(1);
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use socket2::SockRef;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub(crate) fn hold(a: &Args) -> Result<bool, String> {
    let mut rec = Record::new("hold", a.server_pid);
    rec.sample("start");
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
        let opened = connect_from(source_for(i, a.addr()), a.addr()).and_then(|mut s| {
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
        return Err(format!("no connection to {} could be held", a.addr()));
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
    // The `held` sample: 1 s in, when the server has settled.
    let settle_at = hold_start + HOLD_SETTLE;
    let mut settled = false;
    let mut events = Events::with_capacity(EVENTS);
    let mut buf = [0u8; 512];
    let mut next_tick = hold_start;
    'hold: loop {
        let now = Instant::now();
        if !settled && now >= settle_at {
            rec.sample("held");
            settled = true;
        }
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
        let mut wake = next_tick.min(hold_end);
        if !settled {
            wake = wake.min(settle_at);
        }
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
    if !settled {
        rec.sample("held");
    }
    progress.show(&format!(
        "hold: released {holding} connections after {held_secs:.1} s"
    ));
    progress.finish();
    errors.print();

    drop(conns);
    drop(poll);
    rec.sample("end");
    if a.json {
        rec.set("addr", a.addr().to_string());
        rec.set("conns", a.conns);
        rec.set(
            "line",
            String::from_utf8_lossy(&a.line).trim_end().to_string(),
        );
        rec.set("held", holding);
        rec.set("secs", f3(held_secs));
        rec.set("connect_secs", f3(opened_in));
        rec.set("errors", errors.count);
        rec.set("error_kinds", errors.to_json());
        rec.print();
    } else {
        println!(
            "hold {}: {holding} of {} connections held for {held_secs:.1} s \
             (opened and answered in {opened_in:.2} s), errors {}",
            a.addr(),
            a.conns,
            errors.count
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
