//! The only module with `unsafe`: thin wrappers of the syscalls the typed and
//! raw layers need, each one syscall, each `unsafe` block justified.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

use socket2::{SockAddr, Socket};
use tokio::io::unix::AsyncFd;
use tokio::io::{Interest, ReadBuf};

/// Views an initialised byte buffer as possibly-uninitialised bytes, for the
/// receive calls below.
fn as_uninit(buf: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`. The slice is only
    // handed to recv(2)/recvfrom(2) here, which let the kernel write bytes
    // into it and never write uninitialised values, so the caller's
    // initialised buffer stays initialised.
    unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) }
}

/// `recv(2)` of up to `len` bytes at `ptr`, through syscall(2) as
/// [`recvmsg`] does. The caller hands a live, writable region of `len`
/// bytes.
fn recv_at(
    fd: libc::c_int,
    ptr: *mut MaybeUninit<u8>,
    len: usize,
    flags: libc::c_int,
) -> io::Result<usize> {
    // SAFETY: the callers pass `ptr`/`len` from one mutably borrowed slice
    // (initialised or not); the kernel writes at most `len` bytes there and
    // never reads them. No address is asked for (null, null).
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            ptr,
            len,
            flags,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `recv(2)` into an initialised buffer.
pub(crate) fn recv(sock: &Socket, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    let buf = as_uninit(buf);
    recv_at(sock.as_raw_fd(), buf.as_mut_ptr(), buf.len(), flags)
}

/// `send(2)` of `buf`, through syscall(2) as [`sendmsg`] does.
/// `MSG_NOSIGNAL` is always added.
pub(crate) fn send(sock: &Socket, buf: &[u8], flags: libc::c_int) -> io::Result<usize> {
    send_to_at(sock, buf, std::ptr::null(), 0, flags)
}

/// `sendto(2)` of `buf` to `to`, through syscall(2) as [`sendmsg`] does.
/// `MSG_NOSIGNAL` is always added.
pub(crate) fn send_to(
    sock: &Socket,
    buf: &[u8],
    to: &SockAddr,
    flags: libc::c_int,
) -> io::Result<usize> {
    send_to_at(sock, buf, to.as_ptr().cast(), to.len(), flags)
}

/// `sendto(2)`; `addr`/`addr_len` are null/0 or a live socket address.
fn send_to_at(
    sock: &Socket,
    buf: &[u8],
    addr: *const libc::sockaddr,
    addr_len: libc::socklen_t,
    flags: libc::c_int,
) -> io::Result<usize> {
    // SAFETY: `buf` is a live slice of `buf.len()` bytes and `addr` null
    // (with length 0) or a `SockAddr`'s storage of `addr_len` bytes, both
    // borrowed for the call and only read by the kernel.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            sock.as_raw_fd(),
            buf.as_ptr(),
            buf.len(),
            flags | libc::MSG_NOSIGNAL,
            addr,
            addr_len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `recvfrom(2)` of up to `len` bytes at `ptr` with the source address,
/// through syscall(2) as [`recvmsg`] does. The caller hands a live,
/// writable region of `len` bytes.
fn recv_from_at(
    fd: libc::c_int,
    ptr: *mut MaybeUninit<u8>,
    len: usize,
    flags: libc::c_int,
) -> io::Result<(usize, SockAddr)> {
    // SAFETY: `try_init` hands a zeroed `sockaddr_storage` and its length;
    // recvfrom(2) writes at most that many address bytes and sets the
    // length, and at most `len` bytes at `ptr` (the callers' one mutably
    // borrowed slice), never reading them.
    unsafe {
        SockAddr::try_init(|addr, addr_len| {
            let n = libc::syscall(
                libc::SYS_recvfrom,
                fd,
                ptr,
                len,
                flags,
                addr.cast::<libc::sockaddr>(),
                addr_len,
            );
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(n as usize)
        })
    }
}

/// `recvfrom(2)` into an initialised buffer.
pub(crate) fn recv_from(
    sock: &Socket,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<(usize, SockAddr)> {
    let buf = as_uninit(buf);
    recv_from_at(sock.as_raw_fd(), buf.as_mut_ptr(), buf.len(), flags)
}

/// `recv(2)` into the unfilled part of a tokio `ReadBuf`, without zeroing
/// it first; the received bytes are marked initialised and filled.
pub(crate) fn recv_buf(
    sock: &Socket,
    buf: &mut ReadBuf<'_>,
    flags: libc::c_int,
) -> io::Result<usize> {
    // SAFETY: the unfilled part is only handed to recv(2), which writes
    // received bytes and never de-initialises anything.
    let unfilled = unsafe { buf.unfilled_mut() };
    let n = recv_at(
        sock.as_raw_fd(),
        unfilled.as_mut_ptr(),
        unfilled.len(),
        flags,
    )?;
    // SAFETY: the kernel wrote `n` bytes at the start of the unfilled part
    // (recv(2) returns how many it wrote, never more than the length given).
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Ok(n)
}

/// `recvfrom(2)` into the unfilled part of a tokio `ReadBuf`, without
/// zeroing it first; the received bytes are marked initialised and filled.
pub(crate) fn recv_from_buf(
    sock: &Socket,
    buf: &mut ReadBuf<'_>,
    flags: libc::c_int,
) -> io::Result<(usize, SockAddr)> {
    // SAFETY: the unfilled part is only handed to recvfrom(2), which writes
    // received bytes and never de-initialises anything.
    let unfilled = unsafe { buf.unfilled_mut() };
    let (n, from) = recv_from_at(
        sock.as_raw_fd(),
        unfilled.as_mut_ptr(),
        unfilled.len(),
        flags,
    )?;
    // With MSG_TRUNC the kernel reports the datagram's real length, which
    // may exceed what it wrote; only what it wrote is initialised.
    let written = n.min(buf.remaining());
    // SAFETY: the kernel wrote `written` bytes at the start of the unfilled
    // part (never more than the length it was given).
    unsafe { buf.assume_init(written) };
    buf.advance(written);
    Ok((n, from))
}

/// `recvfrom(2)` into the spare capacity of a `bytes::BufMut` (its current
/// `chunk_mut`), without zeroing it; the received bytes are committed with
/// `advance_mut`. Returns the datagram's length as the kernel reports it
/// and its source (`None` where the kernel gives none, as on TCP).
pub(crate) fn recv_into_buf_mut<B: bytes::BufMut + ?Sized>(
    sock: &Socket,
    buf: &mut B,
    flags: libc::c_int,
) -> io::Result<(usize, Option<SockAddr>)> {
    let chunk = buf.chunk_mut();
    // SAFETY: the spare capacity is only handed to recvfrom(2), which writes
    // received bytes into it and never writes uninitialised values.
    let spare = unsafe { chunk.as_uninit_slice_mut() };
    let room = spare.len();
    let (n, from) = recv_from_at(sock.as_raw_fd(), spare.as_mut_ptr(), room, flags)?;
    // SAFETY: the kernel wrote min(n, room) bytes at the start of the chunk
    // (with MSG_TRUNC `n` may be the longer, real length).
    unsafe { buf.advance_mut(n.min(room)) };
    let from = (from.family() != libc::AF_UNSPEC as libc::sa_family_t).then_some(from);
    Ok((n, from))
}

/// `recvmsg(2)` into initialised vectored buffers (one syscall). The kernel
/// refuses more than 1024 buffers with `EMSGSIZE`.
pub(crate) fn recv_vectored(
    sock: &Socket,
    bufs: &mut [std::io::IoSliceMut<'_>],
    flags: libc::c_int,
) -> io::Result<usize> {
    // SAFETY: `IoSliceMut` and socket2's `MaybeUninitSlice` are both
    // `#[repr(transparent)]` over `libc::iovec` on Unix, so the slices have
    // the same layout. socket2 hands the iovecs to recvmsg(2), which only
    // writes received bytes into them, never uninitialised values.
    let bufs = unsafe {
        &mut *(bufs as *mut [std::io::IoSliceMut<'_>] as *mut [socket2::MaybeUninitSlice<'_>])
    };
    sock.recv_vectored_with_flags(bufs, flags).map(|(n, _)| n)
}

/// Registers `sock` with the current Tokio reactor for readable and writable
/// readiness (errors are always reported). Outside a runtime this is an
/// error, not a panic.
pub(crate) fn register(sock: Socket) -> io::Result<AsyncFd<Socket>> {
    register_with(sock, Interest::READABLE | Interest::WRITABLE)
}

/// Registers `sock` with the current Tokio reactor for `interest`.
pub(crate) fn register_with(sock: Socket, interest: Interest) -> io::Result<AsyncFd<Socket>> {
    register_keep(sock, interest).map_err(|(_, e)| e)
}

/// Registers `sock`, giving it back with the error if that fails.
pub(crate) fn register_keep(
    sock: Socket,
    interest: Interest,
) -> Result<AsyncFd<Socket>, (Socket, io::Error)> {
    if tokio::runtime::Handle::try_current().is_err() {
        let e = io::Error::other("hostsock sockets must be created inside a Tokio runtime");
        return Err((sock, e));
    }
    // SAFETY: `Socket` owns its fd: it stays open and names the same file
    // description until the `Socket` is dropped, which happens only after
    // the `AsyncFd` deregisters it (or after `into_inner` hands it back).
    // `as_raw_fd` always returns that fd, and this crate never takes `&mut`
    // to the inner socket, so it cannot be swapped out.
    unsafe { AsyncFd::register_with_interest(sock, interest) }.map_err(|e| e.into_parts())
}

/// `getsockopt(2)` into `out`; returns the length the kernel reports.
pub(crate) fn getsockopt(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    out: &mut [u8],
) -> io::Result<usize> {
    let mut len = libc::socklen_t::try_from(out.len()).unwrap_or(libc::socklen_t::MAX);
    // SAFETY: `out` is valid for writes of `len` bytes (`len` is at most
    // `out.len()`), and `len` is a valid `socklen_t` the kernel updates.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            out.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(len).unwrap_or(0).min(out.len()))
}

/// `setsockopt(2)` with `value` as the option bytes.
pub(crate) fn setsockopt(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &[u8],
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(value.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `value` is valid for reads of `len` bytes; the kernel only
    // reads them.
    let rc = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, value.as_ptr().cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SIOCATMARK` on Linux (`<linux/sockios.h>`).
pub(crate) const SIOCATMARK: libc::c_ulong = 0x8905;

/// An `ioctl(2)` whose argument is a pointer to an `int` the kernel fills
/// (`TIOCINQ`, `TIOCOUTQ`, `SIOCATMARK`). Only those three are accepted.
pub(crate) fn ioctl_int(fd: &impl AsRawFd, request: libc::c_ulong) -> io::Result<libc::c_int> {
    if ![libc::TIOCINQ, libc::TIOCOUTQ, SIOCATMARK].contains(&request) {
        return Err(io::Error::from_raw_os_error(libc::ENOTTY));
    }
    let mut value: libc::c_int = 0;
    // SAFETY: the three requests allowed above each write one `int` through
    // the pointer, which points to a live `c_int`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, &mut value as *mut libc::c_int) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// `poll(2)` on one fd with a zero timeout: the `revents` for `events`.
pub(crate) fn poll_now(fd: &impl AsRawFd, events: libc::c_short) -> io::Result<libc::c_short> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid `pollfd`, and the count passed is 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pfd.revents)
}

/// The open-file flags of `fd` (`fcntl(F_GETFL)`).
pub(crate) fn fd_status_flags(fd: &impl AsRawFd) -> io::Result<libc::c_int> {
    // SAFETY: F_GETFL takes no argument and only reads the fd's flags.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// `connect(2)` with the caller's sockaddr bytes as they are.
pub(crate) fn connect_bytes(fd: &impl AsRawFd, addr: &[u8]) -> io::Result<()> {
    let len = libc::socklen_t::try_from(addr.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `addr` is valid for reads of `len` bytes; the kernel copies
    // them (copy_from_user: no alignment is required of the buffer).
    let rc = unsafe { libc::connect(fd.as_raw_fd(), addr.as_ptr().cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `bind(2)` with the caller's sockaddr bytes as they are.
pub(crate) fn bind_bytes(fd: &impl AsRawFd, addr: &[u8]) -> io::Result<()> {
    let len = libc::socklen_t::try_from(addr.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: as in `connect_bytes`.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), addr.as_ptr().cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `getsockname(2)` (`peer == false`) or `getpeername(2)` into a 128-byte
/// buffer; returns the buffer and the length the kernel reports (capped at
/// the buffer).
pub(crate) fn sockname(fd: &impl AsRawFd, peer: bool) -> io::Result<([u8; 128], usize)> {
    let mut buf = [0u8; 128];
    let mut len = buf.len() as libc::socklen_t;
    let ptr = buf.as_mut_ptr().cast::<libc::sockaddr>();
    // SAFETY: `buf` is valid for writes of `len` bytes, and `len` is a
    // valid `socklen_t` the kernel updates.
    let rc = unsafe {
        if peer {
            libc::getpeername(fd.as_raw_fd(), ptr, &mut len)
        } else {
            libc::getsockname(fd.as_raw_fd(), ptr, &mut len)
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((buf, usize::try_from(len).unwrap_or(0).min(buf.len())))
}

impl std::os::fd::AsFd for crate::raw::RawSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: `host_fd()` names the socket this `RawSocket` owns for its
        // whole life: renewing the registration keeps the same fd, and if
        // a renewal fails the socket is kept (not closed) until the
        // `RawSocket` is dropped. So the fd is open for the borrow's
        // lifetime, which is tied to `&self`.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.host_fd()) }
    }
}

/// What one `recvmsg(2)` gave.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MsgOut {
    /// The return value: bytes received (with `MSG_TRUNC`, the datagram's
    /// real length).
    pub(crate) len: usize,
    /// `msg_flags` as the kernel set them.
    pub(crate) flags: libc::c_int,
    /// `msg_namelen` (0 if no address was asked for or given).
    pub(crate) addr_len: usize,
    /// `msg_controllen`.
    pub(crate) control_len: usize,
}

impl MsgOut {
    /// What a receive at end of stream reports: nothing, no flags.
    pub(crate) const EOF: MsgOut = MsgOut {
        len: 0,
        flags: 0,
        addr_len: 0,
        control_len: 0,
    };
}

/// `recvmsg(2)`: into `bufs`, the source address into `addr` (if given),
/// control messages into `control`. One syscall.
pub(crate) fn recvmsg(
    fd: &impl AsRawFd,
    bufs: &mut [std::io::IoSliceMut<'_>],
    addr: Option<&mut [u8]>,
    control: &mut [u8],
    flags: libc::c_int,
) -> io::Result<MsgOut> {
    // SAFETY: all-zero is a valid `msghdr` (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some(a) = addr {
        msg.msg_name = a.as_mut_ptr().cast();
        msg.msg_namelen = a.len() as libc::socklen_t;
    }
    // `IoSliceMut` is ABI-compatible with `iovec` on Unix (std guarantees
    // it), so the slice can be the iovec array.
    msg.msg_iov = bufs.as_mut_ptr().cast();
    msg.msg_iovlen = bufs.len() as _;
    if !control.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len() as _;
    }
    // Through syscall(2), not glibc's wrapper: that one is a pthread
    // cancellation point and switches the thread's cancel state (two atomic
    // operations) around every call, which no Rust code needs.
    // SAFETY: every pointer in `msg` points into a live buffer of the
    // length next to it (name, iovecs, control), all borrowed mutably for
    // this call; the kernel writes at most those lengths.
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvmsg,
            fd.as_raw_fd(),
            &mut msg as *mut libc::msghdr,
            flags,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(MsgOut {
        len: n as usize,
        flags: msg.msg_flags,
        addr_len: msg.msg_namelen as usize,
        control_len: (msg.msg_controllen as usize).min(control.len()),
    })
}

/// `sendmsg(2)` of `bufs` to `addr` (empty: the connected peer) with the
/// control bytes `control` (empty: none). `MSG_NOSIGNAL` is always added.
pub(crate) fn sendmsg(
    fd: &impl AsRawFd,
    bufs: &[std::io::IoSlice<'_>],
    addr: &[u8],
    control: &[u8],
    flags: libc::c_int,
) -> io::Result<usize> {
    // SAFETY: all-zero is a valid `msghdr`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    if !addr.is_empty() {
        msg.msg_name = addr.as_ptr().cast_mut().cast();
        msg.msg_namelen = addr.len() as libc::socklen_t;
    }
    // `IoSlice` is ABI-compatible with `iovec` on Unix.
    msg.msg_iov = bufs.as_ptr().cast_mut().cast();
    msg.msg_iovlen = bufs.len() as _;
    if !control.is_empty() {
        msg.msg_control = control.as_ptr().cast_mut().cast();
        msg.msg_controllen = control.len() as _;
    }
    // Through syscall(2), as in `recvmsg`.
    // SAFETY: every pointer in `msg` points into a live buffer of the
    // length next to it; sendmsg(2) only reads through them (the `*mut`
    // casts are what the C struct needs).
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendmsg,
            fd.as_raw_fd(),
            &msg as *const libc::msghdr,
            flags | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The most messages one `sendmmsg`/`recvmmsg` carries here.
pub(crate) const MAX_BATCH: usize = 64;

/// One message of a `sendmmsg(2)`.
pub(crate) struct SendEntry<'a> {
    pub(crate) iov: std::io::IoSlice<'a>,
    pub(crate) addr: &'a [u8],
    pub(crate) control: &'a [u8],
}

/// `sendmmsg(2)` of up to [`MAX_BATCH`] messages (more are not sent);
/// `MSG_NOSIGNAL` is always added. Returns how many were sent.
pub(crate) fn sendmmsg(
    fd: &impl AsRawFd,
    entries: &[SendEntry<'_>],
    flags: libc::c_int,
) -> io::Result<usize> {
    let n = entries.len().min(MAX_BATCH);
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
    for (slot, e) in hdrs.iter_mut().zip(&entries[..n]) {
        // SAFETY: all-zero is a valid `mmsghdr`; only the `n` headers the
        // kernel is told about are written (and then read).
        let h = slot.write(unsafe { std::mem::zeroed() });
        if !e.addr.is_empty() {
            h.msg_hdr.msg_name = e.addr.as_ptr().cast_mut().cast();
            h.msg_hdr.msg_namelen = e.addr.len() as libc::socklen_t;
        }
        // `IoSlice` is ABI-compatible with `iovec`; one per message.
        h.msg_hdr.msg_iov = (&e.iov as *const std::io::IoSlice<'_>).cast_mut().cast();
        h.msg_hdr.msg_iovlen = 1;
        if !e.control.is_empty() {
            h.msg_hdr.msg_control = e.control.as_ptr().cast_mut().cast();
            h.msg_hdr.msg_controllen = e.control.len() as _;
        }
    }
    // SAFETY: the first `n` headers point into `entries`, which outlives
    // the call; the kernel only reads through those pointers and writes
    // `msg_len` into `hdrs`.
    let rc = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
            n as libc::c_uint,
            flags | libc::MSG_NOSIGNAL,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// One message slot of a `recvmmsg(2)` (the public receive slot).
pub(crate) use crate::dgram::RecvSlot as RecvEntry;

/// `recvmmsg(2)` into up to [`MAX_BATCH`] slots, without a timeout.
/// Returns how many messages arrived; their slots' `out` and `addr` are
/// filled. At most `control_max` bytes of each slot's control buffer are
/// handed to the kernel.
pub(crate) fn recvmmsg(
    fd: &impl AsRawFd,
    entries: &mut [RecvEntry<'_>],
    flags: libc::c_int,
    control_max: usize,
) -> io::Result<usize> {
    let n = entries.len().min(MAX_BATCH);
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
    for (slot, e) in hdrs.iter_mut().zip(entries[..n].iter_mut()) {
        // SAFETY: all-zero is a valid `mmsghdr`; only the first `n` headers
        // are written, handed to the kernel and read back.
        let h = slot.write(unsafe { std::mem::zeroed() });
        h.msg_hdr.msg_name = e.addr.as_mut_ptr().cast();
        h.msg_hdr.msg_namelen = e.addr.len() as libc::socklen_t;
        // `IoSliceMut` is ABI-compatible with `iovec`; one per slot.
        h.msg_hdr.msg_iov = (&mut e.iov as *mut std::io::IoSliceMut<'_>).cast();
        h.msg_hdr.msg_iovlen = 1;
        let cap = e.control.len().min(control_max);
        if cap > 0 {
            h.msg_hdr.msg_control = e.control.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = cap as _;
        }
    }
    // SAFETY: the first `n` headers point into `entries` (names, iovecs,
    // control buffers), borrowed mutably for the call, each with its
    // length; the kernel writes at most those lengths. No timeout.
    let rc = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
            n as libc::c_uint,
            flags,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = rc as usize;
    for (slot, e) in hdrs.iter().zip(entries.iter_mut()).take(got.min(n)) {
        // SAFETY: the first `n` headers were written above, and the kernel
        // filled at most `n` (`got` <= `n`).
        let h = unsafe { slot.assume_init_ref() };
        e.out = MsgOut {
            len: h.msg_len as usize,
            flags: h.msg_hdr.msg_flags,
            addr_len: (h.msg_hdr.msg_namelen as usize).min(128),
            control_len: h.msg_hdr.msg_controllen.min(e.control.len()),
        };
    }
    Ok(got)
}
