//! Step 2 of the readiness lab (docs/steps.md): **keep what the kernel
//! refuses, and write it on the writable edge**. This file repeats the
//! previous step on purpose, whole, so that each step runs on its own:
//! `diff examples/step1_drain.rs examples/step2_pending.rs` shows the rule.
//! Run: `cargo run --example step2_pending -- PORT`.
//!
//! The rule: a non-blocking write may take only part of what it is given
//! (the socket's send buffer is full while the client is not reading). What
//! is left waits in the connection's `out`, and goes when the kernel makes
//! room: a *writable* event. Interest is READABLE | WRITABLE, registered
//! once at accept: no re-registering per answer, and a writable edge that
//! finds nothing to write costs nothing.
//!
//! Without it (examples/step1_drain.rs): a client that sends many lines and
//! reads its answers only later finds answers missing: those the kernel
//! refused were dropped, and nothing tells the client. `cargo test --test
//! steps step2` shows it.
//!
//! Still missing (the next steps): `out` has no limit, so a client that
//! never reads makes the server's memory grow without end.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};

const LISTENER: Token = Token(usize::MAX);

/// One client: its socket, the start of a line not yet complete, and the
/// answers the kernel has not taken yet.
struct Conn {
    stream: TcpStream,
    line: Vec<u8>,
    /// Answers; `out[sent..]` is what the kernel has not taken yet.
    out: Vec<u8>,
    sent: usize,
    /// EOF or `STOP` seen: read no more, close once `out` is written.
    done: bool,
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
    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal: poll again
            result => result?,
        }
        for event in events.iter() {
            let token = event.token();
            if token == LISTENER {
                accept(&listener, &poll, &mut conns, &mut next)?;
            } else if let Some(conn) = conns.get_mut(&token)
                && !serve(conn, &mut buf, &mut rng)
                && let Some(mut gone) = conns.remove(&token)
            {
                poll.registry().deregister(&mut gone.stream)?; // then closed by drop
            }
        }
    }
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

/// One readiness event, readable or writable (the flags are hints; the
/// reads and writes tell the truth): write what waits, then read until the
/// socket is empty (`WouldBlock`), writing each read's answers at once.
/// False when the connection is to be closed.
fn serve(conn: &mut Conn, buf: &mut [u8], rng: &mut u64) -> bool {
    loop {
        if !flush(conn) {
            return false;
        }
        if conn.done {
            // Closed once every answer is out; until then, the writable
            // edges bring us back here.
            return conn.sent < conn.out.len();
        }
        match conn.stream.read(buf) {
            Ok(0) => conn.done = true, // EOF: answer what came, then close
            Ok(n) => answer(conn, &buf[..n], rng),
            // Drained: only now will new bytes bring a new event.
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
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
