//! A TCP socket that is not connected reports `EPOLLHUP`, which tokio keeps
//! as "closed" readiness for good. A registration made while the socket was
//! fresh must not make later waits return at once (a busy loop): the raw
//! layer renews it after `listen` and `connect`, and the typed layer
//! connects before it registers. These tests measure the CPU time a
//! blocked wait burns.

mod util;

use std::time::Duration;

use hostsock::Policy;
use hostsock::raw::{Errno, RawSocket, encode_sockaddr};

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes one `rusage` into the pointer it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: getrusage succeeded, so it filled the struct.
    let u = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn tv(sec: i64, usec: i64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&sec.to_ne_bytes());
    b[8..].copy_from_slice(&usec.to_ne_bytes());
    b
}

/// Runs `body` on a current-thread runtime in its own thread and fails if
/// it has not finished in 10 s: a busy loop inside one poll never yields,
/// so a timeout inside the same runtime could not end it.
fn on_own_thread<F>(name: &'static str, body: fn() -> F)
where
    F: std::future::Future<Output = ()> + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(body());
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: still busy after 10 s (a wait spins)")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{name}: the body panicked"),
    }
}

/// Lets the reactor see the fresh socket's `EPOLLOUT | EPOLLHUP`.
async fn let_reactor_turn() {
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn blocked_raw_accept_after_a_fresh_registration_does_not_spin() {
    on_own_thread("accept", accept_body);
}

async fn accept_body() {
    let sock = RawSocket::new(
        Policy::shared_default(),
        libc::AF_INET,
        libc::SOCK_STREAM,
        0,
    )
    .unwrap();
    let_reactor_turn().await;
    sock.bind(encode_sockaddr("127.0.0.1:0".parse().unwrap()).as_bytes())
        .unwrap();
    sock.listen(16).unwrap();
    sock.setsockopt(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv(0, 300_000))
        .unwrap();
    let before = cpu_time();
    let r = util::within(5, sock.accept(false)).await;
    let burned = cpu_time() - before;
    assert_eq!(r.map(|_| ()), Err(Errno::EAGAIN));
    assert!(
        burned < Duration::from_millis(150),
        "a 300 ms blocked accept burned {burned:?} of CPU"
    );
}

#[test]
fn blocked_raw_connect_after_a_failed_one_does_not_spin() {
    on_own_thread("connect", connect_body);
}

async fn connect_body() {
    // First attempt refused (the socket goes back to CLOSE, HUP seen), then a
    // blocking connect to a full-backlog listener on the same socket.
    let sock = RawSocket::new(
        Policy::shared_default(),
        libc::AF_INET,
        libc::SOCK_STREAM,
        0,
    )
    .unwrap();
    let refused = encode_sockaddr(util::refused_addr());
    assert_eq!(
        sock.connect(refused.as_bytes(), false).await,
        Err(Errno::ECONNREFUSED)
    );
    let_reactor_turn().await;
    let (_listener, addr, _fill) = util::full_backlog_listener();
    sock.setsockopt(libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv(0, 300_000))
        .unwrap();
    let before = cpu_time();
    let r = util::within(5, sock.connect(encode_sockaddr(addr).as_bytes(), false)).await;
    let burned = cpu_time() - before;
    assert_eq!(r, Err(Errno::EINPROGRESS));
    assert!(
        burned < Duration::from_millis(150),
        "a 300 ms blocked connect burned {burned:?} of CPU"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_typed_client_streams_are_not_readable() {
    let listener = hostsock::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut spurious = 0;
    for _ in 0..100 {
        let client = hostsock::TcpStream::connect(addr).await.unwrap();
        let (_server, _) = listener.accept().await.unwrap();
        let soon = tokio::time::Instant::now() + Duration::from_millis(2);
        if client
            .ready_deadline(hostsock::Interest::READABLE, soon)
            .await
            .is_ok()
        {
            spurious += 1;
        }
    }
    assert_eq!(spurious, 0, "idle fresh streams reported readable");
}

/// Found by the opseq fuzz target: `wait(POLLPRI)` on a socket whose
/// reactor readiness is "read closed" (which is never cleared) but where
/// nothing of the mask holds spun at 100% CPU and its deadline never fired.
#[tokio::test]
async fn wait_for_an_event_that_does_not_come_on_a_read_shut_socket_ends_at_its_deadline() {
    let s = RawSocket::new(
        std::sync::Arc::new(Policy::default()),
        libc::AF_INET,
        libc::SOCK_DGRAM,
        0,
    )
    .unwrap();
    let _ = s.shutdown(libc::SHUT_RD);
    let cpu0 = cpu_time();
    let start = tokio::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        s.wait(libc::POLLPRI, Some(start + Duration::from_millis(200))),
    )
    .await
    .expect("the wait ends by its own deadline");
    let took = start.elapsed();
    let cpu = cpu_time() - cpu0;
    println!("wait(POLLPRI) on a read-shut socket: {r:?} after {took:?}, {cpu:?} CPU");
    assert_eq!(r, Err(Errno::EAGAIN));
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(
        cpu < Duration::from_millis(100),
        "the wait burned {cpu:?} of CPU"
    );
}
