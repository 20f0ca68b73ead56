//! Step 5 of the readiness lab (docs/steps.md): **a lingering close**.
//! This file repeats the previous step on purpose, whole, so that each
//! step runs on its own: `diff examples/step4_budget.rs
//! examples/step5_linger.rs` shows the rule. Run: `cargo run --example
//! step5_linger -- PORT`.
//!
//! The rule: never close a socket with unread input. If the client sent
//! more after `STOP`, closing makes the kernel send a reset (RST) instead of
//! a FIN. The reset throws away the answers still in our send buffer (those
//! the client's socket had no room for yet), and where they should be, the
//! client's read fails: "connection reset". So, once every answer is
//! written (to the kernel, not yet to the client): send our FIN
//! (`shutdown(Write)`: the client reads every answer, then EOF), then read
//! and discard until the client's FIN, for at most `LINGER`. After an EOF
//! from the client there is nothing unread, and a plain close is clean.
//!
//! Without it (examples/step4_budget.rs): a client that sends `STOP` with
//! more lines behind it loses answers it is owed, to a reset. `cargo test
//! --test steps step5` shows it.
//!
//! Still missing (the next step): when the process runs out of file
//! descriptors, accept fails, and the connection stays queued with no new
//! edge to announce it.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX);
/// Unsent answers past which a client is not read from. `out` stays under
/// this plus one read's answers (a 4 KiB read of empty lines: 86 KiB).
const OUT_CAP: usize = 64 * 1024;
/// Bytes one client may read in one loop turn.
const READ_BUDGET: usize = 64 * 1024;
/// How long a closing client's input is read and discarded, at most.
const LINGER: Duration = Duration::from_secs(2);

/// What a connection needs after `serve`.
enum Next {
    /// An event: it drained its socket, or waits for its client.
    Event,
    /// A turn: its read budget ran out with bytes perhaps still waiting.
    Again,
    /// Its FIN is sent: a turn to discard input, and a deadline to close by.
    Linger,
    /// To be closed.
    Close,
}

/// One client: its socket, the start of a line not yet complete, and the
/// answers the kernel has not taken yet.
struct Conn {
    stream: TcpStream,
    line: Vec<u8>,
    /// Answers; `out[sent..]` is what the kernel has not taken yet.
    out: Vec<u8>,
    sent: usize,
    /// EOF or `STOP` seen: read no more lines, close once `out` is written.
    done: bool,
    /// The client's EOF seen: nothing is left unread.
    eof: bool,
    /// Our FIN sent after the last answer; input is read and discarded.
    lingering: bool,
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .map_or(0, |p| p.parse().expect("PORT"));
    let mut listener = TcpListener::bind(([127, 0, 0, 1], port).into())?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("listening on {}", listener.local_addr()?);
    // Tokens count up and are never reused: no event meant for a closed
    // client can reach a new one.
    let (mut conns, mut next) = (HashMap::new(), 0);
    let (mut events, mut buf, mut rng) = (Events::with_capacity(128), [0u8; 4096], seed());
    // Clients whose budget ran out last turn.
    let mut again: Vec<Token> = Vec::new();
    // Lingering clients, each with the time it is closed by. Every deadline
    // is LINGER after it was set, so they come due in the order they were
    // queued: a FIFO queue is a sorted timer list here.
    let mut lingering: VecDeque<(Instant, Token)> = VecDeque::new();
    loop {
        // With clients owed a turn, look for events but do not sleep; else
        // sleep until an event or the next deadline.
        let timeout = if again.is_empty() {
            lingering
                .front()
                .map(|(by, _)| by.saturating_duration_since(Instant::now()))
        } else {
            Some(Duration::ZERO)
        };
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal: poll again
            result => result?,
        }
        let now = Instant::now();
        // Lingering past the deadline: closed, input unread or not (a
        // client that never sends its FIN has had its answers and its EOF).
        while let Some(&(by, token)) = lingering.front()
            && by <= now
        {
            lingering.pop_front();
            close(&poll, &mut conns, token)?; // if it is not closed already
        }
        // This turn: every client with an event, and every one owed a turn.
        let mut turn = std::mem::take(&mut again);
        for event in events.iter() {
            if event.token() == LISTENER {
                accept(&listener, &poll, &mut conns, &mut next)?;
            } else {
                turn.push(event.token());
            }
        }
        turn.sort_unstable();
        turn.dedup(); // one go each
        for token in turn {
            let Some(conn) = conns.get_mut(&token) else {
                continue; // closed already
            };
            match serve(conn, &mut buf, &mut rng) {
                Next::Event => {}
                Next::Again => again.push(token),
                Next::Linger => {
                    lingering.push_back((now + LINGER, token));
                    again.push(token);
                }
                Next::Close => close(&poll, &mut conns, token)?,
            }
        }
    }
}

/// Closes a connection, if it is still open.
fn close(poll: &Poll, conns: &mut HashMap<Token, Conn>, token: Token) -> std::io::Result<()> {
    if let Some(mut gone) = conns.remove(&token) {
        poll.registry().deregister(&mut gone.stream)?; // then closed by drop
    }
    Ok(())
}

/// Accepts every queued connection (until WouldBlock).
fn accept(
    listener: &TcpListener,
    poll: &Poll,
    conns: &mut HashMap<Token, Conn>,
    next: &mut usize,
) -> std::io::Result<()> {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let token = Token(*next);
                *next += 1;
                let both = Interest::READABLE | Interest::WRITABLE;
                poll.registry().register(&mut stream, token, both)?;
                conns.insert(
                    token,
                    Conn {
                        stream,
                        line: Vec::new(),
                        out: Vec::new(),
                        sent: 0,
                        done: false,
                        eof: false,
                        lingering: false,
                    },
                );
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => {
                eprintln!("accept: {e}");
                return Ok(());
            }
        }
    }
}

/// One go for a connection, on a readiness event (readable or writable:
/// the flags are hints; the reads and writes tell the truth) or a turn owed
/// to it: write what waits, then read until the socket is empty
/// (`WouldBlock`) or this turn's budget is spent, writing each read's
/// answers at once.
fn serve(conn: &mut Conn, buf: &mut [u8], rng: &mut u64) -> Next {
    let mut budget = READ_BUDGET;
    loop {
        if !flush(conn) {
            return Next::Close;
        }
        if conn.done && !conn.lingering {
            if conn.sent < conn.out.len() {
                // Answers still going out: the writable edges bring us back.
                return Next::Event;
            }
            if conn.eof {
                return Next::Close; // nothing unread: a plain close is clean
            }
            // `STOP`, perhaps with more behind it: our FIN now, their FIN
            // (or the deadline) before the close.
            if conn.stream.shutdown(Shutdown::Write).is_err() {
                return Next::Close;
            }
            conn.lingering = true;
            return Next::Linger;
        }
        if conn.out.len() - conn.sent >= OUT_CAP {
            // Backed up: read nothing until the client takes its answers.
            // The writable edge that makes room brings us back, to the
            // flush above and then on to read.
            return Next::Event;
        }
        if budget == 0 {
            // Others go first; the socket may still hold bytes, and no
            // edge will come for them: the loop owes us a turn.
            return Next::Again;
        }
        match conn.stream.read(buf) {
            // Lingering, its EOF: everything it sent is read; close cleanly.
            Ok(0) if conn.lingering => return Next::Close,
            Ok(0) => {
                // EOF: answer what came, then close.
                conn.eof = true;
                conn.done = true;
            }
            Ok(n) => {
                budget = budget.saturating_sub(n);
                if !conn.lingering {
                    answer(conn, &buf[..n], rng);
                } // lingering: discarded
            }
            // Drained: only now will new bytes bring a new event.
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Event,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Next::Close,
        }
    }
}

/// Writes `out[sent..]` until it is all gone or the kernel refuses
/// (`WouldBlock`: the rest waits for a writable edge). False on an error.
fn flush(conn: &mut Conn) -> bool {
    while conn.sent < conn.out.len() {
        match conn.stream.write(&conn.out[conn.sent..]) {
            Ok(0) => return false,
            Ok(n) => conn.sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    conn.out.clear(); // all taken: start again at the front
    conn.sent = 0;
    true
}

/// Adds an answer to `out` for every line completed by `bytes`; `STOP`
/// ends the session.
fn answer(conn: &mut Conn, mut bytes: &[u8], rng: &mut u64) {
    while let Some(i) = bytes.iter().position(|&b| b == b'\n') {
        conn.line.extend_from_slice(&bytes[..i]);
        bytes = &bytes[i + 1..];
        if conn.line.strip_suffix(b"\r").unwrap_or(&conn.line) == b"STOP" {
            conn.done = true;
            return;
        }
        conn.line.clear();
        // xorshift64: fast, not cryptographic; any u64 but 0.
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        writeln!(conn.out, "{rng}").expect("a Vec takes every write");
    }
    conn.line.extend_from_slice(bytes);
}

/// A non-zero seed from the clock.
fn seed() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(1, |d| d.as_nanos() as u64 | 1)
}
