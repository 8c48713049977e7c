//! `incoming()` under `EMFILE`: it yields the error, backs off instead of
//! spinning, keeps the connections queued, and accepts them all once fds
//! are free again. This file holds one test: the fd limit is per process.

use std::time::Duration;

use futures::StreamExt;
use hostsock::TcpListener;
use tokio::time::Instant;

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

fn set_soft_limit(n: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one `rlimit`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let old = lim.rlim_cur;
        lim.rlim_cur = n.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        old
    }
}

#[tokio::test(flavor = "current_thread")]
async fn incoming_backs_off_under_emfile_and_recovers() {
    const CLIENTS: usize = 20;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The clients connect first (their fds exist before the limit drops);
    // the handshakes complete in the kernel and wait in the backlog.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();

    // No fd left: the limit is on fd numbers, so it goes down to the lowest
    // free one, and every accept fails with EMFILE.
    let lowest_free = {
        use std::os::fd::AsRawFd;
        std::fs::File::open("/dev/null").unwrap().as_raw_fd() as u64
    };
    let old = set_soft_limit(lowest_free);
    let mut incoming = listener.incoming();
    let (mut errors, mut other) = (0, 0);
    let window = Duration::from_millis(400);
    let started = Instant::now();
    let cpu_before = cpu_time();
    while started.elapsed() < window {
        match tokio::time::timeout_at(started + window, incoming.next()).await {
            Ok(Some(Err(e))) if e.errno() == libc::EMFILE => errors += 1,
            Ok(Some(_)) => other += 1,
            Ok(None) | Err(_) => break,
        }
    }
    let burned = cpu_time() - cpu_before;
    println!(
        "EMFILE for {window:?}: {errors} errors seen, {other} other items, backoff now {:?}, {burned:?} of CPU",
        incoming.current_backoff()
    );
    assert_eq!(other, 0, "nothing else may come out while no fd is free");
    // 10, 20, 40, 80, 160 ms pauses fit in 400 ms: a handful of tries, not
    // thousands.
    assert!(
        (2..=8).contains(&errors),
        "{errors} EMFILE errors in {window:?}"
    );
    assert!(
        burned < Duration::from_millis(100),
        "backing off burned {burned:?}"
    );

    // Fds free again: every queued connection comes out, within the
    // longest pause plus a margin.
    set_soft_limit(old);
    let freed = Instant::now();
    let mut accepted = 0;
    while accepted < CLIENTS {
        let next = tokio::time::timeout(Duration::from_secs(2), incoming.next()).await;
        match next {
            Ok(Some(Ok(_stream))) => accepted += 1,
            other => panic!("after fds were freed: {other:?}"),
        }
    }
    let took = freed.elapsed();
    println!("all {CLIENTS} queued connections accepted {took:?} after fds were freed");
    assert!(took < Duration::from_millis(600), "recovery took {took:?}");
    drop(clients);
}
