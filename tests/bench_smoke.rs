//! Runs every scenario of the benchmark (`benches/net.rs`) through each
//! implementation (hostsock, tokio, raw) for a few hundred messages, so that
//! the benchmark code stays correct: every message sent arrives and is
//! checked (payload marker, control messages, echo contents). No timing is
//! asserted. The scenario code is the benchmark's own, included from
//! `benches/common/`.

#[path = "../benches/common/mod.rs"]
mod common;

use std::io;
use std::time::Duration;

use common::cost::{Cost, cost};
use common::flood::{Flood, flood};
use common::pingpong::pingpong;
use common::reuseport::reuseport;
use common::tcp;
use common::{Imp, Outcome, Params};

/// A few hundred messages per run, no time pressure.
const SMOKE: Params = Params {
    msgs: 300,
    time: Duration::from_secs(20),
};

/// Asserts a run worked and lost nothing (the allocation count is shown,
/// not asserted: these runs are not warmed up).
fn check(what: &str, imp: Imp, r: io::Result<Outcome>) -> Outcome {
    let o = r.unwrap_or_else(|e| panic!("{what} / {}: {e}", imp.name()));
    assert!(o.received > 0, "{what} / {}: nothing arrived", imp.name());
    assert_eq!(
        o.received,
        o.sent,
        "{what} / {}: sent {} received {}",
        imp.name(),
        o.sent,
        o.received
    );
    assert_eq!(o.loss(), 0.0);
    assert!(o.value > 0.0, "{what} / {}: no figure", imp.name());
    eprintln!(
        "{what} / {}: {:.3} allocs/msg {}",
        imp.name(),
        o.allocs_per_msg(),
        o.note
    );
    o
}

#[test]
fn udp_floods() {
    for size in [64, 1200] {
        for kind in [Flood::Single, Flood::Msg, Flood::Batch, Flood::Gso] {
            for imp in Imp::ALL {
                let what = format!("flood {size} B {kind:?}");
                let o = check(&what, imp, flood(imp, kind, size, &SMOKE));
                assert!(o.sent >= SMOKE.msgs, "{what}: sent {}", o.sent);
            }
        }
    }
}

#[test]
fn udp_pingpong() {
    for imp in Imp::ALL {
        let o = check("ping-pong", imp, pingpong(imp, &SMOKE));
        assert_eq!(o.received, SMOKE.msgs);
        assert!(o.value2 >= o.value, "p99 below p50");
    }
}

#[test]
fn cpu_costs() {
    for kind in [Cost::Recv, Cost::RecvMsg, Cost::Send, Cost::SendMsg] {
        for imp in Imp::ALL {
            let o = check(&format!("cpu {kind:?}"), imp, cost(imp, kind, &SMOKE));
            assert_eq!(o.received, SMOKE.msgs);
        }
    }
}

#[test]
fn tcp_bulk() {
    for imp in Imp::ALL {
        let o = check("tcp bulk", imp, tcp::bulk(imp, &SMOKE));
        assert_eq!(o.received, SMOKE.msgs);
    }
}

#[test]
fn tcp_accept() {
    for imp in Imp::ALL {
        let o = check("tcp accept", imp, tcp::accept(imp, &SMOKE));
        assert_eq!(o.received, SMOKE.msgs);
    }
}

#[test]
fn tcp_echo() {
    for conns in [1, 64] {
        for imp in Imp::ALL {
            let o = check(
                &format!("tcp echo {conns}"),
                imp,
                tcp::echo(imp, conns, &SMOKE),
            );
            assert!(o.received >= SMOKE.msgs);
        }
    }
}

#[test]
fn udp_reuseport() {
    for sockets in [1, 2] {
        for imp in Imp::ALL {
            check(
                &format!("reuseport {sockets}"),
                imp,
                reuseport(imp, sockets, &SMOKE),
            );
        }
    }
}
