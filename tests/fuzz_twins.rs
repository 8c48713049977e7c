//! The stable twins of the cargo-fuzz targets in `fuzz/`: the same
//! invariants (`fuzz/src/checks.rs`, compiled in here), driven by proptest
//! and by replaying the checked-in corpus `fuzz/corpus/<target>/`, plus the
//! minimised crashers the fuzzers found, as regression tests.
//!
//! The real-socket checks use loopback only: outside a private network
//! namespace every address they build is forced onto 127.0.0.0/8 or `::1`,
//! and the denied address is 127.0.0.2 with canaries listening on it.
#![cfg(target_os = "linux")]

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::path::PathBuf;

use proptest::prelude::*;

/// Runs `check` on `data`, aborting the whole test process (with the input
/// printed) if it has not returned within 60 s: a hang found by a twin must
/// fail CI, not stall it.
fn bounded(check: fn(&[u8]), data: &[u8]) {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let input = data.to_vec();
    let watchdog = std::thread::spawn(move || {
        if wait.recv_timeout(std::time::Duration::from_secs(60))
            == Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        {
            eprintln!("a real-socket check still running after 60 s; input: {input:?}");
            std::process::abort();
        }
    });
    check(data);
    drop(done);
    watchdog.join().expect("watchdog");
}

/// Runs `check` on every file of `fuzz/corpus/<target>/` (the seeds that
/// are checked in, and whatever a local fuzzing run added). Returns how
/// many inputs ran.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    // A local fuzzing run can leave thousands; a bounded replay (Miri runs
    // about 10^4 times slower: a sample there).
    files.truncate(if cfg!(miri) { 24 } else { 2000 });
    for f in &files {
        let data = std::fs::read(f).expect("corpus file");
        bounded(check, &data);
    }
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files.len()
}

/// Control-message bytes: well-formed entries of the listed types with
/// payloads of any size, and hostile lengths among them.
fn cmsg_bytes() -> impl Strategy<Value = Vec<u8>> {
    let entry = (
        prop_oneof![
            Just((libc::IPPROTO_IP, libc::IP_TOS)),
            Just((libc::IPPROTO_IP, libc::IP_TTL)),
            Just((libc::IPPROTO_IP, libc::IP_PKTINFO)),
            Just((libc::IPPROTO_IP, libc::IP_RECVERR)),
            Just((libc::IPPROTO_IP, libc::IP_ORIGDSTADDR)),
            Just((libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)),
            Just((libc::IPPROTO_IPV6, libc::IPV6_TCLASS)),
            Just((libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT)),
            Just((libc::IPPROTO_IPV6, libc::IPV6_RECVERR)),
            Just((libc::IPPROTO_IPV6, libc::IPV6_ORIGDSTADDR)),
            Just((libc::SOL_SOCKET, libc::SO_TIMESTAMP)),
            Just((libc::SOL_SOCKET, libc::SO_TIMESTAMPNS)),
            Just((libc::IPPROTO_UDP, libc::UDP_SEGMENT)),
            Just((libc::IPPROTO_UDP, libc::UDP_GRO)),
            Just((libc::IPPROTO_TCP, libc::TCP_CM_INQ)),
            (any::<i32>(), any::<i32>()),
        ],
        prop::collection::vec(any::<u8>(), 0..48),
        prop_oneof![
            8 => Just(None),
            1 => any::<u64>().prop_map(Some),
            1 => (0u64..64).prop_map(Some),
        ],
    );
    prop::collection::vec(entry, 0..6).prop_map(|entries| {
        let mut out = Vec::new();
        for ((level, ty), payload, len) in entries {
            let len = len.unwrap_or(16 + payload.len() as u64);
            out.extend_from_slice(&len.to_ne_bytes());
            out.extend_from_slice(&level.to_ne_bytes());
            out.extend_from_slice(&ty.to_ne_bytes());
            out.extend_from_slice(&payload);
            while out.len() % 8 != 0 {
                out.push(0);
            }
        }
        out
    })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// Sockaddr bytes: INET, INET6 and UNSPEC families at every length, and
/// raw bytes.
fn sockaddr_bytes() -> impl Strategy<Value = Vec<u8>> {
    let family = prop_oneof![
        Just(libc::AF_INET as u16),
        Just(libc::AF_INET6 as u16),
        Just(libc::AF_UNSPEC as u16),
        any::<u16>(),
    ];
    prop_oneof![
        bytes(160),
        (family, bytes(140)).prop_map(|(f, mut b)| {
            if b.len() >= 2 {
                b[..2].copy_from_slice(&f.to_ne_bytes());
            }
            b
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn sockaddr_decoder_matches_the_model(b in sockaddr_bytes()) {
        checks::check_sockaddr_pure(&b);
    }

    #[test]
    fn cmsg_iter_matches_the_model(b in prop_oneof![cmsg_bytes(), bytes(300)]) {
        checks::check_cmsg_recv(&b);
    }

    #[test]
    fn cmsg_encoder_round_trips(b in bytes(400)) {
        checks::check_cmsg_encode(&b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn sockaddr_bytes_never_pass_a_deny_all_policy(b in sockaddr_bytes()) {
        bounded(checks::check_sockaddr_sockets, &b);
    }

    #[test]
    fn guest_send_cmsgs_follow_the_model(split in 0u8..64, ctl in cmsg_bytes()) {
        let mut data = vec![split];
        data.extend((0..split).map(|i| i.wrapping_mul(37)));
        data.extend(ctl);
        bounded(checks::check_cmsg_send, &data);
    }

    #[test]
    fn sockopt_arguments(b in bytes(200)) {
        bounded(checks::check_sockopt, &b);
    }

    #[test]
    fn flags_outside_the_masks_are_refused(b in bytes(64)) {
        bounded(checks::check_flags, &b);
    }

    #[test]
    fn operation_sequences(b in bytes(600)) {
        bounded(checks::check_opseq, &b);
    }
}

#[test]
fn corpus_sockaddr() {
    println!(
        "{} inputs",
        replay("sockaddr", checks::check_sockaddr_sockets)
    );
}

#[test]
fn corpus_cmsg_recv() {
    println!("{} inputs", replay("cmsg_recv", checks::check_cmsg_recv));
}

#[test]
fn corpus_cmsg_send() {
    println!("{} inputs", replay("cmsg_send", checks::check_cmsg_send));
}

#[test]
fn corpus_sockopt() {
    println!("{} inputs", replay("sockopt", checks::check_sockopt));
}

#[test]
fn corpus_flags() {
    println!("{} inputs", replay("flags", checks::check_flags));
}

#[test]
fn corpus_opseq() {
    println!("{} inputs", replay("opseq", checks::check_opseq));
}

// ---------------------------------------------------------------------
// Minimised crashers (`cargo fuzz tmin`), kept as regression tests.
// ---------------------------------------------------------------------

/// Found by `sockaddr` (60 s, ~1,200 runs): `sendto` on a UDPv4 socket with
/// an `AF_UNSPEC` sockaddr of 16 bytes (port 32, address 0.0.0.0) passes a
/// deny-all policy. Linux's `udp_sendmsg` reads `AF_UNSPEC` as `AF_INET`,
/// but `sockaddr::parse` calls it `Unspec` and the address rules never see
/// it.
#[test]
fn regression_sockaddr_af_unspec_sendto_passes_deny_all() {
    checks::check_sockaddr_sockets(&[0, 0, 0, 32, 0, 0, 0, 0, 63, 246, 246, 95, 246, 246, 246, 63]);
}

/// Found by `opseq` (~5,700 runs), minimised to 10 bytes: a UDPv4 socket,
/// then `sendto(MSG_FASTOPEN | MSG_DONTWAIT)` of 0 bytes to an `AF_UNSPEC`
/// sockaddr carrying 127.0.0.2 (denied for every use): the canary on
/// 127.0.0.2 receives the datagram. Same root cause as above.
#[test]
fn regression_opseq_af_unspec_sendto_reaches_the_denied_canary() {
    checks::check_opseq(&[0x00, 0x06, 0x66, 0x35, 0x5d, 0xf6, 0x00, 0x0a, 0x02, 0xec]);
}

/// The pure halves over the socket targets' corpora (also what Miri runs:
/// no sockets).
#[test]
fn corpus_pure_decoders() {
    let n = replay("sockaddr", checks::check_sockaddr_pure)
        + replay("cmsg_send", |d| {
            checks::check_cmsg_encode(d);
            checks::check_cmsg_recv(d);
        });
    println!("{n} inputs");
}

/// Found by `opseq` (fork mode, a job stuck at 92% CPU; minimised by hand
/// to `fuzz/regressions/opseq-shut-rd-recv-spin`: socket(AF_INET,
/// SOCK_DGRAM), shutdown(SHUT_RD), recvmsg with a 20 ms deadline).
/// `shutdown(SHUT_RD)` on an unconnected UDP socket answers `ENOTCONN`, but
/// Linux still sets `RCV_SHUTDOWN` (inet_shutdown wakes pollers "even on
/// unconnected UDP sockets"): poll says readable for good, a non-blocking
/// recv gives `EAGAIN`, and a waiting `RawSocket::recvmsg` spins inside one
/// poll of the runtime at 100% CPU; its deadline, and any tokio timeout
/// around it, never fire. Linux's blocking recv returns 0 at once here
/// (what a Python `recvfrom` shows: `(b'', None)`).
#[test]
fn regression_opseq_recv_after_refused_shut_rd_spins() {
    use std::io::IoSliceMut;
    use std::sync::Arc;
    use std::time::Duration;

    use hostsock::Policy;
    use hostsock::raw::{Errno, RawSocket};

    // Its socket must not show up in a parallel check's fd baseline.
    let _serial = checks::socket_lock();
    let (tx, rx) = std::sync::mpsc::channel();
    // A thread of its own: if the receive spins, it spins there, and the
    // bounded wait below reports it.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let s = RawSocket::new(
                Arc::new(Policy::default()),
                libc::AF_INET,
                libc::SOCK_DGRAM,
                0,
            )
            .unwrap();
            let shut = s.shutdown(libc::SHUT_RD);
            let mut b = [0u8; 64];
            let nonblocking = s
                .recvmsg(&mut [IoSliceMut::new(&mut b)], libc::MSG_DONTWAIT, false, 0)
                .await
                .map(|r| r.len);
            let at = tokio::time::Instant::now() + Duration::from_millis(20);
            let blocking = s
                .recvmsg_deadline(&mut [IoSliceMut::new(&mut b)], 0, true, 64, Some(at))
                .await
                .map(|r| r.len);
            (shut, nonblocking, blocking)
        });
        let _ = tx.send(got);
    });
    let (shut, nonblocking, blocking) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a recvmsg with a 20 ms deadline was still running after 10 s");
    assert_eq!(shut, Err(Errno::ENOTCONN));
    assert_eq!(nonblocking, Err(Errno::EAGAIN));
    assert_eq!(blocking, Ok(0), "Linux's blocking recv returns 0 at once");
}

/// Found by `opseq` in a CI fuzzing run (input in
/// `fuzz/regressions/opseq-wait-pri-read-shut-spin`): a UDP socket,
/// `shutdown(SHUT_RD)` twice, then `wait(POLLPRI, 20 ms)`. The reactor's
/// "read closed" readiness is never cleared, so the wait woke at once, found
/// no POLLPRI and went round again without yielding: 100% CPU, and the
/// deadline never fired.
#[test]
fn regression_opseq_wait_on_read_shut_socket_spins() {
    let data = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/opseq-wait-pri-read-shut-spin"),
    )
    .expect("the regression input");
    bounded(checks::check_opseq, &data);
}
