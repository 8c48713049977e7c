//! `TcpListener`: bind, accept (and its deadline, timeout, try/poll forms,
//! `incoming`), the fd flags, std round trips, inheritance by accepted
//! streams, and cancel safety of `accept`.
#![cfg(target_os = "linux")]

mod util;

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use futures::future::poll_fn;
use hostsock::{Policy, TcpListener, TcpStream};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use util::within;

/// Is `::1` usable here? Prints why not, so a skipped test says so.
fn v6_loopback_available() -> bool {
    match std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)) {
        Ok(_) => true,
        Err(e) => {
            println!("skipping: cannot bind [::1]:0 ({e}), no IPv6 loopback here");
            false
        }
    }
}

#[tokio::test]
async fn bind_v4_and_accept() -> hostsock::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST);
    assert_ne!(addr.port(), 0);

    let client = within(5, TcpStream::connect(addr)).await?;
    let (server, peer) = within(5, listener.accept()).await?;
    assert_eq!(peer, client.local_addr()?);
    assert_eq!(server.local_addr()?, addr);
    assert_eq!(server.peer_addr()?, peer);
    Ok(())
}

#[tokio::test]
async fn bind_v6_and_accept() -> hostsock::Result<()> {
    if !v6_loopback_available() {
        return Ok(());
    }
    let listener = TcpListener::bind("[::1]:0").await?;
    let addr = listener.local_addr()?;
    assert_eq!(addr.ip(), Ipv6Addr::LOCALHOST);
    assert!(addr.is_ipv6());
    assert_ne!(addr.port(), 0);

    let client = within(5, TcpStream::connect(addr)).await?;
    let (server, peer) = within(5, listener.accept()).await?;
    assert!(peer.is_ipv6());
    assert_eq!(peer, client.local_addr()?);
    assert_eq!(server.local_addr()?, addr);
    util::assert_nonblocking_cloexec(&listener);
    util::assert_nonblocking_cloexec(&server);
    Ok(())
}

#[tokio::test]
async fn accept_peer_is_client_local_addr() -> hostsock::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    for _ in 0..4 {
        let client = within(5, TcpStream::connect(addr)).await?;
        let (server, peer) = within(5, listener.accept()).await?;
        assert_eq!(peer, client.local_addr()?);
        assert_eq!(server.peer_addr()?, client.local_addr()?);
        assert_eq!(client.peer_addr()?, server.local_addr()?);
    }
    Ok(())
}

#[tokio::test]
async fn listener_and_accepted_fds_are_nonblocking_cloexec() -> hostsock::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    util::assert_nonblocking_cloexec(&listener);
    let addr = listener.local_addr()?;

    // accept
    let _c1 = within(5, TcpStream::connect(addr)).await?;
    let (s1, _) = within(5, listener.accept()).await?;
    util::assert_nonblocking_cloexec(&s1);

    // poll_accept
    let _c2 = within(5, TcpStream::connect(addr)).await?;
    let (s2, _) = within(5, poll_fn(|cx| listener.poll_accept(cx))).await?;
    util::assert_nonblocking_cloexec(&s2);

    // incoming
    let _c3 = within(5, TcpStream::connect(addr)).await?;
    let s3 = within(5, listener.incoming().next())
        .await
        .expect("incoming never ends")?;
    util::assert_nonblocking_cloexec(&s3);
    Ok(())
}

#[tokio::test]
async fn from_std_blocking_listener_becomes_nonblocking_cloexec_and_round_trips()
-> hostsock::Result<()> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = std_listener.local_addr()?;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&std_listener);
    {
        let sock = socket2::SockRef::from(&std_listener);
        sock.set_nonblocking(false)?;
        sock.set_cloexec(false)?;
    }
    // Precondition: really blocking and inheritable now.
    let flags = util::fd_flags(raw);
    assert_eq!(flags & libc::O_NONBLOCK as u32, 0, "flags {flags:o}");
    assert_eq!(flags & libc::O_CLOEXEC as u32, 0, "flags {flags:o}");

    let listener = TcpListener::from_std(std_listener)?;
    assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&listener), raw);
    util::assert_nonblocking_cloexec(&listener);
    assert_eq!(listener.local_addr()?, addr);
    let client = within(5, TcpStream::connect(addr)).await?;
    let (_s, peer) = within(5, listener.accept()).await?;
    assert_eq!(peer, client.local_addr()?);

    // Back to std: same fd, same address, still non-blocking (as tokio).
    let std_again = listener.into_std()?;
    assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&std_again), raw);
    assert_eq!(std_again.local_addr()?, addr);
    util::assert_nonblocking_cloexec(&std_again);
    // Nothing queued: a non-blocking std accept says WouldBlock at once.
    let err = std_again.accept().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);

    // And into hostsock again: into_std deregistered the fd, so it can be
    // registered anew and still accepts.
    let listener = TcpListener::from_std(std_again)?;
    let client = within(5, TcpStream::connect(addr)).await?;
    let (_s, peer) = within(5, listener.accept()).await?;
    assert_eq!(peer, client.local_addr()?);
    Ok(())
}

#[tokio::test]
async fn accept_deadline_times_out_with_eagain() -> hostsock::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let wait = Duration::from_millis(100);
    let start = Instant::now();
    let err = within(5, listener.accept_deadline(start + wait))
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.errno(), libc::EAGAIN);
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(elapsed >= wait, "timed out early: {elapsed:?}");
    assert!(elapsed < wait + Duration::from_secs(1), "late: {elapsed:?}");
    // Through io::Error and back the errno survives.
    let io_err: io::Error = err.into();
    assert_eq!(io_err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(hostsock::Error::from(io_err).errno(), libc::EAGAIN);

    // The listener still works after a timed-out accept.
    let client = within(5, TcpStream::connect(listener.local_addr()?)).await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let (_s, peer) = listener.accept_deadline(deadline).await?;
    assert_eq!(peer, client.local_addr()?);
    Ok(())
}

#[tokio::test]
async fn read_timeout_makes_accept_time_out() -> hostsock::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    assert_eq!(listener.read_timeout(), None);
    let zero = listener.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(zero.errno(), libc::EINVAL);

    let t = Duration::from_millis(100);
    listener.set_read_timeout(Some(t))?;
    assert_eq!(listener.read_timeout(), Some(t));
    let start = Instant::now();
    let err = within(5, listener.accept()).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.errno(), libc::EAGAIN);
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(elapsed >= t, "timed out early: {elapsed:?}");

    // With a connection queued the timeout does not get in the way.
    let client = within(5, TcpStream::connect(listener.local_addr()?)).await?;
    let (_s, peer) = within(5, listener.accept()).await?;
    assert_eq!(peer, client.local_addr()?);

    // Cleared, accept waits again (until the bound of this test step).
    listener.set_read_timeout(None)?;
    assert_eq!(listener.read_timeout(), None);
    let pending = tokio::time::timeout(Duration::from_millis(250), listener.accept()).await;
    assert!(
        pending.is_err(),
        "accept returned {pending:?} without a client"
    );
    Ok(())
}

#[tokio::test]
async fn accepted_streams_inherit_timeouts_and_policy() -> hostsock::Result<()> {
    let policy = Arc::new(Policy::allow_all());
    let listener = TcpListener::bind_with_policy("127.0.0.1:0", policy.clone()).await?;
    assert!(Arc::ptr_eq(listener.policy(), &policy));
    assert!(!Arc::ptr_eq(listener.policy(), &Policy::shared_default()));
    let rt = Duration::from_millis(150);
    let wt = Duration::from_millis(700);
    listener.set_read_timeout(Some(rt))?;
    listener.set_write_timeout(Some(wt))?;
    assert_eq!(listener.write_timeout(), Some(wt));
    let addr = listener.local_addr()?;

    let _c1 = within(5, TcpStream::connect(addr)).await?;
    let (mut s1, _) = within(5, listener.accept()).await?;
    let _c2 = within(5, TcpStream::connect(addr)).await?;
    let (s2, _) = within(5, poll_fn(|cx| listener.poll_accept(cx))).await?;
    let _c3 = within(5, TcpStream::connect(addr)).await?;
    let s3 = within(5, listener.incoming().next())
        .await
        .expect("incoming never ends")?;

    for s in [&s1, &s2, &s3] {
        assert_eq!(s.read_timeout(), Some(rt));
        assert_eq!(s.write_timeout(), Some(wt));
        assert!(Arc::ptr_eq(s.policy(), &policy));
    }

    // The inherited read timeout is live, not just reported.
    let start = Instant::now();
    let mut buf = [0u8; 8];
    let err = within(5, s1.read(&mut buf)).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(hostsock::Error::from(err).errno(), libc::EAGAIN);
    assert!(start.elapsed() >= rt);

    // Changing the listener later does not touch streams already accepted.
    listener.set_read_timeout(None)?;
    assert_eq!(s2.read_timeout(), Some(rt));
    Ok(())
}

#[tokio::test]
async fn try_accept_gives_eagain_when_nothing_is_queued() -> hostsock::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let err = listener.try_accept().unwrap_err();
    assert_eq!(err.errno(), libc::EAGAIN);
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert!(!err.is_timeout());

    // Once a client is queued try_accept gets it. The listener has no
    // readiness method, so retry on a short timer (bounded: 2 s total).
    let client = within(5, TcpStream::connect(listener.local_addr()?)).await?;
    let mut accepted = None;
    for _ in 0..200 {
        match listener.try_accept() {
            Ok(pair) => {
                accepted = Some(pair);
                break;
            }
            Err(e) if e.errno() == libc::EAGAIN => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(e),
        }
    }
    let (stream, peer) = accepted.expect("try_accept never saw the queued client");
    assert_eq!(peer, client.local_addr()?);
    util::assert_nonblocking_cloexec(&stream);

    // And the queue is empty again.
    assert_eq!(listener.try_accept().unwrap_err().errno(), libc::EAGAIN);
    Ok(())
}

#[tokio::test]
async fn incoming_yields_several_connections() -> hostsock::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(within(5, TcpStream::connect(addr)).await?);
    }
    let want: HashSet<SocketAddr> = clients
        .iter()
        .map(|c| c.local_addr())
        .collect::<hostsock::Result<_>>()?;

    let accepted: Vec<_> = within(5, listener.incoming().take(5).collect()).await;
    assert_eq!(accepted.len(), 5);
    let mut got = HashSet::new();
    for r in accepted {
        let s = r?;
        assert_eq!(s.local_addr()?, addr);
        got.insert(s.peer_addr()?);
    }
    assert_eq!(got, want);
    Ok(())
}

#[tokio::test]
async fn poll_accept_pending_then_ready() -> hostsock::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        assert!(
            listener.poll_accept(&mut cx).is_pending(),
            "poll_accept ready with nothing queued"
        );
    }
    let client = within(5, TcpStream::connect(listener.local_addr()?)).await?;
    let (stream, peer) = within(5, poll_fn(|cx| listener.poll_accept(cx))).await?;
    assert_eq!(peer, client.local_addr()?);
    assert_eq!(stream.peer_addr()?, peer);

    // Nothing else is queued: a poll is pending again.
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    assert!(matches!(listener.poll_accept(&mut cx), Poll::Pending));
    Ok(())
}

#[tokio::test]
async fn accept_is_cancel_safe() -> hostsock::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    for round in 0..5 {
        // The sleep wins; the accept future is dropped while it waits.
        tokio::select! {
            r = listener.accept() => panic!("round {round}: accept returned {r:?} with no client"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        let client = within(5, TcpStream::connect(addr)).await?;
        // A second race, now that the connection is on its way: whichever
        // branch wins, the connection must come out of exactly one accept.
        let early = tokio::select! {
            r = listener.accept() => Some(r?),
            _ = tokio::time::sleep(Duration::from_millis(1)) => None,
        };
        let (stream, peer) = match early {
            Some(pair) => pair,
            None => within(5, listener.accept()).await?,
        };
        assert_eq!(peer, client.local_addr()?, "round {round}");
        assert_eq!(stream.peer_addr()?, client.local_addr()?);
    }
    // Exactly the five connections were accepted: none left over.
    assert_eq!(listener.try_accept().unwrap_err().errno(), libc::EAGAIN);
    Ok(())
}
