//! How each option's Rust value is laid out as the kernel's bytes.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// A value an option can hold: encoded to and decoded from the kernel's
/// bytes. Sealed: the table's value types are the only ones.
pub trait OptValue: Sized + super::sealed::Sealed {
    /// Writes the kernel's bytes into `out` (512 bytes) and returns their
    /// length.
    fn encode(&self, out: &mut [u8]) -> usize;
    /// Reads the kernel's bytes; `None` if they are too short.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

fn put(out: &mut [u8], bytes: &[u8]) -> usize {
    let n = bytes.len().min(out.len());
    out[..n].copy_from_slice(&bytes[..n]);
    n
}

fn int_at(bytes: &[u8], at: usize) -> Option<i32> {
    let b = bytes.get(at..at + 4)?;
    Some(i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads an `int` option. Linux returns a single byte for some `SOL_IP`
/// options when asked with a short buffer; a full-size read gives 4.
fn read_int(bytes: &[u8]) -> Option<i32> {
    match bytes.len() {
        0 => None,
        1..=3 => Some(i32::from(bytes[0])),
        _ => int_at(bytes, 0),
    }
}

impl super::sealed::Sealed for bool {}
impl OptValue for bool {
    fn encode(&self, out: &mut [u8]) -> usize {
        put(out, &i32::from(*self).to_ne_bytes())
    }
    fn decode(bytes: &[u8]) -> Option<bool> {
        read_int(bytes).map(|v| v != 0)
    }
}

impl super::sealed::Sealed for i32 {}
impl OptValue for i32 {
    fn encode(&self, out: &mut [u8]) -> usize {
        put(out, &self.to_ne_bytes())
    }
    fn decode(bytes: &[u8]) -> Option<i32> {
        read_int(bytes)
    }
}

impl super::sealed::Sealed for u32 {}
impl OptValue for u32 {
    fn encode(&self, out: &mut [u8]) -> usize {
        put(out, &self.to_ne_bytes())
    }
    fn decode(bytes: &[u8]) -> Option<u32> {
        read_int(bytes).map(|v| v as u32)
    }
}

/// How an option's value becomes bytes and back. Most options use their
/// value type's own [`OptValue`] ([`Plain`]); `SO_LINGER` and the timeouts
/// share `Option<Duration>` but not a layout.
pub trait Codec<T>: super::sealed::Sealed {
    /// Writes the kernel's bytes into `out` and returns their length.
    fn encode(value: &T, out: &mut [u8]) -> usize;
    /// Reads the kernel's bytes; `None` if they are too short.
    fn decode(bytes: &[u8]) -> Option<T>;
}

/// The value type's own layout.
#[derive(Debug)]
pub struct Plain;
impl super::sealed::Sealed for Plain {}
impl<T: OptValue> Codec<T> for Plain {
    fn encode(value: &T, out: &mut [u8]) -> usize {
        value.encode(out)
    }
    fn decode(bytes: &[u8]) -> Option<T> {
        T::decode(bytes)
    }
}

/// `struct linger`: on/off and whole seconds.
#[derive(Debug)]
pub struct LingerCodec;
impl super::sealed::Sealed for LingerCodec {}
impl Codec<Option<Duration>> for LingerCodec {
    fn encode(value: &Option<Duration>, out: &mut [u8]) -> usize {
        let (on, secs) = match value {
            None => (0i32, 0i32),
            Some(d) => (1, i32::try_from(d.as_secs()).unwrap_or(i32::MAX)),
        };
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&on.to_ne_bytes());
        b[4..].copy_from_slice(&secs.to_ne_bytes());
        put(out, &b)
    }
    fn decode(bytes: &[u8]) -> Option<Option<Duration>> {
        let on = int_at(bytes, 0)?;
        let secs = int_at(bytes, 4)?;
        Some((on != 0).then(|| Duration::from_secs(u64::try_from(secs).unwrap_or(0))))
    }
}

/// `struct timeval` for `SO_RCVTIMEO`/`SO_SNDTIMEO`: `None` is `{0, 0}`
/// (wait forever).
#[derive(Debug)]
pub struct TimevalCodec;
impl super::sealed::Sealed for TimevalCodec {}
impl Codec<Option<Duration>> for TimevalCodec {
    /// `None` waits forever; `Some(Duration::ZERO)` does not wait at all
    /// (what `read_timeout()` reports for a negative raw timeval); other
    /// durations are rounded up to the microsecond, so none becomes
    /// "forever".
    fn encode(value: &Option<Duration>, out: &mut [u8]) -> usize {
        use crate::deadline::Wait;
        let wait = match value {
            None => Wait::Forever,
            Some(d) if d.is_zero() => Wait::Never,
            Some(d) => Wait::For(*d),
        };
        put(out, &crate::sockopt::timeval_bytes(wait))
    }
    fn decode(bytes: &[u8]) -> Option<Option<Duration>> {
        let b = bytes.get(..16)?;
        let mut sec = [0u8; 8];
        let mut usec = [0u8; 8];
        sec.copy_from_slice(&b[..8]);
        usec.copy_from_slice(&b[8..]);
        let (sec, usec) = (i64::from_ne_bytes(sec), i64::from_ne_bytes(usec));
        if sec <= 0 && usec <= 0 {
            return Some(None);
        }
        let d = Duration::from_secs(u64::try_from(sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(usec).unwrap_or(0));
        Some(Some(d))
    }
}

/// An interface or algorithm name of up to 16 bytes (`SO_BINDTODEVICE`,
/// `TCP_CONGESTION`), without a heap allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OptName {
    buf: [u8; 16],
    len: usize,
}

impl OptName {
    /// A name from its bytes; `None` if longer than 15 bytes (the kernel's
    /// limit leaves room for the NUL).
    pub fn new(name: &str) -> Option<OptName> {
        let b = name.as_bytes();
        if b.len() > 15 {
            return None;
        }
        let mut buf = [0u8; 16];
        buf[..b.len()].copy_from_slice(b);
        Some(OptName { buf, len: b.len() })
    }

    /// The name's bytes, without the NUL.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The name as text (lossy for non-UTF-8 bytes is not needed: the
    /// kernel's names are ASCII; non-UTF-8 gives `""`).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl std::fmt::Debug for OptName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OptName({:?})", self.as_str())
    }
}

impl super::sealed::Sealed for OptName {}
impl OptValue for OptName {
    fn encode(&self, out: &mut [u8]) -> usize {
        put(out, self.as_bytes())
    }
    fn decode(bytes: &[u8]) -> Option<OptName> {
        let end = bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(bytes.len())
            .min(16);
        let mut buf = [0u8; 16];
        buf[..end].copy_from_slice(&bytes[..end]);
        Some(OptName { buf, len: end })
    }
}

impl super::sealed::Sealed for Ipv4Addr {}
impl OptValue for Ipv4Addr {
    fn encode(&self, out: &mut [u8]) -> usize {
        put(out, &self.octets())
    }
    fn decode(bytes: &[u8]) -> Option<Ipv4Addr> {
        let b = bytes.get(..4)?;
        Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

/// An IPv4 multicast membership: the group and the local interface's
/// address (`struct ip_mreq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MembershipV4 {
    /// The multicast group.
    pub group: Ipv4Addr,
    /// The local interface's address (`0.0.0.0`: the kernel chooses).
    pub interface: Ipv4Addr,
}

impl super::sealed::Sealed for MembershipV4 {}
impl OptValue for MembershipV4 {
    fn encode(&self, out: &mut [u8]) -> usize {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.group.octets());
        b[4..].copy_from_slice(&self.interface.octets());
        put(out, &b)
    }
    fn decode(bytes: &[u8]) -> Option<MembershipV4> {
        let b = bytes.get(..8)?;
        Some(MembershipV4 {
            group: Ipv4Addr::new(b[0], b[1], b[2], b[3]),
            interface: Ipv4Addr::new(b[4], b[5], b[6], b[7]),
        })
    }
}

/// An IPv6 multicast membership: the group and the interface index
/// (`struct ipv6_mreq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MembershipV6 {
    /// The multicast group.
    pub group: Ipv6Addr,
    /// The interface index (0: the kernel chooses).
    pub interface: u32,
}

impl super::sealed::Sealed for MembershipV6 {}
impl OptValue for MembershipV6 {
    fn encode(&self, out: &mut [u8]) -> usize {
        let mut b = [0u8; 20];
        b[..16].copy_from_slice(&self.group.octets());
        b[16..].copy_from_slice(&self.interface.to_ne_bytes());
        put(out, &b)
    }
    fn decode(bytes: &[u8]) -> Option<MembershipV6> {
        let b = bytes.get(..20)?;
        let mut g = [0u8; 16];
        g.copy_from_slice(&b[..16]);
        Some(MembershipV6 {
            group: Ipv6Addr::from(g),
            interface: u32::from_ne_bytes([b[16], b[17], b[18], b[19]]),
        })
    }
}
