//! Integration tests for `hostsock::UdpSocket`: loopback only, port 0,
//! every wait bounded in time and every loop bounded in count.

mod util;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::future::poll_fn;
use hostsock::UdpSocket;
use tokio::io::ReadBuf;
use tokio::sync::oneshot;
use tokio::time::Instant;

use util::{assert_nonblocking_cloexec, fd_flags, within};

/// A loopback UDP address nothing is bound to: a UDP port that was just
/// bound and released (a free TCP port says nothing about UDP).
fn refused_udp_addr() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = s.local_addr().expect("local_addr");
    drop(s);
    addr
}

/// `true` if `::1` can be bound here; prints why not otherwise.
fn v6_available(test: &str) -> bool {
    match std::net::UdpSocket::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) => {
            println!("{test}: skipped, ::1 is unavailable here: {e}");
            false
        }
    }
}

async fn pair_v4() -> (UdpSocket, UdpSocket) {
    let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind a");
    let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind b");
    (a, b)
}

/// Two sockets connected to each other.
async fn connected_pair_v4() -> (UdpSocket, UdpSocket) {
    let (a, b) = pair_v4().await;
    a.connect(b.local_addr().unwrap()).await.expect("connect a");
    b.connect(a.local_addr().unwrap()).await.expect("connect b");
    (a, b)
}

// ---------------------------------------------------------------- binding

#[tokio::test]
async fn bind_v4_gives_loopback_address_and_real_port() {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    assert_eq!(addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_ne!(
        addr.port(),
        0,
        "port 0 must be replaced by the kernel's choice"
    );
    assert!(s.peer_addr().is_err(), "an unconnected socket has no peer");
    assert_eq!(s.peer_addr().unwrap_err().errno(), libc::ENOTCONN);
}

#[tokio::test]
async fn bind_v6_gives_loopback_address_and_round_trips() {
    if !v6_available("bind_v6_gives_loopback_address_and_round_trips") {
        return;
    }
    let a = UdpSocket::bind("[::1]:0").await.unwrap();
    let b = UdpSocket::bind("[::1]:0").await.unwrap();
    let a_addr = a.local_addr().unwrap();
    assert_eq!(a_addr.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_ne!(a_addr.port(), 0);
    assert!(a_addr.is_ipv6());
    assert_nonblocking_cloexec(&a);

    a.send_to(b"six", b.local_addr().unwrap()).await.unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = within(2, b.recv_from(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"six");
    assert_eq!(from, a_addr);
}

#[tokio::test]
async fn bind_to_a_used_port_is_eaddrinuse() {
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let err = UdpSocket::bind(a.local_addr().unwrap()).await.unwrap_err();
    assert_eq!(err.errno(), libc::EADDRINUSE);
}

#[tokio::test]
async fn bound_fd_is_nonblocking_and_cloexec() {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_nonblocking_cloexec(&s);
}

#[tokio::test]
async fn from_std_of_a_blocking_socket_makes_it_nonblocking_and_cloexec() {
    let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    std_sock.set_nonblocking(false).unwrap();
    // std sets close-on-exec; clear it so the test shows from_std sets it.
    socket2::SockRef::from(&std_sock)
        .set_cloexec(false)
        .unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&std_sock);
    let before = fd_flags(fd);
    assert_eq!(
        before & libc::O_NONBLOCK as u32,
        0,
        "precondition: blocking"
    );
    assert_eq!(
        before & libc::O_CLOEXEC as u32,
        0,
        "precondition: not cloexec"
    );
    let addr = std_sock.local_addr().unwrap();

    let s = UdpSocket::from_std(std_sock).unwrap();
    assert_nonblocking_cloexec(&s);
    assert_eq!(s.local_addr().unwrap(), addr);

    // And it works as an async socket: an empty receive waits (it would
    // block the whole runtime if the fd were still blocking).
    let mut buf = [0u8; 8];
    let err = within(
        2,
        s.recv_deadline(&mut buf, Instant::now() + Duration::from_millis(30)),
    )
    .await
    .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    peer.send_to(b"std", addr).await.unwrap();
    let (n, from) = within(2, s.recv_from(&mut buf)).await.unwrap();
    assert_eq!((&buf[..n], from), (&b"std"[..], peer.local_addr().unwrap()));
}

#[tokio::test]
async fn into_std_keeps_the_socket() {
    let (a, b) = pair_v4().await;
    let addr = b.local_addr().unwrap();
    let std_b = b.into_std().unwrap();
    assert_eq!(std_b.local_addr().unwrap(), addr);
    a.send_to(b"back", addr).await.unwrap();
    let b = UdpSocket::from_std(std_b).unwrap();
    let mut buf = [0u8; 8];
    let n = within(2, b.recv(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"back");
}

// ------------------------------------------------------- sending, receiving

#[tokio::test]
async fn send_to_recv_from_reports_the_source() {
    let (a, b) = pair_v4().await;
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b_addr = b.local_addr().unwrap();
    assert_eq!(a.send_to(b"from a", b_addr).await.unwrap(), 6);
    assert_eq!(c.send_to(b"from c!", b_addr).await.unwrap(), 7);

    let mut buf = [0u8; 64];
    let (n, from) = within(2, b.recv_from(&mut buf)).await.unwrap();
    assert_eq!((&buf[..n], from), (&b"from a"[..], a.local_addr().unwrap()));
    let (n, from) = within(2, b.recv_from(&mut buf)).await.unwrap();
    assert_eq!(
        (&buf[..n], from),
        (&b"from c!"[..], c.local_addr().unwrap())
    );
}

#[tokio::test]
async fn send_to_accepts_a_string_address() {
    let (a, b) = pair_v4().await;
    let target = format!("127.0.0.1:{}", b.local_addr().unwrap().port());
    a.send_to(b"str", target.as_str()).await.unwrap();
    let mut buf = [0u8; 8];
    let (n, from) = within(2, b.recv_from(&mut buf)).await.unwrap();
    assert_eq!((&buf[..n], from), (&b"str"[..], a.local_addr().unwrap()));
}

#[tokio::test]
async fn connect_send_recv() {
    let (a, b) = connected_pair_v4().await;
    assert_eq!(a.peer_addr().unwrap(), b.local_addr().unwrap());
    assert_eq!(b.peer_addr().unwrap(), a.local_addr().unwrap());

    assert_eq!(a.send(b"hello").await.unwrap(), 5);
    let mut buf = [0u8; 16];
    let n = within(2, b.recv(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"hello");

    assert_eq!(b.send(b"world!").await.unwrap(), 6);
    let n = within(2, a.recv(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"world!");
}

#[tokio::test]
async fn connected_socket_filters_other_sources() {
    let (a, b) = connected_pair_v4().await;
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger
        .send_to(b"stranger", a.local_addr().unwrap())
        .await
        .unwrap();
    b.send(b"peer").await.unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = within(2, a.recv_from(&mut buf)).await.unwrap();
    assert_eq!((&buf[..n], from), (&b"peer"[..], b.local_addr().unwrap()));
}

#[tokio::test]
async fn send_without_connect_is_edestaddrreq() {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let err = within(2, s.send(b"x")).await.unwrap_err();
    assert_eq!(err.errno(), libc::EDESTADDRREQ);
}

#[tokio::test]
async fn peek_from_does_not_consume() {
    let (a, b) = pair_v4().await;
    a.send_to(b"peekaboo", b.local_addr().unwrap())
        .await
        .unwrap();
    a.send_to(b"second", b.local_addr().unwrap()).await.unwrap();

    let mut p1 = [0u8; 32];
    let mut p2 = [0u8; 32];
    let mut r = [0u8; 32];
    let (n1, f1) = within(2, b.peek_from(&mut p1)).await.unwrap();
    let (n2, f2) = within(2, b.peek_from(&mut p2)).await.unwrap();
    let (m, fr) = within(2, b.recv_from(&mut r)).await.unwrap();
    assert_eq!(n1, 8);
    assert_eq!((n1, f1), (n2, f2), "a second peek sees the same datagram");
    assert_eq!(
        (n1, f1),
        (m, fr),
        "recv after peek gets the peeked datagram"
    );
    assert_eq!(&p1[..n1], &r[..m]);
    assert_eq!(&r[..m], b"peekaboo");
    assert_eq!(fr, a.local_addr().unwrap());

    // Only now does the next datagram come up.
    let (m, _) = within(2, b.recv_from(&mut r)).await.unwrap();
    assert_eq!(&r[..m], b"second");
}

#[tokio::test]
async fn datagram_larger_than_buffer_is_truncated() {
    let (a, b) = pair_v4().await;
    let big: Vec<u8> = (0..200u8).collect();
    a.send_to(&big, b.local_addr().unwrap()).await.unwrap();
    a.send_to(b"next", b.local_addr().unwrap()).await.unwrap();

    let mut small = [0u8; 10];
    let (n, from) = within(2, b.recv_from(&mut small)).await.unwrap();
    assert_eq!(n, small.len(), "truncated to the buffer length");
    assert_eq!(&small[..], &big[..10]);
    assert_eq!(from, a.local_addr().unwrap());

    // The rest of the big datagram is discarded, not delivered later.
    let mut buf = [0u8; 256];
    let (n, _) = within(2, b.recv_from(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"next");

    // Same with recv on a connected socket, and with peek.
    let (c, d) = connected_pair_v4().await;
    c.send(&big).await.unwrap();
    let mut small = [0u8; 7];
    let (n, _) = within(2, d.peek_from(&mut small)).await.unwrap();
    assert_eq!(n, 7);
    let n = within(2, d.recv(&mut small)).await.unwrap();
    assert_eq!(n, 7);
    assert_eq!(&small[..], &big[..7]);
}

#[tokio::test]
async fn zero_length_datagram_is_sent_and_received() {
    let (a, b) = pair_v4().await;
    let b_addr = b.local_addr().unwrap();
    assert_eq!(a.send_to(&[], b_addr).await.unwrap(), 0);
    a.send_to(b"after", b_addr).await.unwrap();

    let mut buf = [0xAAu8; 16];
    let (n, from) = within(2, b.recv_from(&mut buf)).await.unwrap();
    assert_eq!(n, 0);
    assert_eq!(from, a.local_addr().unwrap(), "recv_from gives the sender");
    let (n, _) = within(2, b.recv_from(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"after", "the empty datagram was one datagram");

    // Connected: send(&[]) and recv returns 0.
    let (c, d) = connected_pair_v4().await;
    assert_eq!(c.send(&[]).await.unwrap(), 0);
    c.send(b"tail").await.unwrap();
    let n = within(2, d.recv(&mut buf)).await.unwrap();
    assert_eq!(n, 0);
    let n = within(2, d.recv(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"tail");
}

#[tokio::test]
async fn recv_with_empty_buffer_still_takes_the_datagram() {
    let (a, b) = connected_pair_v4().await;
    a.send(b"dropped").await.unwrap();
    a.send(b"kept").await.unwrap();
    let n = within(2, b.recv(&mut [])).await.unwrap();
    assert_eq!(n, 0);
    let mut buf = [0u8; 16];
    let n = within(2, b.recv(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"kept");
}

// ------------------------------------------------------------ try_* forms

/// Waits (bounded) until `b` is readable and `f` gives something other
/// than `EAGAIN`.
async fn try_until_ready<T>(
    b: &UdpSocket,
    mut f: impl FnMut() -> hostsock::Result<T>,
) -> hostsock::Result<T> {
    let mut last = None;
    for _ in 0..100 {
        within(2, b.readable()).await.unwrap();
        match f() {
            Err(e) if e.errno() == libc::EAGAIN => last = Some(e),
            r => return r,
        }
    }
    panic!(
        "a datagram is queued (readable() says so) but the try_ call still gives \
         EAGAIN after 100 wake-ups; last error: {last:?}"
    );
}

#[tokio::test]
async fn try_forms_give_eagain_when_empty_and_data_when_ready() {
    let (a, b) = pair_v4().await;
    let a_addr = a.local_addr().unwrap();
    let b_addr = b.local_addr().unwrap();
    let mut buf = [0u8; 32];

    // Empty: every try_ receive is EAGAIN (WouldBlock), not a hang.
    let e = b.try_recv_from(&mut buf).unwrap_err();
    assert_eq!(e.errno(), libc::EAGAIN);
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    assert_eq!(b.try_peek_from(&mut buf).unwrap_err().errno(), libc::EAGAIN);
    assert_eq!(b.try_recv(&mut buf).unwrap_err().errno(), libc::EAGAIN);

    within(2, a.writable()).await.unwrap();
    let mut sent = None;
    for _ in 0..100 {
        match a.try_send_to(b"try", b_addr) {
            Err(e) if e.errno() == libc::EAGAIN => within(2, a.writable()).await.unwrap(),
            r => {
                sent = Some(r.unwrap());
                break;
            }
        }
    }
    assert_eq!(sent, Some(3));

    let (n, from) = try_until_ready(&b, || b.try_peek_from(&mut buf))
        .await
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"try"[..], a_addr));
    let mut buf2 = [0u8; 32];
    let (n, from) = try_until_ready(&b, || b.try_recv_from(&mut buf2))
        .await
        .unwrap();
    assert_eq!((&buf2[..n], from), (&b"try"[..], a_addr));

    // Consumed: empty again.
    assert_eq!(b.try_recv_from(&mut buf).unwrap_err().errno(), libc::EAGAIN);
}

#[tokio::test]
async fn try_send_and_try_recv_on_connected_sockets() {
    let (a, b) = connected_pair_v4().await;
    let mut buf = [0u8; 32];
    assert_eq!(b.try_recv(&mut buf).unwrap_err().errno(), libc::EAGAIN);

    within(2, a.writable()).await.unwrap();
    let mut sent = None;
    for _ in 0..100 {
        match a.try_send(b"connected") {
            Err(e) if e.errno() == libc::EAGAIN => within(2, a.writable()).await.unwrap(),
            r => {
                sent = Some(r.unwrap());
                break;
            }
        }
    }
    assert_eq!(sent, Some(9));

    let n = try_until_ready(&b, || b.try_recv(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"connected");
    assert_eq!(b.try_recv(&mut buf).unwrap_err().errno(), libc::EAGAIN);
}

#[tokio::test]
async fn readable_waits_for_a_datagram() {
    let (a, b) = pair_v4().await;
    // Nothing queued: readable does not complete.
    let r = tokio::time::timeout(Duration::from_millis(50), b.readable()).await;
    assert!(r.is_err(), "readable completed on an empty socket");

    let (tx, rx) = oneshot::channel::<()>();
    let b_addr = b.local_addr().unwrap();
    let sender = tokio::spawn(async move {
        rx.await.unwrap();
        a.send_to(b"wake", b_addr).await.unwrap();
        a
    });
    let waiting = b.readable();
    tokio::pin!(waiting);
    assert!(futures::poll!(&mut waiting).is_pending());
    tx.send(()).unwrap();
    within(2, waiting).await.unwrap();
    let a = sender.await.unwrap();
    let mut buf = [0u8; 8];
    // A datagram is queued: a receive with a deadline already past (the
    // operation is tried once before the deadline is looked at) gets it.
    let (n, from) = b
        .recv_from_deadline(&mut buf, Instant::now() - Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"wake"[..], a.local_addr().unwrap()));
}

// ----------------------------------------------------------- poll_* forms

#[tokio::test]
async fn poll_send_to_poll_peek_from_poll_recv_from() {
    let (a, b) = pair_v4().await;
    let a_addr = a.local_addr().unwrap();
    let b_addr = b.local_addr().unwrap();

    let mut storage = [0u8; 32];
    let mut rb = ReadBuf::new(&mut storage);

    // Empty: poll_recv_from is Pending.
    let first = poll_fn(|cx| Poll::Ready(b.poll_recv_from(cx, &mut rb))).await;
    assert!(
        first.is_pending(),
        "poll_recv_from on an empty socket: {first:?}"
    );
    assert!(rb.filled().is_empty());

    let n = within(2, poll_fn(|cx| a.poll_send_to(cx, b"polled", b_addr)))
        .await
        .unwrap();
    assert_eq!(n, 6);

    let from = within(2, poll_fn(|cx| b.poll_peek_from(cx, &mut rb)))
        .await
        .unwrap();
    assert_eq!((rb.filled(), from), (&b"polled"[..], a_addr));
    rb.clear();

    let from = within(2, poll_fn(|cx| b.poll_recv_from(cx, &mut rb)))
        .await
        .unwrap();
    assert_eq!((rb.filled(), from), (&b"polled"[..], a_addr));

    // The datagram is consumed now.
    let mut buf = [0u8; 8];
    assert_eq!(b.try_recv_from(&mut buf).unwrap_err().errno(), libc::EAGAIN);
}

#[tokio::test]
async fn poll_recv_from_appends_after_filled_and_truncates_to_remaining() {
    let (a, b) = pair_v4().await;
    a.send_to(b"0123456789", b.local_addr().unwrap())
        .await
        .unwrap();

    let mut storage = [0u8; 8];
    let mut rb = ReadBuf::new(&mut storage);
    rb.put_slice(b"ab");
    let from = within(2, poll_fn(|cx| b.poll_recv_from(cx, &mut rb)))
        .await
        .unwrap();
    assert_eq!(from, a.local_addr().unwrap());
    assert_eq!(
        rb.filled(),
        b"ab012345",
        "appended after the filled part, cut to 6"
    );
}

#[tokio::test]
async fn poll_send_and_poll_recv_on_connected_sockets() {
    let (a, b) = connected_pair_v4().await;
    let mut storage = [0u8; 32];
    let mut rb = ReadBuf::new(&mut storage);

    let first = poll_fn(|cx| Poll::Ready(b.poll_recv(cx, &mut rb))).await;
    assert!(
        first.is_pending(),
        "poll_recv on an empty socket: {first:?}"
    );

    // A waiting poll_recv is woken by the datagram.
    let (tx, rx) = oneshot::channel::<()>();
    let sender = tokio::spawn(async move {
        rx.await.unwrap();
        let n = poll_fn(|cx| a.poll_send(cx, b"poll-send")).await.unwrap();
        assert_eq!(n, 9);
        a
    });
    let recv = poll_fn(|cx| b.poll_recv(cx, &mut rb));
    tokio::pin!(recv);
    assert!(futures::poll!(&mut recv).is_pending());
    tx.send(()).unwrap();
    within(2, recv).await.unwrap();
    assert_eq!(rb.filled(), b"poll-send");
    let _a = sender.await.unwrap();

    // Prefilled buffer: appended after the filled part.
    rb.clear();
    rb.put_slice(b">");
    _a.send(b"x").await.unwrap();
    within(2, poll_fn(|cx| b.poll_recv(cx, &mut rb)))
        .await
        .unwrap();
    assert_eq!(rb.filled(), b">x");
}

#[tokio::test]
async fn poll_peek_from_does_not_consume() {
    let (a, b) = pair_v4().await;
    a.send_to(b"peek", b.local_addr().unwrap()).await.unwrap();
    let mut s1 = [0u8; 16];
    let mut rb1 = ReadBuf::new(&mut s1);
    let f1 = within(2, poll_fn(|cx| b.poll_peek_from(cx, &mut rb1)))
        .await
        .unwrap();
    let mut s2 = [0u8; 16];
    let mut rb2 = ReadBuf::new(&mut s2);
    let f2 = within(2, poll_fn(|cx| b.poll_peek_from(cx, &mut rb2)))
        .await
        .unwrap();
    assert_eq!((rb1.filled(), f1), (rb2.filled(), f2));
    let mut buf = [0u8; 16];
    let (n, f3) = within(2, b.recv_from(&mut buf)).await.unwrap();
    assert_eq!((&buf[..n], f3), (&b"peek"[..], a.local_addr().unwrap()));
    // And that was the only datagram.
    let r = b
        .recv_from_deadline(&mut buf, Instant::now() + Duration::from_millis(30))
        .await;
    assert!(r.as_ref().is_err_and(|e| e.is_timeout()), "{r:?}");
}

// ------------------------------- ICMP errors end pending receives (KEY)

#[tokio::test]
async fn connected_pending_recv_ends_with_econnrefused() {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(refused_udp_addr()).await.unwrap();
    let mut buf = [0u8; 16];
    let recv = s.recv(&mut buf);
    tokio::pin!(recv);
    assert!(
        futures::poll!(&mut recv).is_pending(),
        "recv must be waiting before the send"
    );
    s.send(b"anyone?").await.unwrap();
    let err = within(2, recv)
        .await
        .expect_err("recv got data from a port nobody listens on");
    assert_eq!(err.errno(), libc::ECONNREFUSED, "{err:?}");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(!err.is_timeout());
}

#[tokio::test]
async fn connected_spawned_recv_ends_with_econnrefused() {
    let s = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    s.connect(refused_udp_addr()).await.unwrap();
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let s2 = s.clone();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        started_tx.send(()).unwrap();
        s2.recv(&mut buf).await
    });
    started_rx.await.unwrap();
    s.send(b"anyone?").await.unwrap();
    let r = within(2, task).await.unwrap();
    assert_eq!(r.expect_err("no data can come").errno(), libc::ECONNREFUSED);
}

#[tokio::test]
async fn connected_pending_recv_from_ends_with_econnrefused() {
    let s = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    s.connect(refused_udp_addr()).await.unwrap();
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let s2 = s.clone();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        started_tx.send(()).unwrap();
        s2.recv_from(&mut buf).await
    });
    started_rx.await.unwrap();
    s.send(b"anyone?").await.unwrap();
    let r = within(2, task).await.unwrap();
    assert_eq!(r.expect_err("no data can come").errno(), libc::ECONNREFUSED);

    // The same with a recv_from that is polled to Pending before the send.
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(refused_udp_addr()).await.unwrap();
    let mut buf = [0u8; 16];
    let recv = s.recv_from(&mut buf);
    tokio::pin!(recv);
    assert!(futures::poll!(&mut recv).is_pending());
    s.send(b"anyone?").await.unwrap();
    let err = within(2, recv).await.unwrap_err();
    assert_eq!(err.errno(), libc::ECONNREFUSED, "{err:?}");
}

#[tokio::test]
async fn connected_pending_peek_from_ends_with_econnrefused() {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(refused_udp_addr()).await.unwrap();
    let mut buf = [0u8; 16];
    let peek = s.peek_from(&mut buf);
    tokio::pin!(peek);
    assert!(futures::poll!(&mut peek).is_pending());
    s.send(b"anyone?").await.unwrap();
    let err = within(2, peek).await.unwrap_err();
    assert_eq!(err.errno(), libc::ECONNREFUSED);
}

#[tokio::test]
async fn connected_pending_readable_ends_on_icmp_error() {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(refused_udp_addr()).await.unwrap();
    let ready = s.readable();
    tokio::pin!(ready);
    assert!(futures::poll!(&mut ready).is_pending());
    s.send(b"anyone?").await.unwrap();
    within(2, ready)
        .await
        .expect("readable ends with Ok when an error is pending");
    let pending = s.take_error().unwrap().expect("an error is pending");
    assert_eq!(
        pending.raw_os_error(),
        Some(libc::ECONNREFUSED),
        "{pending:?}"
    );
}

#[tokio::test]
async fn try_recv_after_readable_reports_econnrefused() {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(refused_udp_addr()).await.unwrap();
    let mut buf = [0u8; 16];
    // Nothing yet: EAGAIN.
    assert_eq!(s.try_recv(&mut buf).unwrap_err().errno(), libc::EAGAIN);
    s.send(b"anyone?").await.unwrap();
    within(2, s.readable()).await.unwrap();
    let err = s.try_recv(&mut buf).unwrap_err();
    assert_eq!(err.errno(), libc::ECONNREFUSED, "{err:?}");
    // The error was reported once and is gone.
    assert!(s.take_error().unwrap().is_none());
}

#[tokio::test]
async fn refused_error_is_consumed_and_socket_keeps_working() {
    // After the ECONNREFUSED is reported the socket is usable: reconnect to
    // a live peer and talk.
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(refused_udp_addr()).await.unwrap();
    let mut buf = [0u8; 16];
    s.send(b"x").await.unwrap();
    let err = within(2, s.recv(&mut buf)).await.unwrap_err();
    assert_eq!(err.errno(), libc::ECONNREFUSED);

    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(peer.local_addr().unwrap()).await.unwrap();
    peer.connect(s.local_addr().unwrap()).await.unwrap();
    peer.send(b"alive").await.unwrap();
    let n = within(2, s.recv(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"alive");
}

// ---------------------------------------------------- deadlines, timeouts

async fn assert_times_out<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = hostsock::Result<T>>,
) -> Duration {
    let start = std::time::Instant::now();
    let err = within(5, fut)
        .await
        .expect_err(&format!("{what} returned without data"));
    let took = start.elapsed();
    assert!(err.is_timeout(), "{what}: not a timeout: {err:?}");
    assert_eq!(err.errno(), libc::EAGAIN, "{what}");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{what}");
    assert!(took >= limit, "{what} gave up early: {took:?} < {limit:?}");
    assert!(took < Duration::from_secs(2), "{what} took {took:?}");
    took
}

#[tokio::test]
async fn recv_deadlines_fire_with_eagain() {
    let (a, b) = connected_pair_v4().await;
    let mut buf = [0u8; 16];
    let d = Duration::from_millis(80);
    assert_times_out(
        "recv_deadline",
        d,
        b.recv_deadline(&mut buf, Instant::now() + d),
    )
    .await;
    assert_times_out(
        "recv_from_deadline",
        d,
        b.recv_from_deadline(&mut buf, Instant::now() + d),
    )
    .await;
    assert_times_out(
        "peek_from_deadline",
        d,
        b.peek_from_deadline(&mut buf, Instant::now() + d),
    )
    .await;

    // A deadline in the past still lets a ready datagram through.
    a.send(b"ready").await.unwrap();
    within(2, b.readable()).await.unwrap();
    let n = b
        .recv_deadline(&mut buf, Instant::now() - Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(&buf[..n], b"ready");
}

#[tokio::test]
async fn deadline_none_waits_for_data() {
    let (a, b) = connected_pair_v4().await;
    let (tx, rx) = oneshot::channel::<()>();
    let sender = tokio::spawn(async move {
        rx.await.unwrap();
        a.send(b"late").await.unwrap();
    });
    let mut buf = [0u8; 16];
    let recv = b.recv_deadline(&mut buf, None);
    tokio::pin!(recv);
    assert!(futures::poll!(&mut recv).is_pending());
    tx.send(()).unwrap();
    let n = within(2, recv).await.unwrap();
    assert_eq!(n, 4);
    sender.await.unwrap();
}

#[tokio::test]
async fn read_timeout_applies_and_none_waits_again() {
    let (a, b) = connected_pair_v4().await;
    assert_eq!(b.read_timeout(), None);
    let t = Duration::from_millis(50);
    b.set_read_timeout(Some(t)).unwrap();
    assert_eq!(b.read_timeout(), Some(t));

    let mut buf = [0u8; 16];
    assert_times_out("recv with read timeout", t, b.recv(&mut buf)).await;
    assert_times_out("recv_from with read timeout", t, b.recv_from(&mut buf)).await;
    assert_times_out("peek_from with read timeout", t, b.peek_from(&mut buf)).await;

    // Cleared: recv waits past the old timeout, until a datagram comes.
    b.set_read_timeout(None).unwrap();
    assert_eq!(b.read_timeout(), None);
    let (tx, rx) = oneshot::channel::<()>();
    let sender = tokio::spawn(async move {
        rx.await.unwrap();
        a.send(b"eventually").await.unwrap();
    });
    let n = {
        let recv = b.recv(&mut buf);
        tokio::pin!(recv);
        tokio::select! {
            r = &mut recv => panic!("recv ended without data after the timeout was cleared: {r:?}"),
            // Four times the old timeout: it must still be waiting.
            _ = tokio::time::sleep(t * 4) => {}
        }
        tx.send(()).unwrap();
        within(2, recv).await.unwrap()
    };
    assert_eq!(&buf[..n], b"eventually");
    sender.await.unwrap();
}

#[tokio::test]
async fn read_timeout_and_deadline_the_earlier_wins() {
    let (_a, b) = connected_pair_v4().await;
    b.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 4];
    let d = Duration::from_millis(60);
    assert_times_out(
        "deadline before timeout",
        d,
        b.recv_deadline(&mut buf, Instant::now() + d),
    )
    .await;

    b.set_read_timeout(Some(d)).unwrap();
    assert_times_out(
        "timeout before deadline",
        d,
        b.recv_deadline(&mut buf, Instant::now() + Duration::from_secs(30)),
    )
    .await;
}

#[tokio::test]
async fn zero_read_timeout_is_einval() {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    let err = s.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL, "{err:?}");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(
        s.read_timeout(),
        Some(Duration::from_millis(10)),
        "unchanged"
    );
    let err = s.set_write_timeout(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    assert_eq!(s.write_timeout(), None);
}

// -------------------------------------------------------- cancel safety

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recv_from_cancelled_by_select_loses_nothing() {
    const N: u32 = 64;
    let (a, b) = pair_v4().await;
    let a_addr = a.local_addr().unwrap();
    let b_addr = b.local_addr().unwrap();

    let (go_tx, go_rx) = oneshot::channel::<()>();
    let sender = tokio::spawn(async move {
        go_rx.await.unwrap();
        for i in 0..N {
            a.send_to(&i.to_be_bytes(), b_addr).await.unwrap();
            if i % 4 == 3 {
                // Pacing, so that receives are cancelled while datagrams
                // are still coming in.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });

    let mut counts: HashMap<u32, u32> = HashMap::new();
    let mut record = |buf: &[u8], n: usize, from: SocketAddr| {
        assert_eq!(n, 4, "datagram length");
        assert_eq!(from, a_addr);
        let i = u32::from_be_bytes(buf[..4].try_into().unwrap());
        assert!(i < N, "unknown datagram {i}");
        *counts.entry(i).or_default() += 1;
    };

    go_tx.send(()).unwrap();
    let mut cancelled = 0;
    let mut buf = [0u8; 16];
    for _ in 0..100 {
        tokio::select! {
            r = b.recv_from(&mut buf) => {
                let (n, from) = r.unwrap();
                record(&buf, n, from);
            }
            _ = tokio::time::sleep(Duration::from_millis(1)) => cancelled += 1,
        }
    }
    within(5, sender).await.unwrap();
    // Drain what is left, each receive bounded.
    let mut left = 0;
    loop {
        match b
            .recv_from_deadline(&mut buf, Instant::now() + Duration::from_millis(200))
            .await
        {
            Ok((n, from)) => {
                record(&buf, n, from);
                left += 1;
                assert!(left <= N, "more datagrams than were sent");
            }
            Err(e) if e.is_timeout() => break,
            Err(e) => panic!("recv_from: {e:?}"),
        }
    }
    assert!(
        cancelled > 0,
        "no receive was cancelled: the test proved nothing"
    );
    let dup: Vec<_> = counts.iter().filter(|&(_, &c)| c != 1).collect();
    assert!(dup.is_empty(), "datagrams received more than once: {dup:?}");
    let missing: Vec<u32> = (0..N).filter(|i| !counts.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "datagrams lost ({cancelled} cancellations): {missing:?}"
    );
}

// -------------------------------------------------------------- options

#[tokio::test]
async fn broadcast_round_trip() {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert!(!s.broadcast().unwrap());
    s.set_broadcast(true).unwrap();
    assert!(s.broadcast().unwrap());
    s.set_broadcast(false).unwrap();
    assert!(!s.broadcast().unwrap());
}

#[tokio::test]
async fn ttl_round_trip() {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.set_ttl(17).unwrap();
    assert_eq!(s.ttl().unwrap(), 17);
    s.set_ttl(255).unwrap();
    assert_eq!(s.ttl().unwrap(), 255);
    let err = s.set_ttl(256).unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    assert_eq!(s.ttl().unwrap(), 255);
}

#[tokio::test]
async fn multicast_loop_and_ttl_v4_round_trip() {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert!(s.multicast_loop_v4().unwrap(), "Linux default is on");
    s.set_multicast_loop_v4(false).unwrap();
    assert!(!s.multicast_loop_v4().unwrap());
    s.set_multicast_loop_v4(true).unwrap();
    assert!(s.multicast_loop_v4().unwrap());

    assert_eq!(s.multicast_ttl_v4().unwrap(), 1, "Linux default is 1");
    s.set_multicast_ttl_v4(42).unwrap();
    assert_eq!(s.multicast_ttl_v4().unwrap(), 42);
}

#[tokio::test]
async fn multicast_loop_v6_round_trip() {
    if !v6_available("multicast_loop_v6_round_trip") {
        return;
    }
    let s = UdpSocket::bind("[::1]:0").await.unwrap();
    assert!(s.multicast_loop_v6().unwrap());
    s.set_multicast_loop_v6(false).unwrap();
    assert!(!s.multicast_loop_v6().unwrap());
    s.set_multicast_loop_v6(true).unwrap();
    assert!(s.multicast_loop_v6().unwrap());
}

#[tokio::test]
async fn join_leave_multicast_v4_on_loopback() {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let group = Ipv4Addr::new(239, 255, 42, 99);
    match s.join_multicast_v4(group, Ipv4Addr::LOCALHOST) {
        Ok(()) => {}
        Err(e) if e.errno() == libc::ENODEV => {
            println!("join_leave_multicast_v4_on_loopback: skipped, the kernel refuses ({e})");
            return;
        }
        Err(e) => panic!("join_multicast_v4: {e:?}"),
    }
    // Joining twice is the kernel's EADDRINUSE: the first join took.
    let again = s.join_multicast_v4(group, Ipv4Addr::LOCALHOST).unwrap_err();
    assert_eq!(again.errno(), libc::EADDRINUSE, "{again:?}");
    s.leave_multicast_v4(group, Ipv4Addr::LOCALHOST).unwrap();
    // Leaving twice is EADDRNOTAVAIL: the leave took.
    let again = s
        .leave_multicast_v4(group, Ipv4Addr::LOCALHOST)
        .unwrap_err();
    assert_eq!(again.errno(), libc::EADDRNOTAVAIL, "{again:?}");
    // Not a multicast group at all: EINVAL.
    let bad = s
        .join_multicast_v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::LOCALHOST)
        .unwrap_err();
    assert_eq!(bad.errno(), libc::EINVAL);
}

#[tokio::test]
async fn join_leave_multicast_v6_on_interface_0() {
    if !v6_available("join_leave_multicast_v6_on_interface_0") {
        return;
    }
    let s = UdpSocket::bind("[::1]:0").await.unwrap();
    let group: Ipv6Addr = "ff15::4242".parse().unwrap();
    match s.join_multicast_v6(&group, 0) {
        Ok(()) => {}
        Err(e) if [libc::ENODEV, libc::EADDRNOTAVAIL, libc::ENETUNREACH].contains(&e.errno()) => {
            println!(
                "join_leave_multicast_v6_on_interface_0: skipped, the kernel has no \
                 interface for {group} ({e})"
            );
            return;
        }
        Err(e) => panic!("join_multicast_v6: {e:?}"),
    }
    let again = s.join_multicast_v6(&group, 0).unwrap_err();
    assert_eq!(again.errno(), libc::EADDRINUSE, "{again:?}");
    s.leave_multicast_v6(&group, 0).unwrap();
    let again = s.leave_multicast_v6(&group, 0).unwrap_err();
    assert_eq!(again.errno(), libc::EADDRNOTAVAIL, "{again:?}");
}

// ------------------------------------------------------------- shutdown

#[tokio::test]
async fn shutdown_read_makes_recv_return_zero_at_once() {
    let (a, b) = connected_pair_v4().await;
    a.shutdown_with(Shutdown::Read).unwrap();
    let mut buf = [0xFFu8; 16];
    let n = tokio::time::timeout(Duration::from_secs(1), a.recv(&mut buf))
        .await
        .expect("recv after SHUT_RD waited instead of returning 0")
        .unwrap();
    assert_eq!(n, 0);
    let (n, from) = tokio::time::timeout(Duration::from_secs(1), a.recv_from(&mut buf))
        .await
        .expect("recv_from after SHUT_RD waited instead of returning 0")
        .unwrap();
    assert_eq!((n, from), (0, b.local_addr().unwrap()));
    // Sending still works after SHUT_RD.
    a.send(b"still").await.unwrap();
    let n = within(2, b.recv(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"still");
}

#[tokio::test]
async fn shutdown_of_unconnected_socket_is_enotconn() {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let err = s.shutdown_with(Shutdown::Both).unwrap_err();
    assert_eq!(err.errno(), libc::ENOTCONN);
}

// ---------------------------------------------------- shared between tasks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arc_socket_used_from_two_tasks() {
    const N: u8 = 20;
    let shared = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    let shared_addr = shared.local_addr().unwrap();

    let rx_sock = shared.clone();
    let receiver = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        for _ in 0..N {
            let (n, from) = rx_sock.recv_from(&mut buf).await.unwrap();
            assert_eq!(from, echo_addr);
            assert_eq!(n, 1);
            got.push(buf[0]);
        }
        got
    });
    let tx_sock = shared.clone();
    let sender = tokio::spawn(async move {
        for i in 0..N {
            tx_sock.send_to(&[i], echo_addr).await.unwrap();
        }
    });
    // The echo side answers each datagram.
    let mut buf = [0u8; 8];
    for _ in 0..N {
        let (n, from) = within(2, echo.recv_from(&mut buf)).await.unwrap();
        assert_eq!(from, shared_addr);
        echo.send_to(&buf[..n], from).await.unwrap();
    }
    within(2, sender).await.unwrap();
    let mut got = within(2, receiver).await.unwrap();
    got.sort_unstable();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert_eq!(
        Arc::strong_count(&shared),
        1,
        "both tasks dropped their handle"
    );
}

/// The poll forms wake on an ICMP error too, not only on data: a pending
/// `poll_recv` / `poll_recv_from` / `poll_peek_from` on a connected socket
/// ends with ECONNREFUSED.
#[tokio::test]
async fn pending_poll_forms_end_with_econnrefused() {
    use futures::future::poll_fn;
    use tokio::io::ReadBuf;

    for form in 0..3 {
        let gone = hostsock::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let gone_addr = gone.local_addr().unwrap();
        drop(gone);
        let sock = hostsock::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.connect(gone_addr).await.unwrap();
        let mut storage = [0u8; 32];
        let recv = async {
            let mut buf = ReadBuf::new(&mut storage);
            poll_fn(|cx| match form {
                0 => sock.poll_recv(cx, &mut buf).map_ok(|()| 0),
                1 => sock.poll_recv_from(cx, &mut buf).map_ok(|_| 1),
                _ => sock.poll_peek_from(cx, &mut buf).map_ok(|_| 2),
            })
            .await
        };
        tokio::pin!(recv);
        // It must be waiting before the error arrives.
        assert!(futures::poll!(recv.as_mut()).is_pending(), "form {form}");
        sock.send(b"anyone?").await.unwrap();
        let err = tokio::time::timeout(std::time::Duration::from_secs(2), recv)
            .await
            .unwrap_or_else(|_| panic!("poll form {form} hung on an ICMP error"))
            .expect_err("no datagram can arrive");
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "form {form}");
        // And the socket goes on working: a stale error wake-up is cleared.
        let mut buf = [0u8; 4];
        let again = sock
            .recv_deadline(
                &mut buf,
                tokio::time::Instant::now() + std::time::Duration::from_millis(50),
            )
            .await
            .unwrap_err();
        assert!(again.is_timeout(), "form {form}: {again:?}");
    }
}
