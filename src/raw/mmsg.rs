//! The raw layer's batches: `sendmmsg`/`recvmmsg` with Linux's semantics,
//! through the same checks as `sendmsg`/`recvmsg`.

use std::io::IoSlice;
use std::time::Duration;

use socket2::Socket;
use tokio::io::Interest;
use tokio::time::Instant;

use super::msg::{MAX_GUEST_CONTROL, SendError};
use super::sockaddr;
use super::{Errno, RawSocket, errno};
use crate::RecvSlot;
use crate::cmsg::{CmsgBuf, parse_guest_send};
use crate::deadline::Dir;
use crate::dgram::finish_slots;
use crate::error::Op;
use crate::policy::{AddrUse, CONTROL_MAX};
use crate::sys::{self, MAX_BATCH, SendEntry};

/// One message of a raw [`sendmmsg`](RawSocket::sendmmsg): the guest's
/// payload, destination bytes (empty: connected) and control bytes.
#[derive(Clone, Copy, Debug)]
pub struct RawTransmit<'a> {
    /// The payload.
    pub data: &'a [u8],
    /// Destination sockaddr bytes (empty: the connected peer).
    pub to: &'a [u8],
    /// The guest's control bytes (parsed and written anew).
    pub control: &'a [u8],
}

/// Control bytes of a raw batch, all its messages together (each message
/// may have up to [`CONTROL_MAX`] of them, as in `sendmsg`).
const BATCH_CONTROL: usize = 8192;

impl RawSocket {
    /// `sendmmsg(2)`: up to `vlen` messages (at most 64 here, as the host
    /// is asked; Linux caps at 1024). Each message's destination and
    /// control messages are checked as for [`sendmsg`](RawSocket::sendmsg)
    /// before anything is sent: one refused message refuses the call.
    /// Returns how many were sent; like Linux, an error after the first
    /// message is not reported (the count is). The messages' control
    /// messages, written anew, share 8 KiB: a batch whose controls need
    /// more is cut before the first message that does not fit (the count
    /// says so; Linux too may send fewer than `vlen`).
    ///
    /// # Errors
    ///
    /// Refused before anything is sent (a refusal of any of the first 64
    /// messages refuses the call):
    ///
    /// * `EINVAL` for `flags` outside the policy's send mask (the audit
    ///   hook sees it);
    /// * `EBADF` if an earlier renewal of the registration failed;
    /// * `ENOBUFS` for a message's control buffer over
    ///   [`MAX_GUEST_CONTROL`], or control messages that, written anew, do
    ///   not fit 1024 bytes (per message, as in
    ///   [`sendmsg`](RawSocket::sendmsg));
    /// * as for [`sendmsg`](RawSocket::sendmsg), per message: `EINVAL` for
    ///   a malformed, unsent or out-of-range control message, `EACCES` for
    ///   a denied PKTINFO source, `EINVAL` for a malformed destination,
    ///   `ECONNREFUSED` for a denied one, `EACCES` for a denied implicit
    ///   bind.
    ///
    /// From the facade: `EAGAIN` when a blocking call's wait for room
    /// outlasts `SO_SNDTIMEO`. Everything else is the host kernel's errno
    /// for the first message, unchanged (`EPIPE` with
    /// [`SendError::raise_sigpipe`] set when the guest did not pass
    /// `MSG_NOSIGNAL`); once a message is sent, the count is returned
    /// instead.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: if it is dropped before it completes,
    /// nothing was sent.
    pub async fn sendmmsg(&self, msgs: &[RawTransmit<'_>], flags: i32) -> Result<usize, SendError> {
        self.check_flags(Op::Send, flags, self.policy().send_flags())?;
        let core = self.core()?;
        let mut n = msgs.len().min(MAX_BATCH);
        // Each message's control is written anew as `sendmsg` does (into
        // `one`, same room, same errnos), then packed into `all`.
        let mut one = CmsgBuf::<CONTROL_MAX>::new();
        let mut all = CmsgBuf::<BATCH_CONTROL>::new();
        let mut spans = [(0usize, 0usize); MAX_BATCH];
        for (i, (m, span)) in msgs.iter().take(n).zip(spans.iter_mut()).enumerate() {
            if m.control.len() > MAX_GUEST_CONTROL {
                return Err(Errno::ENOBUFS.into());
            }
            parse_guest_send(m.control, &mut one, |ip| {
                self.policy()
                    .check_addr(
                        core.raw_fd(),
                        Op::Send,
                        AddrUse::SourceViaPktinfo,
                        std::net::SocketAddr::new(ip, 0),
                    )
                    .map_err(|d| Errno::new(d.errno))
            })?;
            let start = all.as_bytes().len();
            if all.extend_encoded(one.as_bytes()).is_err() {
                // Cannot happen for the first (1024 < 8192): the batch ends
                // before this message.
                n = i;
                break;
            }
            *span = (start, all.as_bytes().len());
            self.check_send_to(&core, m.to, flags)?;
        }
        let packed = all.as_bytes();
        let entries: [SendEntry<'_>; MAX_BATCH] = std::array::from_fn(|i| SendEntry {
            iov: IoSlice::new(msgs.get(i).map_or(&[][..], |m| m.data)),
            addr: msgs.get(i).map_or(&[][..], |m| sockaddr::host_bytes(m.to)),
            control: spans
                .get(i)
                .and_then(|&(a, b)| packed.get(a..b))
                .unwrap_or_default(),
        });
        let host_flags = flags & !libc::MSG_DONTWAIT;
        let send = |s: &Socket| sys::sendmmsg(s, entries.get(..n).unwrap_or_default(), host_flags);
        let r = if self.nonblocking() || flags & libc::MSG_DONTWAIT != 0 {
            core.try_io_now(send).map_err(|e| Errno::from_io(&e))
        } else {
            core.io(Interest::WRITABLE, Dir::Write, Op::Send, None, send)
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

    /// `recvmmsg(2)` into `slots` (at most 64 per host call). As Linux: a
    /// non-blocking socket or `MSG_DONTWAIT` takes what is queued now
    /// (`EAGAIN` if nothing); `MSG_WAITFORONE` waits for the first message
    /// only; otherwise it waits until every slot is filled, and `timeout`
    /// (checked after each message arrives, as Linux checks it) ends the
    /// call early. The receive timeout bounds each wait; an expiry with
    /// messages already received returns them.
    ///
    /// # Errors
    ///
    /// `EINVAL` for `flags` outside the policy's receive mask and
    /// `MSG_WAITFORONE` (the audit hook sees it), and for `MSG_WAITALL`
    /// (refused here without asking the policy; the audit hook sees
    /// nothing). `EBADF` if an earlier renewal of the registration failed.
    /// From the facade: `EAGAIN` when a blocking call's wait for the first
    /// message outlasts `SO_RCVTIMEO` (`timeout` never gives an error).
    /// Everything else is the host kernel's errno, unchanged (`EAGAIN` when
    /// the call may not wait and nothing is queued, a pending ICMP error,
    /// ...); once a message is received, a later error or timeout returns
    /// the count instead.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe until the first message arrives; dropped later, the
    /// messages already received are lost.
    pub async fn recvmmsg(
        &self,
        slots: &mut [RecvSlot<'_>],
        flags: i32,
        timeout: Option<Duration>,
    ) -> Result<usize, Errno> {
        let allowed = self.policy().recv_flags() | libc::MSG_WAITFORONE;
        self.check_flags(Op::Recv, flags, allowed)?;
        let core = self.core()?;
        let keep = self.policy().keeps_unknown_cmsgs();
        let host_flags = flags & !(libc::MSG_DONTWAIT | libc::MSG_WAITFORONE);
        let control_max = self.policy().control_max();
        let no_wait = self.nonblocking() || flags & (libc::MSG_DONTWAIT | libc::MSG_ERRQUEUE) != 0;
        let once = |s: &Socket, slots: &mut [RecvSlot<'_>]| -> std::io::Result<usize> {
            let got = sys::recvmmsg(s, slots, host_flags, control_max);
            // After SHUT_RD, Linux's blocking recvmmsg fills every slot with
            // an empty message (one with MSG_WAITFORONE); a non-blocking one
            // gives EAGAIN.
            if no_wait {
                let got = got?;
                finish_slots(slots.get_mut(..got).unwrap_or_default(), keep);
                return Ok(got);
            }
            let got = core.eof_if_shut(got, || {
                let n = if flags & libc::MSG_WAITFORONE != 0 {
                    1
                } else {
                    slots.len()
                };
                for slot in slots.iter_mut().take(n) {
                    slot.out = sys::MsgOut::EOF;
                }
                n.min(slots.len())
            })?;
            finish_slots(slots.get_mut(..got).unwrap_or_default(), keep);
            Ok(got)
        };
        if no_wait {
            return core
                .try_io_now(|s| once(s, slots))
                .map_err(|e| Errno::from_io(&e));
        }
        let started = Instant::now();
        let mut total = 0;
        let interest = self.recv_interest();
        while total < slots.len() {
            let step = core
                .io(interest, Dir::Read, Op::Recv, None, |s| {
                    once(s, slots.get_mut(total..).unwrap_or_default())
                })
                .await;
            match step {
                Ok(n) => total = total.saturating_add(n),
                Err(_) if total > 0 => break,
                Err(e) => return Err(errno(e)),
            }
            let timed_out = timeout.is_some_and(|t| started.elapsed() >= t);
            if flags & libc::MSG_WAITFORONE != 0 || timed_out {
                break;
            }
        }
        Ok(total)
    }
}
