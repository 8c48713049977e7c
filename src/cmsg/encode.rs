//! Writing control messages into a fixed, 8-byte-aligned buffer.

use std::net::SocketAddr;

use super::{Cmsg, ExtendedError, HEADER_LEN, cmsg_len, space};
use crate::raw::{Errno, encode_sockaddr};

/// A control-message buffer of `N` bytes, 8-byte aligned, on the stack:
/// what the kernel is handed on send, and a good place for it to write on
/// receive.
///
/// # Examples
///
/// ```
/// use hostsock::cmsg::{Cmsg, CmsgBuf};
///
/// let mut buf = CmsgBuf::<64>::new();
/// buf.push(&Cmsg::Tos(0x10)).unwrap();
/// assert_eq!(buf.as_bytes().len(), 24); // CMSG_SPACE(sizeof(int))
/// ```
#[derive(Clone)]
#[repr(C, align(8))]
pub struct CmsgBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Default for CmsgBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> std::fmt::Debug for CmsgBuf<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(super::CmsgIter::new(self.as_bytes()))
            .finish()
    }
}

impl<const N: usize> CmsgBuf<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        CmsgBuf {
            bytes: [0; N],
            len: 0,
        }
    }

    /// The messages written so far (what `msg_controllen` should say).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The whole buffer, for the kernel to write received messages into.
    pub fn space_mut(&mut self) -> &mut [u8] {
        self.len = 0;
        &mut self.bytes
    }

    /// Forgets the messages written.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends messages already encoded (whole, 8-byte aligned entries, as
    /// [`as_bytes`](CmsgBuf::as_bytes) of another buffer gives them).
    /// `ENOBUFS`, and nothing written, if they do not fit.
    pub(crate) fn extend_encoded(&mut self, bytes: &[u8]) -> Result<(), Errno> {
        let end = self.len.checked_add(bytes.len()).ok_or(Errno::ENOBUFS)?;
        let slot = self.bytes.get_mut(self.len..end).ok_or(Errno::ENOBUFS)?;
        slot.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Appends one message. `ENOBUFS` if it does not fit.
    ///
    /// # Errors
    ///
    /// `ENOBUFS` if the message (header, payload and padding:
    /// `CMSG_SPACE` of the payload) does not fit in the room left; the
    /// messages already written are then unchanged. Nothing else is
    /// checked: a typed message is encoded as the kernel lays it out, and
    /// an [`Unknown`](Cmsg::Unknown) one's bytes are copied as they are.
    #[inline]
    pub fn push(&mut self, m: &Cmsg<'_>) -> Result<(), Errno> {
        let (level, ty) = m.level_type();
        // The common send messages straight from a small array; the rest
        // through the 64-byte encoder.
        match *m {
            Cmsg::Tos(v) | Cmsg::TClass(v) | Cmsg::Ttl(v) => {
                self.push_raw(level, ty, &i32::from(v).to_ne_bytes())
            }
            Cmsg::HopLimit(v) => self.push_raw(level, ty, &v.to_ne_bytes()),
            Cmsg::PktInfoV4 {
                ifindex,
                spec_dst,
                addr,
            } => {
                let (i, s, a) = (ifindex.to_ne_bytes(), spec_dst.octets(), addr.octets());
                let payload = [
                    i[0], i[1], i[2], i[3], s[0], s[1], s[2], s[3], a[0], a[1], a[2], a[3],
                ];
                self.push_raw(level, ty, &payload)
            }
            Cmsg::UdpSegment(v) => self.push_raw(level, ty, &v.to_ne_bytes()),
            Cmsg::Unknown { data, .. } => self.push_raw(level, ty, data),
            _ => {
                let mut payload = [0u8; 64];
                let n = encode_payload(m, &mut payload);
                self.push_raw(level, ty, payload.get(..n).unwrap_or_default())
            }
        }
    }

    /// Appends one message from its parts. `ENOBUFS` if it does not fit.
    ///
    /// # Errors
    ///
    /// `ENOBUFS` if `CMSG_SPACE(data.len())` bytes do not fit in the room
    /// left; the messages already written are then unchanged. `level`,
    /// `ty` and `data` are not checked.
    #[inline]
    pub fn push_raw(&mut self, level: i32, ty: i32, data: &[u8]) -> Result<(), Errno> {
        let need = space(data.len());
        let end = self.len.checked_add(need).ok_or(Errno::ENOBUFS)?;
        let slot = self.bytes.get_mut(self.len..end).ok_or(Errno::ENOBUFS)?;
        let (header, rest) = slot
            .split_first_chunk_mut::<HEADER_LEN>()
            .ok_or(Errno::ENOBUFS)?;
        header[..8].copy_from_slice(&(cmsg_len(data.len()) as u64).to_ne_bytes());
        header[8..12].copy_from_slice(&level.to_ne_bytes());
        header[12..16].copy_from_slice(&ty.to_ne_bytes());
        let (payload, padding) = rest
            .split_at_mut_checked(data.len())
            .ok_or(Errno::ENOBUFS)?;
        payload.copy_from_slice(data);
        padding.fill(0);
        self.len = end;
        Ok(())
    }
}

/// Writes `bytes` at `at` (the callers' offsets are fixed and fit the
/// 64-byte payload buffer).
fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = out.get_mut(at..).and_then(|o| o.get_mut(..bytes.len())) {
        dst.copy_from_slice(bytes);
    }
}

/// The payload of a typed message, written into `out` (64 bytes, more than
/// any payload needs); returns its length.
fn encode_payload(m: &Cmsg<'_>, out: &mut [u8; 64]) -> usize {
    match *m {
        Cmsg::PktInfoV4 {
            ifindex,
            spec_dst,
            addr,
        } => {
            put(out, 0, &ifindex.to_ne_bytes());
            put(out, 4, &spec_dst.octets());
            put(out, 8, &addr.octets());
            12
        }
        Cmsg::PktInfoV6 { addr, ifindex } => {
            put(out, 0, &addr.octets());
            put(out, 16, &ifindex.to_ne_bytes());
            20
        }
        Cmsg::Tos(v) | Cmsg::TClass(v) | Cmsg::Ttl(v) => {
            put(out, 0, &i32::from(v).to_ne_bytes());
            4
        }
        Cmsg::HopLimit(v) | Cmsg::TcpInq(v) => {
            put(out, 0, &v.to_ne_bytes());
            4
        }
        Cmsg::UdpGro(v) => {
            put(out, 0, &i32::from(v).to_ne_bytes());
            4
        }
        Cmsg::UdpSegment(v) => {
            put(out, 0, &v.to_ne_bytes());
            2
        }
        Cmsg::Timestamp { sec, usec: sub } | Cmsg::TimestampNs { sec, nsec: sub } => {
            put(out, 0, &sec.to_ne_bytes());
            put(out, 8, &sub.to_ne_bytes());
            16
        }
        Cmsg::OrigDstV4(a) => sockaddr(out, 0, SocketAddr::V4(a)),
        Cmsg::OrigDstV6(a) => sockaddr(out, 0, SocketAddr::V6(a)),
        Cmsg::RecvErrV4(e) | Cmsg::RecvErrV6(e) => extended_error(&e, out),
        Cmsg::Unknown { .. } => 0,
    }
}

fn sockaddr(out: &mut [u8], at: usize, a: SocketAddr) -> usize {
    let b = encode_sockaddr(a);
    put(out, at, b.as_bytes());
    at.saturating_add(b.as_bytes().len())
}

fn extended_error(e: &ExtendedError, out: &mut [u8; 64]) -> usize {
    put(out, 0, &e.errno.to_ne_bytes());
    out[4] = e.origin;
    out[5] = e.icmp_type;
    out[6] = e.icmp_code;
    out[7] = 0;
    put(out, 8, &e.info.to_ne_bytes());
    put(out, 12, &e.data.to_ne_bytes());
    match e.offender {
        Some(a) => sockaddr(out, 16, a),
        None => 16,
    }
}
