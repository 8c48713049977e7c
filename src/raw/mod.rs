//! The errno-faithful layer for sandbox runtimes.
//!
//! A runtime that serves an untrusted guest's socket calls (a gVisor-like
//! sentry, a WASI host, a seccomp-unotify supervisor) calls [`RawSocket`]
//! with the guest's integers and bytes and gets back exactly what it must
//! answer: a value, or an [`Errno`].
//!
//! # The contract
//!
//! * One call maps to one host syscall. Nothing is retried, normalised or
//!   swallowed, except what SPEC.md lists: blocking (the host fd is always
//!   non-blocking; a blocking guest call waits on tokio), the socket's
//!   `SO_RCVTIMEO`/`SO_SNDTIMEO` (kept by the facade; expiry is `EAGAIN`,
//!   `EINPROGRESS` for connect), `SO_TYPE`/`SO_DOMAIN`/`SO_PROTOCOL`
//!   (answered from the socket's record), and `EALREADY` during a blocking
//!   connect (treated as still in progress, as Linux does).
//! * For an allowed call, the answer is the host kernel's: the same errno,
//!   the same bytes, the same lengths. The policy only decides *whether* a
//!   call may pass.
//! * What the policy refuses never reaches the kernel and gives a fixed
//!   errno: an unknown family `EAFNOSUPPORT`, an unsupported type
//!   `ESOCKTNOSUPPORT`, a wrong protocol `EPROTONOSUPPORT`, unknown bits in
//!   the type `EINVAL`; an option outside the table or turned off
//!   `ENOPROTOOPT`; a denied address `ECONNREFUSED` (`EACCES` for bind).
//! * Sockaddr bytes are checked as Linux checks them: longer than 128 bytes
//!   `EINVAL`, shorter than the family needs `EINVAL`; bytes past
//!   `sizeof(sockaddr_in6)` are cut off before the host sees them.
//!
//! # Examples
//!
//! ```
//! use hostsock::Policy;
//! use hostsock::raw::{Errno, RawSocket};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Errno> {
//!     let policy = Policy::shared_default();
//!     let sock = RawSocket::new(policy, libc::AF_INET, libc::SOCK_STREAM, 0)?;
//!     // An option outside the table: ENOPROTOOPT, and the kernel never sees it.
//!     let err = sock.setsockopt(libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &[0; 16]);
//!     assert_eq!(err, Err(Errno::ENOPROTOOPT));
//!     // An allowed one passes through: the host's answer comes back.
//!     sock.setsockopt(libc::IPPROTO_TCP, libc::TCP_NODELAY, &1i32.to_ne_bytes())?;
//!     let mut out = [0u8; 4];
//!     assert_eq!(sock.getsockopt(libc::IPPROTO_TCP, libc::TCP_NODELAY, &mut out)?, 4);
//!     assert_eq!(i32::from_ne_bytes(out), 1);
//!     Ok(())
//! }
//! ```

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod errno;
mod mmsg;
mod msg;
mod sockaddr;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use socket2::Socket;
use tokio::io::Interest;
use tokio::time::Instant;

pub use errno::Errno;
pub use mmsg::RawTransmit;
pub use msg::{MAX_GUEST_CONTROL, MAX_IOVECS, RawRecv, SendError};
pub(crate) use sockaddr::{
    IN6_LEN, MAX_LEN as SOCKADDR_MAX, encode_into as encode_sockaddr_into, inet_addr, received_addr,
};
pub use sockaddr::{SockaddrBytes, encode as encode_sockaddr};

use crate::core::{Core, finish_connect};
use crate::deadline::{self, Dir};
use crate::error::{Error, Op};
use crate::listener::{TcpListener, accept_allowed};
use crate::policy::{AddrUse, Policy, SocketKind};
use crate::stream::TcpStream;
use crate::{UdpSocket, sockopt, sys};
use sockaddr::Parsed;

/// A host socket driven by a guest's raw calls; see the [module
/// docs](self) for the contract.
///
/// The socket's registration with the reactor is renewed after `connect`
/// and `listen` on TCP sockets: a TCP socket that is not connected reports
/// `EPOLLHUP`, which tokio keeps as "closed" for good, so a registration
/// made while the socket was fresh (or after a failed connect) would make
/// every later wait return at once. Renewal keeps the fd number; it is
/// skipped while another call on the same socket is waiting.
#[derive(Debug)]
pub struct RawSocket {
    slot: Mutex<Option<Arc<Core>>>,
    /// Where the socket is kept if a renewal could not register it again:
    /// still open (the fd stays valid), but every call answers `EBADF`.
    orphan: Mutex<Option<Socket>>,
    fd: RawFd,
    kind: SocketKind,
    policy: Arc<Policy>,
    /// The guest's view of `O_NONBLOCK` (the host fd is always
    /// non-blocking).
    nonblocking: AtomicBool,
    /// Whether the socket has a local address yet (`BOUND_*`): a connect
    /// or send from an unbound socket binds it implicitly, which the
    /// `Bind` rules see.
    bound: AtomicU8,
}

const BOUND_UNKNOWN: u8 = 0;
const BOUND_NO: u8 = 1;
const BOUND_YES: u8 = 2;

/// The checks of `socket(2)`/`socketpair(2)` arguments, in Linux's order,
/// for the INET TCP and UDP this layer serves: the base type and the
/// protocol it means, or the errno.
fn validate_kind(domain: i32, ty: i32, protocol: i32) -> Result<(i32, i32), i32> {
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(libc::EAFNOSUPPORT);
    }
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    if base & !0xf != 0 {
        return Err(libc::EINVAL);
    }
    let want = match base {
        libc::SOCK_STREAM => libc::IPPROTO_TCP,
        libc::SOCK_DGRAM => libc::IPPROTO_UDP,
        _ => return Err(libc::ESOCKTNOSUPPORT),
    };
    if protocol != 0 && protocol != want {
        return Err(libc::EPROTONOSUPPORT);
    }
    Ok((base, want))
}

fn errno(e: Error) -> Errno {
    Errno::new(e.errno())
}

impl RawSocket {
    /// `socket(2)`: a host socket of the kind asked for, if the policy
    /// allows it. `SOCK_NONBLOCK` in `ty` sets the guest's view
    /// ([`nonblocking`](RawSocket::nonblocking)); `SOCK_CLOEXEC` is
    /// accepted; the host fd is always both.
    ///
    /// # Errors
    ///
    /// `EAFNOSUPPORT` for a family other than `AF_INET`/`AF_INET6`,
    /// `EINVAL` for unknown bits in `ty`, `ESOCKTNOSUPPORT` for a type
    /// other than `SOCK_STREAM`/`SOCK_DGRAM` (or a kind the policy refuses),
    /// `EPROTONOSUPPORT` for a protocol that does not fit the type; the
    /// host's errno (`EMFILE`, `ENOBUFS`, ...) otherwise.
    pub fn new(
        policy: Arc<Policy>,
        domain: i32,
        ty: i32,
        protocol: i32,
    ) -> Result<RawSocket, Errno> {
        // Every refusal below is the policy's (only INET TCP and UDP are
        // served), so the audit hook sees each.
        let refuse =
            |errno: i32| Errno::new(policy.refuse_kind(-1, (domain, ty, protocol), errno).errno);
        let (base, want) = validate_kind(domain, ty, protocol).map_err(refuse)?;
        let flags = ty & (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
        let kind = policy
            .check_kind(-1, domain, base, want)
            .map_err(|d| Errno::new(d.errno))?;
        let sock = Socket::new(
            domain.into(),
            socket2::Type::from(base).nonblocking().cloexec(),
            Some(want.into()),
        )?;
        let core = Core::registered(sock, policy, kind).map_err(errno)?;
        let raw = RawSocket::from_core(core, flags & libc::SOCK_NONBLOCK != 0);
        raw.bound.store(BOUND_NO, Ordering::Relaxed);
        Ok(raw)
    }

    /// Adopts a host socket obtained elsewhere (for example taken from a
    /// guest with `pidfd_getfd`). It must be an INET stream or datagram
    /// socket of a kind the policy allows. The guest's view of
    /// `O_NONBLOCK` is what the fd had; the host fd is made non-blocking
    /// and close-on-exec.
    ///
    /// # Errors
    ///
    /// `ENOTSOCK` if the fd is not a socket; `EAFNOSUPPORT` or
    /// `ESOCKTNOSUPPORT` if it is a kind the policy refuses.
    pub fn from_fd(fd: OwnedFd, policy: Arc<Policy>) -> Result<RawSocket, Errno> {
        let was_nonblocking = sys::fd_status_flags(&fd)? & libc::O_NONBLOCK != 0;
        let sock = Socket::from(fd);
        let core = Core::adopt(sock, policy, None).map_err(errno)?;
        Ok(RawSocket::from_core(core, was_nonblocking))
    }

    pub(crate) fn from_core(core: Core, nonblocking: bool) -> RawSocket {
        RawSocket {
            fd: core.raw_fd(),
            kind: core.kind(),
            policy: core.policy().clone(),
            slot: Mutex::new(Some(Arc::new(core))),
            orphan: Mutex::new(None),
            nonblocking: AtomicBool::new(nonblocking),
            bound: AtomicU8::new(BOUND_UNKNOWN),
        }
    }

    /// Checks the implicit bind a connect or send makes on a socket with no
    /// local address yet (see [`crate::core::check_implicit_bind`]). Nothing
    /// to do (no syscall) once the socket is known to be bound.
    fn check_implicit_bind(&self, core: &Core, op: Op) -> Result<(), Errno> {
        crate::core::check_implicit_bind(&self.policy, self.fd, op, self.kind, || {
            match self.bound.load(Ordering::Relaxed) {
                BOUND_YES => true,
                BOUND_NO => false,
                _ => {
                    let bound = crate::core::has_local_port(core.sock());
                    if bound {
                        self.bound.store(BOUND_YES, Ordering::Relaxed);
                    }
                    bound
                }
            }
        })
        .map_err(|d| Errno::new(d.errno))
    }

    /// Records that the socket now has a local address.
    pub(super) fn mark_bound(&self) {
        self.bound.store(BOUND_YES, Ordering::Relaxed);
    }

    /// Checks a send's destination (sendto, sendmsg, sendmmsg) the way the
    /// kernel will read it: on an IPv4 UDP socket `AF_UNSPEC` carries an
    /// INET address (`udp_sendmsg` reads it as one); on IPv6 it means "no
    /// address"; on TCP the address only matters with `MSG_FASTOPEN`,
    /// which connects (checked against the `Connect` rules too). Then the
    /// implicit bind of an unbound socket.
    pub(super) fn check_send_to(&self, core: &Core, to: &[u8], flags: i32) -> Result<(), Errno> {
        let tcp = is_tcp(self.kind);
        if !to.is_empty() {
            let parsed = match sockaddr::parse(to, false)? {
                Parsed::Unspec if self.kind == SocketKind::UdpV4 => sockaddr::parse(to, true)?,
                p => p,
            };
            if let Parsed::Inet(a) = parsed {
                let policy = &self.policy;
                policy
                    .check_addr(core.raw_fd(), Op::Send, AddrUse::SendTo, a)
                    .map_err(|d| Errno::new(d.errno))?;
                if tcp && flags & libc::MSG_FASTOPEN != 0 {
                    policy
                        .check_addr(core.raw_fd(), Op::Connect, AddrUse::Connect, a)
                        .map_err(|d| Errno::new(d.errno))?;
                }
            }
        }
        // A TCP send binds nothing, except a fast-open connect.
        if !tcp || (flags & libc::MSG_FASTOPEN != 0 && !to.is_empty()) {
            self.check_implicit_bind(core, Op::Send)?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Core>>> {
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current registration; `EBADF` if a renewal failed and left the
    /// socket closed.
    fn core(&self) -> Result<Arc<Core>, Errno> {
        self.lock().clone().ok_or(Errno::EBADF)
    }

    /// Registers a TCP socket anew after a state change (see the type's
    /// docs).
    fn renew(&self) {
        if !is_tcp(self.kind) {
            return;
        }
        let mut slot = self.lock();
        let Some(current) = slot.take() else {
            return;
        };
        *slot = match Arc::try_unwrap(current) {
            Ok(core) => match core.reregister() {
                Ok(core) => Some(Arc::new(core)),
                Err((sock, _)) => {
                    *self.orphan.lock().unwrap_or_else(|p| p.into_inner()) = Some(sock);
                    None
                }
            },
            // A call holds it (it is waiting): keep the registration.
            Err(shared) => Some(shared),
        };
    }

    /// `socketpair(2)` for INET families: the arguments are checked as
    /// Linux checks them, then `EOPNOTSUPP`, as Linux answers (only
    /// `AF_UNIX` has socket pairs).
    ///
    /// # Errors
    ///
    /// As Linux: `EAFNOSUPPORT` for a family other than `AF_INET`/`AF_INET6`,
    /// `EINVAL` for unknown bits in `ty`, `ESOCKTNOSUPPORT` for a type other
    /// than `SOCK_STREAM`/`SOCK_DGRAM`, `EPROTONOSUPPORT` for a protocol
    /// that does not fit the type, and `EOPNOTSUPP` for a valid INET call.
    /// The policy is not asked (no socket is made) and the host is not
    /// called.
    pub fn socketpair(
        _policy: Arc<Policy>,
        domain: i32,
        ty: i32,
        protocol: i32,
    ) -> Result<(RawSocket, RawSocket), Errno> {
        validate_kind(domain, ty, protocol).map_err(Errno::new)?;
        Err(Errno::EOPNOTSUPP)
    }

    /// The guest's view of `O_NONBLOCK`.
    pub fn nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }

    /// Sets the guest's view of `O_NONBLOCK` (what `fcntl(F_SETFL)` or
    /// `FIONBIO` would change); the host fd stays non-blocking.
    pub fn set_nonblocking(&self, on: bool) {
        self.nonblocking.store(on, Ordering::Relaxed);
    }

    /// The socket's kind.
    pub fn kind(&self) -> SocketKind {
        self.kind
    }

    /// `flags` against `allowed` (the policy's send or receive mask, or
    /// more): `EINVAL` outside it, the audit hook seeing the refusal.
    pub(crate) fn check_flags(&self, op: Op, flags: i32, allowed: i32) -> Result<(), Errno> {
        crate::msg::check_flags(self.policy(), self.host_fd(), op, flags, allowed)
            .map_err(|d| Errno::new(d.errno))
    }

    /// The policy this socket's calls are checked against.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    fn check_addr(
        &self,
        op: Op,
        usage: AddrUse,
        bytes: &[u8],
        for_bind: bool,
    ) -> Result<(), Errno> {
        if let Parsed::Inet(addr) = sockaddr::parse(bytes, for_bind)? {
            self.policy
                .check_addr(self.fd, op, usage, addr)
                .map_err(|d| Errno::new(d.errno))?;
        }
        Ok(())
    }

    /// `bind(2)`. The address is checked against the `Bind` rules
    /// (`EACCES` when denied).
    ///
    /// # Errors
    ///
    /// Refused before the host is called:
    ///
    /// * `EINVAL` for an address longer than 128 bytes or shorter than its
    ///   2-byte family field (as Linux's `move_addr_to_kernel`);
    /// * `EACCES` when the `Bind` rules deny the address (an `AF_UNSPEC`
    ///   address is checked as the `AF_INET` one `inet_bind` reads it as);
    ///   the audit hook sees the denial.
    ///
    /// `EBADF` if an earlier renewal of the registration failed (see
    /// [`RawSocket`]). Everything else is the host kernel's errno,
    /// unchanged: `EADDRINUSE`, `EADDRNOTAVAIL`, `EINVAL` for a socket
    /// already bound or an address too short for its family, `EACCES` for
    /// a privileged port without the capability (the same errno as the
    /// policy's; only the audit hook tells them apart), ...
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use std::sync::Arc;
    ///
    /// use hostsock::Policy;
    /// use hostsock::policy::{AddrRule, AddrUse, Cidr, Verdict};
    /// use hostsock::raw::{Errno, RawSocket, encode_sockaddr};
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), Errno> {
    ///     let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    ///     let sock = RawSocket::new(Policy::shared_default(), libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    ///     sock.bind(encode_sockaddr(local).as_bytes())?;
    ///     let bound = sock.getsockname()?.to_socket_addr().unwrap();
    ///     assert_eq!(bound.ip(), local.ip());
    ///     assert_ne!(bound.port(), 0); // the kernel picked a port
    ///
    ///     // A second bind: the host's EINVAL (already bound).
    ///     assert_eq!(sock.bind(encode_sockaddr(local).as_bytes()), Err(Errno::EINVAL));
    ///
    ///     // A policy that denies binding loopback: EACCES, and the host never
    ///     // sees the call.
    ///     let deny = AddrRule::new(Verdict::Deny, Cidr::new(local.ip(), 8), &[AddrUse::Bind]);
    ///     let policy = Arc::new(Policy::builder().addr_rule(deny).build());
    ///     let denied = RawSocket::new(policy, libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    ///     assert_eq!(denied.bind(encode_sockaddr(local).as_bytes()), Err(Errno::EACCES));
    ///     Ok(())
    /// }
    /// ```
    pub fn bind(&self, addr: &[u8]) -> Result<(), Errno> {
        self.check_addr(Op::Bind, AddrUse::Bind, addr, true)?;
        let core = self.core()?;
        sys::bind_bytes(core.sock(), sockaddr::host_bytes(addr))?;
        self.mark_bound();
        Ok(())
    }

    /// `listen(2)`; the backlog is passed through (the host clamps it).
    ///
    /// # Errors
    ///
    /// `EBADF` if an earlier renewal of the registration failed.
    /// Everything else is the host kernel's errno, unchanged (`EOPNOTSUPP`
    /// on a datagram socket, `EINVAL` on a connected one, ...). The registration is renewed after the host's
    /// success; if that renewal fails, this call still returns `Ok` and
    /// every later call answers `EBADF`.
    pub fn listen(&self, backlog: i32) -> Result<(), Errno> {
        let core = self.core()?;
        // An unbound TCP socket is bound by listen (to the unspecified
        // address, an ephemeral port): the `Bind` rules see that.
        if is_tcp(self.kind) {
            self.check_implicit_bind(&core, Op::Listen)?;
        }
        core.sock().listen(backlog)?;
        drop(core);
        self.mark_bound();
        self.renew();
        Ok(())
    }

    /// `connect(2)`. A non-blocking call gives the host's answer at once
    /// (`EINPROGRESS` included). A blocking call waits for the handshake,
    /// bounded by the send timeout (`SO_SNDTIMEO`; expiry gives
    /// `EINPROGRESS`, or `EALREADY` when an attempt was already under way,
    /// as Linux does), then calls `connect` once more so that the host
    /// finishes exactly as a blocking connect would (the result, and the
    /// socket's state afterwards, are the kernel's). The address is checked against
    /// the `Connect` rules (`ECONNREFUSED` when denied); `AF_UNSPEC`
    /// dissolves a datagram socket's association, as in Linux.
    ///
    /// # Errors
    ///
    /// Refused before the host is called (the audit hook sees the last
    /// two):
    ///
    /// * `EINVAL` for an address longer than 128 bytes or shorter than its
    ///   2-byte family field;
    /// * `ECONNREFUSED` when the `Connect` rules deny the address (the
    ///   unspecified address is checked as the loopback address Linux
    ///   sends it to; `AF_UNSPEC` and other families are not checked);
    /// * `EACCES` when the socket has no local address yet and a `Bind`
    ///   rule explicitly denies the unspecified address its implicit bind
    ///   takes (the default verdict alone never refuses it).
    ///
    /// `EBADF` if an earlier renewal of the registration failed. From the
    /// facade: a blocking call whose wait outlasts `SO_SNDTIMEO` answers
    /// the errno the call began with, `EINPROGRESS` (or `EALREADY` if an
    /// attempt was already under way), as Linux's does. Everything else is
    /// the host kernel's errno, unchanged: a non-blocking call's
    /// `EINPROGRESS`/`EALREADY`, `EISCONN`, and for a blocking call the
    /// handshake's outcome (`ECONNREFUSED`, `ETIMEDOUT`, `ENETUNREACH`,
    /// ...). A host `ECONNREFUSED` is the same errno as the policy's; only
    /// the audit hook tells them apart.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::Policy;
    /// use hostsock::raw::{Errno, RawSocket, encode_sockaddr};
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), Errno> {
    ///     let policy = Policy::shared_default();
    ///     let listener = RawSocket::new(policy.clone(), libc::AF_INET, libc::SOCK_STREAM, 0)?;
    ///     listener.bind(encode_sockaddr("127.0.0.1:0".parse().unwrap()).as_bytes())?;
    ///     listener.listen(8)?;
    ///     let addr = listener.getsockname()?;
    ///
    ///     let client = RawSocket::new(policy, libc::AF_INET, libc::SOCK_STREAM, 0)?;
    ///     // Blocking: returns once the handshake is done.
    ///     client.connect(addr.as_bytes(), false).await?;
    ///     let (server, peer) = listener.accept(false).await?;
    ///     assert_eq!(peer.to_socket_addr(), client.getsockname()?.to_socket_addr());
    ///     assert_eq!(server.getpeername()?.to_socket_addr(), peer.to_socket_addr());
    ///
    ///     // Connecting a connected socket: the host's EISCONN.
    ///     assert_eq!(client.connect(addr.as_bytes(), false).await, Err(Errno::EISCONN));
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the wait; the connection attempt goes
    /// on in the kernel, as it does for a guest interrupted by a signal.
    pub async fn connect(&self, addr: &[u8], nonblocking: bool) -> Result<(), Errno> {
        self.connect_deadline(addr, nonblocking, None).await
    }

    /// [`connect`](RawSocket::connect) with a deadline for the blocking
    /// wait (the earlier of it and the send timeout applies).
    ///
    /// # Errors
    ///
    /// As [`connect`](RawSocket::connect); the deadline passing first gives
    /// the same `EINPROGRESS` (or `EALREADY`) as the send timeout.
    ///
    /// # Cancel safety
    ///
    /// As [`connect`](RawSocket::connect).
    pub async fn connect_deadline(
        &self,
        addr: &[u8],
        nonblocking: bool,
        deadline: Option<Instant>,
    ) -> Result<(), Errno> {
        self.check_addr(Op::Connect, AddrUse::Connect, addr, false)?;
        let core = self.core()?;
        // AF_UNSPEC (dissolving an association) binds nothing.
        if sockaddr::parse(addr, false)? != Parsed::Unspec {
            self.check_implicit_bind(&core, Op::Connect)?;
        }
        let first = sys::connect_bytes(&*core, sockaddr::host_bytes(addr));
        drop(core);
        let code = match first {
            Ok(()) => {
                self.mark_bound();
                self.renew();
                return Ok(());
            }
            Err(e) => Errno::from_io(&e),
        };
        let pending = code == Errno::EINPROGRESS || code == Errno::EALREADY;
        if pending {
            // The kernel bound the socket when the attempt began.
            self.mark_bound();
            self.renew();
        }
        if nonblocking || !pending {
            return Err(code);
        }
        let core = self.core()?;
        // As Linux: a blocking connect that times out answers what the call
        // began with (`EINPROGRESS`, or `EALREADY` if an attempt was already
        // under way).
        let at = core.timeouts().deadline(Dir::Write, deadline);
        match deadline::run(at, Op::Connect, finish_connect(&core, addr)).await {
            Err(e) if e.is_timeout() => Err(code),
            r => r.map_err(errno),
        }
    }

    /// `accept(2)`; see [`accept4`](RawSocket::accept4).
    ///
    /// # Errors
    ///
    /// As [`accept4`](RawSocket::accept4) with no flags (so never its
    /// `EINVAL` for flags).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: no connection is taken off the queue
    /// unless it is returned.
    pub async fn accept(&self, nonblocking: bool) -> Result<(RawSocket, SockaddrBytes), Errno> {
        self.accept4(nonblocking, 0).await
    }

    /// `accept4(2)`. The host call is always
    /// `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`; the guest's `flags` only
    /// shape its view of the new socket (other bits: `EINVAL`). A blocking
    /// call waits, bounded by the receive timeout (expiry `EAGAIN`). A peer
    /// the `AcceptPeer` rules refuse is reset and never handed out.
    ///
    /// # Errors
    ///
    /// `EINVAL` for `flags` bits other than `SOCK_NONBLOCK`/`SOCK_CLOEXEC`
    /// (checked here as Linux checks them, before the host is called; not
    /// a policy denial, so the audit hook sees nothing). `EBADF` if an
    /// earlier renewal of the registration failed. From the facade:
    /// `EAGAIN` when a blocking call's wait outlasts `SO_RCVTIMEO`.
    /// Everything else is the host kernel's errno, unchanged: `EAGAIN` for
    /// a non-blocking call with nothing queued, `EINVAL` on a socket that
    /// is not listening, `EMFILE`/`ENFILE` (handed to the guest at once:
    /// the raw layer does not back off as
    /// [`TcpListener::incoming`](crate::TcpListener::incoming) does), ...
    /// A peer the `AcceptPeer` rules refuse gives no errno: the call goes
    /// on to the next connection (waiting, or `EAGAIN` if none is queued
    /// and the call may not wait).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn accept4(
        &self,
        nonblocking: bool,
        flags: i32,
    ) -> Result<(RawSocket, SockaddrBytes), Errno> {
        if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
            return Err(Errno::EINVAL);
        }
        let core = self.core()?;
        let policy = &self.policy;
        let (sock, peer) = if nonblocking {
            core.try_io_now(|s| accept_allowed(s, policy))
                .map_err(|e| Errno::from_io(&e))?
        } else {
            core.io(Interest::READABLE, Dir::Read, Op::Accept, None, |s| {
                accept_allowed(s, policy)
            })
            .await
            .map_err(errno)?
        };
        let child = Core::registered(sock, policy.clone(), self.kind).map_err(errno)?;
        core.pass_timeouts_to(&child).map_err(errno)?;
        let child = RawSocket::from_core(child, flags & libc::SOCK_NONBLOCK != 0);
        child.mark_bound();
        Ok((child, sockaddr::encode(peer)))
    }

    /// `shutdown(2)`. `how` other than `SHUT_RD`, `SHUT_WR`, `SHUT_RDWR` is
    /// `EINVAL`. After `SHUT_RD`, a blocking receive with nothing queued
    /// returns 0 at once.
    ///
    /// # Errors
    ///
    /// `EINVAL` for another `how` (checked here as Linux checks it, before
    /// the host is called; not a policy denial). `EBADF` if an earlier
    /// renewal of the registration failed. Everything else is the host
    /// kernel's errno, unchanged: `ENOTCONN` on a socket that is not
    /// connected (on an unconnected datagram socket `SHUT_RD` still takes
    /// effect, as in Linux).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::Policy;
    /// use hostsock::raw::{Errno, RawSocket, encode_sockaddr};
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let policy = Policy::shared_default();
    ///     let listener = RawSocket::new(policy.clone(), libc::AF_INET, libc::SOCK_STREAM, 0)?;
    ///     listener.bind(encode_sockaddr("127.0.0.1:0".parse()?).as_bytes())?;
    ///     listener.listen(8)?;
    ///     let client = RawSocket::new(policy, libc::AF_INET, libc::SOCK_STREAM, 0)?;
    ///     // Not connected yet: the host's ENOTCONN.
    ///     assert_eq!(client.shutdown(libc::SHUT_WR), Err(Errno::ENOTCONN));
    ///     client.connect(listener.getsockname()?.as_bytes(), false).await?;
    ///     let (server, _) = listener.accept(false).await?;
    ///
    ///     // An unknown `how`: EINVAL before the host is called.
    ///     assert_eq!(client.shutdown(42), Err(Errno::EINVAL));
    ///     client.shutdown(libc::SHUT_WR)?;
    ///     let mut buf = [0u8; 8];
    ///     assert_eq!(server.read(&mut buf).await?, 0); // end of stream
    ///     Ok(())
    /// }
    /// ```
    pub fn shutdown(&self, how: i32) -> Result<(), Errno> {
        let how = match how {
            libc::SHUT_RD => std::net::Shutdown::Read,
            libc::SHUT_WR => std::net::Shutdown::Write,
            libc::SHUT_RDWR => std::net::Shutdown::Both,
            _ => return Err(Errno::EINVAL),
        };
        self.core()?.shutdown(how).map_err(errno)
    }

    /// `getsockname(2)`: the bytes the host gives.
    ///
    /// # Errors
    ///
    /// `EBADF` if an earlier renewal of the registration failed; otherwise
    /// the host kernel's errno, unchanged. Nothing is checked.
    pub fn getsockname(&self) -> Result<SockaddrBytes, Errno> {
        let (buf, len) = sys::sockname(&*self.core()?, false)?;
        Ok(SockaddrBytes::new(buf.get(..len).unwrap_or(&buf)))
    }

    /// `getpeername(2)`: the bytes the host gives (`ENOTCONN` when not
    /// connected).
    ///
    /// # Errors
    ///
    /// `EBADF` if an earlier renewal of the registration failed; otherwise
    /// the host kernel's errno, unchanged (`ENOTCONN` when not connected).
    /// Nothing is checked.
    pub fn getpeername(&self) -> Result<SockaddrBytes, Errno> {
        let (buf, len) = sys::sockname(&*self.core()?, true)?;
        Ok(SockaddrBytes::new(buf.get(..len).unwrap_or(&buf)))
    }

    /// `getsockopt(2)`: `out`'s length is the guest's optlen. Returns the
    /// length Linux reports; short buffers truncate where Linux truncates
    /// (the host answers, with the guest's length capped at the option's
    /// size).
    ///
    /// # Errors
    ///
    /// `ENOPROTOOPT` for an option outside the table (unless the policy
    /// passes unknown options through), turned off by the policy, or
    /// set-only; `EBADF` if an earlier renewal of the registration failed;
    /// the host's errno otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::Policy;
    /// use hostsock::raw::{Errno, RawSocket};
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), Errno> {
    ///     let sock = RawSocket::new(Policy::shared_default(), libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    ///     // Answered from the socket's record.
    ///     let mut out = [0u8; 4];
    ///     assert_eq!(sock.getsockopt(libc::SOL_SOCKET, libc::SO_TYPE, &mut out)?, 4);
    ///     assert_eq!(i32::from_ne_bytes(out), libc::SOCK_DGRAM);
    ///     // A set-only option: ENOPROTOOPT, as Linux answers.
    ///     let err = sock.getsockopt(libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mut out);
    ///     assert_eq!(err, Err(Errno::ENOPROTOOPT));
    ///     Ok(())
    /// }
    /// ```
    pub fn getsockopt(&self, level: i32, name: i32, out: &mut [u8]) -> Result<usize, Errno> {
        sockopt::get(self.core()?.opt_target(), level, name, out).map_err(|e| Errno::new(e.errno()))
    }

    /// `setsockopt(2)`: `value`'s length is the guest's optlen.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a value shorter than the option or longer than 32 KiB;
    /// `ENOPROTOOPT` for an option turned off or get-only, or outside the
    /// table when the policy rejects unknown options; `EDOM` for a timeout
    /// with `usec` outside `0..1_000_000`; `EBADF` if an earlier renewal of
    /// the registration failed; the host's errno otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::Policy;
    /// use hostsock::raw::{Errno, RawSocket};
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), Errno> {
    ///     let sock = RawSocket::new(Policy::shared_default(), libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    ///     let (level, name) = (libc::SOL_SOCKET, libc::SO_RCVTIMEO);
    ///     // A timeout is a whole `timeval` (16 bytes): shorter is EINVAL.
    ///     assert_eq!(sock.setsockopt(level, name, &[0u8; 8]), Err(Errno::EINVAL));
    ///     // `usec` of a million or more: EDOM.
    ///     let tv = [0i64.to_ne_bytes(), 1_000_000i64.to_ne_bytes()].concat();
    ///     assert_eq!(sock.setsockopt(level, name, &tv), Err(Errno::EDOM));
    ///     // A get-only option: ENOPROTOOPT.
    ///     let err = sock.setsockopt(libc::SOL_SOCKET, libc::SO_ERROR, &0i32.to_ne_bytes());
    ///     assert_eq!(err, Err(Errno::ENOPROTOOPT));
    ///     // Two seconds: read back as the host keeps it (whole seconds are
    ///     // exact; the host rounds other values to its clock ticks).
    ///     let tv = [2i64.to_ne_bytes(), 0i64.to_ne_bytes()].concat();
    ///     sock.setsockopt(level, name, &tv)?;
    ///     let mut out = [0u8; 16];
    ///     assert_eq!(sock.getsockopt(level, name, &mut out)?, 16);
    ///     assert_eq!(&out[..], &tv[..]);
    ///     Ok(())
    /// }
    /// ```
    pub fn setsockopt(&self, level: i32, name: i32, value: &[u8]) -> Result<(), Errno> {
        sockopt::set(self.core()?.opt_target(), level, name, value)
            .map_err(|e| Errno::new(e.errno()))
    }

    /// `ioctl(2)` for `TIOCINQ`/`FIONREAD`, `TIOCOUTQ` and `SIOCATMARK`
    /// (the host's answer); anything else is `ENOTTY`.
    ///
    /// # Errors
    ///
    /// `ENOTTY` for any other request (before the host is called; not a
    /// policy denial). `EBADF` if an earlier renewal of the registration
    /// failed. Everything else is the host kernel's errno, unchanged
    /// (`EINVAL` for `TIOCINQ` on a listening TCP socket, say).
    pub fn ioctl(&self, request: u64) -> Result<i32, Errno> {
        let request = libc::c_ulong::try_from(request).map_err(|_| Errno::ENOTTY)?;
        Ok(sys::ioctl_int(&*self.core()?, request)?)
    }

    /// The `poll(2)` events of `mask` that hold now (`POLLERR`/`POLLHUP`
    /// are always reported, as poll does).
    ///
    /// # Errors
    ///
    /// `EBADF` if an earlier renewal of the registration failed; otherwise
    /// the host's `poll(2)` errno, unchanged. Nothing is checked.
    pub fn poll(&self, mask: i16) -> Result<i16, Errno> {
        Ok(sys::poll_now(&*self.core()?, mask)?)
    }

    /// Waits until one of the events in `mask` (or `POLLERR`/`POLLHUP`)
    /// holds and returns them; `EAGAIN` when `deadline` passes first.
    ///
    /// # Errors
    ///
    /// `EBADF` if an earlier renewal of the registration failed. From the
    /// facade: `EAGAIN` when `deadline` passes first (the socket's
    /// `SO_RCVTIMEO`/`SO_SNDTIMEO` do not apply). Otherwise the host's
    /// `poll(2)` errno (or the reactor's), unchanged.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn wait(&self, mask: i16, deadline: Option<Instant>) -> Result<i16, Errno> {
        let mut interest = Interest::ERROR;
        if mask & (libc::POLLIN | libc::POLLRDNORM) != 0 {
            interest = interest.add(Interest::READABLE);
        }
        if mask & (libc::POLLOUT | libc::POLLWRNORM) != 0 {
            interest = interest.add(Interest::WRITABLE);
        }
        if mask & libc::POLLPRI != 0 {
            interest = interest.add(Interest::PRIORITY);
        }
        let core = self.core()?;
        let core = &*core;
        deadline::run(deadline, Op::Ready, async {
            // The reactor's "closed" readiness (a read-shut or hung-up
            // socket) is never cleared: when it is what woke this wait but
            // none of `mask` holds (say POLLPRI asked on a read-shut
            // socket), the wait polls with a growing pause instead of
            // spinning, so that it stays cheap and its deadline fires.
            let mut pause = std::time::Duration::from_millis(1);
            loop {
                let revents = sys::poll_now(core.sock(), mask)?;
                if revents != 0 {
                    return Ok(revents);
                }
                let mut guard = core.async_fd().ready(interest).await?;
                if sys::poll_now(core.sock(), mask)? == 0 {
                    let ready = guard.ready();
                    let sticky = ready.is_read_closed() || ready.is_write_closed();
                    guard.clear_ready();
                    drop(guard);
                    if sticky {
                        tokio::time::sleep(pause).await;
                        pause = pause
                            .saturating_mul(2)
                            .min(std::time::Duration::from_millis(50));
                    }
                }
            }
        })
        .await
        .map_err(errno)
    }

    /// The host fd (still owned by this socket).
    pub fn host_fd(&self) -> RawFd {
        self.fd
    }

    /// The registration by value, for the conversions into typed sockets.
    /// No call can be holding it (the socket is owned here), so this only
    /// fails if a renewal failed earlier (`EBADF`).
    fn into_core(self) -> Result<Core, RawSocket> {
        let taken = self.lock().take();
        match taken.map(Arc::try_unwrap) {
            Some(Ok(core)) => Ok(core),
            Some(Err(shared)) => {
                *self.lock() = Some(shared);
                Err(self)
            }
            None => Err(self),
        }
    }
}

impl AsRawFd for RawSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl From<TcpStream> for RawSocket {
    fn from(s: TcpStream) -> RawSocket {
        RawSocket::from_core(s.into_core(), false)
    }
}

impl From<TcpListener> for RawSocket {
    fn from(s: TcpListener) -> RawSocket {
        RawSocket::from_core(s.into_core(), false)
    }
}

impl From<UdpSocket> for RawSocket {
    fn from(s: UdpSocket) -> RawSocket {
        RawSocket::from_core(s.into_core(), false)
    }
}

/// A [`RawSocket`] that is not of the type a conversion needs; it gives
/// the socket back.
#[derive(Debug)]
pub struct WrongKind(pub RawSocket);

impl std::fmt::Display for WrongKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the raw socket is a {:?} socket", self.0.kind())
    }
}

impl std::error::Error for WrongKind {}

fn is_tcp(kind: SocketKind) -> bool {
    matches!(kind, SocketKind::TcpV4 | SocketKind::TcpV6)
}

fn is_stream(s: &RawSocket) -> bool {
    is_tcp(s.kind())
}

impl TryFrom<RawSocket> for TcpStream {
    type Error = WrongKind;

    fn try_from(s: RawSocket) -> Result<TcpStream, WrongKind> {
        if !is_stream(&s) {
            return Err(WrongKind(s));
        }
        s.into_core().map(TcpStream::from_core).map_err(WrongKind)
    }
}

impl TryFrom<RawSocket> for TcpListener {
    type Error = WrongKind;

    fn try_from(s: RawSocket) -> Result<TcpListener, WrongKind> {
        if !is_stream(&s) {
            return Err(WrongKind(s));
        }
        s.into_core().map(TcpListener::from_core).map_err(WrongKind)
    }
}

impl TryFrom<RawSocket> for UdpSocket {
    type Error = WrongKind;

    fn try_from(s: RawSocket) -> Result<UdpSocket, WrongKind> {
        if is_stream(&s) {
            return Err(WrongKind(s));
        }
        s.into_core().map(UdpSocket::from_core).map_err(WrongKind)
    }
}
