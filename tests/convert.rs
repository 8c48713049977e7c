//! Conversions both ways with std::net, tokio::net, socket2 and owned fds:
//! the kind is checked against the policy, the fd ends non-blocking and
//! close-on-exec, host timeouts carry over, and data in flight survives.

mod util;

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hostsock::policy::SocketKind;
use hostsock::{Error, Policy, TcpListener, TcpSocket, TcpStream, UdpSocket};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use util::{assert_nonblocking_cloexec, fd_flags};

const LIMIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn stream_round_trips_through_std_tokio_socket2_and_fd_keep_data() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let fd = server.as_raw_fd();

    // hostsock -> tokio -> hostsock -> socket2 -> hostsock -> std -> hostsock -> OwnedFd -> hostsock
    client.write_all(b"one").await.unwrap();
    let tokio_stream: tokio::net::TcpStream = server.into_tokio().unwrap();
    assert_eq!(tokio_stream.as_raw_fd(), fd, "same fd, no dup");
    let server = TcpStream::try_from(tokio_stream).unwrap();
    let sock2: Socket = server.into();
    let server = TcpStream::try_from(sock2).unwrap();
    let std_stream: std::net::TcpStream = server.into();
    let server = TcpStream::try_from(std_stream).unwrap();
    let owned: OwnedFd = server.into();
    let mut server = TcpStream::try_from(owned).unwrap();
    assert_eq!(server.as_raw_fd(), fd);
    assert_nonblocking_cloexec(&server);

    let mut buf = [0u8; 3];
    tokio::time::timeout(LIMIT, server.read_exact(&mut buf))
        .await
        .expect("data written before the conversions arrives")
        .unwrap();
    assert_eq!(&buf, b"one");
    server.write_all(b"two").await.unwrap();
    tokio::time::timeout(LIMIT, client.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"two");
}

#[tokio::test]
async fn blocking_std_sockets_become_nonblocking_and_cloexec() {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        fd_flags(std_listener.as_raw_fd()) & libc::O_NONBLOCK as u32,
        0
    );
    let listener = TcpListener::try_from(std_listener).unwrap();
    assert_nonblocking_cloexec(&listener);

    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
    sock.set_cloexec(false).unwrap();
    sock.set_nonblocking(false).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    let udp = UdpSocket::try_from(sock).unwrap();
    assert_nonblocking_cloexec(&udp);
    // A receive on it waits (in the reactor) instead of blocking the thread.
    let r = tokio::time::timeout(Duration::from_millis(20), udp.recv(&mut [0u8; 8])).await;
    assert!(
        r.is_err(),
        "nothing was sent, so the receive must still wait"
    );
}

#[tokio::test]
async fn host_timeouts_carry_over_both_ways() {
    let std_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    std_udp
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    std_udp
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let udp = UdpSocket::try_from(std_udp).unwrap();
    assert_eq!(udp.read_timeout(), Some(Duration::from_secs(3)));
    assert_eq!(udp.write_timeout(), Some(Duration::from_secs(2)));

    // And the facade's timeout is on the host socket when it leaves.
    udp.set_read_timeout(Some(Duration::from_secs(7))).unwrap();
    let back: std::net::UdpSocket = udp.into();
    assert_eq!(back.read_timeout().unwrap(), Some(Duration::from_secs(7)));

    // A short timeout taken over from std fires through the facade.
    let std_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    std_udp
        .set_read_timeout(Some(Duration::from_millis(30)))
        .unwrap();
    let udp = UdpSocket::from_std(std_udp).unwrap();
    let err = tokio::time::timeout(LIMIT, udp.recv(&mut [0u8; 8]))
        .await
        .expect("the imported timeout fires")
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.errno(), libc::EAGAIN);
}

#[tokio::test]
async fn a_kind_the_policy_refuses_is_denied_and_the_fd_closed() {
    let seen = Arc::new(AtomicUsize::new(0));
    let hook = Arc::clone(&seen);
    let policy = Arc::new(
        Policy::builder()
            .socket_kinds(&[SocketKind::TcpV4, SocketKind::UdpV4])
            .audit(move |_| {
                hook.fetch_add(1, Ordering::SeqCst);
            })
            .build(),
    );
    let v6 = std::net::UdpSocket::bind("[::1]:0").unwrap();
    let err = UdpSocket::from_fd_with_policy(v6.into(), Arc::clone(&policy)).unwrap_err();
    assert!(matches!(err, Error::Denied(_)), "{err:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the audit hook saw it");

    let v4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let ok = UdpSocket::from_fd_with_policy(v4.into(), policy.clone()).unwrap();
    assert!(
        Arc::ptr_eq(ok.policy(), &policy),
        "the socket carries the policy given"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn wrong_type_or_protocol_is_invalid_input() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = TcpStream::try_from(OwnedFd::from(udp)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err:?}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = UdpSocket::try_from(OwnedFd::from(listener)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err:?}");

    // An ICMP "ping" socket is SOCK_DGRAM but not UDP.
    match Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4)) {
        Ok(ping) => {
            let err = UdpSocket::try_from(ping).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err:?}");
        }
        Err(e) => println!("skipping the ping-socket case: cannot make one here ({e})"),
    }
}

#[tokio::test]
async fn udp_through_tokio_and_back_keeps_queued_datagrams() {
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    b.send_to(b"queued", a.local_addr().unwrap()).await.unwrap();
    let tokio_a: tokio::net::UdpSocket = a.try_into().unwrap();
    let a = UdpSocket::from_tokio(tokio_a).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = tokio::time::timeout(LIMIT, a.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"queued");
    assert_eq!(from, b.local_addr().unwrap());
}

#[tokio::test]
async fn listener_through_tokio_keeps_its_backlog() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _c = std::net::TcpStream::connect(addr).unwrap();
    let tokio_listener = listener.into_tokio().unwrap();
    let listener = TcpListener::from_tokio(tokio_listener).unwrap();
    let (s, peer) = tokio::time::timeout(LIMIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.peer_addr().unwrap(), peer);
    assert_eq!(peer, _c.local_addr().unwrap());
}

#[tokio::test]
async fn tcp_socket_from_fd_and_std_stream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raw = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    raw.set_nonblocking(false).unwrap();
    let socket = TcpSocket::try_from(OwnedFd::from(raw)).unwrap();
    assert_nonblocking_cloexec(&socket);
    let stream = socket
        .connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (_peer, _) = listener.accept().await.unwrap();
    // into_raw_fd hands the fd over open (still non-blocking) and out of
    // the reactor; the test leaks it on purpose (closing needs unsafe).
    let fd = stream.into_raw_fd();
    assert_ne!(util::fd_flags(fd) & libc::O_NONBLOCK as u32, 0);

    let std_stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let local = std_stream.local_addr().unwrap();
    let socket = TcpSocket::from_std_stream(std_stream).unwrap();
    assert_eq!(socket.local_addr().unwrap(), local);
    assert_nonblocking_cloexec(&socket);
}
