//! Typed socket options: a get/set round trip for every option that can be
//! read and written, on IPv4 and IPv6 sockets of the right kind; the
//! get-only options (`SO_ACCEPTCONN`, `SO_ERROR`, `SO_TYPE`/`DOMAIN`/
//! `PROTOCOL`, `IP_MTU`, `TCP_INFO`); multicast memberships; the opt-in rows
//! under the default policy; the facade's timeouts seen both ways; and the
//! typed options against the policy's table. Loopback only; every wait is
//! bounded.
#![cfg(target_os = "linux")]

mod util;

use std::fmt::Debug;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hostsock::opts::{self, Get, OptName, Set, SockOpt, TcpState};
use hostsock::policy::OPTIONS;
use hostsock::raw::{Errno, RawSocket};
use hostsock::{Op, Policy, Rule, TcpListener, TcpSocket, TcpStream, UdpSocket};
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use util::within;

/// The typed option methods, over every socket type that has them.
trait Sock {
    fn get_opt<O: Get>(&self, opt: O) -> hostsock::Result<O::Value>;
    fn set_opt<O: Set>(&self, opt: O, value: O::Value) -> hostsock::Result<()>;
}

macro_rules! impl_sock {
    ($($ty:ty),*) => {$(
        impl Sock for $ty {
            fn get_opt<O: Get>(&self, opt: O) -> hostsock::Result<O::Value> {
                self.get(opt)
            }
            fn set_opt<O: Set>(&self, opt: O, value: O::Value) -> hostsock::Result<()> {
                self.set(opt, value)
            }
        }
    )*};
}
impl_sock!(TcpStream, TcpListener, TcpSocket, UdpSocket);

/// Reads `opt`, checks it is not `expect` already, sets `value`, and
/// checks it reads back as `expect`.
#[track_caller]
fn round_trip<S: Sock, O: Get + Set>(on: &str, sock: &S, opt: O, value: O::Value, expect: O::Value)
where
    O::Value: Debug + PartialEq + Copy,
{
    let name = O::CNAME;
    let before = sock
        .get_opt(opt)
        .unwrap_or_else(|e| panic!("{on}: get {name} (before): {e:?}"));
    assert_ne!(
        before, expect,
        "{on}: {name} already reads {expect:?}; the round trip would prove nothing"
    );
    sock.set_opt(opt, value)
        .unwrap_or_else(|e| panic!("{on}: set {name} to {value:?}: {e:?}"));
    let after = sock
        .get_opt(opt)
        .unwrap_or_else(|e| panic!("{on}: get {name} (after): {e:?}"));
    assert_eq!(
        after, expect,
        "{on}: {name} set to {value:?} reads back {after:?} (was {before:?})"
    );
}

/// Flips a boolean option, whatever it starts as.
#[track_caller]
fn flip<S: Sock, O: Get + Set<Value = bool>>(on: &str, sock: &S, opt: O) {
    let before = sock
        .get_opt(opt)
        .unwrap_or_else(|e| panic!("{on}: get {}: {e:?}", O::CNAME));
    round_trip(on, sock, opt, !before, !before);
}

fn proc_i64(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// What `SO_SNDBUF`/`SO_RCVBUF` reads after setting `v`: Linux doubles the
/// value, capped by `wmem_max`/`rmem_max`.
fn doubled(v: i32, max_path: &str) -> i32 {
    let max = proc_i64(max_path).unwrap_or(i64::from(v));
    let eff = i64::from(v).min(max);
    i32::try_from(2 * eff).unwrap_or(i32::MAX)
}

/// Is IPv6 loopback usable here? Prints why not, so a skipped part says so.
fn v6_available() -> bool {
    match std::net::UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)) {
        Ok(_) => true,
        Err(e) => {
            println!("skipping the IPv6 part: cannot bind [::1]:0 ({e})");
            false
        }
    }
}

/// The families to run on: IPv4, and IPv6 if `::1` works.
fn families() -> Vec<bool> {
    if v6_available() {
        vec![false, true]
    } else {
        vec![false]
    }
}

fn fam(v6: bool) -> &'static str {
    if v6 { "v6" } else { "v4" }
}

fn loopback(v6: bool) -> SocketAddr {
    if v6 {
        "[::1]:0".parse().unwrap()
    } else {
        "127.0.0.1:0".parse().unwrap()
    }
}

async fn udp(v6: bool) -> UdpSocket {
    within(2, UdpSocket::bind(loopback(v6))).await.unwrap()
}

fn tcp_socket(v6: bool) -> TcpSocket {
    if v6 {
        TcpSocket::new_v6().unwrap()
    } else {
        TcpSocket::new_v4().unwrap()
    }
}

async fn listener(v6: bool) -> TcpListener {
    within(2, TcpListener::bind(loopback(v6))).await.unwrap()
}

/// A connected pair: (client, server).
async fn pair(v6: bool) -> (TcpStream, TcpStream) {
    let l = listener(v6).await;
    let client = within(2, TcpStream::connect(l.local_addr().unwrap()))
        .await
        .unwrap();
    let (server, _) = within(2, l.accept()).await.unwrap();
    (client, server)
}

fn timeout_at() -> Instant {
    Instant::now() + Duration::from_secs(2)
}

// ----------------------------------------------------------- SOL_SOCKET

async fn socket_level(v6: bool) {
    let f = fam(v6);
    let wmem = "/proc/sys/net/core/wmem_max";
    let rmem = "/proc/sys/net/core/rmem_max";
    let on = format!("udp {f}");
    round_trip(&on, &udp(v6).await, opts::Broadcast, true, true);
    round_trip(&on, &udp(v6).await, opts::ReuseAddr, true, true);
    round_trip(&on, &udp(v6).await, opts::ReusePort, true, true);
    round_trip(&on, &udp(v6).await, opts::RecvLowat, 10, 10);
    round_trip(&on, &udp(v6).await, opts::Timestamp, true, true);
    round_trip(&on, &udp(v6).await, opts::TimestampNs, true, true);
    round_trip(
        &on,
        &udp(v6).await,
        opts::SendBuffer,
        50_000,
        doubled(50_000, wmem),
    );
    round_trip(
        &on,
        &udp(v6).await,
        opts::RecvBuffer,
        50_000,
        doubled(50_000, rmem),
    );
    // A multiple of 20 ms: whole jiffies for HZ = 100, 250, 300 and 1000.
    let t = Some(Duration::from_millis(1_500));
    round_trip(&on, &udp(v6).await, opts::RecvTimeout, t, t);
    round_trip(&on, &udp(v6).await, opts::SendTimeout, t, t);

    let on = format!("tcp stream {f}");
    round_trip(&on, &pair(v6).await.0, opts::KeepAlive, true, true);
    round_trip(&on, &pair(v6).await.0, opts::OobInline, true, true);
    round_trip(&on, &pair(v6).await.0, opts::RecvLowat, 10, 10);
    round_trip(&on, &pair(v6).await.0, opts::Timestamp, true, true);
    round_trip(&on, &pair(v6).await.0, opts::TimestampNs, true, true);
    round_trip(&on, &pair(v6).await.0, opts::ReuseAddr, true, true);
    round_trip(&on, &pair(v6).await.0, opts::ReusePort, true, true);
    // SO_LINGER keeps whole seconds.
    round_trip(
        &on,
        &pair(v6).await.0,
        opts::Linger,
        Some(Duration::from_millis(3_500)),
        Some(Duration::from_secs(3)),
    );
    let (c, _s) = pair(v6).await;
    c.set(opts::Linger, Some(Duration::from_secs(2))).unwrap();
    round_trip(&on, &c, opts::Linger, None, None);
    round_trip(
        &on,
        &pair(v6).await.0,
        opts::SendBuffer,
        50_000,
        doubled(50_000, wmem),
    );
    round_trip(
        &on,
        &pair(v6).await.0,
        opts::RecvBuffer,
        50_000,
        doubled(50_000, rmem),
    );
    round_trip(&on, &pair(v6).await.0, opts::RecvTimeout, t, t);
    round_trip(&on, &pair(v6).await.0, opts::SendTimeout, t, t);

    let on = format!("tcp socket {f}");
    round_trip(&on, &tcp_socket(v6), opts::ReuseAddr, true, true);
    round_trip(&on, &tcp_socket(v6), opts::KeepAlive, true, true);
    round_trip(&on, &tcp_socket(v6), opts::RecvTimeout, t, t);
}

#[tokio::test]
async fn socket_level_options_round_trip_v4() {
    socket_level(false).await;
}

#[tokio::test]
async fn socket_level_options_round_trip_v6() {
    if v6_available() {
        socket_level(true).await;
    }
}

// ------------------------------------------------------------- SOL_IP

#[tokio::test]
async fn ip_level_options_round_trip_on_v4_sockets() {
    let on = "udp v4";
    round_trip(on, &udp(false).await, opts::IpTos, 0x10, 0x10);
    round_trip(on, &udp(false).await, opts::IpTtl, 42, 42);
    round_trip(
        on,
        &udp(false).await,
        opts::MtuDiscover,
        libc::IP_PMTUDISC_DO,
        libc::IP_PMTUDISC_DO,
    );
    round_trip(
        on,
        &udp(false).await,
        opts::MulticastIfV4,
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::LOCALHOST,
    );
    round_trip(on, &udp(false).await, opts::MulticastLoopV4, false, false);
    round_trip(on, &udp(false).await, opts::MulticastTtlV4, 5, 5);
    round_trip(on, &udp(false).await, opts::PktInfoV4, true, true);
    round_trip(on, &udp(false).await, opts::RecvErrV4, true, true);
    round_trip(on, &udp(false).await, opts::RecvOrigDstAddrV4, true, true);
    round_trip(on, &udp(false).await, opts::RecvTos, true, true);
    round_trip(on, &udp(false).await, opts::RecvTtl, true, true);

    // The tokio-shaped helpers read the same options.
    let u = udp(false).await;
    u.set_ttl(17).unwrap();
    assert_eq!(u.get(opts::IpTtl).unwrap(), 17);
    u.set(opts::MulticastTtlV4, 9).unwrap();
    assert_eq!(u.multicast_ttl_v4().unwrap(), 9);
    u.set(opts::Broadcast, true).unwrap();
    assert!(u.broadcast().unwrap());

    let on = "tcp stream v4";
    round_trip(on, &pair(false).await.0, opts::IpTos, 0x10, 0x10);
    round_trip(on, &pair(false).await.0, opts::IpTtl, 42, 42);
    round_trip(
        on,
        &pair(false).await.0,
        opts::MtuDiscover,
        libc::IP_PMTUDISC_DONT,
        libc::IP_PMTUDISC_DONT,
    );
    round_trip(on, &pair(false).await.0, opts::RecvErrV4, true, true);
    let (c, _s) = pair(false).await;
    c.set_ttl(33).unwrap();
    assert_eq!(c.get(opts::IpTtl).unwrap(), 33);
    assert_eq!(c.ttl().unwrap(), 33);
    let l = listener(false).await;
    round_trip("tcp listener v4", &l, opts::IpTtl, 99, 99);
    assert_eq!(l.ttl().unwrap(), 99);
}

// ----------------------------------------------------------- SOL_IPV6

#[tokio::test]
async fn ipv6_level_options_round_trip_on_v6_sockets() {
    if !v6_available() {
        return;
    }
    let on = "udp v6";
    round_trip(on, &udp(true).await, opts::MulticastHopsV6, 7, 7);
    round_trip(on, &udp(true).await, opts::MulticastLoopV6, false, false);
    round_trip(on, &udp(true).await, opts::RecvErrV6, true, true);
    round_trip(on, &udp(true).await, opts::RecvHopLimitV6, true, true);
    round_trip(on, &udp(true).await, opts::RecvOrigDstAddrV6, true, true);
    round_trip(on, &udp(true).await, opts::RecvPktInfoV6, true, true);
    round_trip(on, &udp(true).await, opts::RecvTClassV6, true, true);
    round_trip(on, &udp(true).await, opts::TClassV6, 0x20, 0x20);
    round_trip(on, &udp(true).await, opts::UnicastHopsV6, 33, 33);
    // -1 means "the route's default" (Linux reads back the default, 64 on
    // most hosts, not -1).
    let u = udp(true).await;
    let default_hops = u.get(opts::UnicastHopsV6).unwrap();
    u.set(opts::UnicastHopsV6, 9).unwrap();
    u.set(opts::UnicastHopsV6, -1).unwrap();
    assert_eq!(u.get(opts::UnicastHopsV6).unwrap(), default_hops);
    u.set_multicast_loop_v6(false).unwrap();
    assert!(!u.get(opts::MulticastLoopV6).unwrap());
    assert!(!u.multicast_loop_v6().unwrap());

    let on = "tcp stream v6";
    round_trip(on, &pair(true).await.0, opts::TClassV6, 0x20, 0x20);
    round_trip(on, &pair(true).await.0, opts::UnicastHopsV6, 33, 33);
    round_trip(on, &pair(true).await.0, opts::RecvErrV6, true, true);
    // IPV6_V6ONLY can only change before bind.
    flip("tcp socket v6", &tcp_socket(true), opts::V6Only);
    let s = tcp_socket(true);
    s.set(opts::V6Only, true).unwrap();
    s.bind("[::1]:0".parse().unwrap()).unwrap();
    assert!(s.get(opts::V6Only).unwrap());
    let err = s.set(opts::V6Only, false).unwrap_err();
    assert!(!err.is_denied(), "{err}");
    assert_eq!(err.errno(), libc::EINVAL, "the kernel refuses after bind");
}

// ------------------------------------------------------------ SOL_TCP

fn congestion_choices() -> Vec<String> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

async fn tcp_level(v6: bool) {
    let on = format!("tcp stream {}", fam(v6));
    let on = on.as_str();
    round_trip(on, &pair(v6).await.0, opts::TcpNoDelay, true, true);
    round_trip(on, &pair(v6).await.0, opts::TcpCork, true, true);
    round_trip(on, &pair(v6).await.0, opts::TcpInq, true, true);
    round_trip(on, &pair(v6).await.0, opts::TcpKeepCnt, 4, 4);
    round_trip(on, &pair(v6).await.0, opts::TcpKeepIdle, 60, 60);
    round_trip(on, &pair(v6).await.0, opts::TcpKeepIntvl, 10, 10);
    round_trip(on, &pair(v6).await.0, opts::TcpLinger2, 30, 30);
    round_trip(on, &pair(v6).await.0, opts::TcpQuickAck, false, false);
    round_trip(on, &pair(v6).await.0, opts::TcpSynCnt, 3, 3);
    round_trip(on, &pair(v6).await.0, opts::TcpUserTimeout, 5000, 5000);
    round_trip(on, &pair(v6).await.0, opts::TcpWindowClamp, 20_000, 20_000);

    // TCP_CONGESTION: switch to another available algorithm.
    let (c, _s) = pair(v6).await;
    let current = c.get(opts::TcpCongestion).unwrap();
    assert!(!current.as_str().is_empty(), "no congestion control name");
    let choices = congestion_choices();
    assert!(
        choices.iter().any(|n| n == current.as_str()),
        "{current:?} is not in {choices:?}"
    );
    match ["reno", "cubic"]
        .iter()
        .map(|s| s.to_string())
        .chain(choices.iter().cloned())
        .find(|n| n != current.as_str() && choices.contains(n))
    {
        Some(other) => {
            let name = OptName::new(&other).unwrap();
            round_trip(on, &c, opts::TcpCongestion, name, name);
            assert_eq!(c.get(opts::TcpCongestion).unwrap().as_str(), other);
        }
        None => println!("skipping the TCP_CONGESTION switch: only {current:?} is available"),
    }
    // An unknown algorithm is the kernel's ENOENT.
    let err = c
        .set(opts::TcpCongestion, OptName::new("no-such-algo").unwrap())
        .unwrap_err();
    assert!(!err.is_denied());
    assert_eq!(err.errno(), libc::ENOENT);

    // TCP_MAXSEG reads back the user's value before the connection exists.
    round_trip(
        &format!("tcp socket {}", fam(v6)),
        &tcp_socket(v6),
        opts::TcpMaxSeg,
        1000,
        1000,
    );
    // TCP_DEFER_ACCEPT on a listener (seconds, rounded to retransmits: 3 is
    // exact).
    round_trip(
        &format!("tcp listener {}", fam(v6)),
        &listener(v6).await,
        opts::TcpDeferAccept,
        3,
        3,
    );
    // The builder's options carry over to the stream.
    let l = listener(v6).await;
    let s = tcp_socket(v6);
    round_trip("tcp socket", &s, opts::TcpNoDelay, true, true);
    s.set(opts::TcpKeepIdle, 77).unwrap();
    let stream = within(2, s.connect(l.local_addr().unwrap())).await.unwrap();
    assert!(stream.get(opts::TcpNoDelay).unwrap());
    assert!(stream.nodelay().unwrap());
    assert_eq!(stream.get(opts::TcpKeepIdle).unwrap(), 77);
}

#[tokio::test]
async fn tcp_level_options_round_trip_v4() {
    tcp_level(false).await;
}

#[tokio::test]
async fn tcp_level_options_round_trip_v6() {
    if v6_available() {
        tcp_level(true).await;
    }
}

// ------------------------------------------------------------ SOL_UDP

#[tokio::test]
async fn udp_level_options_round_trip() {
    for v6 in families() {
        let on = format!("udp {}", fam(v6));
        round_trip(&on, &udp(v6).await, opts::UdpGro, true, true);
        round_trip(&on, &udp(v6).await, opts::UdpSegment, 1400, 1400);
    }
}

// ------------------------------------------------------------- opt-in

#[track_caller]
fn assert_off_by_default<S: Sock, O: Get + Set>(on: &str, sock: &S, opt: O, value: O::Value)
where
    O::Value: Debug,
{
    for (err, op) in [
        (sock.set_opt(opt, value).unwrap_err(), Op::SetOpt),
        (sock.get_opt(opt).unwrap_err(), Op::GetOpt),
    ] {
        assert!(err.is_denied(), "{on}: {} {op}: {err:?}", O::CNAME);
        let d = err.denial().unwrap();
        assert_eq!(d.op, op);
        assert_eq!(d.rule, Rule::OptionOff, "{on}: {}", O::CNAME);
        assert_eq!(err.errno(), libc::ENOPROTOOPT);
        assert!(err.to_string().contains(O::CNAME), "{on}: {err}");
    }
}

#[tokio::test]
async fn opt_in_options_are_denied_under_the_default_policy() {
    let lo = OptName::new("lo").unwrap();
    for v6 in families() {
        let on = format!("udp {}", fam(v6));
        let u = udp(v6).await;
        assert_off_by_default(&on, &u, opts::BindToDevice, lo);
        assert_off_by_default(&on, &u, opts::Mark, 1);
        assert_off_by_default(&on, &u, opts::Priority, 1);
        assert_off_by_default(&on, &u, opts::Transparent, true);
        assert_off_by_default(&on, &u, opts::FreeBind, true);
        let on = format!("tcp {}", fam(v6));
        let (c, _s) = pair(v6).await;
        assert_off_by_default(&on, &c, opts::BindToDevice, lo);
        assert_off_by_default(&on, &c, opts::Mark, 1);
        assert_off_by_default(&on, &c, opts::Priority, 1);
        assert_off_by_default(&on, &c, opts::Transparent, true);
        assert_off_by_default(&on, &c, opts::FreeBind, true);
        let s = tcp_socket(v6);
        assert_off_by_default(&on, &s, opts::FreeBind, true);
    }
}

/// Round trip for an option the kernel may refuse to an unprivileged
/// process: `EPERM` is accepted (and said), a denial is not.
#[track_caller]
fn round_trip_privileged<S: Sock, O: Get + Set>(
    on: &str,
    sock: &S,
    opt: O,
    value: O::Value,
    expect: O::Value,
) where
    O::Value: Debug + PartialEq + Copy,
{
    match sock.set_opt(opt, value) {
        Ok(()) => assert_eq!(sock.get_opt(opt).unwrap(), expect, "{on}: {}", O::CNAME),
        Err(e) => {
            assert!(
                !e.is_denied(),
                "{on}: {} allowed, yet denied: {e}",
                O::CNAME
            );
            assert_eq!(e.errno(), libc::EPERM, "{on}: {}: {e:?}", O::CNAME);
            println!(
                "{on}: {} refused by the kernel (EPERM: not privileged)",
                O::CNAME
            );
        }
    }
}

#[tokio::test]
async fn opt_in_options_round_trip_when_the_policy_allows_them() {
    let policy = Arc::new(
        Policy::builder()
            .allow_option(libc::SOL_SOCKET, libc::SO_BINDTODEVICE)
            .allow_option(libc::SOL_SOCKET, libc::SO_MARK)
            .allow_option(libc::SOL_SOCKET, libc::SO_PRIORITY)
            .allow_option(libc::IPPROTO_IP, libc::IP_TRANSPARENT)
            .allow_option(libc::IPPROTO_IP, libc::IP_FREEBIND)
            .build(),
    );
    let sock = || async {
        within(
            2,
            UdpSocket::bind_with_policy("127.0.0.1:0", policy.clone()),
        )
        .await
        .unwrap()
    };
    let on = "udp v4 (opted in)";
    // Unprivileged operations: must work.
    round_trip(on, &sock().await, opts::FreeBind, true, true);
    round_trip(on, &sock().await, opts::Priority, 5, 5);
    // Privileged ones: the kernel decides.
    let s = sock().await;
    assert_eq!(s.get(opts::Mark).unwrap(), 0);
    round_trip_privileged(on, &s, opts::Mark, 7, 7);
    let s = sock().await;
    assert!(!s.get(opts::Transparent).unwrap());
    round_trip_privileged(on, &s, opts::Transparent, true, true);
    let s = sock().await;
    assert_eq!(s.get(opts::BindToDevice).unwrap().as_str(), "");
    let lo = OptName::new("lo").unwrap();
    round_trip_privileged(on, &s, opts::BindToDevice, lo, lo);
}

// ------------------------------------------------------------ get-only

#[tokio::test]
async fn get_only_options_describe_the_socket() {
    for v6 in families() {
        let f = fam(v6);
        let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        let l = listener(v6).await;
        let client = within(2, TcpStream::connect(l.local_addr().unwrap()))
            .await
            .unwrap();
        let (server, _) = within(2, l.accept()).await.unwrap();
        let u = udp(v6).await;
        let s = tcp_socket(v6);

        assert!(l.get(opts::AcceptConn).unwrap(), "listener {f}");
        assert!(!client.get(opts::AcceptConn).unwrap());
        assert!(!server.get(opts::AcceptConn).unwrap());
        assert!(!s.get(opts::AcceptConn).unwrap());
        assert!(!u.get(opts::AcceptConn).unwrap());

        for (what, err) in [
            ("listener", l.get(opts::SoError)),
            ("client", client.get(opts::SoError)),
            ("server", server.get(opts::SoError)),
            ("socket", s.get(opts::SoError)),
            ("udp", u.get(opts::SoError)),
        ] {
            assert_eq!(err.unwrap(), 0, "{what} {f}");
        }

        let check_kind =
            |what: &str, fd: SockRef<'_>, ty: i32, proto: i32, got: (i32, i32, i32)| {
                assert_eq!(
                    got,
                    (ty, domain, proto),
                    "{what} {f}: (type, domain, protocol)"
                );
                assert_eq!(
                    i32::from(fd.r#type().unwrap()),
                    ty,
                    "{what} {f}: kernel type"
                );
                assert_eq!(
                    i32::from(fd.domain().unwrap()),
                    domain,
                    "{what} {f}: kernel domain"
                );
                assert_eq!(
                    fd.protocol().unwrap().map(i32::from),
                    Some(proto),
                    "{what} {f}: kernel protocol"
                );
            };
        check_kind(
            "listener",
            SockRef::from(&l),
            libc::SOCK_STREAM,
            libc::IPPROTO_TCP,
            (
                l.get(opts::SoType).unwrap(),
                l.get(opts::Domain).unwrap(),
                l.get(opts::Protocol).unwrap(),
            ),
        );
        check_kind(
            "server",
            SockRef::from(&server),
            libc::SOCK_STREAM,
            libc::IPPROTO_TCP,
            (
                server.get(opts::SoType).unwrap(),
                server.get(opts::Domain).unwrap(),
                server.get(opts::Protocol).unwrap(),
            ),
        );
        check_kind(
            "socket",
            SockRef::from(&s),
            libc::SOCK_STREAM,
            libc::IPPROTO_TCP,
            (
                s.get(opts::SoType).unwrap(),
                s.get(opts::Domain).unwrap(),
                s.get(opts::Protocol).unwrap(),
            ),
        );
        check_kind(
            "udp",
            SockRef::from(&u),
            libc::SOCK_DGRAM,
            libc::IPPROTO_UDP,
            (
                u.get(opts::SoType).unwrap(),
                u.get(opts::Domain).unwrap(),
                u.get(opts::Protocol).unwrap(),
            ),
        );
        // The policy knows SO_TYPE is get-only: the raw layer refuses a set.
        let raw = RawSocket::from(u);
        assert_eq!(
            raw.setsockopt(libc::SOL_SOCKET, libc::SO_TYPE, &1i32.to_ne_bytes()),
            Err(Errno::ENOPROTOOPT)
        );
        drop(client);
    }
}

#[tokio::test]
async fn so_error_reports_and_clears_a_pending_error() {
    // A connected UDP socket whose datagram draws an ICMP port unreachable.
    let gone = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let u = udp(false).await;
    within(2, u.connect(gone)).await.unwrap();
    within(2, u.send(b"anyone?")).await.unwrap();
    let started = std::time::Instant::now();
    let err = loop {
        let e = u.get(opts::SoError).unwrap();
        if e != 0 || started.elapsed() > Duration::from_secs(2) {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(err, libc::ECONNREFUSED);
    assert_eq!(
        u.get(opts::SoError).unwrap(),
        0,
        "reading SO_ERROR clears it"
    );
}

#[tokio::test]
async fn ip_mtu_needs_a_connected_socket() {
    let a = udp(false).await;
    let b = udp(false).await;
    let err = a.get(opts::Mtu).unwrap_err();
    assert!(!err.is_denied());
    assert_eq!(
        err.errno(),
        libc::ENOTCONN,
        "the kernel's answer when unconnected"
    );
    within(2, a.connect(b.local_addr().unwrap())).await.unwrap();
    let mtu = a.get(opts::Mtu).unwrap();
    assert!(mtu > 0, "IP_MTU {mtu}");
    let (c, _s) = pair(false).await;
    assert!(c.get(opts::Mtu).unwrap() > 0);
}

#[tokio::test]
async fn tcp_info_follows_the_connection() {
    for v6 in families() {
        let f = fam(v6);
        let l = listener(v6).await;
        assert_eq!(
            l.get(opts::TcpInfoOpt).unwrap().state(),
            TcpState::Listen,
            "listener {f}"
        );
        let mut client = within(2, TcpStream::connect(l.local_addr().unwrap()))
            .await
            .unwrap();
        let (mut server, _) = within(2, l.accept()).await.unwrap();
        assert_eq!(client.tcp_info().unwrap().state(), TcpState::Established);
        assert_eq!(
            client.get(opts::TcpInfoOpt).unwrap().state(),
            TcpState::Established
        );
        assert_eq!(server.state().unwrap(), TcpState::Established);
        let info = server.tcp_info().unwrap();
        assert!(info.snd_mss > 0 && info.rcv_mss > 0, "{info:?}");

        let before = server.tcp_info().unwrap().bytes_received;
        let data = [0x5au8; 1000];
        within(2, client.write_all(&data)).await.unwrap();
        let mut got = [0u8; 1000];
        within(2, server.read_exact(&mut got)).await.unwrap();
        assert_eq!(got, data);
        let after = server.tcp_info().unwrap().bytes_received;
        assert_eq!(
            after,
            before + 1000,
            "{f}: bytes_received {before} -> {after} after 1000 bytes"
        );
        let sent = client.tcp_info().unwrap();
        assert!(
            sent.bytes_sent >= 1000 || sent.bytes_acked >= 1000,
            "{sent:?}"
        );

        // The peer closes: the server side is in CLOSE_WAIT.
        drop(client);
        let mut buf = [0u8; 8];
        let n = within(2, server.read_deadline(&mut buf, timeout_at()))
            .await
            .unwrap();
        assert_eq!(n, 0, "end of stream");
        assert_eq!(server.state().unwrap(), TcpState::CloseWait, "{f}");
    }
}

/// The typed `TcpInfo` decodes the kernel's `struct tcp_info` at the
/// offsets of `<linux/tcp.h>`: compared field by field with the raw bytes
/// the raw layer returns for the same (idle) connection.
#[tokio::test]
async fn tcp_info_fields_match_the_raw_bytes() {
    let (mut client, server) = pair(false).await;
    within(2, client.write_all(&[7u8; 300])).await.unwrap();
    let mut got = [0u8; 300];
    let mut server = server;
    within(2, server.read_exact(&mut got)).await.unwrap();
    // Let the ACKs settle so the idle connection's counters hold still.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let typed = server.tcp_info().unwrap();
    let raw = RawSocket::from(server);
    let mut b = [0u8; 512];
    let n = raw
        .getsockopt(libc::IPPROTO_TCP, libc::TCP_INFO, &mut b)
        .unwrap();
    assert!(n >= 240, "struct tcp_info of {n} bytes");
    let u32_at = |at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_ne_bytes(b[at..at + 8].try_into().unwrap());
    assert_eq!(typed.state_raw, b[0]);
    assert_eq!(typed.options, b[5]);
    assert_eq!(typed.snd_mss, u32_at(16));
    assert_eq!(typed.rcv_mss, u32_at(20));
    assert_eq!(typed.pmtu, u32_at(60));
    assert_eq!(typed.advmss, u32_at(84));
    assert_eq!(typed.total_retrans, u32_at(100));
    assert_eq!(typed.bytes_received, u64_at(128));
    assert_eq!(typed.bytes_received, 300);
    assert_eq!(typed.segs_in, u32_at(140));
    assert_eq!(typed.bytes_sent, u64_at(200));
    assert_eq!(typed.snd_wnd, u32_at(228));
    // A short buffer truncates as Linux does.
    let mut short = [0u8; 8];
    assert_eq!(
        raw.getsockopt(libc::IPPROTO_TCP, libc::TCP_INFO, &mut short),
        Ok(8)
    );
    assert_eq!(short[0], b[0]);
    drop(client);
}

/// A positive timeout, however short, is a bounded wait: it never turns
/// into "wait forever" (`None`, `{0, 0}`) on the way through the option or
/// back (std rounds such a timeout up to 1 µs for the same reason).
#[tokio::test]
async fn sub_microsecond_timeouts_never_become_forever() {
    let tiny = Some(Duration::from_nanos(500));
    let mut problems = Vec::new();

    // Through the method, read back through the option.
    let u = udp(false).await;
    u.set_read_timeout(tiny).unwrap();
    let read_back = u.get(opts::RecvTimeout).unwrap();
    if read_back.is_none() {
        problems.push(format!(
            "set_read_timeout(500 ns) reads back through SO_RCVTIMEO as {read_back:?}"
        ));
    }

    // Through the option, seen through the method and in effect.
    let v = udp(false).await;
    v.set(opts::RecvTimeout, tiny).unwrap();
    let method_view = v.read_timeout();
    if method_view.is_none() {
        problems.push(format!(
            "set(opts::RecvTimeout, Some(500 ns)) reads back through read_timeout() as {method_view:?}"
        ));
    }
    let mut buf = [0u8; 4];
    let waited = tokio::time::timeout(Duration::from_secs(2), v.recv(&mut buf)).await;
    match waited {
        Ok(Err(e)) if e.is_timeout() => {}
        Ok(other) => problems.push(format!("a recv under it ended with {other:?}")),
        Err(_) => problems.push("a recv under it was still waiting after 2 s".to_owned()),
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

// --------------------------------------------------------- memberships

#[tokio::test]
async fn ipv4_membership_join_and_leave() {
    let u = within(2, UdpSocket::bind("0.0.0.0:0")).await.unwrap();
    let m = opts::MembershipV4 {
        group: Ipv4Addr::new(239, 255, 12, 34),
        interface: Ipv4Addr::LOCALHOST,
    };
    u.set(opts::AddMembershipV4, m).unwrap();
    let again = u.set(opts::AddMembershipV4, m).unwrap_err();
    assert!(!again.is_denied());
    assert_eq!(
        again.errno(),
        libc::EADDRINUSE,
        "the kernel's answer to a rejoin"
    );
    u.set(opts::DropMembershipV4, m).unwrap();
    let again = u.set(opts::DropMembershipV4, m).unwrap_err();
    assert!(!again.is_denied());
    assert_eq!(again.errno(), libc::EADDRNOTAVAIL);
    // The tokio-shaped helpers are the same options.
    u.join_multicast_v4(m.group, m.interface).unwrap();
    u.leave_multicast_v4(m.group, m.interface).unwrap();
    // Set-only: the raw layer refuses a get.
    let raw = RawSocket::from(u);
    let mut out = [0u8; 8];
    assert_eq!(
        raw.getsockopt(libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mut out),
        Err(Errno::ENOPROTOOPT)
    );
}

#[tokio::test]
async fn ipv6_membership_join_and_leave() {
    if !v6_available() {
        return;
    }
    let u = within(2, UdpSocket::bind("[::]:0")).await.unwrap();
    let m = opts::MembershipV6 {
        group: "ff15::1:1234".parse().unwrap(),
        interface: 0,
    };
    match u.set(opts::AddMembershipV6, m) {
        Ok(()) => {}
        Err(e) if e.errno() == libc::ENODEV => {
            println!("skipping IPV6_ADD_MEMBERSHIP: no multicast route for interface 0 ({e})");
            return;
        }
        Err(e) => panic!("IPV6_ADD_MEMBERSHIP: {e:?}"),
    }
    let again = u.set(opts::AddMembershipV6, m).unwrap_err();
    assert!(!again.is_denied());
    assert_eq!(again.errno(), libc::EADDRINUSE);
    u.set(opts::DropMembershipV6, m).unwrap();
    let again = u.set(opts::DropMembershipV6, m).unwrap_err();
    assert!(!again.is_denied());
    assert_eq!(again.errno(), libc::EADDRNOTAVAIL);
    u.join_multicast_v6(&m.group, 0).unwrap();
    u.leave_multicast_v6(&m.group, 0).unwrap();
}

// ------------------------------------------------------------ timeouts

#[tokio::test]
async fn facade_timeouts_are_the_same_through_options_and_methods() {
    // Multiples of 20 ms: whole jiffies for HZ = 100, 250, 300 and 1000
    // (Linux keeps these timeouts in jiffies).
    let a = Some(Duration::from_millis(240));
    let b = Some(Duration::from_millis(1_200));
    let (c, _s) = pair(false).await;
    let u = udp(false).await;
    let l = listener(false).await;

    macro_rules! both_ways {
        ($sock:expr) => {{
            let s = &$sock;
            assert_eq!(s.get(opts::RecvTimeout).unwrap(), None);
            assert_eq!(s.get(opts::SendTimeout).unwrap(), None);
            s.set(opts::RecvTimeout, a).unwrap();
            assert_eq!(s.read_timeout(), a);
            s.set(opts::SendTimeout, b).unwrap();
            assert_eq!(s.write_timeout(), b);
            s.set_read_timeout(b).unwrap();
            assert_eq!(s.get(opts::RecvTimeout).unwrap(), b);
            s.set_write_timeout(a).unwrap();
            assert_eq!(s.get(opts::SendTimeout).unwrap(), a);
            s.set(opts::RecvTimeout, None).unwrap();
            assert_eq!(s.read_timeout(), None);
            s.set_write_timeout(None).unwrap();
            assert_eq!(s.get(opts::SendTimeout).unwrap(), None);
        }};
    }
    both_ways!(c);
    both_ways!(u);
    both_ways!(l);

    // A value that is not a whole number of jiffies: what reads back may be
    // rounded up (Linux keeps timeouts in jiffies), never down, and by less
    // than 10 ms (HZ >= 100).
    let odd = Duration::from_micros(1_500_250);
    for (what, got) in [
        ("set(RecvTimeout) then get", {
            u.set(opts::RecvTimeout, Some(odd)).unwrap();
            u.get(opts::RecvTimeout).unwrap()
        }),
        ("set(RecvTimeout) then read_timeout()", u.read_timeout()),
        ("set_write_timeout() then get(SendTimeout)", {
            u.set_write_timeout(Some(odd)).unwrap();
            u.get(opts::SendTimeout).unwrap()
        }),
        (
            "set_write_timeout() then write_timeout()",
            u.write_timeout(),
        ),
    ] {
        let got = got.unwrap_or_else(|| panic!("{what}: a 1.50025 s timeout reads as None"));
        assert!(
            got >= odd && got < odd + Duration::from_millis(10),
            "{what}: 1.50025 s reads back as {got:?}"
        );
    }
    u.set(opts::RecvTimeout, None).unwrap();
    u.set_write_timeout(None).unwrap();

    // A timeout set as an option bounds the operations.
    u.set(opts::RecvTimeout, Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 8];
    let err = within(2, u.recv(&mut buf)).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.errno(), libc::EAGAIN);
    l.set(opts::RecvTimeout, Some(Duration::from_millis(50)))
        .unwrap();
    let err = within(2, l.accept()).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    // TcpSocket: set as an option before connect, seen on the stream.
    let s = tcp_socket(false);
    s.set_read_timeout(a).unwrap();
    assert_eq!(s.get(opts::RecvTimeout).unwrap(), a);
    s.set(opts::SendTimeout, b).unwrap();
    let stream = within(2, s.connect(l.local_addr().unwrap())).await.unwrap();
    assert_eq!(stream.read_timeout(), a);
    assert_eq!(stream.write_timeout(), b);
    // The listener's timeouts carry over to accepted streams, and what the
    // accepted stream reports through the option is what it does. (The
    // connection above was made while the listener's receive timeout was
    // 50 ms; it is 240 ms when the stream is accepted.)
    l.set(opts::SendTimeout, b).unwrap();
    l.set(opts::RecvTimeout, a).unwrap();
    let (accepted, _) = within(2, l.accept()).await.unwrap();
    let reported = (
        accepted.get(opts::RecvTimeout).unwrap(),
        accepted.get(opts::SendTimeout).unwrap(),
    );
    let in_effect = (accepted.read_timeout(), accepted.write_timeout());
    assert_eq!(
        reported, in_effect,
        "accepted stream: SO_RCVTIMEO/SO_SNDTIMEO read back {reported:?}, \
         read_timeout()/write_timeout() say {in_effect:?}"
    );
    assert_eq!(in_effect, (a, b), "the listener's timeouts at accept");
}

// ---------------------------------------------------------------- table

#[derive(Debug)]
struct Entry {
    level: i32,
    name: i32,
    cname: &'static str,
    get: bool,
    set: bool,
}

/// An entry for a typed option whose directions the trait bounds prove
/// (`gs`: Get + Set; `g`: Get; `s`: Set), after checking its constants
/// against libc's.
#[track_caller]
fn entry<O: SockOpt>(level: i32, name: i32, cname: &'static str, get: bool, set: bool) -> Entry {
    assert_eq!(
        (O::LEVEL, O::NAME, O::CNAME),
        (level, name, cname),
        "{cname}: LEVEL/NAME/CNAME"
    );
    Entry {
        level,
        name,
        cname,
        get,
        set,
    }
}
fn gs<O: Get + Set>(_: O, level: i32, name: i32, cname: &'static str) -> Entry {
    entry::<O>(level, name, cname, true, true)
}
fn g<O: Get>(_: O, level: i32, name: i32, cname: &'static str) -> Entry {
    entry::<O>(level, name, cname, true, false)
}
fn s<O: Set>(_: O, level: i32, name: i32, cname: &'static str) -> Entry {
    entry::<O>(level, name, cname, false, true)
}

macro_rules! entries {
    ($($dir:ident $ty:ident = $level:ident $name:ident;)*) => {
        vec![$($dir(opts::$ty, libc::$level, libc::$name, stringify!($name)),)*]
    };
}

#[test]
fn every_typed_option_matches_its_table_row() {
    let all = entries! {
        g AcceptConn = SOL_SOCKET SO_ACCEPTCONN;
        gs BindToDevice = SOL_SOCKET SO_BINDTODEVICE;
        gs Broadcast = SOL_SOCKET SO_BROADCAST;
        g Domain = SOL_SOCKET SO_DOMAIN;
        g SoError = SOL_SOCKET SO_ERROR;
        gs KeepAlive = SOL_SOCKET SO_KEEPALIVE;
        gs Linger = SOL_SOCKET SO_LINGER;
        gs Mark = SOL_SOCKET SO_MARK;
        gs OobInline = SOL_SOCKET SO_OOBINLINE;
        gs Priority = SOL_SOCKET SO_PRIORITY;
        g Protocol = SOL_SOCKET SO_PROTOCOL;
        gs RecvBuffer = SOL_SOCKET SO_RCVBUF;
        gs RecvLowat = SOL_SOCKET SO_RCVLOWAT;
        gs RecvTimeout = SOL_SOCKET SO_RCVTIMEO;
        gs ReuseAddr = SOL_SOCKET SO_REUSEADDR;
        gs ReusePort = SOL_SOCKET SO_REUSEPORT;
        gs SendBuffer = SOL_SOCKET SO_SNDBUF;
        gs SendTimeout = SOL_SOCKET SO_SNDTIMEO;
        gs Timestamp = SOL_SOCKET SO_TIMESTAMP;
        gs TimestampNs = SOL_SOCKET SO_TIMESTAMPNS;
        g SoType = SOL_SOCKET SO_TYPE;
        s AddMembershipV4 = IPPROTO_IP IP_ADD_MEMBERSHIP;
        s DropMembershipV4 = IPPROTO_IP IP_DROP_MEMBERSHIP;
        gs FreeBind = IPPROTO_IP IP_FREEBIND;
        g Mtu = IPPROTO_IP IP_MTU;
        gs MtuDiscover = IPPROTO_IP IP_MTU_DISCOVER;
        gs MulticastIfV4 = IPPROTO_IP IP_MULTICAST_IF;
        gs MulticastLoopV4 = IPPROTO_IP IP_MULTICAST_LOOP;
        gs MulticastTtlV4 = IPPROTO_IP IP_MULTICAST_TTL;
        gs PktInfoV4 = IPPROTO_IP IP_PKTINFO;
        gs RecvErrV4 = IPPROTO_IP IP_RECVERR;
        gs RecvOrigDstAddrV4 = IPPROTO_IP IP_RECVORIGDSTADDR;
        gs RecvTos = IPPROTO_IP IP_RECVTOS;
        gs RecvTtl = IPPROTO_IP IP_RECVTTL;
        gs IpTos = IPPROTO_IP IP_TOS;
        gs Transparent = IPPROTO_IP IP_TRANSPARENT;
        gs IpTtl = IPPROTO_IP IP_TTL;
        s AddMembershipV6 = IPPROTO_IPV6 IPV6_ADD_MEMBERSHIP;
        s DropMembershipV6 = IPPROTO_IPV6 IPV6_DROP_MEMBERSHIP;
        gs MulticastHopsV6 = IPPROTO_IPV6 IPV6_MULTICAST_HOPS;
        gs MulticastLoopV6 = IPPROTO_IPV6 IPV6_MULTICAST_LOOP;
        gs RecvErrV6 = IPPROTO_IPV6 IPV6_RECVERR;
        gs RecvHopLimitV6 = IPPROTO_IPV6 IPV6_RECVHOPLIMIT;
        gs RecvOrigDstAddrV6 = IPPROTO_IPV6 IPV6_RECVORIGDSTADDR;
        gs RecvPktInfoV6 = IPPROTO_IPV6 IPV6_RECVPKTINFO;
        gs RecvTClassV6 = IPPROTO_IPV6 IPV6_RECVTCLASS;
        gs TClassV6 = IPPROTO_IPV6 IPV6_TCLASS;
        gs UnicastHopsV6 = IPPROTO_IPV6 IPV6_UNICAST_HOPS;
        gs V6Only = IPPROTO_IPV6 IPV6_V6ONLY;
        gs TcpCongestion = IPPROTO_TCP TCP_CONGESTION;
        gs TcpCork = IPPROTO_TCP TCP_CORK;
        gs TcpDeferAccept = IPPROTO_TCP TCP_DEFER_ACCEPT;
        g TcpInfoOpt = IPPROTO_TCP TCP_INFO;
        gs TcpInq = IPPROTO_TCP TCP_INQ;
        gs TcpKeepCnt = IPPROTO_TCP TCP_KEEPCNT;
        gs TcpKeepIdle = IPPROTO_TCP TCP_KEEPIDLE;
        gs TcpKeepIntvl = IPPROTO_TCP TCP_KEEPINTVL;
        gs TcpLinger2 = IPPROTO_TCP TCP_LINGER2;
        gs TcpMaxSeg = IPPROTO_TCP TCP_MAXSEG;
        gs TcpNoDelay = IPPROTO_TCP TCP_NODELAY;
        gs TcpQuickAck = IPPROTO_TCP TCP_QUICKACK;
        gs TcpSynCnt = IPPROTO_TCP TCP_SYNCNT;
        gs TcpUserTimeout = IPPROTO_TCP TCP_USER_TIMEOUT;
        gs TcpWindowClamp = IPPROTO_TCP TCP_WINDOW_CLAMP;
        gs UdpGro = IPPROTO_UDP UDP_GRO;
        gs UdpSegment = IPPROTO_UDP UDP_SEGMENT;
    };

    // One typed option per row, with the row's name and directions.
    assert_eq!(all.len(), OPTIONS.len(), "typed options vs table rows");
    for e in &all {
        let rows: Vec<_> = OPTIONS
            .iter()
            .filter(|r| r.level == e.level && r.name == e.name)
            .collect();
        assert_eq!(rows.len(), 1, "{}: rows {rows:?}", e.cname);
        let row = rows[0];
        assert_eq!(row.cname, e.cname, "{}", e.cname);
        assert_eq!(
            (row.get, row.set),
            (e.get, e.set),
            "{}: directions",
            e.cname
        );
    }

    // The opt-in rows are the only ones off by default, and the policy
    // agrees with the table.
    let opt_in = [
        "SO_BINDTODEVICE",
        "SO_MARK",
        "SO_PRIORITY",
        "IP_TRANSPARENT",
        "IP_FREEBIND",
    ];
    let default = Policy::default();
    for row in OPTIONS {
        let expect_on = !opt_in.contains(&row.cname);
        assert_eq!(row.default_on, expect_on, "{}", row.cname);
        assert_eq!(
            default.option_allowed(row.level, row.name),
            expect_on,
            "{}",
            row.cname
        );
        assert!(row.min_len <= row.max_len, "{}", row.cname);
    }
    // Never-allowed options are not in the table.
    for (level, name) in [
        (libc::SOL_SOCKET, libc::SO_RCVBUFFORCE),
        (libc::SOL_SOCKET, libc::SO_SNDBUFFORCE),
        (libc::SOL_SOCKET, libc::SO_ATTACH_FILTER),
        (libc::SOL_SOCKET, libc::SO_ATTACH_BPF),
    ] {
        assert!(
            !OPTIONS.iter().any(|r| r.level == level && r.name == name),
            "({level}, {name}) is in the table"
        );
    }
}
