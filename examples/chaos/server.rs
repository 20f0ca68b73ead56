//! The server under test, seen from outside: started as a child process,
//! its log read on a thread, its descriptors, memory and counters read
//! from /proc and from its `stats:` lines (SIGUSR1).
//!
//! What is not here: judging clients (client.rs).

use crate::client::Target;
use rustix::process::{Pid, Signal, kill_process};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Log lines kept for a failure report.
const LOG_TAIL: usize = 200;

/// The log as it arrives: the tail, and every `stats:` line.
#[derive(Default)]
struct Log {
    tail: VecDeque<String>,
    stats: Vec<String>,
    listening: Option<String>,
    exited: bool,
}

pub struct Server {
    child: Child,
    log: Arc<(Mutex<Log>, Condvar)>,
    pub target: Target,
    unix_path: Option<PathBuf>,
}

impl Server {
    /// Starts `wrap... server args...` and waits for its first listener.
    pub fn start(
        wrap: &[String],
        server: &str,
        args: &[String],
        unix: Option<PathBuf>,
    ) -> Result<Server, String> {
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(server);
                c
            }
            None => Command::new(server),
        };
        cmd.args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {server}: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let log = Arc::new((Mutex::new(Log::default()), Condvar::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (log, cv) = &*sink;
                let mut log = log.lock().expect("log lock");
                if line.contains("stats: ") {
                    log.stats.push(line.clone());
                }
                if log.listening.is_none() && line.contains("listening on ") {
                    log.listening = Some(line.clone());
                }
                // One `serving` line per client would crowd out the rest.
                if !line.contains(" serving ") {
                    log.tail.push_back(line);
                }
                if log.tail.len() > LOG_TAIL {
                    log.tail.pop_front();
                }
                cv.notify_all();
            }
            let (log, cv) = &*sink;
            log.lock().expect("log lock").exited = true;
            cv.notify_all();
        });
        let mut server = Server {
            child,
            log,
            target: Target::Tcp(([127, 0, 0, 1], 0).into()),
            unix_path: unix.clone(),
        };
        let line = server.wait_log(|l| l.listening.clone(), Duration::from_secs(10))?;
        let addr = line.rsplit("listening on ").next().unwrap_or("").trim();
        server.target = match unix {
            Some(path) => Target::Unix(path),
            None => Target::Tcp(
                addr.parse()
                    .map_err(|_| format!("no address in {line:?}"))?,
            ),
        };
        Ok(server)
    }

    fn wait_log<T>(
        &self,
        mut found: impl FnMut(&Log) -> Option<T>,
        limit: Duration,
    ) -> Result<T, String> {
        let (log, cv) = &*self.log;
        let deadline = Instant::now() + limit;
        let mut guard = log.lock().expect("log lock");
        loop {
            if let Some(t) = found(&guard) {
                return Ok(t);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if guard.exited || left.is_zero() {
                return Err("the server did not log what was expected".into());
            }
            guard = cv.wait_timeout(guard, left).expect("log lock").0;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server is still running.
    pub fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("the server died: {status}")),
            Err(e) => Err(format!("cannot check the server: {e}")),
        }
    }

    /// Open descriptors, from /proc.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    /// The TCP sockets of the server's network namespace, as the kernel
    /// lists them (state, queues, timers): what a leaked descriptor is.
    pub fn tcp_sockets(&self) -> String {
        let table =
            std::fs::read_to_string(format!("/proc/{}/net/tcp", self.pid())).unwrap_or_default();
        // The server's own connections: its port as the local one (hex),
        // and not LISTEN (state 0A). Other programs' sockets share the
        // namespace and could make this long.
        let port = match &self.target {
            Target::Tcp(addr) => format!(":{:04X} ", addr.port()),
            Target::Unix(_) => return "(a Unix socket: see the descriptors)".into(),
        };
        table
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| format!("{a} ").ends_with(&port))
            })
            .filter(|l| l.split_whitespace().nth(3) != Some("0A"))
            .take(50)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Asks for a `stats:` line (SIGUSR1) and returns its `key` field.
    pub fn counter(&self, key: &str) -> Result<u64, String> {
        let before = self.log.0.lock().expect("log lock").stats.len();
        let pid = Pid::from_raw(self.pid() as i32).ok_or("bad pid")?;
        kill_process(pid, Signal::USR1).map_err(|e| format!("SIGUSR1: {e}"))?;
        let line = self.wait_log(|l| l.stats.get(before).cloned(), Duration::from_secs(10))?;
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {key} in {line:?}"))
    }

    /// The last log lines, for a failure report.
    pub fn tail(&self, n: usize) -> String {
        let log = self.log.0.lock().expect("log lock");
        let skip = log.tail.len().saturating_sub(n);
        log.tail
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM, then the exit status within the grace period.
    pub fn stop(mut self) -> Result<(), String> {
        let pid = Pid::from_raw(self.pid() as i32).ok_or("bad pid")?;
        kill_process(pid, Signal::TERM).map_err(|e| format!("SIGTERM: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("the server exited with {status}")),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return Err("the server did not exit after SIGTERM".into()),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(p) = &self.unix_path {
            let _ = std::fs::remove_file(p);
        }
    }
}
