//! One socket per core: `SO_REUSEPORT` sockets on one address, one per
//! thread, each thread with its own current-thread runtime, so that the
//! kernel spreads datagrams and connections across them and no socket is
//! shared between cores.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::Domain;

use crate::core::{Core, new_socket};
use crate::error::{Error, Op, Result};
use crate::listener::{DEFAULT_BACKLOG, TcpListener};
use crate::policy::{AddrUse, Policy};
use crate::{TcpSocket, UdpSocket};

impl UdpSocket {
    /// Binds with `SO_REUSEPORT` set first, so that several sockets (one
    /// per thread, say) can share `addr`; the kernel spreads datagrams
    /// across them by flow.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let a = UdpSocket::bind_reuseport("127.0.0.1:0".parse().unwrap()).await?;
    ///     let b = UdpSocket::bind_reuseport(a.local_addr()?).await?;
    ///     assert_eq!(a.local_addr()?, b.local_addr()?);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`EACCES`) when the default policy refuses `addr` for `Bind`
    /// (it allows every address); the kernel's errno otherwise (`EADDRINUSE`
    /// when a socket without `SO_REUSEPORT`, or of another user, holds `addr`).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn bind_reuseport(addr: SocketAddr) -> Result<UdpSocket> {
        let policy = Policy::shared_default();
        let (sock, kind) = new_socket(&policy, Domain::for_address(addr), false)?;
        policy.check_addr(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            Op::Bind,
            AddrUse::Bind,
            addr,
        )?;
        sock.set_reuse_port(true)?;
        sock.bind(&addr.into())?;
        Ok(UdpSocket::from_core(Core::registered(sock, policy, kind)?))
    }
}

impl TcpListener {
    /// Binds with `SO_REUSEADDR` and `SO_REUSEPORT` and listens, so that
    /// several listeners (one per thread) can share `addr`; the kernel
    /// spreads connections across them.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{TcpListener, TcpStream};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let a = TcpListener::bind_reuseport("127.0.0.1:0".parse().unwrap()).await?;
    ///     let b = TcpListener::bind_reuseport(a.local_addr()?).await?;
    ///     assert_eq!(a.local_addr()?, b.local_addr()?);
    ///     let _client = TcpStream::connect(a.local_addr()?).await?;
    ///     // The kernel hands the connection to one of the two.
    ///     let accepted = tokio::select! {
    ///         r = a.accept() => r?,
    ///         r = b.accept() => r?,
    ///     };
    ///     assert!(accepted.1.ip().is_loopback());
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`TcpSocket::bind`] and [`TcpSocket::listen`]: the kernel's errno
    /// (`EADDRINUSE` when a socket without `SO_REUSEPORT` holds `addr`).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn bind_reuseport(addr: SocketAddr) -> Result<TcpListener> {
        let sock = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        sock.set_reuseaddr(true)?;
        sock.set_reuseport(true)?;
        sock.bind(addr)?;
        sock.listen(DEFAULT_BACKLOG as u32)
    }
}

/// Runs `task(i)` for `i` in `0..n`, each on its own thread with its own
/// current-thread runtime (IO and time enabled), and returns their results
/// in order. Combined with `bind_reuseport`, this is one socket per core.
///
/// # Errors
///
/// The first error by index, after every thread has finished: a task's own
/// error, a thread that could not be spawned or a runtime that could not
/// be built (the OS's errno), or a task that panicked (`Other`).
///
/// # Examples
///
/// ```
/// use hostsock::{UdpSocket, per_core};
///
/// # fn main() -> hostsock::Result<()> {
/// let addr = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
/// let ports = per_core::run(2, move |_| async move {
///     let sock = UdpSocket::bind_reuseport(addr).await?;
///     Ok(sock.local_addr()?.port())
/// })?;
/// assert_eq!(ports, [addr.port(), addr.port()]);
/// # Ok(())
/// # }
/// ```
pub fn run<T, F, Fut>(n: usize, task: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T>>,
{
    let task = Arc::new(task);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let task = task.clone();
            std::thread::Builder::new()
                .name(format!("hostsock-core-{i}"))
                .spawn(move || -> Result<T> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(task(i))
                })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    let mut first_err = None;
    for t in threads {
        let r = match t {
            Ok(handle) => handle.join().unwrap_or_else(|_| {
                Err(Error::Io(std::io::Error::other(
                    "a per-core thread panicked",
                )))
            }),
            Err(e) => Err(Error::Io(e)),
        };
        match r {
            Ok(v) => out.push(v),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
