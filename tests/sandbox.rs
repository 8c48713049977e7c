//! The `sandbox` example runs real programs (curl, python3) whose socket
//! calls go through `hostsock::raw` by seccomp user notification.
//!
//! The tests build the example with `cargo build --example sandbox` (the
//! same cargo, profile and target directory as this test binary), run it,
//! and skip with a printed reason when a tool is missing or seccomp user
//! notification is not available (the example then exits with 125).
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use hostsock::cmsg::Cmsg;
use hostsock::msg::RecvFlags;
use hostsock::{UdpSocket, opts};

/// The example's exit status when seccomp user notification is missing.
const UNAVAILABLE: i32 = 125;
/// Bound for every wait on a child process or a line.
const WAIT: Duration = Duration::from_secs(30);

/// Builds the example once; its path, or why it cannot be used.
fn sandbox_bin() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        // This binary is TARGET/PROFILE/deps/sandbox-HASH; the example goes
        // to TARGET/PROFILE/examples/sandbox.
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .ok_or("no profile directory above the test binary")?
            .to_path_buf();
        let bin = profile_dir.join("examples").join("sandbox");
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug");
        let mut target_dir = profile_dir.parent().ok_or("no target directory")?;
        // With --target TRIPLE the layout is TARGET/TRIPLE/PROFILE.
        let triple = target_dir
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.contains("-linux-"))
            .map(str::to_string);
        if triple.is_some() {
            target_dir = target_dir.parent().ok_or("no target directory")?;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--example", "sandbox"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", target_dir);
        match profile {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        if let Some(t) = &triple {
            cmd.args(["--target", t]);
        }
        // The same features as this build, so the library is not rebuilt
        // back and forth.
        if cfg!(feature = "tracing") {
            cmd.args(["--features", "tracing"]);
        }
        let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build --example sandbox failed: {status}"));
        }
        if !bin.exists() {
            return Err(format!("{} was not built", bin.display()));
        }
        Ok(bin)
    })
    .clone()
}

/// Waits for `child` (and its output) at most `WAIT`, killing it past
/// that.
fn wait_output(child: Child) -> Output {
    let pid = child.id().to_string();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(out) => out.expect("wait for the sandbox example"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("{WAIT:?} passed and the sandboxed program still runs");
        }
    }
}

/// Runs the example with `args`; `None` (after printing why) when the test
/// must be skipped.
fn sandbox(args: &[&str]) -> Option<Output> {
    let bin = match sandbox_bin() {
        Ok(b) => b,
        Err(e) => panic!("the sandbox example cannot be built: {e}"),
    };
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the sandbox example");
    let out = wait_output(child);
    if out.status.code() == Some(UNAVAILABLE) {
        println!(
            "skipped: seccomp user notification is not available: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    Some(out)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The real python3 (not a pyenv shim), or `None` after printing why.
fn python3() -> Option<String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output();
    match out {
        Ok(o) if o.status.success() => Some(text(&o.stdout).trim().to_string()),
        _ => {
            println!("skipped: python3 is not installed");
            None
        }
    }
}

fn curl() -> Option<()> {
    match Command::new("curl").arg("--version").output() {
        Ok(o) if o.status.success() => Some(()),
        _ => {
            println!("skipped: curl is not installed");
            None
        }
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "hostsock-sandbox-{tag}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// Python's `http.server` on 127.0.0.1, port 0 (the kernel picks a free
/// one, printed on stdout), that writes `ACCEPT ip:port` on stderr for
/// every connection it accepts.
const HTTP_SERVER: &str = r#"
import http.server, os, sys
os.chdir(sys.argv[1])
class Server(http.server.HTTPServer):
    def verify_request(self, request, client_address):
        sys.stderr.write("ACCEPT %s:%d\n" % client_address)
        sys.stderr.flush()
        return True
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
server = Server(("127.0.0.1", 0), Quiet)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

struct HttpServer {
    child: Child,
    port: u16,
    accepts: Receiver<String>,
}

impl HttpServer {
    fn start(python: &str, dir: &std::path::Path) -> HttpServer {
        let mut child = Command::new(python)
            .args(["-c", HTTP_SERVER])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start python3 http.server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the server prints its port");
        let port = line.trim().parse().expect("a port number");
        let (tx, accepts) = channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("ACCEPT ") && tx.send(line).is_err() {
                    break;
                }
            }
        });
        HttpServer {
            child,
            port,
            accepts,
        }
    }

    fn next_accept(&self) -> String {
        self.accepts
            .recv_timeout(WAIT)
            .expect("the server reports an accepted connection")
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn curl_fetches_when_allowed_and_is_refused_when_denied() {
    let (Some(python), Some(())) = (python3(), curl()) else {
        return;
    };
    let dir = tempdir("www");
    let token = format!("hostsock sandbox page {}", dir.display());
    std::fs::write(dir.join("index.html"), &token).expect("write the page");
    let server = HttpServer::start(&python, &dir);
    let url = format!("http://127.0.0.1:{}/index.html", server.port);
    let curl = ["curl", "-sS", "-v", "--max-time", "10", url.as_str()];

    // Allowed: the page arrives, through sockets made by hostsock.
    let Some(out) = sandbox(&[&["--preset", "sandbox", "--"][..], &curl[..]].concat()) else {
        return;
    };
    assert!(out.status.success(), "curl failed: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), token);
    assert!(
        !text(&out.stderr).contains("audit"),
        "{}",
        text(&out.stderr)
    );
    server.next_accept();

    // Denied by a rule, and by a default-deny policy that does not list
    // the address: curl sees ECONNREFUSED (exit 7), the audit hook names
    // the call and the rule.
    let deny = format!("127.0.0.1:{}", server.port);
    for (policy, rule) in [
        (vec!["--deny", deny.as_str()], "denied by address rule #"),
        (
            vec!["--default", "deny", "--allow", "127.0.0.2"],
            "denied by the default address verdict",
        ),
    ] {
        let args = [&["--preset", "sandbox"][..], &policy, &["--"], &curl[..]].concat();
        let out = sandbox(&args).expect("the sandbox worked a moment ago");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(7), "curl: {err}");
        assert!(err.contains("Connection refused"), "{err}");
        let audit: Vec<&str> = err.lines().filter(|l| l.contains("audit:")).collect();
        assert_eq!(audit.len(), 1, "one audit line per denial: {err}");
        assert!(audit[0].contains("curl["), "{}", audit[0]);
        assert!(audit[0].contains("connect("), "{}", audit[0]);
        assert!(audit[0].contains(&deny), "{}", audit[0]);
        assert!(audit[0].contains(rule), "{}", audit[0]);
    }

    // The server saw no connection from either: the next one it accepts is
    // this control connection (the accept loop takes them in order).
    let mut control = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    let local = control.local_addr().expect("local address");
    control
        .write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .expect("send the request");
    let mut reply = String::new();
    control.read_to_string(&mut reply).expect("read the reply");
    assert!(reply.ends_with(&token), "{reply}");
    assert_eq!(server.next_accept(), format!("ACCEPT {local}"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `TCP_NOTSENT_LOWAT` (25): harmless, and outside hostsock's table.
const SET_UNLISTED_OPTION: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.setsockopt(socket.IPPROTO_TCP, 25, 16384)
    print("setsockopt ok")
except OSError as e:
    print("setsockopt errno=%d" % e.errno)
"#;

#[test]
fn python_unlisted_option_is_enoprotoopt_except_in_gvisor_mode() {
    let Some(python) = python3() else {
        return;
    };
    // The host kernel itself takes the option.
    let direct = Command::new(&python)
        .args(["-c", SET_UNLISTED_OPTION])
        .output()
        .expect("run python3");
    assert_eq!(text(&direct.stdout).trim(), "setsockopt ok");

    for preset in ["default", "sandbox"] {
        let Some(out) = sandbox(&["--preset", preset, "--", &python, "-c", SET_UNLISTED_OPTION])
        else {
            return;
        };
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout).trim(),
            format!("setsockopt errno={}", libc::ENOPROTOOPT)
        );
        let err = text(&out.stderr);
        let audit: Vec<&str> = err.lines().filter(|l| l.contains("audit:")).collect();
        assert_eq!(audit.len(), 1, "{err}");
        assert!(audit[0].contains("setsockopt(3, 6, 25,"), "{}", audit[0]);
        assert!(audit[0].contains("not listed"), "{}", audit[0]);
    }
    let out = sandbox(&[
        "--preset",
        "gvisor",
        "--",
        &python,
        "-c",
        SET_UNLISTED_OPTION,
    ])
    .expect("the sandbox worked a moment ago");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "setsockopt ok");
    assert!(!text(&out.stderr).contains("audit:"));
}

/// Sends one datagram with an `IP_TOS` control message, then one per
/// source address in argv[2:] with that source in `IP_PKTINFO`.
const UDP_CLIENT: &str = r#"
import socket, struct, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
tos = [(socket.IPPROTO_IP, socket.IP_TOS, struct.pack("i", 0x28))]
print("tos sent=%d" % s.sendmsg([b"tos-datagram"], tos, 0, ("127.0.0.1", port)))
for src in sys.argv[2:]:
    pktinfo = struct.pack("i4s4s", 0, socket.inet_aton(src), socket.inet_aton("0.0.0.0"))
    payload = ("pktinfo-" + src).encode()
    try:
        n = s.sendmsg([payload], [(socket.IPPROTO_IP, 8, pktinfo)], 0, ("127.0.0.1", port))
        print("pktinfo %s sent=%d" % (src, n))
    except OSError as e:
        print("pktinfo %s errno=%d" % (src, e.errno))
"#;

#[tokio::test]
async fn python_udp_sendmsg_with_tos_and_a_refused_pktinfo_source() {
    let Some(python) = python3() else {
        return;
    };
    let rx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    rx.set(opts::RecvTos, true).expect("IP_RECVTOS");
    let port = rx.local_addr().expect("local address").port().to_string();
    let args: Vec<String> = [
        "--preset",
        "sandbox",
        "--",
        python.as_str(),
        "-c",
        UDP_CLIENT,
        port.as_str(),
        "127.0.0.1",
        "169.254.169.254",
    ]
    .map(String::from)
    .into();
    let Some(out) = tokio::task::spawn_blocking(move || {
        sandbox(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("join") else {
        return;
    };
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        [
            "tos sent=12".to_string(),
            "pktinfo 127.0.0.1 sent=17".to_string(),
            // The sandbox preset denies link-local addresses for every use;
            // the kernel alone would have said ENETUNREACH.
            format!("pktinfo 169.254.169.254 errno={}", libc::EACCES),
        ]
    );
    let audit: Vec<&str> = err.lines().filter(|l| l.contains("audit:")).collect();
    assert_eq!(audit.len(), 1, "{err}");
    assert!(audit[0].contains("sendmsg(3,"), "{}", audit[0]);
    assert!(
        audit[0].contains("169.254.169.254:0 for SourceViaPktinfo"),
        "{}",
        audit[0]
    );

    // The receiver got the TOS datagram with its TOS, then the PKTINFO one
    // from the allowed source, and nothing else (loopback delivery is done
    // once sendmsg returned, and the client has exited).
    let mut buf = [0u8; 64];
    let mut control = [0u8; 64];
    let deadline = tokio::time::Instant::now() + WAIT;
    let meta = rx
        .recv_msg_deadline(
            &mut [std::io::IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::EMPTY,
            deadline,
        )
        .await
        .expect("the TOS datagram");
    assert_eq!(&buf[..meta.len], b"tos-datagram");
    assert!(
        meta.cmsgs().any(|m| m == Cmsg::Tos(0x28)),
        "{:?}",
        meta.cmsgs().collect::<Vec<_>>()
    );
    let (n, from) = rx.try_recv_from(&mut buf).expect("the PKTINFO datagram");
    assert_eq!(&buf[..n], b"pktinfo-127.0.0.1");
    assert_eq!(from.ip().to_string(), "127.0.0.1");
    let third = rx.try_recv_from(&mut buf);
    assert!(third.is_err(), "a refused datagram arrived: {third:?}");
}

/// A thread blocks in `accept`, then in `recv`, both served by the
/// supervisor, while the main thread's own calls (socket, connect, send)
/// are served meanwhile; the guest's view of `O_NONBLOCK` follows
/// `fcntl`, though the shared open file description is non-blocking for
/// tokio. The waits are on the thread's `/proc/self/task/TID/syscall`.
const BLOCKING_GUEST: &str = r#"
import fcntl, os, socket, threading, time
def in_call(tid, numbers):
    end = time.monotonic() + 10
    while time.monotonic() < end:
        with open("/proc/self/task/%d/syscall" % tid) as f:
            if f.read().split()[0] in numbers:
                return True
    return False
nb = lambda s: bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print("listener nonblocking=%s" % nb(srv))
out = {}
started = threading.Event()
def serve():
    out["tid"] = threading.get_native_id()
    started.set()
    conn, _ = srv.accept()
    out["conn"] = conn
    out["data"] = conn.recv(4)
t = threading.Thread(target=serve)
t.start()
started.wait(10)
print("in accept=%s" % in_call(out["tid"], ("43", "288")))
c = socket.create_connection(srv.getsockname())
print("in recv=%s" % in_call(out["tid"], ("45", "47")))
c.sendall(b"ping")
t.join(10)
print("received=%r" % out["data"])
conn = out["conn"]
print("accepted nonblocking=%s" % nb(conn))
conn.setblocking(False)
print("after setblocking(False)=%s" % nb(conn))
try:
    conn.recv(4)
except BlockingIOError as e:
    print("nonblocking recv errno=%d" % e.errno)
"#;

#[test]
fn blocking_calls_are_served_concurrently_with_the_guests_blocking_view() {
    let Some(python) = python3() else {
        return;
    };
    let direct = Command::new(&python)
        .args(["-c", BLOCKING_GUEST])
        .output()
        .expect("run python3");
    assert!(direct.status.success(), "{}", text(&direct.stderr));
    let Some(out) = sandbox(&["--", &python, "-c", BLOCKING_GUEST]) else {
        return;
    };
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = format!(
        "listener nonblocking=False\nin accept=True\nin recv=True\nreceived=b'ping'\n\
         accepted nonblocking=False\nafter setblocking(False)=True\n\
         nonblocking recv errno={}\n",
        libc::EAGAIN
    );
    assert_eq!(text(&direct.stdout), expected);
    assert_eq!(text(&out.stdout), expected);
}

/// Connects, sends, closes, and stays alive until a line arrives on stdin.
const CLOSING_GUEST: &str = r#"
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
c.sendall(b"bye")
c.close()
print("closed", flush=True)
sys.stdin.readline()
"#;

/// The supervisor keeps no descriptor of the guest's sockets between
/// calls: the guest's `close` ends the connection at once (the peer reads
/// EOF) while the guest still runs.
#[tokio::test]
async fn guest_close_ends_the_connection_while_the_guest_runs() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::timeout;

    let Some(python) = python3() else {
        return;
    };
    let probe = tokio::task::spawn_blocking(|| sandbox(&["--", "true"]))
        .await
        .expect("join");
    if probe.is_none() {
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port().to_string();
    let mut child = tokio::process::Command::new(sandbox_bin().expect("built above"))
        .args(["--", &python, "-c", CLOSING_GUEST, &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the sandbox example");
    let (mut conn, _) = timeout(WAIT, listener.accept())
        .await
        .expect("the guest connects")
        .expect("accept");
    let mut got = Vec::new();
    timeout(WAIT, conn.read_to_end(&mut got))
        .await
        .expect("EOF arrives while the guest still runs")
        .expect("read");
    assert_eq!(got, b"bye");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the guest still runs"
    );
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"\n").await.expect("release the guest");
    drop(stdin);
    let out = timeout(WAIT, child.wait_with_output())
        .await
        .expect("the guest exits")
        .expect("wait");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "closed\n");
}

/// A blocking receive bounded by `SO_RCVTIMEO`, set in an earlier call:
/// the supervisor keeps the guest's timeout per socket.
const TIMEOUT_GUEST: &str = r#"
import socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 200000))
t = time.monotonic()
try:
    s.recv(10)
    print("recv returned")
except OSError as e:
    w = time.monotonic() - t
    print("recv errno=%d waited>=0.15s:%s <10s:%s" % (e.errno, w >= 0.15, w < 10))
print("SO_RCVTIMEO=%r" % (struct.unpack("ll", s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)),))
"#;

#[test]
fn receive_timeout_set_by_the_guest_bounds_a_blocking_recv() {
    let Some(python) = python3() else {
        return;
    };
    let direct = Command::new(&python)
        .args(["-c", TIMEOUT_GUEST])
        .output()
        .expect("run python3");
    let Some(out) = sandbox(&["--", &python, "-c", TIMEOUT_GUEST]) else {
        return;
    };
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = format!(
        "recv errno={} waited>=0.15s:True <10s:True\nSO_RCVTIMEO=(0, 200000)\n",
        libc::EAGAIN
    );
    assert_eq!(text(&direct.stdout), expected);
    assert_eq!(text(&out.stdout), expected);
}
