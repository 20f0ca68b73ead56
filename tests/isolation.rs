//! Nothing crosses between clients: one client's answers never reach
//! another, whatever the first one's socket does.
//!
//! The bug these guard against (found by a randomized client, fixed by
//! `answers::Loan`): a client's answers were framed into the loop's shared
//! answer buffer, a later read of the same batch failed (the client had
//! reset), and the buffer kept them: the next client driven sent them as
//! its own. The tests stop the server (SIGSTOP) so that the reset client
//! and the innocent one land in one event batch, in that order, every time.
//! The randomized version of this promise is the chaos client's
//! (tests/chaos.rs).

mod common;

use common::{Client, Server, WAIT, numbers};
use std::net::TcpStream;
use std::process::Command;

/// A server that traces every event: the tests wait for the trace to know
/// the server has seen what they did before they stop it.
fn start_traced(args: &[&str]) -> Server {
    let mut cmd = Command::new(common::bin());
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "randline=trace");
    Server::spawn(cmd)
}

/// Connects a client and waits until the server has taken the first event
/// of its socket (the writable edge of registration). A client that was
/// answered something must not be used here: the kernel's ACK of that
/// answer raises a writable edge later (a delayed ACK, up to 40 ms), which
/// would put it first in the batch.
fn connect_settled(server: &Server) -> (Client, usize) {
    let client = server.connect();
    let me = client.local_addr();
    let accepted = server.log.wait_for(&format!("accepted {me} as token "));
    let token = accepted
        .split("as token ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no token in {accepted:?}"));
    server.log.wait_for(&format!("({me}): writable"));
    (client, token)
}

/// The exact reproduction from the bug report: B sent two lines and got
/// five answers, A's three first.
#[test]
fn a_reset_clients_answers_never_reach_the_next_client() {
    let server = start_traced(&[]);
    for round in 0..5 {
        let (mut b, _) = connect_settled(&server);
        let (mut a, _) = connect_settled(&server);
        server.pause();
        a.send(b"1\n2\n3\n");
        a.reset();
        b.send(b"x\n");
        server.resume();
        b.send(b"y\nSTOP\n");
        let got = numbers(&b.rest_until_eof());
        assert_eq!(
            got.len(),
            2,
            "round {round}: B sent 2 lines and got {got:?}; log:\n{}",
            server.log.text()
        );
    }
}

/// The same with `--proxy-protocol`: a client whose header is not yet
/// complete has been answered nothing, so it must receive nothing.
#[test]
fn a_reset_clients_answers_never_reach_a_client_still_sending_its_header() {
    let server = start_traced(&["--proxy-protocol"]);
    let header = b"PROXY TCP4 192.0.2.1 192.0.2.2 4000 8001\r\n";
    for round in 0..5 {
        let (mut b, b_token) = connect_settled(&server);
        let read = format!("token {b_token}: read 10 bytes");
        let seen = server.log.count(&read);
        b.send(&header[..10]);
        server.log.wait_for_nth(&read, seen + 1);
        let (mut a, _) = connect_settled(&server);
        server.pause();
        a.send(header);
        a.send(b"1\n2\n3\n");
        a.reset();
        b.send(&header[10..20]); // still no complete header
        server.resume();
        b.send(&header[20..]);
        b.send(b"STOP\n");
        let got = b.rest_until_eof();
        assert!(
            got.is_empty(),
            "round {round}: B sent no line and got {:?}; log:\n{}",
            String::from_utf8_lossy(&got),
            server.log.text()
        );
    }
}

/// And a client turned away by `--max-connections`: its only words are
/// `ERR server busy`.
#[test]
fn a_reset_clients_answers_never_reach_a_rejected_client() {
    for round in 0..3 {
        let server = start_traced(&["--max-connections", "2"]);
        let (mut c, _) = connect_settled(&server); // holds one of the two places
        let (mut a, _) = connect_settled(&server);
        server.pause();
        a.send(b"1\n2\n3\n");
        a.reset();
        // Both wait in the backlog. After A's events, B takes A's place and
        // D is one too many: rejected in the same batch.
        let connect = || {
            Client::from_stream(TcpStream::connect_timeout(&server.addr, WAIT).expect("connect"))
        };
        let mut b = connect();
        let mut d = connect();
        server.resume();
        let rejected = String::from_utf8_lossy(&d.rest_until_eof()).into_owned();
        assert_eq!(
            rejected,
            "ERR server busy\n",
            "round {round}: the rejected client got more; log:\n{}",
            server.log.text()
        );
        b.send(b"STOP\n");
        let rest = b.rest_until_eof();
        assert!(
            rest.is_empty(),
            "round {round}: B got {:?}; log:\n{}",
            String::from_utf8_lossy(&rest),
            server.log.text()
        );
        let n = c.ask("still here");
        assert!((1..=99).contains(&n), "C is still served: {n}");
    }
}
