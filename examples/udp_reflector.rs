//! A UDP echo server bound to a wildcard address that answers each datagram
//! from the exact local address it was sent to (IP_PKTINFO /
//! IPV6_PKTINFO), with the TOS / traffic class it carried, and prints one
//! line per datagram: peer, local destination address, TOS, length.
//!
//! Run it with: `cargo run --example udp_reflector -- 0.0.0.0:9000`
//! (or `[::]:9000`). With `--selftest` it starts on a free port, sends
//! itself one datagram to 127.0.0.1 and one to 127.0.0.2, checks that each
//! answer comes from the address asked, and exits.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hostsock::UdpSocket;

#[tokio::main]
async fn main() -> hostsock::Result<()> {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "0.0.0.0:9000".to_string());
    if arg == "--selftest" {
        return selftest().await;
    }
    let server = UdpSocket::bind(arg.as_str()).await?;
    println!("udp_reflector: listening on {}", server.local_addr()?);
    serve(&server, None).await
}

/// Answers datagrams until `limit` have been answered (forever if `None`).
async fn serve(server: &UdpSocket, limit: Option<usize>) -> hostsock::Result<()> {
    server.enable_info()?;
    let mut buf = vec![0u8; 65536];
    let mut answered = 0;
    while limit.is_none_or(|l| answered < l) {
        let (n, info) = server.recv_with_info(&mut buf).await?;
        let local = info
            .local
            .map(|a| a.to_string())
            .unwrap_or_else(|| "?".into());
        let tos = info
            .tos
            .map(|t| format!("{t:#04x}"))
            .unwrap_or_else(|| "?".into());
        println!("{} -> {local}  tos {tos}  {n} bytes", info.from);
        match info.local {
            Some(from) => {
                server
                    .send_from(&buf[..n], info.from, from, info.tos)
                    .await?
            }
            None => server.send_to(&buf[..n], info.from).await?,
        };
        answered += 1;
    }
    Ok(())
}

async fn selftest() -> hostsock::Result<()> {
    let server = UdpSocket::bind("0.0.0.0:0").await?;
    let port = server.local_addr()?.port();
    println!("udp_reflector selftest: server on 0.0.0.0:{port}");
    let serving = async { serve(&server, Some(2)).await };
    let asking = async {
        for target in ["127.0.0.1", "127.0.0.2"] {
            let client = UdpSocket::bind("127.0.0.1:0").await?;
            let to = SocketAddr::new(
                target
                    .parse::<IpAddr>()
                    .map_err(|e| std::io::Error::other(e.to_string()))?,
                port,
            );
            client.send_to(b"ping", to).await?;
            let mut buf = [0u8; 16];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            let (n, from) = client.recv_from_deadline(&mut buf, deadline).await?;
            println!(
                "client asked {to}, answer {:?} came from {from}",
                String::from_utf8_lossy(&buf[..n])
            );
            if from != to {
                return Err(
                    std::io::Error::other(format!("answer from {from}, expected {to}")).into(),
                );
            }
        }
        Ok::<_, hostsock::Error>(())
    };
    let (served, asked) = tokio::join!(serving, asking);
    served?;
    asked?;
    println!("selftest passed: each answer came from the address asked");
    Ok(())
}
