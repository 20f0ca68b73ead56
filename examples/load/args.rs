//! The command line, checked and typed.

use crate::{HOLD_MAX_SECS, MAX_CHURN_CLIENTS, MAX_CONNS, MAX_DEPTH, MAX_LINE, MAX_SECS};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    Rate,
    Hold,
    Churn,
    /// No client at all: only the server's /proc samples, `--secs` apart.
    Idle,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Rate => "rate",
            Mode::Hold => "hold",
            Mode::Churn => "churn",
            Mode::Idle => "idle",
        }
    }

    /// The options this mode takes (without their `--`).
    fn takes(self, flag: &str) -> bool {
        let only = match self {
            Mode::Rate => ["depth", "warmup"].as_slice(),
            Mode::Hold => [].as_slice(),
            Mode::Churn => ["stop"].as_slice(),
            Mode::Idle => return matches!(flag, "secs" | "json" | "server-pid"),
        };
        matches!(
            flag,
            "addr" | "conns" | "secs" | "line" | "json" | "server-pid"
        ) || only.contains(&flag)
    }
}

/// A checked command line.
pub(crate) struct Args {
    pub(crate) mode: Mode,
    /// `None` only in `idle`, which connects to nothing.
    addr: Option<SocketAddr>,
    pub(crate) conns: usize,
    pub(crate) depth: usize,
    /// Seconds to measure (`rate`, `churn`) or to hold (at most
    /// [`HOLD_MAX_SECS`]).
    pub(crate) secs: f64,
    /// `hold` without `--secs`: until SIGINT/SIGTERM, or `secs`.
    pub(crate) until_signal: bool,
    pub(crate) warmup: f64,
    /// The line sent, with its `\n`.
    pub(crate) line: Vec<u8>,
    /// `churn`'s last line, with its `\n`.
    pub(crate) stop: Vec<u8>,
    pub(crate) json: bool,
    /// `--server-pid`: the server whose /proc figures go into the record.
    pub(crate) server_pid: Option<u32>,
}

impl Args {
    /// The server's address (every mode but `idle` has one).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

/// The command line as [`Args`], `None` for `--help`, or a one-line error
/// that names the bad value.
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Option<Args>, String> {
    use lexopt::prelude::*;

    let mut p = lexopt::Parser::from_args(args);
    let mut mode = None;
    let mut addr = None;
    let mut conns = 1;
    let mut depth = 1;
    let mut secs = None;
    let mut warmup = 1.0;
    let mut line = b"x\n".to_vec();
    let mut stop = b"STOP\n".to_vec();
    let mut json = false;
    let mut server_pid = None;

    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        let flag = match arg {
            Short('h') | Long("help") => return Ok(None),
            Value(v) if mode.is_none() => {
                mode = Some(match v.to_str() {
                    Some("rate") => Mode::Rate,
                    Some("hold") => Mode::Hold,
                    Some("churn") => Mode::Churn,
                    Some("idle") => Mode::Idle,
                    _ => {
                        let v = v.to_string_lossy();
                        return Err(format!(
                            "invalid mode '{v}': expected rate, hold, churn or idle"
                        ));
                    }
                });
                continue;
            }
            Long(
                f @ ("addr" | "conns" | "depth" | "secs" | "warmup" | "line" | "stop" | "json"
                | "server-pid"),
            ) => f.to_string(),
            _ => return Err(arg.unexpected().to_string()),
        };
        let Some(m) = mode else {
            return Err(format!(
                "--{flag} before the mode: the first argument is rate, hold, churn or idle"
            ));
        };
        if !m.takes(&flag) {
            return Err(format!("{} does not take --{flag}", m.name()));
        }
        let name = format!("--{flag}");
        match flag.as_str() {
            "addr" => addr = Some(parse_addr(&text(&mut p, &name)?)?),
            "conns" => conns = whole(&mut p, &name, MAX_CONNS)?,
            "depth" => depth = whole(&mut p, &name, MAX_DEPTH)?,
            "secs" => secs = Some(seconds(&mut p, &name, false)?),
            "warmup" => warmup = seconds(&mut p, &name, true)?,
            "line" => line = line_value(&mut p, &name)?,
            "stop" => stop = line_value(&mut p, &name)?,
            "server-pid" => server_pid = Some(pid(&mut p, &name)?),
            _ => json = true,
        }
    }

    let Some(mode) = mode else {
        return Err("missing mode: rate, hold, churn or idle (try --help)".into());
    };
    if mode == Mode::Idle && server_pid.is_none() {
        return Err("idle: missing --server-pid (it measures a server with no client)".into());
    }
    if addr.is_none() && mode != Mode::Idle {
        return Err(format!(
            "{}: missing --addr (e.g. --addr 127.0.0.1:7000)",
            mode.name()
        ));
    }
    if mode == Mode::Hold
        && let Some(s) = secs
        && s > HOLD_MAX_SECS
    {
        return Err(format!(
            "invalid value '{s}' for --secs: hold lasts at most {HOLD_MAX_SECS} s"
        ));
    }
    if mode == Mode::Churn && conns > MAX_CHURN_CLIENTS {
        return Err(format!(
            "invalid value '{conns}' for --conns: churn runs at most {MAX_CHURN_CLIENTS} clients"
        ));
    }
    let until_signal = mode == Mode::Hold && secs.is_none();
    let secs = secs.unwrap_or(if until_signal { HOLD_MAX_SECS } else { 5.0 });
    Ok(Some(Args {
        mode,
        addr,
        conns,
        depth,
        secs,
        until_signal,
        warmup,
        line,
        stop,
        json,
        server_pid,
    }))
}

fn invalid(flag: &str, value: &str, why: &str) -> String {
    format!("invalid value '{value}' for {flag}: {why}")
}

fn text(p: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    let raw = p.value().map_err(|e| e.to_string())?;
    raw.into_string()
        .map_err(|raw| invalid(flag, &raw.to_string_lossy(), "not valid UTF-8"))
}

/// A count from 1 to `max`.
fn whole(p: &mut lexopt::Parser, flag: &str, max: usize) -> Result<usize, String> {
    let v = text(p, flag)?;
    match v.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(invalid(
            flag,
            &v,
            &format!("expected a whole number from 1 to {max}"),
        )),
    }
}

/// Seconds, fractions allowed, up to [`MAX_SECS`]; zero only if `zero_ok`.
fn seconds(p: &mut lexopt::Parser, flag: &str, zero_ok: bool) -> Result<f64, String> {
    let v = text(p, flag)?;
    let low = if zero_ok { "0" } else { "more than 0" };
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s <= MAX_SECS && (s > 0.0 || (zero_ok && s == 0.0)) => Ok(s),
        _ => Err(invalid(
            flag,
            &v,
            &format!("expected seconds, {low} to {MAX_SECS}"),
        )),
    }
}

/// A line to send: any bytes but `\n`; the `\n` is added here.
fn line_value(p: &mut lexopt::Parser, flag: &str) -> Result<Vec<u8>, String> {
    let mut v = p.value().map_err(|e| e.to_string())?.into_vec();
    // Escaped and cut short, so the message stays one short line.
    let shown: String = String::from_utf8_lossy(&v)
        .escape_debug()
        .take(60)
        .collect();
    if v.contains(&b'\n') {
        return Err(invalid(flag, &shown, "a line must not contain a newline"));
    }
    if v.len() > MAX_LINE {
        return Err(invalid(
            flag,
            &shown,
            &format!("longer than {MAX_LINE} bytes"),
        ));
    }
    v.push(b'\n');
    Ok(v)
}

/// `IP:PORT` on a loopback address: the tool only ever loads this machine.
fn parse_addr(v: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = v
        .parse()
        .map_err(|_| invalid("--addr", v, "expected IP:PORT, e.g. 127.0.0.1:7000"))?;
    if !addr.ip().is_loopback() {
        return Err(invalid(
            "--addr",
            v,
            "not a loopback address (127.0.0.0/8 or ::1): the load tool only loads this machine",
        ));
    }
    if addr.port() == 0 {
        return Err(invalid("--addr", v, "port 0 cannot be connected to"));
    }
    Ok(addr)
}

/// A process id that exists now.
fn pid(p: &mut lexopt::Parser, flag: &str) -> Result<u32, String> {
    let v = text(p, flag)?;
    match v.parse::<u32>() {
        Ok(n) if n > 0 && std::path::Path::new(&format!("/proc/{n}/stat")).exists() => Ok(n),
        Ok(n) if n > 0 => Err(invalid(flag, &v, "no such process")),
        _ => Err(invalid(flag, &v, "expected a process id")),
    }
}
