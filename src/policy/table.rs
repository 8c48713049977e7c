//! The option table: every socket option hostsock knows, as data. The typed
//! `opts` module and the raw layer both look options up here.

use libc::c_int;

/// How an option's value is laid out, and who answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Passed to the host as bytes.
    Host,
    /// `SO_RCVTIMEO`/`SO_SNDTIMEO`: stored by the facade (a `timeval`).
    FacadeTimeout,
    /// `SO_TYPE`/`SO_DOMAIN`/`SO_PROTOCOL`: from the socket's own record.
    FacadeRecord,
}

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptRow {
    /// `SOL_SOCKET`, `SOL_IP`, `SOL_IPV6`, `SOL_TCP` or `SOL_UDP`.
    pub level: c_int,
    /// The option's number at that level.
    pub name: c_int,
    /// The option's C name, for messages and the audit hook.
    pub cname: &'static str,
    /// The shortest value setsockopt accepts (shorter: `EINVAL`).
    pub min_len: usize,
    /// The longest value passed to the host (longer: cut to this); also the
    /// cap on a getsockopt buffer.
    pub max_len: usize,
    /// May be read with getsockopt.
    pub get: bool,
    /// May be written with setsockopt.
    pub set: bool,
    /// A getsockopt buffer shorter than the value gets a truncated value
    /// (Linux's behaviour for these options) rather than `EINVAL`.
    pub truncate: bool,
    /// On in [`Policy::default`](crate::Policy::default).
    pub default_on: bool,
    pub(crate) kind: Kind,
}

const INT: usize = std::mem::size_of::<c_int>();
const TIMEVAL: usize = std::mem::size_of::<libc::timeval>();
const LINGER: usize = std::mem::size_of::<libc::linger>();
const IN_ADDR: usize = std::mem::size_of::<libc::in_addr>();
const IP_MREQ: usize = std::mem::size_of::<libc::ip_mreq>();
const IP_MREQN: usize = std::mem::size_of::<libc::ip_mreqn>();
const IPV6_MREQ: usize = std::mem::size_of::<libc::ipv6_mreq>();
/// `TCP_CA_NAME_MAX` and `IFNAMSIZ`.
const NAME16: usize = 16;
/// Larger than any kernel's `struct tcp_info`; the host answers its own size.
const TCP_INFO_CAP: usize = 512;

const fn row(level: c_int, name: c_int, cname: &'static str, get: bool, set: bool) -> OptRow {
    OptRow {
        level,
        name,
        cname,
        min_len: INT,
        max_len: INT,
        get,
        set,
        truncate: true,
        default_on: true,
        kind: Kind::Host,
    }
}

/// An integer option that can be read and written.
const fn rw(level: c_int, name: c_int, cname: &'static str) -> OptRow {
    row(level, name, cname, true, true)
}

const fn get_only(level: c_int, name: c_int, cname: &'static str) -> OptRow {
    row(level, name, cname, true, false)
}

const fn sized(mut r: OptRow, min_len: usize, max_len: usize) -> OptRow {
    r.min_len = min_len;
    r.max_len = max_len;
    r
}

const fn facade(mut r: OptRow, kind: Kind) -> OptRow {
    r.kind = kind;
    r
}

const fn off(mut r: OptRow) -> OptRow {
    r.default_on = false;
    r
}

const fn set_only(r: OptRow) -> OptRow {
    let mut r = r;
    r.get = false;
    r
}

use libc::{
    IPPROTO_IP as IP, IPPROTO_IPV6 as IPV6, IPPROTO_TCP as TCP, IPPROTO_UDP as UDP,
    SOL_SOCKET as SOCK,
};

/// Every option hostsock knows, grouped by level and sorted by C name.
pub static OPTIONS: &[OptRow] = &[
    // SOL_SOCKET
    off(sized(
        rw(SOCK, libc::SO_BINDTODEVICE, "SO_BINDTODEVICE"),
        0,
        NAME16,
    )),
    rw(SOCK, libc::SO_BROADCAST, "SO_BROADCAST"),
    rw(SOCK, libc::SO_KEEPALIVE, "SO_KEEPALIVE"),
    sized(rw(SOCK, libc::SO_LINGER, "SO_LINGER"), LINGER, LINGER),
    off(rw(SOCK, libc::SO_MARK, "SO_MARK")),
    rw(SOCK, libc::SO_OOBINLINE, "SO_OOBINLINE"),
    off(rw(SOCK, libc::SO_PRIORITY, "SO_PRIORITY")),
    rw(SOCK, libc::SO_RCVBUF, "SO_RCVBUF"),
    rw(SOCK, libc::SO_RCVLOWAT, "SO_RCVLOWAT"),
    facade(
        sized(rw(SOCK, libc::SO_RCVTIMEO, "SO_RCVTIMEO"), TIMEVAL, TIMEVAL),
        Kind::FacadeTimeout,
    ),
    rw(SOCK, libc::SO_REUSEADDR, "SO_REUSEADDR"),
    rw(SOCK, libc::SO_REUSEPORT, "SO_REUSEPORT"),
    rw(SOCK, libc::SO_SNDBUF, "SO_SNDBUF"),
    facade(
        sized(rw(SOCK, libc::SO_SNDTIMEO, "SO_SNDTIMEO"), TIMEVAL, TIMEVAL),
        Kind::FacadeTimeout,
    ),
    rw(SOCK, libc::SO_TIMESTAMP, "SO_TIMESTAMP"),
    rw(SOCK, libc::SO_TIMESTAMPNS, "SO_TIMESTAMPNS"),
    get_only(SOCK, libc::SO_ACCEPTCONN, "SO_ACCEPTCONN"),
    facade(
        get_only(SOCK, libc::SO_DOMAIN, "SO_DOMAIN"),
        Kind::FacadeRecord,
    ),
    get_only(SOCK, libc::SO_ERROR, "SO_ERROR"),
    facade(
        get_only(SOCK, libc::SO_PROTOCOL, "SO_PROTOCOL"),
        Kind::FacadeRecord,
    ),
    facade(get_only(SOCK, libc::SO_TYPE, "SO_TYPE"), Kind::FacadeRecord),
    // SOL_IP
    set_only(sized(
        rw(IP, libc::IP_ADD_MEMBERSHIP, "IP_ADD_MEMBERSHIP"),
        IP_MREQ,
        IP_MREQN,
    )),
    set_only(sized(
        rw(IP, libc::IP_DROP_MEMBERSHIP, "IP_DROP_MEMBERSHIP"),
        IP_MREQ,
        IP_MREQN,
    )),
    off(rw(IP, libc::IP_FREEBIND, "IP_FREEBIND")),
    rw(IP, libc::IP_MTU_DISCOVER, "IP_MTU_DISCOVER"),
    sized(
        rw(IP, libc::IP_MULTICAST_IF, "IP_MULTICAST_IF"),
        IN_ADDR,
        IP_MREQN,
    ),
    rw(IP, libc::IP_MULTICAST_LOOP, "IP_MULTICAST_LOOP"),
    rw(IP, libc::IP_MULTICAST_TTL, "IP_MULTICAST_TTL"),
    get_only(IP, libc::IP_MTU, "IP_MTU"),
    rw(IP, libc::IP_PKTINFO, "IP_PKTINFO"),
    rw(IP, libc::IP_RECVERR, "IP_RECVERR"),
    rw(IP, libc::IP_RECVORIGDSTADDR, "IP_RECVORIGDSTADDR"),
    rw(IP, libc::IP_RECVTOS, "IP_RECVTOS"),
    rw(IP, libc::IP_RECVTTL, "IP_RECVTTL"),
    rw(IP, libc::IP_TOS, "IP_TOS"),
    off(rw(IP, libc::IP_TRANSPARENT, "IP_TRANSPARENT")),
    rw(IP, libc::IP_TTL, "IP_TTL"),
    // SOL_IPV6
    set_only(sized(
        rw(IPV6, libc::IPV6_ADD_MEMBERSHIP, "IPV6_ADD_MEMBERSHIP"),
        IPV6_MREQ,
        IPV6_MREQ,
    )),
    set_only(sized(
        rw(IPV6, libc::IPV6_DROP_MEMBERSHIP, "IPV6_DROP_MEMBERSHIP"),
        IPV6_MREQ,
        IPV6_MREQ,
    )),
    rw(IPV6, libc::IPV6_MULTICAST_HOPS, "IPV6_MULTICAST_HOPS"),
    // Not in SPEC.md's list; kept because tokio::net's
    // `set_multicast_loop_v6` is part of the drop-in subset.
    rw(IPV6, libc::IPV6_MULTICAST_LOOP, "IPV6_MULTICAST_LOOP"),
    rw(IPV6, libc::IPV6_RECVERR, "IPV6_RECVERR"),
    rw(IPV6, libc::IPV6_RECVHOPLIMIT, "IPV6_RECVHOPLIMIT"),
    rw(IPV6, libc::IPV6_RECVORIGDSTADDR, "IPV6_RECVORIGDSTADDR"),
    rw(IPV6, libc::IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO"),
    rw(IPV6, libc::IPV6_RECVTCLASS, "IPV6_RECVTCLASS"),
    rw(IPV6, libc::IPV6_TCLASS, "IPV6_TCLASS"),
    rw(IPV6, libc::IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS"),
    rw(IPV6, libc::IPV6_V6ONLY, "IPV6_V6ONLY"),
    // SOL_TCP
    sized(rw(TCP, libc::TCP_CONGESTION, "TCP_CONGESTION"), 1, NAME16),
    rw(TCP, libc::TCP_CORK, "TCP_CORK"),
    rw(TCP, libc::TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT"),
    sized(get_only(TCP, libc::TCP_INFO, "TCP_INFO"), 0, TCP_INFO_CAP),
    rw(TCP, libc::TCP_INQ, "TCP_INQ"),
    rw(TCP, libc::TCP_KEEPCNT, "TCP_KEEPCNT"),
    rw(TCP, libc::TCP_KEEPIDLE, "TCP_KEEPIDLE"),
    rw(TCP, libc::TCP_KEEPINTVL, "TCP_KEEPINTVL"),
    rw(TCP, libc::TCP_LINGER2, "TCP_LINGER2"),
    rw(TCP, libc::TCP_MAXSEG, "TCP_MAXSEG"),
    rw(TCP, libc::TCP_NODELAY, "TCP_NODELAY"),
    rw(TCP, libc::TCP_QUICKACK, "TCP_QUICKACK"),
    rw(TCP, libc::TCP_SYNCNT, "TCP_SYNCNT"),
    rw(TCP, libc::TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT"),
    rw(TCP, libc::TCP_WINDOW_CLAMP, "TCP_WINDOW_CLAMP"),
    // SOL_UDP
    rw(UDP, libc::UDP_GRO, "UDP_GRO"),
    rw(UDP, libc::UDP_SEGMENT, "UDP_SEGMENT"),
];

/// Options that never reach the kernel, whatever the policy says about
/// unknown options: privileged or host-affecting.
pub(crate) const NEVER: &[(c_int, c_int, &str)] = &[
    (SOCK, libc::SO_RCVBUFFORCE, "SO_RCVBUFFORCE"),
    (SOCK, libc::SO_SNDBUFFORCE, "SO_SNDBUFFORCE"),
    (SOCK, libc::SO_ATTACH_FILTER, "SO_ATTACH_FILTER"),
    (SOCK, libc::SO_ATTACH_BPF, "SO_ATTACH_BPF"),
    (
        SOCK,
        libc::SO_ATTACH_REUSEPORT_CBPF,
        "SO_ATTACH_REUSEPORT_CBPF",
    ),
    (
        SOCK,
        libc::SO_ATTACH_REUSEPORT_EBPF,
        "SO_ATTACH_REUSEPORT_EBPF",
    ),
    (SOCK, libc::SO_DETACH_FILTER, "SO_DETACH_FILTER"),
    (SOCK, libc::SO_LOCK_FILTER, "SO_LOCK_FILTER"),
    (IP, libc::IP_HDRINCL, "IP_HDRINCL"),
];

/// The index of `(level, name)` in [`OPTIONS`].
pub(crate) fn find(level: c_int, name: c_int) -> Option<usize> {
    OPTIONS
        .iter()
        .position(|r| r.level == level && r.name == name)
}

/// The C name of an option the crate knows, in the table or the never
/// list.
pub(crate) fn cname(level: c_int, name: c_int) -> Option<&'static str> {
    OPTIONS
        .iter()
        .find(|r| r.level == level && r.name == name)
        .map(|r| r.cname)
        .or_else(|| {
            NEVER
                .iter()
                .find(|&&(l, n, _)| l == level && n == name)
                .map(|&(_, _, c)| c)
        })
}

pub(crate) fn is_never(level: c_int, name: c_int) -> bool {
    NEVER.iter().any(|&(l, n, _)| l == level && n == name)
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
    fn table_fits_the_bitset_and_has_no_duplicates() {
        assert!(OPTIONS.len() <= 128);
        for (i, a) in OPTIONS.iter().enumerate() {
            assert_eq!(find(a.level, a.name), Some(i), "{} listed twice", a.cname);
            assert!(a.min_len <= a.max_len, "{}", a.cname);
            assert!(a.get || a.set, "{}", a.cname);
            assert!(!is_never(a.level, a.name), "{}", a.cname);
        }
    }

    #[test]
    fn opt_in_rows_are_off_by_default() {
        for name in [
            "SO_BINDTODEVICE",
            "SO_MARK",
            "SO_PRIORITY",
            "IP_TRANSPARENT",
            "IP_FREEBIND",
        ] {
            let r = OPTIONS
                .iter()
                .find(|r| r.cname == name)
                .map(|r| r.default_on);
            assert_eq!(r, Some(false), "{name}");
        }
    }
}
