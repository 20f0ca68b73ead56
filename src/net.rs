//! Sockets of both families behind one type each: [`Listener`] and
//! [`Stream`] are TCP or Unix, and [`Peer`] says who is on the other end.
//!
//! Only the plumbing lives here (bind, accept, read, write, shutdown and
//! mio registration, passed through to mio). What to do with a socket
//! belongs to [`crate::server`] and [`crate::conn`].

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Connections the kernel may hold complete but not yet accepted (Linux
/// caps it at `net.core.somaxconn`, 4096 by default). std's 128 is too few
/// when thousands of clients connect at once, or while descriptors are out.
pub const BACKLOG: i32 = 1024;

/// Each client socket's kernel receive buffer (`SO_RCVBUF`; Linux doubles
/// the value for its bookkeeping, and no longer autotunes it, which could
/// grow it to `tcp_rmem`'s maximum, 32 MiB here). A client that sends
/// without reading its answers is not read from (backpressure), so this is
/// what it can make the kernel hold for it on the way in. 32 KiB is a
/// window that still keeps a pipelining client at full speed on a LAN.
pub const RECV_BUF: usize = 32 * 1024;
/// `TCP_NOTSENT_LOWAT`: the kernel takes more answers only while less than
/// this waits unsent in the socket; more stays in the connection's own
/// (capped) `out`. Without it, the send buffer autotunes to `tcp_wmem`'s
/// maximum (4 MiB here) and a client that never reads pins that much.
/// Data in flight is not counted: a reading client's throughput is not cut.
pub const NOTSENT_LOWAT: u32 = 16 * 1024;
/// Each accepted Unix socket's send buffer (`SO_SNDBUF`; Linux doubles it
/// too). On a Unix stream the answers the client has not read sit in its
/// receive queue but are charged to the server's socket, up to this (plus
/// one message): a client that never reads pins this much, not
/// `wmem_default` (208 KiB). Its receive buffer bounds nothing (unix(7):
/// `SO_RCVBUF` has no effect on a stream); its unread lines are charged to
/// the client's own send buffer, which the client sets. Unlike TCP's
/// options this is not inherited from the listener (Linux makes the
/// accepted socket afresh, at `wmem_default`), so it costs one setsockopt
/// per Unix accept.
pub const UNIX_SEND_BUF: usize = 32 * 1024;
/// Keepalive probes after `--tcp-keepalive` of silence, spread over as long
/// again: a dead idle peer is dropped within about twice the setting.
pub const KEEPALIVE_PROBES: u32 = 5;

/// What every accepted TCP socket inherits from its listener: set once on
/// the listener, so no system call is added per connection. (Linux copies
/// these options into each accepted socket; tests/bounds.rs checks it.) A
/// Unix socket inherits nothing: see [`UNIX_SEND_BUF`].
#[derive(Debug, Clone, Copy)]
pub struct ClientSockets {
    /// `--tcp-keepalive`: `None` is off.
    pub keepalive: Option<Duration>,
}

impl ClientSockets {
    /// Sets the options on a TCP listener.
    fn apply(&self, listener: SockRef<'_>) -> io::Result<()> {
        listener.set_recv_buffer_size(RECV_BUF)?;
        // Linux only (macOS has the option, socket2 does not offer it
        // there): elsewhere the send buffer is the system's default size.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        listener.set_tcp_notsent_lowat(NOTSENT_LOWAT)?;
        if let Some(idle) = self.keepalive {
            let interval = (idle / KEEPALIVE_PROBES).max(Duration::from_secs(1));
            listener.set_tcp_keepalive(
                &TcpKeepalive::new()
                    .with_time(idle)
                    .with_interval(interval)
                    .with_retries(KEEPALIVE_PROBES),
            )?;
            // Keepalive does not probe while answers wait unacknowledged:
            // a peer that stops acknowledging them is dropped after this.
            // Linux only; elsewhere `--output-timeout` is what drops it.
            #[cfg(any(target_os = "linux", target_os = "android"))]
            listener.set_tcp_user_timeout(Some(idle * 2))?;
        }
        Ok(())
    }
}

/// A bound, listening, non-blocking socket.
pub enum Listener {
    /// `--listen` or `PORT`.
    Tcp(TcpListener),
    /// `--unix`; the path (if we made the socket) is removed again when the
    /// listener is dropped. Sockets passed by systemd have `None`: the file
    /// is systemd's.
    Unix(UnixListener, Option<PathBuf>),
}

/// Where a listener listens, for the `listening on` log line.
pub enum LocalAddr {
    /// The bound address, with the port the OS picked for port 0.
    Tcp(SocketAddr),
    /// The socket's path.
    Unix(PathBuf),
}

impl fmt::Display for LocalAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalAddr::Tcp(a) => write!(f, "{a}"),
            LocalAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Listener {
    /// Binds a non-blocking TCP listener with `SO_REUSEADDR` (a restart
    /// need not wait for old connections in TIME_WAIT) and a backlog of
    /// [`BACKLOG`]. With `reuse_port`, `SO_REUSEPORT` too: every process
    /// that sets it may bind the same port, and the kernel spreads new
    /// connections over them (by a hash of the addresses).
    pub fn bind_tcp(
        addr: SocketAddr,
        reuse_port: bool,
        clients: ClientSockets,
    ) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        clients.apply(SockRef::from(&socket))?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        // mio needs a non-blocking socket: a blocking accept would stall
        // the whole loop.
        socket.set_nonblocking(true)?;
        Ok(Listener::Tcp(TcpListener::from_std(socket.into())))
    }

    /// `--metrics ADDR`: a non-blocking TCP listener for scrapes, with
    /// `SO_REUSEADDR` but none of [`ClientSockets`]' options (a scrape
    /// sends a few hundred bytes and takes a few KiB).
    pub fn bind_metrics(addr: SocketAddr) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        socket.set_nonblocking(true)?;
        Ok(Listener::Tcp(TcpListener::from_std(socket.into())))
    }

    /// Binds a Unix listener at `path`. A socket file left behind by a dead
    /// server is replaced; one that a live server answers on is not. With
    /// `mode` (`--unix-mode`), the file gets exactly those permission bits,
    /// and is never reachable with others (see `bind_unix_with_mode`).
    pub fn bind_unix(path: &Path, mode: Option<u32>) -> io::Result<Self> {
        if let Some(mode) = mode {
            return bind_unix_with_mode(path, mode)
                .map(|l| Listener::Unix(l, Some(path.to_path_buf())));
        }
        match UnixListener::bind(path) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && is_stale_socket(path) => {
                std::fs::remove_file(path)?;
                UnixListener::bind(path)
            }
            other => other,
        }
        .map(|l| Listener::Unix(l, Some(path.to_path_buf())))
    }

    /// A TCP listener made elsewhere (systemd), as a non-blocking mio one.
    pub fn from_std_tcp(l: std::net::TcpListener) -> io::Result<Self> {
        l.set_nonblocking(true)?;
        Ok(Listener::Tcp(TcpListener::from_std(l)))
    }

    /// Sets what accepted sockets inherit (TCP only: a Unix socket's
    /// [`UNIX_SEND_BUF`] is set at accept), on a listener made elsewhere
    /// (systemd) as on our own.
    pub fn tune(&self, clients: ClientSockets) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => clients.apply(SockRef::from(l)),
            Listener::Unix(..) => Ok(()),
        }
    }

    /// A Unix listener made elsewhere (systemd), as a non-blocking mio one.
    pub fn from_std_unix(l: std::os::unix::net::UnixListener) -> io::Result<Self> {
        l.set_nonblocking(true)?;
        Ok(Listener::Unix(UnixListener::from_std(l), None))
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<LocalAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(LocalAddr::Tcp),
            Listener::Unix(_, Some(path)) => Ok(LocalAddr::Unix(path.clone())),
            Listener::Unix(l, None) => {
                let addr = l.local_addr()?;
                let path = addr.as_pathname().unwrap_or(Path::new("(unnamed)"));
                Ok(LocalAddr::Unix(path.to_path_buf()))
            }
        }
    }

    /// Accepts one pending connection, as a non-blocking stream.
    pub fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => {
                let (s, addr) = l.accept()?;
                // Answers are tiny and must leave at once: without this,
                // Nagle's algorithm holds an answer back while the client's
                // delayed ACK waits for more, a 40 ms stall per exchange.
                // Failing to set it only costs latency, and says nothing
                // about the listener: keep the client.
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), Peer::tcp(addr)))
            }
            Listener::Unix(l, _) => {
                let (s, _) = l.accept()?;
                // Bounds what a client that never reads pins in the
                // kernel. It cannot fail on a socket just accepted; if it
                // did, the client would only keep the default buffer.
                let _ = SockRef::from(&s).set_send_buffer_size(UNIX_SEND_BUF);
                Ok((Stream::Unix(s), Peer::Unix))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, Some(path)) = self {
            // Best effort: a leftover file is replaced at the next start.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `bind` creates the socket file with the umask's permissions, and clients
/// may connect from that moment; a `chmod` after it leaves a window where
/// the file is more open than asked. So: bind inside a new private
/// directory (mode 0700, next to `path`, so on the same file system), set
/// the mode there, where nobody else can reach the file, then link it into
/// place. `hard_link` fails if `path` exists (two servers starting at once
/// cannot replace each other's socket, as `rename` would); a stale socket
/// there is removed first, as without `--unix-mode`.
fn bind_unix_with_mode(path: &Path, mode: u32) -> io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let private = path.with_file_name(format!(
        ".{}.randline-{}-{nanos}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("socket");
    let bound = UnixListener::bind(&staged).and_then(|l| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        match std::fs::hard_link(&staged, path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && is_stale_socket(path) => {
                std::fs::remove_file(path)?;
                std::fs::hard_link(&staged, path)?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "the path exists and is not a stale socket",
                ));
            }
            other => other?,
        }
        Ok(l)
    });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    bound
}

/// A socket file nobody accepts on any more (connecting is refused).
fn is_stale_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false);
    is_socket
        && matches!(
            std::os::unix::net::UnixStream::connect(path),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
        )
}

/// A connected, non-blocking client socket.
pub enum Stream {
    /// From a TCP listener.
    Tcp(TcpStream),
    /// From a Unix listener.
    Unix(UnixStream),
}

impl Stream {
    /// Half-closes: `Shutdown::Write` sends FIN after the queued answers.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// Registration is passed straight through, so the poll watches the real fd.
impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

impl Source for Listener {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.register(r, t, i),
            Listener::Unix(l, _) => l.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.reregister(r, t, i),
            Listener::Unix(l, _) => l.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.deregister(r),
            Listener::Unix(l, _) => l.deregister(r),
        }
    }
}

/// The other end of a connection, for logs and the per-address limit.
/// Every connection holds one, so it keeps only what those need: 20 bytes,
/// where a `SocketAddr` takes 32 (an IPv6 one also carries its flow label
/// and scope id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP client.
    Tcp {
        /// Its address.
        ip: IpAddr,
        /// Its port.
        port: u16,
    },
    /// Unix clients are usually unnamed.
    Unix,
}

impl Peer {
    /// A TCP client.
    pub fn tcp(addr: SocketAddr) -> Peer {
        Peer::Tcp {
            ip: addr.ip(),
            port: addr.port(),
        }
    }

    /// A TCP client's address; none for a Unix client.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Tcp { ip, .. } => Some(*ip),
            Peer::Unix => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Peer::Tcp { ip, port } => write!(f, "{}", SocketAddr::new(ip, port)),
            Peer::Unix => f.write_str("unix-client"),
        }
    }
}
