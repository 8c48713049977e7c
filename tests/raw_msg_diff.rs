//! Differential test of the raw message calls: `RawSocket::recvmsg` /
//! `RawSocket::sendmsg` (and the read/write/readv/writev/recvfrom/sendto
//! forms built on them) against direct `libc::recvmsg` / `libc::sendmsg` on
//! TWIN sockets (plain libc sockets in the same state).
//!
//! The oracle is SPEC.md's principle for `raw`: for an allowed call the
//! answer is exactly the host kernel's (return value, errno, `msg_flags`,
//! address bytes, control bytes, the bytes in the buffers); where the policy
//! refuses, the answer is SPEC.md's errno and the kernel never sees the call.
//!
//! * `recvmsg_matrix_matches_kernel`: UDP over IPv4 (and IPv6 when `::1`
//!   works). A facade receiver and a libc twin receiver, both bound to
//!   loopback with the same receive options (`IP_PKTINFO`, `IP_RECVTOS`,
//!   `IP_RECVTTL` / the IPv6 equivalents), are sent the same datagram (same
//!   length, same TOS/TCLASS control message) by ONE libc sender, so that
//!   even the source address bytes must be identical. Every control length
//!   `0..=200`, iovec counts `0,1,2,3,8`, iovec sizes `0,1,5,64`, flags `0`,
//!   `MSG_PEEK`, `MSG_TRUNC`, `MSG_PEEK|MSG_TRUNC`, `MSG_DONTWAIT`, with and
//!   without the address: ~40 000 cases per family.
//! * flags outside the policy's masks, more than 1024 iovecs, control
//!   buffers over 10 MiB: SPEC.md's errnos, with what the kernel would have
//!   said printed beside them.
//! * sendmsg with guest control bytes (`IP_TOS`, `IP_TTL`, `IP_PKTINFO`,
//!   malformed lengths, receive-only types, ...): the facade sender and a
//!   libc twin sender each send to their own libc receiver; the results and
//!   what arrives (payload, control bytes, source IP) are compared.
//! * zero-length sends and empty-buffer receives, `EPIPE` and the SIGPIPE
//!   hint (in a child process with `SIGPIPE` at `SIG_DFL`), blocking
//!   semantics (`SO_RCVTIMEO`, `SOCK_NONBLOCK`, `MSG_DONTWAIT`,
//!   `MSG_ERRQUEUE`, `MSG_WAITALL` on TCP), and the read/write forms.
//!
//! Differences SPEC.md mandates (a flag outside the mask, an unknown cmsg
//! level, a receive control buffer over 10 MiB, ...) are asserted as SPEC.md
//! says and the kernel's answer is printed as a "SPEC difference" note; any
//! other difference is a finding and fails the test with the case, the
//! facade's result and the kernel's.
//!
//! Found so far (left failing on purpose; src/ is not changed here):
//!
//! 1. `IP_TOS` send cmsg with an int outside `0..=255` (256, -1, 0x1ff,
//!    0x10010, `i32::MIN`, `i32::MAX`): the kernel says `EINVAL`; the facade
//!    sends the datagram with the value cut to its low byte
//!    (`parse_guest_send` checks the payload length but not the range).
//! 2. `IP_PKTINFO` send cmsg with a payload longer than `in_pktinfo` (16
//!    bytes): the kernel wants exactly `CMSG_LEN(12)` and says `EINVAL`; the
//!    facade decodes the first 12 bytes and sends.
//! 3. `IPV6_TCLASS` send cmsg -1: the facade drops the message (the socket's
//!    traffic class is used); this host kernel sends traffic class 0xff.
//! 4. `MSG_PEEK | MSG_WAITALL` on TCP: Linux waits for the full length while
//!    peeking; the facade returns what is queued at once (its `MSG_WAITALL`
//!    emulation is off with `MSG_PEEK`, and it strips `MSG_WAITALL`).
//!
//! Loopback only; every wait is bounded.

use std::io::{IoSlice, IoSliceMut};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener as StdListener, TcpStream as StdStream,
    UdpSocket as StdUdp,
};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostsock::Policy;
use hostsock::cmsg::{Cmsg, CmsgBuf};
use hostsock::raw::{
    Errno, MAX_GUEST_CONTROL, RawSocket, SendError, SockaddrBytes, encode_sockaddr,
};

/// Every wait is bounded by this.
const WAIT: Duration = Duration::from_secs(2);
/// What receive buffers are filled with before a call.
const FILL: u8 = 0xA5;
/// `MSG_PROXY` (not in the libc crate).
const MSG_PROXY: i32 = 0x10;
/// `MSG_BATCH` (not in the libc crate).
const MSG_BATCH: i32 = 0x40000;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn policy() -> Arc<Policy> {
    Policy::shared_default()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn ename(e: i32) -> String {
    match Errno::new(e).name() {
        "E?" => format!("errno{e}"),
        n => n.to_string(),
    }
}

fn show<T: std::fmt::Debug>(r: &Result<T, i32>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({})", ename(*e)),
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: took longer than {WAIT:?}"))
}

/// Bytes that are not all alike, different per `seed`.
fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(7) ^ (i >> 8)) as u8)
        .collect()
}

#[derive(Clone, Copy, Debug)]
struct Fam {
    name: &'static str,
    domain: i32,
    lo: IpAddr,
}

impl Fam {
    fn v6(self) -> bool {
        self.domain == libc::AF_INET6
    }

    fn any_port(self) -> SocketAddr {
        SocketAddr::new(self.lo, 0)
    }

    /// The receive options the matrix turns on.
    fn recv_opts(self) -> [(i32, i32); 3] {
        if self.v6() {
            [
                (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
                (libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS),
                (libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT),
            ]
        } else {
            [
                (libc::IPPROTO_IP, libc::IP_PKTINFO),
                (libc::IPPROTO_IP, libc::IP_RECVTOS),
                (libc::IPPROTO_IP, libc::IP_RECVTTL),
            ]
        }
    }

    /// The TOS (IPv4) or traffic class (IPv6) control message.
    fn tos_cmsg(self, tos: u8) -> Vec<u8> {
        let mut b = CmsgBuf::<64>::new();
        let m = if self.v6() {
            Cmsg::TClass(tos)
        } else {
            Cmsg::Tos(tos)
        };
        b.push(&m).expect("push tos");
        b.as_bytes().to_vec()
    }

    fn recverr_opt(self) -> (i32, i32) {
        if self.v6() {
            (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
        } else {
            (libc::IPPROTO_IP, libc::IP_RECVERR)
        }
    }
}

const V4: Fam = Fam {
    name: "v4",
    domain: libc::AF_INET,
    lo: IpAddr::V4(Ipv4Addr::LOCALHOST),
};
const V6: Fam = Fam {
    name: "v6",
    domain: libc::AF_INET6,
    lo: IpAddr::V6(Ipv6Addr::LOCALHOST),
};

/// IPv4, and IPv6 when `::1` can be bound (a printed reason otherwise).
fn families() -> Vec<Fam> {
    match StdUdp::bind((Ipv6Addr::LOCALHOST, 0)) {
        Ok(_) => vec![V4, V6],
        Err(e) => {
            println!("skipping IPv6: cannot bind [::1]:0 ({e})");
            vec![V4]
        }
    }
}

fn sa(addr: SocketAddr) -> Vec<u8> {
    encode_sockaddr(addr).as_bytes().to_vec()
}

/// A plain kernel socket, non-blocking and close-on-exec like the facade's
/// host fd (or blocking when `blocking`).
fn libc_socket(domain: i32, ty: i32, blocking: bool) -> OwnedFd {
    let nb = if blocking { 0 } else { libc::SOCK_NONBLOCK };
    // SAFETY: socket(2) with integer arguments only; the result is checked.
    let fd = unsafe { libc::socket(domain, ty | nb | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket({domain}, {ty}): {}", ename(last_errno()));
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn libc_bind(fd: RawFd, addr: SocketAddr) {
    let b = sa(addr);
    // SAFETY: `b` is valid for reads of its length.
    let rc = unsafe { libc::bind(fd, b.as_ptr().cast(), b.len() as libc::socklen_t) };
    assert_eq!(rc, 0, "bind {addr}: {}", ename(last_errno()));
}

fn libc_local(fd: RawFd) -> SocketAddr {
    let mut b = [0u8; 128];
    let mut len = 128 as libc::socklen_t;
    // SAFETY: `b` is valid for writes of `len` bytes; `len` is a live
    // socklen_t the kernel updates.
    let rc = unsafe { libc::getsockname(fd, b.as_mut_ptr().cast(), &mut len) };
    assert_eq!(rc, 0, "getsockname: {}", ename(last_errno()));
    SockaddrBytes::from_bytes(&b[..len as usize])
        .to_socket_addr()
        .expect("an INET address")
}

fn libc_setsockopt(fd: RawFd, level: i32, name: i32, value: &[u8]) -> Result<(), i32> {
    // SAFETY: `value` is valid for reads of its length; the kernel only
    // reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if rc < 0 { Err(last_errno()) } else { Ok(()) }
}

fn timeval_bytes(sec: i64, usec: i64) -> Vec<u8> {
    let mut v = sec.to_ne_bytes().to_vec();
    v.extend_from_slice(&usec.to_ne_bytes());
    v
}

fn libc_connect(fd: RawFd, addr: SocketAddr) -> Result<(), i32> {
    let b = sa(addr);
    // SAFETY: `b` is valid for reads of its length.
    let rc = unsafe { libc::connect(fd, b.as_ptr().cast(), b.len() as libc::socklen_t) };
    if rc < 0 { Err(last_errno()) } else { Ok(()) }
}

/// A libc UDP socket bound to loopback, with the matrix's receive options.
fn libc_receiver(fam: Fam) -> (OwnedFd, SocketAddr) {
    let fd = libc_socket(fam.domain, libc::SOCK_DGRAM, false);
    libc_bind(fd.as_raw_fd(), fam.any_port());
    for (level, name) in fam.recv_opts() {
        libc_setsockopt(fd.as_raw_fd(), level, name, &1i32.to_ne_bytes())
            .unwrap_or_else(|e| panic!("libc setsockopt({level},{name}): {}", ename(e)));
    }
    let addr = libc_local(fd.as_raw_fd());
    (fd, addr)
}

/// A facade UDP socket bound to loopback, with the matrix's receive options.
fn facade_receiver(fam: Fam, ty_flags: i32) -> (RawSocket, SocketAddr) {
    let s = RawSocket::new(policy(), fam.domain, libc::SOCK_DGRAM | ty_flags, 0)
        .expect("RawSocket::new udp");
    s.bind(&sa(fam.any_port())).expect("facade bind");
    for (level, name) in fam.recv_opts() {
        s.setsockopt(level, name, &1i32.to_ne_bytes())
            .unwrap_or_else(|e| panic!("facade setsockopt({level},{name}): {e:?}"));
    }
    let addr = s
        .getsockname()
        .expect("getsockname")
        .to_socket_addr()
        .expect("inet");
    (s, addr)
}

fn facade_udp(fam: Fam) -> RawSocket {
    RawSocket::new(policy(), fam.domain, libc::SOCK_DGRAM, 0).expect("RawSocket::new udp")
}

/// `poll(2)` for `events` on `fd` for at most `ms`; the revents.
fn poll_fd(fd: RawFd, events: i16, ms: i32) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: `p` is one live pollfd; nfds is 1.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n > 0 { p.revents } else { 0 }
}

fn wait_readable(fd: RawFd, ms: i32) -> bool {
    poll_fd(fd, libc::POLLIN, ms) & libc::POLLIN != 0
}

/// Receives (and drops) everything queued on `fd`; how many datagrams.
fn drain(fd: RawFd) -> usize {
    let mut buf = vec![0u8; 70_000];
    let mut n = 0;
    for _ in 0..1000 {
        // SAFETY: `buf` is valid for writes of its length.
        let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if r < 0 {
            break;
        }
        n += 1;
    }
    n
}

fn fionread(fd: RawFd) -> i32 {
    let mut v: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is live.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut v) };
    assert_eq!(rc, 0, "FIONREAD: {}", ename(last_errno()));
    v
}

// ---------------------------------------------------------------------------
// The receive calls
// ---------------------------------------------------------------------------

/// What a recvmsg call did, in a form both sides share.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Got {
    ret: Result<usize, i32>,
    flags: i32,
    addr: Vec<u8>,
    control: Vec<u8>,
    bufs: Vec<Vec<u8>>,
}

impl Got {
    /// What differs from `other`, field by field.
    fn diff(&self, kernel: &Got) -> Option<String> {
        if self == kernel {
            return None;
        }
        let mut s = String::new();
        if self.ret != kernel.ret {
            s += &format!(
                " ret facade {} kernel {};",
                show(&self.ret),
                show(&kernel.ret)
            );
        }
        if self.flags != kernel.flags {
            s += &format!(
                " msg_flags facade {:#x} kernel {:#x};",
                self.flags, kernel.flags
            );
        }
        if self.addr != kernel.addr {
            s += &format!(" addr facade {:?} kernel {:?};", self.addr, kernel.addr);
        }
        if self.control != kernel.control {
            s += &format!(
                " control facade ({} bytes) {:?} kernel ({} bytes) {:?};",
                self.control.len(),
                self.control,
                kernel.control.len(),
                kernel.control
            );
        }
        if self.bufs != kernel.bufs {
            s += &format!(" buffers facade {:?} kernel {:?};", self.bufs, kernel.bufs);
        }
        Some(s)
    }
}

fn shape(iov: usize, size: usize) -> Vec<usize> {
    vec![size; iov]
}

async fn facade_recv(
    s: &RawSocket,
    shape: &[usize],
    flags: i32,
    want_addr: bool,
    control_len: usize,
) -> Got {
    let mut bufs: Vec<Vec<u8>> = shape.iter().map(|&n| vec![FILL; n]).collect();
    let r = {
        let mut slices: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        within(
            "facade recvmsg",
            s.recvmsg(&mut slices, flags, want_addr, control_len),
        )
        .await
    };
    match r {
        Ok(g) => Got {
            ret: Ok(g.len),
            flags: g.flags,
            addr: g.addr().to_vec(),
            control: g.control().to_vec(),
            bufs,
        },
        Err(e) => Got {
            ret: Err(e.raw()),
            flags: 0,
            addr: Vec::new(),
            control: Vec::new(),
            bufs,
        },
    }
}

/// `libc::recvmsg` on the twin with the same shape. The control buffer is
/// zero-filled (the facade's is too: padding the kernel does not write
/// reads as zero on both sides).
fn kernel_recv(fd: RawFd, shape: &[usize], flags: i32, want_addr: bool, control_len: usize) -> Got {
    let mut bufs: Vec<Vec<u8>> = shape.iter().map(|&n| vec![FILL; n]).collect();
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut name = [0u8; 128];
    let mut control = vec![0u64; control_len.div_ceil(8)];
    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    if want_addr {
        msg.msg_name = name.as_mut_ptr().cast();
        msg.msg_namelen = name.len() as libc::socklen_t;
    }
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    if control_len > 0 {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control_len;
    }
    // SAFETY: every pointer in `msg` points into a live buffer of at least
    // the length next to it (name: 128 bytes, iovecs into `bufs`, control:
    // `control_len` bytes of `control`); nothing else touches them.
    let n = unsafe { libc::recvmsg(fd, &mut msg, flags) };
    drop(iov);
    if n < 0 {
        return Got {
            ret: Err(last_errno()),
            flags: 0,
            addr: Vec::new(),
            control: Vec::new(),
            bufs,
        };
    }
    let control: Vec<u8> = control
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .take(msg.msg_controllen.min(control_len))
        .collect();
    Got {
        ret: Ok(n as usize),
        flags: msg.msg_flags,
        addr: if want_addr {
            name[..msg.msg_namelen as usize].to_vec()
        } else {
            Vec::new()
        },
        control,
        bufs,
    }
}

// ---------------------------------------------------------------------------
// The send calls
// ---------------------------------------------------------------------------

async fn facade_send(
    s: &RawSocket,
    parts: &[&[u8]],
    to: &[u8],
    control: &[u8],
    flags: i32,
) -> Result<usize, SendError> {
    let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    within("facade sendmsg", s.sendmsg(&slices, to, control, flags)).await
}

fn send_errno(r: &Result<usize, SendError>) -> Result<usize, i32> {
    r.map_err(|e| e.errno.raw())
}

/// `libc::sendmsg` with the guest's bytes as they are (the kernel copies
/// the control bytes into its own aligned buffer first).
fn kernel_send(
    fd: RawFd,
    parts: &[&[u8]],
    to: &[u8],
    control: &[u8],
    flags: i32,
) -> Result<usize, i32> {
    let iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr().cast_mut().cast(),
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    if !to.is_empty() {
        msg.msg_name = to.as_ptr().cast_mut().cast();
        msg.msg_namelen = to.len() as libc::socklen_t;
    }
    msg.msg_iov = iov.as_ptr().cast_mut();
    msg.msg_iovlen = iov.len();
    if !control.is_empty() {
        msg.msg_control = control.as_ptr().cast_mut().cast();
        msg.msg_controllen = control.len();
    }
    // SAFETY: every pointer in `msg` points into a live buffer of the length
    // next to it; sendmsg(2) only reads through them.
    let n = unsafe { libc::sendmsg(fd, &msg, flags) };
    if n < 0 {
        Err(last_errno())
    } else {
        Ok(n as usize)
    }
}

/// One datagram as a receiver saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Arrival {
    data: Vec<u8>,
    control: Vec<u8>,
    src_ip: Vec<u8>,
    flags: i32,
}

/// Everything queued on the libc receiver `fd`, waiting up to `wait_ms`
/// for the first datagram.
fn arrivals(fd: RawFd, wait_ms: i32) -> Vec<Arrival> {
    let mut out = Vec::new();
    if wait_ms > 0 {
        wait_readable(fd, wait_ms);
    }
    for _ in 0..256 {
        let g = kernel_recv(fd, &[70_000], libc::MSG_DONTWAIT, true, 512);
        let Ok(n) = g.ret else { break };
        let src_ip = match g.addr.len() {
            16 => g.addr[4..8].to_vec(),
            28 => g.addr[8..24].to_vec(),
            _ => g.addr.clone(),
        };
        out.push(Arrival {
            data: g.bufs[0][..n.min(70_000)].to_vec(),
            control: g.control,
            src_ip,
            flags: g.flags,
        });
    }
    out
}

/// A cmsg as a guest might write it: `cmsg_len` (default: the real one),
/// level, type, payload, padding to 8 bytes.
fn cm_raw(level: i32, ty: i32, data: &[u8], cmsg_len: Option<u64>) -> Vec<u8> {
    let len = cmsg_len.unwrap_or(16 + data.len() as u64);
    let mut v = len.to_ne_bytes().to_vec();
    v.extend_from_slice(&level.to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(data);
    while v.len() % 8 != 0 {
        v.push(0);
    }
    v
}

fn cm(level: i32, ty: i32, data: &[u8]) -> Vec<u8> {
    cm_raw(level, ty, data, None)
}

fn int(v: i32) -> [u8; 4] {
    v.to_ne_bytes()
}

fn pktinfo4(ifindex: u32, spec_dst: Ipv4Addr, addr: Ipv4Addr) -> Vec<u8> {
    let mut v = ifindex.to_ne_bytes().to_vec();
    v.extend_from_slice(&spec_dst.octets());
    v.extend_from_slice(&addr.octets());
    v
}

fn pktinfo6(addr: Ipv6Addr, ifindex: u32) -> Vec<u8> {
    let mut v = addr.octets().to_vec();
    v.extend_from_slice(&ifindex.to_ne_bytes());
    v
}

// ---------------------------------------------------------------------------
// 1. The recvmsg matrix
// ---------------------------------------------------------------------------

const IOV_COUNTS: [usize; 5] = [0, 1, 2, 3, 8];
const IOV_SIZES: [usize; 4] = [0, 1, 5, 64];
const MATRIX_FLAGS: [i32; 5] = [
    0,
    libc::MSG_PEEK,
    libc::MSG_TRUNC,
    libc::MSG_PEEK | libc::MSG_TRUNC,
    libc::MSG_DONTWAIT,
];
/// Datagram lengths, cycled through case by case (513 is one past the
/// largest buffer layout, 8 x 64).
const DGRAM_LENS: [usize; 9] = [0, 1, 4, 5, 17, 64, 100, 513, 1200];
/// TOS / traffic class values, cycled through case by case.
const TOS_VALUES: [u8; 6] = [0, 0x10, 0x28, 0xb8, 0x02, 0xfc];

/// How many matrix cases saw each outcome (so that a matrix that passes
/// is known to have exercised truncation, control and addresses).
#[derive(Debug, Default)]
struct Coverage {
    trunc: usize,
    ctrunc: usize,
    control: usize,
    partial_cmsg: usize,
    addr: usize,
    zero: usize,
}

impl Coverage {
    fn note(&mut self, k: &Got) {
        self.trunc += usize::from(k.flags & libc::MSG_TRUNC != 0);
        self.ctrunc += usize::from(k.flags & libc::MSG_CTRUNC != 0);
        self.control += usize::from(!k.control.is_empty());
        self.partial_cmsg += usize::from(k.control.len() % 8 != 0);
        self.addr += usize::from(!k.addr.is_empty());
        self.zero += usize::from(k.ret == Ok(0));
    }
}

async fn matrix_for(fam: Fam, diffs: &mut Vec<String>) -> usize {
    let mut cov = Coverage::default();
    let sender = libc_socket(fam.domain, libc::SOCK_DGRAM, false);
    let (facade, faddr) = facade_receiver(fam, 0);
    let (twin, taddr) = libc_receiver(fam);
    let (fto, tto) = (sa(faddr), sa(taddr));
    let (ffd, tfd) = (facade.host_fd(), twin.as_raw_fd());
    let mut n = 0usize;
    for control_len in (0..=200usize).chain([255, 256, 1023, 1024, 1025, 4096]) {
        for &iov in &IOV_COUNTS {
            for &size in &IOV_SIZES {
                for &flags in &MATRIX_FLAGS {
                    for want_addr in [false, true] {
                        n += 1;
                        let len = DGRAM_LENS[n % DGRAM_LENS.len()];
                        let tos = TOS_VALUES[n % TOS_VALUES.len()];
                        let payload = pattern(len, n);
                        let ctl = fam.tos_cmsg(tos);
                        let case = format!(
                            "{} control_len={control_len} iov={iov}x{size} flags={flags:#x} \
                             want_addr={want_addr} dgram={len} tos={tos:#x}",
                            fam.name
                        );
                        for to in [&fto, &tto] {
                            let r = kernel_send(sender.as_raw_fd(), &[&payload], to, &ctl, 0);
                            assert_eq!(r, Ok(len), "{case}: libc sender");
                        }
                        assert!(wait_readable(ffd, 2000), "{case}: facade never readable");
                        assert!(wait_readable(tfd, 2000), "{case}: twin never readable");
                        let sh = shape(iov, size);
                        let f = facade_recv(&facade, &sh, flags, want_addr, control_len).await;
                        let k = kernel_recv(tfd, &sh, flags, want_addr, control_len);
                        cov.note(&k);
                        if let Some(d) = f.diff(&k) {
                            diffs.push(format!("{case}:{d}"));
                        }
                        if flags & libc::MSG_PEEK != 0 {
                            // The peeked datagram is still there, the same.
                            let sh = [2048];
                            let f = facade_recv(&facade, &sh, 0, true, 200).await;
                            let k = kernel_recv(tfd, &sh, 0, true, 200);
                            if let Some(d) = f.diff(&k) {
                                diffs.push(format!("{case} (read after peek):{d}"));
                            }
                        }
                        let (lf, lk) = (drain(ffd), drain(tfd));
                        if lf != 0 || lk != 0 {
                            diffs.push(format!(
                                "{case}: datagrams left behind: facade {lf} kernel {lk}"
                            ));
                        }
                    }
                }
            }
        }
    }
    println!(
        "recvmsg matrix {} coverage (kernel side): {cov:?}",
        fam.name
    );
    assert!(cov.trunc > 0 && cov.ctrunc > 0 && cov.control > 0 && cov.addr > 0);
    assert!(cov.partial_cmsg > 0 && cov.zero > 0);
    n
}

#[tokio::test]
async fn recvmsg_matrix_matches_kernel() {
    let start = Instant::now();
    let mut diffs = Vec::new();
    let mut total = 0;
    for fam in families() {
        let n = matrix_for(fam, &mut diffs).await;
        println!("recvmsg matrix {}: {n} cases", fam.name);
        total += n;
    }
    println!(
        "recvmsg matrix: {total} cases in {:?}, {} differences",
        start.elapsed(),
        diffs.len()
    );
    for d in diffs.iter().take(40) {
        println!("DIFF {d}");
    }
    assert!(total > 1000, "only {total} cases ran");
    assert!(
        diffs.is_empty(),
        "{} recvmsg cases differ from the kernel (first: {})",
        diffs.len(),
        diffs[0]
    );
}

// ---------------------------------------------------------------------------
// 2. Flags outside the masks
// ---------------------------------------------------------------------------

const RECV_JUNK: [(i32, &str); 11] = [
    (libc::MSG_WAITFORONE, "MSG_WAITFORONE"),
    (MSG_PROXY, "MSG_PROXY"),
    (libc::MSG_CONFIRM, "MSG_CONFIRM"),
    (libc::MSG_EOR, "MSG_EOR"),
    (libc::MSG_MORE, "MSG_MORE"),
    (libc::MSG_FASTOPEN, "MSG_FASTOPEN"),
    (libc::MSG_ZEROCOPY, "MSG_ZEROCOPY"),
    (MSG_BATCH, "MSG_BATCH"),
    (1 << 28, "1<<28"),
    (i32::MIN, "1<<31 (MSG_CMSG_COMPAT)"),
    (libc::MSG_PEEK | (1 << 28), "MSG_PEEK|1<<28"),
];

const SEND_JUNK: [(i32, &str); 13] = [
    (libc::MSG_PEEK, "MSG_PEEK"),
    (libc::MSG_TRUNC, "MSG_TRUNC"),
    (libc::MSG_WAITALL, "MSG_WAITALL"),
    (libc::MSG_ERRQUEUE, "MSG_ERRQUEUE"),
    (libc::MSG_CTRUNC, "MSG_CTRUNC"),
    (MSG_PROXY, "MSG_PROXY"),
    (libc::MSG_WAITFORONE, "MSG_WAITFORONE"),
    (libc::MSG_ZEROCOPY, "MSG_ZEROCOPY"),
    (MSG_BATCH, "MSG_BATCH"),
    (1 << 28, "1<<28"),
    (1 << 30, "1<<30 (MSG_CMSG_CLOEXEC)"),
    (i32::MIN, "1<<31"),
    (libc::MSG_DONTWAIT | libc::MSG_PEEK, "MSG_DONTWAIT|MSG_PEEK"),
];

#[tokio::test]
async fn flags_outside_the_masks_are_einval_and_never_reach_the_kernel() {
    let mut notes = Vec::new();
    let mut checked = 0;
    for fam in families() {
        let sender = libc_socket(fam.domain, libc::SOCK_DGRAM, false);
        let (facade, faddr) = facade_receiver(fam, 0);
        let (twin, taddr) = libc_receiver(fam);
        for (i, &(flag, label)) in RECV_JUNK.iter().enumerate() {
            let payload = pattern(11, i);
            for to in [faddr, taddr] {
                kernel_send(sender.as_raw_fd(), &[&payload], &sa(to), &[], 0).expect("send");
            }
            assert!(wait_readable(facade.host_fd(), 2000));
            assert!(wait_readable(twin.as_raw_fd(), 2000));
            let f = facade_recv(&facade, &[64], flag, true, 64).await;
            assert_eq!(
                f.ret,
                Err(libc::EINVAL),
                "{} recvmsg with {label}: {f:?}",
                fam.name
            );
            // Never reached the kernel: the datagram is still queued, whole.
            assert_eq!(fionread(facade.host_fd()), 11, "{} {label}", fam.name);
            let f = facade_recv(&facade, &[64], 0, false, 0).await;
            assert_eq!(f.ret, Ok(11), "{} {label}: the datagram after", fam.name);
            assert_eq!(&f.bufs[0][..11], &payload[..]);
            let k = kernel_recv(twin.as_raw_fd(), &[64], flag | libc::MSG_DONTWAIT, true, 64);
            if k.ret != Err(libc::EINVAL) {
                notes.push(format!(
                    "{} recvmsg {label}: facade EINVAL (SPEC), kernel {}",
                    fam.name,
                    show(&k.ret)
                ));
            }
            drain(twin.as_raw_fd());
            checked += 1;
        }
        // A blocking receive with a refused flag and nothing queued answers
        // at once, without waiting.
        let t0 = Instant::now();
        let f = facade_recv(&facade, &[8], libc::MSG_WAITFORONE, false, 0).await;
        assert_eq!(f.ret, Err(libc::EINVAL));
        assert!(t0.elapsed() < Duration::from_millis(500));

        // Sends: nothing may leave.
        let fs = facade_udp(fam);
        let ts = libc_socket(fam.domain, libc::SOCK_DGRAM, false);
        let (ra, aaddr) = libc_receiver(fam);
        let (rb, baddr) = libc_receiver(fam);
        for &(flag, label) in &SEND_JUNK {
            let r = facade_send(&fs, &[b"junk flag"], &sa(aaddr), &[], flag).await;
            assert_eq!(
                r,
                Err(SendError::from(Errno::EINVAL)),
                "{} sendmsg with {label}",
                fam.name
            );
            assert!(
                !wait_readable(ra.as_raw_fd(), 30),
                "{} sendmsg with {label}: a datagram left",
                fam.name
            );
            // The sendto form checks the same mask.
            let r = within("sendto", fs.sendto(b"junk", flag, &sa(aaddr))).await;
            assert_eq!(r, Err(SendError::from(Errno::EINVAL)), "sendto {label}");
            let k = kernel_send(ts.as_raw_fd(), &[b"junk flag"], &sa(baddr), &[], flag);
            let got = arrivals(rb.as_raw_fd(), if k.is_ok() { 200 } else { 0 });
            if k != Err(libc::EINVAL) {
                notes.push(format!(
                    "{} sendmsg {label}: facade EINVAL (SPEC), kernel {} ({} datagram(s) arrived)",
                    fam.name,
                    show(&k),
                    got.len()
                ));
            }
            checked += 1;
        }
        assert_eq!(drain(ra.as_raw_fd()), 0);
    }
    println!("flag mask: {checked} refused flags checked");
    for n in &notes {
        println!("SPEC difference: {n}");
    }
}

/// Flags inside the masks pass through: the same answer as the kernel's.
#[tokio::test]
async fn allowed_flags_match_kernel() {
    let recv_flags: [(i32, &str); 7] = [
        (libc::MSG_OOB, "MSG_OOB"),
        (libc::MSG_CMSG_CLOEXEC, "MSG_CMSG_CLOEXEC (1<<30)"),
        (libc::MSG_NOSIGNAL, "MSG_NOSIGNAL"),
        (libc::MSG_WAITALL, "MSG_WAITALL"),
        (libc::MSG_ERRQUEUE, "MSG_ERRQUEUE"),
        (
            libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
            "PEEK|TRUNC|DONTWAIT|CMSG_CLOEXEC",
        ),
        (libc::MSG_WAITALL | libc::MSG_TRUNC, "MSG_WAITALL|MSG_TRUNC"),
    ];
    let mut diffs = Vec::new();
    let mut n = 0;
    for fam in families() {
        let sender = libc_socket(fam.domain, libc::SOCK_DGRAM, false);
        let (facade, faddr) = facade_receiver(fam, 0);
        let (twin, taddr) = libc_receiver(fam);
        for (i, &(flag, label)) in recv_flags.iter().enumerate() {
            let payload = pattern(30, i);
            for to in [faddr, taddr] {
                kernel_send(
                    sender.as_raw_fd(),
                    &[&payload],
                    &sa(to),
                    &fam.tos_cmsg(8),
                    0,
                )
                .expect("send");
            }
            assert!(wait_readable(facade.host_fd(), 2000));
            assert!(wait_readable(twin.as_raw_fd(), 2000));
            let f = facade_recv(&facade, &[7, 9], flag, true, 100).await;
            let k = kernel_recv(twin.as_raw_fd(), &[7, 9], flag, true, 100);
            if let Some(d) = f.diff(&k) {
                diffs.push(format!("{} recv {label}:{d}", fam.name));
            }
            let (lf, lk) = (drain(facade.host_fd()), drain(twin.as_raw_fd()));
            if lf != lk {
                diffs.push(format!(
                    "{} recv {label}: left facade {lf} kernel {lk}",
                    fam.name
                ));
            }
            n += 1;
        }

        let send_flags: [(i32, &str); 7] = [
            (libc::MSG_DONTWAIT, "MSG_DONTWAIT"),
            (libc::MSG_NOSIGNAL, "MSG_NOSIGNAL"),
            (libc::MSG_CONFIRM, "MSG_CONFIRM"),
            (libc::MSG_EOR, "MSG_EOR"),
            (libc::MSG_OOB, "MSG_OOB"),
            (libc::MSG_FASTOPEN, "MSG_FASTOPEN"),
            (libc::MSG_MORE, "MSG_MORE (then a plain send)"),
        ];
        let fs = facade_udp(fam);
        let ts = libc_socket(fam.domain, libc::SOCK_DGRAM, false);
        let (ra, aaddr) = libc_receiver(fam);
        let (rb, baddr) = libc_receiver(fam);
        for &(flag, label) in &send_flags {
            let fr = send_errno(&facade_send(&fs, &[b"abc", b"de"], &sa(aaddr), &[], flag).await);
            let kr = kernel_send(ts.as_raw_fd(), &[b"abc", b"de"], &sa(baddr), &[], flag);
            let (mut fr2, mut kr2) = (Ok(0), Ok(0));
            if flag == libc::MSG_MORE {
                fr2 = send_errno(&facade_send(&fs, &[b"fg"], &sa(aaddr), &[], 0).await);
                kr2 = kernel_send(ts.as_raw_fd(), &[b"fg"], &sa(baddr), &[], 0);
            }
            let fa = arrivals(ra.as_raw_fd(), if fr.is_ok() { 200 } else { 20 });
            let ka = arrivals(rb.as_raw_fd(), if kr.is_ok() { 200 } else { 20 });
            if fr != kr || fr2 != kr2 || fa != ka {
                diffs.push(format!(
                    "{} send {label}: facade {} {} arrived {fa:?}; kernel {} {} arrived {ka:?}",
                    fam.name,
                    show(&fr),
                    show(&fr2),
                    show(&kr),
                    show(&kr2)
                ));
            }
            n += 1;
        }
    }
    println!("allowed flags: {n} cases, {} differences", diffs.len());
    for d in &diffs {
        println!("DIFF {d}");
    }
    assert!(diffs.is_empty(), "{diffs:#?}");
}

// ---------------------------------------------------------------------------
// 3. iovec count and control buffer limits
// ---------------------------------------------------------------------------

#[tokio::test]
async fn more_than_1024_iovecs_is_emsgsize_like_the_kernel() {
    for fam in families() {
        let sender = libc_socket(fam.domain, libc::SOCK_DGRAM, false);
        let (facade, faddr) = facade_receiver(fam, 0);
        let (twin, taddr) = libc_receiver(fam);
        let payload = pattern(1500, 3);
        for to in [faddr, taddr] {
            kernel_send(sender.as_raw_fd(), &[&payload], &sa(to), &[], 0).expect("send");
        }
        assert!(wait_readable(facade.host_fd(), 2000));
        assert!(wait_readable(twin.as_raw_fd(), 2000));
        // 1025 and 4096 buffers: EMSGSIZE, the datagram stays.
        for count in [1025usize, 4096] {
            let f = facade_recv(&facade, &shape(count, 1), 0, true, 64).await;
            let k = kernel_recv(twin.as_raw_fd(), &shape(count, 1), 0, true, 64);
            assert_eq!(
                f.ret,
                Err(libc::EMSGSIZE),
                "{} recvmsg {count} iovecs",
                fam.name
            );
            assert_eq!(
                k.ret, f.ret,
                "{} recvmsg {count} iovecs vs kernel",
                fam.name
            );
            assert_eq!(fionread(facade.host_fd()), 1500);
        }
        // 1024 buffers pass: identical to the kernel.
        let f = facade_recv(&facade, &shape(1024, 1), 0, true, 64).await;
        let k = kernel_recv(twin.as_raw_fd(), &shape(1024, 1), 0, true, 64);
        assert_eq!(f.ret, Ok(1024), "{} 1024 iovecs", fam.name);
        assert_eq!(f.diff(&k), None, "{} recvmsg 1024 iovecs", fam.name);

        // sendmsg: the same on both sides.
        let fs = facade_udp(fam);
        let ts = libc_socket(fam.domain, libc::SOCK_DGRAM, false);
        let (ra, aaddr) = libc_receiver(fam);
        let (rb, baddr) = libc_receiver(fam);
        let byte = [7u8];
        for count in [1024usize, 1025, 2000] {
            let parts: Vec<&[u8]> = vec![&byte[..]; count];
            let fr = send_errno(&facade_send(&fs, &parts, &sa(aaddr), &[], 0).await);
            let kr = kernel_send(ts.as_raw_fd(), &parts, &sa(baddr), &[], 0);
            let want = if count > 1024 {
                Err(libc::EMSGSIZE)
            } else {
                Ok(count)
            };
            assert_eq!(fr, want, "{} sendmsg {count} iovecs", fam.name);
            assert_eq!(fr, kr, "{} sendmsg {count} iovecs vs kernel", fam.name);
            let fa = arrivals(ra.as_raw_fd(), if fr.is_ok() { 500 } else { 20 });
            let ka = arrivals(rb.as_raw_fd(), if kr.is_ok() { 500 } else { 20 });
            assert_eq!(fa, ka, "{} sendmsg {count} iovecs: arrivals", fam.name);
        }
        // writev and readv check the same limit.
        let s = facade_udp(fam);
        s.connect(&sa(aaddr), false).await.expect("connect");
        let parts: Vec<IoSlice<'_>> = vec![IoSlice::new(&byte); 1025];
        assert_eq!(
            within("writev", s.writev(&parts)).await,
            Err(SendError::from(Errno::EMSGSIZE))
        );
        let mut store = vec![[0u8; 1]; 1025];
        let mut slices: Vec<IoSliceMut<'_>> =
            store.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        assert_eq!(
            within("readv", facade.readv(&mut slices)).await,
            Err(Errno::EMSGSIZE)
        );
    }
}

#[tokio::test]
async fn control_buffers_over_10_mib_are_enobufs() {
    for fam in families() {
        let sender = libc_socket(fam.domain, libc::SOCK_DGRAM, false);
        let (facade, faddr) = facade_receiver(fam, 0);
        let (twin, taddr) = libc_receiver(fam);
        for to in [faddr, taddr] {
            kernel_send(sender.as_raw_fd(), &[b"ctl"], &sa(to), &fam.tos_cmsg(4), 0).expect("send");
        }
        assert!(wait_readable(facade.host_fd(), 2000));
        assert!(wait_readable(twin.as_raw_fd(), 2000));
        let f = facade_recv(&facade, &[16], 0, true, MAX_GUEST_CONTROL + 1).await;
        assert_eq!(
            f.ret,
            Err(libc::ENOBUFS),
            "{} recv control 10 MiB + 1",
            fam.name
        );
        assert_eq!(fionread(facade.host_fd()), 3, "datagram still queued");
        let f = facade_recv(&facade, &[16], 0, true, usize::MAX).await;
        assert_eq!(
            f.ret,
            Err(libc::ENOBUFS),
            "{} recv control usize::MAX",
            fam.name
        );
        // The kernel takes any receive control length.
        let k = kernel_recv(
            twin.as_raw_fd(),
            &[16],
            libc::MSG_PEEK,
            true,
            MAX_GUEST_CONTROL + 1,
        );
        println!(
            "SPEC difference: {} recvmsg control 10 MiB + 1: facade ENOBUFS, kernel {} ({} control bytes)",
            fam.name,
            show(&k.ret),
            k.control.len()
        );
        // Exactly 10 MiB is allowed and identical to the kernel.
        let f = facade_recv(&facade, &[16], 0, true, MAX_GUEST_CONTROL).await;
        let k = kernel_recv(twin.as_raw_fd(), &[16], 0, true, MAX_GUEST_CONTROL);
        assert_eq!(f.diff(&k), None, "{} recv control exactly 10 MiB", fam.name);

        let fs = facade_udp(fam);
        let ts = libc_socket(fam.domain, libc::SOCK_DGRAM, false);
        let (ra, aaddr) = libc_receiver(fam);
        let (rb, baddr) = libc_receiver(fam);
        let big = vec![0u8; MAX_GUEST_CONTROL + 1];
        let fr = send_errno(&facade_send(&fs, &[b"x"], &sa(aaddr), &big, 0).await);
        assert_eq!(
            fr,
            Err(libc::ENOBUFS),
            "{} send control 10 MiB + 1",
            fam.name
        );
        let kr = kernel_send(ts.as_raw_fd(), &[b"x"], &sa(baddr), &big, 0);
        if kr != fr {
            println!(
                "SPEC difference: {} sendmsg control 10 MiB + 1: facade ENOBUFS, kernel {}",
                fam.name,
                show(&kr)
            );
        }
        // 10 MiB of zero bytes: within the limit, so parsed: a zero
        // cmsg_len is malformed (EINVAL); the kernel refuses to allocate.
        let ten = vec![0u8; MAX_GUEST_CONTROL];
        let fr = send_errno(&facade_send(&fs, &[b"x"], &sa(aaddr), &ten, 0).await);
        let kr = kernel_send(ts.as_raw_fd(), &[b"x"], &sa(baddr), &ten, 0);
        assert_eq!(fr, Err(libc::EINVAL), "{} send 10 MiB of zeros", fam.name);
        if kr != fr {
            println!(
                "note: {} sendmsg 10 MiB of zero control bytes: facade EINVAL (malformed cmsg_len), kernel {}",
                fam.name,
                show(&kr)
            );
        }
        assert!(arrivals(ra.as_raw_fd(), 20).is_empty());
        drain(rb.as_raw_fd());
    }
}

// ---------------------------------------------------------------------------
// 4. sendmsg with guest control bytes
// ---------------------------------------------------------------------------

/// What the facade must answer for a send case.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// Whatever the kernel answers, and the same datagrams arrive.
    Kernel,
    /// SPEC.md's errno (the kernel's answer is only reported).
    Spec(i32),
}

struct SendCase {
    label: String,
    control: Vec<u8>,
    payload: Vec<u8>,
    want: Want,
}

fn case(label: impl Into<String>, control: Vec<u8>, want: Want) -> SendCase {
    SendCase {
        label: label.into(),
        control,
        payload: b"control message case".to_vec(),
        want,
    }
}

fn v4_send_cases() -> Vec<SendCase> {
    use libc::{IP_PKTINFO, IP_RECVERR, IP_TOS, IP_TTL, IPPROTO_IP, SOL_SOCKET};
    let lo = Ipv4Addr::LOCALHOST;
    let any = Ipv4Addr::UNSPECIFIED;
    let mut c = Vec::new();
    for v in 0..=255 {
        c.push(case(
            format!("IP_TOS int {v:#x}"),
            cm(IPPROTO_IP, IP_TOS, &int(v)),
            Want::Kernel,
        ));
        c.push(case(
            format!("IP_TOS byte {v:#x}"),
            cm(IPPROTO_IP, IP_TOS, &[v as u8]),
            Want::Kernel,
        ));
    }
    for v in [256, -1, 0x1ff, 0x10010, i32::MIN, i32::MAX] {
        c.push(case(
            format!("IP_TOS int {v} (out of range)"),
            cm(IPPROTO_IP, IP_TOS, &int(v)),
            Want::Kernel,
        ));
    }
    c.push(case(
        "IP_TOS 2-byte payload",
        cm(IPPROTO_IP, IP_TOS, &[0x10, 0]),
        Want::Kernel,
    ));
    c.push(case(
        "IP_TOS 8-byte payload",
        cm(IPPROTO_IP, IP_TOS, &[0x10, 0, 0, 0, 0, 0, 0, 0]),
        Want::Kernel,
    ));
    for v in 1..=255 {
        c.push(case(
            format!("IP_TTL {v}"),
            cm(IPPROTO_IP, IP_TTL, &int(v)),
            Want::Kernel,
        ));
    }
    for v in [0, 256, -1, 1000, i32::MIN] {
        c.push(case(
            format!("IP_TTL {v}"),
            cm(IPPROTO_IP, IP_TTL, &int(v)),
            Want::Spec(libc::EINVAL),
        ));
    }
    c.push(case(
        "IP_TTL 1-byte form 64",
        cm(IPPROTO_IP, IP_TTL, &[64]),
        Want::Kernel,
    ));
    c.push(case(
        "IP_PKTINFO source 127.0.0.1",
        cm(IPPROTO_IP, IP_PKTINFO, &pktinfo4(0, lo, any)),
        Want::Kernel,
    ));
    c.push(case(
        "IP_PKTINFO source 127.0.0.2",
        cm(
            IPPROTO_IP,
            IP_PKTINFO,
            &pktinfo4(0, Ipv4Addr::new(127, 0, 0, 2), any),
        ),
        Want::Kernel,
    ));
    c.push(case(
        "IP_PKTINFO ifindex 1, no source",
        cm(IPPROTO_IP, IP_PKTINFO, &pktinfo4(1, any, any)),
        Want::Kernel,
    ));
    c.push(case(
        "IP_PKTINFO ifindex 1, source 127.0.0.1, addr 127.0.0.9",
        cm(
            IPPROTO_IP,
            IP_PKTINFO,
            &pktinfo4(1, lo, Ipv4Addr::new(127, 0, 0, 9)),
        ),
        Want::Kernel,
    ));
    let mut long = pktinfo4(0, lo, any);
    long.extend_from_slice(&[0; 4]);
    c.push(case(
        "IP_PKTINFO 16-byte payload",
        cm(IPPROTO_IP, IP_PKTINFO, &long),
        Want::Kernel,
    ));
    c.push(case(
        "IP_PKTINFO 8-byte payload",
        cm(IPPROTO_IP, IP_PKTINFO, &pktinfo4(0, lo, any)[..8]),
        Want::Kernel,
    ));
    // Malformed lengths.
    for l in [0u64, 1, 8, 15] {
        c.push(case(
            format!("cmsg_len {l} (shorter than the header)"),
            cm_raw(IPPROTO_IP, IP_TOS, &int(0x10), Some(l)),
            Want::Spec(libc::EINVAL),
        ));
    }
    for l in [21u64, 24, 25, 100, u64::MAX] {
        c.push(case(
            format!("cmsg_len {l} in a 24-byte buffer (longer than the buffer)"),
            cm_raw(IPPROTO_IP, IP_TOS, &int(0x10), Some(l)),
            Want::Spec(libc::EINVAL),
        ));
    }
    let mut two = cm(IPPROTO_IP, IP_TOS, &int(0x10));
    two.extend(cm_raw(IPPROTO_IP, IP_TTL, &int(9), Some(4)));
    c.push(case(
        "valid IP_TOS, then cmsg_len 4",
        two,
        Want::Spec(libc::EINVAL),
    ));
    // Receive-only and other unsendable types.
    let ts = timeval_bytes(1, 2);
    c.push(case(
        "SO_TIMESTAMP (receive-only)",
        cm(SOL_SOCKET, libc::SO_TIMESTAMP, &ts),
        Want::Spec(libc::EINVAL),
    ));
    c.push(case(
        "SO_TIMESTAMPNS (receive-only)",
        cm(SOL_SOCKET, libc::SO_TIMESTAMPNS, &ts),
        Want::Spec(libc::EINVAL),
    ));
    c.push(case(
        "IP_RECVERR (receive-only)",
        cm(IPPROTO_IP, IP_RECVERR, &[0u8; 32]),
        Want::Spec(libc::EINVAL),
    ));
    c.push(case(
        "IP_RECVERR int 1",
        cm(IPPROTO_IP, IP_RECVERR, &int(1)),
        Want::Spec(libc::EINVAL),
    ));
    c.push(case(
        "IP_ORIGDSTADDR (receive-only)",
        cm(
            IPPROTO_IP,
            libc::IP_ORIGDSTADDR,
            &sa(SocketAddr::from((lo, 9))),
        ),
        Want::Spec(libc::EINVAL),
    ));
    c.push(case(
        "IP_RETOPTS (not in the send list)",
        cm(IPPROTO_IP, libc::IP_RETOPTS, &[1, 1, 1, 0]),
        Want::Spec(libc::EINVAL),
    ));
    c.push(case(
        "SO_MARK (not in the send list)",
        cm(SOL_SOCKET, libc::SO_MARK, &int(1)),
        Want::Spec(libc::EINVAL),
    ));
    c.push(case(
        "SCM_RIGHTS (not in the send list)",
        cm(SOL_SOCKET, libc::SCM_RIGHTS, &int(0)),
        Want::Spec(libc::EINVAL),
    ));
    c.push(case(
        "unknown level 999",
        cm(999, 1, &int(1)),
        Want::Spec(libc::EINVAL),
    ));
    c.push(case(
        "IPV6_TCLASS on an IPv4 socket",
        cm(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &int(0x20)),
        Want::Kernel,
    ));
    // Fewer than a header's bytes: ignored by both.
    c.push(case("8 junk bytes", vec![0xff; 8], Want::Kernel));
    let mut tail = cm(IPPROTO_IP, IP_TOS, &int(0x28));
    tail.extend_from_slice(&[0xee; 15]);
    c.push(case("IP_TOS then 15 junk bytes", tail, Want::Kernel));
    // A 1-byte TOS with no padding at the end.
    let mut tight = cm(IPPROTO_IP, IP_TOS, &[0x48]);
    tight.truncate(17);
    c.push(case("IP_TOS byte, 17-byte buffer", tight, Want::Kernel));
    let mut all = cm(IPPROTO_IP, IP_TOS, &int(0xb8));
    all.extend(cm(IPPROTO_IP, IP_TTL, &int(3)));
    all.extend(cm(IPPROTO_IP, IP_PKTINFO, &pktinfo4(0, lo, any)));
    c.push(case("IP_TOS + IP_TTL + IP_PKTINFO", all, Want::Kernel));
    let mut twice = cm(IPPROTO_IP, IP_TTL, &int(3));
    twice.extend(cm(IPPROTO_IP, IP_TTL, &int(200)));
    c.push(case("IP_TTL twice", twice, Want::Kernel));
    let many: Vec<u8> = (0..50)
        .flat_map(|i| cm(IPPROTO_IP, IP_TOS, &int(i * 4)))
        .collect();
    c.push(case(
        "50 x IP_TOS (1200 bytes, over the 1024-byte host buffer)",
        many,
        Want::Spec(libc::ENOBUFS),
    ));
    let mut gso = case(
        "UDP_SEGMENT 10 on a 30-byte datagram",
        cm(libc::IPPROTO_UDP, libc::UDP_SEGMENT, &10u16.to_ne_bytes()),
        Want::Kernel,
    );
    gso.payload = pattern(30, 30);
    c.push(gso);
    c
}

fn v6_send_cases() -> Vec<SendCase> {
    use libc::{IPPROTO_IPV6, IPV6_HOPLIMIT, IPV6_PKTINFO, IPV6_TCLASS};
    let mut c = Vec::new();
    // -1 has its own test (`ipv6_tclass_minus_one_matches_kernel`).
    for v in [-2, 0, 1, 0x10, 0x28, 0xb8, 255, 256, i32::MIN] {
        c.push(case(
            format!("IPV6_TCLASS {v}"),
            cm(IPPROTO_IPV6, IPV6_TCLASS, &int(v)),
            Want::Kernel,
        ));
    }
    c.push(case(
        "IPV6_TCLASS byte form",
        cm(IPPROTO_IPV6, IPV6_TCLASS, &[0x10]),
        Want::Kernel,
    ));
    for v in [-2, -1, 0, 1, 64, 255, 256] {
        c.push(case(
            format!("IPV6_HOPLIMIT {v}"),
            cm(IPPROTO_IPV6, IPV6_HOPLIMIT, &int(v)),
            Want::Kernel,
        ));
    }
    c.push(case(
        "IPV6_PKTINFO source ::1",
        cm(
            IPPROTO_IPV6,
            IPV6_PKTINFO,
            &pktinfo6(Ipv6Addr::LOCALHOST, 0),
        ),
        Want::Kernel,
    ));
    c.push(case(
        "IPV6_PKTINFO ifindex 1, no source",
        cm(
            IPPROTO_IPV6,
            IPV6_PKTINFO,
            &pktinfo6(Ipv6Addr::UNSPECIFIED, 1),
        ),
        Want::Kernel,
    ));
    c.push(case(
        "IP_TOS on an IPv6 socket",
        cm(libc::IPPROTO_IP, libc::IP_TOS, &int(0x10)),
        Want::Kernel,
    ));
    for l in [0u64, 15] {
        c.push(case(
            format!("cmsg_len {l}"),
            cm_raw(IPPROTO_IPV6, IPV6_TCLASS, &int(0x10), Some(l)),
            Want::Spec(libc::EINVAL),
        ));
    }
    c.push(case(
        "cmsg_len 64 in a 24-byte buffer",
        cm_raw(IPPROTO_IPV6, IPV6_TCLASS, &int(0x10), Some(64)),
        Want::Spec(libc::EINVAL),
    ));
    c.push(case(
        "IPV6_RECVERR (receive-only)",
        cm(IPPROTO_IPV6, libc::IPV6_RECVERR, &[0u8; 44]),
        Want::Spec(libc::EINVAL),
    ));
    c.push(case(
        "SO_TIMESTAMP (receive-only)",
        cm(libc::SOL_SOCKET, libc::SO_TIMESTAMP, &timeval_bytes(1, 2)),
        Want::Spec(libc::EINVAL),
    ));
    c.push(case(
        "unknown level 999",
        cm(999, 1, &int(1)),
        Want::Spec(libc::EINVAL),
    ));
    c
}

#[tokio::test]
async fn sendmsg_control_messages_match_kernel() {
    let mut diffs = Vec::new();
    let mut notes = Vec::new();
    let mut n = 0;
    for fam in families() {
        let fs = facade_udp(fam);
        let ts = libc_socket(fam.domain, libc::SOCK_DGRAM, false);
        let (ra, aaddr) = libc_receiver(fam);
        let (rb, baddr) = libc_receiver(fam);
        let cases = if fam.v6() {
            v6_send_cases()
        } else {
            v4_send_cases()
        };
        for c in cases {
            n += 1;
            let label = format!("{} {}", fam.name, c.label);
            let fr = send_errno(&facade_send(&fs, &[&c.payload], &sa(aaddr), &c.control, 0).await);
            let kr = kernel_send(ts.as_raw_fd(), &[&c.payload], &sa(baddr), &c.control, 0);
            let fa = arrivals(ra.as_raw_fd(), if fr.is_ok() { 200 } else { 5 });
            let ka = arrivals(rb.as_raw_fd(), if kr.is_ok() { 200 } else { 5 });
            match c.want {
                Want::Kernel => {
                    if fr != kr || fa != ka {
                        diffs.push(format!(
                            "{label}: facade {} arrived {fa:?}; kernel {} arrived {ka:?}",
                            show(&fr),
                            show(&kr)
                        ));
                    }
                }
                Want::Spec(e) => {
                    if fr != Err(e) || !fa.is_empty() {
                        diffs.push(format!(
                            "{label}: SPEC says {}, facade {} arrived {fa:?}",
                            ename(e),
                            show(&fr)
                        ));
                    }
                    if kr != fr {
                        notes.push(format!(
                            "{label}: facade {} (SPEC), kernel {} ({} datagram(s) arrived)",
                            show(&fr),
                            show(&kr),
                            ka.len()
                        ));
                    }
                }
            }
        }
    }
    println!(
        "sendmsg control: {n} cases, {} differences, {} SPEC notes",
        diffs.len(),
        notes.len()
    );
    for d in &notes {
        println!("SPEC difference: {d}");
    }
    for d in &diffs {
        println!("DIFF {d}");
    }
    assert!(
        diffs.is_empty(),
        "{} send-control cases differ:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// `IPV6_TCLASS` -1 as a send cmsg. The facade drops the message ("the
/// socket's own traffic class", decode.rs); the host kernel (6.x:
/// `udpv6_sendmsg` takes the cmsg's -1 as is) sends traffic class 0xff,
/// whatever the socket's `IPV6_TCLASS` is. SPEC.md's principle (the
/// kernel's answer) makes this a difference.
#[tokio::test]
async fn ipv6_tclass_minus_one_matches_kernel() {
    if !families().iter().any(|f| f.v6()) {
        return;
    }
    let fam = V6;
    let fs = facade_udp(fam);
    let ts = libc_socket(fam.domain, libc::SOCK_DGRAM, false);
    let (ra, aaddr) = libc_receiver(fam);
    let (rb, baddr) = libc_receiver(fam);
    let mut diffs = Vec::new();
    for sock_tclass in [None, Some(0x20)] {
        if let Some(t) = sock_tclass {
            fs.setsockopt(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &int(t))
                .expect("facade IPV6_TCLASS");
            libc_setsockopt(
                ts.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_TCLASS,
                &int(t),
            )
            .expect("twin IPV6_TCLASS");
        }
        let control = cm(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &int(-1));
        let fr = send_errno(&facade_send(&fs, &[b"tclass"], &sa(aaddr), &control, 0).await);
        let kr = kernel_send(ts.as_raw_fd(), &[b"tclass"], &sa(baddr), &control, 0);
        let fa = arrivals(ra.as_raw_fd(), 500);
        let ka = arrivals(rb.as_raw_fd(), 500);
        let tclass = |a: &[Arrival]| {
            a.first().and_then(|a| {
                hostsock::cmsg::CmsgIter::new(&a.control).find_map(|m| match m {
                    Cmsg::TClass(t) => Some(t),
                    _ => None,
                })
            })
        };
        println!(
            "IPV6_TCLASS cmsg -1, socket tclass {sock_tclass:?}: facade {} tclass {:?}; kernel {} tclass {:?}",
            show(&fr),
            tclass(&fa),
            show(&kr),
            tclass(&ka)
        );
        if fr != kr || fa != ka {
            diffs.push(format!(
                "socket tclass {sock_tclass:?}: facade {} arrived with tclass {:?}, kernel {} arrived with tclass {:?}",
                show(&fr),
                tclass(&fa),
                show(&kr),
                tclass(&ka)
            ));
        }
    }
    assert!(diffs.is_empty(), "IPV6_TCLASS -1: {diffs:#?}");
}

// ---------------------------------------------------------------------------
// 5. Zero-length sends and empty-buffer receives
// ---------------------------------------------------------------------------

/// A zero-length send: label, iovecs, control bytes.
type ZeroForm<'a> = (&'a str, Vec<&'a [u8]>, &'a [u8]);

#[tokio::test]
async fn zero_length_send_and_empty_buffer_recv_reach_the_host() {
    for fam in families() {
        let fs = facade_udp(fam);
        let ts = libc_socket(fam.domain, libc::SOCK_DGRAM, false);
        let (ra, aaddr) = libc_receiver(fam);
        let (rb, baddr) = libc_receiver(fam);
        let tos = fam.tos_cmsg(0x20);
        let empty: &[u8] = &[];
        let forms: [ZeroForm<'_>; 4] = [
            ("no iovecs", vec![], &[]),
            ("one empty iovec", vec![empty], &[]),
            ("three empty iovecs", vec![empty, empty, empty], &[]),
            ("no iovecs + TOS cmsg", vec![], &tos),
        ];
        for (label, parts, control) in &forms {
            let fr = send_errno(&facade_send(&fs, parts, &sa(aaddr), control, 0).await);
            let kr = kernel_send(ts.as_raw_fd(), parts, &sa(baddr), control, 0);
            assert_eq!(fr, Ok(0), "{} zero-length send, {label}", fam.name);
            assert_eq!(fr, kr, "{} {label} vs kernel", fam.name);
            let fa = arrivals(ra.as_raw_fd(), 500);
            let ka = arrivals(rb.as_raw_fd(), 500);
            assert_eq!(
                fa.len(),
                1,
                "{} {label}: one empty datagram: {fa:?}",
                fam.name
            );
            assert!(fa[0].data.is_empty());
            assert_eq!(fa, ka, "{} {label}: arrivals", fam.name);
        }
        // The other send forms.
        let r = within("sendto", fs.sendto(&[], 0, &sa(aaddr))).await;
        assert_eq!(r, Ok(0));
        let conn = facade_udp(fam);
        conn.connect(&sa(aaddr), false).await.expect("connect");
        assert_eq!(within("write", conn.write(&[])).await, Ok(0));
        assert_eq!(within("writev", conn.writev(&[])).await, Ok(0));
        let fa = arrivals(ra.as_raw_fd(), 500);
        assert_eq!(fa.len(), 3, "sendto/write/writev of nothing: {fa:?}");
        assert!(fa.iter().all(|a| a.data.is_empty()));

        // Empty-buffer receives: the datagram is consumed, MSG_TRUNC set,
        // address and control delivered.
        let sender = libc_socket(fam.domain, libc::SOCK_DGRAM, false);
        let (facade, faddr) = facade_receiver(fam, 0);
        let (twin, taddr) = libc_receiver(fam);
        for (i, (flags, sh)) in [
            (0, vec![]),
            (0, vec![0]),
            (libc::MSG_TRUNC, vec![]),
            (libc::MSG_TRUNC, vec![0, 0]),
        ]
        .into_iter()
        .enumerate()
        {
            for (len, tosv) in [(10usize, 0x10u8), (3, 0x28)] {
                for to in [faddr, taddr] {
                    kernel_send(
                        sender.as_raw_fd(),
                        &[&pattern(len, i)],
                        &sa(to),
                        &fam.tos_cmsg(tosv),
                        0,
                    )
                    .expect("send");
                }
            }
            assert!(wait_readable(facade.host_fd(), 2000));
            assert!(wait_readable(twin.as_raw_fd(), 2000));
            let f = facade_recv(&facade, &sh, flags, true, 200).await;
            let k = kernel_recv(twin.as_raw_fd(), &sh, flags, true, 200);
            let want_len = if flags & libc::MSG_TRUNC != 0 { 10 } else { 0 };
            assert_eq!(
                f.ret,
                Ok(want_len),
                "{} empty recv {flags:#x} {sh:?}",
                fam.name
            );
            assert_ne!(f.flags & libc::MSG_TRUNC, 0, "MSG_TRUNC reported");
            assert!(!f.addr.is_empty() && !f.control.is_empty());
            assert_eq!(f.diff(&k), None, "{} empty recv vs kernel", fam.name);
            // The 10-byte datagram is gone: the 3-byte one is next.
            let f = facade_recv(&facade, &[64], 0, true, 200).await;
            let k = kernel_recv(twin.as_raw_fd(), &[64], 0, true, 200);
            assert_eq!(f.ret, Ok(3), "{} after the empty recv", fam.name);
            assert_eq!(f.diff(&k), None);
        }
        // read with an empty buffer also consumes a datagram.
        kernel_send(sender.as_raw_fd(), &[b"12345"], &sa(faddr), &[], 0).expect("send");
        assert!(wait_readable(facade.host_fd(), 2000));
        assert_eq!(within("read", facade.read(&mut [])).await, Ok(0));
        assert_eq!(fionread(facade.host_fd()), 0);
        assert_eq!(drain(facade.host_fd()), 0);
    }
}

// ---------------------------------------------------------------------------
// 6. EPIPE and the SIGPIPE hint (in a child process)
// ---------------------------------------------------------------------------

const CHILD_ENV: &str = "HOSTSOCK_RAW_MSG_DIFF_CHILD";

/// In the child (the env var names this test) returns `true`: the caller
/// runs the body. In the parent, runs this binary again with only `name`,
/// asserts it passed and was not killed by a signal, and returns `false`.
async fn run_alone_in_child(name: &str) -> bool {
    if std::env::var(CHILD_ENV).is_ok_and(|v| v == name) {
        return true;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(exe)
            .args([name, "--exact", "--test-threads=1", "--nocapture"])
            .env(CHILD_ENV, name)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("child took too long")
    .expect("spawn the child test process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    println!("--- child stdout\n{stdout}");
    assert!(
        out.status.success(),
        "child running {name} failed: {:?} (signal {:?})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status,
        out.status.signal(),
    );
    assert!(
        stdout.contains("1 passed"),
        "child did not run {name}:\n{stdout}"
    );
    false
}

/// A connected TCP pair on loopback: (client fd, accepted peer).
fn tcp_pair(listener: &StdListener, blocking: bool) -> (OwnedFd, StdStream) {
    let fd = libc_socket(libc::AF_INET, libc::SOCK_STREAM, true);
    libc_connect(fd.as_raw_fd(), listener.local_addr().expect("addr")).expect("connect");
    if !blocking {
        // SAFETY: fcntl on an owned fd with integer arguments.
        unsafe {
            let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
    let (peer, _) = listener.accept().expect("accept");
    (fd, peer)
}

async fn facade_tcp_client(listener: &StdListener) -> (RawSocket, StdStream) {
    let s = RawSocket::new(policy(), libc::AF_INET, libc::SOCK_STREAM, 0).expect("new tcp");
    within(
        "connect",
        s.connect(&sa(listener.local_addr().expect("addr")), false),
    )
    .await
    .expect("facade connect");
    let (peer, _) = listener.accept().expect("accept");
    (s, peer)
}

fn reset(peer: StdStream) {
    libc_setsockopt(peer.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, &{
        let mut v = int(1).to_vec();
        v.extend_from_slice(&int(0));
        v
    })
    .expect("SO_LINGER 0");
    drop(peer);
}

#[tokio::test]
async fn tcp_write_after_reset_epipe_and_sigpipe_hint() {
    if !run_alone_in_child("tcp_write_after_reset_epipe_and_sigpipe_hint").await {
        return;
    }
    // The Rust runtime ignores SIGPIPE; put the default (terminate) back so
    // that a host write without MSG_NOSIGNAL would kill this child process
    // and the parent would see the signal.
    // SAFETY: `signal` with `SIG_DFL` installs no handler code; this child
    // process runs this one test only.
    let prev = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(prev, libc::SIG_ERR);

    let listener = StdListener::bind("127.0.0.1:0").expect("listen");
    let (facade, fpeer) = facade_tcp_client(&listener).await;
    let (twin, tpeer) = tcp_pair(&listener, false);
    reset(fpeer);
    reset(tpeer);
    within("reset seen", facade.wait(libc::POLLIN, None))
        .await
        .expect("wait");
    poll_fd(twin.as_raw_fd(), libc::POLLIN, 2000);

    // (guest flags, form); the twin always sends with MSG_NOSIGNAL.
    let nosig = libc::MSG_NOSIGNAL;
    let mut results = Vec::new();
    for (i, flags) in [
        0,
        nosig,
        0,
        nosig,
        0,
        libc::MSG_DONTWAIT,
        nosig | libc::MSG_DONTWAIT,
    ]
    .into_iter()
    .enumerate()
    {
        let f = match i {
            2 => within("write", facade.write(b"after reset")).await,
            4 => within("writev", facade.writev(&[IoSlice::new(b"after reset")])).await,
            3 => within("sendto", facade.sendto(b"after reset", flags, &[])).await,
            _ => facade_send(&facade, &[b"after reset"], &[], &[], flags).await,
        };
        let k = kernel_send(twin.as_raw_fd(), &[b"after reset"], &[], &[], nosig);
        println!(
            "write #{i} guest flags {flags:#x}: facade {f:?}, kernel {}",
            show(&k)
        );
        let e = f.expect_err("a write after a reset fails");
        assert!(
            e.errno == Errno::EPIPE || e.errno == Errno::ECONNRESET,
            "#{i}: {e:?}"
        );
        assert_eq!(
            e.raise_sigpipe,
            e.errno == Errno::EPIPE && flags & nosig == 0,
            "#{i}: raise_sigpipe for {e:?} with flags {flags:#x}"
        );
        assert_eq!(Err(e.errno.raw()), k, "#{i}: facade vs kernel errno");
        results.push((e, flags));
    }
    assert!(
        results
            .iter()
            .any(|(e, f)| e.errno == Errno::EPIPE && f & nosig == 0 && e.raise_sigpipe),
        "EPIPE without MSG_NOSIGNAL (raise_sigpipe true) was seen"
    );
    assert!(
        results
            .iter()
            .any(|(e, f)| e.errno == Errno::EPIPE && f & nosig != 0 && !e.raise_sigpipe),
        "EPIPE with MSG_NOSIGNAL (raise_sigpipe false) was seen"
    );
    // Still alive: no SIGPIPE reached this process.
    println!("child alive after {} failed writes", results.len());
}

// ---------------------------------------------------------------------------
// 7. Blocking semantics
// ---------------------------------------------------------------------------

#[tokio::test]
async fn blocking_recv_timeouts_and_nonblocking_views() {
    for fam in families() {
        // SO_RCVTIMEO 100 ms: EAGAIN after ~100 ms, like a blocking twin.
        let (facade, _) = facade_receiver(fam, 0);
        facade
            .setsockopt(
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeval_bytes(0, 100_000),
            )
            .expect("SO_RCVTIMEO");
        let t0 = Instant::now();
        let f = facade_recv(&facade, &[64], 0, true, 64).await;
        let fe = t0.elapsed();
        assert_eq!(f.ret, Err(libc::EAGAIN), "{} SO_RCVTIMEO expiry", fam.name);
        assert!(
            fe >= Duration::from_millis(90) && fe < Duration::from_millis(1000),
            "{} facade waited {fe:?}",
            fam.name
        );
        let twin = libc_socket(fam.domain, libc::SOCK_DGRAM, true);
        libc_bind(twin.as_raw_fd(), fam.any_port());
        libc_setsockopt(
            twin.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeval_bytes(0, 100_000),
        )
        .expect("twin SO_RCVTIMEO");
        let tfd = twin.as_raw_fd();
        let (k, ke) = tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let k = kernel_recv(tfd, &[64], 0, true, 64);
            (k, t0.elapsed())
        })
        .await
        .expect("join");
        assert_eq!(f.diff(&k), None, "{} timeout vs kernel", fam.name);
        println!(
            "{} SO_RCVTIMEO 100ms: facade {fe:?}, kernel {ke:?}",
            fam.name
        );

        // A blocking receive without a timeout waits for a datagram.
        let facade2 = {
            let (s, a) = facade_receiver(fam, 0);
            (s, a)
        };
        let to = sa(facade2.1);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(60));
            let s = libc_socket(
                if to.len() == 16 {
                    libc::AF_INET
                } else {
                    libc::AF_INET6
                },
                libc::SOCK_DGRAM,
                false,
            );
            kernel_send(s.as_raw_fd(), &[b"late"], &to, &[], 0)
        });
        let t0 = Instant::now();
        let f = facade_recv(&facade2.0, &[64], 0, false, 0).await;
        assert_eq!(
            f.ret,
            Ok(4),
            "{} blocking recv of a late datagram",
            fam.name
        );
        assert!(t0.elapsed() >= Duration::from_millis(40));
        assert_eq!(sender.join().expect("join"), Ok(4));

        // SOCK_NONBLOCK: EAGAIN at once, as a non-blocking twin.
        let (nb, _) = facade_receiver(fam, libc::SOCK_NONBLOCK);
        assert!(nb.nonblocking());
        let t0 = Instant::now();
        let f = facade_recv(&nb, &[64], 0, true, 64).await;
        assert_eq!(f.ret, Err(libc::EAGAIN), "{} SOCK_NONBLOCK", fam.name);
        assert!(t0.elapsed() < Duration::from_millis(50));
        let (twin_nb, _) = libc_receiver(fam);
        let k = kernel_recv(twin_nb.as_raw_fd(), &[64], 0, true, 64);
        assert_eq!(f.diff(&k), None);

        // MSG_DONTWAIT on the blocking socket, and set_nonblocking.
        let t0 = Instant::now();
        let f = facade_recv(&facade, &[64], libc::MSG_DONTWAIT, true, 64).await;
        assert_eq!(f.ret, Err(libc::EAGAIN));
        facade.set_nonblocking(true);
        let f2 = facade_recv(&facade, &[64], 0, true, 64).await;
        assert_eq!(f2.ret, Err(libc::EAGAIN));
        facade.set_nonblocking(false);
        assert!(t0.elapsed() < Duration::from_millis(50));
    }
}

#[tokio::test]
async fn errqueue_never_waits_and_matches_kernel() {
    for fam in families() {
        // A blocking socket with no timeout and an empty error queue.
        let s = facade_udp(fam);
        s.bind(&sa(fam.any_port())).expect("bind");
        let t0 = Instant::now();
        let f = facade_recv(&s, &[64], libc::MSG_ERRQUEUE, true, 200).await;
        assert_eq!(f.ret, Err(libc::EAGAIN), "{} empty error queue", fam.name);
        assert!(t0.elapsed() < Duration::from_millis(100));
        let twin = libc_socket(fam.domain, libc::SOCK_DGRAM, true);
        libc_bind(twin.as_raw_fd(), fam.any_port());
        let k = kernel_recv(twin.as_raw_fd(), &[64], libc::MSG_ERRQUEUE, true, 200);
        assert_eq!(f.diff(&k), None, "{} empty error queue vs kernel", fam.name);

        // A queued ICMP port-unreachable: the same bytes on both sides.
        let (level, name) = fam.recverr_opt();
        s.setsockopt(level, name, &int(1)).expect("facade RECVERR");
        libc_setsockopt(twin.as_raw_fd(), level, name, &int(1)).expect("twin RECVERR");
        let closed = {
            let t = StdUdp::bind(fam.any_port()).expect("bind");
            t.local_addr().expect("addr")
        };
        let payload = b"to a closed port";
        let fr = facade_send(&s, &[payload], &sa(closed), &[], 0).await;
        assert_eq!(fr, Ok(payload.len()));
        let kr = kernel_send(twin.as_raw_fd(), &[payload], &sa(closed), &[], 0);
        assert_eq!(kr, Ok(payload.len()));
        for fd in [s.host_fd(), twin.as_raw_fd()] {
            assert_ne!(poll_fd(fd, 0, 2000) & libc::POLLERR, 0, "POLLERR");
        }
        for sh in [vec![4usize], vec![64]] {
            let f = facade_recv(&s, &sh, libc::MSG_ERRQUEUE, true, 200).await;
            let k = kernel_recv(twin.as_raw_fd(), &sh, libc::MSG_ERRQUEUE, true, 200);
            println!(
                "{} MSG_ERRQUEUE {sh:?}: facade ret {:?} flags {:#x} control {} bytes; kernel ret {:?} flags {:#x} control {} bytes",
                fam.name,
                f.ret,
                f.flags,
                f.control.len(),
                k.ret,
                k.flags,
                k.control.len()
            );
            assert_eq!(
                f.diff(&k),
                None,
                "{} error queue {sh:?} vs kernel",
                fam.name
            );
            if sh[0] == 4 {
                assert!(f.ret.is_ok() && f.flags & libc::MSG_ERRQUEUE != 0);
                // Send the same again for the second round.
                let _ = facade_send(&s, &[payload], &sa(closed), &[], 0).await;
                let _ = kernel_send(twin.as_raw_fd(), &[payload], &sa(closed), &[], 0);
                for fd in [s.host_fd(), twin.as_raw_fd()] {
                    poll_fd(fd, 0, 2000);
                }
            }
        }
        // Drained: a plain DONTWAIT receive answers the same on both.
        let f = facade_recv(&s, &[64], libc::MSG_DONTWAIT, true, 200).await;
        let k = kernel_recv(twin.as_raw_fd(), &[64], libc::MSG_DONTWAIT, true, 200);
        assert_eq!(f.diff(&k), None, "{} after the error queue", fam.name);
        let f = facade_recv(&s, &[64], libc::MSG_ERRQUEUE, true, 200).await;
        assert_eq!(f.ret, Err(libc::EAGAIN));
    }
}

/// The peer writes `pieces` with `gap` between them to every stream in
/// `peers`, then shuts down its write side if `shut`.
fn spawn_writer(
    peers: Vec<StdStream>,
    pieces: Vec<Vec<u8>>,
    gap: Duration,
    shut: bool,
) -> std::thread::JoinHandle<Vec<StdStream>> {
    use std::io::Write;
    std::thread::spawn(move || {
        let mut peers = peers;
        for (i, p) in pieces.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(gap);
            }
            for s in &mut peers {
                s.write_all(p).expect("peer write");
            }
        }
        if shut {
            for s in &peers {
                s.shutdown(std::net::Shutdown::Write).expect("shutdown");
            }
        }
        peers
    })
}

async fn waitall_round(
    label: &str,
    sh: &[usize],
    flags: i32,
    pieces: Vec<Vec<u8>>,
    shut: bool,
    rcvtimeo_ms: i64,
) -> (Got, Got, Duration, Duration) {
    let listener = StdListener::bind("127.0.0.1:0").expect("listen");
    let (facade, fpeer) = facade_tcp_client(&listener).await;
    let (twin, tpeer) = tcp_pair(&listener, true);
    if rcvtimeo_ms > 0 {
        let tv = timeval_bytes(0, rcvtimeo_ms * 1000);
        facade
            .setsockopt(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
            .expect("facade SO_RCVTIMEO");
        libc_setsockopt(twin.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
            .expect("twin SO_RCVTIMEO");
    }
    let writer = spawn_writer(vec![fpeer, tpeer], pieces, Duration::from_millis(40), shut);
    let tfd = twin.as_raw_fd();
    let sh2 = sh.to_vec();
    let kernel = tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        let k = kernel_recv(tfd, &sh2, flags, false, 0);
        (k, t0.elapsed())
    });
    let t0 = Instant::now();
    let f = facade_recv(&facade, sh, flags, false, 0).await;
    let fe = t0.elapsed();
    let (k, ke) = within(label, kernel).await.expect("join");
    let peers = writer.join().expect("writer");
    drop(peers);
    drop(twin);
    (f, k, fe, ke)
}

#[tokio::test]
async fn tcp_waitall_waits_for_the_full_buffer_and_returns_partial_counts() {
    let pieces: Vec<Vec<u8>> = (0..3).map(|i| pattern(10, 100 + i)).collect();
    let all: Vec<u8> = pieces.concat();

    // Three pieces, 40 ms apart: the whole 30 bytes, in one call.
    for sh in [vec![30usize], vec![10, 5, 15], vec![1, 29]] {
        let (f, k, fe, ke) = waitall_round(
            "waitall full",
            &sh,
            libc::MSG_WAITALL,
            pieces.clone(),
            false,
            0,
        )
        .await;
        println!(
            "MSG_WAITALL {sh:?}: facade {:?} in {fe:?}, kernel {:?} in {ke:?}",
            f.ret, k.ret
        );
        assert_eq!(f.ret, Ok(30), "MSG_WAITALL {sh:?}");
        assert_eq!(f.bufs.concat(), all);
        assert!(fe >= Duration::from_millis(60), "it waited for all pieces");
        assert_eq!(f.diff(&k), None, "MSG_WAITALL {sh:?} vs kernel");
    }
    // One piece, then the peer shuts down: the partial count.
    let (f, k, _, _) = waitall_round(
        "waitall shutdown",
        &[30],
        libc::MSG_WAITALL,
        pieces[..1].to_vec(),
        true,
        0,
    )
    .await;
    assert_eq!(f.ret, Ok(10), "MSG_WAITALL then shutdown");
    assert_eq!(f.diff(&k), None, "MSG_WAITALL then shutdown vs kernel");
    // Two pieces, then nothing: the receive timeout ends it with the bytes
    // already received.
    let (f, k, fe, ke) = waitall_round(
        "waitall timeout",
        &[30],
        libc::MSG_WAITALL,
        pieces[..2].to_vec(),
        false,
        150,
    )
    .await;
    println!(
        "MSG_WAITALL + SO_RCVTIMEO 150ms: facade {:?} in {fe:?}, kernel {:?} in {ke:?}",
        f.ret, k.ret
    );
    assert_eq!(f.ret, Ok(20), "MSG_WAITALL then timeout");
    assert_eq!(f.diff(&k), None, "MSG_WAITALL then timeout vs kernel");
}

/// `MSG_PEEK | MSG_WAITALL` on TCP: Linux waits for the full buffer while
/// peeking (tcp_recvmsg's target is the full length with MSG_WAITALL,
/// whatever MSG_PEEK says).
#[tokio::test]
async fn tcp_peek_waitall_matches_kernel() {
    let pieces: Vec<Vec<u8>> = (0..2).map(|i| pattern(10, 200 + i)).collect();
    let (f, k, fe, ke) = waitall_round(
        "peek waitall",
        &[20],
        libc::MSG_PEEK | libc::MSG_WAITALL,
        pieces,
        false,
        0,
    )
    .await;
    println!(
        "MSG_PEEK|MSG_WAITALL: facade {:?} in {fe:?}, kernel {:?} in {ke:?}",
        f.ret, k.ret
    );
    assert_eq!(
        f.diff(&k),
        None,
        "MSG_PEEK|MSG_WAITALL on TCP: facade {:?} after {fe:?}, kernel {:?} after {ke:?}",
        f.ret,
        k.ret
    );
}

// ---------------------------------------------------------------------------
// 8. read/write/readv/writev/recvfrom/sendto agree with recvmsg/sendmsg
// ---------------------------------------------------------------------------

fn kernel_read(fd: RawFd, len: usize) -> (Result<usize, i32>, Vec<u8>) {
    let mut b = vec![FILL; len];
    // SAFETY: `b` is valid for writes of its length.
    let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), b.len()) };
    (
        if n < 0 {
            Err(last_errno())
        } else {
            Ok(n as usize)
        },
        b,
    )
}

fn kernel_recvfrom(
    fd: RawFd,
    len: usize,
    flags: i32,
    want_addr: bool,
) -> (Result<usize, i32>, Vec<u8>, Vec<u8>) {
    let mut b = vec![FILL; len];
    let mut name = [0u8; 128];
    let mut nlen = 128 as libc::socklen_t;
    let (np, lp) = if want_addr {
        (name.as_mut_ptr().cast(), &mut nlen as *mut libc::socklen_t)
    } else {
        (std::ptr::null_mut(), std::ptr::null_mut())
    };
    // SAFETY: `b` is valid for writes of its length; `np`/`lp` are null or
    // point to the live 128-byte `name` and its length.
    let n = unsafe { libc::recvfrom(fd, b.as_mut_ptr().cast(), b.len(), flags, np, lp) };
    if n < 0 {
        return (Err(last_errno()), b, Vec::new());
    }
    let addr = if want_addr {
        name[..nlen as usize].to_vec()
    } else {
        Vec::new()
    };
    (Ok(n as usize), b, addr)
}

#[tokio::test]
async fn read_and_write_forms_agree_with_msg_forms() {
    let mut checked = 0;
    for fam in families() {
        let sender = libc_socket(fam.domain, libc::SOCK_DGRAM, false);
        let (facade, faddr) = facade_receiver(fam, 0);
        let (twin, taddr) = libc_receiver(fam);
        let tfd = twin.as_raw_fd();
        let send_both = |payload: &[u8]| {
            for to in [faddr, taddr] {
                kernel_send(sender.as_raw_fd(), &[payload], &sa(to), &[], 0).expect("send");
            }
            assert!(wait_readable(facade.host_fd(), 2000));
            assert!(wait_readable(tfd, 2000));
        };
        for (i, cap) in [0usize, 3, 40, 100].into_iter().enumerate() {
            let p = pattern(40, i);
            // read vs read(2)
            send_both(&p);
            let mut b = vec![FILL; cap];
            let fr = within("read", facade.read(&mut b))
                .await
                .map_err(Errno::raw);
            let (kr, kb) = kernel_read(tfd, cap);
            assert_eq!((fr, &b), (kr, &kb), "{} read({cap})", fam.name);
            // read agrees with recvmsg(flags 0, no address, no control).
            send_both(&p);
            let g = facade_recv(&facade, &[cap], 0, false, 0).await;
            assert_eq!((g.ret, &g.bufs[0]), (fr, &b), "read vs recvmsg");
            drain(tfd);
            // readv vs readv(2)
            send_both(&p);
            let shp = [cap / 3, 1, cap];
            let mut store: Vec<Vec<u8>> = shp.iter().map(|&n| vec![FILL; n]).collect();
            let fr = {
                let mut sl: Vec<IoSliceMut<'_>> =
                    store.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                within("readv", facade.readv(&mut sl))
                    .await
                    .map_err(Errno::raw)
            };
            let mut kstore: Vec<Vec<u8>> = shp.iter().map(|&n| vec![FILL; n]).collect();
            let kiov: Vec<libc::iovec> = kstore
                .iter_mut()
                .map(|b| libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: b.len(),
                })
                .collect();
            // SAFETY: the iovecs point into the live buffers of `kstore`.
            let kn = unsafe { libc::readv(tfd, kiov.as_ptr(), kiov.len() as i32) };
            drop(kiov);
            let kr = if kn < 0 {
                Err(last_errno())
            } else {
                Ok(kn as usize)
            };
            assert_eq!((fr, &store), (kr, &kstore), "{} readv {shp:?}", fam.name);
            // recvfrom (with and without the address, and MSG_PEEK|MSG_TRUNC)
            send_both(&p);
            for (flags, want_addr) in [
                (libc::MSG_PEEK | libc::MSG_TRUNC, true),
                (libc::MSG_PEEK, false),
                (0, true),
            ] {
                let mut b = vec![FILL; cap];
                let fr = within("recvfrom", facade.recvfrom(&mut b, flags, want_addr))
                    .await
                    .map(|(n, a)| (n, a.as_bytes().to_vec()))
                    .map_err(Errno::raw);
                let (kr, kb, ka) = kernel_recvfrom(tfd, cap, flags, want_addr);
                let kr = kr.map(|n| (n, ka));
                assert_eq!(
                    (&fr, &b),
                    (&kr, &kb),
                    "{} recvfrom({cap}, {flags:#x}, {want_addr})",
                    fam.name
                );
            }
            assert_eq!(drain(facade.host_fd()) + drain(tfd), 0);
            checked += 1;
        }
        // Receive errors agree too: a non-blocking read on an empty queue.
        facade.set_nonblocking(true);
        let fr = within("read", facade.read(&mut [0u8; 8]))
            .await
            .map_err(Errno::raw);
        let (kr, _) = kernel_read(tfd, 8);
        assert_eq!(fr, kr, "{} empty read", fam.name);
        facade.set_nonblocking(false);

        // Write forms: facade sender to receiver A, libc twin sender to B.
        let (ra, aaddr) = libc_receiver(fam);
        let (rb, baddr) = libc_receiver(fam);
        let fconn = facade_udp(fam);
        within("connect", fconn.connect(&sa(aaddr), false))
            .await
            .expect("connect");
        let tconn = libc_socket(fam.domain, libc::SOCK_DGRAM, false);
        libc_connect(tconn.as_raw_fd(), baddr).expect("connect");
        let p = pattern(33, 9);
        let fr = within("write", fconn.write(&p))
            .await
            .map_err(|e| e.errno.raw());
        // SAFETY: `p` is valid for reads of its length.
        let kn = unsafe { libc::write(tconn.as_raw_fd(), p.as_ptr().cast(), p.len()) };
        let kr = if kn < 0 {
            Err(last_errno())
        } else {
            Ok(kn as usize)
        };
        assert_eq!(fr, kr, "write");
        assert_eq!(
            arrivals(ra.as_raw_fd(), 500),
            arrivals(rb.as_raw_fd(), 500),
            "write arrivals"
        );
        let parts: [&[u8]; 3] = [b"ab", b"", b"cdefg"];
        let sl: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let fr = within("writev", fconn.writev(&sl))
            .await
            .map_err(|e| e.errno.raw());
        let kiov: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr().cast_mut().cast(),
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: the iovecs point into live static byte strings.
        let kn = unsafe { libc::writev(tconn.as_raw_fd(), kiov.as_ptr(), kiov.len() as i32) };
        let kr = if kn < 0 {
            Err(last_errno())
        } else {
            Ok(kn as usize)
        };
        assert_eq!(fr, kr, "writev");
        let fa = arrivals(ra.as_raw_fd(), 500);
        assert_eq!(fa, arrivals(rb.as_raw_fd(), 500), "writev arrivals");
        assert_eq!(fa[0].data, b"abcdefg");
        // write agrees with sendmsg (connected, no address, no control).
        let fr2 = send_errno(&facade_send(&fconn, &[&p], &[], &[], 0).await);
        assert_eq!(fr2, Ok(p.len()));
        assert_eq!(arrivals(ra.as_raw_fd(), 500)[0].data, p);
        // sendto on unconnected sockets, with flags; and the send(2) form.
        let fu = facade_udp(fam);
        let tu = libc_socket(fam.domain, libc::SOCK_DGRAM, false);
        for flags in [
            0,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            libc::MSG_CONFIRM,
        ] {
            let fr = within("sendto", fu.sendto(&p, flags, &sa(aaddr)))
                .await
                .map_err(|e| e.errno.raw());
            let b = sa(baddr);
            // SAFETY: `p` and `b` are valid for reads of their lengths.
            let kn = unsafe {
                libc::sendto(
                    tu.as_raw_fd(),
                    p.as_ptr().cast(),
                    p.len(),
                    flags,
                    b.as_ptr().cast(),
                    b.len() as libc::socklen_t,
                )
            };
            let kr = if kn < 0 {
                Err(last_errno())
            } else {
                Ok(kn as usize)
            };
            assert_eq!(fr, kr, "sendto {flags:#x}");
            let fa = arrivals(ra.as_raw_fd(), 500);
            assert_eq!(fa.len(), 1);
            assert_eq!(fa, arrivals(rb.as_raw_fd(), 500), "sendto arrivals");
        }
        // Errors agree: send(2) with no address on an unconnected socket,
        // and sendto with a too-short address.
        let fr = within("send", fu.sendto(&p, 0, &[]))
            .await
            .map_err(|e| e.errno.raw());
        // SAFETY: `p` is valid for reads of its length.
        let kn = unsafe { libc::send(tu.as_raw_fd(), p.as_ptr().cast(), p.len(), 0) };
        let kr = if kn < 0 {
            Err(last_errno())
        } else {
            Ok(kn as usize)
        };
        assert_eq!(fr, kr, "{} send on an unconnected socket", fam.name);
        let short = &sa(aaddr)[..8];
        let fr = within("sendto", fu.sendto(&p, 0, short))
            .await
            .map_err(|e| e.errno.raw());
        let fr2 = send_errno(&facade_send(&fu, &[&p], short, &[], 0).await);
        // SAFETY: `p` and `short` are valid for reads of their lengths.
        let kn = unsafe {
            libc::sendto(
                tu.as_raw_fd(),
                p.as_ptr().cast(),
                p.len(),
                0,
                short.as_ptr().cast(),
                8,
            )
        };
        let kr = if kn < 0 {
            Err(last_errno())
        } else {
            Ok(kn as usize)
        };
        assert_eq!(fr, kr, "{} sendto with an 8-byte address", fam.name);
        assert_eq!(fr, fr2, "sendto vs sendmsg");
        checked += 1;
    }

    // TCP: write/read forms against the twin stream.
    let listener = StdListener::bind("127.0.0.1:0").expect("listen");
    let (facade, fpeer) = facade_tcp_client(&listener).await;
    let (twin, tpeer) = tcp_pair(&listener, false);
    let p = pattern(50, 77);
    let fr = within("tcp write", facade.write(&p))
        .await
        .map_err(|e| e.errno.raw());
    let kr = kernel_send(twin.as_raw_fd(), &[&p], &[], &[], 0);
    assert_eq!(fr, kr, "tcp write");
    let parts: [&[u8]; 2] = [b"xy", b"z"];
    let sl: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let fr = within("tcp writev", facade.writev(&sl))
        .await
        .map_err(|e| e.errno.raw());
    let kr = kernel_send(twin.as_raw_fd(), &parts, &[], &[], 0);
    assert_eq!(fr, kr, "tcp writev");
    {
        use std::io::Read;
        let (mut fpeer, mut tpeer) = (fpeer, tpeer);
        let (mut a, mut b) = (vec![0u8; 53], vec![0u8; 53]);
        fpeer.read_exact(&mut a).expect("read facade peer");
        tpeer.read_exact(&mut b).expect("read twin peer");
        assert_eq!(a, b);
        use std::io::Write;
        fpeer.write_all(&p).expect("peer write");
        tpeer.write_all(&p).expect("peer write");
        assert!(wait_readable(facade.host_fd(), 2000) && wait_readable(twin.as_raw_fd(), 2000));
        let mut fb = vec![FILL; 20];
        let fr = within("tcp read", facade.read(&mut fb))
            .await
            .map_err(Errno::raw);
        let (kr, kb) = kernel_read(twin.as_raw_fd(), 20);
        assert_eq!((fr, &fb), (kr, &kb), "tcp read");
        let (fr, ka) = {
            let mut b = vec![FILL; 64];
            let r = within("tcp recvfrom", facade.recvfrom(&mut b, 0, true))
                .await
                .map(|(n, a)| (n, a.as_bytes().to_vec()))
                .map_err(Errno::raw);
            (r, b)
        };
        let (kr, kb, kaddr) = kernel_recvfrom(twin.as_raw_fd(), 64, 0, true);
        let kr = kr.map(|n| (n, kaddr));
        assert_eq!((fr, ka), (kr, kb), "tcp recvfrom with address");
        // recvmsg flags on a stream: MSG_PEEK, MSG_TRUNC (Linux discards
        // the bytes without copying them), MSG_TRUNC|MSG_PEEK.
        fpeer.write_all(&p).expect("peer write");
        tpeer.write_all(&p).expect("peer write");
        assert!(wait_readable(facade.host_fd(), 2000) && wait_readable(twin.as_raw_fd(), 2000));
        for flags in [
            libc::MSG_PEEK,
            libc::MSG_TRUNC | libc::MSG_PEEK,
            libc::MSG_TRUNC,
            0,
            libc::MSG_DONTWAIT,
        ] {
            let f = facade_recv(&facade, &[8, 4], flags, true, 64).await;
            let k = kernel_recv(twin.as_raw_fd(), &[8, 4], flags, true, 64);
            assert_eq!(f.diff(&k), None, "tcp recvmsg flags {flags:#x}");
        }
        drop((fpeer, tpeer));
    }
    println!("read/write forms: {checked} groups checked");
}
