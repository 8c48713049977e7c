//! hyper 1.x over hostsock: an HTTP/1.1 server on `hostsock::TcpListener`
//! (through hyper-util's `TokioIo`) answering curl (keep-alive, a POST, 100
//! transfers in parallel), hyper's own client over hostsock streams with 100
//! concurrent connections and several requests on each, and a server-side
//! read timeout on accepted streams closing idle keep-alive and stalled
//! connections; and the same over IPv6 loopback.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hostsock::{TcpListener, TcpStream};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Bounds a test step in time.
async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test step took longer than {secs} s"))
}

/// A directory under the system temp dir, removed when dropped (also when
/// a test fails).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("hostsock-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How one served connection ended.
#[derive(Debug)]
struct ConnEnd {
    id: usize,
    /// `None` if hyper ended the connection cleanly, otherwise the kind of
    /// the first `io::Error` in the error's source chain (or `Other`).
    error: Option<io::ErrorKind>,
    at: Instant,
}

/// A hyper server running on a hostsock listener.
struct Server {
    addr: SocketAddr,
    /// Connections accepted so far (also the next connection id).
    accepted: watch::Receiver<usize>,
    /// The most connections open at one time.
    max_open: Arc<AtomicUsize>,
    ends: mpsc::UnboundedReceiver<ConnEnd>,
}

/// Answers `GET /hello/NAME` with `hello NAME from connection ID` and
/// `POST /echo` with the request body; every response has `x-conn: ID`.
async fn handle(id: usize, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let (status, body) = match (req.method().clone(), path.as_str()) {
        (Method::GET, p) if p.starts_with("/hello/") => (
            StatusCode::OK,
            Bytes::from(format!("hello {} from connection {id}\n", &p[7..])),
        ),
        (Method::POST, "/echo") => match req.into_body().collect().await {
            Ok(b) => (StatusCode::OK, b.to_bytes()),
            Err(e) => (StatusCode::BAD_REQUEST, Bytes::from(e.to_string())),
        },
        _ => (StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")),
    };
    let res = Response::builder()
        .status(status)
        .header("x-conn", id.to_string())
        .body(Full::new(body))
        .expect("response");
    Ok(res)
}

fn io_kind(e: &hyper::Error) -> io::ErrorKind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return io.kind();
        }
        source = s.source();
    }
    io::ErrorKind::Other
}

/// Starts a server on 127.0.0.1:0; each accepted stream gets `read_timeout`.
async fn start_server(read_timeout: Option<Duration>) -> Server {
    start_server_on("127.0.0.1:0", read_timeout).await
}

/// Starts a server on `bind`; each accepted stream gets `read_timeout`.
async fn start_server_on(bind: &str, read_timeout: Option<Duration>) -> Server {
    let listener = TcpListener::bind(bind).await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let (accepted_tx, accepted) = watch::channel(0usize);
    let (ends_tx, ends) = mpsc::unbounded_channel();
    let max_open = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let max = max_open.clone();
    tokio::spawn(async move {
        let mut id = 0;
        loop {
            let Ok((stream, _peer)) = listener.accept().await else {
                return;
            };
            stream
                .set_read_timeout(read_timeout)
                .expect("set_read_timeout");
            let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(now_open, Ordering::SeqCst);
            let this = id;
            id += 1;
            accepted_tx.send_replace(id);
            let ends_tx = ends_tx.clone();
            let open = open.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(this, req));
                let r = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                open.fetch_sub(1, Ordering::SeqCst);
                let _ = ends_tx.send(ConnEnd {
                    id: this,
                    error: r.as_ref().err().map(io_kind),
                    at: Instant::now(),
                });
            });
        }
    });
    Server {
        addr,
        accepted,
        max_open,
        ends,
    }
}

/// A hyper client connection over a hostsock stream; the connection task's
/// end time is sent on the returned channel.
async fn client(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    tokio::sync::oneshot::Receiver<(hyper::Result<()>, Instant)>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let (done_tx, done) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let r = conn.await;
        let _ = done_tx.send((r, Instant::now()));
    });
    (sender, done)
}

/// Sends one request and returns (status, x-conn, body).
async fn request(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    method: Method,
    path: &str,
    body: Bytes,
) -> (StatusCode, usize, Bytes) {
    sender.ready().await.expect("connection ready");
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "127.0.0.1")
        .body(Full::new(body))
        .expect("request");
    let res = sender.send_request(req).await.expect("send_request");
    let status = res.status();
    let conn: usize = res
        .headers()
        .get("x-conn")
        .expect("x-conn header")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    let body = res.into_body().collect().await.expect("body").to_bytes();
    (status, conn, body)
}

/// A deterministic body of `len` bytes for request `seed`.
fn body_for(seed: usize, len: usize) -> Bytes {
    let mut x = seed as u32 ^ 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_keep_alive_reuses_one_connection() {
    let curl = tokio::process::Command::new("curl")
        .arg("--version")
        .output()
        .await;
    if curl.is_err() {
        println!("skipping: curl is not installed (CI installs it)");
        return;
    }
    let mut server = start_server(Some(Duration::from_secs(30))).await;
    let base = format!("http://{}", server.addr);
    // Two URLs in one invocation: curl keeps the connection open and sends
    // the second request on it. `num_connects` is the number of new
    // connections each transfer made.
    let out = within(
        30,
        tokio::process::Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--max-time",
                "20",
                "--write-out",
                "[connects=%{num_connects} code=%{http_code}]\n",
            ])
            .arg(format!("{base}/hello/first"))
            .arg(format!("{base}/hello/second"))
            .output(),
    )
    .await
    .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "hello first from connection 0",
            "[connects=1 code=200]",
            "hello second from connection 0",
            "[connects=0 code=200]",
        ],
        "curl output"
    );
    assert_eq!(
        *server.accepted.borrow(),
        1,
        "server accepted one connection"
    );
    // curl closed its connection on exit; hyper ends the connection cleanly.
    let end = within(10, server.ends.recv())
        .await
        .expect("connection end");
    assert_eq!((end.id, end.error), (0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_posts_a_body_and_gets_it_back() {
    if tokio::process::Command::new("curl")
        .arg("--version")
        .output()
        .await
        .is_err()
    {
        println!("skipping: curl is not installed (CI installs it)");
        return;
    }
    let server = start_server(None).await;
    let tmp = TempDir::new("interop-post");
    let dir = &tmp.0;
    let file = dir.join("body.bin");
    let body = body_for(7, 300_000);
    std::fs::write(&file, &body).unwrap();
    let out = within(
        30,
        tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20"])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg(format!("http://{}/echo", server.addr))
            .output(),
    )
    .await
    .expect("run curl");
    assert!(out.status.success(), "curl failed: {}", out.status);
    assert_eq!(out.stdout.len(), body.len());
    assert!(out.stdout == body, "echoed body differs");
}

/// curl runs 100 transfers in parallel (`--parallel`, up to 100 at once);
/// each body names its request, and curl's count of new connections
/// matches the server's count of accepted ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_100_parallel_requests() {
    if tokio::process::Command::new("curl")
        .arg("--version")
        .output()
        .await
        .is_err()
    {
        println!("skipping: curl is not installed (CI installs it)");
        return;
    }
    let server = start_server(Some(Duration::from_secs(30))).await;
    let tmp = TempDir::new("interop-par");
    let dir = &tmp.0;
    let out = within(
        60,
        tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--no-progress-meter"])
            .args(["--max-time", "30"])
            .args([
                "--parallel",
                "--parallel-immediate",
                "--parallel-max",
                "100",
            ])
            .args(["--write-out", "%{http_code} %{num_connects}\\n"])
            .arg("--output")
            .arg(dir.join("#1.txt"))
            .arg(format!("http://{}/hello/[1-100]", server.addr))
            .output(),
    )
    .await
    .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut new_connections = 0;
    let mut transfers = 0;
    for l in stdout.lines() {
        let (code, connects) = l.split_once(' ').expect("code and connects");
        assert_eq!(code, "200", "{l}");
        new_connections += connects.parse::<usize>().expect("num_connects");
        transfers += 1;
    }
    assert_eq!(transfers, 100);
    let accepted = *server.accepted.borrow();
    let mut bodies_ok = 0;
    for n in 1..=100 {
        let body = std::fs::read_to_string(dir.join(format!("{n}.txt"))).expect("body file");
        let rest = body
            .strip_prefix(&format!("hello {n} from connection "))
            .unwrap_or_else(|| panic!("body {n}: {body:?}"));
        let conn: usize = rest.trim_end().parse().expect("connection id");
        assert!(conn < accepted, "body {n} names connection {conn}");
        bodies_ok += 1;
    }
    let max_open = server.max_open.load(Ordering::SeqCst);
    println!(
        "curl --parallel: {transfers} transfers, {new_connections} new connections \
         (server accepted {accepted}, at most {max_open} open at once)"
    );
    assert_eq!(bodies_ok, 100);
    assert_eq!(new_connections, accepted, "curl's and the server's counts");
    assert!(
        max_open >= 2,
        "transfers ran in parallel ({max_open} open at once)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_client_100_concurrent_connections_with_keep_alive() {
    const CONNS: usize = 100;
    const PER_CONN: usize = 3;
    let mut server = start_server(Some(Duration::from_secs(30))).await;
    let addr = server.addr;
    let mut tasks = Vec::new();
    for t in 0..CONNS {
        let mut accepted = server.accepted.clone();
        tasks.push(tokio::spawn(async move {
            let (mut sender, done) = client(addr).await;
            // Every connection is open and accepted before any request.
            accepted
                .wait_for(|n| *n >= CONNS)
                .await
                .expect("server alive");
            let mut conn_ids = Vec::new();
            for k in 0..PER_CONN {
                let name = format!("{t}-{k}");
                let (status, conn, body) = request(
                    &mut sender,
                    Method::GET,
                    &format!("/hello/{name}"),
                    Bytes::new(),
                )
                .await;
                assert_eq!(status, StatusCode::OK);
                assert_eq!(body, format!("hello {name} from connection {conn}\n"));
                conn_ids.push(conn);

                let sent = body_for(t * PER_CONN + k, (t * 1031 + k * 4099) % 70_000);
                let (status, conn, body) =
                    request(&mut sender, Method::POST, "/echo", sent.clone()).await;
                assert_eq!(status, StatusCode::OK);
                assert!(body == sent, "echo {t}/{k}: {} bytes back", body.len());
                conn_ids.push(conn);
            }
            // Keep-alive: every request went over one connection.
            assert!(
                conn_ids.iter().all(|&c| c == conn_ids[0]),
                "requests of client {t} used connections {conn_ids:?}"
            );
            drop(sender);
            let (r, _) = done.await.expect("connection task");
            r.expect("client connection ended cleanly");
            conn_ids[0]
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(within(120, t).await.expect("client task"));
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        CONNS,
        "each client had its own server connection"
    );
    assert_eq!(*server.accepted.borrow(), CONNS);
    assert_eq!(server.max_open.load(Ordering::SeqCst), CONNS);
    for _ in 0..CONNS {
        let end = within(30, server.ends.recv()).await.expect("end");
        assert_eq!(end.error, None, "connection {} ended with an error", end.id);
    }
}

/// A read timeout on accepted streams: a keep-alive connection that keeps
/// sending requests (gaps well under the timeout) stays open; once it goes
/// idle, the server's read times out and the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeout_closes_idle_keep_alive_connection() {
    let timeout = Duration::from_millis(500);
    let mut server = start_server(Some(timeout)).await;
    let (mut sender, done) = client(server.addr).await;
    let mut last = Instant::now();
    for k in 0..5 {
        if k > 0 {
            // Pacing, not synchronisation: each gap is a fifth of the timeout.
            tokio::time::sleep(timeout / 5).await;
        }
        let (status, conn, _) = within(
            10,
            request(&mut sender, Method::GET, "/hello/x", Bytes::new()),
        )
        .await;
        assert_eq!((status, conn), (StatusCode::OK, 0), "request {k}");
        last = Instant::now();
    }
    let (r, closed_at) = within(10, done).await.expect("connection task");
    r.expect("client sees a clean close");
    let idle = closed_at - last;
    assert!(sender.is_closed(), "the client's sender knows it is closed");
    let end = within(10, server.ends.recv()).await.expect("end");
    println!(
        "idle connection closed after {} ms (timeout {} ms); server end: {:?}",
        idle.as_millis(),
        timeout.as_millis(),
        end.error
    );
    assert_eq!(end.id, 0);
    // hyper treats a read error between requests as the end of the
    // connection (no error); a timed-out error is the only other answer.
    assert!(
        matches!(end.error, None | Some(io::ErrorKind::TimedOut)),
        "server connection ended with {:?}",
        end.error
    );
    // The server's read was armed when it finished the last response, a
    // moment before the client had the body: allow a little under.
    assert!(
        idle >= timeout - Duration::from_millis(100),
        "closed after {idle:?}, before the {timeout:?} timeout"
    );
    assert!(
        idle < timeout + Duration::from_secs(3),
        "closed late: {idle:?}"
    );
    assert_eq!(*server.accepted.borrow(), 1);

    // Without a read timeout the same idle connection stays open.
    let open_server = start_server(None).await;
    let (mut sender, done) = client(open_server.addr).await;
    let (status, _, _) = within(
        10,
        request(&mut sender, Method::GET, "/hello/y", Bytes::new()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        tokio::time::timeout(timeout * 2, done).await.is_err(),
        "without a read timeout the idle connection was closed"
    );
    assert!(!sender.is_closed());
}

/// A client that sends half a request head and stalls is cut off by the
/// server's read timeout (the slowloris defence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeout_cuts_off_a_stalled_request() {
    let timeout = Duration::from_millis(300);
    let mut server = start_server(Some(timeout)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /hello/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // The server closes without an answer, or with an error status; either
    // way the stream ends.
    let r = within(10, stream.read_to_end(&mut buf)).await;
    let waited = started.elapsed();
    match r {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(
        !String::from_utf8_lossy(&buf).contains("hello slow"),
        "the stalled request was not answered"
    );
    let end = within(10, server.ends.recv()).await.expect("end");
    assert_eq!(end.error, Some(io::ErrorKind::TimedOut));
    assert!(
        waited >= timeout - Duration::from_millis(50),
        "closed after {waited:?}"
    );
    assert!(waited < timeout + Duration::from_secs(3), "{waited:?}");
    let server_waited = end.at - started;
    println!(
        "stalled request cut off after {} ms by the server (client saw the end after {} ms; timeout {} ms)",
        server_waited.as_millis(),
        waited.as_millis(),
        timeout.as_millis()
    );
    assert!(server_waited >= timeout - Duration::from_millis(50));
}

/// The same server on IPv6 loopback, asked by hyper's client and by curl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_loopback_hyper_client_and_curl() {
    let server = start_server_on("[::1]:0", Some(Duration::from_secs(30))).await;
    assert!(server.addr.is_ipv6());
    let (mut sender, _done) = client(server.addr).await;
    let (status, conn, body) = within(
        10,
        request(&mut sender, Method::GET, "/hello/six", Bytes::new()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, format!("hello six from connection {conn}\n"));
    let sent = body_for(6, 100_000);
    let (_, again, body) = within(
        10,
        request(&mut sender, Method::POST, "/echo", sent.clone()),
    )
    .await;
    assert_eq!(again, conn);
    assert!(body == sent);

    if tokio::process::Command::new("curl")
        .arg("--version")
        .output()
        .await
        .is_err()
    {
        println!("skipping the curl half: curl is not installed (CI installs it)");
        return;
    }
    let out = within(
        30,
        tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20", "--globoff"])
            .arg(format!("http://{}/hello/curl6", server.addr))
            .output(),
    )
    .await
    .expect("run curl");
    assert!(out.status.success(), "curl failed: {}", out.status);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello curl6 from connection 1\n"
    );
}
