//! `UdpSocket`'s messages: `send_msg`/`recv_msg`, and the conveniences
//! built on them (the destination address and TOS of each datagram; a send
//! from a chosen local address).

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};

use super::{RECV_INTEREST, UdpSocket};
use crate::cmsg::Cmsg;
use crate::error::Result;
use crate::msg::{RecvFlags, SendFlags, msg_methods};

msg_methods!(
    UdpSocket,
    RECV_INTEREST,
    false,
    r#"
```
use std::io::{IoSlice, IoSliceMut};
use hostsock::cmsg::Cmsg;
use hostsock::msg::{RecvFlags, SendFlags};
use hostsock::{opts, UdpSocket};

#[tokio::main]
async fn main() -> hostsock::Result<()> {
    let a = UdpSocket::bind("127.0.0.1:0").await?;
    let b = UdpSocket::bind("127.0.0.1:0").await?;
    b.set(opts::RecvTos, true)?;
    let to = b.local_addr()?;
    a.send_msg(&[IoSlice::new(b"hi")], Some(to), &[Cmsg::Tos(0x20)], SendFlags::EMPTY).await?;

    let mut buf = [0u8; 16];
    let mut control = [0u8; 64];
    let meta = b.recv_msg(&mut [IoSliceMut::new(&mut buf)], &mut control, RecvFlags::EMPTY).await?;
    assert_eq!(meta.addr, Some(a.local_addr()?));
    assert!(meta.cmsgs().any(|m| m == Cmsg::Tos(0x20)));
    Ok(())
}
```"#
);

/// Where a datagram went and how it was marked: see
/// [`UdpSocket::recv_with_info`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatagramInfo {
    /// The sender.
    pub from: SocketAddr,
    /// The local address it was sent to (from `IP_PKTINFO` /
    /// `IPV6_PKTINFO`; needs [`opts::PktInfoV4`](crate::opts::PktInfoV4) /
    /// [`opts::RecvPktInfoV6`](crate::opts::RecvPktInfoV6) on).
    pub local: Option<IpAddr>,
    /// The interface it arrived on (with `local`).
    pub ifindex: Option<u32>,
    /// Its TOS / traffic class (needs [`opts::RecvTos`](crate::opts::RecvTos)
    /// / [`opts::RecvTClassV6`](crate::opts::RecvTClassV6) on).
    pub tos: Option<u8>,
    /// Was it longer than the buffer?
    pub truncated: bool,
}

impl UdpSocket {
    /// Turns on what [`recv_with_info`](UdpSocket::recv_with_info) reports:
    /// `IP_PKTINFO` and `IP_RECVTOS` (and on an IPv6 socket
    /// `IPV6_RECVPKTINFO` and `IPV6_RECVTCLASS`).
    ///
    /// # Errors
    ///
    /// A denial (`ENOPROTOOPT`) if the policy turns one of these options off;
    /// the kernel's errno otherwise (from `getsockname(2)` or `setsockopt(2)`).
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::{opts, UdpSocket};
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let sock = UdpSocket::bind("127.0.0.1:0").await?;
    ///     sock.enable_info()?;
    ///     assert!(sock.get(opts::PktInfoV4)? && sock.get(opts::RecvTos)?);
    ///     Ok(())
    /// }
    /// ```
    pub fn enable_info(&self) -> Result<()> {
        use crate::opts;
        match self.local_addr()? {
            SocketAddr::V4(_) => {
                self.set(opts::PktInfoV4, true)?;
                self.set(opts::RecvTos, true)
            }
            SocketAddr::V6(_) => {
                self.set(opts::RecvPktInfoV6, true)?;
                self.set(opts::RecvTClassV6, true)?;
                // IPv4-mapped traffic on a dual-stack socket reports the
                // IPv4 messages; asking may fail on a v6-only socket.
                let _ = self.set(opts::PktInfoV4, true);
                let _ = self.set(opts::RecvTos, true);
                Ok(())
            }
        }
    }

    /// Receives one datagram with where it went and how it was marked: the
    /// local destination address (tell 127.0.0.1 from 127.0.0.2 on a
    /// wildcard socket) and the TOS byte. Call
    /// [`enable_info`](UdpSocket::enable_info) once first.
    ///
    /// # Examples
    ///
    /// ```
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let server = UdpSocket::bind("0.0.0.0:0").await?;
    ///     server.enable_info()?;
    ///     let port = server.local_addr()?.port();
    ///     let client = UdpSocket::bind("127.0.0.1:0").await?;
    ///     client.send_to(b"hi", ("127.0.0.2", port)).await?;
    ///     let mut buf = [0u8; 16];
    ///     let (n, info) = server.recv_with_info(&mut buf).await?;
    ///     assert_eq!((n, info.local), (2, Some("127.0.0.2".parse().unwrap())));
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv_msg`](UdpSocket::recv_msg).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn recv_with_info(&self, buf: &mut [u8]) -> Result<(usize, DatagramInfo)> {
        let mut control = crate::cmsg::CmsgBuf::<128>::new();
        let meta = self
            .recv_msg(
                &mut [IoSliceMut::new(buf)],
                control.space_mut(),
                RecvFlags::EMPTY,
            )
            .await?;
        let info = info_from(&meta)?;
        Ok((meta.len, info))
    }

    /// Sends `buf` to `to` from the local address `from` (through
    /// `IP_PKTINFO` / `IPV6_PKTINFO`), optionally with a TOS / traffic
    /// class: how a server on a wildcard address answers from the address
    /// it was asked on. `from` is checked against the policy's
    /// `SourceViaPktinfo` rules.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::{IpAddr, Ipv4Addr};
    /// use hostsock::UdpSocket;
    ///
    /// #[tokio::main]
    /// async fn main() -> hostsock::Result<()> {
    ///     let server = UdpSocket::bind("0.0.0.0:0").await?;
    ///     let client = UdpSocket::bind("127.0.0.1:0").await?;
    ///     let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    ///     server.send_from(b"hi", client.local_addr()?, from, None).await?;
    ///     let mut buf = [0u8; 4];
    ///     let (n, src) = client.recv_from(&mut buf).await?;
    ///     assert_eq!((n, src.ip()), (2, from));
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A denial when the policy refuses `from` for `SourceViaPktinfo`
    /// (`EACCES`) or `to` for `SendTo` (`ECONNREFUSED`); otherwise as
    /// [`send_msg`](UdpSocket::send_msg) (`EINVAL` from the kernel for a `from`
    /// that is not a local address).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn send_from(
        &self,
        buf: &[u8],
        to: SocketAddr,
        from: IpAddr,
        tos: Option<u8>,
    ) -> Result<usize> {
        let v6_socket = matches!(self.local_addr()?, SocketAddr::V6(_));
        let (cmsgs, n) = source_cmsgs(v6_socket, to, Some(from), tos);
        self.send_msg(
            &[IoSlice::new(buf)],
            Some(to),
            &cmsgs[..n],
            SendFlags::EMPTY,
        )
        .await
    }
}

/// The [`DatagramInfo`] of a received message: its sender, and the
/// destination address, interface and TOS its control messages tell.
pub(crate) fn info_from(meta: &crate::msg::RecvMeta<'_>) -> std::io::Result<DatagramInfo> {
    let from = meta
        .addr
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT))?;
    let mut info = DatagramInfo {
        from,
        local: None,
        ifindex: None,
        tos: None,
        truncated: meta.truncated(),
    };
    for m in meta.cmsgs() {
        match m {
            Cmsg::PktInfoV4 { ifindex, addr, .. } => {
                info.local = Some(addr.into());
                info.ifindex = Some(ifindex);
            }
            Cmsg::PktInfoV6 { addr, ifindex } => {
                info.local = Some(addr.into());
                info.ifindex = Some(ifindex);
            }
            Cmsg::Tos(t) | Cmsg::TClass(t) => info.tos = Some(t),
            _ => {}
        }
    }
    Ok(info)
}

/// The control messages that send a datagram to `to` from the local
/// address `from` (`IP_PKTINFO`, or `IPV6_PKTINFO` on an IPv6 socket) with
/// a TOS / traffic class; the array and how many of it are used.
pub(crate) fn source_cmsgs(
    v6_socket: bool,
    to: SocketAddr,
    from: Option<IpAddr>,
    tos: Option<u8>,
) -> ([Cmsg<'static>; 2], usize) {
    let mut cmsgs = [Cmsg::Tos(0); 2];
    let mut n = 0;
    match from {
        Some(IpAddr::V4(src)) if !v6_socket => {
            cmsgs[n] = Cmsg::PktInfoV4 {
                ifindex: 0,
                spec_dst: src,
                addr: std::net::Ipv4Addr::UNSPECIFIED,
            };
            n += 1;
        }
        Some(IpAddr::V4(src)) => {
            cmsgs[n] = Cmsg::PktInfoV6 {
                addr: src.to_ipv6_mapped(),
                ifindex: 0,
            };
            n += 1;
        }
        Some(IpAddr::V6(src)) => {
            cmsgs[n] = Cmsg::PktInfoV6 {
                addr: src,
                ifindex: 0,
            };
            n += 1;
        }
        None => {}
    }
    if let Some(t) = tos {
        // IPv4 traffic (an IPv4-mapped destination on a dual-stack socket
        // too) takes its TOS from `IP_TOS`; Linux's IPv4 path ignores
        // `IPV6_TCLASS`.
        let v4_traffic = match to {
            SocketAddr::V4(_) => true,
            SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
        };
        cmsgs[n] = if v4_traffic {
            Cmsg::Tos(t)
        } else {
            Cmsg::TClass(t)
        };
        n += 1;
    }
    (cmsgs, n)
}

impl UdpSocket {
    /// Polls to receive a message; like the async receives it wakes on a
    /// pending error too. See [`recv_msg`](UdpSocket::recv_msg).
    ///
    /// # Return value
    ///
    /// * `Poll::Pending` if nothing is queued,
    /// * `Poll::Ready(Ok(meta))` with what was received,
    /// * `Poll::Ready(Err(e))` on an error.
    ///
    /// Only the `Waker` from the `Context` passed to the most recent call is
    /// scheduled to receive a wakeup.
    ///
    /// # Errors
    ///
    /// The errors of [`recv_msg`](UdpSocket::recv_msg), as `io::Error`s: a
    /// kernel errno stays in `raw_os_error()`, and
    /// [`Error::from`](crate::Error::from) gives a denial back. No timeout
    /// applies: a poll function keeps no timer.
    pub fn poll_recv_msg<'c>(
        &self,
        cx: &mut std::task::Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        control: &'c mut [u8],
        flags: RecvFlags,
    ) -> std::task::Poll<std::io::Result<crate::msg::RecvMeta<'c>>> {
        crate::msg::poll_recv_msg(
            self.core(),
            |f| self.poll_recv_io(cx, f),
            bufs,
            control,
            flags,
        )
    }
}
