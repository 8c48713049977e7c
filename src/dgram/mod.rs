//! `UdpSocket`: send and receive datagrams, with deadlines, and receives that
//! wake on errors as well as on data.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use std::os::fd::AsRawFd;

use socket2::{Domain, Socket};
use tokio::io::unix::AsyncFd;
use tokio::io::{Interest, ReadBuf, Ready};
use tokio::net::ToSocketAddrs;
use tokio::time::Instant;

use crate::core::{Core, each_addr, first_addr, new_socket};
use crate::deadline::Dir;
use crate::error::{Op, Result};
use crate::policy::{AddrUse, Policy};
use crate::sys;

mod batch;
mod buf;
mod msg;
mod options;
mod recv;

pub(crate) use batch::finish_slots;
pub use batch::{MAX_BATCH, RecvSlot, Transmit};

pub use msg::DatagramInfo;
pub(crate) use msg::{info_from, source_cmsgs};

use recv::recv_from_inet;

/// What a datagram receive waits for: data, or a pending error (an ICMP
/// port unreachable on a connected socket must end a `recv`, not hang it).
pub(crate) const RECV_INTEREST: Interest = Interest::READABLE.add(Interest::ERROR);

/// A UDP socket.
///
/// The same shape as `tokio::net::UdpSocket` (all methods take `&self`, so
/// an `Arc<UdpSocket>` serves several tasks), plus per-socket timeouts,
/// per-call deadlines and the socket's [`Policy`]. Receives wait on
/// readable *or error*: on a connected socket an ICMP port unreachable
/// ends a pending [`recv`](UdpSocket::recv) with `ECONNREFUSED`.
///
/// # Examples
///
/// ```
/// use hostsock::UdpSocket;
///
/// #[tokio::main]
/// async fn main() -> hostsock::Result<()> {
///     let a = UdpSocket::bind("127.0.0.1:0").await?;
///     let b = UdpSocket::bind("127.0.0.1:0").await?;
///     a.send_to(b"ping", b.local_addr()?).await?;
///     let mut buf = [0u8; 16];
///     let (n, from) = b.recv_from(&mut buf).await?;
///     assert_eq!((&buf[..n], from), (&b"ping"[..], a.local_addr()?));
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct UdpSocket {
    core: Core,
    /// For the `poll_recv*` forms only, made on first use: a duplicate of
    /// the fd registered for priority readiness alone, so that its only
    /// wake-ups are errors (`EPOLLERR` shows as write-closed readiness).
    /// tokio gives poll functions no error interest on the main fd.
    error_watch: OnceLock<AsyncFd<Socket>>,
    /// Set once the kernel or device refused UDP GSO: later `send_gso`
    /// calls send the segments one by one (in batches).
    gso_off: std::sync::atomic::AtomicBool,
}

impl UdpSocket {
    /// Creates a socket bound to `addr`; if it resolves to several
    /// addresses, each is tried in turn.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let sock = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let addr = sock.local_addr()?;
    ///     assert!(addr.ip().is_loopback());
    ///     assert_ne!(addr.port(), 0);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// The kernel's errno for `socket(2)` or `bind(2)`: `EADDRINUSE`,
    /// `EADDRNOTAVAIL`, `EACCES` for a privileged port, ...; `InvalidInput`
    /// (errno `EINVAL`) if `addr` resolves to no address.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a dropped future leaves no socket behind.
    pub async fn bind<A: ToSocketAddrs>(addr: A) -> Result<UdpSocket> {
        UdpSocket::bind_with_policy(addr, Policy::shared_default()).await
    }

    /// [`bind`](UdpSocket::bind) with an explicit [`Policy`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use hostsock::{Policy, UdpSocket};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let sandbox = Arc::new(Policy::sandbox());
    ///     // The sandbox preset refuses privileged ports: EACCES, before any syscall.
    ///     let err = UdpSocket::bind_with_policy("127.0.0.1:53", sandbox.clone()).await.unwrap_err();
    ///     assert!(err.is_denied());
    ///     assert_eq!(err.errno(), libc::EACCES);
    ///     let sock = UdpSocket::bind_with_policy("127.0.0.1:0", sandbox).await?;
    ///     assert!(sock.local_addr()?.ip().is_loopback());
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial when `policy` refuses the socket kind (`ESOCKTNOSUPPORT`) or
    /// the address for `Bind` (`EACCES`); otherwise as
    /// [`bind`](UdpSocket::bind).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn bind_with_policy<A: ToSocketAddrs>(
        addr: A,
        policy: Arc<Policy>,
    ) -> Result<UdpSocket> {
        each_addr(addr, |a| {
            let policy = policy.clone();
            async move {
                let (sock, kind) = new_socket(&policy, Domain::for_address(a), false)?;
                policy.check_addr(sock.as_raw_fd(), Op::Bind, AddrUse::Bind, a)?;
                sock.bind(&a.into())?;
                Ok(UdpSocket::from_core(Core::registered(sock, policy, kind)?))
            }
        })
        .await
    }

    /// Sets the default destination and the only source datagrams are
    /// received from (`connect(2)` on a datagram socket: no handshake).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let a = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let b = UdpSocket::bind("127.0.0.1:0").await?;
    ///     a.connect(b.local_addr()?).await?;
    ///     a.send(b"hi").await?;
    ///     let mut buf = [0u8; 4];
    ///     assert_eq!(b.recv(&mut buf).await?, 2);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`ECONNREFUSED`) when the policy refuses the address for
    /// `Connect`; the kernel's errno otherwise (`EAFNOSUPPORT` for an address
    /// of the other family, `ENETUNREACH`, ...). Of several addresses, the last
    /// error is returned.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn connect<A: ToSocketAddrs>(&self, addr: A) -> Result<()> {
        each_addr(addr, |a| async move {
            self.check(AddrUse::Connect, Op::Connect, a)?;
            Ok(self.core.sock().connect(&a.into())?)
        })
        .await
    }

    /// Sends `buf` to the connected peer. Returns the bytes sent.
    ///
    /// # Errors
    ///
    /// The kernel's errno: `EMSGSIZE` for a datagram too large;
    /// `ECONNREFUSED` if an earlier datagram drew an ICMP port unreachable;
    /// `EDESTADDRREQ` if not connected. The write timeout gives
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EAGAIN`).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let a = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let b = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let err = a.send(b"nowhere").await.unwrap_err();
    ///     assert_eq!(err.errno(), libc::EDESTADDRREQ); // not connected yet
    ///     a.connect(b.local_addr()?).await?;
    ///     assert_eq!(a.send(b"somewhere").await?, 9);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: if it is dropped before completing, the
    /// datagram was not sent.
    pub async fn send(&self, buf: &[u8]) -> Result<usize> {
        self.send_deadline(buf, None).await
    }

    /// [`send`](UdpSocket::send) that gives up at `deadline` (or the write
    /// timeout) with a timed-out error (`errno()` = `EAGAIN`).
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EAGAIN`) when
    /// `deadline` or the write timeout passes first; otherwise as
    /// [`send`](UdpSocket::send).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn send_deadline(
        &self,
        buf: &[u8],
        deadline: impl Into<Option<Instant>>,
    ) -> Result<usize> {
        self.core
            .io(
                Interest::WRITABLE,
                Dir::Write,
                Op::Send,
                deadline.into(),
                |s| crate::sys::send(s, buf, 0),
            )
            .await
    }

    /// Sends now if there is room: `EAGAIN` (kind `WouldBlock`) otherwise.
    ///
    /// # Errors
    ///
    /// `WouldBlock` (errno `EAGAIN`) when the send buffer is full; otherwise as
    /// [`send`](UdpSocket::send).
    pub fn try_send(&self, buf: &[u8]) -> Result<usize> {
        self.core
            .try_io(Interest::WRITABLE, |s| crate::sys::send(s, buf, 0))
    }

    /// Polls to send `buf` to the connected peer.
    ///
    /// # Return value
    ///
    /// * `Poll::Pending` if the socket is not ready to send,
    /// * `Poll::Ready(Ok(n))` with the bytes sent,
    /// * `Poll::Ready(Err(e))` on an error.
    ///
    /// Only the `Waker` from the `Context` passed to the most recent call is
    /// scheduled to receive a wakeup.
    ///
    /// # Errors
    ///
    /// The errors of [`send`](UdpSocket::send), as `io::Error`s: a kernel errno
    /// stays in `raw_os_error()`, and [`Error::from`](crate::Error::from) gives
    /// a denial back. No timeout applies: a poll function keeps no timer.
    pub fn poll_send(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.core.poll_write_io(cx, |s| crate::sys::send(s, buf, 0))
    }

    /// Sends `buf` to `target` (the first address it resolves to).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let a = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let b = UdpSocket::bind("127.0.0.1:0").await?;
    ///     assert_eq!(a.send_to(b"hello", b.local_addr()?).await?, 5);
    ///     let mut buf = [0u8; 8];
    ///     assert_eq!(b.recv(&mut buf).await?, 5);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`ECONNREFUSED`) when the policy refuses `target` for `SendTo`;
    /// `InvalidInput` (errno `EINVAL`) if `target` resolves to no address; the
    /// write timeout gives [`Error::TimedOut`](crate::Error::TimedOut)
    /// (`errno()` = `EAGAIN`); the kernel's errno otherwise (`EMSGSIZE` for a
    /// datagram too large, `EAFNOSUPPORT` for an address of the other family,
    /// ...).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: if it is dropped before completing, the
    /// datagram was not sent.
    pub async fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], target: A) -> Result<usize> {
        self.send_to_deadline(buf, target, None).await
    }

    /// [`send_to`](UdpSocket::send_to) with a deadline.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EAGAIN`) when
    /// `deadline` or the write timeout passes first; otherwise as
    /// [`send_to`](UdpSocket::send_to).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn send_to_deadline<A: ToSocketAddrs>(
        &self,
        buf: &[u8],
        target: A,
        deadline: impl Into<Option<Instant>>,
    ) -> Result<usize> {
        let deadline = deadline.into();
        let target = first_addr(target).await?;
        self.check(AddrUse::SendTo, Op::Send, target)?;
        let to = socket2::SockAddr::from(target);
        self.core
            .io(Interest::WRITABLE, Dir::Write, Op::Send, deadline, |s| {
                crate::sys::send_to(s, buf, &to, 0)
            })
            .await
    }

    /// Sends to `target` now if there is room: `EAGAIN` otherwise.
    ///
    /// # Errors
    ///
    /// `WouldBlock` (errno `EAGAIN`) when the send buffer is full; otherwise as
    /// [`send_to`](UdpSocket::send_to).
    pub fn try_send_to(&self, buf: &[u8], target: SocketAddr) -> Result<usize> {
        self.check(AddrUse::SendTo, Op::Send, target)?;
        let to = socket2::SockAddr::from(target);
        self.core
            .try_io(Interest::WRITABLE, |s| crate::sys::send_to(s, buf, &to, 0))
    }

    /// Polls to send `buf` to `target`; see [`poll_send`](UdpSocket::poll_send).
    ///
    /// # Errors
    ///
    /// The errors of [`send_to`](UdpSocket::send_to), as `io::Error`s: a kernel
    /// errno stays in `raw_os_error()`, and [`Error::from`](crate::Error::from)
    /// gives a denial back. No timeout applies: a poll function keeps no timer.
    pub fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check(AddrUse::SendTo, Op::Send, target) {
            return Poll::Ready(Err(e.into()));
        }
        let to = socket2::SockAddr::from(target);
        self.core
            .poll_write_io(cx, |s| crate::sys::send_to(s, buf, &to, 0))
    }

    /// Receives one datagram from the connected peer into `buf`; bytes past
    /// `buf`'s length are discarded.
    ///
    /// # Errors
    ///
    /// `ECONNREFUSED` when an ICMP port unreachable answered an earlier
    /// send (the wait ends on the error, it does not hang); the read timeout
    /// gives [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` =
    /// `EAGAIN`).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let sock = UdpSocket::bind("127.0.0.1:0").await?;
    ///     // A port nobody listens on: the socket that held it is gone.
    ///     let closed = UdpSocket::bind("127.0.0.1:0").await?.local_addr()?;
    ///     sock.connect(closed).await?;
    ///     sock.send(b"anyone?").await?;
    ///     // The ICMP port unreachable ends the wait.
    ///     let err = sock.recv(&mut [0u8; 16]).await.unwrap_err();
    ///     assert_eq!(err.errno(), libc::ECONNREFUSED);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. If `recv` is used as a branch in
    /// `tokio::select!` and another branch completes first, it is
    /// guaranteed that no datagram was received.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        self.recv_deadline(buf, None).await
    }

    /// [`recv`](UdpSocket::recv) that gives up at `deadline` (or the read
    /// timeout) with a timed-out error (`errno()` = `EAGAIN`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hostsock::UdpSocket;
    /// use tokio::time::Instant;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let sock = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let mut buf = [0u8; 16];
    ///     let soon = Instant::now() + Duration::from_millis(20);
    ///     let err = sock.recv_deadline(&mut buf, soon).await.unwrap_err();
    ///     assert!(err.is_timeout());
    ///     assert_eq!(err.errno(), libc::EAGAIN);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EAGAIN`) when
    /// `deadline` or the read timeout passes first; otherwise as
    /// [`recv`](UdpSocket::recv).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn recv_deadline(
        &self,
        buf: &mut [u8],
        deadline: impl Into<Option<Instant>>,
    ) -> Result<usize> {
        let core = &self.core;
        core.io(RECV_INTEREST, Dir::Read, Op::Recv, deadline.into(), |s| {
            core.eof_if_shut(sys::recv(s, buf, 0), || 0)
        })
        .await
    }

    /// Receives a datagram if one is queued: `EAGAIN` otherwise.
    ///
    /// # Errors
    ///
    /// `WouldBlock` (errno `EAGAIN`) when nothing is queued; a pending error
    /// (`ECONNREFUSED`, ...) otherwise.
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<usize> {
        self.core
            .try_recv_io(RECV_INTEREST, |s| sys::recv(s, buf, 0), || Ok(0))
    }

    /// Polls to receive a datagram into `buf`.
    ///
    /// Like the async receives, it wakes on a pending error too (an ICMP
    /// port unreachable ends it with `ECONNREFUSED`). tokio offers poll
    /// functions no error interest, so the first call that has to wait
    /// makes a duplicate of the fd, registered for error wake-ups only; it
    /// lives as long as the socket (one more fd per socket that uses the
    /// poll forms).
    ///
    /// # Return value
    ///
    /// * `Poll::Pending` if no datagram is queued,
    /// * `Poll::Ready(Ok(()))` with the datagram in `buf`,
    /// * `Poll::Ready(Err(e))` on an error.
    ///
    /// Only the `Waker` from the `Context` passed to the most recent call is
    /// scheduled to receive a wakeup.
    ///
    /// # Errors
    ///
    /// The errors of [`recv`](UdpSocket::recv), as `io::Error`s: a kernel errno
    /// stays in `raw_os_error()`, and [`Error::from`](crate::Error::from) gives
    /// a denial back. No timeout applies: a poll function keeps no timer.
    /// Making the duplicate fd can fail with the OS's errno (`EMFILE`, ...).
    pub fn poll_recv(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let core = &self.core;
        self.poll_recv_io(cx, |s| core.eof_if_shut(sys::recv_buf(s, buf, 0), || 0))
            .map_ok(drop)
    }

    /// Receives one datagram and the address it came from.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let a = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let b = UdpSocket::bind("127.0.0.1:0").await?;
    ///     a.send_to(b"from a", b.local_addr()?).await?;
    ///     let mut buf = [0u8; 16];
    ///     let (n, from) = b.recv_from(&mut buf).await?;
    ///     assert_eq!((&buf[..n], from), (&b"from a"[..], a.local_addr()?));
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EAGAIN`) when
    /// the read timeout runs out; a pending error such as `ECONNREFUSED`
    /// (connected sockets) ends the wait with that errno.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. If `recv_from` is used as a branch in
    /// `tokio::select!` and another branch completes first, it is
    /// guaranteed that no datagram was received.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr)> {
        self.recv_from_deadline(buf, None).await
    }

    /// [`recv_from`](UdpSocket::recv_from) with a deadline.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EAGAIN`) when
    /// `deadline` or the read timeout passes first; otherwise as
    /// [`recv_from`](UdpSocket::recv_from).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn recv_from_deadline(
        &self,
        buf: &mut [u8],
        deadline: impl Into<Option<Instant>>,
    ) -> Result<(usize, SocketAddr)> {
        self.recv_from_flags(buf, 0, deadline.into()).await
    }

    /// Receives a datagram and its source if one is queued: `EAGAIN`
    /// otherwise.
    ///
    /// # Errors
    ///
    /// `WouldBlock` (errno `EAGAIN`) when nothing is queued; a pending error
    /// (`ECONNREFUSED`, ...) otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let a = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let b = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let mut buf = [0u8; 8];
    ///     assert_eq!(b.try_recv_from(&mut buf).unwrap_err().errno(), libc::EAGAIN);
    ///     a.writable().await?;
    ///     a.try_send_to(b"now", b.local_addr()?)?;
    ///     let (n, from) = loop {
    ///         b.readable().await?;
    ///         match b.try_recv_from(&mut buf) {
    ///             Ok(got) => break got,
    ///             Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
    ///             Err(e) => return Err(e),
    ///         }
    ///     };
    ///     assert_eq!((&buf[..n], from), (&b"now"[..], a.local_addr()?));
    ///     Ok(())
    /// }
    /// ```
    pub fn try_recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr)> {
        self.core.try_recv_io(
            RECV_INTEREST,
            |s| recv_from_inet(s, buf, 0),
            || Ok((0, self.core.peer_addr().map_err(io::Error::from)?)),
        )
    }

    /// Polls to receive a datagram and its source; like
    /// [`poll_recv`](UdpSocket::poll_recv), it wakes on errors too.
    ///
    /// # Errors
    ///
    /// The errors of [`recv_from`](UdpSocket::recv_from), as `io::Error`s: a
    /// kernel errno stays in `raw_os_error()`, and
    /// [`Error::from`](crate::Error::from) gives a denial back. No timeout
    /// applies: a poll function keeps no timer.
    pub fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddr>> {
        let core = &self.core;
        self.poll_recv_io(cx, |s| {
            match core.eof_if_shut(sys::recv_from_buf(s, buf, 0).map(Some), || None)? {
                Some((_, from)) => crate::core::to_inet(from).map_err(io::Error::from),
                None => core.peer_addr().map_err(io::Error::from),
            }
        })
    }

    /// Reads the next datagram and its source without taking it off the
    /// queue (`MSG_PEEK`).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let a = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let b = UdpSocket::bind("127.0.0.1:0").await?;
    ///     a.send_to(b"once", b.local_addr()?).await?;
    ///     let mut buf = [0u8; 8];
    ///     let (n, _) = b.peek_from(&mut buf).await?;
    ///     let (m, _) = b.recv_from(&mut buf).await?;
    ///     assert_eq!((n, m), (4, 4));
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv_from`](UdpSocket::recv_from).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: peeking consumes nothing.
    pub async fn peek_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr)> {
        self.peek_from_deadline(buf, None).await
    }

    /// [`peek_from`](UdpSocket::peek_from) with a deadline.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EAGAIN`) when
    /// `deadline` or the read timeout passes first; otherwise as
    /// [`recv_from`](UdpSocket::recv_from).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn peek_from_deadline(
        &self,
        buf: &mut [u8],
        deadline: impl Into<Option<Instant>>,
    ) -> Result<(usize, SocketAddr)> {
        self.recv_from_flags(buf, libc::MSG_PEEK, deadline.into())
            .await
    }

    /// Peeks at the next datagram if one is queued: `EAGAIN` otherwise.
    ///
    /// # Errors
    ///
    /// `WouldBlock` (errno `EAGAIN`) when nothing is queued; a pending error
    /// (`ECONNREFUSED`, ...) otherwise.
    pub fn try_peek_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr)> {
        self.core.try_recv_io(
            RECV_INTEREST,
            |s| recv_from_inet(s, buf, libc::MSG_PEEK),
            || Ok((0, self.core.peer_addr().map_err(io::Error::from)?)),
        )
    }

    /// Polls to peek at the next datagram; like
    /// [`poll_recv`](UdpSocket::poll_recv), it wakes on errors too.
    ///
    /// # Errors
    ///
    /// The errors of [`peek_from`](UdpSocket::peek_from), as `io::Error`s: a
    /// kernel errno stays in `raw_os_error()`, and
    /// [`Error::from`](crate::Error::from) gives a denial back. No timeout
    /// applies: a poll function keeps no timer.
    pub fn poll_peek_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddr>> {
        let core = &self.core;
        self.poll_recv_io(cx, |s| {
            match core.eof_if_shut(sys::recv_from_buf(s, buf, libc::MSG_PEEK).map(Some), || {
                None
            })? {
                Some((_, from)) => crate::core::to_inet(from).map_err(io::Error::from),
                None => core.peer_addr().map_err(io::Error::from),
            }
        })
    }

    async fn recv_from_flags(
        &self,
        buf: &mut [u8],
        flags: libc::c_int,
        deadline: Option<Instant>,
    ) -> Result<(usize, SocketAddr)> {
        let core = &self.core;
        core.io(RECV_INTEREST, Dir::Read, Op::Recv, deadline, |s| {
            let r = recv_from_inet(s, buf, flags);
            // After SHUT_RD (only possible when connected) a blocking Linux
            // socket returns 0 at once; the source is the peer.
            match core.eof_if_shut(r.map(Some), || None)? {
                Some(got) => Ok(got),
                None => Ok((0, core.peer_addr().map_err(io::Error::from)?)),
            }
        })
        .await
    }

    /// Waits until a datagram is queued or an error is pending.
    ///
    /// # Errors
    ///
    /// Only tokio's error when the runtime is shutting down; the socket's own
    /// errors show in the next send or receive.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn readable(&self) -> Result<()> {
        self.core.ready(RECV_INTEREST, None).await.map(drop)
    }

    /// Waits until the socket can send.
    ///
    /// # Errors
    ///
    /// Only tokio's error when the runtime is shutting down; the socket's own
    /// errors show in the next send or receive.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn writable(&self) -> Result<()> {
        self.core.ready(Interest::WRITABLE, None).await.map(drop)
    }

    /// Waits for any of the readiness in `interest` and returns what is
    /// ready.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{Interest, UdpSocket};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let a = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let b = UdpSocket::bind("127.0.0.1:0").await?;
    ///     a.send_to(b"x", b.local_addr()?).await?;
    ///     let ready = b.ready(Interest::READABLE | Interest::WRITABLE).await?;
    ///     assert!(ready.is_readable() || ready.is_writable());
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// Only tokio's error when the runtime is shutting down; the socket's own
    /// errors show in the next send or receive.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn ready(&self, interest: Interest) -> Result<Ready> {
        self.core.ready(interest, None).await
    }

    /// [`ready`](UdpSocket::ready) that gives up at `deadline`.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EAGAIN`) when
    /// `deadline` passes first; otherwise as [`ready`](UdpSocket::ready).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn ready_deadline(
        &self,
        interest: Interest,
        deadline: impl Into<Option<Instant>>,
    ) -> Result<Ready> {
        self.core.ready(interest, deadline.into()).await
    }

    /// Shuts down receiving, sending or both (`shutdown(2)`; the socket
    /// must be connected, else `ENOTCONN`). After `Shutdown::Read`, a
    /// receive with nothing queued returns 0 at once, as a blocking Linux
    /// socket does.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::Shutdown;
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let a = UdpSocket::bind("127.0.0.1:0").await?;
    ///     assert_eq!(a.shutdown_with(Shutdown::Read).unwrap_err().errno(), libc::ENOTCONN);
    ///     a.connect("127.0.0.1:9").await?;
    ///     a.shutdown_with(Shutdown::Read)?;
    ///     let mut buf = [0u8; 8];
    ///     assert_eq!(a.recv(&mut buf).await?, 0); // at once: nothing to wait for
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// The kernel's errno: `ENOTCONN` if the socket is not connected.
    pub fn shutdown_with(&self, how: Shutdown) -> Result<()> {
        self.core.shutdown(how)
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// The kernel's errno from `getsockname(2)`.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.core.local_addr()
    }

    /// The connected peer's address (`ENOTCONN` if not connected).
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if the socket is not connected.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.core.peer_addr()
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let sock = UdpSocket::bind("127.0.0.1:0").await?;
    ///     assert!(sock.take_error()?.is_none());
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// The kernel's errno if `getsockopt(2)` itself fails; the pending error is
    /// the `Ok` value.
    pub fn take_error(&self) -> Result<Option<io::Error>> {
        self.core.take_error()
    }

    /// The policy this socket's calls are checked against.
    pub fn policy(&self) -> &Arc<Policy> {
        self.core.policy()
    }

    /// Wraps a `std::net::UdpSocket`; the fd is made non-blocking and
    /// close-on-exec here, and the default policy applies.
    ///
    /// # Errors
    ///
    /// `InvalidInput` (errno `EINVAL`) if the socket is not UDP; outside a
    /// Tokio runtime, an error, not a panic.
    ///
    /// # Panics
    ///
    /// Inside a runtime built without IO enabled (tokio's own panic).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let std_sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    ///     let addr = std_sock.local_addr()?;
    ///     let sock = UdpSocket::from_std(std_sock)?;
    ///     assert_eq!(sock.local_addr()?, addr);
    ///     Ok(())
    /// }
    /// ```
    #[track_caller]
    pub fn from_std(sock: std::net::UdpSocket) -> Result<UdpSocket> {
        let sock = Socket::from(std::os::fd::OwnedFd::from(sock));
        Ok(UdpSocket::from_core(Core::adopt(
            sock,
            Policy::shared_default(),
            Some(libc::SOCK_DGRAM),
        )?))
    }

    /// Turns the socket into a `std::net::UdpSocket`, still non-blocking.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let sock = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let addr = sock.local_addr()?;
    ///     let std_sock = sock.into_std()?;
    ///     assert_eq!(std_sock.local_addr()?, addr);
    ///     let back = UdpSocket::from_std(std_sock)?;
    ///     assert_eq!(back.local_addr()?, addr);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// None today; the `Result` is kept for tokio's signature.
    pub fn into_std(self) -> Result<std::net::UdpSocket> {
        Ok(self.core.into_socket().into())
    }
}

crate::core::impl_fd!(UdpSocket, core);
