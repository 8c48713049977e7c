//! A tour of hostsock's deadlines and timeouts, each one made to fire on
//! loopback: a connect to a listener whose backlog is full, an accept with
//! nobody connecting, a read from a silent peer, a write to a peer that
//! does not read, UDP receives (`recv_from`, `recv_msg`) with nothing sent,
//! and per-socket read timeouts (`SO_RCVTIMEO`-style) next to per-call
//! deadlines (the earlier one wins). For each it prints the time asked and
//! the time taken, and the error: `hostsock::Error::TimedOut`, its
//! `io::ErrorKind`, and the Linux errno (`EINPROGRESS` for connect, `EAGAIN`
//! for the rest, as `SO_SNDTIMEO`/`SO_RCVTIMEO` give).
//!
//! Run it with: `cargo run --example deadline`. It ends by itself in
//! about two seconds, and exits with an error if a deadline did not
//! fire or fired early.

use std::io::IoSliceMut;
use std::time::Duration;

use hostsock::msg::RecvFlags;
use hostsock::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn errno_name(n: i32) -> &'static str {
    match n {
        libc::EAGAIN => "EAGAIN",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        _ => "another errno",
    }
}

/// Prints how `result` ended after `asked`; an error unless it is a
/// timeout that did not fire early.
fn report<T>(
    what: &str,
    asked: Duration,
    started: Instant,
    result: hostsock::Result<T>,
) -> Result<(), BoxError> {
    let took = started.elapsed();
    let err = match result {
        Ok(_) => return Err(format!("{what}: finished, but should have timed out").into()),
        Err(e) => e,
    };
    println!("   {what}");
    println!(
        "      asked {} ms, gave up after {} ms",
        asked.as_millis(),
        took.as_millis()
    );
    match &err {
        hostsock::Error::TimedOut { op } => println!(
            "      Error::TimedOut {{ op: {op:?} }}: \"{err}\", kind {:?}, errno {} ({})",
            err.kind(),
            err.errno(),
            errno_name(err.errno())
        ),
        other => return Err(format!("{what}: expected a timeout, got {other}").into()),
    }
    // Timers never fire early; late by a little is normal on a busy host.
    if took + ms(2) < asked {
        return Err(format!("{what}: fired early ({took:?} < {asked:?})").into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    connect().await?;
    accept_and_read().await?;
    write().await?;
    udp().await?;
    println!("\nall deadlines and timeouts fired as asked");
    Ok(())
}

/// Connects that cannot finish: the listener's accept queue is full, so
/// the kernel drops the SYNs and the connect stays in progress.
async fn connect() -> Result<(), BoxError> {
    println!("1. connect");
    let full = TcpSocket::new_v4()?;
    full.bind("127.0.0.1:0".parse()?)?;
    // Backlog 0: Linux queues one connection, and nobody accepts it.
    let full = full.listen(0)?;
    let addr = full.local_addr()?;
    let mut queued = Vec::new();
    let mut timed_out = None;
    for _ in 0..8 {
        let asked = ms(200);
        let started = Instant::now();
        match TcpStream::connect_deadline(addr, started + asked).await {
            Ok(s) => queued.push(s),
            Err(e) => {
                timed_out = Some((asked, started, e));
                break;
            }
        }
    }
    let (asked, started, err) = timed_out.ok_or("the listener's queue never filled")?;
    println!(
        "   ({} connection(s) fill the accept queue of {addr})",
        queued.len()
    );
    report(
        "TcpStream::connect_deadline to a full backlog",
        asked,
        started,
        Err::<(), _>(err),
    )?;

    // The same with a per-socket write timeout, which bounds connect as
    // SO_SNDTIMEO bounds a blocking connect(2).
    let socket = TcpSocket::new_v4()?;
    socket.set_write_timeout(Some(ms(150)))?;
    let started = Instant::now();
    let r = socket.connect(addr).await;
    report(
        "TcpSocket::connect with a 150 ms write timeout",
        ms(150),
        started,
        r,
    )?;
    Ok(())
}

/// An accept with nobody connecting, then reads from a peer that says
/// nothing: a per-call deadline, a per-socket timeout, and both at once.
async fn accept_and_read() -> Result<(), BoxError> {
    println!("\n2. accept and read");
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let started = Instant::now();
    let r = listener.accept_deadline(started + ms(100)).await;
    report(
        "TcpListener::accept_deadline, nobody connecting",
        ms(100),
        started,
        r,
    )?;

    let _silent = TcpStream::connect(listener.local_addr()?).await?;
    let (mut stream, _) = listener.accept().await?;
    let mut buf = [0u8; 64];

    let started = Instant::now();
    let r = stream.read_deadline(&mut buf, started + ms(150)).await;
    report(
        "TcpStream::read_deadline from a silent peer",
        ms(150),
        started,
        r,
    )?;

    // A per-socket timeout covers every read, the AsyncRead ones too: the
    // std::io::Error it gives converts back to hostsock::Error with `?`
    // or `From`, keeping the timeout and its errno.
    stream.set_read_timeout(Some(ms(120)))?;
    let started = Instant::now();
    let r = stream.read(&mut buf).await;
    let kind = r.as_ref().err().map(std::io::Error::kind);
    report(
        "AsyncReadExt::read with set_read_timeout(120 ms)",
        ms(120),
        started,
        r.map_err(hostsock::Error::from),
    )?;
    if let Some(kind) = kind {
        println!("      (as the std::io::Error that AsyncRead gives: kind {kind:?})");
    }

    // Both set: whichever comes first ends the wait.
    let started = Instant::now();
    let r = stream.read_deadline(&mut buf, started + ms(400)).await;
    report(
        "read_deadline(400 ms) with the 120 ms read timeout: the timeout wins",
        ms(120),
        started,
        r,
    )?;
    stream.set_read_timeout(Some(ms(1000)))?;
    let started = Instant::now();
    let r = stream.read_deadline(&mut buf, started + ms(80)).await;
    report(
        "read_deadline(80 ms) with a 1 s read timeout: the deadline wins",
        ms(80),
        started,
        r,
    )?;
    Ok(())
}

/// Writes to a peer that never reads: the socket buffers fill up, and the
/// next write waits until its deadline.
async fn write() -> Result<(), BoxError> {
    println!("\n3. write");
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let writer = TcpStream::connect(listener.local_addr()?).await?;
    let (_not_reading, _) = listener.accept().await?;
    let chunk = vec![0x5au8; 64 << 10];
    let started = Instant::now();
    let at = started + ms(300);
    let mut written = 0usize;
    let mut result = Ok(0);
    // Bounded: loopback buffers hold a few MiB, far less than 16 GiB.
    for _ in 0..(1 << 18) {
        match writer.write_deadline(&chunk, at).await {
            Ok(n) => written += n,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    println!(
        "   ({} KiB went into the socket buffers first)",
        written / 1024
    );
    report(
        "TcpStream::write_deadline to a peer that does not read",
        ms(300),
        started,
        result,
    )?;
    Ok(())
}

/// UDP receives with nothing sent, and one with a datagram waiting.
async fn udp() -> Result<(), BoxError> {
    println!("\n4. UDP");
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let mut buf = [0u8; 1500];

    let started = Instant::now();
    let r = sock.recv_from_deadline(&mut buf, started + ms(150)).await;
    report(
        "UdpSocket::recv_from_deadline, nothing sent",
        ms(150),
        started,
        r,
    )?;

    let mut control = [0u8; 128];
    let started = Instant::now();
    let r = sock
        .recv_msg_deadline(
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::EMPTY,
            started + ms(100),
        )
        .await
        .map(|meta| meta.len);
    report(
        "UdpSocket::recv_msg_deadline, nothing sent",
        ms(100),
        started,
        r,
    )?;

    sock.set_read_timeout(Some(ms(120)))?;
    let started = Instant::now();
    let r = sock.recv(&mut buf).await;
    report(
        "UdpSocket::recv with set_read_timeout(120 ms)",
        ms(120),
        started,
        r,
    )?;

    // A deadline already in the past still lets a ready receive finish:
    // the operation is tried before the deadline is looked at.
    let sender = UdpSocket::bind("127.0.0.1:0").await?;
    sender.send_to(b"on time", sock.local_addr()?).await?;
    sock.readable().await?;
    let (n, from) = sock.recv_from_deadline(&mut buf, Instant::now()).await?;
    println!(
        "   recv_from_deadline(now) with a datagram waiting: {:?} from {from}",
        String::from_utf8_lossy(&buf[..n])
    );
    Ok(())
}
