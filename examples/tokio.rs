//! The async peer: randline's contract written the way a good tokio user
//! would write it, a task per client on a tokio runtime, with buffered
//! reads and writes. It is the benchmark's third model (beside the mio
//! loop and a thread per client, docs/benchmarks.md), and the async bridge
//! for learners: read it after `src/server.rs` and `examples/threaded.rs`,
//! and see what tokio does for you (the poll loop, the readiness, the
//! `WouldBlock`s, the per-client state machine) and what it costs.
//!
//! ```text
//! cargo run --release --example tokio -- --listen 127.0.0.1:7000                    # current_thread
//! cargo run --release --example tokio -- --listen 127.0.0.1:7000 --runtime multi    # multi_thread
//! ```
//!
//! # The design
//! - One runtime, chosen with `--runtime`: `current` (tokio's
//!   `current_thread` scheduler: every task on the main thread, like
//!   randline's one loop) or `multi` (the work-stealing `multi_thread`
//!   scheduler, `--workers N` threads, default one per CPU).
//! - The accept loop is one task; each client is a task of its own,
//!   [`serve`], whose code reads top to bottom like the threaded model's:
//!   read a line, answer it, repeat. Where `threaded` blocks a thread,
//!   this `.await`s, and the runtime's reactor (epoll, through mio: the
//!   same crate randline uses by hand) wakes the task when its socket is
//!   ready. A task's state is the future the compiler builds from
//!   [`serve`]: its locals and the `.await` it stands at.
//! - Reads go through a `BufReader` (8 KiB): `read_until(b'\n')` gives a
//!   line however the bytes were cut. Answers go into a `BufWriter`
//!   (8 KiB), flushed only when no further line is already buffered: a
//!   pipelined batch is answered with one write, ping-pong with one write
//!   per line. That flush rule is what randline's loop does too (it writes
//!   after it has answered every complete line it read).
//! - Numbers: `rand`'s `StdRng` (ChaCha12), as the server uses, one per
//!   client, drawn from one master generator in the accept loop (seeded
//!   by the OS, or by `--seed`): no lock between tasks, no system call per
//!   client. With `--seed`, one client of a fresh server sees the same
//!   numbers on every run (not the numbers randline would give).
//!
//! # The contract, and what is left out
//! Every complete line gets one integer in `[--min, --max]` (default
//! 1..=99) and `\n`, in order; the line `STOP` (ASCII whitespace trimmed)
//! ends the session after the earlier answers: the answers are flushed,
//! our side is shut down (FIN), and input is discarded until the client
//! closes, for at most 2 s, so no reset destroys answers in flight (as
//! randline's lingering close). A line longer than `--max-line` bytes
//! (default 8192; 0: no limit) gets `ERR line too long` and is closed. A
//! partial line at end of input is not answered.
//!
//! Left out, as in `threaded`: `--max-connections` (a client gets a task
//! for as long as there are descriptors), idle timeouts, output budgets,
//! per-address limits, the PROXY protocol, Unix sockets, signal handling
//! (SIGTERM kills the process at once). A client that never reads blocks
//! its own task in `flush`, so it stops being read too: its memory is
//! bounded by its two buffers and the kernel's.
//!
//! # What it costs
//! Per idle client: a task (its future, with both buffers' headers and
//! its generator), the 8 KiB read buffer and 8 KiB write buffer, both
//! allocated when the client is accepted, and the runtime's registration.
//! Tokio is a dev-dependency of this package: it is never in the
//! `randline` binary.

use rand::SeedableRng;
use rand::distr::{Distribution, Uniform};
use rand::rngs::{StdRng, SysRng};
use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

/// The read and the write buffer of every client.
const BUF_SIZE: usize = 8 * 1024;
/// After STOP or a too-long line: how long input is discarded before the
/// close (randline's `LINGER`).
const LINGER: Duration = Duration::from_secs(2);
/// After an accept error (out of descriptors): wait this long before the
/// next accept, instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const HELP: &str = "\
tokio: randline's contract on a tokio runtime, a task per client (an example).

usage: tokio [OPTIONS] [PORT]

  PORT               listen on 0.0.0.0:PORT
  -l, --listen ADDR  listen on HOST:PORT (port 0: the OS picks); repeatable
  --runtime KIND     current (current_thread, the default) or multi (multi_thread)
  --workers N        multi: worker threads (default: one per CPU)
  --min N, --max N   inclusive bounds of the answers (default 1, 99)
  --max-line BYTES   longest line; 0 = no limit (default 8192)
  --seed N           seed the numbers (default: the OS)
  -h, --help         print this help

One line `listening on ADDR` on stderr per listener.";

/// Which scheduler runs the tasks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Runtime {
    Current,
    Multi,
}

/// A checked command line.
struct Args {
    listen: Vec<SocketAddr>,
    runtime: Runtime,
    workers: Option<usize>,
    min: i64,
    max: i64,
    max_line: Option<usize>,
    seed: Option<u64>,
}

fn main() -> ExitCode {
    let args = match parse(std::env::args_os().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("tokio: {msg}");
            return ExitCode::from(2);
        }
    };
    // Every client is a descriptor; the usual soft limit is 1024.
    if let Err(e) = rlimit::increase_nofile_limit(1 << 20) {
        eprintln!("tokio: cannot raise the open-file limit: {e}");
    }
    let built = match args.runtime {
        Runtime::Current => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Runtime::Multi => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = args.workers {
                b.worker_threads(n);
            }
            b.enable_all().build()
        }
    };
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("tokio: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Binds every listener, then accepts on each in a task of its own.
async fn run(args: Args) -> Result<(), String> {
    let range = Uniform::new_inclusive(args.min, args.max)
        .map_err(|e| format!("range {}..={}: {e}", args.min, args.max))?;
    let mut master = match args.seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::try_from_rng(&mut SysRng)
            .map_err(|e| format!("cannot seed from the OS: {e}"))?,
    };
    let mut listeners = Vec::with_capacity(args.listen.len());
    for addr in &args.listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let bound = l.local_addr().map_err(|e| e.to_string())?;
        eprintln!("tokio: listening on {bound}");
        listeners.push(l);
    }
    let limits = Limits {
        range,
        max_line: args.max_line,
    };
    let mut acceptors = tokio::task::JoinSet::new();
    for l in listeners {
        // Each acceptor gets its own generator to draw clients' from.
        let rng = StdRng::from_rng(&mut master);
        acceptors.spawn(accept_loop(l, rng, limits));
    }
    // The acceptors never end; if one panics, so does the server.
    while let Some(done) = acceptors.join_next().await {
        done.map_err(|e| format!("an accept loop failed: {e}"))?;
    }
    Ok(())
}

/// What every client task needs, copied into it.
#[derive(Clone, Copy)]
struct Limits {
    range: Uniform<i64>,
    max_line: Option<usize>,
}

async fn accept_loop(listener: TcpListener, mut master: StdRng, limits: Limits) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let rng = StdRng::from_rng(&mut master);
                tokio::spawn(async move {
                    // A client's I/O error ends only that client.
                    let _ = serve(stream, rng, limits).await;
                });
            }
            Err(e) => {
                // EMFILE and the like: the client waits in the backlog.
                eprintln!("tokio: accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// One client's whole session.
async fn serve(mut stream: TcpStream, mut rng: StdRng, limits: Limits) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (r, w) = stream.split();
    let mut reader = BufReader::with_capacity(BUF_SIZE, r);
    let mut writer = BufWriter::with_capacity(BUF_SIZE, w);
    let mut line = Vec::new();
    // `read_until` on `take` stops after this many bytes without a `\n`.
    let cap = limits.max_line.map_or(u64::MAX, |m| m as u64 + 1);
    let mut digits = itoa::Buffer::new();
    loop {
        line.clear();
        let n = (&mut reader).take(cap).read_until(b'\n', &mut line).await?;
        if n == 0 {
            // End of input (a partial line before it is not answered).
            writer.flush().await?;
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            if limits.max_line.is_some_and(|m| line.len() > m) {
                writer.write_all(b"ERR line too long\n").await?;
                break;
            }
            // End of input in the middle of a line.
            writer.flush().await?;
            return Ok(());
        }
        if line.trim_ascii() == b"STOP" {
            break;
        }
        let n = limits.range.sample(&mut rng);
        writer.write_all(digits.format(n).as_bytes()).await?;
        writer.write_all(b"\n").await?;
        // Flush only when no further line is already here: a pipelined
        // batch is answered with one write.
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
    }
    // STOP or a too-long line: every answer out, then FIN, then discard
    // input until the client closes (at most LINGER), so no reset can
    // destroy answers still in flight.
    writer.flush().await?;
    writer.shutdown().await?;
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut r = reader.into_inner();
        while r.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
    Ok(())
}

/// The command line as [`Args`], `None` for `--help`, or a one-line error.
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut a = Args {
        listen: Vec::new(),
        runtime: Runtime::Current,
        workers: None,
        min: 1,
        max: 99,
        max_line: Some(8192),
        seed: None,
    };
    fn value<T: std::str::FromStr>(p: &mut lexopt::Parser, flag: &str) -> Result<T, String> {
        let v = p.value().map_err(|e| e.to_string())?;
        let v = v.to_string_lossy();
        v.parse()
            .map_err(|_| format!("invalid value '{v}' for {flag}"))
    }
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Short('l') | Long("listen") => a.listen.push(value(&mut p, "--listen")?),
            Long("runtime") => {
                a.runtime = match value::<String>(&mut p, "--runtime")?.as_str() {
                    "current" | "current_thread" => Runtime::Current,
                    "multi" | "multi_thread" => Runtime::Multi,
                    v => {
                        return Err(format!(
                            "invalid value '{v}' for --runtime: expected current or multi"
                        ));
                    }
                }
            }
            Long("workers") => match value::<usize>(&mut p, "--workers")? {
                0 => return Err("invalid value '0' for --workers: at least 1".into()),
                n => a.workers = Some(n),
            },
            Long("min") => a.min = value(&mut p, "--min")?,
            Long("max") => a.max = value(&mut p, "--max")?,
            Long("max-line") => {
                a.max_line = match value::<usize>(&mut p, "--max-line")? {
                    0 => None,
                    n => Some(n),
                }
            }
            Long("seed") => a.seed = Some(value(&mut p, "--seed")?),
            Value(v) => {
                let v = v.to_string_lossy();
                let port: u16 = v
                    .parse()
                    .map_err(|_| format!("invalid port '{v}': expected 0 to 65535"))?;
                a.listen.push(SocketAddr::from(([0, 0, 0, 0], port)));
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    if a.listen.is_empty() {
        return Err("nothing to listen on: give a PORT or --listen ADDR (try --help)".into());
    }
    if a.min > a.max {
        return Err(format!("--min {} is above --max {}", a.min, a.max));
    }
    if a.workers.is_some() && a.runtime == Runtime::Current {
        return Err("--workers needs --runtime multi".into());
    }
    Ok(Some(a))
}
