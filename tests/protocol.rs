//! The line protocol, spoken to the real binary over real sockets.

mod common;

use common::{Server, numbers};
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

#[test]
fn every_line_gets_one_number_from_1_to_99() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    for line in ["hello", "", "   ", "42", "stop", "STOP now"] {
        let n = c.ask(line);
        assert!((1..=99).contains(&n), "{n} for {line:?}");
    }
}

#[test]
fn stop_ends_the_session_after_earlier_answers() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    c.send(b"a\nb\n  STOP \r\n");
    let got = numbers(&c.rest_until_eof());
    assert_eq!(got.len(), 2);
}

#[test]
fn stop_is_case_sensitive_and_exact() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    c.send(b"stop\nStop\nSTOPS\nSTO P\nSTOP\x0b\n\xc2\xa0STOP\nSTOP\n");
    assert_eq!(numbers(&c.rest_until_eof()).len(), 6);
}

#[test]
fn stop_with_trailing_bytes_is_not_reset() {
    // The client keeps sending after STOP; the server must not answer the
    // unread bytes with a reset that would destroy the earlier answers.
    let server = Server::start(&[]);
    let mut c = server.connect();
    let mut burst = b"one\ntwo\nthree\nSTOP\n".to_vec();
    burst.extend(std::iter::repeat_n(b'x', 200_000));
    burst.extend_from_slice(b"\nfour\n");
    // Write from a second handle so the read below runs concurrently.
    let mut writer = c.writer();
    let t = std::thread::spawn(move || {
        let _ = writer.write_all(&burst);
    });
    let got = numbers(&c.rest_until_eof());
    assert_eq!(got.len(), 3, "answers before STOP, then a clean EOF");
    t.join().expect("writer");
}

#[test]
fn pipelined_lines_are_all_answered_in_order() {
    // 10,000 lines in one write; a seed makes the order checkable.
    let lines = 10_000;
    let expected = {
        let server = Server::start(&["--seed", "11", "--min", "0", "--max", "1000000"]);
        let mut c = server.connect();
        (0..lines)
            .map(|i| c.ask(&format!("line {i}")))
            .collect::<Vec<_>>()
    };
    let server = Server::start(&["--seed", "11", "--min", "0", "--max", "1000000"]);
    let mut c = server.connect();
    let burst: String = (0..lines).map(|i| format!("line {i}\n")).collect();
    let mut writer = c.writer();
    let t = std::thread::spawn(move || writer.write_all(burst.as_bytes()).expect("write"));
    let got: Vec<i64> = (0..lines).map(|_| c.number()).collect();
    t.join().expect("writer");
    assert_eq!(
        got, expected,
        "same seed, same lines: same answers in the same order"
    );
}

#[test]
fn lines_split_byte_by_byte_are_framed_like_whole_ones() {
    let input = b"alpha\r\n\n  beta gamma \nSTOP\n";
    let whole = {
        let server = Server::start(&["--seed", "5"]);
        let mut c = server.connect();
        c.send(input);
        c.rest_until_eof()
    };
    let server = Server::start(&["--seed", "5"]);
    let mut c = server.connect();
    for &b in input.iter() {
        c.send(&[b]);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(numbers(&whole).len(), 3);
    assert_eq!(c.rest_until_eof(), whole);
}

#[test]
fn half_close_answers_complete_lines_then_closes() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    c.send(b"a\nb\nc\nunterminated");
    c.half_close();
    assert_eq!(numbers(&c.rest_until_eof()).len(), 3);
    // Lines and FIN sent before the server looks: they often arrive in one
    // readiness event, and the FIN must not be missed after the data.
    for _ in 0..20 {
        let mut c = server.connect();
        c.send(b"1\n2\n");
        c.half_close();
        assert_eq!(numbers(&c.rest_until_eof()).len(), 2);
    }
}

#[test]
fn a_seed_gives_the_same_numbers_on_every_run() {
    let run = || {
        let server = Server::start(&["--seed", "42", "--min", "1", "--max", "1000000000"]);
        let mut c = server.connect();
        (0..20).map(|_| c.ask("x")).collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first, run());
    let unseeded = Server::start(&["--min", "1", "--max", "1000000000"]);
    let mut c = unseeded.connect();
    let other: Vec<i64> = (0..20).map(|_| c.ask("x")).collect();
    assert_ne!(first, other, "without --seed the numbers come from the OS");
}

#[test]
fn bounds_are_inclusive_and_any_i64_works() {
    let server = Server::start(&["--min", "-3", "--max", "3"]);
    let mut c = server.connect();
    c.send("x\n".repeat(2000).as_bytes());
    let got: Vec<i64> = (0..2000).map(|_| c.number()).collect();
    for v in -3..=3 {
        assert!(got.contains(&v), "{v} never seen in 2000 answers");
    }
    assert!(got.iter().all(|v| (-3..=3).contains(v)));

    let server = Server::start(&[
        "--min",
        "-9223372036854775808",
        "--max",
        "9223372036854775807",
    ]);
    let mut c = server.connect();
    let got: Vec<i64> = (0..50).map(|_| c.ask("x")).collect();
    assert!(got.iter().any(|v| *v < 0) && got.iter().any(|v| *v > 0));

    let server = Server::start(&["--min", "7", "--max", "7"]);
    assert_eq!(server.connect().ask("x"), 7);
}

#[test]
fn numbers_are_roughly_uniform() {
    // 9,000 draws over 1..=3: each value's count is binomial, expected
    // 3,000 times with a standard deviation of sqrt(9000 · 1/3 · 2/3) =
    // sqrt(2000) ≈ 44.7. A fair generator lands within ±300: about 6.7
    // standard deviations (exact binomial tails: a fair generator fails
    // this less than once in 10^10 runs).
    let server = Server::start(&["--min", "1", "--max", "3"]);
    let mut c = server.connect();
    c.send("x\n".repeat(9000).as_bytes());
    let mut counts = [0usize; 3];
    for _ in 0..9000 {
        counts[(c.number() - 1) as usize] += 1;
    }
    for n in counts {
        assert!((2700..=3300).contains(&n), "{counts:?}");
    }
}

#[test]
fn any_bytes_are_a_line() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    c.send(b"\xff\xfe\x00\x01\n\xe2\x80\x83STOP\n\t\x0c \r\n");
    for _ in 0..3 {
        assert!((1..=99).contains(&c.number()));
    }
}

#[test]
fn clients_are_independent() {
    let server = Server::start(&[]);
    let mut a = server.connect();
    let mut b = server.connect();
    a.send(b"half a li");
    assert!((1..=99).contains(&b.ask("b's line")));
    a.send(b"ne\n");
    assert!((1..=99).contains(&a.number()));
    b.send(b"STOP\n");
    b.expect_eof();
    assert!((1..=99).contains(&a.ask("still here")));
}

#[test]
fn ipv6_loopback_and_unix_sockets_serve_the_same_protocol() {
    let dir = std::env::temp_dir().join(format!("randline-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("s.sock");
    let mut cmd = Command::new(common::bin());
    cmd.args(["--listen", "[::1]:0", "--unix"]).arg(&path);
    let server = Server::spawn(cmd);
    assert!(server.addr.is_ipv6());
    assert!((1..=99).contains(&server.connect().ask("v6")));

    server.log.wait_for("listening on unix:");
    let mut u = std::os::unix::net::UnixStream::connect(&path).expect("unix connect");
    u.set_read_timeout(Some(common::WAIT)).expect("timeout");
    u.write_all(b"hi\nSTOP\n").expect("write");
    let mut got = Vec::new();
    u.read_to_end(&mut got).expect("read");
    assert_eq!(numbers(&got).len(), 1);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nc_session_like_the_readme() {
    // The README's transcript: lines piped into netcat-openbsd, which
    // half-closes (-N) at the end of its input.
    let server = Server::start(&[]);
    assert!(
        common::installed("nc"),
        "nc (netcat-openbsd) is needed for this test"
    );
    let out = common::run_cmd_with_input(
        Command::new("nc").args(["-N", "127.0.0.1", &server.addr.port().to_string()]),
        b"hello\nworld\nSTOP\nnever answered\n",
        common::WAIT,
    );
    assert!(
        out.status.success(),
        "nc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = numbers(&out.stdout);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|n| (1..=99).contains(n)));
    server.log.wait_for("serving 127.0.0.1:");
}

#[test]
fn nc_typed_into_waits_for_its_input_to_end_after_stop() {
    // The quick start's interactive session (README, docs/protocol.md):
    // after STOP the server closes, but netcat-openbsd quits only when its
    // own input ends too (Ctrl-D), not at the server's close.
    let server = Server::start(&[]);
    assert!(
        common::installed("nc"),
        "nc (netcat-openbsd) is needed for this test"
    );
    let mut nc = common::Proc::spawn_piped(
        Command::new("nc").args(["127.0.0.1", &server.addr.port().to_string()]),
    );
    let mut out = nc.take_stdout();
    nc.stdin()
        .write_all(b"hello\nSTOP\n")
        .expect("type into nc");
    nc.stdin().flush().expect("flush");
    // Lingering, the server waits for nc's EOF, which does not come; after
    // LINGER (2 s) it closes anyway.
    server.log.wait_for("): STOP");
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(
        nc.state(),
        'Z',
        "nc quit at the server's close, with its input still open"
    );
    nc.close_stdin(); // Ctrl-D
    assert!(
        nc.wait_exit().success(),
        "nc failed at the end of its input"
    );
    let mut answers = Vec::new();
    out.read_to_end(&mut answers).expect("nc's output");
    assert_eq!(numbers(&answers).len(), 1, "one answer, for hello");
}

#[test]
fn trace_level_shows_the_loop_at_work() {
    let mut cmd = Command::new(common::bin());
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "trace");
    let server = Server::spawn(cmd);
    let mut c = server.connect();
    assert!((1..=99).contains(&c.ask("hi")));
    c.send(b"STOP\n");
    c.expect_eof();
    for needle in [
        "event listener 0: readable",
        "event token 0 (127.0.0.1:",
        "token 0: read 3 bytes (short: socket drained)",
        "token 0: wrote ",
        "token 0: shut down write side, lingering",
    ] {
        server.log.wait_for(needle);
    }
}

#[test]
fn a_bare_port_listens_on_all_ipv4_interfaces() {
    // Like the original: `randline PORT`. Port 0 lets the OS pick one.
    let mut cmd = Command::new(common::bin());
    cmd.arg("0");
    let server = Server::spawn(cmd);
    assert!(
        server.addr.ip().is_unspecified() && server.addr.is_ipv4(),
        "{}",
        server.addr
    );
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], server.addr.port()));
    assert!((1..=99).contains(&common::Client::connect(local).ask("hello")));
}

#[test]
fn every_listen_address_is_served() {
    let mut cmd = Command::new(common::bin());
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "[::1]:0",
        "--listen",
        "127.0.0.2:0",
    ]);
    let server = Server::spawn(cmd);
    for n in 1..=3 {
        let addr = common::listening_addr(&server.log.wait_for_nth("listening on ", n));
        assert!(
            (1..=99).contains(&common::Client::connect(addr).ask("hi")),
            "{addr}"
        );
    }
}

/// docs/protocol.md's half-close example, byte for byte: every complete
/// line answered, the unterminated fragment not, then the close. The
/// numbers are those of `--seed 42`, as the page says.
#[test]
fn the_half_close_example_of_protocol_md_byte_for_byte() {
    let doc = include_str!("../docs/protocol.md");
    assert!(
        doc.contains(
            "$ printf 'a\\nb\\nunterminated' | nc -N 127.0.0.1 8001     # --seed 42\n53\n54\n$\n"
        ),
        "docs/protocol.md no longer shows this example as tested here"
    );
    let server = Server::start(&["--seed", "42"]);
    assert!(
        common::installed("nc"),
        "nc (netcat-openbsd) is needed for this test"
    );
    let out = common::run_cmd_with_input(
        Command::new("nc").args(["-N", "127.0.0.1", &server.addr.port().to_string()]),
        b"a\nb\nunterminated",
        common::WAIT,
    );
    assert!(
        out.status.success(),
        "nc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "53\n54\n");
}

/// docs/protocol.md's first console block, with netcat-openbsd as shown:
/// a batch and `-N` (two numbers, then the close), the same through `od -c`
/// (the exact bytes: digits, each answer ended by one `\n`), and `nc -U`
/// against a `--unix` listener.
#[test]
fn the_nc_batch_od_and_unix_lines_of_protocol_md() {
    let doc = include_str!("../docs/protocol.md");
    for line in [
        "$ printf 'a\\nb\\n' | nc -N 127.0.0.1 8001\n",
        "$ printf 'a\\nb\\n' | nc -N 127.0.0.1 8001 | od -c     # see the exact bytes\n",
        "$ nc -U /run/randline.sock             # a --unix listener\n",
    ] {
        assert!(
            doc.contains(line),
            "docs/protocol.md no longer shows {line:?}"
        );
    }
    assert!(
        common::installed("nc"),
        "nc (netcat-openbsd) is needed for this test"
    );
    let dir = std::env::temp_dir().join(format!("randline-nc-u-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("randline.sock");
    let mut cmd = Command::new(common::bin());
    cmd.args(["--listen", "127.0.0.1:0", "--unix"]).arg(&path);
    let server = Server::spawn(cmd);
    server.log.wait_for("listening on unix:");
    let port = server.addr.port().to_string();

    let batch = |args: &[&str]| {
        let out =
            common::run_cmd_with_input(Command::new("nc").args(args), b"a\nb\n", common::WAIT);
        assert!(
            out.status.success(),
            "nc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let tcp = batch(&["-N", "127.0.0.1", &port]);
    assert_eq!(numbers(&tcp).len(), 2, "{tcp:?}");
    let unix = batch(&["-N", "-U", path.to_str().expect("utf-8 path")]);
    assert_eq!(numbers(&unix).len(), 2, "{unix:?}");

    // What `od -c` shows: only digits and `\n`, one `\n` per answer, and the
    // last offset is the byte count.
    let od = common::run_cmd_within(
        {
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!(
                "printf 'a\\nb\\n' | nc -N 127.0.0.1 {port} | od -c"
            ));
            c
        },
        common::WAIT,
    );
    let text = String::from_utf8_lossy(&od.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "od -c printed {text:?}");
    let cells: Vec<&str> = lines[0].split_whitespace().skip(1).collect();
    assert_eq!(cells.iter().filter(|c| **c == "\\n").count(), 2, "{text:?}");
    assert!(
        cells
            .iter()
            .all(|c| *c == "\\n" || c.chars().all(|d| d.is_ascii_digit())),
        "{text:?}"
    );
    let end = usize::from_str_radix(lines[1].trim(), 8).expect("od's last offset, in octal");
    assert_eq!(end, cells.len(), "{text:?}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
