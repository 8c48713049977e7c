//! The invariants behind every fuzz target, shared by the cargo-fuzz
//! targets (`fuzz/fuzz_targets/*.rs`, nightly) and their stable twins
//! (`tests/fuzz_twins.rs`, which includes this file with `#[path]`).
//!
//! Each `check_*` function takes arbitrary bytes and panics when an
//! invariant breaks. Only the public API of `hostsock` is used. No
//! `unsafe` here: entering a private network namespace is the fuzz
//! crate's job (`fuzz/src/lib.rs`); without one, every address a check
//! can reach is forced onto loopback (see [`Env::private_netns`]).
#![allow(dead_code)]

use std::io::{IoSlice, IoSliceMut};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, UdpSocket,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hostsock::Policy;
use hostsock::cmsg::{Cmsg, CmsgBuf, CmsgIter, ExtendedError};
use hostsock::policy::{
    AddrRule, AddrUse, Cidr, OPTIONS, PolicyBuilder, RECV_FLAGS, SEND_FLAGS, UnknownOpt, Verdict,
};
use hostsock::raw::{Errno, RawSocket, RawTransmit, SockaddrBytes, encode_sockaddr};
use tokio::time::Instant;

// ---------------------------------------------------------------------
// Reading fuzz bytes
// ---------------------------------------------------------------------

/// Takes values off the front of fuzz bytes; zeros once they run out.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn i32(&mut self) -> i32 {
        i32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        self.i32() as u32
    }

    pub fn i64(&mut self) -> i64 {
        let lo = u64::from(self.u32());
        let hi = u64::from(self.u32());
        (hi << 32 | lo) as i64
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }

    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }
}

// ---------------------------------------------------------------------
// Independent models (written from SPEC.md and the Linux layouts, not
// from hostsock's code)
// ---------------------------------------------------------------------

fn ne_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn ne_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// What `sockaddr` bytes name, as Linux lays them out: `sockaddr_in` (16
/// bytes), `sockaddr_in6` (24 without the scope id, 28 with it); anything
/// else, or too short, names no INET address. Bytes past 128 are ignored.
pub fn model_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let b = &b[..b.len().min(128)];
    let family = i32::from(ne_u16(b, 0)?);
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    if family == libc::AF_INET && b.len() >= 16 {
        let ip: [u8; 4] = b.get(4..8)?.try_into().ok()?;
        return Some(SocketAddr::V4(SocketAddrV4::new(ip.into(), port)));
    }
    if family == libc::AF_INET6 && b.len() >= 24 {
        let flow = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?);
        let ip: [u8; 16] = b.get(8..24)?.try_into().ok()?;
        let scope = b
            .get(24..28)
            .map_or(0, |s| u32::from_ne_bytes(s.try_into().unwrap_or([0; 4])));
        return Some(SocketAddr::V6(SocketAddrV6::new(
            ip.into(),
            port,
            flow,
            scope,
        )));
    }
    None
}

/// One control message as the walk finds it: `(level, type, payload)`.
type RawEntry<'a> = (i32, i32, &'a [u8]);

/// Walks control-message bytes as the kernel's `CMSG_NXTHDR` does:
/// entries, and whether the walk stopped at a malformed one (a `cmsg_len`
/// under the header size, or past the end). Fewer than 16 bytes left end
/// the walk quietly.
pub fn model_cmsg_walk(b: &[u8]) -> (Vec<RawEntry<'_>>, bool) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    loop {
        let Some(rest) = b.get(pos..) else {
            return (out, false);
        };
        if rest.len() < 16 {
            return (out, false);
        }
        let len = u64::from_ne_bytes(rest[..8].try_into().unwrap());
        let level = ne_i32(rest, 8).unwrap();
        let ty = ne_i32(rest, 12).unwrap();
        if len < 16 || len > rest.len() as u64 {
            return (out, true);
        }
        let len = len as usize;
        out.push((level, ty, &rest[16..len]));
        pos += (len + 7) & !7;
    }
}

/// SPEC.md's rules for a guest's send control messages: the re-encoded
/// size of each, or the errno. `denied_source` says whether a PKTINFO
/// source address is refused by the policy; `cap` is the re-encoding
/// buffer (1024 bytes, for sendmsg and for each message of sendmmsg),
/// checked message by message in order.
pub fn model_guest_send(
    b: &[u8],
    cap: usize,
    denied_source: impl Fn(IpAddr) -> bool,
) -> Result<usize, i32> {
    let (entries, malformed) = model_cmsg_walk(b);
    let mut space = 0usize;
    for (level, ty, d) in &entries {
        let int = ne_i32(d, 0);
        let four = d.len() == 4;
        let (size, source): (usize, Option<IpAddr>) = match (*level, *ty) {
            (libc::IPPROTO_IP, libc::IP_TOS)
                if d.len() == 1 || (four && (0..=255).contains(&int.unwrap_or(-1))) =>
            {
                (4, None)
            }
            (libc::IPPROTO_IP, libc::IP_TTL) if four && (1..=255).contains(&int.unwrap_or(0)) => {
                (4, None)
            }
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS | libc::IPV6_HOPLIMIT)
                if four && (-1..=255).contains(&int.unwrap_or(-2)) =>
            {
                (4, None)
            }
            (libc::IPPROTO_IP, libc::IP_PKTINFO) if d.len() == 12 => {
                let ip: [u8; 4] = d[4..8].try_into().unwrap();
                let ip = Ipv4Addr::from(ip);
                (12, (!ip.is_unspecified()).then_some(IpAddr::V4(ip)))
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if d.len() >= 20 => {
                let ip: [u8; 16] = d[..16].try_into().unwrap();
                let ip = Ipv6Addr::from(ip);
                (20, (!ip.is_unspecified()).then_some(IpAddr::V6(ip)))
            }
            (libc::IPPROTO_UDP, libc::UDP_SEGMENT) if d.len() == 2 => (2, None),
            _ => return Err(libc::EINVAL),
        };
        if source.is_some_and(&denied_source) {
            return Err(libc::EACCES);
        }
        space += 16 + ((size + 7) & !7);
        if space > cap {
            return Err(libc::ENOBUFS);
        }
    }
    if malformed {
        // The walk reports the malformed entry where it stands; the
        // entries before it were checked first.
        return Err(libc::EINVAL);
    }
    Ok(space)
}

/// The address every real-socket check treats as forbidden: a policy
/// denies every use of it, and canaries listen on it.
pub const CANARY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Is `ip` the canary, written either way (`127.0.0.2` or
/// `::ffff:127.0.0.2`)?
pub fn is_canary(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == CANARY_IP,
        IpAddr::V6(v6) => v6.to_ipv4_mapped() == Some(CANARY_IP),
    }
}

// ---------------------------------------------------------------------
// Pure targets
// ---------------------------------------------------------------------

/// Target `sockaddr` (pure half): `SockaddrBytes` and its decoder against
/// the model; INET addresses round-trip through `encode_sockaddr`.
pub fn check_sockaddr_pure(data: &[u8]) {
    let b = SockaddrBytes::from_bytes(data);
    assert_eq!(b.as_bytes(), &data[..data.len().min(128)]);
    let got = b.to_socket_addr();
    assert_eq!(got, model_sockaddr(data), "decoding {data:?}");
    if let Some(a) = got {
        let again = encode_sockaddr(a);
        assert_eq!(again.to_socket_addr(), Some(a));
        let want_len = if a.is_ipv4() { 16 } else { 28 };
        assert_eq!(again.as_bytes().len(), want_len);
    }
    let _ = format!("{b:?}");
}

/// Target `cmsg_recv`: `CmsgIter` over hostile bytes walks exactly the
/// entries the model walks (same levels and types, same `Unknown`
/// payloads, same malformed verdict); every decoded message re-encodes and
/// decodes to itself.
pub fn check_cmsg_recv(data: &[u8]) {
    let (want, malformed) = model_cmsg_walk(data);
    let mut it = CmsgIter::new(data);
    let mut got = Vec::new();
    for m in it.by_ref() {
        got.push(m);
        assert!(
            got.len() <= data.len() / 16,
            "more entries than bytes allow"
        );
    }
    assert_eq!(it.malformed(), malformed, "malformed verdict for {data:?}");
    assert_eq!(got.len(), want.len(), "entry count for {data:?}");
    for (m, (level, ty, payload)) in got.iter().zip(&want) {
        assert_eq!(m.level_type(), (*level, *ty));
        if let Cmsg::Unknown { data: d, .. } = m {
            assert_eq!(d, payload);
        }
        let mut buf = CmsgBuf::<256>::new();
        match buf.push(m) {
            Ok(()) => {
                let back: Vec<_> = CmsgIter::new(buf.as_bytes()).collect();
                assert_eq!(
                    back.as_slice(),
                    std::slice::from_ref(m),
                    "re-encoding {m:?}"
                );
            }
            Err(e) => {
                assert_eq!(e, Errno::ENOBUFS);
                assert!(buf.as_bytes().is_empty());
            }
        }
    }
}

/// A typed message built from fuzz bytes (any variant, any values).
pub fn arbitrary_cmsg<'a>(inp: &mut Input<'a>) -> Cmsg<'a> {
    let v4 = |i: &mut Input<'_>| Ipv4Addr::from(i.u32());
    let v6 = |i: &mut Input<'_>| {
        let mut a = [0u8; 16];
        for b in &mut a {
            *b = i.u8();
        }
        Ipv6Addr::from(a)
    };
    match inp.u8() % 17 {
        0 => Cmsg::PktInfoV4 {
            ifindex: inp.u32(),
            spec_dst: v4(inp),
            addr: v4(inp),
        },
        1 => Cmsg::PktInfoV6 {
            addr: v6(inp),
            ifindex: inp.u32(),
        },
        2 => Cmsg::Tos(inp.u8()),
        3 => Cmsg::TClass(inp.u8()),
        4 => Cmsg::Ttl(inp.u8()),
        5 => Cmsg::HopLimit(inp.i32()),
        6 => Cmsg::Timestamp {
            sec: inp.i64(),
            usec: inp.i64(),
        },
        7 => Cmsg::TimestampNs {
            sec: inp.i64(),
            nsec: inp.i64(),
        },
        8 => Cmsg::OrigDstV4(SocketAddrV4::new(v4(inp), inp.u16())),
        9 => Cmsg::OrigDstV6(SocketAddrV6::new(v6(inp), inp.u16(), inp.u32(), inp.u32())),
        10 | 11 => {
            let offender = match inp.u8() % 3 {
                0 => None,
                1 => Some(SocketAddr::new(IpAddr::V4(v4(inp)), inp.u16())),
                _ => Some(SocketAddr::V6(SocketAddrV6::new(
                    v6(inp),
                    inp.u16(),
                    inp.u32(),
                    inp.u32(),
                ))),
            };
            let e = ExtendedError {
                errno: inp.u32(),
                origin: inp.u8(),
                icmp_type: inp.u8(),
                icmp_code: inp.u8(),
                info: inp.u32(),
                data: inp.u32(),
                offender,
            };
            if inp.bool() {
                Cmsg::RecvErrV4(e)
            } else {
                Cmsg::RecvErrV6(e)
            }
        }
        12 => Cmsg::TcpInq(inp.i32()),
        13 => Cmsg::UdpGro(inp.u16()),
        14 => Cmsg::UdpSegment(inp.u16()),
        _ => {
            let level = inp.i32();
            let ty = inp.i32();
            let n = usize::from(inp.u8());
            Cmsg::Unknown {
                level,
                ty,
                data: inp.bytes(n),
            }
        }
    }
}

/// The payload size Linux gives each typed message (what `push` must
/// write), `None` for `Unknown`.
fn payload_len(m: &Cmsg<'_>) -> usize {
    match m {
        Cmsg::PktInfoV4 { .. } => 12,
        Cmsg::PktInfoV6 { .. } => 20,
        Cmsg::UdpSegment(_) => 2,
        Cmsg::Timestamp { .. } | Cmsg::TimestampNs { .. } => 16,
        Cmsg::OrigDstV4(_) => 16,
        Cmsg::OrigDstV6(_) => 28,
        Cmsg::RecvErrV4(e) | Cmsg::RecvErrV6(e) => match e.offender {
            None => 16,
            Some(SocketAddr::V4(_)) => 32,
            Some(SocketAddr::V6(_)) => 44,
        },
        Cmsg::Unknown { data, .. } => data.len(),
        _ => 4,
    }
}

/// Target `cmsg_send` (encoder half): `CmsgBuf::push` of arbitrary typed
/// messages into a small buffer writes exactly `CMSG_SPACE(payload)` bytes
/// or fails with `ENOBUFS` leaving the buffer as it was, and what it wrote
/// decodes back to the same messages (a sendable one exactly; an
/// `IP_RECVERR` with an all-zero offender comes back without one, as the
/// kernel means it).
pub fn check_cmsg_encode(data: &[u8]) {
    let mut inp = Input::new(data);
    let cap = usize::from(inp.u8());
    let mut buf = CmsgBuf::<256>::new();
    let mut pushed = Vec::new();
    let mut n = 0;
    while !inp.is_empty() && n < 32 {
        n += 1;
        let m = arbitrary_cmsg(&mut inp);
        let before = buf.as_bytes().len();
        let need = 16 + ((payload_len(&m) + 7) & !7);
        let fits = before + need <= 256.min(cap.max(before));
        // `cap` only decides whether this message is tried.
        if !fits && cap < 255 {
            continue;
        }
        match buf.push(&m) {
            Ok(()) => {
                assert_eq!(buf.as_bytes().len(), before + need, "{m:?}");
                pushed.push(m);
            }
            Err(e) => {
                assert_eq!(e, Errno::ENOBUFS, "{m:?}");
                assert!(before + need > 256, "{m:?} refused with room");
                assert_eq!(buf.as_bytes().len(), before);
            }
        }
    }
    let mut it = CmsgIter::new(buf.as_bytes());
    let back: Vec<_> = it.by_ref().collect();
    assert!(!it.malformed());
    assert_eq!(back.len(), pushed.len());
    for (b, m) in back.iter().zip(&pushed) {
        assert_eq!(b.level_type(), m.level_type());
        let zero_offender = |e: &ExtendedError| {
            e.offender
                .is_some_and(|a| a.ip().is_unspecified() && a.port() == 0)
        };
        match (m, b) {
            (Cmsg::RecvErrV4(e) | Cmsg::RecvErrV6(e), Cmsg::RecvErrV4(f) | Cmsg::RecvErrV6(f))
                if zero_offender(e) =>
            {
                assert_eq!(f.offender, None);
            }
            // A typed value whose kind the decoder reads differently
            // (the levels and types agree; the values are not compared).
            (
                Cmsg::UdpGro(_) | Cmsg::Unknown { .. } | Cmsg::OrigDstV4(_) | Cmsg::OrigDstV6(_),
                _,
            ) => {}
            _ if m.sendable() => assert_eq!(b, m),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------
// The environment of the real-socket targets
// ---------------------------------------------------------------------

/// Reads `/proc/thread-self/net/dev`: does this thread's network
/// namespace hold only `lo`?
pub fn private_netns() -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/thread-self/net/dev") else {
        return false;
    };
    text.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .all(|name| name.trim() == "lo")
}

/// How many socket fds this process has open (other fds, such as the files
/// proptest reads and writes in a parallel test, are not counted).
pub fn open_fds() -> usize {
    // Unix sockets are not counted: each tokio runtime with signals enabled
    // holds a duplicate of the process's signal socket, and the other twins
    // running in parallel build and drop runtimes while a check runs.
    let unix: std::collections::HashSet<String> = std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6).map(str::to_string))
        .collect();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|t| {
            let t = t.to_string_lossy().into_owned();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .filter(|inode| !unix.contains(inode))
        .count()
}

/// Forces an address onto loopback when the checks run outside a private
/// namespace: an INET address (or `AF_UNSPEC`, which UDP reads as INET)
/// gets a 127.0.0.0/8 IP, an IPv6 one `::1` or `::ffff:127.x.y.z`. Leaves
/// the family, the port, the length and the other bytes alone.
pub fn loopback_only(bytes: &mut [u8]) {
    let family = ne_u16(bytes, 0).map(i32::from);
    if family == Some(libc::AF_INET6) {
        if let Some(ip) = bytes.get_mut(8..24) {
            let mapped = ip[0] & 1 == 1;
            let last = ip[15];
            ip.fill(0);
            if mapped {
                ip[10] = 0xff;
                ip[11] = 0xff;
                ip[12] = 127;
                ip[15] = last;
            } else {
                ip[15] = 1;
            }
        }
    } else if let Some(ip) = bytes.get_mut(4..8) {
        ip[0] = 127;
    }
}

/// The policy of the real-socket targets: every use of the canary denied,
/// loopback and the unspecified addresses allowed, everything else denied;
/// the options of `options` (multicast joins and device binding refused
/// outside a private namespace).
pub fn canary_policy(base: Policy, private: bool, audit: Arc<AtomicUsize>) -> Policy {
    let all = &AddrUse::ALL;
    let mut b: PolicyBuilder = Policy::builder_from(base)
        .addr_rule(AddrRule::new(
            Verdict::Deny,
            IpAddr::V4(CANARY_IP).into(),
            all,
        ))
        .addr_rule(AddrRule::new(
            Verdict::Allow,
            Cidr::new(Ipv4Addr::new(127, 0, 0, 0).into(), 8),
            all,
        ))
        .addr_rule(AddrRule::new(
            Verdict::Allow,
            IpAddr::V6(Ipv6Addr::LOCALHOST).into(),
            all,
        ))
        .addr_rule(AddrRule::new(
            Verdict::Allow,
            IpAddr::V4(Ipv4Addr::UNSPECIFIED).into(),
            all,
        ))
        .addr_rule(AddrRule::new(
            Verdict::Allow,
            IpAddr::V6(Ipv6Addr::UNSPECIFIED).into(),
            all,
        ))
        .default_verdict(Verdict::Deny)
        .audit(move |_| {
            audit.fetch_add(1, Ordering::Relaxed);
        });
    if !private {
        for r in OPTIONS {
            let c = r.cname;
            if c.contains("MEMBERSHIP") || c.contains("MULTICAST") || c.contains("BINDTODEVICE") {
                b = b.deny_option(r.level, r.name);
            }
        }
        b = b.unknown_options(UnknownOpt::Reject);
    }
    b.build()
}

/// A runtime, the canaries (a TCP listener and a UDP socket on
/// 127.0.0.2, made with std, which must never see a connection or a
/// datagram), an allowed UDP receiver on 127.0.0.1, and the audit count.
pub struct Env {
    pub rt: tokio::runtime::Runtime,
    pub private: bool,
    pub canary_tcp: TcpListener,
    pub canary_udp: UdpSocket,
    pub receiver: UdpSocket,
    pub audit: Arc<AtomicUsize>,
    pub policy: Arc<Policy>,
}

impl Env {
    pub fn new() -> Env {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let private = private_netns();
        let canary_tcp = TcpListener::bind((CANARY_IP, 0)).expect("canary listener");
        canary_tcp.set_nonblocking(true).unwrap();
        let canary_udp = UdpSocket::bind((CANARY_IP, 0)).expect("canary udp");
        canary_udp.set_nonblocking(true).unwrap();
        let receiver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("receiver");
        receiver.set_nonblocking(true).unwrap();
        let audit = Arc::new(AtomicUsize::new(0));
        let base = if private {
            Policy::allow_all()
        } else {
            Policy::default()
        };
        let policy = Arc::new(canary_policy(base, private, audit.clone()));
        Env {
            rt,
            private,
            canary_tcp,
            canary_udp,
            receiver,
            audit,
            policy,
        }
    }

    pub fn tcp_port(&self) -> u16 {
        self.canary_tcp.local_addr().unwrap().port()
    }

    pub fn udp_port(&self) -> u16 {
        self.canary_udp.local_addr().unwrap().port()
    }

    /// Panics if a canary got anything (a denied address reached the
    /// kernel).
    pub fn assert_canaries_silent(&self, what: &str) {
        match self.canary_tcp.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("a connection from {peer} reached the denied canary ({what})"),
            Err(e) => panic!("canary accept: {e}"),
        }
        let mut b = [0u8; 64];
        match self.canary_udp.recv_from(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((n, peer)) => {
                panic!("a datagram of {n} bytes from {peer} reached the denied canary ({what})")
            }
            Err(e) => panic!("canary recv: {e}"),
        }
    }

    /// Drains the receiver; panics if a datagram came from the canary
    /// address (a denied PKTINFO source reached the kernel).
    pub fn drain_receiver(&self) -> usize {
        let mut b = [0u8; 2048];
        let mut n = 0;
        for _ in 0..256 {
            match self.receiver.recv_from(&mut b) {
                Ok((_, from)) => {
                    assert!(
                        !is_canary(from.ip()),
                        "a datagram with the denied source {from} was sent"
                    );
                    n += 1;
                }
                Err(_) => break,
            }
        }
        n
    }

    pub fn receiver_addr(&self) -> SocketAddr {
        self.receiver.local_addr().unwrap()
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

/// Serialises the real-socket checks of a process: the twins run as
/// parallel tests, and fd counts are process-wide.
pub fn socket_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The process's environment, made on first use and kept for good (its
/// fds are part of every baseline). The first caller's network namespace
/// is the one its sockets live in: the fuzz targets call
/// `hostsock_fuzz::init` first.
pub fn env() -> &'static Env {
    static ENV: std::sync::OnceLock<Env> = std::sync::OnceLock::new();
    ENV.get_or_init(Env::new)
}

/// A loopback-only copy of `bytes` when not in a private namespace.
fn safe_addr(env: &Env, bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    if !env.private {
        loopback_only(&mut v);
    }
    v
}

const DOMAINS: [i32; 2] = [libc::AF_INET, libc::AF_INET6];
const TYPES: [i32; 2] = [libc::SOCK_STREAM, libc::SOCK_DGRAM];

// ---------------------------------------------------------------------
// sockaddr, on real sockets
// ---------------------------------------------------------------------

/// Target `sockaddr` (socket half): under a policy that denies every
/// address, arbitrary sockaddr bytes given to bind, connect and sendto on
/// fresh sockets never succeed (only `AF_UNSPEC` connect, which names no
/// address, may), and the canaries stay silent.
pub fn check_sockaddr_sockets(data: &[u8]) {
    let _serial = socket_lock();
    check_sockaddr_pure(data);
    let env = env();
    let deny_all = Arc::new(Policy::builder().default_verdict(Verdict::Deny).build());
    let addr = safe_addr(env, data);
    let family = ne_u16(&addr, 0).map(i32::from);
    env.rt.block_on(async {
        for domain in DOMAINS {
            for ty in TYPES {
                let s = RawSocket::new(deny_all.clone(), domain, ty | libc::SOCK_NONBLOCK, 0)
                    .expect("socket");
                let r = s.bind(&addr);
                assert!(r.is_err(), "bind({addr:?}) passed a deny-all policy: {r:?}");
                let r = s.connect(&addr, true).await;
                let unspec = family == Some(libc::AF_UNSPEC);
                assert!(
                    !(r.is_ok() || r == Err(Errno::EINPROGRESS)) || unspec,
                    "connect({addr:?}) on {domain}/{ty} passed a deny-all policy: {r:?}"
                );
                if ty == libc::SOCK_DGRAM && !addr.is_empty() {
                    let r = s.sendto(b"x", libc::MSG_DONTWAIT, &addr).await;
                    assert!(
                        r.is_err(),
                        "sendto({addr:?}) on {domain}/{ty} passed a deny-all policy: {r:?}"
                    );
                }
            }
        }
    });
    env.assert_canaries_silent("sockaddr");
}

// ---------------------------------------------------------------------
// Guest send control messages, on real sockets
// ---------------------------------------------------------------------

/// Target `cmsg_send`: the encoder half, then a guest's control bytes
/// through `RawSocket::sendmsg` (and `sendmmsg`) on UDP sockets: where the
/// model refuses them, hostsock refuses them with the same errno (and the
/// audit hook sees each denied PKTINFO source); no datagram ever leaves
/// with the denied source address.
pub fn check_cmsg_send(data: &[u8]) {
    let _serial = socket_lock();
    let mut inp = Input::new(data);
    let split = usize::from(inp.u8());
    let rest = inp.rest();
    let (enc, ctl) = rest.split_at(split.min(rest.len()));
    check_cmsg_encode(enc);
    let env = env();
    let policy = env.policy.clone();
    let denied = |ip| {
        let (verdict, _) = policy.addr_verdict(AddrUse::SourceViaPktinfo, SocketAddr::new(ip, 0));
        verdict == Verdict::Deny
    };
    let model = model_guest_send(ctl, hostsock::policy::CONTROL_MAX, denied);
    let to4 = encode_sockaddr(env.receiver_addr());
    let mapped = match env.receiver_addr() {
        SocketAddr::V4(a) => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
        a => a,
    };
    let to6 = encode_sockaddr(mapped);
    env.rt.block_on(async {
        for (domain, to) in [(libc::AF_INET, to4), (libc::AF_INET6, to6)] {
            let s = RawSocket::new(env.policy.clone(), domain, libc::SOCK_DGRAM, 0).expect("udp");
            let before = env.audit.load(Ordering::Relaxed);
            let r = s
                .sendmsg(
                    &[IoSlice::new(b"c")],
                    to.as_bytes(),
                    ctl,
                    libc::MSG_DONTWAIT,
                )
                .await;
            let audited = env.audit.load(Ordering::Relaxed) - before;
            let got = r.map_err(|e| e.errno.raw());
            if let Err(e) = model {
                assert_eq!(got, Err(e), "sendmsg with control {ctl:?} on {domain}");
            }
            assert_eq!(
                audited,
                usize::from(model == Err(libc::EACCES)),
                "audit count: control {ctl:?} on {domain}, model {model:?}, got {got:?}"
            );
            let t = RawTransmit {
                data: b"m",
                to: to.as_bytes(),
                control: ctl,
            };
            let r = s.sendmmsg(&[t], libc::MSG_DONTWAIT).await;
            // Each message of sendmmsg is written anew as sendmsg writes it.
            if let Err(e) = model {
                assert_eq!(r.map_err(|e| e.errno.raw()), Err(e), "sendmmsg {ctl:?}");
            }
        }
    });
    env.drain_receiver();
    env.assert_canaries_silent("cmsg_send");
}

// ---------------------------------------------------------------------
// Socket options
// ---------------------------------------------------------------------

/// The options that must never reach the kernel, whatever the policy.
pub const NEVER: [(i32, i32); 9] = [
    (libc::SOL_SOCKET, libc::SO_RCVBUFFORCE),
    (libc::SOL_SOCKET, libc::SO_SNDBUFFORCE),
    (libc::SOL_SOCKET, libc::SO_ATTACH_FILTER),
    (libc::SOL_SOCKET, libc::SO_ATTACH_BPF),
    (libc::SOL_SOCKET, libc::SO_ATTACH_REUSEPORT_CBPF),
    (libc::SOL_SOCKET, libc::SO_ATTACH_REUSEPORT_EBPF),
    (libc::SOL_SOCKET, libc::SO_DETACH_FILTER),
    (libc::SOL_SOCKET, libc::SO_LOCK_FILTER),
    (libc::IPPROTO_IP, libc::IP_HDRINCL),
];

fn level_name(inp: &mut Input<'_>) -> (i32, i32) {
    let level = match inp.u8() % 7 {
        0 => libc::SOL_SOCKET,
        1 => libc::IPPROTO_IP,
        2 => libc::IPPROTO_IPV6,
        3 => libc::IPPROTO_TCP,
        4 => libc::IPPROTO_UDP,
        5 => inp.i32(),
        _ => {
            let r = &OPTIONS[usize::from(inp.u8()) % OPTIONS.len()];
            return (r.level, r.name);
        }
    };
    let name = match inp.u8() % 4 {
        0 => inp.i32(),
        _ => i32::from(inp.u8() % 80),
    };
    (level, name)
}

/// Target `sockopt`: arbitrary level, name, length and value through
/// `RawSocket::getsockopt`/`setsockopt` on fresh sockets of each kind
/// under four policies. Never a panic; getsockopt never reports more than
/// the buffer; an option that is never allowed, or a row the policy turned
/// off, or (with `UnknownOpt::Reject`) an option outside the table is
/// refused; a value shorter than the row's minimum is `EINVAL`.
pub fn check_sockopt(data: &[u8]) {
    let _serial = socket_lock();
    let env = env();
    let mut inp = Input::new(data);
    let kind = inp.u8();
    let domain = DOMAINS[usize::from(kind & 1)];
    let ty = TYPES[usize::from(kind >> 1 & 1)];
    let audit = Arc::new(AtomicUsize::new(0));
    let private = env.private;
    let base = match inp.u8() % 4 {
        0 => Policy::default(),
        1 => Policy::allow_all(),
        2 => Policy::gvisor_compat(),
        _ => Policy::sandbox(),
    };
    let policy = Arc::new(canary_policy(base, private, audit.clone()));
    env.rt.block_on(async {
        let s = RawSocket::new(policy.clone(), domain, ty, 0).expect("socket");
        let mut n = 0;
        while !inp.is_empty() && n < 16 {
            n += 1;
            let (level, name) = level_name(&mut inp);
            let never = NEVER.contains(&(level, name));
            let row = OPTIONS.iter().find(|r| r.level == level && r.name == name);
            let allowed = policy.option_allowed(level, name);
            if inp.bool() {
                let len = match inp.u8() {
                    255 => usize::from(inp.u16()),
                    l => usize::from(l % 80),
                };
                let mut out = vec![0u8; len];
                let r = s.getsockopt(level, name, &mut out);
                if let Ok(got) = r {
                    assert!(got <= len, "getsockopt({level}, {name}) said {got} > {len}");
                    assert!(!never, "never-allowed ({level}, {name}) was read");
                    assert!(
                        allowed || policy.unknown_options() == UnknownOpt::PassThrough,
                        "({level}, {name}) read though not allowed"
                    );
                }
                if row.is_some() && !allowed {
                    assert_eq!(r, Err(Errno::ENOPROTOOPT), "off row ({level}, {name}) read");
                }
            } else {
                let len = match inp.u8() {
                    255 => usize::from(inp.u16()),
                    l => usize::from(l % 80),
                };
                let mut value = inp.bytes(len).to_vec();
                value.resize(len, 0);
                let r = s.setsockopt(level, name, &value);
                if never {
                    assert!(r.is_err(), "never-allowed ({level}, {name}) was set");
                }
                match row {
                    Some(row) if !allowed => assert!(
                        r.is_err(),
                        "off row {} was set under {:?}",
                        row.cname,
                        policy.unknown_options()
                    ),
                    Some(row) if row.set && len < row.min_len => {
                        assert_eq!(r, Err(Errno::EINVAL), "{} with {len} bytes", row.cname)
                    }
                    None if policy.unknown_options() == UnknownOpt::Reject => {
                        assert!(r.is_err(), "unlisted ({level}, {name}) was set")
                    }
                    _ => {}
                }
            }
        }
    });
}

// ---------------------------------------------------------------------
// Message flags
// ---------------------------------------------------------------------

/// `poll(POLLIN)` now, again after `EINTR` (libFuzzer's `-timeout` alarm
/// interrupts it; poll(2) is never restarted, and the raw layer passes
/// `EINTR` through as Linux does).
fn poll_in(s: &RawSocket) -> i16 {
    for _ in 0..1000 {
        match s.poll(libc::POLLIN) {
            Err(Errno::EINTR) => continue,
            r => return r.expect("poll") & libc::POLLIN,
        }
    }
    panic!("poll kept failing with EINTR");
}

/// Target `flags`: with the default masks or narrowed ones
/// (`message_flags`), a send or receive with a flag outside the policy's
/// mask is `EINVAL` before the kernel (no datagram leaves; the queued one
/// stays queued), whatever else the flags hold; a narrowed mask never
/// widens SPEC.md's.
pub fn check_flags(data: &[u8]) {
    let _serial = socket_lock();
    let env = env();
    let mut inp = Input::new(data);
    let builder = if inp.bool() {
        Policy::builder().message_flags(inp.i32(), inp.i32())
    } else {
        Policy::builder()
    };
    let policy = Arc::new(builder.build());
    assert_eq!(policy.recv_flags() & !RECV_FLAGS, 0);
    assert_eq!(policy.send_flags() & !SEND_FLAGS, 0);
    let pick = |inp: &mut Input<'_>| match inp.u8() % 3 {
        0 => inp.i32(),
        1 => 1 << (inp.u8() % 32),
        _ => (inp.i32() & (RECV_FLAGS | SEND_FLAGS)) | 1 << (inp.u8() % 32),
    };
    env.rt.block_on(async {
        let rx = RawSocket::new(policy.clone(), libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
        rx.bind(encode_sockaddr((Ipv4Addr::LOCALHOST, 0).into()).as_bytes())
            .unwrap();
        rx.set_nonblocking(true);
        let rx_addr = rx.getsockname().unwrap();
        let tx = RawSocket::new(policy.clone(), libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
        tx.set_nonblocking(true);
        let helper = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let mut n = 0;
        while !inp.is_empty() && n < 8 {
            n += 1;
            let flags = pick(&mut inp);
            let out_of_mask = |mask: i32| flags & !mask != 0;
            let which = inp.u8() % 3;
            match which {
                0 => {
                    let r = tx.sendto(b"f", flags, rx_addr.as_bytes()).await;
                    if out_of_mask(policy.send_flags()) {
                        assert_eq!(
                            r.map_err(|e| e.errno),
                            Err(Errno::EINVAL),
                            "send {flags:#x}"
                        );
                        assert_eq!(
                            poll_in(&rx),
                            0,
                            "a datagram arrived after a refused send with {flags:#x} (step {n})"
                        );
                    }
                }
                1 => {
                    let t = RawTransmit {
                        data: b"g",
                        to: rx_addr.as_bytes(),
                        control: &[],
                    };
                    let r = tx.sendmmsg(&[t], flags).await;
                    if out_of_mask(policy.send_flags()) {
                        assert_eq!(
                            r.map_err(|e| e.errno),
                            Err(Errno::EINVAL),
                            "mmsg {flags:#x}"
                        );
                        assert_eq!(
                            poll_in(&rx),
                            0,
                            "a datagram arrived after a refused send with {flags:#x} (step {n})"
                        );
                    }
                }
                _ => {
                    helper
                        .send_to(b"q", rx_addr.to_socket_addr().unwrap())
                        .unwrap();
                    // Loopback delivery is synchronous; poll to be sure.
                    let at = Instant::now() + Duration::from_secs(2);
                    let mut ready = Err(Errno::EINTR);
                    for _ in 0..1000 {
                        ready = rx.wait(libc::POLLIN, Some(at)).await;
                        if ready != Err(Errno::EINTR) {
                            break;
                        }
                    }
                    assert!(ready.is_ok_and(|r| r & libc::POLLIN != 0), "{ready:?}");
                    let mut b = [0u8; 16];
                    let ctl = usize::from(inp.u8()) * 8;
                    let r = rx
                        .recvmsg(&mut [IoSliceMut::new(&mut b)], flags, inp.bool(), ctl)
                        .await;
                    if out_of_mask(policy.recv_flags()) {
                        assert_eq!(r.map(|r| r.len), Err(Errno::EINVAL), "recv {flags:#x}");
                        assert_ne!(poll_in(&rx), 0);
                    }
                }
            }
            // Empty the receiver for the next round.
            for _ in 0..64 {
                let mut b = [0u8; 16];
                if rx
                    .recvmsg(&mut [IoSliceMut::new(&mut b)], 0, false, 0)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    });
}

// ---------------------------------------------------------------------
// Operation sequences
// ---------------------------------------------------------------------

/// An address for an operation: the canaries in every spelling (denied),
/// another socket's own address, the unspecified ones, loopback, or raw
/// bytes.
fn op_addr(env: &Env, inp: &mut Input<'_>, socks: &[Option<RawSocket>]) -> Vec<u8> {
    let canary_port = if inp.bool() {
        env.tcp_port()
    } else {
        env.udp_port()
    };
    let v4 = |ip: Ipv4Addr, port: u16| encode_sockaddr(SocketAddr::new(ip.into(), port));
    let bytes = match inp.u8() % 10 {
        0 => v4(CANARY_IP, canary_port).as_bytes().to_vec(),
        1 => encode_sockaddr(SocketAddr::new(
            IpAddr::V6(CANARY_IP.to_ipv6_mapped()),
            canary_port,
        ))
        .as_bytes()
        .to_vec(),
        2 => {
            // AF_UNSPEC in the family field, an INET address after it.
            let mut b = v4(CANARY_IP, canary_port).as_bytes().to_vec();
            b[..2].copy_from_slice(&(libc::AF_UNSPEC as u16).to_ne_bytes());
            b
        }
        3 => {
            let i = usize::from(inp.u8()) % socks.len().max(1);
            match socks
                .get(i)
                .and_then(|s| s.as_ref())
                .map(|s| s.getsockname())
            {
                Some(Ok(a)) => a.as_bytes().to_vec(),
                _ => v4(Ipv4Addr::LOCALHOST, inp.u16()).as_bytes().to_vec(),
            }
        }
        4 => v4(Ipv4Addr::UNSPECIFIED, inp.u16()).as_bytes().to_vec(),
        5 => encode_sockaddr(SocketAddr::new(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            inp.u16(),
        ))
        .as_bytes()
        .to_vec(),
        6 => encode_sockaddr(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), inp.u16()))
            .as_bytes()
            .to_vec(),
        7 => v4(Ipv4Addr::LOCALHOST, inp.u16()).as_bytes().to_vec(),
        8 => Vec::new(),
        _ => {
            let n = usize::from(inp.u8() % 40);
            inp.bytes(n).to_vec()
        }
    };
    let mut bytes = match inp.u8() % 8 {
        // Longer than the family needs, up to and past 128 bytes.
        0 => {
            let mut b = bytes;
            b.resize(usize::from(inp.u8()), 0);
            b
        }
        1 if !bytes.is_empty() => {
            let cut = usize::from(inp.u8()) % bytes.len();
            bytes[..cut].to_vec()
        }
        _ => bytes,
    };
    if !env.private {
        loopback_only(&mut bytes);
    }
    bytes
}

/// Target `opseq`: arbitrary sequences of raw calls (socket, bind, listen,
/// connect, accept, sendto/sendmsg/sendmmsg with flags and control bytes,
/// recvmsg, options, shutdown, poll, ioctl, close) on up to 6 real
/// sockets. Invariants: no panic; the canaries on the denied 127.0.0.2
/// never see a connection or a datagram; no datagram leaves with the
/// denied source; the fds are back to their number once everything is
/// dropped. Every wait is bounded (non-blocking calls, or 20 ms deadlines).
pub fn check_opseq(data: &[u8]) {
    let _serial = socket_lock();
    let env = env();
    let baseline = open_fds();
    env.rt.block_on(async {
        let mut socks: Vec<Option<RawSocket>> = (0..6).map(|_| None).collect();
        let mut inp = Input::new(data);
        let mut steps = 0;
        while !inp.is_empty() && steps < 48 {
            steps += 1;
            let op = inp.u8();
            let i = usize::from(inp.u8()) % socks.len();
            let soon = || Some(Instant::now() + Duration::from_millis(20));
            if op & 15 == 0 {
                let d = DOMAINS[usize::from(inp.u8() & 1)];
                let t = TYPES[usize::from(inp.u8() & 1)];
                let extra = if inp.bool() { libc::SOCK_NONBLOCK } else { 0 };
                socks[i] = RawSocket::new(env.policy.clone(), d, t | extra, 0).ok();
                continue;
            }
            let addr = op_addr(env, &mut inp, &socks);
            let Some(s) = socks[i].as_ref() else {
                continue;
            };
            match op % 16 {
                1 => {
                    let _ = s.bind(&addr);
                }
                2 => {
                    let _ = s.listen(i32::from(inp.u8()) - 8);
                }
                3 => {
                    let _ = s.connect(&addr, true).await;
                }
                4 => {
                    let _ = s.connect_deadline(&addr, false, soon()).await;
                }
                5 => {
                    if let Ok((c, _)) = s.accept4(true, 0).await {
                        let j = usize::from(inp.u8()) % socks.len();
                        socks[j] = Some(c);
                    }
                }
                6 => {
                    let flags = match inp.u8() % 4 {
                        0 => libc::MSG_FASTOPEN | libc::MSG_DONTWAIT,
                        1 => inp.i32() | libc::MSG_DONTWAIT,
                        _ => libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    };
                    let len = usize::from(inp.u8());
                    let buf = vec![0x5au8; len];
                    let _ = s.sendto(&buf, flags, &addr).await;
                }
                7 => {
                    let n = usize::from(inp.u8() % 96);
                    let ctl = inp.bytes(n).to_vec();
                    let _ = s
                        .sendmsg_deadline(
                            &[IoSlice::new(b"m")],
                            &addr,
                            &ctl,
                            inp.i32() & SEND_FLAGS,
                            soon(),
                        )
                        .await;
                }
                8 => {
                    let n = usize::from(inp.u8() % 64);
                    let ctl = inp.bytes(n).to_vec();
                    let msgs = [
                        RawTransmit {
                            data: b"a",
                            to: &addr,
                            control: &ctl,
                        },
                        RawTransmit {
                            data: b"b",
                            to: &addr,
                            control: &[],
                        },
                    ];
                    let _ = s.sendmmsg(&msgs, libc::MSG_DONTWAIT).await;
                }
                9 => {
                    let mut b = [0u8; 256];
                    let flags = (inp.i32() & RECV_FLAGS) | libc::MSG_DONTWAIT;
                    let ctl = usize::from(inp.u16());
                    let _ = s
                        .recvmsg(&mut [IoSliceMut::new(&mut b)], flags, inp.bool(), ctl)
                        .await;
                }
                10 => {
                    let mut b = [0u8; 64];
                    let _ = s
                        .recvmsg_deadline(&mut [IoSliceMut::new(&mut b)], 0, true, 64, soon())
                        .await;
                }
                11 => {
                    let (level, name) = level_name(&mut inp);
                    let n = usize::from(inp.u8() % 32);
                    let v = inp.bytes(n).to_vec();
                    if inp.bool() {
                        let _ = s.setsockopt(level, name, &v);
                    } else {
                        let mut out = vec![0u8; n];
                        let _ = s.getsockopt(level, name, &mut out);
                    }
                }
                12 => {
                    let _ = s.shutdown(i32::from(inp.u8() % 4));
                }
                13 => {
                    let _ = s.poll(inp.u16() as i16);
                    let _ = s.getpeername();
                    let _ = s.ioctl(u64::from(inp.u32()));
                }
                14 => {
                    let _ = s.wait(inp.u16() as i16, soon()).await;
                }
                _ => socks[i] = None,
            }
        }
        drop(socks);
    });
    env.drain_receiver();
    env.assert_canaries_silent("opseq");
    assert_eq!(open_fds(), baseline, "fds after dropping every socket");
}
