//! Reading control messages: every length checked, payloads read byte by
//! byte, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Cmsg, CmsgBuf, ExtendedError, HEADER_LEN, align, is_known_receive};
use crate::raw::Errno;

/// One raw entry: `(level, type, payload)`, and where the next one starts.
struct Entry<'a> {
    level: i32,
    ty: i32,
    data: &'a [u8],
    next: usize,
}

/// The entry at `pos`, if a whole, well-formed one is there. `None` ends
/// the walk: fewer than a header's bytes left, a `cmsg_len` shorter than
/// the header, or longer than what is left.
fn entry_at(buf: &[u8], pos: usize) -> Result<Option<Entry<'_>>, ()> {
    let Some(header) = buf
        .get(pos..)
        .and_then(|rest| rest.first_chunk::<HEADER_LEN>())
    else {
        return Ok(None);
    };
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[..8]);
    let cmsg_len = u64::from_ne_bytes(len);
    let level = i32::from_ne_bytes([header[8], header[9], header[10], header[11]]);
    let ty = i32::from_ne_bytes([header[12], header[13], header[14], header[15]]);
    let cmsg_len = usize::try_from(cmsg_len).map_err(|_| ())?;
    if cmsg_len < HEADER_LEN {
        return Err(());
    }
    let end = pos.checked_add(cmsg_len).ok_or(())?;
    let data = buf
        .get(pos..end)
        .and_then(|entry| entry.get(HEADER_LEN..))
        .ok_or(())?;
    let next = pos.checked_add(align(cmsg_len)).ok_or(())?;
    Ok(Some(Entry {
        level,
        ty,
        data,
        next,
    }))
}

/// An iterator over the control messages in a buffer. It stops at the
/// first malformed entry (see [`CmsgIter::malformed`]).
#[derive(Clone, Debug)]
pub struct CmsgIter<'a> {
    buf: &'a [u8],
    pos: usize,
    malformed: bool,
}

impl<'a> CmsgIter<'a> {
    /// Walks `buf` (the `msg_controllen` bytes the kernel reported).
    pub fn new(buf: &'a [u8]) -> CmsgIter<'a> {
        CmsgIter {
            buf,
            pos: 0,
            malformed: false,
        }
    }

    /// Did the walk stop at a malformed entry (a length shorter than the
    /// header or longer than the buffer)?
    pub fn malformed(&self) -> bool {
        self.malformed
    }
}

impl<'a> Iterator for CmsgIter<'a> {
    type Item = Cmsg<'a>;

    fn next(&mut self) -> Option<Cmsg<'a>> {
        match entry_at(self.buf, self.pos) {
            Ok(Some(e)) => {
                self.pos = e.next;
                Some(decode(e.level, e.ty, e.data))
            }
            Ok(None) => None,
            Err(()) => {
                self.malformed = true;
                self.pos = self.buf.len();
                None
            }
        }
    }
}

fn int_at(b: &[u8], at: usize) -> Option<i32> {
    b.get(at..)?.first_chunk().map(|s| i32::from_ne_bytes(*s))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    int_at(b, at).map(|v| v as u32)
}

fn i64_at(b: &[u8], at: usize) -> Option<i64> {
    b.get(at..)?.first_chunk().map(|s| i64::from_ne_bytes(*s))
}

fn v4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    b.get(at..)?.first_chunk::<4>().map(|s| Ipv4Addr::from(*s))
}

fn v6_at(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    b.get(at..)?.first_chunk::<16>().map(|s| Ipv6Addr::from(*s))
}

/// A byte-or-int payload (`IP_TOS` arrives as one byte, `IP_TTL` as an
/// int; both forms are accepted).
fn small_int(b: &[u8]) -> Option<i32> {
    match b.len() {
        1 => b.first().map(|&v| i32::from(v)),
        n if n >= 4 => int_at(b, 0),
        _ => None,
    }
}

fn inet_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    crate::raw::SockaddrBytes::from_bytes(b).to_socket_addr()
}

fn extended_error(b: &[u8]) -> Option<ExtendedError> {
    let errno = u32_at(b, 0)?;
    let origin = *b.get(4)?;
    let icmp_type = *b.get(5)?;
    let icmp_code = *b.get(6)?;
    let info = u32_at(b, 8)?;
    let data = u32_at(b, 12)?;
    let offender = b
        .get(16..)
        .and_then(inet_sockaddr)
        .filter(|a| !a.ip().is_unspecified() || a.port() != 0);
    Some(ExtendedError {
        errno,
        origin,
        icmp_type,
        icmp_code,
        info,
        data,
        offender,
    })
}

/// The typed form of one message; a known type whose payload is too short
/// comes back as `Unknown` with its bytes.
fn decode(level: i32, ty: i32, b: &[u8]) -> Cmsg<'_> {
    use libc::*;
    let known = match (level, ty) {
        (IPPROTO_IP, IP_PKTINFO) => (|| {
            Some(Cmsg::PktInfoV4 {
                ifindex: u32_at(b, 0)?,
                spec_dst: v4_at(b, 4)?,
                addr: v4_at(b, 8)?,
            })
        })(),
        (IPPROTO_IPV6, IPV6_PKTINFO) => (|| {
            Some(Cmsg::PktInfoV6 {
                addr: v6_at(b, 0)?,
                ifindex: u32_at(b, 16)?,
            })
        })(),
        (IPPROTO_IP, IP_TOS) => small_int(b).map(|v| Cmsg::Tos(v as u8)),
        (IPPROTO_IP, IP_TTL) => small_int(b).map(|v| Cmsg::Ttl(v as u8)),
        (IPPROTO_IPV6, IPV6_TCLASS) => small_int(b).map(|v| Cmsg::TClass(v as u8)),
        (IPPROTO_IPV6, IPV6_HOPLIMIT) => int_at(b, 0).map(Cmsg::HopLimit),
        (SOL_SOCKET, SO_TIMESTAMP) => (|| {
            Some(Cmsg::Timestamp {
                sec: i64_at(b, 0)?,
                usec: i64_at(b, 8)?,
            })
        })(),
        (SOL_SOCKET, SO_TIMESTAMPNS) => (|| {
            Some(Cmsg::TimestampNs {
                sec: i64_at(b, 0)?,
                nsec: i64_at(b, 8)?,
            })
        })(),
        (IPPROTO_IP, IP_ORIGDSTADDR) => match inet_sockaddr(b) {
            Some(SocketAddr::V4(a)) => Some(Cmsg::OrigDstV4(a)),
            _ => None,
        },
        (IPPROTO_IPV6, IPV6_ORIGDSTADDR) => match inet_sockaddr(b) {
            Some(SocketAddr::V6(a)) => Some(Cmsg::OrigDstV6(a)),
            _ => None,
        },
        (IPPROTO_IP, IP_RECVERR) => extended_error(b).map(Cmsg::RecvErrV4),
        (IPPROTO_IPV6, IPV6_RECVERR) => extended_error(b).map(Cmsg::RecvErrV6),
        (IPPROTO_TCP, TCP_CM_INQ) => int_at(b, 0).map(Cmsg::TcpInq),
        (IPPROTO_UDP, UDP_GRO) => int_at(b, 0)
            .and_then(|v| u16::try_from(v).ok())
            .map(Cmsg::UdpGro),
        (IPPROTO_UDP, UDP_SEGMENT) => <&[u8; 2]>::try_from(b)
            .ok()
            .map(|s| Cmsg::UdpSegment(u16::from_ne_bytes(*s))),
        _ => None,
    };
    known.unwrap_or(Cmsg::Unknown { level, ty, data: b })
}

/// Removes, in place, the messages this crate does not list from the
/// first `len` bytes of `buf` (unless `keep_unknown`), and a malformed
/// tail. Returns the new length and whether anything was dropped (the
/// caller then sets `MSG_CTRUNC`, as SPEC.md says).
pub(crate) fn filter_received(buf: &mut [u8], len: usize, keep_unknown: bool) -> (usize, bool) {
    let len = len.min(buf.len());
    if len == 0 || keep_unknown {
        // Nothing to drop (a malformed tail is the decoder's to stop at).
        return (len, false);
    }
    // The common case: every message well-formed and listed. One pass over
    // the headers, nothing moved.
    if all_known(buf.get(..len).unwrap_or_default()) {
        return (len, false);
    }
    let (mut read, mut write, mut dropped) = (0usize, 0usize, false);
    loop {
        let entry = buf
            .get(..len)
            .map_or(Ok(None), |filled| entry_at(filled, read));
        let (level, ty, cmsg_len, next) = match entry {
            Ok(Some(e)) => (
                e.level,
                e.ty,
                e.data.len().saturating_add(HEADER_LEN),
                e.next,
            ),
            Ok(None) => break,
            Err(()) => {
                dropped = true;
                break;
            }
        };
        let end = read.saturating_add(align(cmsg_len)).min(len);
        if is_known_receive(level, ty) {
            if read != write {
                buf.copy_within(read..end, write);
            }
            write = write.saturating_add(end.saturating_sub(read));
        } else {
            dropped = true;
        }
        read = next;
    }
    (write, dropped)
}

/// Are all the messages in `buf` whole, well-formed and listed? A tail
/// shorter than a header is allowed (the walk ends there, as in
/// [`entry_at`]).
fn all_known(buf: &[u8]) -> bool {
    let mut pos = 0usize;
    while let Some(h) = buf
        .get(pos..)
        .and_then(|rest| rest.first_chunk::<HEADER_LEN>())
    {
        let (len, rest) = h.split_first_chunk::<8>().unwrap_or((&[0; 8], &[]));
        let Ok(cmsg_len) = usize::try_from(u64::from_ne_bytes(*len)) else {
            return false;
        };
        let (level, ty) = match rest.first_chunk::<8>() {
            Some(lt) => (
                i32::from_ne_bytes([lt[0], lt[1], lt[2], lt[3]]),
                i32::from_ne_bytes([lt[4], lt[5], lt[6], lt[7]]),
            ),
            None => return false,
        };
        if cmsg_len < HEADER_LEN || !super::is_known_receive(level, ty) {
            return false;
        }
        match pos.checked_add(cmsg_len) {
            Some(end) if end <= buf.len() => {}
            _ => return false,
        }
        match pos.checked_add(align(cmsg_len)) {
            Some(next) => pos = next,
            None => return false,
        }
    }
    true
}

/// Reads a guest's send control messages (hostile bytes) into typed ones,
/// checks each (send types only, values in range; `check_source` sees every
/// PKTINFO source address), and writes them anew into `out`: the guest's
/// bytes never reach the kernel. `EINVAL` for a malformed `cmsg_len`, a
/// type that cannot be sent, or a payload of the wrong size; `ENOBUFS` if
/// the messages do not fit `out`. Fewer than a header's bytes at the end
/// are ignored, as Linux does.
pub(crate) fn parse_guest_send<const N: usize>(
    bytes: &[u8],
    out: &mut CmsgBuf<N>,
    mut check_source: impl FnMut(IpAddr) -> Result<(), Errno>,
) -> Result<(), Errno> {
    use libc::*;
    out.clear();
    let mut pos = 0;
    while let Some(e) = entry_at(bytes, pos).map_err(|()| Errno::EINVAL)? {
        pos = e.next;
        let b = e.data;
        let m = match (e.level, e.ty) {
            // Linux: an int or a byte, 0..=255.
            (IPPROTO_IP, IP_TOS) => small_int(b)
                .filter(|v| (b.len() == 1 || b.len() == 4) && (0..=255).contains(v))
                .map(|v| Cmsg::Tos(v as u8)),
            (IPPROTO_IP, IP_TTL) => int_at(b, 0)
                .filter(|v| b.len() == 4 && (1..=255).contains(v))
                .map(|v| Cmsg::Ttl(v as u8)),
            // -1 is accepted by Linux (what it then sends is the kernel's
            // business): written on as the same four bytes.
            (IPPROTO_IPV6, IPV6_TCLASS) if int_at(b, 0) == Some(-1) && b.len() == 4 => {
                Some(Cmsg::Unknown {
                    level: e.level,
                    ty: e.ty,
                    data: b,
                })
            }
            (IPPROTO_IPV6, IPV6_TCLASS) => int_at(b, 0)
                .filter(|v| b.len() == 4 && (0..=255).contains(v))
                .map(|v| Cmsg::TClass(v as u8)),
            (IPPROTO_IPV6, IPV6_HOPLIMIT) => int_at(b, 0)
                .filter(|v| b.len() == 4 && (-1..=255).contains(v))
                .map(Cmsg::HopLimit),
            // Linux wants exactly `struct in_pktinfo` and exactly a u16 for
            // the segment size, at least `struct in6_pktinfo`.
            (IPPROTO_IP, IP_PKTINFO) | (IPPROTO_UDP, UDP_SEGMENT)
                if b.len() != if e.ty == IP_PKTINFO { 12 } else { 2 } =>
            {
                None
            }
            (IPPROTO_IP, IP_PKTINFO)
            | (IPPROTO_IPV6, IPV6_PKTINFO)
            | (IPPROTO_UDP, UDP_SEGMENT) => {
                Some(decode(e.level, e.ty, b)).filter(|m| !matches!(m, Cmsg::Unknown { .. }))
            }
            _ => None,
        }
        .ok_or(Errno::EINVAL)?;
        if let Some(src) = m.pktinfo_source() {
            check_source(src)?;
        }
        out.push(&m)?;
    }
    Ok(())
}
