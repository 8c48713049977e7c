//! `TcpSocket`: a TCP socket not yet connected or listening, to set options
//! on before `connect` or `listen` (tokio's builder).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::os::fd::AsRawFd as _;

use socket2::{Domain, Socket};
use tokio::time::Instant;

use crate::core::{Core, new_socket, to_inet};
use crate::deadline::{Dir, Timeouts};
use crate::error::Result;
use crate::listener::TcpListener;
use crate::opts;
use crate::policy::{AddrUse, Policy, SocketKind};
use crate::stream::{TcpStream, connect_then_register};

/// A TCP socket that has not been turned into a [`TcpStream`] or a
/// [`TcpListener`] yet.
///
/// The host fd is non-blocking and close-on-exec from the start. Timeouts
/// and the policy set here carry over to the stream or listener.
///
/// # Examples
///
/// ```
/// use hostsock::{TcpListener, TcpSocket};
///
/// #[tokio::main]
/// async fn main() -> hostsock::Result<()> {
///     let listener = TcpListener::bind("127.0.0.1:0").await?;
///     let socket = TcpSocket::new_v4()?;
///     socket.set_nodelay(true)?;
///     let stream = socket.connect(listener.local_addr()?).await?;
///     assert!(stream.nodelay()?);
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct TcpSocket {
    sock: Socket,
    kind: SocketKind,
    policy: Arc<Policy>,
    timeouts: Timeouts,
}

impl TcpSocket {
    /// A new IPv4 TCP socket.
    ///
    /// # Errors
    ///
    /// The kernel's errno for `socket(2)` (`EMFILE`, `ENFILE`, ...). The
    /// default policy allows every socket kind.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::TcpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let socket = TcpSocket::new_v4()?;
    ///     // Not bound yet: the kernel reports the wildcard address.
    ///     assert_eq!(socket.local_addr()?, "0.0.0.0:0".parse().unwrap());
    ///     Ok(())
    /// }
    /// ```
    pub fn new_v4() -> Result<TcpSocket> {
        TcpSocket::new(Domain::IPV4)
    }

    /// A new IPv6 TCP socket.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{TcpListener, TcpSocket};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("[::1]:0").await?;
    ///     let socket = TcpSocket::new_v6()?;
    ///     let stream = socket.connect(listener.local_addr()?).await?;
    ///     assert!(stream.local_addr()?.is_ipv6());
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`new_v4`](TcpSocket::new_v4) (`EAFNOSUPPORT` on a host without
    /// IPv6).
    pub fn new_v6() -> Result<TcpSocket> {
        TcpSocket::new(Domain::IPV6)
    }

    fn new(domain: Domain) -> Result<TcpSocket> {
        let policy = Policy::shared_default();
        let (sock, kind) = new_socket(&policy, domain, true)?;
        Ok(TcpSocket {
            sock,
            kind,
            policy,
            timeouts: Timeouts::default(),
        })
    }

    /// Adopts a TCP socket made elsewhere under the default policy: kind
    /// checked, fd made non-blocking and close-on-exec, host timeouts kept.
    pub(crate) fn from_socket2(sock: Socket) -> Result<TcpSocket> {
        let policy = Policy::shared_default();
        let (kind, timeouts) =
            crate::core::prepare_adopted(&sock, &policy, Some(libc::SOCK_STREAM))?;
        Ok(TcpSocket {
            sock,
            kind,
            policy,
            timeouts,
        })
    }

    /// The host socket, still non-blocking.
    pub(crate) fn into_socket2(self) -> Socket {
        self.sock
    }

    /// Uses `policy` for this socket and what it becomes. The socket's kind
    /// is checked against it: a kind the policy refuses is an error (and
    /// the socket is closed).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use hostsock::{Policy, TcpListener, TcpSocket};
    /// use hostsock::policy::SocketKind;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let udp_only = Arc::new(Policy::builder().socket_kinds(&[SocketKind::UdpV4]).build());
    ///     let err = TcpSocket::new_v4()?.with_policy(udp_only).unwrap_err();
    ///     assert_eq!(err.errno(), libc::ESOCKTNOSUPPORT);
    ///
    ///     let sandbox = Arc::new(Policy::sandbox());
    ///     let socket = TcpSocket::new_v4()?.with_policy(sandbox.clone())?;
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let stream = socket.connect(listener.local_addr()?).await?;
    ///     assert!(Arc::ptr_eq(stream.policy(), &sandbox));
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`ESOCKTNOSUPPORT`) if `policy` does not allow TCP on this
    /// family; the socket is closed.
    pub fn with_policy(mut self, policy: Arc<Policy>) -> Result<TcpSocket> {
        let (domain, ty, protocol) = self.kind.parts();
        policy.check_kind(self.sock.as_raw_fd(), domain, ty, protocol)?;
        self.policy = policy;
        Ok(self)
    }

    /// The policy this socket's calls are checked against.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Sets `SO_REUSEADDR`.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::TcpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let socket = TcpSocket::new_v4()?;
    ///     socket.set_reuseaddr(true)?;
    ///     assert!(socket.reuseaddr()?);
    ///     socket.set_reuseport(true)?;
    ///     assert!(socket.reuseport()?);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `SO_REUSEADDR` off; the
    /// kernel's errno otherwise.
    pub fn set_reuseaddr(&self, reuse: bool) -> Result<()> {
        self.set(opts::ReuseAddr, reuse)
    }

    /// Gets `SO_REUSEADDR`.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `SO_REUSEADDR` off; the
    /// kernel's errno otherwise.
    pub fn reuseaddr(&self) -> Result<bool> {
        self.get(opts::ReuseAddr)
    }

    /// Sets `SO_REUSEPORT`.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `SO_REUSEPORT` off; the
    /// kernel's errno otherwise.
    pub fn set_reuseport(&self, reuse: bool) -> Result<()> {
        self.set(opts::ReusePort, reuse)
    }

    /// Gets `SO_REUSEPORT`.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `SO_REUSEPORT` off; the
    /// kernel's errno otherwise.
    pub fn reuseport(&self) -> Result<bool> {
        self.get(opts::ReusePort)
    }

    /// Sets `SO_SNDBUF`. Linux doubles the value it is given (socket(7)),
    /// and [`send_buffer_size`](TcpSocket::send_buffer_size) reports the
    /// doubled value.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::TcpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let socket = TcpSocket::new_v4()?;
    ///     socket.set_send_buffer_size(16 * 1024)?;
    ///     // Linux doubles the value it is given.
    ///     assert_eq!(socket.send_buffer_size()?, 32 * 1024);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `SO_SNDBUF` off; the
    /// kernel's errno otherwise. A policy with a clamp lowers the size instead
    /// of refusing it.
    pub fn set_send_buffer_size(&self, size: u32) -> Result<()> {
        self.set(opts::SendBuffer, i32::try_from(size).unwrap_or(i32::MAX))
    }

    /// Gets `SO_SNDBUF`.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `SO_SNDBUF` off; the
    /// kernel's errno otherwise.
    pub fn send_buffer_size(&self) -> Result<u32> {
        Ok(u32::try_from(self.get(opts::SendBuffer)?).unwrap_or(0))
    }

    /// Sets `SO_RCVBUF` (doubled by Linux, as `SO_SNDBUF`).
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `SO_RCVBUF` off; the
    /// kernel's errno otherwise. A policy with a clamp lowers the size instead
    /// of refusing it.
    pub fn set_recv_buffer_size(&self, size: u32) -> Result<()> {
        self.set(opts::RecvBuffer, i32::try_from(size).unwrap_or(i32::MAX))
    }

    /// Gets `SO_RCVBUF`.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `SO_RCVBUF` off; the
    /// kernel's errno otherwise.
    pub fn recv_buffer_size(&self) -> Result<u32> {
        Ok(u32::try_from(self.get(opts::RecvBuffer)?).unwrap_or(0))
    }

    /// Sets `SO_KEEPALIVE`.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::TcpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let socket = TcpSocket::new_v4()?;
    ///     socket.set_keepalive(true)?;
    ///     assert!(socket.keepalive()?);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `SO_KEEPALIVE` off; the
    /// kernel's errno otherwise.
    pub fn set_keepalive(&self, keepalive: bool) -> Result<()> {
        self.set(opts::KeepAlive, keepalive)
    }

    /// Gets `SO_KEEPALIVE`.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `SO_KEEPALIVE` off; the
    /// kernel's errno otherwise.
    pub fn keepalive(&self) -> Result<bool> {
        self.get(opts::KeepAlive)
    }

    /// Sets `SO_LINGER`.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `SO_LINGER` off; the
    /// kernel's errno otherwise.
    pub fn set_linger(&self, dur: Option<Duration>) -> Result<()> {
        self.set(opts::Linger, dur)
    }

    /// Gets `SO_LINGER`.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `SO_LINGER` off; the
    /// kernel's errno otherwise.
    pub fn linger(&self) -> Result<Option<Duration>> {
        self.get(opts::Linger)
    }

    /// Sets `TCP_NODELAY`.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `TCP_NODELAY` off; the
    /// kernel's errno otherwise.
    pub fn set_nodelay(&self, nodelay: bool) -> Result<()> {
        self.set(opts::TcpNoDelay, nodelay)
    }

    /// Gets `TCP_NODELAY`.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `TCP_NODELAY` off; the
    /// kernel's errno otherwise.
    pub fn nodelay(&self) -> Result<bool> {
        self.get(opts::TcpNoDelay)
    }

    /// Sets the read timeout the stream or listener will have; see
    /// [`TcpStream::set_read_timeout`].
    ///
    /// # Errors
    ///
    /// `InvalidInput` (errno `EINVAL`) for `Some(Duration::ZERO)`; a denial
    /// (`ENOPROTOOPT`) if the policy turns `SO_RCVTIMEO` off.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        crate::sockopt::set_timeout(self.target(), Dir::Read, timeout)
    }

    /// Sets the write timeout, which also bounds [`connect`](TcpSocket::connect)
    /// (as `SO_SNDTIMEO` bounds a blocking connect).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hostsock::{TcpListener, TcpSocket};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let socket = TcpSocket::new_v4()?;
    ///     socket.set_write_timeout(Some(Duration::from_secs(2)))?;
    ///     let stream = socket.connect(listener.local_addr()?).await?;
    ///     assert_eq!(stream.write_timeout(), Some(Duration::from_secs(2)));
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// `InvalidInput` (errno `EINVAL`) for `Some(Duration::ZERO)`; a denial
    /// (`ENOPROTOOPT`) if the policy turns `SO_SNDTIMEO` off.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        crate::sockopt::set_timeout(self.target(), Dir::Write, timeout)
    }

    /// Binds to `addr`.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::TcpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let socket = TcpSocket::new_v4()?;
    ///     socket.bind("127.0.0.1:0".parse().unwrap())?;
    ///     assert_ne!(socket.local_addr()?.port(), 0);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`EACCES`) when the policy refuses `addr` for `Bind`; the
    /// kernel's errno otherwise (`EADDRINUSE`, `EADDRNOTAVAIL`, `EINVAL` if
    /// already bound, ...).
    pub fn bind(&self, addr: SocketAddr) -> Result<()> {
        self.policy
            .check_addr(self.sock.as_raw_fd(), crate::Op::Bind, AddrUse::Bind, addr)?;
        Ok(self.sock.bind(&addr.into())?)
    }

    /// The local address, once bound.
    ///
    /// # Errors
    ///
    /// The kernel's errno from `getsockname(2)`.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        to_inet(self.sock.local_addr()?)
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    ///
    /// # Errors
    ///
    /// The kernel's errno if `getsockopt(2)` itself fails; the pending error is
    /// the `Ok` value.
    pub fn take_error(&self) -> Result<Option<std::io::Error>> {
        Ok(self.sock.take_error()?)
    }

    /// Connects to `addr`, bounded by the write timeout if one is set.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{TcpListener, TcpSocket};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let socket = TcpSocket::new_v4()?;
    ///     socket.bind("127.0.0.1:0".parse().unwrap())?;
    ///     let local = socket.local_addr()?;
    ///     let stream = socket.connect(listener.local_addr()?).await?;
    ///     assert_eq!(stream.local_addr()?, local);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`ECONNREFUSED`) when the policy refuses `addr` for `Connect`;
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EINPROGRESS`)
    /// when the write timeout runs out; the kernel's errno otherwise
    /// (`ECONNREFUSED`, `ENETUNREACH`, `ETIMEDOUT`, ...).
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe: dropping the future closes the
    /// socket.
    pub async fn connect(self, addr: SocketAddr) -> Result<TcpStream> {
        self.connect_deadline(addr, None).await
    }

    /// [`connect`](TcpSocket::connect) that gives up at `deadline` (or the
    /// write timeout, whichever is earlier) with a timed-out error whose
    /// `errno()` is `EINPROGRESS`.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EINPROGRESS`)
    /// when `deadline` or the write timeout passes first; otherwise as
    /// [`connect`](TcpSocket::connect).
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe: dropping the future closes the
    /// socket.
    pub async fn connect_deadline(
        self,
        addr: SocketAddr,
        deadline: impl Into<Option<Instant>>,
    ) -> Result<TcpStream> {
        let core = connect_then_register(
            self.sock,
            self.kind,
            self.policy,
            Some(&self.timeouts),
            addr,
            deadline.into(),
        )
        .await?;
        Ok(TcpStream::from_core(core))
    }

    /// Listens with the given backlog (the kernel clamps it to
    /// `net.core.somaxconn`).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::TcpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let socket = TcpSocket::new_v4()?;
    ///     socket.set_reuseaddr(true)?;
    ///     socket.bind("127.0.0.1:0".parse().unwrap())?;
    ///     let listener = socket.listen(128)?;
    ///     assert_ne!(listener.local_addr()?.port(), 0);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// The kernel's errno for `listen(2)` (`EADDRINUSE` if another socket
    /// listens on the port); outside a Tokio runtime, an error, not a panic.
    pub fn listen(self, backlog: u32) -> Result<TcpListener> {
        // An unbound socket is bound by listen (to the unspecified address,
        // an ephemeral port): the `Bind` rules see that.
        crate::core::check_implicit_bind(
            &self.policy,
            self.sock.as_raw_fd(),
            crate::error::Op::Listen,
            self.kind,
            || crate::core::has_local_port(&self.sock),
        )?;
        self.sock
            .listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
        Ok(TcpListener::from_core(self.register()?))
    }

    pub(crate) fn target(&self) -> crate::sockopt::Target<'_> {
        crate::sockopt::Target {
            sock: &self.sock,
            policy: &self.policy,
            kind: self.kind,
            timeouts: &self.timeouts,
        }
    }

    fn register(self) -> Result<Core> {
        let core = Core::registered(self.sock, self.policy, self.kind)?;
        core.timeouts().copy_from(&self.timeouts);
        Ok(core)
    }
}

crate::core::impl_fd!(TcpSocket, sock);
