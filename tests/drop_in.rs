//! "A program that uses the common subset of `tokio::net` compiles against
//! `hostsock` by changing only its `use` lines."
//!
//! `drop_in_suite!` holds one ordinary `tokio::net`-style program. It is
//! instantiated twice: once with `tokio::net` and once with `hostsock`. The
//! body is identical token for token; only the `use` line differs. Both
//! instantiations must compile and pass the same assertions.
//!
//! The body is written the way tokio's own docs write it: functions return
//! `std::io::Result<()>` and use `?`; `try_*` errors are matched with
//! `e.kind() == io::ErrorKind::WouldBlock` and passed on with
//! `return Err(e.into())` (the form tokio's examples use).

mod util;

macro_rules! drop_in_suite {
    ($name:ident, $($seg:ident)::+) => {
        #[allow(deprecated)] // tokio deprecates `set_linger` (hostsock does not)
        #[allow(clippy::useless_conversion)] // `e.into()` is io -> io for tokio
        mod $name {
            use $($seg)::+::{TcpListener, TcpSocket, TcpStream, UdpSocket};

            use std::future::poll_fn;
            use std::io::{self, IoSlice};
            use std::net::{Ipv4Addr, SocketAddr};
            use std::time::Duration;

            use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};

            /// Echoes everything it reads on one accepted connection, then
            /// shuts its write half down.
            async fn echo_one(listener: &TcpListener) -> io::Result<SocketAddr> {
                let (mut sock, peer) = listener.accept().await?;
                let (mut rd, mut wr) = sock.split();
                tokio::io::copy(&mut rd, &mut wr).await?;
                wr.shutdown().await?;
                Ok(peer)
            }

            // ---------------------------------------------------------------
            // TcpListener: bind(&str), accept, local_addr, poll_accept.
            // ---------------------------------------------------------------
            pub(crate) async fn listener_accept_and_poll_accept() -> io::Result<()> {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                assert!(addr.ip().is_loopback());
                assert_ne!(addr.port(), 0);

                // accept()
                let client = tokio::spawn(async move {
                    let mut s = TcpStream::connect(addr).await?;
                    s.write_all(b"first").await?;
                    io::Result::Ok(s)
                });
                let (mut server, peer) = listener.accept().await?;
                let client = client.await.expect("client task")?;
                assert_eq!(peer, client.local_addr()?);
                assert_eq!(server.peer_addr()?, peer);
                assert_eq!(server.local_addr()?, addr);
                let mut buf = [0u8; 5];
                server.read_exact(&mut buf).await?;
                assert_eq!(&buf, b"first");

                // poll_accept() through poll_fn
                let second = TcpStream::connect(addr).await?;
                let (mut server2, peer2) = poll_fn(|cx| listener.poll_accept(cx)).await?;
                assert_eq!(peer2, second.local_addr()?);
                assert_eq!(server2.peer_addr()?, second.local_addr()?);
                let mut second = second;
                second.write_all(b"second").await?;
                let mut buf = [0u8; 6];
                server2.read_exact(&mut buf).await?;
                assert_eq!(&buf, b"second");
                Ok(())
            }

            // ---------------------------------------------------------------
            // TcpStream: connect, read/write_all/read_exact, write_vectored,
            // peek, try_read/try_write with readable/writable, ready,
            // shutdown (AsyncWriteExt), addresses.
            // ---------------------------------------------------------------
            pub(crate) async fn stream_read_write() -> io::Result<()> {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                let mut client = TcpStream::connect(addr).await?;
                let (mut server, peer) = listener.accept().await?;
                assert_eq!(client.peer_addr()?, addr);
                assert_eq!(client.local_addr()?, peer);
                assert_eq!(server.peer_addr()?, client.local_addr()?);

                // write_all / read_exact
                client.write_all(b"hello world").await?;
                let mut buf = [0u8; 11];
                server.read_exact(&mut buf).await?;
                assert_eq!(&buf, b"hello world");

                // read (some bytes)
                server.write_all(b"pong").await?;
                let mut buf = [0u8; 64];
                let mut got = Vec::new();
                while got.len() < 4 {
                    let n = client.read(&mut buf).await?;
                    assert_ne!(n, 0, "unexpected end of stream");
                    got.extend_from_slice(&buf[..n]);
                }
                assert_eq!(got, b"pong");

                // write_vectored: the whole gather list goes out (it is small)
                let parts = [IoSlice::new(b"abc"), IoSlice::new(b"def"), IoSlice::new(b"gh")];
                let n = client.write_vectored(&parts).await?;
                assert_eq!(n, 8);
                let mut buf = [0u8; 8];
                server.read_exact(&mut buf).await?;
                assert_eq!(&buf, b"abcdefgh");

                // peek leaves the bytes queued
                client.write_all(b"peekaboo").await?;
                let mut buf = [0u8; 8];
                let mut n = 0;
                while n < 8 {
                    n = server.peek(&mut buf).await?;
                }
                assert_eq!(&buf[..n], b"peekaboo");
                let mut buf = [0u8; 8];
                server.read_exact(&mut buf).await?;
                assert_eq!(&buf, b"peekaboo");

                // try_write after writable()
                let written = loop {
                    client.writable().await?;
                    match client.try_write(b"try-data") {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e.into()),
                    }
                };
                assert_eq!(written, 8);

                // ready(Interest::READABLE), then try_read after readable()
                let ready = server.ready(Interest::READABLE).await?;
                assert!(ready.is_readable());
                let mut got = Vec::new();
                let mut buf = [0u8; 16];
                while got.len() < 8 {
                    server.readable().await?;
                    match server.try_read(&mut buf) {
                        Ok(0) => panic!("unexpected end of stream"),
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                assert_eq!(got, b"try-data");

                // try_read on an empty queue is WouldBlock
                match server.try_read(&mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    other => panic!("expected WouldBlock, got {other:?}"),
                }

                // AsyncWriteExt::shutdown: the peer reads end of stream
                client.shutdown().await?;
                let mut rest = Vec::new();
                let n = server.read_to_end(&mut rest).await?;
                assert_eq!(n, 0);
                // the other direction still works
                server.write_all(b"after").await?;
                let mut buf = [0u8; 5];
                client.read_exact(&mut buf).await?;
                assert_eq!(&buf, b"after");
                Ok(())
            }

            // ---------------------------------------------------------------
            // split() + tokio::join!, into_split() into two spawned tasks.
            // ---------------------------------------------------------------
            pub(crate) async fn split_and_into_split() -> io::Result<()> {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;

                // Borrowed halves in one task, both directions at once.
                let server = tokio::spawn(async move {
                    let (mut s, _) = listener.accept().await?;
                    let (mut rd, mut wr) = s.split();
                    tokio::io::copy(&mut rd, &mut wr).await?;
                    wr.shutdown().await?;
                    io::Result::Ok(listener)
                });
                let mut client = TcpStream::connect(addr).await?;
                let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
                let mut back = vec![0u8; data.len()];
                {
                    let (mut rd, mut wr) = client.split();
                    let (r, w) = tokio::join!(rd.read_exact(&mut back), async {
                        wr.write_all(&data).await?;
                        wr.shutdown().await
                    });
                    w?;
                    r?;
                }
                assert!(back == data, "echo through split() differs");
                let mut tail = Vec::new();
                assert_eq!(client.read_to_end(&mut tail).await?, 0);
                let listener = server.await.expect("server task")?;

                // Owned halves in two tasks; dropping the write half shuts
                // the write direction down (in tokio and in hostsock).
                let server = tokio::spawn(async move { echo_one(&listener).await });
                let client = TcpStream::connect(addr).await?;
                let client_local = client.local_addr()?;
                let (mut rd, mut wr) = client.into_split();
                assert_eq!(rd.peer_addr()?, addr);
                assert_eq!(wr.local_addr()?, client_local);
                let expected = data.clone();
                let writer = tokio::spawn(async move {
                    wr.write_all(&data).await?;
                    drop(wr);
                    io::Result::Ok(())
                });
                let reader = tokio::spawn(async move {
                    let mut got = Vec::new();
                    rd.read_to_end(&mut got).await?;
                    io::Result::Ok(got)
                });
                writer.await.expect("writer task")?;
                let got = reader.await.expect("reader task")?;
                assert!(got == expected, "echo through into_split() differs");
                let peer = server.await.expect("server task")?;
                assert_eq!(peer, client_local);
                Ok(())
            }

            // ---------------------------------------------------------------
            // Options and std conversions on TcpStream.
            // ---------------------------------------------------------------
            pub(crate) async fn stream_options_and_std() -> io::Result<()> {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                let client = TcpStream::connect(addr).await?;
                let (server, _) = listener.accept().await?;

                client.set_nodelay(true)?;
                assert!(client.nodelay()?);
                client.set_nodelay(false)?;
                assert!(!client.nodelay()?);

                client.set_linger(Some(Duration::from_secs(3)))?;
                assert_eq!(client.linger()?, Some(Duration::from_secs(3)));
                client.set_linger(None)?;
                assert_eq!(client.linger()?, None);

                client.set_ttl(42)?;
                assert_eq!(client.ttl()?, 42);

                // into_std: same socket, still non-blocking.
                let local = client.local_addr()?;
                let std_client = client.into_std()?;
                assert_eq!(std_client.local_addr()?, local);
                assert_eq!(std_client.peer_addr()?, addr);
                // from_std: back to the async type, and it still carries data.
                let mut client = TcpStream::from_std(std_client)?;
                assert_eq!(client.local_addr()?, local);
                client.write_all(b"via std").await?;
                let mut server = server;
                let mut buf = [0u8; 7];
                server.read_exact(&mut buf).await?;
                assert_eq!(&buf, b"via std");

                // from_std of a stream made by std (set non-blocking first,
                // as tokio requires).
                let std_stream = std::net::TcpStream::connect(addr)?;
                std_stream.set_nonblocking(true)?;
                let mut from_std = TcpStream::from_std(std_stream)?;
                let (mut server2, peer2) = listener.accept().await?;
                assert_eq!(peer2, from_std.local_addr()?);
                server2.write_all(b"hi").await?;
                let mut buf = [0u8; 2];
                from_std.read_exact(&mut buf).await?;
                assert_eq!(&buf, b"hi");
                Ok(())
            }

            // ---------------------------------------------------------------
            // TcpSocket: new_v4, set_reuseaddr, bind, listen, connect,
            // set_send_buffer_size.
            // ---------------------------------------------------------------
            pub(crate) async fn tcp_socket_builder() -> io::Result<()> {
                let socket = TcpSocket::new_v4()?;
                socket.set_reuseaddr(true)?;
                socket.bind("127.0.0.1:0".parse().unwrap())?;
                let listener = socket.listen(128)?;
                let addr = listener.local_addr()?;
                assert_ne!(addr.port(), 0);

                let socket = TcpSocket::new_v4()?;
                socket.set_send_buffer_size(64 * 1024)?;
                assert!(socket.send_buffer_size()? >= 64 * 1024);
                let mut stream = socket.connect(addr).await?;
                let (mut server, peer) = listener.accept().await?;
                assert_eq!(peer, stream.local_addr()?);
                assert_eq!(stream.peer_addr()?, addr);
                stream.write_all(b"built").await?;
                let mut buf = [0u8; 5];
                server.read_exact(&mut buf).await?;
                assert_eq!(&buf, b"built");
                Ok(())
            }

            // ---------------------------------------------------------------
            // UdpSocket.
            // ---------------------------------------------------------------
            pub(crate) async fn udp() -> io::Result<()> {
                let a = UdpSocket::bind("127.0.0.1:0").await?;
                let b = UdpSocket::bind("127.0.0.1:0").await?;
                let a_addr = a.local_addr()?;
                let b_addr = b.local_addr()?;

                // send_to / peek_from / recv_from
                let n = a.send_to(b"one", b_addr).await?;
                assert_eq!(n, 3);
                let mut buf = [0u8; 32];
                let (n, from) = b.peek_from(&mut buf).await?;
                assert_eq!((&buf[..n], from), (&b"one"[..], a_addr));
                let (n, from) = b.recv_from(&mut buf).await?;
                assert_eq!((&buf[..n], from), (&b"one"[..], a_addr));

                // connect / send / recv
                a.connect(b_addr).await?;
                b.connect(a_addr).await?;
                assert_eq!(a.peer_addr()?, b_addr);
                assert_eq!(a.send(b"two").await?, 3);
                let n = b.recv(&mut buf).await?;
                assert_eq!(&buf[..n], b"two");
                assert_eq!(b.send(b"three").await?, 5);
                let n = a.recv(&mut buf).await?;
                assert_eq!(&buf[..n], b"three");

                // try_send after writable(), try_recv after readable()
                let sent = loop {
                    a.writable().await?;
                    match a.try_send(b"four") {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e.into()),
                    }
                };
                assert_eq!(sent, 4);
                let n = loop {
                    b.readable().await?;
                    match b.try_recv(&mut buf) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e.into()),
                    }
                };
                assert_eq!(&buf[..n], b"four");
                match b.try_recv(&mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    other => panic!("expected WouldBlock, got {other:?}"),
                }

                // options
                a.set_broadcast(true)?;
                assert!(a.broadcast()?);
                a.set_broadcast(false)?;
                assert!(!a.broadcast()?);
                a.set_ttl(7)?;
                assert_eq!(a.ttl()?, 7);

                // multicast membership (skipped where the host has no
                // multicast-capable route: ENODEV)
                let m = UdpSocket::bind("0.0.0.0:0").await?;
                let group = Ipv4Addr::new(239, 255, 42, 99);
                match m.join_multicast_v4(group, Ipv4Addr::UNSPECIFIED) {
                    Ok(()) => m.leave_multicast_v4(group, Ipv4Addr::UNSPECIFIED)?,
                    Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                        eprintln!("multicast join skipped: {e}");
                    }
                    Err(e) => return Err(e.into()),
                }
                Ok(())
            }

            // ---------------------------------------------------------------
            // The rest of tokio's surface: BufMut receives, peek_sender,
            // readiness polls, try_io/async_io, halves' non-blocking calls.
            // ---------------------------------------------------------------
            pub(crate) async fn parity_extras() -> io::Result<()> {
                let a = UdpSocket::bind("127.0.0.1:0").await?;
                let b = UdpSocket::bind("127.0.0.1:0").await?;
                let (a_addr, b_addr) = (a.local_addr()?, b.local_addr()?);
                b.connect(a_addr).await?;
                poll_fn(|cx| a.poll_send_ready(cx)).await?;
                a.send_to(b"one", b_addr).await?;
                a.send_to(b"two", b_addr).await?;
                a.send_to(b"three", b_addr).await?;
                poll_fn(|cx| b.poll_recv_ready(cx)).await?;
                assert_eq!(b.peek_sender().await?, a_addr);
                assert_eq!(poll_fn(|cx| b.poll_peek_sender(cx)).await?, a_addr);
                let mut buf = bytes::BytesMut::with_capacity(64);
                assert_eq!(b.recv_buf(&mut buf).await?, 3);
                let mut v = Vec::with_capacity(64);
                let (n, from) = b.recv_buf_from(&mut v).await?;
                assert_eq!((n, from, &v[..]), (3, a_addr, &b"two"[..]));
                assert_eq!(&buf[..], b"one");
                b.readable().await?;
                assert_eq!(b.try_peek_sender()?, a_addr);
                let mut v = Vec::with_capacity(64);
                assert_eq!(b.try_recv_buf(&mut v)?, 5);
                assert_eq!(v, b"three");
                match b.try_recv_buf_from(&mut v) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    other => panic!("empty queue gave {other:?}"),
                }
                a.send_to(b"io", b_addr).await?;
                let got = b
                    .async_io(Interest::READABLE, || {
                        socket2::SockRef::from(&b).peek_sender()
                    })
                    .await?;
                assert_eq!(got.as_socket(), Some(a_addr));
                let got = b.try_io(Interest::READABLE, || socket2::SockRef::from(&b).peek_sender())?;
                assert_eq!(got.as_socket(), Some(a_addr));

                let listener = TcpListener::bind("127.0.0.1:0").await?;
                let client = TcpStream::connect(listener.local_addr()?).await?;
                let (server, _) = listener.accept().await?;
                client.set_quickack(true)?;
                poll_fn(|cx| client.poll_write_ready(cx)).await?;
                client.try_io(Interest::WRITABLE, || {
                    socket2::SockRef::from(&client).send(b"hello")
                })?;
                poll_fn(|cx| server.poll_read_ready(cx)).await?;
                let mut got = Vec::with_capacity(64);
                while got.len() < 5 {
                    server.readable().await?;
                    match server.try_read_buf(&mut got) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                assert_eq!(got, b"hello");

                let (rd, wr) = server.into_split();
                let (crd, cwr) = client.into_split();
                wr.writable().await?;
                assert_eq!(wr.try_write(b"ab")?, 2);
                let mut got = [0u8; 2];
                let mut have = 0;
                while have < 2 {
                    crd.readable().await?;
                    match crd.try_read(&mut got[have..]) {
                        Ok(0) => break,
                        Ok(n) => have += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                assert_eq!(&got, b"ab");
                cwr.ready(Interest::WRITABLE).await?;
                assert_eq!(cwr.try_write(b"c")?, 1);
                rd.ready(Interest::READABLE).await?;
                let mut v = Vec::with_capacity(8);
                loop {
                    match rd.try_read_buf(&mut v) {
                        Ok(_) => break,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => rd.readable().await?,
                        Err(e) => return Err(e.into()),
                    }
                }
                assert_eq!(v, b"c");
                Ok(())
            }

            // ---------------------------------------------------------------
            // The tests: the same for both instantiations.
            // ---------------------------------------------------------------
            #[tokio::test]
            async fn listener_accept_and_poll_accept_works() -> io::Result<()> {
                crate::util::within(20, listener_accept_and_poll_accept()).await
            }

            #[tokio::test]
            async fn stream_read_write_works() -> io::Result<()> {
                crate::util::within(20, stream_read_write()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn split_and_into_split_work() -> io::Result<()> {
                crate::util::within(20, split_and_into_split()).await
            }

            #[tokio::test]
            async fn stream_options_and_std_work() -> io::Result<()> {
                crate::util::within(20, stream_options_and_std()).await
            }

            #[tokio::test]
            async fn tcp_socket_builder_works() -> io::Result<()> {
                crate::util::within(20, tcp_socket_builder()).await
            }

            #[tokio::test]
            async fn udp_works() -> io::Result<()> {
                crate::util::within(20, udp()).await
            }

            #[tokio::test]
            async fn parity_extras_work() -> io::Result<()> {
                crate::util::within(20, parity_extras()).await
            }
        }
    };
}

drop_in_suite!(with_tokio_net, tokio::net);
drop_in_suite!(with_hostsock, hostsock);
