//! systemd socket activation: listening sockets passed in at start.
//!
//! systemd (a `.socket` unit, or `systemd-socket-activate`) opens and binds
//! the sockets itself, then starts us with them as descriptors 3, 4, ... and
//! says so in `LISTEN_FDS` (how many) and `LISTEN_PID` (for which process).
//! This is the `sd_listen_fds` protocol. The sockets are served like bound
//! ones; only where they come from differs. Nothing else lives here.

use crate::net::Listener;
use std::io;

/// True when systemd passed listening sockets to this process.
pub fn sockets_passed() -> bool {
    let count_ok = std::env::var("LISTEN_FDS").is_ok_and(|n| n.parse::<u32>().is_ok_and(|n| n > 0));
    // For us, not for a parent that forgot to clear its environment.
    let pid_ok = std::env::var("LISTEN_PID").map_or(true, |pid| {
        pid.is_empty() || pid == std::process::id().to_string()
    });
    count_ok && pid_ok
}

/// Takes the passed sockets (TCP or Unix stream listeners), non-blocking,
/// and clears `LISTEN_FDS`/`LISTEN_PID`. Call once, at start, before any
/// thread exists.
pub fn take_listeners() -> io::Result<Vec<Listener>> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut listeners = Vec::with_capacity(fds.len());
    for i in 0..fds.len() {
        let fd = 3 + i;
        // The crate checks the descriptor's family and type; a socket of
        // the wrong kind is an error, not a listener.
        if let Ok(Some(l)) = fds.take_tcp_listener(i) {
            listeners.push(Listener::from_std_tcp(l)?);
        } else if let Ok(Some(l)) = fds.take_unix_listener(i) {
            listeners.push(Listener::from_std_unix(l)?);
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("passed descriptor {fd} is not a TCP or Unix stream listener"),
            ));
        }
    }
    Ok(listeners)
}
