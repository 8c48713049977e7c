//! Conversions between the typed sockets and `std::net`, `tokio::net`,
//! `socket2` and owned file descriptors, in both directions.
//!
//! Into hostsock, every conversion goes through one door ([`Core::adopt`]):
//! the socket's kind (domain, type, protocol) is checked against the policy,
//! the fd is made non-blocking and close-on-exec whatever it was, the host's
//! `SO_RCVTIMEO`/`SO_SNDTIMEO` become the socket's timeouts, and the fd is
//! registered with the reactor. These can fail (a kind the policy refuses,
//! no Tokio runtime), so they are `TryFrom`, not `From`. Out of hostsock the
//! fd leaves the reactor and is handed over still non-blocking, as tokio's
//! `into_std` does.

use std::os::fd::{IntoRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use socket2::Socket;

use crate::core::Core;
use crate::error::{Error, Result};
use crate::listener::TcpListener;
use crate::policy::Policy;
use crate::stream::TcpStream;
use crate::{UdpSocket, socket::TcpSocket};

/// The conversions of one registered socket type. `$from_core` builds the
/// type from a [`Core`]; `$std` and `$tokio` are its counterparts.
macro_rules! conversions {
    ($ty:ident, $sock_type:expr, $std:ty, $tokio:ty, $ctor:literal) => {
        impl $ty {
            #[doc = concat!(
                "Wraps an owned socket fd, checked against `policy`.\n\n",
                "The fd must be a ", $ctor, " socket of a kind the policy allows; it is made\n",
                "non-blocking and close-on-exec, its `SO_RCVTIMEO`/`SO_SNDTIMEO` become this\n",
                "socket's timeouts, and it is registered with the current runtime.\n\n",
                "# Examples\n\n",
                "```\n",
                "use std::os::fd::OwnedFd;\n",
                "use hostsock::{Policy, ", stringify!($ty), "};\n\n",
                "#[tokio::main]\n",
                "async fn main() -> hostsock::Result<()> {\n",
                "    let std_sock = ", $crate::convert::example_std!($ty), ";\n",
                "    let fd = OwnedFd::from(std_sock);\n",
                "    let sock = ", stringify!($ty), "::from_fd_with_policy(fd, Policy::sandbox().into())?;\n",
                "    assert!(sock.local_addr()?.ip().is_loopback());\n",
                "    Ok(())\n",
                "}\n",
                "```"
            )]
            ///
            /// # Errors
            ///
            /// A kind the policy refuses is [`Error::Denied`](crate::Error::Denied),
            /// errno `ESOCKTNOSUPPORT` (`EAFNOSUPPORT` for a family other than
            /// IPv4 and IPv6, a Unix socket say); a socket of another type or
            /// protocol is `InvalidInput` (errno `EINVAL`); an fd that is not a
            /// socket gives the kernel's `ENOTSOCK`; outside a Tokio runtime,
            /// an error, not a panic. On every error the fd is closed.
            #[track_caller]
            pub fn from_fd_with_policy(fd: OwnedFd, policy: Arc<Policy>) -> Result<$ty> {
                Core::adopt(Socket::from(fd), policy, Some($sock_type)).map($ty::from_core)
            }

            #[doc = concat!(
                "Wraps a `socket2::Socket` under the default policy; see\n",
                "[`from_fd_with_policy`](", stringify!($ty), "::from_fd_with_policy) for what is\n",
                "checked and changed."
            )]
            ///
            /// # Errors
            ///
            /// As [`from_fd_with_policy`](Self::from_fd_with_policy).
            #[track_caller]
            pub fn from_socket2(sock: Socket) -> Result<$ty> {
                Core::adopt(sock, Policy::shared_default(), Some($sock_type)).map($ty::from_core)
            }

            /// Takes the socket out of the reactor as a `socket2::Socket`,
            /// still non-blocking.
            pub fn into_socket2(self) -> Socket {
                self.into_core().into_socket()
            }

            #[doc = concat!(
                "Takes over a `", stringify!($tokio), "` under the default policy (it leaves\n",
                "tokio's reactor and joins this one); see\n",
                "[`from_fd_with_policy`](", stringify!($ty), "::from_fd_with_policy)."
            )]
            ///
            /// # Errors
            ///
            /// As [`from_fd_with_policy`](Self::from_fd_with_policy), and
            /// tokio's own error if the socket cannot leave its reactor.
            #[track_caller]
            pub fn from_tokio(sock: $tokio) -> Result<$ty> {
                $ty::from_socket2(Socket::from(OwnedFd::from(sock.into_std()?)))
            }

            #[doc = concat!(
                "Hands the socket to tokio as a `", stringify!($tokio), "` (it leaves this\n",
                "reactor and joins tokio's)."
            )]
            ///
            /// # Errors
            ///
            /// tokio's error if the socket cannot join its reactor.
            ///
            /// # Panics
            ///
            /// Outside a Tokio runtime with IO enabled (tokio's own panic:
            /// `from_std` needs the runtime's reactor).
            #[track_caller]
            pub fn into_tokio(self) -> Result<$tokio> {
                let std: $std = self.into_socket2().into();
                <$tokio>::from_std(std).map_err(Error::from)
            }
        }

        impl TryFrom<OwnedFd> for $ty {
            type Error = Error;

            /// [`from_fd_with_policy`]($ty::from_fd_with_policy) under the
            /// default policy.
            #[track_caller]
            fn try_from(fd: OwnedFd) -> Result<$ty> {
                $ty::from_fd_with_policy(fd, Policy::shared_default())
            }
        }

        impl TryFrom<Socket> for $ty {
            type Error = Error;

            #[track_caller]
            fn try_from(sock: Socket) -> Result<$ty> {
                $ty::from_socket2(sock)
            }
        }

        impl TryFrom<$std> for $ty {
            type Error = Error;

            #[track_caller]
            fn try_from(sock: $std) -> Result<$ty> {
                $ty::from_std(sock)
            }
        }

        impl TryFrom<$tokio> for $ty {
            type Error = Error;

            #[track_caller]
            fn try_from(sock: $tokio) -> Result<$ty> {
                $ty::from_tokio(sock)
            }
        }

        impl TryFrom<$ty> for $tokio {
            type Error = Error;

            #[track_caller]
            fn try_from(sock: $ty) -> Result<$tokio> {
                sock.into_tokio()
            }
        }

        impl From<$ty> for $std {
            fn from(sock: $ty) -> $std {
                sock.into_socket2().into()
            }
        }

        impl From<$ty> for Socket {
            fn from(sock: $ty) -> Socket {
                sock.into_socket2()
            }
        }

        impl From<$ty> for OwnedFd {
            fn from(sock: $ty) -> OwnedFd {
                sock.into_socket2().into()
            }
        }

        impl IntoRawFd for $ty {
            fn into_raw_fd(self) -> RawFd {
                self.into_socket2().into_raw_fd()
            }
        }
    };
}

/// The std socket each conversion example starts from.
macro_rules! example_std {
    (TcpListener) => {
        r#"std::net::TcpListener::bind("127.0.0.1:0")?"#
    };
    (UdpSocket) => {
        r#"std::net::UdpSocket::bind("127.0.0.1:0")?"#
    };
    (TcpStream) => {
        r#"std::net::TcpStream::connect(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)?"#
    };
}
pub(crate) use example_std;

conversions!(
    TcpStream,
    libc::SOCK_STREAM,
    std::net::TcpStream,
    tokio::net::TcpStream,
    "TCP"
);
conversions!(
    TcpListener,
    libc::SOCK_STREAM,
    std::net::TcpListener,
    tokio::net::TcpListener,
    "TCP"
);
conversions!(
    UdpSocket,
    libc::SOCK_DGRAM,
    std::net::UdpSocket,
    tokio::net::UdpSocket,
    "UDP"
);

impl TcpSocket {
    /// Turns a connected (or unconnected) `std::net::TcpStream` back into a
    /// `TcpSocket`, as tokio's `TcpSocket::from_std_stream`: its kind is
    /// checked against the default policy and the fd is made non-blocking
    /// and close-on-exec.
    ///
    /// # Errors
    ///
    /// A kind the policy refuses is [`Error::Denied`]; a socket that is not
    /// TCP is `InvalidInput`.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::TcpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    ///     let std_stream = std::net::TcpStream::connect(listener.local_addr()?)?;
    ///     let socket = TcpSocket::from_std_stream(std_stream)?;
    ///     assert!(socket.local_addr()?.ip().is_loopback());
    ///     Ok(())
    /// }
    /// ```
    pub fn from_std_stream(stream: std::net::TcpStream) -> Result<TcpSocket> {
        TcpSocket::from_socket2(Socket::from(OwnedFd::from(stream)))
    }
}

impl TryFrom<OwnedFd> for TcpSocket {
    type Error = Error;

    fn try_from(fd: OwnedFd) -> Result<TcpSocket> {
        TcpSocket::from_socket2(Socket::from(fd))
    }
}

impl From<TcpSocket> for OwnedFd {
    fn from(sock: TcpSocket) -> OwnedFd {
        sock.into_socket2().into()
    }
}

impl IntoRawFd for TcpSocket {
    fn into_raw_fd(self) -> RawFd {
        self.into_socket2().into_raw_fd()
    }
}
