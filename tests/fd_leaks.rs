//! No file descriptor outlives a dropped or expired future.
//!
//! The fd count is process-wide, so this file holds a single test whose
//! phases run strictly one after another, on a current-thread runtime, with
//! nothing else in the process opening fds meanwhile. The baseline is taken
//! after the runtime started and after one warm-up connect, accept, datagram
//! and timer, so the runtime's own fds are already counted.

mod util;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant as StdInstant};

use hostsock::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Polls each future once (in order), returning how many are still pending.
/// Futures that finished are dropped at once (their outputs too).
async fn poll_each_once<T>(futs: &mut [Option<BoxFut<'_, T>>]) -> usize {
    let mut pending = 0;
    for slot in futs.iter_mut() {
        if let Some(f) = slot {
            match futures::poll!(f.as_mut()) {
                Poll::Pending => pending += 1,
                Poll::Ready(_) => *slot = None,
            }
        }
    }
    pending
}

fn check(step: &str, baseline: usize) {
    let now = util::open_fds();
    println!("  {step}: fds {now} (baseline {baseline})");
    assert_eq!(now, baseline, "{step}: fd count not back to the baseline");
}

#[tokio::test]
async fn dropped_and_expired_futures_leak_no_fds() {
    let t0 = StdInstant::now();
    util::within(50, run()).await;
    println!("fd_leaks: total time {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(60));
}

async fn run() {
    // ---------------------------------------------------------------- warm-up
    tokio::time::sleep(Duration::from_millis(1)).await;
    {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        c.write_all(b"w").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        let u = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        u.send_to(b"w", u.local_addr().unwrap()).await.unwrap();
        u.recv_from(&mut b).await.unwrap();
    }
    // The SYN-dropping target. Its fds (listener and fill connections) stay
    // open for the whole test and are part of the baseline.
    let (_full, full_addr, _fill) = util::full_backlog_listener();
    tokio::task::yield_now().await;
    let baseline = util::open_fds();
    println!("fd_leaks: baseline {baseline} fds, target {full_addr}");

    // ------------------------------- A: 10_000 connect futures, dropped early
    let t = StdInstant::now();
    let mut max_open = 0;
    // 5 batches of 1000 futures held at once, each polled twice with
    // `futures::poll!` (once, then again after a reactor turn), then dropped.
    for batch in 0..5 {
        let mut futs: Vec<Option<BoxFut<'_, _>>> = (0..1000)
            .map(|_| Some(Box::pin(TcpStream::connect(full_addr)) as BoxFut<'_, _>))
            .collect();
        let pending = poll_each_once(&mut futs).await;
        let open = util::open_fds();
        max_open = max_open.max(open);
        assert_eq!(
            pending, 1000,
            "batch {batch}: connects to a full backlog should all be in progress"
        );
        assert_eq!(
            open,
            baseline + 1000,
            "batch {batch}: each pending connect should hold exactly one socket"
        );
        tokio::task::yield_now().await;
        let pending = poll_each_once(&mut futs).await;
        assert_eq!(pending, 1000, "batch {batch}: second poll");
        drop(futs);
        assert_eq!(util::open_fds(), baseline, "after poll!-batch {batch}");
    }
    // 5 batches of 1000 futures run concurrently under a 1 ms timeout.
    for batch in 0..5 {
        let results = futures::future::join_all((0..1000).map(|_| {
            tokio::time::timeout(Duration::from_millis(1), TcpStream::connect(full_addr))
        }))
        .await;
        let timed_out = results.iter().filter(|r| r.is_err()).count();
        assert_eq!(
            timed_out, 1000,
            "timeout-batch {batch}: all should time out"
        );
        drop(results);
        assert_eq!(util::open_fds(), baseline, "after timeout-batch {batch}");
    }
    println!(
        "A: 10000 connect futures dropped in {:?} (peak {max_open} fds)",
        t.elapsed()
    );
    check("A", baseline);

    // ---------------------- A': 1000 TcpSocket::connect futures, dropped early
    let t = StdInstant::now();
    {
        let mut futs: Vec<Option<BoxFut<'_, _>>> = (0..1000)
            .map(|_| {
                let s = TcpSocket::new_v4().unwrap();
                Some(Box::pin(s.connect(full_addr)) as BoxFut<'_, _>)
            })
            .collect();
        assert_eq!(util::open_fds(), baseline + 1000);
        let pending = poll_each_once(&mut futs).await;
        assert_eq!(pending, 1000);
    }
    println!(
        "A': 1000 TcpSocket::connect futures dropped in {:?}",
        t.elapsed()
    );
    check("A'", baseline);

    // ------------------- B: 1000 connect_deadline futures run to the deadline
    let t = StdInstant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(5);
    let results = futures::future::join_all(
        (0..1000).map(|_| TcpStream::connect_deadline(full_addr, deadline)),
    )
    .await;
    let mut timeouts = 0;
    for r in &results {
        match r {
            Err(e) if e.is_timeout() => {
                assert_eq!(e.errno(), libc::EINPROGRESS);
                timeouts += 1;
            }
            other => panic!("connect_deadline to a full backlog: {other:?}"),
        }
    }
    drop(results);
    println!(
        "B: {timeouts} connect_deadline futures expired in {:?}",
        t.elapsed()
    );
    check("B", baseline);

    // ------------------------------- C: 1000 accept futures, dropped early
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let laddr = listener.local_addr().unwrap();
    let base_c = util::open_fds();
    let t = StdInstant::now();
    {
        let mut futs: Vec<Option<BoxFut<'_, _>>> = (0..1000)
            .map(|_| Some(Box::pin(listener.accept()) as BoxFut<'_, _>))
            .collect();
        let pending = poll_each_once(&mut futs).await;
        assert_eq!(pending, 1000, "no connection is queued: all accepts wait");
        assert_eq!(util::open_fds(), base_c);
    }
    // and 1000 accept_deadline futures that expire
    let soon = tokio::time::Instant::now() + Duration::from_millis(2);
    let results =
        futures::future::join_all((0..1000).map(|_| listener.accept_deadline(soon))).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(e) if e.is_timeout()))
    );
    drop(results);
    println!(
        "C: 2000 accept futures dropped/expired in {:?}",
        t.elapsed()
    );
    check("C", base_c);
    // The listener still works, and what it hands out is closed on drop.
    {
        let c = TcpStream::connect(laddr).await.unwrap();
        let (s, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        assert_eq!(util::open_fds(), base_c + 2);
        drop((c, s));
    }
    check("C (after a real accept)", base_c);
    drop(listener);
    check("C (listener dropped)", baseline);

    // ------------------------------- D: 1000 recv futures, dropped early
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let base_d = util::open_fds();
    let t = StdInstant::now();
    {
        let mut bufs = vec![[0u8; 16]; 1000];
        let mut futs: Vec<Option<BoxFut<'_, _>>> = bufs
            .iter_mut()
            .map(|b| Some(Box::pin(sock.recv_from(b)) as BoxFut<'_, _>))
            .collect();
        let pending = poll_each_once(&mut futs).await;
        assert_eq!(pending, 1000, "nothing is queued: all receives wait");
        assert_eq!(util::open_fds(), base_d);
    }
    sock.connect(peer.local_addr().unwrap()).await.unwrap();
    {
        let mut bufs = vec![[0u8; 16]; 1000];
        let mut futs: Vec<Option<BoxFut<'_, _>>> = bufs
            .iter_mut()
            .map(|b| Some(Box::pin(sock.recv(b)) as BoxFut<'_, _>))
            .collect();
        let pending = poll_each_once(&mut futs).await;
        assert_eq!(pending, 1000);
    }
    println!("D: 2000 recv futures dropped in {:?}", t.elapsed());
    check("D", base_d);
    // The socket still works.
    peer.send_to(b"still", sock.local_addr().unwrap())
        .await
        .unwrap();
    let mut b = [0u8; 16];
    let n = sock.recv(&mut b).await.unwrap();
    assert_eq!(&b[..n], b"still");
    drop((sock, peer));
    check("end", baseline);
}
