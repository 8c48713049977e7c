//! With the `tracing` feature, policy denials and failed async operations
//! reach the embedder's subscriber. Run with
//! `cargo test --features tracing --test tracing_events`.
#![cfg(feature = "tracing")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hostsock::policy::{AddrRule, AddrUse, Cidr, Verdict};
use hostsock::{Policy, UdpSocket};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// (target, level, message, errno) of each event.
type Seen = Arc<Mutex<Vec<(String, Level, String, Option<i64>)>>>;

struct Recorder(Seen);

struct Fields {
    message: String,
    errno: Option<i64>,
}

impl Visit for Fields {
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "errno" {
            self.errno = Some(value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut f = Fields {
            message: String::new(),
            errno: None,
        };
        event.record(&mut f);
        let m = event.metadata();
        if let Ok(mut seen) = self.0.lock() {
            seen.push((m.target().to_string(), *m.level(), f.message, f.errno));
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[tokio::test]
async fn denials_and_failures_become_events() {
    let seen: Seen = Arc::default();
    let _guard = tracing::subscriber::set_default(Recorder(Arc::clone(&seen)));

    let policy = Policy::builder()
        .addr_rule(AddrRule::new(
            Verdict::Deny,
            Cidr::new("127.0.0.9".parse().unwrap(), 32),
            &[AddrUse::SendTo],
        ))
        .build();
    let sock = UdpSocket::bind_with_policy("127.0.0.1:0", policy.into())
        .await
        .unwrap();
    let err = sock.send_to(b"x", "127.0.0.9:9").await.unwrap_err();
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let timed_out = sock.recv(&mut [0u8; 4]).await.unwrap_err();
    assert!(timed_out.is_timeout());

    let refused =
        hostsock::TcpStream::connect(std::net::SocketAddr::from(([127, 0, 0, 1], refused_port())))
            .await
            .unwrap_err();
    assert_eq!(refused.errno(), libc::ECONNREFUSED);

    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(t, l, m, e)| t == "hostsock::io"
            && *l == Level::DEBUG
            && m.contains("Connect")
            && *e == Some(i64::from(libc::ECONNREFUSED))),
        "no connect event in {seen:?}"
    );
    let denial = seen
        .iter()
        .find(|(t, ..)| t == "hostsock::policy")
        .unwrap_or_else(|| panic!("no denial event in {seen:?}"));
    assert_eq!(denial.1, Level::WARN);
    assert_eq!(denial.3, Some(i64::from(err.errno())));
    assert!(denial.2.contains("127.0.0.9"), "{denial:?}");
    let failure = seen
        .iter()
        .find(|(t, ..)| t == "hostsock::io")
        .unwrap_or_else(|| panic!("no io event in {seen:?}"));
    assert_eq!(failure.1, Level::DEBUG);
    assert_eq!(failure.3, Some(i64::from(libc::EAGAIN)));
}

/// A loopback port nothing listens on: one just bound and released.
fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
