//! Batched UDP: many datagrams per syscall (`sendmmsg`/`recvmmsg`), and
//! UDP GSO/GRO (one send cut into equal segments by the kernel, one
//! receive of many coalesced segments), probed at run time with a
//! fallback.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use socket2::Socket;
use tokio::io::Interest;
use tokio::time::Instant;

use super::{RECV_INTEREST, UdpSocket};
use crate::cmsg::{Cmsg, CmsgBuf, CmsgIter, filter_received};
use crate::deadline::Dir;
use crate::error::{Error, Op, Result};
use crate::msg::{MsgFlags, SendFlags, encode_send};
use crate::policy::AddrUse;
use crate::raw::SockaddrBytes;
use crate::sys::{self, SendEntry};

/// The most datagrams one batch call sends or receives (more are left for
/// the next call).
pub const MAX_BATCH: usize = sys::MAX_BATCH;

/// The most segments one GSO send carries (`UDP_MAX_SEGMENTS` is 64 on
/// every Linux since GSO came, larger on some recent ones).
const GSO_MAX_SEGMENTS: usize = 64;

/// Control bytes of a batch send, all its datagrams together (each may have
/// as many as `send_msg` allows); a batch whose controls need more is cut.
const BATCH_CONTROL: usize = 4096;

/// One datagram of a [`send_batch`](UdpSocket::send_batch).
#[derive(Clone, Copy, Debug)]
pub struct Transmit<'a> {
    /// The payload.
    pub data: &'a [u8],
    /// The destination (`None`: the connected peer).
    pub to: Option<SocketAddr>,
    /// Control messages for this datagram (send types, at most 256 bytes
    /// encoded, as for `send_msg`; see
    /// [`send_batch`](UdpSocket::send_batch) for a batch's total).
    pub cmsgs: &'a [Cmsg<'a>],
}

impl<'a> Transmit<'a> {
    /// A datagram to `to` with no control messages.
    pub fn new(data: &'a [u8], to: Option<SocketAddr>) -> Transmit<'a> {
        Transmit {
            data,
            to,
            cmsgs: &[],
        }
    }
}

/// One receive slot of a [`recv_batch`](UdpSocket::recv_batch): the
/// caller's buffer and control buffer, and what arrived in them.
pub struct RecvSlot<'a> {
    pub(crate) iov: IoSliceMut<'a>,
    pub(crate) control: &'a mut [u8],
    pub(crate) addr: [u8; 128],
    pub(crate) out: sys::MsgOut,
    /// Hand unlisted control messages over (the policy said so when the
    /// slot was filled).
    pub(crate) keep_unknown: bool,
}

impl std::fmt::Debug for RecvSlot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvSlot")
            .field("len", &self.len())
            .field("addr", &self.addr())
            .field("flags", &self.flags())
            .finish()
    }
}

impl<'a> RecvSlot<'a> {
    /// A slot receiving into `buf`, control messages into `control` (may
    /// be empty).
    pub fn new(buf: &'a mut [u8], control: &'a mut [u8]) -> RecvSlot<'a> {
        RecvSlot {
            iov: IoSliceMut::new(buf),
            control,
            addr: [0; 128],
            out: sys::MsgOut::EOF,
            keep_unknown: false,
        }
    }

    /// Bytes received (at most the buffer's length).
    pub fn len(&self) -> usize {
        self.out.len.min(self.iov.len())
    }

    /// Did the slot receive nothing (or an empty datagram)?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The received bytes.
    pub fn data(&self) -> &[u8] {
        &self.iov[..self.len()]
    }

    /// The sender.
    pub fn addr(&self) -> Option<SocketAddr> {
        SockaddrBytes::from_bytes(&self.addr[..self.out.addr_len]).to_socket_addr()
    }

    /// The flags the kernel set (`TRUNC`, `CTRUNC`, ...).
    pub fn flags(&self) -> MsgFlags {
        MsgFlags::from_bits(self.out.flags)
    }

    /// The control messages (those the policy lists).
    pub fn cmsgs(&self) -> impl Iterator<Item = Cmsg<'_>> {
        let keep = self.keep_unknown;
        CmsgIter::new(&self.control[..self.out.control_len])
            .filter(move |m| keep || !matches!(m, Cmsg::Unknown { .. }))
    }

    /// With GRO on ([`UdpSocket::enable_gro`]): the size of each coalesced
    /// segment in [`data`](RecvSlot::data), if the kernel coalesced.
    pub fn gro_segment(&self) -> Option<u16> {
        self.cmsgs().find_map(|m| match m {
            Cmsg::UdpGro(n) => Some(n),
            _ => None,
        })
    }
}

/// Applies the policy's control-message filter to filled slots (unlisted
/// messages dropped with `MSG_CTRUNC`, or kept).
pub(crate) fn finish_slots(slots: &mut [RecvSlot<'_>], keep_unknown: bool) {
    for slot in slots {
        let (kept, dropped) = filter_received(slot.control, slot.out.control_len, keep_unknown);
        slot.out.control_len = kept;
        slot.keep_unknown = keep_unknown;
        if dropped {
            slot.out.flags |= libc::MSG_CTRUNC;
        }
    }
}

/// Encoded destinations and control messages for up to 64 datagrams, on
/// the stack.
struct Prepared {
    /// `sockaddr_in6`-sized bytes and their length per datagram (0: none).
    addrs: [([u8; 28], usize); MAX_BATCH],
    /// Every datagram's control messages, one after the other.
    controls: CmsgBuf<BATCH_CONTROL>,
    /// Where each datagram's are in `controls`.
    spans: [(usize, usize); MAX_BATCH],
    n: usize,
}

impl UdpSocket {
    fn prepare(&self, datagrams: &[Transmit<'_>]) -> Result<Prepared> {
        let n = datagrams.len().min(MAX_BATCH);
        let mut p = Prepared {
            addrs: [([0; 28], 0); MAX_BATCH],
            controls: CmsgBuf::new(),
            spans: [(0, 0); MAX_BATCH],
            n,
        };
        let mut one = CmsgBuf::<{ crate::msg::SEND_CONTROL }>::new();
        for (i, d) in datagrams[..n].iter().enumerate() {
            if let Some(to) = d.to {
                self.core().policy().check_addr(
                    self.core().raw_fd(),
                    Op::Send,
                    AddrUse::SendTo,
                    to,
                )?;
                p.addrs[i].1 = crate::raw::encode_sockaddr_into(to, &mut p.addrs[i].0);
            }
            if d.cmsgs.is_empty() {
                continue;
            }
            one.clear();
            encode_send(self.core(), d.cmsgs, &mut one)?;
            let start = p.controls.as_bytes().len();
            if p.controls.extend_encoded(one.as_bytes()).is_err() {
                // Not for the first datagram (256 < 4096): the batch ends
                // before this one.
                p.n = i;
                break;
            }
            p.spans[i] = (start, p.controls.as_bytes().len());
        }
        Ok(p)
    }

    fn send_prepared(s: &Socket, datagrams: &[Transmit<'_>], p: &Prepared) -> io::Result<usize> {
        let controls = p.controls.as_bytes();
        let entries: [SendEntry<'_>; MAX_BATCH] = std::array::from_fn(|i| SendEntry {
            iov: IoSlice::new(datagrams.get(i).map_or(&[][..], |d| d.data)),
            addr: &p.addrs[i].0[..p.addrs[i].1],
            control: controls.get(p.spans[i].0..p.spans[i].1).unwrap_or_default(),
        });
        sys::sendmmsg(s, &entries[..p.n], 0)
    }

    /// Sends up to 64 datagrams in one `sendmmsg(2)`, each with its own
    /// destination and control messages, waiting for room. Returns how
    /// many were sent (at least one; send the rest in the next call). No
    /// heap allocation.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{RecvSlot, Transmit, UdpSocket};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let a = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let b = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let to = Some(b.local_addr()?);
    ///     let sent = a
    ///         .send_batch(&[Transmit::new(b"one", to), Transmit::new(b"two", to)])
    ///         .await?;
    ///     assert_eq!(sent, 2);
    ///     let (mut x, mut y) = ([0u8; 8], [0u8; 8]);
    ///     let mut slots = [RecvSlot::new(&mut x, &mut []), RecvSlot::new(&mut y, &mut [])];
    ///     let mut got = b.recv_batch(&mut slots).await?;
    ///     if got == 1 {
    ///         got += b.recv_batch(&mut slots[1..]).await?;
    ///     }
    ///     assert_eq!((got, slots[0].data(), slots[1].data()), (2, &b"one"[..], &b"two"[..]));
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// Checked before anything is sent: a denial when the policy refuses a
    /// destination for `SendTo` (`ECONNREFUSED`) or a PKTINFO source for
    /// `SourceViaPktinfo` (`EACCES`); `EINVAL` for a control message that is
    /// not a send type or is out of range; `ENOBUFS` for one datagram's control
    /// messages over 256 bytes encoded (as [`send_msg`](UdpSocket::send_msg)).
    /// The datagrams' control messages share 4 KiB: a batch whose controls
    /// need more is cut before the first datagram that does not fit (the
    /// count says so).
    ///
    /// Then [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EAGAIN`)
    /// when the write timeout runs out, or the kernel's errno for the first
    /// datagram (`EDESTADDRREQ` for `to: None` on an unconnected socket,
    /// `EMSGSIZE`, ...). As `sendmmsg(2)` does, an error after the first
    /// datagram only shortens the count.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: if it is dropped before it completes,
    /// nothing was sent.
    pub async fn send_batch(&self, datagrams: &[Transmit<'_>]) -> Result<usize> {
        self.send_batch_deadline(datagrams, None).await
    }

    /// [`send_batch`](UdpSocket::send_batch) with a deadline (and the write
    /// timeout).
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EAGAIN`) when
    /// `deadline` or the write timeout passes first; otherwise as
    /// [`send_batch`](UdpSocket::send_batch).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn send_batch_deadline(
        &self,
        datagrams: &[Transmit<'_>],
        deadline: impl Into<Option<Instant>>,
    ) -> Result<usize> {
        let p = self.prepare(datagrams)?;
        self.core()
            .io(
                Interest::WRITABLE,
                Dir::Write,
                Op::Send,
                deadline.into(),
                |s| Self::send_prepared(s, datagrams, &p),
            )
            .await
    }

    /// [`send_batch`](UdpSocket::send_batch) once, now: `EAGAIN` if there is
    /// no room.
    ///
    /// # Errors
    ///
    /// `WouldBlock` (errno `EAGAIN`) when the send buffer is full; otherwise as
    /// [`send_batch`](UdpSocket::send_batch).
    pub fn try_send_batch(&self, datagrams: &[Transmit<'_>]) -> Result<usize> {
        let p = self.prepare(datagrams)?;
        self.core().try_io(Interest::WRITABLE, |s| {
            Self::send_prepared(s, datagrams, &p)
        })
    }

    /// Polls to send a batch; see [`send_batch`](UdpSocket::send_batch).
    ///
    /// Only the `Waker` from the `Context` passed to the most recent call is
    /// scheduled to receive a wakeup.
    ///
    /// # Errors
    ///
    /// The errors of [`send_batch`](UdpSocket::send_batch), as `io::Error`s: a
    /// kernel errno stays in `raw_os_error()`, and
    /// [`Error::from`](crate::Error::from) gives a denial back. No timeout
    /// applies: a poll function keeps no timer.
    pub fn poll_send_batch(
        &self,
        cx: &mut Context<'_>,
        datagrams: &[Transmit<'_>],
    ) -> Poll<io::Result<usize>> {
        let p = match self.prepare(datagrams) {
            Ok(p) => p,
            Err(e) => return Poll::Ready(Err(e.into())),
        };
        self.core()
            .poll_write_io(cx, |s| Self::send_prepared(s, datagrams, &p))
    }

    fn recv_into(&self, s: &Socket, slots: &mut [RecvSlot<'_>]) -> io::Result<usize> {
        let policy = self.core().policy();
        let got = sys::recvmmsg(s, slots, 0, policy.control_max());
        // After SHUT_RD a receive that would wait ends at once with one
        // empty message (a blocking Linux `recvmmsg` returns empty ones).
        let got = self.core().eof_if_shut(got, || {
            if let Some(first) = slots.first_mut() {
                first.out = sys::MsgOut::EOF;
            }
            usize::from(!slots.is_empty())
        })?;
        finish_slots(&mut slots[..got], policy.keeps_unknown_cmsgs());
        Ok(got)
    }

    /// Receives up to 64 datagrams (as many as `slots`, and as are queued)
    /// in one `recvmmsg(2)`, waiting for the first. Returns how many slots
    /// were filled; each holds its bytes, sender, flags and control
    /// messages. Wakes on errors too (an ICMP error on a connected socket
    /// ends it with `ECONNREFUSED`). No heap allocation.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EAGAIN`) when
    /// the read timeout runs out; a pending error (`ECONNREFUSED`, ...) ends
    /// the wait with that errno. As `recvmmsg(2)` does, an error after the
    /// first datagram only shortens the count.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: if it is dropped before it completes, no
    /// datagram was received.
    pub async fn recv_batch(&self, slots: &mut [RecvSlot<'_>]) -> Result<usize> {
        self.recv_batch_deadline(slots, None).await
    }

    /// [`recv_batch`](UdpSocket::recv_batch) with a deadline (and the read
    /// timeout).
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`](crate::Error::TimedOut) (`errno()` = `EAGAIN`) when
    /// `deadline` or the read timeout passes first; otherwise as
    /// [`recv_batch`](UdpSocket::recv_batch).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn recv_batch_deadline(
        &self,
        slots: &mut [RecvSlot<'_>],
        deadline: impl Into<Option<Instant>>,
    ) -> Result<usize> {
        self.core()
            .io(RECV_INTEREST, Dir::Read, Op::Recv, deadline.into(), |s| {
                self.recv_into(s, slots)
            })
            .await
    }

    /// [`recv_batch`](UdpSocket::recv_batch) once, now: `EAGAIN` if nothing
    /// is queued.
    ///
    /// # Errors
    ///
    /// `WouldBlock` (errno `EAGAIN`) when nothing is queued; otherwise as
    /// [`recv_batch`](UdpSocket::recv_batch).
    pub fn try_recv_batch(&self, slots: &mut [RecvSlot<'_>]) -> Result<usize> {
        self.core()
            .try_io(RECV_INTEREST, |s| self.recv_into(s, slots))
    }

    /// Polls to receive a batch; like the other poll receives it wakes on
    /// errors too.
    ///
    /// Only the `Waker` from the `Context` passed to the most recent call is
    /// scheduled to receive a wakeup.
    ///
    /// # Errors
    ///
    /// The errors of [`recv_batch`](UdpSocket::recv_batch), as `io::Error`s: a
    /// kernel errno stays in `raw_os_error()`, and
    /// [`Error::from`](crate::Error::from) gives a denial back. No timeout
    /// applies: a poll function keeps no timer.
    pub fn poll_recv_batch(
        &self,
        cx: &mut Context<'_>,
        slots: &mut [RecvSlot<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_recv_io(cx, |s| self.recv_into(s, slots))
    }

    /// Turns UDP GRO on: the kernel may coalesce datagrams of one flow into
    /// one receive, whose segment size a `Cmsg::UdpGro` reports
    /// ([`RecvSlot::gro_segment`]). `Ok(false)` if this kernel has no GRO
    /// for UDP (`ENOPROTOOPT`).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{opts, UdpSocket};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let sock = UdpSocket::bind("127.0.0.1:0").await?;
    ///     if sock.enable_gro()? {
    ///         assert!(sock.get(opts::UdpGro)?);
    ///     }
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `UDP_GRO` off (an error,
    /// unlike the kernel's own `ENOPROTOOPT`); the kernel's other errnos.
    pub fn enable_gro(&self) -> Result<bool> {
        match self.set(crate::opts::UdpGro, true) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == libc::ENOPROTOOPT && !e.is_denied() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends `data` as equal segments of `segment` bytes (the last may be
    /// shorter) to `to`: with UDP GSO, one `sendmsg(2)` that the kernel
    /// cuts; if the kernel or device refuses GSO (`EIO`, `EINVAL`,
    /// `ENOPROTOOPT`), GSO is turned off for this socket and the segments
    /// go out in `sendmmsg(2)` batches instead. Returns the bytes sent.
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
    ///     let data = [7u8; 3000];
    ///     assert_eq!(a.send_gso(&data, 1000, Some(b.local_addr()?)).await?, 3000);
    ///     // Without GRO on `b`, each segment arrives as its own datagram.
    ///     let mut buf = [0u8; 2000];
    ///     for _ in 0..3 {
    ///         assert_eq!(b.recv(&mut buf).await?, 1000);
    ///     }
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// `EINVAL` for a `segment` of 0. Otherwise as
    /// [`send_msg`](UdpSocket::send_msg) on the GSO path (`EMSGSIZE` over 64
    /// KiB) and as [`send_batch`](UdpSocket::send_batch) on the fallback path,
    /// where an error after the first batch loses the count of bytes already
    /// sent.
    ///
    /// More than 64 segments go out as several GSO sends of at most 64
    /// (what every Linux with GSO cuts in one send); an error after the
    /// first of them loses the count of bytes already sent.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe for up to 64 segments on the GSO path (one send). Not
    /// cancel safe beyond that or on the fallback path: if dropped between
    /// sends, the first segments were sent and the rest were not.
    pub async fn send_gso(
        &self,
        data: &[u8],
        segment: u16,
        to: Option<SocketAddr>,
    ) -> Result<usize> {
        if segment == 0 {
            return Err(Error::Io(io::Error::from_raw_os_error(libc::EINVAL)));
        }
        let seg = usize::from(segment);
        if !self.gso_off.load(Ordering::Relaxed) && data.len() > seg {
            // At most GSO_MAX_SEGMENTS segments per send: every kernel since
            // GSO came cuts that many, so an EINVAL here is a refusal of GSO,
            // not of the count.
            let mut sent = 0;
            for piece in data.chunks(seg.saturating_mul(GSO_MAX_SEGMENTS)) {
                let cmsg = [Cmsg::UdpSegment(segment)];
                // A piece of one segment or less is a plain datagram.
                let cmsgs: &[Cmsg<'_>] = if piece.len() > seg { &cmsg } else { &[] };
                let r = self
                    .send_msg(&[IoSlice::new(piece)], to, cmsgs, SendFlags::EMPTY)
                    .await;
                match r {
                    Ok(n) => sent += n,
                    Err(e)
                        if sent == 0
                            && matches!(
                                e.errno(),
                                libc::EIO | libc::EINVAL | libc::ENOPROTOOPT
                            )
                            && !e.is_denied() =>
                    {
                        self.gso_off.store(true, Ordering::Relaxed);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !self.gso_off.load(Ordering::Relaxed) {
                return Ok(sent);
            }
        }
        let mut sent = 0;
        let mut chunks = data.chunks(usize::from(segment)).peekable();
        while chunks.peek().is_some() {
            let mut batch = [Transmit::new(&[], to); MAX_BATCH];
            let mut n = 0;
            for (slot, chunk) in batch.iter_mut().zip(chunks.by_ref()) {
                slot.data = chunk;
                n += 1;
            }
            let mut done = 0;
            while done < n {
                done += self.send_batch(&batch[done..n]).await?;
            }
            sent += batch[..n].iter().map(|t| t.data.len()).sum::<usize>();
        }
        Ok(sent)
    }

    /// Is GSO still used by [`send_gso`](UdpSocket::send_gso) (not turned
    /// off after a refusal)?
    pub fn gso_enabled(&self) -> bool {
        !self.gso_off.load(Ordering::Relaxed)
    }
}
