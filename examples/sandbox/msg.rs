//! The data calls: sendto, recvfrom, sendmsg, sendmmsg, recvmsg. The
//! guest's `msghdr`, iovecs, names and control bytes are read from its
//! memory, the call goes through the raw layer, and what Linux writes back
//! (the payload across the iovecs, the name and its length, the control
//! bytes and `msg_controllen`, `msg_flags`, each `msg_len`) is written back.

use std::io::{IoSlice, IoSliceMut};

use hostsock::raw::{MAX_GUEST_CONTROL, RawSocket, RawTransmit, SendError};

use crate::guest_mem::{self, MsgHdr};
use crate::serve::{Call, MAX_COPY, MAX_IOV, MMSG_BATCH, Out, Reply, SOCKADDR_MAX, code};
use crate::sys;

/// What a send takes from a guest `msghdr`.
struct SendParts {
    data: Vec<u8>,
    to: Vec<u8>,
    control: Vec<u8>,
}

impl Call<'_> {
    pub(crate) fn sent(&mut self, r: Result<usize, SendError>) -> Out {
        match r {
            Ok(n) => Ok(Reply::Value(n as i64)),
            Err(e) => {
                if e.raise_sigpipe {
                    if let Ok(pidfd) = self.pidfd() {
                        let _ = sys::pidfd_send_signal(pidfd, libc::SIGPIPE);
                    }
                }
                Err(code(e.errno))
            }
        }
    }

    pub(crate) async fn sendto(&mut self, rs: &RawSocket) -> Out {
        let (buf, len, flags, to_at) = (self.arg(1), self.arg(2), self.int(3), self.arg(4));
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(MAX_COPY);
        let to = if to_at != 0 {
            self.sockaddr(4, 5)?
        } else {
            Vec::new()
        };
        let data = self.mem()?.read(buf, len)?;
        self.valid()?;
        let r = self.while_waiting(rs.sendto(&data, flags, &to)).await?;
        self.sent(r)
    }

    pub(crate) async fn recvfrom(&mut self, rs: &RawSocket) -> Out {
        let (buf_at, len, flags, addr_at, len_at) = (
            self.arg(1),
            self.arg(2),
            self.int(3),
            self.arg(4),
            self.arg(5),
        );
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(MAX_COPY);
        let room = if addr_at != 0 {
            let n = self.mem()?.read_i32(len_at)?;
            usize::try_from(n).map_err(|_| libc::EINVAL)?
        } else {
            self.mem()?;
            0
        };
        self.valid()?;
        let mut buf = vec![0u8; len];
        let got = self
            .while_waiting(rs.recvmsg(&mut [IoSliceMut::new(&mut buf)], flags, addr_at != 0, 0))
            .await?
            .map_err(code)?;
        let mem = self.mem()?;
        mem.write(buf_at, &buf[..got.len.min(len)])?;
        if addr_at != 0 {
            let addr = got.addr();
            mem.write(addr_at, &addr[..addr.len().min(room)])?;
            mem.write(len_at, &(addr.len() as u32).to_ne_bytes())?;
        }
        Ok(Reply::Value(got.len as i64))
    }

    /// The parts of a `msghdr` a send needs: payload, destination,
    /// control bytes.
    fn send_parts(&mut self, hdr: &MsgHdr) -> Result<SendParts, i32> {
        if hdr.iovlen > MAX_IOV {
            return Err(libc::EMSGSIZE);
        }
        if (hdr.namelen as i32) < 0 {
            return Err(libc::EINVAL);
        }
        let mem = self.mem()?;
        let iov = guest_mem::iovecs(mem, hdr.iov, hdr.iovlen as usize)?;
        let data = guest_mem::gather(mem, &iov, MAX_COPY)?;
        let to = if hdr.name != 0 {
            // Linux cuts a longer name to sockaddr_storage.
            mem.read(hdr.name, (hdr.namelen as usize).min(SOCKADDR_MAX))?
        } else {
            Vec::new()
        };
        let control_len = usize::try_from(hdr.controllen).unwrap_or(usize::MAX);
        if control_len > MAX_GUEST_CONTROL {
            return Err(libc::ENOBUFS);
        }
        let control = if control_len > 0 {
            mem.read(hdr.control, control_len)?
        } else {
            Vec::new()
        };
        Ok(SendParts { data, to, control })
    }

    pub(crate) async fn sendmsg(&mut self, rs: &RawSocket) -> Out {
        let (at, flags) = (self.arg(1), self.int(2));
        let hdr = MsgHdr::parse(&self.mem()?.read(at, MsgHdr::SIZE)?);
        let p = self.send_parts(&hdr)?;
        self.valid()?;
        let r = self
            .while_waiting(rs.sendmsg(&[IoSlice::new(&p.data)], &p.to, &p.control, flags))
            .await?;
        self.sent(r)
    }

    pub(crate) async fn sendmmsg(&mut self, rs: &RawSocket) -> Out {
        const ENTRY: usize = MsgHdr::SIZE + 8;
        let (at, flags) = (self.arg(1), self.int(3));
        let count = (self.int(2) as u32 as usize).min(MMSG_BATCH);
        if count == 0 {
            return Ok(Reply::Value(0));
        }
        let raw = self.mem()?.read(at, count * ENTRY)?;
        let mut parts = Vec::with_capacity(count);
        for entry in raw.chunks_exact(ENTRY) {
            match self.send_parts(&MsgHdr::parse(entry)) {
                Ok(p) => parts.push(p),
                // As Linux: what precedes a bad message is still sent.
                Err(_) if !parts.is_empty() => break,
                Err(e) => return Err(e),
            }
        }
        self.valid()?;
        let msgs: Vec<RawTransmit<'_>> = parts
            .iter()
            .map(|p| RawTransmit {
                data: &p.data,
                to: &p.to,
                control: &p.control,
            })
            .collect();
        let r = self.while_waiting(rs.sendmmsg(&msgs, flags)).await?;
        if let Ok(sent) = r {
            let mem = self.mem()?;
            for (i, p) in parts.iter().take(sent).enumerate() {
                let len_at = at + (i * ENTRY + MsgHdr::SIZE) as u64;
                mem.write(len_at, &(p.data.len() as u32).to_ne_bytes())?;
            }
        }
        self.sent(r)
    }

    pub(crate) async fn recvmsg(&mut self, rs: &RawSocket) -> Out {
        let (at, flags) = (self.arg(1), self.int(2));
        let mem = self.mem()?;
        let hdr = MsgHdr::parse(&mem.read(at, MsgHdr::SIZE)?);
        if hdr.iovlen > MAX_IOV {
            return Err(libc::EMSGSIZE);
        }
        let iov = guest_mem::iovecs(mem, hdr.iov, hdr.iovlen as usize)?;
        let len = iov
            .iter()
            .fold(0usize, |t, (_, l)| t.saturating_add(*l))
            .min(MAX_COPY);
        let control_len = if hdr.control != 0 {
            usize::try_from(hdr.controllen).unwrap_or(usize::MAX)
        } else {
            0
        };
        self.valid()?;
        let mut buf = vec![0u8; len];
        let got = self
            .while_waiting(rs.recvmsg(
                &mut [IoSliceMut::new(&mut buf)],
                flags,
                hdr.name != 0,
                control_len,
            ))
            .await?
            .map_err(code)?;
        let mem = self.mem()?;
        guest_mem::scatter(mem, &iov, &buf[..got.len.min(len)])?;
        if hdr.name != 0 {
            let addr = got.addr();
            let room = hdr.namelen as usize;
            mem.write(hdr.name, &addr[..addr.len().min(room)])?;
            mem.write(at + MsgHdr::NAMELEN_AT, &(addr.len() as u32).to_ne_bytes())?;
        }
        let control = got.control();
        mem.write(hdr.control, control)?;
        mem.write(
            at + MsgHdr::CONTROLLEN_AT,
            &(control.len() as u64).to_ne_bytes(),
        )?;
        mem.write(at + MsgHdr::FLAGS_AT, &got.flags.to_ne_bytes())?;
        Ok(Reply::Value(got.len as i64))
    }
}
