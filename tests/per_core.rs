//! One socket per core, and the raw layer's batches.

mod util;

use std::time::Duration;

use hostsock::raw::{Errno, RawSocket, RawTransmit, encode_sockaddr};
use hostsock::{Policy, RecvSlot, UdpSocket, per_core};

#[test]
fn per_core_run_returns_each_result_in_order_and_reports_errors() {
    let got = per_core::run(3, |i| async move { Ok(i * 10) }).unwrap();
    assert_eq!(got, [0, 10, 20]);
    let err = per_core::run(2, |i| async move {
        if i == 1 {
            Err(hostsock::Error::Io(std::io::Error::from_raw_os_error(
                libc::EADDRINUSE,
            )))
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert_eq!(err.errno(), libc::EADDRINUSE);
}

#[test]
fn reuseport_shards_share_one_address_and_split_flows() {
    let addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let servers = std::thread::spawn(move || {
        per_core::run(2, move |_| {
            let tx = tx.clone();
            async move {
                let sock = UdpSocket::bind_reuseport(addr).await?;
                let _ = tx.send(());
                let mut served = 0usize;
                let mut buf = [0u8; 8];
                loop {
                    let quiet = tokio::time::Instant::now() + Duration::from_millis(500);
                    match sock.recv_from_deadline(&mut buf, quiet).await {
                        Ok((n, from)) => {
                            sock.send_to(&buf[..n], from).await?;
                            served += 1;
                        }
                        Err(e) if e.is_timeout() => return Ok(served),
                        Err(e) => return Err(e),
                    }
                }
            }
        })
    });
    for _ in 0..2 {
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }
    for _ in 0..64 {
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.send_to(b"x", addr).unwrap();
        let mut b = [0u8; 8];
        c.recv_from(&mut b).unwrap();
    }
    let served = servers.join().unwrap().unwrap();
    assert_eq!(served.iter().sum::<usize>(), 64, "{served:?}");
    assert!(
        served.iter().all(|&n| n > 0),
        "both shards served flows: {served:?}"
    );
}

#[tokio::test]
async fn raw_sendmmsg_and_recvmmsg_move_a_batch() {
    let policy = Policy::shared_default();
    let rx = RawSocket::new(policy.clone(), libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
    rx.bind(encode_sockaddr("127.0.0.1:0".parse().unwrap()).as_bytes())
        .unwrap();
    let to = rx.getsockname().unwrap();
    let tx = RawSocket::new(policy, libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
    let payloads: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; usize::from(i) + 1]).collect();
    let msgs: Vec<RawTransmit<'_>> = payloads
        .iter()
        .map(|p| RawTransmit {
            data: p,
            to: to.as_bytes(),
            control: &[],
        })
        .collect();
    assert_eq!(tx.sendmmsg(&msgs, 0).await, Ok(10));

    let mut bufs = vec![[0u8; 32]; 16];
    let mut slots: Vec<RecvSlot<'_>> = bufs.iter_mut().map(|b| RecvSlot::new(b, &mut [])).collect();
    // WAITFORONE: returns as soon as something arrived (here all ten).
    let got = util::within(2, rx.recvmmsg(&mut slots, libc::MSG_WAITFORONE, None))
        .await
        .unwrap();
    assert_eq!(got, 10);
    for (i, s) in slots.iter().take(got).enumerate() {
        assert_eq!(s.data(), &payloads[i][..]);
    }
    // Nothing queued, non-blocking: EAGAIN at once.
    assert_eq!(
        rx.recvmmsg(&mut slots, libc::MSG_DONTWAIT, None).await,
        Err(Errno::EAGAIN)
    );
    // Flags outside the masks: EINVAL.
    assert_eq!(
        rx.recvmmsg(&mut slots, 1 << 28, None).await,
        Err(Errno::EINVAL)
    );
    assert_eq!(
        tx.sendmmsg(&msgs, libc::MSG_PEEK)
            .await
            .map_err(Errno::from),
        Err(Errno::EINVAL)
    );
}

#[tokio::test]
async fn raw_recvmmsg_blocking_waits_until_every_slot_or_the_timeout() {
    let policy = Policy::shared_default();
    let rx = RawSocket::new(policy.clone(), libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
    rx.bind(encode_sockaddr("127.0.0.1:0".parse().unwrap()).as_bytes())
        .unwrap();
    let to = rx.getsockname().unwrap().to_socket_addr().unwrap();
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut bufs = [[0u8; 8]; 3];
    let mut slots: Vec<RecvSlot<'_>> = bufs.iter_mut().map(|b| RecvSlot::new(b, &mut [])).collect();
    let recv = rx.recvmmsg(&mut slots, 0, Some(Duration::from_millis(150)));
    tokio::pin!(recv);
    assert!(futures::poll!(recv.as_mut()).is_pending());
    sender.send_to(b"a", to).unwrap();
    // One arrived: Linux keeps waiting for the other slots until the
    // timeout has passed when the next message arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    sender.send_to(b"b", to).unwrap();
    let got = util::within(2, recv).await.unwrap();
    assert_eq!(got, 2);
}

/// Raw `sendmmsg` re-encodes each message's control messages with the room
/// `sendmsg` has (1024 bytes), all messages sharing 8 KiB: a message with
/// more than 128 bytes of control is sent (it used to be refused with
/// `ENOBUFS`), and a batch whose controls need more than 8 KiB is cut
/// before the first message that does not fit, the count saying so.
#[tokio::test]
async fn raw_sendmmsg_takes_large_controls_and_cuts_a_batch_at_8_kib() {
    use hostsock::cmsg::{Cmsg, CmsgBuf};
    let policy = Policy::shared_default();
    let rx = RawSocket::new(policy.clone(), libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
    rx.bind(encode_sockaddr("127.0.0.1:0".parse().unwrap()).as_bytes())
        .unwrap();
    rx.setsockopt(libc::IPPROTO_IP, libc::IP_RECVTOS, &1i32.to_ne_bytes())
        .unwrap();
    let to = rx.getsockname().unwrap();
    let tx = RawSocket::new(policy, libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
    // 42 TOS messages: 42 x 24 = 1008 bytes, the last one (0x40) wins.
    let mut big = CmsgBuf::<1024>::new();
    for _ in 0..41 {
        big.push(&Cmsg::Tos(0x20)).unwrap();
    }
    big.push(&Cmsg::Tos(0x40)).unwrap();
    assert_eq!(big.as_bytes().len(), 1008);
    let msgs: Vec<RawTransmit<'_>> = (0..12)
        .map(|_| RawTransmit {
            data: b"big",
            to: to.as_bytes(),
            control: big.as_bytes(),
        })
        .collect();
    // One message: sent, with its TOS.
    assert_eq!(tx.sendmmsg(&msgs[..1], 0).await, Ok(1));
    // Twelve: 8 x 1008 = 8064 bytes fit in 8 KiB, the ninth does not.
    assert_eq!(tx.sendmmsg(&msgs, 0).await, Ok(8));

    let mut bufs = vec![[0u8; 16]; 16];
    let mut ctls = vec![[0u8; 64]; 16];
    let mut slots: Vec<RecvSlot<'_>> = bufs
        .iter_mut()
        .zip(ctls.iter_mut())
        .map(|(b, c)| RecvSlot::new(b, c))
        .collect();
    let mut got = 0;
    for _ in 0..20 {
        got += util::within(
            2,
            rx.recvmmsg(&mut slots[got..], libc::MSG_WAITFORONE, None),
        )
        .await
        .unwrap();
        if got >= 9 {
            break;
        }
    }
    assert_eq!(got, 9, "1 + 8 datagrams");
    for s in slots.iter().take(got) {
        assert_eq!(s.data(), b"big");
        assert!(
            s.cmsgs().any(|m| m == Cmsg::Tos(0x40)),
            "{:?}",
            s.cmsgs().collect::<Vec<_>>()
        );
    }
    assert_eq!(
        rx.recvmmsg(&mut slots, libc::MSG_DONTWAIT, None).await,
        Err(Errno::EAGAIN),
        "nothing past the cut was sent"
    );
}
