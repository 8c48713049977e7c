//! A TCP echo server on hostsock: every connection gets back what it sends.
//! Each connection has a 30 s read timeout, so idle clients are let go.
//!
//! Run it with: `cargo run --example echo -- 127.0.0.1:7000`
//! and talk to it with, for example, `nc 127.0.0.1 7000`.

use std::time::Duration;

use futures::StreamExt;
use hostsock::TcpListener;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> hostsock::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".to_string());
    let listener = TcpListener::bind(addr.as_str()).await?;
    listener.set_read_timeout(Some(Duration::from_secs(30)))?;
    println!("echo: listening on {}", listener.local_addr()?);

    let mut incoming = listener.incoming();
    while let Some(conn) = incoming.next().await {
        let mut conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: the stream backs off by itself.
                eprintln!("echo: accept failed: {e} (errno {})", e.errno());
                continue;
            }
        };
        tokio::spawn(async move {
            let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            println!("echo: {peer} connected");
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Err(e) = conn.write_all(&buf[..n]).await {
                            eprintln!("echo: {peer}: write failed: {e}");
                            break;
                        }
                    }
                    Err(e) => {
                        eprintln!("echo: {peer}: {e}");
                        break;
                    }
                }
            }
            println!("echo: {peer} gone");
        });
    }
    Ok(())
}
