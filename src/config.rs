//! The command line: what the operator asked for, checked and typed.
//!
//! [`Config::parse`] turns `argv` into a [`Config`] or a [`CliError`] whose
//! one-line message names the offending value. Nothing here touches the
//! network or the file system; binding happens in [`crate::server`].

use std::ffi::{OsStr, OsString};
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Default inclusive bounds of the answers, as in the original (`rand.Intn(99)+1`).
pub const DEFAULT_MIN: i64 = 1;
/// See [`DEFAULT_MIN`].
pub const DEFAULT_MAX: i64 = 99;
/// Default `--max-line`: long enough for any honest line, short enough to
/// notice a client that never sends `\n`.
pub const DEFAULT_MAX_LINE: usize = 8192;
/// Default `--shutdown-timeout`, in seconds.
pub const DEFAULT_SHUTDOWN_SECS: u64 = 5;
/// Default `--tcp-keepalive`, in seconds: Redis's default. A dead idle peer
/// is dropped within about twice this (see [`crate::net::ClientSockets`]).
pub const DEFAULT_KEEPALIVE_SECS: u64 = 300;
/// Default `--output-budget` where memory is plenty (and where it cannot be
/// read): answers waiting for slow clients, all clients together; each
/// client holds at most 64 KiB. A smaller memory gets a sixteenth of it
/// ([`crate::limits::BUDGET_SHARE`]).
pub const DEFAULT_OUTPUT_BUDGET: usize = 16 << 20;
/// Default `--output-timeout`, in seconds: how long a client may keep its
/// answers backed up without taking any of them.
pub const DEFAULT_OUTPUT_TIMEOUT_SECS: u64 = 60;

/// Everything the server needs to know, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// TCP addresses to bind, in the order given (`PORT` first).
    pub listen: Vec<SocketAddr>,
    /// Unix domain socket paths to bind.
    pub unix: Vec<PathBuf>,
    /// `Some(seed)`: reproducible numbers; `None`: seeded from the OS.
    pub seed: Option<u64>,
    /// Smallest answer (inclusive).
    pub min: i64,
    /// Largest answer (inclusive).
    pub max: i64,
    /// `None`: derived at start from the file-descriptor limit and the
    /// memory the process may use ([`crate::limits`]).
    pub max_connections: Option<usize>,
    /// Longest line, in bytes before `\n`; `None` means no limit.
    pub max_line: Option<usize>,
    /// Close clients inactive for this long (no complete line received, no
    /// answer bytes taken); `None` means never.
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive idle time (the probes follow it); `None`: off.
    pub tcp_keepalive: Option<Duration>,
    /// `--max-connections-per-ip`: `None` means the default, derived from
    /// `--max-connections` at start; `Some(0)`: no limit.
    pub max_per_ip: Option<usize>,
    /// Pending answers of all clients together, in bytes, past which
    /// clients with pending answers are not read from; `None`: derived at
    /// start from the memory the process may use ([`crate::limits`]).
    pub output_budget: Option<usize>,
    /// Close a client whose answers stay backed up this long without it
    /// taking any; `None`: never.
    pub output_timeout: Option<Duration>,
    /// How long SIGTERM/SIGINT waits for clients to drain.
    pub shutdown_timeout: Duration,
    /// Log the counters this often; `None` means only on SIGUSR1 and at exit.
    pub stats_interval: Option<Duration>,
    /// Set SO_REUSEPORT on TCP listeners: several processes share a port.
    pub reuse_port: bool,
    /// Every connection starts with a PROXY protocol header (v1 or v2).
    pub proxy_protocol: bool,
    /// `--log-format`; `None`: journald if `JOURNAL_STREAM` is set, else text.
    pub log_format: Option<LogFormat>,
    /// `--metrics`: where to serve Prometheus metrics over HTTP.
    pub metrics: Option<SocketAddr>,
    /// `--proxy-from`: the networks a PROXY header is accepted from; empty:
    /// every peer (with a warning at start).
    pub proxy_from: Vec<Cidr>,
    /// `--unix-mode`: the permission bits of `--unix` socket files.
    pub unix_mode: Option<u32>,
}

/// A network, `ADDR/LEN`: `10.0.0.0/8`, `2001:db8::/32`; an address alone
/// is one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network's address, with the host bits cleared.
    pub net: IpAddr,
    /// How many leading bits name the network.
    pub len: u8,
}

impl Cidr {
    /// True when `ip` is in this network. An IPv4-mapped IPv6 address is
    /// the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => mask32(a.to_bits(), self.len) == n.to_bits(),
            (IpAddr::V6(n), IpAddr::V6(a)) => mask128(a.to_bits(), self.len) == n.to_bits(),
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

/// The first `len` bits of `bits` (`len` ≤ 32).
fn mask32(bits: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        bits & (u32::MAX << (32 - u32::from(len)))
    }
}

/// The first `len` bits of `bits` (`len` ≤ 128).
fn mask128(bits: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(len)))
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-11-24T00:05:09.994Z INFO  message`, for a terminal or a file.
    Text,
    /// `<6>message`: a syslog priority and no timestamp, for systemd's journal.
    Journald,
}

/// What the command line asked for.
#[derive(Debug)]
// Made once per run: boxing the big variant would save nothing that matters.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the server.
    Serve(Config),
    /// Print [`HELP`] and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
}

/// A command line that cannot be served. Exit code 2.
#[derive(Debug, PartialEq, Eq)]
pub enum CliError {
    /// Nothing to listen on: print [`USAGE`].
    NoListener,
    /// One line naming the bad value (escaped, so that it stays one line
    /// whatever the value holds).
    Invalid(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::NoListener => f.write_str(USAGE),
            CliError::Invalid(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for CliError {}

impl From<lexopt::Error> for CliError {
    fn from(e: lexopt::Error) -> Self {
        // lexopt quotes an unknown option as it is; the values it names it
        // writes with `{:?}`, escaped already.
        CliError::Invalid(match e {
            lexopt::Error::UnexpectedOption(option) => {
                format!("invalid option '{}'", shown(option.as_ref()))
            }
            e => one_line(&e.to_string()),
        })
    }
}

/// Short usage, printed on stderr when nothing to listen on was given.
pub const USAGE: &str = "\
usage: randline [OPTIONS] [PORT]
       randline --listen 127.0.0.1:7000
       randline --unix /run/randline.sock
Answers every line it receives with a random integer; STOP ends the session.
Try 'randline --help' for the options.";

/// Full help, printed on stdout by `-h`/`--help`.
pub const HELP: &str = "\
randline: answers every line a client sends with a random integer.

usage: randline [OPTIONS] [PORT]

  PORT                      listen on 0.0.0.0:PORT (like the original)
  -l, --listen ADDR         listen on HOST:PORT, e.g. 127.0.0.1:7000 or [::1]:7000;
                            port 0 lets the OS pick; repeatable
      --unix PATH           also listen on a Unix domain socket; repeatable
      --seed N              u64 seed: the same numbers for the same lines
                            (default: seeded from the OS)
      --min N               smallest answer, any i64 (default 1)
      --max N               largest answer, any i64 (default 99)
      --max-connections N   one more client gets 'ERR server busy' and is closed
                            (default: the smaller of the open-file limit
                            minus 32 and what the memory the process may use
                            has room for: its cgroup's limit, else the host's;
                            the 'limits:' line at start says both)
      --max-line BYTES      longest line before '\\n'; longer gets
                            'ERR line too long' and is closed; 0 = no limit
                            (default 8192)
      --idle-timeout SECS   close clients inactive this long (no complete line
                            received, no answer taken); 0 = never (default 0)
      --tcp-keepalive SECS  probe a TCP client idle this long; a dead peer is
                            dropped within about twice this, also while answers
                            wait unacknowledged; 0 = off (default 300)
      --max-connections-per-ip N
                            one more client from the same address (IPv6: the
                            same /64) gets 'ERR too many connections from your
                            address'; 0 = no limit (default: max-connections / 16,
                            at least 64)
      --output-budget BYTES answers waiting for slow clients, all together: past
                            it, clients with answers waiting are not read from
                            until theirs drain; K, M, G suffixes (default: a
                            sixteenth of the memory, from 64K to 16M)
      --output-timeout SECS close a client whose answers stay backed up this long
                            without it taking any; 0 = never (default 60)
      --shutdown-timeout SECS
                            on SIGTERM/SIGINT, wait this long for clients to
                            drain before cutting them (default 5)
      --stats-interval SECS log a 'stats:' line of counters this often; 0 = never
                            (default 0: only at exit and on SIGUSR1)
      --reuse-port          set SO_REUSEPORT: several randline processes may
                            listen on the same port; the kernel spreads clients
      --proxy-protocol      every connection starts with a PROXY protocol header
                            (v1 or v2, as HAProxy's send-proxy sends); the client
                            it names is logged; no valid header, no answers
      --proxy-from CIDR     with --proxy-protocol: accept connections only from
                            this network (e.g. 10.0.0.0/8, 192.0.2.7); others
                            are closed unanswered; repeatable (default: anyone,
                            with a warning)
      --unix-mode OCTAL     permission bits of --unix socket files, e.g. 660
                            (default: from the umask)
      --metrics ADDR        serve Prometheus metrics at http://ADDR/metrics
                            (e.g. 127.0.0.1:9464); off by default
      --log-format FORMAT   text or journald (default: journald when
                            JOURNAL_STREAM is set, else text)
  -h, --help                print this help
  -V, --version             print the version

Started by systemd socket activation (LISTEN_FDS), it also serves on the
sockets it is given; then no listen option is needed.

Logs go to stderr; set the level with RUST_LOG (error, warn, info, debug,
trace; default info). RUST_LOG=randline=trace shows the loop at work: each
wake-up, event, read and write (format: docs/tour.md). SIGUSR1 logs the
counters. Protocol: a line is answered by one integer and '\\n'; the line
'STOP' closes the session.";

impl Config {
    /// Parses the arguments after the program name.
    pub fn parse<I>(args: I) -> Result<Command, CliError>
    where
        I: IntoIterator,
        I::Item: Into<OsString>,
    {
        Config::parse_with(args, false)
    }

    /// Like [`Config::parse`]; `sockets_passed` says that listening sockets
    /// came from outside (systemd), so no listen option is needed.
    pub fn parse_with<I>(args: I, sockets_passed: bool) -> Result<Command, CliError>
    where
        I: IntoIterator,
        I::Item: Into<OsString>,
    {
        use lexopt::prelude::*;

        let mut parser = lexopt::Parser::from_args(args);
        let mut cfg = Config {
            listen: Vec::new(),
            unix: Vec::new(),
            seed: None,
            min: DEFAULT_MIN,
            max: DEFAULT_MAX,
            max_connections: None,
            max_line: Some(DEFAULT_MAX_LINE),
            idle_timeout: None,
            tcp_keepalive: Some(Duration::from_secs(DEFAULT_KEEPALIVE_SECS)),
            max_per_ip: None,
            output_budget: None,
            output_timeout: Some(Duration::from_secs(DEFAULT_OUTPUT_TIMEOUT_SECS)),
            shutdown_timeout: Duration::from_secs(DEFAULT_SHUTDOWN_SECS),
            stats_interval: None,
            reuse_port: false,
            proxy_protocol: false,
            log_format: None,
            metrics: None,
            proxy_from: Vec::new(),
            unix_mode: None,
        };
        let mut port: Option<u16> = None;

        while let Some(arg) = parser.next()? {
            match arg {
                Short('h') | Long("help") => return Ok(Command::Help),
                Short('V') | Long("version") => return Ok(Command::Version),
                Short('l') | Long("listen") => {
                    let v = string_value(&mut parser, "--listen")?;
                    cfg.listen.push(parse_addr(&v)?);
                }
                Long("unix") => {
                    let v = parser.value()?;
                    if v.is_empty() {
                        return Err(invalid("--unix", "", "expected a path"));
                    }
                    cfg.unix.push(PathBuf::from(v));
                }
                Long("seed") => cfg.seed = Some(number(&mut parser, "--seed")?),
                Long("min") => cfg.min = number(&mut parser, "--min")?,
                Long("max") => cfg.max = number(&mut parser, "--max")?,
                Long("max-connections") => {
                    let n: usize = number(&mut parser, "--max-connections")?;
                    if n == 0 {
                        return Err(invalid("--max-connections", "0", "must be at least 1"));
                    }
                    cfg.max_connections = Some(n);
                }
                Long("max-line") => {
                    let n: usize = number(&mut parser, "--max-line")?;
                    cfg.max_line = (n > 0).then_some(n);
                }
                Long("idle-timeout") => {
                    let d = seconds(&mut parser, "--idle-timeout")?;
                    cfg.idle_timeout = (!d.is_zero()).then_some(d);
                }
                Long("tcp-keepalive") => {
                    let d = seconds(&mut parser, "--tcp-keepalive")?;
                    // The kernel takes at most 32767 s (TCP_KEEPIDLE).
                    if d.as_secs() > 32767 {
                        let v = d.as_secs().to_string();
                        return Err(invalid("--tcp-keepalive", &v, "at most 32767"));
                    }
                    cfg.tcp_keepalive = (!d.is_zero()).then_some(d);
                }
                Long("max-connections-per-ip") => {
                    cfg.max_per_ip = Some(number(&mut parser, "--max-connections-per-ip")?);
                }
                Long("output-budget") => {
                    let v = string_value(&mut parser, "--output-budget")?;
                    cfg.output_budget = Some(parse_bytes(&v).ok_or_else(|| {
                        invalid(
                            "--output-budget",
                            &v,
                            "expected bytes, e.g. 65536, 64K, 16M, 1G",
                        )
                    })?);
                }
                Long("output-timeout") => {
                    let d = seconds(&mut parser, "--output-timeout")?;
                    cfg.output_timeout = (!d.is_zero()).then_some(d);
                }
                Long("shutdown-timeout") => {
                    cfg.shutdown_timeout = seconds(&mut parser, "--shutdown-timeout")?;
                }
                Long("reuse-port") => cfg.reuse_port = true,
                Long("proxy-protocol") => cfg.proxy_protocol = true,
                Long("log-format") => {
                    let v = string_value(&mut parser, "--log-format")?;
                    cfg.log_format = Some(match v.as_str() {
                        "text" => LogFormat::Text,
                        "journald" => LogFormat::Journald,
                        _ => return Err(invalid("--log-format", &v, "expected text or journald")),
                    });
                }
                Long("metrics") => {
                    let v = parser.value()?;
                    let text = v.to_str().unwrap_or("");
                    cfg.metrics = Some(text.parse().map_err(|_| {
                        invalid("--metrics", &v, "expected IP:PORT, e.g. 127.0.0.1:9464")
                    })?);
                }
                Long("proxy-from") => {
                    let v = parser.value()?;
                    let cidr = v.to_str().and_then(parse_cidr).ok_or_else(|| {
                        invalid(
                            "--proxy-from",
                            &v,
                            "expected ADDR or ADDR/LEN, e.g. 10.0.0.0/8",
                        )
                    })?;
                    cfg.proxy_from.push(cidr);
                }
                Long("unix-mode") => {
                    let v = parser.value()?;
                    let mode = v
                        .to_str()
                        .filter(|t| !t.is_empty() && t.len() <= 4)
                        .filter(|t| t.bytes().all(|b| (b'0'..=b'7').contains(&b)))
                        .and_then(|t| u32::from_str_radix(t, 8).ok())
                        .filter(|m| *m <= 0o777)
                        .ok_or_else(|| {
                            invalid(
                                "--unix-mode",
                                &v,
                                "expected octal permission bits, e.g. 660",
                            )
                        })?;
                    cfg.unix_mode = Some(mode);
                }
                Long("stats-interval") => {
                    let d = seconds(&mut parser, "--stats-interval")?;
                    cfg.stats_interval = (!d.is_zero()).then_some(d);
                }
                Value(v) => {
                    if port.is_some() {
                        return Err(invalid("argument", &v, "only one PORT may be given"));
                    }
                    port = Some(parse_port(v.to_str().ok_or_else(|| bad_port(&v))?)?);
                }
                // `randline -10`: lexopt sees option `-1` with `0` attached.
                // Put the number back together so the message names it.
                Short(c) if c.is_ascii_digit() => {
                    let mut value = OsString::from(format!("-{c}"));
                    value.extend(parser.optional_value());
                    return Err(bad_port(&value));
                }
                _ => return Err(arg.unexpected().into()),
            }
        }

        if cfg.min > cfg.max {
            return Err(CliError::Invalid(format!(
                "invalid bounds --min {} --max {}: min must not exceed max",
                cfg.min, cfg.max
            )));
        }
        if let Some(p) = port {
            cfg.listen.insert(0, SocketAddr::from(([0, 0, 0, 0], p)));
        }
        if !cfg.proxy_from.is_empty() && !cfg.proxy_protocol {
            return Err(CliError::Invalid(
                "--proxy-from is for --proxy-protocol: without it, no header is read".into(),
            ));
        }
        if cfg.listen.is_empty() && cfg.unix.is_empty() && !sockets_passed {
            return Err(CliError::NoListener);
        }
        Ok(Command::Serve(cfg))
    }
}

/// Parses the process's arguments for a program called `name`, and does
/// what a command line that is not "serve" asks: prints the help or the
/// version on stdout, or the error on stderr. `Err` holds the exit code to
/// return: 0 after help or version, 2 for a bad command line.
/// `sockets_passed`: see [`Config::parse_with`].
pub fn from_args_or_exit_code(
    name: &str,
    sockets_passed: bool,
) -> Result<Config, std::process::ExitCode> {
    use std::process::ExitCode;
    match Config::parse_with(std::env::args_os().skip(1), sockets_passed) {
        Ok(Command::Serve(cfg)) => Ok(cfg),
        Ok(Command::Help) => {
            println!("{HELP}");
            Err(ExitCode::SUCCESS)
        }
        Ok(Command::Version) => {
            println!("{name} {}", env!("CARGO_PKG_VERSION"));
            Err(ExitCode::SUCCESS)
        }
        Err(e @ CliError::NoListener) => {
            eprintln!("{e}");
            Err(ExitCode::from(2))
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// `--flag VALUE` was wrong: one line naming the value ([`shown`]) and why.
fn invalid(what: &str, value: impl AsRef<OsStr>, why: &str) -> CliError {
    let (value, why) = (shown(value.as_ref()), one_line(why));
    CliError::Invalid(format!("invalid value '{value}' for {what}: {why}"))
}

fn bad_port(value: impl AsRef<OsStr>) -> CliError {
    CliError::Invalid(format!(
        "invalid port '{}': expected a number from 0 to 65535",
        shown(value.as_ref())
    ))
}

fn string_value(parser: &mut lexopt::Parser, flag: &str) -> Result<String, CliError> {
    let raw = parser.value()?;
    raw.into_string()
        .map_err(|raw| invalid(flag, &raw, "not valid UTF-8"))
}

/// A value from the command line as an error message quotes it: on one
/// line, whatever it holds, so that no argument can add a line of its own
/// to stderr or a log. Line breaks, tabs, other control and non-printable
/// characters, quotes and backslashes are escaped as Rust writes them
/// (`\n`, `\u{2028}`, `\'`, `\\`), bytes that are not UTF-8 as `\xFF`;
/// ordinary text (`12a`, `[::1]:7000`, `é`) is left as it is.
fn shown(value: &OsStr) -> String {
    let mut out = String::new();
    for chunk in value.as_encoded_bytes().utf8_chunks() {
        out.extend(chunk.valid().escape_debug());
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02X}");
        }
    }
    out
}

/// Text that is not a quoted value (a reason from the standard library, a
/// message from lexopt) with any control or line-separating character
/// escaped, so that it too stays on one line.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

fn number<T: std::str::FromStr>(parser: &mut lexopt::Parser, flag: &str) -> Result<T, CliError>
where
    T::Err: fmt::Display,
{
    let v = string_value(parser, flag)?;
    v.parse::<T>()
        .map_err(|e| invalid(flag, &v, &e.to_string()))
}

fn seconds(parser: &mut lexopt::Parser, flag: &str) -> Result<Duration, CliError> {
    let n: u64 = number(parser, flag)?;
    // Keep `Instant + Duration` far from overflow.
    if n > 100 * 365 * 24 * 3600 {
        return Err(invalid(flag, n.to_string(), "more than a century"));
    }
    Ok(Duration::from_secs(n))
}

/// `10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7` (one host). Host bits set
/// under the mask are refused: `10.0.0.1/8` is most likely a typo.
fn parse_cidr(v: &str) -> Option<Cidr> {
    let (addr, len) = match v.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (v, None),
    };
    let net: IpAddr = addr.parse().ok()?;
    if let IpAddr::V6(v6) = net
        && v6.to_ipv4_mapped().is_some()
    {
        // Peers are matched as IPv4 (mapped addresses are unmapped): an
        // IPv4-mapped network would never match. Write it as IPv4.
        return None;
    }
    let max = if net.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) && l.len() <= 3 => {
            l.parse().ok().filter(|n| *n <= max)?
        }
        Some(_) => return None,
    };
    // The address must be the network's own: no host bits set.
    let host_bits_clear = match net {
        IpAddr::V4(a) => mask32(a.to_bits(), len) == a.to_bits(),
        IpAddr::V6(a) => mask128(a.to_bits(), len) == a.to_bits(),
    };
    host_bits_clear.then_some(Cidr { net, len })
}

/// `65536`, `64K`, `16M`, `1G` (binary multiples); none of it may overflow.
fn parse_bytes(v: &str) -> Option<usize> {
    let (digits, shift) = match v.as_bytes().last()? {
        b'K' | b'k' => (&v[..v.len() - 1], 10),
        b'M' | b'm' => (&v[..v.len() - 1], 20),
        b'G' | b'g' => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: usize = digits.parse().ok()?;
    n.checked_mul(1 << shift)
}

fn parse_port(v: &str) -> Result<u16, CliError> {
    // Only plain decimal digits: `+80` or ` 80` are typos, not ports.
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_port(v));
    }
    v.parse::<u16>().map_err(|_| bad_port(v))
}

/// `127.0.0.1:7000`, `[::1]:0`, `localhost:7000`. A host name is resolved
/// once, here, and its first address is used.
fn parse_addr(v: &str) -> Result<SocketAddr, CliError> {
    if let Ok(addr) = v.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = v.rsplit_once(':') else {
        return Err(invalid(
            "--listen",
            v,
            "expected HOST:PORT, e.g. 127.0.0.1:7000",
        ));
    };
    if parse_port(port).is_err() {
        return Err(invalid(
            "--listen",
            v,
            "the port must be a number from 0 to 65535",
        ));
    }
    if host.is_empty() {
        return Err(invalid(
            "--listen",
            v,
            "expected HOST:PORT, e.g. 127.0.0.1:7000",
        ));
    }
    match v.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| invalid("--listen", v, "the host has no address")),
        Err(e) => Err(invalid("--listen", v, &e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, CliError> {
        Config::parse(args.iter().copied())
    }

    fn serve(args: &[&str]) -> Config {
        match parse(args) {
            Ok(Command::Serve(c)) => c,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    fn error(args: &[&str]) -> String {
        match parse(args) {
            Err(e) => e.to_string(),
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    #[test]
    fn port_alone_listens_on_all_ipv4_interfaces() {
        let c = serve(&["8001"]);
        assert_eq!(c.listen, vec!["0.0.0.0:8001".parse().unwrap()]);
        assert_eq!((c.min, c.max), (1, 99));
        assert_eq!(c.max_line, Some(8192));
        assert_eq!(c.idle_timeout, None);
    }

    #[test]
    fn listen_is_repeatable_and_accepts_ipv6() {
        let c = serve(&["-l", "127.0.0.1:0", "--listen", "[::1]:7000"]);
        assert_eq!(c.listen.len(), 2);
        assert!(c.listen[1].is_ipv6());
    }

    #[test]
    fn negative_bounds_are_values_not_flags() {
        let c = serve(&["--min", "-5", "--max=-1", "1"]);
        assert_eq!((c.min, c.max), (-5, -1));
    }

    #[test]
    fn zero_means_off() {
        let c = serve(&["--max-line", "0", "--idle-timeout", "0", "1"]);
        assert_eq!(c.max_line, None);
        assert_eq!(c.idle_timeout, None);
        assert_eq!(serve(&["--stats-interval", "0", "1"]).stats_interval, None);
        let c = serve(&["--stats-interval", "30", "1"]);
        assert_eq!(c.stats_interval, Some(Duration::from_secs(30)));
    }

    #[test]
    fn bad_values_are_named() {
        assert!(error(&["12a"]).contains("'12a'"));
        assert!(error(&["-10"]).contains("'-10'"));
        assert!(error(&["70000"]).contains("'70000'"));
        assert!(error(&["--min", "5", "--max", "1"]).contains("--min 5 --max 1"));
        assert!(error(&["--frobnicate", "1"]).contains("--frobnicate"));
        assert!(error(&["--seed", "x", "1"]).contains("'x'"));
        assert!(error(&["-l", "nonsense", "1"]).contains("'nonsense'"));
        assert!(error(&["-l", "127.0.0.1:99999"]).contains("'127.0.0.1:99999'"));
    }

    #[test]
    fn errors_are_one_line() {
        for args in [&["12a"][..], &["--max-connections", "0"], &["--min"]] {
            assert!(!error(args).contains('\n'), "{args:?}");
        }
    }

    #[test]
    fn values_are_escaped_so_that_every_error_is_one_line() {
        use std::os::unix::ffi::OsStringExt;

        assert_eq!(
            error(&["--seed", "1\nrandline: injected", "1"]),
            "invalid value '1\\nrandline: injected' for --seed: invalid digit found in string"
        );
        assert_eq!(
            error(&["80\n81"]),
            "invalid port '80\\n81': expected a number from 0 to 65535"
        );
        assert_eq!(
            error(&["--frob\r\nicate", "1"]),
            "invalid option '--frob\\r\\nicate'"
        );
        assert_eq!(
            error(&["-1\n2"]),
            "invalid port '-1\\n2': expected a number from 0 to 65535"
        );
        assert!(error(&["--listen", "x\ny"]).contains("'x\\ny'"));
        assert!(error(&["--log-format", "te\u{2028}xt", "1"]).contains("'te\\u{2028}xt'"));
        assert!(error(&["--output-budget", "1\t", "1"]).contains("'1\\t'"));
        assert!(error(&["1", "it's \"2\" C:\\"]).contains(r#"'it\'s \"2\" C:\\'"#));
        // Printable text beyond ASCII is shown as it is.
        assert!(error(&["--log-format", "journal·d", "1"]).contains("'journal·d'"));
        // Bytes that are not UTF-8 are shown as bytes, not as U+FFFD.
        let not_utf8 = |bytes: &[u8]| OsString::from_vec(bytes.to_vec());
        let bad = Config::parse([not_utf8(b"--seed"), not_utf8(b"1\xff\n"), "1".into()]);
        assert_eq!(
            bad.unwrap_err().to_string(),
            "invalid value '1\\xFF\\n' for --seed: not valid UTF-8"
        );
        let bad = Config::parse([not_utf8(b"8\xc3\n")]);
        assert!(bad.unwrap_err().to_string().contains("'8\\xC3\\n'"));
        // Whatever the arguments hold, no message holds a control character.
        for args in [
            &["--seed", "\u{85}\u{1b}[2J\0"][..],
            &["--min", "\r"],
            &["--max-connections", "\x0b"],
            &["--reuse-port=\n", "1"],
            &["--unix", "", "\n"],
            &["-\n"],
        ] {
            let msg = error(args);
            assert!(!msg.contains(char::is_control), "{args:?}: {msg:?}");
        }
    }

    #[test]
    fn nothing_to_listen_on_is_a_usage_error() {
        assert_eq!(parse(&[]).unwrap_err(), CliError::NoListener);
        assert!(matches!(parse(&["--seed", "3"]), Err(CliError::NoListener)));
        // ... unless systemd passed the sockets.
        assert!(matches!(
            Config::parse_with(["--seed", "3"], true),
            Ok(Command::Serve(_))
        ));
    }

    #[test]
    fn proxy_from_unix_mode_and_metrics() {
        let c = serve(&[
            "--proxy-protocol",
            "--proxy-from",
            "10.0.0.0/8",
            "--proxy-from",
            "2001:db8::/32",
            "--proxy-from",
            "192.0.2.7",
            "--unix-mode",
            "660",
            "--metrics",
            "127.0.0.1:9464",
            "1",
        ]);
        assert_eq!(c.proxy_from.len(), 3);
        let has = |ip: &str| c.proxy_from.iter().any(|n| n.contains(ip.parse().unwrap()));
        assert!(has("10.1.2.3") && has("2001:db8:ffff::1") && has("192.0.2.7"));
        assert!(
            has("::ffff:10.9.9.9"),
            "an IPv4-mapped address is its IPv4 address"
        );
        assert!(!has("11.0.0.1") && !has("192.0.2.8") && !has("2001:db9::1"));
        assert_eq!(c.unix_mode, Some(0o660));
        assert_eq!(c.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0.0/",
            "nonsense",
            "::/129",
            "1.2.3.4/+8",
        ] {
            let e = error(&["--proxy-protocol", "--proxy-from", bad, "1"]);
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
        assert!(error(&["--proxy-from", "10.0.0.0/8", "1"]).contains("--proxy-protocol"));
        for bad in ["8", "999", "1000", "rw", "", "-1"] {
            assert!(
                error(&["--unix-mode", bad, "1"]).contains(&format!("'{bad}'")),
                "{bad}"
            );
        }
        assert!(error(&["--metrics", "localhost", "1"]).contains("'localhost'"));
    }

    #[test]
    fn limit_flags() {
        let c = serve(&["1"]);
        assert_eq!(c.tcp_keepalive, Some(Duration::from_secs(300)));
        assert_eq!(c.max_per_ip, None);
        assert_eq!(c.output_budget, None, "derived from the memory at start");
        assert_eq!(c.output_timeout, Some(Duration::from_secs(60)));
        let c = serve(&[
            "--tcp-keepalive",
            "0",
            "--max-connections-per-ip",
            "0",
            "--output-budget",
            "64K",
            "--output-timeout",
            "0",
            "1",
        ]);
        assert_eq!(c.tcp_keepalive, None);
        assert_eq!(c.max_per_ip, Some(0));
        assert_eq!(c.output_budget, Some(64 << 10));
        assert_eq!(c.output_timeout, None);
        assert_eq!(
            serve(&["--output-budget", "1000", "1"]).output_budget,
            Some(1000)
        );
        assert_eq!(
            serve(&["--output-budget", "2g", "1"]).output_budget,
            Some(2 << 30)
        );
        for bad in ["", "M", "1.5M", "-1", "16MB", "99999999999999999999G"] {
            assert!(error(&["--output-budget", bad, "1"]).contains(&format!("'{bad}'")));
        }
        assert!(error(&["--tcp-keepalive", "40000", "1"]).contains("'40000'"));
    }

    #[test]
    fn deployment_flags() {
        let c = serve(&[
            "--reuse-port",
            "--proxy-protocol",
            "--log-format",
            "journald",
            "1",
        ]);
        assert!(c.reuse_port && c.proxy_protocol);
        assert_eq!(c.log_format, Some(LogFormat::Journald));
        assert_eq!(serve(&["1"]).log_format, None);
        assert!(error(&["--log-format", "xml", "1"]).contains("'xml'"));
    }
}
