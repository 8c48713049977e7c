//! `UdpSocket`'s options and timeouts, each through the policy's table.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::UdpSocket;
use crate::deadline::Dir;
use crate::error::Result;
use crate::opts;

impl UdpSocket {
    /// Sets `SO_BROADCAST`.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let sock = UdpSocket::bind("127.0.0.1:0").await?;
    ///     sock.set_broadcast(true)?;
    ///     assert!(sock.broadcast()?);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `SO_BROADCAST` off; the
    /// kernel's errno otherwise.
    pub fn set_broadcast(&self, on: bool) -> Result<()> {
        self.set(opts::Broadcast, on)
    }

    /// Gets `SO_BROADCAST`.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `SO_BROADCAST` off; the
    /// kernel's errno otherwise.
    pub fn broadcast(&self) -> Result<bool> {
        self.get(opts::Broadcast)
    }

    /// Sets `IP_TTL` (IPv4).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let sock = UdpSocket::bind("127.0.0.1:0").await?;
    ///     sock.set_ttl(7)?;
    ///     assert_eq!(sock.ttl()?, 7);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `IP_TTL` off; the kernel's
    /// errno otherwise (`EINVAL` for 0 or more than 255).
    pub fn set_ttl(&self, ttl: u32) -> Result<()> {
        self.set(opts::IpTtl, ttl)
    }

    /// Gets `IP_TTL`.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `IP_TTL` off; the kernel's
    /// errno otherwise.
    pub fn ttl(&self) -> Result<u32> {
        self.get(opts::IpTtl)
    }

    /// Sets `IP_MULTICAST_LOOP`.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let sock = UdpSocket::bind("0.0.0.0:0").await?;
    ///     sock.set_multicast_loop_v4(false)?;
    ///     assert!(!sock.multicast_loop_v4()?);
    ///     sock.set_multicast_ttl_v4(4)?;
    ///     assert_eq!(sock.multicast_ttl_v4()?, 4);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `IP_MULTICAST_LOOP` off;
    /// the kernel's errno otherwise.
    pub fn set_multicast_loop_v4(&self, on: bool) -> Result<()> {
        self.set(opts::MulticastLoopV4, on)
    }

    /// Gets `IP_MULTICAST_LOOP`.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `IP_MULTICAST_LOOP` off;
    /// the kernel's errno otherwise.
    pub fn multicast_loop_v4(&self) -> Result<bool> {
        self.get(opts::MulticastLoopV4)
    }

    /// Sets `IP_MULTICAST_TTL`.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `IP_MULTICAST_TTL` off; the
    /// kernel's errno otherwise (`EINVAL` above 255).
    pub fn set_multicast_ttl_v4(&self, ttl: u32) -> Result<()> {
        self.set(opts::MulticastTtlV4, ttl)
    }

    /// Gets `IP_MULTICAST_TTL`.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `IP_MULTICAST_TTL` off; the
    /// kernel's errno otherwise.
    pub fn multicast_ttl_v4(&self) -> Result<u32> {
        self.get(opts::MulticastTtlV4)
    }

    /// Sets `IPV6_MULTICAST_LOOP`.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let sock = UdpSocket::bind("[::1]:0").await?;
    ///     sock.set_multicast_loop_v6(false)?;
    ///     assert!(!sock.multicast_loop_v6()?);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `IPV6_MULTICAST_LOOP` off;
    /// the kernel's errno otherwise (`ENOPROTOOPT` on an IPv4 socket).
    pub fn set_multicast_loop_v6(&self, on: bool) -> Result<()> {
        self.set(opts::MulticastLoopV6, on)
    }

    /// Gets `IPV6_MULTICAST_LOOP`.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `IPV6_MULTICAST_LOOP` off;
    /// the kernel's errno otherwise (`ENOPROTOOPT` on an IPv4 socket).
    pub fn multicast_loop_v6(&self) -> Result<bool> {
        self.get(opts::MulticastLoopV6)
    }

    /// Joins the IPv4 multicast group `multiaddr` on the interface with
    /// address `interface` (`0.0.0.0`: the kernel chooses).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::Ipv4Addr;
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let sock = UdpSocket::bind("0.0.0.0:0").await?;
    ///     let group = Ipv4Addr::new(239, 1, 2, 3);
    ///     sock.join_multicast_v4(group, Ipv4Addr::LOCALHOST)?;
    ///     sock.leave_multicast_v4(group, Ipv4Addr::LOCALHOST)?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `IP_ADD_MEMBERSHIP` off;
    /// the kernel's errno otherwise (`ENODEV` for an `interface` that is no
    /// local address, `EINVAL` for a group that is not multicast).
    /// [`Policy::sandbox`](crate::Policy::sandbox) turns joins off.
    pub fn join_multicast_v4(&self, multiaddr: Ipv4Addr, interface: Ipv4Addr) -> Result<()> {
        self.set(
            opts::AddMembershipV4,
            opts::MembershipV4 {
                group: multiaddr,
                interface,
            },
        )
    }

    /// Leaves an IPv4 multicast group; see
    /// [`join_multicast_v4`](UdpSocket::join_multicast_v4).
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `IP_DROP_MEMBERSHIP` off;
    /// the kernel's errno otherwise (`EADDRNOTAVAIL` for a group not joined).
    pub fn leave_multicast_v4(&self, multiaddr: Ipv4Addr, interface: Ipv4Addr) -> Result<()> {
        self.set(
            opts::DropMembershipV4,
            opts::MembershipV4 {
                group: multiaddr,
                interface,
            },
        )
    }

    /// Joins the IPv6 multicast group `multiaddr` on interface index
    /// `interface` (0: the kernel chooses).
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `IPV6_ADD_MEMBERSHIP` off;
    /// the kernel's errno otherwise (`ENODEV` for an unknown interface index,
    /// `EINVAL` for a group that is not multicast).
    /// [`Policy::sandbox`](crate::Policy::sandbox) turns joins off.
    pub fn join_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> Result<()> {
        self.set(
            opts::AddMembershipV6,
            opts::MembershipV6 {
                group: *multiaddr,
                interface,
            },
        )
    }

    /// Leaves an IPv6 multicast group.
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns `IPV6_DROP_MEMBERSHIP` off;
    /// the kernel's errno otherwise (`EADDRNOTAVAIL` for a group not joined).
    pub fn leave_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> Result<()> {
        self.set(
            opts::DropMembershipV6,
            opts::MembershipV6 {
                group: *multiaddr,
                interface,
            },
        )
    }

    /// Sets the receive timeout, as `SO_RCVTIMEO` would, for every async
    /// receive (`recv`, `recv_from`, `peek_from`): a timed-out error with
    /// `errno()` = `EAGAIN`. `None` waits forever; `Some(Duration::ZERO)` is
    /// `EINVAL`, as in std.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let sock = UdpSocket::bind("127.0.0.1:0").await?;
    ///     sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    ///     assert_eq!(sock.read_timeout(), Some(Duration::from_millis(20)));
    ///     let mut buf = [0u8; 8];
    ///     let err = sock.recv(&mut buf).await.unwrap_err();
    ///     assert!(err.is_timeout());
    ///     assert_eq!(err.errno(), libc::EAGAIN);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// `InvalidInput` (errno `EINVAL`) for `Some(Duration::ZERO)`; a denial
    /// (`ENOPROTOOPT`) if the policy turns `SO_RCVTIMEO` off.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        self.core.set_timeout(Dir::Read, timeout)
    }

    /// The receive timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.core.timeout(Dir::Read)
    }

    /// Sets the send timeout, as `SO_SNDTIMEO` would, for every async send.
    ///
    /// # Errors
    ///
    /// `InvalidInput` (errno `EINVAL`) for `Some(Duration::ZERO)`; a denial
    /// (`ENOPROTOOPT`) if the policy turns `SO_SNDTIMEO` off.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        self.core.set_timeout(Dir::Write, timeout)
    }

    /// The send timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.core.timeout(Dir::Write)
    }
}
