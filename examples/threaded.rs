//! The other model: randline's contract served the way the original Go
//! tutorial server served it, with a thread per client and blocking std I/O.
//! No event loop, no readiness, no `WouldBlock`.
//!
//! `cargo run --release --example threaded -- --listen 127.0.0.1:0` takes
//! the same options as `randline` (parsed by the same [`Config::parse`]) and
//! prints the same `listening on` and `serving` lines.
//!
//! # What this model buys: straight-line code
//! A client's whole life is one function, [`serve`], read top to bottom:
//! read, frame, answer, write, repeat. Its state is its local variables and
//! the place where its thread stands; the kernel's scheduler is the loop.
//! Several rules the event loop must spell out come free:
//! - A client that does not read: its thread blocks in `write` and stops
//!   reading, so its memory is bounded by its buffers and the kernel's. No
//!   output cap, no pausing and resuming. (Nor any deadline: it keeps its
//!   thread for as long as it keeps the connection open.)
//! - A flooding client cannot starve the others: each has its own thread
//!   and the scheduler shares the CPU. No read budget, no "again" list.
//! - `--idle-timeout` is a read timeout on the socket. No timer heap.
//!
//! # What it costs
//! - Per client: a thread with its own stack, a kernel task with a 16 KiB
//!   kernel stack (not counted in the process's RSS), and two heap buffers.
//!   Rust's default stack is 2 MiB of address space: only the touched
//!   pages use memory, but 10,000 clients would reserve 20 GiB. Here it is
//!   [`STACK_SIZE`] = 64 KiB, which is safe because [`serve`] does not
//!   recurse and keeps its buffers on the heap; its deepest call (logging,
//!   a read) needs a few KiB, and an overflow would hit the guard page
//!   and abort, never corrupt memory.
//! - A context switch per request under ping-pong load, where one loop
//!   turn serves every ready client.
//! - Shared state needs a lock: the one number source is a `Mutex`, so with
//!   `--seed` a single client sees the same numbers as from randline; with
//!   several clients, the scheduler decides who draws next.
//!
//! # What it leaves out
//! - `--max-connections` is ignored (a warning says so): it needs one place
//!   that knows every client, which is the loop. Each client gets a thread
//!   for as long as the OS gives out threads and descriptors.
//! - `--unix` is refused: it would need a second, near-identical path.
//! - Signals are not handled: SIGTERM/SIGINT kill the process at once,
//!   cutting clients mid-answer (`--shutdown-timeout` is ignored). A drain
//!   would need a way to wake every thread blocked in `read`, which is
//!   where this model stops being simple.

use log::{debug, error, info, warn};
use randline::config::{self, Config, DEFAULT_SHUTDOWN_SECS};
// How long input is discarded after our FIN (2 s), as in randline.
use randline::conn::{ERR_TOO_LONG, LINGER};
use randline::line::{Frame, LineFramer};
use randline::numbers::Numbers;
use randline::{logging, sys};
use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Each client thread's stack (see "What it costs" above).
const STACK_SIZE: usize = 64 * 1024;
/// Each client's read buffer and write buffer, on the heap.
const BUF_SIZE: usize = 8 * 1024;

/// What every client thread shares.
struct Shared {
    numbers: Mutex<Numbers>,
    max_line: Option<usize>,
    idle_timeout: Option<Duration>,
}

fn main() -> ExitCode {
    let cfg = match config::from_args_or_exit_code("threaded", false) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    if !cfg.unix.is_empty() {
        eprintln!("threaded: --unix is not supported by this example; use --listen or PORT");
        return ExitCode::from(2);
    }
    logging::init(logging::choose(cfg.log_format));
    match run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            error!("{msg}");
            ExitCode::FAILURE
        }
    }
}

/// Binds every listener, then accepts forever: one thread per listener
/// (the main thread takes the last one), one more per client.
fn run(cfg: &Config) -> Result<(), String> {
    if cfg.max_connections.is_some() {
        warn!("--max-connections is ignored: every client gets a thread while the OS has one");
    }
    if cfg.shutdown_timeout != Duration::from_secs(DEFAULT_SHUTDOWN_SECS) {
        warn!("--shutdown-timeout is ignored: SIGTERM/SIGINT end this server at once");
    }
    let fd_limit =
        sys::raise_fd_limit().map_err(|e| format!("cannot read the open-file limit: {e}"))?;
    let numbers = Numbers::new(cfg.min, cfg.max, cfg.seed).map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared {
        numbers: Mutex::new(numbers),
        max_line: cfg.max_line,
        idle_timeout: cfg.idle_timeout,
    });

    let mut listeners = Vec::new();
    for &addr in &cfg.listen {
        let l = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = l
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?;
        info!("listening on {local}");
        listeners.push(l);
    }
    info!(
        "limits: open files {fd_limit}, max line {}, one thread per client \
         ({} KiB stack, {} KiB of buffers)",
        cfg.max_line.map_or("none".into(), |n| format!("{n} bytes")),
        STACK_SIZE / 1024,
        2 * BUF_SIZE / 1024,
    );

    let Some(last) = listeners.pop() else {
        return Err("nothing to listen on".into());
    };
    for l in listeners {
        let shared = Arc::clone(&shared);
        thread::Builder::new()
            .spawn(move || accept_loop(&l, &shared))
            .map_err(|e| format!("cannot start an accepting thread: {e}"))?;
    }
    accept_loop(&last, &shared)
}

/// Accepts clients and starts a thread for each. Never returns: the
/// process ends by a signal.
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) -> ! {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(client) => client,
            // That client gave up before we took it: on to the next.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionAborted | ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                // Most likely out of file descriptors: the client waits in
                // the backlog. Retrying at once would spin, so this thread
                // sleeps; the clients' own threads go on serving them.
                warn!("accept failed: {e}; retrying in 1 s");
                thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        info!("serving {peer}");
        let shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .stack_size(STACK_SIZE)
            .spawn(move || match serve(&stream, &shared) {
                Ok(why) => debug!("closed {peer}: {why}"),
                Err(e) => debug!("closed {peer}: {e}"),
            });
        if let Err(e) = spawned {
            // Out of threads or memory. The closure, and the socket in it,
            // is dropped: this client is closed, the others carry on.
            warn!("cannot start a thread for {peer}: {e}; closing it");
        }
    }
}

/// One client's whole life. Returns why it ended, for the debug log.
fn serve(stream: &TcpStream, shared: &Shared) -> io::Result<&'static str> {
    // Answers are tiny and must leave at once: without this, Nagle's
    // algorithm holds one back while the client's delayed ACK waits for more.
    stream.set_nodelay(true)?;
    // "Nothing received for this long" is simply a read that times out.
    stream.set_read_timeout(shared.idle_timeout)?;
    // `&TcpStream` is both `Read` and `Write`: one socket, two buffers.
    let mut reader = BufReader::with_capacity(BUF_SIZE, stream);
    let mut writer = BufWriter::with_capacity(BUF_SIZE, stream);
    let mut framer = LineFramer::new();
    let mut answer = Vec::new();
    loop {
        // Answers collect in `writer` and go out when every buffered byte
        // is framed, just before a read that may block. Later would be a
        // deadlock: a ping-pong client waits for its answer before sending
        // again. Sooner would cost a write per line: a pipelining client's
        // whole read gets its answers in one write, as in randline.
        if reader.buffer().is_empty() {
            writer.flush()?;
        }
        let (used, frame) = match reader.fill_buf() {
            // EOF (a half-close): every complete line is answered, and
            // flushed just above, since a read only happens on an empty
            // buffer. An unterminated last fragment gets no answer.
            Ok([]) => return Ok("client closed"),
            Ok(input) => framer.advance(input, shared.max_line),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return close_gracefully(stream, &mut reader, &mut writer, "idle timeout");
            }
            Err(e) => return Err(e),
        };
        reader.consume(used);
        match frame {
            // The input ran out mid-line; the framer remembers where.
            None => {}
            Some(Frame::Line) => {
                answer.clear();
                // Drop the guard before writing: never hold the lock across
                // a write that may block on a slow client, or every client
                // waits for that one. (A poisoned lock still holds a good
                // generator.)
                let mut numbers = shared
                    .numbers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                numbers.write_next(&mut answer);
                drop(numbers);
                writer.write_all(&answer)?;
            }
            Some(Frame::Stop) => return close_gracefully(stream, &mut reader, &mut writer, "STOP"),
            Some(Frame::TooLong) => {
                writer.write_all(ERR_TOO_LONG)?;
                return close_gracefully(stream, &mut reader, &mut writer, "line too long");
            }
        }
    }
}

/// Delivers the answers written so far, then closes without a reset.
///
/// Closing a socket with unread input makes the kernel send a RST, and a
/// RST can make the client's kernel discard answers it has received but
/// the client has not read yet. So: flush, send our FIN behind the answers
/// (`shutdown(Write)`), read and drop whatever the client still sends until
/// its EOF or [`LINGER`], and only then close (when `stream` is dropped).
fn close_gracefully(
    stream: &TcpStream,
    reader: &mut BufReader<&TcpStream>,
    writer: &mut BufWriter<&TcpStream>,
    why: &'static str,
) -> io::Result<&'static str> {
    writer.flush()?;
    stream.shutdown(Shutdown::Write)?;
    let deadline = Instant::now() + LINGER;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(why);
        }
        // Recomputed before each read, so a client that trickles bytes
        // cannot keep us past the deadline.
        stream.set_read_timeout(Some(left))?;
        match reader.fill_buf() {
            Ok([]) => return Ok(why),
            Ok(input) => {
                let n = input.len();
                reader.consume(n);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(why);
            }
            Err(e) => return Err(e),
        }
    }
}
