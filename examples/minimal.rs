//! The smallest honest mio line server: every line a client sends is
//! answered with one random integer on a line of its own; `STOP` ends the
//! session. `cargo run --example minimal -- PORT` serves 127.0.0.1:PORT
//! (`0` picks a free port; stderr says `listening on ADDR`).
//!
//! Correct for what it does, and naive on purpose: it reads **once** per
//! readiness event. mio is edge-triggered, so bytes left in the socket
//! bring no new event: pipeline more lines than one read takes and the
//! rest wait, unanswered, until the client sends again. (Nor does it keep
//! answers the kernel will not take at once: they are dropped.) Each file
//! `examples/stepN_*.rs` adds one rule; docs/steps.md is the lab. No
//! limits either: a line without its `\n` may grow without end.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};

const LISTENER: Token = Token(usize::MAX);

/// One client: its socket and the start of a line not yet complete.
struct Conn {
    stream: TcpStream,
    line: Vec<u8>,
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
                poll.registry()
                    .register(&mut stream, token, Interest::READABLE)?;
                let line = Vec::new();
                conns.insert(token, Conn { stream, line });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => {
                eprintln!("accept: {e}");
                return Ok(());
            }
        }
    }
}

/// One readiness event: **one** read, its lines answered. False when the
/// client is done.
fn serve(conn: &mut Conn, buf: &mut [u8], rng: &mut u64) -> bool {
    match conn.stream.read(buf) {
        Ok(0) => false, // EOF: the client is done
        Ok(n) => answer(conn, &buf[..n], rng),
        // An event is a hint, not a promise: nothing to read yet.
        Err(e) if e.kind() == ErrorKind::WouldBlock => true,
        Err(e) => e.kind() == ErrorKind::Interrupted,
    }
}

/// Answers every line completed by `bytes`; false after `STOP` or a
/// failed write.
fn answer(conn: &mut Conn, mut bytes: &[u8], rng: &mut u64) -> bool {
    let (mut out, mut open) = (Vec::new(), true);
    while let Some(i) = bytes.iter().position(|&b| b == b'\n') {
        conn.line.extend_from_slice(&bytes[..i]);
        bytes = &bytes[i + 1..];
        if conn.line.strip_suffix(b"\r").unwrap_or(&conn.line) == b"STOP" {
            open = false;
            break;
        }
        conn.line.clear();
        // xorshift64: fast, not cryptographic; any u64 but 0.
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        writeln!(out, "{rng}").expect("a Vec takes every write");
    }
    conn.line.extend_from_slice(bytes);
    match conn.stream.write_all(&out) {
        // The socket is non-blocking: what the kernel does not take now
        // (its buffer is full: the client is not reading) is lost.
        Err(e) if e.kind() == ErrorKind::WouldBlock => open,
        result => result.is_ok() && open,
    }
}

/// A non-zero seed from the clock.
fn seed() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(1, |d| d.as_nanos() as u64 | 1)
}
