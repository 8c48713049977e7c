//! TLS over hostsock streams with tokio-rustls (ring provider, chosen
//! explicitly): a self-signed certificate made in the test with rcgen, an
//! echo of several messages up to 1 MiB, and a clean `close_notify`
//! shutdown in both directions; over TLS 1.3 and TLS 1.2. Then HTTPS:
//! hyper over TLS over hostsock, asked by hyper's client and by curl. And
//! a read timeout on the accepted stream bounding a silent handshake.

use std::sync::Arc;
use std::time::Duration;

use hostsock::{TcpListener, TcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{
    self, ClientConfig, ProtocolVersion, RootCertStore, ServerConfig, SupportedProtocolVersion,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

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

/// A server and a client config for `localhost`, both on the ring provider
/// and limited to `version`; the client trusts only the test certificate.
fn configs(version: &'static SupportedProtocolVersion) -> (ServerConfig, ClientConfig) {
    let (server, client, _pem) = configs_with_pem(version);
    (server, client)
}

/// [`configs`], and the certificate as PEM (for curl's `--cacert`).
fn configs_with_pem(
    version: &'static SupportedProtocolVersion,
) -> (ServerConfig, ClientConfig, String) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("self-signed");
    let cert_der: CertificateDer<'static> = cert.der().clone();
    let key = PrivateKeyDer::try_from(signing_key.serialize_der()).expect("PKCS#8 key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .expect("server certificate");

    let mut roots = RootCertStore::empty();
    roots.add(cert_der).expect("root");
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (server, client, cert.pem())
}

/// Message `i` of the exchange: sizes 1 B to 1 MiB, distinct contents.
fn message(i: usize) -> Vec<u8> {
    const SIZES: [usize; 7] = [1, 5, 100, 16_384, 16_385, 65_537, 1 << 20];
    let len = SIZES[i % SIZES.len()];
    (0..len).map(|j| (j * 31 + i * 7 + j / 251) as u8).collect()
}

const MESSAGES: usize = 10;

/// Runs the echo over one TLS version and checks everything on the way.
async fn echo_round_trip(version: &'static SupportedProtocolVersion, want: ProtocolVersion) {
    let (server_cfg, client_cfg) = configs(version);
    let acceptor = TlsAcceptor::from(Arc::new(server_cfg));
    let connector = TlsConnector::from(Arc::new(client_cfg));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    // The server echoes whatever it reads until the client's close_notify
    // (a read of 0; a bare TCP close would be an UnexpectedEof error), then
    // sends its own close_notify.
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.expect("server handshake");
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.protocol_version(), Some(want));
        assert_eq!(conn.server_name(), Some("localhost"));
        let mut buf = vec![0u8; 64 << 10];
        let mut echoed = 0usize;
        loop {
            let n = tls.read(&mut buf).await.expect("server read");
            if n == 0 {
                break;
            }
            tls.write_all(&buf[..n]).await.expect("server write");
            echoed += n;
        }
        tls.shutdown().await.expect("server close_notify");
        echoed
    });

    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = within(10, connector.connect(name, tcp))
        .await
        .expect("client handshake");
    {
        let (stream, conn) = tls.get_ref();
        assert_eq!(conn.protocol_version(), Some(want));
        let suite = conn.negotiated_cipher_suite().expect("cipher suite");
        println!(
            "{want:?} with {:?} over hostsock {} -> {}",
            suite.suite(),
            stream.local_addr().unwrap(),
            stream.peer_addr().unwrap()
        );
    }

    let mut sent = 0usize;
    for i in 0..MESSAGES {
        let msg = message(i);
        // Write and read at once: a 1 MiB message does not fit in the
        // socket buffers, so writing all of it first could stall.
        let (mut r, mut w) = tokio::io::split(&mut tls);
        let write = async {
            w.write_all(&msg).await.expect("client write");
            w.flush().await.expect("client flush");
        };
        let mut back = vec![0u8; msg.len()];
        let read = async {
            r.read_exact(&mut back).await.expect("client read");
        };
        within(60, async { tokio::join!(write, read) }).await;
        assert!(
            back == msg,
            "message {i} ({} bytes) came back changed",
            msg.len()
        );
        sent += msg.len();
    }

    // Clean close: our close_notify, then the server's, then end of stream.
    tls.shutdown().await.expect("client close_notify");
    let mut rest = Vec::new();
    let n = within(10, tls.read_to_end(&mut rest))
        .await
        .expect("the server's close_notify ends the stream cleanly");
    assert_eq!(n, 0, "no bytes after the last echo");
    assert_eq!(within(10, server).await.unwrap(), sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_echo_with_close_notify() {
    echo_round_trip(&rustls::version::TLS13, ProtocolVersion::TLSv1_3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_echo_with_close_notify() {
    echo_round_trip(&rustls::version::TLS12, ProtocolVersion::TLSv1_2).await;
}

/// A client that does not trust the certificate fails the handshake, and
/// the server sees the failure: the test certificate really is checked.
#[tokio::test]
async fn untrusted_certificate_fails_handshake() {
    let (server_cfg, _) = configs(&rustls::version::TLS13);
    // A client that trusts a different self-signed certificate.
    let (_, other_client) = configs(&rustls::version::TLS13);
    let acceptor = TlsAcceptor::from(Arc::new(server_cfg));
    let connector = TlsConnector::from(Arc::new(other_client));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.map(|_| ())
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = within(
        10,
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .map(|_| ())
    .expect_err("handshake with an untrusted certificate");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .expect("a rustls error inside");
    assert!(
        matches!(inner, rustls::Error::InvalidCertificate(_)),
        "{inner:?}"
    );
    assert!(within(10, server).await.unwrap().is_err());
}

/// The other side of the clean close: a peer that closes the TCP
/// connection without `close_notify` gives the reader an `UnexpectedEof`
/// error, not a 0-byte read. (So the clean 0 reads above prove that the
/// `close_notify` alerts went through hostsock.)
#[tokio::test]
async fn tcp_close_without_close_notify_is_unexpected_eof() {
    let (server_cfg, client_cfg) = configs(&rustls::version::TLS13);
    let acceptor = TlsAcceptor::from(Arc::new(server_cfg));
    let connector = TlsConnector::from(Arc::new(client_cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.expect("server handshake");
        let mut buf = [0u8; 16];
        let n = tls.read(&mut buf).await.expect("first message");
        assert_eq!(&buf[..n], b"bye");
        tls.read(&mut buf).await
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = within(
        10,
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("client handshake");
    tls.write_all(b"bye").await.unwrap();
    tls.flush().await.unwrap();
    // Drop the TLS layer and close the TCP stream under it.
    let (tcp, _) = tls.into_inner();
    drop(tcp);
    let err = within(10, server)
        .await
        .unwrap()
        .expect_err("a bare TCP close is not a clean TLS close");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
}

/// HTTPS: hyper's HTTP/1.1 server over TLS over a hostsock stream, asked
/// by hyper's client (over TLS over a hostsock stream) and by curl, which
/// checks the certificate against the test's PEM and sends two requests on
/// one TLS connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_hyper_server_answers_hyper_client_and_curl() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;

    let (mut server_cfg, client_cfg, pem) = configs_with_pem(&rustls::version::TLS13);
    server_cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(server_cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let id = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let body = format!("secure {} on connection {id}\n", req.uri().path());
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });

    // hyper's client, over TLS, over a hostsock stream.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(client_cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("client handshake");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tls))
            .await
            .expect("http handshake");
    tokio::spawn(conn);
    for path in ["/one", "/two", "/three"] {
        sender.ready().await.unwrap();
        let req = hyper::Request::builder()
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = within(10, sender.send_request(req)).await.unwrap();
        assert_eq!(res.status(), hyper::StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("secure {path} on connection 0\n"));
    }
    drop(sender);

    if tokio::process::Command::new("curl")
        .arg("--version")
        .output()
        .await
        .is_err()
    {
        println!("skipping the curl half: curl is not installed (CI installs it)");
        return;
    }
    let tmp = TempDir::new("interop-tls");
    let dir = &tmp.0;
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pem).unwrap();
    let port = addr.port();
    let out = within(
        30,
        tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20", "--http1.1"])
            .arg("--cacert")
            .arg(&ca)
            .arg("--resolve")
            .arg(format!("localhost:{port}:127.0.0.1"))
            .args(["--write-out", "[connects=%{num_connects}]\n"])
            .arg(format!("https://localhost:{port}/a"))
            .arg(format!("https://localhost:{port}/b"))
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
            "secure /a on connection 1",
            "[connects=1]",
            "secure /b on connection 1",
            "[connects=0]",
        ]
    );
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A client that connects and never starts the handshake: the server's
/// read timeout on the accepted stream ends the TLS accept with a
/// timed-out error carrying hostsock's errno (`EAGAIN`).
#[tokio::test]
async fn read_timeout_bounds_a_silent_tls_handshake() {
    let (server_cfg, _) = configs(&rustls::version::TLS13);
    let acceptor = TlsAcceptor::from(Arc::new(server_cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _silent = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let timeout = Duration::from_millis(200);
    tcp.set_read_timeout(Some(timeout)).unwrap();
    let started = tokio::time::Instant::now();
    let err = within(10, acceptor.accept(tcp))
        .await
        .map(|_| ())
        .expect_err("a silent client cannot finish the handshake");
    let waited = started.elapsed();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert_eq!(hostsock::Error::from(err).errno(), libc::EAGAIN);
    assert!(waited >= timeout, "gave up after {waited:?}");
    assert!(waited < timeout + Duration::from_secs(3), "{waited:?}");
}
