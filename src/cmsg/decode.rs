//! Reading control messages: every length checked, payloads read byte by
//! byte, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Cmsg, CmsgBuf, ExtendedError, HEADER_LEN, align, is_known_receive};
use crate::raw::Errno;

/// One raw entry: `(level, type, payload)`, and what follows it.
struct Entry<'a> {
    level: i32,
    ty: i32,
    data: &'a [u8],
    /// The bytes after this entry's padding (empty at the end).
    rest: &'a [u8],
}

/// The header at the start of `buf`: `(cmsg_len, level, type)`, or `None`
/// when fewer than a header's bytes are left.
#[inline]
fn header(buf: &[u8]) -> Option<(u64, i32, i32)> {
    let h = buf.first_chunk::<HEADER_LEN>()?;
    let len = u64::from_ne_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
    let level = i32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
    let ty = i32::from_ne_bytes([h[12], h[13], h[14], h[15]]);
    Some((len, level, ty))
}

/// The entry at the start of `buf`, if a whole, well-formed one is there.
/// `Ok(None)` ends the walk (fewer than a header's bytes left); `Err` is a
/// `cmsg_len` shorter than the header or longer than what is left.
#[inline]
fn first_entry(buf: &[u8]) -> Result<Option<Entry<'_>>, ()> {
    let Some((len, level, ty)) = header(buf) else {
        return Ok(None);
    };
    let len = usize::try_from(len).map_err(|_| ())?;
    if len < HEADER_LEN {
        return Err(());
    }
    let data = buf.get(HEADER_LEN..len).ok_or(())?;
    // The last entry's padding may be missing: the walk then ends.
    let rest = buf.get(align(len)..).unwrap_or_default();
    Ok(Some(Entry {
        level,
        ty,
        data,
        rest,
    }))
}

/// An iterator over the control messages in a buffer. It stops at the
/// first malformed entry (see [`CmsgIter::malformed`]).
#[derive(Clone, Debug)]
pub struct CmsgIter<'a> {
    rest: &'a [u8],
    malformed: bool,
}

impl<'a> CmsgIter<'a> {
    /// Walks `buf` (the `msg_controllen` bytes the kernel reported).
    pub fn new(buf: &'a [u8]) -> CmsgIter<'a> {
        CmsgIter {
            rest: buf,
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

    #[inline]
    fn next(&mut self) -> Option<Cmsg<'a>> {
        match first_entry(self.rest) {
            Ok(Some(e)) => {
                self.rest = e.rest;
                Some(decode(e.level, e.ty, e.data))
            }
            Ok(None) => None,
            Err(()) => {
                self.malformed = true;
                self.rest = &[];
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

fn i64_pair(b: &[u8]) -> Option<(i64, i64)> {
    let p = b.first_chunk::<16>()?;
    Some((
        i64::from_ne_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]]),
        i64::from_ne_bytes([p[8], p[9], p[10], p[11], p[12], p[13], p[14], p[15]]),
    ))
}

/// A byte-or-int payload (`IP_TOS` arrives as one byte, `IP_TTL` as an
/// int; both forms are accepted).
#[inline]
fn small_int(b: &[u8]) -> Option<i32> {
    match b {
        [v] => Some(i32::from(*v)),
        _ => int_at(b, 0),
    }
}

fn inet_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    crate::raw::inet_addr(b.get(..crate::raw::SOCKADDR_MAX).unwrap_or(b))
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
#[inline]
fn decode(level: i32, ty: i32, b: &[u8]) -> Cmsg<'_> {
    use libc::*;
    let unknown = Cmsg::Unknown { level, ty, data: b };
    // The receive path's common messages first, each read straight from a
    // fixed-size chunk.
    match (level, ty) {
        (IPPROTO_IP, IP_PKTINFO) => match b.first_chunk::<12>() {
            Some(p) => Cmsg::PktInfoV4 {
                ifindex: u32::from_ne_bytes([p[0], p[1], p[2], p[3]]),
                spec_dst: Ipv4Addr::new(p[4], p[5], p[6], p[7]),
                addr: Ipv4Addr::new(p[8], p[9], p[10], p[11]),
            },
            None => unknown,
        },
        (IPPROTO_IP, IP_TOS) => small_int(b).map_or(unknown, |v| Cmsg::Tos(v as u8)),
        (IPPROTO_IPV6, IPV6_PKTINFO) => match b.first_chunk::<20>() {
            Some(p) => {
                let mut addr = [0u8; 16];
                addr.copy_from_slice(&p[..16]);
                Cmsg::PktInfoV6 {
                    addr: Ipv6Addr::from(addr),
                    ifindex: u32::from_ne_bytes([p[16], p[17], p[18], p[19]]),
                }
            }
            None => unknown,
        },
        (IPPROTO_IPV6, IPV6_TCLASS) => small_int(b).map_or(unknown, |v| Cmsg::TClass(v as u8)),
        _ => decode_other(level, ty, b).unwrap_or(unknown),
    }
}

/// [`decode`] for the rest of the listed types.
fn decode_other(level: i32, ty: i32, b: &[u8]) -> Option<Cmsg<'_>> {
    use libc::*;
    match (level, ty) {
        (IPPROTO_IP, IP_TTL) => small_int(b).map(|v| Cmsg::Ttl(v as u8)),
        (IPPROTO_IPV6, IPV6_HOPLIMIT) => int_at(b, 0).map(Cmsg::HopLimit),
        (SOL_SOCKET, SO_TIMESTAMP) => i64_pair(b).map(|(sec, usec)| Cmsg::Timestamp { sec, usec }),
        (SOL_SOCKET, SO_TIMESTAMPNS) => {
            i64_pair(b).map(|(sec, nsec)| Cmsg::TimestampNs { sec, nsec })
        }
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
    }
}

/// Removes, in place, the messages this crate does not list from the
/// first `len` bytes of `buf` (unless `keep_unknown`), and a malformed
/// tail. Returns the new length and whether anything was dropped (the
/// caller then sets `MSG_CTRUNC`, as SPEC.md says).
#[inline(always)]
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
    compact_known(buf, len)
}

/// [`filter_received`]'s slow path: moves the listed messages down over
/// the others.
#[cold]
fn compact_known(buf: &mut [u8], len: usize) -> (usize, bool) {
    let (mut read, mut write, mut dropped) = (0usize, 0usize, false);
    loop {
        let filled = buf.get(..len).unwrap_or_default();
        let (level, ty, cmsg_len, next) = match filled.get(read..).map(first_entry) {
            Some(Ok(Some(e))) => (
                e.level,
                e.ty,
                e.data.len().saturating_add(HEADER_LEN),
                len.saturating_sub(e.rest.len()),
            ),
            Some(Ok(None)) | None => break,
            Some(Err(())) => {
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
/// [`first_entry`]).
#[inline]
fn all_known(mut buf: &[u8]) -> bool {
    while let Some((len, level, ty)) = header(buf) {
        let Ok(len) = usize::try_from(len) else {
            return false;
        };
        if len < HEADER_LEN || len > buf.len() || !is_known_receive(level, ty) {
            return false;
        }
        buf = buf.get(align(len)..).unwrap_or_default();
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
    let mut rest = bytes;
    while let Some(e) = first_entry(rest).map_err(|()| Errno::EINVAL)? {
        rest = e.rest;
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
