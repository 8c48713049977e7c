//! The typed API's error: kernel errors keep their errno, timeouts and policy
//! denials are their own variants, and every value answers [`Error::errno`].

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::policy::{AddrRule, AddrUse};

/// The result type of the typed API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which operation an error belongs to, for messages and for the errno a
/// timeout reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// `accept(2)`.
    Accept,
    /// `bind(2)`.
    Bind,
    /// `connect(2)`.
    Connect,
    /// `listen(2)`.
    Listen,
    /// A receive: `read`, `recv`, `recv_from`, `peek`.
    Recv,
    /// A send: `write`, `send`, `send_to`.
    Send,
    /// A readiness wait (`readable`, `writable`, `ready`).
    Ready,
    /// `setsockopt(2)`.
    SetOpt,
    /// `getsockopt(2)`.
    GetOpt,
    /// `shutdown(2)`.
    Shutdown,
    /// Socket creation, `socket(2)`.
    Socket,
}

impl Op {
    /// The errno Linux gives when this operation's timeout runs out
    /// (socket(7), `SO_RCVTIMEO`/`SO_SNDTIMEO`): `EINPROGRESS` for connect,
    /// `EAGAIN` for everything else.
    pub const fn timeout_errno(self) -> i32 {
        match self {
            Op::Connect => libc::EINPROGRESS,
            _ => libc::EAGAIN,
        }
    }

    /// The operation's name, as the C call is named.
    pub const fn name(self) -> &'static str {
        match self {
            Op::Accept => "accept",
            Op::Bind => "bind",
            Op::Connect => "connect",
            Op::Listen => "listen",
            Op::Recv => "recv",
            Op::Send => "send",
            Op::Ready => "poll",
            Op::SetOpt => "setsockopt",
            Op::GetOpt => "getsockopt",
            Op::Shutdown => "shutdown",
            Op::Socket => "socket",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a refused call asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Asked {
    /// A socket option, by level and name.
    Option {
        /// `SOL_SOCKET`, `SOL_IP`, ...
        level: i32,
        /// The option's number.
        name: i32,
    },
    /// An address, and what it was for.
    Address {
        /// What the address was for.
        usage: AddrUse,
        /// The address.
        addr: SocketAddr,
    },
    /// Message flags (`send`/`recv` families), as the caller gave them.
    Flags {
        /// The flags asked for.
        flags: i32,
        /// The ones outside the policy's mask.
        refused: i32,
    },
    /// A socket kind.
    SocketKind {
        /// The family (`AF_INET`, ...).
        domain: i32,
        /// The base type (`SOCK_STREAM`, ...).
        ty: i32,
        /// The protocol.
        protocol: i32,
    },
}

impl fmt::Display for Asked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Asked::Option { level, name } => match crate::policy::cname(*level, *name) {
                Some(c) => f.write_str(c),
                None => write!(f, "option ({level}, {name})"),
            },
            Asked::Address { usage, addr } => write!(f, "{addr} for {usage:?}"),
            Asked::Flags { flags, refused } => {
                write!(
                    f,
                    "message flags {flags:#x} ({refused:#x} outside the mask)"
                )
            }
            Asked::SocketKind {
                domain,
                ty,
                protocol,
            } => {
                write!(
                    f,
                    "socket kind (domain {domain}, type {ty}, protocol {protocol})"
                )
            }
        }
    }
}

/// Which rule refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// The option is not in the table and unknown options are rejected.
    OptionNotListed,
    /// The option is in the table but turned off by the policy.
    OptionOff,
    /// The option never reaches the kernel (privileged or host-affecting).
    OptionNever,
    /// Set of a get-only option, or get of a set-only option.
    OptionWrongWay,
    /// An address rule, by its position in the policy.
    Address {
        /// The rule's position (first match wins).
        index: usize,
        /// The rule itself.
        rule: AddrRule,
    },
    /// No address rule matched and the default verdict is deny.
    DefaultVerdict,
    /// The socket kind is not allowed.
    KindNotAllowed,
    /// Message flags outside the policy's send or receive mask.
    FlagsNotAllowed,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::OptionNotListed => f.write_str("the option table (not listed)"),
            Rule::OptionOff => f.write_str("the policy (option turned off)"),
            Rule::OptionNever => f.write_str("the never-allowed list"),
            Rule::OptionWrongWay => f.write_str("the option table (wrong direction)"),
            Rule::Address { index, rule } => write!(f, "address rule #{index} ({rule})"),
            Rule::DefaultVerdict => f.write_str("the default address verdict"),
            Rule::KindNotAllowed => f.write_str("the allowed socket kinds"),
            Rule::FlagsNotAllowed => f.write_str("the message flag masks"),
        }
    }
}

/// A call the policy refused before it reached the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Denial {
    /// The operation that was refused.
    pub op: Op,
    /// What was asked for.
    pub asked: Asked,
    /// The rule that refused it.
    pub rule: Rule,
    /// The errno the raw layer answers for this denial.
    pub errno: i32,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} denied by {}", self.op, self.asked, self.rule)
    }
}

/// An error from the typed API.
///
/// Every value has a Linux errno ([`Error::errno`]) and an
/// [`io::ErrorKind`] ([`Error::kind`]). Converting into [`io::Error`] keeps
/// `raw_os_error()` for kernel errors. A timeout becomes
/// [`io::ErrorKind::TimedOut`] and a denial keeps its own kind: an
/// [`io::Error`] cannot carry both that kind and an errno, so for these two
/// the original `Error` travels inside the `io::Error` and
/// `Error::from(io_error)` gives it back, errno and all.
///
/// # Examples
///
/// ```
/// use hostsock::{Error, TcpStream};
///
/// #[tokio::main]
/// async fn main() {
///     // Port 1 on loopback has no listener: the kernel answers ECONNREFUSED.
///     let err: Error = TcpStream::connect("127.0.0.1:1").await.unwrap_err();
///     assert_eq!(err.errno(), libc::ECONNREFUSED);
///     let io: std::io::Error = err.into();
///     assert_eq!(io.raw_os_error(), Some(libc::ECONNREFUSED));
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel (or the standard library) refused the call.
    #[error(transparent)]
    Io(io::Error),
    /// A per-socket timeout or a per-call deadline ran out first.
    #[error("{op} timed out")]
    TimedOut {
        /// The operation that timed out.
        op: Op,
    },
    /// The policy refused the call before it reached the kernel.
    #[error("{0}")]
    Denied(Box<Denial>),
}

impl Error {
    /// The Linux errno for this error.
    ///
    /// Kernel errors give their own; a timeout gives what Linux gives for an
    /// expired `SO_RCVTIMEO`/`SO_SNDTIMEO` (`EAGAIN`, or `EINPROGRESS` for
    /// connect); a denial gives the policy's errno. An [`io::Error`] made
    /// without an errno is mapped from its kind (for example `InvalidInput`
    /// to `EINVAL`), never to 0.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io(e) => errno_of_io(e),
            Error::TimedOut { op } => op.timeout_errno(),
            Error::Denied(d) => d.errno,
        }
    }

    /// The [`io::ErrorKind`] of this error.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Io(e) => e.kind(),
            Error::TimedOut { .. } => io::ErrorKind::TimedOut,
            Error::Denied(d) => io::Error::from_raw_os_error(d.errno).kind(),
        }
    }

    /// `true` if a timeout or deadline ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::TimedOut { .. })
    }

    /// `true` if the policy refused the call.
    pub fn is_denied(&self) -> bool {
        matches!(self, Error::Denied(_))
    }

    /// The errno as an `io::Error` kernel error would carry it, if this is a
    /// kernel error.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// The denial, if the policy refused the call.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use hostsock::{Op, Policy, UdpSocket};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let sandbox = Arc::new(Policy::sandbox());
    ///     let sock = UdpSocket::bind_with_policy("127.0.0.1:0", sandbox).await?;
    ///     // The sandbox preset refuses link-local addresses (cloud metadata).
    ///     let err = sock.send_to(b"x", "169.254.169.254:80").await.unwrap_err();
    ///     assert!(err.is_denied() && err.raw_os_error().is_none());
    ///     let denial = err.denial().expect("a policy denial");
    ///     assert_eq!((denial.op, denial.errno), (Op::Send, libc::ECONNREFUSED));
    ///     assert_eq!(err.errno(), libc::ECONNREFUSED);
    ///     Ok(())
    /// }
    /// ```
    pub fn denial(&self) -> Option<&Denial> {
        match self {
            Error::Denied(d) => Some(d),
            _ => None,
        }
    }

    pub(crate) fn timed_out(op: Op) -> Error {
        Error::TimedOut { op }
    }
}

/// Maps an `io::Error` to a Linux errno: its own if it has one, otherwise
/// one chosen from its kind (never 0).
pub(crate) fn errno_of_io(e: &io::Error) -> i32 {
    if let Some(n) = e.raw_os_error() {
        return n;
    }
    if let Some(inner) = e.get_ref().and_then(|r| r.downcast_ref::<Error>()) {
        return inner.errno();
    }
    use io::ErrorKind as K;
    match e.kind() {
        K::NotFound => libc::ENOENT,
        K::PermissionDenied => libc::EACCES,
        K::ConnectionRefused => libc::ECONNREFUSED,
        K::ConnectionReset => libc::ECONNRESET,
        K::ConnectionAborted => libc::ECONNABORTED,
        K::NotConnected => libc::ENOTCONN,
        K::AddrInUse => libc::EADDRINUSE,
        K::AddrNotAvailable => libc::EADDRNOTAVAIL,
        K::BrokenPipe => libc::EPIPE,
        K::AlreadyExists => libc::EEXIST,
        K::WouldBlock => libc::EAGAIN,
        K::TimedOut => libc::ETIMEDOUT,
        K::Interrupted => libc::EINTR,
        K::Unsupported => libc::EOPNOTSUPP,
        K::OutOfMemory => libc::ENOMEM,
        K::UnexpectedEof | K::WriteZero => libc::EIO,
        _ => libc::EINVAL,
    }
}

impl From<io::Error> for Error {
    /// Wraps a kernel error; an `io::Error` that carries a hostsock `Error`
    /// (a converted timeout or denial) gives that `Error` back.
    fn from(e: io::Error) -> Error {
        if e.get_ref().is_some_and(|r| r.is::<Error>()) {
            let kind = e.kind();
            if let Some(inner) = e.into_inner() {
                if let Ok(err) = inner.downcast::<Error>() {
                    return *err;
                }
                return Error::Io(io::Error::new(kind, "unrecognised inner error"));
            }
            return Error::Io(io::Error::from(kind));
        }
        Error::Io(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            other => io::Error::new(other.kind(), other),
        }
    }
}

impl From<Denial> for Error {
    fn from(d: Denial) -> Error {
        Error::Denied(Box::new(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_small_send_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
        assert!(std::mem::size_of::<Error>() <= 48);
    }

    #[test]
    fn kernel_errno_round_trips() {
        let e = Error::from(io::Error::from_raw_os_error(libc::ECONNRESET));
        assert_eq!(e.errno(), libc::ECONNRESET);
        let io: io::Error = e.into();
        assert_eq!(io.raw_os_error(), Some(libc::ECONNRESET));
    }

    #[test]
    fn timeout_keeps_kind_and_errno_through_io_error() {
        let e = Error::timed_out(Op::Connect);
        assert_eq!(e.errno(), libc::EINPROGRESS);
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::TimedOut);
        assert_eq!(errno_of_io(&io), libc::EINPROGRESS);
        let back = Error::from(io);
        assert!(back.is_timeout());
        assert_eq!(back.errno(), libc::EINPROGRESS);
    }

    #[test]
    fn kind_only_errors_get_an_errno() {
        let e = Error::from(io::Error::from(io::ErrorKind::InvalidInput));
        assert_eq!(e.errno(), libc::EINVAL);
        let e = Error::from(io::Error::from(io::ErrorKind::WouldBlock));
        assert_eq!(e.errno(), libc::EAGAIN);
    }
}
