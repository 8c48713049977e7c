//! One socket per core: N threads, each with its own current-thread
//! runtime and its own `SO_REUSEPORT` UDP socket and TCP listener on one
//! shared address. Clients from many source ports (flows) are spread by
//! the kernel; each shard counts what it served.
//!
//! Run it with: `cargo run --example per_core` (or `-- 4` for 4 shards).
//! It runs on loopback and ends by itself.

use std::net::SocketAddr;
use std::time::Duration;

use hostsock::{TcpListener, TcpStream, UdpSocket, per_core};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const FLOWS: usize = 64;

fn main() -> hostsock::Result<()> {
    let shards: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    // Pick a free port for both protocols, then release it for the shards.
    let udp_addr = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let tcp_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    println!("per_core: {shards} shards on udp {udp_addr} and tcp {tcp_addr}");

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let servers = std::thread::spawn(move || {
        per_core::run(shards, move |i| {
            let ready = ready_tx.clone();
            async move { serve(i, udp_addr, tcp_addr, ready).await }
        })
    });
    for _ in 0..shards {
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(clients(udp_addr, tcp_addr))?;

    let counts = servers
        .join()
        .map_err(|_| std::io::Error::other("the server threads panicked"))??;
    for (i, (udp, tcp)) in counts.iter().enumerate() {
        println!("shard {i}: answered {udp} UDP flows and {tcp} TCP connections");
    }
    let (udp, tcp): (usize, usize) = counts.iter().fold((0, 0), |(u, t), (a, b)| (u + a, t + b));
    println!("total: {udp} UDP flows, {tcp} TCP connections (expected {FLOWS} each)");
    Ok(())
}

/// One shard: echoes UDP datagrams and TCP connections until a quiet
/// second passes; returns what it served.
async fn serve(
    _shard: usize,
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    ready: std::sync::mpsc::Sender<()>,
) -> hostsock::Result<(usize, usize)> {
    let udp = UdpSocket::bind_reuseport(udp_addr).await?;
    let tcp = TcpListener::bind_reuseport(tcp_addr).await?;
    let _ = ready.send(());
    let (mut udp_served, mut tcp_served) = (0, 0);
    let mut buf = [0u8; 64];
    loop {
        let quiet = Instant::now() + Duration::from_secs(1);
        tokio::select! {
            r = udp.recv_from_deadline(&mut buf, quiet) => match r {
                Ok((n, from)) => {
                    udp.send_to(&buf[..n], from).await?;
                    udp_served += 1;
                }
                Err(e) if e.is_timeout() => break,
                Err(e) => return Err(e),
            },
            r = tcp.accept_deadline(quiet) => match r {
                Ok((mut conn, _)) => {
                    let mut b = [0u8; 4];
                    conn.read_exact(&mut b).await?;
                    conn.write_all(&b).await?;
                    tcp_served += 1;
                }
                Err(e) if e.is_timeout() => break,
                Err(e) => return Err(e),
            },
        }
    }
    Ok((udp_served, tcp_served))
}

async fn clients(udp_addr: SocketAddr, tcp_addr: SocketAddr) -> hostsock::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    for _ in 0..FLOWS {
        let c = UdpSocket::bind("127.0.0.1:0").await?;
        c.send_to(b"ping", udp_addr).await?;
        let mut buf = [0u8; 8];
        c.recv_from_deadline(&mut buf, deadline).await?;
    }
    for _ in 0..FLOWS {
        let mut c = TcpStream::connect_deadline(tcp_addr, deadline).await?;
        c.write_all(b"ping").await?;
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await?;
    }
    Ok(())
}
