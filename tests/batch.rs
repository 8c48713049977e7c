//! Integration tests for batched UDP (`send_batch`/`recv_batch` and their
//! `_deadline`/`try_`/`poll_` forms over `sendmmsg`/`recvmmsg`) and UDP
//! GSO/GRO (`send_gso`, `enable_gro`, `gso_enabled`). Loopback only, port 0,
//! every wait bounded by a 2 s timeout and every loop bounded in count.

mod util;

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::future::poll_fn;
use hostsock::cmsg::Cmsg;
use hostsock::msg::MsgFlags;
use hostsock::opts;
use hostsock::policy::{AddrRule, AddrUse, Verdict};
use hostsock::{Asked, Error, MAX_BATCH, Policy, RecvSlot, Transmit, UdpSocket};
use tokio::time::Instant;

use util::within;

/// Seconds any one wait may take.
const WAIT: u64 = 2;

/// `true` if `::1` can be bound here; prints why not otherwise.
fn v6_available(test: &str) -> bool {
    match std::net::UdpSocket::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) => {
            println!("{test}: IPv6 part skipped, ::1 is unavailable here: {e}");
            false
        }
    }
}

/// A loopback UDP address of the same family as `like` that nothing is
/// bound to: a port that was just bound and released.
fn refused_udp_addr(like: &str) -> SocketAddr {
    let s = std::net::UdpSocket::bind(like).expect("bind");
    let addr = s.local_addr().expect("local_addr");
    drop(s);
    addr
}

/// A socket bound to `addr` with a receive buffer large enough for a few
/// hundred queued datagrams.
async fn bind(addr: &str) -> UdpSocket {
    let s = within(WAIT, UdpSocket::bind(addr))
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    s.set(opts::RecvBuffer, 1 << 20).expect("SO_RCVBUF");
    s
}

async fn bind_with(addr: &str, policy: Policy) -> UdpSocket {
    within(WAIT, UdpSocket::bind_with_policy(addr, Arc::new(policy)))
        .await
        .unwrap_or_else(|e| panic!("bind {addr} with policy: {e}"))
}

/// The distinct payload of datagram `i`: its number, then `i % 37` bytes of
/// `i`, so that contents and lengths differ.
fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("datagram {i:03}|").into_bytes();
    p.extend(std::iter::repeat_n(i as u8, i % 37));
    p
}

/// What one filled slot held, copied out.
#[derive(Debug, Clone)]
struct Got {
    data: Vec<u8>,
    len: usize,
    empty: bool,
    from: Option<SocketAddr>,
    flags: MsgFlags,
    tos: Option<u8>,
    ttl: Option<u8>,
    tclass: Option<u8>,
    gro: Option<u16>,
}

impl Got {
    fn of(s: &RecvSlot<'_>) -> Got {
        let data = s.data().to_vec();
        assert_eq!(data.len(), s.len(), "data() and len() disagree: {s:?}");
        Got {
            data,
            len: s.len(),
            empty: s.is_empty(),
            from: s.addr(),
            flags: s.flags(),
            tos: s.cmsgs().find_map(|m| match m {
                Cmsg::Tos(v) => Some(v),
                _ => None,
            }),
            ttl: s.cmsgs().find_map(|m| match m {
                Cmsg::Ttl(v) => Some(v),
                _ => None,
            }),
            tclass: s.cmsgs().find_map(|m| match m {
                Cmsg::TClass(v) => Some(v),
                _ => None,
            }),
            gro: s.gro_segment(),
        }
    }
}

/// Receives exactly `n` datagrams with `recv_batch` over `MAX_BATCH` slots
/// of `size` bytes (and `control` control bytes) each; panics if more or
/// fewer arrive. Returns them in arrival order.
async fn recv_exactly(sock: &UdpSocket, n: usize, size: usize, control: usize) -> Vec<Got> {
    let mut bufs = vec![vec![0u8; size]; MAX_BATCH];
    let mut ctrls = vec![vec![0u8; control]; MAX_BATCH];
    let mut slots: Vec<RecvSlot<'_>> = bufs
        .iter_mut()
        .zip(ctrls.iter_mut())
        .map(|(b, c)| RecvSlot::new(b, c))
        .collect();
    let mut out = Vec::with_capacity(n);
    for _ in 0..=n {
        if out.len() >= n {
            break;
        }
        let got = within(WAIT, sock.recv_batch(&mut slots))
            .await
            .unwrap_or_else(|e| panic!("recv_batch after {} of {n}: {e:?}", out.len()));
        assert!(
            (1..=MAX_BATCH).contains(&got),
            "recv_batch returned {got} for {MAX_BATCH} slots"
        );
        out.extend(slots[..got].iter().map(Got::of));
    }
    assert_eq!(
        out.len(),
        n,
        "received {} datagrams where {n} were sent",
        out.len()
    );
    out
}

/// Nothing more arrives within 150 ms.
async fn assert_nothing_queued(sock: &UdpSocket, what: &str) {
    let mut buf = [0u8; 2048];
    let mut slots = [RecvSlot::new(&mut buf, &mut [])];
    let r = within(
        WAIT,
        sock.recv_batch_deadline(&mut slots, Instant::now() + Duration::from_millis(150)),
    )
    .await;
    match r {
        Err(e) => assert!(e.is_timeout(), "{what}: expected a timeout, got {e:?}"),
        Ok(n) => panic!(
            "{what}: expected nothing queued, got {n} datagram(s), first {:?}",
            Got::of(&slots[0])
        ),
    }
}

/// Sends all of `txs` with `send_batch`, calling again for what a call left;
/// checks that each call sends between 1 and `MAX_BATCH`. Returns the
/// number of calls.
async fn send_all(sock: &UdpSocket, txs: &[Transmit<'_>]) -> usize {
    let mut done = 0;
    let mut calls = 0;
    while done < txs.len() {
        calls += 1;
        assert!(calls <= txs.len(), "send_batch made no progress");
        let left = txs.len() - done;
        let n = within(WAIT, sock.send_batch(&txs[done..]))
            .await
            .unwrap_or_else(|e| panic!("send_batch at {done} of {}: {e:?}", txs.len()));
        assert!(
            (1..=left.min(MAX_BATCH)).contains(&n),
            "send_batch of {left} returned {n} (at most {MAX_BATCH})"
        );
        done += n;
    }
    assert_eq!(done, txs.len(), "sent counts must add up exactly");
    calls
}

// ------------------------------------------------------ counts and order

async fn batches_of_various_sizes(local: &str) {
    assert_eq!(MAX_BATCH, 64);
    for n in [1usize, 32, 64, 100] {
        let a = bind(local).await;
        let b = bind(local).await;
        let (from, to) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let payloads: Vec<Vec<u8>> = (0..n).map(payload).collect();
        let txs: Vec<Transmit<'_>> = payloads
            .iter()
            .map(|p| Transmit::new(p, Some(to)))
            .collect();

        // The first call alone: never more than MAX_BATCH.
        let first = within(WAIT, a.send_batch(&txs))
            .await
            .unwrap_or_else(|e| panic!("n={n}: send_batch: {e:?}"));
        assert!(
            (1..=n.min(MAX_BATCH)).contains(&first),
            "n={n}: first send_batch returned {first}"
        );
        let rest_calls = send_all(&a, &txs[first..]).await;
        if n > MAX_BATCH {
            assert!(rest_calls >= 1, "n={n}: more than one call was needed");
        }

        let got = recv_exactly(&b, n, 2048, 0).await;
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g.data, payloads[i], "n={n}: datagram {i} out of order");
            assert_eq!(g.len, payloads[i].len(), "n={n}: length of {i}");
            assert_eq!(g.from, Some(from), "n={n}: sender of {i}");
            assert!(!g.flags.contains(MsgFlags::TRUNC), "n={n}: {i}: {g:?}");
        }
        assert_nothing_queued(&b, &format!("n={n} after all were received")).await;
    }
}

#[tokio::test]
async fn send_batch_and_recv_batch_count_order_sender_v4() {
    batches_of_various_sizes("127.0.0.1:0").await;
}

#[tokio::test]
async fn send_batch_and_recv_batch_count_order_sender_v6() {
    if !v6_available("send_batch_and_recv_batch_count_order_sender_v6") {
        return;
    }
    batches_of_various_sizes("[::1]:0").await;
}

#[tokio::test]
async fn recv_batch_with_fewer_slots_than_queued_leaves_the_rest() {
    let a = bind("127.0.0.1:0").await;
    let b = bind("127.0.0.1:0").await;
    let to = Some(b.local_addr().unwrap());
    let payloads: Vec<Vec<u8>> = (0..10).map(payload).collect();
    let txs: Vec<Transmit<'_>> = payloads.iter().map(|p| Transmit::new(p, to)).collect();
    send_all(&a, &txs).await;

    let mut received = Vec::new();
    for _ in 0..10 {
        if received.len() >= 10 {
            break;
        }
        let (mut x, mut y, mut z) = ([0u8; 64], [0u8; 64], [0u8; 64]);
        let mut slots = [
            RecvSlot::new(&mut x, &mut []),
            RecvSlot::new(&mut y, &mut []),
            RecvSlot::new(&mut z, &mut []),
        ];
        let n = within(WAIT, b.recv_batch(&mut slots)).await.unwrap();
        assert!((1..=3).contains(&n), "3 slots, got {n}");
        received.extend(slots[..n].iter().map(|s| s.data().to_vec()));
    }
    assert_eq!(received, payloads);
    assert_nothing_queued(&b, "after 10").await;
}

// ------------------------------------------------ per-datagram addresses

#[tokio::test]
async fn one_batch_to_two_receivers_each_gets_its_own() {
    let a = bind("127.0.0.1:0").await;
    let r1 = bind("127.0.0.1:0").await;
    let r2 = bind("127.0.0.1:0").await;
    let from = a.local_addr().unwrap();
    let (to1, to2) = (r1.local_addr().unwrap(), r2.local_addr().unwrap());
    let n = 50;
    let payloads: Vec<Vec<u8>> = (0..n).map(payload).collect();
    let txs: Vec<Transmit<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| Transmit::new(p, Some(if i % 2 == 0 { to1 } else { to2 })))
        .collect();
    send_all(&a, &txs).await;

    let got1 = recv_exactly(&r1, n / 2, 2048, 0).await;
    let got2 = recv_exactly(&r2, n / 2, 2048, 0).await;
    for (k, g) in got1.iter().enumerate() {
        assert_eq!(g.data, payloads[2 * k], "receiver 1, #{k}");
        assert_eq!(g.from, Some(from));
    }
    for (k, g) in got2.iter().enumerate() {
        assert_eq!(g.data, payloads[2 * k + 1], "receiver 2, #{k}");
        assert_eq!(g.from, Some(from));
    }
    assert_nothing_queued(&r1, "receiver 1").await;
    assert_nothing_queued(&r2, "receiver 2").await;
}

// ------------------------------------------- per-datagram control messages

#[tokio::test]
async fn per_datagram_tos_and_ttl_arrive_on_the_right_datagram_v4() {
    let a = bind("127.0.0.1:0").await;
    let b = bind("127.0.0.1:0").await;
    b.set(opts::RecvTos, true).unwrap();
    b.set(opts::RecvTtl, true).unwrap();
    let to = Some(b.local_addr().unwrap());
    let default_ttl = a.get(opts::IpTtl).unwrap() as u8;

    let n = 70; // more than one batch
    // i % 4 == 0: TOS and TTL; 1, 2: TOS only; 3: nothing (the socket's own
    // TOS 0 and default TTL: nothing leaks from a neighbour).
    let tos_of = |i: usize| -> u8 {
        if i % 4 == 3 {
            0
        } else {
            (((i % 63) as u8) + 1) << 2
        }
    };
    let ttl_of = |i: usize| -> u8 {
        if i % 4 == 0 {
            10 + i as u8
        } else {
            default_ttl
        }
    };
    let cms: Vec<Vec<Cmsg<'static>>> = (0..n)
        .map(|i| match i % 4 {
            0 => vec![Cmsg::Tos(tos_of(i)), Cmsg::Ttl(ttl_of(i))],
            3 => vec![],
            _ => vec![Cmsg::Tos(tos_of(i))],
        })
        .collect();
    let payloads: Vec<Vec<u8>> = (0..n).map(payload).collect();
    let txs: Vec<Transmit<'_>> = (0..n)
        .map(|i| Transmit {
            data: &payloads[i],
            to,
            cmsgs: &cms[i],
        })
        .collect();
    send_all(&a, &txs).await;

    let got = recv_exactly(&b, n, 2048, 64).await;
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.data, payloads[i], "datagram {i}");
        assert_eq!(g.tos, Some(tos_of(i)), "TOS of datagram {i}: {g:?}");
        assert_eq!(g.ttl, Some(ttl_of(i)), "TTL of datagram {i}: {g:?}");
        assert!(!g.flags.contains(MsgFlags::CTRUNC), "datagram {i}: {g:?}");
    }
}

#[tokio::test]
async fn per_datagram_tclass_arrives_on_the_right_datagram_v6() {
    if !v6_available("per_datagram_tclass_arrives_on_the_right_datagram_v6") {
        return;
    }
    let a = bind("[::1]:0").await;
    let b = bind("[::1]:0").await;
    b.set(opts::RecvTClassV6, true).unwrap();
    let to = Some(b.local_addr().unwrap());
    let n = 40;
    let tc_of = |i: usize| -> u8 {
        if i % 3 == 2 {
            0
        } else {
            (((i % 63) as u8) + 1) << 2
        }
    };
    let cms: Vec<Vec<Cmsg<'static>>> = (0..n)
        .map(|i| {
            if i % 3 == 2 {
                vec![]
            } else {
                vec![Cmsg::TClass(tc_of(i))]
            }
        })
        .collect();
    let payloads: Vec<Vec<u8>> = (0..n).map(payload).collect();
    let txs: Vec<Transmit<'_>> = (0..n)
        .map(|i| Transmit {
            data: &payloads[i],
            to,
            cmsgs: &cms[i],
        })
        .collect();
    send_all(&a, &txs).await;
    let got = recv_exactly(&b, n, 2048, 64).await;
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.data, payloads[i], "datagram {i}");
        assert_eq!(g.tclass, Some(tc_of(i)), "TCLASS of datagram {i}: {g:?}");
    }
}

// ------------------------------------------------------ slots and flags

#[tokio::test]
async fn recv_slots_report_truncation_addr_data_len_is_empty() {
    let a = bind("127.0.0.1:0").await;
    let b = bind("127.0.0.1:0").await;
    let from = a.local_addr().unwrap();
    let to = Some(b.local_addr().unwrap());

    // A slot that received nothing.
    let mut buf = [0u8; 8];
    let fresh = RecvSlot::new(&mut buf, &mut []);
    assert_eq!(fresh.len(), 0);
    assert!(fresh.is_empty());
    assert_eq!(fresh.data(), b"");
    assert_eq!(fresh.addr(), None);
    assert_eq!(fresh.flags(), MsgFlags::EMPTY);
    assert_eq!(fresh.gro_segment(), None);
    assert_eq!(fresh.cmsgs().count(), 0);
    assert!(format!("{fresh:?}").contains("RecvSlot"));

    let big: Vec<u8> = (0..100u8).collect();
    let small = b"0123456789";
    let txs = [
        Transmit::new(&big, to),
        Transmit::new(small, to),
        Transmit::new(b"", to),
        Transmit::new(b"sixteen bytes!!!", to),
    ];
    send_all(&a, &txs).await;

    let got = recv_exactly(&b, 4, 16, 0).await;
    assert!(got[0].flags.contains(MsgFlags::TRUNC), "{:?}", got[0]);
    assert_eq!(got[0].len, 16);
    assert_eq!(got[0].data, &big[..16]);
    assert!(!got[0].empty);

    assert!(!got[1].flags.contains(MsgFlags::TRUNC), "{:?}", got[1]);
    assert_eq!((got[1].len, &got[1].data[..]), (10, &small[..]));
    assert!(!got[1].empty);

    assert!(!got[2].flags.contains(MsgFlags::TRUNC), "{:?}", got[2]);
    assert_eq!(got[2].len, 0);
    assert!(got[2].empty);

    // Exactly the slot's size: not truncated.
    assert!(!got[3].flags.contains(MsgFlags::TRUNC), "{:?}", got[3]);
    assert_eq!(got[3].data, b"sixteen bytes!!!");
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.from, Some(from), "sender of {i}");
    }
}

#[tokio::test]
async fn zero_length_datagrams_in_a_batch_are_delivered() {
    let a = bind("127.0.0.1:0").await;
    let b = bind("127.0.0.1:0").await;
    let from = a.local_addr().unwrap();
    let to = b.local_addr().unwrap();
    let txs = [
        Transmit::new(b"", Some(to)),
        Transmit::new(b"x", Some(to)),
        Transmit::new(b"", Some(to)),
        Transmit::new(b"yz", Some(to)),
        Transmit::new(b"", Some(to)),
    ];
    send_all(&a, &txs).await;
    let got = recv_exactly(&b, 5, 64, 0).await;
    let lens: Vec<usize> = got.iter().map(|g| g.len).collect();
    assert_eq!(lens, [0, 1, 0, 2, 0]);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.data, txs[i].data, "datagram {i}");
        assert_eq!(g.empty, txs[i].data.is_empty(), "is_empty of {i}");
        assert_eq!(g.from, Some(from), "sender of {i}");
    }

    // Connected, with no destination per datagram.
    a.connect(to).await.unwrap();
    let txs = [Transmit::new(b"", None), Transmit::new(b"", None)];
    send_all(&a, &txs).await;
    let got = recv_exactly(&b, 2, 64, 0).await;
    assert!(got.iter().all(|g| g.len == 0 && g.from == Some(from)));
    assert_nothing_queued(&b, "after the empty datagrams").await;
}

// ------------------------------------------------------------- policy

#[tokio::test]
async fn batch_with_a_denied_destination_sends_nothing() {
    let ok = bind("127.0.0.1:0").await;
    let denied = bind("127.0.0.1:0").await;
    let (ok_addr, denied_addr) = (ok.local_addr().unwrap(), denied.local_addr().unwrap());
    let policy = Policy::builder()
        .addr_rule(
            AddrRule::new(Verdict::Deny, denied_addr.ip().into(), &[AddrUse::SendTo])
                .ports(denied_addr.port(), denied_addr.port()),
        )
        .build();
    let a = bind_with("127.0.0.1:0", policy).await;

    let txs = [
        Transmit::new(b"one", Some(ok_addr)),
        Transmit::new(b"two", Some(ok_addr)),
        Transmit::new(b"three", Some(denied_addr)),
        Transmit::new(b"four", Some(ok_addr)),
    ];
    let check = |e: &Error, form: &str| {
        assert!(e.is_denied(), "{form}: {e:?}");
        assert_eq!(e.errno(), libc::ECONNREFUSED, "{form}: {e:?}");
        let d = e.denial().expect("a denial");
        match d.asked {
            Asked::Address { usage, addr } => {
                assert_eq!((usage, addr), (AddrUse::SendTo, denied_addr), "{form}");
            }
            other => panic!("{form}: asked {other:?}"),
        }
    };

    let e = within(WAIT, a.send_batch(&txs)).await.unwrap_err();
    check(&e, "send_batch");
    let e = within(
        WAIT,
        a.send_batch_deadline(&txs, Instant::now() + Duration::from_secs(1)),
    )
    .await
    .unwrap_err();
    check(&e, "send_batch_deadline");
    within(WAIT, a.writable()).await.unwrap();
    let e = a.try_send_batch(&txs).unwrap_err();
    check(&e, "try_send_batch");
    let e = within(WAIT, poll_fn(|cx| a.poll_send_batch(cx, &txs)))
        .await
        .unwrap_err();
    check(&Error::from(e), "poll_send_batch");

    // Denied as the only datagram, and in first place.
    let e = within(
        WAIT,
        a.send_batch(&[Transmit::new(b"x", Some(denied_addr))]),
    )
    .await
    .unwrap_err();
    check(&e, "send_batch of one");

    // send_gso is checked too, and a denial does not turn GSO off.
    let data = vec![7u8; 4 * 100];
    let e = within(WAIT, a.send_gso(&data, 100, Some(denied_addr)))
        .await
        .unwrap_err();
    check(&e, "send_gso");
    assert!(a.gso_enabled(), "a denial must not turn GSO off");

    // Nothing of any denied batch went out: the first thing the allowed
    // receiver sees is the marker sent after them.
    send_all(&a, &[Transmit::new(b"marker", Some(ok_addr))]).await;
    let got = recv_exactly(&ok, 1, 64, 0).await;
    assert_eq!(got[0].data, b"marker", "a denied batch was partly sent");
    assert_nothing_queued(&ok, "allowed receiver").await;
    assert_nothing_queued(&denied, "denied receiver").await;

    // The same socket still sends allowed batches.
    let allowed = [
        Transmit::new(b"one", Some(ok_addr)),
        Transmit::new(b"two", Some(ok_addr)),
    ];
    send_all(&a, &allowed).await;
    let got = recv_exactly(&ok, 2, 64, 0).await;
    assert_eq!(
        (&got[0].data[..], &got[1].data[..]),
        (&b"one"[..], &b"two"[..])
    );
}

#[tokio::test]
async fn receive_only_or_oversized_cmsgs_in_a_transmit_are_einval() {
    let a = bind("127.0.0.1:0").await;
    let b = bind("127.0.0.1:0").await;
    let to = Some(b.local_addr().unwrap());
    let bad = [
        Cmsg::UdpGro(1000),
        Cmsg::Timestamp { sec: 1, usec: 2 },
        Cmsg::TimestampNs { sec: 1, nsec: 2 },
        Cmsg::TcpInq(3),
        Cmsg::Ttl(0),
    ];
    within(WAIT, a.writable()).await.unwrap();
    for m in bad {
        let cms = [Cmsg::Tos(0x10), m];
        let txs = [
            Transmit::new(b"good", to),
            Transmit {
                data: b"bad",
                to,
                cmsgs: &cms,
            },
        ];
        let e = within(WAIT, a.send_batch(&txs)).await.unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL, "{m:?}: {e:?}");
        assert!(!e.is_denied(), "{m:?}: {e:?}");
        let e = a.try_send_batch(&txs).unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL, "try, {m:?}: {e:?}");
        let e = within(WAIT, poll_fn(|cx| a.poll_send_batch(cx, &txs)))
            .await
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "poll, {m:?}: {e:?}");
    }

    // More than the 256 control bytes a datagram has (as in send_msg): an
    // error, and nothing sent.
    let too_many = [Cmsg::Tos(0x10); 11];
    let txs = [Transmit {
        data: b"crowded",
        to,
        cmsgs: &too_many,
    }];
    let e = within(WAIT, a.send_batch(&txs)).await.unwrap_err();
    assert!(!e.is_denied(), "{e:?}");
    assert_eq!(e.errno(), libc::ENOBUFS, "264 control bytes: {e:?}");

    // None of the refused batches sent anything, not even "good".
    send_all(&a, &[Transmit::new(b"marker", to)]).await;
    let got = recv_exactly(&b, 1, 64, 0).await;
    assert_eq!(got[0].data, b"marker", "a refused batch was partly sent");
    assert_nothing_queued(&b, "after the marker").await;
}

// ------------------------------------------- try_, poll_ and deadlines

#[tokio::test]
async fn try_forms_send_and_receive_and_give_eagain_when_empty() {
    let a = bind("127.0.0.1:0").await;
    let b = bind("127.0.0.1:0").await;
    let from = a.local_addr().unwrap();
    let to = Some(b.local_addr().unwrap());
    let payloads: Vec<Vec<u8>> = (0..5).map(payload).collect();
    let txs: Vec<Transmit<'_>> = payloads.iter().map(|p| Transmit::new(p, to)).collect();

    let mut sent = 0;
    for _ in 0..20 {
        if sent == txs.len() {
            break;
        }
        within(WAIT, a.writable()).await.unwrap();
        match a.try_send_batch(&txs[sent..]) {
            Ok(n) => {
                assert!((1..=txs.len() - sent).contains(&n));
                sent += n;
            }
            Err(e) => assert_eq!(e.errno(), libc::EAGAIN, "{e:?}"),
        }
    }
    assert_eq!(sent, 5);

    let mut bufs = vec![[0u8; 128]; MAX_BATCH];
    let mut slots: Vec<RecvSlot<'_>> = bufs.iter_mut().map(|b| RecvSlot::new(b, &mut [])).collect();
    let mut got = Vec::new();
    for _ in 0..20 {
        if got.len() >= 5 {
            break;
        }
        within(WAIT, b.readable()).await.unwrap();
        match b.try_recv_batch(&mut slots) {
            Ok(n) => {
                assert!((1..=MAX_BATCH).contains(&n));
                got.extend(slots[..n].iter().map(Got::of));
            }
            Err(e) => assert_eq!(e.errno(), libc::EAGAIN, "{e:?}"),
        }
    }
    assert_eq!(got.len(), 5);
    for (i, g) in got.iter().enumerate() {
        assert_eq!((&g.data, g.from), (&payloads[i], Some(from)), "{i}");
    }

    // Empty now: EAGAIN (WouldBlock), not a timeout; twice.
    for _ in 0..2 {
        let e = b.try_recv_batch(&mut slots).unwrap_err();
        assert_eq!(e.errno(), libc::EAGAIN, "{e:?}");
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e:?}");
        assert!(!e.is_timeout(), "{e:?}");
    }
    // Also on a socket that never received anything.
    let c = bind("127.0.0.1:0").await;
    let e = c.try_recv_batch(&mut slots).unwrap_err();
    assert_eq!(e.errno(), libc::EAGAIN, "{e:?}");
}

#[tokio::test]
async fn poll_forms_send_and_receive() {
    let a = bind("127.0.0.1:0").await;
    let b = bind("127.0.0.1:0").await;
    let from = a.local_addr().unwrap();
    let to = Some(b.local_addr().unwrap());
    let mut bufs = vec![[0u8; 128]; MAX_BATCH];
    let mut slots: Vec<RecvSlot<'_>> = bufs.iter_mut().map(|b| RecvSlot::new(b, &mut [])).collect();

    // Nothing queued: pending.
    let first = poll_fn(|cx| Poll::Ready(b.poll_recv_batch(cx, &mut slots))).await;
    assert!(first.is_pending(), "nothing was sent yet: {first:?}");

    let payloads: Vec<Vec<u8>> = (0..3).map(payload).collect();
    let txs: Vec<Transmit<'_>> = payloads.iter().map(|p| Transmit::new(p, to)).collect();
    let mut sent = 0;
    for _ in 0..10 {
        if sent == txs.len() {
            break;
        }
        let n = within(WAIT, poll_fn(|cx| a.poll_send_batch(cx, &txs[sent..])))
            .await
            .expect("poll_send_batch");
        assert!((1..=txs.len() - sent).contains(&n));
        sent += n;
    }
    assert_eq!(sent, 3);

    let mut got = Vec::new();
    for _ in 0..10 {
        if got.len() >= 3 {
            break;
        }
        let n = within(WAIT, poll_fn(|cx| b.poll_recv_batch(cx, &mut slots)))
            .await
            .expect("poll_recv_batch");
        assert!((1..=MAX_BATCH).contains(&n));
        got.extend(slots[..n].iter().map(Got::of));
    }
    assert_eq!(got.len(), 3);
    for (i, g) in got.iter().enumerate() {
        assert_eq!((&g.data, g.from), (&payloads[i], Some(from)), "{i}");
    }
    let again = poll_fn(|cx| Poll::Ready(b.poll_recv_batch(cx, &mut slots))).await;
    assert!(again.is_pending(), "all were received: {again:?}");
}

#[tokio::test]
async fn recv_batch_deadline_times_out_with_eagain() {
    let a = bind("127.0.0.1:0").await;
    let b = bind("127.0.0.1:0").await;
    let mut buf = [0u8; 64];
    let mut slots = [RecvSlot::new(&mut buf, &mut [])];

    let start = Instant::now();
    let e = within(
        WAIT,
        b.recv_batch_deadline(&mut slots, start + Duration::from_millis(150)),
    )
    .await
    .unwrap_err();
    let took = start.elapsed();
    assert!(e.is_timeout(), "{e:?}");
    assert_eq!(e.errno(), libc::EAGAIN, "{e:?}");
    assert!(
        took >= Duration::from_millis(140),
        "deadline fired early: {took:?}"
    );
    assert!(took < Duration::from_secs(WAIT), "{took:?}");

    // With a datagram queued, the deadline form returns it.
    let to = Some(b.local_addr().unwrap());
    let n = within(
        WAIT,
        a.send_batch_deadline(
            &[Transmit::new(b"in time", to)],
            Instant::now() + Duration::from_secs(1),
        ),
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
    let n = within(
        WAIT,
        b.recv_batch_deadline(&mut slots, Instant::now() + Duration::from_secs(1)),
    )
    .await
    .unwrap();
    assert_eq!((n, slots[0].data()), (1, &b"in time"[..]));

    // The socket's read timeout bounds recv_batch too.
    b.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let e = within(WAIT, b.recv_batch(&mut slots)).await.unwrap_err();
    assert!(e.is_timeout(), "read timeout: {e:?}");
    assert_eq!(e.errno(), libc::EAGAIN, "{e:?}");
}

// ----------------------------------------------------- ICMP errors

async fn connected_recv_batch_ends_with_econnrefused(local: &str) {
    let a = bind(local).await;
    let dead = refused_udp_addr(local);
    a.connect(dead).await.unwrap();
    let mut buf = [0u8; 64];
    let mut slots = [RecvSlot::new(&mut buf, &mut [])];

    let n = within(WAIT, a.send_batch(&[Transmit::new(b"anyone?", None)]))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let e = within(WAIT, a.recv_batch(&mut slots))
        .await
        .expect_err("recv_batch must end with the ICMP error");
    assert_eq!(e.errno(), libc::ECONNREFUSED, "{local}: {e:?}");
    assert!(!e.is_timeout());

    // The deadline form too.
    within(WAIT, a.send_batch(&[Transmit::new(b"again", None)]))
        .await
        .unwrap();
    let e = within(
        WAIT,
        a.recv_batch_deadline(&mut slots, Instant::now() + Duration::from_millis(1500)),
    )
    .await
    .expect_err("recv_batch_deadline must end with the ICMP error");
    assert_eq!(e.errno(), libc::ECONNREFUSED, "{local} deadline: {e:?}");
    assert!(!e.is_timeout(), "{local}: {e:?}");

    // And the poll form.
    within(WAIT, a.send_batch(&[Transmit::new(b"still?", None)]))
        .await
        .unwrap();
    let e = within(WAIT, poll_fn(|cx| a.poll_recv_batch(cx, &mut slots)))
        .await
        .expect_err("poll_recv_batch must end with the ICMP error");
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED),
        "{local} poll: {e:?}"
    );

    // And the try form, once the error is pending.
    within(WAIT, a.send_batch(&[Transmit::new(b"last", None)]))
        .await
        .unwrap();
    let mut result = None;
    for _ in 0..20 {
        within(WAIT, a.readable()).await.unwrap();
        match a.try_recv_batch(&mut slots) {
            Err(e) if e.errno() == libc::EAGAIN => continue,
            r => {
                result = Some(r);
                break;
            }
        }
    }
    let e = result
        .expect("try_recv_batch kept giving EAGAIN")
        .expect_err("try_recv_batch must give the ICMP error");
    assert_eq!(e.errno(), libc::ECONNREFUSED, "{local} try: {e:?}");
}

#[tokio::test]
async fn recv_batch_on_connected_socket_ends_with_econnrefused_v4() {
    connected_recv_batch_ends_with_econnrefused("127.0.0.1:0").await;
}

#[tokio::test]
async fn recv_batch_on_connected_socket_ends_with_econnrefused_v6() {
    if !v6_available("recv_batch_on_connected_socket_ends_with_econnrefused_v6") {
        return;
    }
    connected_recv_batch_ends_with_econnrefused("[::1]:0").await;
}

// ------------------------------------------------------------ GSO/GRO

/// `len` bytes where each segment of `seg` bytes is recognisable.
fn gso_data(len: usize, seg: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i / seg) as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

/// Turns GRO on for `b`; `false` (with the reason printed) if the kernel
/// has none.
fn gro_on(b: &UdpSocket, test: &str) -> bool {
    let on = b.enable_gro().expect("enable_gro");
    if !on {
        println!("{test}: this kernel has no UDP GRO (ENOPROTOOPT): GRO checks skipped");
    }
    on
}

async fn gso_to_gro_receiver(local: &str, test: &str) {
    let a = bind(local).await;
    let b = bind(local).await;
    let on = gro_on(&b, test);
    assert!(on, "{test}: enable_gro() must be true on this kernel");
    assert!(b.get(opts::UdpGro).unwrap(), "UDP_GRO reads back on");
    let from = a.local_addr().unwrap();
    let to = Some(b.local_addr().unwrap());

    for len in [32 * 1200, 32 * 1200 - 500] {
        let data = gso_data(len, 1200);
        let sent = within(WAIT, a.send_gso(&data, 1200, to)).await.unwrap();
        assert_eq!(sent, len, "send_gso returns the bytes sent");
        assert!(a.gso_enabled(), "GSO must stay on after a good send");

        let got = recv_exactly(&b, 1, 65536, 64).await;
        let g = &got[0];
        assert_eq!(g.len, len, "{local}: one coalesced receive of {len} bytes");
        assert!(g.data == data, "{local}: coalesced bytes differ");
        assert_eq!(g.gro, Some(1200), "{local}: gro_segment: {g:?}");
        assert_eq!(g.from, Some(from));
        assert!(!g.flags.contains(MsgFlags::TRUNC), "{g:?}");
    }
    assert_nothing_queued(&b, "after the GRO receives").await;
}

#[tokio::test]
async fn send_gso_arrives_coalesced_at_a_gro_receiver_v4() {
    gso_to_gro_receiver(
        "127.0.0.1:0",
        "send_gso_arrives_coalesced_at_a_gro_receiver_v4",
    )
    .await;
}

#[tokio::test]
async fn send_gso_arrives_coalesced_at_a_gro_receiver_v6() {
    let test = "send_gso_arrives_coalesced_at_a_gro_receiver_v6";
    if !v6_available(test) {
        return;
    }
    gso_to_gro_receiver("[::1]:0", test).await;
}

async fn gso_to_plain_receiver(local: &str) {
    let a = bind(local).await;
    let b = bind(local).await;
    let from = a.local_addr().unwrap();
    let to = b.local_addr().unwrap();

    for (len, last) in [(32 * 1200, 1200), (32 * 1200 - 200, 1000)] {
        let data = gso_data(len, 1200);
        let sent = within(WAIT, a.send_gso(&data, 1200, Some(to)))
            .await
            .unwrap();
        assert_eq!(sent, len);
        assert!(a.gso_enabled(), "GSO must stay on after a good send");
        let got = recv_exactly(&b, 32, 2048, 64).await;
        for (i, g) in got.iter().enumerate() {
            let want = if i == 31 { last } else { 1200 };
            assert_eq!(g.len, want, "{local}: segment {i} of {len}");
            assert!(
                g.data[..] == data[i * 1200..i * 1200 + want],
                "{local}: segment {i} bytes differ (out of order?)"
            );
            assert_eq!(g.gro, None, "{local}: no GRO on this receiver: {g:?}");
            assert_eq!(g.from, Some(from));
        }
        assert_nothing_queued(&b, "after 32 segments").await;
    }

    // Connected, no destination.
    a.connect(to).await.unwrap();
    let data = gso_data(4 * 1000, 1000);
    let sent = within(WAIT, a.send_gso(&data, 1000, None)).await.unwrap();
    assert_eq!(sent, data.len());
    let got = recv_exactly(&b, 4, 2048, 0).await;
    for (i, g) in got.iter().enumerate() {
        assert!(g.data[..] == data[i * 1000..(i + 1) * 1000], "segment {i}");
    }

    // Data no longer than one segment: one datagram.
    let sent = within(WAIT, a.send_gso(b"short", 1200, None))
        .await
        .unwrap();
    assert_eq!(sent, 5);
    let got = recv_exactly(&b, 1, 2048, 0).await;
    assert_eq!(got[0].data, b"short");
    assert!(a.gso_enabled());
}

#[tokio::test]
async fn send_gso_arrives_as_separate_datagrams_without_gro_v4() {
    gso_to_plain_receiver("127.0.0.1:0").await;
}

#[tokio::test]
async fn send_gso_arrives_as_separate_datagrams_without_gro_v6() {
    if !v6_available("send_gso_arrives_as_separate_datagrams_without_gro_v6") {
        return;
    }
    gso_to_plain_receiver("[::1]:0").await;
}

#[tokio::test]
async fn send_gso_with_segment_zero_is_einval() {
    let a = bind("127.0.0.1:0").await;
    let b = bind("127.0.0.1:0").await;
    let to = Some(b.local_addr().unwrap());
    for data in [&[1u8; 3000][..], &b"x"[..], &b""[..]] {
        let e = within(WAIT, a.send_gso(data, 0, to)).await.unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL, "{} bytes: {e:?}", data.len());
        assert!(!e.is_denied(), "{e:?}");
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e:?}");
    }
    assert!(
        a.gso_enabled(),
        "segment 0 is the caller's error, not a refusal"
    );
    assert_nothing_queued(&b, "after segment 0").await;
}

#[tokio::test]
async fn send_gso_falls_back_when_the_kernel_refuses_gso() {
    let a = bind("127.0.0.1:0").await;
    let b = bind("127.0.0.1:0").await;
    let c = bind("127.0.0.1:0").await;
    let from = a.local_addr().unwrap();
    let b_addr = b.local_addr().unwrap();
    let to = Some(b_addr);

    // A real refusal: with SO_NO_CHECK set, Linux refuses every GSO send
    // (EINVAL in udp_send_skb). The option is outside hostsock's table, so
    // the test sets it through the raw layer on a duplicate of the fd, under
    // Policy::allow_all (unknown options pass through).
    let raw = hostsock::raw::RawSocket::from_fd(
        std::os::fd::AsFd::as_fd(&a).try_clone_to_owned().unwrap(),
        std::sync::Arc::new(Policy::allow_all()),
    )
    .unwrap();
    raw.setsockopt(libc::SOL_SOCKET, libc::SO_NO_CHECK, &1i32.to_ne_bytes())
        .unwrap();
    let refused = a
        .send_msg(
            &[std::io::IoSlice::new(&[0u8; 300])],
            to,
            &[Cmsg::UdpSegment(100)],
            hostsock::msg::SendFlags::EMPTY,
        )
        .await;
    assert_eq!(
        refused.map_err(|e| e.errno()),
        Err(libc::EINVAL),
        "SO_NO_CHECK makes this kernel refuse GSO"
    );
    assert_nothing_queued(&b, "after the refused probe").await;

    assert!(a.gso_enabled(), "GSO starts on");
    let data = gso_data(200 * 100 - 37, 100);
    let sent = within(WAIT, a.send_gso(&data, 100, to)).await.unwrap();
    assert_eq!(sent, data.len(), "the fallback sends every byte");
    assert!(!a.gso_enabled(), "a refusal turns GSO off");

    let got = recv_exactly(&b, 200, 2048, 0).await;
    for (i, g) in got.iter().enumerate() {
        let want = if i == 199 { 63 } else { 100 };
        assert_eq!(g.len, want, "segment {i}");
        assert!(
            g.data[..] == data[i * 100..i * 100 + want],
            "segment {i} bytes differ (out of order?)"
        );
        assert_eq!(g.from, Some(from));
    }
    let joined: Vec<u8> = got.iter().flat_map(|g| g.data.iter().copied()).collect();
    assert!(joined == data, "the segments rebuild the data");
    assert_nothing_queued(&b, "after the fallback").await;

    // Once off, GSO stays off: with SO_NO_CHECK cleared, a send the kernel
    // would now take as one GSO packet still goes out as separate
    // datagrams, which a GRO receiver gets one by one.
    raw.setsockopt(libc::SOL_SOCKET, libc::SO_NO_CHECK, &0i32.to_ne_bytes())
        .unwrap();
    if gro_on(&c, "send_gso_falls_back_when_the_kernel_refuses_gso") {
        let data = gso_data(8 * 1200, 1200);
        let to_c = Some(c.local_addr().unwrap());
        let sent = within(WAIT, a.send_gso(&data, 1200, to_c)).await.unwrap();
        assert_eq!(sent, data.len());
        assert!(!a.gso_enabled());
        let got = recv_exactly(&c, 8, 65536, 64).await;
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g.len, 1200, "segment {i}: {g:?}");
            assert_eq!(g.gro, None, "segment {i} was sent alone: {g:?}");
            assert!(g.data[..] == data[i * 1200..(i + 1) * 1200], "segment {i}");
        }
    }
}

// ------------------------------------------------- policy: control buffer

#[tokio::test]
async fn recv_batch_honours_the_policys_control_max() {
    use hostsock::msg::RecvFlags;
    use std::io::IoSliceMut;

    // A policy that hands the host at most 16 control bytes: too few for
    // one IP_TOS message (CMSG_LEN(1) = 17).
    let policy = Policy::builder().control_max(16).build();
    assert_eq!(policy.control_max(), 16);
    let b = bind_with("127.0.0.1:0", policy).await;
    b.set(opts::RecvTos, true).unwrap();
    let a = bind("127.0.0.1:0").await;
    let to = Some(b.local_addr().unwrap());
    let cms = [Cmsg::Tos(0x20)];
    let tx = Transmit {
        data: b"tos",
        to,
        cmsgs: &cms,
    };

    // recv_msg: the reference. 64 control bytes offered, 16 reach the
    // kernel: the TOS message is cut and CTRUNC set.
    send_all(&a, &[tx]).await;
    let mut buf = [0u8; 16];
    let mut control = [0u8; 64];
    let m = within(
        WAIT,
        b.recv_msg(
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::EMPTY,
        ),
    )
    .await
    .unwrap();
    let via_msg: Vec<Cmsg<'_>> = m.cmsgs().collect();
    assert!(m.control_truncated(), "recv_msg: {:?} {via_msg:?}", m.flags);
    assert!(via_msg.is_empty(), "recv_msg: {via_msg:?}");

    // recv_batch must hand the host no more than the policy allows either.
    send_all(&a, &[tx]).await;
    let got = recv_exactly(&b, 1, 64, 64).await;
    assert_eq!(got[0].data, b"tos");
    assert!(
        got[0].tos.is_none() && got[0].flags.contains(MsgFlags::CTRUNC),
        "recv_batch handed the kernel more control bytes than the policy's \
         control_max (16): {:?}",
        got[0]
    );
}

/// Turns on software receive timestamps in `SO_TIMESTAMPING` form, whose
/// `SCM_TIMESTAMPING` message this crate does not decode (an unknown
/// control message on every datagram), and `SO_TIMESTAMP` (a known one). Set directly on the fd: the point
/// is the receive path, not the option policy.
fn timestamping_on(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let flags: libc::c_int =
        (libc::SOF_TIMESTAMPING_RX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE) as libc::c_int;
    // SAFETY: `flags` is a live `c_int` and the length passed is its size;
    // the fd is open for the borrow of `sock`.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPING,
            (&flags as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "SO_TIMESTAMPING: {}",
        std::io::Error::last_os_error()
    );
    // SO_TIMESTAMP too: with it the kernel stamps a datagram that arrived
    // before the global timestamping switch took effect, so the
    // SCM_TIMESTAMPING message is on every datagram.
    sock.set(opts::Timestamp, true).expect("SO_TIMESTAMP");
}

#[tokio::test]
async fn recv_batch_unknown_cmsgs_follow_the_policy_like_recv_msg() {
    use hostsock::msg::RecvFlags;
    use std::io::IoSliceMut;

    let is_stamp = |m: &Cmsg<'_>| {
        matches!(m, Cmsg::Unknown { level, ty, .. }
            if *level == libc::SOL_SOCKET && *ty == libc::SCM_TIMESTAMPING)
    };
    let a = bind("127.0.0.1:0").await;
    for keep in [false, true] {
        let policy = Policy::builder().keep_unknown_cmsgs(keep).build();
        let b = bind_with("127.0.0.1:0", policy).await;
        timestamping_on(&b);
        let to = Some(b.local_addr().unwrap());

        // recv_msg, the reference: kept and shown, or dropped with CTRUNC.
        send_all(&a, &[Transmit::new(b"m", to)]).await;
        let mut buf = [0u8; 16];
        let mut control = [0u8; 256];
        let m = within(
            WAIT,
            b.recv_msg(
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::EMPTY,
            ),
        )
        .await
        .unwrap();
        let shown = m.cmsgs().filter(is_stamp).count();
        assert_eq!(
            (shown, m.control_truncated()),
            (usize::from(keep), !keep),
            "recv_msg, keep_unknown_cmsgs({keep}): {:?} {:?}",
            m.flags,
            m.cmsgs().collect::<Vec<_>>()
        );

        // recv_batch: the slot must either show the message or say CTRUNC.
        send_all(&a, &[Transmit::new(b"b", to)]).await;
        let mut buf = [0u8; 16];
        let mut control = [0u8; 256];
        let mut slots = [RecvSlot::new(&mut buf, &mut control)];
        let n = within(WAIT, b.recv_batch(&mut slots)).await.unwrap();
        assert_eq!(n, 1);
        let s = &slots[0];
        let shown = s.cmsgs().filter(is_stamp).count();
        let ctrunc = s.flags().contains(MsgFlags::CTRUNC);
        assert_eq!(
            (shown, ctrunc),
            (usize::from(keep), !keep),
            "recv_batch, keep_unknown_cmsgs({keep}): the SCM_TIMESTAMPING message \
             is neither shown by RecvSlot::cmsgs() nor reported with CTRUNC \
             (flags {:?}, cmsgs {:?})",
            s.flags(),
            s.cmsgs().collect::<Vec<_>>()
        );
    }
}

// ------------------------------------------------------------ SHUT_RD

/// What the SHUT_RD thread reports.
enum ShutRd {
    Addr(SocketAddr),
    RecvGave(std::result::Result<usize, String>),
    BatchGave(std::result::Result<(usize, Vec<usize>), String>),
}

#[tokio::test]
async fn recv_batch_after_shutdown_read_returns_at_once() {
    // UdpSocket::shutdown_with documents: "After Shutdown::Read, a receive
    // with nothing queued returns 0 at once, as a blocking Linux socket
    // does" (a blocking recvmmsg(2) then returns 0-byte messages; with
    // MSG_WAITFORONE, one). recv does; recv_batch must not hang either.
    //
    // The receive runs on a thread with its own runtime: if it spins
    // without yielding, no timer of this runtime could end it. After the
    // 2 s bound a datagram is sent to unstick it (UDP still queues
    // datagrams after SHUT_RD).
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<ShutRd>();
    let worker = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            a.connect(peer_addr).await.unwrap();
            a.shutdown_with(std::net::Shutdown::Read).unwrap();
            let _ = tx.send(ShutRd::Addr(a.local_addr().unwrap()));
            let mut one = [0u8; 8];
            let r = tokio::time::timeout(Duration::from_secs(WAIT), a.recv(&mut one)).await;
            let r = match r {
                Ok(Ok(n)) => Ok(n),
                Ok(Err(e)) => Err(format!("{e:?}")),
                Err(_) => Err("timed out".to_string()),
            };
            let _ = tx.send(ShutRd::RecvGave(r));
            let (mut x, mut y) = ([0u8; 8], [0u8; 8]);
            let mut slots = [
                RecvSlot::new(&mut x, &mut []),
                RecvSlot::new(&mut y, &mut []),
            ];
            let r = tokio::time::timeout(Duration::from_secs(WAIT), a.recv_batch(&mut slots)).await;
            let r = match r {
                Ok(Ok(n)) => Ok((n, slots[..n].iter().map(RecvSlot::len).collect())),
                Ok(Err(e)) => Err(format!("{e:?}")),
                Err(_) => Err("timed out (the timer fired)".to_string()),
            };
            let _ = tx.send(ShutRd::BatchGave(r));
        });
    });
    let bound = Duration::from_secs(WAIT);
    let a_addr = match rx.recv_timeout(bound) {
        Ok(ShutRd::Addr(a)) => a,
        _ => panic!("the worker did not start"),
    };
    match rx.recv_timeout(bound + Duration::from_secs(1)) {
        Ok(ShutRd::RecvGave(r)) => assert_eq!(r, Ok(0), "recv after SHUT_RD (reference)"),
        _ => panic!("recv after SHUT_RD did not return"),
    }
    let batch = rx.recv_timeout(bound + Duration::from_secs(1));
    let stuck = batch.is_err();
    if stuck {
        // Unstick the worker, then see what it reports.
        peer.send_to(b"unstick", a_addr).unwrap();
    }
    let after = if stuck {
        rx.recv_timeout(bound).ok()
    } else {
        None
    };
    let joined = if stuck && after.is_none() {
        "still stuck after a datagram was sent to it"
    } else {
        worker.join().expect("worker panicked");
        "joined"
    };
    match (batch, after) {
        (Ok(ShutRd::BatchGave(Ok((n, lens)))), _) => {
            assert!((1..=2).contains(&n), "recv_batch after SHUT_RD gave {n}");
            assert!(lens.iter().all(|&l| l == 0), "{lens:?}");
        }
        (Ok(ShutRd::BatchGave(Err(e))), _) => {
            panic!("recv_batch after SHUT_RD: {e}")
        }
        (_, Some(ShutRd::BatchGave(r))) => panic!(
            "recv_batch after SHUT_RD with nothing queued neither returned nor \
             let its own 2 s timer fire (the runtime thread spun: no yield); \
             it returned only once a datagram arrived: {r:?} (worker {joined})"
        ),
        _ => panic!(
            "recv_batch after SHUT_RD hung, blocking its runtime thread \
             (worker {joined})"
        ),
    }
}

// ------------------------------------------- partial batches and GSO cmsgs

#[tokio::test]
async fn a_datagram_the_kernel_refuses_ends_the_batch_there() {
    let a = bind("127.0.0.1:0").await;
    let b = bind("127.0.0.1:0").await;
    let to = Some(b.local_addr().unwrap());
    let huge = vec![0u8; 70_000];
    let txs = [
        Transmit::new(b"first", to),
        Transmit::new(b"second", to),
        Transmit::new(&huge, to),
        Transmit::new(b"fourth", to),
    ];
    // The kernel sends the two before the one it refuses and says so.
    let n = within(WAIT, a.send_batch(&txs)).await.unwrap();
    assert_eq!(n, 2, "sendmmsg stops at the refused datagram");
    // The refused one alone: its error.
    let e = within(WAIT, a.send_batch(&txs[2..])).await.unwrap_err();
    assert_eq!(e.errno(), libc::EMSGSIZE, "{e:?}");
    let n = within(WAIT, a.send_batch(&txs[3..])).await.unwrap();
    assert_eq!(n, 1);
    let got = recv_exactly(&b, 3, 128, 0).await;
    let data: Vec<&[u8]> = got.iter().map(|g| &g.data[..]).collect();
    assert_eq!(data, [&b"first"[..], b"second", b"fourth"]);
    assert_nothing_queued(&b, "after the partial batch").await;
}

#[tokio::test]
async fn udp_segment_cmsg_per_datagram_in_a_batch() {
    let a = bind("127.0.0.1:0").await;
    let b = bind("127.0.0.1:0").await;
    let to = Some(b.local_addr().unwrap());
    let cut = [Cmsg::UdpSegment(100)];
    let big = gso_data(350, 100);
    let txs = [
        Transmit::new(b"before", to),
        Transmit {
            data: &big,
            to,
            cmsgs: &cut,
        },
        Transmit::new(b"after", to),
    ];
    send_all(&a, &txs).await;
    // Cut by the kernel into 100, 100, 100, 50; the others whole.
    let got = recv_exactly(&b, 6, 2048, 0).await;
    let lens: Vec<usize> = got.iter().map(|g| g.len).collect();
    assert_eq!(lens, [6, 100, 100, 100, 50, 5]);
    let middle: Vec<u8> = got[1..5].iter().flat_map(|g| g.data.clone()).collect();
    assert!(middle == big, "segments rebuild the datagram");
    assert_eq!(
        (&got[0].data[..], &got[5].data[..]),
        (&b"before"[..], &b"after"[..])
    );
}

/// Each datagram of a batch has the control room `send_msg` has (256
/// bytes; 80 here, more than the 64 a batch used to allow), and the
/// datagrams share 4 KiB: a batch whose controls need more is cut before
/// the first datagram that does not fit, and the count says so.
#[tokio::test]
async fn send_batch_controls_get_send_msgs_room_and_a_batch_is_cut_at_4_kib() {
    let a = bind("127.0.0.1:0").await;
    let b = bind("127.0.0.1:0").await;
    b.set(opts::RecvTos, true).unwrap();
    b.set(opts::RecvTtl, true).unwrap();
    let to = Some(b.local_addr().unwrap());
    // PKTINFO (32) + TOS (24) + TTL (24): 80 bytes.
    let three = [
        Cmsg::PktInfoV4 {
            ifindex: 0,
            spec_dst: std::net::Ipv4Addr::LOCALHOST,
            addr: std::net::Ipv4Addr::UNSPECIFIED,
        },
        Cmsg::Tos(0x28),
        Cmsg::Ttl(9),
    ];
    let n = within(
        WAIT,
        a.send_batch(&[Transmit {
            data: b"three",
            to,
            cmsgs: &three,
        }]),
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
    let got = recv_exactly(&b, 1, 64, 128).await;
    assert_eq!(got[0].tos, Some(0x28));
    assert_eq!(got[0].ttl, Some(9));

    // 8 TOS messages: 192 bytes each; 21 x 192 = 4032 fit in 4 KiB.
    let eight = [Cmsg::Tos(0x10); 8];
    let txs: Vec<Transmit<'_>> = (0..30)
        .map(|_| Transmit {
            data: b"eight",
            to,
            cmsgs: &eight,
        })
        .collect();
    let n = within(WAIT, a.send_batch(&txs)).await.unwrap();
    assert_eq!(n, 21, "cut before the 22nd datagram");
    let n = within(WAIT, a.send_batch(&txs[21..])).await.unwrap();
    assert_eq!(n, 9);
    let got = recv_exactly(&b, 30, 64, 128).await;
    assert!(
        got.iter()
            .all(|g| g.tos == Some(0x10) && &g.data[..] == b"eight")
    );
    assert_nothing_queued(&b, "after the cut batches").await;
}
