//! `UdpSocket` receives into `bytes::BufMut` (no zeroing), peeks at the
//! next datagram or its sender, and tokio's readiness and custom-I/O hooks.

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::BufMut;
use tokio::io::{Interest, ReadBuf};
use tokio::time::Instant;

use super::{RECV_INTEREST, UdpSocket};
use crate::core::to_inet;
use crate::deadline::Dir;
use crate::error::{Op, Result};
use crate::sys;

/// The source a `recvfrom` reported, as an INET address.
fn source(from: Option<socket2::SockAddr>) -> io::Result<SocketAddr> {
    let from = from.ok_or_else(|| io::Error::from_raw_os_error(libc::ENOTCONN))?;
    to_inet(from).map_err(io::Error::from)
}

impl UdpSocket {
    /// Receives one datagram from the connected peer into the spare
    /// capacity of `buf`, without zeroing it first, and advances `buf` by
    /// the bytes received. Returns the datagram's length.
    ///
    /// Only `buf.chunk_mut()` is offered to the kernel: reserve room for the
    /// largest datagram first (a full `Vec`/`BytesMut` offers just 64
    /// bytes). Bytes past that room are discarded, as with [`recv`](UdpSocket::recv).
    ///
    /// # Errors
    ///
    /// As [`recv`](UdpSocket::recv): a pending error such as `ECONNREFUSED`
    /// ends the wait; the read timeout gives [`Error::TimedOut`](crate::Error::TimedOut).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: if it loses a `select!`, no datagram was
    /// taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let a = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let b = UdpSocket::bind("127.0.0.1:0").await?;
    ///     b.connect(a.local_addr()?).await?;
    ///     a.send_to(b"hello", b.local_addr()?).await?;
    ///     let mut buf = BytesMut::with_capacity(1500);
    ///     let n = b.recv_buf(&mut buf).await?;
    ///     assert_eq!((n, &buf[..]), (5, &b"hello"[..]));
    ///     Ok(())
    /// }
    /// ```
    pub async fn recv_buf<B: BufMut>(&self, buf: &mut B) -> Result<usize> {
        self.recv_buf_from_deadline(buf, None).await.map(|(n, _)| n)
    }

    /// Receives one datagram and its source into the spare capacity of
    /// `buf`, without zeroing it; see [`recv_buf`](UdpSocket::recv_buf).
    ///
    /// # Errors
    ///
    /// As [`recv_from`](UdpSocket::recv_from).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
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
    ///     a.send_to(b"hi", b.local_addr()?).await?;
    ///     let mut buf = Vec::with_capacity(64);
    ///     let (n, from) = b.recv_buf_from(&mut buf).await?;
    ///     assert_eq!((n, buf.as_slice(), from), (2, &b"hi"[..], a.local_addr()?));
    ///     Ok(())
    /// }
    /// ```
    pub async fn recv_buf_from<B: BufMut>(&self, buf: &mut B) -> Result<(usize, SocketAddr)> {
        self.recv_buf_from_deadline(buf, None).await
    }

    /// [`recv_buf_from`](UdpSocket::recv_buf_from) that gives up at
    /// `deadline` with [`Error::TimedOut`](crate::Error::TimedOut).
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
    pub async fn recv_buf_from_deadline<B: BufMut>(
        &self,
        buf: &mut B,
        deadline: impl Into<Option<Instant>>,
    ) -> Result<(usize, SocketAddr)> {
        let core = self.core();
        core.io(
            RECV_INTEREST,
            Dir::Read,
            Op::Recv,
            deadline.into(),
            |s| match core.eof_if_shut(sys::recv_into_buf_mut(s, buf, 0).map(Some), || None)? {
                Some((n, from)) => Ok((n, source(from)?)),
                None => Ok((0, core.peer_addr().map_err(io::Error::from)?)),
            },
        )
        .await
    }

    /// Receives a queued datagram into `buf`'s spare capacity, or `EAGAIN`
    /// at once; see [`recv_buf`](UdpSocket::recv_buf).
    ///
    /// # Errors
    ///
    /// `WouldBlock` (errno `EAGAIN`) when nothing is queued.
    pub fn try_recv_buf<B: BufMut>(&self, buf: &mut B) -> Result<usize> {
        self.try_recv_buf_from(buf).map(|(n, _)| n)
    }

    /// Receives a queued datagram and its source into `buf`'s spare
    /// capacity, or `EAGAIN` at once.
    ///
    /// # Errors
    ///
    /// `WouldBlock` (errno `EAGAIN`) when nothing is queued.
    pub fn try_recv_buf_from<B: BufMut>(&self, buf: &mut B) -> Result<(usize, SocketAddr)> {
        let core = self.core();
        core.try_recv_io(
            RECV_INTEREST,
            |s| {
                let (n, from) = sys::recv_into_buf_mut(s, buf, 0)?;
                Ok((n, source(from)?))
            },
            || Ok((0, core.peer_addr().map_err(io::Error::from)?)),
        )
    }

    /// Reads the next datagram from the connected peer without taking it
    /// off the queue (`MSG_PEEK`).
    ///
    /// # Errors
    ///
    /// As [`recv_from`](UdpSocket::recv_from).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
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
    ///     b.connect(a.local_addr()?).await?;
    ///     a.send_to(b"twice", b.local_addr()?).await?;
    ///     let mut buf = [0u8; 8];
    ///     assert_eq!(b.peek(&mut buf).await?, 5);
    ///     assert_eq!(b.recv(&mut buf).await?, 5);
    ///     Ok(())
    /// }
    /// ```
    pub async fn peek(&self, buf: &mut [u8]) -> Result<usize> {
        self.peek_from(buf).await.map(|(n, _)| n)
    }

    /// Peeks at a queued datagram, or `EAGAIN` at once.
    ///
    /// # Errors
    ///
    /// `WouldBlock` (errno `EAGAIN`) when nothing is queued.
    pub fn try_peek(&self, buf: &mut [u8]) -> Result<usize> {
        self.try_peek_from(buf).map(|(n, _)| n)
    }

    /// Polls to peek at the next datagram (into `buf`'s unfilled part,
    /// without zeroing it); wakes on errors too.
    ///
    /// # Errors
    ///
    /// The errors of [`peek`](UdpSocket::peek), as `io::Error`s: a kernel errno
    /// stays in `raw_os_error()`, and [`Error::from`](crate::Error::from) gives
    /// a denial back. No timeout applies: a poll function keeps no timer.
    pub fn poll_peek(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.poll_peek_from(cx, buf).map_ok(drop)
    }

    /// The source of the next datagram, without taking it off the queue
    /// or copying any of it.
    ///
    /// # Errors
    ///
    /// As [`recv_from`](UdpSocket::recv_from).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
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
    ///     a.send_to(b"x", b.local_addr()?).await?;
    ///     assert_eq!(b.peek_sender().await?, a.local_addr()?);
    ///     Ok(())
    /// }
    /// ```
    pub async fn peek_sender(&self) -> Result<SocketAddr> {
        self.peek_from(&mut []).await.map(|(_, from)| from)
    }

    /// The source of a queued datagram, or `EAGAIN` at once.
    ///
    /// # Errors
    ///
    /// `WouldBlock` (errno `EAGAIN`) when nothing is queued.
    pub fn try_peek_sender(&self) -> Result<SocketAddr> {
        self.try_peek_from(&mut []).map(|(_, from)| from)
    }

    /// Polls for the source of the next datagram; wakes on errors too.
    ///
    /// # Errors
    ///
    /// The errors of [`peek_sender`](UdpSocket::peek_sender), as `io::Error`s:
    /// a kernel errno stays in `raw_os_error()`, and
    /// [`Error::from`](crate::Error::from) gives a denial back. No timeout
    /// applies: a poll function keeps no timer.
    pub fn poll_peek_sender(&self, cx: &mut Context<'_>) -> Poll<io::Result<SocketAddr>> {
        self.poll_peek_from(cx, &mut ReadBuf::new(&mut []))
    }

    /// Polls until a datagram may be queued or an error is pending. As
    /// with tokio, a spurious wake-up is possible: the next receive may
    /// still give `WouldBlock`.
    ///
    /// # Errors
    ///
    /// Only tokio's error when the runtime is shutting down, or the OS's errno
    /// if the error-watching duplicate fd (see
    /// [`poll_recv`](UdpSocket::poll_recv)) cannot be made (`EMFILE`, ...).
    pub fn poll_recv_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_recv_io(cx, |_| Ok(()))
    }

    /// Polls until the socket may be writable.
    ///
    /// # Errors
    ///
    /// Only tokio's error when the runtime is shutting down.
    pub fn poll_send_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.core().async_fd().poll_write_ready(cx).map_ok(drop)
    }

    /// Runs `f` (an I/O call of the caller's own on this socket's fd) if the
    /// socket may be ready for `interest`; `WouldBlock` from `f` clears the
    /// readiness, as tokio's `try_io`. The policy does not see what `f`
    /// does: it is for calls the caller vouches for.
    ///
    /// # Errors
    ///
    /// `WouldBlock` if the socket is not ready, or `f`'s own error.
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
    ///     a.send_to(b"raw", b.local_addr()?).await?;
    ///     b.readable().await?;
    ///     // A call hostsock does not wrap, made through socket2 on the same fd.
    ///     let from = b.try_io(Interest::READABLE, || socket2::SockRef::from(&b).peek_sender())?;
    ///     assert_eq!(from.as_socket(), Some(a.local_addr()?));
    ///     Ok(())
    /// }
    /// ```
    pub fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> Result<R> {
        self.core().try_io(interest, |_| f())
    }

    /// Waits until the socket is ready for `interest` and runs `f`, again
    /// after each `WouldBlock`, as tokio's `async_io`. The read or write
    /// timeout (by `interest`) applies. The policy does not see what `f`
    /// does.
    ///
    /// # Errors
    ///
    /// `f`'s error, or [`Error::TimedOut`](crate::Error::TimedOut).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{Interest, UdpSocket};
    /// use socket2::SockRef;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let a = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let b = UdpSocket::bind("127.0.0.1:0").await?;
    ///     a.send_to(b"raw", b.local_addr()?).await?;
    ///     // Waits for readiness, then runs the caller's own call.
    ///     let from = b
    ///         .async_io(Interest::READABLE, || SockRef::from(&b).peek_sender())
    ///         .await?;
    ///     assert_eq!(from.as_socket(), Some(a.local_addr()?));
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// As cancel safe as `f`: the wait itself loses nothing.
    pub async fn async_io<R>(
        &self,
        interest: Interest,
        f: impl FnMut() -> io::Result<R>,
    ) -> Result<R> {
        self.core().user_io(interest, f).await
    }
}
