//! `Errno`: a Linux errno value, the raw layer's only error.

use std::fmt;
use std::io;

/// A Linux errno value. Every `Err` of the raw layer is one of these: the
/// host kernel's own, or the one the policy or the facade gives (each
/// documented where it arises).
///
/// # Examples
///
/// ```
/// use hostsock::raw::Errno;
///
/// let e = Errno::ECONNREFUSED;
/// assert_eq!(e.raw(), libc::ECONNREFUSED);
/// assert_eq!(e.name(), "ECONNREFUSED");
/// let io: std::io::Error = e.into();
/// assert_eq!(io.raw_os_error(), Some(libc::ECONNREFUSED));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(i32);

macro_rules! errnos {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "`.")]
                pub const $name: Errno = Errno(libc::$name);
            )*

            /// The C name of this errno (`"EAGAIN"`), or `"E?"` for one
            /// this table does not name.
            pub fn name(self) -> &'static str {
                match self.0 {
                    $(libc::$name => stringify!($name),)*
                    _ => "E?",
                }
            }
        }
    };
}

// EAGAIN and EWOULDBLOCK are the same value on Linux: EAGAIN is listed, so
// `name()` gives "EAGAIN"; ENOTSUP is EOPNOTSUPP.
errnos!(
    EPERM,
    ENOENT,
    EINTR,
    EIO,
    EBADF,
    EAGAIN,
    ENOMEM,
    EACCES,
    EFAULT,
    EBUSY,
    EEXIST,
    ENODEV,
    EINVAL,
    ENFILE,
    EMFILE,
    ENOTTY,
    EPIPE,
    EDOM,
    ERANGE,
    ENOTSOCK,
    EDESTADDRREQ,
    EMSGSIZE,
    EPROTOTYPE,
    ENOPROTOOPT,
    EPROTONOSUPPORT,
    ESOCKTNOSUPPORT,
    EOPNOTSUPP,
    EPFNOSUPPORT,
    EAFNOSUPPORT,
    EADDRINUSE,
    EADDRNOTAVAIL,
    ENETDOWN,
    ENETUNREACH,
    ENETRESET,
    ECONNABORTED,
    ECONNRESET,
    ENOBUFS,
    EISCONN,
    ENOTCONN,
    ESHUTDOWN,
    ETIMEDOUT,
    ECONNREFUSED,
    EHOSTDOWN,
    EHOSTUNREACH,
    EALREADY,
    EINPROGRESS,
);

impl Errno {
    /// An errno from its value.
    pub const fn new(raw: i32) -> Errno {
        Errno(raw)
    }

    /// The errno's value.
    pub const fn raw(self) -> i32 {
        self.0
    }

    pub(crate) fn from_io(e: &io::Error) -> Errno {
        Errno(crate::error::errno_of_io(e))
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            io::Error::from_raw_os_error(self.0),
            self.name()
        )
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for io::Error {
    fn from(e: Errno) -> io::Error {
        io::Error::from_raw_os_error(e.0)
    }
}

impl From<io::Error> for Errno {
    fn from(e: io::Error) -> Errno {
        Errno::from_io(&e)
    }
}

impl From<crate::Error> for Errno {
    fn from(e: crate::Error) -> Errno {
        Errno(e.errno())
    }
}

impl From<Errno> for crate::Error {
    fn from(e: Errno) -> crate::Error {
        crate::Error::Io(io::Error::from_raw_os_error(e.0))
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values() {
        assert_eq!(Errno::EAGAIN.name(), "EAGAIN");
        assert_eq!(Errno::new(libc::EWOULDBLOCK), Errno::EAGAIN);
        assert_eq!(Errno::new(9999).name(), "E?");
        assert_eq!(Errno::EINPROGRESS.raw(), libc::EINPROGRESS);
    }
}
