//! `TcpStream`'s messages: `send_msg`/`recv_msg` (`MSG_PEEK`, `MSG_OOB`,
//! `MSG_WAITALL` emulated, `TCP_INQ` control messages).

use super::TcpStream;
use crate::msg::msg_methods;

msg_methods!(
    TcpStream,
    tokio::io::Interest::READABLE,
    true,
    r#"
```
use std::io::{IoSlice, IoSliceMut};
use hostsock::msg::{RecvFlags, SendFlags};
use hostsock::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> hostsock::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let client = TcpStream::connect(listener.local_addr()?).await?;
    let (server, _) = listener.accept().await?;
    client.send_msg(&[IoSlice::new(b"he"), IoSlice::new(b"llo")], None, &[], SendFlags::EMPTY).await?;
    let mut buf = [0u8; 5];
    let meta = server
        .recv_msg(&mut [IoSliceMut::new(&mut buf)], &mut [], RecvFlags::WAITALL)
        .await?;
    assert_eq!((meta.len, &buf), (5, b"hello"));
    Ok(())
}
```"#
);

impl TcpStream {
    /// Polls to receive a message (one `recvmsg(2)`; `WAITALL` is not
    /// emulated here). See [`recv_msg`](TcpStream::recv_msg).
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
    /// The errors of [`recv_msg`](TcpStream::recv_msg), as `io::Error`s: a
    /// kernel errno stays in `raw_os_error()`, and
    /// [`Error::from`](crate::Error::from) gives a denial back. No timeout
    /// applies: a poll function keeps no timer.
    pub fn poll_recv_msg<'c>(
        &self,
        cx: &mut std::task::Context<'_>,
        bufs: &mut [std::io::IoSliceMut<'_>],
        control: &'c mut [u8],
        flags: crate::msg::RecvFlags,
    ) -> std::task::Poll<std::io::Result<crate::msg::RecvMeta<'c>>> {
        crate::msg::poll_recv_msg(
            self.core(),
            |f| self.core().poll_read_io(cx, f),
            bufs,
            control,
            flags,
        )
    }
}
