//! Who may claim an address, who may connect: `--proxy-from` and
//! `--unix-mode`.

mod common;

use common::{Client, Server, WAIT};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A client whose connection comes from `source` (a loopback address).
fn connect_from(server: &Server, source: [u8; 4]) -> Client {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::from((source, 0)).into())
        .expect("bind the source address");
    s.connect_timeout(&server.addr.into(), WAIT)
        .expect("connect");
    Client::from_stream(s.into())
}

const HEADER: &[u8] = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 8001\r\n";

#[test]
fn only_the_named_proxies_may_connect() {
    let server = Server::start(&["--proxy-protocol", "--proxy-from", "127.0.0.2/32"]);
    // From the proxy: served, as the client its header names.
    let mut proxy = connect_from(&server, [127, 0, 0, 2]);
    proxy.send(HEADER);
    assert!((1..=99).contains(&proxy.ask("hello")));
    server
        .log
        .wait_for("serving 203.0.113.7:56324 (proxied by 127.0.0.2:");
    // From anywhere else: closed unanswered, whatever it sends.
    for _ in 0..3 {
        let mut other = connect_from(&server, [127, 0, 0, 1]);
        // Sending may already fail: it may be closed before it speaks.
        let _ = other.write_all(HEADER);
        let _ = other.write_all(b"hello\n");
        let mut got = Vec::new();
        let _ = other.read_to_end(&mut got); // EOF or a reset
        assert!(got.is_empty(), "an untrusted peer got {got:?}");
    }
    assert_eq!(server.stats()["rejected_untrusted"], 3);
    // Logged once, not once per connection.
    assert_eq!(
        server.log.count("not in --proxy-from"),
        1,
        "{}",
        server.log.text()
    );
    // The proxy is still served.
    assert!((1..=99).contains(&proxy.ask("again")));
}

#[test]
fn without_proxy_from_the_server_says_it_trusts_everyone() {
    let server = Server::start(&["--proxy-protocol"]);
    server.log.wait_for("--proxy-protocol without --proxy-from");
    let quiet = Server::start(&["--proxy-protocol", "--proxy-from", "127.0.0.0/8"]);
    quiet.connect().send(HEADER);
    assert_eq!(quiet.log.count("without --proxy-from"), 0);
}

#[test]
fn unix_socket_peers_are_trusted() {
    let dir = tempdir();
    let path = dir.join("r.sock");
    let server = Server::start(&[
        "--proxy-protocol",
        "--proxy-from",
        "10.0.0.0/8",
        "--unix",
        path.to_str().expect("utf-8 path"),
    ]);
    let mut c = UnixStream::connect(&path).expect("connect");
    c.set_read_timeout(Some(WAIT)).expect("timeout");
    c.write_all(HEADER).expect("send");
    c.write_all(b"hello\nSTOP\n").expect("send");
    let mut got = String::new();
    c.read_to_string(&mut got).expect("read");
    assert_eq!(common::numbers(got.as_bytes()).len(), 1, "{got:?}");
    drop(server);
}

#[test]
fn unix_mode_gives_the_socket_file_exactly_those_bits() {
    let dir = tempdir();
    for mode in [0o600u32, 0o660, 0o666] {
        let path = dir.join(format!("m{mode:o}.sock"));
        let server = Server::start(&[
            "--unix",
            path.to_str().expect("utf-8 path"),
            "--unix-mode",
            &format!("{mode:o}"),
        ]);
        let meta = std::fs::symlink_metadata(&path).expect("the socket file");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, mode);
        // Served, and nothing left of the private directory it was made in.
        let mut c = UnixStream::connect(&path).expect("connect");
        c.set_read_timeout(Some(WAIT)).expect("timeout");
        c.write_all(b"x\nSTOP\n").expect("send");
        let mut got = String::new();
        c.read_to_string(&mut got).expect("read");
        assert_eq!(common::numbers(got.as_bytes()).len(), 1);
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        drop(server);
    }
    // A live server's socket is never replaced.
    let path = dir.join("live.sock");
    let p = path.to_str().expect("utf-8 path");
    let _live = Server::start(&["--unix", p]);
    let out = common::run_cmd({
        let mut c = std::process::Command::new(common::bin());
        c.args(["--unix", p, "--unix-mode", "600"]);
        c
    });
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on unix:"));
    std::thread::sleep(Duration::from_millis(10));
}

/// A fresh directory under the system's temporary one.
fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "randline-trust-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
