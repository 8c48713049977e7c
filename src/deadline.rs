//! Per-socket timeouts and per-call deadlines, on tokio's timer.
//!
//! A per-socket timeout is measured from the moment an operation starts, as
//! `SO_RCVTIMEO`/`SO_SNDTIMEO` are; a per-call deadline is an absolute
//! `tokio::time::Instant`. When both are set the earlier one wins.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::error::{Error, Op, Result};

/// Which of a socket's two timeouts applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Receive side: read, recv, accept.
    Read,
    /// Send side: write, send, connect.
    Write,
}

/// How long an operation may wait, as `SO_RCVTIMEO`/`SO_SNDTIMEO` say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// No timeout (`{0, 0}` in a `timeval`).
    Forever,
    /// Do not wait at all (a negative `timeval`, as Linux reads it).
    Never,
    /// Wait at most this long.
    For(Duration),
}

/// Stored nanoseconds: 0 is "forever", `u64::MAX` is "don't wait".
const FOREVER: u64 = 0;
const DONT_WAIT: u64 = u64::MAX;

/// A socket's read and write timeouts.
#[derive(Debug, Default)]
pub(crate) struct Timeouts {
    read: AtomicU64,
    write: AtomicU64,
    /// Set once either timeout has been set: until then both are the
    /// kernel's default ("forever") and nothing needs copying on accept.
    touched: std::sync::atomic::AtomicBool,
}

impl Timeouts {
    fn slot(&self, dir: Dir) -> &AtomicU64 {
        match dir {
            Dir::Read => &self.read,
            Dir::Write => &self.write,
        }
    }

    pub(crate) fn wait(&self, dir: Dir) -> Wait {
        match self.slot(dir).load(Ordering::Relaxed) {
            FOREVER => Wait::Forever,
            DONT_WAIT => Wait::Never,
            n => Wait::For(Duration::from_nanos(n)),
        }
    }

    pub(crate) fn set_wait(&self, dir: Dir, wait: Wait) {
        let nanos = match wait {
            Wait::Forever => FOREVER,
            Wait::Never => DONT_WAIT,
            Wait::For(d) if d.is_zero() => FOREVER,
            // Longer than about 584 years: kept as the longest we store.
            Wait::For(d) => u64::try_from(d.as_nanos())
                .unwrap_or(DONT_WAIT - 1)
                .min(DONT_WAIT - 1),
        };
        self.slot(dir).store(nanos, Ordering::Relaxed);
        self.touched.store(true, Ordering::Relaxed);
    }

    pub(crate) fn touched(&self) -> bool {
        self.touched.load(Ordering::Relaxed)
    }

    /// The typed view: `None` waits forever, `Some(Duration::ZERO)` means
    /// "don't wait" (only the raw layer can set that).
    pub(crate) fn get(&self, dir: Dir) -> Option<Duration> {
        match self.wait(dir) {
            Wait::Forever => None,
            Wait::Never => Some(Duration::ZERO),
            Wait::For(d) => Some(d),
        }
    }

    pub(crate) fn copy_from(&self, other: &Timeouts) {
        for dir in [Dir::Read, Dir::Write] {
            let v = other.slot(dir).load(Ordering::Relaxed);
            self.slot(dir).store(v, Ordering::Relaxed);
        }
        self.touched.store(other.touched(), Ordering::Relaxed);
    }

    /// The deadline an operation starting now must meet: the earlier of the
    /// call's own deadline and now plus the socket's timeout ("don't wait"
    /// is now itself).
    pub(crate) fn deadline(&self, dir: Dir, call: Option<Instant>) -> Option<Instant> {
        let from_timeout = match self.wait(dir) {
            Wait::Forever => None,
            Wait::Never => Some(Instant::now()),
            Wait::For(t) => Instant::now().checked_add(t),
        };
        match (call, from_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Runs `fut` until it finishes or `deadline` passes. The future is polled
/// first, so a deadline already past still lets a ready operation complete.
pub(crate) async fn run<T>(
    deadline: Option<Instant>,
    op: Op,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match deadline {
        None => fut.await,
        Some(at) => match tokio::time::timeout_at(at, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::timed_out(op)),
        },
    }
}

/// A timer for `poll_*` paths (`AsyncRead`/`AsyncWrite`), which have no
/// future to wrap: armed when an operation first has to wait, disarmed when
/// it completes. The `Sleep` is allocated once, the first time a timeout is
/// armed, and reused after that.
#[derive(Debug, Default)]
pub(crate) struct PollTimer {
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl PollTimer {
    /// Called when the operation is about to return `Pending`. Returns
    /// `Ready(())` if the timeout has run out.
    pub(crate) fn poll_expired(
        &mut self,
        cx: &mut Context<'_>,
        timeout: Option<Duration>,
    ) -> Poll<()> {
        let Some(t) = timeout else {
            self.armed = false;
            return Poll::Pending;
        };
        if !self.armed {
            let at = Instant::now().checked_add(t).unwrap_or_else(far_future);
            match &mut self.sleep {
                Some(s) => s.as_mut().reset(at),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            self.armed = true;
        }
        match &mut self.sleep {
            Some(s) => match s.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.armed = false;
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }

    /// The operation completed: the next wait starts a fresh timeout.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

/// About 30 years from now, what tokio uses for "never".
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}
