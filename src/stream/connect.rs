//! Connecting a TCP socket: `connect(2)` before the reactor sees it.

use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::sync::Arc;

use socket2::Socket;
use tokio::time::Instant;

use crate::core::{Core, finish_connect};
use crate::deadline::{self, Dir, Timeouts};
use crate::error::{Op, Result};
use crate::policy::{AddrUse, Policy, SocketKind};
use crate::sys;

/// Connects a socket not yet registered with the reactor, then registers
/// it: `connect(2)` first (`EINPROGRESS`, `EALREADY`, `EINTR`: the attempt
/// goes on), so that the reactor never sees the fresh socket's
/// `EPOLLOUT | EPOLLHUP` (tokio would keep that "closed" readiness for
/// good). Then, if pending, wait writable → `connect` again, which gives
/// the kernel's result and leaves the socket as a blocking connect would.
/// `timeouts` are the socket's (a `TcpSocket`'s); the write timeout bounds
/// the wait together with `call_deadline`.
pub(crate) async fn connect_then_register(
    sock: Socket,
    kind: SocketKind,
    policy: Arc<Policy>,
    timeouts: Option<&Timeouts>,
    addr: SocketAddr,
    call_deadline: Option<Instant>,
) -> Result<Core> {
    policy.check_addr(sock.as_raw_fd(), Op::Connect, AddrUse::Connect, addr)?;
    // A socket with no local address yet is bound by the connect (to the
    // unspecified address, an ephemeral port): the `Bind` rules see that.
    crate::core::check_implicit_bind(&policy, sock.as_raw_fd(), Op::Connect, kind, || {
        crate::core::has_local_port(&sock)
    })?;
    let bytes = crate::raw::encode_sockaddr(addr);
    let pending = match sys::connect_bytes(&sock, bytes.as_bytes()) {
        Ok(()) => false,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINPROGRESS | libc::EALREADY | libc::EINTR)
            ) =>
        {
            true
        }
        Err(e) => {
            let e = e.into();
            crate::trace::failed(sock.as_raw_fd(), Op::Connect, &e);
            return Err(e);
        }
    };
    let core = Core::registered(sock, policy, kind)?;
    if let Some(t) = timeouts {
        core.timeouts().copy_from(t);
    }
    if pending {
        let at = core.timeouts().deadline(Dir::Write, call_deadline);
        let r = deadline::run(at, Op::Connect, finish_connect(&core, bytes.as_bytes())).await;
        if let Err(e) = r {
            crate::trace::failed(core.raw_fd(), Op::Connect, &e);
            return Err(e);
        }
    }
    Ok(core)
}
