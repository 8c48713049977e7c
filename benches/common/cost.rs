//! CPU cost per datagram on one thread, without a peer to wait for.
//!
//! Receives: the socket's queue is filled first (a raised `SO_RCVBUF` holds
//! a round of [`QUEUE`] datagrams), then draining it is timed with the
//! thread's CPU clock. Sends: a round of sends into a sink with a large
//! queue is timed, then the sink is drained (untimed) and checked. Rounds
//! repeat until the count or time limit.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, UdpSocket as StdUdp};
use std::os::fd::AsRawFd;

use hostsock::cmsg::Cmsg;
use hostsock::msg::{RecvFlags, SendFlags};
use tokio::io::Interest;

use super::sys::{self, Control};
use super::{
    DATA, GRACE, Imp, Limit, Outcome, Params, allocs, err, on_cpu, payload, runtime, settle,
    udp_pair,
};

/// Datagrams per round (queued at once).
pub const QUEUE: usize = 2000;
/// Most datagrams per run.
const CAP: u64 = 60_000;
/// The payload size.
const SIZE: usize = 64;
const TOS: u8 = 0x10;
const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Which path is costed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cost {
    /// `recv`.
    Recv,
    /// `recv_msg` with `IP_PKTINFO` + `IP_TOS` received and decoded.
    RecvMsg,
    /// `send`.
    Send,
    /// `send_msg` with `IP_PKTINFO` + `IP_TOS` encoded.
    SendMsg,
}

impl Cost {
    fn is_recv(self) -> bool {
        matches!(self, Cost::Recv | Cost::RecvMsg)
    }
}

/// The rounds of a run and what they cost so far.
struct Rounds {
    lim: Limit,
    done: u64,
    calls: u64,
    cpu_ns: u64,
    allocs: u64,
}

impl Rounds {
    fn new(p: &Params) -> Rounds {
        Rounds {
            lim: p.limit(CAP),
            done: 0,
            calls: 0,
            cpu_ns: 0,
            allocs: 0,
        }
    }

    /// The size of the next round, if there is one.
    fn next(&mut self) -> Option<usize> {
        if !self.lim.go(self.done, self.calls) {
            return None;
        }
        self.calls += 1;
        let q = (QUEUE as u64).min(self.lim.max - self.done);
        self.done += q;
        Some(q as usize)
    }
}

/// Times `$body` on this thread's CPU clock into `$r`, counting allocations.
macro_rules! measure {
    ($r:expr, $body:block) => {{
        let a = allocs();
        let t = sys::thread_cpu_ns();
        $body;
        $r.cpu_ns += sys::thread_cpu_ns() - t;
        $r.allocs += allocs() - a;
    }};
}

/// Fills the receiver's queue with `q` datagrams from the blocking `tx`.
fn fill(tx: &StdUdp, data: &[u8], q: usize) -> io::Result<()> {
    for _ in 0..q {
        tx.send(data)?;
    }
    Ok(())
}

/// Drains `q` datagrams from the blocking sink `rx` (untimed), checking
/// each (and its control messages when `msg`).
fn drain(rx: &StdUdp, mm: &mut sys::MmsgRecv, q: usize, msg: bool) -> io::Result<()> {
    let mut got = 0;
    while got < q {
        let k = mm.recv(rx.as_raw_fd(), libc::MSG_WAITFORONE)?;
        for i in 0..k {
            let d = sys::decode(mm.control(i));
            if mm.data(i).first() != Some(&DATA)
                || (msg && (d.tos, d.dst) != (Some(TOS), Some(LOCAL)))
            {
                return Err(err("the sink received a wrong datagram"));
            }
        }
        got += k;
    }
    Ok(())
}

fn check(buf: &[u8], n: usize) -> io::Result<()> {
    if n != SIZE || buf[0] != DATA {
        return Err(err("received a wrong datagram"));
    }
    Ok(())
}

fn check_msg(tos: Option<u8>, dst: Option<Ipv4Addr>) -> io::Result<()> {
    if (tos, dst) != (Some(TOS), Some(LOCAL)) {
        return Err(err(format!(
            "control messages wrong: tos {tos:?}, dst {dst:?}"
        )));
    }
    Ok(())
}

/// The CPU cost of one datagram on `kind`'s path through `imp`: `value` is
/// nanoseconds of thread CPU per datagram.
/// Runs on a thread pinned to CPU 0.
pub fn cost(imp: Imp, kind: Cost, p: &Params) -> io::Result<Outcome> {
    let p = *p;
    on_cpu(0, move || cost_here(imp, kind, &p))
}

fn cost_here(imp: Imp, kind: Cost, p: &Params) -> io::Result<Outcome> {
    let (tx, rx) = udp_pair()?;
    let msg = matches!(kind, Cost::RecvMsg | Cost::SendMsg);
    if msg {
        sys::set_int(&rx, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
        sys::set_int(&rx, libc::IPPROTO_IP, libc::IP_RECVTOS, 1)?;
    }
    if kind == Cost::RecvMsg {
        sys::set_int(&tx, libc::IPPROTO_IP, libc::IP_TOS, i32::from(TOS))?;
    }
    sys::set_recv_timeout(&rx, p.time + GRACE)?;
    let data = payload(SIZE);
    let mut buf = vec![0u8; 2048];
    let mut sink = sys::MmsgRecv::new(64, 2048, msg);
    let mut r = Rounds::new(p);
    let (measured, other) = if kind.is_recv() { (rx, tx) } else { (tx, rx) };
    match imp {
        Imp::Raw => {
            let fd = measured.as_raw_fd();
            let mut ctl = Control::<64>::new();
            while let Some(q) = r.next() {
                match kind {
                    Cost::Recv => {
                        fill(&other, &data, q)?;
                        measure!(r, {
                            for _ in 0..q {
                                let n = measured.recv(&mut buf)?;
                                check(&buf, n)?;
                            }
                        });
                    }
                    Cost::RecvMsg => {
                        fill(&other, &data, q)?;
                        measure!(r, {
                            for _ in 0..q {
                                let (n, c) = sys::recvmsg(fd, &mut buf, &mut ctl.0)?;
                                check(&buf, n)?;
                                let d = sys::decode(&ctl.0[..c]);
                                check_msg(d.tos, d.dst)?;
                            }
                        });
                    }
                    Cost::Send => {
                        measure!(r, {
                            for _ in 0..q {
                                measured.send(&data)?;
                            }
                        });
                        drain(&other, &mut sink, q, false)?;
                    }
                    Cost::SendMsg => {
                        measure!(r, {
                            for _ in 0..q {
                                let n = sys::encode_pktinfo_tos(&mut ctl, LOCAL, TOS);
                                sys::sendmsg(fd, &data, &ctl.0[..n], 0)?;
                            }
                        });
                        drain(&other, &mut sink, q, true)?;
                    }
                }
            }
        }
        Imp::Hostsock => {
            measured.set_nonblocking(true)?;
            runtime()?.block_on(async {
                let s = hostsock::UdpSocket::from_std(super::untimed(measured)?)?;
                settle().await;
                let mut ctl = Control::<128>::new();
                let cmsgs = [
                    Cmsg::PktInfoV4 {
                        ifindex: 0,
                        spec_dst: LOCAL,
                        addr: Ipv4Addr::UNSPECIFIED,
                    },
                    Cmsg::Tos(TOS),
                ];
                while let Some(q) = r.next() {
                    match kind {
                        Cost::Recv => {
                            fill(&other, &data, q)?;
                            measure!(r, {
                                for _ in 0..q {
                                    let n = s.recv(&mut buf).await?;
                                    check(&buf, n)?;
                                }
                            });
                        }
                        Cost::RecvMsg => {
                            fill(&other, &data, q)?;
                            measure!(r, {
                                for _ in 0..q {
                                    let meta = s
                                        .recv_msg(
                                            &mut [IoSliceMut::new(&mut buf)],
                                            &mut ctl.0,
                                            RecvFlags::EMPTY,
                                        )
                                        .await?;
                                    let (mut tos, mut dst) = (None, None);
                                    for m in meta.cmsgs() {
                                        match m {
                                            Cmsg::Tos(t) => tos = Some(t),
                                            Cmsg::PktInfoV4 { addr, .. } => dst = Some(addr),
                                            _ => {}
                                        }
                                    }
                                    check_msg(tos, dst)?;
                                    check(&buf, meta.len)?;
                                }
                            });
                        }
                        Cost::Send => {
                            measure!(r, {
                                for _ in 0..q {
                                    s.send(&data).await?;
                                }
                            });
                            drain(&other, &mut sink, q, false)?;
                        }
                        Cost::SendMsg => {
                            measure!(r, {
                                for _ in 0..q {
                                    s.send_msg(
                                        &[IoSlice::new(&data)],
                                        None,
                                        &cmsgs,
                                        SendFlags::EMPTY,
                                    )
                                    .await?;
                                }
                            });
                            drain(&other, &mut sink, q, true)?;
                        }
                    }
                }
                Ok::<_, io::Error>(())
            })?;
        }
        Imp::Tokio => {
            measured.set_nonblocking(true)?;
            runtime()?.block_on(async {
                let fd = measured.as_raw_fd();
                let (net, afd) = if msg {
                    (None, Some(sys::async_fd(measured)?))
                } else {
                    (Some(tokio::net::UdpSocket::from_std(measured)?), None)
                };
                settle().await;
                let mut ctl = Control::<64>::new();
                while let Some(q) = r.next() {
                    match (kind, &net, &afd) {
                        (Cost::Recv, Some(s), _) => {
                            fill(&other, &data, q)?;
                            measure!(r, {
                                for _ in 0..q {
                                    let n = s.recv(&mut buf).await?;
                                    check(&buf, n)?;
                                }
                            });
                        }
                        (Cost::RecvMsg, _, Some(s)) => {
                            fill(&other, &data, q)?;
                            measure!(r, {
                                for _ in 0..q {
                                    let (n, c) = s
                                        .async_io(Interest::READABLE, |_| {
                                            sys::recvmsg(fd, &mut buf, &mut ctl.0)
                                        })
                                        .await?;
                                    check(&buf, n)?;
                                    let d = sys::decode(&ctl.0[..c]);
                                    check_msg(d.tos, d.dst)?;
                                }
                            });
                        }
                        (Cost::Send, Some(s), _) => {
                            measure!(r, {
                                for _ in 0..q {
                                    s.send(&data).await?;
                                }
                            });
                            drain(&other, &mut sink, q, false)?;
                        }
                        (Cost::SendMsg, _, Some(s)) => {
                            measure!(r, {
                                for _ in 0..q {
                                    s.async_io(Interest::WRITABLE, |_| {
                                        let n = sys::encode_pktinfo_tos(&mut ctl, LOCAL, TOS);
                                        sys::sendmsg(fd, &data, &ctl.0[..n], 0)
                                    })
                                    .await?;
                                }
                            });
                            drain(&other, &mut sink, q, true)?;
                        }
                        _ => unreachable!(),
                    }
                }
                Ok::<_, io::Error>(())
            })?;
        }
    }
    Ok(Outcome {
        value: r.cpu_ns as f64 / r.done.max(1) as f64,
        sent: r.done,
        received: r.done,
        allocs: r.allocs,
        ..Outcome::default()
    })
}
