//! The completion-based peer: randline's contract over io_uring, one
//! thread, one ring. Read it after `src/server.rs` (readiness: "this socket
//! can be read now, go and read it") to see the other model (completion:
//! "read into this buffer, and tell me when it is done").
//!
//! ```text
//! cargo run --release --example uring -- --listen 127.0.0.1:7000
//! cargo run --release --example uring -- 7000          # 0.0.0.0:7000
//! ```
//!
//! # Readiness and completion
//! randline asks epoll which sockets are ready, then makes the system
//! calls itself (`accept4`, `recvfrom`, `sendto`), one per operation, and
//! a `WouldBlock` sends it back to epoll. Here the program never asks
//! whether a socket is ready: it *submits* operations (accept this
//! listener, receive into this buffer, send these bytes) to the kernel's
//! submission queue, and later *reaps* their results from the completion
//! queue. Both queues are memory shared with the kernel; one system call,
//! `io_uring_enter`, hands over every submission queued since the last
//! one and waits for at least one completion. A loop turn that queued a
//! send for each of fifty clients makes one system call, not fifty. The
//! operations this program submits: `ACCEPT` (one at a time), `RECV` and
//! `SEND` (at most one of either in flight per client: a client's task
//! receives, answers, sends, receives again), `CLOSE`, and `ASYNC_CANCEL`
//! for a receive given up after the lingering close. Two are plain system
//! calls: `shutdown` (the runtime's choice) and `setsockopt` (NODELAY).
//!
//! # The kernel owns the buffer while an operation is in flight
//! With epoll, the buffer is lent to the kernel only for the length of a
//! `recv` call. A submitted receive keeps the buffer's address: the kernel
//! writes into it whenever data arrives, long after the submission
//! returned. Until the completion is reaped, nobody else may read, write,
//! move or free that memory. So a client's buffer is *given* to the
//! operation and *given back* with its result: `stream.read(buf).await`
//! takes the `Vec<u8>` by value and returns `(result, buf)`. A task
//! dropped while its receive is in flight (the lingering close's timeout)
//! does not free the buffer: the runtime keeps it until the kernel
//! reports the cancelled operation finished.
//!
//! # Why a runtime crate, and no `unsafe` here
//! Cargo.toml says `unsafe_code = "forbid"` for the whole package, examples
//! included, and a `forbid` cannot be relaxed by an inner
//! `#![allow(unsafe_code)]` (rustc rejects it: error E0453). Cargo's
//! `[lints]` table is per package: an `[[example]]` entry has no lints of
//! its own, so exempting this one file would mean lowering the lint to
//! `deny` for every target. And a hand-made ring needs `unsafe`: the
//! low-level `io-uring` crate's `SubmissionQueue::push` is `unsafe`
//! (the caller promises that every buffer an entry points to stays alive
//! and untouched until its completion: the rule above, which the compiler
//! cannot see), and so are rustix's `io_uring_enter` and the `mmap` of the
//! rings. So this example uses monoio, a single-thread runtime whose
//! driver is io_uring and nothing else (no epoll underneath: a turn that
//! has nothing to run calls `io_uring_enter` to submit and wait), and
//! whose I/O API enforces the ownership rule with types (buffers passed by
//! value). The `unsafe` is in monoio, where the rule is kept once; this
//! file has none. (tokio-uring was the other candidate: it puts the ring
//! inside tokio's epoll loop, so every wait is an `epoll_wait` plus an
//! `io_uring_enter`: not the picture this example is for.)
//!
//! # The contract, and what is left out
//! Every complete line gets one integer in `[1, 99]` and `\n`, in order;
//! a pipelined batch is answered with one send. `STOP` (ASCII whitespace
//! trimmed) ends the session after the earlier answers: FIN, then input is
//! discarded until the client closes, for at most 2 s (randline's
//! lingering close). A line longer than 8192 bytes gets `ERR line too
//! long` and the same close. Left out: connection limits, timeouts,
//! output budgets, Unix sockets, the PROXY protocol, signals (SIGTERM kills
//! the process). A client that never reads keeps its send in flight and is
//! not read from meanwhile: its memory is its two buffers and the
//! kernel's. Monoio is a dev-dependency: never in the `randline` binary.

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use rand::SeedableRng;
use rand::distr::{Distribution, Uniform};
use rand::rngs::{StdRng, SysRng};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// The longest line answered (randline's default `--max-line`).
const MAX_LINE: usize = 8192;
/// A client's receive buffer: a partial line of up to `MAX_LINE` bytes
/// stays at its front, and at least as much room is left for the next
/// receive.
const READ_BUF: usize = 2 * MAX_LINE + 1;
/// After STOP or a too-long line: how long input is discarded before the
/// close (randline's `LINGER`).
const LINGER: Duration = Duration::from_secs(2);
/// After a failed accept (out of descriptors): the pause before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Submission queue entries (monoio's minimum).
const RING_ENTRIES: u32 = 256;

const HELP: &str = "\
uring: randline's contract over io_uring, completion-based (an example).

usage: uring [OPTIONS] [PORT]

  PORT               listen on 0.0.0.0:PORT
  -l, --listen ADDR  listen on HOST:PORT (port 0: the OS picks)
  --seed N           seed the numbers (default: the OS)
  -h, --help         print this help

Prints `listening on ADDR` on stderr. Needs io_uring (Linux 5.11 or later,
not disabled by kernel.io_uring_disabled or a seccomp filter).";

fn main() -> ExitCode {
    let (addr, seed) = match parse(std::env::args_os().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("uring: {msg}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = rlimit::increase_nofile_limit(1 << 20) {
        eprintln!("uring: cannot raise the open-file limit: {e}");
    }
    // io_uring_setup happens here: where io_uring is missing or disabled,
    // this is the error a user sees.
    let rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(RING_ENTRIES)
        .enable_timer()
        .build();
    let mut rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("uring: io_uring is not available (io_uring_setup: {e})");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(addr, seed)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("uring: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Binds, then accepts one connection at a time, forever: each accepted
/// client becomes a task, and the accept is submitted again at once.
async fn run(addr: SocketAddr, seed: Option<u64>) -> Result<(), String> {
    let mut master = match seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::try_from_rng(&mut SysRng)
            .map_err(|e| format!("cannot seed from the OS: {e}"))?,
    };
    // Bound by std (no SO_REUSEPORT: monoio's own bind sets it, and a
    // second server on the same port would then share it silently).
    let std_listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = std_listener.local_addr().map_err(|e| e.to_string())?;
    let listener = TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
    eprintln!("uring: listening on {bound}");
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let rng = StdRng::from_rng(&mut master);
                // Detached: the task runs until its client is done.
                drop(monoio::spawn(serve(stream, rng)));
            }
            Err(e) => {
                // EMFILE and the like: the client waits in the backlog.
                eprintln!("uring: accept failed: {e}");
                monoio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// One client: receive, answer every complete line, send, repeat. At most
/// one operation of this client is in flight at a time, and each takes
/// the buffer it uses with it.
async fn serve(mut stream: TcpStream, mut rng: StdRng) {
    let _ = stream.set_nodelay(true);
    let range = Uniform::new_inclusive(1i64, 99).expect("1 <= 99");
    let mut input: Vec<u8> = Vec::with_capacity(READ_BUF);
    let mut output: Vec<u8> = Vec::with_capacity(4096);
    let mut digits = itoa::Buffer::new();
    loop {
        // Receive after the partial line kept at the front: the kernel
        // writes into input[len..capacity], and the buffer comes back with
        // its length moved on by what was received.
        let kept = input.len();
        let (got, slice) = stream.read(input.slice_mut(kept..)).await;
        input = slice.into_inner();
        match got {
            Ok(0) | Err(_) => return, // EOF (a partial line is not answered)
            Ok(_) => {}
        }
        let mut done = 0; // bytes of input consumed
        let mut stop = false;
        while let Some(nl) = memchr::memchr(b'\n', &input[done..]) {
            let line = &input[done..done + nl];
            done += nl + 1;
            if line.len() > MAX_LINE {
                output.extend_from_slice(b"ERR line too long\n");
                stop = true;
                break;
            }
            if line.trim_ascii() == b"STOP" {
                stop = true;
                break;
            }
            output.extend_from_slice(digits.format(range.sample(&mut rng)).as_bytes());
            output.push(b'\n');
        }
        // No `\n` within MAX_LINE bytes: the line is too long already.
        if !stop && input.len() - done > MAX_LINE {
            output.extend_from_slice(b"ERR line too long\n");
            stop = true;
        }
        input.drain(..done);
        if !output.is_empty() {
            // One send for every answer this receive produced. The output
            // buffer is the kernel's until the send completes.
            let (sent, buf) = stream.write_all(output).await;
            output = buf;
            output.clear();
            if sent.is_err() {
                return;
            }
        }
        if stop {
            break;
        }
    }
    // FIN, then discard input until the client closes (at most LINGER), so
    // that no reset destroys answers still in flight. A receive still in
    // flight at the timeout is cancelled (ASYNC_CANCEL) as its future is
    // dropped; the buffer is freed when the cancel completes.
    let _ = stream.shutdown().await;
    let drain = async {
        let mut sink = input;
        loop {
            sink.clear();
            let (got, buf) = stream.read(sink).await;
            sink = buf;
            if !matches!(got, Ok(n) if n > 0) {
                return;
            }
        }
    };
    let _ = monoio::time::timeout(LINGER, drain).await;
    // Dropping the stream submits its CLOSE.
}

/// The command line: the address and the seed, `None` for `--help`, or a
/// one-line error.
fn parse(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<Option<(SocketAddr, Option<u64>)>, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut addr = None;
    let mut seed = None;
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Short('l') | Long("listen") => {
                let v = p.value().map_err(|e| e.to_string())?;
                let v = v.to_string_lossy();
                addr = Some(
                    v.parse()
                        .map_err(|_| format!("invalid value '{v}' for --listen"))?,
                );
            }
            Long("seed") => {
                let v = p.value().map_err(|e| e.to_string())?;
                let v = v.to_string_lossy();
                seed = Some(
                    v.parse()
                        .map_err(|_| format!("invalid value '{v}' for --seed"))?,
                );
            }
            Value(v) if addr.is_none() => {
                let v = v.to_string_lossy();
                let port: u16 = v
                    .parse()
                    .map_err(|_| format!("invalid port '{v}': expected 0 to 65535"))?;
                addr = Some(SocketAddr::from(([0, 0, 0, 0], port)));
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    match addr {
        Some(a) => Ok(Some((a, seed))),
        None => Err("nothing to listen on: give a PORT or --listen ADDR (try --help)".into()),
    }
}
