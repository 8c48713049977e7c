//! Guest sockaddr bytes: checked as Linux checks them, parsed for the
//! address rules, and handed to the host as the guest wrote them.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::Errno;

/// `sizeof(struct sockaddr_storage)`: the longest address Linux accepts.
pub(crate) const MAX_LEN: usize = 128;
/// `sizeof(struct sockaddr_in6)`: what longer addresses are cut to.
pub(crate) const IN6_LEN: usize = 28;
const IN_LEN: usize = 16;
/// `SIN6_LEN_RFC2133`: an IPv6 address without the scope id.
const IN6_MIN_LEN: usize = 24;

/// What a guest sockaddr names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// An INET address (`AF_INET`, `AF_INET6`; `AF_UNSPEC` read as INET
    /// where the kernel reads it so for bind).
    Inet(SocketAddr),
    /// `AF_UNSPEC` for connect: dissolve the association.
    Unspec,
    /// Another family, or fewer bytes than the family in them needs: no
    /// INET socket can reach anything with these (Linux's minimums are the
    /// same), so the host answers with its own errno, which depends on the
    /// socket's family and state (`EINVAL`, `EAFNOSUPPORT`, `EISCONN`, ...).
    HostDecides,
}

/// Parses a guest address for the address rules. Longer than 128 bytes (or
/// shorter than the family field) is `EINVAL` here, as Linux's
/// `move_addr_to_kernel` says; everything shorter than its family needs is
/// left to the host. `bind` reads an `AF_UNSPEC` address as `AF_INET` (what
/// `inet_bind` accepts for `INADDR_ANY`).
pub(crate) fn parse(bytes: &[u8], for_bind: bool) -> Result<Parsed, Errno> {
    let family = match bytes.first_chunk::<2>() {
        Some(f) if bytes.len() <= MAX_LEN => i32::from(u16::from_ne_bytes(*f)),
        _ => return Err(Errno::EINVAL),
    };
    match family {
        libc::AF_INET => v4(bytes),
        libc::AF_UNSPEC if for_bind => v4(bytes),
        libc::AF_UNSPEC => Ok(Parsed::Unspec),
        libc::AF_INET6 => {
            let Some(b) = bytes.first_chunk::<IN6_MIN_LEN>() else {
                return Ok(Parsed::HostDecides);
            };
            let port = u16::from_be_bytes([b[2], b[3]]);
            let flow = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&b[8..24]);
            let scope = bytes
                .get(IN6_MIN_LEN..)
                .and_then(|s| s.first_chunk::<4>())
                .map_or(0, |s| u32::from_ne_bytes(*s));
            Ok(Parsed::Inet(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            ))))
        }
        _ => Ok(Parsed::HostDecides),
    }
}

fn v4(bytes: &[u8]) -> Result<Parsed, Errno> {
    let Some(b) = bytes.first_chunk::<IN_LEN>() else {
        return Ok(Parsed::HostDecides);
    };
    let port = u16::from_be_bytes([b[2], b[3]]);
    let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
    Ok(Parsed::Inet(SocketAddr::V4(SocketAddrV4::new(ip, port))))
}

/// The source address a typed receive got in a `sockaddr_in6`-sized
/// buffer, `len` being the kernel's `msg_namelen` (the common families
/// read straight from the fixed buffer; anything else as [`inet_addr`]).
#[inline]
pub(crate) fn received_addr(b: &[u8; IN6_LEN], len: usize) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes([b[0], b[1]]));
    let port = u16::from_be_bytes([b[2], b[3]]);
    if family == libc::AF_INET && len >= IN_LEN {
        let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
        return Some(SocketAddr::V4(SocketAddrV4::new(ip, port)));
    }
    if family == libc::AF_INET6 && len >= IN6_LEN {
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&b[8..24]);
        let flow = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let scope = u32::from_ne_bytes([b[24], b[25], b[26], b[27]]);
        return Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            flow,
            scope,
        )));
    }
    inet_addr(b.get(..len).unwrap_or(b))
}

/// The INET address in sockaddr bytes the kernel wrote, if any.
pub(crate) fn inet_addr(bytes: &[u8]) -> Option<SocketAddr> {
    match parse(bytes, false) {
        Ok(Parsed::Inet(a)) => Some(a),
        _ => None,
    }
}

/// The bytes handed to the host: cut to `sizeof(sockaddr_in6)`.
pub(crate) fn host_bytes(bytes: &[u8]) -> &[u8] {
    bytes.get(..IN6_LEN).unwrap_or(bytes)
}

/// A socket address as the kernel wrote it: up to 128 bytes, no heap.
#[derive(Clone, Copy)]
pub struct SockaddrBytes {
    buf: [u8; MAX_LEN],
    len: usize,
}

impl SockaddrBytes {
    /// Bytes as a guest wrote them (cut at 128).
    pub fn from_bytes(bytes: &[u8]) -> SockaddrBytes {
        SockaddrBytes::new(bytes)
    }

    pub(crate) fn new(bytes: &[u8]) -> SockaddrBytes {
        let mut buf = [0u8; MAX_LEN];
        let src = bytes.get(..MAX_LEN).unwrap_or(bytes);
        let len = src.len();
        if let Some(dst) = buf.get_mut(..len) {
            dst.copy_from_slice(src);
        }
        SockaddrBytes { buf, len }
    }

    /// The bytes (`sockaddr_in` or `sockaddr_in6`), as long as the kernel
    /// said.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// The address as a `SocketAddr`, if it is an INET one.
    pub fn to_socket_addr(&self) -> Option<SocketAddr> {
        match parse(self.as_bytes(), false) {
            Ok(Parsed::Inet(a)) => Some(a),
            _ => None,
        }
    }
}

impl std::fmt::Debug for SockaddrBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_socket_addr() {
            Some(a) => write!(f, "SockaddrBytes({a})"),
            None => write!(f, "SockaddrBytes({:?})", self.as_bytes()),
        }
    }
}

/// The guest-visible bytes of an INET address, as the kernel lays out
/// `sockaddr_in`/`sockaddr_in6`.
pub fn encode(addr: SocketAddr) -> SockaddrBytes {
    let mut b = [0u8; IN6_LEN];
    let n = encode_into(addr, &mut b);
    SockaddrBytes::new(b.get(..n).unwrap_or(&b))
}

/// Writes `sockaddr_in`/`sockaddr_in6` bytes for `addr` into `b` and
/// returns their length (16 or 28): the small form the send paths keep.
pub(crate) fn encode_into(addr: SocketAddr, b: &mut [u8; IN6_LEN]) -> usize {
    *b = [0; IN6_LEN];
    match addr {
        SocketAddr::V4(a) => {
            b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.ip().octets());
            IN_LEN
        }
        SocketAddr::V6(a) => {
            b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
            b[8..24].copy_from_slice(&a.ip().octets());
            b[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
            IN6_LEN
        }
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
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_lengths() {
        let a: SocketAddr = "127.0.0.2:7000".parse().unwrap();
        let b = encode(a);
        assert_eq!(b.as_bytes().len(), 16);
        assert_eq!(parse(b.as_bytes(), false), Ok(Parsed::Inet(a)));
        assert_eq!(parse(&b.as_bytes()[..15], false), Ok(Parsed::HostDecides));
        let v6: SocketAddr = "[::1]:53".parse().unwrap();
        let b6 = encode(v6);
        assert_eq!(parse(b6.as_bytes(), false), Ok(Parsed::Inet(v6)));
        assert_eq!(parse(&b6.as_bytes()[..24], false), Ok(Parsed::Inet(v6)));
        assert_eq!(parse(&b6.as_bytes()[..23], false), Ok(Parsed::HostDecides));
        assert_eq!(parse(&[0u8; 129], false), Err(Errno::EINVAL));
        assert_eq!(parse(&[0u8; 1], false), Err(Errno::EINVAL));
        assert_eq!(parse(&[0u8; 2], false), Ok(Parsed::Unspec));
        let mut long = [0u8; 128];
        long[..16].copy_from_slice(b.as_bytes());
        assert_eq!(parse(&long, false), Ok(Parsed::Inet(a)));
        assert_eq!(host_bytes(&long).len(), 28);
    }

    #[test]
    fn hostile_bytes_never_panic() {
        for len in 0..=130usize {
            for fill in [0u8, 0xff, 2, 10] {
                let buf = vec![fill; len];
                let _ = parse(&buf, false);
                let _ = parse(&buf, true);
            }
        }
    }
}
