//! Connecting, and telling a refusal from an answer.

use crate::TIMEOUT;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};

/// A blocking TCP connection to `dst`, from `src` if given (bind before
/// connect), with TCP_NODELAY: a line is sent when written.
pub(crate) fn connect_from(src: Option<IpAddr>, dst: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(ip) = src {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    // On Linux a blocking connect honours SO_SNDTIMEO: a bounded connect in
    // one syscall (a full backlog drops SYNs, and the kernel would retry
    // them for two minutes). It also bounds every later blocking write.
    socket.set_write_timeout(Some(TIMEOUT))?;
    if let Err(e) = socket.connect(&dst.into()) {
        if e.raw_os_error() == Some(libc::EINPROGRESS) {
            let secs = TIMEOUT.as_secs();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timed out after {secs} s"),
            ));
        }
        return Err(e);
    }
    socket.set_tcp_nodelay(true)?;
    Ok(socket.into())
}

/// A read timeout set with SO_RCVTIMEO shows up as WouldBlock on Unix.
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// randline's `ERR server busy`, or a Redis error (`-ERR max number of
/// clients reached`, `-DENIED ...`), is a refusal, not an answer. A
/// negative number (`-5`) is an answer.
pub(crate) fn check_refusal(answer: &[u8]) -> Result<(), String> {
    let redis_error =
        answer.first() == Some(&b'-') && answer.get(1).is_some_and(u8::is_ascii_alphabetic);
    if answer.starts_with(b"ERR") || redis_error {
        let line = answer.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(&line[..line.len().min(120)]);
        return Err(format!("refused: {}", line.trim_end()));
    }
    Ok(())
}
