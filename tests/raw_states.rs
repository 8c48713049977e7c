//! Socket-state tables for `hostsock::raw::RawSocket`: a differential test
//! against a twin socket driven with plain libc calls.
//!
//! For every (state, operation) cell a fresh `RawSocket` and a fresh twin
//! are brought into the same state by the same guest call sequence (the
//! twin with libc, the raw one through the facade), then the operation is
//! run once on each. SPEC.md's principle is that an allowed call answers
//! exactly what the kernel answers, so the two results must be equal: the
//! same errno, or success with the same deterministic value. Addresses of
//! two different sockets are compared by length and family only.
//!
//! The table (state x op -> errno name, or `ok`) is printed; every
//! difference is listed and fails the test. Loopback only.

mod util;

use std::fmt::Write as _;
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream as StdStream, UdpSocket as StdUdp,
};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use hostsock::Policy;
use hostsock::raw::{Errno, RawSocket, encode_sockaddr};
use socket2::{Domain, SockRef, Socket, Type};
use tokio::time::Instant;

/// `SIOCATMARK` (`<linux/sockios.h>`).
const SIOCATMARK: u64 = 0x8905;
/// Both sides read `TCP_INFO` into a buffer of this size, so they truncate
/// alike whatever the kernel's `struct tcp_info` size.
const TCP_INFO_LEN: usize = 256;
/// `tcpi_state` values (`include/net/tcp_states.h`).
const TCP_ESTABLISHED: u8 = 1;
const TCP_FIN_WAIT2: u8 = 5;
const TCP_CLOSE: u8 = 7;
const TCP_CLOSE_WAIT: u8 = 8;

const WAIT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Model: families, protocols, states, operations, outcomes.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fam {
    V4,
    V6,
}

impl Fam {
    fn domain(self) -> i32 {
        match self {
            Fam::V4 => libc::AF_INET,
            Fam::V6 => libc::AF_INET6,
        }
    }

    fn loopback(self) -> IpAddr {
        match self {
            Fam::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Fam::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        }
    }

    fn any_port(self) -> SocketAddr {
        SocketAddr::new(self.loopback(), 0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn ty(self) -> i32 {
        match self {
            Proto::Tcp => libc::SOCK_STREAM,
            Proto::Udp => libc::SOCK_DGRAM,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Unbound,
    Bound,
    Listening,
    /// Non-blocking connect to a listener whose accept queue is full:
    /// SYN-SENT.
    Connecting,
    /// Blocking connect (the guest's ordinary `connect`), peer accepted.
    Connected,
    /// Non-blocking connect, then waited for writability: the other way a
    /// guest gets a connected socket.
    ConnectedNb,
    /// Connected, then `shutdown(SHUT_WR)`.
    ShutWr,
    /// Connected, then `shutdown(SHUT_RDWR)`.
    ShutRdwr,
    /// Connected, then the peer closed (FIN received: CLOSE-WAIT).
    PeerClosed,
    /// Connected, then the peer reset (`SO_LINGER` {1, 0} and close).
    PeerReset,
    /// UDP: connected, then `connect(AF_UNSPEC)`.
    Disconnected,
    /// TCP: a blocking connect to a port nobody listens on, refused.
    Refused,
}

impl State {
    fn label(self) -> &'static str {
        match self {
            State::Unbound => "unbound",
            State::Bound => "bound",
            State::Listening => "listening",
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::ConnectedNb => "connected(nb)",
            State::ShutWr => "shut SHUT_WR",
            State::ShutRdwr => "shut SHUT_RDWR",
            State::PeerClosed => "peer closed",
            State::PeerReset => "peer reset",
            State::Disconnected => "AF_UNSPEC'd",
            State::Refused => "refused",
        }
    }
}

const TCP_STATES: [State; 11] = [
    State::Unbound,
    State::Bound,
    State::Listening,
    State::Connecting,
    State::Connected,
    State::ConnectedNb,
    State::ShutWr,
    State::ShutRdwr,
    State::PeerClosed,
    State::PeerReset,
    State::Refused,
];

const UDP_STATES: [State; 4] = [
    State::Unbound,
    State::Bound,
    State::Connected,
    State::Disconnected,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Bind,
    Listen,
    Connect,
    Accept,
    ShutRd,
    ShutWr,
    ShutRdwr,
    SockName,
    PeerName,
    SoError,
    AcceptConn,
    TcpState,
    Inq,
    Outq,
    AtMark,
    Poll,
}

const OPS: [Op; 16] = [
    Op::Bind,
    Op::Listen,
    Op::Connect,
    Op::Accept,
    Op::ShutRd,
    Op::ShutWr,
    Op::ShutRdwr,
    Op::SockName,
    Op::PeerName,
    Op::SoError,
    Op::AcceptConn,
    Op::TcpState,
    Op::Inq,
    Op::Outq,
    Op::AtMark,
    Op::Poll,
];

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Bind => "bind",
            Op::Listen => "listen",
            Op::Connect => "connect",
            Op::Accept => "accept4",
            Op::ShutRd => "shut_rd",
            Op::ShutWr => "shut_wr",
            Op::ShutRdwr => "shut_rdwr",
            Op::SockName => "sockname",
            Op::PeerName => "peername",
            Op::SoError => "SO_ERROR",
            Op::AcceptConn => "ACCEPTCONN",
            Op::TcpState => "TCP_INFO",
            Op::Inq => "TIOCINQ",
            Op::Outq => "TIOCOUTQ",
            Op::AtMark => "ATMARK",
            Op::Poll => "poll",
        }
    }
}

/// What a successful call gave, reduced to what is comparable across two
/// sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val {
    Unit,
    Int(i64),
    Addr { len: usize, family: u16 },
    TcpInfo { len: usize, state: u8 },
}

type Outcome = Result<Val, i32>;

fn errno_name(e: i32) -> String {
    match Errno::new(e).name() {
        "E?" => format!("errno{e}"),
        n => n.to_string(),
    }
}

fn tcp_state_name(s: u8) -> &'static str {
    match s {
        1 => "ESTAB",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "?",
    }
}

fn show(o: &Outcome) -> String {
    match o {
        Err(e) => errno_name(*e),
        Ok(Val::Unit) => "ok".into(),
        Ok(Val::Int(v)) => format!("ok={v}"),
        Ok(Val::Addr { len, .. }) => format!("ok/{len}B"),
        Ok(Val::TcpInfo { state, .. }) => tcp_state_name(*state).into(),
    }
}

fn poll_name(v: i64) -> String {
    let mut s = String::new();
    for (bit, name) in [
        (libc::POLLIN, "IN"),
        (libc::POLLOUT, "OUT"),
        (libc::POLLERR, "ERR"),
        (libc::POLLHUP, "HUP"),
    ] {
        if v & i64::from(bit) != 0 {
            if !s.is_empty() {
                s.push('|');
            }
            s.push_str(name);
        }
    }
    if s.is_empty() { "0".into() } else { s }
}

fn show_cell(op: Op, o: &Outcome) -> String {
    match (op, o) {
        (Op::Poll, Ok(Val::Int(v))) => poll_name(*v),
        _ => show(o),
    }
}

fn addr_val(bytes: &[u8]) -> Val {
    let family = if bytes.len() >= 2 {
        u16::from_ne_bytes([bytes[0], bytes[1]])
    } else {
        0
    };
    Val::Addr {
        len: bytes.len(),
        family,
    }
}

// ---------------------------------------------------------------------------
// The twin: plain libc.

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn cvt(rc: libc::c_int) -> Result<libc::c_int, i32> {
    if rc < 0 { Err(last_errno()) } else { Ok(rc) }
}

fn twin_socket(domain: i32, ty: i32) -> OwnedFd {
    // SAFETY: plain socket(2); the result is checked before it is owned.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "twin socket: errno {}", last_errno());
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn set_fd_nonblocking(fd: RawFd, on: bool) {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own; no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(flags >= 0);
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
    assert!(rc >= 0);
}

fn twin_bind(fd: RawFd, addr: &[u8]) -> Result<(), i32> {
    // SAFETY: `addr` is valid for reads of its length.
    cvt(unsafe { libc::bind(fd, addr.as_ptr().cast(), addr.len() as libc::socklen_t) }).map(drop)
}

fn twin_connect(fd: RawFd, addr: &[u8]) -> Result<(), i32> {
    // SAFETY: `addr` is valid for reads of its length.
    cvt(unsafe { libc::connect(fd, addr.as_ptr().cast(), addr.len() as libc::socklen_t) }).map(drop)
}

fn twin_listen(fd: RawFd, backlog: i32) -> Result<(), i32> {
    // SAFETY: no pointers.
    cvt(unsafe { libc::listen(fd, backlog) }).map(drop)
}

fn twin_accept4(fd: RawFd) -> Result<(), i32> {
    // SAFETY: null address pointers are allowed by accept4(2).
    let rc = unsafe {
        libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    let fd = cvt(rc)?;
    // SAFETY: a fresh descriptor from accept4; dropped (closed) at once.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

fn twin_shutdown(fd: RawFd, how: i32) -> Result<(), i32> {
    // SAFETY: no pointers.
    cvt(unsafe { libc::shutdown(fd, how) }).map(drop)
}

fn twin_name(fd: RawFd, peer: bool) -> Result<Vec<u8>, i32> {
    let mut buf = [0u8; 128];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is valid for `len` bytes; `len` is updated by the kernel.
    let rc = unsafe {
        if peer {
            libc::getpeername(fd, buf.as_mut_ptr().cast(), &mut len)
        } else {
            libc::getsockname(fd, buf.as_mut_ptr().cast(), &mut len)
        }
    };
    cvt(rc)?;
    Ok(buf[..(len as usize).min(buf.len())].to_vec())
}

fn twin_getsockopt(fd: RawFd, level: i32, name: i32, out: &mut [u8]) -> Result<usize, i32> {
    let mut len = out.len() as libc::socklen_t;
    // SAFETY: `out` is valid for `len` bytes; `len` is updated by the kernel.
    let rc = unsafe { libc::getsockopt(fd, level, name, out.as_mut_ptr().cast(), &mut len) };
    cvt(rc)?;
    Ok(len as usize)
}

fn twin_ioctl(fd: RawFd, req: u64) -> Result<i32, i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: the requests used here write one int through the pointer.
    let rc = unsafe { libc::ioctl(fd, req as _, &mut v as *mut libc::c_int) };
    cvt(rc)?;
    Ok(v)
}

fn twin_poll(fd: RawFd, events: i16, timeout_ms: i32) -> Result<i16, i32> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    cvt(unsafe { libc::poll(&mut pfd, 1, timeout_ms) })?;
    Ok(pfd.revents)
}

/// `tcpi_state` of any TCP fd, read with libc (used while building states,
/// so that the facade is not exercised outside the cell's operation).
fn tcp_state_of(fd: RawFd) -> u8 {
    let mut buf = [0u8; TCP_INFO_LEN];
    twin_getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut buf).expect("TCP_INFO");
    buf[0]
}

fn sockaddr(addr: SocketAddr) -> Vec<u8> {
    encode_sockaddr(addr).as_bytes().to_vec()
}

fn unspec() -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b[..2].copy_from_slice(&(libc::AF_UNSPEC as u16).to_ne_bytes());
    b
}

fn local_of(fd: RawFd) -> SocketAddr {
    let b = twin_name(fd, false).expect("getsockname");
    let port = u16::from_be_bytes([b[2], b[3]]);
    let family = i32::from(u16::from_ne_bytes([b[0], b[1]]));
    if family == libc::AF_INET {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(b[4], b[5], b[6], b[7])), port)
    } else {
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&b[8..24]);
        SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)
    }
}

// ---------------------------------------------------------------------------
// The environment: listeners and peers shared by all cells of one table.

struct Env {
    fam: Fam,
    proto: Proto,
    /// TCP: a listener with a large backlog (non-blocking, drained between
    /// cells).
    listener: Option<Socket>,
    /// TCP: a listener with a full accept queue (connects stay SYN-SENT).
    full: Option<(Socket, SocketAddr, Vec<StdStream>)>,
    /// UDP: a bound peer to connect to.
    _udp_peer: Option<StdUdp>,
    /// Where the `connect` operation of the table goes.
    target: SocketAddr,
}

/// A listener with a full accept queue on `ip` (the IPv4 one comes from
/// `util::full_backlog_listener`; this is the same recipe for IPv6).
fn full_backlog(fam: Fam) -> (Socket, SocketAddr, Vec<StdStream>) {
    if fam == Fam::V4 {
        return util::full_backlog_listener();
    }
    let l = Socket::new(Domain::IPV6, Type::STREAM, None).expect("socket");
    l.bind(&fam.any_port().into()).expect("bind");
    l.listen(0).expect("listen");
    let addr = l.local_addr().expect("local").as_socket().expect("inet");
    let mut fill = Vec::new();
    for _ in 0..8 {
        match StdStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(s) => fill.push(s),
            Err(_) => break,
        }
    }
    (l, addr, fill)
}

/// A loopback address of `fam` where nothing listens.
fn refused_addr(fam: Fam) -> SocketAddr {
    if fam == Fam::V4 {
        return util::refused_addr();
    }
    let l = std::net::TcpListener::bind(fam.any_port()).expect("bind");
    l.local_addr().expect("local_addr")
}

impl Env {
    fn new(fam: Fam, proto: Proto) -> Env {
        match proto {
            Proto::Tcp => {
                let domain = Domain::from(fam.domain());
                let l = Socket::new(domain, Type::STREAM, None).expect("listener");
                l.bind(&fam.any_port().into()).expect("bind listener");
                l.listen(1024).expect("listen");
                l.set_nonblocking(true).expect("nonblocking listener");
                let target = l.local_addr().unwrap().as_socket().unwrap();
                Env {
                    fam,
                    proto,
                    listener: Some(l),
                    full: Some(full_backlog(fam)),
                    _udp_peer: None,
                    target,
                }
            }
            Proto::Udp => {
                let peer = StdUdp::bind(fam.any_port()).expect("udp peer");
                let target = peer.local_addr().unwrap();
                Env {
                    fam,
                    proto,
                    listener: None,
                    full: None,
                    _udp_peer: Some(peer),
                    target,
                }
            }
        }
    }

    fn listener(&self) -> &Socket {
        self.listener.as_ref().expect("TCP env")
    }

    fn full_addr(&self) -> SocketAddr {
        self.full.as_ref().expect("TCP env").1
    }

    /// Accepts and drops whatever the table's connect cells left queued.
    fn drain(&self) {
        if let Some(l) = &self.listener {
            for _ in 0..4096 {
                if l.accept().is_err() {
                    break;
                }
            }
        }
    }

    /// Accepts the connection whose peer is `from` (others are dropped).
    async fn accept_from(&self, from: SocketAddr) -> StdStream {
        let start = Instant::now();
        loop {
            match self.listener().accept() {
                Ok((s, a)) if a.as_socket() == Some(from) => {
                    let s: StdStream = s.into();
                    return s;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(start.elapsed() < WAIT, "no connection from {from}");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }
}

/// One cell's pair of sockets, in the same state, plus the peers that must
/// stay alive.
struct Fixture {
    raw: RawSocket,
    twin: OwnedFd,
    _peers: Vec<StdStream>,
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: took longer than {WAIT:?}"))
}

/// Waits (bounded) until both sockets report TCP state `want`.
async fn settle(raw: RawFd, twin: RawFd, want: u8, what: &str) {
    let start = Instant::now();
    loop {
        let (a, b) = (tcp_state_of(raw), tcp_state_of(twin));
        if a == want && b == want {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{what}: states raw {} twin {} never became {}",
            tcp_state_name(a),
            tcp_state_name(b),
            tcp_state_name(want)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn build(env: &Env, state: State) -> Fixture {
    let domain = env.fam.domain();
    let ty = env.proto.ty();
    let raw = RawSocket::new(Policy::shared_default(), domain, ty, 0).expect("RawSocket::new");
    let twin = twin_socket(domain, ty);
    let tfd = twin.as_raw_fd();
    let rfd = raw.host_fd();
    let bind_to = sockaddr(env.fam.any_port());
    let mut peers = Vec::new();
    let what = format!("{:?}/{:?}/{}", env.fam, env.proto, state.label());

    match (env.proto, state) {
        (_, State::Unbound) => {}
        (_, State::Bound) => {
            raw.bind(&bind_to).expect("raw bind");
            twin_bind(tfd, &bind_to).expect("twin bind");
        }
        (Proto::Tcp, State::Listening) => {
            raw.bind(&bind_to).expect("raw bind");
            twin_bind(tfd, &bind_to).expect("twin bind");
            raw.listen(16).expect("raw listen");
            twin_listen(tfd, 16).expect("twin listen");
        }
        (Proto::Tcp, State::Connecting) => {
            let to = sockaddr(env.full_addr());
            let r = within(&what, raw.connect(&to, true)).await;
            assert_eq!(r, Err(Errno::EINPROGRESS), "{what}: raw connect");
            set_fd_nonblocking(tfd, true);
            assert_eq!(twin_connect(tfd, &to), Err(libc::EINPROGRESS), "{what}");
            assert_eq!(tcp_state_of(rfd), 2, "{what}: raw not SYN-SENT");
            assert_eq!(tcp_state_of(tfd), 2, "{what}: twin not SYN-SENT");
        }
        (Proto::Tcp, State::Refused) => {
            let to = sockaddr(refused_addr(env.fam));
            let r = within(&what, raw.connect(&to, false)).await;
            assert_eq!(r, Err(Errno::ECONNREFUSED), "{what}: raw blocking connect");
            assert_eq!(twin_connect(tfd, &to), Err(libc::ECONNREFUSED), "{what}");
        }
        (Proto::Tcp, State::ConnectedNb) => {
            env.drain();
            let to = sockaddr(env.target);
            let r = within(&what, raw.connect(&to, true)).await;
            assert_eq!(r, Err(Errno::EINPROGRESS), "{what}: raw connect");
            let deadline = Instant::now() + WAIT;
            let ev = within(&what, raw.wait(libc::POLLOUT, Some(deadline))).await;
            assert_eq!(ev, Ok(libc::POLLOUT), "{what}: raw wait");
            set_fd_nonblocking(tfd, true);
            assert_eq!(twin_connect(tfd, &to), Err(libc::EINPROGRESS), "{what}");
            assert_eq!(twin_poll(tfd, libc::POLLOUT, 2000), Ok(libc::POLLOUT));
            peers.push(env.accept_from(local_of(rfd)).await);
            peers.push(env.accept_from(local_of(tfd)).await);
            settle(rfd, tfd, TCP_ESTABLISHED, &what).await;
        }
        (Proto::Tcp, _) => {
            // Connected, by the guest's ordinary blocking connect.
            env.drain();
            let to = sockaddr(env.target);
            let r = within(&what, raw.connect(&to, false)).await;
            assert_eq!(r, Ok(()), "{what}: raw blocking connect");
            assert_eq!(twin_connect(tfd, &to), Ok(()), "{what}: twin connect");
            peers.push(env.accept_from(local_of(rfd)).await);
            peers.push(env.accept_from(local_of(tfd)).await);
            settle(rfd, tfd, TCP_ESTABLISHED, &what).await;
            match state {
                State::Connected => {}
                State::ShutWr | State::ShutRdwr => {
                    let how = if state == State::ShutWr {
                        libc::SHUT_WR
                    } else {
                        libc::SHUT_RDWR
                    };
                    raw.shutdown(how).expect("raw shutdown");
                    twin_shutdown(tfd, how).expect("twin shutdown");
                    settle(rfd, tfd, TCP_FIN_WAIT2, &what).await;
                }
                State::PeerClosed => {
                    peers.clear();
                    settle(rfd, tfd, TCP_CLOSE_WAIT, &what).await;
                }
                State::PeerReset => {
                    for p in &peers {
                        SockRef::from(p)
                            .set_linger(Some(Duration::ZERO))
                            .expect("linger 0");
                    }
                    peers.clear();
                    settle(rfd, tfd, TCP_CLOSE, &what).await;
                }
                other => unreachable!("{other:?}"),
            }
        }
        (Proto::Udp, State::Connected | State::Disconnected) => {
            let to = sockaddr(env.target);
            assert_eq!(within(&what, raw.connect(&to, true)).await, Ok(()));
            assert_eq!(twin_connect(tfd, &to), Ok(()));
            if state == State::Disconnected {
                let u = unspec();
                assert_eq!(within(&what, raw.connect(&u, true)).await, Ok(()));
                assert_eq!(twin_connect(tfd, &u), Ok(()));
            }
        }
        (Proto::Udp, other) => unreachable!("{other:?} is not a UDP state"),
    }
    // Every operation of the table is the non-blocking form.
    set_fd_nonblocking(tfd, true);
    raw.set_nonblocking(true);
    Fixture {
        raw,
        twin,
        _peers: peers,
    }
}

// ---------------------------------------------------------------------------
// One operation, on each side.

fn raw_fail(e: Errno) -> i32 {
    assert_ne!(e.raw(), 0, "an Err with errno 0");
    e.raw()
}

async fn raw_op(env: &Env, f: &Fixture, op: Op) -> Outcome {
    let raw = &f.raw;
    let r: Result<Val, Errno> = match op {
        Op::Bind => raw.bind(&sockaddr(env.fam.any_port())).map(|()| Val::Unit),
        Op::Listen => raw.listen(16).map(|()| Val::Unit),
        Op::Connect => within("raw connect", raw.connect(&sockaddr(env.target), true))
            .await
            .map(|()| Val::Unit),
        Op::Accept => within("raw accept4", raw.accept4(true, 0))
            .await
            .map(|_| Val::Unit),
        Op::ShutRd => raw.shutdown(libc::SHUT_RD).map(|()| Val::Unit),
        Op::ShutWr => raw.shutdown(libc::SHUT_WR).map(|()| Val::Unit),
        Op::ShutRdwr => raw.shutdown(libc::SHUT_RDWR).map(|()| Val::Unit),
        Op::SockName => raw.getsockname().map(|a| addr_val(a.as_bytes())),
        Op::PeerName => raw.getpeername().map(|a| addr_val(a.as_bytes())),
        Op::SoError | Op::AcceptConn => {
            let name = if op == Op::SoError {
                libc::SO_ERROR
            } else {
                libc::SO_ACCEPTCONN
            };
            let mut b = [0u8; 4];
            raw.getsockopt(libc::SOL_SOCKET, name, &mut b).map(|n| {
                assert_eq!(n, 4, "{op:?} length");
                Val::Int(i64::from(i32::from_ne_bytes(b)))
            })
        }
        Op::TcpState => {
            let mut b = [0u8; TCP_INFO_LEN];
            raw.getsockopt(libc::IPPROTO_TCP, libc::TCP_INFO, &mut b)
                .map(|len| Val::TcpInfo { len, state: b[0] })
        }
        Op::Inq => raw.ioctl(libc::TIOCINQ).map(|v| Val::Int(v.into())),
        Op::Outq => raw.ioctl(libc::TIOCOUTQ).map(|v| Val::Int(v.into())),
        Op::AtMark => raw.ioctl(SIOCATMARK).map(|v| Val::Int(v.into())),
        Op::Poll => raw
            .poll(libc::POLLIN | libc::POLLOUT)
            .map(|v| Val::Int(v.into())),
    };
    r.map_err(raw_fail)
}

fn twin_op(env: &Env, f: &Fixture, op: Op) -> Outcome {
    let fd = f.twin.as_raw_fd();
    match op {
        Op::Bind => twin_bind(fd, &sockaddr(env.fam.any_port())).map(|()| Val::Unit),
        Op::Listen => twin_listen(fd, 16).map(|()| Val::Unit),
        Op::Connect => twin_connect(fd, &sockaddr(env.target)).map(|()| Val::Unit),
        Op::Accept => twin_accept4(fd).map(|()| Val::Unit),
        Op::ShutRd => twin_shutdown(fd, libc::SHUT_RD).map(|()| Val::Unit),
        Op::ShutWr => twin_shutdown(fd, libc::SHUT_WR).map(|()| Val::Unit),
        Op::ShutRdwr => twin_shutdown(fd, libc::SHUT_RDWR).map(|()| Val::Unit),
        Op::SockName => twin_name(fd, false).map(|b| addr_val(&b)),
        Op::PeerName => twin_name(fd, true).map(|b| addr_val(&b)),
        Op::SoError | Op::AcceptConn => {
            let name = if op == Op::SoError {
                libc::SO_ERROR
            } else {
                libc::SO_ACCEPTCONN
            };
            let mut b = [0u8; 4];
            twin_getsockopt(fd, libc::SOL_SOCKET, name, &mut b)
                .map(|_| Val::Int(i64::from(i32::from_ne_bytes(b))))
        }
        Op::TcpState => {
            let mut b = [0u8; TCP_INFO_LEN];
            twin_getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut b)
                .map(|len| Val::TcpInfo { len, state: b[0] })
        }
        Op::Inq => twin_ioctl(fd, libc::TIOCINQ).map(|v| Val::Int(v.into())),
        Op::Outq => twin_ioctl(fd, libc::TIOCOUTQ).map(|v| Val::Int(v.into())),
        Op::AtMark => twin_ioctl(fd, SIOCATMARK).map(|v| Val::Int(v.into())),
        Op::Poll => twin_poll(fd, libc::POLLIN | libc::POLLOUT, 0).map(|v| Val::Int(v.into())),
    }
}

// ---------------------------------------------------------------------------
// The table.

struct Diff {
    state: State,
    op: Op,
    raw: Outcome,
    twin: Outcome,
}

async fn run_table(fam: Fam, proto: Proto) {
    let env = Env::new(fam, proto);
    let states: &[State] = match proto {
        Proto::Tcp => &TCP_STATES,
        Proto::Udp => &UDP_STATES,
    };
    let mut table = String::new();
    let _ = write!(table, "\n{:?} {:?}: raw facade vs libc twin", proto, fam);
    let _ = write!(table, " (a != cell is raw!=twin)\n{:<15}", "state \\ op");
    for op in OPS {
        let _ = write!(table, "{:<11} ", op.label());
    }
    table.push('\n');
    let mut diffs = Vec::new();
    for &state in states {
        let _ = write!(table, "{:<15}", state.label());
        for op in OPS {
            let f = build(&env, state).await;
            // Twin first: the raw call cannot disturb it (separate sockets),
            // and any state drift while the facade runs is then on the
            // facade's side.
            let twin = twin_op(&env, &f, op);
            let raw = raw_op(&env, &f, op).await;
            let cell = if raw == twin {
                show_cell(op, &raw)
            } else {
                diffs.push(Diff {
                    state,
                    op,
                    raw,
                    twin,
                });
                format!("{}!={}", show_cell(op, &raw), show_cell(op, &twin))
            };
            let _ = write!(table, "{cell:<11} ");
            drop(f);
        }
        table.push('\n');
        env.drain();
    }
    println!("{table}");
    let mut report = String::new();
    for d in &diffs {
        let _ = writeln!(
            report,
            "  {:?} {:?} state `{}`, op `{}`: facade {:?} ({}), kernel {:?} ({})",
            proto,
            fam,
            d.state.label(),
            d.op.label(),
            d.raw,
            show(&d.raw),
            d.twin,
            show(&d.twin)
        );
    }
    if !report.is_empty() {
        println!("differences:\n{report}");
    }
    assert!(
        diffs.is_empty(),
        "{} facade-vs-kernel difference(s):\n{report}",
        diffs.len()
    );
}

fn v6_available() -> Result<(), String> {
    std::net::TcpListener::bind("[::1]:0")
        .map(drop)
        .map_err(|e| format!("::1 is not usable here ({e})"))
}

#[tokio::test]
async fn tcp_v4_state_table() {
    run_table(Fam::V4, Proto::Tcp).await;
}

#[tokio::test]
async fn tcp_v6_state_table() {
    if let Err(why) = v6_available() {
        println!("skipping tcp_v6_state_table: {why}");
        return;
    }
    run_table(Fam::V6, Proto::Tcp).await;
}

#[tokio::test]
async fn udp_v4_state_table() {
    run_table(Fam::V4, Proto::Udp).await;
}

#[tokio::test]
async fn udp_v6_state_table() {
    if let Err(why) = v6_available() {
        println!("skipping udp_v6_state_table: {why}");
        return;
    }
    run_table(Fam::V6, Proto::Udp).await;
}
