//! A packet delayer: the kernel has no netem, so an iptables `NFQUEUE`
//! rule hands the packets to this loop, which holds each one for a fixed
//! time and then lets it go on (verdict accept). Order is kept (a FIFO with
//! one delay for all). Runs in a child process inside the namespace whose
//! rule feeds the queue (netlink queues belong to a namespace).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Holds every packet of queue `queue` for `delay`, until stdin closes or
/// `max_run` passes. Prints `READY` once bound and returns how many packets
/// it held.
pub fn run_delayer(queue: u16, delay: Duration, max_run: Duration) -> u64 {
    let mut q = nfq::Queue::open().expect("open the netfilter queue socket");
    q.bind(queue).expect("bind the queue");
    // Only the headers are copied to us (the verdict does not change the
    // payload), which also keeps big GSO packets within the receive buffer.
    q.set_copy_range(queue, 64).expect("copy range");
    q.set_queue_max_len(queue, 8192).expect("queue length");
    // Never lose a packet for our sake: if the queue overflows the kernel
    // lets the packet pass.
    q.set_fail_open(queue, true).expect("fail open");
    q.set_nonblocking(true);

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            stop.store(true, Ordering::Relaxed);
        });
    }
    println!("READY queue={queue}");

    let started = Instant::now();
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let mut total = 0u64;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < max_run {
        let mut idle = true;
        // Take what is queued (bounded per turn so releases are not late).
        for _ in 0..256 {
            match q.recv() {
                Ok(mut msg) => {
                    msg.set_verdict(nfq::Verdict::Accept);
                    held.push_back((Instant::now() + delay, msg));
                    total += 1;
                    idle = false;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => break,
                Err(e) => panic!("nfq recv: {e}"),
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            let (_, msg) = held.pop_front().expect("front");
            q.verdict(msg).expect("verdict");
            idle = false;
        }
        if idle {
            // The next release, or a short nap to look for new packets.
            let nap = held
                .front()
                .map(|(due, _)| due.saturating_duration_since(now))
                .unwrap_or(Duration::from_micros(500))
                .min(Duration::from_micros(500));
            std::thread::sleep(nap);
        }
    }
    for (_, msg) in held.drain(..) {
        let _ = q.verdict(msg);
    }
    total
}
