//! Load: 10,000 concurrent TCP connections through a hostsock echo server,
//! and 1,000,000 UDP datagrams with exact accounting.
//!
//! * TCP: the fd limit (RLIMIT_NOFILE 20000 here) does not fit 20,000
//!   sockets in one process, so the echo server is a child process (this
//!   binary again, in a server role, on loopback). The test process opens
//!   10,000 connections and keeps them all open at once, then every one of
//!   them sends its own 32-byte message and checks the echo. The server
//!   reports how many connections it held at its peak.
//! * UDP: both ends run in a child inside a private network namespace made
//!   for the test (root needed; skipped with a reason otherwise), so that
//!   the namespace's `/proc/net/snmp` counts only this traffic:
//!   sent = received + dropped, where dropped is the `Udp: InErrors` delta
//!   (which includes `RcvbufErrors`), and `InDatagrams` moved by exactly
//!   the number received. Every datagram carries its sequence number: none
//!   is seen twice.
//!
//! The two tests run one after the other (a lock).

#[path = "faults/netns.rs"]
mod netns;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hostsock::{RecvSlot, TcpListener, TcpStream, Transmit, UdpSocket};
use netns::{Netns, ROLE_VAR, figure, snmp_get, spawn_role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHILD: &str = "load_child";
const CONNECTIONS: usize = 10_000;
const DATAGRAMS: u64 = 1_000_000;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

fn message(i: usize) -> [u8; 32] {
    let mut m = [0u8; 32];
    for (k, b) in m.iter_mut().enumerate() {
        *b = (i.wrapping_mul(31).wrapping_add(k * 7) % 251) as u8;
    }
    m[..8].copy_from_slice(&(i as u64).to_le_bytes());
    m
}

// ===========================================================================
// TCP
// ===========================================================================

#[test]
fn ten_thousand_concurrent_tcp_connections_all_echo() {
    let _serial = serial();
    let mut server = spawn_role(None, CHILD, "tcp_echo", &[], &[]);
    let port: u16 = server
        .wait_line("READY port=", Duration::from_secs(10))
        .parse()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let (connected_in, echoed_in, peak_fds) = rt.block_on(async move {
        tokio::time::timeout(Duration::from_secs(60), tcp_clients(addr))
            .await
            .expect("10k connections did not finish within 60 s")
    });
    let total = started.elapsed();
    // Every client socket is closed: the server sees them all end.
    let out = server.finish(Duration::from_secs(30));
    println!(
        "FIGURE tcp_10k connected {CONNECTIONS} in {connected_in:?}, all echoed and verified in {echoed_in:?}, total {total:?}; client peak fds {peak_fds}"
    );
    let peak: usize = figure(&out, "server_peak_connections").parse().unwrap();
    let accepted: usize = figure(&out, "server_accepted").parse().unwrap();
    let echoed: usize = figure(&out, "server_echoed_connections").parse().unwrap();
    assert_eq!(accepted, CONNECTIONS, "server accepted");
    assert_eq!(peak, CONNECTIONS, "not all connections were open at once");
    assert_eq!(echoed, CONNECTIONS, "server echoed");
    assert!(peak_fds >= CONNECTIONS, "client held {peak_fds} fds");
    assert!(total < Duration::from_secs(60));
}

async fn tcp_clients(addr: SocketAddr) -> (Duration, Duration, usize) {
    let t0 = Instant::now();
    // Connect all of them (at most 256 handshakes in flight, so the
    // listener's backlog never overflows), and keep every one open.
    let mut streams: Vec<(usize, TcpStream)> = futures::stream::iter(0..CONNECTIONS)
        .map(|i| async move {
            let s = TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("connect {i}: {e}"));
            (i, s)
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let connected_in = t0.elapsed();
    let peak_fds = open_fds();
    streams.sort_by_key(|(i, _)| *i);

    // All of them at once: send, read back, verify.
    let t1 = Instant::now();
    let results = futures::future::join_all(streams.iter_mut().map(|(i, s)| async move {
        let m = message(*i);
        s.write_all(&m).await?;
        let mut back = [0u8; 32];
        s.read_exact(&mut back).await?;
        Ok::<bool, std::io::Error>(back == m)
    }))
    .await;
    let echoed_in = t1.elapsed();
    let mut bad = 0;
    for (k, r) in results.iter().enumerate() {
        match r {
            Ok(true) => {}
            Ok(false) => {
                bad += 1;
                eprintln!("connection {k}: echo differs");
            }
            Err(e) => {
                bad += 1;
                eprintln!("connection {k}: {e}");
            }
        }
    }
    assert_eq!(bad, 0, "{bad} of {CONNECTIONS} connections failed");
    drop(streams);
    (connected_in, echoed_in, peak_fds)
}

async fn role_tcp_echo() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("READY port={}", l.local_addr().unwrap().port());
    let live = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let echoed = Arc::new(AtomicUsize::new(0));
    let all_closed = Arc::new(tokio::sync::Notify::new());
    let mut accepted = 0;
    while accepted < CONNECTIONS {
        let (mut s, _) = tokio::time::timeout(Duration::from_secs(60), l.accept())
            .await
            .expect("no connection for 60 s")
            .expect("accept");
        accepted += 1;
        let now = live.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
        let (live, done, echoed, all_closed) = (
            live.clone(),
            done.clone(),
            echoed.clone(),
            all_closed.clone(),
        );
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut total = 0;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        total += n;
                        if s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            if total == 32 {
                echoed.fetch_add(1, Ordering::SeqCst);
            }
            live.fetch_sub(1, Ordering::SeqCst);
            if done.fetch_add(1, Ordering::SeqCst) + 1 == CONNECTIONS {
                all_closed.notify_one();
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(60), all_closed.notified())
        .await
        .expect("the clients did not all close within 60 s");
    println!("FIGURE server_accepted {accepted}");
    println!(
        "FIGURE server_peak_connections {}",
        peak.load(Ordering::SeqCst)
    );
    println!(
        "FIGURE server_echoed_connections {}",
        echoed.load(Ordering::SeqCst)
    );
}

// ===========================================================================
// UDP
// ===========================================================================

#[test]
fn one_million_udp_datagrams_are_all_accounted_for() {
    let _serial = serial();
    if let Some(why) = netns::skip_reason(&[]) {
        println!("SKIPPED: {why}");
        return;
    }
    let ns = Netns::new("q", "");
    let child = spawn_role(Some(&ns), CHILD, "udp_flood", &[], &[]);
    let out = child.finish(Duration::from_secs(90));
    // Cross-check from outside: the namespace's counters, read by another
    // process in it, agree with what the child reported.
    let udp = ns.snmp("Udp");
    let in_dgrams = snmp_get(&udp, "InDatagrams");
    let received: u64 = figure(&out, "udp_received").parse().unwrap();
    println!("namespace Udp counters after the run: {udp:?}");
    assert!(in_dgrams >= received);
}

fn role_udp_flood() {
    let snmp = || netns::parse_snmp(&std::fs::read_to_string("/proc/net/snmp").unwrap(), "Udp");
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let (rx, tx) = rt().block_on(async {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        (rx.into_std().unwrap(), tx.into_std().unwrap())
    });
    let rx_addr = rx.local_addr().unwrap();
    let before = snmp();
    let sent = Arc::new(AtomicU64::new(0));
    let sender_done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    let sender = {
        let (sent, sender_done) = (sent.clone(), sender_done.clone());
        std::thread::spawn(move || {
            rt().block_on(async move {
                let tx = UdpSocket::from_std(tx).unwrap();
                let mut bufs = vec![[0u8; 64]; hostsock::MAX_BATCH];
                let mut next = 0u64;
                while next < DATAGRAMS {
                    let n = (DATAGRAMS - next).min(bufs.len() as u64) as usize;
                    for (k, b) in bufs[..n].iter_mut().enumerate() {
                        b[..8].copy_from_slice(&(next + k as u64).to_le_bytes());
                    }
                    let batch: Vec<Transmit<'_>> = bufs[..n]
                        .iter()
                        .map(|b| Transmit::new(&b[..], Some(rx_addr)))
                        .collect();
                    let k = tokio::time::timeout(Duration::from_secs(10), tx.send_batch(&batch))
                        .await
                        .expect("send_batch stuck")
                        .expect("send_batch") as u64;
                    assert!(k > 0);
                    // What the kernel took is what was sent; the rest goes
                    // again in the next batch.
                    next += k;
                    sent.store(next, Ordering::SeqCst);
                }
                sender_done.store(true, Ordering::SeqCst);
            })
        })
    };

    let (received, dupes, drained_in) = rt().block_on(async {
        let rx = UdpSocket::from_std(rx).unwrap();
        let mut seen = vec![0u64; (DATAGRAMS as usize).div_ceil(64)];
        let mut bufs = vec![[0u8; 64]; hostsock::MAX_BATCH];
        let mut controls = [[0u8; 0]; hostsock::MAX_BATCH];
        let mut received = 0u64;
        let mut dupes = 0u64;
        let mut done_at: Option<Instant> = None;
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the flood did not end within 60 s"
            );
            let mut slots: Vec<RecvSlot<'_>> = bufs
                .iter_mut()
                .zip(controls.iter_mut())
                .map(|(b, c)| RecvSlot::new(&mut b[..], &mut c[..]))
                .collect();
            let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
            match rx.recv_batch_deadline(&mut slots, deadline).await {
                Ok(n) => {
                    for s in &slots[..n] {
                        assert_eq!(s.len(), 64);
                        let seq = u64::from_le_bytes(s.data()[..8].try_into().unwrap());
                        assert!(seq < DATAGRAMS);
                        let (w, bit) = ((seq / 64) as usize, seq % 64);
                        if seen[w] & (1 << bit) != 0 {
                            dupes += 1;
                        }
                        seen[w] |= 1 << bit;
                        received += 1;
                    }
                    continue;
                }
                Err(e) if e.is_timeout() => {}
                Err(e) => panic!("recv_batch: {e}"),
            }
            // Nothing for 20 ms: if the sender is done, everything sent has
            // either arrived or been counted as dropped by now.
            if sender_done.load(Ordering::SeqCst) {
                let at = *done_at.get_or_insert_with(Instant::now);
                let now = snmp();
                let dropped = snmp_get(&now, "InErrors") - snmp_get(&before, "InErrors");
                let total = sent.load(Ordering::SeqCst);
                if received + dropped >= total {
                    break (received, dupes, at.elapsed());
                }
                assert!(
                    at.elapsed() < Duration::from_secs(5),
                    "5 s after the last send: {received} received + {dropped} dropped < {total} sent"
                );
            }
        }
    });
    sender.join().expect("sender thread");
    let took = started.elapsed();
    let after = snmp();
    let delta = |name: &str| snmp_get(&after, name) - snmp_get(&before, name);
    let sent = sent.load(Ordering::SeqCst);
    let (in_errors, rcvbuf, in_dgrams, out_dgrams, sndbuf) = (
        delta("InErrors"),
        delta("RcvbufErrors"),
        delta("InDatagrams"),
        delta("OutDatagrams"),
        delta("SndbufErrors"),
    );
    println!(
        "FIGURE udp_1m sent {sent}, received {received}, dropped {in_errors} (InErrors delta; RcvbufErrors delta {rcvbuf}), \
         InDatagrams delta {in_dgrams}, OutDatagrams delta {out_dgrams}, SndbufErrors delta {sndbuf}, duplicates {dupes}; \
         {took:?} ({:.0} datagrams/s), drained {drained_in:?} after the last send",
        sent as f64 / took.as_secs_f64()
    );
    println!("FIGURE udp_received {received}");
    assert_eq!(sent, DATAGRAMS);
    assert_eq!(sent, received + in_errors, "sent = received + dropped");
    assert_eq!(in_dgrams, received, "InDatagrams delta = received");
    assert_eq!(out_dgrams, sent, "OutDatagrams delta = sent");
    assert_eq!(dupes, 0);
    assert!(took < Duration::from_secs(60));
}

// ===========================================================================
// Roles
// ===========================================================================

/// Runs one role when started as a child; does nothing in a normal run.
#[test]
fn load_child() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        println!("helper for the child processes of this file: nothing to do here");
        return;
    };
    match role.as_str() {
        "tcp_echo" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(role_tcp_echo()),
        "udp_flood" => role_udp_flood(),
        other => panic!("unknown role {other}"),
    }
    println!("ROLE-DONE {role}");
}
