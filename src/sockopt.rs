//! The one path every getsockopt/setsockopt takes, typed or raw: the
//! policy's table decides, the facade answers what it stores itself, and
//! the host answers the rest with the guest's own length.

use std::io;
use std::time::Duration;

use socket2::Socket;

use crate::core::Core;
use crate::deadline::{Dir, Timeouts, Wait};
use crate::error::{Asked, Denial, Error, Op, Rule};
use crate::policy::{OPTIONS, OptKind, OptRow, UnknownOpt};
use crate::policy::{Policy, SocketKind};
use crate::sys;

/// setsockopt values longer than this are `EINVAL` (SPEC.md).
pub(crate) const MAX_OPTLEN: usize = 32 * 1024;

/// Why an option call did not succeed: the kernel's (or Linux-faithful)
/// errno, or the policy's denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OptError {
    Errno(i32),
    Denied(Denial),
}

impl OptError {
    pub(crate) fn errno(&self) -> i32 {
        match self {
            OptError::Errno(e) => *e,
            OptError::Denied(d) => d.errno,
        }
    }
}

impl From<io::Error> for OptError {
    fn from(e: io::Error) -> OptError {
        OptError::Errno(crate::error::errno_of_io(&e))
    }
}

impl From<OptError> for Error {
    fn from(e: OptError) -> Error {
        match e {
            OptError::Errno(n) => Error::Io(io::Error::from_raw_os_error(n)),
            OptError::Denied(d) => d.into(),
        }
    }
}

/// What an option call acts on: the host socket and the facade's record of
/// it.
#[derive(Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) sock: &'a Socket,
    pub(crate) policy: &'a Policy,
    pub(crate) kind: SocketKind,
    pub(crate) timeouts: &'a Timeouts,
}

impl Target<'_> {
    fn raw_fd(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(self.sock)
    }

    fn sock(&self) -> &Socket {
        self.sock
    }

    fn policy(&self) -> &Policy {
        self.policy
    }

    fn kind(&self) -> SocketKind {
        self.kind
    }

    fn timeouts(&self) -> &Timeouts {
        self.timeouts
    }
}

impl Core {
    pub(crate) fn opt_target(&self) -> Target<'_> {
        Target {
            sock: self.sock(),
            policy: self.policy(),
            kind: self.kind(),
            timeouts: self.timeouts(),
        }
    }
}

/// The table row for `(level, name)` if the policy allows it in this
/// direction, `None` for an option outside the table (the caller applies
/// the unknown-option mode), or the denial.
fn allowed_row(
    core: Target<'_>,
    op: Op,
    level: i32,
    name: i32,
    set: bool,
) -> Result<Option<&'static OptRow>, OptError> {
    let policy = core.policy();
    let Some(index) = OPTIONS
        .iter()
        .position(|r| r.level == level && r.name == name)
    else {
        return Ok(None);
    };
    let row = &OPTIONS[index];
    let rule = if !policy.row_on(index) {
        Some(Rule::OptionOff)
    } else if (set && !row.set) || (!set && !row.get) {
        Some(Rule::OptionWrongWay)
    } else {
        None
    };
    match rule {
        None => Ok(Some(row)),
        Some(rule) => Err(OptError::Denied(policy.deny(
            core.raw_fd(),
            Denial {
                op,
                asked: Asked::Option { level, name },
                rule,
                errno: libc::ENOPROTOOPT,
            },
        ))),
    }
}

fn deny_unknown(core: Target<'_>, op: Op, level: i32, name: i32, rule: Rule) -> OptError {
    OptError::Denied(core.policy().deny(
        core.raw_fd(),
        Denial {
            op,
            asked: Asked::Option { level, name },
            rule,
            errno: libc::ENOPROTOOPT,
        },
    ))
}

/// getsockopt: fills `out` (the guest's buffer; its length is the guest's
/// optlen) and returns the length Linux would report.
pub(crate) fn get(
    core: Target<'_>,
    level: i32,
    name: i32,
    out: &mut [u8],
) -> Result<usize, OptError> {
    let row = match allowed_row(core, Op::GetOpt, level, name, false)? {
        Some(row) => row,
        None => {
            let policy = core.policy();
            let passes = policy.unknown_options() == UnknownOpt::PassThrough
                && !crate::policy::is_never(level, name);
            if !passes {
                let rule = if crate::policy::is_never(level, name) {
                    Rule::OptionNever
                } else {
                    Rule::OptionNotListed
                };
                return Err(deny_unknown(core, Op::GetOpt, level, name, rule));
            }
            let cap = out.len().min(MAX_OPTLEN);
            return Ok(sys::getsockopt(core.sock(), level, name, &mut out[..cap])?);
        }
    };
    match row.kind {
        // The timeouts are mirrored on the host socket (where, the fd being
        // non-blocking, they change nothing), so reading them back gives
        // exactly what Linux gives: jiffy rounding, huge values, `{0, 0}`
        // after a negative one.
        OptKind::Host | OptKind::FacadeTimeout => {
            let cap = out.len().min(row.max_len);
            Ok(sys::getsockopt(core.sock(), level, name, &mut out[..cap])?)
        }
        OptKind::FacadeRecord => {
            let (domain, ty, protocol) = core.kind().parts();
            let v = match name {
                libc::SO_DOMAIN => domain,
                libc::SO_PROTOCOL => protocol,
                _ => ty,
            };
            Ok(copy_truncated(&v.to_ne_bytes(), out))
        }
    }
}

/// setsockopt with `value` as the guest's bytes (its length is optlen).
pub(crate) fn set(core: Target<'_>, level: i32, name: i32, value: &[u8]) -> Result<(), OptError> {
    if value.len() > MAX_OPTLEN {
        return Err(OptError::Errno(libc::EINVAL));
    }
    let row = match allowed_row(core, Op::SetOpt, level, name, true)? {
        Some(row) => row,
        None => {
            if crate::policy::is_never(level, name) {
                return Err(deny_unknown(
                    core,
                    Op::SetOpt,
                    level,
                    name,
                    Rule::OptionNever,
                ));
            }
            return match core.policy().unknown_options() {
                UnknownOpt::Reject => Err(deny_unknown(
                    core,
                    Op::SetOpt,
                    level,
                    name,
                    Rule::OptionNotListed,
                )),
                UnknownOpt::PretendOk => Ok(()),
                UnknownOpt::PassThrough => Ok(sys::setsockopt(core.sock(), level, name, value)?),
            };
        }
    };
    if value.len() < row.min_len {
        return Err(OptError::Errno(libc::EINVAL));
    }
    let value = &value[..value.len().min(row.max_len)];
    match row.kind {
        OptKind::Host => {
            if level == libc::SOL_SOCKET && (name == libc::SO_SNDBUF || name == libc::SO_RCVBUF) {
                if let Some(max) = core.policy().buffer_max(name == libc::SO_SNDBUF) {
                    let clamped = clamp_int(value, max);
                    return Ok(sys::setsockopt(core.sock(), level, name, &clamped)?);
                }
            }
            Ok(sys::setsockopt(core.sock(), level, name, value)?)
        }
        // The facade keeps the meaning (it does the waiting); the host
        // keeps the value Linux reports back.
        OptKind::FacadeTimeout => {
            let wait = parse_timeval(value)?;
            sys::setsockopt(core.sock(), level, name, value)?;
            core.timeouts().set_wait(timeout_dir(name), wait);
            Ok(())
        }
        // Get-only rows never get here: `allowed_row` refused them.
        OptKind::FacadeRecord => Err(OptError::Errno(libc::ENOPROTOOPT)),
    }
}

fn timeout_dir(name: i32) -> Dir {
    if name == libc::SO_RCVTIMEO {
        Dir::Read
    } else {
        Dir::Write
    }
}

/// Sets a socket's read or write timeout from the typed API, through the
/// same path as a raw `SO_RCVTIMEO`/`SO_SNDTIMEO` (the policy's row, the
/// host mirror). `Some(Duration::ZERO)` is `EINVAL`, as in std.
pub(crate) fn set_timeout(target: Target<'_>, dir: Dir, t: Option<Duration>) -> crate::Result<()> {
    let wait = match t {
        None => Wait::Forever,
        Some(d) if d.is_zero() => {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            )));
        }
        Some(d) => Wait::For(d),
    };
    let name = match dir {
        Dir::Read => libc::SO_RCVTIMEO,
        Dir::Write => libc::SO_SNDTIMEO,
    };
    set(target, libc::SOL_SOCKET, name, &timeval_bytes(wait)).map_err(Into::into)
}

/// Copies as much of `src` as fits in `out`; Linux truncates these options
/// to the caller's length.
fn copy_truncated(src: &[u8], out: &mut [u8]) -> usize {
    let n = src.len().min(out.len());
    out[..n].copy_from_slice(&src[..n]);
    n
}

/// An `int` option value with its value clamped to `max` (the value is
/// signed, as the kernel reads it; negative values pass unchanged).
fn clamp_int(value: &[u8], max: u32) -> [u8; 4] {
    let mut b = [0u8; 4];
    let n = value.len().min(4);
    b[..n].copy_from_slice(&value[..n]);
    // Linux reads the size as unsigned (`min_t(u32, val, wmem_max)`), so a
    // negative value means "as large as allowed": clamp it the same way.
    let v = u32::from_ne_bytes(b);
    v.min(max).to_ne_bytes()
}

/// `struct timeval` bytes for a timeout: "forever" is `{0, 0}`, "don't
/// wait" `{-1, 0}` (what sets it), a duration its seconds and microseconds
/// (rounded up, so that no timeout shrinks to "forever").
pub(crate) fn timeval_bytes(wait: Wait) -> [u8; 16] {
    let (sec, usec) = match wait {
        Wait::Forever => (0i64, 0i64),
        Wait::Never => (-1, 0),
        Wait::For(d) => {
            let micros = d.subsec_nanos().div_ceil(1000);
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if micros == 1_000_000 {
                (secs.saturating_add(1), 0)
            } else {
                (secs, i64::from(micros))
            }
        }
    };
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&sec.to_ne_bytes());
    b[8..].copy_from_slice(&usec.to_ne_bytes());
    b
}

/// Reads a `struct timeval` as Linux's `sock_set_timeout` does: `usec`
/// outside `0..1_000_000` is `EDOM`; a negative `sec` is "don't wait";
/// `{0, 0}` is "forever".
fn parse_timeval(value: &[u8]) -> Result<Wait, OptError> {
    let mut sec = [0u8; 8];
    let mut usec = [0u8; 8];
    sec.copy_from_slice(value.get(..8).ok_or(OptError::Errno(libc::EINVAL))?);
    usec.copy_from_slice(value.get(8..16).ok_or(OptError::Errno(libc::EINVAL))?);
    let (sec, usec) = (i64::from_ne_bytes(sec), i64::from_ne_bytes(usec));
    if !(0..1_000_000).contains(&usec) {
        return Err(OptError::Errno(libc::EDOM));
    }
    if sec < 0 {
        return Ok(Wait::Never);
    }
    if sec == 0 && usec == 0 {
        return Ok(Wait::Forever);
    }
    let secs = u64::try_from(sec).unwrap_or(0);
    let micros = u32::try_from(usec).unwrap_or(0);
    Ok(Wait::For(
        Duration::from_secs(secs) + Duration::from_micros(u64::from(micros)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tv(sec: i64, usec: i64) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&sec.to_ne_bytes());
        b[8..].copy_from_slice(&usec.to_ne_bytes());
        b
    }

    #[test]
    fn timeval_rules_follow_linux() {
        assert_eq!(parse_timeval(&tv(0, 0)), Ok(Wait::Forever));
        assert_eq!(parse_timeval(&tv(-1, 0)), Ok(Wait::Never));
        assert_eq!(
            parse_timeval(&tv(1, 1_000_000)),
            Err(OptError::Errno(libc::EDOM))
        );
        assert_eq!(parse_timeval(&tv(1, -1)), Err(OptError::Errno(libc::EDOM)));
        assert_eq!(
            parse_timeval(&tv(2, 500_000)),
            Ok(Wait::For(Duration::from_millis(2500)))
        );
        assert_eq!(
            timeval_bytes(Wait::For(Duration::from_millis(2500))),
            tv(2, 500_000)
        );
        assert_eq!(timeval_bytes(Wait::Never), tv(-1, 0));
        assert_eq!(timeval_bytes(Wait::For(Duration::from_nanos(1))), tv(0, 1));
        assert_eq!(
            timeval_bytes(Wait::For(Duration::from_nanos(999_999_999))),
            tv(1, 0)
        );
    }

    #[test]
    fn clamp_reads_the_size_unsigned_as_linux_does() {
        assert_eq!(clamp_int(&100i32.to_ne_bytes(), 50), 50i32.to_ne_bytes());
        assert_eq!(clamp_int(&(-5i32).to_ne_bytes(), 50), 50i32.to_ne_bytes());
        assert_eq!(clamp_int(&i32::MIN.to_ne_bytes(), 50), 50i32.to_ne_bytes());
        assert_eq!(clamp_int(&10i32.to_ne_bytes(), 50), 10i32.to_ne_bytes());
    }

    #[test]
    fn truncation_copies_a_prefix() {
        let mut out = [0u8; 2];
        assert_eq!(copy_truncated(&[1, 2, 3, 4], &mut out), 2);
        assert_eq!(out, [1, 2]);
    }
}
