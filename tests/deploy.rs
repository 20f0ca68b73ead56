//! Deployment, tested with the real programs: systemd socket activation
//! (`systemd-socket-activate`), several processes on one port
//! (`--reuse-port`), the PROXY protocol, HAProxy in front of two servers,
//! and the journald log format. docs/deploy.md shows the same commands.

mod common;

use common::{Client, Proc, Server, WAIT, have, listening_addr};
use rustix::process::Signal;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago (for programs that cannot
/// be told to pick one and report it).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

#[test]
fn socket_activation_serves_on_the_passed_socket_and_exits_cleanly() {
    if !have("systemd-socket-activate", "systemd") {
        return;
    }
    let port = free_port();
    // As docs/deploy.md: systemd-socket-activate binds, and starts randline
    // (with LISTEN_FDS=1) when the first client connects. A --listen of its
    // own is served beside it.
    let mut sa = Proc::spawn(
        Command::new("systemd-socket-activate")
            .args(["-l", &format!("127.0.0.1:{port}")])
            .arg(common::bin())
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info"),
    );
    sa.log.wait_for("Listening on");
    let passed: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut first = Client::connect(passed);
    assert!((1..=99).contains(&first.ask("hello")));
    sa.log
        .wait_for("socket activation: 1 listening sockets passed");
    assert_eq!(
        listening_addr(&sa.log.wait_for("listening on 127.0.0.1")),
        passed
    );
    let own = listening_addr(&sa.log.wait_for_nth("listening on 127.0.0.1", 2));
    assert!((1..=99).contains(&Client::connect(own).ask("beside")));
    // More clients on the passed socket.
    for _ in 0..5 {
        assert!((1..=99).contains(&Client::connect(passed).ask("again")));
    }
    // SIGTERM (what systemd sends to stop a unit): drain, exit 0.
    sa.signal(Signal::TERM);
    first.expect_eof();
    assert!(sa.wait_exit().success(), "{}", sa.log.text());
    sa.log.wait_for("shutdown complete");
}

#[test]
fn reuse_port_lets_two_processes_share_a_port() {
    let one = Server::start(&["--reuse-port"]);
    let port = one.addr.port();
    let mut cmd = Command::new(common::bin());
    cmd.args(["--listen", &one.addr.to_string(), "--reuse-port"]);
    let two = Server::spawn(cmd);
    assert_eq!(two.addr.port(), port);
    // The kernel spreads connections by a hash of their addresses: over 40
    // clients (40 source ports), both processes get some.
    for _ in 0..40 {
        assert!((1..=99).contains(&Client::connect(one.addr).ask("which one?")));
    }
    two.log.wait_for("serving");
    one.log.wait_for("serving");
    // Each log is read on its own thread: the last `serving` lines may
    // still be on their way when the last answer has come.
    let served = || one.log.count("serving 127.0.0.1") + two.log.count("serving 127.0.0.1");
    common::wait_until("40 serving lines in the two logs", common::WAIT, || {
        served() >= 40
    });
    assert_eq!(served(), 40);
}

#[test]
fn without_reuse_port_a_second_process_cannot_bind() {
    let one = Server::start(&[]);
    let mut second = Command::new(common::bin());
    second.args(["--listen", &one.addr.to_string()]);
    let out = common::run_cmd(second);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on") && err.contains("in use"),
        "{err}"
    );
}

/// A PROXY v2 header for a TCP/IPv4 client.
fn proxy_v2(client: SocketAddr, command: u8) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    let SocketAddr::V4(c) = client else {
        panic!("IPv4 only here")
    };
    if command == 0 {
        h.extend_from_slice(&[0x00, 0, 0]);
        return h;
    }
    h.extend_from_slice(&[0x11, 0, 12]);
    h.extend_from_slice(&c.ip().octets());
    h.extend_from_slice(&[192, 0, 2, 1]);
    h.extend_from_slice(&c.port().to_be_bytes());
    h.extend_from_slice(&7000u16.to_be_bytes());
    h
}

#[test]
fn proxy_v1_names_the_real_client_and_lines_follow_in_the_same_packet() {
    let server = Server::start(&["--proxy-protocol"]);
    let mut c = server.connect();
    c.send(b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 7000\r\none\ntwo\n");
    assert!((1..=99).contains(&c.number()));
    assert!((1..=99).contains(&c.number()));
    let line = server.log.wait_for("serving 203.0.113.7:56324");
    assert!(line.contains("(proxied by 127.0.0.1:"), "{line}");
    // The header was not a line: two answers, and the connection is fine.
    assert!((1..=99).contains(&c.ask("three")));
}

#[test]
fn proxy_v2_split_byte_by_byte_then_lines() {
    let server = Server::start(&["--proxy-protocol", "--seed", "5"]);
    let mut c = server.connect();
    let header = proxy_v2("198.51.100.9:4000".parse().expect("addr"), 1);
    for b in &header {
        c.send(&[*b]);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!((1..=99).contains(&c.ask("after the header")));
    server.log.wait_for("serving 198.51.100.9:4000 (proxied by");
    // v2 LOCAL (a health check): answered, and not an info line.
    let mut check = server.connect();
    check.send(&proxy_v2("127.0.0.1:1".parse().expect("addr"), 0));
    assert!((1..=99).contains(&check.ask("health")));
    server.log.wait_for("names no client: LOCAL or UNKNOWN");
}

#[test]
fn a_connection_without_a_valid_header_is_closed_unanswered() {
    let server = Server::start(&["--proxy-protocol"]);
    for bad in [
        &b"hello\nworld\n"[..],
        b"PROXY TCP4 not-an-ip 192.0.2.1 1 2\r\nhello\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xffhello\n",
    ] {
        let mut c = server.connect();
        c.send(bad);
        // No answer at all: only the server's FIN.
        assert_eq!(c.rest_until_eof(), b"", "{bad:?} was answered");
    }
    server.log.wait_for_nth("no valid PROXY header", 3);
    assert_eq!(server.log.count("serving"), 0);
}

#[test]
fn a_connection_that_never_sends_its_header_is_closed_in_time() {
    let server = Server::start(&["--proxy-protocol"]);
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.write_all(b"PROXY TCP4 ").expect("send part of a header");
    // randline gives a header 10 s from accept, dripping or not.
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).expect("read EOF"), 0);
    assert!(started.elapsed() >= Duration::from_secs(9));
    server.log.wait_for("no PROXY header in time");
}

#[test]
fn journald_format_has_priorities_and_no_timestamps() {
    let mut cmd = Command::new(common::bin());
    cmd.args(["--listen", "127.0.0.1:0", "--log-format", "journald"])
        .env("RUST_LOG", "debug");
    let server = Server::spawn(cmd);
    let mut c = server.connect();
    c.ask("hi");
    server.log.wait_for("<6>serving 127.0.0.1:");
    server.log.wait_for("<7>accepted 127.0.0.1:");
    assert!(
        server.log.text().lines().all(|l| l.starts_with('<')),
        "{}",
        server.log.text()
    );

    // Automatic under systemd (JOURNAL_STREAM set), unless told otherwise.
    let mut cmd = Command::new(common::bin());
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("JOURNAL_STREAM", "8:1234");
    let auto = Server::spawn(cmd);
    auto.log.wait_for("<6>limits: memory ");
    let mut cmd = Command::new(common::bin());
    cmd.args(["--listen", "127.0.0.1:0", "--log-format", "text"])
        .env("JOURNAL_STREAM", "8:1234");
    let text = Server::spawn(cmd);
    assert!(text.log.wait_for("limits:").contains("Z INFO  limits:"));
}

/// docs/deploy.md's HAProxy configuration, for a frontend on `port` and
/// the given backends.
fn haproxy_config(port: u16, backends: &[SocketAddr]) -> String {
    let mut cfg = format!(
        "global\n    log stderr format short local0 info\n\
         defaults\n    mode tcp\n    log global\n    timeout connect 1s\n\
         \x20   timeout client 30s\n    timeout server 30s\n\
         frontend randline\n    bind 127.0.0.1:{port}\n    default_backend randlines\n\
         backend randlines\n    balance roundrobin\n    option tcp-check\n\
         \x20   tcp-check send health\\n\n    tcp-check expect rstring ^-?[0-9]+$\n"
    );
    for (i, b) in backends.iter().enumerate() {
        cfg.push_str(&format!(
            "    server r{} {b} send-proxy-v2 check inter 200ms fall 1 rise 1\n",
            i + 1
        ));
    }
    cfg
}

/// Connects through the balancer, asks one line; returns our own address.
fn ask_through(front: SocketAddr) -> SocketAddr {
    let mut c = Client::connect(front);
    let me = c.local_addr();
    assert!((1..=99).contains(&c.ask("through haproxy")));
    me
}

#[test]
fn haproxy_in_front_of_two_servers() {
    if !have("haproxy", "haproxy") {
        return;
    }
    let r1 = Server::start(&["--proxy-protocol"]);
    let r2 = Server::start(&["--proxy-protocol"]);
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("randline-haproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, haproxy_config(port, &[r1.addr, r2.addr])).expect("write config");
    let haproxy = Proc::spawn(Command::new("haproxy").arg("-db").arg("-f").arg(&cfg));
    let front: SocketAddr = ([127, 0, 0, 1], port).into();

    // Wait until haproxy accepts (it binds after reading its config).
    if common::poll(WAIT, || TcpStream::connect(front).ok()).is_none() {
        panic!("haproxy did not start:\n{}", haproxy.log.text());
    }
    // Both backends are UP (their health checks passed) once each has
    // served through the balancer: round robin alternates.
    let clients: Vec<SocketAddr> = (0..20).map(|_| ask_through(front)).collect();
    for me in &clients {
        // Each client's real address is logged by exactly one backend (the
        // log is read on other threads: wait for it, then count).
        let needle = format!("serving {me} (proxied by");
        common::wait_until(&format!("{me} logged as served"), WAIT, || {
            r1.log.count(&needle) + r2.log.count(&needle) > 0
        });
        assert_eq!(r1.log.count(&needle) + r2.log.count(&needle), 1, "{me}");
    }
    let (n1, n2) = (r1.log.count("proxied by"), r2.log.count("proxied by"));
    assert!(n1 >= 5 && n2 >= 5, "spread {n1} / {n2}");
    std::fs::remove_dir_all(&dir).ok();

    // One backend dies: the health check takes it out, and every new
    // client is still answered, by the other.
    drop(r1);
    haproxy.log.wait_for("r1 is DOWN");
    let before = r2.log.count("proxied by");
    for _ in 0..10 {
        let me = ask_through(front);
        r2.log.wait_for(&format!("serving {me} (proxied by"));
    }
    assert_eq!(r2.log.count("proxied by"), before + 10);
}

#[test]
fn contrib_units_pass_systemd_analyze_verify() {
    if !have("systemd-analyze", "systemd") {
        return;
    }
    // The services name /usr/bin/randline (where the Debian package puts
    // it; docs/deploy.md seds it for /usr/local/bin); verify checks that
    // the binary exists, so point them at the one under test.
    let dir = std::env::temp_dir().join(format!("randline-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let contrib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let mut units = Vec::new();
    for name in ["randline.socket", "randline.service", "randline@.service"] {
        let text = std::fs::read_to_string(contrib.join(name)).expect("read unit");
        if name.ends_with(".service") {
            assert!(
                text.contains("\nExecStart=/usr/bin/randline "),
                "{name}: ExecStart must name /usr/bin/randline"
            );
        }
        let text = text.replace("/usr/bin/randline", common::bin());
        // A template is verified as one of its instances.
        let file = dir.join(name.replace("@.", "@0."));
        std::fs::write(&file, text).expect("write unit");
        units.push(file);
    }
    // Their Documentation= names man:randline(1), which verify looks up
    // with man: the page is docs/randline.1, not installed here.
    let man1 = dir.join("man").join("man1");
    std::fs::create_dir_all(&man1).expect("temp man dir");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/randline.1"),
        man1.join("randline.1"),
    )
    .expect("copy the man page");
    let mut verify = Command::new("systemd-analyze");
    verify
        .arg("verify")
        .args(&units)
        .env("MANPATH", dir.join("man"));
    let out = common::run_cmd(verify);
    std::fs::remove_dir_all(&dir).ok();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}
