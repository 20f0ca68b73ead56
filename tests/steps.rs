//! The "break it" labs of docs/steps.md: examples/minimal.rs, then
//! examples/step1_*.rs to step6_*.rs, each adding one rule of readiness I/O.
//!
//! Each rule has a check: a client that breaks a server without the rule,
//! in one named way (a [`Symptom`]). The test `stepN_...` runs step N's
//! check against step N-1, which must fail it *with that symptom* (a panic
//! or any other symptom fails the test), and against step N, which must
//! pass it. The last step must pass every check.
//!
//! Every wait is bounded, every load bounded in bytes and in time; the
//! symptoms' thresholds are far from what a working step shows (a debug
//! build, on a busy two-core machine).

mod common;

use common::{Client, Proc, WAIT, listening_addr};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The lab's servers, in order: step N is `STEPS[N]`.
const STEPS: [&str; 7] = [
    "minimal",
    "step1_drain",
    "step2_pending",
    "step3_backpressure",
    "step4_budget",
    "step5_linger",
    "step6_emfile",
];

/// How a server failed a check.
#[derive(Debug)]
#[allow(dead_code)] // some fields are only shown, in the failure messages
enum Symptom {
    /// Answers stopped while the server slept (state `S`) with lines still
    /// unanswered: they sit unread in its socket (step 1's rule).
    Stalled { got: usize, want: usize },
    /// All lines were read, but answers are missing when the client reads
    /// them later: dropped when the kernel refused them (step 2's rule).
    Missing { got: usize, want: usize },
    /// The server's RSS grew past the bound while a client sent lines and
    /// read nothing (step 3's rule).
    MemoryGrew { kib: u64 },
    /// A ping beside a flood went unanswered for this long while the flood
    /// went on (step 4's rule).
    Starved { waited: Duration },
    /// The client's read failed with a reset after `got` of the `want`
    /// answers it was owed (step 5's rule).
    Reset { got: usize, want: usize },
    /// A client queued while descriptors ran out was still not served
    /// after another client left (step 6's rule).
    NeverAccepted,
    /// The server used this much CPU (percent of wall time) while it had
    /// nothing it could do.
    Spinning { percent: u64 },
}

type Check = fn(&Served) -> Result<(), Symptom>;

/// A step's server, started on port 0; killed when dropped.
struct Served {
    proc: Proc,
    addr: SocketAddr,
}

/// Builds the lab's examples, once per test run (always: a learner who
/// edits a step and runs `cargo test --test steps` must test the edit).
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| common::build_examples(&STEPS));
    common::example_path(name)
}

fn start(step: usize) -> Served {
    let proc = Proc::spawn(Command::new(example(STEPS[step])).arg("0"));
    let addr = listening_addr(&proc.log.wait_for("listening on "));
    Served { proc, addr }
}

/// Held to read by every check, to write by the flood: the flood's
/// symptom (a ping starved) needs its writer and reader threads to keep the
/// server busy, which the CPU the other checks use (several at once, in a
/// debug build) can make them fail to do on two cores.
static ALONE: RwLock<()> = RwLock::new(());

/// Runs `check` against step `n`.
fn run(check: Check, n: usize) -> Result<(), Symptom> {
    let _others_too = ALONE.read().unwrap_or_else(|e| e.into_inner());
    run_now(check, n)
}

/// Runs `check` against step `n` while no other check runs.
fn run_alone(check: Check, n: usize) -> Result<(), Symptom> {
    let _alone = ALONE.write().unwrap_or_else(|e| e.into_inner());
    run_now(check, n)
}

fn run_now(check: Check, n: usize) -> Result<(), Symptom> {
    let started = Instant::now();
    let served = start(n);
    let result = check(&served);
    println!("{}: {result:?} in {:?}", STEPS[n], started.elapsed());
    result
}

/// How an answer count ended.
enum End {
    /// `want` answers arrived.
    All,
    /// Nothing more came for the silence allowed.
    Silent,
    /// The server closed (EOF).
    Eof,
    /// The read failed with ECONNRESET.
    Reset,
}

/// Reads answers (digits, each line ended by `\n`) until `want` have come,
/// or nothing comes for `silence`, or EOF or a reset; at most [`WAIT`] in
/// all. Returns how many came, and why it stopped.
fn count_answers(c: &mut Client, want: usize, silence: Duration) -> (usize, End) {
    c.set_read_timeout(silence);
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    let end = loop {
        if got >= want {
            break End::All;
        }
        assert!(
            Instant::now() < deadline,
            "{got} of {want} answers after {WAIT:?}"
        );
        match c.read(&mut buf) {
            Ok(0) => break End::Eof,
            Ok(n) => {
                for &b in &buf[..n] {
                    match b {
                        b'\n' => got += 1,
                        b'0'..=b'9' => {}
                        other => panic!("unexpected byte {other:#x} in answers"),
                    }
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break End::Silent;
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break End::Reset,
            Err(e) => panic!("read answers: {e}"),
        }
    };
    c.set_read_timeout(WAIT);
    assert!(got <= want, "{got} answers for {want} lines");
    (got, end)
}

/// Writes `bytes` from another thread, so that the test chooses when to read.
fn send_in_background(c: &Client, bytes: Vec<u8>) -> JoinHandle<()> {
    let mut w = c.writer();
    std::thread::spawn(move || w.write_all(&bytes).expect("send"))
}

/// Step 1's check: 1,000 lines of 100 bytes in one write (25 reads of
/// 4 KiB), read as they come. Wants every answer.
fn pipelined_lines(s: &Served) -> Result<(), Symptom> {
    let want = 1000;
    let mut c = Client::connect(s.addr);
    let mut line = vec![b'x'; 99];
    line.push(b'\n');
    let writer = send_in_background(&c, line.repeat(want));
    let (got, end) = count_answers(&mut c, want, Duration::from_secs(1));
    writer.join().expect("writer");
    match end {
        End::All => Ok(()),
        End::Silent if s.proc.state() == 'S' => Err(Symptom::Stalled { got, want }),
        _ => panic!("{got} of {want} answers, then not a sleeping server's silence"),
    }
}

/// Step 2's check: short lines, as many as make three times more answers
/// (about 20 bytes each) than the kernel's buffers hold for a client that
/// does not read (the server's send buffer at its largest, the client's
/// receive buffer at its start: 12 MB of answers by Linux's defaults), and
/// only a second later, reading. Wants every answer.
fn read_later(s: &Served) -> Result<(), Symptom> {
    let sysctl = |name: &str, i: usize| -> usize {
        let text = std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .unwrap_or_else(|e| panic!("read {name}: {e}"));
        let field = text.split_whitespace().nth(i);
        field.and_then(|v| v.parse().ok()).expect("a number")
    };
    let held = sysctl("tcp_wmem", 2) + sysctl("tcp_rmem", 1);
    let want = (3 * held / 20).max(600_000);
    let mut c = Client::connect(s.addr);
    let writer = send_in_background(&c, b"x\n".repeat(want));
    std::thread::sleep(Duration::from_secs(1));
    let (got, end) = count_answers(&mut c, want, Duration::from_secs(1));
    writer.join().expect("writer");
    match end {
        End::All => Ok(()),
        End::Silent => Err(Symptom::Missing { got, want }),
        _ => panic!("{got} of {want} answers, then EOF or a reset"),
    }
}

/// Step 3's check: sends short lines and never reads, until the server
/// stops taking them (its writes stall for a second), watching its RSS; at
/// most 64 MB in 20 s. Wants the writes to stall with RSS under the bound.
fn never_read(s: &Served) -> Result<(), Symptom> {
    /// Far above what a paused client costs (tens of KiB), far below what
    /// the 64 MB sent would cost if kept (about ten times that: answers
    /// are 20 bytes for 2-byte lines).
    const BOUND_KIB: u64 = 32 * 1024;
    let mut c = Client::connect(s.addr);
    let before = s.proc.rss_kib();
    let stream = c.writer();
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .expect("write timeout");
    let chunk = b"x\n".repeat(32 * 1024);
    let (mut sent, until) = (0, Instant::now() + Duration::from_secs(20));
    loop {
        let grew = s.proc.rss_kib().saturating_sub(before);
        if grew > BOUND_KIB {
            return Err(Symptom::MemoryGrew { kib: grew });
        }
        assert!(
            sent < 64 << 20 && Instant::now() < until,
            "the server neither stopped reading nor grew past the bound ({sent} bytes sent, RSS +{grew} KiB)"
        );
        match (&stream).write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    // Stalled: the server pushes back. Its memory now, and its answers
    // still come when the client reads.
    let grew = s.proc.rss_kib().saturating_sub(before);
    if grew > BOUND_KIB {
        return Err(Symptom::MemoryGrew { kib: grew });
    }
    for _ in 0..1000 {
        let answer = c.line();
        assert!(answer.bytes().all(|b| b.is_ascii_digit()), "{answer:?}");
    }
    Ok(())
}

/// Step 4's check: one client floods (2-byte lines, as fast as the socket
/// takes them, from two threads, and two more reading its answers so that
/// it is never paused; at most 15 s), another pings beside it. Wants each
/// of 20 pings answered within 2 s (a few ms is usual).
///
/// Short lines make the most work for the server per byte queued in the
/// kernel: the flood's threads need only run every few tenths of a second
/// to keep a server without a budget from ever reaching `WouldBlock`.
fn flood_and_ping(s: &Served) -> Result<(), Symptom> {
    const PATIENCE: Duration = Duration::from_secs(2);
    let mut pinger = Client::connect(s.addr);
    pinger.send(b"ping\n");
    assert_eq!(count_answers(&mut pinger, 1, WAIT).0, 1, "a ping alone");

    let flood = Client::connect(s.addr);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(15);
    let writers: Vec<JoinHandle<()>> = (0..2)
        .map(|_| {
            let (mut w, stop) = (flood.writer(), stop.clone());
            std::thread::spawn(move || {
                let chunk = b"x\n".repeat(128 * 1024);
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    if w.write_all(&chunk).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    let readers: Vec<JoinHandle<()>> = (0..2)
        .map(|_| {
            let (mut r, stop, count) = (flood.writer(), stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    match r.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => count.fetch_add(n, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    common::wait_until("the flood is answered", WAIT, || {
        answered.load(Ordering::Relaxed) >= 4 << 20
    });

    let mut result = Ok(());
    for _ in 0..20 {
        let asked = Instant::now();
        pinger.send(b"ping\n");
        let (got, end) = count_answers(&mut pinger, 1, PATIENCE);
        let waited = asked.elapsed();
        if got == 0 {
            assert!(matches!(end, End::Silent), "the ping's connection ended");
            assert!(Instant::now() < until, "the flood ended before the ping");
            result = Err(Symptom::Starved { waited });
            break;
        }
    }
    // Stop the flood: the shutdown fails the writers' writes, which may
    // wait for room that will not come, and ends the readers' reads.
    stop.store(true, Ordering::Relaxed);
    flood.writer().shutdown(Shutdown::Both).expect("shutdown");
    for thread in writers.into_iter().chain(readers) {
        thread.join().expect("a flood thread");
    }
    result
}

/// Step 5's check: 20,000 lines, `STOP`, and 64 KiB more behind it, in
/// one write; the client reads half a second later, as a client busy
/// elsewhere would (its answers, about 400 KiB, are more than its socket
/// takes: the rest wait in the server's). Wants every answer, then EOF.
fn stop_with_more_behind(s: &Served) -> Result<(), Symptom> {
    let want = 20_000;
    let mut c = Client::connect(s.addr);
    let mut bytes = b"x\n".repeat(want);
    bytes.extend_from_slice(b"STOP\n");
    bytes.extend_from_slice(&b"more\n".repeat(64 * 1024 / 5));
    let mut w = c.writer();
    // The server may close before taking it all: a failed write is no error.
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&bytes);
    });
    std::thread::sleep(Duration::from_millis(500));
    let (got, end) = count_answers(&mut c, want, WAIT);
    let result = match end {
        End::All => match count_answers(&mut c, 1, WAIT) {
            (0, End::Eof) => Ok(()),
            (0, End::Reset) => Err(Symptom::Reset { got, want }),
            (_, _) => panic!("after every answer, neither EOF nor a reset"),
        },
        End::Reset => Err(Symptom::Reset { got, want }),
        End::Eof | End::Silent => panic!("{got} of {want} answers, then EOF or silence"),
    };
    drop(c);
    writer.join().expect("writer");
    result
}

/// Step 6's check: the server runs with 24 descriptors. Clients connect
/// until one is not answered (it waits in the listen backlog); the server
/// must then sleep, not spin; one served client leaves. Wants the waiting
/// client answered.
fn out_of_descriptors(s: &Served) -> Result<(), Symptom> {
    let pid = rustix::process::Pid::from_raw(s.proc.pid() as i32).expect("pid");
    let limit = rustix::process::Rlimit {
        current: Some(24),
        maximum: Some(24),
    };
    rustix::process::prlimit(Some(pid), rustix::process::Resource::Nofile, limit)
        .expect("set the server's RLIMIT_NOFILE");
    let mut served = Vec::new();
    let mut waiting = loop {
        assert!(served.len() < 24, "never ran out of descriptors");
        let mut c = Client::connect(s.addr);
        c.send(b"hello\n");
        match count_answers(&mut c, 1, Duration::from_millis(500)) {
            (1, _) => served.push(c),
            (0, End::Silent) => break c,
            (_, _) => panic!("a client closed instead of served or left waiting"),
        }
    };
    assert!(served.len() >= 10, "only {} served", served.len());

    // Nothing the server can do now: it must sleep.
    let (ticks, since) = (s.proc.cpu_ticks(), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let used = (s.proc.cpu_ticks() - ticks) * 1000 / rustix::param::clock_ticks_per_second();
    let percent = used * 100 / since.elapsed().as_millis() as u64;
    if percent > 50 {
        return Err(Symptom::Spinning { percent });
    }

    // One leaves; its descriptor is free.
    let mut leaving = served.pop().expect("a served client");
    leaving.send(b"STOP\n");
    leaving.expect_eof();
    drop(leaving);
    match count_answers(&mut waiting, 1, Duration::from_secs(3)) {
        (1, _) => Ok(()),
        (0, End::Silent) => Err(Symptom::NeverAccepted),
        (_, _) => panic!("the waiting client was closed"),
    }
}

#[test]
fn step1_drain_until_wouldblock() {
    let before = run(pipelined_lines, 0);
    assert!(
        matches!(before, Err(Symptom::Stalled { got, want }) if got < want),
        "minimal: want Stalled, got {before:?}"
    );
    let passed = run(pipelined_lines, 1);
    assert!(
        matches!(passed, Ok(())),
        "step 1 fails its own check: {passed:?}"
    );
}

#[test]
fn step2_pending_output_and_writable_edges() {
    let before = run(read_later, 1);
    assert!(
        matches!(before, Err(Symptom::Missing { got, want }) if got < want),
        "step 1: want Missing, got {before:?}"
    );
    let passed = run(read_later, 2);
    assert!(
        matches!(passed, Ok(())),
        "step 2 fails its own check: {passed:?}"
    );
}

#[test]
fn step3_backpressure() {
    let before = run(never_read, 2);
    assert!(
        matches!(before, Err(Symptom::MemoryGrew { .. })),
        "step 2: want MemoryGrew, got {before:?}"
    );
    let passed = run(never_read, 3);
    assert!(
        matches!(passed, Ok(())),
        "step 3 fails its own check: {passed:?}"
    );
}

#[test]
fn step4_read_budget() {
    let before = run_alone(flood_and_ping, 3);
    assert!(
        matches!(before, Err(Symptom::Starved { .. })),
        "step 3: want Starved, got {before:?}"
    );
    let passed = run_alone(flood_and_ping, 4);
    assert!(
        matches!(passed, Ok(())),
        "step 4 fails its own check: {passed:?}"
    );
}

#[test]
fn step5_lingering_close() {
    let before = run(stop_with_more_behind, 4);
    assert!(
        matches!(before, Err(Symptom::Reset { got, want }) if got < want),
        "step 4: want Reset, got {before:?}"
    );
    let passed = run(stop_with_more_behind, 5);
    assert!(
        matches!(passed, Ok(())),
        "step 5 fails its own check: {passed:?}"
    );
}

#[test]
fn step6_out_of_descriptors() {
    let before = run(out_of_descriptors, 5);
    assert!(
        matches!(before, Err(Symptom::NeverAccepted)),
        "step 5: want NeverAccepted, got {before:?}"
    );
    let passed = run(out_of_descriptors, 6);
    assert!(
        matches!(passed, Ok(())),
        "step 6 fails its own check: {passed:?}"
    );
}

#[test]
fn the_last_step_passes_every_check() {
    let checks: [(&str, Check); 6] = [
        ("pipelined_lines", pipelined_lines),
        ("read_later", read_later),
        ("never_read", never_read),
        ("flood_and_ping", flood_and_ping),
        ("stop_with_more_behind", stop_with_more_behind),
        ("out_of_descriptors", out_of_descriptors),
    ];
    for (name, check) in checks {
        let result = if name == "flood_and_ping" {
            run_alone(check, 6)
        } else {
            run(check, 6)
        };
        assert!(matches!(result, Ok(())), "{name}: {result:?}");
    }
}
