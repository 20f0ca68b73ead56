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
//! - `idle`: no client at all; with `--server-pid`, the server's CPU time
//!   and context switches `--secs` apart (an idle server should spend none).
//!
//! With `--json`, a run prints one record: its settings, its results, and
//! `samples`, readings of `/proc` taken by the tool itself at fixed points
//! of the run (for the server given by `--server-pid PID`, and for the tool
//! itself), so that a driver needs no clock or `/proc` reading of its own:
//!
//! | mode | sample points |
//! |---|---|
//! | rate | `start` (before connecting), `window_start`, `window_end`, `drained` (every answer in), `end` (connections closed, the server back to its threads at `start`, then 0.3 s) |
//! | hold | `start`, `held` (1 s after every connection was answered), `end` |
//! | churn | `start`, `end` (every client done, then 0.3 s) |
//! | idle | `start`, `end` (`--secs` later) |
//!
//! `scripts/bench.py` runs it and reads the records; [`record`] says what a
//! sample holds.
//!
//! # The files
//! | file | holds |
//! |---|---|
//! | `main.rs` | limits, `--help`, dispatch |
//! | [`args`] | the command line |
//! | [`rate`], [`hold`], [`churn`] | one mode each |
//! | [`net`] | connecting, refusals |
//! | [`report`] | percentiles, errors, the progress line |
//! | [`record`] | the JSON record and its /proc samples |
//!
//! Every wait has a timeout ([`TIMEOUT`]) and every mode a deadline, so a
//! broken server gives errors and exit code 1, never a hang. Exit codes:
//! 0 when every line was answered, 1 on any error, 2 for a bad command line.
//! Results go to stdout (one JSON object with `--json`); a progress line,
//! rewritten in place about once a second, and error messages go to stderr.

#![forbid(unsafe_code)]

mod args;
mod churn;
mod hold;
mod net;
mod rate;
mod record;
mod report;

use args::{Mode, parse};
use record::Record;
use std::process::ExitCode;
use std::time::Duration;

/// The longest any one wait may last: a connection that gets no answer (or
/// no close, in `churn`) for this long is counted as an error and dropped.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);
/// How often the progress line is rewritten, and stalled connections looked for.
pub(crate) const TICK: Duration = Duration::from_secs(1);
/// Longest `--secs` and `--warmup`: every run stops by itself.
pub(crate) const MAX_SECS: f64 = 3600.0;
/// `hold` without `--secs` lasts until SIGINT/SIGTERM, but never longer.
pub(crate) const HOLD_MAX_SECS: f64 = 600.0;
/// `hold` gives up opening connections after this long.
pub(crate) const HOLD_CONNECT_MAX: Duration = Duration::from_secs(120);
/// Connections per loopback source address in `hold`. `bind` picks the
/// source port at bind time, per address, from the odd half of the
/// ephemeral range first (14,116 ports with Linux's default 32768-60999);
/// past that, every bind scans the whole half before trying the even one,
/// and connecting slows to about 100 a second. So: well below the half.
pub(crate) const PER_SOURCE: usize = 10_000;
/// Lines in flight per connection, at most.
pub(crate) const MAX_DEPTH: usize = 1 << 16;
/// Longest `--line` / `--stop`, in bytes.
pub(crate) const MAX_LINE: usize = 64 * 1024;
/// Most connections in any mode; the open-file limit is checked too.
pub(crate) const MAX_CONNS: usize = 1_000_000;
/// Most `churn` clients (each one is a thread).
pub(crate) const MAX_CHURN_CLIENTS: usize = 1024;
/// Descriptors the tool needs besides its connections (stdio, the poll, signals).
pub(crate) const SPARE_FDS: u64 = 16;
/// Never ask for more open files than the kernel's default `fs.nr_open`.
pub(crate) const FD_CEILING: u64 = 1 << 20;
/// The `rate` loop's one read buffer: any number of answers per read.
pub(crate) const READ_BUF: usize = 64 * 1024;
/// Poll events per turn: enough that one turn sees every busy connection.
pub(crate) const EVENTS: usize = 1024;
/// Latencies are recorded in nanoseconds (loopback round trips are tens of
/// microseconds: whole microseconds would be too coarse), up to 100 s.
pub(crate) const HIST_MAX_NS: u64 = 100_000_000_000;
/// Distinct error messages kept for the summary; more are only counted.
pub(crate) const ERROR_KINDS: usize = 8;

const HELP: &str = "\
load: drives a line server over loopback TCP and measures it.

usage: load rate  --addr A [--conns C] [--depth D] [--secs S] [--warmup W] [--line TEXT] [--json]
       load hold  --addr A [--conns N] [--secs S] [--line TEXT] [--json]
       load churn --addr A [--conns C] [--secs S] [--line TEXT] [--stop TEXT] [--json]
       load idle  --server-pid PID [--secs S] [--json]

  rate    C connections, each keeping D lines in flight (D = 1: ping-pong);
          answered lines/s over S seconds after W seconds of warm-up, latency
          percentiles, errors, lines never answered
  hold    open N connections (source addresses 127.0.0.2, 127.0.0.3, ...),
          send each one line, read its answer, hold them all for S seconds
          (default: until SIGINT/SIGTERM, at most 600 s)
  churn   C clients, each in a loop for S seconds: connect, send one line, read
          the answer, send the stop line, wait for the server to close
  idle    no client: sample the server's CPU time and wake-ups S seconds apart

  --addr A       the server, IP:PORT on a loopback address (127.0.0.1:7000, [::1]:7000)
  --conns N      connections, or churn clients (default 1)
  --depth D      lines in flight per connection (default 1)
  --secs S       how long to measure or hold, seconds (default 5; hold: until a signal)
  --warmup W     seconds of load before measuring starts (default 1)
  --line TEXT    the line to send, without its '\\n' (default 'x'; Redis: 'PING')
  --stop TEXT    the line that ends a session in churn (default 'STOP'; Redis: 'QUIT')
  --json         print the result as one JSON object, with /proc samples
  --server-pid P the server's process id: its CPU time, memory, threads and
                 context switches go into the JSON record's samples
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
        Mode::Rate => rate::rate(&args),
        Mode::Hold => hold::hold(&args),
        Mode::Churn => churn::churn(&args),
        Mode::Idle => idle(&args),
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

/// `idle`: no client; the server's samples `--secs` apart.
fn idle(a: &args::Args) -> Result<bool, String> {
    let mut rec = Record::new("idle", a.server_pid);
    rec.set("secs", a.secs);
    rec.sample("start");
    std::thread::sleep(Duration::from_secs_f64(a.secs));
    rec.sample("end");
    if a.json {
        rec.print();
    } else {
        println!(
            "idle: sampled the server {} s apart (use --json to see the samples)",
            a.secs
        );
    }
    Ok(true)
}

/// After a run: waits until the server is back to `threads` threads (a
/// thread-per-client server ends one per closed client; at most 5 s), then
/// 0.3 s more, so the CPU time it spends on the closes is in the next sample.
pub(crate) fn settle(rec: &Record, threads: u64) {
    if !rec.has_server() {
        return;
    }
    let give_up = std::time::Instant::now() + TIMEOUT;
    while rec.server_threads() > threads && std::time::Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
}
