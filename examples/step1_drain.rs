//! Step 1 of the readiness lab (docs/steps.md): **drain until
//! `WouldBlock`**. This file repeats the previous step on purpose, whole,
//! so that each step runs on its own: `diff examples/minimal.rs
//! examples/step1_drain.rs` shows the rule. Run: `cargo run --example
//! step1_drain -- PORT`.
//!
//! The rule: mio is edge-triggered. An event says "something changed", once;
//! bytes already in the socket bring no new event. So every event is served
//! by reading until the kernel says `WouldBlock` (or EOF), never once.
//!
//! Without it (examples/minimal.rs): a client that pipelines more lines than
//! one read takes gets the first few answers, then nothing. Its other lines
//! sit in the server's socket while the server sleeps: a stall, until the
//! client happens to send again. `cargo test --test steps step1` shows it.
//!
//! Still missing (the next steps): answers the kernel cannot take at once
//! are lost; no limits on memory or on one client's share of the loop.

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

/// One readiness event: read until the socket is empty (`WouldBlock`),
/// answering as we go. False when the client is done.
fn serve(conn: &mut Conn, buf: &mut [u8], rng: &mut u64) -> bool {
    loop {
        match conn.stream.read(buf) {
            Ok(0) => return false, // EOF: the client is done
            Ok(n) => {
                if !answer(conn, &buf[..n], rng) {
                    return false;
                }
            }
            // Drained: only now will new bytes bring a new event.
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
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
