//! Serving one notification: read the guest's arguments, run the call
//! through `hostsock::raw`, write the results back, answer.
//!
//! # Sockets and their state
//!
//! The supervisor keeps no descriptor between calls. A socket the guest
//! makes is created by `RawSocket::new`, installed in the guest with
//! `SECCOMP_IOCTL_NOTIF_ADDFD` (a new descriptor for the *same* open file
//! description) and dropped here; each later call takes the guest's
//! descriptor with `pidfd_getfd` and wraps it with `RawSocket::from_fd` for
//! the length of that call. So the guest's `close` really closes the socket
//! (no reference held here keeps a connection open), and no stale mapping
//! can survive it.
//!
//! What a `RawSocket` remembers and the kernel does not is kept per socket
//! inode (sockfs inode numbers are not reused while the socket lives): the
//! guest's view of `O_NONBLOCK` (the open file description is always
//! non-blocking, since tokio drives it) and the timeouts the guest set
//! (`SO_RCVTIMEO`/`SO_SNDTIMEO`), which are set again on each wrapper.
//! Entries of sockets that are gone are pruned by scanning
//! `/proc/TID/fd` of the guest threads seen, when the table has doubled.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hostsock::Policy;
use hostsock::raw::{Errno, RawSocket};
use tokio::io::unix::AsyncFd;

use crate::guest_mem::GuestMem;
use crate::sys::{self, Notif};

/// The most payload bytes copied out of (or into) the guest per call: a
/// larger stream send is a short write, a larger receive a short read.
pub(crate) const MAX_COPY: usize = 4 << 20;
/// `sizeof(struct sockaddr_storage)`.
pub(crate) const SOCKADDR_MAX: usize = 128;
/// Larger options are `EINVAL` in the raw layer.
const MAX_OPTLEN: usize = 32 << 10;
/// `UIO_MAXIOV`.
pub(crate) const MAX_IOV: u64 = 1024;
/// The raw layer sends at most this many messages per `sendmmsg`.
pub(crate) const MMSG_BATCH: usize = hostsock::MAX_BATCH;
/// An `Err` meaning "the call is gone (interrupted, or its thread died):
/// answer nothing".
const GONE: i32 = -1;
/// How often a waiting call checks that its caller still waits.
const STILL_WAITING: Duration = Duration::from_millis(50);

/// What to answer.
pub(crate) enum Reply {
    /// The call's return value.
    Value(i64),
    /// Let the kernel run the call (not an INET socket).
    Continue,
    /// Already answered (by `SECCOMP_ADDFD_FLAG_SEND`).
    Done,
}

pub(crate) type Out = Result<Reply, i32>;

pub(crate) fn code(e: Errno) -> i32 {
    e.raw()
}

fn os(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The call a task is serving, for the audit hook.
#[derive(Clone, Copy, Debug)]
pub struct CallInfo {
    pub tid: u32,
    pub nr: i64,
    pub args: [u64; 6],
}

tokio::task_local! {
    /// The call the current task serves.
    pub static CALL: CallInfo;
}

/// What a guest socket remembers beyond the kernel's state.
#[derive(Clone, Copy, Debug, Default)]
struct SockState {
    nonblocking: bool,
    rcvtimeo: Option<[u8; 16]>,
    sndtimeo: Option<[u8; 16]>,
}

#[derive(Debug)]
struct States {
    by_ino: HashMap<u64, SockState>,
    tids: HashSet<u32>,
    prune_at: usize,
}

/// The supervisor: the notification listener, the policy, the per-socket
/// state.
#[derive(Debug)]
pub struct Supervisor {
    listener: AsyncFd<OwnedFd>,
    policy: Arc<Policy>,
    states: Mutex<States>,
}

impl Supervisor {
    pub fn new(listener: AsyncFd<OwnedFd>, policy: Arc<Policy>) -> Supervisor {
        Supervisor {
            listener,
            policy,
            states: Mutex::new(States {
                by_ino: HashMap::new(),
                tids: HashSet::new(),
                prune_at: 64,
            }),
        }
    }

    pub fn notify_fd(&self) -> &AsyncFd<OwnedFd> {
        &self.listener
    }

    fn listener(&self) -> BorrowedFd<'_> {
        self.listener.get_ref().as_fd()
    }

    fn states(&self) -> std::sync::MutexGuard<'_, States> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self, tid: u32, ino: u64) -> SockState {
        let mut s = self.states();
        s.tids.insert(tid);
        s.by_ino.get(&ino).copied().unwrap_or_default()
    }

    fn update(&self, ino: u64, f: impl FnOnce(&mut SockState)) {
        f(self.states().by_ino.entry(ino).or_default());
    }

    fn insert(&self, tid: u32, ino: u64, st: SockState) {
        let mut s = self.states();
        s.tids.insert(tid);
        s.by_ino.insert(ino, st);
        if s.by_ino.len() >= s.prune_at {
            prune(&mut s);
            s.prune_at = (s.by_ino.len() * 2).max(64);
        }
    }
}

/// Drops the entries of sockets no guest thread seen so far still holds.
fn prune(s: &mut States) {
    let mut live = HashSet::new();
    s.tids.retain(|tid| {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{tid}/fd")) else {
            return false;
        };
        for entry in dir.flatten() {
            let Ok(target) = std::fs::read_link(entry.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            if let Some(ino) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            {
                live.insert(ino);
            }
        }
        true
    });
    s.by_ino.retain(|ino, _| live.contains(ino));
}

/// Serves one notification and answers it.
pub async fn serve(sup: Arc<Supervisor>, n: Notif) {
    let info = CallInfo {
        tid: n.pid,
        nr: n.nr.into(),
        args: n.args,
    };
    let out = CALL
        .scope(
            info,
            Call {
                sup: &sup,
                n,
                pidfd: None,
                mem: None,
            }
            .handle(),
        )
        .await;
    let l = sup.listener();
    // An answer to a call that is gone fails with ENOENT: nobody to tell.
    let _ = match out {
        Ok(Reply::Value(v)) => sys::notif_send(l, n.id, v, 0, false),
        Ok(Reply::Continue) => sys::notif_send(l, n.id, 0, 0, true),
        Ok(Reply::Done) | Err(GONE) => return,
        Err(e) => sys::notif_send(l, n.id, 0, -e, false),
    };
}

/// A guest descriptor as taken with `pidfd_getfd`.
enum GuestFd {
    /// An INET socket, with its inode.
    Inet(OwnedFd, u64),
    /// Another kind of socket (`AF_UNIX`, `AF_NETLINK`, ...).
    OtherSocket,
    /// Not a socket.
    NotSocket,
}

/// One call being served.
pub(crate) struct Call<'a> {
    sup: &'a Supervisor,
    n: Notif,
    pidfd: Option<OwnedFd>,
    mem: Option<GuestMem>,
}

impl Call<'_> {
    pub(crate) fn arg(&self, i: usize) -> u64 {
        self.n.args[i]
    }

    /// An `int` argument (the kernel reads the low 32 bits).
    pub(crate) fn int(&self, i: usize) -> i32 {
        self.n.args[i] as u32 as i32
    }

    /// Is the caller still waiting in this call?
    pub(crate) fn valid(&self) -> Result<(), i32> {
        if sys::notif_id_valid(self.sup.listener(), self.n.id) {
            Ok(())
        } else {
            Err(GONE)
        }
    }

    pub(crate) fn pidfd(&mut self) -> Result<BorrowedFd<'_>, i32> {
        if self.pidfd.is_none() {
            let fd = sys::pidfd_open(self.n.pid).map_err(|_| GONE)?;
            // The id was this call's thread when the pidfd was made.
            self.valid()?;
            self.pidfd = Some(fd);
        }
        Ok(self.pidfd.as_ref().expect("just set").as_fd())
    }

    pub(crate) fn mem(&mut self) -> Result<&GuestMem, i32> {
        if self.mem.is_none() {
            let mem = GuestMem::open(self.n.pid).map_err(|_| GONE)?;
            // The file is this call's address space.
            self.valid()?;
            self.mem = Some(mem);
        }
        Ok(self.mem.as_ref().expect("just set"))
    }

    /// Runs `fut` while the caller still waits; `GONE` once it stopped
    /// waiting (a signal interrupted it, or it died). The raw calls used
    /// here are cancel safe: nothing is lost by dropping them.
    pub(crate) async fn while_waiting<F: Future>(&self, fut: F) -> Result<F::Output, i32> {
        let l = self.sup.listener();
        let id = self.n.id;
        let gone = async {
            loop {
                tokio::time::sleep(STILL_WAITING).await;
                if !sys::notif_id_valid(l, id) {
                    return;
                }
            }
        };
        tokio::select! {
            biased;
            r = fut => Ok(r),
            () = gone => Err(GONE),
        }
    }

    fn fetch(&mut self, gfd: i32) -> Result<GuestFd, i32> {
        let pidfd = self.pidfd()?;
        let fd = sys::pidfd_getfd(pidfd, gfd).map_err(os)?;
        let (ino, mode) = sys::inode(&fd).map_err(os)?;
        if mode & libc::S_IFMT != libc::S_IFSOCK {
            return Ok(GuestFd::NotSocket);
        }
        let domain = socket2::SockRef::from(&fd).domain().map_err(os)?;
        if domain != socket2::Domain::IPV4 && domain != socket2::Domain::IPV6 {
            return Ok(GuestFd::OtherSocket);
        }
        Ok(GuestFd::Inet(fd, ino))
    }

    /// The guest's socket `gfd` as a `RawSocket` with the state the guest
    /// gave it; `None` for a socket that is not INET (the kernel serves
    /// it).
    fn socket_at(&mut self, gfd: i32) -> Result<Option<(RawSocket, u64, SockState)>, i32> {
        let (fd, ino) = match self.fetch(gfd)? {
            GuestFd::Inet(fd, ino) => (fd, ino),
            GuestFd::OtherSocket => return Ok(None),
            GuestFd::NotSocket => return Err(libc::ENOTSOCK),
        };
        let rs = RawSocket::from_fd(fd, self.sup.policy.clone()).map_err(code)?;
        let st = self.sup.state(self.n.pid, ino);
        rs.set_nonblocking(st.nonblocking);
        for (name, tv) in [
            (libc::SO_RCVTIMEO, st.rcvtimeo),
            (libc::SO_SNDTIMEO, st.sndtimeo),
        ] {
            if let Some(tv) = tv {
                rs.setsockopt(libc::SOL_SOCKET, name, &tv).map_err(code)?;
            }
        }
        Ok(Some((rs, ino, st)))
    }

    async fn handle(mut self) -> Out {
        match i64::from(self.n.nr) {
            libc::SYS_socket => return self.socket(),
            libc::SYS_fcntl => return self.fcntl(),
            libc::SYS_ioctl => return self.fionbio(),
            _ => {}
        }
        let Some((rs, ino, st)) = self.socket_at(self.int(0))? else {
            return Ok(Reply::Continue);
        };
        match i64::from(self.n.nr) {
            libc::SYS_connect => self.connect(&rs).await,
            libc::SYS_bind => {
                let addr = self.sockaddr(1, 2)?;
                self.valid()?;
                rs.bind(&addr).map_err(code)?;
                Ok(Reply::Value(0))
            }
            libc::SYS_listen => {
                rs.listen(self.int(1)).map_err(code)?;
                Ok(Reply::Value(0))
            }
            libc::SYS_shutdown => {
                rs.shutdown(self.int(1)).map_err(code)?;
                Ok(Reply::Value(0))
            }
            libc::SYS_accept => self.accept(&rs, st, 0).await,
            libc::SYS_accept4 => self.accept(&rs, st, self.int(3)).await,
            libc::SYS_setsockopt => self.setsockopt(&rs, ino),
            libc::SYS_getsockopt => self.getsockopt(&rs),
            libc::SYS_sendto => self.sendto(&rs).await,
            libc::SYS_recvfrom => self.recvfrom(&rs).await,
            libc::SYS_sendmsg => self.sendmsg(&rs).await,
            libc::SYS_sendmmsg => self.sendmmsg(&rs).await,
            libc::SYS_recvmsg => self.recvmsg(&rs).await,
            _ => Err(libc::ENOSYS),
        }
    }

    /// `socket`: INET sockets are made by the raw layer and installed in
    /// the guest; `AF_UNIX` and `AF_NETLINK` (name service, routing
    /// queries) are left to the kernel; other families get the raw layer's
    /// answer (`EAFNOSUPPORT`).
    fn socket(&mut self) -> Out {
        let (domain, ty, protocol) = (self.int(0), self.int(1), self.int(2));
        if domain == libc::AF_UNIX || domain == libc::AF_NETLINK {
            return Ok(Reply::Continue);
        }
        let rs = RawSocket::new(self.sup.policy.clone(), domain, ty, protocol).map_err(code)?;
        let st = SockState {
            nonblocking: ty & libc::SOCK_NONBLOCK != 0,
            ..SockState::default()
        };
        self.install(&rs, st, ty & libc::SOCK_CLOEXEC != 0)
    }

    /// Installs `rs`'s open file description in the guest and answers with
    /// the new descriptor's number.
    fn install(&self, rs: &RawSocket, st: SockState, cloexec: bool) -> Out {
        let (ino, _) = sys::inode(rs).map_err(os)?;
        self.sup.insert(self.n.pid, ino, st);
        match sys::notif_addfd_send(self.sup.listener(), self.n.id, rs, cloexec) {
            Ok(_) => Ok(Reply::Done),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(GONE),
            Err(e) => Err(os(e)),
        }
    }

    /// A sockaddr argument: pointer `args[p]`, length `args[l]`
    /// (`EINVAL` if negative or over 128 bytes, as Linux).
    pub(crate) fn sockaddr(&mut self, p: usize, l: usize) -> Result<Vec<u8>, i32> {
        let len = usize::try_from(self.int(l))
            .ok()
            .filter(|n| *n <= SOCKADDR_MAX)
            .ok_or(libc::EINVAL)?;
        let at = self.arg(p);
        self.mem()?.read(at, len)
    }

    async fn connect(&mut self, rs: &RawSocket) -> Out {
        let addr = self.sockaddr(1, 2)?;
        self.valid()?;
        self.while_waiting(rs.connect(&addr, rs.nonblocking()))
            .await?
            .map_err(code)?;
        Ok(Reply::Value(0))
    }

    async fn accept(&mut self, rs: &RawSocket, st: SockState, flags: i32) -> Out {
        let (addr_at, len_at) = (self.arg(1), self.arg(2));
        let room = if addr_at != 0 {
            let n = self.mem()?.read_i32(len_at)?;
            usize::try_from(n).map_err(|_| libc::EINVAL)?
        } else {
            0
        };
        self.valid()?;
        let (child, peer) = self
            .while_waiting(rs.accept4(rs.nonblocking(), flags))
            .await?
            .map_err(code)?;
        if addr_at != 0 {
            let peer = peer.as_bytes();
            let mem = self.mem()?;
            mem.write(addr_at, &peer[..peer.len().min(room)])?;
            mem.write(len_at, &(peer.len() as u32).to_ne_bytes())?;
        }
        let st = SockState {
            nonblocking: flags & libc::SOCK_NONBLOCK != 0,
            ..st
        };
        self.install(&child, st, flags & libc::SOCK_CLOEXEC != 0)
    }

    fn setsockopt(&mut self, rs: &RawSocket, ino: u64) -> Out {
        let (level, name) = (self.int(1), self.int(2));
        let len = usize::try_from(self.int(4)).map_err(|_| libc::EINVAL)?;
        if len > MAX_OPTLEN {
            return Err(libc::EINVAL);
        }
        let at = self.arg(3);
        let value = self.mem()?.read(at, len)?;
        self.valid()?;
        rs.setsockopt(level, name, &value).map_err(code)?;
        if level == libc::SOL_SOCKET && (name == libc::SO_RCVTIMEO || name == libc::SO_SNDTIMEO) {
            let mut tv = [0u8; 16];
            tv.copy_from_slice(&value[..16]);
            self.sup.update(ino, |s| {
                if name == libc::SO_RCVTIMEO {
                    s.rcvtimeo = Some(tv);
                } else {
                    s.sndtimeo = Some(tv);
                }
            });
        }
        Ok(Reply::Value(0))
    }

    fn getsockopt(&mut self, rs: &RawSocket) -> Out {
        let (level, name, at, len_at) = (self.int(1), self.int(2), self.arg(3), self.arg(4));
        let room = self.mem()?.read_i32(len_at)?;
        let room = usize::try_from(room).map_err(|_| libc::EINVAL)?;
        self.valid()?;
        let mut out = vec![0u8; room.min(MAX_OPTLEN)];
        let n = rs.getsockopt(level, name, &mut out).map_err(code)?;
        let mem = self.mem()?;
        mem.write(at, &out[..n])?;
        mem.write(len_at, &(n as u32).to_ne_bytes())?;
        Ok(Reply::Value(0))
    }

    /// `fcntl(F_GETFL/F_SETFL)` on an INET socket: the guest's view of
    /// `O_NONBLOCK` is kept here, the open file description stays
    /// non-blocking (tokio needs it). Other descriptors: the kernel.
    fn fcntl(&mut self) -> Out {
        let (fd, ino) = match self.fetch(self.int(0))? {
            GuestFd::Inet(fd, ino) => (fd, ino),
            _ => return Ok(Reply::Continue),
        };
        match self.int(1) {
            libc::F_GETFL => {
                let flags = sys::status_flags(fd.as_fd()).map_err(os)? & !libc::O_NONBLOCK;
                let nb = self.sup.state(self.n.pid, ino).nonblocking;
                let nb = if nb { libc::O_NONBLOCK } else { 0 };
                Ok(Reply::Value((flags | nb).into()))
            }
            libc::F_SETFL => {
                let want = self.int(2);
                self.valid()?;
                sys::set_status_flags(fd.as_fd(), want | libc::O_NONBLOCK).map_err(os)?;
                self.sup
                    .update(ino, |s| s.nonblocking = want & libc::O_NONBLOCK != 0);
                Ok(Reply::Value(0))
            }
            _ => Ok(Reply::Continue),
        }
    }

    /// `ioctl(FIONBIO)`: as `fcntl(F_SETFL)`, for the `O_NONBLOCK` bit.
    fn fionbio(&mut self) -> Out {
        let ino = match self.fetch(self.int(0))? {
            GuestFd::Inet(_, ino) => ino,
            _ => return Ok(Reply::Continue),
        };
        let at = self.arg(2);
        let on = self.mem()?.read_i32(at)? != 0;
        self.valid()?;
        self.sup.update(ino, |s| s.nonblocking = on);
        Ok(Reply::Value(0))
    }
}
