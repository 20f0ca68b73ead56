//! Test harness: start the real `randline` binary on port 0, learn its port
//! from the `listening on` log line, talk to it over real sockets.
//!
//! Every wait here has a timeout, so a broken server fails a test instead
//! of hanging it.

#![allow(dead_code)] // each test file uses a different part of this

pub mod cgroup;
pub mod netns;

use rustix::process::Signal;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The server binary under test: `RANDLINE_BIN` when set (an absolute
/// path; scripts/cross points it at a release build for another target,
/// run under qemu or through its own loader, while the tests stay native),
/// else the debug build cargo made for this test run. Every test starts
/// the server through this (or [`release_bin`]), never by another path.
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| match std::env::var("RANDLINE_BIN") {
        Ok(path) => {
            // Relative, it would depend on each test's working directory.
            assert!(
                std::path::Path::new(&path).is_absolute() && std::path::Path::new(&path).is_file(),
                "RANDLINE_BIN must be the absolute path of a file, not {path:?}"
            );
            path
        }
        Err(_) => cargo_bin().to_string(),
    })
}

/// The debug build cargo made for this test run (the examples and the
/// release build sit beside it, whatever [`bin`] says).
fn cargo_bin() -> &'static str {
    env!("CARGO_BIN_EXE_randline")
}

/// The release build of the server, built (or brought up to date) first:
/// for the tests whose bound is about CPU (a debug build is 20 times
/// slower per line). `RANDLINE_BIN` when set, unbuilt: scripts/cross
/// points it at a release build already.
pub fn release_bin() -> std::path::PathBuf {
    if std::env::var_os("RANDLINE_BIN").is_some() {
        return bin().into();
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--bin", "randline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build --release");
    assert!(status.success(), "cannot build the release server");
    let debug = std::path::Path::new(cargo_bin());
    let target = debug
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory");
    target.join("release").join("randline")
}

/// True when the server under test runs under an emulator (qemu-user):
/// `RANDLINE_EMULATED=1`, which scripts/cross sets for its qemu targets.
pub fn emulated() -> bool {
    std::env::var_os("RANDLINE_EMULATED").is_some_and(|v| v == "1")
}

/// For a check that cannot hold with the server under qemu-user (its
/// thread count, its /proc figures: qemu's own threads and memory are in
/// them): true under emulation, after printing `skipped under emulation:
/// TEST: WHAT (WHY)`, which scripts/cross collects and prints per target.
/// Never true otherwise.
pub fn skip_under_emulation(what: &str, why: &str) -> bool {
    if !emulated() {
        return false;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    println!("skipped under emulation: {test}: {what} ({why})");
    true
}

/// `d` times `RANDLINE_TIME_SCALE` (a whole number, 1 unless set;
/// scripts/cross sets it for a server under qemu, which runs several times
/// slower): for the tests' tight bounds on how late the server may be.
/// Bounds on how early something may happen are not scaled.
pub fn scaled(d: Duration) -> Duration {
    let scale = std::env::var("RANDLINE_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    d * scale
}

/// The examples `names`, built (or brought up to date) together, with a
/// bounded wait: a filtered `cargo test --test NAME` builds no examples,
/// and a stale example binary must never be the one tested.
pub fn build_examples(names: &[&str]) {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    for name in names {
        cmd.args(["--example", name]);
    }
    let out = run_cmd_within(cmd, Duration::from_secs(600));
    assert!(
        out.status.success(),
        "cannot build the examples {names:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where the example `name` is built, beside the server under test.
pub fn example_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(cargo_bin())
        .with_file_name("examples")
        .join(name)
}

/// The example `name`, built first (see [`build_examples`]).
pub fn example(name: &str) -> std::path::PathBuf {
    build_examples(&[name]);
    example_path(name)
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

/// A program started by a test: stdin and stdout go nowhere unless asked
/// for ([`Proc::spawn_piped`]), stderr is collected into [`Proc::log`].
/// Killed and reaped when dropped, so a failing test leaves nothing behind.
pub struct Proc {
    child: Child,
    pub log: Log,
}

impl Proc {
    /// Starts `cmd` with stdin and stdout on /dev/null.
    pub fn spawn(cmd: &mut Command) -> Proc {
        Proc::start(cmd, Stdio::null(), Stdio::null())
    }

    /// Starts `cmd` with stdin and stdout piped: write with
    /// [`Proc::stdin`], read what [`Proc::take_stdout`] gives.
    pub fn spawn_piped(cmd: &mut Command) -> Proc {
        Proc::start(cmd, Stdio::piped(), Stdio::piped())
    }

    fn start(cmd: &mut Command, stdin: Stdio, stdout: Stdio) -> Proc {
        let mut child = cmd
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let log = Log::collect(child.stderr.take().expect("stderr"));
        Proc { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its input (it must have been started with [`Proc::spawn_piped`]).
    pub fn stdin(&mut self) -> &mut ChildStdin {
        self.child
            .stdin
            .as_mut()
            .expect("stdin piped and still open")
    }

    /// Closes its input: it reads EOF.
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Its output, to be read by the test (started with
    /// [`Proc::spawn_piped`]).
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("stdout piped, taken once")
    }

    /// Sends `signal` (e.g. `Signal::TERM`).
    pub fn signal(&self, signal: Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).expect("kill");
    }

    /// SIGSTOP, then waits (bounded) until the kernel reports it stopped
    /// (state `T` in /proc/PID/stat): only then is everything sent next
    /// sure to be queued before it looks. [`Proc::resume`] undoes it.
    #[track_caller]
    pub fn pause(&self) {
        self.signal(Signal::STOP);
        wait_until("the process stops (state T)", WAIT, || self.state() == 'T');
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal(Signal::CONT);
    }

    /// Its state letter in /proc/PID/stat (`R`, `S`, `T`...).
    pub fn state(&self) -> char {
        proc_stat(self.pid())[0]
            .chars()
            .next()
            .expect("a state letter")
    }

    /// CPU time (user + system) it has used, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let fields = proc_stat(self.pid());
        let ticks = |i: usize| fields[i].parse::<u64>().expect("a tick count");
        ticks(11) + ticks(12)
    }

    /// Its resident memory, from /proc.
    pub fn rss_kib(&self) -> u64 {
        proc_status_number(self.pid(), "VmRSS:")
    }

    /// Waits (at most [`WAIT`]) for it to exit; its log is shown if not.
    #[track_caller]
    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = &mut self.child;
        match poll(WAIT, || child.try_wait().expect("try_wait")) {
            Some(status) => status,
            None => panic!("did not exit within {WAIT:?}; log:\n{}", self.log.text()),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running server (a [`Proc`] that listens), killed when dropped.
pub struct Server {
    proc: Proc,
    /// The first TCP address it listens on.
    pub addr: SocketAddr,
}

impl std::ops::Deref for Server {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

impl Server {
    /// `randline --listen 127.0.0.1:0 ARGS...`
    pub fn start(args: &[&str]) -> Server {
        let mut cmd = Command::new(bin());
        cmd.args(["--listen", "127.0.0.1:0"]).args(args);
        Server::spawn(cmd)
    }

    /// Starts `cmd` (which must make randline listen on TCP) and waits for
    /// its first `listening on` line. `RUST_LOG` is `debug` unless set.
    pub fn spawn(mut cmd: Command) -> Server {
        let log_level_set = cmd.get_envs().any(|(k, _)| k == "RUST_LOG");
        if !log_level_set && std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "debug");
        }
        let proc = Proc::spawn(&mut cmd);
        let addr = listening_addr(&proc.log.wait_for("listening on "));
        Server { proc, addr }
    }

    /// A new client connection.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Asks for the counters (SIGUSR1) and returns the `stats:` line's
    /// pairs.
    pub fn stats(&self) -> std::collections::BTreeMap<String, u64> {
        let n = self.log.count("stats: ");
        self.signal(Signal::USR1);
        parse_stats(&self.log.wait_for_nth("stats: ", n + 1))
    }
}

/// GitHub's anchor for a Markdown heading: lower case, spaces to `-`,
/// punctuation other than `-` and `_` dropped (for the tests that check
/// the docs' links).
pub fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The address in a `listening on ADDR` log line.
pub fn listening_addr(line: &str) -> SocketAddr {
    line.rsplit("listening on ")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// Calls `f` every 10 ms until it returns `Some`, for at most `limit`;
/// `None` if it never did. (For a caller with more to do on a timeout than
/// fail; otherwise see [`eventually`] and [`wait_until`].)
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`poll`], failing the test (naming `what`) if `f` gives nothing within
/// `limit`.
#[track_caller]
pub fn eventually<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    match poll(limit, f) {
        Some(t) => t,
        None => panic!("{what}: not within {limit:?}"),
    }
}

/// Waits until `f` is true, failing the test (naming `what`) if it is not
/// within `limit`.
#[track_caller]
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    eventually(what, limit, || f().then_some(()));
}

/// True when `program` is an executable file on `PATH`.
pub fn installed(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// A program the test needs (from Debian package `package`). In CI its
/// absence fails the test (`.ci/run` installs it); elsewhere the test is
/// skipped with a note: false means "return now".
pub fn have(program: &str, package: &str) -> bool {
    let found = installed(program);
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is missing (apt-get install -y {package}; .ci/run does it)"
        );
        eprintln!("skipped: {program} is not installed (apt-get install -y {package})");
    }
    found
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
/// thread, closed after it: the program sees the end of its input). The
/// one way the tests run a program to completion: its output is drained
/// while it runs, and every wait is bounded.
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
    if let Some(mut pipe) = child.stdin.take() {
        // Not joined: a program that exits without reading all of it
        // ends the write (EPIPE); nothing waits on that.
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    // Drained on threads while it runs: a long output must not fill a
    // pipe and stop the program before it can exit.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            let _ = tx.send(bytes);
        });
        rx
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let Some(status) = poll(limit, || child.try_wait().expect("try_wait")) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} did not exit within {limit:?}");
    };
    // The pipes end when the program does, unless something it started
    // still holds them: bounded too.
    let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>, name: &str| {
        rx.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!("{cmd:?} exited, but its {name} stayed open (a process it started?)")
        })
    };
    std::process::Output {
        status,
        stdout: collect(stdout, "stdout"),
        stderr: collect(stderr, "stderr"),
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

/// The fields of /proc/PID/stat after the command name (which is in
/// parentheses and may hold spaces): `[0]` is the state, `[11]` utime,
/// `[12]` stime.
pub fn proc_stat(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    stat.rsplit_once(')')
        .expect("a command name in parentheses")
        .1
        .split_whitespace()
        .map(str::to_string)
        .collect()
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

/// Reads what the client's buffer holds first; with the buffer empty, one
/// read of at most `buf.len()` bytes from the socket, as a raw read would
/// (not a refill of 8 KiB): a test that paces its reads, as a slow
/// reader, takes bytes from the kernel at the pace it chose.
impl Read for Client {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.reader.buffer().is_empty() {
            (&self.stream).read(buf)
        } else {
            self.reader.read(buf)
        }
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
