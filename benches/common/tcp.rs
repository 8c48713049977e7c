//! TCP scenarios: bulk throughput, accept+close rate, 64-byte echo.
//!
//! Connections are made with std first (same options for every
//! implementation), then handed over. Bulk runs writer and reader on two
//! threads (a current-thread runtime each, or blocking); accept runs the
//! accepting side on its own thread against a blocking std client thread
//! that stays at most [`AHEAD`] connections ahead; echo runs every client
//! and server task on one current-thread runtime (raw: a blocking thread
//! per connection end).

use std::io::{self, Read, Write};
use std::net::{TcpListener as StdListener, TcpStream as StdStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::sys::thread_cpu_ns;
use super::{GRACE, Imp, Limit, Outcome, Params, allocs, err, join, on_cpu, runtime, settle};

/// Bytes per bulk write.
pub const CHUNK: usize = 64 * 1024;
/// Most bulk writes per run (16 GiB).
const BULK_CAP: u64 = 1 << 18;
/// Most connections accepted per run.
const ACCEPT_CAP: u64 = 4000;
/// How far the accept client may run ahead of the server.
pub const AHEAD: u64 = 128;
/// The echo message size.
pub const ECHO: usize = 64;
/// Most echo transactions per run.
const ECHO_CAP: u64 = 2_000_000;

/// A connected pair made with std: `(client, server)`.
fn std_pair(listener: &StdListener) -> io::Result<(StdStream, StdStream)> {
    let c = StdStream::connect(listener.local_addr()?)?;
    let (s, _) = listener.accept()?;
    Ok((c, s))
}

// ------------------------------------------------------------ bulk

/// Sets the flag when dropped (whichever way the owner ends).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Waits (sleeping, blocking the thread) until `flag` is set or `most` has
/// passed.
fn wait_for(flag: &AtomicBool, most: Duration) {
    let until = Instant::now() + most;
    while !flag.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// One connection, 64 KiB writes one way: `value` is bytes per second
/// received, `value2` the CPU time (writer and reader threads) per 64 KiB
/// write in nanoseconds, `sent`/`received` count 64 KiB writes.
pub fn bulk(imp: Imp, p: &Params) -> io::Result<Outcome> {
    let listener = StdListener::bind("127.0.0.1:0")?;
    let (client, server) = std_pair(&listener)?;
    drop(listener);
    if imp == Imp::Raw {
        server.set_read_timeout(Some(p.time + GRACE))?;
    } else {
        client.set_nonblocking(true)?;
        server.set_nonblocking(true)?;
    }
    let barrier = Arc::new(Barrier::new(2));
    // Set by the reader once it has counted: the writer keeps its runtime
    // (whose teardown allocates) until then.
    let done = Arc::new(AtomicBool::new(false));
    let p = *p;
    let writer = {
        let (barrier, done) = (barrier.clone(), done.clone());
        std::thread::spawn(move || -> io::Result<(u64, Instant, u64, u64)> {
            super::sys::pin_to(0);
            let chunk = vec![0x42u8; CHUNK];
            macro_rules! write_loop {
                ($write:expr) => {{
                    barrier.wait();
                    let (a0, t0, c0) = (allocs(), Instant::now(), thread_cpu_ns());
                    let lim = p.limit(BULK_CAP);
                    let mut n = 0;
                    while lim.go(n, n) {
                        $write;
                        n += 1;
                    }
                    (n, t0, a0, thread_cpu_ns() - c0)
                }};
            }
            match imp {
                Imp::Raw => {
                    let mut c = client;
                    Ok(write_loop!(c.write_all(&chunk)?))
                }
                Imp::Hostsock => runtime()?.block_on(async {
                    let mut c = hostsock::TcpStream::from_std(super::untimed(client)?)?;
                    settle().await;
                    let r = write_loop!(c.write_all(&chunk).await?);
                    c.shutdown().await?;
                    wait_for(&done, p.time + GRACE);
                    Ok::<_, io::Error>(r)
                }),
                Imp::Tokio => runtime()?.block_on(async {
                    let mut c = tokio::net::TcpStream::from_std(client)?;
                    settle().await;
                    let r = write_loop!(c.write_all(&chunk).await?);
                    c.shutdown().await?;
                    wait_for(&done, p.time + GRACE);
                    Ok::<_, io::Error>(r)
                }),
            }
        })
    };
    let reader = std::thread::spawn(move || -> io::Result<(u64, Instant, u64, u64)> {
        super::sys::pin_to(1);
        let mut buf = vec![0u8; CHUNK];
        let _done = SetOnDrop(&done);
        macro_rules! read_loop {
            ($read:expr) => {{
                barrier.wait();
                let c0 = thread_cpu_ns();
                let mut bytes = 0u64;
                let mut last = Instant::now();
                loop {
                    let n = $read;
                    if n == 0 {
                        break;
                    }
                    bytes += n as u64;
                    last = Instant::now();
                }
                (bytes, last, allocs(), thread_cpu_ns() - c0)
            }};
        }
        match imp {
            Imp::Raw => {
                let mut s = server;
                Ok(read_loop!(s.read(&mut buf)?))
            }
            Imp::Hostsock => runtime()?.block_on(async {
                let mut s = hostsock::TcpStream::from_std(super::untimed(server)?)?;
                settle().await;
                let run = async { Ok::<_, io::Error>(read_loop!(s.read(&mut buf).await?)) };
                tokio::time::timeout(p.time + GRACE, run)
                    .await
                    .map_err(|_| err("bulk reader timed out"))?
            }),
            Imp::Tokio => runtime()?.block_on(async {
                let mut s = tokio::net::TcpStream::from_std(server)?;
                settle().await;
                let run = async { Ok::<_, io::Error>(read_loop!(s.read(&mut buf).await?)) };
                tokio::time::timeout(p.time + GRACE, run)
                    .await
                    .map_err(|_| err("bulk reader timed out"))?
            }),
        }
    });
    let w = join(writer);
    let r = join(reader);
    let ((writes, t0, a0, cpu_w), (bytes, last, a1, cpu_r)) = (w?, r?);
    if bytes != writes * CHUNK as u64 {
        return Err(err(format!(
            "bulk: wrote {} bytes, read {bytes}",
            writes * CHUNK as u64
        )));
    }
    let secs = last.saturating_duration_since(t0).as_secs_f64();
    Ok(Outcome {
        value: if secs > 0.0 { bytes as f64 / secs } else { 0.0 },
        value2: (cpu_w + cpu_r) as f64 / writes.max(1) as f64,
        sent: writes,
        received: writes,
        allocs: a1.saturating_sub(a0),
        ..Outcome::default()
    })
}

// ------------------------------------------------------------ accept

/// Accepts connections and closes each at once, against a blocking std
/// client that connects and closes: `value` is connections per second.
/// The accepting side runs on CPU 1, the client on CPU 0.
pub fn accept(imp: Imp, p: &Params) -> io::Result<Outcome> {
    let p = *p;
    on_cpu(1, move || accept_here(imp, &p))
}

fn accept_here(imp: Imp, p: &Params) -> io::Result<Outcome> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    sock.listen(1024)?;
    let listener: StdListener = sock.into();
    let addr = listener.local_addr()?;
    if imp == Imp::Raw {
        super::sys::set_recv_timeout(&listener, p.time + GRACE)?;
    } else {
        listener.set_nonblocking(true)?;
    }
    let accepted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(2));
    let lim_max = p.msgs.min(ACCEPT_CAP);
    let client = {
        let (accepted, stop, barrier) = (accepted.clone(), stop.clone(), barrier.clone());
        std::thread::spawn(move || -> io::Result<()> {
            super::sys::pin_to(0);
            barrier.wait();
            for i in 0..lim_max {
                while i >= accepted.load(Ordering::Acquire) + AHEAD {
                    if stop.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    std::thread::yield_now();
                }
                if stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                match StdStream::connect(addr) {
                    Ok(c) => drop(c),
                    // The server stopped (time limit) and closed the
                    // listener while this connect was on its way.
                    Err(_) if stop.load(Ordering::Acquire) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    };
    let p = *p;
    macro_rules! accept_loop {
        ($accept:expr) => {{
            barrier.wait();
            let (a0, t0) = (allocs(), Instant::now());
            let lim = p.limit(ACCEPT_CAP);
            let mut n = 0;
            while lim.go(n, n) {
                drop($accept);
                n += 1;
                accepted.store(n, Ordering::Release);
            }
            let r = (n, t0.elapsed(), allocs() - a0);
            stop.store(true, Ordering::Release);
            r
        }};
    }
    let r = match imp {
        Imp::Raw => (|| -> io::Result<_> { Ok(accept_loop!(listener.accept()?)) })(),
        Imp::Hostsock => runtime()?.block_on(async {
            let l = hostsock::TcpListener::from_std(listener)?;
            settle().await;
            let run = async { Ok::<_, io::Error>(accept_loop!(l.accept().await?)) };
            tokio::time::timeout(p.time + GRACE, run)
                .await
                .map_err(|_| err("accept timed out"))?
        }),
        Imp::Tokio => runtime()?.block_on(async {
            let l = tokio::net::TcpListener::from_std(listener)?;
            settle().await;
            let run = async { Ok::<_, io::Error>(accept_loop!(l.accept().await?)) };
            tokio::time::timeout(p.time + GRACE, run)
                .await
                .map_err(|_| err("accept timed out"))?
        }),
    };
    stop.store(true, Ordering::Release);
    let c = join(client);
    let (n, took, allocs): (u64, Duration, u64) = r?;
    c?;
    Ok(Outcome {
        value: n as f64 / took.as_secs_f64().max(1e-9),
        sent: n,
        received: n,
        allocs,
        ..Outcome::default()
    })
}

// ------------------------------------------------------------ echo

/// `conns` connections, each a client sending 64 bytes and waiting for
/// them back, over and over: `value` is transactions per second, all
/// connections together.
/// Every thread of it runs on CPU 0 (one core, as the current-thread
/// runtime is).
pub fn echo(imp: Imp, conns: usize, p: &Params) -> io::Result<Outcome> {
    let p = *p;
    on_cpu(0, move || echo_here(imp, conns, &p))
}

fn echo_here(imp: Imp, conns: usize, p: &Params) -> io::Result<Outcome> {
    let listener = StdListener::bind("127.0.0.1:0")?;
    let mut pairs = Vec::new();
    for _ in 0..conns {
        let (c, s) = std_pair(&listener)?;
        c.set_nodelay(true)?;
        s.set_nodelay(true)?;
        if imp == Imp::Raw {
            c.set_read_timeout(Some(p.time + GRACE))?;
            s.set_read_timeout(Some(p.time + GRACE))?;
        } else {
            c.set_nonblocking(true)?;
            s.set_nonblocking(true)?;
        }
        pairs.push((c, s));
    }
    drop(listener);
    let total = p.limit(ECHO_CAP);
    let per_conn = Limit {
        max: total.max.div_ceil(conns as u64),
        until: total.until,
    };
    let (txns, took, allocs) = match imp {
        Imp::Raw => echo_raw(pairs, per_conn)?,
        Imp::Hostsock => runtime()?.block_on(async {
            let mut v = Vec::new();
            for (c, s) in pairs {
                v.push((
                    hostsock::TcpStream::from_std(super::untimed(c)?)?,
                    hostsock::TcpStream::from_std(super::untimed(s)?)?,
                ));
            }
            tokio::time::timeout(p.time + GRACE, echo_async(v, per_conn))
                .await
                .map_err(|_| err("echo timed out"))?
        })?,
        Imp::Tokio => runtime()?.block_on(async {
            let mut v = Vec::new();
            for (c, s) in pairs {
                v.push((
                    tokio::net::TcpStream::from_std(c)?,
                    tokio::net::TcpStream::from_std(s)?,
                ));
            }
            tokio::time::timeout(p.time + GRACE, echo_async(v, per_conn))
                .await
                .map_err(|_| err("echo timed out"))?
        })?,
    };
    Ok(Outcome {
        value: txns as f64 / took.as_secs_f64().max(1e-9),
        sent: txns,
        received: txns,
        allocs,
        ..Outcome::default()
    })
}

/// The async echo: a server task and a client task per connection on the
/// current runtime. Gives `(transactions, time, allocations)`.
async fn echo_async<S>(pairs: Vec<(S, S)>, lim: Limit) -> io::Result<(u64, Duration, u64)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    settle().await;
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for (mut c, mut s) in pairs {
        servers.push(tokio::spawn(async move {
            let mut buf = [0u8; ECHO];
            loop {
                match s.read_exact(&mut buf).await {
                    Ok(_) => s.write_all(&buf).await?,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }));
        clients.push(tokio::spawn(async move {
            let msg = [7u8; ECHO];
            let mut buf = [0u8; ECHO];
            let mut n = 0u64;
            while lim.go(n, n) {
                c.write_all(&msg).await?;
                c.read_exact(&mut buf).await?;
                if buf != msg {
                    return Err(err("echo came back wrong"));
                }
                n += 1;
            }
            // The stream is handed back, not dropped: its close (and the
            // server's end-of-stream error) comes after the measurement.
            Ok::<_, io::Error>((n, c))
        }));
    }
    let mut keep = Vec::with_capacity(clients.len());
    // The tasks first run when this task waits, after these two lines.
    let (a0, t0) = (allocs(), Instant::now());
    let mut txns = 0;
    for c in clients {
        let (n, stream) = c.await.map_err(|_| err("echo client failed"))??;
        txns += n;
        keep.push(stream);
    }
    let (took, a1) = (t0.elapsed(), allocs());
    drop(keep);
    for s in servers {
        s.await.map_err(|_| err("echo server failed"))??;
    }
    Ok((txns, took, a1 - a0))
}

/// The raw echo: a blocking thread per connection end.
fn echo_raw(pairs: Vec<(StdStream, StdStream)>, lim: Limit) -> io::Result<(u64, Duration, u64)> {
    let barrier = Arc::new(Barrier::new(pairs.len() + 1));
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    let spawn = |f: Box<dyn FnOnce() -> io::Result<u64> + Send>| {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                super::sys::pin_to(0);
                f()
            })
    };
    for (mut c, mut s) in pairs {
        servers.push(spawn(Box::new(move || {
            let mut buf = [0u8; ECHO];
            loop {
                match s.read_exact(&mut buf) {
                    Ok(()) => s.write_all(&buf)?,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
            }
        }))?);
        let barrier = barrier.clone();
        clients.push(spawn(Box::new(move || {
            let msg = [7u8; ECHO];
            let mut buf = [0u8; ECHO];
            let mut n = 0u64;
            barrier.wait();
            while lim.go(n, n) {
                c.write_all(&msg)?;
                c.read_exact(&mut buf)?;
                if buf != msg {
                    return Err(err("echo came back wrong"));
                }
                n += 1;
            }
            Ok(n)
        }))?);
    }
    barrier.wait();
    let (a0, t0) = (allocs(), Instant::now());
    let mut txns = 0;
    let mut first_err = None;
    for c in clients {
        match join(c) {
            Ok(n) => txns += n,
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    let (took, a1) = (t0.elapsed(), allocs());
    for s in servers {
        if let Err(e) = join(s) {
            first_err = first_err.or(Some(e));
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok((txns, took, a1 - a0)),
    }
}
