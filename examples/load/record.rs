//! The one JSON record a run prints with `--json`, and the /proc samples
//! in it. Written by hand (a few lines, no serde): values are numbers,
//! booleans, strings (escaped here), arrays and objects.
//!
//! `--server-pid PID` adds, at each sample point, the server's CPU time
//! (utime + stime of all its threads, `/proc/PID/stat`, in clock ticks),
//! resident and virtual size (`VmRSS`, `VmSize`), threads, and context
//! switches (voluntary + involuntary, summed over `/proc/PID/task/*`);
//! every sample also has the load tool's own CPU time and the system's
//! kernel slab (`Slab` in `/proc/meminfo`), and `t`, seconds since the
//! tool started. `clk_tck` gives the length of a tick.

use std::fmt::Write as _;
use std::fs;
use std::time::Instant;

/// A JSON value.
pub(crate) enum Json {
    Null,
    Bool(bool),
    Int(i128),
    /// Written with `digits` decimals; NaN and infinities as `null`.
    Float(f64, usize),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Json::Float(x, digits) if x.is_finite() => {
                let _ = write!(out, "{x:.digits$}");
            }
            Json::Float(..) => out.push_str("null"),
            Json::Str(s) => {
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        c if (c as u32) < 0x20 => {
                            let _ = write!(out, "\\u{:04x}", c as u32);
                        }
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            Json::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Json::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    Json::Str(k.clone()).write(out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

impl From<u64> for Json {
    fn from(n: u64) -> Json {
        Json::Int(n.into())
    }
}
impl From<usize> for Json {
    fn from(n: usize) -> Json {
        Json::Int(n as i128)
    }
}
impl From<u32> for Json {
    fn from(n: u32) -> Json {
        Json::Int(n.into())
    }
}
impl From<f64> for Json {
    fn from(x: f64) -> Json {
        Json::Float(x, 3)
    }
}
impl From<bool> for Json {
    fn from(b: bool) -> Json {
        Json::Bool(b)
    }
}
impl From<&str> for Json {
    fn from(s: &str) -> Json {
        Json::Str(s.to_string())
    }
}
impl From<String> for Json {
    fn from(s: String) -> Json {
        Json::Str(s)
    }
}
impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(v: Option<T>) -> Json {
        v.map_or(Json::Null, Into::into)
    }
}

/// A figure with one decimal (µs, lines/s).
pub(crate) fn f1(x: f64) -> Json {
    Json::Float(x, 1)
}

/// A figure with three decimals (seconds).
pub(crate) fn f3(x: f64) -> Json {
    Json::Float(x, 3)
}

/// One run's record: its fields in order, and the /proc samples.
pub(crate) struct Record {
    fields: Vec<(String, Json)>,
    server_pid: Option<u32>,
    started: Instant,
    samples: Vec<Json>,
}

impl Record {
    /// A record for `mode`, sampling `server_pid` if given.
    pub(crate) fn new(mode: &str, server_pid: Option<u32>) -> Record {
        let mut r = Record {
            fields: Vec::new(),
            server_pid,
            started: Instant::now(),
            samples: Vec::new(),
        };
        r.set("mode", mode);
        r.set("server_pid", server_pid);
        r.set("clk_tck", rustix::param::clock_ticks_per_second());
        r
    }

    /// Sets a field (appended: the caller sets each once).
    pub(crate) fn set(&mut self, key: &str, value: impl Into<Json>) {
        self.fields.push((key.to_string(), value.into()));
    }

    /// Whether a server is being sampled.
    pub(crate) fn has_server(&self) -> bool {
        self.server_pid.is_some()
    }

    /// The server's thread count now (0 when gone or not sampled).
    pub(crate) fn server_threads(&self) -> u64 {
        self.server_pid
            .and_then(|pid| status_field(&format!("/proc/{pid}/status"), "Threads:"))
            .unwrap_or(0)
    }

    /// Takes a sample named `at`.
    pub(crate) fn sample(&mut self, at: &str) {
        let t = self.started.elapsed().as_secs_f64();
        let mut s = vec![
            ("at".to_string(), Json::from(at)),
            ("t".to_string(), f3(t)),
            ("load_ticks".to_string(), Json::from(cpu_ticks("self"))),
            (
                "slab_kib".to_string(),
                Json::from(status_field("/proc/meminfo", "Slab:")),
            ),
        ];
        if let Some(pid) = self.server_pid {
            let status = format!("/proc/{pid}/status");
            s.push((
                "server".to_string(),
                Json::Obj(vec![
                    ("ticks".into(), cpu_ticks(&pid.to_string()).into()),
                    ("rss_kib".into(), status_field(&status, "VmRSS:").into()),
                    (
                        "vm_size_kib".into(),
                        status_field(&status, "VmSize:").into(),
                    ),
                    ("threads".into(), status_field(&status, "Threads:").into()),
                    ("ctx_switches".into(), ctx_switches(pid).into()),
                ]),
            ));
        }
        self.samples.push(Json::Obj(s));
    }

    /// Prints the record as one line of JSON on stdout.
    pub(crate) fn print(mut self) {
        let samples = std::mem::take(&mut self.samples);
        self.fields.push(("samples".into(), Json::Arr(samples)));
        let mut out = String::new();
        Json::Obj(self.fields).write(&mut out);
        println!("{out}");
    }
}

/// utime + stime of every thread of `/proc/WHO/stat`, in clock ticks.
fn cpu_ticks(who: &str) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{who}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_ascii_whitespace();
    // After the name: state is field 3; utime and stime are 14 and 15.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The number after `name` in a `/proc` "Name: value" file.
fn status_field(path: &str, name: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Voluntary + involuntary context switches, summed over the live threads.
fn ctx_switches(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let status = task.path().join("status");
        let status = status.to_string_lossy();
        total += status_field(&status, "voluntary_ctxt_switches:").unwrap_or(0);
        total += status_field(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0);
    }
    Some(total)
}
