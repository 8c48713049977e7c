//! UDP ping-pong latency: 64-byte datagrams there and back, every thread on
//! CPU 0 (the async client and server are two tasks of one current-thread
//! runtime; raw is two blocking threads).

use std::io;
use std::time::Instant;

use super::sys;
use super::{
    END, GRACE, Imp, Outcome, Params, allocs, err, join, on_cpu, payload, runtime, udp_pair,
};

/// Round trips measured at most per run.
const PINGPONG_CAP: u64 = 200_000;
/// Untimed round trips first.
const WARMUP: usize = 200;

/// A client loop: `$rt` is one round trip; fills `$rtts` (nanoseconds) until
/// the limit; gives the allocations made meanwhile.
macro_rules! rtt_loop {
    ($p:expr, $rtts:expr, $rt:block) => {{
        for _ in 0..WARMUP {
            $rt;
        }
        let a0 = allocs();
        let lim = $p.limit(PINGPONG_CAP);
        let mut calls = 0u64;
        while lim.go($rtts.len() as u64, calls) && $rtts.len() < $rtts.capacity() {
            calls += 1;
            let t = Instant::now();
            $rt;
            $rtts.push(t.elapsed().as_nanos() as u64);
        }
        allocs() - a0
    }};
}

/// UDP ping-pong of 64-byte datagrams: client and server on one
/// current-thread runtime (two tasks), or two blocking threads for raw.
/// `value` is the p50 round trip, `value2` the p99, in nanoseconds.
/// Every thread of it runs on CPU 0 (one core, as the current-thread
/// runtime is).
pub fn pingpong(imp: Imp, p: &Params) -> io::Result<Outcome> {
    let p = *p;
    on_cpu(0, move || pingpong_here(imp, &p))
}

fn pingpong_here(imp: Imp, p: &Params) -> io::Result<Outcome> {
    let (client, server) = udp_pair()?;
    let data = payload(64);
    let mut rtts: Vec<u64> = Vec::with_capacity(p.msgs.min(PINGPONG_CAP) as usize);
    let allocs = match imp {
        Imp::Raw => {
            sys::set_recv_timeout(&client, p.time + GRACE)?;
            sys::set_recv_timeout(&server, p.time + GRACE)?;
            let srv = std::thread::spawn(move || -> io::Result<()> {
                sys::pin_to(0);
                let mut buf = [0u8; 2048];
                loop {
                    let n = server.recv(&mut buf)?;
                    if buf[0] == END {
                        return Ok(());
                    }
                    server.send(&buf[..n])?;
                }
            });
            let mut buf = [0u8; 2048];
            let a = (|| -> io::Result<u64> {
                Ok(rtt_loop!(p, rtts, {
                    client.send(&data)?;
                    client.recv(&mut buf)?;
                }))
            })();
            client.send(&[END])?;
            join(srv)?;
            a?
        }
        Imp::Hostsock => {
            client.set_nonblocking(true)?;
            server.set_nonblocking(true)?;
            runtime()?.block_on(async {
                let c = hostsock::UdpSocket::from_std(super::untimed(client)?)?;
                let s = hostsock::UdpSocket::from_std(super::untimed(server)?)?;
                let srv = tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    loop {
                        let n = s.recv(&mut buf).await?;
                        if buf[0] == END {
                            return Ok::<_, io::Error>(());
                        }
                        s.send(&buf[..n]).await?;
                    }
                });
                let mut buf = [0u8; 2048];
                let run = async {
                    Ok::<_, io::Error>(rtt_loop!(p, rtts, {
                        c.send(&data).await?;
                        c.recv(&mut buf).await?;
                    }))
                };
                let a = tokio::time::timeout(p.time + GRACE, run)
                    .await
                    .map_err(|_| err("ping-pong timed out"))??;
                c.send(&[END]).await?;
                srv.await.map_err(|_| err("server task failed"))??;
                Ok::<_, io::Error>(a)
            })?
        }
        Imp::Tokio => {
            client.set_nonblocking(true)?;
            server.set_nonblocking(true)?;
            runtime()?.block_on(async {
                let c = tokio::net::UdpSocket::from_std(client)?;
                let s = tokio::net::UdpSocket::from_std(server)?;
                let srv = tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    loop {
                        let n = s.recv(&mut buf).await?;
                        if buf[0] == END {
                            return Ok::<_, io::Error>(());
                        }
                        s.send(&buf[..n]).await?;
                    }
                });
                let mut buf = [0u8; 2048];
                let run = async {
                    Ok::<_, io::Error>(rtt_loop!(p, rtts, {
                        c.send(&data).await?;
                        c.recv(&mut buf).await?;
                    }))
                };
                let a = tokio::time::timeout(p.time + GRACE, run)
                    .await
                    .map_err(|_| err("ping-pong timed out"))??;
                c.send(&[END]).await?;
                srv.await.map_err(|_| err("server task failed"))??;
                Ok::<_, io::Error>(a)
            })?
        }
    };
    rtts.sort_unstable();
    let pct = |q: f64| {
        rtts.get(((rtts.len() as f64 * q) as usize).min(rtts.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
    };
    Ok(Outcome {
        value: pct(0.50),
        value2: pct(0.99),
        sent: rtts.len() as u64,
        received: rtts.len() as u64,
        allocs,
        ..Outcome::default()
    })
}
