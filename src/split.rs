//! Read and write halves of a `TcpStream`: borrowed (`split`) and owned
//! (`into_split`). Each half keeps its own timeout timer, so a read timeout
//! on one task never disturbs a write on another.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf, Ready};

use crate::deadline::PollTimer;
use crate::error::Result;
use crate::stream::{self, TcpStream, send_one, send_vectored, vectored_len};

/// The read half of a borrowed split; see [`TcpStream::split`].
#[derive(Debug)]
pub struct ReadHalf<'a> {
    stream: &'a TcpStream,
    timer: PollTimer,
}

/// The write half of a borrowed split; see [`TcpStream::split`].
#[derive(Debug)]
pub struct WriteHalf<'a> {
    stream: &'a TcpStream,
    timer: PollTimer,
}

/// The owned read half; see [`TcpStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    stream: Arc<TcpStream>,
    timer: PollTimer,
}

/// The owned write half; see [`TcpStream::into_split`]. Dropping it shuts
/// the write direction down (the peer reads end of stream), unless it was
/// [`forget`](OwnedWriteHalf::forget)-ed.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    stream: Arc<TcpStream>,
    timer: PollTimer,
    shutdown_on_drop: bool,
}

/// The error from [`reunite`](OwnedReadHalf::reunite) when the two halves
/// came from different streams; it gives both back.
#[derive(Debug)]
pub struct ReuniteError(pub OwnedReadHalf, pub OwnedWriteHalf);

impl std::fmt::Display for ReuniteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tried to reunite halves that are not from the same socket")
    }
}

impl std::error::Error for ReuniteError {}

pub(crate) fn split(stream: &mut TcpStream) -> (ReadHalf<'_>, WriteHalf<'_>) {
    let stream = &*stream;
    (
        ReadHalf {
            stream,
            timer: PollTimer::default(),
        },
        WriteHalf {
            stream,
            timer: PollTimer::default(),
        },
    )
}

pub(crate) fn into_split(stream: TcpStream) -> (OwnedReadHalf, OwnedWriteHalf) {
    let stream = Arc::new(stream);
    (
        OwnedReadHalf {
            stream: stream.clone(),
            timer: PollTimer::default(),
        },
        OwnedWriteHalf {
            stream,
            timer: PollTimer::default(),
            shutdown_on_drop: true,
        },
    )
}

impl ReadHalf<'_> {
    /// The remote address of the stream.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::peer_addr`]: `ENOTCONN` once the connection is gone.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// The local address of the stream.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::local_addr`].
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// See [`TcpStream::peek`].
    ///
    /// # Errors
    ///
    /// As [`TcpStream::peek`].
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn peek(&self, buf: &mut [u8]) -> Result<usize> {
        self.stream.peek(buf).await
    }
}

impl WriteHalf<'_> {
    /// The remote address of the stream.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::peer_addr`]: `ENOTCONN` once the connection is gone.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// The local address of the stream.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::local_addr`].
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.stream.local_addr()
    }
}

impl OwnedReadHalf {
    /// Puts the two halves back together; they must come from the same
    /// `into_split`.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{TcpListener, TcpStream};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let a = TcpStream::connect(listener.local_addr()?).await?;
    ///     let b = TcpStream::connect(listener.local_addr()?).await?;
    ///     let (a_rd, a_wr) = a.into_split();
    ///     let (b_rd, b_wr) = b.into_split();
    ///     // Halves of different streams are refused, and given back.
    ///     let err = a_rd.reunite(b_wr).unwrap_err();
    ///     let (a_rd, b_wr) = (err.0, err.1);
    ///     let a = a_rd.reunite(a_wr).expect("same stream");
    ///     let _b = b_rd.reunite(b_wr).expect("same stream");
    ///     assert!(a.peer_addr().is_ok());
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ReuniteError`], holding both halves, if they came from different
    /// streams.
    pub fn reunite(self, other: OwnedWriteHalf) -> std::result::Result<TcpStream, ReuniteError> {
        reunite(self, other)
    }

    /// The remote address of the stream.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::peer_addr`]: `ENOTCONN` once the connection is gone.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// The local address of the stream.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::local_addr`].
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// See [`TcpStream::peek`].
    ///
    /// # Errors
    ///
    /// As [`TcpStream::peek`].
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn peek(&self, buf: &mut [u8]) -> Result<usize> {
        self.stream.peek(buf).await
    }

    /// The whole stream, for its other methods (options, readiness).
    pub fn as_stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl OwnedWriteHalf {
    /// Puts the two halves back together; see [`OwnedReadHalf::reunite`].
    ///
    /// # Errors
    ///
    /// As [`OwnedReadHalf::reunite`].
    pub fn reunite(self, other: OwnedReadHalf) -> std::result::Result<TcpStream, ReuniteError> {
        reunite(other, self)
    }

    /// Drops the half without shutting the write direction down.
    pub fn forget(mut self) {
        self.shutdown_on_drop = false;
    }

    /// The remote address of the stream.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::peer_addr`]: `ENOTCONN` once the connection is gone.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// The local address of the stream.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::local_addr`].
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// The whole stream, for its other methods (options, readiness).
    pub fn as_stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        if self.shutdown_on_drop {
            // Errors are ignored, as in tokio: the peer may be gone already.
            let _ = self.stream.core().shutdown(Shutdown::Write);
        }
    }
}

fn reunite(
    read: OwnedReadHalf,
    mut write: OwnedWriteHalf,
) -> std::result::Result<TcpStream, ReuniteError> {
    if !Arc::ptr_eq(&read.stream, &write.stream) {
        return Err(ReuniteError(read, write));
    }
    write.shutdown_on_drop = false;
    let OwnedReadHalf { stream, timer } = read;
    drop(write);
    // The halves are the only holders of the `Arc` (it is never handed out),
    // so this succeeds; were it ever shared, both halves come back intact.
    Arc::try_unwrap(stream).map_err(|shared| {
        ReuniteError(
            OwnedReadHalf {
                stream: shared.clone(),
                timer,
            },
            OwnedWriteHalf {
                stream: shared,
                timer: PollTimer::default(),
                shutdown_on_drop: true,
            },
        )
    })
}

macro_rules! read_impl {
    ($ty:ty) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                let this = self.get_mut();
                stream::poll_read(this.stream.core(), &mut this.timer, cx, buf)
            }
        }
    };
}

macro_rules! write_impl {
    ($ty:ty) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let this = self.get_mut();
                stream::poll_write(
                    this.stream.core(),
                    &mut this.timer,
                    cx,
                    buf.len(),
                    send_one(buf),
                )
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                let this = self.get_mut();
                stream::poll_write(
                    this.stream.core(),
                    &mut this.timer,
                    cx,
                    vectored_len(bufs),
                    send_vectored(bufs),
                )
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }

            fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(
                    self.stream
                        .core()
                        .shutdown(Shutdown::Write)
                        .map_err(io::Error::from),
                )
            }
        }
    };
}

/// The readiness and non-blocking methods of a read half, each the
/// stream's own.
macro_rules! read_methods {
    ($ty:ty) => {
        impl $ty {
            /// Waits until the stream may be readable; see
            /// [`TcpStream::readable`].
            ///
            /// # Errors
            ///
            /// Only tokio's error when the runtime is shutting down.
            ///
            /// # Cancel safety
            ///
            /// This method is cancel safe.
            pub async fn readable(&self) -> Result<()> {
                self.stream.readable().await
            }

            /// Waits for any of `interest` (only the read side's readiness
            /// is meaningful here); see [`TcpStream::ready`].
            ///
            /// # Errors
            ///
            /// Only tokio's error when the runtime is shutting down.
            ///
            /// # Cancel safety
            ///
            /// This method is cancel safe.
            pub async fn ready(&self, interest: Interest) -> Result<Ready> {
                self.stream.ready(interest).await
            }

            /// See [`TcpStream::try_read`].
            ///
            /// # Errors
            ///
            /// `WouldBlock` (errno `EAGAIN`) when nothing is queued; the kernel's
            /// errno otherwise.
            pub fn try_read(&self, buf: &mut [u8]) -> Result<usize> {
                self.stream.try_read(buf)
            }

            /// See [`TcpStream::try_read_vectored`].
            ///
            /// # Errors
            ///
            /// `WouldBlock` (errno `EAGAIN`) when nothing is queued; the kernel's
            /// errno otherwise.
            pub fn try_read_vectored(&self, bufs: &mut [IoSliceMut<'_>]) -> Result<usize> {
                self.stream.try_read_vectored(bufs)
            }

            /// See [`TcpStream::try_read_buf`].
            ///
            /// # Errors
            ///
            /// `WouldBlock` (errno `EAGAIN`) when nothing is queued; the kernel's
            /// errno otherwise.
            pub fn try_read_buf<B: bytes::BufMut>(&self, buf: &mut B) -> Result<usize> {
                self.stream.try_read_buf(buf)
            }

            /// See [`TcpStream::poll_peek`].
            ///
            /// # Errors
            ///
            /// The errors of [`TcpStream::peek`], as `io::Error`s: a kernel
            /// errno stays in `raw_os_error()`, and
            /// [`Error::from`](crate::Error::from) gives a denial back. No
            /// timeout applies: a poll function keeps no timer.
            pub fn poll_peek(
                &mut self,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<usize>> {
                self.stream.poll_peek(cx, buf)
            }
        }
    };
}

/// The readiness and non-blocking methods of a write half.
macro_rules! write_methods {
    ($ty:ty) => {
        impl $ty {
            /// Waits until the stream may be writable; see
            /// [`TcpStream::writable`].
            ///
            /// # Errors
            ///
            /// Only tokio's error when the runtime is shutting down.
            ///
            /// # Cancel safety
            ///
            /// This method is cancel safe.
            pub async fn writable(&self) -> Result<()> {
                self.stream.writable().await
            }

            /// Waits for any of `interest` (only the write side's readiness
            /// is meaningful here); see [`TcpStream::ready`].
            ///
            /// # Errors
            ///
            /// Only tokio's error when the runtime is shutting down.
            ///
            /// # Cancel safety
            ///
            /// This method is cancel safe.
            pub async fn ready(&self, interest: Interest) -> Result<Ready> {
                self.stream.ready(interest).await
            }

            /// See [`TcpStream::try_write`].
            ///
            /// # Errors
            ///
            /// `WouldBlock` (errno `EAGAIN`) when the send buffer is full; the
            /// kernel's errno otherwise (`EPIPE`, `ECONNRESET`, ...).
            pub fn try_write(&self, buf: &[u8]) -> Result<usize> {
                self.stream.try_write(buf)
            }

            /// See [`TcpStream::try_write_vectored`].
            ///
            /// # Errors
            ///
            /// `WouldBlock` (errno `EAGAIN`) when the send buffer is full; the
            /// kernel's errno otherwise (`EPIPE`, `ECONNRESET`, ...).
            pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> Result<usize> {
                self.stream.try_write_vectored(bufs)
            }
        }
    };
}

read_methods!(ReadHalf<'_>);
read_methods!(OwnedReadHalf);
write_methods!(WriteHalf<'_>);
write_methods!(OwnedWriteHalf);

read_impl!(ReadHalf<'_>);
read_impl!(OwnedReadHalf);
write_impl!(WriteHalf<'_>);
write_impl!(OwnedWriteHalf);
