//! The benchmark scenarios, shared by `benches/net.rs` (which times them)
//! and `tests/bench_smoke.rs` (which runs each for a few hundred messages
//! to keep it correct). Each scenario runs one implementation once and
//! returns an [`Outcome`]; the caller repeats and interleaves.
//!
//! Three implementations of every scenario: `hostsock`, `tokio` (the
//! `tokio::net` API, or `AsyncFd` plus libc where tokio has no API:
//! control messages, `sendmmsg`/`recvmmsg`, GSO/GRO) and `raw` (blocking
//! syscalls on std threads). All sockets are made the same way with std
//! (and the same buffer sizes and options), then handed to the
//! implementation under test, so only the I/O path differs.
//!
//! A counting global allocator counts every heap allocation in the process;
//! each scenario reports the allocations made inside its measured window
//! (after setup, before teardown).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::net::UdpSocket as StdUdp;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

// ------------------------------------------------------------ allocations

/// Counts every allocation, reallocation and zeroed allocation.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

#[global_allocator]
static GLOBAL: Counting = Counting;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are the ones given; the counter is a
// plain atomic (no allocation, no re-entry).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc` is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations so far, all threads.
pub fn allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

// ------------------------------------------------------------ parameters

/// How much one run of a scenario may do: it stops after `msgs` messages
/// (each scenario caps this further) or after `time`, whichever is first.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Most messages (datagrams, writes, connections, transactions).
    pub msgs: u64,
    /// Most time for the measured part.
    pub time: Duration,
}

impl Params {
    /// The budget for one run: at most `cap` messages (and `self.msgs`)
    /// and `self.time`, from now.
    pub fn limit(&self, cap: u64) -> Limit {
        Limit {
            max: self.msgs.min(cap),
            until: Instant::now() + self.time,
        }
    }
}

/// A count and a time limit; whichever is reached first ends a loop.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    /// Most messages.
    pub max: u64,
    /// No new work after this.
    pub until: Instant,
}

impl Limit {
    /// May the loop go on, having done `done`? (The clock is read every 16
    /// calls.)
    #[inline]
    pub fn go(&self, done: u64, calls: u64) -> bool {
        done < self.max && (calls % 16 != 0 || Instant::now() < self.until)
    }
}

/// The implementation a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Imp {
    /// `hostsock`.
    Hostsock,
    /// `tokio::net`, or `AsyncFd` and libc where tokio has no API.
    Tokio,
    /// Blocking syscalls on std threads.
    Raw,
}

impl Imp {
    /// All three, in the order they are printed.
    pub const ALL: [Imp; 3] = [Imp::Hostsock, Imp::Tokio, Imp::Raw];

    /// The printed name.
    pub fn name(self) -> &'static str {
        match self {
            Imp::Hostsock => "hostsock",
            Imp::Tokio => "tokio",
            Imp::Raw => "raw",
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The figure: a rate per second, or nanoseconds (latency, CPU cost).
    pub value: f64,
    /// A second figure where there is one (p99 of a latency run).
    pub value2: f64,
    /// Messages sent.
    pub sent: u64,
    /// Messages received (and checked).
    pub received: u64,
    /// Heap allocations in the measured window, all threads.
    pub allocs: u64,
    /// A note for the table (how the load spread, what was offered).
    pub note: String,
}

impl Outcome {
    /// Allocations per received message.
    pub fn allocs_per_msg(&self) -> f64 {
        self.allocs as f64 / self.received.max(1) as f64
    }

    /// Lost messages as a fraction of those sent.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.sent.saturating_sub(self.received) as f64 / self.sent as f64
        }
    }
}

// ------------------------------------------------------------ helpers

/// First byte of a data datagram.
pub const DATA: u8 = 0x00;
/// First byte of an end marker.
pub const END: u8 = 0xEE;
/// The receive buffer every receiving socket gets (root may pass
/// `rmem_max`): a pre-filled queue of thousands of datagrams fits.
pub const RCVBUF: i32 = 8 << 20;
/// How long a receiver may wait past its time budget before it gives up
/// (a lost end marker never hangs a run).
pub const GRACE: Duration = Duration::from_secs(10);

/// An error with a message.
/// The socket with its blocking timeouts cleared, for the async variants:
/// the raw variant's safety timeout (SO_RCVTIMEO) would otherwise become
/// hostsock's read timeout (hostsock keeps a host socket's timeouts, tokio
/// ignores them) and put hostsock on its deadline path while tokio is not.
pub fn untimed<T: std::os::fd::AsFd>(sock: T) -> io::Result<T> {
    let r = socket2::SockRef::from(&sock);
    r.set_read_timeout(None)?;
    r.set_write_timeout(None)?;
    Ok(sock)
}

pub fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Two connected UDP sockets on loopback, blocking: `(tx, rx)`; the
/// receiver's buffer raised to [`RCVBUF`], the sender's too.
pub fn udp_pair() -> io::Result<(StdUdp, StdUdp)> {
    let rx = StdUdp::bind("127.0.0.1:0")?;
    let tx = StdUdp::bind("127.0.0.1:0")?;
    sys::raise_buffer(&rx, false, RCVBUF)?;
    sys::raise_buffer(&tx, true, RCVBUF)?;
    sys::raise_buffer(&tx, false, RCVBUF)?;
    sys::raise_buffer(&rx, true, RCVBUF)?;
    tx.connect(rx.local_addr()?)?;
    rx.connect(tx.local_addr()?)?;
    Ok((tx, rx))
}

/// A current-thread runtime with IO and time.
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Sends end markers (`[END]`, not waiting) on `fds` every millisecond until
/// `done()` or two seconds have passed.
pub fn send_markers(fds: &[std::os::fd::RawFd], done: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(2);
    while !done() && Instant::now() < until {
        for &fd in fds {
            sys::send_now(fd, &[END]);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A payload of `size` bytes starting with [`DATA`].
pub fn payload(size: usize) -> Vec<u8> {
    let mut v = vec![0x5a; size];
    v[0] = DATA;
    v
}

/// Counts the data segments in a received buffer of segments of `seg`
/// bytes (a GRO buffer; without GRO one segment), and whether an end
/// marker was among them.
pub fn count_segments(data: &[u8], seg: usize) -> (u64, bool) {
    let mut n = 0;
    let mut end = false;
    for s in data.chunks(seg.max(1)) {
        match s[0] {
            DATA => n += 1,
            END => end = true,
            _ => {}
        }
    }
    (n, end)
}

/// Yields once to the runtime before a measured window: tokio grows its
/// list of deferred wakers (one per `block_on`) the first time a task
/// yields, an allocation per runtime, not per message.
pub async fn settle() {
    tokio::task::yield_now().await;
}

/// Runs `f` on a new thread pinned to CPU `cpu` and gives its result.
pub fn on_cpu<T: Send + 'static>(
    cpu: usize,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    join(std::thread::spawn(move || {
        sys::pin_to(cpu);
        f()
    }))
}

/// Joins a scenario thread, turning a panic into an error.
pub fn join<T>(h: std::thread::JoinHandle<io::Result<T>>) -> io::Result<T> {
    h.join()
        .map_err(|_| err("a benchmark thread panicked"))
        .and_then(|r| r)
}

/// What a sender gives: `(sent, start, allocations at the start)`.
pub type SendResult = io::Result<(u64, Instant, u64)>;
/// What a receiver gives: `(received, last arrival, allocations at the
/// end)`.
pub type RecvResult = io::Result<(u64, Instant, u64)>;

// ------------------------------------------------------------ loops

/// A send loop: waits at the barrier, then runs `$body` (one send call of
/// `$per` datagrams) until the limit; gives `(sent, start, allocs at start)`.
macro_rules! send_loop {
    ($p:expr, $cap:expr, $barrier:expr, $per:expr, $body:block) => {{
        $barrier.wait();
        let a0 = allocs();
        let t0 = Instant::now();
        let lim = $p.limit($cap);
        let (mut sent, mut calls) = (0u64, 0u64);
        while lim.go(sent, calls) {
            calls += 1;
            $body;
            sent += $per;
        }
        (sent, t0, a0)
    }};
}

/// A receive loop: runs `$wait` (the start barrier) if given, then `$body`
/// receives once and gives `(data datagrams, end seen)`, until the end
/// marker; gives `(received, time of the last data, allocs at the end)`.
macro_rules! recv_loop {
    ($wait:expr, $body:block) => {{
        $wait;
        recv_loop!($body)
    }};
    ($body:block) => {{
        let mut got = 0u64;
        let mut last = Instant::now();
        loop {
            let (n, end): (u64, bool) = $body;
            if n > 0 {
                got += n;
                last = Instant::now();
            }
            if end {
                break;
            }
        }
        (got, last, allocs())
    }};
}

// The scenario modules come after the loop macros, which they use.
pub mod cost;
pub mod flood;
pub mod pingpong;
pub mod reuseport;
pub mod sys;
pub mod tcp;

const _: () = assert!(DATA != END, "the data and end markers must differ");
