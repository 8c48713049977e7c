//! The policy's address rules (per use: bind, connect, sendto, accept peer),
//! first-match order, the default verdict, IPv4-mapped IPv6 addresses, port
//! ranges, the presets (`sandbox`, `gvisor_compat`, `default`), socket kinds,
//! option rows turned off or opted into, buffer clamps, and the audit hook
//! that sees every denial. Loopback only; every wait is bounded.
#![cfg(target_os = "linux")]

mod util;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::future::poll_fn;
use hostsock::policy::{AddrRule, AddrUse, Cidr, PolicyBuilder, SocketKind, UnknownOpt, Verdict};
use hostsock::raw::{Errno, RawSocket, encode_sockaddr};
use hostsock::{
    Asked, Denial, Error, Op, Policy, Rule, TcpListener, TcpSocket, TcpStream, UdpSocket, opts,
};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use util::within;

/// What the audit hook saw: the fd and the denial, in order.
type Log = Arc<Mutex<Vec<(RawFd, Denial)>>>;

/// Builds `builder` with an audit hook that records every denial.
fn audited(builder: PolicyBuilder) -> (Arc<Policy>, Log) {
    let log: Log = Arc::default();
    let sink = log.clone();
    let policy = builder
        .audit(move |event| sink.lock().unwrap().push((event.fd, *event.denial)))
        .build();
    (Arc::new(policy), log)
}

fn events(log: &Log) -> Vec<(RawFd, Denial)> {
    log.lock().unwrap().clone()
}

/// A short deadline, for waits that must run out.
fn soon() -> Instant {
    Instant::now() + Duration::from_millis(250)
}

/// A bound for waits that must end.
fn bound() -> Instant {
    Instant::now() + Duration::from_secs(2)
}

/// The one-port rule `verdict addr for uses`.
fn port_rule(verdict: Verdict, addr: SocketAddr, uses: &[AddrUse]) -> AddrRule {
    AddrRule::new(verdict, addr.ip().into(), uses).ports(addr.port(), addr.port())
}

/// Asserts `err` is the policy's denial and returns it.
#[track_caller]
fn denial(err: &Error) -> Denial {
    assert!(err.is_denied(), "expected a policy denial, got {err:?}");
    *err.denial().expect("a denial")
}

/// Asserts `err` is an address denial of `usage` of `addr` by rule `index`.
#[track_caller]
fn assert_addr_denied(
    err: &Error,
    op: Op,
    usage: AddrUse,
    addr: SocketAddr,
    index: usize,
    rule: AddrRule,
) {
    let d = denial(err);
    assert_eq!(d.op, op, "{err}");
    assert_eq!(d.asked, Asked::Address { usage, addr }, "{err}");
    assert_eq!(d.rule, Rule::Address { index, rule }, "{err}");
    assert_eq!(d.errno, usage.denial_errno(), "{err}");
    assert_eq!(err.errno(), usage.denial_errno(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("address rule #{index}")) && msg.contains(&rule.to_string()),
        "the message does not name the rule: {msg}"
    );
    assert!(msg.contains(&addr.to_string()), "no address in: {msg}");
}

/// A loopback address with a port nothing is bound to right now (TCP).
fn free_tcp_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A loopback address with a port nothing is bound to right now (UDP).
fn free_udp_addr() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

/// Is IPv6 usable here? Prints why not, so a skipped part says so.
fn v6_available() -> bool {
    match std::net::UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)) {
        Ok(_) => true,
        Err(e) => {
            println!("skipping the IPv6 part: cannot bind [::1]:0 ({e})");
            false
        }
    }
}

fn mapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
        v6 => v6,
    }
}

/// Asserts the listener has no connection queued: `try_accept` gives
/// `EAGAIN` and a short `accept_deadline` runs out.
async fn assert_nothing_accepted(listener: &TcpListener) {
    tokio::time::sleep(Duration::from_millis(30)).await;
    match listener.try_accept() {
        Err(e) => assert_eq!(e.errno(), libc::EAGAIN, "try_accept: {e}"),
        Ok((_, peer)) => panic!("a connection from {peer} reached the listener"),
    }
    match within(2, listener.accept_deadline(soon())).await {
        Err(e) => assert!(e.is_timeout(), "accept_deadline: {e:?}"),
        Ok((_, peer)) => panic!("a connection from {peer} reached the listener"),
    }
}

// ---------------------------------------------------------------- Connect

#[tokio::test]
async fn connect_denied_never_reaches_the_listener_and_is_audited() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rule = port_rule(Verdict::Deny, addr, &[AddrUse::Connect]);
    let (policy, log) = audited(Policy::builder().addr_rule(rule));

    // Typed.
    let err = within(2, TcpStream::connect_with(addr, policy.clone(), None))
        .await
        .unwrap_err();
    assert_addr_denied(&err, Op::Connect, AddrUse::Connect, addr, 0, rule);
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    let typed_denial = denial(&err);
    let io_err: io::Error = err.into();
    assert_eq!(io_err.kind(), io::ErrorKind::ConnectionRefused);
    assert!(Error::from(io_err).is_denied());
    let seen = events(&log);
    assert_eq!(seen.len(), 1, "one denied call, one audit event: {seen:?}");
    assert!(seen[0].0 >= 0, "the typed socket existed: fd {}", seen[0].0);
    assert_eq!(seen[0].1, typed_denial);

    // Typed, through TcpSocket and a deadline.
    let sock = TcpSocket::new_v4()
        .unwrap()
        .with_policy(policy.clone())
        .unwrap();
    let sock_fd = sock.as_raw_fd();
    let err = within(2, sock.connect_deadline(addr, bound()))
        .await
        .unwrap_err();
    assert_addr_denied(&err, Op::Connect, AddrUse::Connect, addr, 0, rule);
    let seen = events(&log);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].0, sock_fd);

    // Raw, blocking and non-blocking: ECONNREFUSED, never EINPROGRESS.
    let raw = RawSocket::new(policy.clone(), libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    let bytes = encode_sockaddr(addr);
    assert_eq!(
        within(2, raw.connect(bytes.as_bytes(), false)).await,
        Err(Errno::ECONNREFUSED)
    );
    assert_eq!(
        within(2, raw.connect(bytes.as_bytes(), true)).await,
        Err(Errno::ECONNREFUSED)
    );
    assert_eq!(raw.getpeername().unwrap_err(), Errno::ENOTCONN);
    let seen = events(&log);
    assert_eq!(seen.len(), 4, "{seen:?}");
    for (fd, d) in &seen[2..] {
        assert_eq!(*fd, raw.host_fd());
        assert_eq!(d.op, Op::Connect);
        assert_eq!(
            d.asked,
            Asked::Address {
                usage: AddrUse::Connect,
                addr
            }
        );
        assert_eq!(d.rule, Rule::Address { index: 0, rule });
        assert_eq!(d.errno, libc::ECONNREFUSED);
    }

    // Nothing reached the listener.
    assert_nothing_accepted(&listener).await;

    // The same policy lets a connection to another port through, unaudited.
    let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_addr = other.local_addr().unwrap();
    let client = within(2, TcpStream::connect_with(other_addr, policy.clone(), None))
        .await
        .unwrap();
    let (_server, peer) = within(2, other.accept()).await.unwrap();
    assert_eq!(peer, client.local_addr().unwrap());
    assert_eq!(events(&log).len(), 4);
}

// ------------------------------------------------------------------- Bind

#[tokio::test]
async fn bind_denied_gives_eacces_and_leaves_the_port_free() {
    let tcp_addr = free_tcp_addr();
    let udp_addr = free_udp_addr();
    let tcp_rule = port_rule(Verdict::Deny, tcp_addr, &[AddrUse::Bind]);
    let udp_rule = port_rule(Verdict::Deny, udp_addr, &[AddrUse::Bind]);
    let (policy, log) = audited(Policy::builder().addr_rule(tcp_rule).addr_rule(udp_rule));

    // TcpListener.
    let err = within(2, TcpListener::bind_with_policy(tcp_addr, policy.clone()))
        .await
        .unwrap_err();
    assert_addr_denied(&err, Op::Bind, AddrUse::Bind, tcp_addr, 0, tcp_rule);
    assert_eq!(err.errno(), libc::EACCES);
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    drop(std::net::TcpListener::bind(tcp_addr).expect("the denied port is still free"));

    // TcpSocket.
    let sock = TcpSocket::new_v4()
        .unwrap()
        .with_policy(policy.clone())
        .unwrap();
    let err = sock.bind(tcp_addr).unwrap_err();
    assert_addr_denied(&err, Op::Bind, AddrUse::Bind, tcp_addr, 0, tcp_rule);
    assert_eq!(
        sock.local_addr().unwrap().port(),
        0,
        "the socket stayed unbound"
    );
    drop(std::net::TcpListener::bind(tcp_addr).expect("the denied port is still free"));
    // An address no rule matches binds.
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    assert_ne!(sock.local_addr().unwrap().port(), 0);

    // Raw.
    let raw = RawSocket::new(policy.clone(), libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    assert_eq!(
        raw.bind(encode_sockaddr(tcp_addr).as_bytes()),
        Err(Errno::EACCES)
    );
    let name = raw.getsockname().unwrap().to_socket_addr().unwrap();
    assert_eq!(name.port(), 0, "the raw socket stayed unbound: {name}");
    drop(std::net::TcpListener::bind(tcp_addr).expect("the denied port is still free"));

    // UdpSocket.
    let err = within(2, UdpSocket::bind_with_policy(udp_addr, policy.clone()))
        .await
        .unwrap_err();
    assert_addr_denied(&err, Op::Bind, AddrUse::Bind, udp_addr, 1, udp_rule);
    drop(std::net::UdpSocket::bind(udp_addr).expect("the denied port is still free"));

    let seen = events(&log);
    assert_eq!(seen.len(), 4, "four denied calls: {seen:?}");
    assert!(
        seen.iter()
            .all(|(_, d)| d.op == Op::Bind && d.errno == libc::EACCES)
    );
    assert_eq!(seen[1].0, sock.as_raw_fd());
    assert_eq!(seen[2].0, raw.host_fd());
    assert_eq!(
        seen[3].1.rule,
        Rule::Address {
            index: 1,
            rule: udp_rule
        }
    );
}

// ----------------------------------------------------------------- SendTo

#[tokio::test]
async fn send_to_denied_delivers_nothing_on_every_send_path() {
    let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rx_addr = rx.local_addr().unwrap();
    let ok_rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ok_addr = ok_rx.local_addr().unwrap();
    let rule = port_rule(Verdict::Deny, rx_addr, &[AddrUse::SendTo, AddrUse::Connect]);
    let (policy, log) = audited(Policy::builder().addr_rule(rule));
    let tx = UdpSocket::bind_with_policy("127.0.0.1:0", policy.clone())
        .await
        .unwrap();

    let err = within(2, tx.send_to(b"secret", rx_addr)).await.unwrap_err();
    assert_addr_denied(&err, Op::Send, AddrUse::SendTo, rx_addr, 0, rule);
    assert_eq!(err.errno(), libc::ECONNREFUSED);

    let err = within(2, tx.send_to_deadline(b"secret", rx_addr, bound()))
        .await
        .unwrap_err();
    assert_addr_denied(&err, Op::Send, AddrUse::SendTo, rx_addr, 0, rule);

    let err = tx.try_send_to(b"secret", rx_addr).unwrap_err();
    assert_addr_denied(&err, Op::Send, AddrUse::SendTo, rx_addr, 0, rule);

    let polled = within(
        2,
        poll_fn(|cx| match tx.poll_send_to(cx, b"secret", rx_addr) {
            Poll::Pending => Poll::Ready(None),
            Poll::Ready(r) => Poll::Ready(Some(r)),
        }),
    )
    .await
    .expect("a denial is ready at once");
    let io_err = polled.unwrap_err();
    assert_eq!(io_err.kind(), io::ErrorKind::ConnectionRefused);
    let err = Error::from(io_err);
    assert_addr_denied(&err, Op::Send, AddrUse::SendTo, rx_addr, 0, rule);

    // connect to the denied address is denied too (Connect use).
    let err = within(2, tx.connect(rx_addr)).await.unwrap_err();
    assert_addr_denied(&err, Op::Connect, AddrUse::Connect, rx_addr, 0, rule);
    assert_eq!(
        tx.peer_addr().unwrap_err().errno(),
        libc::ENOTCONN,
        "a denied connect left no association"
    );

    // Nothing arrived.
    let mut buf = [0u8; 64];
    let err = within(2, rx.recv_from_deadline(&mut buf, soon()))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "the receiver got something: {err:?}");

    let seen = events(&log);
    assert_eq!(seen.len(), 5, "five denied calls: {seen:?}");
    assert!(seen.iter().all(|(fd, _)| *fd == tx.as_raw_fd()));
    assert_eq!(
        seen.iter().filter(|(_, d)| d.op == Op::Send).count(),
        4,
        "{seen:?}"
    );

    // The same socket still sends to an address no rule denies.
    assert_eq!(within(2, tx.send_to(b"ok", ok_addr)).await.unwrap(), 2);
    let (n, from) = within(2, ok_rx.recv_from(&mut buf)).await.unwrap();
    assert_eq!((&buf[..n], from), (&b"ok"[..], tx.local_addr().unwrap()));
    within(2, tx.connect(ok_addr)).await.unwrap();
    assert_eq!(events(&log).len(), 5);
}

// ------------------------------------------------------------- AcceptPeer

/// What a client of a refused connection sees: no data, and the
/// connection closed (a reset, or end of stream and then an error).
async fn assert_reset(client: &mut TcpStream) {
    let mut buf = [0u8; 16];
    match within(2, client.read_deadline(&mut buf, bound())).await {
        Ok(0) => {
            // End of stream: the connection is gone, a write fails soon.
            let mut failed = false;
            for _ in 0..50 {
                match client.write_all(b"x").await {
                    Ok(()) => tokio::time::sleep(Duration::from_millis(10)).await,
                    Err(e) => {
                        let errno = Error::from(e).errno();
                        assert!(
                            errno == libc::EPIPE || errno == libc::ECONNRESET,
                            "errno {errno}"
                        );
                        failed = true;
                        break;
                    }
                }
            }
            assert!(failed, "writes to a refused connection kept succeeding");
        }
        Ok(n) => panic!("the refused client got {n} bytes"),
        Err(e) => {
            assert!(!e.is_timeout(), "the refused client was left hanging");
            assert_eq!(e.errno(), libc::ECONNRESET, "{e:?}");
        }
    }
}

#[tokio::test]
async fn refused_peer_is_reset_and_never_handed_out() {
    let refused_net: Cidr = "127.0.0.2/32".parse().unwrap();
    let rule = AddrRule::new(Verdict::Deny, refused_net, &[AddrUse::AcceptPeer]);
    let (policy, log) = audited(Policy::builder().addr_rule(rule));
    let listener = TcpListener::bind_with_policy("127.0.0.1:0", policy.clone())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();

    // A client from 127.0.0.2: the handshake completes in the kernel...
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut refused = within(2, sock.connect(addr)).await.unwrap();
    let refused_addr = refused.local_addr().unwrap();
    assert_eq!(refused_addr.ip(), Ipv4Addr::new(127, 0, 0, 2));
    // ...but accept never hands it out.
    match within(2, listener.accept_deadline(soon())).await {
        Err(e) => assert!(e.is_timeout(), "{e:?}"),
        Ok((_, peer)) => panic!("the refused peer {peer} was handed out"),
    }
    assert_eq!(listener.try_accept().unwrap_err().errno(), libc::EAGAIN);
    assert_reset(&mut refused).await;

    let seen = events(&log);
    assert_eq!(seen.len(), 1, "one refused peer: {seen:?}");
    assert_eq!(seen[0].0, listener.as_raw_fd());
    assert_eq!(seen[0].1.op, Op::Accept);
    assert_eq!(
        seen[0].1.asked,
        Asked::Address {
            usage: AddrUse::AcceptPeer,
            addr: refused_addr
        }
    );
    assert_eq!(seen[0].1.rule, Rule::Address { index: 0, rule });

    // A client from 127.0.0.1 is accepted, and inherits the policy.
    let mut good = within(2, TcpStream::connect(addr)).await.unwrap();
    let (server, peer) = within(2, listener.accept_deadline(bound())).await.unwrap();
    assert_eq!(peer, good.local_addr().unwrap());
    assert!(Arc::ptr_eq(server.policy(), &policy));
    good.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    let n = within(2, server.read_deadline(&mut buf, bound()))
        .await
        .unwrap();
    assert_eq!(&buf[..n], &b"hello"[..n]);
    assert_eq!(events(&log).len(), 1);
}

#[tokio::test]
async fn refused_peer_on_the_raw_layer_gives_eagain_not_a_socket() {
    let refused_net: Cidr = "127.0.0.2/32".parse().unwrap();
    let rule = AddrRule::new(Verdict::Deny, refused_net, &[AddrUse::AcceptPeer]);
    let (policy, log) = audited(Policy::builder().addr_rule(rule));
    let raw = RawSocket::new(policy, libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    raw.bind(encode_sockaddr("127.0.0.1:0".parse().unwrap()).as_bytes())
        .unwrap();
    raw.listen(16).unwrap();
    let addr = raw.getsockname().unwrap().to_socket_addr().unwrap();

    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut refused = within(2, sock.connect(addr)).await.unwrap();
    // Wait until the connection is queued, then accept without blocking.
    let ready = within(2, raw.wait(libc::POLLIN, Some(bound())))
        .await
        .unwrap();
    assert_ne!(ready & libc::POLLIN, 0);
    assert_eq!(
        within(2, raw.accept(true)).await.map(|_| ()).err(),
        Some(Errno::EAGAIN)
    );
    // A blocking accept bounded by SO_RCVTIMEO also gives EAGAIN.
    let mut tv = [0u8; 16];
    tv[8..].copy_from_slice(&200_000i64.to_ne_bytes());
    raw.setsockopt(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
        .unwrap();
    assert_eq!(
        within(2, raw.accept(false)).await.map(|_| ()).err(),
        Some(Errno::EAGAIN)
    );
    assert_reset(&mut refused).await;
    let seen = events(&log);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, raw.host_fd());
}

// ------------------------------------------------- order, default, mapped

#[tokio::test]
async fn first_matching_rule_wins() {
    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a1 = l1.local_addr().unwrap();
    let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a2 = l2.local_addr().unwrap();
    let allow = port_rule(Verdict::Allow, a1, &[AddrUse::Connect]);
    let deny_all = AddrRule::new(Verdict::Deny, Cidr::ANY_V4, &[AddrUse::Connect]);

    let (policy, log) = audited(Policy::builder().addr_rule(allow).addr_rule(deny_all));
    assert_eq!(
        policy.addr_verdict(AddrUse::Connect, a1),
        (Verdict::Allow, Some(0))
    );
    assert_eq!(
        policy.addr_verdict(AddrUse::Connect, a2),
        (Verdict::Deny, Some(1))
    );
    assert_eq!(
        policy.addr_verdict(AddrUse::Bind, a2),
        (Verdict::Allow, None),
        "rules only apply to their uses"
    );
    let _c1 = within(2, TcpStream::connect_with(a1, policy.clone(), None))
        .await
        .unwrap();
    within(2, l1.accept()).await.unwrap();
    let err = within(2, TcpStream::connect_with(a2, policy.clone(), None))
        .await
        .unwrap_err();
    assert_addr_denied(&err, Op::Connect, AddrUse::Connect, a2, 1, deny_all);
    assert_eq!(events(&log).len(), 1);

    // The other order: the deny-all rule comes first and wins.
    let (reversed, _) = audited(Policy::builder().addr_rule(deny_all).addr_rule(allow));
    let err = within(2, TcpStream::connect_with(a1, reversed, None))
        .await
        .unwrap_err();
    assert_addr_denied(&err, Op::Connect, AddrUse::Connect, a1, 0, deny_all);
    assert_nothing_accepted(&l1).await;
    assert_nothing_accepted(&l2).await;
}

#[tokio::test]
async fn default_verdict_deny_refuses_what_no_rule_allows() {
    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a1 = l1.local_addr().unwrap();
    let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a2 = l2.local_addr().unwrap();
    let allow = port_rule(Verdict::Allow, a1, &[AddrUse::Connect]);
    let (policy, log) = audited(
        Policy::builder()
            .default_verdict(Verdict::Deny)
            .addr_rule(allow),
    );
    let _c1 = within(2, TcpStream::connect_with(a1, policy.clone(), None))
        .await
        .unwrap();
    within(2, l1.accept()).await.unwrap();

    let err = within(2, TcpStream::connect_with(a2, policy.clone(), None))
        .await
        .unwrap_err();
    let d = denial(&err);
    assert_eq!(d.rule, Rule::DefaultVerdict);
    assert_eq!(
        d.asked,
        Asked::Address {
            usage: AddrUse::Connect,
            addr: a2
        }
    );
    assert_eq!(err.errno(), libc::ECONNREFUSED);
    assert!(err.to_string().contains("default address verdict"), "{err}");
    assert_nothing_accepted(&l2).await;

    // The default verdict covers every use: binding is refused too.
    let err = within(
        2,
        UdpSocket::bind_with_policy("127.0.0.1:0", policy.clone()),
    )
    .await
    .unwrap_err();
    assert_eq!(denial(&err).rule, Rule::DefaultVerdict);
    assert_eq!(err.errno(), libc::EACCES);
    let raw = RawSocket::new(policy.clone(), libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    assert_eq!(
        within(2, raw.connect(encode_sockaddr(a2).as_bytes(), false)).await,
        Err(Errno::ECONNREFUSED)
    );
    assert_eq!(events(&log).len(), 3);
}

#[tokio::test]
async fn ipv4_mapped_ipv6_addresses_match_ipv4_rules() {
    if !v6_available() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let target = mapped(addr);
    let rule = AddrRule::new(
        Verdict::Deny,
        "127.0.0.0/8".parse().unwrap(),
        &[AddrUse::Connect, AddrUse::SendTo, AddrUse::Bind],
    );
    let (policy, log) = audited(Policy::builder().addr_rule(rule));
    assert_eq!(
        policy.addr_verdict(AddrUse::Connect, target),
        (Verdict::Deny, Some(0))
    );

    // A v6 stream socket to ::ffff:127.0.0.1.
    let err = within(2, TcpStream::connect_with(target, policy.clone(), None))
        .await
        .unwrap_err();
    assert_addr_denied(&err, Op::Connect, AddrUse::Connect, target, 0, rule);
    let raw = RawSocket::new(policy.clone(), libc::AF_INET6, libc::SOCK_STREAM, 0).unwrap();
    assert_eq!(
        within(2, raw.connect(encode_sockaddr(target).as_bytes(), false)).await,
        Err(Errno::ECONNREFUSED)
    );
    assert_nothing_accepted(&listener).await;

    // Binding a v6 socket to ::ffff:127.0.0.1.
    let err = within(
        2,
        UdpSocket::bind_with_policy(mapped("127.0.0.1:0".parse().unwrap()), policy.clone()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.errno(), libc::EACCES);
    assert_eq!(denial(&err).rule, Rule::Address { index: 0, rule });

    // A datagram from a v6 socket to ::ffff:127.0.0.1.
    let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rx_target = mapped(rx.local_addr().unwrap());
    let tx = UdpSocket::bind_with_policy("[::]:0", policy.clone())
        .await
        .unwrap();
    let err = within(2, tx.send_to(b"x", rx_target)).await.unwrap_err();
    assert_addr_denied(&err, Op::Send, AddrUse::SendTo, rx_target, 0, rule);
    let mut buf = [0u8; 8];
    assert!(
        within(2, rx.recv_deadline(&mut buf, soon()))
            .await
            .unwrap_err()
            .is_timeout()
    );
    assert_eq!(events(&log).len(), 4);

    // Control: with a rule for another network, the mapped connect goes
    // through (on a dual-stack host).
    let v6only = std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").unwrap_or_default();
    if v6only.trim() == "0" {
        let other = AddrRule::new(Verdict::Deny, "10.0.0.0/8".parse().unwrap(), &AddrUse::ALL);
        let open = Arc::new(Policy::builder().addr_rule(other).build());
        let client = within(2, TcpStream::connect_with(target, open, None))
            .await
            .unwrap();
        let (_s, peer) = within(2, listener.accept()).await.unwrap();
        assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(client.peer_addr().unwrap(), target);
    } else {
        println!("skipping the dual-stack control: net.ipv6.bindv6only is {v6only:?}");
    }
}

#[tokio::test]
async fn port_ranges_are_inclusive_and_normalised() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let p = addr.port();
    assert!(p > 1 && p < u16::MAX - 1, "ephemeral port {p}");
    let net: Cidr = addr.ip().into();
    let at = |port: u16| SocketAddr::new(addr.ip(), port);

    let r = AddrRule::new(Verdict::Deny, net, &[AddrUse::Connect]).ports(1000, 2000);
    for (port, hit) in [
        (999, false),
        (1000, true),
        (1500, true),
        (2000, true),
        (2001, false),
    ] {
        assert_eq!(r.matches(AddrUse::Connect, at(port)), hit, "port {port}");
    }
    let swapped = AddrRule::new(Verdict::Deny, net, &[AddrUse::Connect]).ports(2000, 1000);
    assert_eq!(swapped, r, "a reversed range is the same range");
    let every = AddrRule::new(Verdict::Deny, net, &[AddrUse::Connect]);
    assert!(every.matches(AddrUse::Connect, at(0)));
    assert!(every.matches(AddrUse::Connect, at(u16::MAX)));

    // Real connects: a range just above the port lets it through, a range
    // around it (written either way round) refuses it.
    let above = AddrRule::new(Verdict::Deny, net, &[AddrUse::Connect]).ports(p + 1, p + 1);
    let below = AddrRule::new(Verdict::Deny, net, &[AddrUse::Connect]).ports(1, p - 1);
    let open = Arc::new(Policy::builder().addr_rule(above).addr_rule(below).build());
    let _c = within(2, TcpStream::connect_with(addr, open, None))
        .await
        .unwrap();
    within(2, listener.accept()).await.unwrap();

    for (lo, hi) in [(p - 1, p + 1), (p + 1, p - 1), (p, p)] {
        let rule = AddrRule::new(Verdict::Deny, net, &[AddrUse::Connect]).ports(lo, hi);
        let (policy, log) = audited(Policy::builder().addr_rule(rule));
        let err = within(2, TcpStream::connect_with(addr, policy, None))
            .await
            .unwrap_err();
        assert_addr_denied(&err, Op::Connect, AddrUse::Connect, addr, 0, rule);
        assert!(
            err.to_string()
                .contains(&format!("ports {}-{}", lo.min(hi), lo.max(hi))),
            "{err}"
        );
        assert_eq!(events(&log).len(), 1);
    }
    assert_nothing_accepted(&listener).await;
}

// ---------------------------------------------------------------- presets

#[tokio::test]
async fn sandbox_denies_privileged_binds_before_the_kernel() {
    let policy = Arc::new(Policy::sandbox());
    let err = within(
        2,
        TcpListener::bind_with_policy("127.0.0.1:80", policy.clone()),
    )
    .await
    .unwrap_err();
    let d = denial(&err);
    assert_eq!(err.errno(), libc::EACCES);
    assert_eq!(d.op, Op::Bind);
    assert!(matches!(d.rule, Rule::Address { .. }), "{err}");
    assert!(err.to_string().contains("1-1023"), "{err}");

    let err = within(
        2,
        UdpSocket::bind_with_policy("127.0.0.1:53", policy.clone()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.errno(), libc::EACCES);
    assert!(err.is_denied());

    let sock = TcpSocket::new_v4()
        .unwrap()
        .with_policy(policy.clone())
        .unwrap();
    let err = sock.bind("127.0.0.1:1023".parse().unwrap()).unwrap_err();
    assert_eq!(err.errno(), libc::EACCES);
    assert!(err.is_denied());
    // Port 0 (the kernel picks an ephemeral port) and 1024 are not privileged.
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let l = within(
        2,
        TcpListener::bind_with_policy("127.0.0.1:0", policy.clone()),
    )
    .await
    .unwrap();
    assert!(l.local_addr().unwrap().port() >= 1024);

    let raw = RawSocket::new(policy.clone(), libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
    assert_eq!(
        raw.bind(encode_sockaddr("127.0.0.1:1".parse().unwrap()).as_bytes()),
        Err(Errno::EACCES)
    );
    if v6_available() {
        let raw6 = RawSocket::new(policy.clone(), libc::AF_INET6, libc::SOCK_STREAM, 0).unwrap();
        assert_eq!(
            raw6.bind(encode_sockaddr("[::1]:443".parse().unwrap()).as_bytes()),
            Err(Errno::EACCES)
        );
    }
}

#[tokio::test]
async fn sandbox_denies_link_local_metadata_without_sending_a_packet() {
    let policy = Arc::new(Policy::sandbox());
    let metadata: SocketAddr = "169.254.169.254:80".parse().unwrap();

    let started = std::time::Instant::now();
    let err = within(2, TcpStream::connect_with(metadata, policy.clone(), None))
        .await
        .unwrap_err();
    let took = started.elapsed();
    let d = denial(&err);
    assert_eq!(err.errno(), libc::ECONNREFUSED);
    assert_eq!(
        d.asked,
        Asked::Address {
            usage: AddrUse::Connect,
            addr: metadata
        }
    );
    assert!(err.to_string().contains("169.254.0.0/16"), "{err}");
    assert!(took < Duration::from_millis(500), "took {took:?}");

    // Raw, non-blocking: had the call reached the kernel it would say
    // EINPROGRESS or ENETUNREACH; the socket stays closed (no SYN sent).
    let raw = RawSocket::new(policy.clone(), libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        within(2, raw.connect(encode_sockaddr(metadata).as_bytes(), true)).await,
        Err(Errno::ECONNREFUSED)
    );
    assert_eq!(
        within(2, raw.connect(encode_sockaddr(metadata).as_bytes(), false)).await,
        Err(Errno::ECONNREFUSED)
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(raw.getpeername().unwrap_err(), Errno::ENOTCONN);
    let mut info = [0u8; 256];
    let n = raw
        .getsockopt(libc::IPPROTO_TCP, libc::TCP_INFO, &mut info)
        .unwrap();
    assert!(n > 0);
    assert_eq!(
        i32::from(info[0]),
        7, /* TCP_CLOSE */
        "the socket left CLOSE: a SYN was sent"
    );

    // UDP and IPv6 link-local too.
    let udp = UdpSocket::bind_with_policy("0.0.0.0:0", policy.clone())
        .await
        .unwrap();
    let err = within(2, udp.send_to(b"x", "169.254.169.254:53"))
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::ECONNREFUSED);
    assert!(err.is_denied());
    if v6_available() {
        let ll: SocketAddr = "[fe80::1]:80".parse().unwrap();
        let err = within(2, TcpStream::connect_with(ll, policy.clone(), None))
            .await
            .unwrap_err();
        assert!(err.is_denied());
        assert_eq!(err.errno(), libc::ECONNREFUSED);
        assert!(err.to_string().contains("fe80::/10"), "{err}");
    }
}

#[tokio::test]
async fn sandbox_denies_multicast_joins() {
    let policy = Arc::new(Policy::sandbox());
    let sock = UdpSocket::bind_with_policy("0.0.0.0:0", policy.clone())
        .await
        .unwrap();
    let group = Ipv4Addr::new(239, 1, 2, 3);
    let err = sock
        .join_multicast_v4(group, Ipv4Addr::LOCALHOST)
        .unwrap_err();
    let d = denial(&err);
    assert_eq!(err.errno(), libc::ENOPROTOOPT);
    assert_eq!(d.op, Op::SetOpt);
    assert_eq!(
        d.asked,
        Asked::Option {
            level: libc::IPPROTO_IP,
            name: libc::IP_ADD_MEMBERSHIP
        }
    );
    assert_eq!(d.rule, Rule::OptionOff);
    assert!(err.to_string().contains("IP_ADD_MEMBERSHIP"), "{err}");
    let err = sock
        .set(
            opts::AddMembershipV4,
            opts::MembershipV4 {
                group,
                interface: Ipv4Addr::LOCALHOST,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("IP_ADD_MEMBERSHIP"), "{err}");
    let raw = RawSocket::new(policy.clone(), libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
    let mut mreq = [0u8; 8];
    mreq[..4].copy_from_slice(&group.octets());
    mreq[4..].copy_from_slice(&Ipv4Addr::LOCALHOST.octets());
    assert_eq!(
        raw.setsockopt(libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq),
        Err(Errno::ENOPROTOOPT)
    );

    if v6_available() {
        let sock6 = UdpSocket::bind_with_policy("[::]:0", policy.clone())
            .await
            .unwrap();
        let err = sock6
            .join_multicast_v6(&"ff15::1234".parse().unwrap(), 0)
            .unwrap_err();
        assert!(err.is_denied());
        assert_eq!(err.errno(), libc::ENOPROTOOPT);
        assert!(err.to_string().contains("IPV6_ADD_MEMBERSHIP"), "{err}");
    }

    // The default policy lets the same join through to the kernel.
    let open = UdpSocket::bind("0.0.0.0:0").await.unwrap();
    open.join_multicast_v4(group, Ipv4Addr::LOCALHOST).unwrap();
    open.leave_multicast_v4(group, Ipv4Addr::LOCALHOST).unwrap();
}

#[tokio::test]
async fn unknown_setsockopt_follows_the_policy_mode() {
    use socket2::SockRef;
    let value = 12345u32.to_ne_bytes();
    let opt = (libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT);
    assert!(!Policy::default().option_allowed(opt.0, opt.1));

    // gvisor_compat: pretends, the kernel never sees it; get still refuses.
    let compat = RawSocket::new(
        Arc::new(Policy::gvisor_compat()),
        libc::AF_INET,
        libc::SOCK_STREAM,
        0,
    )
    .unwrap();
    assert_eq!(compat.policy().unknown_options(), UnknownOpt::PretendOk);
    assert_eq!(compat.setsockopt(opt.0, opt.1, &value), Ok(()));
    assert_ne!(
        SockRef::from(&compat).tcp_notsent_lowat().unwrap(),
        12345,
        "PretendOk passed the option to the kernel"
    );
    let mut out = [0u8; 4];
    assert_eq!(
        compat.getsockopt(opt.0, opt.1, &mut out),
        Err(Errno::ENOPROTOOPT)
    );
    // The never list holds whatever the mode.
    assert_eq!(
        compat.setsockopt(libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &[0u8; 16]),
        Err(Errno::ENOPROTOOPT)
    );
    assert_eq!(
        compat.setsockopt(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &1i32.to_ne_bytes()),
        Err(Errno::ENOPROTOOPT)
    );

    // default: refused, and audited as not listed.
    let (policy, log) = audited(Policy::builder());
    let strict = RawSocket::new(policy, libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    assert_eq!(strict.policy().unknown_options(), UnknownOpt::Reject);
    assert_eq!(
        strict.setsockopt(opt.0, opt.1, &value),
        Err(Errno::ENOPROTOOPT)
    );
    let seen = events(&log);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, strict.host_fd());
    assert_eq!(seen[0].1.rule, Rule::OptionNotListed);
    assert_eq!(seen[0].1.op, Op::SetOpt);
    let plain = RawSocket::new(
        Arc::new(Policy::default()),
        libc::AF_INET,
        libc::SOCK_STREAM,
        0,
    )
    .unwrap();
    assert_eq!(
        plain.setsockopt(opt.0, opt.1, &value),
        Err(Errno::ENOPROTOOPT)
    );

    // PassThrough: the kernel gets it.
    let pass = RawSocket::new(
        Arc::new(
            Policy::builder()
                .unknown_options(UnknownOpt::PassThrough)
                .build(),
        ),
        libc::AF_INET,
        libc::SOCK_STREAM,
        0,
    )
    .unwrap();
    assert_eq!(pass.setsockopt(opt.0, opt.1, &value), Ok(()));
    assert_eq!(SockRef::from(&pass).tcp_notsent_lowat().unwrap(), 12345);
}

#[tokio::test]
async fn socket_kinds_restrict_the_typed_constructors() {
    let (tcp_only, log) =
        audited(Policy::builder().socket_kinds(&[SocketKind::TcpV4, SocketKind::TcpV6]));
    assert!(!tcp_only.kind_allowed(SocketKind::UdpV4));
    let err = within(
        2,
        UdpSocket::bind_with_policy("127.0.0.1:0", tcp_only.clone()),
    )
    .await
    .unwrap_err();
    let d = denial(&err);
    assert_eq!(d.op, Op::Socket);
    assert_eq!(d.rule, Rule::KindNotAllowed);
    assert_eq!(
        d.asked,
        Asked::SocketKind {
            domain: libc::AF_INET,
            ty: libc::SOCK_DGRAM,
            protocol: libc::IPPROTO_UDP
        }
    );
    assert_eq!(err.errno(), libc::ESOCKTNOSUPPORT);
    let seen = events(&log);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, -1, "no socket exists for a refused kind");
    assert_eq!(
        RawSocket::new(tcp_only.clone(), libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap_err(),
        Errno::ESOCKTNOSUPPORT
    );
    // TCP is fine under the same policy.
    let l = within(
        2,
        TcpListener::bind_with_policy("127.0.0.1:0", tcp_only.clone()),
    )
    .await
    .unwrap();
    let _c = within(
        2,
        TcpStream::connect_with(l.local_addr().unwrap(), tcp_only.clone(), None),
    )
    .await
    .unwrap();

    let udp_only = Arc::new(Policy::builder().socket_kinds(&[SocketKind::UdpV4]).build());
    let err = within(
        2,
        TcpStream::connect_with(l.local_addr().unwrap(), udp_only.clone(), None),
    )
    .await
    .unwrap_err();
    assert_eq!(denial(&err).rule, Rule::KindNotAllowed);
    let err = TcpSocket::new_v4()
        .unwrap()
        .with_policy(udp_only.clone())
        .unwrap_err();
    assert_eq!(denial(&err).rule, Rule::KindNotAllowed);
    let err = within(
        2,
        TcpListener::bind_with_policy("127.0.0.1:0", udp_only.clone()),
    )
    .await
    .unwrap_err();
    assert_eq!(denial(&err).rule, Rule::KindNotAllowed);
    UdpSocket::bind_with_policy("127.0.0.1:0", udp_only.clone())
        .await
        .unwrap();
    if v6_available() {
        let err = within(2, UdpSocket::bind_with_policy("[::1]:0", udp_only.clone()))
            .await
            .unwrap_err();
        assert_eq!(denial(&err).rule, Rule::KindNotAllowed);
    }
}

// ------------------------------------------------------------ option rows

#[tokio::test]
async fn an_option_row_turned_off_is_denied_everywhere() {
    use socket2::SockRef;
    let (policy, log) =
        audited(Policy::builder().deny_option(libc::IPPROTO_TCP, libc::TCP_NODELAY));
    assert!(!policy.option_allowed(libc::IPPROTO_TCP, libc::TCP_NODELAY));
    let listener = TcpListener::bind_with_policy("127.0.0.1:0", policy.clone())
        .await
        .unwrap();
    let stream = within(
        2,
        TcpStream::connect_with(listener.local_addr().unwrap(), policy.clone(), None),
    )
    .await
    .unwrap();
    let (accepted, _) = within(2, listener.accept()).await.unwrap();

    let check = |err: Error, op: Op| {
        let d = denial(&err);
        assert_eq!(d.op, op);
        assert_eq!(d.rule, Rule::OptionOff);
        assert_eq!(
            d.asked,
            Asked::Option {
                level: libc::IPPROTO_TCP,
                name: libc::TCP_NODELAY
            }
        );
        assert_eq!(err.errno(), libc::ENOPROTOOPT);
        assert!(err.to_string().contains("TCP_NODELAY"), "{err}");
    };
    check(stream.set_nodelay(true).unwrap_err(), Op::SetOpt);
    check(stream.set(opts::TcpNoDelay, true).unwrap_err(), Op::SetOpt);
    check(stream.nodelay().unwrap_err(), Op::GetOpt);
    check(stream.get(opts::TcpNoDelay).unwrap_err(), Op::GetOpt);
    // The accepted stream inherits the listener's policy.
    check(accepted.set_nodelay(true).unwrap_err(), Op::SetOpt);
    let sock = TcpSocket::new_v4()
        .unwrap()
        .with_policy(policy.clone())
        .unwrap();
    check(sock.set_nodelay(true).unwrap_err(), Op::SetOpt);
    let raw = RawSocket::new(policy.clone(), libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    assert_eq!(
        raw.setsockopt(libc::IPPROTO_TCP, libc::TCP_NODELAY, &1i32.to_ne_bytes()),
        Err(Errno::ENOPROTOOPT)
    );
    assert_eq!(events(&log).len(), 7);
    // The kernel never saw it.
    assert!(!SockRef::from(&stream).tcp_nodelay().unwrap());
    // Other rows still pass.
    stream.set(opts::TcpCork, true).unwrap();
    assert!(stream.get(opts::TcpCork).unwrap());
    assert_eq!(events(&log).len(), 7);
}

/// One table drives everything: with `SO_RCVTIMEO` turned off, the typed
/// timeout methods are refused like the option itself.
#[tokio::test]
async fn a_timeout_row_turned_off_covers_the_timeout_methods() {
    let (policy, log) = audited(Policy::builder().deny_option(libc::SOL_SOCKET, libc::SO_RCVTIMEO));
    let sock = UdpSocket::bind_with_policy("127.0.0.1:0", policy.clone())
        .await
        .unwrap();
    let t = Some(Duration::from_millis(200));
    for err in [
        sock.set(opts::RecvTimeout, t).unwrap_err(),
        sock.set_read_timeout(t).unwrap_err(),
    ] {
        let d = denial(&err);
        assert_eq!(d.rule, Rule::OptionOff);
        assert!(err.to_string().contains("SO_RCVTIMEO"), "{err}");
    }
    assert_eq!(sock.read_timeout(), None, "a refused timeout is not kept");
    // The send side is still allowed.
    sock.set_write_timeout(t).unwrap();
    assert_eq!(sock.write_timeout(), t);
    assert_eq!(events(&log).len(), 2);
}

#[tokio::test]
async fn so_mark_is_opt_in() {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let err = sock.set(opts::Mark, 7).unwrap_err();
    let d = denial(&err);
    assert_eq!(d.rule, Rule::OptionOff);
    assert_eq!(err.errno(), libc::ENOPROTOOPT);
    assert!(err.to_string().contains("SO_MARK"), "{err}");
    assert_eq!(denial(&sock.get(opts::Mark).unwrap_err()).op, Op::GetOpt);

    let policy = Arc::new(
        Policy::builder()
            .allow_option(libc::SOL_SOCKET, libc::SO_MARK)
            .build(),
    );
    assert!(policy.option_allowed(libc::SOL_SOCKET, libc::SO_MARK));
    let sock = UdpSocket::bind_with_policy("127.0.0.1:0", policy)
        .await
        .unwrap();
    match sock.set(opts::Mark, 7) {
        Ok(()) => assert_eq!(sock.get(opts::Mark).unwrap(), 7),
        Err(e) => {
            assert!(!e.is_denied(), "allowed, yet denied: {e}");
            assert_eq!(e.errno(), libc::EPERM, "only the kernel may refuse: {e:?}");
            println!("SO_MARK reached the kernel, which said EPERM (not privileged)");
        }
    }
}

#[tokio::test]
async fn buffer_clamps_apply_before_the_kernel() {
    let wmem_max: i64 = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let rmem_max: i64 = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let four_mib = 4 << 20;
    let clamp = 65536;
    let policy = Arc::new(
        Policy::builder()
            .clamp_send_buffer(clamp)
            .clamp_recv_buffer(clamp)
            .build(),
    );
    assert_eq!(policy.buffer_max(true), Some(clamp));
    assert_eq!(policy.buffer_max(false), Some(clamp));
    let sock = UdpSocket::bind_with_policy("127.0.0.1:0", policy.clone())
        .await
        .unwrap();
    sock.set(opts::SendBuffer, four_mib).unwrap();
    let got = sock.get(opts::SendBuffer).unwrap();
    assert!(got <= 2 * clamp as i32, "SO_SNDBUF {got} past the clamp");
    if wmem_max >= i64::from(clamp) {
        assert_eq!(got, 2 * clamp as i32, "Linux doubles the clamped value");
    }
    sock.set(opts::RecvBuffer, four_mib).unwrap();
    let got = sock.get(opts::RecvBuffer).unwrap();
    assert!(got <= 2 * clamp as i32, "SO_RCVBUF {got} past the clamp");
    if rmem_max >= i64::from(clamp) {
        assert_eq!(got, 2 * clamp as i32);
    }
    // Values under the clamp pass unchanged (and are doubled).
    sock.set(opts::SendBuffer, 20000).unwrap();
    assert_eq!(sock.get(opts::SendBuffer).unwrap(), 40000);

    // TcpSocket and the raw layer go through the same clamp.
    let tcp = TcpSocket::new_v4()
        .unwrap()
        .with_policy(policy.clone())
        .unwrap();
    tcp.set_send_buffer_size(four_mib as u32).unwrap();
    assert!(tcp.send_buffer_size().unwrap() <= 2 * clamp);
    let raw = RawSocket::new(policy.clone(), libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
    raw.setsockopt(libc::SOL_SOCKET, libc::SO_SNDBUF, &four_mib.to_ne_bytes())
        .unwrap();
    let mut out = [0u8; 4];
    assert_eq!(
        raw.getsockopt(libc::SOL_SOCKET, libc::SO_SNDBUF, &mut out),
        Ok(4)
    );
    assert!(i32::from_ne_bytes(out) <= 2 * clamp as i32);

    // Without a clamp, the kernel's own limit is what holds.
    let open = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    open.set(opts::SendBuffer, four_mib).unwrap();
    if wmem_max > i64::from(clamp) {
        assert!(open.get(opts::SendBuffer).unwrap() > 2 * clamp as i32);
    }
}

/// Linux reads `SO_SNDBUF`/`SO_RCVBUF` as `min_t(u32, val, wmem_max)`: a
/// negative value is a huge unsigned one and gives the largest buffer the
/// host allows. The clamp must hold for it too.
#[tokio::test]
async fn negative_buffer_sizes_do_not_escape_the_clamp() {
    let clamp = 65536u32;
    let policy = Arc::new(
        Policy::builder()
            .clamp_send_buffer(clamp)
            .clamp_recv_buffer(clamp)
            .build(),
    );
    let limit = 2 * clamp as i32;
    let sock = UdpSocket::bind_with_policy("127.0.0.1:0", policy.clone())
        .await
        .unwrap();
    let mut seen = Vec::new();
    for v in [-1, i32::MIN] {
        if sock.set(opts::SendBuffer, v).is_ok() {
            seen.push(("SO_SNDBUF", v, sock.get(opts::SendBuffer).unwrap()));
        }
        if sock.set(opts::RecvBuffer, v).is_ok() {
            seen.push(("SO_RCVBUF", v, sock.get(opts::RecvBuffer).unwrap()));
        }
    }
    let raw = RawSocket::new(policy, libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    if raw
        .setsockopt(libc::SOL_SOCKET, libc::SO_SNDBUF, &(-1i32).to_ne_bytes())
        .is_ok()
    {
        let mut out = [0u8; 4];
        raw.getsockopt(libc::SOL_SOCKET, libc::SO_SNDBUF, &mut out)
            .unwrap();
        seen.push(("raw SO_SNDBUF", -1, i32::from_ne_bytes(out)));
    }
    let escaped: Vec<_> = seen.iter().filter(|(_, _, got)| *got > limit).collect();
    assert!(
        escaped.is_empty(),
        "buffer sizes past the {clamp}-byte clamp (limit {limit} after doubling): {escaped:?}"
    );
}

/// A rule whose network is written as IPv4-mapped IPv6 (`::ffff:a.b.c.d`)
/// holds that very address, however the address is written.
#[tokio::test]
async fn a_rule_written_as_ipv4_mapped_matches() {
    let net: Cidr = "::ffff:127.0.0.1/128".parse().unwrap();
    let mapped_ip: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
    let plain_ip: IpAddr = "127.0.0.1".parse().unwrap();
    assert!(
        net.contains(mapped_ip),
        "{net} does not contain {mapped_ip}"
    );
    assert!(net.contains(plain_ip), "{net} does not contain {plain_ip}");

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let policy = Arc::new(
        Policy::builder()
            .addr_rule(AddrRule::new(Verdict::Deny, net, &[AddrUse::Connect]))
            .build(),
    );
    let result = within(2, TcpStream::connect_with(addr, policy, None)).await;
    assert!(
        matches!(&result, Err(e) if e.is_denied()),
        "connect to {addr} under a deny rule for {net}: {result:?}"
    );
}

#[tokio::test]
async fn shared_and_preset_policies_say_what_they_allow() {
    let d = Policy::default();
    assert_eq!(d.unknown_options(), UnknownOpt::Reject);
    for kind in SocketKind::ALL {
        assert!(d.kind_allowed(kind));
    }
    let any: SocketAddr = "203.0.113.9:80".parse().unwrap();
    for usage in AddrUse::ALL {
        assert_eq!(d.addr_verdict(usage, any), (Verdict::Allow, None));
    }
    let s = Policy::sandbox();
    let md: SocketAddr = "169.254.169.254:80".parse().unwrap();
    for usage in AddrUse::ALL {
        assert_eq!(s.addr_verdict(usage, md).0, Verdict::Deny, "{usage:?}");
    }
    let fe80: SocketAddr = "[fe80::abcd]:8080".parse().unwrap();
    assert_eq!(s.addr_verdict(AddrUse::SendTo, fe80).0, Verdict::Deny);
    assert_eq!(
        s.addr_verdict(AddrUse::Bind, "0.0.0.0:1023".parse().unwrap())
            .0,
        Verdict::Deny
    );
    assert_eq!(
        s.addr_verdict(AddrUse::Bind, "0.0.0.0:1024".parse().unwrap())
            .0,
        Verdict::Allow
    );
    assert_eq!(
        s.addr_verdict(AddrUse::Connect, "127.0.0.1:80".parse().unwrap())
            .0,
        Verdict::Allow,
        "privileged ports are refused for bind only"
    );
    assert!(!s.option_allowed(libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP));
    assert!(!s.option_allowed(libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP));
    assert!(s.option_allowed(libc::IPPROTO_TCP, libc::TCP_NODELAY));
    assert_eq!(
        Policy::gvisor_compat().unknown_options(),
        UnknownOpt::PretendOk
    );
    let shared = Policy::shared_default();
    assert!(Arc::ptr_eq(&shared, &Policy::shared_default()));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    assert!(Arc::ptr_eq(l.policy(), &shared));
}

/// Linux sends a connect or send to the unspecified address to loopback, so
/// a rule denying loopback must cover `0.0.0.0`, `::` and `::ffff:0.0.0.0`
/// too: none of them may reach the listener.
#[tokio::test]
async fn unspecified_destination_is_checked_as_loopback() {
    use hostsock::policy::{AddrRule, AddrUse, Cidr, Verdict};
    use hostsock::raw::{Errno, RawSocket, encode_sockaddr};

    let listener = hostsock::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let policy = std::sync::Arc::new(
        hostsock::Policy::builder()
            .addr_rule(AddrRule::new(
                Verdict::Deny,
                "127.0.0.0/8".parse::<Cidr>().unwrap(),
                &[AddrUse::Connect, AddrUse::SendTo],
            ))
            .addr_rule(AddrRule::new(
                Verdict::Deny,
                "::1".parse::<Cidr>().unwrap(),
                &[AddrUse::Connect, AddrUse::SendTo],
            ))
            .build(),
    );
    for target in [
        format!("0.0.0.0:{port}"),
        format!("[::ffff:0.0.0.0]:{port}"),
    ] {
        let addr: std::net::SocketAddr = target.parse().unwrap();
        let err = hostsock::TcpStream::connect_with(addr, policy.clone(), None)
            .await
            .expect_err(&target);
        assert!(err.is_denied(), "{target}: {err:?}");
        assert_eq!(err.errno(), libc::ECONNREFUSED, "{target}");
    }
    let raw = RawSocket::new(policy.clone(), libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    let any: std::net::SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
    assert_eq!(
        raw.connect(encode_sockaddr(any).as_bytes(), true).await,
        Err(Errno::ECONNREFUSED)
    );
    let v6any: std::net::SocketAddr = format!("[::]:{port}").parse().unwrap();
    if let Ok(raw6) = RawSocket::new(policy.clone(), libc::AF_INET6, libc::SOCK_DGRAM, 0) {
        assert_eq!(
            raw6.connect(encode_sockaddr(v6any).as_bytes(), true).await,
            Err(Errno::ECONNREFUSED)
        );
    }
    let udp = hostsock::UdpSocket::bind_with_policy("127.0.0.1:0", policy)
        .await
        .unwrap();
    let err = udp.send_to(b"x", any).await.unwrap_err();
    assert!(err.is_denied(), "{err:?}");
    // Nothing reached the listener.
    let none = listener
        .accept_deadline(tokio::time::Instant::now() + std::time::Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(none.is_timeout(), "{none:?}");
}

/// `Policy::allow_all()` is the most permissive policy: opt-in rows on,
/// unknown options passed to the kernel, only the never list refused.
#[tokio::test]
async fn allow_all_passes_everything_but_the_never_list() {
    use hostsock::raw::{Errno, RawSocket};
    let p = hostsock::Policy::allow_all();
    assert!(p.option_allowed(libc::SOL_SOCKET, libc::SO_MARK));
    assert!(p.option_allowed(libc::IPPROTO_IP, libc::IP_FREEBIND));
    let raw = RawSocket::new(std::sync::Arc::new(p), libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
    // Outside the table: reaches the kernel, which keeps the value.
    raw.setsockopt(libc::SOL_SOCKET, libc::SO_DONTROUTE, &1i32.to_ne_bytes())
        .unwrap();
    let mut out = [0u8; 4];
    assert_eq!(
        raw.getsockopt(libc::SOL_SOCKET, libc::SO_DONTROUTE, &mut out),
        Ok(4)
    );
    assert_eq!(i32::from_ne_bytes(out), 1);
    // An opt-in row: not refused by the policy (the kernel decides).
    let r = raw.setsockopt(libc::IPPROTO_IP, libc::IP_FREEBIND, &1i32.to_ne_bytes());
    assert_ne!(r, Err(Errno::ENOPROTOOPT));
    // The never list stays closed.
    assert_eq!(
        raw.setsockopt(libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &[0; 16]),
        Err(Errno::ENOPROTOOPT)
    );
}

#[tokio::test]
async fn the_implicit_bind_of_a_typed_connect_goes_through_the_bind_rules() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = listener.local_addr().unwrap();
    let (policy, log) = audited(Policy::builder().addr_rule(AddrRule::new(
        Verdict::Deny,
        std::net::IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED).into(),
        &[AddrUse::Bind],
    )));
    // An unbound socket: connect would bind it to 0.0.0.0, an ephemeral port.
    let err = hostsock::TcpSocket::new_v4()
        .unwrap()
        .with_policy(policy.clone())
        .unwrap()
        .connect(to)
        .await
        .unwrap_err();
    let d = denial(&err);
    assert_eq!(d.errno, libc::EACCES);
    assert!(
        matches!(
            d.asked,
            Asked::Address {
                usage: AddrUse::Bind,
                ..
            }
        ),
        "{d:?}"
    );
    assert_eq!(events(&log).len(), 1);
    assert_nothing_accepted(&listener).await;
    // Bound first to an address the rule does not cover: the connect goes.
    let sock = hostsock::TcpSocket::new_v4()
        .unwrap()
        .with_policy(policy)
        .unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let stream = within(2, sock.connect(to)).await.unwrap();
    assert_eq!(stream.peer_addr().unwrap(), to);
    assert_eq!(events(&log).len(), 1);
}
