//! Integration tests for `hostsock::Error`: errno faithfulness, conversion
//! to and from `std::io::Error`, kinds, messages. Loopback only.

mod util;

use std::io;
use std::time::Duration;

use hostsock::{Error, Op, TcpListener, TcpStream, UdpSocket};
use tokio::time::Instant;

use util::{full_backlog_listener, refused_addr, within};

// `Error` can cross threads and live in `Box<dyn Error + Send + Sync>`:
// checked at compile time.
const fn assert_send_sync_static<T: Send + Sync + 'static>() {}
const fn assert_std_error<T: std::error::Error + Send + Sync + 'static>() {}
const _: () = assert_send_sync_static::<Error>();
const _: () = assert_std_error::<Error>();
const _: () = assert_send_sync_static::<hostsock::Result<()>>();

#[test]
fn error_is_send_sync_static_at_run_time_too() {
    let e = Error::from(io::Error::from_raw_os_error(libc::ECONNRESET));
    let boxed: Box<dyn std::error::Error + Send + Sync + 'static> = Box::new(e);
    let back = std::thread::spawn(move || boxed.to_string())
        .join()
        .unwrap();
    assert!(!back.is_empty());
}

async fn refused_connect() -> Error {
    within(2, TcpStream::connect(refused_addr()))
        .await
        .expect_err("connect to a port nobody listens on succeeded")
}

#[tokio::test]
async fn refused_tcp_connect_is_econnrefused() {
    let e = refused_connect().await;
    assert_eq!(e.errno(), libc::ECONNREFUSED, "{e:?}");
    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED));
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    assert!(!e.is_timeout());
    assert!(!e.is_denied());
}

#[tokio::test]
async fn into_io_error_keeps_raw_os_error() {
    let e = refused_connect().await;
    let io_err: io::Error = e.into();
    assert_eq!(io_err.raw_os_error(), Some(libc::ECONNREFUSED));
    assert_eq!(io_err.kind(), io::ErrorKind::ConnectionRefused);
    // And back again.
    let again = Error::from(io_err);
    assert_eq!(again.errno(), libc::ECONNREFUSED);
    assert_eq!(again.raw_os_error(), Some(libc::ECONNREFUSED));
    assert!(!again.is_timeout());
}

#[tokio::test]
async fn bind_in_use_is_eaddrinuse_through_io_error() {
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let e = UdpSocket::bind(a.local_addr().unwrap()).await.unwrap_err();
    assert_eq!(e.errno(), libc::EADDRINUSE);
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    let io_err = io::Error::from(e);
    assert_eq!(io_err.raw_os_error(), Some(libc::EADDRINUSE));
}

#[tokio::test]
async fn recv_timeout_converts_to_timed_out_and_back_with_eagain() {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 8];
    let e = within(
        2,
        s.recv_deadline(&mut buf, Instant::now() + Duration::from_millis(20)),
    )
    .await
    .unwrap_err();
    assert!(e.is_timeout());
    assert_eq!(e.errno(), libc::EAGAIN);
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert_eq!(e.raw_os_error(), None, "a timeout is not a kernel error");

    let io_err: io::Error = e.into();
    assert_eq!(io_err.kind(), io::ErrorKind::TimedOut);
    assert!(
        io_err.to_string().contains("recv"),
        "message should name the operation: {io_err}"
    );

    let back = Error::from(io_err);
    assert!(back.is_timeout(), "{back:?}");
    assert_eq!(back.errno(), libc::EAGAIN);
    assert_eq!(back.kind(), io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn read_timeout_error_is_the_same_as_a_deadline_error() {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut buf = [0u8; 8];
    let e = within(2, s.recv(&mut buf)).await.unwrap_err();
    assert!(e.is_timeout());
    assert_eq!(e.errno(), libc::EAGAIN);
    let back = Error::from(io::Error::from(e));
    assert_eq!(back.errno(), libc::EAGAIN);
}

#[tokio::test]
async fn connect_timeout_converts_to_timed_out_and_back_with_einprogress() {
    let (_listener, addr, _fill) = full_backlog_listener();
    let e = within(
        5,
        TcpStream::connect_deadline(addr, Instant::now() + Duration::from_millis(200)),
    )
    .await
    .expect_err("connect to a full backlog should hang until the deadline");
    assert!(e.is_timeout(), "{e:?}");
    assert_eq!(e.errno(), libc::EINPROGRESS);
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert!(e.to_string().contains("connect"), "message: {e}");

    let io_err: io::Error = e.into();
    assert_eq!(io_err.kind(), io::ErrorKind::TimedOut);
    let back = Error::from(io_err);
    assert!(back.is_timeout());
    assert_eq!(back.errno(), libc::EINPROGRESS);
}

#[tokio::test]
async fn accept_timeout_is_eagain_and_named() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = within(
        2,
        l.accept_deadline(Instant::now() + Duration::from_millis(20)),
    )
    .await
    .unwrap_err();
    assert!(e.is_timeout());
    assert_eq!(e.errno(), libc::EAGAIN);
    assert!(e.to_string().contains("accept"), "message: {e}");
}

async fn question_mark_bind_twice() -> io::Result<()> {
    let a = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = a.local_addr()?;
    let _b = UdpSocket::bind(addr).await?;
    Ok(())
}

async fn question_mark_timeout() -> io::Result<usize> {
    let s = UdpSocket::bind("127.0.0.1:0").await?;
    let mut buf = [0u8; 4];
    let n = s
        .recv_deadline(&mut buf, Instant::now() + Duration::from_millis(10))
        .await?;
    Ok(n)
}

async fn question_mark_ok() -> io::Result<u16> {
    let a = UdpSocket::bind("127.0.0.1:0").await?;
    Ok(a.local_addr()?.port())
}

#[tokio::test]
async fn question_mark_works_into_io_result() {
    assert_ne!(within(2, question_mark_ok()).await.unwrap(), 0);

    let e = within(2, question_mark_bind_twice()).await.unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE), "{e:?}");

    let e = within(2, question_mark_timeout()).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert_eq!(Error::from(e).errno(), libc::EAGAIN);
}

#[test]
fn kind_of_kernel_errors_matches_std() {
    let errnos = [
        libc::EPERM,
        libc::ENOENT,
        libc::EINTR,
        libc::EAGAIN,
        libc::ENOMEM,
        libc::EACCES,
        libc::EEXIST,
        libc::EINVAL,
        libc::EMFILE,
        libc::EPIPE,
        libc::ENOSYS,
        libc::ENOTSOCK,
        libc::EDESTADDRREQ,
        libc::EMSGSIZE,
        libc::ENOPROTOOPT,
        libc::EPROTONOSUPPORT,
        libc::EOPNOTSUPP,
        libc::EAFNOSUPPORT,
        libc::EADDRINUSE,
        libc::EADDRNOTAVAIL,
        libc::ENETDOWN,
        libc::ENETUNREACH,
        libc::ECONNABORTED,
        libc::ECONNRESET,
        libc::ENOBUFS,
        libc::EISCONN,
        libc::ENOTCONN,
        libc::ETIMEDOUT,
        libc::ECONNREFUSED,
        libc::EHOSTUNREACH,
        libc::EALREADY,
        libc::EINPROGRESS,
    ];
    for n in errnos {
        let std_err = io::Error::from_raw_os_error(n);
        let e = Error::from(io::Error::from_raw_os_error(n));
        assert_eq!(e.kind(), std_err.kind(), "errno {n}");
        assert_eq!(e.errno(), n, "errno {n}");
        assert_eq!(e.raw_os_error(), Some(n), "errno {n}");
        assert!(!e.is_timeout() && !e.is_denied(), "errno {n}");
        assert_eq!(e.to_string(), std_err.to_string(), "errno {n}: message");
        assert_eq!(io::Error::from(e).raw_os_error(), Some(n), "errno {n}");
    }
}

#[test]
fn io_errors_without_errno_get_a_nonzero_errno() {
    let cases = [
        (io::ErrorKind::InvalidInput, libc::EINVAL),
        (io::ErrorKind::WouldBlock, libc::EAGAIN),
        (io::ErrorKind::ConnectionRefused, libc::ECONNREFUSED),
        (io::ErrorKind::NotConnected, libc::ENOTCONN),
        (io::ErrorKind::BrokenPipe, libc::EPIPE),
        (io::ErrorKind::AddrInUse, libc::EADDRINUSE),
    ];
    for (kind, errno) in cases {
        let e = Error::from(io::Error::from(kind));
        assert_eq!(e.errno(), errno, "{kind:?}");
        assert_eq!(e.kind(), kind);
        assert_eq!(e.raw_os_error(), None);
    }
    for kind in [io::ErrorKind::Other, io::ErrorKind::UnexpectedEof] {
        let e = Error::from(io::Error::new(kind, "no errno here"));
        assert_ne!(e.errno(), 0, "{kind:?}");
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn foreign_io_error_payload_stays_a_kernel_style_error() {
    #[derive(Debug)]
    struct Mine;
    impl std::fmt::Display for Mine {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("mine")
        }
    }
    impl std::error::Error for Mine {}
    let e = Error::from(io::Error::new(io::ErrorKind::PermissionDenied, Mine));
    assert!(!e.is_timeout());
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    assert_eq!(e.errno(), libc::EACCES);
    assert!(e.to_string().contains("mine"), "{e}");
}

#[tokio::test]
async fn zero_timeout_is_einval_invalid_input() {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let e = s.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(!e.to_string().is_empty());
    let io_err = io::Error::from(e);
    assert_eq!(io_err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(Error::from(io_err).errno(), libc::EINVAL);
}

#[test]
fn op_timeout_errno_and_names() {
    assert_eq!(Op::Connect.timeout_errno(), libc::EINPROGRESS);
    for op in [Op::Recv, Op::Send, Op::Accept, Op::Ready] {
        assert_eq!(op.timeout_errno(), libc::EAGAIN, "{op:?}");
    }
    assert_eq!(Op::Recv.name(), "recv");
    assert_eq!(Op::Connect.to_string(), "connect");
}

#[tokio::test]
async fn display_messages_are_nonempty_and_timeouts_name_the_operation() {
    let refused = refused_connect().await;
    let msg = refused.to_string();
    assert!(!msg.is_empty());
    assert_eq!(
        msg,
        io::Error::from_raw_os_error(libc::ECONNREFUSED).to_string(),
        "a kernel error reads as std's message for its errno"
    );

    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 4];
    let t = s
        .recv_deadline(&mut buf, Instant::now() + Duration::from_millis(10))
        .await
        .unwrap_err();
    let msg = t.to_string();
    assert!(msg.contains("recv"), "timeout message names the op: {msg}");
    assert!(msg.contains("timed out"), "timeout message says so: {msg}");
    // Debug is useful too.
    assert!(format!("{t:?}").contains("Recv"));
}

#[tokio::test]
async fn send_on_unconnected_udp_is_edestaddrreq() {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let e = within(2, s.send(b"x")).await.unwrap_err();
    assert_eq!(e.errno(), libc::EDESTADDRREQ);
    assert_eq!(io::Error::from(e).raw_os_error(), Some(libc::EDESTADDRREQ));
}

/// Outside a Tokio runtime, registering a socket is an error, not a panic.
#[test]
fn outside_a_runtime_is_an_error_not_a_panic() {
    let sock = hostsock::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let err = sock.listen(8).unwrap_err();
    assert!(err.to_string().contains("Tokio runtime"), "{err}");
    let std_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(hostsock::UdpSocket::from_std(std_udp).is_err());
}
