//! Messages: `send_msg`/`recv_msg` with flags and control messages, on
//! `UdpSocket` and `TcpStream`. One `sendmsg`/`recvmsg` per call (a
//! `MSG_WAITALL` stream receive loops until full), no heap allocation: the
//! control messages to send are encoded into a 256-byte buffer on the
//! stack, and received ones are decoded from the caller's buffer.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::task::{Context, Poll};

use socket2::Socket;
use tokio::io::Interest;
use tokio::time::Instant;

use crate::cmsg::{Cmsg, CmsgBuf, CmsgIter, filter_received};
use crate::core::Core;
use crate::deadline::Dir;
use crate::error::{Error, Op, Result};
use crate::policy::AddrUse;
use crate::sys;

macro_rules! flags_type {
    ($(#[$doc:meta])* $name:ident { $($(#[$cdoc:meta])* $c:ident = $v:ident,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(i32);

        impl $name {
            /// No flags.
            pub const EMPTY: $name = $name(0);
            $($(#[$cdoc])* pub const $c: $name = $name(libc::$v);)*

            /// The C value.
            pub const fn bits(self) -> i32 {
                self.0
            }

            /// The set for a C value (bits this type does not name are kept).
            pub const fn from_bits(bits: i32) -> $name {
                $name(bits)
            }

            /// Does this set hold all of `other`?
            pub const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0
            }
        }

        impl std::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, rhs: $name) -> $name {
                $name(self.0 | rhs.0)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut list = f.debug_set();
                $(if self.0 & libc::$v != 0 { list.entry(&stringify!($v)); })*
                list.finish()
            }
        }
    };
}

flags_type! {
    /// Flags for [`recv_msg`](crate::UdpSocket::recv_msg).
    RecvFlags {
        /// Do not wait (one try: `EAGAIN` if nothing is queued).
        DONTWAIT = MSG_DONTWAIT,
        /// Look without taking the data off the queue.
        PEEK = MSG_PEEK,
        /// Datagrams: return the real length even if the buffers are
        /// shorter.
        TRUNC = MSG_TRUNC,
        /// Streams: wait until the buffers are full (or end of stream, an
        /// error, the deadline).
        WAITALL = MSG_WAITALL,
        /// Read the error queue (`IP_RECVERR`); never waits.
        ERRQUEUE = MSG_ERRQUEUE,
        /// Out-of-band data.
        OOB = MSG_OOB,
    }
}

flags_type! {
    /// Flags for [`send_msg`](crate::UdpSocket::send_msg). `MSG_NOSIGNAL`
    /// is always used: no send ever raises `SIGPIPE`.
    SendFlags {
        /// Do not wait (one try: `EAGAIN` if there is no room).
        DONTWAIT = MSG_DONTWAIT,
        /// End of record.
        EOR = MSG_EOR,
        /// More data follows (cork).
        MORE = MSG_MORE,
        /// Out-of-band data.
        OOB = MSG_OOB,
        /// The neighbour is reachable (skip ARP/ND probing).
        CONFIRM = MSG_CONFIRM,
    }
}

flags_type! {
    /// The flags the kernel set on a received message (`msg_flags`).
    MsgFlags {
        /// The datagram was longer than the buffers.
        TRUNC = MSG_TRUNC,
        /// Control messages were dropped: the buffer was short, or the
        /// policy dropped a message it does not list.
        CTRUNC = MSG_CTRUNC,
        /// End of record.
        EOR = MSG_EOR,
        /// Out-of-band data.
        OOB = MSG_OOB,
        /// The message came from the error queue.
        ERRQUEUE = MSG_ERRQUEUE,
    }
}

/// What [`recv_msg`](crate::UdpSocket::recv_msg) received.
#[derive(Clone, Copy, Debug)]
pub struct RecvMeta<'c> {
    /// Bytes written into the buffers.
    pub len: usize,
    /// The kernel's answer: with [`RecvFlags::TRUNC`] on a datagram socket,
    /// the datagram's real length (may exceed the buffers); otherwise
    /// `len`.
    pub full_len: usize,
    /// The flags the kernel set (and `CTRUNC` if the policy dropped a
    /// control message).
    pub flags: MsgFlags,
    /// The source address (datagram sockets).
    pub addr: Option<SocketAddr>,
    control: &'c [u8],
    keep_unknown: bool,
}

impl<'c> RecvMeta<'c> {
    /// Was the datagram longer than the buffers?
    pub fn truncated(&self) -> bool {
        self.flags.contains(MsgFlags::TRUNC)
    }

    /// Were control messages lost (short buffer or policy)?
    pub fn control_truncated(&self) -> bool {
        self.flags.contains(MsgFlags::CTRUNC)
    }

    /// The control messages, decoded (no allocation).
    pub fn cmsgs(&self) -> impl Iterator<Item = Cmsg<'c>> + 'c {
        let keep = self.keep_unknown;
        CmsgIter::new(self.control).filter(move |m| keep || !matches!(m, Cmsg::Unknown { .. }))
    }

    /// The control bytes as received (after the policy's filter).
    pub fn control_bytes(&self) -> &'c [u8] {
        self.control
    }
}

/// Flags outside the policy's mask are `EINVAL`, before anything else;
/// the audit hook sees the refusal.
#[inline]
pub(crate) fn check_flags(
    policy: &crate::Policy,
    fd: std::os::fd::RawFd,
    op: Op,
    flags: i32,
    allowed: i32,
) -> std::result::Result<(), crate::error::Denial> {
    if flags & !allowed == 0 {
        return Ok(());
    }
    Err(refuse_flags(policy, fd, op, flags, allowed))
}

#[cold]
fn refuse_flags(
    policy: &crate::Policy,
    fd: std::os::fd::RawFd,
    op: Op,
    flags: i32,
    allowed: i32,
) -> crate::error::Denial {
    let refused = flags & !allowed;
    policy.deny(
        fd,
        crate::error::Denial {
            op,
            asked: crate::error::Asked::Flags { flags, refused },
            rule: crate::error::Rule::FlagsNotAllowed,
            errno: libc::EINVAL,
        },
    )
}

/// Checks and encodes typed send control messages: only send types, in
/// range (`EINVAL`); PKTINFO sources against the `SourceViaPktinfo` rules.
#[inline]
pub(crate) fn encode_send<const N: usize>(
    core: &Core,
    cmsgs: &[Cmsg<'_>],
    out: &mut CmsgBuf<N>,
) -> Result<()> {
    for m in cmsgs {
        if !m.sendable() {
            return Err(Error::Io(io::Error::from_raw_os_error(libc::EINVAL)));
        }
        if let Some(src) = m.pktinfo_source() {
            core.policy().check_addr(
                core.raw_fd(),
                Op::Send,
                AddrUse::SourceViaPktinfo,
                SocketAddr::new(src, 0),
            )?;
        }
        out.push(m).map_err(|e| Error::Io(e.into()))?;
    }
    Ok(())
}

/// Control bytes a typed send can need: every send type once (PKTINFO v4
/// and v6, TOS, TTL, TClass, hop limit, segment size) fits.
pub(crate) const SEND_CONTROL: usize = 256;

/// The control room of the fast path's `Outgoing`: two or three common
/// messages (PKTINFO and TOS take 56 bytes) without a call to `memset` for
/// the blank buffer; a send that needs more is encoded again with
/// [`SEND_CONTROL`] bytes.
const SMALL_CONTROL: usize = 64;

/// What one send needs, checked and encoded once before any waiting.
pub(crate) struct Outgoing<const N: usize = SEND_CONTROL> {
    /// `sockaddr_in`/`sockaddr_in6` bytes and their length (0: connected).
    to: ([u8; 28], usize),
    control: CmsgBuf<N>,
    flags: i32,
}

impl<const N: usize> Outgoing<N> {
    /// Checks and encodes a send. Returns by value; hot paths use
    /// [`prepare`](Outgoing::prepare) on a [`blank`](Outgoing::blank) one
    /// instead, which builds it in place (no 300-byte moves).
    pub(crate) fn new(
        core: &Core,
        to: Option<SocketAddr>,
        cmsgs: &[Cmsg<'_>],
        flags: SendFlags,
    ) -> Result<Outgoing<N>> {
        let mut out = Outgoing::blank();
        out.prepare(core, to, cmsgs, flags)?;
        Ok(out)
    }

    #[inline]
    pub(crate) fn blank() -> Outgoing<N> {
        Outgoing {
            to: ([0; 28], 0),
            control: CmsgBuf::new(),
            flags: 0,
        }
    }

    /// Fills a blank `Outgoing`: the flags against the policy's mask, the
    /// destination against the address rules, the control messages checked
    /// and encoded.
    pub(crate) fn prepare(
        &mut self,
        core: &Core,
        to: Option<SocketAddr>,
        cmsgs: &[Cmsg<'_>],
        flags: SendFlags,
    ) -> Result<()> {
        let policy = core.policy();
        check_flags(
            policy,
            core.raw_fd(),
            Op::Send,
            flags.bits(),
            policy.send_flags(),
        )?;
        if let Some(a) = to {
            core.policy()
                .check_addr(core.raw_fd(), Op::Send, AddrUse::SendTo, a)?;
            self.to.1 = crate::raw::encode_sockaddr_into(a, &mut self.to.0);
        }
        encode_send(core, cmsgs, &mut self.control)?;
        self.flags = flags.bits() & !libc::MSG_DONTWAIT;
        Ok(())
    }

    pub(crate) fn send(&self, s: &Socket, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        sys::sendmsg(
            s,
            bufs,
            &self.to.0[..self.to.1],
            self.control.as_bytes(),
            self.flags,
        )
    }
}

/// The source address bytes of a typed receive: `sizeof(sockaddr_in6)`
/// holds every address an INET socket reports.
const NAME_LEN: usize = crate::raw::IN6_LEN;

/// One `recvmsg` (after `SHUT_RD`, a would-block is end of stream): the
/// source address bytes and what the kernel reported.
#[inline]
fn recv_raw(
    core: &Core,
    s: &Socket,
    bufs: &mut [IoSliceMut<'_>],
    control: &mut [u8],
    flags: i32,
    name: &mut [u8; NAME_LEN],
) -> io::Result<sys::MsgOut> {
    let cap = control.len().min(core.policy().control_max());
    let control = control.get_mut(..cap).unwrap_or_default();
    match sys::recvmsg(s, bufs, Some(name), control, flags) {
        Ok(out) => Ok(out),
        e => core.eof_if_shut(e, || sys::MsgOut::EOF),
    }
}

/// The flags that make a receive more than "wait for one message".
const SPECIAL_RECV: i32 = libc::MSG_DONTWAIT | libc::MSG_ERRQUEUE | libc::MSG_WAITALL;

/// The whole receive: one try for `DONTWAIT`/`ERRQUEUE`, else waiting on
/// `interest` until the deadline (or the read timeout); `WAITALL` loops on
/// streams until the buffers are full, end of stream, an error or the
/// deadline (bytes already received are returned rather than the error).
pub(crate) async fn recv_msg<'c>(
    core: &Core,
    interest: Interest,
    stream: bool,
    bufs: &mut [IoSliceMut<'_>],
    control: &'c mut [u8],
    flags: RecvFlags,
    deadline: Option<Instant>,
) -> Result<RecvMeta<'c>> {
    let f = flags.bits();
    check_flags(
        core.policy(),
        core.raw_fd(),
        Op::Recv,
        f,
        core.policy().recv_flags(),
    )?;
    if f & SPECIAL_RECV != 0 {
        return recv_special(core, interest, stream, bufs, control, f, deadline).await;
    }
    // The common case: take what is queued now when the reactor already
    // knows the socket is readable (the address buffer is not kept in the
    // future), else wait.
    crate::core::fair_turn().await;
    let mut name = [0u8; NAME_LEN];
    let ready = core.try_ready(interest, Op::Recv, |s| {
        recv_raw(core, s, bufs, control, f, &mut name)
    });
    if let Some(out) = ready {
        return Ok(finish(core, bufs, control, &name, out?, f));
    }
    recv_wait(core, interest, bufs, control, f, deadline).await
}

/// The waiting part of [`recv_msg`].
async fn recv_wait<'c>(
    core: &Core,
    interest: Interest,
    bufs: &mut [IoSliceMut<'_>],
    control: &'c mut [u8],
    f: i32,
    deadline: Option<Instant>,
) -> Result<RecvMeta<'c>> {
    let mut name = [0u8; NAME_LEN];
    let out = core
        .wait_io(interest, Dir::Read, Op::Recv, deadline, |s| {
            recv_raw(core, s, bufs, control, f, &mut name)
        })
        .await?;
    Ok(finish(core, bufs, control, &name, out, f))
}

/// [`recv_msg`] with `DONTWAIT`, `ERRQUEUE` or `WAITALL`.
async fn recv_special<'c>(
    core: &Core,
    interest: Interest,
    stream: bool,
    bufs: &mut [IoSliceMut<'_>],
    control: &'c mut [u8],
    f: i32,
    deadline: Option<Instant>,
) -> Result<RecvMeta<'c>> {
    // `DONTWAIT` (and `ERRQUEUE`) is one try whatever else is asked: with
    // `WAITALL` Linux then returns what is there.
    let one_try = f & (libc::MSG_DONTWAIT | libc::MSG_ERRQUEUE) != 0;
    let waitall = !one_try && f & libc::MSG_WAITALL != 0 && stream;
    if waitall && f & libc::MSG_PEEK == 0 {
        return recv_waitall(core, interest, bufs, control, f, deadline).await;
    }
    let host_flags = f & !libc::MSG_DONTWAIT & !libc::MSG_WAITALL;
    let mut name = [0u8; NAME_LEN];
    let out = if waitall {
        let wanted = bufs.iter().map(|b| b.len()).sum();
        let at = core.timeouts().deadline(Dir::Read, deadline);
        peek_waitall(core, interest, at, wanted, |s| {
            recv_raw(core, s, bufs, control, host_flags, &mut name)
        })
        .await?
    } else if one_try {
        core.try_io_now(|s| recv_raw(core, s, bufs, control, host_flags, &mut name))?
    } else {
        // `WAITALL` on a datagram socket: one message, as Linux does.
        core.io(interest, Dir::Read, Op::Recv, deadline, |s| {
            recv_raw(core, s, bufs, control, host_flags, &mut name)
        })
        .await?
    };
    Ok(finish(core, bufs, control, &name, out, host_flags))
}

/// The meta of a received message: the control bytes through the policy's
/// filter, the length cut to the buffers (the kernel reports a datagram's
/// full length only when `host_flags` has `MSG_TRUNC`).
#[inline(always)]
fn finish<'c>(
    core: &Core,
    bufs: &[IoSliceMut<'_>],
    control: &'c mut [u8],
    name: &[u8; NAME_LEN],
    out: sys::MsgOut,
    host_flags: i32,
) -> RecvMeta<'c> {
    let len = if host_flags & libc::MSG_TRUNC != 0 {
        out.len.min(bufs.iter().map(|b| b.len()).sum())
    } else {
        out.len
    };
    let keep = core.policy().keeps_unknown_cmsgs();
    let (kept, dropped) = filter_received(control, out.control_len, keep);
    let mut msg_flags = out.flags;
    if dropped {
        msg_flags |= libc::MSG_CTRUNC;
    }
    let control: &'c [u8] = control.get(..kept).unwrap_or_default();
    RecvMeta {
        len,
        full_len: out.len,
        flags: MsgFlags(msg_flags),
        addr: crate::raw::received_addr(name, out.addr_len),
        control,
        keep_unknown: keep,
    }
}

/// `MSG_WAITALL` on a stream: receives until the buffers are full. The
/// slices in `bufs` are advanced past what was filled.
async fn recv_waitall<'c>(
    core: &Core,
    interest: Interest,
    mut bufs: &mut [IoSliceMut<'_>],
    control: &'c mut [u8],
    flags: i32,
    deadline: Option<Instant>,
) -> Result<RecvMeta<'c>> {
    let host_flags = flags & !libc::MSG_DONTWAIT & !libc::MSG_WAITALL;
    let at = core.timeouts().deadline(Dir::Read, deadline);
    let mut total = 0usize;
    let mut last = sys::MsgOut::EOF;
    let name = [0u8; NAME_LEN];
    let mut scratch = [0u8; NAME_LEN];
    loop {
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        if want == 0 {
            break;
        }
        let step = core
            .io(interest, Dir::Read, Op::Recv, at, |s| {
                recv_raw(core, s, bufs, control, host_flags, &mut scratch)
            })
            .await;
        match step {
            Ok(out) if out.len == 0 => break,
            Ok(out) => {
                total += out.len;
                last = out;
                IoSliceMut::advance_slices(&mut bufs, out.len);
            }
            Err(_) if total > 0 => break,
            Err(e) => return Err(e),
        }
    }
    let mut meta = finish(core, &[], control, &name, last, host_flags);
    meta.len = total;
    meta.full_len = total;
    Ok(meta)
}

/// The whole send: one try for `DONTWAIT`, else waiting for room until the
/// deadline (or the write timeout).
pub(crate) async fn send_msg(
    core: &Core,
    bufs: &[IoSlice<'_>],
    to: Option<SocketAddr>,
    cmsgs: &[Cmsg<'_>],
    flags: SendFlags,
    deadline: Option<Instant>,
) -> Result<usize> {
    if flags.contains(SendFlags::DONTWAIT) {
        let out = Outgoing::<SEND_CONTROL>::new(core, to, cmsgs, flags)?;
        return Ok(core.try_io_now(|s| out.send(s, bufs))?);
    }
    crate::core::fair_turn().await;
    if let Some(r) = send_now(core, bufs, to, cmsgs, flags) {
        return r;
    }
    // Not writable now: check and encode again for the waiting path (the
    // checks are pure, so they pass again; the fast path above keeps its
    // 300-byte `Outgoing` on the stack instead of in this future).
    let out = Outgoing::<SEND_CONTROL>::new(core, to, cmsgs, flags)?;
    core.wait_io(Interest::WRITABLE, Dir::Write, Op::Send, deadline, |s| {
        out.send(s, bufs)
    })
    .await
}

/// A send without waiting, when the reactor already knows the socket is
/// writable; `None` if it is not.
fn send_now(
    core: &Core,
    bufs: &[IoSlice<'_>],
    to: Option<SocketAddr>,
    cmsgs: &[Cmsg<'_>],
    flags: SendFlags,
) -> Option<Result<usize>> {
    let mut out = Outgoing::<SMALL_CONTROL>::blank();
    match out.prepare(core, to, cmsgs, flags) {
        Ok(()) => core.try_ready(Interest::WRITABLE, Op::Send, |s| out.send(s, bufs)),
        Err(e) if e.errno() == libc::ENOBUFS => send_now_large(core, bufs, to, cmsgs, flags),
        Err(e) => Some(Err(e)),
    }
}

/// [`send_now`] for control messages that need more than
/// [`SMALL_CONTROL`] bytes.
#[cold]
fn send_now_large(
    core: &Core,
    bufs: &[IoSlice<'_>],
    to: Option<SocketAddr>,
    cmsgs: &[Cmsg<'_>],
    flags: SendFlags,
) -> Option<Result<usize>> {
    let mut out = Outgoing::<SEND_CONTROL>::blank();
    if let Err(e) = out.prepare(core, to, cmsgs, flags) {
        return Some(Err(e));
    }
    core.try_ready(Interest::WRITABLE, Op::Send, |s| out.send(s, bufs))
}

/// `poll_` form of a receive, for any readiness poller (`poll`: the
/// datagram one that also wakes on errors, or the stream one).
pub(crate) fn poll_recv_msg<'c>(
    core: &Core,
    poll: impl FnOnce(
        &mut dyn FnMut(&Socket) -> io::Result<sys::MsgOut>,
    ) -> Poll<io::Result<sys::MsgOut>>,
    bufs: &mut [IoSliceMut<'_>],
    control: &'c mut [u8],
    flags: RecvFlags,
) -> Poll<io::Result<RecvMeta<'c>>> {
    let policy = core.policy();
    if let Err(e) = check_flags(
        policy,
        core.raw_fd(),
        Op::Recv,
        flags.bits(),
        policy.recv_flags(),
    ) {
        return Poll::Ready(Err(Error::from(e).into()));
    }
    let host_flags = flags.bits() & !libc::MSG_DONTWAIT & !libc::MSG_WAITALL;
    let mut name = [0u8; NAME_LEN];
    let mut once = |s: &Socket| recv_raw(core, s, bufs, control, host_flags, &mut name);
    match poll(&mut once) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Ready(Ok(out)) => {
            Poll::Ready(Ok(finish(core, bufs, control, &name, out, host_flags)))
        }
    }
}

/// `poll_` form of a send (no deadline: poll functions keep no timer).
pub(crate) fn poll_send_msg(
    core: &Core,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
    to: Option<SocketAddr>,
    cmsgs: &[Cmsg<'_>],
    flags: SendFlags,
) -> Poll<io::Result<usize>> {
    let out = match Outgoing::<SEND_CONTROL>::new(core, to, cmsgs, flags) {
        Ok(o) => o,
        Err(e) => return Poll::Ready(Err(e.into())),
    };
    core.poll_write_io(cx, |s| out.send(s, bufs))
}

/// The message methods of a socket type; `$interest` is what a receive
/// waits for, `$stream` whether `WAITALL` is emulated.
macro_rules! msg_methods {
    ($ty:ty, $interest:expr, $stream:expr, $example:literal) => {
        impl $ty {
            /// Sends the bytes of `bufs` as one message (one `sendmsg(2)`),
            /// to `to` (or the connected peer), with control messages
            /// `cmsgs`, waiting for room unless `flags` has `DONTWAIT`.
            ///
            /// Each control message must be a send type in range
            /// (`EINVAL` otherwise); a PKTINFO source address is checked
            /// against the policy's `SourceViaPktinfo` rules, `to` against
            /// its `SendTo` rules. No heap allocation.
            ///
            /// # Examples
            ///
            #[doc = $example]
            ///
            /// # Errors
            ///
            /// Checked before anything is sent: `EINVAL` for a flag outside the
            /// policy's send flags, or a control message that is not a send
            /// type or is out of range; `ENOBUFS` if the control messages need
            /// more than 256 bytes; a denial when the policy refuses `to` for
            /// `SendTo` (`ECONNREFUSED`) or a PKTINFO source (`EACCES`).
            ///
            /// Then [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` =
            /// `EAGAIN`) when the write timeout runs out; with `DONTWAIT`,
            /// `WouldBlock` (errno `EAGAIN`) when there is no room; the
            /// kernel's errno otherwise (`EMSGSIZE`, `EDESTADDRREQ`, `EPIPE` on
            /// a closed stream, ...).
            ///
            /// # Cancel safety
            ///
            /// This method is cancel safe: if it is dropped before it
            /// completes, nothing was sent.
            pub fn send_msg(
                &self,
                bufs: &[std::io::IoSlice<'_>],
                to: Option<std::net::SocketAddr>,
                cmsgs: &[$crate::cmsg::Cmsg<'_>],
                flags: $crate::msg::SendFlags,
            ) -> impl std::future::Future<Output = $crate::Result<usize>> {
                $crate::msg::send_msg(self.core(), bufs, to, cmsgs, flags, None)
            }

            /// [`send_msg`](Self::send_msg) that gives up at `deadline` (or
            /// the write timeout) with a timed-out error (`EAGAIN`).
            ///
            /// # Errors
            ///
            /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` =
            /// `EAGAIN`) when `deadline` or the write timeout passes first;
            /// otherwise as [`send_msg`](Self::send_msg).
            ///
            /// # Cancel safety
            ///
            /// This method is cancel safe.
            pub async fn send_msg_deadline(
                &self,
                bufs: &[std::io::IoSlice<'_>],
                to: Option<std::net::SocketAddr>,
                cmsgs: &[$crate::cmsg::Cmsg<'_>],
                flags: $crate::msg::SendFlags,
                deadline: impl Into<Option<tokio::time::Instant>>,
            ) -> $crate::Result<usize> {
                $crate::msg::send_msg(self.core(), bufs, to, cmsgs, flags, deadline.into()).await
            }

            /// [`send_msg`](Self::send_msg) once, now: `EAGAIN` if there is
            /// no room.
            ///
            /// # Errors
            ///
            /// `WouldBlock` (errno `EAGAIN`) when there is no room; otherwise
            /// as [`send_msg`](Self::send_msg).
            pub fn try_send_msg(
                &self,
                bufs: &[std::io::IoSlice<'_>],
                to: Option<std::net::SocketAddr>,
                cmsgs: &[$crate::cmsg::Cmsg<'_>],
                flags: $crate::msg::SendFlags,
            ) -> $crate::Result<usize> {
                let out = $crate::msg::Outgoing::<{ $crate::msg::SEND_CONTROL }>::new(
                    self.core(),
                    to,
                    cmsgs,
                    flags,
                )?;
                self.core()
                    .try_io(tokio::io::Interest::WRITABLE, |s| out.send(s, bufs))
            }

            /// Polls to send a message; see [`send_msg`](Self::send_msg).
            ///
            /// # Return value
            ///
            /// * `Poll::Pending` if there is no room yet,
            /// * `Poll::Ready(Ok(n))` with the bytes sent,
            /// * `Poll::Ready(Err(e))` on an error.
            ///
            /// Only the `Waker` from the `Context` passed to the most
            /// recent call is scheduled to receive a wakeup.
            ///
            /// # Errors
            ///
            /// The errors of [`send_msg`](Self::send_msg), as `io::Error`s: a
            /// kernel errno stays in `raw_os_error()`, and
            /// [`Error::from`](crate::Error::from) gives a denial back. No
            /// timeout applies: a poll function keeps no timer.
            pub fn poll_send_msg(
                &self,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
                to: Option<std::net::SocketAddr>,
                cmsgs: &[$crate::cmsg::Cmsg<'_>],
                flags: $crate::msg::SendFlags,
            ) -> std::task::Poll<std::io::Result<usize>> {
                $crate::msg::poll_send_msg(self.core(), cx, bufs, to, cmsgs, flags)
            }

            /// Receives one message (one `recvmsg(2)`; `WAITALL` on a
            /// stream loops until the buffers are full) into `bufs`, its
            /// control messages into `control` (at most the policy's
            /// [`control_max`](crate::Policy::control_max) bytes of it are
            /// used, 1024 by default), waiting unless `flags` has `DONTWAIT`
            /// or `ERRQUEUE` (the error queue never waits). Control messages
            /// the policy does not list are dropped and `CTRUNC` is set,
            /// unless the policy keeps them. No heap allocation.
            ///
            /// # Errors
            ///
            /// `EINVAL` for a flag outside the policy's receive flags;
            /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` =
            /// `EAGAIN`) when the read timeout runs out; with `DONTWAIT` or
            /// `ERRQUEUE`, `WouldBlock` (errno `EAGAIN`) when nothing is
            /// queued; a pending error (`ECONNREFUSED` on a connected datagram
            /// socket) ends the wait with that errno; the kernel's errno
            /// otherwise. With `WAITALL` on a stream, an error or timeout after
            /// some bytes arrived ends the receive with those bytes instead.
            ///
            /// # Cancel safety
            ///
            /// This method is cancel safe: if it is dropped before it
            /// completes, nothing was received (with `WAITALL` on a stream,
            /// bytes received before the drop are lost: do not race it).
            pub fn recv_msg<'c>(
                &self,
                bufs: &mut [std::io::IoSliceMut<'_>],
                control: &'c mut [u8],
                flags: $crate::msg::RecvFlags,
            ) -> impl std::future::Future<Output = $crate::Result<$crate::msg::RecvMeta<'c>>> {
                $crate::msg::recv_msg(self.core(), $interest, $stream, bufs, control, flags, None)
            }

            /// [`recv_msg`](Self::recv_msg) that gives up at `deadline` (or
            /// the read timeout) with a timed-out error (`EAGAIN`).
            ///
            /// # Errors
            ///
            /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` =
            /// `EAGAIN`) when `deadline` or the read timeout passes first;
            /// otherwise as [`recv_msg`](Self::recv_msg).
            ///
            /// # Cancel safety
            ///
            /// As [`recv_msg`](Self::recv_msg).
            pub async fn recv_msg_deadline<'c>(
                &self,
                bufs: &mut [std::io::IoSliceMut<'_>],
                control: &'c mut [u8],
                flags: $crate::msg::RecvFlags,
                deadline: impl Into<Option<tokio::time::Instant>>,
            ) -> $crate::Result<$crate::msg::RecvMeta<'c>> {
                $crate::msg::recv_msg(
                    self.core(),
                    $interest,
                    $stream,
                    bufs,
                    control,
                    flags,
                    deadline.into(),
                )
                .await
            }

            /// [`recv_msg`](Self::recv_msg) once, now: `EAGAIN` if nothing
            /// is queued.
            ///
            /// # Errors
            ///
            /// `WouldBlock` (errno `EAGAIN`) when nothing is queued; otherwise
            /// as [`recv_msg`](Self::recv_msg).
            pub fn try_recv_msg<'c>(
                &self,
                bufs: &mut [std::io::IoSliceMut<'_>],
                control: &'c mut [u8],
                flags: $crate::msg::RecvFlags,
            ) -> $crate::Result<$crate::msg::RecvMeta<'c>> {
                let flags = flags | $crate::msg::RecvFlags::DONTWAIT;
                let fut = $crate::msg::recv_msg(
                    self.core(),
                    $interest,
                    $stream,
                    bufs,
                    control,
                    flags,
                    None,
                );
                futures::FutureExt::now_or_never(fut).unwrap_or_else(|| {
                    Err(std::io::Error::from(std::io::ErrorKind::WouldBlock).into())
                })
            }
        }
    };
}
pub(crate) use msg_methods;

/// `MSG_PEEK | MSG_WAITALL` on a stream: Linux waits until `wanted` bytes
/// are queued (or end of stream, or the timeout, when it returns what is
/// there) and takes none of them. `peek` is one peeking `recvmsg`; after a
/// short peek the readiness is cleared so that the wait is for new data.
pub(crate) async fn peek_waitall(
    core: &Core,
    interest: Interest,
    at: Option<Instant>,
    wanted: usize,
    mut peek: impl FnMut(&Socket) -> io::Result<sys::MsgOut>,
) -> Result<sys::MsgOut> {
    let run = async {
        loop {
            let mut guard = core.async_fd().ready(interest).await?;
            match peek(core.sock()) {
                Ok(out) if out.len == 0 || out.len >= wanted || guard.ready().is_read_closed() => {
                    return Ok(out);
                }
                Ok(_) => guard.clear_ready(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(e) => return Err(Error::from(e)),
            }
        }
    };
    let r = crate::deadline::run(at, Op::Recv, run).await;
    match r {
        Err(e) if e.is_timeout() => match peek(core.sock()) {
            Ok(out) if out.len > 0 => Ok(out),
            _ => Err(e),
        },
        r => r,
    }
}
