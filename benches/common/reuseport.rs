//! One socket per core: receiving sockets sharing a port with
//! `SO_REUSEPORT`, one task each on a two-worker runtime (raw: a blocking
//! thread each), against one socket.

use std::io;
use std::net::{Ipv4Addr, UdpSocket as StdUdp};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::sys::{self, Control};
use super::{
    GRACE, Imp, Outcome, Params, RecvResult, SendResult, allocs, count_segments, err, join,
    payload, send_markers, settle,
};

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Sender flows steered to each receiving socket.
const FLOWS_PER_SOCKET: usize = 4;
/// Candidate sender sockets probed to find flows for each receiver.
const CANDIDATES: usize = 64;
/// Segments per GSO send of the reuseport sender.
const SENDER_SEGMENTS: usize = 64;

/// `sockets` receiving sockets on one port with `SO_REUSEPORT` (one task
/// each on a two-worker runtime, or one blocking thread each for raw),
/// receiving 64-byte datagrams one by one from one GSO sender thread (64
/// segments a send, as fast as it can) whose flows are picked so that each
/// socket gets the same number. `value` is the datagrams received per
/// second, all sockets together. On loopback the kernel's receive work
/// (segmentation, UDP lookup, queueing) runs in the sender's context, so
/// the sender competes with the receivers for the CPUs.
pub fn reuseport(imp: Imp, sockets: usize, p: &Params) -> io::Result<Outcome> {
    let (rxs, flows) = reuseport_sockets(sockets)?;
    for r in &rxs {
        if imp == Imp::Raw {
            sys::set_recv_timeout(r, p.time + GRACE)?;
        } else {
            r.set_nonblocking(true)?;
        }
    }
    let n = rxs.len();
    let barrier = Arc::new(Barrier::new(2));
    let done = Arc::new(AtomicU64::new(0));
    let p = *p;
    let sender = {
        let (barrier, done) = (barrier.clone(), done.clone());
        std::thread::spawn(move || -> SendResult {
            let data = payload(64).repeat(SENDER_SEGMENTS);
            let mut seg = Control::<32>::new();
            let fds: Vec<_> = flows.iter().map(|f| f.as_raw_fd()).collect();
            let mut next = 0;
            let r = send_loop!(p, u64::MAX, barrier, SENDER_SEGMENTS as u64, {
                let fd = fds[next % fds.len()];
                next += 1;
                let len = sys::encode_segment(&mut seg, 64);
                sys::sendmsg(fd, &data, &seg.0[..len], 0)?;
            });
            send_markers(&fds, || done.load(Ordering::SeqCst) == n as u64);
            drop(flows);
            Ok(r)
        })
    };
    let wait = p.time + GRACE;
    let per_socket: Vec<io::Result<(u64, Instant, u64)>> = match imp {
        Imp::Raw => {
            let hs: Vec<_> = rxs
                .into_iter()
                .map(|r| {
                    let done = done.clone();
                    std::thread::spawn(move || -> RecvResult {
                        let mut buf = [0u8; 2048];
                        let out = (|| -> RecvResult {
                            Ok(recv_loop!({
                                let n = r.recv(&mut buf)?;
                                count_segments(&buf[..n], n)
                            }))
                        })();
                        done.fetch_add(1, Ordering::SeqCst);
                        out
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(n);
            barrier.wait();
            for h in hs {
                out.push(join(h));
            }
            out
        }
        Imp::Hostsock | Imp::Tokio => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            warm_workers(&rt, 2);
            let ready = Arc::new(AtomicU64::new(0));
            let tasks: Vec<_> = rxs
                .into_iter()
                .map(|r| {
                    let (done, ready) = (done.clone(), ready.clone());
                    rt.spawn(async move {
                        let task = async move {
                            let mut buf = [0u8; 2048];
                            if imp == Imp::Hostsock {
                                let s = hostsock::UdpSocket::from_std(super::untimed(r)?)?;
                                settle().await;
                                ready.fetch_add(1, Ordering::SeqCst);
                                Ok::<_, io::Error>(recv_loop!({
                                    let n = s.recv(&mut buf).await?;
                                    count_segments(&buf[..n], n)
                                }))
                            } else {
                                let s = tokio::net::UdpSocket::from_std(r)?;
                                settle().await;
                                ready.fetch_add(1, Ordering::SeqCst);
                                Ok(recv_loop!({
                                    let n = s.recv(&mut buf).await?;
                                    count_segments(&buf[..n], n)
                                }))
                            }
                        };
                        let r = tokio::time::timeout(wait, task)
                            .await
                            .map_err(|_| err("receiver timed out"))
                            .and_then(|r| r);
                        done.fetch_add(1, Ordering::SeqCst);
                        r
                    })
                })
                .collect();
            // Every socket registered (outside the measured window) before
            // the sender starts.
            let until = Instant::now() + Duration::from_secs(5);
            while ready.load(Ordering::SeqCst) < n as u64 && Instant::now() < until {
                std::thread::sleep(Duration::from_micros(100));
            }
            // Whatever this thread's first `block_on` sets up, and the
            // results' room, before the window opens.
            rt.block_on(settle());
            let mut out = Vec::with_capacity(n);
            barrier.wait();
            rt.block_on(async {
                for t in tasks {
                    out.push(t.await.map_err(|_| err("receiver task failed"))?);
                }
                Ok::<_, io::Error>(())
            })?;
            out
        }
    };
    let (sent, t0, a0) = join(sender)?;
    let mut received = 0;
    let mut last = t0;
    let mut a1 = a0;
    let mut split = Vec::new();
    for r in per_socket {
        let (got, l, a) = r?;
        received += got;
        last = last.max(l);
        a1 = a1.max(a);
        split.push(got);
    }
    let secs = last.saturating_duration_since(t0).as_secs_f64();
    let shares: Vec<String> = split
        .iter()
        .map(|g| format!("{:.0}%", 100.0 * *g as f64 / received.max(1) as f64))
        .collect();
    Ok(Outcome {
        value: if secs > 0.0 {
            received as f64 / secs
        } else {
            0.0
        },
        sent,
        received,
        allocs: a1.saturating_sub(a0),
        note: format!("split {}", shares.join("/")),
        ..Outcome::default()
    })
}

/// Makes each of a multi-thread runtime's `workers` run a task that yields
/// (waiting at most a second for all to run): a worker thread's start and
/// its first yield allocate, and must not fall into a measured window.
fn warm_workers(rt: &tokio::runtime::Runtime, workers: usize) {
    let met = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let met = met.clone();
            rt.spawn(async move {
                met.fetch_add(1, Ordering::SeqCst);
                let until = Instant::now() + Duration::from_secs(1);
                while met.load(Ordering::SeqCst) < workers as u64 && Instant::now() < until {
                    std::thread::yield_now();
                }
                // Both tasks run now, one on each worker: each worker's
                // deferred-waker list grows here, not in the window.
                tokio::task::yield_now().await;
            })
        })
        .collect();
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
}

/// `sockets` receiving sockets sharing one port, and the sender sockets
/// (connected to it) whose flows the kernel hashes to each in turn, found by
/// sending one probe datagram from each candidate.
fn reuseport_sockets(sockets: usize) -> io::Result<(Vec<StdUdp>, Vec<StdUdp>)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut rxs = Vec::new();
    let mut port = 0;
    for _ in 0..sockets {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_port(true)?;
        s.bind(&std::net::SocketAddr::from((LOCAL, port)).into())?;
        sys::raise_buffer(&s, false, super::RCVBUF)?;
        let s: StdUdp = s.into();
        port = s.local_addr()?.port();
        s.set_nonblocking(true)?;
        rxs.push(s);
    }
    let mut chosen: Vec<Vec<StdUdp>> = (0..sockets).map(|_| Vec::new()).collect();
    let mut buf = [0u8; 64];
    for i in 0..CANDIDATES {
        if chosen.iter().all(|c| c.len() == FLOWS_PER_SOCKET) {
            break;
        }
        let tx = StdUdp::bind((LOCAL, 0))?;
        sys::raise_buffer(&tx, true, super::RCVBUF)?;
        tx.connect((LOCAL, port))?;
        tx.send(&[0xAB, i as u8])?;
        let mut landed = None;
        for _ in 0..1000 {
            for (k, r) in rxs.iter().enumerate() {
                if r.recv(&mut buf).is_ok() {
                    landed = Some(k);
                }
            }
            if landed.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        let k = landed.ok_or_else(|| err("a reuseport probe was lost"))?;
        if chosen[k].len() < FLOWS_PER_SOCKET {
            chosen[k].push(tx);
        }
    }
    if chosen.iter().any(|c| c.len() < FLOWS_PER_SOCKET) {
        return Err(err("could not find flows for every reuseport socket"));
    }
    for r in &rxs {
        r.set_nonblocking(false)?;
    }
    Ok((rxs, chosen.into_iter().flatten().collect()))
}
