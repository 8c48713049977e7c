//! The receive machinery behind `UdpSocket`'s poll forms, and the address
//! checks of its sends.

use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use socket2::Socket;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::UdpSocket;
use crate::core::{Core, to_inet};
use crate::error::{Op, Result};
use crate::policy::AddrUse;
use crate::sys;

impl UdpSocket {
    pub(crate) fn from_core(core: Core) -> UdpSocket {
        UdpSocket {
            core,
            error_watch: OnceLock::new(),
            gso_off: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn error_watch(&self) -> io::Result<&AsyncFd<Socket>> {
        if let Some(w) = self.error_watch.get() {
            return Ok(w);
        }
        let dup = self.core.sock().try_clone()?;
        let watch = crate::sys::register_with(dup, Interest::PRIORITY)?;
        // Another thread may have set it first; then ours is dropped.
        Ok(self.error_watch.get_or_init(|| watch))
    }

    /// The poll functions' receive: waits for a datagram *or* a pending
    /// error, like the async forms.
    pub(super) fn poll_recv_io<R>(
        &self,
        cx: &mut Context<'_>,
        mut f: impl FnMut(&Socket) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            match self.core.async_fd().poll_read_ready(cx) {
                Poll::Ready(Ok(mut guard)) => match guard.try_io(|fd| f(fd.get_ref())) {
                    Ok(r) => return Poll::Ready(r),
                    Err(_would_block) => continue,
                },
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
            let watch = match self.error_watch() {
                Ok(w) => w,
                Err(e) => return Poll::Ready(Err(e)),
            };
            match watch.poll_write_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(mut guard)) => match f(self.core.sock()) {
                    // A stale error wake-up: forget it and wait again.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                    r => return Poll::Ready(r),
                },
            }
        }
    }

    pub(crate) fn into_core(self) -> Core {
        self.core
    }

    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    /// Checks a use of `addr` against the policy's address rules.
    pub(super) fn check(&self, usage: AddrUse, op: Op, addr: SocketAddr) -> Result<()> {
        self.core
            .policy()
            .check_addr(self.core.raw_fd(), op, usage, addr)
            .map_err(Into::into)
    }
}

pub(super) fn recv_from_inet(
    s: &Socket,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<(usize, SocketAddr)> {
    let (n, from) = sys::recv_from(s, buf, flags)?;
    Ok((n, to_inet(from).map_err(io::Error::from)?))
}
