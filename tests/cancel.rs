//! Cancel safety, one test per claim in the docs:
//!
//! * `TcpListener::accept` is cancel safe: a lost `select!` branch takes no
//!   connection off the queue.
//! * `UdpSocket::recv_from`, `recv` and `peek_from` are cancel safe: a lost
//!   branch receives no datagram.
//! * Reading a `TcpStream` through `AsyncReadExt::read` is cancel safe: a
//!   lost branch consumes no bytes.
//! * Aborting a task blocked in recv/accept/connect/peek leaves a socket
//!   shared through an `Arc` fully usable.
//!
//! Each test makes the losing branch win often (and asserts that it did), so
//! the claim is really exercised.

mod util;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hostsock::{TcpListener, TcpStream, UdpSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::time::sleep;

/// A short sleep that often finishes before the socket op does.
fn nap() -> tokio::time::Sleep {
    sleep(Duration::from_micros(300))
}

// ---------------------------------------------------------------------------
// accept
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_losing_select_loses_no_connection() {
    const N: usize = 300;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    // Clients arrive in bursts with pauses in between, so that the sleep
    // branch wins while connections are pending and while none is.
    let clients = tokio::spawn(async move {
        let mut locals = Vec::with_capacity(N);
        let mut streams = Vec::with_capacity(N);
        for i in 0..N {
            let s = TcpStream::connect(addr).await.expect("connect");
            locals.push(s.local_addr().unwrap());
            streams.push(s);
            if i % 7 == 0 {
                sleep(Duration::from_millis(2)).await;
            }
        }
        (locals, streams)
    });

    let mut accepted = Vec::with_capacity(N);
    let mut lost_races = 0usize;
    let mut polled_once_pending = 0usize;
    util::within(30, async {
        while accepted.len() < N {
            tokio::select! {
                r = listener.accept() => {
                    let (s, peer) = r.expect("accept");
                    assert_eq!(s.peer_addr().unwrap(), peer);
                    accepted.push(peer);
                }
                _ = nap() => lost_races += 1,
            }
            // Also: a future polled exactly once and dropped.
            if accepted.len() < N {
                let mut fut = pin!(listener.accept());
                match futures::poll!(fut.as_mut()) {
                    std::task::Poll::Ready(r) => accepted.push(r.expect("accept").1),
                    std::task::Poll::Pending => polled_once_pending += 1,
                }
            }
        }
    })
    .await;

    let (locals, _streams) = clients.await.expect("client task");
    println!(
        "accept: {N} connections, sleep won {lost_races} times, \
         {polled_once_pending} accept futures dropped after one Pending poll"
    );
    assert!(
        lost_races > 0,
        "the sleep branch never won: nothing was tested"
    );
    let accepted_set: HashSet<SocketAddr> = accepted.iter().copied().collect();
    let local_set: HashSet<SocketAddr> = locals.iter().copied().collect();
    assert_eq!(accepted.len(), N, "accepted count");
    assert_eq!(accepted_set.len(), N, "an accepted peer appeared twice");
    assert_eq!(
        accepted_set, local_set,
        "accepted peers differ from the clients"
    );
    // Nothing more is queued.
    let err = listener.try_accept().unwrap_err();
    assert_eq!(err.errno(), libc::EAGAIN);
}

// ---------------------------------------------------------------------------
// UDP receives
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum RecvKind {
    RecvFrom,
    Recv,
    PeekFrom,
}

/// Sends `n` numbered datagrams from `tx` to `rx` (flow-controlled through
/// `window` so that the receive buffer never overflows), and receives them
/// on `rx` with the `kind` receive in a `select!` against a short sleep.
/// Returns how many times each number was seen, and how often the sleep won.
async fn udp_numbered(kind: RecvKind, n: u32) -> (Vec<u32>, usize) {
    let rx = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rx_addr = rx.local_addr().unwrap();
    let tx_addr = tx.local_addr().unwrap();
    if matches!(kind, RecvKind::Recv) {
        rx.connect(tx_addr).await.unwrap();
    }
    let window = Arc::new(Semaphore::new(32));

    let sender = {
        let window = window.clone();
        tokio::spawn(async move {
            for i in 0..n {
                window.acquire().await.unwrap().forget();
                let sent = tx.send_to(&i.to_le_bytes(), rx_addr).await.unwrap();
                assert_eq!(sent, 4);
                if i % 13 == 0 {
                    sleep(Duration::from_millis(1)).await;
                }
            }
            tx
        })
    };

    let mut seen = vec![0u32; n as usize];
    let mut lost_races = 0usize;
    let mut received = 0u32;
    let mut buf = [0u8; 64];
    while received < n {
        let got: Option<u32> = match kind {
            RecvKind::RecvFrom => tokio::select! {
                r = rx.recv_from(&mut buf) => {
                    let (len, from) = r.unwrap();
                    assert_eq!((len, from), (4, tx_addr));
                    Some(u32::from_le_bytes(buf[..4].try_into().unwrap()))
                }
                _ = nap() => None,
            },
            RecvKind::Recv => tokio::select! {
                r = rx.recv(&mut buf) => {
                    assert_eq!(r.unwrap(), 4);
                    Some(u32::from_le_bytes(buf[..4].try_into().unwrap()))
                }
                _ = nap() => None,
            },
            RecvKind::PeekFrom => {
                let peeked = tokio::select! {
                    r = rx.peek_from(&mut buf) => {
                        let (len, from) = r.unwrap();
                        assert_eq!((len, from), (4, tx_addr));
                        Some(u32::from_le_bytes(buf[..4].try_into().unwrap()))
                    }
                    _ = nap() => None,
                };
                match peeked {
                    Some(p) => {
                        // The peeked datagram is still there: take it off
                        // the queue (losing a select! once more, too).
                        let mut taken = None;
                        while taken.is_none() {
                            tokio::select! {
                                biased;
                                r = rx.recv_from(&mut buf) => {
                                    let (len, from) = r.unwrap();
                                    assert_eq!((len, from), (4, tx_addr));
                                    taken = Some(u32::from_le_bytes(buf[..4].try_into().unwrap()));
                                }
                                _ = nap() => lost_races += 1,
                            }
                        }
                        assert_eq!(
                            taken,
                            Some(p),
                            "recv_from after peek_from got another datagram"
                        );
                        Some(p)
                    }
                    None => None,
                }
            }
        };
        match got {
            Some(i) => {
                assert!(i < n, "datagram number {i} out of range");
                seen[i as usize] += 1;
                received += 1;
                window.add_permits(1);
            }
            None => lost_races += 1,
        }
        // A receive future polled once and dropped.
        if received < n {
            let polled = {
                let mut fut = pin!(rx.recv_from(&mut buf));
                futures::poll!(fut.as_mut())
            };
            if let std::task::Poll::Ready(r) = polled {
                let (len, _) = r.unwrap();
                assert_eq!(len, 4);
                let i = u32::from_le_bytes(buf[..4].try_into().unwrap());
                assert!(i < n, "datagram number {i} out of range");
                seen[i as usize] += 1;
                received += 1;
                window.add_permits(1);
            }
        }
    }
    let _tx = sender.await.expect("sender task");
    // Nothing extra is queued.
    let err = rx.try_recv_from(&mut buf).unwrap_err();
    assert_eq!(err.errno(), libc::EAGAIN);
    (seen, lost_races)
}

fn check_each_once(kind: RecvKind, seen: &[u32], lost_races: usize) {
    println!(
        "{kind:?}: {} datagrams, sleep won {lost_races} times",
        seen.len()
    );
    let missing: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] == 0).collect();
    let doubled: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] > 1).collect();
    assert!(
        missing.is_empty(),
        "{kind:?}: datagrams never seen: {missing:?}"
    );
    assert!(
        doubled.is_empty(),
        "{kind:?}: datagrams seen twice: {doubled:?}"
    );
    assert!(
        lost_races > 0,
        "{kind:?}: the sleep branch never won: nothing was tested"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_recv_from_losing_select_loses_no_datagram() {
    let (seen, lost) = util::within(30, udp_numbered(RecvKind::RecvFrom, 3000)).await;
    check_each_once(RecvKind::RecvFrom, &seen, lost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_recv_losing_select_loses_no_datagram() {
    let (seen, lost) = util::within(30, udp_numbered(RecvKind::Recv, 3000)).await;
    check_each_once(RecvKind::Recv, &seen, lost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_peek_from_losing_select_loses_no_datagram() {
    let (seen, lost) = util::within(30, udp_numbered(RecvKind::PeekFrom, 3000)).await;
    check_each_once(RecvKind::PeekFrom, &seen, lost);
}

// ---------------------------------------------------------------------------
// TCP read
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_read_losing_select_loses_no_bytes() {
    const WORDS: u32 = 250_000; // 1 MB of little-endian u32 counters
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let writer = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let data: Vec<u8> = (0..WORDS).flat_map(|i| i.to_le_bytes()).collect();
        // Uneven chunks with pauses, so reads often find nothing.
        let mut off = 0;
        let mut k = 0usize;
        while off < data.len() {
            let len = [1, 3, 7, 100, 1500, 4093, 65536][k % 7].min(data.len() - off);
            s.write_all(&data[off..off + len]).await.unwrap();
            off += len;
            k += 1;
            if k % 5 == 0 {
                sleep(Duration::from_millis(1)).await;
            }
        }
        s.shutdown().await.unwrap();
        s
    });
    let (mut server, _) = listener.accept().await.unwrap();

    let mut got = Vec::with_capacity(WORDS as usize * 4);
    let mut lost_races = 0usize;
    let mut buf = vec![0u8; 3000];
    util::within(40, async {
        loop {
            let n = tokio::select! {
                r = server.read(&mut buf) => r.unwrap(),
                _ = nap() => { lost_races += 1; continue; }
            };
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            // A read future polled once and dropped.
            let polled = {
                let mut fut = pin!(server.read(&mut buf));
                futures::poll!(fut.as_mut())
            };
            if let std::task::Poll::Ready(r) = polled {
                let n = r.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        }
    })
    .await;
    let _client = writer.await.expect("writer task");
    println!(
        "tcp read: {} bytes, sleep won {lost_races} times",
        got.len()
    );
    assert_eq!(got.len(), WORDS as usize * 4, "byte count");
    for (i, w) in got.chunks_exact(4).enumerate() {
        let v = u32::from_le_bytes(w.try_into().unwrap());
        assert_eq!(v, i as u32, "word {i} out of order or lost");
    }
    assert!(
        lost_races > 0,
        "the sleep branch never won: nothing was tested"
    );
}

// ---------------------------------------------------------------------------
// spawn, then abort
// ---------------------------------------------------------------------------

/// Runs `make()` on a fresh two-worker runtime in a thread of its own and
/// waits at most `secs` for it.
///
/// A task that spins inside one poll (never returning `Pending`) cannot be
/// aborted, starves the timers, and keeps its runtime from shutting down, so
/// `util::within` and `#[tokio::test]` would hang the whole test binary.
/// This guard turns such a hang into a failure of this test instead (the
/// stuck runtime is left behind in its thread).
fn guarded<Fut>(secs: u64, make: impl FnOnce() -> Fut + Send + 'static)
where
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(make())));
        let _ = tx.send(r);
        rt.shutdown_background();
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!(
            "hung for {secs} s: a task did not stop at its await point \
             (spinning inside one poll?), so it could not be aborted"
        ),
    }
}

/// Spawns `k` copies of `f`, lets them block, aborts them, and checks they
/// were really blocked (cancelled, not finished).
async fn spawn_block_abort<F, Fut>(k: usize, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + std::fmt::Debug + 'static,
{
    let tasks: Vec<_> = (0..k).map(|_| tokio::spawn(f())).collect();
    sleep(Duration::from_millis(30)).await;
    for t in &tasks {
        assert!(!t.is_finished(), "task was not blocked");
        t.abort();
    }
    for t in tasks {
        match t.await {
            Err(e) if e.is_cancelled() => {}
            other => panic!("task was not cancelled: {other:?}"),
        }
    }
}

#[test]
fn aborted_recv_tasks_leave_udp_socket_working() {
    guarded(20, || async {
        let rx = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rx_addr = rx.local_addr().unwrap();
        let tx_addr = tx.local_addr().unwrap();

        // recv_from and peek_from blocked in tasks, then aborted.
        let r = rx.clone();
        spawn_block_abort(4, move || {
            let r = r.clone();
            async move {
                let mut buf = [0u8; 16];
                r.recv_from(&mut buf).await.map(|(n, a)| (n, a, buf))
            }
        })
        .await;
        let r = rx.clone();
        spawn_block_abort(2, move || {
            let r = r.clone();
            async move {
                let mut buf = [0u8; 16];
                r.peek_from(&mut buf).await.map(|(n, a)| (n, a, buf))
            }
        })
        .await;
        tx.send_to(b"after-abort", rx_addr).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = rx.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"after-abort"[..], tx_addr));

        // recv on a connected socket, blocked then aborted.
        rx.connect(tx_addr).await.unwrap();
        let r = rx.clone();
        spawn_block_abort(3, move || {
            let r = r.clone();
            async move {
                let mut buf = [0u8; 16];
                r.recv(&mut buf).await.map(|n| (n, buf))
            }
        })
        .await;
        tx.send_to(b"again", rx_addr).await.unwrap();
        let n = rx.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"again");

        // A fresh task blocked in recv is woken by the next datagram.
        let r = rx.clone();
        let waiter = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let n = r.recv(&mut buf).await.unwrap();
            buf[..n].to_vec()
        });
        sleep(Duration::from_millis(20)).await;
        tx.send_to(b"woken", rx_addr).await.unwrap();
        assert_eq!(waiter.await.unwrap(), b"woken");
    });
}

#[test]
fn aborted_accept_tasks_leave_listener_working() {
    guarded(20, || async {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap();
        let l = listener.clone();
        spawn_block_abort(4, move || {
            let l = l.clone();
            async move { l.accept().await.map(|(_, a)| a) }
        })
        .await;

        let client = TcpStream::connect(addr).await.unwrap();
        let (mut server, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let mut client = client;
        client.write_all(b"ok").await.unwrap();
        let mut buf = [0u8; 2];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ok");

        // A fresh task blocked in accept is woken by the next connection.
        let l = listener.clone();
        let waiter = tokio::spawn(async move { l.accept().await.unwrap().1 });
        sleep(Duration::from_millis(20)).await;
        let c2 = TcpStream::connect(addr).await.unwrap();
        assert_eq!(waiter.await.unwrap(), c2.local_addr().unwrap());
    });
}

#[test]
fn aborted_connect_and_peek_tasks_leave_sockets_working() {
    guarded(20, || async {
        // Tasks blocked in connect (the target's accept queue is full, so
        // the SYNs go unanswered), then aborted.
        let (_full, full_addr, _fill) = util::full_backlog_listener();
        spawn_block_abort(4, move || async move {
            TcpStream::connect(full_addr).await.map(|s| s.local_addr())
        })
        .await;

        // Connecting elsewhere still works afterwards, and a stream shared
        // through an Arc survives aborted readers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = Arc::new(TcpStream::connect(addr).await.unwrap());
        let (mut server, _) = listener.accept().await.unwrap();

        let c = client.clone();
        spawn_block_abort(3, move || {
            let c = c.clone();
            async move {
                let mut buf = [0u8; 8];
                c.peek(&mut buf).await.map(|n| (n, buf))
            }
        })
        .await;
        let c = client.clone();
        spawn_block_abort(3, move || {
            let c = c.clone();
            async move {
                let mut buf = [0u8; 8];
                c.read_deadline(&mut buf, None).await.map(|n| (n, buf))
            }
        })
        .await;
        let c = client.clone();
        spawn_block_abort(2, move || {
            let c = c.clone();
            async move { c.readable().await }
        })
        .await;

        server.write_all(b"survived").await.unwrap();
        let mut buf = [0u8; 8];
        let mut got = Vec::new();
        while got.len() < 8 {
            let n = client.read_deadline(&mut buf, None).await.unwrap();
            assert_ne!(n, 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"survived");
        let n = client.write_deadline(b"back", None).await.unwrap();
        assert_eq!(n, 4);
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"back");
    });
}

// ---------------------------------------------------------------------------
// What a "blocked" task needs: an idle stream must not look ready
// ---------------------------------------------------------------------------

/// A task "blocked" in a read, peek or connect is only abortable if its
/// readiness wait really waits. A freshly connected client stream with
/// nothing to read must therefore not report `READABLE`/`read_closed`.
/// (`tokio::net::TcpStream` passes this every time; see the report for why
/// a hostsock stream can fail it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_stream_is_not_spuriously_readable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut spurious = Vec::new();
    util::within(30, async {
        for i in 0..100 {
            let client = if i % 2 == 0 {
                TcpStream::connect(addr).await.unwrap()
            } else {
                hostsock::TcpSocket::new_v4()
                    .unwrap()
                    .connect(addr)
                    .await
                    .unwrap()
            };
            let (_server, _) = listener.accept().await.unwrap();
            let waited = tokio::time::timeout(
                Duration::from_millis(20),
                client.ready(hostsock::Interest::READABLE),
            )
            .await;
            if let Ok(ready) = waited {
                spurious.push((i, format!("{ready:?}")));
            }
        }
    })
    .await;
    assert!(
        spurious.is_empty(),
        "{} of 100 idle, freshly connected streams reported readiness with \
         nothing to read (first: {:?}); every read/peek on such a stream busy-loops",
        spurious.len(),
        spurious.first()
    );
}
