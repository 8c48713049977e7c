//! `TcpListener`: bind, accept, and the `incoming()` stream that never spins
//! when the process runs out of file descriptors.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use std::os::fd::AsRawFd as _;

use socket2::{Domain, Socket};
use tokio::io::Interest;
use tokio::net::ToSocketAddrs;
use tokio::time::{Instant, Sleep};

use crate::core::{Core, each_addr, new_socket, to_inet};
use crate::deadline::Dir;
use crate::error::{Error, Op, Result};
use crate::opts;
use crate::policy::{AddrUse, Policy};
use crate::stream::TcpStream;

/// The backlog `bind` listens with, as tokio and std use.
pub(crate) const DEFAULT_BACKLOG: i32 = 1024;

/// A TCP socket server, listening for connections.
///
/// The same shape as `tokio::net::TcpListener`, plus per-socket accept
/// timeouts, per-call deadlines, the socket's [`Policy`], and an
/// [`incoming`](TcpListener::incoming) stream that backs off instead of
/// spinning when accept fails for lack of file descriptors or memory.
///
/// # Examples
///
/// ```
/// use hostsock::{TcpListener, TcpStream};
///
/// #[tokio::main]
/// async fn main() -> hostsock::Result<()> {
///     let listener = TcpListener::bind("127.0.0.1:0").await?;
///     let addr = listener.local_addr()?;
///     let client = TcpStream::connect(addr).await?;
///     let (_server_side, peer) = listener.accept().await?;
///     assert_eq!(peer, client.local_addr()?);
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct TcpListener {
    core: Core,
}

impl TcpListener {
    /// Creates a listener bound to `addr` (with `SO_REUSEADDR`, as tokio
    /// does) and listening with a backlog of 1024. If `addr` resolves to
    /// several addresses, each is tried in turn.
    ///
    /// # Errors
    ///
    /// The kernel's errno for socket, bind or listen (`EADDRINUSE`,
    /// `EACCES` for a privileged port, `EADDRNOTAVAIL`, ...).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::TcpListener;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     // `SO_REUSEADDR` does not let two sockets listen on one address.
    ///     let err = TcpListener::bind(listener.local_addr()?).await.unwrap_err();
    ///     assert_eq!(err.errno(), libc::EADDRINUSE);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: binding happens in one step after the
    /// address is resolved; a dropped future leaves no socket behind.
    pub async fn bind<A: ToSocketAddrs>(addr: A) -> Result<TcpListener> {
        TcpListener::bind_with_policy(addr, Policy::shared_default()).await
    }

    /// [`bind`](TcpListener::bind) with an explicit [`Policy`], which every
    /// accepted socket inherits.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use hostsock::{Policy, TcpListener};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let policy = Arc::new(Policy::allow_all());
    ///     let listener = TcpListener::bind_with_policy("127.0.0.1:0", policy.clone()).await?;
    ///     assert!(Arc::ptr_eq(listener.policy(), &policy));
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial when `policy` refuses the socket kind (`ESOCKTNOSUPPORT`) or
    /// the address for `Bind` (`EACCES`); otherwise as
    /// [`bind`](TcpListener::bind).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe, as [`bind`](TcpListener::bind) is.
    pub async fn bind_with_policy<A: ToSocketAddrs>(
        addr: A,
        policy: Arc<Policy>,
    ) -> Result<TcpListener> {
        each_addr(addr, |a| {
            let policy = policy.clone();
            async move { TcpListener::bind_addr(a, policy) }
        })
        .await
    }

    fn bind_addr(addr: SocketAddr, policy: Arc<Policy>) -> Result<TcpListener> {
        let (sock, kind) = new_socket(&policy, Domain::for_address(addr), true)?;
        policy.check_addr(sock.as_raw_fd(), Op::Bind, AddrUse::Bind, addr)?;
        sock.set_reuse_address(true)?;
        sock.bind(&addr.into())?;
        sock.listen(DEFAULT_BACKLOG)?;
        Ok(TcpListener {
            core: Core::registered(sock, policy, kind)?,
        })
    }

    pub(crate) fn from_core(core: Core) -> TcpListener {
        TcpListener { core }
    }

    pub(crate) fn into_core(self) -> Core {
        self.core
    }

    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    /// Accepts a new connection, waiting for one if none is queued. The
    /// listener's read timeout ([`set_read_timeout`](TcpListener::set_read_timeout))
    /// applies.
    ///
    /// The host call is `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`. The new
    /// stream inherits the listener's policy and timeouts (Linux copies
    /// `SO_RCVTIMEO`/`SO_SNDTIMEO` to accepted sockets too).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{TcpListener, TcpStream};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let _client = TcpStream::connect(listener.local_addr()?).await?;
    ///     let (stream, peer) = listener.accept().await?;
    ///     assert_eq!(stream.peer_addr()?, peer);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// `EMFILE`/`ENFILE` when the process or system is out of file
    /// descriptors (the connection stays queued); a timed-out error
    /// (`errno()` = `EAGAIN`) when the timeout runs out.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. If `accept` is used as a branch in
    /// `tokio::select!` and another branch completes first, no connection
    /// was taken off the queue.
    pub async fn accept(&self) -> Result<(TcpStream, SocketAddr)> {
        self.accept_deadline(None).await
    }

    /// [`accept`](TcpListener::accept) that gives up at `deadline` (or at the
    /// read timeout, whichever is earlier) with a timed-out error whose
    /// `errno()` is `EAGAIN`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hostsock::TcpListener;
    /// use tokio::time::Instant;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let err = listener
    ///         .accept_deadline(Instant::now() + Duration::from_millis(20))
    ///         .await
    ///         .unwrap_err();
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
    /// [`accept`](TcpListener::accept).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe, as [`accept`](TcpListener::accept) is.
    pub async fn accept_deadline(
        &self,
        deadline: impl Into<Option<Instant>>,
    ) -> Result<(TcpStream, SocketAddr)> {
        let (sock, addr) = self
            .core
            .io(
                Interest::READABLE,
                Dir::Read,
                Op::Accept,
                deadline.into(),
                |s| accept_allowed(s, self.core.policy()),
            )
            .await?;
        self.wrap_accepted(sock, addr)
    }

    /// Accepts a connection if one is queued, without waiting: `EAGAIN`
    /// (kind `WouldBlock`) otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::TcpListener;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let err = listener.try_accept().unwrap_err();
    ///     assert_eq!(err.errno(), libc::EAGAIN);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// `WouldBlock` (errno `EAGAIN`) when no connection is queued (a refused
    /// peer is reset and does not count); otherwise as
    /// [`accept`](TcpListener::accept).
    pub fn try_accept(&self) -> Result<(TcpStream, SocketAddr)> {
        let (sock, addr) = self.core.try_io(Interest::READABLE, |s| {
            accept_allowed(s, self.core.policy())
        })?;
        self.wrap_accepted(sock, addr)
    }

    /// Polls to accept a new connection. The read timeout does not apply
    /// here: a poll function has nowhere to keep a timer.
    ///
    /// # Return value
    ///
    /// * `Poll::Pending` if no connection is queued yet,
    /// * `Poll::Ready(Ok((stream, addr)))` when one was accepted,
    /// * `Poll::Ready(Err(e))` on an error.
    ///
    /// Only the `Waker` from the `Context` passed to the most recent call is
    /// scheduled to receive a wakeup.
    ///
    /// # Errors
    ///
    /// The errors of [`accept`](TcpListener::accept), as `io::Error`s: a kernel
    /// errno stays in `raw_os_error()`, and [`Error::from`](crate::Error::from)
    /// gives a denial back. No timeout applies: a poll function keeps no timer.
    pub fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<(TcpStream, SocketAddr)>> {
        match self
            .core
            .poll_read_io(cx, |s| accept_allowed(s, self.core.policy()))
        {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok((sock, addr))) => {
                Poll::Ready(self.wrap_accepted(sock, addr).map_err(Into::into))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }

    fn wrap_accepted(&self, sock: Socket, addr: SocketAddr) -> Result<(TcpStream, SocketAddr)> {
        let core = Core::registered(sock, self.core.policy().clone(), self.core.kind())?;
        self.core.pass_timeouts_to(&core)?;
        Ok((TcpStream::from_core(core), addr))
    }

    /// A [`Stream`] of accepted connections that keeps going after errors.
    ///
    /// When accept fails with `EMFILE`, `ENFILE`, `ENOBUFS` or `ENOMEM`, the
    /// stream yields the error and then waits before trying again: 10 ms,
    /// doubling up to 500 ms, back to 10 ms after the next success. The
    /// connections stay in the kernel's backlog meanwhile. Other errors are
    /// yielded without a pause.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::StreamExt;
    /// use hostsock::{TcpListener, TcpStream};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let addr = listener.local_addr()?;
    ///     let _a = TcpStream::connect(addr).await?;
    ///     let _b = TcpStream::connect(addr).await?;
    ///     let accepted: Vec<_> = listener.incoming().take(2).collect().await;
    ///     assert!(accepted.iter().all(|r| r.is_ok()));
    ///     Ok(())
    /// }
    /// ```
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming {
            listener: self,
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(500)),
        }
    }

    /// The local address this listener is bound to.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::TcpListener;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     assert_ne!(listener.local_addr()?.port(), 0);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// The kernel's errno from `getsockname(2)`.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.core.local_addr()
    }

    /// Wraps a `std::net::TcpListener`. The fd is made non-blocking and
    /// close-on-exec here; the default policy applies.
    ///
    /// # Errors
    ///
    /// Outside a Tokio runtime this is an error, not a panic.
    ///
    /// # Panics
    ///
    /// Inside a runtime built without IO enabled (tokio's own panic).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::TcpListener;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    ///     let listener = TcpListener::from_std(std_listener)?;
    ///     assert_ne!(listener.local_addr()?.port(), 0);
    ///     Ok(())
    /// }
    /// ```
    #[track_caller]
    pub fn from_std(listener: std::net::TcpListener) -> Result<TcpListener> {
        let sock = Socket::from(std::os::fd::OwnedFd::from(listener));
        Ok(TcpListener {
            core: Core::adopt(sock, Policy::shared_default(), Some(libc::SOCK_STREAM))?,
        })
    }

    /// Turns the listener into a `std::net::TcpListener`, still in
    /// non-blocking mode (as tokio leaves it).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::TcpListener;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let addr = listener.local_addr()?;
    ///     let std_listener = listener.into_std()?;
    ///     assert_eq!(std_listener.local_addr()?, addr);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// None today; the `Result` is kept for tokio's signature.
    pub fn into_std(self) -> Result<std::net::TcpListener> {
        Ok(self.core.into_socket().into())
    }

    /// Sets `IP_TTL` (IPv4) for packets sent from accepted sockets' SYN-ACKs
    /// and this socket.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::TcpListener;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     listener.set_ttl(42)?;
    ///     assert_eq!(listener.ttl()?, 42);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `IP_TTL` off; the kernel's
    /// errno otherwise (`EINVAL` for 0 or more than 255).
    pub fn set_ttl(&self, ttl: u32) -> Result<()> {
        self.set(opts::IpTtl, ttl)
    }

    /// Gets `IP_TTL`. For more information, see [`set_ttl`](TcpListener::set_ttl).
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `IP_TTL` off; the kernel's
    /// errno otherwise.
    pub fn ttl(&self) -> Result<u32> {
        self.get(opts::IpTtl)
    }

    /// Sets the accept timeout, as `SO_RCVTIMEO` would: `accept` gives a
    /// timed-out error (`errno()` = `EAGAIN`) when no connection arrives in
    /// time. `None` waits forever; `Some(Duration::ZERO)` is `EINVAL`, as in
    /// std. Accepted streams inherit both timeouts.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hostsock::TcpListener;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     listener.set_read_timeout(Some(Duration::from_millis(10)))?;
    ///     assert!(listener.accept().await.unwrap_err().is_timeout());
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// `InvalidInput` (errno `EINVAL`) for `Some(Duration::ZERO)`; a denial
    /// (`ENOPROTOOPT`) if the policy turns `SO_RCVTIMEO` off.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        self.core.set_timeout(Dir::Read, timeout)
    }

    /// The accept timeout; see [`set_read_timeout`](TcpListener::set_read_timeout).
    pub fn read_timeout(&self) -> Option<Duration> {
        self.core.timeout(Dir::Read)
    }

    /// Sets the write timeout that accepted streams inherit.
    ///
    /// # Errors
    ///
    /// `InvalidInput` (errno `EINVAL`) for `Some(Duration::ZERO)`; a denial
    /// (`ENOPROTOOPT`) if the policy turns `SO_SNDTIMEO` off.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        self.core.set_timeout(Dir::Write, timeout)
    }

    /// The write timeout accepted streams inherit.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.core.timeout(Dir::Write)
    }

    /// The policy this listener and its accepted sockets are checked against.
    pub fn policy(&self) -> &Arc<Policy> {
        self.core.policy()
    }

    /// Takes the pending error (`SO_ERROR`), if any.
    ///
    /// # Errors
    ///
    /// The kernel's errno if `getsockopt(2)` itself fails; the pending error is
    /// the `Ok` value.
    pub fn take_error(&self) -> Result<Option<std::io::Error>> {
        self.core.take_error()
    }
}

crate::core::impl_fd!(TcpListener, core);

/// `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`, the peer as an INET address.
/// Repeats until a peer the policy's `AcceptPeer` rules allow: a refused
/// peer is reset (`SO_LINGER` 0, then close) and never handed out. Runs out
/// with `EAGAIN` like a plain accept.
pub(crate) fn accept_allowed(
    sock: &Socket,
    policy: &Policy,
) -> std::io::Result<(Socket, SocketAddr)> {
    loop {
        let (s, addr) = sock.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
        let addr = to_inet(addr).map_err(std::io::Error::from)?;
        match policy.check_addr(sock.as_raw_fd(), Op::Accept, AddrUse::AcceptPeer, addr) {
            Ok(()) => return Ok((s, addr)),
            Err(_denied) => {
                // The audit hook has seen it; reset rather than close
                // politely, so the peer learns at once.
                let _ = s.set_linger(Some(Duration::ZERO));
                drop(s);
            }
        }
    }
}

/// Is this an accept error that more tries will not fix until resources
/// are freed?
fn is_resource_error(e: &Error) -> bool {
    matches!(
        e.errno(),
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
    )
}

/// The stream of connections from [`TcpListener::incoming`].
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
    backoff: Backoff,
}

impl Incoming<'_> {
    /// Sets the pause after a resource error (`EMFILE`, `ENFILE`, `ENOBUFS`,
    /// `ENOMEM`): it starts at `first` and doubles up to `max`. The defaults
    /// are 10 ms and 500 ms.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hostsock::TcpListener;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let _incoming = listener
    ///         .incoming()
    ///         .with_backoff(Duration::from_millis(5), Duration::from_millis(100));
    ///     Ok(())
    /// }
    /// ```
    pub fn with_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = Backoff::new(first, max.max(first));
        self
    }

    /// How long the stream will pause before its next accept, if it is
    /// backing off now.
    pub fn current_backoff(&self) -> Option<Duration> {
        self.backoff.waiting.then_some(self.backoff.delay)
    }
}

impl Stream for Incoming<'_> {
    type Item = Result<TcpStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.backoff.poll_wait(cx).is_pending() {
            return Poll::Pending;
        }
        match this.listener.poll_accept(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok((stream, _))) => {
                this.backoff.reset();
                Poll::Ready(Some(Ok(stream)))
            }
            Poll::Ready(Err(e)) => {
                let e = Error::from(e);
                if is_resource_error(&e) {
                    this.backoff.start();
                }
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

/// Doubling pause with a cap; the `Sleep` is allocated on the first pause
/// and reused.
#[derive(Debug)]
struct Backoff {
    first: Duration,
    max: Duration,
    /// The current pause; zero until the first resource error.
    delay: Duration,
    waiting: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Backoff {
    fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            delay: Duration::ZERO,
            waiting: false,
            sleep: None,
        }
    }

    fn start(&mut self) {
        self.delay = if self.delay.is_zero() {
            self.first
        } else {
            (self.delay * 2).min(self.max)
        };
        let at = Instant::now() + self.delay;
        match &mut self.sleep {
            Some(s) => s.as_mut().reset(at),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.waiting = true;
    }

    fn reset(&mut self) {
        self.delay = Duration::ZERO;
    }

    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.waiting {
            return Poll::Ready(());
        }
        if let Some(s) = &mut self.sleep {
            std::task::ready!(s.as_mut().poll(cx));
        }
        self.waiting = false;
        Poll::Ready(())
    }
}

use std::future::Future as _;
