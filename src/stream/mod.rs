//! `TcpStream`: connect (with deadlines), read and write, peek, shutdown,
//! and the socket's options.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{Domain, Socket};
use tokio::io::{Interest, ReadBuf, Ready};
use tokio::net::ToSocketAddrs;
use tokio::time::Instant;

use crate::core::{Core, each_addr, new_socket};
use crate::deadline::{self, Dir, PollTimer};
use crate::error::{Op, Result};
use crate::opts;
use crate::policy::Policy;
use crate::split::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, WriteHalf};
use crate::sys;

mod connect;
mod msg;
mod ready;
mod rw;

pub(crate) use connect::connect_then_register;
pub(crate) use rw::{poll_read, poll_write, send_one, send_vectored, vectored_len};

/// A TCP connection.
///
/// The same shape as `tokio::net::TcpStream`: `AsyncRead`/`AsyncWrite`
/// (vectored writes too), `peek`, `try_read`/`try_write`, readiness, and
/// borrowed or owned halves; plus per-socket read and write timeouts that
/// apply to every read and write (the `AsyncRead`/`AsyncWrite` ones too),
/// per-call deadlines, and the socket's [`Policy`].
///
/// Every write passes `MSG_NOSIGNAL`: writing to a connection the peer
/// closed gives `EPIPE`, never a `SIGPIPE`.
///
/// # Examples
///
/// ```
/// use hostsock::{TcpListener, TcpStream};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// #[tokio::main]
/// async fn main() -> std::io::Result<()> {
///     let listener = TcpListener::bind("127.0.0.1:0").await?;
///     let mut client = TcpStream::connect(listener.local_addr()?).await?;
///     let (mut server, _) = listener.accept().await?;
///     client.write_all(b"hello").await?;
///     let mut buf = [0u8; 5];
///     server.read_exact(&mut buf).await?;
///     assert_eq!(&buf, b"hello");
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct TcpStream {
    core: Core,
    read_timer: PollTimer,
    write_timer: PollTimer,
}

impl TcpStream {
    pub(crate) fn from_core(core: Core) -> TcpStream {
        TcpStream {
            core,
            read_timer: PollTimer::default(),
            write_timer: PollTimer::default(),
        }
    }

    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    pub(crate) fn into_core(self) -> Core {
        self.core
    }

    /// Opens a connection to `addr`. If it resolves to several addresses,
    /// each is tried in turn and the last error is returned.
    ///
    /// The host socket is made non-blocking; `connect(2)` gives
    /// `EINPROGRESS`, the future waits for writability, and `SO_ERROR` is the
    /// result.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{TcpListener, TcpStream};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let stream = TcpStream::connect(listener.local_addr()?).await?;
    ///     assert_eq!(stream.peer_addr()?, listener.local_addr()?);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// The kernel's errno: `ECONNREFUSED`, `ENETUNREACH`, `ETIMEDOUT`, ...
    /// `EINPROGRESS` never escapes. A name that does not resolve gives the
    /// resolver's error; one that resolves to no address, `InvalidInput`
    /// (errno `EINVAL`). Of several addresses, the last error is returned.
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe: dropping the future closes the
    /// half-open socket (no file descriptor outlives it), and the connection
    /// attempt is abandoned.
    pub async fn connect<A: ToSocketAddrs>(addr: A) -> Result<TcpStream> {
        TcpStream::connect_with(addr, Policy::shared_default(), None).await
    }

    /// [`connect`](TcpStream::connect) that gives up at `deadline` with a
    /// timed-out error whose `errno()` is `EINPROGRESS` (what Linux gives
    /// when `SO_SNDTIMEO` runs out during connect). The deadline covers all
    /// the addresses `addr` resolves to.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hostsock::{TcpListener, TcpStream};
    /// use tokio::time::Instant;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let deadline = Instant::now() + Duration::from_secs(5);
    ///     let stream = TcpStream::connect_deadline(listener.local_addr()?, deadline).await?;
    ///     assert_eq!(stream.peer_addr()?, listener.local_addr()?);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`connect`](TcpStream::connect), and
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EINPROGRESS`)
    /// when `deadline` passes first.
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe: dropping the future closes the
    /// half-open socket.
    pub async fn connect_deadline<A: ToSocketAddrs>(
        addr: A,
        deadline: impl Into<Option<Instant>>,
    ) -> Result<TcpStream> {
        TcpStream::connect_with(addr, Policy::shared_default(), deadline.into()).await
    }

    /// [`connect_deadline`](TcpStream::connect_deadline) with an explicit
    /// [`Policy`].
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{Policy, TcpListener, TcpStream};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let policy = Policy::shared_default();
    ///     let stream = TcpStream::connect_with(listener.local_addr()?, policy, None).await?;
    ///     assert!(stream.peer_addr().is_ok());
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial when `policy` refuses the socket kind (`ESOCKTNOSUPPORT`) or
    /// the address for `Connect` (`ECONNREFUSED`);
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EINPROGRESS`)
    /// when `deadline` passes first; the kernel's errno otherwise, as for
    /// [`connect`](TcpStream::connect).
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe: dropping the future closes the
    /// half-open socket.
    pub async fn connect_with<A: ToSocketAddrs>(
        addr: A,
        policy: Arc<Policy>,
        deadline: Option<Instant>,
    ) -> Result<TcpStream> {
        let run = each_addr(addr, |a| {
            let policy = policy.clone();
            async move {
                let (sock, kind) = new_socket(&policy, Domain::for_address(a), true)?;
                let core = connect_then_register(sock, kind, policy, None, a, None).await?;
                Ok(TcpStream::from_core(core))
            }
        });
        deadline::run(deadline, Op::Connect, run).await
    }

    /// The remote address this stream is connected to.
    ///
    /// # Errors
    ///
    /// The kernel's errno: `ENOTCONN` once the connection is gone (reset, or
    /// closed in both directions).
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.core.peer_addr()
    }

    /// The local address this stream is bound to.
    ///
    /// # Errors
    ///
    /// The kernel's errno from `getsockname(2)`.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.core.local_addr()
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    ///
    /// # Errors
    ///
    /// The kernel's errno if `getsockopt(2)` itself fails; the pending error is
    /// the `Ok` value.
    pub fn take_error(&self) -> Result<Option<io::Error>> {
        self.core.take_error()
    }

    /// Reads into `buf` without taking the bytes off the queue
    /// (`MSG_PEEK`). Waits until data (or end of stream) is available.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{TcpListener, TcpStream};
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// #[tokio::main]
    /// async fn main() -> std::io::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let mut client = TcpStream::connect(listener.local_addr()?).await?;
    ///     let (mut server, _) = listener.accept().await?;
    ///     client.write_all(b"abc").await?;
    ///     let mut buf = [0u8; 3];
    ///     let n = server.peek(&mut buf).await?;
    ///     assert!(n > 0);
    ///     server.read_exact(&mut buf).await?; // still there
    ///     assert_eq!(&buf, b"abc");
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EAGAIN`) when
    /// the read timeout runs out; the kernel's errno otherwise (`ECONNRESET`,
    /// ...).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: peeking consumes nothing.
    pub async fn peek(&self, buf: &mut [u8]) -> Result<usize> {
        self.peek_deadline(buf, None).await
    }

    /// [`peek`](TcpStream::peek) with a deadline (and the read timeout).
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EAGAIN`) when
    /// `deadline` or the read timeout passes first; the kernel's errno
    /// otherwise.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn peek_deadline(
        &self,
        buf: &mut [u8],
        deadline: impl Into<Option<Instant>>,
    ) -> Result<usize> {
        self.core
            .io(
                Interest::READABLE,
                Dir::Read,
                Op::Recv,
                deadline.into(),
                |s| sys::recv(s, buf, libc::MSG_PEEK),
            )
            .await
    }

    /// Polls to peek into `buf`; returns how many bytes were peeked.
    ///
    /// # Return value
    ///
    /// * `Poll::Pending` if no data is available yet,
    /// * `Poll::Ready(Ok(n))` with the bytes peeked (0 at end of stream),
    /// * `Poll::Ready(Err(e))` on an error.
    ///
    /// Only the `Waker` from the `Context` passed to the most recent call is
    /// scheduled to receive a wakeup.
    ///
    /// # Errors
    ///
    /// The errors of [`peek`](TcpStream::peek), as `io::Error`s: a kernel errno
    /// stays in `raw_os_error()`, and [`Error::from`](crate::Error::from) gives
    /// a denial back. No timeout applies: a poll function keeps no timer.
    pub fn poll_peek(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<usize>> {
        self.core
            .poll_read_io(cx, |s| sys::recv_buf(s, buf, libc::MSG_PEEK))
    }

    /// Reads into `buf`, waiting for data, until `deadline` (or the read
    /// timeout) passes. Returns 0 at end of stream.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hostsock::{TcpListener, TcpStream};
    /// use tokio::time::Instant;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let _client = TcpStream::connect(listener.local_addr()?).await?;
    ///     let (server, _) = listener.accept().await?;
    ///     let mut buf = [0u8; 16];
    ///     let soon = Instant::now() + Duration::from_millis(20);
    ///     let err = server.read_deadline(&mut buf, soon).await.unwrap_err();
    ///     assert_eq!(err.errno(), libc::EAGAIN);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EAGAIN`) when
    /// `deadline` or the read timeout passes first; the kernel's errno
    /// otherwise (`ECONNRESET`, ...).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: if it is dropped before it completes, no
    /// data was read.
    pub async fn read_deadline(
        &self,
        buf: &mut [u8],
        deadline: impl Into<Option<Instant>>,
    ) -> Result<usize> {
        self.core
            .io(
                Interest::READABLE,
                Dir::Read,
                Op::Recv,
                deadline.into(),
                |s| sys::recv(s, buf, 0),
            )
            .await
    }

    /// Writes some of `buf`, waiting for room, until `deadline` (or the
    /// write timeout) passes. Returns how many bytes were written.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hostsock::{TcpListener, TcpStream};
    /// use tokio::io::AsyncReadExt;
    /// use tokio::time::Instant;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let client = TcpStream::connect(listener.local_addr()?).await?;
    ///     let (mut server, _) = listener.accept().await?;
    ///     let deadline = Instant::now() + Duration::from_secs(2);
    ///     let n = client.write_deadline(b"ping", deadline).await?;
    ///     let mut buf = vec![0u8; n];
    ///     server.read_exact(&mut buf).await?;
    ///     assert_eq!(&buf, &b"ping"[..n]);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EAGAIN`) when
    /// `deadline` or the write timeout passes first; the kernel's errno
    /// otherwise: `EPIPE` after the peer closed (never a `SIGPIPE`),
    /// `ECONNRESET`, ...
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: if it is dropped before it completes, no
    /// data was written.
    pub async fn write_deadline(
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

    /// Reads what is available now into `buf`, without waiting: `EAGAIN`
    /// (kind `WouldBlock`) if nothing is. Returns 0 at end of stream.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{TcpListener, TcpStream};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let client = TcpStream::connect(listener.local_addr()?).await?;
    ///     let (server, _) = listener.accept().await?;
    ///     client.writable().await?;
    ///     assert_eq!(client.try_write(b"hi")?, 2);
    ///     let mut buf = [0u8; 8];
    ///     let n = loop {
    ///         server.readable().await?;
    ///         match server.try_read(&mut buf) {
    ///             Ok(n) => break n,
    ///             Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
    ///             Err(e) => return Err(e),
    ///         }
    ///     };
    ///     assert_eq!(&buf[..n], b"hi");
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// `WouldBlock` (errno `EAGAIN`) when nothing is queued; the kernel's errno
    /// otherwise (`ECONNRESET`, ...).
    pub fn try_read(&self, buf: &mut [u8]) -> Result<usize> {
        self.core
            .try_io(Interest::READABLE, |s| sys::recv(s, buf, 0))
    }

    /// Vectored [`try_read`](TcpStream::try_read): one `recvmsg(2)`.
    ///
    /// # Errors
    ///
    /// `WouldBlock` (errno `EAGAIN`) when nothing is queued; the kernel's errno
    /// otherwise (`ECONNRESET`, ...).
    pub fn try_read_vectored(&self, bufs: &mut [IoSliceMut<'_>]) -> Result<usize> {
        self.core
            .try_io(Interest::READABLE, |s| sys::recv_vectored(s, bufs, 0))
    }

    /// Writes what fits now, without waiting: `EAGAIN` (kind `WouldBlock`)
    /// if nothing does.
    ///
    /// # Errors
    ///
    /// `WouldBlock` (errno `EAGAIN`) when the send buffer is full; the kernel's
    /// errno otherwise (`EPIPE`, `ECONNRESET`, ...).
    pub fn try_write(&self, buf: &[u8]) -> Result<usize> {
        self.core
            .try_io(Interest::WRITABLE, |s| crate::sys::send(s, buf, 0))
    }

    /// Vectored [`try_write`](TcpStream::try_write): one `sendmsg(2)`.
    ///
    /// # Errors
    ///
    /// `WouldBlock` (errno `EAGAIN`) when the send buffer is full; the kernel's
    /// errno otherwise (`EPIPE`, `ECONNRESET`, ...).
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> Result<usize> {
        self.core.try_io(Interest::WRITABLE, |s| {
            s.send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
        })
    }

    /// Waits until the stream is readable (or at end of stream, or in
    /// error).
    ///
    /// # Errors
    ///
    /// Only tokio's error when the runtime is shutting down; the socket's own
    /// errors show in the next read or write.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn readable(&self) -> Result<()> {
        self.core.ready(Interest::READABLE, None).await.map(drop)
    }

    /// Waits until the stream is writable.
    ///
    /// # Errors
    ///
    /// Only tokio's error when the runtime is shutting down; the socket's own
    /// errors show in the next read or write.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn writable(&self) -> Result<()> {
        self.core.ready(Interest::WRITABLE, None).await.map(drop)
    }

    /// Waits for any of the readiness in `interest`, and returns what is
    /// ready.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{Interest, TcpListener, TcpStream};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let client = TcpStream::connect(listener.local_addr()?).await?;
    ///     let ready = client.ready(Interest::WRITABLE).await?;
    ///     assert!(ready.is_writable());
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// Only tokio's error when the runtime is shutting down; the socket's own
    /// errors show in the next read or write.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn ready(&self, interest: Interest) -> Result<Ready> {
        self.core.ready(interest, None).await
    }

    /// [`ready`](TcpStream::ready) that gives up at `deadline` with a
    /// timed-out error (`errno()` = `EAGAIN`).
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EAGAIN`) when
    /// `deadline` passes first; otherwise as [`ready`](TcpStream::ready).
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

    /// Shuts down the read half, the write half, or both (`shutdown(2)`).
    /// After `Shutdown::Write` the peer reads end of stream; after
    /// `Shutdown::Read` reads here return 0 at once once queued data is gone.
    ///
    /// Named so as not to shadow `AsyncWriteExt::shutdown()`, which shuts
    /// down the write half.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::Shutdown;
    /// use hostsock::{TcpListener, TcpStream};
    /// use tokio::io::AsyncReadExt;
    ///
    /// #[tokio::main]
    /// async fn main() -> std::io::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let client = TcpStream::connect(listener.local_addr()?).await?;
    ///     let (mut server, _) = listener.accept().await?;
    ///     client.shutdown_with(Shutdown::Write)?;
    ///     let mut buf = Vec::new();
    ///     assert_eq!(server.read_to_end(&mut buf).await?, 0);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// The kernel's errno: `ENOTCONN` if the connection is already gone.
    pub fn shutdown_with(&self, how: Shutdown) -> Result<()> {
        self.core.shutdown(how)
    }

    /// Splits into a borrowed read half and write half, usable at the same
    /// time (for example in two branches of `tokio::join!`).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{TcpListener, TcpStream};
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// #[tokio::main]
    /// async fn main() -> std::io::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let mut client = TcpStream::connect(listener.local_addr()?).await?;
    ///     let (mut server, _) = listener.accept().await?;
    ///     // Echo on the server side while the client writes and reads.
    ///     let (mut rd, mut wr) = server.split();
    ///     let echo = async move {
    ///         let mut buf = [0u8; 4];
    ///         rd.read_exact(&mut buf).await?;
    ///         wr.write_all(&buf).await
    ///     };
    ///     let talk = async {
    ///         client.write_all(b"echo").await?;
    ///         let mut buf = [0u8; 4];
    ///         client.read_exact(&mut buf).await?;
    ///         Ok::<_, std::io::Error>(buf)
    ///     };
    ///     let (echoed, got) = tokio::join!(echo, talk);
    ///     echoed?;
    ///     assert_eq!(&got?, b"echo");
    ///     Ok(())
    /// }
    /// ```
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        crate::split::split(self)
    }

    /// Splits into owned halves that can move to different tasks. Dropping
    /// the write half shuts the write direction down, as tokio does.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{TcpListener, TcpStream};
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// #[tokio::main]
    /// async fn main() -> std::io::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let client = TcpStream::connect(listener.local_addr()?).await?;
    ///     let (mut server, _) = listener.accept().await?;
    ///     let (mut rd, mut wr) = client.into_split();
    ///     let writer = tokio::spawn(async move {
    ///         wr.write_all(b"bye").await
    ///         // Dropping `wr` here shuts the write direction down.
    ///     });
    ///     writer.await.unwrap()?;
    ///     let mut got = Vec::new();
    ///     server.read_to_end(&mut got).await?; // ends: the write half was dropped
    ///     assert_eq!(got, b"bye");
    ///     server.write_all(b"ok").await?;
    ///     let mut buf = [0u8; 2];
    ///     rd.read_exact(&mut buf).await?;
    ///     assert_eq!(&buf, b"ok");
    ///     Ok(())
    /// }
    /// ```
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        crate::split::into_split(self)
    }

    /// Sets `TCP_NODELAY`.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{TcpListener, TcpStream};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let stream = TcpStream::connect(listener.local_addr()?).await?;
    ///     stream.set_nodelay(true)?;
    ///     assert!(stream.nodelay()?);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `TCP_NODELAY` off; the
    /// kernel's errno otherwise.
    pub fn set_nodelay(&self, nodelay: bool) -> Result<()> {
        self.set(opts::TcpNoDelay, nodelay)
    }

    /// Gets `TCP_NODELAY`. For more information, see
    /// [`set_nodelay`](TcpStream::set_nodelay).
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `TCP_NODELAY` off; the
    /// kernel's errno otherwise.
    pub fn nodelay(&self) -> Result<bool> {
        self.get(opts::TcpNoDelay)
    }

    /// Sets `SO_LINGER`. `Some(Duration::ZERO)` makes close reset the
    /// connection.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hostsock::{TcpListener, TcpStream};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let stream = TcpStream::connect(listener.local_addr()?).await?;
    ///     stream.set_linger(Some(Duration::from_secs(1)))?;
    ///     assert_eq!(stream.linger()?, Some(Duration::from_secs(1)));
    ///     stream.set_linger(None)?;
    ///     assert_eq!(stream.linger()?, None);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `SO_LINGER` off; the
    /// kernel's errno otherwise.
    pub fn set_linger(&self, dur: Option<Duration>) -> Result<()> {
        self.set(opts::Linger, dur)
    }

    /// Gets `SO_LINGER`. For more information, see
    /// [`set_linger`](TcpStream::set_linger).
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `SO_LINGER` off; the
    /// kernel's errno otherwise.
    pub fn linger(&self) -> Result<Option<Duration>> {
        self.get(opts::Linger)
    }

    /// Sets `IP_TTL` (IPv4 streams).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{TcpListener, TcpStream};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let stream = TcpStream::connect(listener.local_addr()?).await?;
    ///     stream.set_ttl(42)?;
    ///     assert_eq!(stream.ttl()?, 42);
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

    /// Gets `IP_TTL`. For more information, see [`set_ttl`](TcpStream::set_ttl).
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `IP_TTL` off; the kernel's
    /// errno otherwise.
    pub fn ttl(&self) -> Result<u32> {
        self.get(opts::IpTtl)
    }

    /// Sets the read timeout, as `SO_RCVTIMEO` would: every read, peek and
    /// `AsyncRead` poll that waits longer gives a timed-out error
    /// (`errno()` = `EAGAIN`, kind `TimedOut`). `None` waits forever;
    /// `Some(Duration::ZERO)` is `EINVAL`, as in std.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hostsock::{TcpListener, TcpStream};
    /// use tokio::io::AsyncReadExt;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let _client = TcpStream::connect(listener.local_addr()?).await?;
    ///     let (mut server, _) = listener.accept().await?;
    ///     server.set_read_timeout(Some(Duration::from_millis(20)))?;
    ///     let mut buf = [0u8; 4];
    ///     let err = server.read(&mut buf).await.unwrap_err();
    ///     assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    ///     assert_eq!(hostsock::Error::from(err).errno(), libc::EAGAIN);
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

    /// The read timeout; see [`set_read_timeout`](TcpStream::set_read_timeout).
    pub fn read_timeout(&self) -> Option<Duration> {
        self.core.timeout(Dir::Read)
    }

    /// Sets the write timeout, as `SO_SNDTIMEO` would, for every write and
    /// `AsyncWrite` poll. `None` waits forever; `Some(Duration::ZERO)` is
    /// `EINVAL`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` (errno `EINVAL`) for `Some(Duration::ZERO)`; a denial
    /// (`ENOPROTOOPT`) if the policy turns `SO_SNDTIMEO` off.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        self.core.set_timeout(Dir::Write, timeout)
    }

    /// The write timeout; see [`set_write_timeout`](TcpStream::set_write_timeout).
    pub fn write_timeout(&self) -> Option<Duration> {
        self.core.timeout(Dir::Write)
    }

    /// The policy this stream's calls are checked against.
    pub fn policy(&self) -> &Arc<Policy> {
        self.core.policy()
    }

    /// Wraps a `std::net::TcpStream`; the fd is made non-blocking and
    /// close-on-exec here, and the default policy applies.
    ///
    /// # Errors
    ///
    /// `InvalidInput` (errno `EINVAL`) if the socket is not TCP; outside a
    /// Tokio runtime, an error, not a panic.
    ///
    /// # Panics
    ///
    /// Inside a runtime built without IO enabled (tokio's own panic).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{TcpListener, TcpStream};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let std_stream = std::net::TcpStream::connect(listener.local_addr()?)?;
    ///     let stream = TcpStream::from_std(std_stream)?;
    ///     let (_server, peer) = listener.accept().await?;
    ///     assert_eq!(stream.local_addr()?, peer);
    ///     Ok(())
    /// }
    /// ```
    #[track_caller]
    pub fn from_std(stream: std::net::TcpStream) -> Result<TcpStream> {
        let sock = Socket::from(std::os::fd::OwnedFd::from(stream));
        Ok(TcpStream::from_core(Core::adopt(
            sock,
            Policy::shared_default(),
            Some(libc::SOCK_STREAM),
        )?))
    }

    /// Turns the stream into a `std::net::TcpStream`, still non-blocking
    /// (as tokio leaves it).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use hostsock::{TcpListener, TcpStream};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let client = TcpStream::connect(listener.local_addr()?).await?;
    ///     let (server, _) = listener.accept().await?;
    ///     let mut std_client = client.into_std()?;
    ///     std_client.set_nonblocking(false)?;
    ///     std_client.write_all(b"std")?;
    ///     let mut std_server = server.into_std()?;
    ///     std_server.set_nonblocking(false)?;
    ///     let mut buf = [0u8; 3];
    ///     std_server.read_exact(&mut buf)?;
    ///     assert_eq!(&buf, b"std");
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// None today; the `Result` is kept for tokio's signature.
    pub fn into_std(self) -> Result<std::net::TcpStream> {
        Ok(self.core.into_socket().into())
    }
}

crate::core::impl_fd!(TcpStream, core);
