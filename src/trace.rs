//! Events for an embedder's logs, with the optional `tracing` feature:
//! every policy denial (`WARN`, target `hostsock::policy`), and the error
//! each waiting send, receive, accept and connect of the typed layer ends
//! with (`DEBUG`, target `hostsock::io`; expired deadlines included,
//! `WouldBlock` never; the one-try `DONTWAIT`/`try_` forms and the raw
//! layer's errno answers are not logged). Without the feature these are
//! empty and compile away.

use std::os::fd::RawFd;

use crate::error::{Denial, Error, Op};

/// A denial, as the audit hook sees it.
#[inline]
pub(crate) fn denied(fd: RawFd, denial: &Denial) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        target: "hostsock::policy",
        fd,
        op = ?denial.op,
        rule = ?denial.rule,
        errno = denial.errno,
        "denied: {denial}"
    );
    #[cfg(not(feature = "tracing"))]
    let _ = (fd, denial);
}

/// The error an async operation on `fd` ends with.
#[inline]
pub(crate) fn failed(fd: RawFd, op: Op, err: &Error) {
    #[cfg(feature = "tracing")]
    tracing::debug!(
        target: "hostsock::io",
        fd,
        op = ?op,
        errno = err.errno(),
        "{op:?} failed: {err}"
    );
    #[cfg(not(feature = "tracing"))]
    let _ = (fd, op, err);
}
