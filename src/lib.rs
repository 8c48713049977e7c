//! An async, Tokio-native facade over host TCP and UDP sockets on Linux.
//!
//! `hostsock` gives async Rust servers what `tokio::net` does not (per-socket
//! timeouts and per-call deadlines, datagram receives that wake on errors,
//! accept loops that back off when file descriptors run out), and gives
//! sandbox runtimes a policy of what may reach the kernel. Every socket is a
//! real kernel socket made with `socket2`, always non-blocking and
//! close-on-exec, registered in [`tokio::io::unix::AsyncFd`].
//!
//! # Map of the crate
//!
//! | job | type |
//! |---|---|
//! | accept TCP connections | [`TcpListener`] (and [`TcpListener::incoming`]) |
//! | a TCP connection | [`TcpStream`], split into [`ReadHalf`]/[`WriteHalf`] or [`OwnedReadHalf`]/[`OwnedWriteHalf`] |
//! | set options before connect or listen | [`TcpSocket`] |
//! | datagrams | [`UdpSocket`] |
//! | datagrams as a `Stream`/`Sink` (peer, destination, TOS per item) | [`Datagrams`], [`Datagram`] |
//! | receive into `bytes::BufMut` without zeroing | [`UdpSocket::recv_buf_from`], [`TcpStream::try_read_buf`] |
//! | many datagrams per syscall, GSO/GRO | [`UdpSocket::send_batch`], [`UdpSocket::recv_batch`], [`UdpSocket::send_gso`] |
//! | messages with flags and control messages | [`msg`], [`cmsg`] (`send_msg`/`recv_msg` on [`UdpSocket`] and [`TcpStream`]) |
//! | socket options, typed | [`opts`] (`sock.set(opts::TcpNoDelay, true)`) |
//! | what may reach the kernel | [`Policy`] ([`policy`]) |
//! | a guest's socket calls, as integers and bytes | [`raw::RawSocket`] |
//! | one socket per core | [`per_core`], `bind_reuseport` |
//! | errors, with a Linux errno each | [`Error`] |
//! | from and to `std::net`, `tokio::net`, `socket2`, `OwnedFd` | `TryFrom`/`From` on each type, [`TcpStream::from_fd_with_policy`] and friends |
//!
//! The typed layer (the types above) speaks Rust: `SocketAddr`, typed
//! options and control messages, [`Error`]. The raw layer ([`raw`]) speaks
//! Linux: integers and the guest's own bytes in, the host kernel's answer
//! or the policy's errno out, for sandbox runtimes. Both check every call
//! against the socket's [`Policy`] before it reaches the kernel.
//!
//! A program that uses the common subset of `tokio::net` compiles against
//! `hostsock` by changing its `use` lines only. Async and `try_` methods
//! return [`hostsock::Result`](Result) (its [`Error`] converts into
//! `std::io::Error` with `?`, keeping the errno); `poll_` methods return
//! `std::io::Result`, as tokio's do, so that hand-written futures and
//! streams can forward them.
//!
//! # Cargo features
//!
//! - `tracing` (off by default): every policy denial is a `WARN` event
//!   (target `hostsock::policy`, with the fd, operation, rule and errno), and
//!   every error a waiting send, receive, accept or connect ends with (an expired
//!   timeout or deadline too) a `DEBUG` event (target `hostsock::io`), so an
//!   embedder sees them in its existing logs.
//!
//! # Timeouts and deadlines
//!
//! Each socket has a read timeout (receive, read, peek, accept) and a write
//! timeout (send, write, [`TcpSocket::connect`]), as `SO_RCVTIMEO`/`SO_SNDTIMEO`.
//! The main async operations also have a `*_deadline` form taking a
//! [`tokio::time::Instant`].
//! Expiry gives [`Error::TimedOut`], whose [`errno`](Error::errno) is what
//! Linux gives: `EAGAIN`, or `EINPROGRESS` for connect.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use hostsock::{TcpListener, TcpStream};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio::time::Instant;
//!
//! #[tokio::main]
//! async fn main() -> hostsock::Result<()> {
//!     let listener = TcpListener::bind("127.0.0.1:0").await?;
//!     let deadline = Instant::now() + Duration::from_secs(2);
//!     let mut client = TcpStream::connect_deadline(listener.local_addr()?, deadline).await?;
//!     let (mut server, _) = listener.accept_deadline(deadline).await?;
//!     client.write_all(b"ping").await?;
//!     let mut buf = [0u8; 4];
//!     server.read_exact(&mut buf).await?;
//!     assert_eq!(&buf, b"ping");
//!     Ok(())
//! }
//! ```
#![deny(unsafe_code)]
#![deny(rust_2018_idioms)]
#![cfg_attr(test, deny(warnings))]
#![doc(test(attr(deny(warnings))))]

pub mod cmsg;
mod convert;
mod core;
mod deadline;
mod dgram;
mod error;
mod framed;
mod listener;
pub mod msg;
pub mod opts;
pub mod per_core;
pub mod policy;
pub mod raw;
mod socket;
mod sockopt;
mod split;
mod stream;
#[allow(unsafe_code)]
mod sys;
mod trace;

pub use dgram::{DatagramInfo, MAX_BATCH, RecvSlot, Transmit, UdpSocket};
pub use error::{Asked, Denial, Error, Op, Result, Rule};
pub use framed::{Datagram, Datagrams, MAX_DATAGRAM};
pub use listener::{Incoming, TcpListener};
pub use policy::Policy;
pub use socket::TcpSocket;
pub use split::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, ReuniteError, WriteHalf};
pub use stream::TcpStream;
pub use tokio::io::{Interest, Ready};
pub use tokio::net::ToSocketAddrs;

/// The README's examples, run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
