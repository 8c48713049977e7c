//! The guest's memory, through `/proc/TID/mem`.
//!
//! The file is opened once per notification and stays bound to the address
//! space the thread had when it was opened: if the thread dies and its id
//! is reused, reads and writes fail rather than touch another process. The
//! supervisor still checks `SECCOMP_IOCTL_NOTIF_ID_VALID` after opening it
//! (so the file belongs to the thread that made the call) and after reading
//! (so what it read is what the waiting call passed).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

/// What the guest reads and writes its arguments through. Every failure is
/// `EFAULT`, as the kernel answers for a bad pointer.
#[derive(Debug)]
pub struct GuestMem {
    file: File,
}

impl GuestMem {
    /// Opens `/proc/TID/mem` for reading and writing.
    pub fn open(tid: u32) -> std::io::Result<GuestMem> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{tid}/mem"))?;
        Ok(GuestMem { file })
    }

    /// `len` bytes at `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, i32> {
        let mut buf = vec![0u8; len];
        self.read_into(addr, &mut buf)?;
        Ok(buf)
    }

    /// Fills `buf` from `addr`.
    pub fn read_into(&self, addr: u64, buf: &mut [u8]) -> Result<(), i32> {
        if buf.is_empty() {
            return Ok(());
        }
        if addr == 0 {
            return Err(libc::EFAULT);
        }
        self.file.read_exact_at(buf, addr).map_err(|_| libc::EFAULT)
    }

    /// An `int` (or `socklen_t`) at `addr`.
    pub fn read_i32(&self, addr: u64) -> Result<i32, i32> {
        let mut b = [0u8; 4];
        self.read_into(addr, &mut b)?;
        Ok(i32::from_ne_bytes(b))
    }

    /// Writes `bytes` at `addr`.
    pub fn write(&self, addr: u64, bytes: &[u8]) -> Result<(), i32> {
        if bytes.is_empty() {
            return Ok(());
        }
        if addr == 0 {
            return Err(libc::EFAULT);
        }
        self.file
            .write_all_at(bytes, addr)
            .map_err(|_| libc::EFAULT)
    }
}

/// `struct msghdr` as x86_64 lays it out (56 bytes).
#[derive(Clone, Copy, Debug, Default)]
pub struct MsgHdr {
    pub name: u64,
    pub namelen: u32,
    pub iov: u64,
    pub iovlen: u64,
    pub control: u64,
    pub controllen: u64,
}

impl MsgHdr {
    pub const SIZE: usize = 56;
    /// Offsets of the fields the kernel writes back on receive.
    pub const NAMELEN_AT: u64 = 8;
    pub const CONTROLLEN_AT: u64 = 40;
    pub const FLAGS_AT: u64 = 48;

    pub fn parse(b: &[u8]) -> MsgHdr {
        MsgHdr {
            name: u64_at(b, 0),
            namelen: u32::from_ne_bytes(b[8..12].try_into().expect("4 bytes")),
            iov: u64_at(b, 16),
            iovlen: u64_at(b, 24),
            control: u64_at(b, 32),
            controllen: u64_at(b, 40),
        }
    }
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The guest's `iovec`s, as (base, len) pairs.
pub fn iovecs(mem: &GuestMem, at: u64, count: usize) -> Result<Vec<(u64, usize)>, i32> {
    let raw = mem.read(at, count * 16)?;
    raw.chunks_exact(16)
        .map(|c| {
            let len = u64_at(c, 8);
            // Linux: a total beyond SSIZE_MAX is EINVAL.
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= isize::MAX as usize)
                .ok_or(libc::EINVAL)?;
            Ok((u64_at(c, 0), len))
        })
        .collect()
}

/// The first `cap` bytes the `iovecs` point at, in one buffer.
pub fn gather(mem: &GuestMem, iovecs: &[(u64, usize)], cap: usize) -> Result<Vec<u8>, i32> {
    let total = iovecs
        .iter()
        .fold(0usize, |t, (_, l)| t.saturating_add(*l))
        .min(cap);
    let mut out = vec![0u8; total];
    let mut at = 0;
    for &(base, len) in iovecs {
        if at == total {
            break;
        }
        let n = len.min(total - at);
        mem.read_into(base, &mut out[at..at + n])?;
        at += n;
    }
    Ok(out)
}

/// Writes `data` across the `iovecs`, in order.
pub fn scatter(mem: &GuestMem, iovecs: &[(u64, usize)], data: &[u8]) -> Result<(), i32> {
    let mut at = 0;
    for &(base, len) in iovecs {
        if at == data.len() {
            break;
        }
        let n = len.min(data.len() - at);
        mem.write(base, &data[at..at + n])?;
        at += n;
    }
    Ok(())
}
