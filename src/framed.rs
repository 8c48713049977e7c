//! A `UdpSocket` as a `futures` [`Stream`] of received datagrams and a
//! [`Sink`] of datagrams to send, each carrying its peer address and,
//! optionally, where it went and how it was marked ([`DatagramInfo`]).

use std::borrow::Borrow;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::{Sink, Stream};

use crate::cmsg::CmsgBuf;
use crate::dgram::{info_from, source_cmsgs};
use crate::msg::{RecvFlags, SendFlags};
use crate::{DatagramInfo, UdpSocket};

/// The largest UDP payload: the default receive size of [`Datagrams`].
pub const MAX_DATAGRAM: usize = 65_535;

/// One datagram, received or to send.
///
/// Received from a [`Datagrams`] stream, `peer` is the sender, `truncated`
/// says whether it was longer than the stream's receive size, and `info`
/// (with [`Datagrams::with_info`]) tells the local address it was sent to
/// and its TOS. Sent into a [`Datagrams`] sink, it goes to `peer`, and when
/// `info` is set, from `info.local` with `info.tos`: so
/// [`reply`](Datagram::reply) answers from the address the peer asked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Datagram {
    /// The payload.
    pub data: Bytes,
    /// The sender (received) or the destination (to send).
    pub peer: SocketAddr,
    /// Destination address, interface and TOS, when asked for.
    pub info: Option<DatagramInfo>,
    /// The datagram was longer than the receive size and was cut.
    pub truncated: bool,
}

impl Datagram {
    /// A datagram to send to `peer` from whatever address the kernel picks.
    pub fn new(data: impl Into<Bytes>, peer: SocketAddr) -> Datagram {
        Datagram {
            data: data.into(),
            peer,
            info: None,
            truncated: false,
        }
    }

    /// An answer to this datagram: to its sender, from the local address it
    /// was sent to and with its TOS (when the stream reported them).
    pub fn reply(&self, data: impl Into<Bytes>) -> Datagram {
        Datagram {
            data: data.into(),
            peer: self.peer,
            info: self.info,
            truncated: false,
        }
    }
}

/// A [`Stream`] of the datagrams a [`UdpSocket`] receives and a [`Sink`] of
/// datagrams it sends; `S` is the socket, owned or borrowed (`UdpSocket`,
/// `&UdpSocket`, `Arc<UdpSocket>`), as tokio-util's `UdpFramed`.
///
/// Each received datagram is copied out of one reusable buffer into its
/// own [`Bytes`] (one allocation of its length per item). The sink holds
/// one datagram at a time: `poll_ready` sends the held one first. The
/// socket's timeouts do not apply here; wrap the stream with a timeout if
/// needed. Errors (a pending ICMP error, a policy denial) are items: the
/// stream goes on after them.
///
/// # Examples
///
/// ```
/// use futures::{SinkExt, StreamExt};
/// use hostsock::{Datagram, Datagrams, UdpSocket};
///
/// #[tokio::main]
/// async fn main() -> hostsock::Result<()> {
///     let server = Datagrams::new(UdpSocket::bind("0.0.0.0:0").await?).with_info()?;
///     let port = server.get_ref().local_addr()?.port();
///     let (mut replies, mut requests) = server.split();
///
///     let mut client = Datagrams::new(UdpSocket::bind("127.0.0.1:0").await?);
///     let to = format!("127.0.0.2:{port}").parse().unwrap();
///     client.send(Datagram::new(&b"ping"[..], to)).await?;
///
///     let req = requests.next().await.expect("a datagram")?;
///     assert_eq!(req.info.and_then(|i| i.local), Some(to.ip()));
///     replies.send(req.reply(&b"pong"[..])).await?;
///
///     let answer = client.next().await.expect("a datagram")?;
///     assert_eq!((&answer.data[..], answer.peer), (&b"pong"[..], to));
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Datagrams<S = UdpSocket> {
    sock: S,
    scratch: Box<[u8]>,
    info: bool,
    held: Option<Datagram>,
}

impl<S: Borrow<UdpSocket>> Datagrams<S> {
    /// Datagrams of up to [`MAX_DATAGRAM`] bytes over `sock`.
    pub fn new(sock: S) -> Datagrams<S> {
        Datagrams::with_max_size(sock, MAX_DATAGRAM)
    }

    /// Datagrams of up to `max` bytes (longer ones arrive cut, with
    /// `truncated` set); the receive buffer is allocated once, here.
    pub fn with_max_size(sock: S, max: usize) -> Datagrams<S> {
        Datagrams {
            sock,
            scratch: vec![0u8; max].into_boxed_slice(),
            info: false,
            held: None,
        }
    }

    /// Reports each datagram's [`DatagramInfo`] (turns on `IP_PKTINFO` and
    /// `IP_RECVTOS`, or their IPv6 twins, through
    /// [`UdpSocket::enable_info`]).
    ///
    /// # Errors
    ///
    /// A denial if the policy turns those options off.
    pub fn with_info(mut self) -> crate::Result<Datagrams<S>> {
        self.sock.borrow().enable_info()?;
        self.info = true;
        Ok(self)
    }

    /// The socket.
    pub fn get_ref(&self) -> &UdpSocket {
        self.sock.borrow()
    }

    /// The socket back; a datagram the sink still held is dropped.
    pub fn into_inner(self) -> S {
        self.sock
    }

    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(d) = &self.held else {
            return Poll::Ready(Ok(()));
        };
        let sock = self.sock.borrow();
        let sent = match d.info {
            Some(info) if info.local.is_some() || info.tos.is_some() => {
                let v6 = matches!(sock.local_addr(), Ok(SocketAddr::V6(_)));
                let (cmsgs, n) = source_cmsgs(v6, d.peer, info.local, info.tos);
                ready!(sock.poll_send_msg(
                    cx,
                    &[IoSlice::new(&d.data)],
                    Some(d.peer),
                    &cmsgs[..n],
                    SendFlags::EMPTY,
                ))
            }
            _ => ready!(sock.poll_send_to(cx, &d.data, d.peer)),
        };
        // Sent or refused, the datagram is done with: a refused one is not
        // retried (UDP has no partial sends to resume).
        self.held = None;
        Poll::Ready(sent.map(drop))
    }
}

impl<S: Borrow<UdpSocket> + Unpin> Stream for Datagrams<S> {
    type Item = io::Result<Datagram>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut control = CmsgBuf::<128>::new();
        let control_space: &mut [u8] = if this.info {
            control.space_mut()
        } else {
            &mut []
        };
        let sock = this.sock.borrow();
        let meta = ready!(sock.poll_recv_msg(
            cx,
            &mut [IoSliceMut::new(&mut this.scratch)],
            control_space,
            RecvFlags::EMPTY,
        ));
        let item = meta.and_then(|meta| {
            let info = if this.info {
                Some(info_from(&meta)?)
            } else {
                None
            };
            let peer = meta
                .addr
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EAFNOSUPPORT))?;
            let len = meta.len.min(this.scratch.len());
            Ok(Datagram {
                data: Bytes::copy_from_slice(this.scratch.get(..len).unwrap_or_default()),
                peer,
                info,
                truncated: meta.truncated(),
            })
        });
        Poll::Ready(Some(item))
    }
}

impl<S: Borrow<UdpSocket> + Unpin> Sink<Datagram> for Datagrams<S> {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_held(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Datagram) -> io::Result<()> {
        let this = self.get_mut();
        if this.held.is_some() {
            return Err(io::Error::other(
                "start_send without a successful poll_ready first",
            ));
        }
        this.held = Some(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_held(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_held(cx)
    }
}

impl<S: Borrow<UdpSocket> + Unpin> Sink<(Bytes, SocketAddr)> for Datagrams<S> {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_held(cx)
    }

    fn start_send(self: Pin<&mut Self>, (data, peer): (Bytes, SocketAddr)) -> io::Result<()> {
        Sink::<Datagram>::start_send(self, Datagram::new(data, peer))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_held(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_held(cx)
    }
}
