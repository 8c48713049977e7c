//! One-way UDP floods: single datagrams, messages with control messages,
//! batches, GSO/GRO.
//!
//! A flood runs its sender on CPU 0 and its receiver on CPU 1 (each thread
//! with its own current-thread runtime for the async implementations, as
//! the raw variant has two blocking threads). The sender stops after a
//! count or a time limit, then sends end markers every millisecond until
//! the receiver has seen one; the receiver counts what arrived (the loss is
//! what was sent and never arrived). The rate is datagrams received per
//! second, from the sender's start to the last data datagram received.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, UdpSocket as StdUdp};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use hostsock::cmsg::Cmsg;
use hostsock::msg::{RecvFlags, SendFlags};
use hostsock::{RecvSlot, Transmit};
use tokio::io::Interest;

use super::sys::{self, Control};
use super::{
    END, GRACE, Imp, Outcome, Params, RecvResult, SendResult, allocs, count_segments, err, join,
    payload, runtime, send_markers, settle, udp_pair,
};

/// Datagrams per batch call and per GSO send.
pub const BATCH: usize = 32;
/// Receive slots of a GRO receive (each up to 64 KiB of coalesced
/// segments).
const GRO_SLOTS: usize = 8;
const GRO_BUF: usize = 65536;
/// The TOS byte the message floods send and check.
const TOS: u8 = 0x10;
/// The source (PKTINFO `spec_dst`) and expected destination.
const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Which flood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    /// `send`/`recv`, one datagram per call.
    Single,
    /// `send_msg` with `IP_PKTINFO` + `IP_TOS`, `recv_msg` with
    /// `IP_PKTINFO` + `IP_TOS` received and decoded.
    Msg,
    /// 32 datagrams per `sendmmsg`/`recvmmsg`.
    Batch,
    /// 32 segments per GSO send, received with GRO (8 slots of 64 KiB).
    Gso,
}

impl Flood {
    fn cap(self) -> u64 {
        match self {
            Flood::Single | Flood::Msg => 5_000_000,
            Flood::Batch => 20_000_000,
            Flood::Gso => 200_000_000,
        }
    }

    /// Datagrams one send call carries.
    fn per_send(self) -> u64 {
        match self {
            Flood::Single | Flood::Msg => 1,
            Flood::Batch | Flood::Gso => BATCH as u64,
        }
    }
}

/// One flood of `size`-byte datagrams through `imp`.
pub fn flood(imp: Imp, kind: Flood, size: usize, p: &Params) -> io::Result<Outcome> {
    let (tx, rx) = udp_pair()?;
    if kind == Flood::Msg {
        sys::set_int(&rx, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
        sys::set_int(&rx, libc::IPPROTO_IP, libc::IP_RECVTOS, 1)?;
    }
    if kind == Flood::Gso && imp != Imp::Hostsock {
        sys::set_int(&rx, libc::SOL_UDP, libc::UDP_GRO, 1)?;
    }
    if imp == Imp::Raw {
        sys::set_recv_timeout(&rx, p.time + GRACE)?;
    } else {
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
    }
    let barrier = Arc::new(Barrier::new(2));
    let done = Arc::new(AtomicBool::new(false));
    let p = *p;
    let r = {
        let (barrier, done) = (barrier.clone(), done.clone());
        std::thread::spawn(move || {
            sys::pin_to(1);
            let r = receiver(imp, kind, rx, &p, &barrier);
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    let s = std::thread::spawn(move || {
        sys::pin_to(0);
        sender(imp, kind, size, tx, &p, &barrier, &done)
    });
    let sent = join(s);
    let got = join(r);
    let ((sent, t0, a0), (received, last, a1)) = (sent?, got?);
    let secs = last.saturating_duration_since(t0).as_secs_f64();
    Ok(Outcome {
        value: if secs > 0.0 {
            received as f64 / secs
        } else {
            0.0
        },
        sent,
        received,
        allocs: a1.saturating_sub(a0),
        ..Outcome::default()
    })
}

fn sender(
    imp: Imp,
    kind: Flood,
    size: usize,
    tx: StdUdp,
    p: &Params,
    barrier: &Barrier,
    done: &AtomicBool,
) -> SendResult {
    let data = payload(size);
    let gso = data.repeat(BATCH);
    let fd = tx.as_raw_fd();
    let markers = || send_markers(&[fd], || done.load(Ordering::SeqCst));
    let (cap, per) = (kind.cap(), kind.per_send());
    match imp {
        Imp::Raw => {
            let mut mm = sys::MmsgSend::new(&data, BATCH);
            let (mut ctl, mut seg) = (Control::<64>::new(), Control::<32>::new());
            let r = send_loop!(p, cap, barrier, per, {
                match kind {
                    Flood::Single => {
                        tx.send(&data)?;
                    }
                    Flood::Msg => {
                        let n = sys::encode_pktinfo_tos(&mut ctl, LOCAL, TOS);
                        sys::sendmsg(fd, &data, &ctl.0[..n], 0)?;
                    }
                    Flood::Batch => {
                        let mut off = 0;
                        while off < BATCH {
                            off += mm.send(fd, off, BATCH)?;
                        }
                    }
                    Flood::Gso => {
                        let n = sys::encode_segment(&mut seg, size as u16);
                        sys::sendmsg(fd, &gso, &seg.0[..n], 0)?;
                    }
                }
            });
            markers();
            Ok(r)
        }
        Imp::Hostsock => runtime()?.block_on(async {
            let s = hostsock::UdpSocket::from_std(super::untimed(tx)?)?;
            settle().await;
            let cmsgs = [
                Cmsg::PktInfoV4 {
                    ifindex: 0,
                    spec_dst: LOCAL,
                    addr: Ipv4Addr::UNSPECIFIED,
                },
                Cmsg::Tos(TOS),
            ];
            let batch = [Transmit::new(&data, None); BATCH];
            let r = send_loop!(p, cap, barrier, per, {
                match kind {
                    Flood::Single => {
                        s.send(&data).await?;
                    }
                    Flood::Msg => {
                        s.send_msg(&[IoSlice::new(&data)], None, &cmsgs, SendFlags::EMPTY)
                            .await?;
                    }
                    Flood::Batch => {
                        let mut off = 0;
                        while off < BATCH {
                            off += s.send_batch(&batch[off..]).await?;
                        }
                    }
                    Flood::Gso => {
                        s.send_gso(&gso, size as u16, None).await?;
                    }
                }
            });
            markers();
            Ok::<_, io::Error>(r)
        }),
        Imp::Tokio if kind == Flood::Single => runtime()?.block_on(async {
            let s = tokio::net::UdpSocket::from_std(tx)?;
            settle().await;
            let r = send_loop!(p, cap, barrier, per, {
                s.send(&data).await?;
            });
            markers();
            Ok::<_, io::Error>(r)
        }),
        Imp::Tokio => runtime()?.block_on(async {
            let s = sys::async_fd(tx)?;
            settle().await;
            let mut mm = sys::MmsgSend::new(&data, BATCH);
            let (mut ctl, mut seg) = (Control::<64>::new(), Control::<32>::new());
            let r = send_loop!(p, cap, barrier, per, {
                match kind {
                    Flood::Single => unreachable!(),
                    Flood::Msg => {
                        s.async_io(Interest::WRITABLE, |s| {
                            let n = sys::encode_pktinfo_tos(&mut ctl, LOCAL, TOS);
                            sys::sendmsg(s.as_raw_fd(), &data, &ctl.0[..n], 0)
                        })
                        .await?;
                    }
                    Flood::Batch => {
                        let mut off = 0;
                        while off < BATCH {
                            off += s
                                .async_io(Interest::WRITABLE, |s| {
                                    mm.send(s.as_raw_fd(), off, BATCH)
                                })
                                .await?;
                        }
                    }
                    Flood::Gso => {
                        s.async_io(Interest::WRITABLE, |s| {
                            let n = sys::encode_segment(&mut seg, size as u16);
                            sys::sendmsg(s.as_raw_fd(), &gso, &seg.0[..n], 0)
                        })
                        .await?;
                    }
                }
            });
            markers();
            Ok::<_, io::Error>(r)
        }),
    }
}

/// Counts one received message of a message flood: data with the right
/// TOS and destination counts; anything else is an error.
fn check_msg(buf: &[u8], tos: Option<u8>, dst: Option<Ipv4Addr>) -> io::Result<(u64, bool)> {
    if buf.first() == Some(&END) {
        return Ok((0, true));
    }
    if tos != Some(TOS) || dst != Some(LOCAL) {
        return Err(err(format!(
            "control messages wrong: tos {tos:?}, dst {dst:?}"
        )));
    }
    Ok((1, false))
}

fn receiver(imp: Imp, kind: Flood, rx: StdUdp, p: &Params, barrier: &Barrier) -> RecvResult {
    let wait = p.time + GRACE;
    let mut buf = vec![0u8; 2048];
    match imp {
        Imp::Raw => {
            let fd = rx.as_raw_fd();
            let mut ctl = Control::<64>::new();
            let mut mm = match kind {
                Flood::Gso => sys::MmsgRecv::new(GRO_SLOTS, GRO_BUF, true),
                _ => sys::MmsgRecv::new(BATCH, 2048, false),
            };
            Ok(recv_loop!(barrier.wait(), {
                match kind {
                    Flood::Single => {
                        let n = rx.recv(&mut buf)?;
                        count_segments(&buf[..n], n)
                    }
                    Flood::Msg => {
                        let (n, c) = sys::recvmsg(fd, &mut buf, &mut ctl.0)?;
                        let d = sys::decode(&ctl.0[..c]);
                        check_msg(&buf[..n], d.tos, d.dst)?
                    }
                    Flood::Batch | Flood::Gso => {
                        let k = mm.recv(fd, libc::MSG_WAITFORONE)?;
                        count_mm(&mm, k)
                    }
                }
            }))
        }
        Imp::Hostsock => runtime()?.block_on(async {
            let s = hostsock::UdpSocket::from_std(super::untimed(rx)?)?;
            settle().await;
            if kind == Flood::Gso && !s.enable_gro()? {
                return Err(err("no UDP GRO on this kernel"));
            }
            let mut ctl = Control::<128>::new();
            let (n_slots, slot_len) = match kind {
                Flood::Gso => (GRO_SLOTS, GRO_BUF),
                _ => (BATCH, 2048),
            };
            let mut bufs = vec![0u8; n_slots * slot_len];
            let mut ctls = vec![0u8; n_slots * 64];
            // Control space only where GRO reports segment sizes, as the
            // other implementations do.
            let ctl_len = if kind == Flood::Gso { 64 } else { 0 };
            let mut slots: Vec<RecvSlot<'_>> = bufs
                .chunks_mut(slot_len)
                .zip(ctls.chunks_mut(64))
                .map(|(b, c)| RecvSlot::new(b, &mut c[..ctl_len]))
                .collect();
            let fut = async {
                Ok::<_, io::Error>(recv_loop!(barrier.wait(), {
                    match kind {
                        Flood::Single => {
                            let n = s.recv(&mut buf).await?;
                            count_segments(&buf[..n], n)
                        }
                        Flood::Msg => {
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
                            check_msg(&buf[..meta.len], tos, dst)?
                        }
                        Flood::Batch | Flood::Gso => {
                            let k = s.recv_batch(&mut slots).await?;
                            let (mut n, mut end) = (0, false);
                            for sl in &slots[..k] {
                                let seg = sl.gro_segment().map_or(sl.len(), usize::from);
                                let (a, e) = count_segments(sl.data(), seg);
                                n += a;
                                end |= e;
                            }
                            (n, end)
                        }
                    }
                }))
            };
            tokio::time::timeout(wait, fut)
                .await
                .map_err(|_| err("receiver timed out"))?
        }),
        Imp::Tokio if kind == Flood::Single => runtime()?.block_on(async {
            let s = tokio::net::UdpSocket::from_std(rx)?;
            settle().await;
            let fut = async {
                Ok::<_, io::Error>(recv_loop!(barrier.wait(), {
                    let n = s.recv(&mut buf).await?;
                    count_segments(&buf[..n], n)
                }))
            };
            tokio::time::timeout(wait, fut)
                .await
                .map_err(|_| err("receiver timed out"))?
        }),
        Imp::Tokio => runtime()?.block_on(async {
            let s = sys::async_fd(rx)?;
            settle().await;
            let mut ctl = Control::<64>::new();
            let mut mm = match kind {
                Flood::Gso => sys::MmsgRecv::new(GRO_SLOTS, GRO_BUF, true),
                _ => sys::MmsgRecv::new(BATCH, 2048, false),
            };
            let fut = async {
                Ok::<_, io::Error>(recv_loop!(barrier.wait(), {
                    match kind {
                        Flood::Single => unreachable!(),
                        Flood::Msg => {
                            let (n, c) = s
                                .async_io(Interest::READABLE, |s| {
                                    sys::recvmsg(s.as_raw_fd(), &mut buf, &mut ctl.0)
                                })
                                .await?;
                            let d = sys::decode(&ctl.0[..c]);
                            check_msg(&buf[..n], d.tos, d.dst)?
                        }
                        Flood::Batch | Flood::Gso => {
                            let k = s
                                .async_io(Interest::READABLE, |s| mm.recv(s.as_raw_fd(), 0))
                                .await?;
                            count_mm(&mm, k)
                        }
                    }
                }))
            };
            tokio::time::timeout(wait, fut)
                .await
                .map_err(|_| err("receiver timed out"))?
        }),
    }
}

/// Counts the data datagrams in the first `k` slots of a `recvmmsg` (GRO
/// buffers cut at their segment size).
fn count_mm(mm: &sys::MmsgRecv, k: usize) -> (u64, bool) {
    let (mut n, mut end) = (0, false);
    for i in 0..k {
        let data = mm.data(i);
        let seg = sys::decode(mm.control(i))
            .gro
            .map_or(data.len(), usize::from);
        let (a, e) = count_segments(data, seg);
        n += a;
        end |= e;
    }
    (n, end)
}
