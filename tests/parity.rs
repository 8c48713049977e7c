//! What the tokio-named extras do beyond compiling like tokio's (that part
//! is `--test drop_in`): error wake-ups, truncation into a `BufMut`, zero
//! linger resets, option round trips through the policy.

mod util;

use std::future::poll_fn;
use std::time::Duration;

use hostsock::{Policy, TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::io::AsyncReadExt;

const LIMIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn poll_recv_ready_and_recv_buf_wake_on_icmp_errors() {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(util::refused_addr()).await.unwrap();
    sock.send(b"nobody").await.unwrap();
    tokio::time::timeout(LIMIT, poll_fn(|cx| sock.poll_recv_ready(cx)))
        .await
        .expect("the pending error wakes the readiness poll")
        .unwrap();
    let mut buf = Vec::with_capacity(16);
    let err = tokio::time::timeout(LIMIT, sock.recv_buf(&mut buf))
        .await
        .expect("the pending error ends recv_buf")
        .unwrap_err();
    assert_eq!(err.errno(), libc::ECONNREFUSED, "{err:?}");
    assert!(buf.is_empty(), "nothing committed on error");
}

#[tokio::test]
async fn recv_buf_offers_only_the_spare_capacity_and_commits_what_arrived() {
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    a.send_to(&[7u8; 100], b.local_addr().unwrap())
        .await
        .unwrap();
    a.send_to(&[9u8; 10], b.local_addr().unwrap())
        .await
        .unwrap();
    // 4 bytes already in the buffer, room for 32 more: the 100-byte
    // datagram is cut to 32 (as recv cuts it), appended after the 4.
    let mut buf = bytes::BytesMut::with_capacity(36);
    buf.extend_from_slice(b"head");
    let (n, from) = b.recv_buf_from(&mut buf).await.unwrap();
    assert_eq!(from, a.local_addr().unwrap());
    assert_eq!(n, 32);
    assert_eq!(buf.len(), 36);
    assert_eq!(&buf[..4], b"head");
    assert!(buf[4..].iter().all(|&x| x == 7));
    // The next datagram is whole: the cut one was consumed, not kept.
    let mut v = Vec::with_capacity(64);
    assert_eq!(b.recv_buf(&mut v).await.unwrap(), 10);
    assert_eq!(v, [9u8; 10]);
}

#[tokio::test]
async fn connected_udp_peek_keeps_the_datagram() {
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    b.connect(a.local_addr().unwrap()).await.unwrap();
    a.send_to(b"stay", b.local_addr().unwrap()).await.unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(b.peek(&mut buf).await.unwrap(), 4);
    assert_eq!(b.try_peek(&mut buf).unwrap(), 4);
    assert_eq!(b.recv(&mut buf).await.unwrap(), 4);
    assert_eq!(&buf[..4], b"stay");
    let err = b.try_peek(&mut buf).unwrap_err();
    assert_eq!(err.errno(), libc::EAGAIN);
}

#[tokio::test]
async fn zero_linger_resets_the_peer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (mut server, _) = listener.accept().await.unwrap();
    client.set_zero_linger().unwrap();
    assert_eq!(client.linger().unwrap(), Some(Duration::ZERO));
    drop(client);
    let mut buf = [0u8; 4];
    let err = tokio::time::timeout(LIMIT, server.read(&mut buf))
        .await
        .expect("the reset arrives")
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err:?}");
}

#[tokio::test]
async fn tos_tclass_and_device_round_trip_and_obey_the_policy() {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.set_tos(0x28).unwrap();
    assert_eq!(udp.tos().unwrap(), 0x28);
    let v6 = TcpSocket::new_v6().unwrap();
    v6.set_tclass_v6(0x40).unwrap();
    assert_eq!(v6.tclass_v6().unwrap(), 0x40);
    match udp.bind_device(Some(b"lo")) {
        Ok(()) => {
            assert_eq!(udp.device().unwrap().as_deref(), Some(&b"lo"[..]));
            udp.bind_device(None).unwrap();
            assert_eq!(udp.device().unwrap(), None);
        }
        Err(e) => println!("SO_BINDTODEVICE refused here ({e}); checking only the errors"),
    }
    let err = udp.bind_device(Some(b"a-name-longer-than-15")).unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);

    let strict = Policy::builder()
        .deny_option(libc::IPPROTO_IP, libc::IP_TOS)
        .build();
    let sock = UdpSocket::bind_with_policy("127.0.0.1:0", strict.into())
        .await
        .unwrap();
    let err = sock.set_tos(0x10).unwrap_err();
    assert!(matches!(err, hostsock::Error::Denied(_)), "{err:?}");
    assert_eq!(
        sock.get(hostsock::opts::IpTos).map_err(|e| e.errno()),
        Err(libc::ENOPROTOOPT)
    );
}

#[tokio::test]
async fn quickack_round_trips() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    client.set_quickack(true).unwrap();
    assert!(client.quickack().unwrap());
}

#[tokio::test]
async fn after_shut_rd_every_udp_receive_form_gives_end_of_data() {
    use std::net::Shutdown;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(peer.local_addr().unwrap()).await.unwrap();
    sock.shutdown_with(Shutdown::Read).unwrap();
    let p = peer.local_addr().unwrap();
    let mut buf = [0u8; 8];
    // The usual "wait for readable, then try" loop ends at once.
    for _ in 0..3 {
        tokio::time::timeout(LIMIT, sock.readable())
            .await
            .expect("readable after SHUT_RD")
            .unwrap();
        assert_eq!(sock.try_recv(&mut buf).unwrap(), 0);
    }
    assert_eq!(sock.try_recv_from(&mut buf).unwrap(), (0, p));
    assert_eq!(sock.try_peek_from(&mut buf).unwrap(), (0, p));
    let mut v = Vec::with_capacity(8);
    assert_eq!(sock.try_recv_buf(&mut v).unwrap(), 0);
    assert_eq!(sock.try_recv_buf_from(&mut v).unwrap(), (0, p));
    assert_eq!(sock.recv(&mut buf).await.unwrap(), 0);
    let mut rb = tokio::io::ReadBuf::new(&mut buf);
    tokio::time::timeout(LIMIT, poll_fn(|cx| sock.poll_recv(cx, &mut rb)))
        .await
        .expect("poll_recv ends")
        .unwrap();
    assert_eq!(rb.filled().len(), 0);
    let mut rb = tokio::io::ReadBuf::new(&mut buf);
    let from = tokio::time::timeout(LIMIT, poll_fn(|cx| sock.poll_recv_from(cx, &mut rb)))
        .await
        .expect("poll_recv_from ends")
        .unwrap();
    assert_eq!(from, p);
}

#[tokio::test]
async fn send_gso_with_more_segments_than_one_send_takes_keeps_gso_on() {
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    b.set(hostsock::opts::RecvBuffer, 1 << 20).unwrap();
    let data: Vec<u8> = (0..200u32).flat_map(|i| [(i % 251) as u8; 100]).collect();
    let sent = a
        .send_gso(&data, 100, Some(b.local_addr().unwrap()))
        .await
        .unwrap();
    assert_eq!(sent, data.len());
    assert!(a.gso_enabled(), "a long send must not turn GSO off");
    let mut buf = [0u8; 200];
    for i in 0..200u32 {
        let n = tokio::time::timeout(LIMIT, b.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 100);
        assert!(
            buf[..n].iter().all(|&x| x == (i % 251) as u8),
            "segment {i} in order"
        );
    }
}
