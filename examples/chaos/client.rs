//! Runs one plan against the server over a real socket, and judges what
//! came back against the model.
//!
//! A client is two threads: this one writes the plan, step by step; a
//! reader thread reads (eagerly, slowly, or never) until EOF, a reset or
//! its deadline. Blocking sockets with timeouts: simple to read, and a
//! server that stops answering makes a client fail, never hang.

use crate::model::{Owed, check_answers, owed};
use crate::plan::{End, Header, Plan, Reader, Step};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where the server listens.
#[derive(Debug, Clone)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A connected socket of either kind.
enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    fn connect(target: &Target, timeout: Duration) -> io::Result<Sock> {
        let sock = match target {
            Target::Tcp(addr) => {
                let s = TcpStream::connect_timeout(addr, timeout)?;
                s.set_nodelay(true)?;
                Sock::Tcp(s)
            }
            Target::Unix(path) => Sock::Unix(UnixStream::connect(path)?),
        };
        sock.set_timeouts(timeout)?;
        Ok(sock)
    }

    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
            Sock::Unix(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
        }
    }

    fn try_clone(&self) -> io::Result<Sock> {
        Ok(match self {
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
            Sock::Unix(s) => Sock::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.shutdown(how),
            Sock::Unix(s) => s.shutdown(how),
        }
    }

    fn send_urgent(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => {
                // Everything but the last byte is ordinary data; MSG_OOB
                // marks the last byte of this send as the urgent one.
                let (data, urgent) = bytes.split_at(bytes.len() - 1);
                (&*s).write_all(data)?;
                let n = socket2::SockRef::from(s).send_out_of_band(urgent)?;
                if n == 1 {
                    Ok(())
                } else {
                    Err(io::ErrorKind::WriteZero.into())
                }
            }
            Sock::Unix(_) => unreachable!("plans for Unix sockets have no urgent data"),
        }
    }

    /// Closes with a reset (TCP: SO_LINGER 0); a Unix socket just closes.
    fn reset(self) {
        if let Sock::Tcp(s) = &self {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for &Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).write(buf),
            Sock::Unix(s) => (&*s).write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How the reader stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadEnd {
    Eof,
    Reset,
    /// The deadline passed with the connection still open.
    Stalled,
    /// It was not reading (a never-reader) or could not connect.
    NotRead,
    Error(String),
}

/// What happened to one client.
pub struct Outcome {
    pub got: Vec<u8>,
    pub end: ReadEnd,
    /// The first write that failed, if any.
    pub write_error: Option<String>,
}

/// Runs `plan`; every wait ends by `deadline`.
pub fn run(plan: &Plan, target: &Target, io_timeout: Duration, deadline: Instant) -> Outcome {
    let sock = match Sock::connect(target, io_timeout) {
        Ok(s) => s,
        Err(e) => {
            return Outcome {
                got: Vec::new(),
                end: ReadEnd::Error(format!("connect: {e}")),
                write_error: None,
            };
        }
    };
    // Only a checked client reads: one that resets or vanishes must hold no
    // second handle, or closing this one would not close the socket.
    let reading = plan.is_checked().then_some(plan.reader);
    let reader = match (reading, sock.try_clone()) {
        (None | Some(Reader::Never), _) => None,
        (Some(style), Ok(r)) => Some(std::thread::spawn(move || read_all(r, style, deadline))),
        (_, Err(e)) => {
            return Outcome {
                got: Vec::new(),
                end: ReadEnd::Error(format!("clone: {e}")),
                write_error: None,
            };
        }
    };
    let write_error = write_plan(&sock, plan, deadline)
        .err()
        .map(|e| e.to_string());
    match plan.end {
        End::Open => {}
        End::HalfClose => {
            let _ = sock.shutdown(Shutdown::Write);
        }
        End::Reset => sock.reset(),
        End::Vanish => drop(sock),
    }
    let (got, end) = match reader {
        Some(r) => r
            .join()
            .unwrap_or_else(|_| (Vec::new(), ReadEnd::Error("reader panicked".into()))),
        None => (Vec::new(), ReadEnd::NotRead),
    };
    Outcome {
        got,
        end,
        write_error,
    }
}

fn write_plan(sock: &Sock, plan: &Plan, deadline: Instant) -> io::Result<()> {
    let mut w: &Sock = sock;
    for step in &plan.steps {
        if Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "plan deadline"));
        }
        match step {
            Step::Send(bytes) => w.write_all(bytes)?,
            Step::Urgent(bytes) => sock.send_urgent(bytes)?,
            Step::Pause(ms) => std::thread::sleep(Duration::from_millis(*ms)),
        }
    }
    Ok(())
}

fn read_all(mut sock: Sock, style: Reader, deadline: Instant) -> (Vec<u8>, ReadEnd) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let chunk = match style {
        Reader::Slow { chunk, .. } => chunk,
        _ => buf.len(),
    };
    loop {
        if Instant::now() > deadline {
            return (got, ReadEnd::Stalled);
        }
        if let Reader::Slow { pause_ms, .. } = style {
            std::thread::sleep(Duration::from_millis(pause_ms));
        }
        match sock.read(&mut buf[..chunk]) {
            Ok(0) => return (got, ReadEnd::Eof),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return (got, ReadEnd::Reset),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The read timeout: try again until the deadline.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return (got, ReadEnd::Error(e.to_string())),
        }
    }
}

/// What a client may see when it is turned away: `--max-connections`,
/// `--max-connections-per-ip`.
const REFUSALS: [&[u8]; 2] = [
    b"ERR server busy\n",
    b"ERR too many connections from your address\n",
];

/// Judges one outcome. `busy_possible`: `--max-connections` is small, so
/// the client may have been turned away instead of served.
pub fn judge(
    plan: &Plan,
    out: &Outcome,
    range: (i64, i64),
    max_line: usize,
    busy_possible: bool,
) -> Result<(), String> {
    // The refusal these bytes begin (or, cut short by a reset, are the
    // start of); an answer never begins with `E`.
    let refusal = REFUSALS
        .iter()
        .find(|r| !out.got.is_empty() && r.starts_with(&out.got[..out.got.len().min(r.len())]));
    if let (true, Some(refusal)) = (busy_possible, refusal) {
        // Turned away: the error line and nothing else, then EOF; a reset
        // only where the server had to close at once (all busy slots
        // taken), and then what arrived is a prefix of the error line.
        return match out.end {
            ReadEnd::Eof if out.got == *refusal => Ok(()),
            ReadEnd::Reset if refusal.starts_with(&out.got) => Ok(()),
            ReadEnd::NotRead => Ok(()),
            _ => Err(format!(
                "turned away, but got {} and {:?}",
                crate::show(&out.got),
                out.end
            )),
        };
    }
    if let ReadEnd::Error(e) = &out.end {
        if e.starts_with("connect") && busy_possible {
            return Ok(()); // the backlog was full: the kernel's refusal
        }
        if plan.is_checked() {
            return Err(format!("client error: {e}"));
        }
    }
    if !plan.is_checked() {
        return Ok(());
    }
    let owed = match plan.header {
        Header::Garbage(_) | Header::Truncated(_) => Owed {
            answers: 0,
            too_long: false,
            ended: true,
        },
        Header::None | Header::Valid(_) => owed(&plan.stream(), Some(max_line)),
    };
    if out.end != ReadEnd::Eof {
        return Err(format!(
            "expected {} answers{} then EOF; the read ended with {:?} after {} bytes (write error: {:?})",
            owed.answers,
            if owed.too_long { " and ERR" } else { "" },
            out.end,
            out.got.len(),
            out.write_error,
        ));
    }
    check_answers(&out.got, &owed, range)
}
