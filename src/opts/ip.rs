//! The tokio-named convenience options of `UdpSocket` and `TcpSocket`:
//! `IP_TOS`, `IPV6_TCLASS` and `SO_BINDTODEVICE`. Each goes through the
//! policy table like every typed option.

use std::io;

use super::OptName;
use crate::error::{Error, Result};

/// A device name for `SO_BINDTODEVICE` from tokio's `Option<&[u8]>` form
/// (`None` or empty: unbind).
fn device_name(interface: Option<&[u8]>) -> Result<OptName> {
    let bytes = interface.unwrap_or_default();
    std::str::from_utf8(bytes)
        .ok()
        .and_then(OptName::new)
        .ok_or_else(|| Error::Io(io::Error::from_raw_os_error(libc::EINVAL)))
}

macro_rules! ip_options {
    ($ty:ty, $new:literal) => {
        impl $ty {
            /// Sets `IP_TOS`, the type-of-service byte of IPv4 packets sent.
            ///
            /// # Examples
            ///
            /// ```
            /// #[tokio::main]
            /// async fn main() -> hostsock::Result<()> {
            #[doc = concat!("    let sock = ", $new, ";")]
            ///     sock.set_tos(0x10)?;
            ///     assert_eq!(sock.tos()?, 0x10);
            ///     Ok(())
            /// }
            /// ```
            ///
            /// # Errors
            ///
            /// A denial (`ENOPROTOOPT`) when the policy turns `IP_TOS` off; the
            /// kernel's errno otherwise. Linux accepts `IP_TOS` on an IPv6
            /// socket too: it marks the socket's IPv4 traffic (IPv4-mapped
            /// peers).
            pub fn set_tos(&self, tos: u32) -> $crate::Result<()> {
                self.set($crate::opts::IpTos, tos)
            }

            /// Gets `IP_TOS`; see `set_tos`.
            ///
            /// # Errors
            ///
            /// A denial (`ENOPROTOOPT`) when the policy turns `IP_TOS` off; the
            /// kernel's errno otherwise.
            pub fn tos(&self) -> $crate::Result<u32> {
                self.get($crate::opts::IpTos)
            }

            /// Sets `IPV6_TCLASS`, the traffic class of IPv6 packets sent
            /// (-1: the kernel's default).
            ///
            /// # Errors
            ///
            /// A denial (`ENOPROTOOPT`) when the policy turns `IPV6_TCLASS`
            /// off; the kernel's `ENOPROTOOPT` on an IPv4 socket.
            pub fn set_tclass_v6(&self, tclass: i32) -> $crate::Result<()> {
                self.set($crate::opts::TClassV6, tclass)
            }

            /// Gets `IPV6_TCLASS`; see `set_tclass_v6`.
            ///
            /// # Errors
            ///
            /// As [`set_tclass_v6`](Self::set_tclass_v6).
            pub fn tclass_v6(&self) -> $crate::Result<i32> {
                self.get($crate::opts::TClassV6)
            }

            /// Binds the socket to a network device (`SO_BINDTODEVICE`);
            /// `None` or an empty name unbinds. As tokio's `bind_device`.
            ///
            /// # Errors
            ///
            /// `EINVAL` for a name over 15 bytes or not UTF-8; a denial
            /// (`ENOPROTOOPT`) when the policy turns the option off (the
            /// default policy does); `ENODEV` for an unknown device; `EPERM`
            /// without `CAP_NET_RAW` when the socket is already bound to a
            /// device (since Linux 5.7 the first binding needs no privilege).
            pub fn bind_device(&self, interface: Option<&[u8]>) -> $crate::Result<()> {
                self.set($crate::opts::BindToDevice, device_name(interface)?)
            }

            /// The device the socket is bound to, if any.
            ///
            /// # Errors
            ///
            /// A denial (`ENOPROTOOPT`) when the policy turns `SO_BINDTODEVICE`
            /// off (the default policy does); the kernel's errno otherwise.
            pub fn device(&self) -> $crate::Result<Option<Vec<u8>>> {
                let name = self.get($crate::opts::BindToDevice)?;
                Ok((!name.as_bytes().is_empty()).then(|| name.as_bytes().to_vec()))
            }
        }
    };
}

ip_options!(
    crate::UdpSocket,
    r#"hostsock::UdpSocket::bind("127.0.0.1:0").await?"#
);
ip_options!(crate::TcpSocket, "hostsock::TcpSocket::new_v4()?");
