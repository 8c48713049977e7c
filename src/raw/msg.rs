//! The raw layer's messages: `recvmsg`/`sendmsg` and the
//! read/write/readv/writev/recvfrom/sendto forms built on them.
//!
//! As SPEC.md says: flags outside the policy's masks are `EINVAL`; more
//! than 1024 buffers `EMSGSIZE`; a guest control buffer over 10 MiB
//! `ENOBUFS`, and at most 1024 bytes of control buffer reach the host; a
//! guest's control messages are parsed into the typed form and written
//! anew (never passed through as bytes), receive-only types `EINVAL`, a
//! PKTINFO source checked against the address rules; `MSG_NOSIGNAL` is
//! always used towards the host, and `EPIPE` comes with a "raise SIGPIPE"
//! hint when the guest did not ask for `MSG_NOSIGNAL`. Zero-length sends
//! and empty-buffer receives reach the host.

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;

use socket2::Socket;
use tokio::io::Interest;
use tokio::time::Instant;

use super::sockaddr::{self, SockaddrBytes};
use super::{Errno, RawSocket, errno, is_tcp};
use crate::cmsg::{CmsgBuf, filter_received, parse_guest_send};
use crate::core::Core;
use crate::deadline::Dir;
use crate::error::Op;
use crate::policy::{AddrUse, CONTROL_MAX};
use crate::sys;

/// The most buffers one call may carry (`UIO_MAXIOV`).
pub const MAX_IOVECS: usize = 1024;
/// The largest guest control buffer accepted.
pub const MAX_GUEST_CONTROL: usize = 10 << 20;

/// What [`RawSocket::recvmsg`] received: the return value, `msg_flags`,
/// the source address bytes and the control bytes, as the guest sees them.
#[derive(Clone)]
pub struct RawRecv {
    /// The return value (with `MSG_TRUNC` on a datagram socket, the real
    /// length).
    pub len: usize,
    /// `msg_flags`: the host's, plus `MSG_CTRUNC` if the policy dropped a
    /// control message.
    pub flags: i32,
    addr: SockaddrBytes,
    control: [u8; CONTROL_MAX],
    control_len: usize,
}

impl RawRecv {
    fn empty() -> RawRecv {
        RawRecv {
            len: 0,
            flags: 0,
            addr: SockaddrBytes::from_bytes(&[]),
            control: [0; CONTROL_MAX],
            control_len: 0,
        }
    }

    /// The source address bytes (empty when not asked for, or on a stream).
    pub fn addr(&self) -> &[u8] {
        self.addr.as_bytes()
    }

    /// The control bytes (`msg_controllen` of them).
    pub fn control(&self) -> &[u8] {
        self.control.get(..self.control_len).unwrap_or_default()
    }
}

impl std::fmt::Debug for RawRecv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRecv")
            .field("len", &self.len)
            .field("flags", &self.flags)
            .field("addr", &self.addr)
            .field("control_len", &self.control_len)
            .finish()
    }
}

/// A failed send: the errno, and whether the guest should also get
/// `SIGPIPE` (`EPIPE` on a call without `MSG_NOSIGNAL`; the host process
/// itself never gets one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendError {
    /// The errno the guest sees.
    pub errno: Errno,
    /// Raise `SIGPIPE` in the guest.
    pub raise_sigpipe: bool,
}

impl From<Errno> for SendError {
    fn from(errno: Errno) -> SendError {
        SendError {
            errno,
            raise_sigpipe: false,
        }
    }
}

impl From<SendError> for Errno {
    fn from(e: SendError) -> Errno {
        e.errno
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.errno)?;
        if self.raise_sigpipe {
            f.write_str(" (raise SIGPIPE)")?;
        }
        Ok(())
    }
}

impl std::error::Error for SendError {}

impl RawSocket {
    pub(super) fn recv_interest(&self) -> Interest {
        if is_tcp(self.kind()) {
            Interest::READABLE
        } else {
            crate::dgram::RECV_INTEREST
        }
    }

    /// `recvmsg(2)`: into `bufs`; the source address if `want_addr`; at
    /// most `control_len` bytes of control messages (the guest's buffer
    /// size; the host gets at most 1024, so it truncates exactly where
    /// Linux would for a buffer that size and sets `MSG_CTRUNC`). Waits
    /// unless the socket is non-blocking (the guest's view), `flags` has
    /// `MSG_DONTWAIT`, or `MSG_ERRQUEUE` (never waits). `MSG_WAITALL` on a
    /// stream loops until the buffers are full, end of stream, an error or
    /// the receive timeout (bytes already received are returned).
    ///
    /// # Errors
    ///
    /// Refused before the host is called:
    ///
    /// * `EINVAL` for `flags` outside the policy's receive mask (the audit
    ///   hook sees it);
    /// * `EMSGSIZE` for more than [`MAX_IOVECS`] buffers;
    /// * `ENOBUFS` for a `control_len` over [`MAX_GUEST_CONTROL`].
    ///
    /// `EBADF` if an earlier renewal of the registration failed. From the
    /// facade: `EAGAIN` when a blocking receive's wait outlasts
    /// `SO_RCVTIMEO`. Everything else is the host kernel's errno,
    /// unchanged: `EAGAIN` when the call may not wait and nothing is queued
    /// (after `SHUT_RD` too), `ENOTCONN`, `ECONNRESET`, a pending ICMP
    /// error such as `ECONNREFUSED` on a connected datagram socket, ... A
    /// `MSG_WAITALL` receive on a stream that already has bytes returns
    /// them instead of a later error or timeout.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, except a `MSG_WAITALL` receive that already has bytes.
    pub async fn recvmsg(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        flags: i32,
        want_addr: bool,
        control_len: usize,
    ) -> Result<RawRecv, Errno> {
        self.recvmsg_deadline(bufs, flags, want_addr, control_len, None)
            .await
    }

    /// [`recvmsg`](RawSocket::recvmsg) with a deadline for the blocking
    /// wait (the earlier of it and the receive timeout; expiry `EAGAIN`).
    ///
    /// # Errors
    ///
    /// As [`recvmsg`](RawSocket::recvmsg); the deadline passing first gives
    /// the same `EAGAIN` as the receive timeout.
    ///
    /// # Cancel safety
    ///
    /// As [`recvmsg`](RawSocket::recvmsg).
    pub async fn recvmsg_deadline(
        &self,
        mut bufs: &mut [IoSliceMut<'_>],
        flags: i32,
        want_addr: bool,
        control_len: usize,
        deadline: Option<Instant>,
    ) -> Result<RawRecv, Errno> {
        self.check_flags(Op::Recv, flags, self.policy().recv_flags())?;
        if bufs.len() > MAX_IOVECS {
            return Err(Errno::EMSGSIZE);
        }
        if control_len > MAX_GUEST_CONTROL {
            return Err(Errno::ENOBUFS);
        }
        let core = self.core()?;
        let cap = control_len.min(self.policy().control_max());
        let host_flags = flags & !(libc::MSG_DONTWAIT | libc::MSG_WAITALL);
        let no_wait = self.nonblocking() || flags & (libc::MSG_DONTWAIT | libc::MSG_ERRQUEUE) != 0;
        let waitall = flags & libc::MSG_WAITALL != 0 && is_tcp(self.kind());
        let peek_waitall = waitall && flags & libc::MSG_PEEK != 0;
        let waitall = waitall && !peek_waitall;
        let mut got = RawRecv::empty();
        let mut name = [0u8; 128];
        // After SHUT_RD a receive that would wait returns 0 (Linux's
        // blocking receive); one that may not wait gives EAGAIN, as Linux's
        // non-blocking one does.
        let mut once = |s: &Socket, bufs: &mut [IoSliceMut<'_>], got: &mut RawRecv| {
            let addr = if want_addr { Some(&mut name[..]) } else { None };
            let control = got.control.get_mut(..cap).unwrap_or_default();
            let out = sys::recvmsg(s, bufs, addr, control, host_flags);
            if no_wait {
                out
            } else {
                core.eof_if_shut(out, || sys::MsgOut::EOF)
            }
        };
        let out = if no_wait {
            core.try_io_now(|s| once(s, bufs, &mut got))?
        } else if peek_waitall {
            let wanted = bufs.iter().map(|b| b.len()).sum();
            let at = core.timeouts().deadline(Dir::Read, deadline);
            crate::msg::peek_waitall(&core, self.recv_interest(), at, wanted, |s| {
                once(s, bufs, &mut got)
            })
            .await
            .map_err(errno)?
        } else if waitall {
            let at = core.timeouts().deadline(Dir::Read, deadline);
            let mut total: usize = 0;
            let mut last = None;
            loop {
                if bufs.iter().all(|b| b.is_empty()) {
                    break;
                }
                let step = core
                    .io(self.recv_interest(), Dir::Read, Op::Recv, at, |s| {
                        once(s, bufs, &mut got)
                    })
                    .await;
                match step {
                    Ok(out) if out.len == 0 => {
                        last.get_or_insert(out);
                        break;
                    }
                    Ok(out) => {
                        total = total.saturating_add(out.len);
                        IoSliceMut::advance_slices(&mut bufs, out.len);
                        last = Some(out);
                    }
                    Err(_) if total > 0 => break,
                    Err(e) => return Err(errno(e)),
                }
            }
            let mut out = last.unwrap_or(sys::MsgOut::EOF);
            out.len = total;
            out
        } else {
            core.io(self.recv_interest(), Dir::Read, Op::Recv, deadline, |s| {
                once(s, bufs, &mut got)
            })
            .await
            .map_err(errno)?
        };
        got.len = out.len;
        got.flags = out.flags;
        if want_addr {
            got.addr = SockaddrBytes::from_bytes(name.get(..out.addr_len).unwrap_or(&name));
        }
        let (kept, dropped) = filter_received(
            &mut got.control,
            out.control_len,
            self.policy().keeps_unknown_cmsgs(),
        );
        got.control_len = kept;
        if dropped {
            got.flags |= libc::MSG_CTRUNC;
        }
        Ok(got)
    }

    /// `sendmsg(2)`: the bytes of `bufs`, to `to` (empty: the connected
    /// peer), with the guest's control bytes `control` (checked and written
    /// anew), waiting for room unless the socket is non-blocking or `flags`
    /// has `MSG_DONTWAIT`.
    ///
    /// # Errors
    ///
    /// Refused before the host is called, in this order:
    ///
    /// * `EINVAL` for `flags` outside the policy's send mask (the audit
    ///   hook sees it);
    /// * `EMSGSIZE` for more than [`MAX_IOVECS`] buffers;
    /// * `ENOBUFS` for a control buffer over [`MAX_GUEST_CONTROL`];
    /// * `EBADF` if an earlier renewal of the registration failed;
    /// * `EINVAL` for a control message that is malformed, of a type not
    ///   sent (receive-only or unknown) or out of range; `EACCES` when the
    ///   `SourceViaPktinfo` rules deny a PKTINFO source address; `ENOBUFS`
    ///   if the messages, written anew, do not fit 1024 bytes;
    /// * `EINVAL` for a non-empty `to` longer than 128 bytes or shorter
    ///   than its 2-byte family field; `ECONNREFUSED` when the `SendTo`
    ///   rules deny an INET `to` (checked on every socket kind, TCP too,
    ///   and the unspecified address as the loopback address Linux sends
    ///   it to),
    ///   or with `MSG_FASTOPEN` on TCP when the `Connect` rules deny it;
    /// * `EACCES` when an unbound datagram socket (or a TCP fast-open
    ///   connect) would bind implicitly and a `Bind` rule explicitly denies
    ///   the unspecified address.
    ///
    /// From the facade: `EAGAIN` when a blocking send's wait outlasts
    /// `SO_SNDTIMEO`. Everything else is the host kernel's errno,
    /// unchanged: `EAGAIN` when the call may not wait and there is no room,
    /// `EMSGSIZE` for a datagram too large, `EDESTADDRREQ`, `ENOTCONN`,
    /// `EPIPE` (with [`SendError::raise_sigpipe`] set when the guest did
    /// not pass `MSG_NOSIGNAL`), ...
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: if it is dropped before it completes,
    /// nothing was sent.
    pub async fn sendmsg(
        &self,
        bufs: &[IoSlice<'_>],
        to: &[u8],
        control: &[u8],
        flags: i32,
    ) -> Result<usize, SendError> {
        self.sendmsg_deadline(bufs, to, control, flags, None).await
    }

    /// [`sendmsg`](RawSocket::sendmsg) with a deadline for the blocking
    /// wait.
    ///
    /// # Errors
    ///
    /// As [`sendmsg`](RawSocket::sendmsg); the deadline passing first (the
    /// earlier of it and `SO_SNDTIMEO` applies) gives the same `EAGAIN`.
    ///
    /// # Cancel safety
    ///
    /// As [`sendmsg`](RawSocket::sendmsg).
    pub async fn sendmsg_deadline(
        &self,
        bufs: &[IoSlice<'_>],
        to: &[u8],
        control: &[u8],
        flags: i32,
        deadline: Option<Instant>,
    ) -> Result<usize, SendError> {
        self.check_flags(Op::Send, flags, self.policy().send_flags())?;
        if bufs.len() > MAX_IOVECS {
            return Err(Errno::EMSGSIZE.into());
        }
        if control.len() > MAX_GUEST_CONTROL {
            return Err(Errno::ENOBUFS.into());
        }
        let core = self.core()?;
        let mut cbuf = CmsgBuf::<CONTROL_MAX>::new();
        parse_guest_send(control, &mut cbuf, |ip| {
            self.check_local_source(&core, SocketAddr::new(ip, 0))
        })?;
        self.check_send_to(&core, to, flags)?;
        let to = sockaddr::host_bytes(to);
        let host_flags = flags & !libc::MSG_DONTWAIT;
        let send = |s: &Socket| sys::sendmsg(s, bufs, to, cbuf.as_bytes(), host_flags);
        let r = if self.nonblocking() || flags & libc::MSG_DONTWAIT != 0 {
            core.try_io_now(send).map_err(|e| Errno::from_io(&e))
        } else {
            core.io(Interest::WRITABLE, Dir::Write, Op::Send, deadline, send)
                .await
                .map_err(errno)
        };
        if r.is_ok() {
            // A send from an unbound socket bound it.
            self.mark_bound();
        }
        r.map_err(|e| SendError {
            errno: e,
            raise_sigpipe: e == Errno::EPIPE && flags & libc::MSG_NOSIGNAL == 0,
        })
    }

    fn check_local_source(&self, core: &Core, addr: SocketAddr) -> Result<(), Errno> {
        self.policy()
            .check_addr(core.raw_fd(), Op::Send, AddrUse::SourceViaPktinfo, addr)
            .map_err(|d| Errno::new(d.errno))
    }

    /// `read(2)`: `recvmsg` with no flags, no address, no control.
    ///
    /// # Errors
    ///
    /// As [`recvmsg`](RawSocket::recvmsg) (with no flags, one buffer and no
    /// control, none of its checks can refuse): `EBADF` after a failed
    /// renewal, `EAGAIN` from the facade when `SO_RCVTIMEO` runs out, the
    /// host kernel's errno otherwise.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        Ok(self
            .recvmsg(&mut [IoSliceMut::new(buf)], 0, false, 0)
            .await?
            .len)
    }

    /// `readv(2)`.
    ///
    /// # Errors
    ///
    /// As [`read`](RawSocket::read), plus `EMSGSIZE` for more than
    /// [`MAX_IOVECS`] buffers.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn readv(&self, bufs: &mut [IoSliceMut<'_>]) -> Result<usize, Errno> {
        Ok(self.recvmsg(bufs, 0, false, 0).await?.len)
    }

    /// `recvfrom(2)`: the length and the source address bytes (empty when
    /// `want_addr` is false or on a stream).
    ///
    /// # Errors
    ///
    /// As [`recvmsg`](RawSocket::recvmsg) with one buffer and no control:
    /// `EINVAL` for `flags` outside the receive mask, `EBADF` after a failed
    /// renewal, `EAGAIN` from the facade when `SO_RCVTIMEO` runs out, the
    /// host kernel's errno otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::Policy;
    /// use hostsock::raw::{Errno, RawSocket};
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), Errno> {
    ///     let sock = RawSocket::new(Policy::shared_default(), libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    ///     let mut buf = [0u8; 16];
    ///     // A flag outside the receive mask: the policy's EINVAL.
    ///     assert_eq!(sock.recvfrom(&mut buf, libc::MSG_MORE, false).await.map(|r| r.0), Err(Errno::EINVAL));
    ///     // Nothing queued and the call may not wait: the host's EAGAIN.
    ///     assert_eq!(sock.recvfrom(&mut buf, libc::MSG_DONTWAIT, false).await.map(|r| r.0), Err(Errno::EAGAIN));
    ///     // A blocking call bounded by SO_RCVTIMEO (a `timeval` of 20 ms):
    ///     // the facade's EAGAIN when it runs out.
    ///     let tv = [0i64.to_ne_bytes(), 20_000i64.to_ne_bytes()].concat();
    ///     sock.setsockopt(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
    ///     assert_eq!(sock.recvfrom(&mut buf, 0, true).await.map(|r| r.0), Err(Errno::EAGAIN));
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// As [`recvmsg`](RawSocket::recvmsg).
    pub async fn recvfrom(
        &self,
        buf: &mut [u8],
        flags: i32,
        want_addr: bool,
    ) -> Result<(usize, SockaddrBytes), Errno> {
        let got = self
            .recvmsg(&mut [IoSliceMut::new(buf)], flags, want_addr, 0)
            .await?;
        Ok((got.len, got.addr))
    }

    /// `write(2)`: `sendmsg` with no flags, no address, no control.
    ///
    /// # Errors
    ///
    /// As [`sendmsg`](RawSocket::sendmsg) with no flags, one buffer, no
    /// address and no control: `EBADF` after a failed renewal, `EACCES`
    /// when an unbound datagram socket's implicit bind is denied, `EAGAIN`
    /// from the facade when `SO_SNDTIMEO` runs out, the host kernel's errno
    /// otherwise (`EPIPE` with [`SendError::raise_sigpipe`] set,
    /// `EDESTADDRREQ` on an unconnected datagram socket, ...).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn write(&self, buf: &[u8]) -> Result<usize, SendError> {
        self.sendmsg(&[IoSlice::new(buf)], &[], &[], 0).await
    }

    /// `writev(2)`.
    ///
    /// # Errors
    ///
    /// As [`write`](RawSocket::write), plus `EMSGSIZE` for more than
    /// [`MAX_IOVECS`] buffers.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn writev(&self, bufs: &[IoSlice<'_>]) -> Result<usize, SendError> {
        self.sendmsg(bufs, &[], &[], 0).await
    }

    /// `sendto(2)` (an empty `to` is `send(2)`).
    ///
    /// # Errors
    ///
    /// As [`sendmsg`](RawSocket::sendmsg) with one buffer and no control:
    /// `EINVAL` for `flags` outside the send mask or a malformed `to`,
    /// `ECONNREFUSED` when the address rules deny `to`, `EACCES` for a
    /// denied implicit bind, `EBADF` after a failed renewal, `EAGAIN` from
    /// the facade when `SO_SNDTIMEO` runs out, the host kernel's errno
    /// otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use hostsock::Policy;
    /// use hostsock::policy::{AddrRule, AddrUse, Cidr, Verdict};
    /// use hostsock::raw::{Errno, RawSocket, encode_sockaddr};
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     // Sends to port 9 (discard) are denied; everything else is allowed.
    ///     let rule = AddrRule::new(Verdict::Deny, Cidr::ANY_V4, &[AddrUse::SendTo]).ports(9, 9);
    ///     let policy = Arc::new(Policy::builder().addr_rule(rule).build());
    ///     let loopback = encode_sockaddr("127.0.0.1:0".parse()?);
    ///     let a = RawSocket::new(policy.clone(), libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    ///     let b = RawSocket::new(policy, libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    ///     a.bind(loopback.as_bytes())?;
    ///     b.bind(loopback.as_bytes())?;
    ///
    ///     assert_eq!(b.sendto(b"ping", 0, a.getsockname()?.as_bytes()).await?, 4);
    ///     let mut buf = [0u8; 16];
    ///     let (n, from) = a.recvfrom(&mut buf, 0, true).await?;
    ///     assert_eq!(&buf[..n], b"ping");
    ///     assert_eq!(from.to_socket_addr(), b.getsockname()?.to_socket_addr());
    ///
    ///     // A denied destination: the policy's ECONNREFUSED, nothing sent.
    ///     let discard = encode_sockaddr("127.0.0.1:9".parse()?);
    ///     let err = b.sendto(b"x", 0, discard.as_bytes()).await.unwrap_err();
    ///     assert_eq!(err.errno, Errno::ECONNREFUSED);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn sendto(&self, buf: &[u8], flags: i32, to: &[u8]) -> Result<usize, SendError> {
        self.sendmsg(&[IoSlice::new(buf)], to, &[], flags).await
    }
}
