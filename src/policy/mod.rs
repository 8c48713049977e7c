//! `Policy`: what may reach the kernel.
//!
//! One table of socket options ([`OPTIONS`]), the socket kinds that may be
//! created, what to do with options outside the table, clamps on buffer
//! sizes, and address rules by use. Every socket carries an `Arc<Policy>`
//! from its creation, and an accepted socket inherits its listener's. The
//! typed API and the raw layer check the same policy.
//!
//! A check takes no lock and allocates nothing: the policy is immutable once
//! built, and rules are scanned in place. An audit hook, if set, sees every
//! denial.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

pub(crate) mod addr;
mod table;

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::{Arc, OnceLock};

pub use addr::{AddrRule, AddrUse, Cidr, CidrError, Verdict};
pub(crate) use table::{Kind as OptKind, cname, is_never};
pub use table::{OPTIONS, OptRow};

use crate::error::{Denial, Op};

/// What setsockopt does with an option outside the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnknownOpt {
    /// Refuse with `ENOPROTOOPT` (the default).
    Reject,
    /// Answer success without calling the host (gVisor's behaviour, for
    /// guests that set exotic options blindly). getsockopt still gives
    /// `ENOPROTOOPT`: there is no value to pretend.
    PretendOk,
    /// Pass the call to the host as it is (get and set), except for the
    /// options that never reach the kernel (`SO_ATTACH_FILTER`,
    /// `SO_RCVBUFFORCE`, `IP_HDRINCL`, ...).
    PassThrough,
}

/// A socket kind the policy may allow: family and type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketKind {
    /// `AF_INET`, `SOCK_STREAM` (TCP).
    TcpV4,
    /// `AF_INET6`, `SOCK_STREAM` (TCP).
    TcpV6,
    /// `AF_INET`, `SOCK_DGRAM` (UDP).
    UdpV4,
    /// `AF_INET6`, `SOCK_DGRAM` (UDP).
    UdpV6,
}

impl SocketKind {
    /// All four kinds.
    pub const ALL: [SocketKind; 4] = [
        SocketKind::TcpV4,
        SocketKind::TcpV6,
        SocketKind::UdpV4,
        SocketKind::UdpV6,
    ];

    const fn bit(self) -> u8 {
        match self {
            SocketKind::TcpV4 => 1,
            SocketKind::TcpV6 => 2,
            SocketKind::UdpV4 => 4,
            SocketKind::UdpV6 => 8,
        }
    }

    /// The kind for a family and a base type (`SOCK_STREAM`/`SOCK_DGRAM`).
    pub fn from_parts(domain: i32, ty: i32) -> Option<SocketKind> {
        match (domain, ty) {
            (libc::AF_INET, libc::SOCK_STREAM) => Some(SocketKind::TcpV4),
            (libc::AF_INET6, libc::SOCK_STREAM) => Some(SocketKind::TcpV6),
            (libc::AF_INET, libc::SOCK_DGRAM) => Some(SocketKind::UdpV4),
            (libc::AF_INET6, libc::SOCK_DGRAM) => Some(SocketKind::UdpV6),
            _ => None,
        }
    }

    /// `(domain, type, protocol)` of this kind.
    pub const fn parts(self) -> (i32, i32, i32) {
        match self {
            SocketKind::TcpV4 => (libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_TCP),
            SocketKind::TcpV6 => (libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_TCP),
            SocketKind::UdpV4 => (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDP),
            SocketKind::UdpV6 => (libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP),
        }
    }
}

/// What the audit hook is shown for each denial.
#[derive(Debug)]
#[non_exhaustive]
pub struct AuditEvent<'a> {
    /// The host fd of the socket the call was made on (-1 before a socket
    /// exists, for a refused socket creation).
    pub fd: RawFd,
    /// What was refused and by which rule.
    pub denial: &'a Denial,
}

/// The audit hook's type.
pub type AuditHook = Arc<dyn Fn(&AuditEvent<'_>) + Send + Sync>;

/// The rules a socket's calls are checked against before they reach the
/// kernel. Build one with [`Policy::builder`] or take a preset.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use hostsock::{Policy, TcpStream, TcpListener};
/// use hostsock::policy::{AddrRule, AddrUse, Verdict};
///
/// #[tokio::main]
/// async fn main() -> hostsock::Result<()> {
///     let listener = TcpListener::bind("127.0.0.1:0").await?;
///     let addr = listener.local_addr()?;
///     let policy = Policy::builder()
///         .addr_rule(AddrRule::new(Verdict::Deny, addr.ip().into(), &[AddrUse::Connect]).ports(addr.port(), addr.port()))
///         .build();
///     let err = TcpStream::connect_with(addr, Arc::new(policy), None).await.unwrap_err();
///     assert!(err.is_denied());
///     assert_eq!(err.errno(), libc::ECONNREFUSED);
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Policy {
    /// Bit `i` set: row `i` of [`OPTIONS`] is allowed.
    opts_on: u128,
    unknown: UnknownOpt,
    sndbuf_max: Option<u32>,
    rcvbuf_max: Option<u32>,
    kinds: u8,
    rules: Vec<AddrRule>,
    default_verdict: Verdict,
    audit: Option<AuditHook>,
    recv_flags: i32,
    send_flags: i32,
    keep_unknown_cmsgs: bool,
    control_max: usize,
}

/// The receive flags SPEC.md allows (`MSG_CMSG_CLOEXEC` and
/// `MSG_NOSIGNAL` are accepted and have no effect, as in Linux).
pub const RECV_FLAGS: i32 = libc::MSG_DONTWAIT
    | libc::MSG_PEEK
    | libc::MSG_TRUNC
    | libc::MSG_WAITALL
    | libc::MSG_ERRQUEUE
    | libc::MSG_OOB
    | libc::MSG_CMSG_CLOEXEC
    | libc::MSG_NOSIGNAL;

/// The send flags SPEC.md allows, the same on every send path.
pub const SEND_FLAGS: i32 = libc::MSG_DONTWAIT
    | libc::MSG_EOR
    | libc::MSG_MORE
    | libc::MSG_NOSIGNAL
    | libc::MSG_OOB
    | libc::MSG_FASTOPEN
    | libc::MSG_CONFIRM;

/// The largest control buffer handed to the host (SPEC.md: 1024 bytes).
pub const CONTROL_MAX: usize = 1024;

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on: Vec<&str> = OPTIONS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.opts_on & (1u128 << i) != 0)
            .map(|(_, r)| r.cname)
            .collect();
        f.debug_struct("Policy")
            .field("options_on", &on)
            .field("unknown", &self.unknown)
            .field("sndbuf_max", &self.sndbuf_max)
            .field("rcvbuf_max", &self.rcvbuf_max)
            .field("kinds", &self.kinds)
            .field("rules", &self.rules)
            .field("default_verdict", &self.default_verdict)
            .field("audit", &self.audit.is_some())
            .field("recv_flags", &self.recv_flags)
            .field("send_flags", &self.send_flags)
            .field("keep_unknown_cmsgs", &self.keep_unknown_cmsgs)
            .field("control_max", &self.control_max)
            .finish()
    }
}

impl Default for Policy {
    /// SPEC.md's default: the default allowlist of options, unknown
    /// setsockopt rejected, every socket kind and every address allowed.
    fn default() -> Policy {
        let opts_on = OPTIONS
            .iter()
            .enumerate()
            .filter(|(_, r)| r.default_on)
            .fold(0u128, |m, (i, _)| m | (1u128 << i));
        Policy {
            opts_on,
            unknown: UnknownOpt::Reject,
            sndbuf_max: None,
            rcvbuf_max: None,
            kinds: 0b1111,
            rules: Vec::new(),
            default_verdict: Verdict::Allow,
            audit: None,
            recv_flags: RECV_FLAGS,
            send_flags: SEND_FLAGS,
            keep_unknown_cmsgs: false,
            control_max: CONTROL_MAX,
        }
    }
}

impl Policy {
    /// The most permissive policy: every option of the table on (the
    /// opt-in ones too), options outside the table passed through, every
    /// socket kind and address allowed. Only the never-allowed options
    /// (`SO_ATTACH_FILTER`, `SO_RCVBUFFORCE`, `IP_HDRINCL`, ...) are still
    /// refused.
    pub fn allow_all() -> Policy {
        Policy {
            opts_on: OPTIONS
                .iter()
                .enumerate()
                .fold(0u128, |m, (i, _)| m | (1u128 << i)),
            unknown: UnknownOpt::PassThrough,
            ..Policy::default()
        }
    }

    /// The sandbox preset: the default allowlist, plus denials of
    /// link-local addresses (169.254.0.0/16 and fe80::/10, where cloud
    /// metadata services live) for every use, of multicast group joins, and
    /// of binding privileged ports (1-1023).
    pub fn sandbox() -> Policy {
        let all = &AddrUse::ALL;
        let link_local_v4 = Cidr::new(std::net::Ipv4Addr::new(169, 254, 0, 0).into(), 16);
        let link_local_v6 = Cidr::new(
            std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0).into(),
            10,
        );
        Policy::builder()
            .addr_rule(AddrRule::new(Verdict::Deny, link_local_v4, all))
            .addr_rule(AddrRule::new(Verdict::Deny, link_local_v6, all))
            .addr_rule(AddrRule::new(Verdict::Deny, Cidr::ANY_V4, &[AddrUse::Bind]).ports(1, 1023))
            .addr_rule(AddrRule::new(Verdict::Deny, Cidr::ANY_V6, &[AddrUse::Bind]).ports(1, 1023))
            .deny_option(libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP)
            .deny_option(libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP)
            .build()
    }

    /// gVisor's behaviour: the default allowlist, and setsockopt of an
    /// option outside it pretends to succeed.
    pub fn gvisor_compat() -> Policy {
        Policy::builder()
            .unknown_options(UnknownOpt::PretendOk)
            .build()
    }

    /// A builder starting from `policy` (a preset, say), to change some of
    /// it.
    pub fn builder_from(policy: Policy) -> PolicyBuilder {
        PolicyBuilder { policy }
    }

    /// A builder starting from [`Policy::default`].
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder {
            policy: Policy::default(),
        }
    }

    /// The process-wide default policy, shared by every socket made without
    /// an explicit one. Cloning the `Arc` costs an atomic increment.
    pub fn shared_default() -> Arc<Policy> {
        static DEFAULT: OnceLock<Arc<Policy>> = OnceLock::new();
        DEFAULT.get_or_init(|| Arc::new(Policy::default())).clone()
    }

    /// What setsockopt does with options outside the table.
    pub fn unknown_options(&self) -> UnknownOpt {
        self.unknown
    }

    /// Is row `(level, name)` of the table allowed? `false` for options
    /// outside the table.
    pub fn option_allowed(&self, level: i32, name: i32) -> bool {
        table::find(level, name).is_some_and(|i| self.opts_on & (1u128 << i) != 0)
    }

    /// Is this socket kind allowed?
    pub fn kind_allowed(&self, kind: SocketKind) -> bool {
        self.kinds & kind.bit() != 0
    }

    /// The verdict for a use of `addr`, and the index of the rule that gave
    /// it (`None`: the default verdict).
    pub fn addr_verdict(&self, usage: AddrUse, addr: SocketAddr) -> (Verdict, Option<usize>) {
        match self
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(usage, addr))
        {
            Some((i, r)) => (r.verdict(), Some(i)),
            None => (self.default_verdict, None),
        }
    }

    /// The clamp on `SO_SNDBUF` (`send == true`) or `SO_RCVBUF`.
    pub fn buffer_max(&self, send: bool) -> Option<u32> {
        if send {
            self.sndbuf_max
        } else {
            self.rcvbuf_max
        }
    }

    /// Refuses with `denial`: the audit hook sees it, and it is returned.
    pub(crate) fn deny(&self, fd: RawFd, denial: Denial) -> Denial {
        crate::trace::denied(fd, &denial);
        if let Some(hook) = &self.audit {
            hook(&AuditEvent {
                fd,
                denial: &denial,
            });
        }
        denial
    }

    /// Checks a use of `addr` against the address rules.
    #[inline]
    pub(crate) fn check_addr(
        &self,
        fd: RawFd,
        op: Op,
        usage: AddrUse,
        addr: SocketAddr,
    ) -> Result<(), Denial> {
        // No rules and an allowing default (the default policy's case):
        // nothing to look at.
        if self.rules.is_empty() && self.default_verdict == Verdict::Allow {
            return Ok(());
        }
        self.check_addr_rules(fd, op, usage, addr)
    }

    /// [`check_addr`](Policy::check_addr) against the rules.
    fn check_addr_rules(
        &self,
        fd: RawFd,
        op: Op,
        usage: AddrUse,
        addr: SocketAddr,
    ) -> Result<(), Denial> {
        match self.addr_verdict(usage, effective_destination(usage, addr)) {
            (Verdict::Allow, _) => Ok(()),
            (Verdict::Deny, index) => {
                let rule = match index.and_then(|i| Some((i, *self.rules.get(i)?))) {
                    Some((index, rule)) => crate::error::Rule::Address { index, rule },
                    None => crate::error::Rule::DefaultVerdict,
                };
                Err(self.deny(
                    fd,
                    Denial {
                        op,
                        asked: crate::error::Asked::Address { usage, addr },
                        rule,
                        errno: usage.denial_errno(),
                    },
                ))
            }
        }
    }

    /// Checks that a socket kind may be created or adopted.
    pub(crate) fn check_kind(
        &self,
        fd: RawFd,
        domain: i32,
        ty: i32,
        protocol: i32,
    ) -> Result<SocketKind, Denial> {
        let kind = SocketKind::from_parts(domain, ty);
        match kind {
            Some(k) if self.kind_allowed(k) => Ok(k),
            _ => {
                let errno = match domain {
                    libc::AF_INET | libc::AF_INET6 => libc::ESOCKTNOSUPPORT,
                    _ => libc::EAFNOSUPPORT,
                };
                Err(self.refuse_kind(fd, (domain, ty, protocol), errno))
            }
        }
    }

    /// Refuses a socket kind with `errno`: the audit hook sees it.
    pub(crate) fn refuse_kind(
        &self,
        fd: RawFd,
        (domain, ty, protocol): (i32, i32, i32),
        errno: i32,
    ) -> Denial {
        self.deny(
            fd,
            Denial {
                op: Op::Socket,
                asked: crate::error::Asked::SocketKind {
                    domain,
                    ty,
                    protocol,
                },
                rule: crate::error::Rule::KindNotAllowed,
                errno,
            },
        )
    }

    /// The receive flags allowed (others are `EINVAL`).
    pub fn recv_flags(&self) -> i32 {
        self.recv_flags
    }

    /// The send flags allowed (others are `EINVAL`).
    pub fn send_flags(&self) -> i32 {
        self.send_flags
    }

    /// Are received control messages this crate does not list handed over
    /// (`Cmsg::Unknown`) rather than dropped with `MSG_CTRUNC` set?
    pub fn keeps_unknown_cmsgs(&self) -> bool {
        self.keep_unknown_cmsgs
    }

    /// The largest control buffer handed to the host.
    pub fn control_max(&self) -> usize {
        self.control_max
    }

    pub(crate) fn row_on(&self, index: usize) -> bool {
        self.opts_on & (1u128 << index) != 0
    }
}

/// Where a call really goes: Linux sends a connect or send to the
/// unspecified address (`0.0.0.0`, `::`, `::ffff:0.0.0.0`) to loopback, so
/// the rules see the loopback address it stands for. Other uses and other
/// addresses are unchanged.
fn effective_destination(usage: AddrUse, addr: SocketAddr) -> SocketAddr {
    let ip = addr::canonical(addr.ip());
    if !matches!(usage, AddrUse::Connect | AddrUse::SendTo) || !ip.is_unspecified() {
        return addr;
    }
    let loopback = match ip {
        std::net::IpAddr::V4(_) => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::net::IpAddr::V6(_) => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    };
    SocketAddr::new(loopback, addr.port())
}

/// Builds a [`Policy`], starting from the default.
///
/// # Examples
///
/// ```
/// use hostsock::Policy;
/// use hostsock::policy::UnknownOpt;
///
/// let policy = Policy::builder()
///     .allow_option(libc::SOL_SOCKET, libc::SO_MARK)
///     .deny_option(libc::IPPROTO_TCP, libc::TCP_CORK)
///     .unknown_options(UnknownOpt::PassThrough)
///     .clamp_send_buffer(1 << 20)
///     .audit(|event| eprintln!("denied: {}", event.denial))
///     .build();
/// assert!(policy.option_allowed(libc::SOL_SOCKET, libc::SO_MARK));
/// assert!(!policy.option_allowed(libc::IPPROTO_TCP, libc::TCP_CORK));
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct PolicyBuilder {
    policy: Policy,
}

impl PolicyBuilder {
    fn set_row(mut self, level: i32, name: i32, on: bool) -> Self {
        // Options outside the table cannot be turned on row by row: what
        // happens to them is `unknown_options`.
        if let Some(i) = table::find(level, name) {
            if on {
                self.policy.opts_on |= 1u128 << i;
            } else {
                self.policy.opts_on &= !(1u128 << i);
            }
        }
        self
    }

    /// Allows one option of the table (the opt-in ones such as `SO_MARK`
    /// or `IP_TRANSPARENT` included). A pair outside the table is left to
    /// [`unknown_options`](PolicyBuilder::unknown_options).
    pub fn allow_option(self, level: i32, name: i32) -> Self {
        self.set_row(level, name, true)
    }

    /// Turns one option of the table off: get and set give `ENOPROTOOPT`.
    pub fn deny_option(self, level: i32, name: i32) -> Self {
        self.set_row(level, name, false)
    }

    /// What setsockopt does with options outside the table.
    pub fn unknown_options(mut self, mode: UnknownOpt) -> Self {
        self.policy.unknown = mode;
        self
    }

    /// Clamps `SO_SNDBUF` to at most `max` bytes before the host sees it.
    pub fn clamp_send_buffer(mut self, max: u32) -> Self {
        self.policy.sndbuf_max = Some(max);
        self
    }

    /// Clamps `SO_RCVBUF` to at most `max` bytes before the host sees it.
    pub fn clamp_recv_buffer(mut self, max: u32) -> Self {
        self.policy.rcvbuf_max = Some(max);
        self
    }

    /// Allows exactly these socket kinds.
    pub fn socket_kinds(mut self, kinds: &[SocketKind]) -> Self {
        self.policy.kinds = kinds.iter().fold(0, |m, k| m | k.bit());
        self
    }

    /// Adds an address rule after the ones already added (first match
    /// wins).
    pub fn addr_rule(mut self, rule: AddrRule) -> Self {
        self.policy.rules.push(rule);
        self
    }

    /// The verdict for addresses no rule matches (default: allow).
    pub fn default_verdict(mut self, verdict: Verdict) -> Self {
        self.policy.default_verdict = verdict;
        self
    }

    /// Narrows the receive and send flags allowed (what is not in SPEC.md's
    /// masks stays refused).
    pub fn message_flags(mut self, recv: i32, send: i32) -> Self {
        self.policy.recv_flags = recv & RECV_FLAGS;
        self.policy.send_flags = send & SEND_FLAGS;
        self
    }

    /// Hands received control messages this crate does not list over as
    /// `Cmsg::Unknown` instead of dropping them (and setting `MSG_CTRUNC`).
    pub fn keep_unknown_cmsgs(mut self, keep: bool) -> Self {
        self.policy.keep_unknown_cmsgs = keep;
        self
    }

    /// The largest control buffer handed to the host (at most 1024 bytes,
    /// SPEC.md's cap; the fixed buffers are that size).
    pub fn control_max(mut self, max: usize) -> Self {
        self.policy.control_max = max.min(CONTROL_MAX);
        self
    }

    /// Sets the audit hook, called once for every denial.
    pub fn audit(mut self, hook: impl Fn(&AuditEvent<'_>) + Send + Sync + 'static) -> Self {
        self.policy.audit = Some(Arc::new(hook));
        self
    }

    /// The finished policy.
    pub fn build(self) -> Policy {
        self.policy
    }
}
