//! Heap allocations on the per-message paths.
//!
//! The crate promises no heap allocation per message (send/recv,
//! send_msg/recv_msg, typed or raw). A counting global allocator counts
//! every `alloc`/`alloc_zeroed`/`realloc` made on the test's own thread
//! while a measured operation runs (a thread-local flag, so that the test
//! harness's other threads never count). Everything runs on a
//! current-thread runtime built by hand: the reactor and the timer are
//! driven on this same thread, so a wait that allocates is counted too.
//!
//! Each path is warmed up first (tokio registrations, the read-timeout
//! timer box, the poll forms' error-watch dup and other lazily-made things
//! may allocate once), then measured over `N` messages. The table printed
//! at the end lists the allocations per path; every measured path must
//! show 0.
//!
//! Set `HOSTSOCK_ALLOC_TRACE=1` to print a backtrace for each counted
//! allocation (at most `HOSTSOCK_ALLOC_TRACE_MAX`, default 20).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::poll_fn;
use hostsock::cmsg::{Cmsg, CmsgBuf, CmsgIter};
use hostsock::msg::{RecvFlags, SendFlags};
use hostsock::raw::{RawSocket, encode_sockaddr};
use hostsock::{TcpListener, TcpStream, UdpSocket, opts};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

// ------------------------------------------------------------ the allocator

/// Counts allocations made on a thread while its `COUNTING` flag is set.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
    static CURRENT: Cell<&'static str> = const { Cell::new("") };
}

/// Print a backtrace for each counted allocation.
static TRACE: AtomicBool = AtomicBool::new(false);
/// How many more backtraces may be printed.
static TRACE_LEFT: AtomicUsize = AtomicUsize::new(0);

#[global_allocator]
static GLOBAL: Counting = Counting;

fn note_alloc(size: usize) {
    let counting = COUNTING.try_with(Cell::get).unwrap_or(false);
    if !counting || IN_TRACE.try_with(Cell::get).unwrap_or(true) {
        return;
    }
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    if TRACE.load(Ordering::Relaxed)
        && TRACE_LEFT
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    {
        // The backtrace and its printing allocate: not counted, not traced.
        IN_TRACE.with(|t| t.set(true));
        let bt = std::backtrace::Backtrace::force_capture();
        let path = CURRENT.with(Cell::get);
        eprintln!("=== counted allocation of {size} bytes in `{path}`:\n{bt}");
        IN_TRACE.with(|t| t.set(false));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are the ones given; the counting
// beside it touches only const-initialised thread-locals without
// destructors (no allocation, no recursion) and, when tracing, guards
// against re-entry before it allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc(new_size);
        // SAFETY: the caller's contract for `realloc` is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

// ------------------------------------------------------------ measuring

/// Warm-up rounds per path (not asserted on).
const WARMUP: usize = 32;
/// Warm-up rounds of the back-to-back rows: enough for tokio's coop
/// budget (128 units per poll) to run out several times.
const BACK_TO_BACK_WARMUP: usize = 500;
/// Measured messages per path.
const N: usize = 1000;
/// The message size.
const LEN: usize = 64;
/// A deadline no test reaches.
const FAR: Duration = Duration::from_secs(3600);

/// Allocations of one measured operation: during warm-up and over the `N`
/// measured messages.
struct Meter {
    path: &'static str,
    warm: usize,
    measured: usize,
    start: usize,
}

impl Meter {
    fn new(path: &'static str) -> Meter {
        Meter {
            path,
            warm: 0,
            measured: 0,
            start: 0,
        }
    }

    /// Starts counting (may be paused with `off` and resumed).
    fn on(&mut self) {
        CURRENT.with(|c| c.set(self.path));
        self.start = ALLOCS.with(Cell::get);
        COUNTING.with(|c| c.set(true));
    }

    /// Stops counting; what was counted since `on` goes to the warm-up or
    /// the measured total.
    fn off(&mut self, warm: bool) {
        COUNTING.with(|c| c.set(false));
        let n = ALLOCS.with(Cell::get) - self.start;
        if warm {
            self.warm += n;
        } else {
            self.measured += n;
        }
    }

    /// Counts the whole of `fut`, every poll and every wait in between
    /// (after a `settle`, so that it starts with a fresh coop budget).
    async fn run<F: Future>(&mut self, warm: bool, fut: F) -> F::Output {
        settle().await;
        self.on();
        let r = fut.await;
        self.off(warm);
        r
    }

    /// Counts the rest of a receive already polled once (no `settle`: the
    /// wait it registered must not be served by an uncounted yield).
    async fn resume<F: Future>(&mut self, warm: bool, fut: F) -> F::Output {
        self.on();
        let r = fut.await;
        self.off(warm);
        r
    }
}

/// The results table.
#[derive(Default)]
struct Table {
    rows: Vec<(&'static str, usize, usize)>,
}

impl Table {
    fn add(&mut self, meters: impl IntoIterator<Item = Meter>) {
        for m in meters {
            self.rows.push((m.path, m.warm, m.measured));
        }
    }

    fn print(&self) {
        println!();
        println!(
            "{:<58} {:>9} {:>12} {:>10}",
            "path",
            "warm-up",
            format!("over {N}"),
            "per msg"
        );
        println!("{}", "-".repeat(92));
        for (path, warm, measured) in &self.rows {
            let per = *measured as f64 / N as f64;
            let mark = if *measured == 0 {
                ""
            } else {
                "  <-- ALLOCATES"
            };
            println!("{path:<58} {warm:>9} {measured:>12} {per:>10.3}{mark}");
        }
        println!();
    }

    fn failures(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| r.2 != 0)
            .map(|(p, _, m)| format!("{p}: {m} allocations over {N} messages"))
            .collect()
    }
}

// ------------------------------------------------------------ helpers

/// Yields once to the runtime (not counted), so that the next measured
/// operation starts with a fresh tokio coop budget: a measured receive of
/// queued data is then the one-syscall path, and a "waits" receive is
/// pending because of the reactor, not because the budget ran out.
///
/// It also warms up tokio's own lazily-grown list of deferred wakers (one
/// `Vec<Waker>` per `block_on`, grown on the first yield or the first time
/// the coop budget runs out): without it, that one allocation of the
/// runtime falls on whichever measured operation first exhausts the budget
/// after the warm-up.
async fn settle() {
    tokio::task::yield_now().await;
}

/// Waits (blocking, at most 5 s) until the kernel reports `fd` readable, so
/// that the measured receive finds the data already queued.
fn wait_queued(fd: RawFd) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid `pollfd` and the count passed is 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, 5000) };
    assert_eq!(rc, 1, "fd {fd} did not turn readable within 5 s");
}

fn msg(i: usize) -> [u8; LEN] {
    let mut m = [0u8; LEN];
    for (k, b) in m.iter_mut().enumerate() {
        *b = (i + k) as u8;
    }
    m
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime")
}

async fn udp_pair() -> (UdpSocket, UdpSocket) {
    let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind a");
    let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind b");
    (a, b)
}

async fn udp_connected_pair() -> (UdpSocket, UdpSocket) {
    let (a, b) = udp_pair().await;
    a.connect(b.local_addr().unwrap()).await.expect("connect a");
    b.connect(a.local_addr().unwrap()).await.expect("connect b");
    (a, b)
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    client.set_nodelay(true).unwrap();
    server.set_nodelay(true).unwrap();
    (client, server)
}

// ------------------------------------------------------------ UDP paths

async fn udp_send_to_recv_from(t: &mut Table) {
    let (a, b) = udp_pair().await;
    let to = b.local_addr().unwrap();
    let from = a.local_addr().unwrap();
    let mut send = Meter::new("udp send_to");
    let mut recv = Meter::new("udp recv_from (queued)");
    let mut buf = [0u8; LEN];
    for i in 0..WARMUP + N {
        let warm = i < WARMUP;
        let m = msg(i);
        let n = send.run(warm, a.send_to(&m, to)).await.unwrap();
        assert_eq!(n, LEN);
        wait_queued(b.as_raw_fd());
        b.readable().await.unwrap();
        let (n, src) = recv.run(warm, b.recv_from(&mut buf)).await.unwrap();
        assert_eq!((n, src, buf), (LEN, from, m));
    }
    t.add([send, recv]);
}

async fn udp_send_recv_connected(t: &mut Table) {
    let (a, b) = udp_connected_pair().await;
    let mut send = Meter::new("udp send (connected)");
    let mut recv = Meter::new("udp recv (connected, queued)");
    let mut buf = [0u8; LEN];
    for i in 0..WARMUP + N {
        let warm = i < WARMUP;
        let m = msg(i);
        assert_eq!(send.run(warm, a.send(&m)).await.unwrap(), LEN);
        wait_queued(b.as_raw_fd());
        b.readable().await.unwrap();
        assert_eq!(recv.run(warm, b.recv(&mut buf)).await.unwrap(), LEN);
        assert_eq!(buf, m);
    }
    t.add([send, recv]);
}

async fn udp_try_send_try_recv(t: &mut Table) {
    let (a, b) = udp_connected_pair().await;
    let mut send = Meter::new("udp try_send");
    let mut recv = Meter::new("udp try_recv (queued)");
    let mut buf = [0u8; LEN];
    for i in 0..WARMUP + N {
        let warm = i < WARMUP;
        let m = msg(i);
        a.writable().await.unwrap();
        settle().await;
        send.on();
        let r = a.try_send(&m);
        send.off(warm);
        assert_eq!(r.unwrap(), LEN);
        wait_queued(b.as_raw_fd());
        b.readable().await.unwrap();
        settle().await;
        recv.on();
        let r = b.try_recv(&mut buf);
        recv.off(warm);
        assert_eq!(r.unwrap(), LEN);
        assert_eq!(buf, m);
    }
    t.add([send, recv]);
}

/// Asserts the received control messages hold the TOS sent and a PKTINFO.
fn check_tos_pktinfo<'c>(cmsgs: impl Iterator<Item = Cmsg<'c>>, tos: u8) {
    let (mut saw_tos, mut saw_pktinfo) = (false, false);
    for c in cmsgs {
        match c {
            Cmsg::Tos(v) => saw_tos = v == tos,
            Cmsg::PktInfoV4 { addr, .. } => saw_pktinfo = addr == Ipv4Addr::LOCALHOST,
            _ => {}
        }
    }
    assert!(
        saw_tos && saw_pktinfo,
        "tos {saw_tos} pktinfo {saw_pktinfo}"
    );
}

async fn udp_send_msg_recv_msg(t: &mut Table) {
    let (a, b) = udp_pair().await;
    b.set(opts::PktInfoV4, true).unwrap();
    b.set(opts::RecvTos, true).unwrap();
    let to = b.local_addr().unwrap();
    let from = a.local_addr().unwrap();
    let mut send = Meter::new("udp send_msg (Cmsg::Tos)");
    let mut recv = Meter::new("udp recv_msg (PKTINFO+TOS, 128 B control, queued)");
    let mut buf = [0u8; LEN];
    let mut control = CmsgBuf::<128>::new();
    for i in 0..WARMUP + N {
        let warm = i < WARMUP;
        let m = msg(i);
        let sent = send
            .run(
                warm,
                a.send_msg(
                    &[IoSlice::new(&m)],
                    Some(to),
                    &[Cmsg::Tos(0x20)],
                    SendFlags::EMPTY,
                ),
            )
            .await
            .unwrap();
        assert_eq!(sent, LEN);
        wait_queued(b.as_raw_fd());
        b.readable().await.unwrap();
        settle().await;
        recv.on();
        let meta = b
            .recv_msg(
                &mut [IoSliceMut::new(&mut buf)],
                control.space_mut(),
                RecvFlags::EMPTY,
            )
            .await
            .unwrap();
        // The typed decode is part of the per-message path.
        check_tos_pktinfo(meta.cmsgs(), 0x20);
        let (len, addr, ctrunc) = (meta.len, meta.addr, meta.control_truncated());
        recv.off(warm);
        assert_eq!((len, addr, ctrunc, buf), (LEN, Some(from), false, m));
    }
    t.add([send, recv]);
}

async fn udp_send_from_recv_with_info(t: &mut Table) {
    let (a, b) = udp_pair().await;
    b.enable_info().unwrap();
    let to = b.local_addr().unwrap();
    let from = a.local_addr().unwrap();
    let src = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut send = Meter::new("udp send_from (PKTINFO src + TOS)");
    let mut recv = Meter::new("udp recv_with_info (queued)");
    let mut buf = [0u8; LEN];
    for i in 0..WARMUP + N {
        let warm = i < WARMUP;
        let m = msg(i);
        let sent = send
            .run(warm, a.send_from(&m, to, src, Some(0x28)))
            .await
            .unwrap();
        assert_eq!(sent, LEN);
        wait_queued(b.as_raw_fd());
        b.readable().await.unwrap();
        let (n, info) = recv.run(warm, b.recv_with_info(&mut buf)).await.unwrap();
        assert_eq!(
            (n, info.from, info.local, info.tos, buf),
            (LEN, from, Some(src), Some(0x28), m)
        );
    }
    t.add([send, recv]);
}

async fn udp_msg_deadlines(t: &mut Table) {
    let (a, b) = udp_pair().await;
    b.set(opts::PktInfoV4, true).unwrap();
    b.set(opts::RecvTos, true).unwrap();
    let to = b.local_addr().unwrap();
    let mut send = Meter::new("udp send_msg_deadline (far deadline)");
    let mut recv = Meter::new("udp recv_msg_deadline (far deadline, queued)");
    let mut wait = Meter::new("udp recv_msg_deadline (far deadline, waits)");
    let mut buf = [0u8; LEN];
    let mut control = CmsgBuf::<128>::new();
    for i in 0..WARMUP + N {
        let warm = i < WARMUP;
        let m = msg(i);
        let sent = send
            .run(
                warm,
                a.send_msg_deadline(
                    &[IoSlice::new(&m)],
                    Some(to),
                    &[Cmsg::Tos(0x20)],
                    SendFlags::EMPTY,
                    Instant::now() + FAR,
                ),
            )
            .await
            .unwrap();
        assert_eq!(sent, LEN);
        wait_queued(b.as_raw_fd());
        b.readable().await.unwrap();
        settle().await;
        recv.on();
        let meta = b
            .recv_msg_deadline(
                &mut [IoSliceMut::new(&mut buf)],
                control.space_mut(),
                RecvFlags::EMPTY,
                Instant::now() + FAR,
            )
            .await
            .unwrap();
        check_tos_pktinfo(meta.cmsgs(), 0x20);
        let len = meta.len;
        recv.off(warm);
        assert_eq!((len, buf), (LEN, m));

        // The receive waits first (the timer is armed), then the peer sends.
        {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut fut = pin!(b.recv_msg_deadline(
                &mut iov,
                control.space_mut(),
                RecvFlags::EMPTY,
                Instant::now() + FAR,
            ));
            settle().await;
            wait.on();
            let first = futures::poll!(fut.as_mut());
            wait.off(warm);
            assert!(first.is_pending(), "nothing was sent yet");
            a.send_to(&m, to).await.unwrap();
            wait.on();
            let meta = fut.await.unwrap();
            check_tos_pktinfo(meta.cmsgs(), 0);
            let len = meta.len;
            wait.off(warm);
            assert_eq!(len, LEN);
        }
        assert_eq!(buf, m);
    }
    t.add([send, recv, wait]);
}

async fn udp_recv_waits(t: &mut Table) {
    let (a, b) = udp_connected_pair().await;
    let mut wait = Meter::new("udp recv (waits, then peer sends)");
    let mut buf = [0u8; LEN];
    for i in 0..WARMUP + N {
        let warm = i < WARMUP;
        let m = msg(i);
        {
            let mut fut = pin!(b.recv(&mut buf));
            settle().await;
            wait.on();
            let first = futures::poll!(fut.as_mut());
            wait.off(warm);
            assert!(first.is_pending(), "nothing was sent yet");
            a.send(&m).await.unwrap();
            assert_eq!(wait.resume(warm, fut).await.unwrap(), LEN);
        }
        assert_eq!(buf, m);
    }
    t.add([wait]);
}

async fn udp_read_timeout(t: &mut Table) {
    let (a, b) = udp_connected_pair().await;
    b.set_read_timeout(Some(FAR)).unwrap();
    let mut queued = Meter::new("udp recv with read timeout (queued)");
    let mut wait = Meter::new("udp recv with read timeout (waits: timer armed)");
    let mut buf = [0u8; LEN];
    for i in 0..WARMUP + N {
        let warm = i < WARMUP;
        let m = msg(i);
        a.send(&m).await.unwrap();
        wait_queued(b.as_raw_fd());
        b.readable().await.unwrap();
        assert_eq!(queued.run(warm, b.recv(&mut buf)).await.unwrap(), LEN);
        assert_eq!(buf, m);
        {
            let mut fut = pin!(b.recv(&mut buf));
            settle().await;
            wait.on();
            let first = futures::poll!(fut.as_mut());
            wait.off(warm);
            assert!(first.is_pending(), "nothing was sent yet");
            a.send(&m).await.unwrap();
            assert_eq!(wait.resume(warm, fut).await.unwrap(), LEN);
        }
        assert_eq!(buf, m);
    }
    t.add([queued, wait]);
}

async fn udp_poll_recv(t: &mut Table) {
    let (a, b) = udp_connected_pair().await;
    let mut queued = Meter::new("udp poll_recv via poll_fn (queued)");
    let mut wait = Meter::new("udp poll_recv via poll_fn (waits)");
    let mut buf = [0u8; LEN];
    for i in 0..WARMUP + N {
        let warm = i < WARMUP;
        let m = msg(i);
        a.send(&m).await.unwrap();
        wait_queued(b.as_raw_fd());
        b.readable().await.unwrap();
        {
            let mut rb = ReadBuf::new(&mut buf);
            queued
                .run(warm, poll_fn(|cx| b.poll_recv(cx, &mut rb)))
                .await
                .unwrap();
            assert_eq!(rb.filled().len(), LEN);
        }
        assert_eq!(buf, m);
        {
            let mut rb = ReadBuf::new(&mut buf);
            {
                let mut fut = pin!(poll_fn(|cx| b.poll_recv(cx, &mut rb)));
                settle().await;
                wait.on();
                let first = futures::poll!(fut.as_mut());
                wait.off(warm);
                assert!(first.is_pending(), "nothing was sent yet");
                a.send(&m).await.unwrap();
                wait.resume(warm, fut).await.unwrap();
            }
            assert_eq!(rb.filled().len(), LEN);
        }
        assert_eq!(buf, m);
    }
    t.add([queued, wait]);
}

/// Back to back, with no yield in between: tokio's coop budget runs out
/// every so often and the runtime makes the receive yield (a deferred
/// wake-up); that must not allocate either once the runtime is warm.
async fn udp_back_to_back(t: &mut Table) {
    let (a, b) = udp_connected_pair().await;
    let mut m = Meter::new("udp send + recv back to back (coop budget runs out)");
    let mut buf = [0u8; LEN];
    for (warm, rounds) in [(true, BACK_TO_BACK_WARMUP), (false, N)] {
        m.on();
        for i in 0..rounds {
            let msg = msg(i);
            assert_eq!(a.send(&msg).await.unwrap(), LEN);
            assert_eq!(b.recv(&mut buf).await.unwrap(), LEN);
            assert_eq!(buf, msg);
        }
        m.off(warm);
    }
    t.add([m]);
}

// ------------------------------------------------------------ TCP paths

async fn tcp_echo(t: &mut Table) {
    let (mut client, mut server) = tcp_pair().await;
    let mut write = Meter::new("tcp AsyncWriteExt::write_all (64 B)");
    let mut read = Meter::new("tcp AsyncReadExt::read_exact (64 B, queued)");
    let mut buf = [0u8; LEN];
    let mut back = [0u8; LEN];
    for i in 0..WARMUP + N {
        let warm = i < WARMUP;
        let m = msg(i);
        write.run(warm, client.write_all(&m)).await.unwrap();
        wait_queued(server.as_raw_fd());
        server.readable().await.unwrap();
        read.run(warm, server.read_exact(&mut buf)).await.unwrap();
        assert_eq!(buf, m);
        // The echo back.
        write.run(warm, server.write_all(&buf)).await.unwrap();
        wait_queued(client.as_raw_fd());
        client.readable().await.unwrap();
        read.run(warm, client.read_exact(&mut back)).await.unwrap();
        assert_eq!(back, m);
    }
    t.add([write, read]);
}

async fn tcp_read_waits(t: &mut Table) {
    let (mut client, mut server) = tcp_pair().await;
    let mut wait = Meter::new("tcp read_exact (waits, then peer writes)");
    let mut buf = [0u8; LEN];
    for i in 0..WARMUP + N {
        let warm = i < WARMUP;
        let m = msg(i);
        {
            let mut fut = pin!(server.read_exact(&mut buf));
            settle().await;
            wait.on();
            let first = futures::poll!(fut.as_mut());
            wait.off(warm);
            assert!(first.is_pending(), "nothing was written yet");
            client.write_all(&m).await.unwrap();
            wait.resume(warm, fut).await.unwrap();
        }
        assert_eq!(buf, m);
    }
    t.add([wait]);
}

async fn tcp_read_timeout(t: &mut Table) {
    let (mut client, mut server) = tcp_pair().await;
    server.set_read_timeout(Some(FAR)).unwrap();
    let mut queued = Meter::new("tcp read_exact with read timeout (queued)");
    let mut wait = Meter::new("tcp read_exact with read timeout (waits: PollTimer)");
    let mut buf = [0u8; LEN];
    for i in 0..WARMUP + N {
        let warm = i < WARMUP;
        let m = msg(i);
        client.write_all(&m).await.unwrap();
        wait_queued(server.as_raw_fd());
        server.readable().await.unwrap();
        queued.run(warm, server.read_exact(&mut buf)).await.unwrap();
        assert_eq!(buf, m);
        {
            let mut fut = pin!(server.read_exact(&mut buf));
            settle().await;
            wait.on();
            let first = futures::poll!(fut.as_mut());
            wait.off(warm);
            assert!(first.is_pending(), "nothing was written yet");
            client.write_all(&m).await.unwrap();
            wait.resume(warm, fut).await.unwrap();
        }
        assert_eq!(buf, m);
    }
    t.add([queued, wait]);
}

async fn tcp_msg(t: &mut Table) {
    let (client, server) = tcp_pair().await;
    let mut send = Meter::new("tcp send_msg");
    let mut recv = Meter::new("tcp recv_msg (queued)");
    let mut waitall = Meter::new("tcp recv_msg WAITALL (queued)");
    let mut buf = [0u8; LEN];
    let mut control = CmsgBuf::<128>::new();
    for i in 0..WARMUP + N {
        let warm = i < WARMUP;
        let m = msg(i);
        let (h, tail) = m.split_at(LEN / 2);
        let sent = send
            .run(
                warm,
                client.send_msg(
                    &[IoSlice::new(h), IoSlice::new(tail)],
                    None,
                    &[],
                    SendFlags::EMPTY,
                ),
            )
            .await
            .unwrap();
        assert_eq!(sent, LEN);
        wait_queued(server.as_raw_fd());
        server.readable().await.unwrap();
        let mut got = 0;
        settle().await;
        recv.on();
        while got < LEN {
            let meta = server
                .recv_msg(
                    &mut [IoSliceMut::new(&mut buf[got..])],
                    control.space_mut(),
                    RecvFlags::EMPTY,
                )
                .await
                .unwrap();
            assert!(meta.len > 0, "unexpected end of stream");
            got += meta.len;
        }
        recv.off(warm);
        assert_eq!(buf, m);

        client
            .send_msg(&[IoSlice::new(&m)], None, &[], SendFlags::EMPTY)
            .await
            .unwrap();
        wait_queued(server.as_raw_fd());
        server.readable().await.unwrap();
        settle().await;
        waitall.on();
        let meta = server
            .recv_msg(
                &mut [IoSliceMut::new(&mut buf)],
                control.space_mut(),
                RecvFlags::WAITALL,
            )
            .await
            .unwrap();
        let len = meta.len;
        waitall.off(warm);
        assert_eq!((len, buf), (LEN, m));
    }
    t.add([send, recv, waitall]);
}

/// The TCP echo back to back, with no yield in between (see
/// [`udp_back_to_back`]).
async fn tcp_back_to_back(t: &mut Table) {
    let (mut client, mut server) = tcp_pair().await;
    let mut m = Meter::new("tcp write_all + read_exact back to back (coop)");
    let mut buf = [0u8; LEN];
    for (warm, rounds) in [(true, BACK_TO_BACK_WARMUP), (false, N)] {
        m.on();
        for i in 0..rounds {
            let msg = msg(i);
            client.write_all(&msg).await.unwrap();
            server.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, msg);
        }
        m.off(warm);
    }
    t.add([m]);
}

// ------------------------------------------------------------ raw paths

async fn raw_udp_msg(t: &mut Table) {
    let (a, b) = udp_pair().await;
    b.set(opts::PktInfoV4, true).unwrap();
    b.set(opts::RecvTos, true).unwrap();
    let to = encode_sockaddr(b.local_addr().unwrap());
    let from = encode_sockaddr(a.local_addr().unwrap());
    let (a, b) = (RawSocket::from(a), RawSocket::from(b));
    // The guest's control bytes.
    let mut guest = CmsgBuf::<64>::new();
    guest.push(&Cmsg::Tos(0x20)).unwrap();
    let mut send = Meter::new("raw sendmsg (UDP, to + guest Tos cmsg)");
    let mut recv = Meter::new("raw recvmsg (UDP, addr + 128 B control, queued)");
    let mut wait = Meter::new("raw recvmsg (UDP, waits)");
    let mut buf = [0u8; LEN];
    for i in 0..WARMUP + N {
        let warm = i < WARMUP;
        let m = msg(i);
        let sent = send
            .run(
                warm,
                a.sendmsg(&[IoSlice::new(&m)], to.as_bytes(), guest.as_bytes(), 0),
            )
            .await
            .unwrap();
        assert_eq!(sent, LEN);
        wait_queued(b.as_raw_fd());
        settle().await;
        recv.on();
        let got = b
            .recvmsg(&mut [IoSliceMut::new(&mut buf)], 0, true, 128)
            .await
            .unwrap();
        check_tos_pktinfo(CmsgIter::new(got.control()), 0x20);
        recv.off(warm);
        assert_eq!((got.len, got.addr(), buf), (LEN, from.as_bytes(), m));

        {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut fut = pin!(b.recvmsg(&mut iov, 0, true, 128));
            settle().await;
            wait.on();
            let first = futures::poll!(fut.as_mut());
            wait.off(warm);
            assert!(first.is_pending(), "nothing was sent yet");
            a.sendmsg(&[IoSlice::new(&m)], to.as_bytes(), guest.as_bytes(), 0)
                .await
                .unwrap();
            let got = wait.resume(warm, fut).await.unwrap();
            assert_eq!(got.len, LEN);
        }
        assert_eq!(buf, m);
    }
    t.add([send, recv, wait]);
}

async fn raw_tcp_read_write(t: &mut Table) {
    let (client, server) = tcp_pair().await;
    let (client, server) = (RawSocket::from(client), RawSocket::from(server));
    let mut write = Meter::new("raw write (TCP)");
    let mut read = Meter::new("raw read (TCP, queued)");
    let mut wait = Meter::new("raw read (TCP, waits)");
    let mut buf = [0u8; LEN];
    for i in 0..WARMUP + N {
        let warm = i < WARMUP;
        let m = msg(i);
        assert_eq!(write.run(warm, client.write(&m)).await.unwrap(), LEN);
        wait_queued(server.as_raw_fd());
        let mut got = 0;
        settle().await;
        read.on();
        while got < LEN {
            let n = server.read(&mut buf[got..]).await.unwrap();
            assert!(n > 0, "unexpected end of stream");
            got += n;
        }
        read.off(warm);
        assert_eq!(buf, m);

        {
            let mut fut = pin!(server.read(&mut buf));
            settle().await;
            wait.on();
            let first = futures::poll!(fut.as_mut());
            wait.off(warm);
            assert!(first.is_pending(), "nothing was written yet");
            client.write(&m).await.unwrap();
            assert_eq!(wait.resume(warm, fut).await.unwrap(), LEN);
        }
        assert_eq!(buf, m);
    }
    t.add([write, read, wait]);
}

// ------------------------------------------------------------ the test

#[test]
fn per_message_paths_do_not_allocate() {
    if std::env::var_os("HOSTSOCK_ALLOC_TRACE").is_some_and(|v| v != "0") {
        let max = std::env::var("HOSTSOCK_ALLOC_TRACE_MAX")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20);
        TRACE_LEFT.store(max, Ordering::Relaxed);
        TRACE.store(true, Ordering::Relaxed);
    }

    // The counter works: one box, one allocation.
    let mut probe = Meter::new("probe");
    probe.on();
    let b = std::hint::black_box(Box::new(7u64));
    probe.off(false);
    drop(b);
    assert_eq!(probe.measured, 1, "the counting allocator is not active");

    let rt = runtime();
    let mut t = Table::default();
    rt.block_on(udp_send_to_recv_from(&mut t));
    rt.block_on(udp_send_recv_connected(&mut t));
    rt.block_on(udp_try_send_try_recv(&mut t));
    rt.block_on(udp_send_msg_recv_msg(&mut t));
    rt.block_on(udp_send_from_recv_with_info(&mut t));
    rt.block_on(udp_msg_deadlines(&mut t));
    rt.block_on(udp_recv_waits(&mut t));
    rt.block_on(udp_read_timeout(&mut t));
    rt.block_on(udp_poll_recv(&mut t));
    rt.block_on(udp_back_to_back(&mut t));
    rt.block_on(tcp_echo(&mut t));
    rt.block_on(tcp_read_waits(&mut t));
    rt.block_on(tcp_read_timeout(&mut t));
    rt.block_on(tcp_msg(&mut t));
    rt.block_on(tcp_back_to_back(&mut t));
    rt.block_on(raw_udp_msg(&mut t));
    rt.block_on(raw_tcp_read_write(&mut t));
    drop(rt);

    t.print();
    let failures = t.failures();
    assert!(
        failures.is_empty(),
        "per-message paths that allocate (run with HOSTSOCK_ALLOC_TRACE=1 for backtraces):\n{}",
        failures.join("\n")
    );
}
