//! One test per denial path of the policy, through the raw layer: every
//! option row turned off, the never-allowed and unlisted options, every
//! address use (connect, bind, sendto/sendmsg/sendmmsg, accept peer,
//! PKTINFO source, the implicit bind of connect and sendto,
//! `MSG_FASTOPEN`), IPv4-mapped IPv6, the unspecified addresses,
//! `AF_UNSPEC`, every flag outside the masks, every socket kind outside the
//! allowlist. Each proves the call never reached the kernel (a listener or
//! receiver that would have got it sees only the control traffic sent
//! after it; a second view of the same socket shows the option unchanged;
//! no fd was made) and that the audit hook saw the denial, with its rule.
//!
//! Loopback only. The tests of this file hold one lock, so that fd counts
//! are exact.
#![cfg(target_os = "linux")]
// One lock serialises the tests of this file (exact fd counts); each test
// has its own runtime, so holding it across awaits is what is meant.
#![allow(clippy::await_holding_lock)]

use std::io::{IoSlice, IoSliceMut, Read};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener as StdListener, TcpStream as StdStream,
    UdpSocket as StdUdp,
};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hostsock::cmsg::{Cmsg, CmsgBuf};
use hostsock::policy::{
    AddrRule, AddrUse, Cidr, OPTIONS, PolicyBuilder, RECV_FLAGS, SEND_FLAGS, SocketKind,
    UnknownOpt, Verdict,
};
use hostsock::raw::{Errno, RawSocket, RawTransmit, encode_sockaddr};
use hostsock::{Asked, Denial, Op, Policy, Rule};
use tokio::time::Instant;

/// The address every test denies.
const DENIED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

type Log = Arc<Mutex<Vec<Denial>>>;

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn audited(builder: PolicyBuilder) -> (Arc<Policy>, Log) {
    let log: Log = Arc::default();
    let sink = log.clone();
    let policy = builder
        .audit(move |e| sink.lock().unwrap().push(*e.denial))
        .build();
    (Arc::new(policy), log)
}

fn take(log: &Log) -> Vec<Denial> {
    std::mem::take(&mut *log.lock().unwrap())
}

fn sa(addr: SocketAddr) -> Vec<u8> {
    encode_sockaddr(addr).as_bytes().to_vec()
}

fn mapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
        a => a,
    }
}

fn deny(net: IpAddr, uses: &[AddrUse]) -> AddrRule {
    AddrRule::new(Verdict::Deny, net.into(), uses)
}

/// Asserts the process has no more than `want` sockets open: a socket a
/// refused call made would stay. Fewer is fine (another test's runtime,
/// torn down after its lock guard, may still be closing its sockets when
/// the count was taken), and a socket another thread holds for a moment
/// is looked at again for up to 500 ms.
#[track_caller]
fn assert_sockets(want: usize, what: &str) {
    let mut now = open_fds();
    for _ in 0..50 {
        if now <= want {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        now = open_fds();
    }
    assert!(now <= want, "{what}: {now} sockets open, {want} before");
}

/// How many INET socket fds the process has. Other fds (those a sanitizer
/// runtime opens lazily) and Unix sockets (each tokio runtime with signals
/// enabled holds a duplicate of the process's signal socket, and other
/// tests build runtimes while they wait for the lock) are not what these
/// tests are about.
fn open_fds() -> usize {
    let unix: std::collections::HashSet<String> = std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6).map(str::to_string))
        .collect();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|t| {
            let t = t.to_string_lossy().into_owned();
            let inode = t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string();
            Some(inode)
        })
        .filter(|inode| !unix.contains(inode))
        .count()
}

/// Asserts the log holds exactly one address denial of `usage` and
/// returns it.
#[track_caller]
fn one_addr_denial(log: &Log, usage: AddrUse) -> Denial {
    let events = take(log);
    assert_eq!(events.len(), 1, "audit events: {events:?}");
    let d = events[0];
    match d.asked {
        Asked::Address { usage: u, .. } => assert_eq!(u, usage, "{d:?}"),
        other => panic!("not an address denial: {other:?}"),
    }
    assert!(
        matches!(d.rule, Rule::Address { .. } | Rule::DefaultVerdict),
        "{d:?}"
    );
    assert_eq!(d.errno, usage.denial_errno());
    d
}

/// A TCP listener on `addr` (std, outside hostsock) that proves what
/// reached it: after a control connection, the first connection in the
/// queue must be the control one, and nothing may follow.
struct Witness {
    l: StdListener,
}

impl Witness {
    fn tcp(ip: IpAddr) -> Witness {
        let l = StdListener::bind((ip, 0)).unwrap();
        Witness { l }
    }

    fn addr(&self) -> SocketAddr {
        self.l.local_addr().unwrap()
    }

    #[track_caller]
    fn assert_untouched(&self) {
        let control = StdStream::connect(self.addr()).unwrap();
        self.l.set_nonblocking(false).unwrap();
        let (_c, peer) = self.l.accept().unwrap();
        assert_eq!(
            peer,
            control.local_addr().unwrap(),
            "a connection reached {} before the control one",
            self.addr()
        );
        self.l.set_nonblocking(true).unwrap();
        assert!(
            self.l.accept().is_err(),
            "a connection followed the control"
        );
    }
}

/// A UDP receiver (std) that proves no datagram reached it before the
/// control datagram.
struct UdpWitness {
    s: StdUdp,
}

impl UdpWitness {
    fn bind(ip: IpAddr) -> UdpWitness {
        let s = StdUdp::bind((ip, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        UdpWitness { s }
    }

    fn addr(&self) -> SocketAddr {
        self.s.local_addr().unwrap()
    }

    #[track_caller]
    fn assert_untouched(&self) {
        let from = if self.addr().is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        let control = StdUdp::bind(from).unwrap();
        control.send_to(b"control", self.addr()).unwrap();
        let mut b = [0u8; 64];
        let (n, peer) = self.s.recv_from(&mut b).unwrap();
        assert_eq!(
            (&b[..n], peer),
            (&b"control"[..], control.local_addr().unwrap()),
            "a datagram reached {} before the control one",
            self.addr()
        );
    }
}

fn raw(policy: &Arc<Policy>, domain: i32, ty: i32) -> RawSocket {
    RawSocket::new(policy.clone(), domain, ty, 0).unwrap()
}

/// A guest socket and a second view of the same kernel socket (a dup of
/// the fd) under `Policy::allow_all`, to read what the kernel holds.
fn with_observer(policy: &Arc<Policy>, kind: SocketKind) -> (RawSocket, RawSocket) {
    let (domain, ty, proto) = kind.parts();
    let s = socket2::Socket::new(domain.into(), ty.into(), Some(proto.into())).unwrap();
    let guest = RawSocket::from_fd(OwnedFd::from(s.try_clone().unwrap()), policy.clone()).unwrap();
    let observer = RawSocket::from_fd(OwnedFd::from(s), Arc::new(Policy::allow_all())).unwrap();
    (guest, observer)
}

fn kind_for(level: i32) -> SocketKind {
    match level {
        libc::IPPROTO_TCP => SocketKind::TcpV4,
        libc::IPPROTO_IPV6 => SocketKind::UdpV6,
        _ => SocketKind::UdpV4,
    }
}

/// A value for `row` that differs from `current` (an int option gets
/// another int; a structure gets its bytes changed).
fn another_value(current: &[u8], min_len: usize, max_len: usize) -> Vec<u8> {
    let len = min_len
        .max(current.len())
        .clamp(4.min(max_len), max_len.max(1));
    let mut v = current.to_vec();
    v.resize(len, 0);
    if len >= 4 && current.len() >= 4 {
        let x = i32::from_ne_bytes(current[..4].try_into().unwrap());
        let y = if x == 0 {
            1
        } else if x == 1 {
            0
        } else {
            x / 2 + 1
        };
        v[..4].copy_from_slice(&y.to_ne_bytes());
    } else {
        for b in &mut v {
            *b ^= 1;
        }
    }
    v
}

// ---------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------

#[tokio::test]
async fn every_option_row_turned_off_is_refused_before_the_kernel() {
    let _g = serial();
    let mut proven = Vec::new();
    for row in OPTIONS {
        let (policy, log) =
            audited(Policy::builder_from(Policy::allow_all()).deny_option(row.level, row.name));
        assert!(!policy.option_allowed(row.level, row.name));
        let kind = kind_for(row.level);
        let (guest, observer) = with_observer(&policy, kind);
        let mut before = vec![0u8; row.max_len.max(4)];
        let before_len = observer.getsockopt(row.level, row.name, &mut before);
        if row.get {
            let mut out = vec![0u8; row.max_len.max(4)];
            assert_eq!(
                guest.getsockopt(row.level, row.name, &mut out),
                Err(Errno::ENOPROTOOPT),
                "get {}",
                row.cname
            );
            let ev = take(&log);
            assert_eq!(ev.len(), 1, "get {}: {ev:?}", row.cname);
            assert_eq!(ev[0].rule, Rule::OptionOff, "{}", row.cname);
            assert_eq!(ev[0].op, Op::GetOpt);
            assert_eq!(
                ev[0].asked,
                Asked::Option {
                    level: row.level,
                    name: row.name
                }
            );
        }
        if !row.set {
            continue;
        }
        let current = match before_len {
            Ok(n) => before[..n].to_vec(),
            Err(_) => vec![0u8; row.min_len],
        };
        let value = another_value(&current, row.min_len, row.max_len);
        assert_eq!(
            guest.setsockopt(row.level, row.name, &value),
            Err(Errno::ENOPROTOOPT),
            "set {}",
            row.cname
        );
        let ev = take(&log);
        assert_eq!(ev.len(), 1, "set {}: {ev:?}", row.cname);
        assert_eq!(ev[0].rule, Rule::OptionOff, "{}", row.cname);
        assert_eq!(ev[0].op, Op::SetOpt);
        // The kernel's value is what it was.
        let mut after = vec![0u8; row.max_len.max(4)];
        let after_len = observer.getsockopt(row.level, row.name, &mut after);
        assert_eq!(
            after_len.map(|n| after[..n].to_vec()),
            before_len.map(|n| before[..n].to_vec()),
            "{} changed in the kernel",
            row.cname
        );
        // Control: the same value through an allowed view does change it
        // (where the kernel takes it and reads it back differently).
        if observer.setsockopt(row.level, row.name, &value).is_ok() {
            let mut now = vec![0u8; row.max_len.max(4)];
            if let (Ok(n), Ok(b)) = (
                observer.getsockopt(row.level, row.name, &mut now),
                before_len,
            ) {
                if now[..n] != before[..b] {
                    proven.push(row.cname);
                }
            }
        }
    }
    println!(
        "{} rows; a visible change when allowed, none when off: {} ({proven:?})",
        OPTIONS.len(),
        proven.len()
    );
    assert!(
        proven.len() >= OPTIONS.len() / 3,
        "too few rows observable: {proven:?}"
    );
}

#[tokio::test]
async fn never_allowed_options_are_refused_even_under_allow_all() {
    let _g = serial();
    let (policy, log) = audited(Policy::builder_from(Policy::allow_all()));
    let (guest, observer) = with_observer(&policy, SocketKind::UdpV4);
    let mut rcvbuf = [0u8; 4];
    observer
        .getsockopt(libc::SOL_SOCKET, libc::SO_RCVBUF, &mut rcvbuf)
        .unwrap();
    let never = [
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
    for (level, name) in never {
        let v = (1i32 << 20).to_ne_bytes();
        assert_eq!(guest.setsockopt(level, name, &v), Err(Errno::ENOPROTOOPT));
        let ev = take(&log);
        assert_eq!(ev.len(), 1, "({level}, {name}): {ev:?}");
        assert_eq!(ev[0].rule, Rule::OptionNever);
        assert_eq!(ev[0].asked, Asked::Option { level, name });
    }
    let mut now = [0u8; 4];
    observer
        .getsockopt(libc::SOL_SOCKET, libc::SO_RCVBUF, &mut now)
        .unwrap();
    assert_eq!(now, rcvbuf, "SO_RCVBUFFORCE reached the kernel");
    let mut filter = [0u8; 4];
    assert_eq!(
        observer.getsockopt(libc::SOL_SOCKET, libc::SO_LOCK_FILTER, &mut filter),
        Err(Errno::ENOPROTOOPT)
    );
}

#[tokio::test]
async fn unlisted_options_are_refused_when_unknown_options_are_rejected() {
    let _g = serial();
    let (policy, log) = audited(Policy::builder().unknown_options(UnknownOpt::Reject));
    let (guest, observer) = with_observer(&policy, SocketKind::TcpV4);
    // TCP_THIN_LINEAR_TIMEOUTS: not in the table; the kernel takes it.
    let (level, name) = (libc::IPPROTO_TCP, libc::TCP_THIN_LINEAR_TIMEOUTS);
    assert!(!OPTIONS.iter().any(|r| r.level == level && r.name == name));
    assert_eq!(
        guest.setsockopt(level, name, &1i32.to_ne_bytes()),
        Err(Errno::ENOPROTOOPT)
    );
    let ev = take(&log);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].rule, Rule::OptionNotListed);
    // The observer passes unknown options through: the kernel still has
    // the default, 0; and the same call through it does change it.
    assert_eq!(observer.policy().unknown_options(), UnknownOpt::PassThrough);
    let mut out = [0u8; 4];
    assert_eq!(observer.getsockopt(level, name, &mut out), Ok(4));
    assert_eq!(
        i32::from_ne_bytes(out),
        0,
        "the refused set reached the kernel"
    );
    observer
        .setsockopt(level, name, &1i32.to_ne_bytes())
        .unwrap();
    assert_eq!(observer.getsockopt(level, name, &mut out), Ok(4));
    assert_eq!(i32::from_ne_bytes(out), 1);
}

#[tokio::test]
async fn options_used_the_wrong_way_are_refused() {
    let _g = serial();
    let (policy, log) = audited(Policy::builder_from(Policy::allow_all()));
    let mut seen = 0;
    for row in OPTIONS.iter().filter(|r| !r.set) {
        let (guest, _observer) = with_observer(&policy, kind_for(row.level));
        let v = vec![0u8; row.min_len.max(4)];
        assert_eq!(
            guest.setsockopt(row.level, row.name, &v),
            Err(Errno::ENOPROTOOPT),
            "set of get-only {}",
            row.cname
        );
        let ev = take(&log);
        assert_eq!(ev.len(), 1, "{}: {ev:?}", row.cname);
        assert_eq!(ev[0].rule, Rule::OptionWrongWay, "{}", row.cname);
        seen += 1;
    }
    for row in OPTIONS.iter().filter(|r| !r.get) {
        let (guest, _observer) = with_observer(&policy, kind_for(row.level));
        let mut out = vec![0u8; row.max_len.max(4)];
        assert_eq!(
            guest.getsockopt(row.level, row.name, &mut out),
            Err(Errno::ENOPROTOOPT),
            "get of set-only {}",
            row.cname
        );
        assert_eq!(take(&log).len(), 1, "{}", row.cname);
        seen += 1;
    }
    assert!(seen > 0);
}

// ---------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------

#[tokio::test]
async fn denied_connect_never_reaches_the_listener() {
    let _g = serial();
    let w = Witness::tcp(DENIED.into());
    let (policy, log) =
        audited(Policy::builder().addr_rule(deny(DENIED.into(), &[AddrUse::Connect])));
    for (domain, to) in [
        (libc::AF_INET, w.addr()),
        (libc::AF_INET6, mapped(w.addr())),
    ] {
        for nonblocking in [true, false] {
            let s = raw(&policy, domain, libc::SOCK_STREAM);
            let deadline = Some(Instant::now() + Duration::from_secs(2));
            assert_eq!(
                s.connect_deadline(&sa(to), nonblocking, deadline).await,
                Err(Errno::ECONNREFUSED),
                "{to}"
            );
            let d = one_addr_denial(&log, AddrUse::Connect);
            assert_eq!(d.op, Op::Connect);
            assert_eq!(s.getpeername().err(), Some(Errno::ENOTCONN));
        }
    }
    w.assert_untouched();
}

#[tokio::test]
async fn denied_udp_connect_leaves_the_socket_unconnected() {
    let _g = serial();
    let w = UdpWitness::bind(DENIED.into());
    let (policy, log) =
        audited(Policy::builder().addr_rule(deny(DENIED.into(), &[AddrUse::Connect])));
    let s = raw(&policy, libc::AF_INET, libc::SOCK_DGRAM);
    assert_eq!(
        s.connect(&sa(w.addr()), false).await,
        Err(Errno::ECONNREFUSED)
    );
    one_addr_denial(&log, AddrUse::Connect);
    assert_eq!(s.getpeername().err(), Some(Errno::ENOTCONN));
    // Not connected: a send without a destination has nowhere to go.
    let r = s.sendto(b"x", libc::MSG_DONTWAIT, &[]).await;
    assert_eq!(r.map_err(|e| e.errno), Err(Errno::EDESTADDRREQ));
    w.assert_untouched();
}

#[tokio::test]
async fn denied_sendto_sendmsg_sendmmsg_never_reach_the_receiver() {
    let _g = serial();
    let w = UdpWitness::bind(DENIED.into());
    let (policy, log) =
        audited(Policy::builder().addr_rule(deny(DENIED.into(), &[AddrUse::SendTo])));
    for (domain, to) in [
        (libc::AF_INET, w.addr()),
        (libc::AF_INET6, mapped(w.addr())),
    ] {
        let s = raw(&policy, domain, libc::SOCK_DGRAM);
        let to = sa(to);
        let r = s.sendto(b"x", 0, &to).await;
        assert_eq!(r.map_err(|e| e.errno), Err(Errno::ECONNREFUSED));
        one_addr_denial(&log, AddrUse::SendTo);
        let r = s.sendmsg(&[IoSlice::new(b"y")], &to, &[], 0).await;
        assert_eq!(r.map_err(|e| e.errno), Err(Errno::ECONNREFUSED));
        one_addr_denial(&log, AddrUse::SendTo);
        let t = RawTransmit {
            data: b"z",
            to: &to,
            control: &[],
        };
        let r = s.sendmmsg(&[t], 0).await;
        assert_eq!(r.map_err(|e| e.errno), Err(Errno::ECONNREFUSED));
        one_addr_denial(&log, AddrUse::SendTo);
        // The socket was never bound implicitly either.
        let name = s.getsockname().unwrap().to_socket_addr().unwrap();
        assert_eq!(name.port(), 0, "{name}");
    }
    w.assert_untouched();
}

#[tokio::test]
async fn denied_bind_leaves_the_socket_unbound() {
    let _g = serial();
    let (policy, log) = audited(Policy::builder().addr_rule(deny(DENIED.into(), &[AddrUse::Bind])));
    let target = SocketAddr::new(DENIED.into(), 0);
    let mut unspec = sa(target);
    unspec[..2].copy_from_slice(&(libc::AF_UNSPEC as u16).to_ne_bytes());
    for (domain, bytes) in [
        (libc::AF_INET, sa(target)),
        (libc::AF_INET, unspec.clone()),
        (libc::AF_INET6, sa(mapped(target))),
    ] {
        for ty in [libc::SOCK_STREAM, libc::SOCK_DGRAM] {
            let s = raw(&policy, domain, ty);
            assert_eq!(s.bind(&bytes), Err(Errno::EACCES), "{bytes:?}");
            let d = one_addr_denial(&log, AddrUse::Bind);
            assert_eq!(d.op, Op::Bind);
            let name = s.getsockname().unwrap().to_socket_addr().unwrap();
            assert!(name.ip().is_unspecified() && name.port() == 0, "{name}");
        }
    }
}

#[tokio::test]
async fn denied_accept_peer_is_reset_and_never_handed_out() {
    let _g = serial();
    let peer_ip = Ipv4Addr::new(127, 0, 0, 3);
    let (policy, log) =
        audited(Policy::builder().addr_rule(deny(peer_ip.into(), &[AddrUse::AcceptPeer])));
    let l = raw(&policy, libc::AF_INET, libc::SOCK_STREAM);
    l.bind(&sa((Ipv4Addr::LOCALHOST, 0).into())).unwrap();
    l.listen(8).unwrap();
    let at = l.getsockname().unwrap().to_socket_addr().unwrap();
    let denied = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    denied
        .bind(&SocketAddr::new(peer_ip.into(), 0).into())
        .unwrap();
    denied.connect(&at.into()).unwrap();
    let mut denied: StdStream = denied.into();
    // The denied peer is taken off the queue, reset, and not returned.
    assert_eq!(l.accept(true).await.err(), Some(Errno::EAGAIN));
    one_addr_denial(&log, AddrUse::AcceptPeer);
    denied
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut b = [0u8; 1];
    let r = denied.read(&mut b);
    assert_eq!(
        r.map_err(|e| e.raw_os_error()),
        Err(Some(libc::ECONNRESET)),
        "the refused peer is reset"
    );
    // An allowed peer comes through.
    let ok = StdStream::connect(at).unwrap();
    let (_c, peer) = l.accept(false).await.unwrap();
    assert_eq!(peer.to_socket_addr(), Some(ok.local_addr().unwrap()));
    assert!(take(&log).is_empty());
}

#[tokio::test]
async fn denied_pktinfo_source_is_refused() {
    let _g = serial();
    let w = UdpWitness::bind(Ipv4Addr::LOCALHOST.into());
    let (policy, log) =
        audited(Policy::builder().addr_rule(deny(DENIED.into(), &[AddrUse::SourceViaPktinfo])));
    let mut v4 = CmsgBuf::<64>::new();
    v4.push(&Cmsg::PktInfoV4 {
        ifindex: 0,
        spec_dst: DENIED,
        addr: Ipv4Addr::UNSPECIFIED,
    })
    .unwrap();
    let mut v6 = CmsgBuf::<64>::new();
    v6.push(&Cmsg::PktInfoV6 {
        addr: DENIED.to_ipv6_mapped(),
        ifindex: 0,
    })
    .unwrap();
    for (domain, to, ctl) in [
        (libc::AF_INET, w.addr(), v4.as_bytes()),
        (libc::AF_INET6, mapped(w.addr()), v6.as_bytes()),
    ] {
        let s = raw(&policy, domain, libc::SOCK_DGRAM);
        let r = s.sendmsg(&[IoSlice::new(b"p")], &sa(to), ctl, 0).await;
        assert_eq!(r.map_err(|e| e.errno), Err(Errno::EACCES), "{domain}");
        let d = one_addr_denial(&log, AddrUse::SourceViaPktinfo);
        assert_eq!(d.op, Op::Send);
        let t = RawTransmit {
            data: b"q",
            to: &sa(to),
            control: ctl,
        };
        let r = s.sendmmsg(&[t], 0).await;
        assert_eq!(
            r.map_err(|e| e.errno),
            Err(Errno::EACCES),
            "sendmmsg {domain}"
        );
        one_addr_denial(&log, AddrUse::SourceViaPktinfo);
    }
    w.assert_untouched();
}

#[tokio::test]
async fn ipv4_mapped_addresses_follow_the_ipv4_rules_both_ways() {
    let _g = serial();
    let w = Witness::tcp(DENIED.into());
    // A rule written as IPv4-mapped IPv6 denies the IPv4 address.
    let rule_net = Cidr::new(IpAddr::V6(DENIED.to_ipv6_mapped()), 128);
    let (policy, log) =
        audited(Policy::builder().addr_rule(AddrRule::new(Verdict::Deny, rule_net, &AddrUse::ALL)));
    let s4 = raw(&policy, libc::AF_INET, libc::SOCK_STREAM);
    assert_eq!(
        s4.connect(&sa(w.addr()), true).await,
        Err(Errno::ECONNREFUSED)
    );
    one_addr_denial(&log, AddrUse::Connect);
    let s6 = raw(&policy, libc::AF_INET6, libc::SOCK_STREAM);
    assert_eq!(
        s6.connect(&sa(mapped(w.addr())), true).await,
        Err(Errno::ECONNREFUSED)
    );
    one_addr_denial(&log, AddrUse::Connect);
    w.assert_untouched();
}

#[tokio::test]
async fn unspecified_destinations_are_checked_as_the_loopback_they_reach() {
    let _g = serial();
    let w4 = Witness::tcp(Ipv4Addr::LOCALHOST.into());
    let w6 = Witness::tcp(Ipv6Addr::LOCALHOST.into());
    let u4 = UdpWitness::bind(Ipv4Addr::LOCALHOST.into());
    let (policy, log) = audited(
        Policy::builder()
            .addr_rule(deny(
                Ipv4Addr::LOCALHOST.into(),
                &[AddrUse::Connect, AddrUse::SendTo],
            ))
            .addr_rule(deny(
                Ipv6Addr::LOCALHOST.into(),
                &[AddrUse::Connect, AddrUse::SendTo],
            )),
    );
    let any4 = |p| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), p);
    let any6 = |p| SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), p);
    for (domain, to) in [
        (libc::AF_INET, any4(w4.addr().port())),
        (libc::AF_INET6, mapped(any4(w4.addr().port()))),
        (libc::AF_INET6, any6(w6.addr().port())),
    ] {
        let s = raw(&policy, domain, libc::SOCK_STREAM);
        assert_eq!(
            s.connect(&sa(to), true).await,
            Err(Errno::ECONNREFUSED),
            "{to}"
        );
        one_addr_denial(&log, AddrUse::Connect);
    }
    for (domain, to) in [
        (libc::AF_INET, any4(u4.addr().port())),
        (libc::AF_INET6, mapped(any4(u4.addr().port()))),
    ] {
        let s = raw(&policy, domain, libc::SOCK_DGRAM);
        let r = s.sendto(b"u", 0, &sa(to)).await;
        assert_eq!(r.map_err(|e| e.errno), Err(Errno::ECONNREFUSED), "{to}");
        one_addr_denial(&log, AddrUse::SendTo);
    }
    w4.assert_untouched();
    w6.assert_untouched();
    u4.assert_untouched();
}

#[tokio::test]
async fn af_unspec_connect_dissolves_the_association_without_an_address_rule() {
    let _g = serial();
    let w = UdpWitness::bind(Ipv4Addr::LOCALHOST.into());
    let (policy, log) = audited(Policy::builder().addr_rule(deny(DENIED.into(), &AddrUse::ALL)));
    let s = raw(&policy, libc::AF_INET, libc::SOCK_DGRAM);
    s.connect(&sa(w.addr()), false).await.unwrap();
    assert!(s.getpeername().is_ok());
    let unspec = (libc::AF_UNSPEC as u16).to_ne_bytes();
    s.connect(&unspec, false).await.unwrap();
    assert_eq!(s.getpeername().err(), Some(Errno::ENOTCONN));
    assert!(take(&log).is_empty(), "AF_UNSPEC names no address");
}

/// Linux's `udp_sendmsg` reads an `AF_UNSPEC` destination as `AF_INET`
/// (net/ipv4/udp.c), so these bytes reach 127.0.0.2 if the rules let them
/// pass.
#[tokio::test]
async fn af_unspec_sendto_is_checked_as_the_inet_address_it_carries() {
    let _g = serial();
    let w = UdpWitness::bind(DENIED.into());
    let (policy, log) = audited(Policy::builder().addr_rule(deny(DENIED.into(), &AddrUse::ALL)));
    let mut to = sa(w.addr());
    to[..2].copy_from_slice(&(libc::AF_UNSPEC as u16).to_ne_bytes());
    let s = raw(&policy, libc::AF_INET, libc::SOCK_DGRAM);
    let r = s.sendto(b"unspec", 0, &to).await;
    let r2 = s
        .sendmmsg(
            &[RawTransmit {
                data: b"unspec-mmsg",
                to: &to,
                control: &[],
            }],
            0,
        )
        .await;
    let events = take(&log);
    w.assert_untouched();
    assert!(r.is_err(), "sendto(AF_UNSPEC 127.0.0.2) passed: {r:?}");
    assert!(r2.is_err(), "sendmmsg(AF_UNSPEC 127.0.0.2) passed: {r2:?}");
    assert_eq!(events.len(), 2, "{events:?}");
}

/// Bind of every address denied: the implicit bind a connect or a send
/// makes on an unbound socket (the kernel picks the local address and an
/// ephemeral port) must be checked as `Bind` of the unspecified address,
/// port 0, as the explicit `bind(0.0.0.0:0)` is.
fn no_bind_policy() -> (Arc<Policy>, Log) {
    audited(
        Policy::builder()
            .addr_rule(AddrRule::new(Verdict::Deny, Cidr::ANY_V4, &[AddrUse::Bind]))
            .addr_rule(AddrRule::new(Verdict::Deny, Cidr::ANY_V6, &[AddrUse::Bind])),
    )
}

#[tokio::test]
async fn implicit_bind_of_connect_goes_through_the_bind_rules() {
    let _g = serial();
    let w = Witness::tcp(Ipv4Addr::LOCALHOST.into());
    let (policy, log) = no_bind_policy();
    let explicit = raw(&policy, libc::AF_INET, libc::SOCK_STREAM);
    assert_eq!(
        explicit.bind(&sa((Ipv4Addr::UNSPECIFIED, 0).into())),
        Err(Errno::EACCES)
    );
    one_addr_denial(&log, AddrUse::Bind);
    let s = raw(&policy, libc::AF_INET, libc::SOCK_STREAM);
    let r = s.connect(&sa(w.addr()), true).await;
    let events = take(&log);
    w.assert_untouched();
    assert_eq!(r, Err(Errno::EACCES), "connect from an unbound socket");
    assert_eq!(events.len(), 1, "{events:?}");
}

#[tokio::test]
async fn implicit_bind_of_sendto_goes_through_the_bind_rules() {
    let _g = serial();
    let w = UdpWitness::bind(Ipv4Addr::LOCALHOST.into());
    let (policy, log) = no_bind_policy();
    let s = raw(&policy, libc::AF_INET, libc::SOCK_DGRAM);
    let r = s.sendto(b"implicit", 0, &sa(w.addr())).await;
    let events = take(&log);
    w.assert_untouched();
    assert_eq!(r.map_err(|e| e.errno), Err(Errno::EACCES));
    assert_eq!(events.len(), 1, "{events:?}");
}

fn fastopen_client_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_fastopen")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .is_some_and(|v| v & 1 != 0)
}

/// `sendto(MSG_FASTOPEN)` on an unconnected TCP socket connects: a
/// destination the `Connect` rules refuse must be refused.
#[tokio::test]
async fn fastopen_sendto_goes_through_the_connect_rules() {
    let _g = serial();
    if !fastopen_client_enabled() {
        println!("skipped: net.ipv4.tcp_fastopen has no client bit");
        return;
    }
    let w = Witness::tcp(DENIED.into());
    let (policy, log) =
        audited(Policy::builder().addr_rule(deny(DENIED.into(), &[AddrUse::Connect])));
    let s = raw(&policy, libc::AF_INET, libc::SOCK_STREAM);
    let r = s
        .sendto(
            b"tfo",
            libc::MSG_FASTOPEN | libc::MSG_DONTWAIT,
            &sa(w.addr()),
        )
        .await;
    let events = take(&log);
    w.assert_untouched();
    assert_eq!(r.map_err(|e| e.errno), Err(Errno::ECONNREFUSED));
    assert_eq!(events.len(), 1, "{events:?}");
}

#[tokio::test]
async fn fastopen_sendto_goes_through_the_sendto_rules() {
    let _g = serial();
    let w = Witness::tcp(DENIED.into());
    let (policy, log) =
        audited(Policy::builder().addr_rule(deny(DENIED.into(), &[AddrUse::SendTo])));
    let s = raw(&policy, libc::AF_INET, libc::SOCK_STREAM);
    let r = s
        .sendto(
            b"tfo",
            libc::MSG_FASTOPEN | libc::MSG_DONTWAIT,
            &sa(w.addr()),
        )
        .await;
    assert_eq!(r.map_err(|e| e.errno), Err(Errno::ECONNREFUSED));
    one_addr_denial(&log, AddrUse::SendTo);
    w.assert_untouched();
}

// ---------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------

/// Every single bit outside `mask`.
fn bits_outside(mask: i32) -> Vec<i32> {
    (0..32)
        .map(|b| 1i32 << b)
        .filter(|f| f & mask == 0)
        .collect()
}

#[tokio::test]
async fn send_flags_outside_the_mask_never_reach_the_kernel() {
    let _g = serial();
    let w = UdpWitness::bind(Ipv4Addr::LOCALHOST.into());
    // The default mask, and one narrowed to MSG_DONTWAIT alone.
    for builder in [
        Policy::builder(),
        Policy::builder().message_flags(RECV_FLAGS, libc::MSG_DONTWAIT),
    ] {
        let policy = Arc::new(builder.build());
        let s = raw(&policy, libc::AF_INET, libc::SOCK_DGRAM);
        let to = sa(w.addr());
        let bits = bits_outside(policy.send_flags());
        assert!(bits.len() >= 32 - SEND_FLAGS.count_ones() as usize);
        for f in bits {
            let r = s.sendto(b"f", f | libc::MSG_DONTWAIT, &to).await;
            assert_eq!(r.map_err(|e| e.errno), Err(Errno::EINVAL), "flag {f:#x}");
            let t = RawTransmit {
                data: b"g",
                to: &to,
                control: &[],
            };
            let r = s.sendmmsg(&[t], f).await;
            assert_eq!(
                r.map_err(|e| e.errno),
                Err(Errno::EINVAL),
                "mmsg flag {f:#x}"
            );
        }
        w.assert_untouched();
    }
}

#[tokio::test]
async fn recv_flags_outside_the_mask_leave_the_datagram_queued() {
    let _g = serial();
    let policy = Arc::new(Policy::default());
    let s = raw(&policy, libc::AF_INET, libc::SOCK_DGRAM);
    s.bind(&sa((Ipv4Addr::LOCALHOST, 0).into())).unwrap();
    let at = s.getsockname().unwrap().to_socket_addr().unwrap();
    let tx = StdUdp::bind("127.0.0.1:0").unwrap();
    tx.send_to(b"queued", at).unwrap();
    let deadline = Some(Instant::now() + Duration::from_secs(2));
    assert_ne!(
        s.wait(libc::POLLIN, deadline).await.unwrap() & libc::POLLIN,
        0
    );
    for f in bits_outside(RECV_FLAGS) {
        let mut b = [0u8; 16];
        let r = s
            .recvmsg(
                &mut [IoSliceMut::new(&mut b)],
                f | libc::MSG_DONTWAIT,
                true,
                64,
            )
            .await;
        assert_eq!(r.map(|r| r.len), Err(Errno::EINVAL), "flag {f:#x}");
    }
    let mut b = [0u8; 16];
    let got = s
        .recvmsg(&mut [IoSliceMut::new(&mut b)], libc::MSG_DONTWAIT, false, 0)
        .await
        .unwrap();
    assert_eq!(&b[..got.len], b"queued");
}

/// SPEC.md: the audit hook sees every denial; a flag outside the masks is
/// one.
#[tokio::test]
async fn flag_denials_are_audited() {
    let _g = serial();
    let (policy, log) = audited(Policy::builder());
    let s = raw(&policy, libc::AF_INET, libc::SOCK_DGRAM);
    let r = s
        .sendto(
            b"f",
            libc::MSG_ZEROCOPY | libc::MSG_DONTWAIT,
            &sa((Ipv4Addr::LOCALHOST, 9).into()),
        )
        .await;
    assert_eq!(r.map_err(|e| e.errno), Err(Errno::EINVAL));
    let mut b = [0u8; 4];
    let r = s
        .recvmsg(
            &mut [IoSliceMut::new(&mut b)],
            libc::MSG_DONTWAIT | libc::MSG_MORE,
            false,
            0,
        )
        .await;
    assert_eq!(r.map(|r| r.len), Err(Errno::EINVAL));
    assert_eq!(take(&log).len(), 2, "flag denials reach the audit hook");
}

// ---------------------------------------------------------------------
// Socket kinds
// ---------------------------------------------------------------------

#[tokio::test]
async fn each_socket_kind_outside_the_allowlist_is_refused_before_the_kernel() {
    let _g = serial();
    for kind in SocketKind::ALL {
        let others: Vec<_> = SocketKind::ALL.into_iter().filter(|k| *k != kind).collect();
        let (policy, log) = audited(Policy::builder().socket_kinds(&others));
        assert!(!policy.kind_allowed(kind));
        let (domain, ty, proto) = kind.parts();
        let fds = open_fds();
        for (t, p) in [
            (ty, 0),
            (ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto),
        ] {
            let r = RawSocket::new(policy.clone(), domain, t, p);
            assert_eq!(r.err(), Some(Errno::ESOCKTNOSUPPORT), "{kind:?}");
            assert_sockets(fds, &format!("{kind:?}: an fd was made"));
            let ev = take(&log);
            assert_eq!(ev.len(), 1, "{kind:?}: {ev:?}");
            assert_eq!(ev[0].rule, Rule::KindNotAllowed);
            assert_eq!(ev[0].op, Op::Socket);
            assert_eq!(
                ev[0].asked,
                Asked::SocketKind {
                    domain,
                    ty,
                    protocol: proto
                }
            );
        }
        // Adopting a host socket of that kind is refused too, and the fd
        // handed over is closed.
        let s = socket2::Socket::new(domain.into(), ty.into(), None).unwrap();
        let r = RawSocket::from_fd(OwnedFd::from(s), policy.clone());
        assert!(r.is_err(), "{kind:?} adopted");
        assert_sockets(fds, &format!("{kind:?}: the refused fd stayed open"));
        assert_eq!(take(&log).len(), 1, "{kind:?} adoption audited");
        // The other kinds still work.
        for k in &others {
            let (d, t, _) = k.parts();
            RawSocket::new(policy.clone(), d, t, 0).unwrap();
        }
    }
}

/// Families and types the raw layer never creates: the errno, no fd, and
/// (SPEC.md: the hook sees every denial) an audit event.
#[tokio::test]
async fn non_inet_families_and_types_are_refused_and_audited() {
    let _g = serial();
    let (policy, log) = audited(Policy::builder());
    let fds = open_fds();
    let cases = [
        (libc::AF_UNIX, libc::SOCK_STREAM, 0, Errno::EAFNOSUPPORT),
        (libc::AF_PACKET, libc::SOCK_RAW, 0, Errno::EAFNOSUPPORT),
        (libc::AF_NETLINK, libc::SOCK_DGRAM, 0, Errno::EAFNOSUPPORT),
        (
            libc::AF_INET,
            libc::SOCK_RAW,
            libc::IPPROTO_ICMP,
            Errno::ESOCKTNOSUPPORT,
        ),
        (
            libc::AF_INET6,
            libc::SOCK_SEQPACKET,
            0,
            Errno::ESOCKTNOSUPPORT,
        ),
        (
            libc::AF_INET,
            libc::SOCK_STREAM,
            libc::IPPROTO_UDP,
            Errno::EPROTONOSUPPORT,
        ),
    ];
    for (d, t, p, want) in cases {
        assert_eq!(
            RawSocket::new(policy.clone(), d, t, p).err(),
            Some(want),
            "({d}, {t}, {p})"
        );
        assert_sockets(fds, "an fd was made");
    }
    let events = take(&log);
    assert_eq!(events.len(), cases.len(), "audit events: {events:?}");
}
