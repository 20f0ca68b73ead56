//! The chaos client: many concurrent clients, each with a random behaviour
//! drawn from one seed, against a real randline; every client's answers are
//! checked against an independent model of the protocol, and the server
//! against its own promises after every round.
//!
//! ```text
//! cargo run --example chaos -- --server target/debug/randline --mode all --seconds 60
//! cargo run --example chaos -- --seed 7 --mode proxy        # replay a run
//! cargo run --example chaos -- --seed 7 --mode proxy --only 3:17   # one client
//! ```
//!
//! Other flags: `--clients N` at once per round (48), `--seconds S` per mode
//! (10), `--listen ADDR` for the server, `--extra "FLAGS"` more server
//! flags, `--wrap "CMD"` a command to start the server under (such as
//! `ip netns exec NS`: scripts/lossy-link), `--rss-tolerance KIB` (see
//! [`RSS_TOLERANCE_KIB`]; tests/chaos.rs widens it for a server under qemu,
//! whose resident size is the emulator's).
//!
//! Behaviours (plan.rs): lines split at every size down to 1 byte, deep
//! pipelining, CRLF and whitespace variants, STOP look-alikes, NUL and
//! invalid UTF-8, lines under/at/over `--max-line`, STOP with trailing bytes,
//! half-close with and without a fragment, reset mid-stream, TCP urgent
//! data, slow readers, never-readers, connect-and-vanish, and under
//! `--proxy-protocol` valid, garbage and truncated v1/v2 headers.
//!
//! Modes: `tcp`, `unix` (a Unix socket), `proxy` (`--proxy-protocol`),
//! `busy` (`--max-connections` well below the clients), `limits` (a small
//! `--max-connections-per-ip`, `--output-budget`, `--output-timeout`,
//! `--idle-timeout` and `--tcp-keepalive`), or `all`.
//!
//! Invariants, per client: every complete line before the end answered
//! exactly once, in range; `ERR line too long` when owed; then EOF; nothing
//! extra. Per round: the server lives, and its descriptors return to their
//! baseline. Per run: its RSS stays within [`RSS_TOLERANCE_KIB`] of the
//! first round's (warm-up), and once idle it sleeps: no wake-ups but the
//! ones our SIGUSR1 probes cause.
//!
//! On any failure: the seed, the mode, the round and client (replay it with
//! `--only`), its plan, what it sent and what it got; exit code 1. Exit 2
//! for a bad command line.
//!
//! What is not here: the model (model.rs), plans (plan.rs), one client's
//! I/O (client.rs), the server's process (server.rs).

#![forbid(unsafe_code)]

mod client;
mod model;
mod plan;
mod rng;
mod server;

use client::{Outcome, judge};
use plan::{Limits, Plan, Transport};
use rng::Rng;
use server::Server;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How much RSS may grow past the first round's, in KiB. The loop's own
/// buffers are allocated at start; what remains is per-client output (at
/// most 64 KiB each while a client is slow) and the allocator's caching.
const RSS_TOLERANCE_KIB: u64 = 4 * 1024;
/// After a round, how long descriptors may take to come back: closing
/// clients linger at most 2 s, and a flush gives up after 10 s.
const SETTLE: Duration = Duration::from_secs(15);
/// Every client's plan and reading must be over by this long after its round starts.
const CLIENT_DEADLINE: Duration = Duration::from_secs(40);
/// One read or write may block this long.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// A sleeping server is woken only by our probes: checked over this long.
const IDLE_PROBE: Duration = Duration::from_secs(1);

struct Args {
    server: String,
    wrap: Vec<String>,
    modes: Vec<Mode>,
    seed: u64,
    seconds: u64,
    clients: u64,
    listen: String,
    /// More server flags (`--extra "--idle-timeout 10"`).
    extra: Vec<String>,
    only: Option<(u64, u64)>,
    /// How much RSS may grow past the first round's, in KiB.
    rss_tolerance: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Tcp,
    Unix,
    Proxy,
    Busy,
    Limits,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Tcp => "tcp",
            Mode::Unix => "unix",
            Mode::Proxy => "proxy",
            Mode::Busy => "busy",
            Mode::Limits => "limits",
        }
    }
}

/// Bytes as Rust writes a byte string, cut in the middle when long.
pub fn show(bytes: &[u8]) -> String {
    let esc = |b: &[u8]| b.escape_ascii().to_string();
    if bytes.len() <= 400 {
        format!("b\"{}\"", esc(bytes))
    } else {
        format!(
            "b\"{}\" ... ({} bytes) ... b\"{}\"",
            esc(&bytes[..200]),
            bytes.len() - 400,
            esc(&bytes[bytes.len() - 200..])
        )
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::from(2);
        }
    };
    println!("chaos: seed {} (replay: --seed {})", args.seed, args.seed);
    for &mode in &args.modes {
        if let Err(e) = run_mode(&args, mode) {
            println!("chaos: FAILED in mode {}: {e}", mode.name());
            println!(
                "chaos: replay with: --seed {} --mode {} (server {})",
                args.seed,
                mode.name(),
                args.server
            );
            return ExitCode::FAILURE;
        }
    }
    println!("chaos: all invariants held");
    ExitCode::SUCCESS
}

/// The server flags of one run: drawn from the seed, so that ranges and
/// `--max-line` differ between runs.
fn server_args(
    args: &Args,
    mode: Mode,
    unix: &std::path::Path,
) -> (Vec<String>, (i64, i64), usize) {
    let mut r = Rng::for_client(args.seed, u64::MAX, mode as u64);
    let min = r.below(100) as i64 - 50;
    let max = min + r.below(1000) as i64;
    let max_line = 16 + r.below(500) as usize;
    let mut a: Vec<String> = vec![
        "--min".into(),
        min.to_string(),
        "--max".into(),
        max.to_string(),
        "--max-line".into(),
        max_line.to_string(),
    ];
    match mode {
        Mode::Unix => a.extend(["--unix".into(), unix.display().to_string()]),
        _ => a.extend(["--listen".into(), args.listen.clone()]),
    }
    match mode {
        Mode::Proxy => a.push("--proxy-protocol".into()),
        Mode::Busy => a.extend([
            "--max-connections".into(),
            (args.clients / 4).max(1).to_string(),
        ]),
        // Every per-client bound small enough to be hit: a third of the
        // clients per address, a budget a few never-readers exceed, and
        // timeouts well above any pause a checked plan makes.
        Mode::Limits => a.extend(
            [
                "--max-connections-per-ip",
                &(args.clients / 3).max(1).to_string(),
                "--output-budget",
                "256K",
                "--output-timeout",
                "3",
                "--idle-timeout",
                "5",
                "--tcp-keepalive",
                "5",
            ]
            .map(String::from),
        ),
        _ => {}
    }
    a.extend(args.extra.iter().cloned());
    (a, (min, max), max_line)
}

fn run_mode(args: &Args, mode: Mode) -> Result<(), String> {
    let unix = std::env::temp_dir().join(format!("randline-chaos-{}.sock", std::process::id()));
    let (flags, range, max_line) = server_args(args, mode, &unix);
    let mut server = Server::start(
        &args.wrap,
        &args.server,
        &flags,
        (mode == Mode::Unix).then(|| unix.clone()),
    )?;
    let limits = Limits {
        transport: if mode == Mode::Unix {
            Transport::Unix
        } else {
            Transport::Tcp
        },
        proxy: mode == Mode::Proxy,
        max_line,
    };
    let busy_possible = matches!(mode, Mode::Busy | Mode::Limits);
    println!(
        "chaos: mode {}: server pid {} with {}",
        mode.name(),
        server.pid(),
        flags.join(" ")
    );
    // The baseline once the loop runs (a SIGUSR1 answered): during start-up
    // the server may hold a descriptor for a moment (reading /proc/self/fd).
    server.counter("accepted")?;
    let fd_baseline = server.fds();
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut rss_warm = None;
    let mut round = 0u64;
    while started.elapsed() < Duration::from_secs(args.seconds) || round == 0 {
        let clients: Vec<u64> = match args.only {
            Some((r, c)) if r == round => vec![c],
            Some(_) => Vec::new(),
            None => (0..args.clients).collect(),
        };
        let result = run_round(
            args,
            round,
            &clients,
            &limits,
            &server,
            range,
            busy_possible,
            &mut totals,
        );
        if let Err(report) = result {
            return Err(format!(
                "{report}\nserver log, last lines:\n{}",
                server.tail(30)
            ));
        }
        server.alive()?;
        // Descriptors back to where they were before any client.
        let settle_until = Instant::now() + SETTLE;
        while server.fds() != fd_baseline {
            if Instant::now() > settle_until {
                return Err(format!(
                    "round {round}: {} descriptors open {SETTLE:?} after the round, {fd_baseline} before it\n\
                     TCP sockets (/proc/net/tcp):\n{}\nserver log, last lines:\n{}",
                    server.fds(),
                    server.tcp_sockets(),
                    server.tail(20)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let rss = server.rss_kib();
        totals.rss_peak = totals.rss_peak.max(rss);
        let warm = *rss_warm.get_or_insert(rss);
        if rss > warm + args.rss_tolerance {
            return Err(format!(
                "round {round}: RSS {rss} KiB, more than {} KiB over the first round's {warm} KiB",
                args.rss_tolerance
            ));
        }
        round += 1;
        if args.only.is_some_and(|(r, _)| r < round) {
            break;
        }
    }
    // Idle: the only wake-ups are those our SIGUSR1 probes cause. Stale
    // deadlines of closed clients may still be due for a few seconds.
    let quiet_from = Instant::now();
    let quiet = loop {
        let before = server.counter("wakeups")?;
        std::thread::sleep(IDLE_PROBE);
        let after = server.counter("wakeups")?;
        if after - before == 1 {
            break quiet_from.elapsed();
        }
        if quiet_from.elapsed() > SETTLE {
            return Err(format!(
                "the idle server woke {} times in {IDLE_PROBE:?} ({SETTLE:?} after the last client)",
                after - before - 1
            ));
        }
    };
    let lines = server.counter("lines")?;
    server.alive()?;
    println!(
        "chaos: mode {}: {round} rounds, {} clients ({} checked), {} lines answered by the server, \
         {} owed to checked clients, {} MB sent; descriptors {fd_baseline} before and after each round; \
         RSS first round {} KiB, peak {} KiB; asleep {:.1} s after the last client; {:.0} s",
        mode.name(),
        totals.clients,
        totals.checked,
        lines,
        totals.owed,
        totals.bytes_sent / 1_000_000,
        rss_warm.unwrap_or(0),
        totals.rss_peak,
        quiet.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    server.stop()
}

#[derive(Default)]
struct Totals {
    clients: u64,
    checked: u64,
    owed: u64,
    bytes_sent: u64,
    rss_peak: u64,
}

/// Runs `clients` of `round` at once; the first failure, fully described.
#[allow(clippy::too_many_arguments)]
fn run_round(
    args: &Args,
    round: u64,
    clients: &[u64],
    limits: &Limits,
    server: &Server,
    range: (i64, i64),
    busy_possible: bool,
    totals: &mut Totals,
) -> Result<(), String> {
    let plans: Vec<(u64, Plan)> = clients
        .iter()
        .map(|&c| {
            (
                c,
                plan::draw(&mut Rng::for_client(args.seed, round, c), limits),
            )
        })
        .collect();
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = plans
            .iter()
            .map(|(_, p)| s.spawn(|| client::run(p, &server.target, IO_TIMEOUT, deadline)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread panicked"))
            .collect()
    });
    for ((c, plan), out) in plans.iter().zip(&outcomes) {
        totals.clients += 1;
        totals.bytes_sent += plan.stream().len() as u64;
        if plan.is_checked() {
            totals.checked += 1;
            totals.owed += model::owed(&plan.stream(), Some(limits.max_line)).answers as u64;
        }
        if let Err(why) = judge(plan, out, range, limits.max_line, busy_possible) {
            return Err(format!(
                "round {round} client {c} ({}): {why}\n  replay: --seed {} --only {round}:{c}\n  \
                 header: {:?}\n  reader: {:?}, end: {:?}, {} steps\n  sent: {}\n  got: {}\n  read ended: {:?}, write error: {:?}",
                plan.kind,
                args.seed,
                plan.header,
                plan.reader,
                plan.end,
                plan.steps.len(),
                show(&plan.stream()),
                show(&out.got),
                out.end,
                out.write_error,
            ));
        }
    }
    Ok(())
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        server: "target/debug/randline".into(),
        wrap: Vec::new(),
        modes: vec![Mode::Tcp],
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        seconds: 10,
        clients: 48,
        listen: "127.0.0.1:0".into(),
        extra: Vec::new(),
        only: None,
        rss_tolerance: RSS_TOLERANCE_KIB,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a whole number: {v:?}"))
        };
        match flag.as_str() {
            "--server" => a.server = value()?,
            "--wrap" => a.wrap = value()?.split_whitespace().map(String::from).collect(),
            "--listen" => a.listen = value()?,
            "--extra" => a.extra = value()?.split_whitespace().map(String::from).collect(),
            "--seed" => a.seed = number(value()?)?,
            "--seconds" => a.seconds = number(value()?)?.min(24 * 3600),
            "--clients" => a.clients = number(value()?)?.clamp(1, 2000),
            "--rss-tolerance" => a.rss_tolerance = number(value()?)?,
            "--only" => {
                let v = value()?;
                let (r, c) = v
                    .split_once(':')
                    .ok_or(format!("--only: want ROUND:CLIENT, got {v:?}"))?;
                a.only = Some((number(r.into())?, number(c.into())?));
            }
            "--mode" => {
                let v = value()?;
                a.modes = match v.as_str() {
                    "tcp" => vec![Mode::Tcp],
                    "unix" => vec![Mode::Unix],
                    "proxy" => vec![Mode::Proxy],
                    "busy" => vec![Mode::Busy],
                    "limits" => vec![Mode::Limits],
                    "all" => vec![Mode::Tcp, Mode::Unix, Mode::Proxy, Mode::Busy, Mode::Limits],
                    _ => {
                        return Err(format!(
                            "--mode: tcp, unix, proxy, busy, limits or all, not {v:?}"
                        ));
                    }
                };
            }
            _ => {
                return Err(format!(
                    "unknown argument {flag:?} (see the top of examples/chaos/main.rs)"
                ));
            }
        }
    }
    Ok(a)
}
