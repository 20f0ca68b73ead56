//! Test harness: start the real `randline` binary on port 0, learn its port
//! from the `listening on` log line, talk to it over real sockets.
//!
//! Every wait here has a timeout, so a broken server fails a test instead
//! of hanging it.

#![allow(dead_code)] // each test file uses a different part of this

pub mod netns;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The server binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_randline")
}

/// The release build of the server, built (or brought up to date) first:
/// for the tests whose bound is about CPU (a debug build is 20 times
/// slower per line).
pub fn release_bin() -> std::path::PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--bin", "randline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build --release");
    assert!(status.success(), "cannot build the release server");
    let debug = std::path::Path::new(bin());
    let target = debug
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory");
    target.join("release").join("randline")
}

/// The chaos client (examples/chaos/), built beside the server: `cargo
/// test` builds examples, but a filtered `cargo test --test NAME` may not.
pub fn chaos_bin() -> std::path::PathBuf {
    let bin = std::path::Path::new(bin())
        .with_file_name("examples")
        .join("chaos");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "chaos"])
            .status()
            .expect("run cargo build --example chaos");
        assert!(status.success(), "cannot build the chaos client");
    }
    bin
}

/// Log lines the server has written to stderr so far.
#[derive(Clone, Default)]
pub struct Log(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Log {
    /// Collects `stderr` on a thread, line by line.
    pub fn collect(stderr: impl Read + Send + 'static) -> Log {
        let log = Log::default();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (lines, cv) = &*sink.0;
                lines.lock().expect("log lock").push(line);
                cv.notify_all();
            }
        });
        log
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.0.0.lock().expect("log lock").join("\n")
    }

    /// Waits until a line containing `needle` appears; returns that line.
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_for_nth(needle, 1)
    }

    /// Waits until `n` lines contain `needle`; returns the n-th.
    pub fn wait_for_nth(&self, needle: &str, n: usize) -> String {
        let (lines, cv) = &*self.0;
        let deadline = Instant::now() + WAIT;
        let mut guard = lines.lock().expect("log lock");
        loop {
            if let Some(line) = guard.iter().filter(|l| l.contains(needle)).nth(n - 1) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let log = guard.join("\n");
                drop(guard); // do not poison the lock for the collector
                panic!("no log line #{n} with {needle:?} in time; log:\n{log}");
            }
            guard = cv.wait_timeout(guard, left).expect("log lock").0;
        }
    }

    /// How many lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.0
            .0
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// A running server, killed when dropped.
pub struct Server {
    pub child: Child,
    /// The first TCP address it listens on.
    pub addr: SocketAddr,
    pub log: Log,
}

impl Server {
    /// `randline --listen 127.0.0.1:0 ARGS...`
    pub fn start(args: &[&str]) -> Server {
        let mut cmd = Command::new(bin());
        cmd.args(["--listen", "127.0.0.1:0"]).args(args);
        Server::spawn(cmd)
    }

    /// Starts `cmd` (which must make randline listen on TCP) and waits for
    /// its first `listening on` line.
    pub fn spawn(mut cmd: Command) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let log_level_set = cmd.get_envs().any(|(k, _)| k == "RUST_LOG");
        if !log_level_set && std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "debug");
        }
        let mut child = cmd.spawn().expect("start randline");
        let log = Log::collect(child.stderr.take().expect("stderr"));
        let line = log.wait_for("listening on ");
        let addr = line
            .rsplit("listening on ")
            .next()
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Server { child, addr, log }
    }

    /// A new client connection.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Sends `signal` (e.g. `Signal::TERM`) to the server.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).expect("kill");
    }

    /// Waits for the server to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_exit(&mut self.child, &self.log)
    }

    /// Asks for the counters (SIGUSR1) and returns the `stats:` line's
    /// pairs.
    pub fn stats(&self) -> std::collections::BTreeMap<String, u64> {
        let n = self.log.count("stats: ");
        self.signal(rustix::process::Signal::USR1);
        parse_stats(&self.log.wait_for_nth("stats: ", n + 1))
    }

    /// The server's resident memory, from /proc.
    pub fn rss_kib(&self) -> u64 {
        proc_status_number(self.child.id(), "VmRSS:")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` (a program with little output) to completion, within
/// [`WAIT`]; fails the test if it does not exit by itself.
pub fn run_cmd(cmd: Command) -> std::process::Output {
    run_cmd_within(cmd, WAIT)
}

/// [`run_cmd`] for a program that takes longer: it must exit within
/// `limit` (a hang fails the test, named by its command line).
pub fn run_cmd_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    run_cmd_with_input(&mut cmd, b"", limit)
}

/// [`run_cmd_within`] with `input` fed to the program's stdin (on a
/// thread, closed after it: the program sees the end of its input).
pub fn run_cmd_with_input(
    cmd: &mut Command,
    input: &[u8],
    limit: Duration,
) -> std::process::Output {
    let stdin = if input.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    };
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let feeder = child.stdin.take().map(|mut pipe| {
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        })
    });
    // Drained on threads while it runs: a long output must not fill a
    // pipe and stop the program before it can exit.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(feeder) = feeder {
        feeder.join().expect("stdin writer");
    }
    std::process::Output {
        status,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    }
}

/// Answers of 19 digits (`--min`/`--max` flags): few lines make many bytes,
/// enough to fill the kernel's socket buffers.
pub const LONG_ANSWERS: [&str; 4] = [
    "--min",
    "1000000000000000000",
    "--max",
    "2000000000000000000",
];

/// Waits (at most [`WAIT`]) for `child` to exit; its `log` is shown if not.
pub fn wait_exit(child: &mut Child, log: &Log) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "did not exit; log:\n{}",
            log.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A numeric field of /proc/PID/status (sizes are in KiB).
pub fn proc_status_number(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A client connection; every read has a timeout and goes through one
/// buffered reader (the socket itself is private: bytes read around the
/// buffer would be lost to it, or it would hold bytes a raw read missed).
pub struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect_timeout(&addr, WAIT).expect("connect"))
    }

    /// Wraps an already connected stream.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        stream.set_write_timeout(Some(WAIT)).expect("write timeout");
        stream.set_nodelay(true).expect("nodelay");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Client { stream, reader }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.stream.peer_addr().expect("peer address")
    }

    /// How long a read may wait ([`WAIT`] unless set).
    pub fn set_read_timeout(&self, limit: Duration) {
        self.stream
            .set_read_timeout(Some(limit))
            .expect("read timeout");
    }

    /// A second handle on the socket, for writing (or shutting down) from
    /// another thread. Reads stay with the client.
    pub fn writer(&self) -> TcpStream {
        self.stream.try_clone().expect("clone")
    }

    /// Sends `lines` lines of `x` from another thread (so that the test
    /// can choose when to read), then half-closes if asked.
    pub fn send_lines_in_background(
        &self,
        lines: usize,
        half_close: bool,
    ) -> std::thread::JoinHandle<()> {
        let mut w = self.writer();
        std::thread::spawn(move || {
            let batch = b"x\n".repeat(10_000);
            for _ in 0..lines / 10_000 {
                w.write_all(&batch).expect("send lines");
            }
            w.write_all(&b"x\n".repeat(lines % 10_000))
                .expect("send lines");
            if half_close {
                w.shutdown(Shutdown::Write).expect("half-close");
            }
        })
    }

    /// Writes `x\n` lines, never reading, until the socket takes nothing
    /// for `stall` (the server stopped reading: backpressure) or `max`
    /// bytes went out. Returns the bytes written.
    pub fn fill_until_blocked(&self, stall: Duration, max: usize) -> usize {
        self.stream
            .set_write_timeout(Some(stall))
            .expect("write timeout");
        let chunk = b"x\n".repeat(32 * 1024);
        let mut sent = 0;
        while sent < max {
            match (&self.stream).write(&chunk[..chunk.len().min(max - sent)]) {
                Ok(n) => sent += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        self.stream
            .set_write_timeout(Some(WAIT))
            .expect("write timeout");
        sent
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends `bytes` as TCP urgent (out-of-band) data.
    pub fn send_urgent(&self, bytes: &[u8]) {
        socket2::SockRef::from(&self.stream)
            .send_out_of_band(bytes)
            .expect("send urgent data");
    }

    /// The next line, without its `\n`. Fails on EOF or timeout.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read a line");
        assert!(
            n > 0 && line.ends_with('\n'),
            "expected a line, got EOF after {line:?}"
        );
        line.pop();
        line
    }

    /// The next line, or `None` at EOF, on a reset or a timeout (for a
    /// client the server may have turned away).
    pub fn try_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(_) if line.ends_with('\n') => {
                line.pop();
                Some(line)
            }
            _ => None,
        }
    }

    /// The next line as a number.
    pub fn number(&mut self) -> i64 {
        let line = self.line();
        line.parse()
            .unwrap_or_else(|_| panic!("not a number: {line:?}"))
    }

    /// Sends one line and returns its answer.
    pub fn ask(&mut self, line: &str) -> i64 {
        self.send(format!("{line}\n").as_bytes());
        self.number()
    }

    /// Waits (at most `limit`) until the server has sent something, and
    /// keeps it buffered for the next read: how many bytes are buffered,
    /// 0 if the server closed instead; `Err` (`WouldBlock`/`TimedOut`) if
    /// nothing came.
    pub fn peek_within(&mut self, limit: Duration) -> std::io::Result<usize> {
        self.set_read_timeout(limit);
        let got = self.reader.fill_buf().map(|b| b.len());
        self.set_read_timeout(WAIT);
        got
    }

    /// Reads until the server closes; fails on a reset or a timeout.
    pub fn rest_until_eof(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.reader
            .read_to_end(&mut rest)
            .expect("read until EOF (no reset, no timeout)");
        rest
    }

    /// Expects the server to close the connection with nothing more to say.
    pub fn expect_eof(&mut self) {
        let rest = self.rest_until_eof();
        assert!(
            rest.is_empty(),
            "expected EOF, got {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// True when the server has closed (EOF or reset) within `WAIT`.
    pub fn closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false;
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    pub fn half_close(&mut self) {
        self.stream
            .shutdown(Shutdown::Write)
            .expect("shutdown write");
    }

    /// Closes the connection with a reset (SO_LINGER 0) instead of a FIN.
    pub fn reset(self) {
        socket2::SockRef::from(&self.stream)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER 0");
        drop(self); // both of its handles: the socket closes now
    }
}

/// Reads through the client's buffer (with its timeout).
impl Read for Client {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }
}

/// Raw writes, for a test that expects them to fail (the server may
/// have closed); [`Client::send`] fails the test instead.
impl Write for Client {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// The `key=value` pairs of a `stats:` log line.
pub fn parse_stats(line: &str) -> std::collections::BTreeMap<String, u64> {
    let (_, pairs) = line
        .split_once("stats: ")
        .unwrap_or_else(|| panic!("not a stats line: {line}"));
    pairs
        .split(' ')
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("bad pair {kv:?}"));
            (
                k.to_string(),
                v.parse().unwrap_or_else(|_| panic!("bad value {kv:?}")),
            )
        })
        .collect()
}

/// Parses a block of answers, one integer per line.
pub fn numbers(text: &[u8]) -> Vec<i64> {
    std::str::from_utf8(text)
        .expect("answers are ASCII")
        .lines()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("not a number: {l:?}")))
        .collect()
}
