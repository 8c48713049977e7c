//! Typed control messages: one enum for what may be received and sent, an
//! encoder into a fixed 8-byte-aligned buffer, and a decoder that checks
//! every length and never panics, whatever the bytes (they may come from a
//! hostile guest).
//!
//! The layout is Linux's on 64-bit: a 16-byte header (`cmsg_len: usize`,
//! `cmsg_level: i32`, `cmsg_type: i32`), the payload, padding to 8 bytes.
//! Payloads are read and written byte by byte (never through a cast), so
//! the buffers need no alignment for this code; the aligned [`CmsgBuf`]
//! is what the kernel is handed.
//!
//! # Examples
//!
//! ```
//! use hostsock::cmsg::{Cmsg, CmsgBuf, CmsgIter};
//!
//! let mut buf = CmsgBuf::<64>::new();
//! buf.push(&Cmsg::Tos(0x10)).unwrap();
//! buf.push(&Cmsg::Ttl(7)).unwrap();
//! let seen: Vec<_> = CmsgIter::new(buf.as_bytes()).collect();
//! assert_eq!(seen, [Cmsg::Tos(0x10), Cmsg::Ttl(7)]);
//! ```

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod decode;
mod encode;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

pub use decode::CmsgIter;
pub(crate) use decode::{filter_received, parse_guest_send};
pub use encode::CmsgBuf;

/// `sizeof(struct cmsghdr)` on 64-bit Linux.
pub const HEADER_LEN: usize = 16;

/// `CMSG_ALIGN`: lengths round up to 8 bytes.
pub const fn align(len: usize) -> usize {
    len.saturating_add(7) & !7
}

/// `CMSG_SPACE(len)`: header, payload and padding.
pub const fn space(len: usize) -> usize {
    HEADER_LEN.saturating_add(align(len))
}

/// `CMSG_LEN(len)`: what `cmsg_len` holds for a payload of `len` bytes.
pub const fn cmsg_len(len: usize) -> usize {
    HEADER_LEN.saturating_add(len)
}

/// The extended error of an `IP_RECVERR`/`IPV6_RECVERR` message
/// (`struct sock_extended_err`) with the offender address after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtendedError {
    /// The error (`ECONNREFUSED` for a port unreachable, ...).
    pub errno: u32,
    /// Where it came from (`SO_EE_ORIGIN_ICMP`, `SO_EE_ORIGIN_ICMP6`,
    /// `SO_EE_ORIGIN_LOCAL`, ...).
    pub origin: u8,
    /// The ICMP type.
    pub icmp_type: u8,
    /// The ICMP code.
    pub icmp_code: u8,
    /// `ee_info` (the MTU for "fragmentation needed").
    pub info: u32,
    /// `ee_data`.
    pub data: u32,
    /// The node that sent the error (`SO_EE_OFFENDER`), when there is one.
    pub offender: Option<SocketAddr>,
}

/// A control message, received or to send.
///
/// Which variants may be sent and received follows SPEC.md: receive
/// `SO_TIMESTAMP`, `SO_TIMESTAMPNS`, `IP_TOS`, `IP_TTL`, `IP_PKTINFO`,
/// `IP_ORIGDSTADDR`, `IP_RECVERR`, `IPV6_TCLASS`, `IPV6_HOPLIMIT`,
/// `IPV6_PKTINFO`, `IPV6_ORIGDSTADDR`, `IPV6_RECVERR`, `TCP_INQ`,
/// `UDP_GRO`; send `IP_TOS`, `IP_TTL` (1..=255), `IP_PKTINFO`,
/// `IPV6_TCLASS`, `IPV6_HOPLIMIT` (-1..=255), `IPV6_PKTINFO`,
/// `UDP_SEGMENT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cmsg<'a> {
    /// `IP_PKTINFO`: the interface, the local address the datagram was
    /// sent to (`addr`) and the one a reply would come from (`spec_dst`).
    /// On send, `spec_dst` is the source address to use (and `ifindex` the
    /// interface, 0 for any); `addr` is ignored.
    PktInfoV4 {
        /// The interface index.
        ifindex: u32,
        /// The local address a reply would be sent from.
        spec_dst: Ipv4Addr,
        /// The destination address of the datagram.
        addr: Ipv4Addr,
    },
    /// `IPV6_PKTINFO`: the local address (the destination on receive, the
    /// source on send) and the interface.
    PktInfoV6 {
        /// The address.
        addr: Ipv6Addr,
        /// The interface index.
        ifindex: u32,
    },
    /// `IP_TOS`: the type-of-service byte.
    Tos(u8),
    /// `IPV6_TCLASS`: the traffic class.
    TClass(u8),
    /// `IP_TTL`: the time to live.
    Ttl(u8),
    /// `IPV6_HOPLIMIT`: the hop limit (-1 on send: the route's default).
    HopLimit(i32),
    /// `SO_TIMESTAMP`: the arrival time, microseconds.
    Timestamp {
        /// Seconds since the epoch.
        sec: i64,
        /// Microseconds.
        usec: i64,
    },
    /// `SO_TIMESTAMPNS`: the arrival time, nanoseconds.
    TimestampNs {
        /// Seconds since the epoch.
        sec: i64,
        /// Nanoseconds.
        nsec: i64,
    },
    /// `IP_ORIGDSTADDR`: the original destination (before a redirect).
    OrigDstV4(SocketAddrV4),
    /// `IPV6_ORIGDSTADDR`.
    OrigDstV6(SocketAddrV6),
    /// `IP_RECVERR`: an error from the error queue.
    RecvErrV4(ExtendedError),
    /// `IPV6_RECVERR`.
    RecvErrV6(ExtendedError),
    /// `TCP_INQ`: bytes still queued after this read.
    TcpInq(i32),
    /// `UDP_GRO`: the size of each coalesced segment.
    UdpGro(u16),
    /// `UDP_SEGMENT` (send): the size of each segment to cut the send into.
    UdpSegment(u16),
    /// A message this crate does not list, handed over as it was (only
    /// when the policy says so; otherwise it is dropped and `MSG_CTRUNC`
    /// set).
    Unknown {
        /// `cmsg_level`.
        level: i32,
        /// `cmsg_type`.
        ty: i32,
        /// The payload.
        data: &'a [u8],
    },
}

impl Cmsg<'_> {
    /// `(cmsg_level, cmsg_type)` of this message.
    #[inline]
    pub fn level_type(&self) -> (i32, i32) {
        use libc::*;
        match self {
            Cmsg::PktInfoV4 { .. } => (IPPROTO_IP, IP_PKTINFO),
            Cmsg::PktInfoV6 { .. } => (IPPROTO_IPV6, IPV6_PKTINFO),
            Cmsg::Tos(_) => (IPPROTO_IP, IP_TOS),
            Cmsg::TClass(_) => (IPPROTO_IPV6, IPV6_TCLASS),
            Cmsg::Ttl(_) => (IPPROTO_IP, IP_TTL),
            Cmsg::HopLimit(_) => (IPPROTO_IPV6, IPV6_HOPLIMIT),
            Cmsg::Timestamp { .. } => (SOL_SOCKET, SO_TIMESTAMP),
            Cmsg::TimestampNs { .. } => (SOL_SOCKET, SO_TIMESTAMPNS),
            Cmsg::OrigDstV4(_) => (IPPROTO_IP, IP_ORIGDSTADDR),
            Cmsg::OrigDstV6(_) => (IPPROTO_IPV6, IPV6_ORIGDSTADDR),
            Cmsg::RecvErrV4(_) => (IPPROTO_IP, IP_RECVERR),
            Cmsg::RecvErrV6(_) => (IPPROTO_IPV6, IPV6_RECVERR),
            Cmsg::TcpInq(_) => (IPPROTO_TCP, TCP_CM_INQ),
            Cmsg::UdpGro(_) => (IPPROTO_UDP, UDP_GRO),
            Cmsg::UdpSegment(_) => (IPPROTO_UDP, UDP_SEGMENT),
            Cmsg::Unknown { level, ty, .. } => (*level, *ty),
        }
    }

    /// May this message be sent (a send type, values in range)?
    #[inline]
    pub fn sendable(&self) -> bool {
        match self {
            Cmsg::Tos(_) | Cmsg::TClass(_) | Cmsg::PktInfoV4 { .. } | Cmsg::PktInfoV6 { .. } => {
                true
            }
            Cmsg::Ttl(t) => *t >= 1,
            Cmsg::HopLimit(h) => (-1..=255).contains(h),
            Cmsg::UdpSegment(_) => true,
            _ => false,
        }
    }

    /// The source address a send message asks for, if it is a PKTINFO
    /// one with a non-zero address (checked against the `SourceViaPktinfo`
    /// rules).
    #[inline]
    pub fn pktinfo_source(&self) -> Option<std::net::IpAddr> {
        match self {
            Cmsg::PktInfoV4 { spec_dst, .. } if !spec_dst.is_unspecified() => {
                Some((*spec_dst).into())
            }
            Cmsg::PktInfoV6 { addr, .. } if !addr.is_unspecified() => Some((*addr).into()),
            _ => None,
        }
    }
}

/// Is `(level, ty)` a message type this crate decodes on receive?
pub(crate) fn is_known_receive(level: i32, ty: i32) -> bool {
    use libc::*;
    // By level first: each arm is a handful of small constants, which the
    // compiler turns into a bit test.
    match level {
        SOL_SOCKET => matches!(ty, SO_TIMESTAMP | SO_TIMESTAMPNS),
        IPPROTO_IP => matches!(
            ty,
            IP_TOS | IP_TTL | IP_PKTINFO | IP_ORIGDSTADDR | IP_RECVERR
        ),
        IPPROTO_IPV6 => matches!(
            ty,
            IPV6_TCLASS | IPV6_HOPLIMIT | IPV6_PKTINFO | IPV6_ORIGDSTADDR | IPV6_RECVERR
        ),
        IPPROTO_TCP => ty == TCP_CM_INQ,
        IPPROTO_UDP => ty == UDP_GRO,
        _ => false,
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests;
