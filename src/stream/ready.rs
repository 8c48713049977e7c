//! `TcpStream`'s readiness polls, receives into `bytes::BufMut`, custom
//! I/O hooks (tokio's `try_io`/`async_io`) and the remaining tokio-named
//! options.

use std::io;
use std::task::{Context, Poll};

use bytes::BufMut;
use tokio::io::Interest;

use super::TcpStream;
use crate::error::Result;
use crate::{opts, sys};

impl TcpStream {
    /// Polls until the stream may be readable. A spurious wake-up is
    /// possible, as with tokio: the next read may still give `WouldBlock`.
    ///
    /// # Errors
    ///
    /// Only tokio's error when the runtime is shutting down.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.core().async_fd().poll_read_ready(cx).map_ok(drop)
    }

    /// Polls until the stream may be writable.
    ///
    /// # Errors
    ///
    /// Only tokio's error when the runtime is shutting down.
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.core().async_fd().poll_write_ready(cx).map_ok(drop)
    }

    /// Reads what is queued into the spare capacity of `buf` without
    /// zeroing it, and advances `buf`; `Ok(0)` is end of stream (or a
    /// `buf` with no spare capacity). As tokio's `try_read_buf`.
    ///
    /// # Errors
    ///
    /// `WouldBlock` (errno `EAGAIN`) when nothing is queued; the kernel's
    /// errno (`ECONNRESET`, …) otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{TcpListener, TcpStream};
    /// use tokio::io::AsyncWriteExt;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let mut client = TcpStream::connect(listener.local_addr()?).await?;
    ///     let (server, _) = listener.accept().await?;
    ///     client.write_all(b"bytes").await?;
    ///     let mut buf = Vec::with_capacity(64);
    ///     while buf.len() < 5 {
    ///         server.readable().await?;
    ///         match server.try_read_buf(&mut buf) {
    ///             Ok(_) => {}
    ///             Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
    ///             Err(e) => return Err(e),
    ///         }
    ///     }
    ///     assert_eq!(buf, b"bytes");
    ///     Ok(())
    /// }
    /// ```
    pub fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> Result<usize> {
        self.core().try_io(Interest::READABLE, |s| {
            sys::recv_into_buf_mut(s, buf, 0).map(|(n, _)| n)
        })
    }

    /// Runs `f` (an I/O call of the caller's own on this stream's fd) if
    /// the stream may be ready for `interest`; `WouldBlock` from `f` clears
    /// the readiness, as tokio's `try_io`. The policy does not see what `f`
    /// does: it is for calls the caller vouches for.
    ///
    /// # Errors
    ///
    /// `WouldBlock` if the stream is not ready, or `f`'s own error.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{Interest, TcpListener, TcpStream};
    /// use socket2::SockRef;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let client = TcpStream::connect(listener.local_addr()?).await?;
    ///     client.writable().await?;
    ///     let n = client.try_io(Interest::WRITABLE, || SockRef::from(&client).send(b"hi"))?;
    ///     assert_eq!(n, 2);
    ///     Ok(())
    /// }
    /// ```
    pub fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> Result<R> {
        self.core().try_io(interest, |_| f())
    }

    /// Waits until the stream is ready for `interest` and runs `f`, again
    /// after each `WouldBlock`, as tokio's `async_io`; the read or write
    /// timeout (by `interest`) applies.
    ///
    /// # Errors
    ///
    /// `f`'s error, or [`Error::TimedOut`](crate::Error::TimedOut).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{Interest, TcpListener, TcpStream};
    /// use socket2::SockRef;
    /// use tokio::io::AsyncWriteExt;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let mut client = TcpStream::connect(listener.local_addr()?).await?;
    ///     let (server, _) = listener.accept().await?;
    ///     client.write_all(b"data").await?;
    ///     // A call hostsock does not wrap, made through socket2 on the same fd.
    ///     let mut buf = [std::mem::MaybeUninit::new(0u8); 8];
    ///     let n = server
    ///         .async_io(Interest::READABLE, || SockRef::from(&server).recv(&mut buf))
    ///         .await?;
    ///     assert_eq!(n, 4);
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

    /// Sets `TCP_QUICKACK` (acknowledge at once rather than delay; Linux
    /// may turn it off again by itself, see tcp(7)).
    ///
    /// # Errors
    ///
    /// A denial when the policy turns the option off.
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
    ///     stream.set_quickack(true)?;
    ///     let _maybe = stream.quickack()?; // Linux may have turned it off already
    ///     Ok(())
    /// }
    /// ```
    pub fn set_quickack(&self, quickack: bool) -> Result<()> {
        self.set(opts::TcpQuickAck, quickack)
    }

    /// Gets `TCP_QUICKACK`.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `TCP_QUICKACK` off; the
    /// kernel's errno otherwise.
    pub fn quickack(&self) -> Result<bool> {
        self.get(opts::TcpQuickAck)
    }

    /// Makes close reset the connection (`SO_LINGER` with a zero timeout),
    /// as tokio's `set_zero_linger`.
    ///
    /// # Errors
    ///
    /// A denial when the policy turns `SO_LINGER` off.
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
    ///     stream.set_zero_linger()?;
    ///     assert_eq!(stream.linger()?, Some(Duration::ZERO));
    ///     Ok(())
    /// }
    /// ```
    pub fn set_zero_linger(&self) -> Result<()> {
        self.set(opts::Linger, Some(std::time::Duration::ZERO))
    }
}
