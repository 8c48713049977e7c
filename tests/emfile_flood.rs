//! A listener flooded while the process is out of file descriptors.
//!
//! The test runs a child process (this binary again, in a role) under
//! `prlimit --nofile=N:N` (a lowered RLIMIT_NOFILE without any `unsafe`)
//! and `strace` (which counts its accept syscalls, with timestamps). The
//! child fills every free fd slot with `/dev/null`, then:
//!
//! 1. the raw layer: `RawSocket::accept` (blocking mode) and `accept4`
//!    (non-blocking) on a listener with a queued connection return `EMFILE`
//!    at once, one syscall per call (no retry inside); so do the typed
//!    `TcpListener::accept` and `try_accept`;
//! 2. the flood: the parent connects to the child's `TcpListener` for 2 s
//!    while the child drives `incoming()`. Figures: the child's CPU time
//!    over the window (from `/proc/self/stat`, bound 5% of one core), accept
//!    syscalls per second (from strace, bound 100/s), what `incoming()`
//!    yielded (only `EMFILE` errors);
//! 3. the fillers are closed: every queued connection must come out of
//!    `incoming()` within 600 ms, and the listener then serves a new one.
//!
//! Needs `prlimit` (util-linux), skipped with a printed reason otherwise;
//! without `strace` it runs and counts the `EMFILE` items `incoming()`
//! yielded instead of the syscalls.

#[path = "faults/netns.rs"]
mod netns;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hostsock::raw::{Errno, RawSocket, encode_sockaddr};
use hostsock::{Policy, TcpListener, TcpStream};
use netns::{ROLE_VAR, figure, spawn_role};

const CHILD: &str = "emfile_child";
/// The child's fd limit (soft and hard).
const LIMIT: u32 = 256;
/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(2);
/// At most this many connections (well under the listen backlog of 1024,
/// so that every one of them is really queued).
const MAX_CONNECTIONS: usize = 600;

fn tool(program: &str, arg: &str) -> bool {
    std::process::Command::new(program)
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn incoming_under_an_emfile_flood_backs_off_and_recovers() {
    if !tool("prlimit", "--version") {
        println!("SKIPPED: `prlimit` is not installed (apt-get install -y util-linux)");
        return;
    }
    // strace counts the syscalls; without it the test still runs and
    // counts what incoming() yielded instead (one accept per item).
    let traced = tool("strace", "-V");
    if !traced {
        println!(
            "NOTE: `strace` is not installed: accept syscalls are not counted, only incoming() items"
        );
    }
    let trace = netns::TempPath::new("emfile", "strace");
    let trace_s = trace.as_str();
    let nofile = format!("--nofile={LIMIT}:{LIMIT}");
    let mut wrapper = vec!["prlimit", nofile.as_str()];
    if traced {
        wrapper.extend([
            "strace",
            "-f",
            "-qq",
            "-ttt",
            "-s",
            "64",
            "-o",
            trace_s.as_str(),
            "-e",
            "trace=accept,accept4,write",
        ]);
    }
    let mut child = spawn_role(None, CHILD, "flood", &[], &wrapper);
    let port: u16 = child
        .wait_line("READY port=", Duration::from_secs(20))
        .parse()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // The flood: as many connections as fit in 2 s (paced, bounded).
    let started = Instant::now();
    let mut clients = Vec::new();
    let mut failed = 0;
    while started.elapsed() < FLOOD {
        if clients.len() < MAX_CONNECTIONS {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => clients.push(s),
                Err(_) => failed += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    println!(
        "flood: {} connections queued in {:?} ({failed} failed)",
        clients.len(),
        started.elapsed()
    );
    child.send_line(&format!("FLOODED {}", clients.len()));
    let out = child.finish(Duration::from_secs(30));
    drop(clients);

    // The accept syscalls, from the trace.
    if !traced {
        let items = figure(&out, "flood_incoming_items");
        let emfile: f64 = items
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("EMFILE count");
        let window: f64 = figure(&out, "flood_window_s").parse().unwrap();
        let rate = emfile / window;
        println!(
            "FIGURE flood_accept_attempts {emfile} EMFILE items in {window:.2} s = {rate:.1}/s (bound 100/s; no strace)"
        );
        assert!(rate <= 100.0, "{rate:.1} accept attempts per second");
        return;
    }
    let text = std::fs::read_to_string(&trace.0).expect("strace output");
    let section = |from: &str, to: &str| -> Vec<String> {
        let start = text
            .find(from)
            .unwrap_or_else(|| panic!("no {from} in the trace"));
        let end = text[start..]
            .find(to)
            .map(|e| start + e)
            .unwrap_or_else(|| panic!("no {to} in the trace"));
        text[start..end]
            .lines()
            .filter(|l| l.contains("accept4(") || l.contains("accept("))
            .map(str::to_string)
            .collect()
    };
    let raw_calls: usize = figure(&out, "raw_calls").parse().unwrap();
    let raw_accepts = section("PHASE raw-start", "PHASE raw-end");
    let flood_accepts = section("PHASE flood-start", "PHASE flood-end");
    let window: f64 = figure(&out, "flood_window_s").parse().unwrap();
    let not_emfile = flood_accepts
        .iter()
        .chain(&raw_accepts)
        .filter(|l| !l.contains("EMFILE"))
        .count();
    let rate = flood_accepts.len() as f64 / window;
    println!(
        "FIGURE raw_accept_syscalls {} accept syscalls for {raw_calls} accept calls under EMFILE (10 raw accept, 10 raw accept4, 5 typed accept, 5 typed try_accept)",
        raw_accepts.len()
    );
    println!(
        "FIGURE flood_accept_syscalls {} in {window:.2} s = {rate:.1}/s (bound 100/s), {not_emfile} not EMFILE",
        flood_accepts.len()
    );
    assert_eq!(
        raw_accepts.len(),
        raw_calls,
        "the raw layer retried accept inside:\n{raw_accepts:#?}"
    );
    assert_eq!(
        not_emfile, 0,
        "an accept under the limit did not fail with EMFILE"
    );
    assert!(rate <= 100.0, "{rate:.1} accept syscalls per second");
    assert!(
        !flood_accepts.is_empty(),
        "no accept was tried during the flood: nothing was measured"
    );
}

// ===========================================================================
// The child
// ===========================================================================

#[test]
fn emfile_child() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        println!("helper for the child process of this file: nothing to do here");
        return;
    };
    assert_eq!(role, "flood");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(role_flood());
    println!("ROLE-DONE {role}");
}

/// User + system CPU time of this process, from `/proc/self/stat` (opened
/// before the fds run out, and read again from its start each time).
fn cpu_time(stat_file: &mut std::fs::File, tick: f64) -> Duration {
    use std::io::{Read, Seek};
    let mut stat = String::new();
    stat_file.rewind().expect("rewind /proc/self/stat");
    stat_file
        .read_to_string(&mut stat)
        .expect("read /proc/self/stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / tick)
}

fn clock_tick() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok());
    out.unwrap_or(100.0)
}

async fn role_flood() {
    let tick = clock_tick();
    let mut stat = std::fs::File::open("/proc/self/stat").expect("/proc/self/stat");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let raw = RawSocket::new(
        Policy::shared_default(),
        libc::AF_INET,
        libc::SOCK_STREAM,
        0,
    )
    .unwrap();
    raw.bind(encode_sockaddr("127.0.0.1:0".parse().unwrap()).as_bytes())
        .unwrap();
    raw.listen(16).unwrap();
    let raw_addr = raw.getsockname().unwrap().to_socket_addr().unwrap();
    let _queued = std::net::TcpStream::connect(raw_addr).unwrap();
    // A typed listener with a queued connection too.
    let typed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _queued_typed = std::net::TcpStream::connect(typed.local_addr().unwrap()).unwrap();
    // The stdin reader exists before the limit bites.
    let (line_tx, line_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = line_tx.send(line);
    });

    // Every free fd slot taken.
    let mut fillers = Vec::new();
    for _ in 0..100_000 {
        match std::fs::File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("filling fds: {e}"),
        }
    }
    println!("{} fillers: no fd left", fillers.len());

    // 1. The raw layer: EMFILE at once, one syscall per call.
    println!("PHASE raw-start");
    let mut slowest = Duration::ZERO;
    let mut calls = 0;
    for _ in 0..10 {
        let t = Instant::now();
        let r = raw.accept(false).await;
        slowest = slowest.max(t.elapsed());
        calls += 1;
        assert_eq!(
            r.map(|_| ()).unwrap_err(),
            Errno::EMFILE,
            "blocking raw accept"
        );
    }
    for _ in 0..10 {
        let t = Instant::now();
        let r = raw.accept4(true, libc::SOCK_CLOEXEC).await;
        slowest = slowest.max(t.elapsed());
        calls += 1;
        assert_eq!(
            r.map(|_| ()).unwrap_err(),
            Errno::EMFILE,
            "non-blocking raw accept4"
        );
    }
    // The typed layer likewise: accept and try_accept hand EMFILE back
    // (incoming() is where the backing off lives).
    for _ in 0..5 {
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(2), typed.accept())
            .await
            .expect("typed accept under EMFILE hung");
        slowest = slowest.max(t.elapsed());
        calls += 1;
        assert_eq!(
            r.map(|_| ()).unwrap_err().errno(),
            libc::EMFILE,
            "typed accept"
        );
        let r = typed.try_accept();
        calls += 1;
        assert_eq!(
            r.map(|_| ()).unwrap_err().errno(),
            libc::EMFILE,
            "typed try_accept"
        );
    }
    println!("PHASE raw-end");
    println!("FIGURE raw_calls {calls}");
    println!("FIGURE raw_slowest_call {slowest:?}");
    assert!(
        slowest < Duration::from_millis(20),
        "a raw accept under EMFILE took {slowest:?}"
    );

    // 2. The flood, while no fd is free.
    println!("READY port={}", addr.port());
    println!("PHASE flood-start");
    let t0 = Instant::now();
    let cpu0 = cpu_time(&mut stat, tick);
    let mut incoming = listener.incoming();
    let (mut emfile, mut other) = (0usize, 0usize);
    let mut line_rx = line_rx;
    let line = loop {
        tokio::select! {
            item = incoming.next() => match item {
                Some(Err(e)) if e.errno() == libc::EMFILE => emfile += 1,
                other_item => {
                    other += 1;
                    println!("unexpected item under EMFILE: {other_item:?}");
                }
            },
            line = &mut line_rx => break line.expect("the parent's line"),
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the parent never said the flood ended"
        );
    };
    let window = t0.elapsed();
    let cpu = cpu_time(&mut stat, tick) - cpu0;
    println!("PHASE flood-end");
    let expected: usize = line
        .trim()
        .strip_prefix("FLOODED ")
        .and_then(|n| n.parse().ok())
        .expect("FLOODED n");
    let share = cpu.as_secs_f64() / window.as_secs_f64() * 100.0;
    println!("FIGURE flood_window_s {:.3}", window.as_secs_f64());
    println!(
        "FIGURE flood_cpu {cpu:?} over {window:?} = {share:.2}% of a core (bound 5%; tick {tick} Hz)"
    );
    println!(
        "FIGURE flood_incoming_items {emfile} EMFILE errors, {other} other items; backoff at the end {:?}",
        incoming.current_backoff()
    );
    assert_eq!(other, 0, "incoming() yielded something other than EMFILE");
    assert!(share <= 5.0, "{share:.2}% of a core while out of fds");

    // 3. Fds free again: every queued connection comes out.
    drop(fillers);
    let freed = Instant::now();
    let mut accepted = 0;
    while accepted < expected {
        match tokio::time::timeout(Duration::from_secs(2), incoming.next()).await {
            Ok(Some(Ok(stream))) => {
                accepted += 1;
                drop(stream);
            }
            other => panic!("after freeing fds, {accepted} of {expected} accepted: {other:?}"),
        }
    }
    let took = freed.elapsed();
    println!(
        "FIGURE recovery all {expected} queued connections accepted {took:?} after the fds were freed (bound 600 ms)"
    );
    assert!(took <= Duration::from_millis(600), "recovery took {took:?}");
    // Nothing else was queued, and the listener still serves.
    let extra = listener.try_accept();
    assert!(
        matches!(extra, Err(ref e) if e.errno() == libc::EAGAIN),
        "more connections than the parent made: {extra:?}"
    );
    let client = TcpStream::connect(addr).await.unwrap();
    let (_s, peer) = tokio::time::timeout(Duration::from_secs(2), incoming.next())
        .await
        .expect("the listener after recovery")
        .expect("a connection")
        .map(|s| {
            let p = s.peer_addr().unwrap();
            (s, p)
        })
        .expect("accept after recovery");
    assert_eq!(peer, client.local_addr().unwrap());
    println!("FIGURE listener_after_recovery serves a new connection");
}
