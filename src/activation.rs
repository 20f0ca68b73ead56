//! systemd socket activation: listening sockets passed in at start.
//!
//! systemd (a `.socket` unit, or `systemd-socket-activate`) opens and binds
//! the sockets itself, then starts us with them as descriptors 3, 4, ... and
//! says so in `LISTEN_FDS` (how many) and `LISTEN_PID` (for which process).
//! This is the `sd_listen_fds` protocol. The sockets are served like bound
//! ones; only where they come from differs. Nothing else lives here.

use crate::net::Listener;
use std::io;

/// Takes the passed sockets (TCP or Unix stream listeners), non-blocking,
/// and clears `LISTEN_FDS`/`LISTEN_PID`; none unless `LISTEN_PID` names
/// this process (the crate checks). Call once, at start, before any thread
/// exists.
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
