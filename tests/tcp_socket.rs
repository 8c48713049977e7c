//! `TcpSocket`: creation flags, options before connect/listen, bind,
//! listen, connect (and its write timeout), and what carries over to the
//! stream or listener (policy, timeouts).
#![cfg(target_os = "linux")]

mod util;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hostsock::{Policy, TcpListener, TcpSocket, TcpStream};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use util::within;

fn v4_any_port() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

/// Is `::1` usable here? Prints why not, so a skipped test says so.
fn v6_loopback_available() -> bool {
    match std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)) {
        Ok(_) => true,
        Err(e) => {
            println!("skipping the IPv6 part: cannot bind [::1]:0 ({e})");
            false
        }
    }
}

#[tokio::test]
async fn new_v4_and_new_v6_are_nonblocking_cloexec() -> hostsock::Result<()> {
    let s4 = TcpSocket::new_v4()?;
    util::assert_nonblocking_cloexec(&s4);
    let s6 = TcpSocket::new_v6()?;
    util::assert_nonblocking_cloexec(&s6);
    // What they become keeps the flags.
    s4.bind(v4_any_port())?;
    let listener = s4.listen(16)?;
    util::assert_nonblocking_cloexec(&listener);
    Ok(())
}

#[tokio::test]
async fn bool_options_round_trip() -> hostsock::Result<()> {
    let s = TcpSocket::new_v4()?;

    assert!(!s.reuseaddr()?);
    s.set_reuseaddr(true)?;
    assert!(s.reuseaddr()?);
    s.set_reuseaddr(false)?;
    assert!(!s.reuseaddr()?);

    assert!(!s.reuseport()?);
    s.set_reuseport(true)?;
    assert!(s.reuseport()?);

    assert!(!s.keepalive()?);
    s.set_keepalive(true)?;
    assert!(s.keepalive()?);

    assert!(!s.nodelay()?);
    s.set_nodelay(true)?;
    assert!(s.nodelay()?);
    Ok(())
}

#[tokio::test]
async fn linger_round_trip() -> hostsock::Result<()> {
    let s = TcpSocket::new_v4()?;
    assert_eq!(s.linger()?, None);
    s.set_linger(Some(Duration::from_secs(9)))?;
    assert_eq!(s.linger()?, Some(Duration::from_secs(9)));
    s.set_linger(Some(Duration::ZERO))?;
    assert_eq!(s.linger()?, Some(Duration::ZERO));
    s.set_linger(None)?;
    assert_eq!(s.linger()?, None);
    Ok(())
}

#[tokio::test]
async fn options_set_before_connect_carry_over() -> hostsock::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let s = TcpSocket::new_v4()?;
    s.set_nodelay(true)?;
    s.set_keepalive(true)?;
    s.set_linger(Some(Duration::from_secs(3)))?;
    let stream = within(5, s.connect(listener.local_addr()?)).await?;
    assert!(stream.nodelay()?);
    assert_eq!(stream.linger()?, Some(Duration::from_secs(3)));
    Ok(())
}

#[tokio::test]
async fn reuseport_lets_two_sockets_bind_one_port() -> hostsock::Result<()> {
    let a = TcpSocket::new_v4()?;
    a.set_reuseport(true)?;
    a.bind(v4_any_port())?;
    let addr = a.local_addr()?;
    let _la = a.listen(16)?;

    let b = TcpSocket::new_v4()?;
    b.set_reuseport(true)?;
    b.bind(addr)?;
    assert_eq!(b.local_addr()?, addr);

    let c = TcpSocket::new_v4()?;
    let err = c.bind(addr).unwrap_err();
    assert_eq!(err.errno(), libc::EADDRINUSE, "{err:?}");
    Ok(())
}

#[tokio::test]
async fn buffer_sizes_are_at_least_what_was_set() -> hostsock::Result<()> {
    let s = TcpSocket::new_v4()?;
    let initial_snd = s.send_buffer_size()?;
    let initial_rcv = s.recv_buffer_size()?;
    assert!(initial_snd > 0 && initial_rcv > 0);

    // Linux doubles what it is given (socket(7)): the value read back is at
    // least the value set.
    let big = 256 * 1024;
    assert!(initial_snd < big && initial_rcv < big);
    s.set_send_buffer_size(big)?;
    assert!(s.send_buffer_size()? >= big, "{}", s.send_buffer_size()?);
    s.set_recv_buffer_size(big)?;
    assert!(s.recv_buffer_size()? >= big, "{}", s.recv_buffer_size()?);

    let small = 8 * 1024;
    s.set_send_buffer_size(small)?;
    let snd = s.send_buffer_size()?;
    assert!(snd >= small && snd < big, "{snd}");
    s.set_recv_buffer_size(small)?;
    let rcv = s.recv_buffer_size()?;
    assert!(rcv >= small && rcv < big, "{rcv}");
    Ok(())
}

#[tokio::test]
async fn bind_then_local_addr() -> hostsock::Result<()> {
    let s = TcpSocket::new_v4()?;
    s.bind(v4_any_port())?;
    let addr = s.local_addr()?;
    assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST);
    assert_ne!(addr.port(), 0);

    if v6_loopback_available() {
        let s6 = TcpSocket::new_v6()?;
        s6.bind((Ipv6Addr::LOCALHOST, 0).into())?;
        let addr6 = s6.local_addr()?;
        assert_eq!(addr6.ip(), Ipv6Addr::LOCALHOST);
        assert_ne!(addr6.port(), 0);
    }
    Ok(())
}

#[tokio::test]
async fn listen_then_accept() -> hostsock::Result<()> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(v4_any_port())?;
    let bound = s.local_addr()?;
    let listener = s.listen(32)?;
    assert_eq!(listener.local_addr()?, bound);

    let client = within(5, TcpStream::connect(bound)).await?;
    let (server, peer) = within(5, listener.accept()).await?;
    assert_eq!(peer, client.local_addr()?);
    assert_eq!(server.local_addr()?, bound);
    util::assert_nonblocking_cloexec(&server);
    Ok(())
}

#[tokio::test]
async fn listen_then_accept_v6() -> hostsock::Result<()> {
    if !v6_loopback_available() {
        return Ok(());
    }
    let s = TcpSocket::new_v6()?;
    s.bind((Ipv6Addr::LOCALHOST, 0).into())?;
    let listener = s.listen(32)?;
    let addr = listener.local_addr()?;
    let client = within(5, TcpSocket::new_v6()?.connect(addr)).await?;
    let (_server, peer) = within(5, listener.accept()).await?;
    assert_eq!(peer, client.local_addr()?);
    assert_eq!(client.peer_addr()?, addr);
    Ok(())
}

#[tokio::test]
async fn connect_from_a_bound_socket() -> hostsock::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;

    let s = TcpSocket::new_v4()?;
    s.bind(v4_any_port())?;
    let bound = s.local_addr()?;
    let mut stream = within(5, s.connect(addr)).await?;
    assert_eq!(stream.local_addr()?, bound);
    assert_eq!(stream.peer_addr()?, addr);
    util::assert_nonblocking_cloexec(&stream);

    let (server, peer) = within(5, listener.accept()).await?;
    assert_eq!(peer, bound);
    server.writable().await?;
    assert_eq!(server.try_write(b"hi")?, 2);
    let mut buf = [0u8; 2];
    within(5, stream.read_exact(&mut buf)).await?;
    assert_eq!(&buf, b"hi");
    Ok(())
}

#[tokio::test]
async fn connect_refused_gives_econnrefused() -> hostsock::Result<()> {
    let s = TcpSocket::new_v4()?;
    let err = within(5, s.connect(util::refused_addr()))
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::ECONNREFUSED, "{err:?}");
    assert!(!err.is_timeout());
    Ok(())
}

#[tokio::test]
async fn write_timeout_bounds_connect_to_a_full_backlog() -> hostsock::Result<()> {
    let (_listener, addr, _fill) = util::full_backlog_listener();
    let t = Duration::from_millis(200);
    let s = TcpSocket::new_v4()?;
    s.set_write_timeout(Some(t))?;
    let start = Instant::now();
    let err = within(5, s.connect(addr)).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.errno(), libc::EINPROGRESS);
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(elapsed >= t, "timed out early: {elapsed:?}");
    assert!(elapsed < t + Duration::from_secs(1), "late: {elapsed:?}");

    // connect_deadline: the earlier of deadline and write timeout wins.
    let s = TcpSocket::new_v4()?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let start = Instant::now();
    let err = within(5, s.connect_deadline(addr, start + t))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.errno(), libc::EINPROGRESS);
    assert!(start.elapsed() < Duration::from_secs(2));
    Ok(())
}

#[tokio::test]
async fn timeouts_set_on_the_socket_carry_over() -> hostsock::Result<()> {
    let rt = Duration::from_millis(120);
    let wt = Duration::from_millis(900);

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let s = TcpSocket::new_v4()?;
    s.set_read_timeout(Some(rt))?;
    s.set_write_timeout(Some(wt))?;
    assert_eq!(
        s.set_read_timeout(Some(Duration::ZERO))
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
    let mut stream = within(5, s.connect(listener.local_addr()?)).await?;
    assert_eq!(stream.read_timeout(), Some(rt));
    assert_eq!(stream.write_timeout(), Some(wt));
    let _server = within(5, listener.accept()).await?;
    let err = within(5, stream.read(&mut [0u8; 4])).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(hostsock::Error::from(err).errno(), libc::EAGAIN);

    let s = TcpSocket::new_v4()?;
    s.set_read_timeout(Some(rt))?;
    s.bind(v4_any_port())?;
    let l = s.listen(8)?;
    assert_eq!(l.read_timeout(), Some(rt));
    let err = within(5, l.accept()).await.unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(err.errno(), libc::EAGAIN);
    Ok(())
}

#[tokio::test]
async fn with_policy_carries_the_arc() -> hostsock::Result<()> {
    let default = TcpSocket::new_v4()?;
    assert!(Arc::ptr_eq(default.policy(), &Policy::shared_default()));

    let policy = Arc::new(Policy::allow_all());
    let listener_sock = TcpSocket::new_v4()?.with_policy(policy.clone())?;
    assert!(Arc::ptr_eq(listener_sock.policy(), &policy));
    listener_sock.bind(v4_any_port())?;
    let listener = listener_sock.listen(8)?;
    assert!(Arc::ptr_eq(listener.policy(), &policy));

    let other = Arc::new(Policy::allow_all());
    let s = TcpSocket::new_v4()?.with_policy(other.clone())?;
    let stream = within(5, s.connect(listener.local_addr()?)).await?;
    assert!(Arc::ptr_eq(stream.policy(), &other));
    assert!(!Arc::ptr_eq(stream.policy(), &policy));

    let (accepted, _) = within(5, listener.accept()).await?;
    assert!(Arc::ptr_eq(accepted.policy(), &policy));
    Ok(())
}
