//! Plays a sandboxed guest: reads socket calls as lines of text, runs each
//! through `hostsock::raw` under a policy preset, and prints what the guest
//! would see: the value, or -1 and the errno.
//!
//! Run it with:
//! `printf 'socket 2 1 0\nsetsockopt 3 1 26 00\nconnect 3 169.254.169.254:80\n' | cargo run --example sandbox_gate -- --preset sandbox`
//! or give a file of calls: `cargo run --example sandbox_gate -- --preset gvisor calls.txt`.
//!
//! Calls (numbers are decimal unless written 0x..; values and raw
//! addresses are hex bytes):
//!
//! ```text
//! socket DOMAIN TYPE PROTOCOL          socket 2 1 0        (AF_INET, SOCK_STREAM)
//! bind FD ADDR                         bind 3 127.0.0.1:0
//! listen FD BACKLOG                    listen 3 16
//! connect FD ADDR                      connect 3 127.0.0.1:7000
//! accept FD                            accept 3
//! shutdown FD HOW                      shutdown 3 1
//! getsockname FD | getpeername FD
//! setsockopt FD LEVEL NAME HEX         setsockopt 3 1 9 01000000   (SO_KEEPALIVE = 1)
//! getsockopt FD LEVEL NAME OPTLEN      getsockopt 3 6 1 4          (TCP_NODELAY)
//! ioctl FD REQUEST                     ioctl 3 0x541B              (FIONREAD)
//! close FD
//! ```
//!
//! ADDR is `IP:PORT`, `[IPv6]:PORT`, or `hex:BYTES` for a raw sockaddr.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

use hostsock::Policy;
use hostsock::raw::{Errno, RawSocket, SockaddrBytes, encode_sockaddr};
use tokio::time::Instant;

/// What a call answers the guest.
enum Answer {
    Value(i64),
    Bytes(Vec<u8>),
    Addr(SockaddrBytes),
}

struct Guest {
    policy: Arc<Policy>,
    fds: HashMap<i32, RawSocket>,
    next_fd: i32,
}

#[tokio::main]
async fn main() {
    let mut preset = "default".to_string();
    let mut file = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--preset" => preset = args.next().unwrap_or_default(),
            other => file = Some(other.to_string()),
        }
    }
    let policy = match preset.as_str() {
        "default" => Policy::default(),
        "sandbox" => Policy::sandbox(),
        "gvisor" => Policy::gvisor_compat(),
        other => {
            eprintln!("unknown preset {other:?}: use default, sandbox or gvisor");
            std::process::exit(2);
        }
    };
    let policy = Policy::builder_from(policy)
        .audit(|event| println!("  audit: {}", event.denial))
        .build();
    println!("sandbox_gate: preset {preset}");

    let lines: Vec<String> = match file {
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(text) => text.lines().map(str::to_string).collect(),
            Err(e) => {
                eprintln!("cannot read {path}: {e}");
                std::process::exit(2);
            }
        },
        None => std::io::stdin()
            .lock()
            .lines()
            .map_while(Result::ok)
            .collect(),
    };

    let mut guest = Guest {
        policy: Arc::new(policy),
        fds: HashMap::new(),
        next_fd: 3,
    };
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let shown = match guest.call(line).await {
            Ok(Answer::Value(v)) => format!("= {v}"),
            Ok(Answer::Bytes(b)) => format!("= {} bytes: {}", b.len(), hex(&b)),
            Ok(Answer::Addr(a)) => format!("= {a:?} ({} bytes)", a.as_bytes().len()),
            Err(e) => format!("= -1 {} ({})", e.name(), std::io::Error::from(e)),
        };
        println!("{line:<40} {shown}");
    }
}

impl Guest {
    async fn call(&mut self, line: &str) -> Result<Answer, Errno> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let int = |i: usize| -> Result<i64, Errno> {
            words.get(i).and_then(|w| parse_int(w)).ok_or(Errno::EINVAL)
        };
        let op = words.first().copied().unwrap_or("");
        if op == "socket" {
            let sock = RawSocket::new(
                self.policy.clone(),
                int(1)? as i32,
                int(2)? as i32,
                int(3)? as i32,
            )?;
            let fd = self.next_fd;
            self.next_fd += 1;
            self.fds.insert(fd, sock);
            return Ok(Answer::Value(i64::from(fd)));
        }
        let fd = int(1)? as i32;
        if op == "close" {
            return match self.fds.remove(&fd) {
                Some(_) => Ok(Answer::Value(0)),
                None => Err(Errno::EBADF),
            };
        }
        let sock = self.fds.get(&fd).ok_or(Errno::EBADF)?;
        match op {
            "bind" => sock
                .bind(addr(words.get(2))?.as_bytes())
                .map(|()| Answer::Value(0)),
            "listen" => sock.listen(int(2)? as i32).map(|()| Answer::Value(0)),
            "connect" => {
                // A blocking guest waits at most 5 s here, so a script never hangs.
                let deadline = Instant::now() + Duration::from_secs(5);
                let a = addr(words.get(2))?;
                sock.connect_deadline(a.as_bytes(), sock.nonblocking(), Some(deadline))
                    .await
                    .map(|()| Answer::Value(0))
            }
            "accept" => {
                let (new, peer) = sock.accept(sock.nonblocking()).await?;
                let nfd = self.next_fd;
                self.next_fd += 1;
                println!("  accepted fd {nfd} from {peer:?}");
                self.fds.insert(nfd, new);
                Ok(Answer::Value(i64::from(nfd)))
            }
            "shutdown" => sock.shutdown(int(2)? as i32).map(|()| Answer::Value(0)),
            "getsockname" => sock.getsockname().map(Answer::Addr),
            "getpeername" => sock.getpeername().map(Answer::Addr),
            "setsockopt" => {
                let value = unhex(words.get(4).copied().unwrap_or("")).ok_or(Errno::EINVAL)?;
                sock.setsockopt(int(2)? as i32, int(3)? as i32, &value)
                    .map(|()| Answer::Value(0))
            }
            "getsockopt" => {
                let mut out = vec![0u8; usize::try_from(int(4)?).map_err(|_| Errno::EINVAL)?];
                let n = sock.getsockopt(int(2)? as i32, int(3)? as i32, &mut out)?;
                out.truncate(n);
                Ok(Answer::Bytes(out))
            }
            "ioctl" => sock
                .ioctl(int(2)? as u64)
                .map(|v| Answer::Value(i64::from(v))),
            _ => Err(Errno::new(libc::ENOSYS)),
        }
    }
}

fn parse_int(w: &str) -> Option<i64> {
    match w.strip_prefix("0x") {
        Some(h) => i64::from_str_radix(h, 16).ok(),
        None => w.parse().ok(),
    }
}

fn addr(word: Option<&&str>) -> Result<SockaddrBytes, Errno> {
    let w = word.ok_or(Errno::EINVAL)?;
    if let Some(h) = w.strip_prefix("hex:") {
        let bytes = unhex(h).ok_or(Errno::EINVAL)?;
        return Ok(SockaddrBytes::from_bytes(&bytes));
    }
    let a: std::net::SocketAddr = w.parse().map_err(|_| Errno::EINVAL)?;
    Ok(encode_sockaddr(a))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
