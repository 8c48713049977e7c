//! tokio-util's codecs over hostsock streams: `Framed<TcpStream, LinesCodec>`
//! on either side of a connection (and against a `tokio::net` peer), and
//! `FramedRead`/`FramedWrite` over the owned halves from `into_split()`.
//! Every test sends many lines, some empty, some long (64 KiB and 1 MiB),
//! some with multi-byte UTF-8, and checks each one's content and order.
//! Last, a proxy made of `tokio::io::copy_bidirectional` between a hostsock
//! stream and a `tokio::net` one, carrying half-closes through.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hostsock::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, FramedRead, FramedWrite, LinesCodec};

/// Lines longer than this are a codec error; the longest test line is 1 MiB.
const MAX_LINE: usize = 2 << 20;

/// How many lines each test sends.
const LINES: usize = 2_000;

fn codec() -> LinesCodec {
    LinesCodec::new_with_max_length(MAX_LINE)
}

/// Line `i` of the test corpus: deterministic, with no `\n` or `\r` (the
/// codec strips a trailing `\r`). Most are short; every 97th is 64 KiB,
/// lines 500 and 1500 are 1 MiB, every 50th is empty.
fn line(i: usize) -> String {
    let len = match i {
        500 | 1500 => 1 << 20,
        _ if i % 97 == 0 => 64 << 10,
        _ if i % 50 == 0 => 0,
        _ => (i * 7919) % 300,
    };
    const ALPHABET: &[char] = &[
        'a', 'b', 'c', 'x', 'y', 'z', '0', '9', ' ', '\t', '-', 'é', 'ß', '✓', '𝄞',
    ];
    let mut state = (i as u64).wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut s = format!("{i}:");
    while s.len() < len {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push(ALPHABET[(state >> 33) as usize % ALPHABET.len()]);
    }
    s
}

/// What the echo servers answer to a line: its length, then the line.
fn reply(l: &str) -> String {
    format!("{} {l}", l.len())
}

/// Bounds a test step in time.
async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test step took longer than {secs} s"))
}

/// Sends every line on `sink` and closes it, while reading the replies on
/// `stream` until it ends; checks each reply against the line it answers.
async fn send_all_check_replies<Si, St>(mut sink: Si, mut stream: St)
where
    Si: futures::Sink<String, Error = tokio_util::codec::LinesCodecError> + Unpin,
    St: futures::Stream<Item = Result<String, tokio_util::codec::LinesCodecError>> + Unpin,
{
    let send = async move {
        for i in 0..LINES {
            sink.send(line(i)).await.expect("send line");
        }
        // Closing shuts the write side down: the server sees end of stream.
        SinkExt::<String>::close(&mut sink)
            .await
            .expect("close sink");
    };
    let receive = async move {
        let mut got = 0;
        while let Some(r) = stream.next().await {
            let r = r.expect("reply line");
            assert!(got < LINES, "more replies than lines sent");
            let want = reply(&line(got));
            assert!(
                r == want,
                "reply {got} differs: {} bytes, starting {:?}; wanted {} bytes",
                r.len(),
                &r[..r.len().min(40)],
                want.len()
            );
            got += 1;
        }
        got
    };
    let ((), got) = tokio::join!(send, receive);
    assert_eq!(got, LINES, "every line answered, then end of stream");
}

/// A line-echo server on a `Framed` hostsock stream: answers each line
/// with [`reply`] and, at end of stream, closes. Returns the lines seen.
async fn framed_echo(stream: TcpStream) -> usize {
    let mut framed = Framed::new(stream, codec());
    let mut seen = 0;
    while let Some(l) = framed.next().await {
        let l = l.expect("server read line");
        framed.send(reply(&l)).await.expect("server send reply");
        seen += 1;
    }
    SinkExt::<String>::close(&mut framed)
        .await
        .expect("server close");
    seen
}

#[tokio::test]
async fn framed_lines_hostsock_both_sides() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        framed_echo(stream).await
    });
    let client = TcpStream::connect(addr).await.unwrap();
    let (sink, stream) = Framed::new(client, codec()).split();
    within(120, send_all_check_replies(sink, stream)).await;
    assert_eq!(within(10, server).await.unwrap(), LINES);
}

#[tokio::test]
async fn framed_hostsock_server_tokio_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        framed_echo(stream).await
    });
    let client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sink, stream) = Framed::new(client, codec()).split();
    within(120, send_all_check_replies(sink, stream)).await;
    assert_eq!(within(10, server).await.unwrap(), LINES);
}

#[tokio::test]
async fn framed_tokio_server_hostsock_client() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut framed = Framed::new(stream, codec());
        let mut seen = 0;
        while let Some(l) = framed.next().await {
            framed.send(reply(&l.unwrap())).await.unwrap();
            seen += 1;
        }
        SinkExt::<String>::close(&mut framed).await.unwrap();
        seen
    });
    let client = TcpStream::connect(addr).await.unwrap();
    let (sink, stream) = Framed::new(client, codec()).split();
    within(120, send_all_check_replies(sink, stream)).await;
    assert_eq!(within(10, server).await.unwrap(), LINES);
}

#[tokio::test]
async fn framed_read_write_over_owned_halves() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The server reads on one half in this task and answers on the other
    // half from a second task, through a channel.
    let server = tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        let (read, write) = stream.into_split();
        assert_eq!(read.peer_addr().unwrap(), peer);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
        let writer = tokio::spawn(async move {
            let mut out = FramedWrite::new(write, codec());
            while let Some(l) = rx.recv().await {
                out.send(reply(&l)).await.unwrap();
            }
            SinkExt::<String>::close(&mut out).await.unwrap();
        });
        let mut input = FramedRead::new(read, codec());
        let mut seen = 0;
        while let Some(l) = input.next().await {
            tx.send(l.unwrap()).await.unwrap();
            seen += 1;
        }
        drop(tx);
        writer.await.unwrap();
        seen
    });

    let client = TcpStream::connect(addr).await.unwrap();
    let (read, write) = client.into_split();
    let sink = FramedWrite::new(write, codec());
    let stream = FramedRead::new(read, codec());
    within(120, send_all_check_replies(sink, stream)).await;
    assert_eq!(within(10, server).await.unwrap(), LINES);
}

/// The halves put back together still carry the framed conversation on: a
/// `FramedRead` is taken apart with `into_inner` mid-stream (its buffered
/// bytes kept), the halves reunited, and the rest read through `Framed`.
#[tokio::test]
async fn framed_read_then_reunite_keeps_buffered_lines() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut framed = Framed::new(stream, codec());
        for i in 0..100 {
            framed.send(line(i)).await.unwrap();
        }
        SinkExt::<String>::close(&mut framed).await.unwrap();
    });
    let (stream, _) = listener.accept().await.unwrap();
    let (read, write) = stream.into_split();
    let mut first = FramedRead::new(read, codec());
    for i in 0..10 {
        let l = within(10, first.next()).await.unwrap().unwrap();
        assert_eq!(l, line(i));
    }
    // Carry the already-read bytes over into the new `Framed`.
    let parts = first.into_parts();
    let buffered = parts.read_buf;
    let stream = parts.io.reunite(write).expect("halves of one stream");
    let mut parts = Framed::new(stream, codec()).into_parts();
    parts.read_buf = buffered;
    let mut framed = Framed::from_parts(parts);
    let mut n = 10;
    while let Some(l) = within(10, framed.next()).await {
        assert_eq!(l.unwrap(), line(n));
        n += 1;
    }
    assert_eq!(n, 100);
    within(10, client).await.unwrap();
}

/// `FramedRead`/`FramedWrite` over the borrowed halves of `split()`, both
/// driven from one task.
#[tokio::test]
async fn framed_read_write_over_borrowed_halves() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        framed_echo(stream).await
    });
    let mut client = TcpStream::connect(addr).await.unwrap();
    let (read, write) = client.split();
    let sink = FramedWrite::new(write, codec());
    let stream = FramedRead::new(read, codec());
    within(120, send_all_check_replies(sink, stream)).await;
    assert_eq!(within(10, server).await.unwrap(), LINES);
    // The stream is whole again once the halves are gone; the server has
    // closed, so a read on it is end of stream.
    let mut buf = [0u8; 8];
    let n = tokio::io::AsyncReadExt::read(&mut client, &mut buf).await;
    assert_eq!(n.unwrap(), 0);
}

/// A proxy: `tokio::io::copy_bidirectional` between an accepted hostsock
/// stream and a hostsock connection to a `tokio::net` backend. The client's
/// half-close must travel through the proxy (the backend reads to end of
/// stream before answering), and the backend's close back.
#[tokio::test]
async fn copy_bidirectional_proxy_carries_half_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = backend.accept().await.unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        all.reverse();
        s.write_all(&all).await.unwrap();
        s.shutdown().await.unwrap();
    });
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let proxy = tokio::spawn(async move {
        let (mut a, _) = front.accept().await.unwrap();
        let mut b = TcpStream::connect(backend_addr).await.unwrap();
        tokio::io::copy_bidirectional(&mut a, &mut b).await
    });

    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut client = TcpStream::connect(front_addr).await.unwrap();
    let (mut r, mut w) = client.split();
    let write = async {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let read = async {
        r.read_to_end(&mut got).await.unwrap();
    };
    within(60, async { tokio::join!(write, read) }).await;
    let mut want = data.clone();
    want.reverse();
    assert!(
        got == want,
        "{} bytes back, {} expected",
        got.len(),
        want.len()
    );
    let (up, down) = within(10, proxy).await.unwrap().expect("proxy");
    assert_eq!((up, down), (data.len() as u64, data.len() as u64));
}
