//! Cancellation of every async operation: each future is polled 1..=K
//! times and then dropped (in place, on the stack), thousands of times per
//! operation, and tasks blocked in an operation are spawned and aborted.
//!
//! Figures, per operation (a table is printed):
//! * the `/proc/self/fd` delta after the cancelled futures: exactly 0;
//! * heap allocations made on the test thread while the cancelled futures
//!   ran, after a warm-up (a counting global allocator; the net bytes are
//!   reported too): 0 for every operation on an existing socket. Where an
//!   operation must allocate (a connect makes a socket and registers it
//!   with tokio; a spawned task is a heap object), the count per operation
//!   and the first allocating frame are reported, and the net bytes must be
//!   back to 0 (nothing kept);
//! * no datagram, byte or connection lost where the operation is documented
//!   cancel safe: a counting peer sends numbered items while receive
//!   futures are polled and dropped, and every item is then seen exactly
//!   once; sends that were dropped sent nothing.
//!
//! One test (fd and allocation counts are per process / per thread), on a
//! current-thread runtime driven by this thread, so that every wait and
//! wake-up it causes is counted.

mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::future::Future;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use hostsock::msg::{RecvFlags, SendFlags};
use hostsock::raw::{RawSocket, RawTransmit, encode_sockaddr};
use hostsock::{
    Interest, Policy, RecvSlot, TcpListener, TcpSocket, TcpStream, Transmit, UdpSocket,
};
use tokio::time::Instant;

// ------------------------------------------------------------ the allocator

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static NET: Cell<i64> = const { Cell::new(0) };
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
    static SAMPLES: RefCell<Vec<Backtrace>> = const { RefCell::new(Vec::new()) };
}

fn counting() -> bool {
    ON.try_with(Cell::get).unwrap_or(false) && !IN_TRACE.try_with(Cell::get).unwrap_or(true)
}

fn on_alloc(size: usize) {
    if !counting() {
        return;
    }
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    let _ = NET.try_with(|c| c.set(c.get() + size as i64));
    // The first allocations of a measured window: where they came from.
    // The capture allocates itself, uncounted; the vector has room
    // reserved before the window opens.
    let _ = SAMPLES.try_with(|f| {
        if let Ok(mut f) = f.try_borrow_mut() {
            if f.len() < SAMPLE_MAX {
                IN_TRACE.with(|t| t.set(true));
                f.push(Backtrace::force_capture());
                IN_TRACE.with(|t| t.set(false));
            }
        }
    });
}

fn on_free(size: usize) {
    if counting() {
        let _ = NET.try_with(|c| c.set(c.get() - size as i64));
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// SAFETY: each method passes its arguments unchanged to `System`, so the
// guarantees are `System`'s; the bookkeeping uses const-initialised
// thread-locals and guards the one allocating path (the backtrace) against
// re-entry.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_free(layout.size());
        on_alloc(new_size);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_free(layout.size());
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations sampled (with a backtrace) per measured window.
const SAMPLE_MAX: usize = 16;

struct Window;

impl Window {
    fn start() -> Window {
        ALLOCS.with(|c| c.set(0));
        NET.with(|c| c.set(0));
        SAMPLES.with(|f| {
            let mut f = f.borrow_mut();
            f.clear();
            f.reserve(SAMPLE_MAX);
        });
        ON.with(|c| c.set(true));
        Window
    }

    /// (allocations, net bytes, where the sampled allocations came from).
    fn stop(self) -> (u64, i64, Option<String>) {
        ON.with(|c| c.set(false));
        let samples = SAMPLES.with(|f| std::mem::take(&mut *f.borrow_mut()));
        let mut sources: Vec<(String, usize)> = Vec::new();
        for bt in &samples {
            let f = frames(bt);
            match sources.iter_mut().find(|(s, _)| *s == f) {
                Some((_, n)) => *n += 1,
                None => sources.push((f, 1)),
            }
        }
        let summary = (!sources.is_empty()).then(|| {
            sources
                .iter()
                .map(|(s, n)| format!("{n}/{} at {s}", samples.len()))
                .collect::<Vec<_>>()
                .join(" | ")
        });
        (ALLOCS.with(Cell::get), NET.with(Cell::get), summary)
    }
}

/// The first few frames of a backtrace inside tokio or hostsock (the
/// allocator's own frames and std's are skipped).
fn frames(bt: &Backtrace) -> String {
    let text = bt.to_string();
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter_map(|l| l.split_once(": ").map(|(_, f)| f.to_string()))
        .filter(|f| {
            f.starts_with("tokio::") || f.starts_with("hostsock::") || f.contains("cancel_all::")
        })
        .filter(|f| !f.contains("on_alloc") && !f.contains("GlobalAlloc"))
        .take(3)
        .collect();
    names.join(" <- ")
}

// ------------------------------------------------------------ measuring

/// Polls per future: 1..=K.
const K: usize = 4;
/// Warm-up rounds per operation (not measured).
const WARM: usize = 40;
/// Cancelled futures per operation.
const N: usize = 2000;
/// Cancelled connects and accepts.
const N_BIG: usize = 10_000;
/// A deadline no test reaches.
const FAR: Duration = Duration::from_secs(3600);

/// Polls `f` up to `k` times (yielding to the runtime in between, so the
/// reactor can deliver events); true if it finished.
async fn poll_k<F: Future>(mut f: Pin<&mut F>, k: usize) -> bool {
    for j in 0..k {
        if j > 0 {
            tokio::task::yield_now().await;
        }
        if futures::poll!(f.as_mut()).is_ready() {
            return true;
        }
    }
    false
}

/// Lets the runtime run its driver (deferred deregistrations, timers).
async fn settle() {
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// Every future is still pending when dropped.
    Pending,
    /// Every future finishes on its first poll (sends, writable).
    Ready,
    /// Either (counted: what finished must be accounted for).
    Any,
}

/// What may a row allocate?
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Alloc {
    /// Nothing at all.
    None,
    /// It makes a socket or a task: allocations allowed, net bytes back to 0.
    Balanced,
}

struct Row {
    name: &'static str,
    n: usize,
    ready: usize,
    /// Futures that finished during the warm-up.
    warm_ready: usize,
    expect: Expect,
    alloc: Alloc,
    fd_delta: i64,
    allocs: u64,
    net: i64,
    first: Option<String>,
}

/// Runs `WARM` then `$n` futures made by `$fut` (after the setup
/// statements), each polled 1..=K times and dropped, and pushes a row.
macro_rules! row {
    ($rows:ident, $name:expr, $n:expr, $expect:expr, $alloc:expr,
     |$i:ident| { $($setup:stmt;)* } $fut:expr) => {{
        let mut warm_ready = 0usize;
        for $i in 0..WARM {
            $($setup)*
            let f = pin!($fut);
            if poll_k(f, 1 + $i % K).await {
                warm_ready += 1;
            }
        }
        settle().await;
        let fds0 = util::open_fds();
        let w = Window::start();
        let mut ready = 0usize;
        for $i in 0..$n {
            $($setup)*
            let f = pin!($fut);
            if poll_k(f, 1 + $i % K).await {
                ready += 1;
            }
        }
        settle().await;
        let (allocs, net, first) = w.stop();
        let fd_delta = util::open_fds() as i64 - fds0 as i64;
        $rows.push(Row {
            name: $name,
            n: $n,
            ready,
            warm_ready,
            expect: $expect,
            alloc: $alloc,
            fd_delta,
            allocs,
            net,
            first,
        });
    }};
}

// ------------------------------------------------------------ the test

#[test]
fn every_cancelled_op_leaks_nothing_and_loses_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t0 = StdInstant::now();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), run())
            .await
            .expect("cancel_all took over 120 s")
    });
    println!("cancel_all: total {:?}", t0.elapsed());
}

fn std_udp_peer() -> std::net::UdpSocket {
    let p = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&p)
        .set_recv_buffer_size(4 << 20)
        .unwrap();
    p.set_nonblocking(true).unwrap();
    p
}

/// Takes every queued datagram off `p`; returns how many.
fn drain_std(p: &std::net::UdpSocket) -> usize {
    let mut b = [0u8; 128];
    let mut n = 0;
    for _ in 0..1_000_000 {
        match p.recv(&mut b) {
            Ok(_) => n += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return n,
            Err(e) => panic!("drain: {e}"),
        }
    }
    panic!("drain did not end");
}

/// A connected TCP pair whose client's send buffer is full (the server
/// never reads). Returns (client, server, bytes written).
async fn full_pair() -> (TcpStream, std::net::TcpStream, usize) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (s, _) = l.accept().unwrap();
    let chunk = [0x5au8; 65536];
    let mut total = 0;
    // Until a whole round after a pause writes nothing: the peer's window
    // and the send buffer are both full for good. Big writes first, then
    // single bytes: a small write still fits into the last segment's free
    // room after a big one failed.
    for _ in 0..50 {
        let mut round = 0;
        for size in [chunk.len(), 1] {
            for _ in 0..100_000 {
                match c.try_write(&chunk[..size]) {
                    Ok(n) => round += n,
                    Err(e) if e.errno() == libc::EAGAIN => break,
                    Err(e) => panic!("fill: {e}"),
                }
            }
        }
        total += round;
        if round == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (c, s, total)
}

/// Writes to a raw TCP socket (non-blocking) until a round after a pause
/// writes nothing; returns the bytes written.
async fn refill_raw(raw_tcp: &RawSocket) -> usize {
    raw_tcp.set_nonblocking(true);
    let mut filled = 0;
    let big = [0xa5u8; 65536];
    for _ in 0..50 {
        let mut round = 0;
        for size in [big.len(), 1] {
            for _ in 0..100_000 {
                match raw_tcp.write(&big[..size]).await {
                    Ok(n) => round += n,
                    Err(e) if e.errno == hostsock::raw::Errno::EAGAIN => break,
                    Err(e) => panic!("raw fill: {e:?}"),
                }
            }
        }
        filled += round;
        if round == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    raw_tcp.set_nonblocking(false);
    filled
}

/// Reads everything the peer has (non-blocking after `expect` bytes or
/// when nothing more comes); returns the byte count.
fn drain_tcp(s: &mut std::net::TcpStream, expect: usize) -> usize {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    let until = StdInstant::now() + Duration::from_secs(10);
    while StdInstant::now() < until {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if total >= expect {
                    break;
                }
            }
            Err(e) => panic!("drain tcp: {e}"),
        }
    }
    total
}

async fn run() {
    // ------------------------------------------------------------ sockets
    tokio::time::sleep(Duration::from_millis(1)).await;
    let far = Instant::now() + FAR;
    let udp_peer = std_udp_peer();
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.connect(udp_peer.local_addr().unwrap()).await.unwrap();
    udp_peer.connect(udp.local_addr().unwrap()).unwrap();
    let peer_addr = udp_peer.local_addr().unwrap();

    let idle_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_idle = TcpStream::connect(idle_l.local_addr().unwrap())
        .await
        .unwrap();
    let (_tcp_idle_srv, _) = idle_l.accept().await.unwrap();
    let (tcp_full, mut tcp_full_srv, filled) = full_pair().await;

    let raw_peer = std_udp_peer();
    let raw_udp =
        RawSocket::new(Policy::shared_default(), libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
    raw_udp
        .bind(encode_sockaddr("127.0.0.1:0".parse().unwrap()).as_bytes())
        .unwrap();
    let raw_peer_addr = encode_sockaddr(raw_peer.local_addr().unwrap());
    raw_udp
        .connect(raw_peer_addr.as_bytes(), false)
        .await
        .unwrap();
    let raw_udp_addr = raw_udp.getsockname().unwrap().to_socket_addr().unwrap();
    raw_peer.connect(raw_udp_addr).unwrap();

    // A raw TCP client with a full send buffer.
    let raw_l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let raw_tcp = RawSocket::new(
        Policy::shared_default(),
        libc::AF_INET,
        libc::SOCK_STREAM,
        0,
    )
    .unwrap();
    raw_tcp
        .connect(
            encode_sockaddr(raw_l.local_addr().unwrap()).as_bytes(),
            false,
        )
        .await
        .unwrap();
    let (mut raw_tcp_srv, _) = raw_l.accept().unwrap();
    let mut raw_filled = refill_raw(&raw_tcp).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raw_listener = RawSocket::new(
        Policy::shared_default(),
        libc::AF_INET,
        libc::SOCK_STREAM,
        0,
    )
    .unwrap();
    raw_listener
        .bind(encode_sockaddr("127.0.0.1:0".parse().unwrap()).as_bytes())
        .unwrap();
    raw_listener.listen(128).unwrap();
    let (_full, full_addr, _fill) = util::full_backlog_listener();
    settle().await;
    let baseline = util::open_fds();
    println!("cancel_all: baseline {baseline} fds, K = {K}, N = {N}");

    let mut rows: Vec<Row> = Vec::new();
    let mut b = [0u8; 64];
    let mut c = [0u8; 64];
    let mut b2 = [0u8; 64];
    let mut c2 = [0u8; 64];
    let word = [1u8; 16];
    use Alloc::{Balanced, None as NoAlloc};
    use Expect::{Any, Pending, Ready};

    // ------------------------------------------------ UdpSocket, receiving
    row!(rows, "udp.recv", N, Pending, NoAlloc, |i| {} udp.recv(&mut b));
    row!(rows, "udp.recv_deadline", N, Pending, NoAlloc, |i| {} udp.recv_deadline(&mut b, far));
    row!(rows, "udp.recv_from", N, Pending, NoAlloc, |i| {} udp.recv_from(&mut b));
    row!(rows, "udp.recv_from_deadline", N, Pending, NoAlloc, |i| {} udp.recv_from_deadline(&mut b, far));
    row!(rows, "udp.peek_from", N, Pending, NoAlloc, |i| {} udp.peek_from(&mut b));
    row!(rows, "udp.recv_msg", N, Pending, NoAlloc, |i| {
        let mut iov = [IoSliceMut::new(&mut b)];
    } udp.recv_msg(&mut iov, &mut c, RecvFlags::EMPTY));
    row!(rows, "udp.recv_msg_deadline", N, Pending, NoAlloc, |i| {
        let mut iov = [IoSliceMut::new(&mut b)];
    } udp.recv_msg_deadline(&mut iov, &mut c, RecvFlags::EMPTY, far));
    row!(rows, "udp.recv_batch", N, Pending, NoAlloc, |i| {
        let mut slots = [RecvSlot::new(&mut b, &mut c), RecvSlot::new(&mut b2, &mut c2)];
    } udp.recv_batch(&mut slots));
    row!(rows, "udp.recv_batch_deadline", N, Pending, NoAlloc, |i| {
        let mut slots = [RecvSlot::new(&mut b, &mut c), RecvSlot::new(&mut b2, &mut c2)];
    } udp.recv_batch_deadline(&mut slots, far));
    row!(rows, "udp.readable", N, Pending, NoAlloc, |i| {} udp.readable());
    row!(rows, "udp.ready(READABLE)", N, Pending, NoAlloc, |i| {} udp.ready(Interest::READABLE));
    row!(rows, "udp.ready_deadline(READABLE)", N, Pending, NoAlloc, |i| {}
        udp.ready_deadline(Interest::READABLE, far));
    // ------------------------------------------------ UdpSocket, sending
    // (they finish at once; the peer counts what arrived)
    assert_eq!(drain_std(&udp_peer), 0);
    // After each send row, the peer must have exactly what was reported
    // sent (the warm-up's too): a dropped send sent nothing.
    let check_sends = |rows: &Vec<Row>, per: usize, peer: &std::net::UdpSocket| {
        let r = rows.last().unwrap();
        let expected = (r.ready + r.warm_ready) * per;
        let arrived = drain_std(peer);
        println!(
            "{}: {expected} datagrams reported sent, {arrived} arrived",
            r.name
        );
        assert_eq!(arrived, expected, "{}: datagrams sent vs arrived", r.name);
    };
    row!(rows, "udp.send", N, Ready, NoAlloc, |i| {} udp.send(&word));
    check_sends(&rows, 1, &udp_peer);
    row!(rows, "udp.send_to", N, Ready, NoAlloc, |i| {} udp.send_to(&word, peer_addr));
    check_sends(&rows, 1, &udp_peer);
    row!(rows, "udp.send_msg", N, Ready, NoAlloc, |i| {
        let iov = [IoSlice::new(&word)];
    } udp.send_msg(&iov, None, &[], SendFlags::EMPTY));
    check_sends(&rows, 1, &udp_peer);
    row!(rows, "udp.send_batch(2)", N, Ready, NoAlloc, |i| {
        let batch = [Transmit::new(&word, None), Transmit::new(&word, None)];
    } udp.send_batch(&batch));
    check_sends(&rows, 2, &udp_peer);
    row!(rows, "udp.writable", N, Ready, NoAlloc, |i| {} udp.writable());

    // ------------------------------------------------ TcpStream, idle
    row!(rows, "tcp.read_deadline", N, Pending, NoAlloc, |i| {} tcp_idle.read_deadline(&mut b, None));
    row!(rows, "tcp.read_deadline(far)", N, Pending, NoAlloc, |i| {} tcp_idle.read_deadline(&mut b, far));
    row!(rows, "tcp.peek", N, Pending, NoAlloc, |i| {} tcp_idle.peek(&mut b));
    row!(rows, "tcp.peek_deadline", N, Pending, NoAlloc, |i| {} tcp_idle.peek_deadline(&mut b, far));
    row!(rows, "tcp.recv_msg", N, Pending, NoAlloc, |i| {
        let mut iov = [IoSliceMut::new(&mut b)];
    } tcp_idle.recv_msg(&mut iov, &mut c, RecvFlags::EMPTY));
    row!(rows, "tcp.recv_msg_deadline", N, Pending, NoAlloc, |i| {
        let mut iov = [IoSliceMut::new(&mut b)];
    } tcp_idle.recv_msg_deadline(&mut iov, &mut c, RecvFlags::EMPTY, far));
    row!(rows, "tcp.readable", N, Pending, NoAlloc, |i| {} tcp_idle.readable());
    row!(rows, "tcp.ready(READABLE)", N, Pending, NoAlloc, |i| {} tcp_idle.ready(Interest::READABLE));
    row!(rows, "tcp.ready_deadline(READABLE)", N, Pending, NoAlloc, |i| {}
        tcp_idle.ready_deadline(Interest::READABLE, far));
    // ------------------------------------------------ TcpStream, send buffer full
    row!(rows, "tcp.write_deadline (full)", N, Pending, NoAlloc, |i| {} tcp_full.write_deadline(&word, None));
    row!(rows, "tcp.write_deadline(far) (full)", N, Pending, NoAlloc, |i| {} tcp_full.write_deadline(&word, far));
    row!(rows, "tcp.send_msg (full)", N, Pending, NoAlloc, |i| {
        let iov = [IoSlice::new(&word)];
    } tcp_full.send_msg(&iov, None, &[], SendFlags::EMPTY));
    row!(rows, "tcp.send_msg_deadline (full)", N, Pending, NoAlloc, |i| {
        let iov = [IoSlice::new(&word)];
    } tcp_full.send_msg_deadline(&iov, None, &[], SendFlags::EMPTY, far));
    row!(rows, "tcp.writable (full)", N, Pending, NoAlloc, |i| {} tcp_full.writable());
    row!(rows, "tcp.ready_deadline(WRITABLE) (full)", N, Pending, NoAlloc, |i| {}
        tcp_full.ready_deadline(Interest::WRITABLE, far));

    // ------------------------------------------------ RawSocket
    row!(rows, "raw.recvmsg (udp)", N, Pending, NoAlloc, |i| {
        let mut iov = [IoSliceMut::new(&mut b)];
    } raw_udp.recvmsg(&mut iov, 0, true, 64));
    row!(rows, "raw.recvmsg_deadline (udp)", N, Pending, NoAlloc, |i| {
        let mut iov = [IoSliceMut::new(&mut b)];
    } raw_udp.recvmsg_deadline(&mut iov, 0, true, 64, Some(far)));
    row!(rows, "raw.read (udp)", N, Pending, NoAlloc, |i| {} raw_udp.read(&mut b));
    row!(rows, "raw.recvfrom (udp)", N, Pending, NoAlloc, |i| {} raw_udp.recvfrom(&mut b, 0, true));
    row!(rows, "raw.recvmmsg (udp)", N, Pending, NoAlloc, |i| {
        let mut slots = [RecvSlot::new(&mut b, &mut c), RecvSlot::new(&mut b2, &mut c2)];
    } raw_udp.recvmmsg(&mut slots, 0, None));
    row!(rows, "raw.wait(POLLIN)", N, Pending, NoAlloc, |i| {} raw_udp.wait(libc::POLLIN, None));
    row!(rows, "raw.wait(POLLIN, deadline)", N, Pending, NoAlloc, |i| {} raw_udp.wait(libc::POLLIN, Some(far)));
    row!(rows, "raw.write (udp)", N, Ready, NoAlloc, |i| {} raw_udp.write(&word));
    check_sends(&rows, 1, &raw_peer);
    row!(rows, "raw.sendmsg (udp)", N, Ready, NoAlloc, |i| {
        let iov = [IoSlice::new(&word)];
    } raw_udp.sendmsg(&iov, &[], &[], 0));
    check_sends(&rows, 1, &raw_peer);
    row!(rows, "raw.sendmmsg(2) (udp)", N, Ready, NoAlloc, |i| {
        let msgs = [
            RawTransmit { data: &word, to: &[], control: &[] },
            RawTransmit { data: &word, to: &[], control: &[] },
        ];
    } raw_udp.sendmmsg(&msgs, 0));
    check_sends(&rows, 2, &raw_peer);
    // A raw blocking write tries the syscall (as Linux does), and a TCP
    // send buffer that refused a write can take a small one a moment later
    // (the receiver collapses its queue and opens the window a little): the
    // buffer is filled again right before, and whatever these writes did
    // send is counted.
    raw_filled += refill_raw(&raw_tcp).await;
    row!(rows, "raw.write (tcp, full)", N, Any, NoAlloc, |i| {} raw_tcp.write(&word));
    raw_filled += refill_raw(&raw_tcp).await;
    row!(rows, "raw.sendmsg (tcp, full)", N, Any, NoAlloc, |i| {
        let iov = [IoSlice::new(&word)];
    } raw_tcp.sendmsg(&iov, &[], &[], 0));
    let raw_sent_by_rows: usize = rows[rows.len() - 2..]
        .iter()
        .map(|r| (r.ready + r.warm_ready) * word.len())
        .sum();
    row!(rows, "raw.wait(POLLOUT) (tcp, full)", N, Pending, NoAlloc, |i| {}
        raw_tcp.wait(libc::POLLOUT, Some(far)));

    // Dropped writes wrote nothing: the peers get exactly what was filled.
    let got = drain_tcp(&mut tcp_full_srv, filled);
    println!("tcp (full): {filled} bytes written before, {got} bytes arrived");
    assert_eq!(got, filled, "a dropped write future wrote bytes");
    let got = drain_tcp(&mut raw_tcp_srv, raw_filled + raw_sent_by_rows);
    println!(
        "raw tcp (full): {raw_filled} bytes written by the fill, {raw_sent_by_rows} by finished write futures, {got} bytes arrived"
    );
    assert_eq!(
        got,
        raw_filled + raw_sent_by_rows,
        "a dropped raw write future wrote bytes"
    );

    // ------------------------------------------------ accept, connect
    row!(rows, "listener.accept", N_BIG, Pending, NoAlloc, |i| {} listener.accept());
    row!(rows, "listener.accept_deadline", N, Pending, NoAlloc, |i| {} listener.accept_deadline(far));
    row!(rows, "raw.accept", N, Pending, NoAlloc, |i| {} raw_listener.accept(false));
    row!(rows, "raw.accept4", N, Pending, NoAlloc, |i| {} raw_listener.accept4(false, libc::SOCK_CLOEXEC));
    row!(rows, "TcpStream::connect (full backlog)", N_BIG, Pending, Balanced, |i| {}
        TcpStream::connect(full_addr));
    row!(rows, "TcpStream::connect_deadline (full backlog)", N, Pending, Balanced, |i| {}
        TcpStream::connect_deadline(full_addr, far));
    row!(rows, "TcpSocket::connect (full backlog)", N, Pending, Balanced, |i| {
        let s = TcpSocket::new_v4().unwrap();
    } s.connect(full_addr));
    let full_bytes = encode_sockaddr(full_addr);
    row!(rows, "RawSocket::new + connect (full backlog)", N, Pending, Balanced, |i| {
        let s = RawSocket::new(Policy::shared_default(), libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    } s.connect_deadline(full_bytes.as_bytes(), false, Some(far)));

    // ------------------------------------------------ spawn, then abort
    let udp = Arc::new(udp);
    let listener = Arc::new(listener);
    let tcp_idle = Arc::new(tcp_idle);
    let raw_udp = Arc::new(raw_udp);
    spawn_abort_rows(&mut rows, &udp, &listener, &tcp_idle, &raw_udp, full_addr).await;

    // ------------------------------------------------ the table
    settle().await;
    println!(
        "\n{:<44} {:>6} {:>6} {:>9} {:>8} {:>10}  sampled allocations: where",
        "operation (polled 1..=4 times, dropped)",
        "count",
        "ready",
        "fd delta",
        "allocs",
        "net bytes"
    );
    let mut failures = Vec::new();
    for r in &rows {
        println!(
            "{:<44} {:>6} {:>6} {:>9} {:>8} {:>10}  {}",
            r.name,
            r.n,
            r.ready,
            r.fd_delta,
            r.allocs,
            r.net,
            r.first.as_deref().unwrap_or("-")
        );
        if r.fd_delta != 0 {
            failures.push(format!("{}: fd delta {}", r.name, r.fd_delta));
        }
        let want_ready = match r.expect {
            Expect::Pending => 0,
            Expect::Ready => r.n,
            Expect::Any => r.ready,
        };
        if r.ready != want_ready {
            failures.push(format!(
                "{}: {} of {} ready (expected {want_ready})",
                r.name, r.ready, r.n
            ));
        }
        match r.alloc {
            Alloc::None if r.allocs != 0 => {
                failures.push(format!("{}: {} allocations", r.name, r.allocs))
            }
            Alloc::Balanced if r.net != 0 => {
                failures.push(format!("{}: {} bytes not freed", r.name, r.net))
            }
            _ => {}
        }
    }
    let end = util::open_fds();
    println!("fds at the end {end} (baseline {baseline})");
    assert_eq!(end, baseline, "fd count at the end");
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));

    // ------------------------------------------------ nothing lost
    no_datagram_lost(&udp, &udp_peer, &raw_udp, &raw_peer).await;
    no_connection_lost(&listener, &raw_listener).await;
    no_byte_lost().await;
    assert_eq!(
        util::open_fds(),
        baseline,
        "fd count after the counting peers"
    );
}

/// Spawns tasks blocked in an operation, aborts them, awaits them; one row
/// per operation (allocations: the tasks themselves, all freed again).
async fn spawn_abort_rows(
    rows: &mut Vec<Row>,
    udp: &Arc<UdpSocket>,
    listener: &Arc<TcpListener>,
    tcp: &Arc<TcpStream>,
    raw_udp: &Arc<RawSocket>,
    full_addr: SocketAddr,
) {
    macro_rules! spawned {
        ($name:expr, $n:expr, $make:expr) => {{
            // warm-up: a full batch, so the scheduler's queues have grown
            run_abort(1000, $make).await;
            settle().await;
            let fds0 = util::open_fds();
            let w = Window::start();
            for _ in 0..$n / 1000 {
                run_abort(1000, $make).await;
            }
            settle().await;
            let (allocs, net, first) = w.stop();
            rows.push(Row {
                name: $name,
                n: $n,
                ready: 0,
                warm_ready: 0,
                expect: Expect::Pending,
                alloc: Alloc::Balanced,
                fd_delta: util::open_fds() as i64 - fds0 as i64,
                allocs,
                net,
                first,
            });
        }};
    }
    spawned!("spawn+abort: listener.accept", N_BIG, || {
        let l = listener.clone();
        async move { l.accept().await.map(|_| ()) }
    });
    spawned!("spawn+abort: TcpStream::connect", N_BIG, || async move {
        TcpStream::connect(full_addr).await.map(|_| ())
    });
    spawned!("spawn+abort: udp.recv", 2000, || {
        let u = udp.clone();
        async move {
            let mut b = [0u8; 16];
            u.recv(&mut b).await.map(|_| ())
        }
    });
    spawned!("spawn+abort: udp.recv_msg_deadline", 2000, || {
        let u = udp.clone();
        async move {
            let mut b = [0u8; 16];
            let mut c = [0u8; 64];
            let far = Instant::now() + FAR;
            u.recv_msg_deadline(
                &mut [IoSliceMut::new(&mut b)],
                &mut c,
                RecvFlags::EMPTY,
                far,
            )
            .await
            .map(|_| ())
        }
    });
    spawned!("spawn+abort: tcp.read_deadline", 2000, || {
        let t = tcp.clone();
        async move {
            let mut b = [0u8; 16];
            t.read_deadline(&mut b, None).await.map(|_| ())
        }
    });
    spawned!("spawn+abort: tcp.ready_deadline", 2000, || {
        let t = tcp.clone();
        async move {
            t.ready_deadline(Interest::READABLE, Instant::now() + FAR)
                .await
                .map(|_| ())
        }
    });
    spawned!("spawn+abort: raw.recvmsg", 2000, || {
        let r = raw_udp.clone();
        async move {
            let mut b = [0u8; 16];
            r.recvmsg(&mut [IoSliceMut::new(&mut b)], 0, true, 0)
                .await
                .map(|_| ())
        }
    });
}

/// Spawns `n` tasks made by `make`, lets each reach its first await,
/// aborts them all and checks each was cancelled (not finished).
async fn run_abort<F, Fut>(n: usize, make: F)
where
    F: Fn() -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send + std::fmt::Debug + 'static,
{
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        tasks.push(tokio::spawn(make()));
    }
    // Current-thread runtime: yielding runs every spawned task once.
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    for t in &tasks {
        assert!(!t.is_finished(), "a task finished instead of blocking");
        t.abort();
    }
    for t in tasks {
        match t.await {
            Err(e) if e.is_cancelled() => {}
            other => panic!("task not cancelled: {other:?}"),
        }
    }
}

// ------------------------------------------------------------ counting peers

/// Numbered datagrams arrive while receive futures of each kind are polled
/// 1..=K times and dropped; afterwards every number was seen exactly once.
async fn no_datagram_lost(
    udp: &UdpSocket,
    peer: &std::net::UdpSocket,
    raw: &RawSocket,
    raw_peer: &std::net::UdpSocket,
) {
    const M: u32 = 600;
    for kind in [
        "recv",
        "recv_from",
        "recv_msg",
        "recv_batch",
        "raw.recvmsg",
        "raw.read",
        "raw.recvmmsg(WAITFORONE)",
        "raw.recvmmsg(0)",
    ] {
        let is_raw = kind.starts_with("raw");
        let sender = if is_raw { raw_peer } else { peer };
        let mut seen = vec![0u32; M as usize / 2];
        let (mut ready, mut dropped) = (0usize, 0usize);
        let note = |bytes: &[u8], seen: &mut Vec<u32>| {
            let n = u32::from_le_bytes(bytes[..4].try_into().unwrap());
            seen[n as usize] += 1;
        };
        for i in 0..M {
            // Every other round sends number i/2 (every third number twice,
            // so that batches take more than one): the queue is often
            // empty, often not, when a future is polled.
            if i % 2 == 0 {
                let num = i / 2;
                sender.send(&num.to_le_bytes()).unwrap();
                if num % 3 == 2 {
                    sender.send(&num.to_le_bytes()).unwrap();
                }
            }
            let k = 1 + i as usize % K;
            let mut b = [0u8; 16];
            let mut c = [0u8; 64];
            let mut b2 = [0u8; 16];
            let mut c2 = [0u8; 64];
            let done: Vec<[u8; 4]> = match kind {
                "recv" => {
                    let r = {
                        let f = pin!(udp.recv(&mut b));
                        poll_n(f, k).await.map(|r| r.unwrap())
                    };
                    r.map(|n| vec![b4(&b[..n])]).unwrap_or_default()
                }
                "recv_from" => {
                    let r = {
                        let f = pin!(udp.recv_from(&mut b));
                        poll_n(f, k).await.map(|r| r.unwrap().0)
                    };
                    r.map(|n| vec![b4(&b[..n])]).unwrap_or_default()
                }
                "recv_msg" => {
                    let r = {
                        let mut iov = [IoSliceMut::new(&mut b)];
                        let f = pin!(udp.recv_msg(&mut iov, &mut c, RecvFlags::EMPTY));
                        poll_n(f, k).await.map(|r| r.unwrap().len)
                    };
                    r.map(|n| vec![b4(&b[..n])]).unwrap_or_default()
                }
                "recv_batch" => {
                    let mut slots = [
                        RecvSlot::new(&mut b, &mut c),
                        RecvSlot::new(&mut b2, &mut c2),
                    ];
                    let r = {
                        let f = pin!(udp.recv_batch(&mut slots));
                        poll_n(f, k).await.map(|r| r.unwrap())
                    };
                    r.map(|n| slots[..n].iter().map(|s| b4(s.data())).collect())
                        .unwrap_or_default()
                }
                "raw.recvmsg" => {
                    let r = {
                        let mut iov = [IoSliceMut::new(&mut b)];
                        let f = pin!(raw.recvmsg(&mut iov, 0, false, 0));
                        poll_n(f, k).await.map(|r| r.unwrap().len)
                    };
                    r.map(|n| vec![b4(&b[..n])]).unwrap_or_default()
                }
                "raw.read" => {
                    let r = {
                        let f = pin!(raw.read(&mut b));
                        poll_n(f, k).await.map(|r| r.unwrap())
                    };
                    r.map(|n| vec![b4(&b[..n])]).unwrap_or_default()
                }
                "raw.recvmmsg(WAITFORONE)" | "raw.recvmmsg(0)" => {
                    let flags = if kind.contains("WAITFORONE") {
                        libc::MSG_WAITFORONE
                    } else {
                        0
                    };
                    let mut slots = [
                        RecvSlot::new(&mut b, &mut c),
                        RecvSlot::new(&mut b2, &mut c2),
                    ];
                    let r = {
                        let f = pin!(raw.recvmmsg(&mut slots, flags, None));
                        poll_n(f, k).await.map(|r| r.unwrap())
                    };
                    r.map(|n| slots[..n].iter().map(|s| b4(s.data())).collect())
                        .unwrap_or_default()
                }
                _ => unreachable!(),
            };
            if done.is_empty() {
                dropped += 1;
            } else {
                ready += 1;
            }
            for d in done {
                note(&d, &mut seen);
            }
        }
        // What is still queued (all of it is: loopback queues a datagram
        // before the send returns), taken until a short wait finds nothing.
        let mut rest = 0;
        let mut buf = [0u8; 16];
        for _ in 0..M * 2 {
            let soon = Instant::now() + Duration::from_millis(50);
            let r = if is_raw {
                let mut iov = [IoSliceMut::new(&mut buf)];
                raw.recvmsg_deadline(&mut iov, 0, false, 0, Some(soon))
                    .await
                    .map(|r| r.len)
                    .ok()
            } else {
                udp.recv_deadline(&mut buf, soon).await.ok()
            };
            match r {
                Some(n) => {
                    note(&buf[..n], &mut seen);
                    rest += 1;
                }
                None => break,
            }
        }
        let sent_count = M / 2 + M / 6;
        let missing = seen.iter().filter(|&&s| s == 0).count();
        let extra: u32 = seen.iter().map(|&s| s.saturating_sub(1)).sum();
        println!(
            "counting peer, {kind}: {sent_count} datagrams sent; {ready} futures finished, {dropped} dropped pending, {rest} left in the queue; missing {missing}, seen twice {extra}"
        );
        if kind == "raw.recvmmsg(0)" {
            // Documented: without MSG_WAITFORONE a blocking recvmmsg waits
            // for all its slots, and a future dropped after the first
            // message loses what it had taken. Reported, not asserted.
            println!(
                "  (documented, not cancel safe after the first message: {missing} of {sent_count} datagrams were taken by dropped futures)"
            );
            continue;
        }
        // Every third number is sent twice.
        for (i, &s) in seen.iter().enumerate() {
            let want = if i % 3 == 2 { 2 } else { 1 };
            assert_eq!(s, want, "{kind}: datagram {i} seen {s} times (sent {want})");
        }
        assert!(
            dropped > 0,
            "{kind}: no future was dropped pending: nothing tested"
        );
    }
}

fn b4(b: &[u8]) -> [u8; 4] {
    b[..4].try_into().unwrap()
}

/// Polls up to `k` times; the output if it finished.
async fn poll_n<F: Future>(mut f: Pin<&mut F>, k: usize) -> Option<F::Output> {
    for j in 0..k {
        if j > 0 {
            tokio::task::yield_now().await;
        }
        if let std::task::Poll::Ready(v) = futures::poll!(f.as_mut()) {
            return Some(v);
        }
    }
    None
}

/// Clients connect while accept futures (typed and raw) are polled and
/// dropped; every connection comes out exactly once.
async fn no_connection_lost(listener: &TcpListener, raw_listener: &RawSocket) {
    const M: usize = 400;
    for raw in [false, true] {
        let addr = if raw {
            raw_listener
                .getsockname()
                .unwrap()
                .to_socket_addr()
                .unwrap()
        } else {
            listener.local_addr().unwrap()
        };
        let mut clients = HashSet::new();
        let mut keep = Vec::new();
        let mut accepted = Vec::new();
        let (mut ready, mut dropped) = (0, 0);
        // A connection every other round: the queue is often empty when
        // an accept future is polled.
        for i in 0..2 * M {
            if i % 2 == 0 {
                let c = std::net::TcpStream::connect(addr).unwrap();
                clients.insert(c.local_addr().unwrap());
                keep.push(c);
            }
            let k = 1 + i % K;
            let got = if raw {
                let f = pin!(raw_listener.accept(false));
                poll_n(f, k)
                    .await
                    .map(|r| r.unwrap().1.to_socket_addr().unwrap())
            } else {
                let f = pin!(listener.accept());
                poll_n(f, k).await.map(|r| r.unwrap().1)
            };
            match got {
                Some(a) => {
                    ready += 1;
                    accepted.push(a);
                }
                None => dropped += 1,
            }
        }
        let mut rest = 0;
        loop {
            let a = if raw {
                raw_listener
                    .accept4(true, 0)
                    .await
                    .ok()
                    .map(|(_, a)| a.to_socket_addr().unwrap())
            } else {
                listener.try_accept().ok().map(|(_, a)| a)
            };
            match a {
                Some(a) => {
                    accepted.push(a);
                    rest += 1;
                }
                None => break,
            }
        }
        let unique: HashSet<_> = accepted.iter().copied().collect();
        println!(
            "counting peer, {} accept: {M} connections; {ready} futures finished, {dropped} dropped pending, {rest} left queued; accepted {} ({} distinct)",
            if raw { "raw" } else { "typed" },
            accepted.len(),
            unique.len()
        );
        assert_eq!(accepted.len(), M);
        assert_eq!(unique, clients, "accepted peers differ from the clients");
        assert!(dropped > 0, "no accept future was dropped pending");
    }
}

/// A counter stream read through cancelled `recv_msg` (typed) and `read`
/// (raw) futures arrives whole and in order.
async fn no_byte_lost() {
    const WORDS: u32 = 20_000;
    for raw in [false, true] {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let typed = if raw {
            None
        } else {
            Some(TcpStream::connect(addr).await.unwrap())
        };
        let raw_s = if raw {
            let s = RawSocket::new(
                Policy::shared_default(),
                libc::AF_INET,
                libc::SOCK_STREAM,
                0,
            )
            .unwrap();
            s.connect(encode_sockaddr(addr).as_bytes(), false)
                .await
                .unwrap();
            Some(s)
        } else {
            None
        };
        let (mut srv, _) = l.accept().unwrap();
        let data: Vec<u8> = (0..WORDS).flat_map(|i| i.to_le_bytes()).collect();
        let mut got = Vec::with_capacity(data.len());
        let (mut ready, mut dropped) = (0, 0);
        let mut off = 0;
        let mut i = 0usize;
        let until = StdInstant::now() + Duration::from_secs(30);
        while got.len() < data.len() {
            assert!(StdInstant::now() < until, "byte stream stalled");
            if off < data.len() && i % 2 == 0 {
                let len = [1, 3, 7, 64, 333][i % 5].min(data.len() - off);
                srv.write_all(&data[off..off + len]).unwrap();
                off += len;
            }
            i += 1;
            let k = 1 + i % K;
            let mut b = [0u8; 256];
            let n = if let Some(t) = &typed {
                let mut c = [0u8; 64];
                let mut iov = [IoSliceMut::new(&mut b)];
                let f = pin!(t.recv_msg(&mut iov, &mut c, RecvFlags::EMPTY));
                poll_n(f, k).await.map(|r| r.unwrap().len)
            } else {
                let f = pin!(raw_s.as_ref().unwrap().read(&mut b));
                poll_n(f, k).await.map(|r| r.unwrap())
            };
            match n {
                Some(n) => {
                    ready += 1;
                    assert_ne!(n, 0, "EOF too early");
                    got.extend_from_slice(&b[..n]);
                }
                None => dropped += 1,
            }
        }
        println!(
            "counting peer, {} stream: {} bytes; {ready} reads finished, {dropped} dropped pending",
            if raw { "raw read" } else { "recv_msg" },
            got.len()
        );
        assert!(got == data, "bytes lost or reordered");
        assert!(dropped > 0, "no read future was dropped pending");
    }
}
