//! The codec on synthetic buffers: no sockets, so Miri can run these.

use super::*;

fn aligned<const N: usize>() -> CmsgBuf<N> {
    CmsgBuf::new()
}

#[test]
fn every_variant_round_trips() {
    let all = [
        Cmsg::PktInfoV4 {
            ifindex: 3,
            spec_dst: Ipv4Addr::new(127, 0, 0, 2),
            addr: Ipv4Addr::new(127, 0, 0, 1),
        },
        Cmsg::PktInfoV6 {
            addr: Ipv6Addr::LOCALHOST,
            ifindex: 1,
        },
        Cmsg::Tos(0xb8),
        Cmsg::TClass(0x20),
        Cmsg::Ttl(64),
        Cmsg::HopLimit(-1),
        Cmsg::Timestamp { sec: 5, usec: 6 },
        Cmsg::TimestampNs { sec: 7, nsec: 8 },
        Cmsg::OrigDstV4("127.0.0.1:9".parse().unwrap()),
        Cmsg::OrigDstV6("[::1]:9".parse().unwrap()),
        Cmsg::RecvErrV4(ExtendedError {
            errno: libc::ECONNREFUSED as u32,
            origin: libc::SO_EE_ORIGIN_ICMP,
            icmp_type: 3,
            icmp_code: 3,
            info: 0,
            data: 0,
            offender: Some("127.0.0.1:0".parse().unwrap()),
        }),
        Cmsg::TcpInq(10),
        Cmsg::UdpGro(1200),
        Cmsg::UdpSegment(1400),
        Cmsg::Unknown {
            level: 999,
            ty: 1,
            data: &[1, 2, 3],
        },
    ];
    let mut buf = aligned::<1024>();
    for m in &all {
        buf.push(m).unwrap();
    }
    let back: Vec<_> = CmsgIter::new(buf.as_bytes()).collect();
    assert_eq!(back, all);
}

#[test]
fn push_reports_enobufs_when_full() {
    let mut buf = aligned::<24>();
    buf.push(&Cmsg::Tos(1)).unwrap();
    assert_eq!(buf.push(&Cmsg::Tos(2)), Err(crate::raw::Errno::ENOBUFS));
    assert_eq!(CmsgIter::new(buf.as_bytes()).count(), 1);
}

fn header(len: u64, level: i32, ty: i32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&len.to_ne_bytes());
    h[8..12].copy_from_slice(&level.to_ne_bytes());
    h[12..].copy_from_slice(&ty.to_ne_bytes());
    h
}

#[test]
fn hostile_lengths_stop_the_walk_without_panicking() {
    for len in [
        0u64,
        1,
        15,
        17,
        64,
        1 << 20,
        u64::MAX,
        u64::MAX - 7,
        usize::MAX as u64 - 15,
    ] {
        let mut b = [0u8; 48];
        b[..16].copy_from_slice(&header(len, libc::IPPROTO_IP, libc::IP_TOS));
        let mut it = CmsgIter::new(&b);
        let got: Vec<_> = it.by_ref().collect();
        if (16..=48).contains(&len) {
            assert_eq!(got.len(), 1, "len {len}");
        } else {
            assert!(got.is_empty(), "len {len}");
            assert!(it.malformed(), "len {len}");
        }
    }
    // Shorter than a header: nothing, and not malformed (Linux ignores it).
    let mut it = CmsgIter::new(&[1, 2, 3]);
    assert_eq!(it.next(), None);
    assert!(!it.malformed());
}

#[test]
fn short_payloads_of_known_types_come_back_unknown() {
    let mut b = [0u8; 24];
    b[..16].copy_from_slice(&header(18, libc::IPPROTO_IP, libc::IP_PKTINFO));
    let got: Vec<_> = CmsgIter::new(&b).collect();
    assert!(matches!(
        got[..],
        [Cmsg::Unknown {
            level: libc::IPPROTO_IP,
            ..
        }]
    ));
}

#[test]
fn unaligned_buffers_decode_the_same() {
    let mut buf = aligned::<64>();
    buf.push(&Cmsg::Ttl(9)).unwrap();
    let mut shifted = vec![0u8; buf.as_bytes().len() + 1];
    shifted[1..].copy_from_slice(buf.as_bytes());
    assert_eq!(
        CmsgIter::new(&shifted[1..]).collect::<Vec<_>>(),
        [Cmsg::Ttl(9)]
    );
}

#[test]
fn filter_drops_unlisted_and_reports_it() {
    let mut buf = aligned::<256>();
    buf.push(&Cmsg::Tos(1)).unwrap();
    buf.push_raw(999, 5, &[9; 5]).unwrap();
    buf.push(&Cmsg::Ttl(2)).unwrap();
    let mut bytes = buf.as_bytes().to_vec();
    let len = bytes.len();
    let (kept, dropped) = filter_received(&mut bytes, len, false);
    assert!(dropped);
    assert_eq!(
        CmsgIter::new(&bytes[..kept]).collect::<Vec<_>>(),
        [Cmsg::Tos(1), Cmsg::Ttl(2)]
    );
    let mut again = buf.as_bytes().to_vec();
    let (all, dropped) = filter_received(&mut again, len, true);
    assert!(!dropped);
    assert_eq!(all, len);
}

#[test]
fn guest_send_messages_are_checked_and_rewritten() {
    let mut guest = aligned::<256>();
    guest.push(&Cmsg::Tos(0x10)).unwrap();
    guest.push(&Cmsg::Ttl(5)).unwrap();
    let mut out = aligned::<1024>();
    parse_guest_send(guest.as_bytes(), &mut out, |_| Ok(())).unwrap();
    assert_eq!(out.as_bytes(), guest.as_bytes());

    // A receive-only type, a TTL of 0, a truncated cmsg_len: EINVAL.
    for bad in [
        Cmsg::Timestamp { sec: 1, usec: 1 },
        Cmsg::Ttl(0),
        Cmsg::TcpInq(1),
    ] {
        let mut g = aligned::<64>();
        g.push(&bad).unwrap();
        assert_eq!(
            parse_guest_send(g.as_bytes(), &mut out, |_| Ok(())),
            Err(crate::raw::Errno::EINVAL),
            "{bad:?}"
        );
    }
    let mut g = guest.as_bytes().to_vec();
    g[..8].copy_from_slice(&1000u64.to_ne_bytes());
    assert_eq!(
        parse_guest_send(&g, &mut out, |_| Ok(())),
        Err(crate::raw::Errno::EINVAL)
    );

    // The PKTINFO source goes through the check.
    let mut g = aligned::<64>();
    g.push(&Cmsg::PktInfoV4 {
        ifindex: 0,
        spec_dst: Ipv4Addr::new(169, 254, 1, 1),
        addr: Ipv4Addr::UNSPECIFIED,
    })
    .unwrap();
    let mut seen = None;
    let r = parse_guest_send(g.as_bytes(), &mut out, |ip| {
        seen = Some(ip);
        Err(crate::raw::Errno::EACCES)
    });
    assert_eq!(r, Err(crate::raw::Errno::EACCES));
    assert_eq!(seen, Some(IpAddr::V4(Ipv4Addr::new(169, 254, 1, 1))));
}

#[test]
fn trailing_bytes_shorter_than_a_header_are_ignored_on_send() {
    let mut guest = aligned::<64>();
    guest.push(&Cmsg::Tos(3)).unwrap();
    let mut g = guest.as_bytes().to_vec();
    g.extend_from_slice(&[0xff; 7]);
    let mut out = aligned::<64>();
    parse_guest_send(&g, &mut out, |_| Ok(())).unwrap();
    assert_eq!(out.as_bytes(), guest.as_bytes());
}

use std::net::IpAddr;
