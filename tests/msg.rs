//! Integration tests for messages: `send_msg`/`recv_msg` with flags and
//! control messages on `UdpSocket` and `TcpStream` (SPEC.md "Message flags"
//! and "Control messages"). Loopback only (127.0.0.0/8 and ::1, plus the
//! wildcard servers the PKTINFO tests need), every wait bounded by 2 s,
//! every loop bounded in count.

mod util;

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt;
use futures::future::poll_fn;
use hostsock::cmsg::{Cmsg, CmsgBuf, CmsgIter, ExtendedError};
use hostsock::msg::{MsgFlags, RecvFlags, RecvMeta, SendFlags};
use hostsock::policy::{AddrRule, AddrUse, Cidr, UnknownOpt, Verdict};
use hostsock::raw::RawSocket;
use hostsock::{Policy, TcpListener, TcpStream, UdpSocket, opts};
use tokio::sync::oneshot;
use tokio::time::Instant;

use util::within;

// ---------------------------------------------------------------- helpers

/// A loopback UDP address nothing is bound to (a port just released).
fn closed_udp_v4() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("local_addr")
}

/// The same on `::1`.
fn closed_udp_v6() -> SocketAddr {
    let s = std::net::UdpSocket::bind("[::1]:0").expect("bind v6");
    s.local_addr().expect("local_addr")
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

async fn udp(addr: &str) -> UdpSocket {
    UdpSocket::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

async fn udp_with(addr: &str, policy: Policy) -> UdpSocket {
    UdpSocket::bind_with_policy(addr, Arc::new(policy))
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

/// One `recv_msg` into `buf`, bounded by 2 s.
async fn recv1<'c>(
    s: &UdpSocket,
    buf: &mut [u8],
    control: &'c mut [u8],
    flags: RecvFlags,
) -> hostsock::Result<RecvMeta<'c>> {
    within(2, s.recv_msg(&mut [IoSliceMut::new(buf)], control, flags)).await
}

/// One `send_msg` of `data` to `to`, bounded by 2 s.
async fn send1(
    s: &UdpSocket,
    data: &[u8],
    to: SocketAddr,
    cmsgs: &[Cmsg<'_>],
) -> hostsock::Result<usize> {
    within(
        2,
        s.send_msg(&[IoSlice::new(data)], Some(to), cmsgs, SendFlags::EMPTY),
    )
    .await
}

/// Asserts nothing arrives on `s` within `ms` milliseconds.
async fn assert_nothing_arrives(s: &UdpSocket, ms: u64) {
    let mut buf = [0u8; 64];
    let mut control = [0u8; 64];
    let r = s
        .recv_msg_deadline(
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::EMPTY,
            Instant::now() + Duration::from_millis(ms),
        )
        .await;
    match r {
        Err(e) => assert!(e.is_timeout(), "expected a timeout, got {e:?}"),
        Ok(m) => panic!(
            "expected nothing, received {} bytes from {:?}",
            m.len, m.addr
        ),
    }
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let addr = l.local_addr().expect("local_addr");
    let (c, a) = within(2, async {
        tokio::join!(TcpStream::connect(addr), l.accept())
    })
    .await;
    (c.expect("connect"), a.expect("accept").0)
}

/// Reads the error queue until an entry comes or 2 s pass, sending `probe`
/// from `s` to `to` again every 200 ms (ICMP errors are rate limited
/// host-wide, and other tests in this binary provoke them too). Returns
/// the entry's payload length, flags, address and extended error.
async fn errqueue_entry(
    s: &UdpSocket,
    to: SocketAddr,
    probe: &[u8],
    v6: bool,
) -> (Vec<u8>, MsgFlags, Option<SocketAddr>, ExtendedError) {
    let start = Instant::now();
    for i in 0..200 {
        if i % 20 == 0 {
            // A send may report the error left by the previous probe
            // (sk_err): that is not what is being tested here.
            let _ = send1(s, probe, to, &[]).await;
        }
        let mut buf = [0u8; 64];
        let mut control = CmsgBuf::<256>::new();
        match s.try_recv_msg(
            &mut [IoSliceMut::new(&mut buf)],
            control.space_mut(),
            RecvFlags::ERRQUEUE,
        ) {
            Ok(m) => {
                let errs: Vec<ExtendedError> = m
                    .cmsgs()
                    .filter_map(|c| match c {
                        Cmsg::RecvErrV4(e) if !v6 => Some(e),
                        Cmsg::RecvErrV6(e) if v6 => Some(e),
                        _ => None,
                    })
                    .collect();
                assert_eq!(
                    errs.len(),
                    1,
                    "one extended error expected in {:?}",
                    m.cmsgs().collect::<Vec<_>>()
                );
                return (buf[..m.len].to_vec(), m.flags, m.addr, errs[0]);
            }
            Err(e) => assert_eq!(e.errno(), libc::EAGAIN, "errqueue read: {e:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "no error queue entry within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no error queue entry after 200 tries");
}

/// CPU time (user + system) of the calling thread. A current-thread tokio
/// runtime runs every task of a test on that test's thread, so this is the
/// CPU the test's tasks used, whatever other tests in the process do.
fn thread_cpu() -> Duration {
    // SAFETY: `rusage` is plain integers, all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage` for the call's duration.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

// ------------------------------------------------- per-packet TOS / TTL

#[tokio::test]
async fn tos_set_per_packet_arrives_in_receivers_cmsgs_v4() {
    let a = udp("127.0.0.1:0").await;
    let b = udp("127.0.0.1:0").await;
    b.set(opts::RecvTos, true).unwrap();
    let to = b.local_addr().unwrap();

    for (tos, payload) in [(0x28u8, &b"marked"[..]), (0xb8, b"ef")] {
        assert_eq!(
            send1(&a, payload, to, &[Cmsg::Tos(tos)]).await.unwrap(),
            payload.len()
        );
        let mut buf = [0u8; 32];
        let mut control = [0u8; 128];
        let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
            .await
            .unwrap();
        assert_eq!(m.len, payload.len());
        assert_eq!(m.addr, Some(a.local_addr().unwrap()));
        let cm: Vec<Cmsg<'_>> = m.cmsgs().collect();
        assert!(cm.contains(&Cmsg::Tos(tos)), "TOS {tos:#x} not in {cm:?}");
        assert!(!m.control_truncated(), "{:?}", m.flags);
        assert_eq!(&buf[..m.len], payload);
    }

    // Without the message the socket's own TOS (0) is used: the value
    // really is per packet.
    send1(&a, b"plain", to, &[]).await.unwrap();
    let mut buf = [0u8; 32];
    let mut control = [0u8; 128];
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    let cm: Vec<Cmsg<'_>> = m.cmsgs().collect();
    assert!(cm.contains(&Cmsg::Tos(0)), "{cm:?}");
}

#[tokio::test]
async fn tclass_set_per_packet_arrives_in_receivers_cmsgs_v6() {
    if !v6_available("tclass_set_per_packet_arrives_in_receivers_cmsgs_v6") {
        return;
    }
    let a = udp("[::1]:0").await;
    let b = udp("[::1]:0").await;
    b.set(opts::RecvTClassV6, true).unwrap();
    let to = b.local_addr().unwrap();

    send1(&a, b"tc", to, &[Cmsg::TClass(0x48)]).await.unwrap();
    let mut buf = [0u8; 32];
    let mut control = [0u8; 128];
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    assert_eq!((m.len, m.addr), (2, Some(a.local_addr().unwrap())));
    let cm: Vec<Cmsg<'_>> = m.cmsgs().collect();
    assert!(cm.contains(&Cmsg::TClass(0x48)), "{cm:?}");

    send1(&a, b"plain", to, &[]).await.unwrap();
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    let cm: Vec<Cmsg<'_>> = m.cmsgs().collect();
    assert!(cm.contains(&Cmsg::TClass(0)), "{cm:?}");
}

/// Three send messages (PKTINFO 32 bytes, TOS and TTL 24 each: 80 bytes)
/// take more control room than the send fast path keeps on the stack;
/// every one of them must still reach the kernel, as must two (56 bytes,
/// the fast path's case).
#[tokio::test]
async fn send_msg_with_more_control_than_the_fast_path_holds_sends_all_of_it() {
    let a = udp("127.0.0.1:0").await;
    let b = udp("0.0.0.0:0").await;
    b.set(opts::RecvTtl, true).unwrap();
    b.set(opts::RecvTos, true).unwrap();
    b.set(opts::PktInfoV4, true).unwrap();
    let to: SocketAddr = (Ipv4Addr::LOCALHOST, b.local_addr().unwrap().port()).into();
    let default_ttl = u8::try_from(a.ttl().unwrap()).unwrap();
    let ttl = if default_ttl == 7 { 9 } else { 7 };
    let pktinfo = Cmsg::PktInfoV4 {
        ifindex: 0,
        spec_dst: Ipv4Addr::LOCALHOST,
        addr: Ipv4Addr::UNSPECIFIED,
    };
    let mut buf = [0u8; 32];
    let mut control = [0u8; 256];
    for (cmsgs, want_ttl) in [
        (vec![pktinfo, Cmsg::Tos(0x28), Cmsg::Ttl(ttl)], ttl),
        (vec![pktinfo, Cmsg::Tos(0x28)], default_ttl),
        (
            vec![Cmsg::Ttl(ttl), Cmsg::Tos(0x28), pktinfo, Cmsg::Ttl(ttl)],
            ttl,
        ),
    ] {
        send1(&a, b"three", to, &cmsgs).await.unwrap();
        let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
            .await
            .unwrap();
        let cm: Vec<Cmsg<'_>> = m.cmsgs().collect();
        assert!(cm.contains(&Cmsg::Tos(0x28)), "{cmsgs:?}: {cm:?}");
        assert!(cm.contains(&Cmsg::Ttl(want_ttl)), "{cmsgs:?}: {cm:?}");
        assert_eq!(m.addr, Some(a.local_addr().unwrap()));
        assert_eq!(&buf[..m.len], b"three");
    }
    // More than even the large buffer holds: refused, nothing sent.
    let many = vec![Cmsg::Tos(1); 11];
    let err = send1(&a, b"many", to, &many).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOBUFS, "{err}");
    assert_nothing_arrives(&b, 50).await;
}

#[tokio::test]
async fn ttl_set_per_packet_arrives_in_receivers_cmsgs_v4() {
    let a = udp("127.0.0.1:0").await;
    let b = udp("127.0.0.1:0").await;
    b.set(opts::RecvTtl, true).unwrap();
    let to = b.local_addr().unwrap();
    let default_ttl = u8::try_from(a.ttl().unwrap()).unwrap();
    let ttl = if default_ttl == 7 { 9 } else { 7 };

    send1(&a, b"ttl", to, &[Cmsg::Ttl(ttl)]).await.unwrap();
    let mut buf = [0u8; 32];
    let mut control = [0u8; 128];
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    let cm: Vec<Cmsg<'_>> = m.cmsgs().collect();
    assert!(cm.contains(&Cmsg::Ttl(ttl)), "TTL {ttl} not in {cm:?}");

    send1(&a, b"plain", to, &[]).await.unwrap();
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    let cm: Vec<Cmsg<'_>> = m.cmsgs().collect();
    assert!(cm.contains(&Cmsg::Ttl(default_ttl)), "{cm:?}");
}

#[tokio::test]
async fn hop_limit_set_per_packet_arrives_in_receivers_cmsgs_v6() {
    if !v6_available("hop_limit_set_per_packet_arrives_in_receivers_cmsgs_v6") {
        return;
    }
    let a = udp("[::1]:0").await;
    let b = udp("[::1]:0").await;
    b.set(opts::RecvHopLimitV6, true).unwrap();
    let to = b.local_addr().unwrap();

    send1(&a, b"hops", to, &[Cmsg::HopLimit(9)]).await.unwrap();
    let mut buf = [0u8; 32];
    let mut control = [0u8; 128];
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    let cm: Vec<Cmsg<'_>> = m.cmsgs().collect();
    assert!(cm.contains(&Cmsg::HopLimit(9)), "{cm:?}");

    // -1 asks for the route's default: the datagram still goes, with a
    // hop limit other than 9.
    send1(&a, b"dflt", to, &[Cmsg::HopLimit(-1)]).await.unwrap();
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    let hops: Vec<i32> = m
        .cmsgs()
        .filter_map(|c| match c {
            Cmsg::HopLimit(h) => Some(h),
            _ => None,
        })
        .collect();
    assert_eq!(hops.len(), 1, "{hops:?}");
    assert!(hops[0] >= 1 && hops[0] != 9, "{hops:?}");
}

// ------------------------------------------------------------------ PKTINFO

#[tokio::test]
async fn pktinfo_wildcard_server_tells_local_addresses_apart_and_replies_from_them_v4() {
    let server = udp("0.0.0.0:0").await;
    server.enable_info().unwrap();
    let port = server.local_addr().unwrap().port();
    let client = udp("127.0.0.1:0").await;
    let client_addr = client.local_addr().unwrap();

    for (i, local) in [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)]
        .into_iter()
        .enumerate()
    {
        let to = SocketAddr::new(local.into(), port);
        within(2, client.send_to(&[i as u8; 3], to)).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, info) = within(2, server.recv_with_info(&mut buf)).await.unwrap();
        assert_eq!(n, 3);
        assert_eq!(info.from, client_addr);
        assert_eq!(info.local, Some(IpAddr::V4(local)), "sent to {to}");
        assert!(info.ifindex.is_some_and(|i| i > 0), "{info:?}");
        assert_eq!(info.tos, Some(0), "{info:?}");
        assert!(!info.truncated);

        // The reply leaves from the address the request came to.
        let sent = within(
            2,
            server.send_from(b"reply", client_addr, IpAddr::V4(local), None),
        )
        .await
        .unwrap();
        assert_eq!(sent, 5);
        let mut rbuf = [0u8; 16];
        let (rn, rfrom) = within(2, client.recv_from(&mut rbuf)).await.unwrap();
        assert_eq!(&rbuf[..rn], b"reply");
        assert_eq!(rfrom, SocketAddr::new(local.into(), port));
    }

    // With a TOS too: both reach the client.
    client.set(opts::RecvTos, true).unwrap();
    let local = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    within(2, server.send_from(b"tos", client_addr, local, Some(0x20)))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let mut control = [0u8; 128];
    let m = recv1(&client, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    assert_eq!(m.addr, Some(SocketAddr::new(local, port)));
    assert!(m.cmsgs().any(|c| c == Cmsg::Tos(0x20)));
}

#[tokio::test]
async fn pktinfo_raw_cmsgs_report_destination_and_interface_v4() {
    let server = udp("0.0.0.0:0").await;
    server.set(opts::PktInfoV4, true).unwrap();
    let port = server.local_addr().unwrap().port();
    let client = udp("127.0.0.1:0").await;
    send1(&client, b"x", SocketAddr::from(([127, 0, 0, 2], port)), &[])
        .await
        .unwrap();
    let mut buf = [0u8; 8];
    let mut control = CmsgBuf::<128>::new();
    let m = recv1(&server, &mut buf, control.space_mut(), RecvFlags::EMPTY)
        .await
        .unwrap();
    let infos: Vec<_> = m
        .cmsgs()
        .filter_map(|c| match c {
            Cmsg::PktInfoV4 {
                ifindex,
                spec_dst,
                addr,
            } => Some((ifindex, spec_dst, addr)),
            _ => None,
        })
        .collect();
    assert_eq!(infos.len(), 1, "{:?}", m.cmsgs().collect::<Vec<_>>());
    let (ifindex, spec_dst, addr) = infos[0];
    assert!(ifindex > 0);
    assert_eq!(addr, Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(spec_dst, Ipv4Addr::new(127, 0, 0, 2));
}

#[tokio::test]
async fn pktinfo_wildcard_server_sees_and_replies_from_loopback_v6() {
    if !v6_available("pktinfo_wildcard_server_sees_and_replies_from_loopback_v6") {
        return;
    }
    let server = udp("[::]:0").await;
    server.enable_info().unwrap();
    let port = server.local_addr().unwrap().port();
    let client = udp("[::1]:0").await;
    let client_addr = client.local_addr().unwrap();

    within(2, client.send_to(b"q6", ("::1", port)))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let (n, info) = within(2, server.recv_with_info(&mut buf)).await.unwrap();
    assert_eq!(n, 2);
    assert_eq!(info.from, client_addr);
    assert_eq!(info.local, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    assert!(info.ifindex.is_some_and(|i| i > 0), "{info:?}");
    assert_eq!(info.tos, Some(0), "{info:?}");

    within(
        2,
        server.send_from(b"r6", client_addr, IpAddr::V6(Ipv6Addr::LOCALHOST), None),
    )
    .await
    .unwrap();
    let mut rbuf = [0u8; 16];
    let (rn, rfrom) = within(2, client.recv_from(&mut rbuf)).await.unwrap();
    assert_eq!(&rbuf[..rn], b"r6");
    assert_eq!(rfrom, SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port));
}

#[tokio::test]
async fn pktinfo_dual_stack_server_handles_v4_mapped_traffic() {
    if !v6_available("pktinfo_dual_stack_server_handles_v4_mapped_traffic") {
        return;
    }
    let server = udp("[::]:0").await;
    if server.get(opts::V6Only).unwrap() {
        println!("pktinfo_dual_stack_server_handles_v4_mapped_traffic: skipped, v6only default");
        return;
    }
    server.enable_info().unwrap();
    let port = server.local_addr().unwrap().port();
    let client = udp("127.0.0.1:0").await;

    within(2, client.send_to(b"m", ("127.0.0.2", port)))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let (n, info) = within(2, server.recv_with_info(&mut buf)).await.unwrap();
    assert_eq!(n, 1);
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    assert_eq!(canonical(info.from.ip()), IpAddr::from([127, 0, 0, 1]));
    assert_eq!(
        info.local.map(canonical),
        Some(IpAddr::from([127, 0, 0, 2])),
        "{info:?}"
    );

    within(
        2,
        server.send_from(b"back", info.from, IpAddr::from([127, 0, 0, 2]), None),
    )
    .await
    .unwrap();
    let mut rbuf = [0u8; 16];
    let (rn, rfrom) = within(2, client.recv_from(&mut rbuf)).await.unwrap();
    assert_eq!(&rbuf[..rn], b"back");
    assert_eq!(rfrom, SocketAddr::from(([127, 0, 0, 2], port)));
}

// ------------------------------------------------------------ MSG_TRUNC/PEEK

#[tokio::test]
async fn trunc_flag_returns_the_real_datagram_length() {
    let a = udp("127.0.0.1:0").await;
    let b = udp("127.0.0.1:0").await;
    let payload: Vec<u8> = (0..100u8).collect();
    send1(&a, &payload, b.local_addr().unwrap(), &[])
        .await
        .unwrap();
    let mut buf = [0u8; 10];
    let mut control = [0u8; 64];
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::TRUNC)
        .await
        .unwrap();
    assert_eq!(m.len, 10);
    assert_eq!(m.full_len, 100);
    assert!(m.full_len > buf.len());
    assert!(m.truncated());
    assert!(m.flags.contains(MsgFlags::TRUNC));
    assert_eq!(m.addr, Some(a.local_addr().unwrap()));
    assert_eq!(&buf[..], &payload[..10]);
}

#[tokio::test]
async fn without_trunc_flag_truncated_is_set_and_full_len_is_len() {
    let a = udp("127.0.0.1:0").await;
    let b = udp("127.0.0.1:0").await;
    let to = b.local_addr().unwrap();
    send1(&a, &[7u8; 100], to, &[]).await.unwrap();
    let mut buf = [0u8; 10];
    let mut control = [0u8; 64];
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    assert_eq!(m.len, 10);
    assert_eq!(m.full_len, m.len);
    assert!(m.truncated());

    // A datagram that fits is not truncated.
    send1(&a, &[1u8; 10], to, &[]).await.unwrap();
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::TRUNC)
        .await
        .unwrap();
    assert_eq!((m.len, m.full_len), (10, 10));
    assert!(!m.truncated(), "{:?}", m.flags);
}

#[tokio::test]
async fn peek_does_not_consume() {
    let a = udp("127.0.0.1:0").await;
    let b = udp("127.0.0.1:0").await;
    let to = b.local_addr().unwrap();
    send1(&a, b"first", to, &[]).await.unwrap();
    send1(&a, b"second", to, &[]).await.unwrap();

    let mut control = [0u8; 64];
    for _ in 0..2 {
        let mut buf = [0u8; 16];
        let m = recv1(&b, &mut buf, &mut control, RecvFlags::PEEK)
            .await
            .unwrap();
        assert_eq!(&buf[..m.len], b"first");
        assert_eq!(m.addr, Some(a.local_addr().unwrap()));
    }
    // PEEK with TRUNC: the real length, still not consumed.
    let mut small = [0u8; 2];
    let m = recv1(
        &b,
        &mut small,
        &mut control,
        RecvFlags::PEEK | RecvFlags::TRUNC,
    )
    .await
    .unwrap();
    assert_eq!((m.len, m.full_len), (2, 5));

    let mut buf = [0u8; 16];
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    assert_eq!(&buf[..m.len], b"first");
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    assert_eq!(&buf[..m.len], b"second");
}

#[tokio::test]
async fn peek_on_tcp_stream_does_not_consume() {
    let (client, server) = tcp_pair().await;
    within(
        2,
        client.send_msg(&[IoSlice::new(b"stream")], None, &[], SendFlags::EMPTY),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 6];
    // A peek may see fewer bytes than were sent if they arrive in pieces;
    // on loopback they arrive together, but loop a little to be sure.
    let mut seen = 0;
    for _ in 0..50 {
        let m = within(
            2,
            server.recv_msg(&mut [IoSliceMut::new(&mut buf)], &mut [], RecvFlags::PEEK),
        )
        .await
        .unwrap();
        seen = m.len;
        if seen == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, 6);
    let mut again = [0u8; 6];
    let m = within(
        2,
        server.recv_msg(
            &mut [IoSliceMut::new(&mut again)],
            &mut [],
            RecvFlags::WAITALL,
        ),
    )
    .await
    .unwrap();
    assert_eq!((m.len, &again), (6, b"stream"));
}

// --------------------------------------------------------------- WAITALL

#[tokio::test]
async fn waitall_on_tcp_returns_only_when_the_buffers_are_full() {
    let (client, server) = tcp_pair().await;
    // `stage` is set to i just before chunk i is written.
    let stage = Arc::new(AtomicUsize::new(0));
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let w = stage.clone();
    let writer = tokio::spawn(async move {
        go_rx.await.expect("go");
        for i in 1..=3u8 {
            w.store(usize::from(i), Ordering::SeqCst);
            let chunk = [b'0' + i; 10];
            client
                .send_msg(&[IoSlice::new(&chunk)], None, &[], SendFlags::EMPTY)
                .await
                .expect("write chunk");
            if i < 3 {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        client
    });

    // Two buffers whose boundary falls inside a chunk.
    let mut first = [0u8; 12];
    let mut second = [0u8; 18];
    go_tx.send(()).unwrap();
    let start = Instant::now();
    let m = within(
        2,
        server.recv_msg(
            &mut [IoSliceMut::new(&mut first), IoSliceMut::new(&mut second)],
            &mut [],
            RecvFlags::WAITALL,
        ),
    )
    .await
    .unwrap();
    let stage_at_return = stage.load(Ordering::SeqCst);
    assert_eq!(m.len, 30);
    assert_eq!(m.full_len, 30);
    assert_eq!(
        stage_at_return, 3,
        "recv_msg(WAITALL) returned before the last chunk was written"
    );
    assert!(start.elapsed() >= Duration::from_millis(40));
    let mut all = first.to_vec();
    all.extend_from_slice(&second);
    let mut want = vec![b'1'; 10];
    want.extend_from_slice(&[b'2'; 10]);
    want.extend_from_slice(&[b'3'; 10]);
    assert_eq!(all, want);
    within(2, writer).await.unwrap();
}

#[tokio::test]
async fn waitall_on_tcp_returns_the_partial_count_when_the_peer_shuts_down() {
    let (client, server) = tcp_pair().await;
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        go_rx.await.expect("go");
        for i in 1..=2u8 {
            client
                .send_msg(
                    &[IoSlice::new(&[b'a' + i; 10])],
                    None,
                    &[],
                    SendFlags::EMPTY,
                )
                .await
                .expect("write chunk");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client.shutdown_with(Shutdown::Write).expect("shutdown");
        client
    });
    let mut buf = [0u8; 30];
    go_tx.send(()).unwrap();
    let m = within(
        2,
        server.recv_msg(
            &mut [IoSliceMut::new(&mut buf)],
            &mut [],
            RecvFlags::WAITALL,
        ),
    )
    .await
    .unwrap();
    assert_eq!(m.len, 20);
    assert_eq!(&buf[..10], &[b'b'; 10]);
    assert_eq!(&buf[10..20], &[b'c'; 10]);
    assert_eq!(&buf[20..], &[0u8; 10]);
    // And then end of stream.
    let m = within(
        2,
        server.recv_msg(
            &mut [IoSliceMut::new(&mut buf)],
            &mut [],
            RecvFlags::WAITALL,
        ),
    )
    .await
    .unwrap();
    assert_eq!(m.len, 0);
    within(2, writer).await.unwrap();
}

#[tokio::test]
async fn waitall_on_tcp_gives_up_at_the_deadline_with_what_it_has() {
    let (client, server) = tcp_pair().await;
    within(
        2,
        client.send_msg(&[IoSlice::new(b"abc")], None, &[], SendFlags::EMPTY),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 10];
    let start = Instant::now();
    let m = within(
        2,
        server.recv_msg_deadline(
            &mut [IoSliceMut::new(&mut buf)],
            &mut [],
            RecvFlags::WAITALL,
            Instant::now() + Duration::from_millis(150),
        ),
    )
    .await
    .unwrap();
    assert_eq!(m.len, 3);
    assert_eq!(&buf[..3], b"abc");
    assert!(start.elapsed() >= Duration::from_millis(100));
    drop(client);
}

// ------------------------------------------------------------ error queue

#[tokio::test]
async fn errqueue_delivers_icmp_port_unreachable_v4() {
    let s = udp("127.0.0.1:0").await;
    s.set(opts::RecvErrV4, true).unwrap();
    let closed = closed_udp_v4();
    let (payload, flags, addr, err) = errqueue_entry(&s, closed, b"probe", false).await;

    assert_eq!(err.errno, libc::ECONNREFUSED as u32, "{err:?}");
    assert_eq!(err.origin, libc::SO_EE_ORIGIN_ICMP, "{err:?}");
    assert_eq!(err.origin, 2);
    assert_eq!((err.icmp_type, err.icmp_code), (3, 3), "{err:?}");
    assert_eq!(
        err.offender.map(|a| a.ip()),
        Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "{err:?}"
    );
    assert!(flags.contains(MsgFlags::ERRQUEUE), "{flags:?}");
    assert_eq!(addr, Some(closed), "the error queue names the destination");
    assert_eq!(payload, b"probe");
}

#[tokio::test]
async fn errqueue_read_with_an_empty_queue_is_eagain_at_once() {
    let s = udp("127.0.0.1:0").await;
    s.set(opts::RecvErrV4, true).unwrap();
    let mut buf = [0u8; 16];
    let mut control = [0u8; 128];
    // The async form must be ready on its first poll: the error queue
    // never waits.
    let r = s
        .recv_msg(
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::ERRQUEUE,
        )
        .now_or_never()
        .expect("recv_msg(ERRQUEUE) waited on an empty queue");
    let e = r.expect_err("empty error queue");
    assert_eq!(e.errno(), libc::EAGAIN, "{e:?}");
    assert!(!e.is_timeout());

    // The same with a deadline far away: still at once.
    let start = Instant::now();
    let r = within(
        2,
        s.recv_msg_deadline(
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::ERRQUEUE,
            Instant::now() + Duration::from_secs(5),
        ),
    )
    .await;
    assert_eq!(r.unwrap_err().errno(), libc::EAGAIN);
    assert!(start.elapsed() < Duration::from_millis(500));

    // And with the try form.
    let e = s
        .try_recv_msg(
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::ERRQUEUE,
        )
        .unwrap_err();
    assert_eq!(e.errno(), libc::EAGAIN);
}

#[tokio::test]
async fn errqueue_delivers_icmp6_port_unreachable_v6() {
    if !v6_available("errqueue_delivers_icmp6_port_unreachable_v6") {
        return;
    }
    let s = udp("[::1]:0").await;
    s.set(opts::RecvErrV6, true).unwrap();
    let closed = closed_udp_v6();
    let (payload, flags, addr, err) = errqueue_entry(&s, closed, b"probe6", true).await;

    assert_eq!(err.errno, libc::ECONNREFUSED as u32, "{err:?}");
    assert_eq!(err.origin, libc::SO_EE_ORIGIN_ICMP6, "{err:?}");
    assert_eq!(err.origin, 3);
    assert_eq!((err.icmp_type, err.icmp_code), (1, 4), "{err:?}");
    assert_eq!(
        err.offender.map(|a| a.ip()),
        Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        "{err:?}"
    );
    assert!(flags.contains(MsgFlags::ERRQUEUE), "{flags:?}");
    assert_eq!(addr.map(|a| a.port()), Some(closed.port()));
    assert_eq!(payload, b"probe6");
}

#[tokio::test]
async fn recverr_server_receiving_normally_while_errors_pile_up_does_not_spin() {
    let s = Arc::new(udp("127.0.0.1:0").await);
    s.set(opts::RecvErrV4, true).unwrap();
    let peer = udp("127.0.0.1:0").await;
    let to = s.local_addr().unwrap();
    let closed = closed_udp_v4();

    let oks = Arc::new(AtomicUsize::new(0));
    let errs = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (s, oks, errs, calls, stop) = (
            s.clone(),
            oks.clone(),
            errs.clone(),
            calls.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut control = [0u8; 256];
            // Bounded: far more calls than this test can cause honestly.
            for _ in 0..100_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                calls.fetch_add(1, Ordering::SeqCst);
                let r = s
                    .recv_msg_deadline(
                        &mut [IoSliceMut::new(&mut buf)],
                        &mut control,
                        RecvFlags::EMPTY,
                        Instant::now() + Duration::from_millis(50),
                    )
                    .await;
                match r {
                    Ok(_) => {
                        oks.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) if e.is_timeout() => {}
                    Err(_) => {
                        errs.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };

    let cpu0 = thread_cpu();
    let start = Instant::now();
    let mut send_errors = 0;
    for i in 0..50u32 {
        // Errors from sends (sk_err taken by the send) are fine: the point
        // is the ICMP errors they provoke.
        if send1(&s, b"to-closed", closed, &[]).await.is_err() {
            send_errors += 1;
        }
        if i % 10 == 0 {
            send1(&peer, b"normal", to, &[]).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    let left = Duration::from_millis(300).saturating_sub(start.elapsed());
    tokio::time::sleep(left).await;
    let cpu = thread_cpu() - cpu0;
    let wall = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    within(2, server).await.unwrap();

    let (oks, errs, calls) = (
        oks.load(Ordering::SeqCst),
        errs.load(Ordering::SeqCst),
        calls.load(Ordering::SeqCst),
    );
    println!(
        "cpu {cpu:?} over {wall:?}; recv ok {oks}, recv errors {errs}, calls {calls}, send errors {send_errors}"
    );
    assert!(
        cpu < Duration::from_millis(150),
        "recv loop used {cpu:?} of CPU over {wall:?}: spinning"
    );
    assert_eq!(oks, 5, "the normal datagrams must all be received");
    assert!(errs <= 50, "{errs} errors for at most 50 ICMP messages");
    assert!(calls <= 200, "{calls} recv calls: an endless stream");

    // The ICMP errors really came (else the test proved nothing): the
    // error queue holds them.
    let mut queued = 0;
    for _ in 0..200 {
        let mut buf = [0u8; 64];
        let mut control = [0u8; 256];
        match s.try_recv_msg(
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::ERRQUEUE,
        ) {
            Ok(m) => {
                assert!(m.flags.contains(MsgFlags::ERRQUEUE));
                queued += 1;
            }
            Err(e) => {
                assert_eq!(e.errno(), libc::EAGAIN);
                break;
            }
        }
    }
    assert!(queued > 0, "no ICMP error was queued");
}

// ------------------------------------------------------------- CTRUNC

#[tokio::test]
async fn short_control_buffer_sets_ctrunc() {
    let a = udp("127.0.0.1:0").await;
    let b = udp("127.0.0.1:0").await;
    b.set(opts::PktInfoV4, true).unwrap();
    b.set(opts::RecvTos, true).unwrap();
    let to = b.local_addr().unwrap();

    send1(&a, b"ct", to, &[]).await.unwrap();
    let mut buf = [0u8; 8];
    let mut control = [0u8; 8];
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    assert_eq!(m.len, 2);
    assert!(m.flags.contains(MsgFlags::CTRUNC), "{:?}", m.flags);
    assert!(m.control_truncated());
    assert_eq!(m.cmsgs().count(), 0);

    // Room for PKTINFO (32 bytes) but not TOS: the first arrives, CTRUNC.
    send1(&a, b"ct", to, &[]).await.unwrap();
    let mut control = [0u8; 32];
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    assert!(m.control_truncated(), "{:?}", m.flags);
    assert!(
        m.cmsgs().any(|c| matches!(c, Cmsg::PktInfoV4 { .. })),
        "{:?}",
        m.cmsgs().collect::<Vec<_>>()
    );

    // With room for both: no CTRUNC.
    send1(&a, b"ct", to, &[]).await.unwrap();
    let mut control = [0u8; 128];
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    assert!(!m.control_truncated(), "{:?}", m.flags);
    assert_eq!(m.cmsgs().count(), 2);
}

#[tokio::test]
async fn policy_control_max_caps_the_buffer_handed_to_the_host() {
    let a = udp("127.0.0.1:0").await;
    let b = udp_with("127.0.0.1:0", Policy::builder().control_max(8).build()).await;
    b.set(opts::RecvTos, true).unwrap();
    send1(&a, b"cm", b.local_addr().unwrap(), &[Cmsg::Tos(0x10)])
        .await
        .unwrap();
    let mut buf = [0u8; 8];
    let mut control = [0u8; 256];
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    assert!(m.control_truncated(), "{:?}", m.flags);
    assert_eq!(m.cmsgs().count(), 0);
}

// --------------------------------------------------- unknown control msgs

/// Does the datagram at the head of `s`'s queue carry an
/// `SCM_TIMESTAMPING` message? Asked of the kernel directly (`recvmsg`
/// with `MSG_PEEK`, nothing consumed), as the oracle for what the facade
/// then reports.
fn head_has_timestamping(s: &UdpSocket) -> bool {
    let mut data = [0u8; 64];
    let mut control = CmsgBuf::<512>::new();
    let space = control.space_mut();
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: `msghdr` is plain data; all-zero is a valid empty header.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = space.as_mut_ptr().cast();
    mh.msg_controllen = space.len();
    // SAFETY: `mh` points at live buffers of the lengths given, for the
    // duration of the call; the fd is owned by `s`.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut mh, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    if n < 0 {
        return false;
    }
    let len = mh.msg_controllen.min(space.len());
    CmsgIter::new(&space[..len]).any(|c| {
        matches!(c, Cmsg::Unknown { level, ty, .. }
            if level == libc::SOL_SOCKET && ty == libc::SO_TIMESTAMPING)
    })
}

/// Sends `payload` (with `cmsgs`) from `a` to `b` until the kernel stamps
/// the datagram, and leaves that one at the head of `b`'s queue. Linux
/// turns receive stamping on from deferred work, so the first datagrams
/// after `SO_TIMESTAMPING` is set may carry no stamp; those are taken off
/// the queue here.
async fn queue_stamped(a: &UdpSocket, b: &UdpSocket, payload: &[u8], cmsgs: &[Cmsg<'_>]) {
    let to = b.local_addr().unwrap();
    for _ in 0..100 {
        send1(a, payload, to, cmsgs).await.unwrap();
        if head_has_timestamping(b) {
            return;
        }
        let mut buf = [0u8; 64];
        let mut control = [0u8; 256];
        b.try_recv_msg(
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::EMPTY,
        )
        .expect("the unstamped datagram is queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the kernel never stamped a datagram");
}

/// Turns `SO_TIMESTAMPING` (software receive stamps) on through the raw
/// layer: it is outside the option table, so the socket's policy must pass
/// unknown options through. The kernel then attaches an
/// `SCM_TIMESTAMPING` message (`SOL_SOCKET`, 37, three timespecs) to every
/// datagram, a type this crate does not decode.
fn with_timestamping(s: UdpSocket) -> UdpSocket {
    let raw = RawSocket::from(s);
    let flags =
        (libc::SOF_TIMESTAMPING_RX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE) as libc::c_int;
    raw.setsockopt(
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPING,
        &flags.to_ne_bytes(),
    )
    .expect("SO_TIMESTAMPING through PassThrough");
    UdpSocket::try_from(raw).expect("back to a UdpSocket")
}

#[tokio::test]
async fn unknown_cmsg_is_dropped_with_ctrunc_under_the_default_cmsg_policy() {
    let a = udp("127.0.0.1:0").await;
    let policy = Policy::builder()
        .unknown_options(UnknownOpt::PassThrough)
        .build();
    assert!(!policy.keeps_unknown_cmsgs());
    let b = with_timestamping(udp_with("127.0.0.1:0", policy).await);
    b.set(opts::RecvTos, true).unwrap();

    queue_stamped(&a, &b, b"ts", &[Cmsg::Tos(0x20)]).await;
    let mut buf = [0u8; 8];
    let mut control = [0u8; 256];
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    assert_eq!(m.len, 2);
    let cm: Vec<Cmsg<'_>> = m.cmsgs().collect();
    assert!(
        m.control_truncated(),
        "dropped cmsg must set CTRUNC: {cm:?}"
    );
    assert!(
        !cm.iter().any(|c| matches!(c, Cmsg::Unknown { .. })),
        "{cm:?}"
    );
    // The listed message beside it survives.
    assert_eq!(cm, [Cmsg::Tos(0x20)]);
    // And the bytes handed over hold only it (the unknown one removed,
    // not just hidden by the iterator).
    assert_eq!(m.control_bytes().len(), 24, "{:?}", m.control_bytes());
}

#[tokio::test]
async fn unknown_cmsg_is_dropped_with_ctrunc_under_policy_default() {
    let a = udp("127.0.0.1:0").await;
    let b = udp("127.0.0.1:0").await;
    assert!(!b.policy().keeps_unknown_cmsgs());
    // The default policy rejects SO_TIMESTAMPING; the kernel state is set
    // up behind the facade's back, to see what the facade does with the
    // message the kernel then sends.
    let flags =
        (libc::SOF_TIMESTAMPING_RX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE) as libc::c_int;
    // SAFETY: a valid fd owned by `b`, a pointer to a live c_int and its
    // exact size.
    let rc = unsafe {
        libc::setsockopt(
            b.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPING,
            (&flags as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());

    queue_stamped(&a, &b, b"ts", &[]).await;
    let mut buf = [0u8; 8];
    let mut control = [0u8; 256];
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    assert!(m.control_truncated(), "{:?}", m.flags);
    assert_eq!(m.cmsgs().count(), 0);
    assert!(m.control_bytes().is_empty());
}

#[tokio::test]
async fn unknown_cmsg_is_handed_over_when_the_policy_keeps_them() {
    let a = udp("127.0.0.1:0").await;
    let policy = Policy::builder()
        .unknown_options(UnknownOpt::PassThrough)
        .keep_unknown_cmsgs(true)
        .build();
    let b = with_timestamping(udp_with("127.0.0.1:0", policy).await);
    b.set(opts::RecvTos, true).unwrap();

    queue_stamped(&a, &b, b"ts", &[Cmsg::Tos(0x20)]).await;
    let mut buf = [0u8; 8];
    let mut control = [0u8; 256];
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    let cm: Vec<Cmsg<'_>> = m.cmsgs().collect();
    assert!(!m.control_truncated(), "{:?} {cm:?}", m.flags);
    assert!(cm.contains(&Cmsg::Tos(0x20)), "{cm:?}");
    let unknown: Vec<_> = cm
        .iter()
        .filter_map(|c| match *c {
            Cmsg::Unknown { level, ty, data } => Some((level, ty, data)),
            _ => None,
        })
        .collect();
    assert_eq!(unknown.len(), 1, "{cm:?}");
    let (level, ty, data) = unknown[0];
    assert_eq!((level, ty), (libc::SOL_SOCKET, libc::SO_TIMESTAMPING));
    assert_eq!(data.len(), 48, "three timespecs");
    let sec = i64::from_ne_bytes(data[..8].try_into().unwrap());
    assert!(sec > 1_500_000_000, "software stamp seconds {sec}");
}

#[tokio::test]
async fn unknown_rxq_ovfl_cmsg_is_handed_over_when_the_policy_keeps_them() {
    let a = udp("127.0.0.1:0").await;
    let policy = Policy::builder()
        .unknown_options(UnknownOpt::PassThrough)
        .keep_unknown_cmsgs(true)
        .build();
    let b = udp_with("127.0.0.1:0", policy).await;
    b.set(opts::RecvBuffer, 1).unwrap(); // the kernel's minimum
    let raw = RawSocket::from(b);
    raw.setsockopt(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &1i32.to_ne_bytes())
        .expect("SO_RXQ_OVFL through PassThrough");
    let b = UdpSocket::try_from(raw).expect("back to a UdpSocket");
    let to = b.local_addr().unwrap();

    // Overflow the tiny receive queue (loopback delivers synchronously),
    // drain it, then one more datagram carries the drop count.
    for _ in 0..64 {
        send1(&a, &[0u8; 1000], to, &[]).await.unwrap();
    }
    let mut drained = 0;
    for _ in 0..64 {
        let mut buf = [0u8; 1024];
        let mut control = [0u8; 128];
        match b.try_recv_msg(
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::EMPTY,
        ) {
            Ok(_) => drained += 1,
            Err(e) => {
                assert_eq!(e.errno(), libc::EAGAIN);
                break;
            }
        }
    }
    assert!(drained < 64, "nothing was dropped ({drained} queued)");
    send1(&a, b"last", to, &[]).await.unwrap();
    let mut buf = [0u8; 16];
    let mut control = [0u8; 128];
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    assert_eq!(&buf[..m.len], b"last");
    let cm: Vec<Cmsg<'_>> = m.cmsgs().collect();
    let drops: Vec<u32> = cm
        .iter()
        .filter_map(|c| match *c {
            Cmsg::Unknown { level, ty, data }
                if level == libc::SOL_SOCKET && ty == libc::SO_RXQ_OVFL =>
            {
                Some(u32::from_ne_bytes(data.try_into().expect("4 bytes")))
            }
            _ => None,
        })
        .collect();
    assert_eq!(drops.len(), 1, "{cm:?}");
    assert_eq!(drops[0] as usize, 64 - drained, "{cm:?}");
    assert!(!m.control_truncated());
}

// ------------------------------------------------------ send_msg errors

#[tokio::test]
async fn send_msg_refuses_receive_only_and_out_of_range_cmsgs_with_einval() {
    let a = udp("127.0.0.1:0").await;
    let b = udp("127.0.0.1:0").await;
    let to = b.local_addr().unwrap();
    let bad = [
        Cmsg::Timestamp { sec: 1, usec: 2 },
        Cmsg::TimestampNs { sec: 1, nsec: 2 },
        Cmsg::TcpInq(3),
        Cmsg::UdpGro(1000),
        Cmsg::Ttl(0),
        Cmsg::HopLimit(256),
        Cmsg::HopLimit(-2),
    ];
    for m in bad {
        let e = send1(&a, b"bad", to, &[Cmsg::Tos(0x10), m])
            .await
            .expect_err("must be refused");
        assert_eq!(e.errno(), libc::EINVAL, "{m:?}: {e:?}");
        assert!(!e.is_denied(), "{m:?}: {e:?}");
        a.writable().await.unwrap();
        let e = a
            .try_send_msg(&[IoSlice::new(b"bad")], Some(to), &[m], SendFlags::EMPTY)
            .expect_err("try form too");
        assert_eq!(e.errno(), libc::EINVAL, "{m:?}: {e:?}");
        let e = poll_fn(|cx| {
            a.poll_send_msg(
                cx,
                &[IoSlice::new(b"bad")],
                Some(to),
                &[m],
                SendFlags::EMPTY,
            )
        })
        .await
        .expect_err("poll form too");
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{m:?}: {e:?}");
    }
    assert_nothing_arrives(&b, 100).await;

    // On a stream too.
    let (client, _server) = tcp_pair().await;
    let e = within(
        2,
        client.send_msg(
            &[IoSlice::new(b"x")],
            None,
            &[Cmsg::TcpInq(1)],
            SendFlags::EMPTY,
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
}

#[tokio::test]
async fn send_msg_pktinfo_source_denied_by_policy_is_refused() {
    let denied = Ipv4Addr::new(127, 0, 0, 2);
    let policy = Policy::builder()
        .addr_rule(AddrRule::new(
            Verdict::Deny,
            Cidr::from(IpAddr::V4(denied)),
            &[AddrUse::SourceViaPktinfo],
        ))
        .build();
    let a = udp_with("0.0.0.0:0", policy).await;
    let b = udp("127.0.0.1:0").await;
    let to = b.local_addr().unwrap();

    let info = Cmsg::PktInfoV4 {
        ifindex: 0,
        spec_dst: denied,
        addr: Ipv4Addr::UNSPECIFIED,
    };
    let e = send1(&a, b"sneaky", to, &[info]).await.unwrap_err();
    assert!(e.is_denied(), "{e:?}");
    assert_eq!(e.errno(), libc::EACCES);
    let d = e.denial().unwrap();
    assert!(
        matches!(
            d.asked,
            hostsock::Asked::Address {
                usage: AddrUse::SourceViaPktinfo,
                ..
            }
        ),
        "{d:?}"
    );
    // send_from checks the same rule.
    let e = within(2, a.send_from(b"sneaky", to, IpAddr::V4(denied), None))
        .await
        .unwrap_err();
    assert!(e.is_denied(), "{e:?}");
    assert_eq!(e.errno(), libc::EACCES);
    assert_nothing_arrives(&b, 150).await;

    // Another source is allowed, and arrives from that source.
    let ok = Ipv4Addr::new(127, 0, 0, 3);
    within(2, a.send_from(b"fine", to, IpAddr::V4(ok), None))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = within(2, b.recv_from(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"fine");
    assert_eq!(from.ip(), IpAddr::V4(ok));
}

#[tokio::test]
async fn send_msg_to_a_denied_destination_is_refused() {
    let b = udp("127.0.0.1:0").await;
    let to = b.local_addr().unwrap();
    let policy = Policy::builder()
        .addr_rule(
            AddrRule::new(Verdict::Deny, Cidr::from(to.ip()), &[AddrUse::SendTo])
                .ports(to.port(), to.port()),
        )
        .build();
    let a = udp_with("127.0.0.1:0", policy).await;
    let e = send1(&a, b"no", to, &[]).await.unwrap_err();
    assert!(e.is_denied(), "{e:?}");
    assert_eq!(e.errno(), libc::ECONNREFUSED);
    a.writable().await.unwrap();
    let e = a
        .try_send_msg(&[IoSlice::new(b"no")], Some(to), &[], SendFlags::EMPTY)
        .unwrap_err();
    assert!(e.is_denied(), "{e:?}");
    assert_nothing_arrives(&b, 150).await;

    // Another port of the same address is fine.
    let c = udp("127.0.0.1:0").await;
    send1(&a, b"yes", c.local_addr().unwrap(), &[])
        .await
        .unwrap();
    let mut buf = [0u8; 8];
    let mut control = [0u8; 64];
    let m = recv1(&c, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    assert_eq!(&buf[..m.len], b"yes");
}

// ----------------------------------------------------- zero-length, empty

#[tokio::test]
async fn zero_length_datagram_is_sent_and_received() {
    let a = udp("127.0.0.1:0").await;
    let b = udp("127.0.0.1:0").await;
    b.set(opts::RecvTos, true).unwrap();
    let n = within(
        2,
        a.send_msg(
            &[],
            Some(b.local_addr().unwrap()),
            &[Cmsg::Tos(0x08)],
            SendFlags::EMPTY,
        ),
    )
    .await
    .unwrap();
    assert_eq!(n, 0);
    let mut buf = [0xffu8; 16];
    let mut control = [0u8; 64];
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::TRUNC)
        .await
        .unwrap();
    assert_eq!((m.len, m.full_len), (0, 0));
    assert_eq!(m.addr, Some(a.local_addr().unwrap()));
    assert!(!m.truncated());
    // Its control messages were kept.
    assert!(m.cmsgs().any(|c| c == Cmsg::Tos(0x08)));
    assert_eq!(buf, [0xffu8; 16]);
}

#[tokio::test]
async fn recv_msg_with_no_buffers_takes_a_datagram_and_reports_trunc() {
    let a = udp("127.0.0.1:0").await;
    let b = udp("127.0.0.1:0").await;
    let to = b.local_addr().unwrap();
    send1(&a, b"hello", to, &[]).await.unwrap();
    send1(&a, b"world!", to, &[]).await.unwrap();

    let mut control = [0u8; 64];
    let m = within(2, b.recv_msg(&mut [], &mut control, RecvFlags::EMPTY))
        .await
        .unwrap();
    assert_eq!(m.len, 0);
    assert!(m.truncated(), "{:?}", m.flags);
    assert_eq!(m.addr, Some(a.local_addr().unwrap()));

    let m = within(2, b.recv_msg(&mut [], &mut control, RecvFlags::TRUNC))
        .await
        .unwrap();
    assert_eq!((m.len, m.full_len), (0, 6));
    assert!(m.truncated());

    // Both were taken.
    let e = b
        .try_recv_msg(&mut [], &mut control, RecvFlags::EMPTY)
        .unwrap_err();
    assert_eq!(e.errno(), libc::EAGAIN);
}

// --------------------------------------------------- try, poll, deadline

#[tokio::test]
async fn try_send_msg_and_try_recv_msg() {
    let a = udp("127.0.0.1:0").await;
    let b = udp("127.0.0.1:0").await;
    b.set(opts::RecvTos, true).unwrap();
    let mut buf = [0u8; 16];
    let mut control = [0u8; 64];

    let e = b
        .try_recv_msg(
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::EMPTY,
        )
        .unwrap_err();
    assert_eq!(e.errno(), libc::EAGAIN, "{e:?}");
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);

    within(2, a.writable()).await.unwrap();
    let mut sent = None;
    for _ in 0..100 {
        match a.try_send_msg(
            &[IoSlice::new(b"tr"), IoSlice::new(b"y")],
            Some(b.local_addr().unwrap()),
            &[Cmsg::Tos(0x10)],
            SendFlags::EMPTY,
        ) {
            Ok(n) => {
                sent = Some(n);
                break;
            }
            Err(e) if e.errno() == libc::EAGAIN => within(2, a.writable()).await.unwrap(),
            Err(e) => panic!("try_send_msg: {e:?}"),
        }
    }
    assert_eq!(sent, Some(3));

    // Loopback delivers during the send: the try form sees it now.
    let m = b
        .try_recv_msg(
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::EMPTY,
        )
        .unwrap();
    assert_eq!(&buf[..m.len], b"try");
    assert!(m.cmsgs().any(|c| c == Cmsg::Tos(0x10)));

    let e = b
        .try_recv_msg(
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::EMPTY,
        )
        .unwrap_err();
    assert_eq!(e.errno(), libc::EAGAIN);

    // DONTWAIT on the async form: one try.
    let r = within(
        2,
        b.recv_msg(
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::DONTWAIT,
        ),
    )
    .await;
    assert_eq!(r.unwrap_err().errno(), libc::EAGAIN);
}

#[tokio::test]
async fn poll_send_msg_and_poll_recv_msg() {
    let a = udp("127.0.0.1:0").await;
    let b = udp("127.0.0.1:0").await;
    b.set(opts::RecvTos, true).unwrap();
    let to = b.local_addr().unwrap();
    let mut buf = [0u8; 16];
    let mut control = [0u8; 64];

    // Nothing queued: Pending.
    let pending = poll_fn(|cx| {
        Poll::Ready(
            b.poll_recv_msg(
                cx,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::EMPTY,
            )
            .is_pending(),
        )
    })
    .await;
    assert!(pending);

    let n = within(
        2,
        poll_fn(|cx| {
            a.poll_send_msg(
                cx,
                &[IoSlice::new(b"polled")],
                Some(to),
                &[Cmsg::Tos(0x30)],
                SendFlags::EMPTY,
            )
        }),
    )
    .await
    .unwrap();
    assert_eq!(n, 6);

    let (len, addr, tos) = within(
        2,
        poll_fn(|cx| {
            b.poll_recv_msg(
                cx,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::EMPTY,
            )
            .map(|r| {
                r.map(|m| {
                    let tos = m.cmsgs().find_map(|c| match c {
                        Cmsg::Tos(t) => Some(t),
                        _ => None,
                    });
                    (m.len, m.addr, tos)
                })
            })
        }),
    )
    .await
    .unwrap();
    assert_eq!(&buf[..len], b"polled");
    assert_eq!(addr, Some(a.local_addr().unwrap()));
    assert_eq!(tos, Some(0x30));

    // A poll receive that waits is woken by a later send.
    let b = Arc::new(b);
    let rb = b.clone();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        let mut control = [0u8; 64];
        poll_fn(|cx| {
            rb.poll_recv_msg(
                cx,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::EMPTY,
            )
            .map(|r| r.map(|m| m.len))
        })
        .await
        .map(|n| buf[..n].to_vec())
    });
    tokio::task::yield_now().await;
    send1(&a, b"later", to, &[]).await.unwrap();
    let got = within(2, reader).await.unwrap().unwrap();
    assert_eq!(got, b"later");
}

#[tokio::test]
async fn recv_msg_deadline_fires_with_a_timeout_and_eagain() {
    let b = udp("127.0.0.1:0").await;
    let mut buf = [0u8; 16];
    let mut control = [0u8; 64];
    let start = Instant::now();
    let e = within(
        2,
        b.recv_msg_deadline(
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::EMPTY,
            Instant::now() + Duration::from_millis(100),
        ),
    )
    .await
    .unwrap_err();
    let waited = start.elapsed();
    assert!(e.is_timeout(), "{e:?}");
    assert_eq!(e.errno(), libc::EAGAIN);
    assert!(waited >= Duration::from_millis(90), "{waited:?}");
    assert!(waited < Duration::from_secs(1), "{waited:?}");

    // A deadline in the past still takes what is there.
    let a = udp("127.0.0.1:0").await;
    send1(&a, b"now", b.local_addr().unwrap(), &[])
        .await
        .unwrap();
    let m = within(
        2,
        b.recv_msg_deadline(
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::EMPTY,
            Instant::now(),
        ),
    )
    .await;
    match m {
        Ok(m) => assert_eq!(&buf[..m.len], b"now"),
        // Acceptable only as a timeout; the datagram must still be there.
        Err(e) => {
            assert!(e.is_timeout(), "{e:?}");
            let m = b
                .try_recv_msg(
                    &mut [IoSliceMut::new(&mut buf)],
                    &mut control,
                    RecvFlags::EMPTY,
                )
                .unwrap();
            assert_eq!(&buf[..m.len], b"now");
        }
    }
}

// ------------------------------------------------- connected + ICMP error

#[tokio::test]
async fn recv_msg_on_connected_udp_ends_with_econnrefused_after_icmp() {
    let s = Arc::new(udp("127.0.0.1:0").await);
    let closed = closed_udp_v4();
    s.connect(closed).await.unwrap();

    let rs = s.clone();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        let mut control = [0u8; 64];
        rs.recv_msg(
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::EMPTY,
        )
        .await
        .map(|m| m.len)
    });
    // Let the reader park in recv_msg first.
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert!(!reader.is_finished());

    // The ICMP error may be rate limited: probe again every 100 ms.
    let start = Instant::now();
    let mut tries = 0;
    while !reader.is_finished() && tries < 20 {
        tries += 1;
        let _ = within(
            2,
            s.send_msg(&[IoSlice::new(b"ping")], None, &[], SendFlags::EMPTY),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(start.elapsed() < Duration::from_secs(2), "recv_msg hung");
    }
    let r = within(2, reader).await.unwrap();
    let e = r.expect_err("recv_msg must end with the ICMP error");
    assert_eq!(e.errno(), libc::ECONNREFUSED, "{e:?}");
}

#[tokio::test]
async fn poll_recv_msg_on_connected_udp_wakes_on_icmp_error() {
    let s = Arc::new(udp("127.0.0.1:0").await);
    let closed = closed_udp_v4();
    s.connect(closed).await.unwrap();

    let rs = s.clone();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        let mut control = [0u8; 64];
        poll_fn(|cx| {
            rs.poll_recv_msg(
                cx,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::EMPTY,
            )
            .map(|r| r.map(|m| m.len))
        })
        .await
    });
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert!(!reader.is_finished());
    let start = Instant::now();
    let mut tries = 0;
    while !reader.is_finished() && tries < 20 {
        tries += 1;
        let _ = within(
            2,
            s.send_msg(&[IoSlice::new(b"ping")], None, &[], SendFlags::EMPTY),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "poll_recv_msg hung"
        );
    }
    let r = within(2, reader).await.unwrap();
    let e = r.expect_err("poll_recv_msg must end with the ICMP error");
    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{e:?}");
}

// ------------------------------------------------------------------ TCP_INQ

#[tokio::test]
async fn tcp_inq_cmsg_reports_the_bytes_still_queued() {
    let (client, server) = tcp_pair().await;
    server.set(opts::TcpInq, true).unwrap();
    let data: Vec<u8> = (0..100u8).collect();
    within(
        2,
        client.send_msg(&[IoSlice::new(&data)], None, &[], SendFlags::EMPTY),
    )
    .await
    .unwrap();
    // Wait (bounded) until all 100 bytes are queued.
    let mut queued = 0;
    for _ in 0..100 {
        within(2, server.readable()).await.unwrap();
        queued = server.inq().unwrap();
        if queued == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(queued, 100);

    let mut buf = [0u8; 10];
    let mut control = [0u8; 64];
    let m = within(
        2,
        server.recv_msg(
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::EMPTY,
        ),
    )
    .await
    .unwrap();
    assert_eq!(m.len, 10);
    assert_eq!(&buf[..], &data[..10]);
    let cm: Vec<Cmsg<'_>> = m.cmsgs().collect();
    assert_eq!(cm, [Cmsg::TcpInq(90)]);
    assert_eq!(m.addr, None);

    let mut rest = [0u8; 200];
    let m = within(
        2,
        server.recv_msg(
            &mut [IoSliceMut::new(&mut rest)],
            &mut control,
            RecvFlags::EMPTY,
        ),
    )
    .await
    .unwrap();
    assert_eq!(m.len, 90);
    assert_eq!(&rest[..90], &data[10..]);
    let cm: Vec<Cmsg<'_>> = m.cmsgs().collect();
    assert_eq!(cm, [Cmsg::TcpInq(0)]);
}

// ------------------------------------------- more: flag masks, DONTWAIT

#[tokio::test]
async fn policy_message_flag_masks_apply_to_typed_send_msg_and_recv_msg() {
    use hostsock::policy::{RECV_FLAGS, SEND_FLAGS};
    let policy = Policy::builder()
        .message_flags(RECV_FLAGS & !libc::MSG_PEEK, SEND_FLAGS & !libc::MSG_MORE)
        .build();
    assert_eq!(policy.recv_flags() & libc::MSG_PEEK, 0);
    assert_eq!(policy.send_flags() & libc::MSG_MORE, 0);
    let a = udp_with("127.0.0.1:0", policy.clone()).await;
    let b = udp_with("127.0.0.1:0", policy).await;
    let to = b.local_addr().unwrap();

    // A send flag the policy refuses: EINVAL, and nothing corked either
    // (had MSG_MORE reached the kernel, "a" would prefix the next datagram).
    let r = within(
        2,
        a.send_msg(&[IoSlice::new(b"a")], Some(to), &[], SendFlags::MORE),
    )
    .await;
    let refused_send = match r {
        Err(e) => {
            assert_eq!(e.errno(), libc::EINVAL, "{e:?}");
            true
        }
        Ok(n) => {
            println!("send_msg(MORE) under a policy without MSG_MORE sent {n} bytes");
            false
        }
    };
    send1(&a, b"b", to, &[]).await.unwrap();

    // A receive flag the policy refuses: EINVAL.
    let mut buf = [0u8; 8];
    let mut control = [0u8; 64];
    let r = recv1(&b, &mut buf, &mut control, RecvFlags::PEEK).await;
    let refused_recv = match r {
        Err(e) => {
            assert_eq!(e.errno(), libc::EINVAL, "{e:?}");
            true
        }
        Ok(m) => {
            println!(
                "recv_msg(PEEK) under a policy without MSG_PEEK peeked {} bytes",
                m.len
            );
            false
        }
    };
    let m = recv1(&b, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    let got = buf[..m.len].to_vec();
    assert!(
        refused_send && refused_recv && got == b"b",
        "the policy's message flag masks were not applied by the typed API: \
         send_msg(MORE) refused: {refused_send}, recv_msg(PEEK) refused: \
         {refused_recv}, next datagram {:?} (want \"b\")",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test]
async fn tcp_waitall_with_dontwait_is_one_try_and_loses_nothing() {
    let (client, server) = tcp_pair().await;
    let mut buf = [0u8; 10];
    let mut problems: Vec<String> = Vec::new();

    // Nothing queued: EAGAIN at once, both forms.
    match server.try_recv_msg(
        &mut [IoSliceMut::new(&mut buf)],
        &mut [],
        RecvFlags::WAITALL,
    ) {
        Err(e) if e.errno() == libc::EAGAIN => {}
        other => problems.push(format!(
            "try_recv_msg(WAITALL), empty: {:?}",
            other.map(|m| m.len)
        )),
    }
    let r = server
        .recv_msg(
            &mut [IoSliceMut::new(&mut buf)],
            &mut [],
            RecvFlags::WAITALL | RecvFlags::DONTWAIT,
        )
        .now_or_never();
    match r {
        Some(Err(e)) if e.errno() == libc::EAGAIN => {}
        Some(other) => problems.push(format!(
            "recv_msg(WAITALL | DONTWAIT), empty: {:?}",
            other.map(|m| m.len)
        )),
        None => problems.push("recv_msg(WAITALL | DONTWAIT) waited on an empty stream".into()),
    }

    within(
        2,
        client.send_msg(&[IoSlice::new(b"abc")], None, &[], SendFlags::EMPTY),
    )
    .await
    .unwrap();
    for _ in 0..100 {
        within(2, server.readable()).await.unwrap();
        if server.inq().unwrap() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(server.inq().unwrap(), 3);

    // Three bytes queued, ten asked for, no waiting allowed: Linux's
    // recv(MSG_WAITALL | MSG_DONTWAIT) returns the 3 bytes.
    let r = server.try_recv_msg(
        &mut [IoSliceMut::new(&mut buf)],
        &mut [],
        RecvFlags::WAITALL,
    );
    let outcome = match r {
        Ok(m) => Ok((m.len, buf[..m.len].to_vec())),
        Err(e) => Err(e.errno()),
    };
    if outcome != Ok((3, b"abc".to_vec())) {
        // Where did the bytes go?
        let still_queued = server.inq().unwrap();
        problems.push(format!(
            "try_recv_msg(WAITALL) with 3 of 10 bytes queued gave {outcome:?} \
             (want Ok((3, \"abc\"))); bytes still queued after it: {still_queued}"
        ));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn send_from_on_a_dual_stack_socket_applies_the_tos_to_ipv4_traffic() {
    if !v6_available("send_from_on_a_dual_stack_socket_applies_the_tos_to_ipv4_traffic") {
        return;
    }
    let server = udp("[::]:0").await;
    if server.get(opts::V6Only).unwrap() {
        println!(
            "send_from_on_a_dual_stack_socket_applies_the_tos_to_ipv4_traffic: skipped, v6only"
        );
        return;
    }
    server.enable_info().unwrap();
    let port = server.local_addr().unwrap().port();
    let client = udp("127.0.0.1:0").await;
    client.set(opts::RecvTos, true).unwrap();

    within(2, client.send_to(b"q", ("127.0.0.1", port)))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let (_, info) = within(2, server.recv_with_info(&mut buf)).await.unwrap();
    assert_eq!(info.tos, Some(0), "{info:?}");

    // Control: IPv4 traffic of a dual-stack socket takes `IP_TOS` (SOL_IP)
    // messages; send_msg with Cmsg::Tos sets it.
    let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped();
    send1(
        &server,
        b"c",
        info.from,
        &[
            Cmsg::PktInfoV6 {
                addr: mapped,
                ifindex: 0,
            },
            Cmsg::Tos(0x20),
        ],
    )
    .await
    .unwrap();
    let mut control = [0u8; 128];
    let m = recv1(&client, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    assert_eq!(&buf[..m.len], b"c");
    assert!(m.cmsgs().any(|c| c == Cmsg::Tos(0x20)));

    within(
        2,
        server.send_from(b"r", info.from, IpAddr::from([127, 0, 0, 1]), Some(0x20)),
    )
    .await
    .unwrap();
    let mut control = [0u8; 128];
    let m = recv1(&client, &mut buf, &mut control, RecvFlags::EMPTY)
        .await
        .unwrap();
    assert_eq!(&buf[..m.len], b"r");
    let cm: Vec<Cmsg<'_>> = m.cmsgs().collect();
    assert!(
        cm.contains(&Cmsg::Tos(0x20)),
        "send_from(.., tos = Some(0x20)) to an IPv4 peer of a dual-stack socket \
         arrived with {cm:?}"
    );
}
