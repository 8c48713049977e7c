//! The syscalls the comparison variants need where neither std nor tokio has
//! an API: socket options, `sendmsg`/`recvmsg` with control messages,
//! `sendmmsg`/`recvmmsg`, the thread's CPU clock. The tokio variants call
//! these inside `AsyncFd::async_io`, the raw variants on blocking fds.
//!
//! Control messages are encoded and decoded by hand on 8-byte-aligned
//! buffers in Linux's 64-bit layout (16-byte `cmsghdr`, payloads padded to
//! 8), which is what a careful user of libc writes; no unsafe is needed for
//! that part.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// `sizeof(struct cmsghdr)` on 64-bit Linux.
const HDR: usize = 16;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn check_len(rc: isize) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// `setsockopt(2)` of an `int`.
pub fn set_int(fd: &impl AsRawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is a live `c_int` and `len` is its size; the kernel
    // only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            len,
        )
    };
    check(rc)
}

/// Raises `SO_RCVBUF` (or `SO_SNDBUF`) to `bytes`, past `rmem_max` with the
/// `*FORCE` option when the process may (root), else as far as allowed.
pub fn raise_buffer(fd: &impl AsRawFd, send: bool, bytes: i32) -> io::Result<()> {
    let (force, plain) = if send {
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)
    } else {
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF)
    };
    set_int(fd, libc::SOL_SOCKET, force, bytes)
        .or_else(|_| set_int(fd, libc::SOL_SOCKET, plain, bytes))
}

/// `SO_RCVTIMEO`: a blocking receive gives up after `d` (a safety net for
/// the raw variants: no loop may hang).
pub fn set_recv_timeout(fd: &impl AsRawFd, d: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    let len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: `tv` is a live `timeval` and `len` its size; read only.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            len,
        )
    };
    check(rc)
}

/// Nanoseconds of CPU this thread has used (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live `timespec` the call fills.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A control-message buffer, aligned as the kernel's `cmsghdr` wants.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct Control<const N: usize>(pub [u8; N]);

impl<const N: usize> Control<N> {
    /// All zero.
    pub const fn new() -> Self {
        Control([0; N])
    }
}

/// Appends one control message at `at`; returns the new length.
fn push_cmsg(buf: &mut [u8], at: usize, level: i32, ty: i32, payload: &[u8]) -> usize {
    let len = HDR + payload.len();
    buf[at..at + 8].copy_from_slice(&(len as u64).to_ne_bytes());
    buf[at + 8..at + 12].copy_from_slice(&level.to_ne_bytes());
    buf[at + 12..at + 16].copy_from_slice(&ty.to_ne_bytes());
    buf[at + HDR..at + len].copy_from_slice(payload);
    let end = at + ((len + 7) & !7);
    buf[at + len..end].fill(0);
    end
}

/// Encodes `IP_PKTINFO` (source `spec_dst`, any interface) and `IP_TOS`
/// into `c`; returns the control length.
pub fn encode_pktinfo_tos(c: &mut Control<64>, spec_dst: Ipv4Addr, tos: u8) -> usize {
    // struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
    let mut info = [0u8; 12];
    info[4..8].copy_from_slice(&spec_dst.octets());
    let at = push_cmsg(&mut c.0, 0, libc::IPPROTO_IP, libc::IP_PKTINFO, &info);
    push_cmsg(
        &mut c.0,
        at,
        libc::IPPROTO_IP,
        libc::IP_TOS,
        &i32::from(tos).to_ne_bytes(),
    )
}

/// Encodes `UDP_SEGMENT` (GSO segment size) into `c`; returns the length.
pub fn encode_segment(c: &mut Control<32>, segment: u16) -> usize {
    push_cmsg(
        &mut c.0,
        0,
        libc::SOL_UDP,
        libc::UDP_SEGMENT,
        &segment.to_ne_bytes(),
    )
}

/// What the received control messages said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// `IP_TOS`.
    pub tos: Option<u8>,
    /// `IP_PKTINFO`'s destination address.
    pub dst: Option<Ipv4Addr>,
    /// `UDP_GRO`'s segment size.
    pub gro: Option<u16>,
}

/// Walks received control bytes (each length checked) and picks out TOS,
/// PKTINFO and GRO.
pub fn decode(control: &[u8]) -> Decoded {
    let mut d = Decoded::default();
    let mut at = 0;
    while at + HDR <= control.len() {
        let len = u64::from_ne_bytes(control[at..at + 8].try_into().unwrap()) as usize;
        if len < HDR || at + len > control.len() {
            break;
        }
        let level = i32::from_ne_bytes(control[at + 8..at + 12].try_into().unwrap());
        let ty = i32::from_ne_bytes(control[at + 12..at + 16].try_into().unwrap());
        let p = &control[at + HDR..at + len];
        match (level, ty) {
            (libc::IPPROTO_IP, libc::IP_TOS) if !p.is_empty() => d.tos = Some(p[0]),
            (libc::IPPROTO_IP, libc::IP_PKTINFO) if p.len() >= 12 => {
                d.dst = Some(Ipv4Addr::new(p[8], p[9], p[10], p[11]));
            }
            (libc::SOL_UDP, libc::UDP_GRO) if p.len() >= 4 => {
                let n = i32::from_ne_bytes(p[..4].try_into().unwrap());
                d.gro = u16::try_from(n).ok();
            }
            _ => {}
        }
        at += (len + 7) & !7;
    }
    d
}

/// `sendmsg(2)` of `data` to the connected peer with `control`.
pub fn sendmsg(fd: RawFd, data: &[u8], control: &[u8], flags: i32) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: all zero is a valid `msghdr` (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !control.is_empty() {
        msg.msg_control = control.as_ptr().cast_mut().cast();
        msg.msg_controllen = control.len() as _;
    }
    // SAFETY: `msg` points at `iov` (over `data`) and at `control`, all live
    // for the call with the lengths given; sendmsg(2) only reads them.
    let rc = unsafe { libc::sendmsg(fd, &msg, flags | libc::MSG_NOSIGNAL) };
    check_len(rc)
}

/// `recvmsg(2)` into `buf` with `control`, the source address into a
/// `sockaddr_storage` (as `recv_msg` gives it); returns the bytes and the
/// control length.
pub fn recvmsg(fd: RawFd, buf: &mut [u8], control: &mut [u8]) -> io::Result<(usize, usize)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all zero is a valid `sockaddr_storage`.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: all zero is a valid `msghdr`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    // SAFETY: `msg` points at `name`, at `iov` (over `buf`) and at
    // `control`, all borrowed mutably for the call with their lengths; the
    // kernel writes at most those lengths.
    let rc = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    let n = check_len(rc)?;
    Ok((n, (msg.msg_controllen as usize).min(control.len())))
}

/// `send(2)` of `data`, not waiting, errors ignored: the end markers.
pub fn send_now(fd: RawFd, data: &[u8]) {
    // SAFETY: `data` is live for the call and only read.
    let _ = unsafe {
        libc::send(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
}

/// Headers for `sendmmsg(2)` of `n` copies of one payload to the connected
/// peer. Built in the thread that uses it (it holds raw pointers into
/// itself, so it is boxed and never moved out).
pub struct MmsgSend<'a> {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    _data: &'a [u8],
}

impl<'a> MmsgSend<'a> {
    /// `n` messages, each `data`.
    pub fn new(data: &'a [u8], n: usize) -> Box<MmsgSend<'a>> {
        let iov = libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        };
        // SAFETY: all zero is a valid `mmsghdr`.
        let zero: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let mut m = Box::new(MmsgSend {
            hdrs: vec![zero; n],
            iovs: vec![iov; n],
            _data: data,
        });
        let MmsgSend { hdrs, iovs, .. } = &mut *m;
        for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        m
    }

    /// `sendmmsg(2)` of messages `from..to`; returns how many went.
    pub fn send(&mut self, fd: RawFd, from: usize, to: usize) -> io::Result<usize> {
        let hdrs = &mut self.hdrs[from..to];
        // SAFETY: each header points at one iovec of `self.iovs` over the
        // payload, which `'a` keeps alive; the vectors are never resized.
        // The kernel reads them and writes `msg_len` into the headers.
        let rc = unsafe {
            libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr(),
                hdrs.len() as libc::c_uint,
                libc::MSG_NOSIGNAL,
            )
        };
        check(rc).map(|()| rc as usize)
    }
}

/// Buffers and headers for `recvmmsg(2)` into `n` slots of `size` bytes with
/// `control` bytes of control space each.
pub struct MmsgRecv {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    bufs: Vec<u8>,
    controls: Vec<Control<64>>,
    size: usize,
    control: bool,
}

impl MmsgRecv {
    /// `n` slots of `size` bytes; `control`: ask for control messages.
    pub fn new(n: usize, size: usize, control: bool) -> Box<MmsgRecv> {
        // SAFETY: all zero is a valid `mmsghdr`.
        let zero: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let mut m = Box::new(MmsgRecv {
            hdrs: vec![zero; n],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                n
            ],
            bufs: vec![0; n * size],
            controls: vec![Control::new(); n],
            size,
            control,
        });
        let MmsgRecv {
            hdrs, iovs, bufs, ..
        } = &mut *m;
        for (i, (h, iov)) in hdrs.iter_mut().zip(iovs.iter_mut()).enumerate() {
            iov.iov_base = bufs[i * size..].as_mut_ptr().cast();
            iov.iov_len = size;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        m
    }

    /// One `recvmmsg(2)` into all slots (`flags`: `MSG_WAITFORONE` for a
    /// blocking fd); returns how many were filled.
    pub fn recv(&mut self, fd: RawFd, flags: i32) -> io::Result<usize> {
        for (h, c) in self.hdrs.iter_mut().zip(self.controls.iter_mut()) {
            if self.control {
                h.msg_hdr.msg_control = c.0.as_mut_ptr().cast();
                h.msg_hdr.msg_controllen = c.0.len() as _;
            }
            h.msg_hdr.msg_flags = 0;
        }
        // SAFETY: each header points at its own iovec over its own part of
        // `self.bufs` and at its own control buffer, with their lengths; all
        // are owned by `self`, borrowed mutably, never resized. No timeout.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        check(rc).map(|()| rc as usize)
    }

    /// The bytes slot `i` received.
    pub fn data(&self, i: usize) -> &[u8] {
        let len = (self.hdrs[i].msg_len as usize).min(self.size);
        &self.bufs[i * self.size..i * self.size + len]
    }

    /// The control bytes slot `i` received.
    pub fn control(&self, i: usize) -> &[u8] {
        let len = self.hdrs[i].msg_hdr.msg_controllen.min(64);
        &self.controls[i].0[..len]
    }
}

/// Registers a std UDP socket with the current tokio reactor (the `AsyncFd`
/// the tokio variants use where `tokio::net` has no API).
pub fn async_fd(
    sock: std::net::UdpSocket,
) -> io::Result<tokio::io::unix::AsyncFd<std::net::UdpSocket>> {
    // SAFETY: the `UdpSocket` owns its fd, which stays open and names the
    // same socket until the `AsyncFd` (which owns the `UdpSocket`) is
    // dropped; `as_raw_fd` always returns that fd.
    unsafe { tokio::io::unix::AsyncFd::register(sock) }.map_err(|e| e.into_parts().1)
}

/// Pins the calling thread to CPU `cpu` (modulo the CPUs there are), so that
/// every implementation runs on the same placement; an error is ignored
/// (the run is then only less repeatable).
pub fn pin_to(cpu: usize) {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let n = *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // SAFETY: all zero is a valid, empty `cpu_set_t`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live `cpu_set_t` and the index is below the
    // number of CPUs, far below `CPU_SETSIZE`.
    unsafe { libc::CPU_SET(cpu % n, &mut set) };
    // SAFETY: `set` is a live `cpu_set_t` of the size given; pid 0 is this
    // thread.
    let _ = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}
