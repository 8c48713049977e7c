//! hyper over hostsock: an HTTP/1.1 server on a `hostsock::TcpListener`
//! (hyper-util's `TokioIo` adapts the streams), where every accepted
//! connection gets a read timeout, so idle keep-alive and stalled clients
//! are let go; and hyper's client over a `hostsock::TcpStream`.
//!
//! Run it with: `cargo run --example http`. It starts the server on
//! 127.0.0.1 (a free port), sends a few requests over one keep-alive
//! connection and ten more from ten connections at once, prints the
//! answers, waits for the server to drop the idle connection, and exits.
//!
//! Or keep it serving: `cargo run --example http -- --serve 127.0.0.1:8080`
//! and ask it with, for example,
//! `curl http://127.0.0.1:8080/hello/you http://127.0.0.1:8080/info`
//! (curl sends both requests on one connection).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use hostsock::{TcpListener, TcpStream};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => demo().await,
        [flag, addr] if flag == "--serve" => {
            let listener = TcpListener::bind(addr.as_str()).await?;
            println!(
                "serving on http://{} (read timeout 30 s per connection; Ctrl-C to stop)",
                listener.local_addr()?
            );
            serve(listener, Duration::from_secs(30), true).await;
            Ok(())
        }
        _ => Err("usage: http [--serve ADDR:PORT]".into()),
    }
}

/// The self-contained demo: server and client in one process.
async fn demo() -> Result<(), BoxError> {
    let read_timeout = Duration::from_millis(800);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!(
        "server on http://{addr}, read timeout {} ms per connection",
        read_timeout.as_millis()
    );
    tokio::spawn(serve(listener, read_timeout, false));

    println!("\n1. three requests over one keep-alive connection");
    let (mut sender, closed) = connect(addr).await?;
    for path in ["/hello/world", "/info", "/missing"] {
        let (status, conn, body) = get(&mut sender, path).await?;
        println!("   GET {path} -> {status} (server connection {conn})");
        for line in body.lines() {
            println!("      {line}");
        }
    }

    println!("\n2. the same connection, left idle");
    let idle_since = Instant::now();
    closed.await?;
    println!(
        "   the server closed it after {} ms idle (its read timed out after {} ms)",
        idle_since.elapsed().as_millis(),
        read_timeout.as_millis()
    );
    if !sender.is_closed() {
        return Err("the client's connection should be closed".into());
    }

    println!("\n3. ten connections at once, two requests each");
    let mut tasks = Vec::new();
    for i in 0..10 {
        tasks.push(tokio::spawn(async move {
            let (mut sender, _closed) = connect(addr).await?;
            let (_, first, a) = get(&mut sender, &format!("/hello/client-{i}")).await?;
            let (_, second, b) = get(&mut sender, &format!("/hello/again-{i}")).await?;
            if first != second {
                return Err::<_, BoxError>("keep-alive should reuse the connection".into());
            }
            Ok((first, a.trim().to_owned(), b.trim().to_owned()))
        }));
    }
    for t in tasks {
        let (conn, a, b) = t.await??;
        println!("   connection {conn}: {a:?}, then {b:?}");
    }
    Ok(())
}

/// Accepts connections until the listener fails; each gets `read_timeout`
/// and is served by hyper in its own task.
///
/// The read timeout counts from the last bytes received. hyper keeps a read
/// pending while a handler runs (to notice a client that goes away), so the
/// timeout must be longer than the slowest handler, or the request is cut
/// off.
async fn serve(listener: TcpListener, read_timeout: Duration, log: bool) {
    let next_id = Arc::new(AtomicUsize::new(0));
    // `incoming()` pauses (10 ms, doubling up to 500 ms) instead of spinning
    // when the process is out of file descriptors.
    let mut incoming = listener.incoming();
    while let Some(accepted) = incoming.next().await {
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                eprintln!("accept: {e} (errno {})", e.errno());
                continue;
            }
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = stream
            .set_read_timeout(Some(read_timeout))
            .and_then(|()| stream.set_nodelay(true))
        {
            eprintln!("connection {id}: {e}");
            continue;
        }
        let peer = stream.peer_addr().ok();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(id, peer, req));
            let result = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if log {
                let peer = peer.map_or_else(|| "?".to_owned(), |p| p.to_string());
                match result {
                    Ok(()) => println!("connection {id} from {peer} closed"),
                    Err(e) => println!("connection {id} from {peer} ended: {e}"),
                }
            }
        });
    }
}

/// `/hello/NAME` greets; `/info` describes the connection; anything else
/// is 404. Every answer carries `x-conn: ID`.
async fn handle(
    id: usize,
    peer: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let (status, body) = match (req.method(), path) {
        (&Method::GET, p) if p.starts_with("/hello/") => (
            StatusCode::OK,
            format!("hello, {}!\n", &p["/hello/".len()..]),
        ),
        (&Method::GET, "/info") => (
            StatusCode::OK,
            format!(
                "connection {id} from {}\nserved by hyper over a hostsock::TcpStream\n",
                peer.map_or_else(|| "?".to_owned(), |p| p.to_string())
            ),
        ),
        _ => (StatusCode::NOT_FOUND, format!("no page at {path}\n")),
    };
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert("x-conn", hyper::header::HeaderValue::from(id));
    Ok(res)
}

/// Opens a hyper client connection over a hostsock stream. The receiver
/// fires when the connection has closed.
async fn connect(
    addr: SocketAddr,
) -> Result<(SendRequest<Full<Bytes>>, tokio::sync::oneshot::Receiver<()>), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let stream = TcpStream::connect_deadline(addr, deadline).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("client connection: {e}");
        }
        let _ = tx.send(());
    });
    Ok((sender, rx))
}

/// One GET: (status, the server's connection id, body).
async fn get(
    sender: &mut SendRequest<Full<Bytes>>,
    path: &str,
) -> Result<(StatusCode, usize, String), BoxError> {
    sender.ready().await?;
    let req = Request::builder()
        .uri(path)
        .header(hyper::header::HOST, "127.0.0.1")
        .body(Full::new(Bytes::new()))?;
    let res = sender.send_request(req).await?;
    let status = res.status();
    let conn = res
        .headers()
        .get("x-conn")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or("no x-conn header")?;
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, conn, String::from_utf8_lossy(&body).into_owned()))
}
