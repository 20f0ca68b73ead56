//! docs/tour.md stays true: each scenario it quotes is replayed against
//! today's server at trace level, and the quoted lines must appear in the
//! live log, in order; every live trace line must have a documented shape.
//! (How the comparison works is explained at the end of docs/tour.md.)

mod common;

use common::{Proc, Server, WAIT};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Command;
use std::sync::mpsc;

const TOUR: &str = include_str!("../docs/tour.md");

/// The lines of the fenced block that follows `<!-- MARKER -->`.
fn block(marker: &str) -> Vec<&'static str> {
    let tag = format!("<!-- {marker} -->");
    let start = TOUR
        .find(&tag)
        .unwrap_or_else(|| panic!("docs/tour.md has no {tag}"));
    let mut lines = TOUR[start..].lines().skip(1);
    let fence = lines.next().unwrap_or_default();
    assert!(
        fence.starts_with("```"),
        "{tag} is not followed by a code block"
    );
    lines.take_while(|l| !l.starts_with("```")).collect()
}

/// A log line without its timestamp, with single spaces, with every
/// number (`48482`, `0.040`) replaced by `#`, and the memory limit's
/// source read as the host's.
fn normalize(line: &str) -> String {
    let mut words = line.split_whitespace().peekable();
    if words
        .peek()
        .is_some_and(|w| w.ends_with('Z') && w.contains('T'))
    {
        words.next();
    }
    let mut text = words.collect::<Vec<_>>().join(" ");
    // Where the memory limit came from depends on the host the test runs
    // on (in a memory cgroup or not), not on the code.
    for source in ["(cgroup v1)", "(cgroup v2)"] {
        text = text.replace(source, "(host memory)");
    }
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            while chars.next_if(|c| c.is_ascii_digit() || *c == '.').is_some() {}
            out.push('#');
        } else {
            out.push(c);
        }
    }
    out
}

/// Lines whose presence depends on timing, not on the code: wake-ups, and
/// events that only report send-buffer space.
fn depends_on_timing(normalized: &str) -> bool {
    normalized.starts_with("TRACE poll: woke after")
        || (normalized.starts_with("TRACE event token") && normalized.ends_with("): writable"))
}

/// `*` matches any text; everything else is literal.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            text.starts_with(head)
                && (head.len()..=text.len())
                    .any(|i| text.is_char_boundary(i) && glob(rest, &text[i..]))
        }
    }
}

/// Checks a scenario's live log against the block `trace: NAME`.
fn check(name: &str, log: &str) {
    let live: Vec<String> = log.lines().map(normalize).collect();

    let shapes = block("trace formats");
    for line in live.iter().filter(|l| l.starts_with("TRACE ")) {
        let msg = &line["TRACE ".len()..];
        assert!(
            shapes.iter().any(|s| glob(s, msg)),
            "trace line {msg:?} has no shape in docs/tour.md's trace format list"
        );
    }

    let quoted: Vec<String> = block(&format!("trace: {name}"))
        .into_iter()
        .filter(|l| l.trim() != "…")
        .map(normalize)
        .filter(|l| !depends_on_timing(l))
        .collect();
    assert!(!quoted.is_empty(), "block trace: {name} is empty");
    let mut live_iter = live.iter().filter(|l| !depends_on_timing(l));
    for want in &quoted {
        assert!(
            live_iter.any(|l| l == want),
            "docs/tour.md, trace: {name}: {want:?} is not in the live log (in this order).\n\
             live log:\n{log}"
        );
    }
}

/// A server at trace level, as the tour starts it.
fn traced(args: &[&str]) -> Server {
    let mut cmd = Command::new(common::bin());
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "randline=trace");
    Server::spawn(cmd)
}

/// netcat-openbsd, with its input held open until we close it, and its
/// output read line by line with a timeout; killed when dropped.
struct Nc {
    proc: Proc,
    lines: mpsc::Receiver<String>,
}

impl Nc {
    fn start(server: &Server, flags: &[&str]) -> Nc {
        assert!(
            common::installed("nc"),
            "nc (netcat-openbsd) is needed for this test"
        );
        let mut proc = Proc::spawn_piped(
            Command::new("nc")
                .args(flags)
                .args(["127.0.0.1", &server.addr.port().to_string()]),
        );
        let stdout = proc.take_stdout();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Nc { proc, lines }
    }

    fn type_in(&mut self, text: &str) {
        let stdin = self.proc.stdin();
        stdin.write_all(text.as_bytes()).expect("write to nc");
        stdin.flush().expect("flush nc input");
    }

    fn answer(&self) -> i64 {
        let line = self
            .lines
            .recv_timeout(WAIT)
            .expect("nc printed no answer in time");
        line.trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line:?}"))
    }

    /// Ends nc's input (with -N, nc then sends its FIN) and waits for it.
    fn end_input_and_wait(mut self) {
        self.proc.close_stdin();
        self.proc.wait_exit();
    }
}

#[test]
fn one_request_s_life_in_an_nc_session() {
    let server = traced(&["--seed", "1"]);
    let mut nc = Nc::start(&server, &[]);
    nc.type_in("hello\n");
    // The numbers the tour shows, thanks to --seed 1.
    assert_eq!(nc.answer(), 97);
    nc.type_in("world\n");
    assert_eq!(nc.answer(), 69);
    nc.type_in("STOP\n");
    server.log.wait_for("shut down write side, lingering");
    nc.end_input_and_wait();
    server.log.wait_for("): STOP");
    check("nc-session", &server.log.text());
}

#[test]
fn a_pipelined_burst_then_a_half_close() {
    let server = traced(&[]);
    let mut nc = Nc::start(&server, &["-N"]);
    nc.type_in("one\ntwo\nthree\nfour\n");
    for _ in 0..4 {
        nc.answer();
    }
    nc.end_input_and_wait();
    server.log.wait_for("): client closed");
    check("pipelined", &server.log.text());
}

#[test]
fn stop_then_more_input_lingers() {
    let server = traced(&[]);
    let mut nc = Nc::start(&server, &["-N"]);
    nc.type_in("hi\nSTOP\n");
    nc.answer();
    server.log.wait_for("shut down write side, lingering");
    // The hazard the section shows: input that arrives after the answer.
    nc.type_in("more\n");
    server.log.wait_for("discarded (lingering)");
    nc.end_input_and_wait();
    server.log.wait_for("): STOP");
    check("stop-trailing", &server.log.text());
}

#[test]
fn a_client_that_stops_reading_pauses_and_resumes() {
    let server = traced(&[]);
    let mut c = server.connect();
    let lines = 5_000_000;
    let writer = c.send_lines_in_background(lines, true);
    // Not reading until the server says it stopped reading us.
    server.log.wait_for("paused reading");
    let mut got = 0;
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = c.read(&mut buf).expect("read answers");
        if n == 0 {
            break;
        }
        got += buf[..n].iter().filter(|&&b| b == b'\n').count();
    }
    writer.join().expect("writer");
    assert_eq!(got, lines);
    server.log.wait_for("): client closed");
    check("backpressure", &server.log.text());
    // The counters the section names: at least one pause and one
    // WouldBlock (how many is timing), on a server that served one client.
    let stats = server.stats();
    assert_eq!(stats["accepted"], 1, "{stats:?}");
    assert!(stats["paused"] >= 1, "{stats:?}");
    assert!(stats["wouldblock"] >= 1, "{stats:?}");
}

#[test]
fn out_of_file_descriptors_then_a_place_frees_up() {
    const LIMIT: usize = 16;
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={LIMIT}"))
        .arg(common::bin())
        .args(["--listen", "127.0.0.1:0", "--max-connections", "100"])
        .env("RUST_LOG", "randline=trace");
    let server = Server::spawn(cmd);
    // Once it answers SIGUSR1 it is in its loop, done opening (it lists
    // /proc/self/fd once after `listening on`, with a descriptor of its
    // own). prlimit runs randline in its own process: the descriptors it
    // holds before any client, as (number, target).
    server.stats();
    let fds: Vec<(usize, String)> = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .expect("the server's descriptors")
        .map(|e| {
            let e = e.expect("a descriptor");
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            (
                e.file_name().to_string_lossy().parse().expect("a number"),
                target.to_string_lossy().into_owned(),
            )
        })
        .collect();
    // A new descriptor's number must be below the limit.
    let room = LIMIT - fds.iter().filter(|(fd, _)| *fd < LIMIT).count();
    let mut clients = Vec::new();
    // Connect until the server runs out: each client is served (a
    // `serving` line) until `accept` fails for want of a descriptor. Linux
    // looks for a free descriptor before it looks at the backlog, so the
    // warning comes right after the last client that fits.
    while server.log.count("out of file descriptors") == 0 {
        assert!(clients.len() < 16, "never ran out of descriptors");
        let mut c = server.connect();
        c.send(b"hi\n");
        assert!((1..=99).contains(&c.number()));
        clients.push(c);
        // The warning, if any, was logged before this client's answer was
        // written: once the log shows that write, it shows the warning.
        server.log.wait_for_nth(": wrote ", clients.len());
    }
    let served = clients.len();
    assert_eq!(
        served, room,
        "the descriptors below {LIMIT} ({fds:?}) leave room for {room} clients"
    );
    server
        .log
        .wait_for(&format!("with {room} clients: new clients wait"));
    // This one waits in the backlog: connected (by the kernel), not accepted.
    let mut waiting = server.connect();
    waiting.send(b"hi\n");
    // One leaves: the waiting client is accepted and answered.
    let mut first = clients.remove(0);
    first.half_close();
    first.expect_eof();
    assert!((1..=99).contains(&waiting.number()));
    // The log is read on another thread: wait for the line before checking.
    server.log.wait_for_nth("serving 127.0.0.1", served + 1);
    check("fd-exhaustion", &server.log.text());

    // The page's figure is for a shell that passes nothing on: the
    // server's own descriptors are stdin, stdout, stderr, the epoll
    // instance and sockets (the signal pair, the listener).
    let own = fds
        .iter()
        .filter(|(fd, target)| {
            *fd < 3 || target.starts_with("socket:") || target == "anon_inode:[eventpoll]"
        })
        .count();
    let page_room = LIMIT - own;
    assert!(
        block("trace: fd-exhaustion")
            .iter()
            .any(|l| l.contains(&format!("with {page_room} clients: new clients wait"))),
        "the server holds {own} descriptors of its own: docs/tour.md should quote the warning with {page_room} clients"
    );
    let words = [
        "", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    assert!(
        TOUR.contains(&format!("{} clients fit.", capitalized(words[page_room])))
            && TOUR.contains(&format!("the server holds {own} before any client comes")),
        "docs/tour.md section 5 should say that {page_room} clients fit and the server holds {own}"
    );
}

fn capitalized(word: &str) -> String {
    let mut c = word.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[test]
fn normalizing_and_matching_work_as_the_tour_says() {
    assert_eq!(
        normalize("2026-11-24T00:05:10.297Z TRACE  poll: woke after 0.040 ms (timeout none)"),
        "TRACE poll: woke after # ms (timeout none)"
    );
    assert_eq!(
        normalize("event token 0 (127.0.0.1:48482): x"),
        "event token # (#:#): x"
    );
    assert!(glob(
        "token #: answered # line*",
        "token #: answered # lines, then STOP"
    ));
    assert!(!glob(
        "token #: read EOF",
        "token #: read EOF while lingering"
    ));
    assert!(depends_on_timing("TRACE event token # (#:#): writable"));
    assert!(!depends_on_timing(
        "TRACE event token # (#:#): readable writable"
    ));
}
