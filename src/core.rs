//! The record every socket type shares: the registered host fd, the policy,
//! the timeouts, and the helpers that run one operation against them.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{SockAddr, Socket};
use tokio::io::unix::AsyncFd;
use tokio::io::{Interest, Ready};
use tokio::time::Instant;

use crate::deadline::{self, Dir, Timeouts};
use crate::error::{Error, Op, Result};
use crate::policy::{Policy, SocketKind};

/// Checks the implicit bind a connect, send or listen makes on a socket
/// with no local address yet: as `bind` of the unspecified address of the
/// socket's family, port 0 (the kernel picks). Only a rule that matches it
/// explicitly (a deny of `0.0.0.0/0` for `Bind`, say) refuses it; the
/// default verdict does not, since the caller named no address (a
/// default-deny policy that allows a connect would otherwise refuse every
/// connect from an unbound socket). `is_bound` is asked only when such a
/// rule exists, so the common case costs no syscall.
pub(crate) fn check_implicit_bind(
    policy: &Policy,
    fd: RawFd,
    op: Op,
    kind: SocketKind,
    is_bound: impl FnOnce() -> bool,
) -> std::result::Result<(), crate::error::Denial> {
    use crate::policy::{AddrUse, Verdict};
    let any = match kind {
        SocketKind::TcpV6 | SocketKind::UdpV6 => {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        }
        _ => SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
    };
    match policy.addr_verdict(AddrUse::Bind, any) {
        (Verdict::Deny, Some(_)) if !is_bound() => policy.check_addr(fd, op, AddrUse::Bind, any),
        _ => Ok(()),
    }
}

/// Whether a socket has a local address (a port) yet.
pub(crate) fn has_local_port(sock: &Socket) -> bool {
    sock.local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .is_some_and(|a| a.port() != 0)
}

/// Spends one unit of tokio's cooperative budget, yielding when it is used
/// up: operations that complete without waiting (see [`Core::try_ready`])
/// still let the other tasks of the runtime run, as tokio's own waits do.
#[inline]
pub(crate) async fn fair_turn() {
    tokio::task::coop::consume_budget().await;
}

/// Everything adopting a socket made elsewhere takes before registering:
/// its kind checked (see [`check_adopted`]), the fd made non-blocking and
/// close-on-exec, and its host `SO_RCVTIMEO`/`SO_SNDTIMEO` as the timeouts.
pub(crate) fn prepare_adopted(
    sock: &Socket,
    policy: &Policy,
    expect: Option<i32>,
) -> Result<(SocketKind, Timeouts)> {
    let domain = i32::from(sock.domain()?);
    let ty = i32::from(sock.r#type()?);
    let protocol = sock.protocol()?.map(i32::from).unwrap_or(0);
    let kind = check_adopted(policy, sock.as_raw_fd(), (domain, ty, protocol), expect)?;
    sock.set_nonblocking(true)?;
    sock.set_cloexec(true)?;
    let timeouts = Timeouts::default();
    for (dir, t) in [
        (Dir::Read, sock.read_timeout()?),
        (Dir::Write, sock.write_timeout()?),
    ] {
        if let Some(t) = t {
            timeouts.set_wait(dir, deadline::Wait::For(t));
        }
    }
    Ok((kind, timeouts))
}

/// Checks a socket made elsewhere: its kind against the policy, its
/// protocol (only TCP and UDP, whatever the domain and type say: a
/// `SOCK_DGRAM` ICMP "ping" socket is not a UDP socket), and its type
/// against `expect`.
pub(crate) fn check_adopted(
    policy: &Policy,
    fd: RawFd,
    (domain, ty, protocol): (i32, i32, i32),
    expect: Option<i32>,
) -> Result<SocketKind> {
    let kind = policy.check_kind(fd, domain, ty, protocol)?;
    let proto_ok = match ty {
        libc::SOCK_STREAM => matches!(protocol, 0 | libc::IPPROTO_TCP),
        _ => matches!(protocol, 0 | libc::IPPROTO_UDP),
    };
    if !proto_ok || expect.is_some_and(|t| t != ty) {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket is not of the type this wrapper needs",
        )));
    }
    Ok(kind)
}

/// A host socket registered with the tokio reactor, with its policy and
/// timeouts.
#[derive(Debug)]
pub(crate) struct Core {
    fd: AsyncFd<Socket>,
    policy: Arc<Policy>,
    kind: SocketKind,
    timeouts: Timeouts,
    /// Set once `shutdown(SHUT_RD)` succeeded through this socket: a receive
    /// that would wait returns 0 instead, as a blocking Linux socket does.
    read_shut: AtomicBool,
}

impl Core {
    /// Adopts a socket made elsewhere: checks its kind against the policy
    /// (`expect`, if given, must match too), makes the fd non-blocking and
    /// close-on-exec whatever it was before, and registers it.
    pub(crate) fn adopt(sock: Socket, policy: Arc<Policy>, expect: Option<i32>) -> Result<Core> {
        let (kind, timeouts) = prepare_adopted(&sock, &policy, expect)?;
        let core = Core::registered(sock, policy, kind)?;
        core.timeouts.copy_from(&timeouts);
        Ok(core)
    }

    /// Registers a socket this crate created non-blocking and close-on-exec.
    pub(crate) fn registered(sock: Socket, policy: Arc<Policy>, kind: SocketKind) -> Result<Core> {
        let fd = crate::sys::register(sock)?;
        Ok(Core {
            fd,
            policy,
            kind,
            timeouts: Timeouts::default(),
            read_shut: AtomicBool::new(false),
        })
    }

    #[inline]
    pub(crate) fn sock(&self) -> &Socket {
        self.fd.get_ref()
    }

    #[inline]
    pub(crate) fn async_fd(&self) -> &AsyncFd<Socket> {
        &self.fd
    }

    #[inline]
    pub(crate) fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    #[inline]
    pub(crate) fn kind(&self) -> SocketKind {
        self.kind
    }

    #[inline]
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.sock().as_raw_fd()
    }

    #[inline]
    pub(crate) fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    pub(crate) fn timeout(&self, dir: Dir) -> Option<Duration> {
        self.timeouts.get(dir)
    }

    /// Gives a socket accepted from this listener the listener's timeouts,
    /// in the facade and on the host. The kernel copied the listener's
    /// values when the handshake completed, which may be older; writing
    /// them again makes both agree. Nothing to do (no syscall) while the
    /// listener's timeouts were never set.
    pub(crate) fn pass_timeouts_to(&self, child: &Core) -> Result<()> {
        if !self.timeouts.touched() {
            return Ok(());
        }
        child.timeouts.copy_from(&self.timeouts);
        for (dir, name) in [
            (Dir::Read, libc::SO_RCVTIMEO),
            (Dir::Write, libc::SO_SNDTIMEO),
        ] {
            let tv = crate::sockopt::timeval_bytes(self.timeouts.wait(dir));
            crate::sys::setsockopt(child.sock(), libc::SOL_SOCKET, name, &tv)?;
        }
        Ok(())
    }

    pub(crate) fn set_timeout(&self, dir: Dir, t: Option<Duration>) -> Result<()> {
        crate::sockopt::set_timeout(self.opt_target(), dir, t)
    }

    /// Registers the same socket (same fd) with the reactor anew, dropping
    /// whatever readiness the old registration had recorded.
    /// If that fails, the socket comes back (still open) with the error.
    pub(crate) fn reregister(self) -> std::result::Result<Core, (Socket, io::Error)> {
        let Core {
            fd,
            policy,
            kind,
            timeouts,
            read_shut,
        } = self;
        let fd =
            crate::sys::register_keep(fd.into_inner(), Interest::READABLE | Interest::WRITABLE)?;
        Ok(Core {
            fd,
            policy,
            kind,
            timeouts,
            read_shut,
        })
    }

    /// Takes the socket back out of the reactor.
    pub(crate) fn into_socket(self) -> Socket {
        self.fd.into_inner()
    }

    /// Runs `f` each time the fd is ready for `interest`, until it gives
    /// something other than `WouldBlock`, or until the deadline (the call's,
    /// or the socket's timeout for `dir`) passes.
    pub(crate) async fn io<R>(
        &self,
        interest: Interest,
        dir: Dir,
        op: Op,
        call_deadline: Option<Instant>,
        mut f: impl FnMut(&Socket) -> io::Result<R>,
    ) -> Result<R> {
        fair_turn().await;
        if let Some(r) = self.try_ready(interest, op, &mut f) {
            return r;
        }
        self.wait_io(interest, dir, op, call_deadline, f).await
    }

    /// A caller's own I/O (`try_io`/`async_io` of the typed sockets): `f`
    /// each time the fd is ready for `interest`, until it gives something
    /// other than `WouldBlock`; the write timeout applies to writable
    /// interest, the read timeout otherwise.
    pub(crate) async fn user_io<R>(
        &self,
        interest: Interest,
        mut f: impl FnMut() -> io::Result<R>,
    ) -> Result<R> {
        let dir = if interest.is_writable() {
            Dir::Write
        } else {
            Dir::Read
        };
        self.io(interest, dir, Op::Ready, None, |_| f()).await
    }

    /// Runs `f` once if the reactor already knows the fd is ready for
    /// `interest` (an atomic load; no syscall otherwise): a queued datagram
    /// is taken without building a readiness future. `None`: not ready, or
    /// `f` gave `WouldBlock` (the readiness is then cleared). Call
    /// [`fair_turn`] before, in async code.
    #[inline]
    pub(crate) fn try_ready<R>(
        &self,
        interest: Interest,
        op: Op,
        f: impl FnOnce(&Socket) -> io::Result<R>,
    ) -> Option<Result<R>> {
        // A receive's `READABLE | ERROR` tries on readable only; a pending
        // error alone is left to the waiting path.
        let first = if interest.is_readable() {
            Interest::READABLE
        } else {
            interest
        };
        match self.fd.try_io(first, |s| f(s)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            r => Some(r.map_err(|e| {
                let e = Error::from(e);
                crate::trace::failed(self.raw_fd(), op, &e);
                e
            })),
        }
    }

    /// The waiting part of [`io`](Core::io).
    pub(crate) async fn wait_io<R>(
        &self,
        interest: Interest,
        dir: Dir,
        op: Op,
        call_deadline: Option<Instant>,
        mut f: impl FnMut(&Socket) -> io::Result<R>,
    ) -> Result<R> {
        // The common case (no deadline, no timeout) goes straight to the
        // reactor: no timer, no clock read.
        let r = if call_deadline.is_none() && self.timeouts.wait(dir) == deadline::Wait::Forever {
            self.fd
                .async_io(interest, |s| f(s))
                .await
                .map_err(Error::from)
        } else {
            let at = self.timeouts.deadline(dir, call_deadline);
            deadline::run(at, op, async {
                self.fd
                    .async_io(interest, |s| f(s))
                    .await
                    .map_err(Error::from)
            })
            .await
        };
        if let Err(e) = &r {
            crate::trace::failed(self.raw_fd(), op, e);
        }
        r
    }

    /// Waits until the fd is ready for `interest`, or the deadline passes.
    pub(crate) async fn ready(
        &self,
        interest: Interest,
        call_deadline: Option<Instant>,
    ) -> Result<Ready> {
        deadline::run(call_deadline, Op::Ready, async {
            let guard = self.fd.ready(interest).await?;
            Ok(guard.ready())
        })
        .await
    }

    /// Runs `f` once, now, if the fd may be ready; `WouldBlock` clears the
    /// readiness so that the next wait really waits.
    pub(crate) fn try_io<R>(
        &self,
        interest: Interest,
        f: impl FnOnce(&Socket) -> io::Result<R>,
    ) -> Result<R> {
        // tokio's `try_io` only recognises a single interest, so a combined
        // one (a datagram receive's `READABLE | ERROR`) is tried part by
        // part; `f` runs at most once.
        let f = std::cell::Cell::new(Some(f));
        let once = |s: &Socket| match f.take() {
            Some(f) => f(s),
            None => Err(io::ErrorKind::WouldBlock.into()),
        };
        if interest.is_readable() && interest.is_error() {
            let first = self.fd.try_io(Interest::READABLE, once);
            let unready = matches!(&first, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
            // Error readiness is tried only when `f` has not run: were it
            // run again and got `WouldBlock`, tokio would clear a readiness
            // that may be real.
            let ran = {
                let left = f.take();
                let ran = left.is_none();
                f.set(left);
                ran
            };
            if !unready || ran {
                return first.map_err(Error::from);
            }
            return self.fd.try_io(Interest::ERROR, once).map_err(Error::from);
        }
        self.fd.try_io(interest, once).map_err(Error::from)
    }

    /// Runs `f` once now, whatever the reactor's readiness says (the raw
    /// layer's non-blocking calls: one call, one syscall).
    pub(crate) fn try_io_now<R>(&self, f: impl FnOnce(&Socket) -> io::Result<R>) -> io::Result<R> {
        f(self.sock())
    }

    /// Receive-side polling helper: waits for read readiness and runs `f`.
    pub(crate) fn poll_read_io<R>(
        &self,
        cx: &mut Context<'_>,
        mut f: impl FnMut(&Socket) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            let mut guard = std::task::ready!(self.fd.poll_read_ready(cx))?;
            match guard.try_io(|fd| f(fd.get_ref())) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    /// Send-side polling helper: waits for write readiness and runs `f`.
    pub(crate) fn poll_write_io<R>(
        &self,
        cx: &mut Context<'_>,
        mut f: impl FnMut(&Socket) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            let mut guard = std::task::ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| f(fd.get_ref())) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    pub(crate) fn mark_read_shut(&self) {
        self.read_shut.store(true, Ordering::Relaxed);
    }

    /// After `SHUT_RD`, a receive that would wait ends with `eof` instead:
    /// what a blocking Linux socket returns (0 bytes).
    pub(crate) fn eof_if_shut<R>(
        &self,
        r: io::Result<R>,
        eof: impl FnOnce() -> R,
    ) -> io::Result<R> {
        match r {
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    && self.read_shut.load(Ordering::Relaxed) =>
            {
                Ok(eof())
            }
            r => r,
        }
    }

    /// [`try_io`](Core::try_io) for receives: after `SHUT_RD`, "nothing
    /// queued" is end of data (`eof`), as in the async forms, whether or not
    /// the reactor thought the fd readable.
    pub(crate) fn try_recv_io<R>(
        &self,
        interest: Interest,
        f: impl FnOnce(&Socket) -> io::Result<R>,
        eof: impl FnOnce() -> io::Result<R>,
    ) -> Result<R> {
        match self.try_io(interest, f) {
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    && self.read_shut.load(Ordering::Relaxed) =>
            {
                eof().map_err(Error::from)
            }
            r => r,
        }
    }

    pub(crate) fn shutdown(&self, how: std::net::Shutdown) -> Result<()> {
        let r = self.sock().shutdown(how);
        let read = matches!(how, std::net::Shutdown::Read | std::net::Shutdown::Both);
        // Linux sets the shutdown bits even when it answers ENOTCONN (an
        // unconnected datagram socket: inet_shutdown wakes pollers anyway):
        // the socket then polls readable for good while a receive gives
        // EAGAIN, and a blocking receive returns 0. Mark it too, or a waiting
        // receive would spin.
        let shut_anyway = matches!(&r, Err(e) if e.raw_os_error() == Some(libc::ENOTCONN))
            && matches!(self.kind, SocketKind::UdpV4 | SocketKind::UdpV6);
        if read && (r.is_ok() || shut_anyway) {
            self.mark_read_shut();
        }
        Ok(r?)
    }

    pub(crate) fn local_addr(&self) -> Result<SocketAddr> {
        to_inet(self.sock().local_addr()?)
    }

    pub(crate) fn peer_addr(&self) -> Result<SocketAddr> {
        to_inet(self.sock().peer_addr()?)
    }

    pub(crate) fn take_error(&self) -> Result<Option<io::Error>> {
        Ok(self.sock().take_error()?)
    }
}

impl AsFd for Core {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock().as_fd()
    }
}

impl AsRawFd for Core {
    fn as_raw_fd(&self) -> RawFd {
        self.sock().as_raw_fd()
    }
}

/// An INET socket address from a `SockAddr`; any other family is `EAFNOSUPPORT`.
pub(crate) fn to_inet(addr: SockAddr) -> Result<SocketAddr> {
    addr.as_socket()
        .ok_or_else(|| Error::Io(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)))
}

/// Resolves `addr` the way tokio does (a literal address costs nothing; a
/// host name is looked up on the blocking pool) and runs `f` on each address
/// until one succeeds. The last error is returned; no address at all is
/// `EINVAL`.
pub(crate) async fn each_addr<A, T, F, Fut>(addr: A, mut f: F) -> Result<T>
where
    A: tokio::net::ToSocketAddrs,
    F: FnMut(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let addrs = tokio::net::lookup_host(addr).await?;
    let mut last = None;
    for a in addrs {
        match f(a).await {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        Error::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        ))
    }))
}

/// The first address `addr` resolves to.
pub(crate) async fn first_addr<A: tokio::net::ToSocketAddrs>(addr: A) -> Result<SocketAddr> {
    let mut addrs = tokio::net::lookup_host(addr).await?;
    addrs.next().ok_or_else(|| {
        Error::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no addresses to send data to",
        ))
    })
}

/// Creates a non-blocking, close-on-exec host socket of a kind the policy
/// allows (a refused kind never reaches the kernel).
pub(crate) fn new_socket(
    policy: &Policy,
    domain: socket2::Domain,
    stream: bool,
) -> Result<(Socket, SocketKind)> {
    let (ty, proto) = if stream {
        (socket2::Type::STREAM, socket2::Protocol::TCP)
    } else {
        (socket2::Type::DGRAM, socket2::Protocol::UDP)
    };
    let kind = policy.check_kind(-1, domain.into(), ty.into(), proto.into())?;
    let sock = Socket::new(domain, ty.nonblocking().cloexec(), Some(proto))?;
    Ok((sock, kind))
}

/// The end of a blocking connect: each time the socket turns writable,
/// `connect(2)` is called again with the same address, so the kernel itself
/// completes the call (marks the socket connected, or answers the error and
/// resets it) exactly as for a blocking socket. `0` or `EISCONN` is
/// success; `EALREADY`/`EINPROGRESS` mean the handshake goes on.
pub(crate) async fn finish_connect(core: &Core, addr: &[u8]) -> Result<()> {
    let addr = &addr[..addr.len().min(28)];
    loop {
        let mut guard = core.async_fd().writable().await?;
        match crate::sys::connect_bytes(core.sock(), addr) {
            Ok(()) => return Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::EISCONN) => return Ok(()),
                Some(libc::EALREADY | libc::EINPROGRESS | libc::EINTR) => guard.clear_ready(),
                _ => return Err(e.into()),
            },
        }
    }
}

/// `AsFd` and `AsRawFd` for a socket type, through its field that owns the
/// fd.
macro_rules! impl_fd {
    ($ty:ty, $field:ident) => {
        impl std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                std::os::fd::AsFd::as_fd(&self.$field)
            }
        }

        impl std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                std::os::fd::AsRawFd::as_raw_fd(&self.$field)
            }
        }
    };
}
pub(crate) use impl_fd;
