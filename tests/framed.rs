//! `Datagrams`: a UdpSocket as a Stream of received datagrams and a Sink of
//! datagrams to send, with peers, truncation, optional DatagramInfo, errors
//! as items, and policy denials that do not jam the sink.

mod util;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hostsock::policy::{AddrRule, AddrUse, Cidr, Verdict};
use hostsock::{Datagram, Datagrams, Policy, UdpSocket, opts};

const LIMIT: Duration = Duration::from_secs(5);

async fn next(s: &mut Datagrams<impl std::borrow::Borrow<UdpSocket> + Unpin>) -> Datagram {
    tokio::time::timeout(LIMIT, s.next())
        .await
        .expect("a datagram in time")
        .expect("the stream never ends")
        .expect("no error")
}

#[tokio::test]
async fn a_sink_of_200_arrives_in_order_on_the_stream_with_peers() {
    let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    rx.set(opts::RecvBuffer, 1 << 20).unwrap();
    let to = rx.local_addr().unwrap();
    let mut rx = Datagrams::new(rx);
    let tx_sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let from = tx_sock.local_addr().unwrap();
    let mut tx = Datagrams::new(Arc::clone(&tx_sock));
    let items: Vec<_> = (0u32..200)
        .map(|i| Ok((Bytes::from(i.to_be_bytes().to_vec()), to)))
        .collect();
    tokio::time::timeout(LIMIT, tx.send_all(&mut futures::stream::iter(items)))
        .await
        .unwrap()
        .unwrap();
    for i in 0u32..200 {
        let d = next(&mut rx).await;
        assert_eq!(d.peer, from);
        assert_eq!(&d.data[..], i.to_be_bytes());
        assert!(!d.truncated);
        assert_eq!(d.info, None);
    }
}

#[tokio::test]
async fn longer_datagrams_arrive_cut_and_marked() {
    let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = rx.local_addr().unwrap();
    let mut rx = Datagrams::with_max_size(&rx, 8);
    let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    tx.send_to(&[1u8; 20], to).await.unwrap();
    tx.send_to(&[2u8; 8], to).await.unwrap();
    let d = next(&mut rx).await;
    assert!(d.truncated);
    assert_eq!(&d.data[..], &[1u8; 8]);
    let d = next(&mut rx).await;
    assert!(!d.truncated);
    assert_eq!(&d.data[..], &[2u8; 8]);
}

#[tokio::test]
async fn info_reports_destination_and_tos_and_replies_use_them() {
    let server = Datagrams::new(UdpSocket::bind("0.0.0.0:0").await.unwrap())
        .with_info()
        .unwrap();
    let port = server.get_ref().local_addr().unwrap().port();
    let (mut replies, mut requests) = server.split();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.set(opts::RecvTos, true).unwrap();
    let client_addr = client.local_addr().unwrap();
    let mut client = Datagrams::new(client).with_info().unwrap();
    for (dst, tos) in [("127.0.0.2", 0x20u8), ("127.0.0.3", 0x48)] {
        let to: SocketAddr = format!("{dst}:{port}").parse().unwrap();
        client.get_ref().set_tos(u32::from(tos)).unwrap();
        client.send(Datagram::new(&b"ask"[..], to)).await.unwrap();
        let req = tokio::time::timeout(LIMIT, requests.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let info = req.info.expect("info asked for");
        assert_eq!(req.peer, client_addr);
        assert_eq!(info.local, Some(to.ip()));
        assert_eq!(info.tos, Some(tos));
        replies.send(req.reply(&b"answer"[..])).await.unwrap();
        let answer = next(&mut client).await;
        assert_eq!(answer.peer, to, "answered from the address asked");
        assert_eq!(answer.info.and_then(|i| i.tos), Some(tos), "TOS echoed");
        assert_eq!(&answer.data[..], b"answer");
    }
}

#[tokio::test]
async fn errors_are_items_and_the_stream_goes_on() {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(util::refused_addr()).await.unwrap();
    sock.send(b"nobody").await.unwrap();
    let mut s = Datagrams::new(sock);
    let err = tokio::time::timeout(LIMIT, s.next())
        .await
        .expect("the ICMP error wakes the stream")
        .expect("not the end")
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
    // Nothing else is queued: the stream waits rather than ending.
    let more = tokio::time::timeout(Duration::from_millis(30), s.next()).await;
    assert!(more.is_err(), "the stream must not end after an error item");
}

#[tokio::test]
async fn a_denied_destination_is_an_error_and_the_sink_is_not_jammed() {
    let policy = Policy::builder()
        .addr_rule(AddrRule::new(
            Verdict::Deny,
            Cidr::new("127.0.0.9".parse().unwrap(), 32),
            &[AddrUse::SendTo],
        ))
        .build();
    let tx = UdpSocket::bind_with_policy("127.0.0.1:0", policy.into())
        .await
        .unwrap();
    let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut tx = Datagrams::new(tx);
    let denied: SocketAddr = "127.0.0.9:9".parse().unwrap();
    let err = tx
        .send(Datagram::new(&b"no"[..], denied))
        .await
        .unwrap_err();
    let err = hostsock::Error::from(err);
    assert!(matches!(err, hostsock::Error::Denied(_)), "{err:?}");
    tx.send(Datagram::new(&b"yes"[..], rx.local_addr().unwrap()))
        .await
        .unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(LIMIT, rx.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"yes");
}
