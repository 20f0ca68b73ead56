//! systemd socket activation: listening sockets passed in at start.
//!
//! systemd (a `.socket` unit, or `systemd-socket-activate`) opens and binds
//! the sockets itself, then starts us with them as descriptors 3, 4, ... and
//! says so in `LISTEN_FDS` (how many) and `LISTEN_PID` (for which process).
//! This is the `sd_listen_fds` protocol; the listenfd crate reads it, a
//! little more loosely than systemd's own library does (see
//! [`take_listeners`]). The sockets are served like bound ones; only where
//! they come from differs. Nothing else lives here.

use crate::net::Listener;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Takes the passed sockets, non-blocking, in the order passed. What is
/// taken is what listenfd 1.0.2 (the version in Cargo.lock) reads:
///
/// - `LISTEN_FDS` must be a number, or nothing is taken (and nothing
///   cleared).
/// - `LISTEN_PID` must be this process's id, unset, or empty; any other
///   value and none are taken. (Unset or empty is the crate's extension,
///   for a tool such as cargo-watch between the one passing and us.)
/// - The descriptors are `LISTEN_FDS` of them from `LISTEN_FDS_FIRST_FD`,
///   or from 3 (systemd's) when that is unset: another extension.
/// - `LISTEN_FDS` and `LISTEN_PID` are cleared whenever `LISTEN_FDS` is a
///   number, taken or not; `LISTEN_FDS_FIRST_FD` and `LISTEN_FDNAMES` stay.
/// - Each must be a TCP (IPv4 or IPv6) or Unix stream socket: the crate
///   checks its family and type (and marks it close-on-exec). It must also
///   listen, which the crate does not check and we do: one that does not
///   would be polled for ever, every `accept` failing with `EINVAL`. Any
///   other descriptor is an error naming it, and nothing is served.
///
/// Call once, at start, before any thread exists: it changes the
/// environment.
pub fn take_listeners() -> io::Result<Vec<Listener>> {
    let mut fds = listenfd::ListenFd::from_env();
    let n = fds.len();
    let mut listeners = Vec::with_capacity(n);
    for i in 0..n {
        // `Ok(None)` is an index already taken: never here.
        let as_tcp = match fds.take_tcp_listener(i) {
            Ok(Some(l)) => {
                must_listen(&l, i, n)?;
                listeners.push(Listener::from_std_tcp(l)?);
                continue;
            }
            Ok(None) => continue,
            Err(e) => e,
        };
        let as_unix = match fds.take_unix_listener(i) {
            Ok(Some(l)) => {
                must_listen(&l, i, n)?;
                listeners.push(Listener::from_std_unix(l)?);
                continue;
            }
            Ok(None) => continue,
            Err(e) => e,
        };
        // The crate's errors name the descriptor it looked at (which
        // depends on LISTEN_FDS_FIRST_FD): ours does not guess it.
        let (as_tcp, as_unix) = (as_tcp.to_string(), as_unix.to_string());
        let why = if as_tcp == as_unix {
            as_tcp
        } else {
            format!("{as_tcp}; {as_unix}")
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "socket {} of {n} cannot be taken as a TCP or Unix stream socket ({why})",
                i + 1
            ),
        ));
    }
    Ok(listeners)
}

/// An error unless socket `i` (of `n`) listens (`SO_ACCEPTCONN`).
#[cfg(not(target_vendor = "apple"))]
fn must_listen(socket: &(impl AsFd + AsRawFd), i: usize, n: usize) -> io::Result<()> {
    if socket2::SockRef::from(socket).is_listener()? {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "socket {} of {n} (fd {}) is a stream socket, but not listening",
            i + 1,
            socket.as_raw_fd()
        ),
    ))
}

/// Apple systems: socket2 cannot ask whether a socket listens, so a passed
/// one that does not fails each `accept` instead (warned about, retried
/// every half second). systemd, the usual passer, is Linux's.
#[cfg(target_vendor = "apple")]
fn must_listen(_: &(impl AsFd + AsRawFd), _: usize, _: usize) -> io::Result<()> {
    Ok(())
}
