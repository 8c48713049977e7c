//! `AsyncRead`/`AsyncWrite` for streams and their halves: one `recv` or
//! `send` per ready event, readiness cleared after a short read or write,
//! and the per-socket timeouts on a reusable timer.

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::Socket;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, Ready};

use super::TcpStream;
use crate::core::Core;
use crate::deadline::{Dir, PollTimer};
use crate::error::{Error, Op};
use crate::sys;

/// `AsyncRead` for any holder of a stream core and a timer.
pub(crate) fn poll_read(
    core: &Core,
    timer: &mut PollTimer,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    loop {
        let mut guard = match core.async_fd().poll_read_ready(cx) {
            Poll::Ready(g) => g?,
            Poll::Pending => {
                return timed_out_or_pending(timer, cx, core.timeout(Dir::Read), Op::Recv);
            }
        };
        let wanted = buf.remaining();
        match guard.try_io(|fd| sys::recv_buf(fd.get_ref(), buf, 0)) {
            Ok(Ok(n)) => {
                // A short read drained the socket: clear readiness so the
                // next read waits instead of paying an EAGAIN syscall.
                if n > 0 && n < wanted {
                    guard.clear_ready_matching(Ready::READABLE);
                }
                timer.disarm();
                return Poll::Ready(Ok(()));
            }
            Ok(Err(e)) => {
                timer.disarm();
                return Poll::Ready(Err(e));
            }
            Err(_would_block) => continue,
        }
    }
}

/// `AsyncWrite::poll_write`/`poll_write_vectored` for any holder of a
/// stream core and a timer; `send` is one `send`/`sendmsg` call.
pub(crate) fn poll_write(
    core: &Core,
    timer: &mut PollTimer,
    cx: &mut Context<'_>,
    len: usize,
    mut send: impl FnMut(&Socket) -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        let mut guard = match core.async_fd().poll_write_ready(cx) {
            Poll::Ready(g) => g?,
            Poll::Pending => {
                return timed_out_or_pending(timer, cx, core.timeout(Dir::Write), Op::Send);
            }
        };
        match guard.try_io(|fd| send(fd.get_ref())) {
            Ok(Ok(n)) => {
                if n > 0 && n < len {
                    guard.clear_ready_matching(Ready::WRITABLE);
                }
                timer.disarm();
                return Poll::Ready(Ok(n));
            }
            Ok(Err(e)) => {
                timer.disarm();
                return Poll::Ready(Err(e));
            }
            Err(_would_block) => continue,
        }
    }
}

fn timed_out_or_pending<T>(
    timer: &mut PollTimer,
    cx: &mut Context<'_>,
    timeout: Option<Duration>,
    op: Op,
) -> Poll<io::Result<T>> {
    match timer.poll_expired(cx, timeout) {
        Poll::Ready(()) => Poll::Ready(Err(Error::timed_out(op).into())),
        Poll::Pending => Poll::Pending,
    }
}

pub(crate) fn send_one<'a>(buf: &'a [u8]) -> impl FnMut(&Socket) -> io::Result<usize> + 'a {
    move |s| crate::sys::send(s, buf, 0)
}

pub(crate) fn send_vectored<'a>(
    bufs: &'a [IoSlice<'a>],
) -> impl FnMut(&Socket) -> io::Result<usize> + 'a {
    move |s| s.send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
}

pub(crate) fn vectored_len(bufs: &[IoSlice<'_>]) -> usize {
    bufs.iter().map(|b| b.len()).sum()
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        poll_read(&this.core, &mut this.read_timer, cx, buf)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        poll_write(
            &this.core,
            &mut this.write_timer,
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
        poll_write(
            &this.core,
            &mut this.write_timer,
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
        Poll::Ready(self.core.shutdown(Shutdown::Write).map_err(io::Error::from))
    }
}
