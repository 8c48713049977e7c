//! The main demo of hostsock: runs on loopback with no arguments and ends by
//! itself within a few seconds, printing each step in plain words.
//!
//! It shows a TCP echo server and a client with deadlines, a UDP exchange, a
//! deadline firing, a per-socket read timeout, a connected UDP socket that
//! learns of an ICMP port unreachable instead of hanging, and the errno each
//! error carries.
//!
//! It ends with the guard rail: a policy that refuses an address and an
//! option, `TCP_INFO` read as a typed struct, and the raw layer answering a
//! guest's calls with Linux errno values.
//!
//! Run it with: `cargo run --example tour`

use std::time::Duration;

use std::sync::Arc;

use hostsock::policy::{AddrRule, AddrUse, Cidr, Verdict};
use hostsock::raw::{RawSocket, encode_sockaddr};
use hostsock::{Policy, TcpListener, TcpStream, UdpSocket, opts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

#[tokio::main]
async fn main() -> hostsock::Result<()> {
    println!("hostsock tour: every socket below is a real kernel socket on loopback.\n");

    tcp_echo().await?;
    udp_exchange().await?;
    per_datagram().await?;

    deadlines().await?;
    icmp_error().await?;
    policy_and_raw().await?;

    println!("\nThe tour is over.");
    Ok(())
}

/// A TCP echo server and a client that gives every step a deadline.
async fn tcp_echo() -> hostsock::Result<()> {
    println!("1. TCP echo with deadlines");
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("   the server listens on {addr}");

    let server = tokio::spawn(async move {
        let (mut conn, peer) = listener.accept().await?;
        println!("   the server accepted a connection from {peer}");
        let mut buf = [0u8; 1024];
        loop {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                println!("   the server saw the client finish and closes too");
                return Ok::<_, std::io::Error>(());
            }
            conn.write_all(&buf[..n]).await?;
        }
    });

    let deadline = Instant::now() + Duration::from_secs(2);
    let client = TcpStream::connect_deadline(addr, deadline).await?;
    client.set_nodelay(true)?;
    println!(
        "   the client connected from {} (nodelay: {})",
        client.local_addr()?,
        client.nodelay()?
    );

    let message = b"hello through the host kernel";
    client.write_deadline(message, deadline).await?;
    let mut echoed = vec![0u8; message.len()];
    let mut got = 0;
    while got < echoed.len() {
        got += client.read_deadline(&mut echoed[got..], deadline).await?;
    }
    println!(
        "   the client got back: {:?}",
        String::from_utf8_lossy(&echoed)
    );
    client.shutdown_with(std::net::Shutdown::Write)?;
    server
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    Ok(())
}

/// Two UDP sockets trade datagrams; one peeks before it reads.
async fn udp_exchange() -> hostsock::Result<()> {
    println!("\n2. UDP exchange");
    let a = UdpSocket::bind("127.0.0.1:0").await?;
    let b = UdpSocket::bind("127.0.0.1:0").await?;
    println!("   a is {}, b is {}", a.local_addr()?, b.local_addr()?);

    a.send_to(b"ping", b.local_addr()?).await?;
    let mut buf = [0u8; 64];
    let (n, from) = b.peek_from(&mut buf).await?;
    println!("   b peeked {n} bytes from {from} without taking them");
    let (n, from) = b.recv_from(&mut buf).await?;
    println!(
        "   b received {:?} from {from}",
        String::from_utf8_lossy(&buf[..n])
    );
    b.send_to(b"pong", from).await?;
    let (n, _) = a.recv_from(&mut buf).await?;
    println!("   a received {:?}", String::from_utf8_lossy(&buf[..n]));
    Ok(())
}

/// Per-datagram control messages: the TOS a client sets on one datagram,
/// the local address it was sent to, and a reply from that address.
async fn per_datagram() -> hostsock::Result<()> {
    use hostsock::cmsg::Cmsg;
    use hostsock::msg::SendFlags;
    use std::io::IoSlice;

    println!("\n2b. Per-datagram control messages");
    let server = UdpSocket::bind("0.0.0.0:0").await?;
    server.enable_info()?;
    let port = server.local_addr()?.port();
    let client = UdpSocket::bind("127.0.0.1:0").await?;
    let to: std::net::SocketAddr = ([127, 0, 0, 2], port).into();
    client
        .send_msg(
            &[IoSlice::new(b"marked")],
            Some(to),
            &[Cmsg::Tos(0x28)],
            SendFlags::EMPTY,
        )
        .await?;
    let mut buf = [0u8; 64];
    let (n, info) = server.recv_with_info(&mut buf).await?;
    println!(
        "   the server (on 0.0.0.0) got {n} bytes sent to {:?} with TOS {:?}",
        info.local, info.tos
    );
    if let Some(local) = info.local {
        server
            .send_from(&buf[..n], info.from, local, info.tos)
            .await?;
        let (_, from) = client.recv_from(&mut buf).await?;
        println!("   its answer came from {from}, the address the client asked");
    }
    Ok(())
}

/// A per-call deadline and a per-socket timeout, each firing.
async fn deadlines() -> hostsock::Result<()> {
    println!("\n3. Deadlines and timeouts");
    let quiet = UdpSocket::bind("127.0.0.1:0").await?;
    let mut buf = [0u8; 16];

    let started = Instant::now();
    let err = quiet
        .recv_deadline(&mut buf, started + Duration::from_millis(100))
        .await
        .expect_err("nobody sends to this socket");
    println!(
        "   a receive with a 100 ms deadline gave up after {} ms: \"{err}\" (errno {}, EAGAIN)",
        started.elapsed().as_millis(),
        err.errno()
    );

    quiet.set_read_timeout(Some(Duration::from_millis(50)))?;
    let started = Instant::now();
    let err = quiet.recv(&mut buf).await.expect_err("still nobody sends");
    println!(
        "   with a 50 ms read timeout, recv gave up after {} ms (timed out: {})",
        started.elapsed().as_millis(),
        err.is_timeout()
    );

    let err = TcpStream::connect("127.0.0.1:1")
        .await
        .expect_err("nothing listens on port 1");
    println!(
        "   a connect to 127.0.0.1:1 was refused by the kernel: \"{err}\" (errno {}, ECONNREFUSED)",
        err.errno()
    );
    Ok(())
}

/// A connected UDP socket whose peer is gone: the ICMP port unreachable
/// ends the pending receive instead of leaving it hanging.
async fn icmp_error() -> hostsock::Result<()> {
    println!("\n4. An ICMP error ends a pending UDP receive");
    let gone = UdpSocket::bind("127.0.0.1:0").await?;
    let gone_addr = gone.local_addr()?;
    drop(gone);

    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(gone_addr).await?;
    sock.send(b"anyone there?").await?;
    let mut buf = [0u8; 16];
    let deadline = Instant::now() + Duration::from_secs(2);
    match sock.recv_deadline(&mut buf, deadline).await {
        Err(e) if e.errno() == libc::ECONNREFUSED => println!(
            "   the receive ended at once with \"{e}\" (errno {}, ECONNREFUSED)",
            e.errno()
        ),
        other => println!("   unexpected: {other:?}"),
    }
    Ok(())
}

/// A policy refusing an address and an option, `TCP_INFO`, and the raw
/// layer's errno answers.
async fn policy_and_raw() -> hostsock::Result<()> {
    println!("\n5. The policy, TCP_INFO and the raw layer");
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;

    let guarded = Policy::builder()
        .addr_rule(
            AddrRule::new(Verdict::Deny, Cidr::from(addr.ip()), &[AddrUse::Connect])
                .ports(addr.port(), addr.port()),
        )
        .deny_option(libc::IPPROTO_TCP, libc::TCP_CORK)
        .audit(|event| println!("   (audit hook) {}", event.denial))
        .build();
    let guarded = Arc::new(guarded);
    match TcpStream::connect_with(addr, guarded.clone(), None).await {
        Err(e) => println!(
            "   a connect the policy denies never reaches the kernel: \"{e}\" (errno {})",
            e.errno()
        ),
        Ok(_) => println!("   unexpected: the denied connect went through"),
    }

    let stream = TcpStream::connect(addr).await?;
    let (_server, _) = listener.accept().await?;
    stream.set(opts::TcpNoDelay, true)?;
    let info = stream.tcp_info()?;
    println!(
        "   TCP_INFO of a fresh connection: state {:?}, rtt {} us, cwnd {} segments, mss {}",
        info.state(),
        info.rtt_us,
        info.snd_cwnd,
        info.snd_mss
    );

    let raw = RawSocket::new(guarded, libc::AF_INET, libc::SOCK_STREAM, 0)?;
    let cork = raw.setsockopt(libc::IPPROTO_TCP, libc::TCP_CORK, &1i32.to_ne_bytes());
    println!("   raw setsockopt(TCP_CORK), turned off by the policy: {cork:?}");
    let filter = raw.setsockopt(libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &[0u8; 16]);
    println!("   raw setsockopt(SO_ATTACH_FILTER), never allowed: {filter:?}");
    let short = raw.bind(&encode_sockaddr(addr).as_bytes()[..10]);
    println!("   raw bind with a 10-byte sockaddr_in: {short:?}");
    let mut out = [0u8; 4];
    let n = raw.getsockopt(libc::SOL_SOCKET, libc::SO_TYPE, &mut out)?;
    println!(
        "   raw getsockopt(SO_TYPE) answered by the facade: {} ({n} bytes)",
        i32::from_ne_bytes(out)
    );
    Ok(())
}
