//! Every `unsafe` of the sandbox example: the raw syscalls that neither std,
//! tokio, socket2 nor hostsock wrap (seccomp, its ioctls, pidfds, `fcntl`,
//! `fstat`, `poll`). Each function is a thin, checked wrapper; everything
//! else in the example is safe code.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;

/// `PIDFD_THREAD` (Linux 6.9): a pidfd for a thread rather than a process.
const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

fn cvt(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_int(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Takes ownership of a descriptor a syscall just returned.
///
/// # Safety
///
/// `fd` must be an open descriptor of this process that nothing else owns
/// (one the kernel just returned as new).
unsafe fn owned(fd: libc::c_long) -> OwnedFd {
    let fd = RawFd::try_from(fd).expect("a file descriptor fits an int");
    // SAFETY: the caller hands over an open descriptor nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    cvt_int(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded: both are new descriptors owned by nobody.
    Ok(unsafe { (owned(fds[0].into()), owned(fds[1].into())) })
}

/// Makes `cmd`'s child, after `fork` and before `exec`: set
/// `PR_SET_NO_NEW_PRIVS`, install `filter` with
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`, write its pid and the listener's fd
/// number (two native-endian `i32`) to `report`, and wait for one byte on
/// `ack` (the parent has taken the listener with `pidfd_getfd`) before it
/// goes on to `exec`. The listener is close-on-exec, so the program never
/// sees it.
///
/// The closure runs between `fork` and `exec` of a possibly multi-threaded
/// parent: it only makes raw syscalls on memory allocated before the fork
/// (no allocation, no locks), which is async-signal-safe.
pub fn filter_before_exec(
    cmd: &mut Command,
    filter: Vec<libc::sock_filter>,
    report: RawFd,
    ack: RawFd,
) {
    use std::os::unix::process::CommandExt;
    let len = u16::try_from(filter.len()).expect("a BPF program has at most 4096 instructions");
    let child = move || -> io::Result<()> {
        let prog = libc::sock_fprog {
            len,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: prctl with integer arguments only.
        cvt_int(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
        // SAFETY: `prog` points at `filter`, `len` instructions long, both
        // alive for the duration of the call; the kernel copies them.
        let listener = cvt(unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            )
        })?;
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&pid.to_ne_bytes());
        msg[4..].copy_from_slice(&(listener as i32).to_ne_bytes());
        // SAFETY: `msg` is a valid buffer of 8 bytes; `report` is an open
        // descriptor inherited from the parent. A pipe write of 8 bytes is
        // atomic.
        let wrote = unsafe { libc::write(report, msg.as_ptr().cast(), msg.len()) };
        if wrote != msg.len() as isize {
            return Err(io::Error::last_os_error());
        }
        let mut byte = 0u8;
        loop {
            // SAFETY: `byte` is a valid one-byte buffer; `ack` is an open
            // descriptor inherited from the parent.
            let got = unsafe { libc::read(ack, (&mut byte as *mut u8).cast(), 1) };
            if got == 1 {
                break;
            }
            if got < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // The parent could not take the listener.
            return Err(io::Error::from_raw_os_error(libc::ECHILD));
        }
        // SAFETY: `listener` is this process's own descriptor, closed once.
        unsafe { libc::close(listener as RawFd) };
        Ok(())
    };
    // SAFETY: the closure is async-signal-safe (see above): it only issues
    // raw syscalls on memory that exists before the fork.
    unsafe { cmd.pre_exec(child) };
}

/// `pidfd_open(2)` for a thread id (`PIDFD_THREAD`), falling back to a
/// process pidfd on kernels before 6.9 (which works when `tid` leads its
/// thread group).
pub fn pidfd_open(tid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers and returns a new descriptor.
    let r = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD) });
    match r {
        // SAFETY: a new descriptor the kernel just returned.
        Ok(fd) => Ok(unsafe { owned(fd) }),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // SAFETY: as above, without flags.
            let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, tid, 0) })?;
            // SAFETY: a new descriptor the kernel just returned.
            Ok(unsafe { owned(fd) })
        }
        Err(e) => Err(e),
    }
}

/// `pidfd_getfd(2)`: a new descriptor of this process for the same open
/// file description as `target` in the process of `pidfd`.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, target: i32) -> io::Result<OwnedFd> {
    // SAFETY: integers only; the kernel returns a new descriptor.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) })?;
    // SAFETY: a new descriptor the kernel just returned.
    Ok(unsafe { owned(fd) })
}

/// `pidfd_send_signal(2)` with no `siginfo`.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: integers and a null siginfo pointer, which the call allows.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })?;
    Ok(())
}

/// One seccomp notification: a guest thread stopped in a system call.
#[derive(Clone, Copy, Debug)]
pub struct Notif {
    /// The notification's cookie.
    pub id: u64,
    /// The thread id of the caller (in the supervisor's pid namespace).
    pub pid: u32,
    /// The system call number.
    pub nr: i32,
    /// The raw arguments.
    pub args: [u64; 6],
}

/// `ioctl(fd, request, arg)`.
///
/// # Safety
///
/// `request` must be one whose argument is a pointer to a `T` (as the
/// `SECCOMP_IOCTL_NOTIF_*` definitions in linux/seccomp.h say for each).
unsafe fn ioctl_ptr<T>(
    fd: BorrowedFd<'_>,
    request: libc::Ioctl,
    arg: &mut T,
) -> io::Result<libc::c_int> {
    // SAFETY: `arg` is a valid, exclusive `T` for the duration of the
    // call, and the caller guarantees `request` takes a `*mut T`.
    cvt_int(unsafe { libc::ioctl(fd.as_raw_fd(), request, arg as *mut T) })
}

/// `SECCOMP_IOCTL_NOTIF_RECV`. Blocks while no notification is pending;
/// call it after `poll` reported `POLLIN`.
pub fn notif_recv(listener: BorrowedFd<'_>) -> io::Result<Notif> {
    // SAFETY: all zero is a valid `seccomp_notif` (integers only), and the
    // kernel wants the buffer zeroed.
    let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: NOTIF_RECV takes a `struct seccomp_notif *`.
    unsafe { ioctl_ptr(listener, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) }?;
    Ok(Notif {
        id: n.id,
        pid: n.pid,
        nr: n.data.nr,
        args: n.data.args,
    })
}

/// `SECCOMP_IOCTL_NOTIF_ID_VALID`: is the notification still pending (its
/// thread still waiting in that call)?
pub fn notif_id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    let mut id = id;
    // SAFETY: NOTIF_ID_VALID takes a `__u64 *`.
    unsafe { ioctl_ptr(listener, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) }.is_ok()
}

/// `SECCOMP_IOCTL_NOTIF_SEND`: the call returns `val`, or fails with
/// `error` (a negative errno), or with `continue_call` the kernel runs the
/// call itself.
pub fn notif_send(
    listener: BorrowedFd<'_>,
    id: u64,
    val: i64,
    error: i32,
    continue_call: bool,
) -> io::Result<()> {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val,
        error,
        flags: if continue_call {
            libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32
        } else {
            0
        },
    };
    // SAFETY: NOTIF_SEND takes a `struct seccomp_notif_resp *`.
    unsafe { ioctl_ptr(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) }?;
    Ok(())
}

/// `SECCOMP_IOCTL_NOTIF_ADDFD` with `SECCOMP_ADDFD_FLAG_SEND`: installs a
/// new descriptor for `src`'s open file description in the guest and
/// answers the call with its number, in one step.
pub fn notif_addfd_send(
    listener: BorrowedFd<'_>,
    id: u64,
    src: &impl AsRawFd,
    cloexec: bool,
) -> io::Result<i32> {
    let mut add = libc::seccomp_notif_addfd {
        id,
        flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
        srcfd: src.as_raw_fd() as u32,
        newfd: 0,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: NOTIF_ADDFD takes a `struct seccomp_notif_addfd *`; the
    // kernel checks `srcfd` itself (a bad number is EBADF).
    unsafe { ioctl_ptr(listener, libc::SECCOMP_IOCTL_NOTIF_ADDFD, &mut add) }
}

/// `poll(2)` once, without waiting: (`POLLIN`, `POLLHUP`).
pub fn poll_now(fd: BorrowedFd<'_>) -> io::Result<(bool, bool)> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd.
    cvt_int(unsafe { libc::poll(&mut p, 1, 0) })?;
    Ok((
        p.revents & libc::POLLIN != 0,
        p.revents & libc::POLLHUP != 0,
    ))
}

/// `fcntl(F_GETFL)`.
pub fn status_flags(fd: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: F_GETFL takes no argument.
    cvt_int(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })
}

/// `fcntl(F_SETFL, flags)`.
pub fn set_status_flags(fd: BorrowedFd<'_>, flags: i32) -> io::Result<()> {
    // SAFETY: F_SETFL takes an int.
    cvt_int(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) })?;
    Ok(())
}

/// `fstat(2)`: (inode, mode). (It takes any descriptor number: a
/// `RawSocket` lends no `BorrowedFd`, and a stale number only gives
/// `EBADF` or another file's answer, never unsoundness.)
pub fn inode(fd: &impl AsRawFd) -> io::Result<(u64, u32)> {
    // SAFETY: all zero is a valid `stat` (integers only).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, exclusive `stat` for fstat to fill.
    cvt_int(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok((st.st_ino, st.st_mode))
}

/// Registers the seccomp listener with the tokio reactor (read interest:
/// `POLLIN` means a notification is pending, `POLLHUP` that no process
/// uses the filter any more).
pub fn register_listener(listener: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is an open descriptor that stays open, and
    // `as_raw_fd` keeps returning it, for as long as the `AsyncFd` owns it.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE)
    }
    .map_err(|e| e.into_parts().1)
}
