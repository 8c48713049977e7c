//! Typed socket options: one unit type per row of the policy's table.
//!
//! `sock.set(opts::TcpNoDelay, true)?` and `sock.get(opts::IpTos)?` work on
//! every socket type. An option outside the table cannot be named here, a
//! get-only option cannot be set (and the reverse) because the type does
//! not implement [`Set`] (or [`Get`]), and an option the socket's policy
//! turns off gives a denial error naming the option.
//!
//! # Examples
//!
//! ```
//! use hostsock::{opts, UdpSocket};
//!
//! #[tokio::main]
//! async fn main() -> hostsock::Result<()> {
//!     let sock = UdpSocket::bind("127.0.0.1:0").await?;
//!     sock.set(opts::IpTos, 0x10)?;
//!     assert_eq!(sock.get(opts::IpTos)?, 0x10);
//!     sock.set(opts::RecvTos, true)?;
//!     assert!(sock.get(opts::RecvTos)?);
//!     Ok(())
//! }
//! ```

mod ip;
mod tcp_info;
mod value;

use std::net::Ipv4Addr;
use std::time::Duration;

pub use tcp_info::{TcpInfo, TcpState};
pub use value::{
    Codec, LingerCodec, MembershipV4, MembershipV6, OptName, OptValue, Plain, TimevalCodec,
};

use crate::error::Result;
use crate::sockopt::{self, Target};

mod sealed {
    pub trait Sealed {}
}

/// A socket option of the table: its level, name and value type.
pub trait SockOpt: sealed::Sealed + Copy + std::fmt::Debug {
    /// `SOL_SOCKET`, `IPPROTO_IP`, `IPPROTO_IPV6`, `IPPROTO_TCP` or
    /// `IPPROTO_UDP`.
    const LEVEL: i32;
    /// The option's number.
    const NAME: i32;
    /// The option's C name.
    const CNAME: &'static str;
    /// The Rust type of the value.
    type Value;
    /// How the value is laid out for the kernel.
    #[doc(hidden)]
    type Codec: Codec<Self::Value>;
}

/// An option that can be read.
pub trait Get: SockOpt {}

/// An option that can be written.
pub trait Set: SockOpt {}

/// The largest value any option in the table has (`TCP_INFO`'s cap).
const BUF: usize = 512;

pub(crate) fn get<O: Get>(target: Target<'_>, _opt: O) -> Result<O::Value> {
    let mut buf = [0u8; BUF];
    let n = sockopt::get(target, O::LEVEL, O::NAME, &mut buf)?;
    <O::Codec as Codec<O::Value>>::decode(&buf[..n]).ok_or_else(|| {
        crate::Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the kernel gave an option value of an unexpected size",
        ))
    })
}

pub(crate) fn set<O: Set>(target: Target<'_>, _opt: O, value: O::Value) -> Result<()> {
    let mut buf = [0u8; BUF];
    let n = <O::Codec as Codec<O::Value>>::encode(&value, &mut buf);
    sockopt::set(target, O::LEVEL, O::NAME, &buf[..n]).map_err(Into::into)
}

macro_rules! options {
    ($(
        $(#[$doc:meta])*
        $ty:ident = ($level:ident, $name:ident, $value:ty $(, $codec:ty)?) $(+ $cap:ident)*;
    )*) => {
        $(
            $(#[$doc])*
            #[doc = concat!("\n\nThe `", stringify!($name), "` option.")]
            #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
            pub struct $ty;

            impl sealed::Sealed for $ty {}

            impl SockOpt for $ty {
                const LEVEL: i32 = libc::$level;
                const NAME: i32 = libc::$name;
                const CNAME: &'static str = stringify!($name);
                type Value = $value;
                type Codec = options!(@codec $($codec)?);
            }

            $(impl $cap for $ty {})*
        )*

        #[cfg(test)]
        pub(crate) const ALL: &[(i32, i32, &str, bool, bool)] = &[
            $((libc::$level, libc::$name, stringify!($name),
               options!(@has Get $($cap)*), options!(@has Set $($cap)*)),)*
        ];
    };
    (@has Get Get $($rest:ident)*) => { true };
    (@has Set Get $($rest:ident)*) => { options!(@has Set $($rest)*) };
    (@has Set Set $($rest:ident)*) => { true };
    (@has Get Set $($rest:ident)*) => { options!(@has Get $($rest)*) };
    (@has $want:ident) => { false };
    (@codec) => { Plain };
    (@codec $codec:ty) => { $codec };
}

options! {
    // Socket options get/set using `SOL_SOCKET`.
    /// Accept connections (read-only: is the socket listening?).
    AcceptConn = (SOL_SOCKET, SO_ACCEPTCONN, bool) + Get;
    /// Bind to a network interface by name (off by default: opt in through
    /// the policy).
    BindToDevice = (SOL_SOCKET, SO_BINDTODEVICE, OptName) + Get + Set;
    /// Allow sending to broadcast addresses.
    Broadcast = (SOL_SOCKET, SO_BROADCAST, bool) + Get + Set;
    /// The socket's family (answered from the socket's record).
    Domain = (SOL_SOCKET, SO_DOMAIN, i32) + Get;
    /// Take the pending error (read-only).
    SoError = (SOL_SOCKET, SO_ERROR, i32) + Get;
    /// Send keep-alive probes.
    KeepAlive = (SOL_SOCKET, SO_KEEPALIVE, bool) + Get + Set;
    /// Linger on close: `None` off, `Some(d)` wait up to `d` (whole seconds).
    Linger = (SOL_SOCKET, SO_LINGER, Option<Duration>, LingerCodec) + Get + Set;
    /// The fwmark (off by default).
    Mark = (SOL_SOCKET, SO_MARK, u32) + Get + Set;
    /// Receive out-of-band data inline.
    OobInline = (SOL_SOCKET, SO_OOBINLINE, bool) + Get + Set;
    /// The packet priority (off by default).
    Priority = (SOL_SOCKET, SO_PRIORITY, i32) + Get + Set;
    /// The protocol (answered from the socket's record).
    Protocol = (SOL_SOCKET, SO_PROTOCOL, i32) + Get;
    /// The receive buffer size (Linux doubles what is set; the policy may
    /// clamp it).
    RecvBuffer = (SOL_SOCKET, SO_RCVBUF, i32) + Get + Set;
    /// The receive low-water mark.
    RecvLowat = (SOL_SOCKET, SO_RCVLOWAT, i32) + Get + Set;
    /// The receive timeout, kept by the facade (`None`: wait forever).
    RecvTimeout = (SOL_SOCKET, SO_RCVTIMEO, Option<Duration>, TimevalCodec) + Get + Set;
    /// Allow reuse of local addresses.
    ReuseAddr = (SOL_SOCKET, SO_REUSEADDR, bool) + Get + Set;
    /// Allow several sockets on one port.
    ReusePort = (SOL_SOCKET, SO_REUSEPORT, bool) + Get + Set;
    /// The send buffer size (Linux doubles what is set; the policy may
    /// clamp it).
    SendBuffer = (SOL_SOCKET, SO_SNDBUF, i32) + Get + Set;
    /// The send timeout, kept by the facade (`None`: wait forever).
    SendTimeout = (SOL_SOCKET, SO_SNDTIMEO, Option<Duration>, TimevalCodec) + Get + Set;
    /// Receive `SO_TIMESTAMP` control messages.
    Timestamp = (SOL_SOCKET, SO_TIMESTAMP, bool) + Get + Set;
    /// Receive `SO_TIMESTAMPNS` control messages.
    TimestampNs = (SOL_SOCKET, SO_TIMESTAMPNS, bool) + Get + Set;
    /// The socket type (answered from the socket's record).
    SoType = (SOL_SOCKET, SO_TYPE, i32) + Get;

    // Socket options get/set using `IPPROTO_IP`.
    /// Join an IPv4 multicast group.
    AddMembershipV4 = (IPPROTO_IP, IP_ADD_MEMBERSHIP, MembershipV4) + Set;
    /// Leave an IPv4 multicast group.
    DropMembershipV4 = (IPPROTO_IP, IP_DROP_MEMBERSHIP, MembershipV4) + Set;
    /// Bind to addresses not (yet) local (off by default).
    FreeBind = (IPPROTO_IP, IP_FREEBIND, bool) + Get + Set;
    /// The path MTU (read-only; connected sockets).
    Mtu = (IPPROTO_IP, IP_MTU, i32) + Get;
    /// Path MTU discovery mode (`IP_PMTUDISC_*`).
    MtuDiscover = (IPPROTO_IP, IP_MTU_DISCOVER, i32) + Get + Set;
    /// The interface for outgoing multicast, by address.
    MulticastIfV4 = (IPPROTO_IP, IP_MULTICAST_IF, Ipv4Addr) + Get + Set;
    /// Loop outgoing multicast back to local sockets.
    MulticastLoopV4 = (IPPROTO_IP, IP_MULTICAST_LOOP, bool) + Get + Set;
    /// The TTL of outgoing multicast.
    MulticastTtlV4 = (IPPROTO_IP, IP_MULTICAST_TTL, u32) + Get + Set;
    /// Receive `IP_PKTINFO` control messages.
    PktInfoV4 = (IPPROTO_IP, IP_PKTINFO, bool) + Get + Set;
    /// Queue extended errors (ICMP) on the error queue.
    RecvErrV4 = (IPPROTO_IP, IP_RECVERR, bool) + Get + Set;
    /// Receive the original destination address.
    RecvOrigDstAddrV4 = (IPPROTO_IP, IP_RECVORIGDSTADDR, bool) + Get + Set;
    /// Receive `IP_TOS` control messages.
    RecvTos = (IPPROTO_IP, IP_RECVTOS, bool) + Get + Set;
    /// Receive `IP_TTL` control messages.
    RecvTtl = (IPPROTO_IP, IP_RECVTTL, bool) + Get + Set;
    /// The type-of-service byte of outgoing packets.
    IpTos = (IPPROTO_IP, IP_TOS, u32) + Get + Set;
    /// Transparent proxying (off by default).
    Transparent = (IPPROTO_IP, IP_TRANSPARENT, bool) + Get + Set;
    /// The TTL of outgoing unicast packets.
    IpTtl = (IPPROTO_IP, IP_TTL, u32) + Get + Set;

    // Socket options get/set using `IPPROTO_IPV6`.
    /// Join an IPv6 multicast group.
    AddMembershipV6 = (IPPROTO_IPV6, IPV6_ADD_MEMBERSHIP, MembershipV6) + Set;
    /// Leave an IPv6 multicast group.
    DropMembershipV6 = (IPPROTO_IPV6, IPV6_DROP_MEMBERSHIP, MembershipV6) + Set;
    /// The hop limit of outgoing multicast (-1: the route's default).
        MulticastHopsV6 = (IPPROTO_IPV6, IPV6_MULTICAST_HOPS, i32) + Get + Set;
    /// Loop outgoing IPv6 multicast back to local sockets.
    MulticastLoopV6 = (IPPROTO_IPV6, IPV6_MULTICAST_LOOP, bool) + Get + Set;
    /// Queue extended errors (ICMPv6) on the error queue.
    RecvErrV6 = (IPPROTO_IPV6, IPV6_RECVERR, bool) + Get + Set;
    /// Receive `IPV6_HOPLIMIT` control messages.
    RecvHopLimitV6 = (IPPROTO_IPV6, IPV6_RECVHOPLIMIT, bool) + Get + Set;
    /// Receive the original destination address.
    RecvOrigDstAddrV6 = (IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, bool) + Get + Set;
    /// Receive `IPV6_PKTINFO` control messages.
    RecvPktInfoV6 = (IPPROTO_IPV6, IPV6_RECVPKTINFO, bool) + Get + Set;
    /// Receive `IPV6_TCLASS` control messages.
    RecvTClassV6 = (IPPROTO_IPV6, IPV6_RECVTCLASS, bool) + Get + Set;
    /// The traffic class of outgoing packets.
    TClassV6 = (IPPROTO_IPV6, IPV6_TCLASS, i32) + Get + Set;
    /// The hop limit of outgoing unicast (-1: the route's default).
    UnicastHopsV6 = (IPPROTO_IPV6, IPV6_UNICAST_HOPS, i32) + Get + Set;
    /// IPv6 only (no IPv4-mapped traffic).
    V6Only = (IPPROTO_IPV6, IPV6_V6ONLY, bool) + Get + Set;

    // Socket options get/set using `IPPROTO_TCP`.
    /// The congestion control algorithm, by name.
    TcpCongestion = (IPPROTO_TCP, TCP_CONGESTION, OptName) + Get + Set;
    /// Hold back partial frames.
    TcpCork = (IPPROTO_TCP, TCP_CORK, bool) + Get + Set;
    /// Wake the listener only when data arrives (seconds).
    TcpDeferAccept = (IPPROTO_TCP, TCP_DEFER_ACCEPT, i32) + Get + Set;
    /// Connection information (read-only).
    TcpInfoOpt = (IPPROTO_TCP, TCP_INFO, TcpInfo) + Get;
    /// Receive `TCP_INQ` control messages.
    TcpInq = (IPPROTO_TCP, TCP_INQ, bool) + Get + Set;
    /// Keep-alive probes before the connection is dropped.
    TcpKeepCnt = (IPPROTO_TCP, TCP_KEEPCNT, i32) + Get + Set;
    /// Idle seconds before keep-alive probes start.
    TcpKeepIdle = (IPPROTO_TCP, TCP_KEEPIDLE, i32) + Get + Set;
    /// Seconds between keep-alive probes.
    TcpKeepIntvl = (IPPROTO_TCP, TCP_KEEPINTVL, i32) + Get + Set;
    /// Lifetime of orphaned FIN-WAIT-2 sockets (seconds).
    TcpLinger2 = (IPPROTO_TCP, TCP_LINGER2, i32) + Get + Set;
    /// The maximum segment size.
    TcpMaxSeg = (IPPROTO_TCP, TCP_MAXSEG, i32) + Get + Set;
    /// Send segments at once (no Nagle).
    TcpNoDelay = (IPPROTO_TCP, TCP_NODELAY, bool) + Get + Set;
    /// Acknowledge at once.
    TcpQuickAck = (IPPROTO_TCP, TCP_QUICKACK, bool) + Get + Set;
    /// SYN retransmits before connect gives up.
    TcpSynCnt = (IPPROTO_TCP, TCP_SYNCNT, i32) + Get + Set;
    /// Milliseconds unacknowledged data may wait before the connection is
    /// dropped.
    TcpUserTimeout = (IPPROTO_TCP, TCP_USER_TIMEOUT, u32) + Get + Set;
    /// Bound on the advertised window.
    TcpWindowClamp = (IPPROTO_TCP, TCP_WINDOW_CLAMP, i32) + Get + Set;

    // Socket options get/set using `IPPROTO_UDP`.
    /// Receive coalesced datagrams (GRO).
    UdpGro = (IPPROTO_UDP, UDP_GRO, bool) + Get + Set;
    /// Segment size for UDP GSO sends (0: off).
    UdpSegment = (IPPROTO_UDP, UDP_SEGMENT, i32) + Get + Set;
}

/// The typed option methods every socket type has; see the [module
/// docs](self).
macro_rules! impl_opts {
    ($ty:ty, $target:ident) => {
        impl $ty {
            /// Reads a typed option (`sock.get(opts::IpTtl)`). The policy
            /// decides whether it reaches the kernel.
            ///
            /// # Errors
            ///
            /// A denial (`ENOPROTOOPT`) when the policy turns the option
            /// off; the kernel's errno otherwise.
            pub fn get<O: $crate::opts::Get>(&self, opt: O) -> $crate::Result<O::Value> {
                $crate::opts::get(self.$target(), opt)
            }

            /// Writes a typed option (`sock.set(opts::TcpNoDelay, true)`).
            ///
            /// # Errors
            ///
            /// A denial (`ENOPROTOOPT`) when the policy turns the option
            /// off; the kernel's errno otherwise.
            pub fn set<O: $crate::opts::Set>(&self, opt: O, value: O::Value) -> $crate::Result<()> {
                $crate::opts::set(self.$target(), opt, value)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::OPTIONS;

    #[test]
    fn every_table_row_has_a_typed_option_with_the_same_directions() {
        assert_eq!(ALL.len(), OPTIONS.len());
        for row in OPTIONS {
            let typed = ALL
                .iter()
                .find(|(l, n, ..)| *l == row.level && *n == row.name)
                .unwrap_or_else(|| panic!("{} has no typed option", row.cname));
            assert_eq!((typed.3, typed.4), (row.get, row.set), "{}", row.cname);
            assert_eq!(typed.2, row.cname);
        }
    }
}

macro_rules! core_target {
    ($ty:ty) => {
        impl $ty {
            fn opt_target(&self) -> Target<'_> {
                self.core().opt_target()
            }
        }
        impl_opts!($ty, opt_target);
    };
}

core_target!(crate::TcpStream);
core_target!(crate::TcpListener);
core_target!(crate::UdpSocket);

impl crate::TcpSocket {
    fn opt_target(&self) -> Target<'_> {
        self.target()
    }
}
impl_opts!(crate::TcpSocket, opt_target);

impl crate::TcpStream {
    /// The connection's `TCP_INFO` (state, RTT, congestion window, bytes
    /// acknowledged and received, ...).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{TcpListener, TcpStream};
    /// use hostsock::opts::TcpState;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let stream = TcpStream::connect(listener.local_addr()?).await?;
    ///     assert_eq!(stream.tcp_info()?.state(), TcpState::Established);
    ///     assert_eq!(stream.state()?, TcpState::Established);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `TCP_INFO` off; the
    /// kernel's errno otherwise.
    pub fn tcp_info(&self) -> Result<TcpInfo> {
        self.get(TcpInfoOpt)
    }

    /// The connection's state, from `TCP_INFO`.
    ///
    /// # Errors
    ///
    /// As [`tcp_info`](crate::TcpStream::tcp_info).
    pub fn state(&self) -> Result<TcpState> {
        Ok(self.tcp_info()?.state())
    }
}

impl crate::TcpStream {
    /// Bytes queued to read (`TIOCINQ`).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{TcpListener, TcpStream};
    /// use tokio::io::AsyncWriteExt;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let mut client = TcpStream::connect(listener.local_addr()?).await?;
    ///     let (server, _) = listener.accept().await?;
    ///     client.write_all(b"hello").await?;
    ///     server.readable().await?;
    ///     assert_eq!(server.inq()?, 5);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// The kernel's errno from `ioctl(2)`. The policy does not check ioctls:
    /// they only read the socket's own queue.
    pub fn inq(&self) -> Result<usize> {
        ioctl_count(self.core(), libc::TIOCINQ)
    }

    /// Bytes written and not yet acknowledged by the peer (`TIOCOUTQ`).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{TcpListener, TcpStream};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let listener = TcpListener::bind("127.0.0.1:0").await?;
    ///     let stream = TcpStream::connect(listener.local_addr()?).await?;
    ///     // Nothing written yet: nothing waits for an acknowledgement.
    ///     assert_eq!(stream.outq()?, 0);
    ///     assert!(!stream.at_mark()?);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// The kernel's errno from `ioctl(2)`.
    pub fn outq(&self) -> Result<usize> {
        ioctl_count(self.core(), libc::TIOCOUTQ)
    }

    /// Is the read position at the urgent mark (`SIOCATMARK`)?
    ///
    /// # Errors
    ///
    /// The kernel's errno from `ioctl(2)`.
    pub fn at_mark(&self) -> Result<bool> {
        Ok(crate::sys::ioctl_int(self.core().sock(), crate::sys::SIOCATMARK)? != 0)
    }
}

impl crate::UdpSocket {
    /// The size of the next queued datagram, 0 if none (`FIONREAD`).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let a = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let b = UdpSocket::bind("127.0.0.1:0").await?;
    ///     assert_eq!(b.inq()?, 0);
    ///     a.send_to(b"seven b", b.local_addr()?).await?;
    ///     b.readable().await?;
    ///     assert_eq!(b.inq()?, 7);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// The kernel's errno from `ioctl(2)`.
    pub fn inq(&self) -> Result<usize> {
        ioctl_count(self.core(), libc::FIONREAD)
    }
}

fn ioctl_count(core: &crate::core::Core, request: libc::c_ulong) -> Result<usize> {
    let n = crate::sys::ioctl_int(core.sock(), request)?;
    Ok(usize::try_from(n).unwrap_or(0))
}
