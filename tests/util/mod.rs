//! Helpers shared by the integration tests. Each test file includes this
//! with `mod util;`; not every file uses every helper.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// The `flags:` field of `/proc/self/fdinfo/FD` (octal open flags).
pub fn fd_flags(fd: RawFd) -> u32 {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .unwrap_or_else(|e| panic!("fdinfo for fd {fd}: {e}"));
    let line = text
        .lines()
        .find(|l| l.starts_with("flags:"))
        .unwrap_or_else(|| panic!("no flags line in fdinfo of fd {fd}"));
    u32::from_str_radix(line["flags:".len()..].trim(), 8).expect("octal flags")
}

/// Asserts the fd is in non-blocking mode.
pub fn assert_nonblocking(fd: &impl AsRawFd) {
    let flags = fd_flags(fd.as_raw_fd());
    assert_ne!(
        flags & libc::O_NONBLOCK as u32,
        0,
        "fd {} is blocking (flags {flags:o})",
        fd.as_raw_fd()
    );
}

/// Asserts the fd is close-on-exec.
pub fn assert_cloexec(fd: &impl AsRawFd) {
    let flags = fd_flags(fd.as_raw_fd());
    assert_ne!(
        flags & libc::O_CLOEXEC as u32,
        0,
        "fd {} is not close-on-exec (flags {flags:o})",
        fd.as_raw_fd()
    );
}

/// Both of the above.
pub fn assert_nonblocking_cloexec(fd: &impl AsRawFd) {
    assert_nonblocking(fd);
    assert_cloexec(fd);
}

/// How many fds this process has open now.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// A loopback address on which nothing listens (connects are refused at
/// once): a port that was just bound and released.
pub fn refused_addr() -> SocketAddr {
    let l = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("local_addr");
    drop(l);
    addr
}

/// A listener whose accept queue is full, so that further connects hang in
/// SYN-SENT (Linux drops the SYNs) until a deadline ends them. Returns the
/// listener, its address, and the connections that fill its queue (keep
/// them alive). Loopback only.
pub fn full_backlog_listener() -> (socket2::Socket, SocketAddr, Vec<StdStream>) {
    use socket2::{Domain, Socket, Type};
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    l.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into())
        .expect("bind");
    l.listen(0).expect("listen");
    let addr = l.local_addr().expect("local").as_socket().expect("inet");
    let mut fill = Vec::new();
    // With a backlog of 0 Linux queues one connection; a few more make sure
    // the queue is full whatever the kernel's exact rule. Each try is
    // bounded by a short timeout.
    for _ in 0..8 {
        match StdStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(s) => fill.push(s),
            Err(_) => break,
        }
    }
    (l, addr, fill)
}

/// Runs `f` with a bound in time: panics if it takes longer than `secs`.
pub async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test step took longer than {secs} s"))
}
