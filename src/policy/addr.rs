//! Address rules: allow or deny by use, network and port range; first match
//! wins.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// What an address is being used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddrUse {
    /// The local address of `bind`.
    Bind,
    /// The remote address of `connect`.
    Connect,
    /// The destination of `sendto`/`sendmsg`.
    SendTo,
    /// The peer of an accepted connection.
    AcceptPeer,
    /// A source address chosen per datagram through `IP_PKTINFO`/`IPV6_PKTINFO`.
    SourceViaPktinfo,
}

impl AddrUse {
    /// Every use, for rules that apply to all.
    pub const ALL: [AddrUse; 5] = [
        AddrUse::Bind,
        AddrUse::Connect,
        AddrUse::SendTo,
        AddrUse::AcceptPeer,
        AddrUse::SourceViaPktinfo,
    ];

    const fn bit(self) -> u8 {
        match self {
            AddrUse::Bind => 1,
            AddrUse::Connect => 2,
            AddrUse::SendTo => 4,
            AddrUse::AcceptPeer => 8,
            AddrUse::SourceViaPktinfo => 16,
        }
    }

    /// The errno the raw layer gives when this use is denied: `EACCES` for
    /// a local address (bind, a PKTINFO source), `ECONNREFUSED` for a remote
    /// one (SPEC.md, "Address rules").
    pub const fn denial_errno(self) -> i32 {
        match self {
            AddrUse::Bind | AddrUse::SourceViaPktinfo => libc::EACCES,
            _ => libc::ECONNREFUSED,
        }
    }
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The call may reach the kernel.
    Allow,
    /// The call is refused before it reaches the kernel.
    Deny,
}

/// A network in CIDR form, such as `169.254.0.0/16` or `fe80::/10`.
///
/// # Examples
///
/// ```
/// use hostsock::policy::Cidr;
///
/// let net: Cidr = "10.0.0.0/8".parse().unwrap();
/// assert!(net.contains("10.1.2.3".parse().unwrap()));
/// assert!(!net.contains("11.0.0.1".parse().unwrap()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// A network from an address and a prefix length (cut to 32 or 128).
    /// A network written as IPv4-mapped IPv6 (`::ffff:a.b.c.d/p`, p >= 96)
    /// is kept as the IPv4 network it names, so that it matches the same
    /// addresses either way they are written.
    pub fn new(addr: IpAddr, prefix: u8) -> Cidr {
        if let IpAddr::V6(v6) = addr {
            if let (Some(v4), true) = (v6.to_ipv4_mapped(), prefix >= 96) {
                return Cidr {
                    addr: IpAddr::V4(v4),
                    prefix: prefix.saturating_sub(96).min(32),
                };
            }
        }
        let max = if addr.is_ipv4() { 32 } else { 128 };
        Cidr {
            addr,
            prefix: prefix.min(max),
        }
    }

    /// Every IPv4 and IPv6 address.
    pub const ANY_V4: Cidr = Cidr {
        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        prefix: 0,
    };

    /// Every IPv6 address.
    pub const ANY_V6: Cidr = Cidr {
        addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        prefix: 0,
    };

    /// Does the network hold `ip`? An IPv4-mapped IPv6 address
    /// (`::ffff:a.b.c.d`) is matched as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                prefix_match(&net.octets(), &a.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                prefix_match(&net.octets(), &a.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address as IPv4; anything else unchanged.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

fn prefix_match(net: &[u8], addr: &[u8], prefix: u8) -> bool {
    let mut left = usize::from(prefix);
    for (n, a) in net.iter().zip(addr) {
        if left == 0 {
            return true;
        }
        let bits = left.min(8);
        let mask = (0xffu16 << 8usize.saturating_sub(bits)) as u8;
        if n & mask != a & mask {
            return false;
        }
        left = left.saturating_sub(bits);
    }
    true
}

/// The error from parsing a [`Cidr`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a network in CIDR form (ADDR or ADDR/PREFIX)")]
pub struct CidrError;

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDR/PREFIX`, or a bare address (a /32 or /128). A prefix longer
    /// than the address is an error.
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| CidrError)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().map_err(|_| CidrError)?,
            None => max,
        };
        if prefix > max {
            return Err(CidrError);
        }
        Ok(Cidr::new(addr, prefix))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One address rule: for the given uses, addresses in `net` with a port in
/// `ports` get `verdict`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddrRule {
    uses: u8,
    net: Cidr,
    ports: (u16, u16),
    verdict: Verdict,
}

impl AddrRule {
    /// A rule for `uses`, every port.
    pub fn new(verdict: Verdict, net: Cidr, uses: &[AddrUse]) -> AddrRule {
        AddrRule {
            uses: uses.iter().fold(0, |m, u| m | u.bit()),
            net,
            ports: (0, u16::MAX),
            verdict,
        }
    }

    /// Limits the rule to ports `lo..=hi`.
    pub fn ports(mut self, lo: u16, hi: u16) -> AddrRule {
        self.ports = (lo.min(hi), hi.max(lo));
        self
    }

    /// The verdict this rule gives when it matches.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Does the rule apply to this use of `addr`?
    pub fn matches(&self, usage: AddrUse, addr: SocketAddr) -> bool {
        self.uses & usage.bit() != 0
            && (self.ports.0..=self.ports.1).contains(&addr.port())
            && self.net.contains(addr.ip())
    }
}

impl fmt::Display for AddrRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.verdict {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        };
        write!(
            f,
            "{verdict} {} ports {}-{} for",
            self.net, self.ports.0, self.ports.1
        )?;
        for u in AddrUse::ALL {
            if self.uses & u.bit() != 0 {
                write!(f, " {u:?}")?;
            }
        }
        Ok(())
    }
}

impl From<IpAddr> for Cidr {
    /// The one-address network (/32 or /128).
    fn from(addr: IpAddr) -> Cidr {
        Cidr::new(addr, if addr.is_ipv4() { 32 } else { 128 })
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
    fn cidr_matching() {
        let n: Cidr = "169.254.0.0/16".parse().unwrap();
        assert!(n.contains("169.254.169.254".parse().unwrap()));
        assert!(n.contains("::ffff:169.254.1.1".parse().unwrap()));
        assert!(!n.contains("169.255.0.1".parse().unwrap()));
        let v6: Cidr = "fe80::/10".parse().unwrap();
        assert!(v6.contains("fe80::1".parse().unwrap()));
        assert!(v6.contains("febf::1".parse().unwrap()));
        assert!(!v6.contains("fec0::1".parse().unwrap()));
        assert!(Cidr::ANY_V4.contains("1.2.3.4".parse().unwrap()));
        assert!(!Cidr::ANY_V4.contains("::1".parse().unwrap()));
        let odd: Cidr = "10.0.0.0/9".parse().unwrap();
        assert!(odd.contains("10.127.0.1".parse().unwrap()));
        assert!(!odd.contains("10.128.0.1".parse().unwrap()));
        let mapped: Cidr = "::ffff:127.0.0.1/128".parse().unwrap();
        assert!(mapped.contains("127.0.0.1".parse().unwrap()));
        assert!(mapped.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!mapped.contains("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn rule_matching_by_use_and_port() {
        let r = AddrRule::new(
            Verdict::Deny,
            "127.0.0.0/8".parse().unwrap(),
            &[AddrUse::Bind],
        )
        .ports(1, 1023);
        assert!(r.matches(AddrUse::Bind, "127.0.0.1:80".parse().unwrap()));
        assert!(!r.matches(AddrUse::Bind, "127.0.0.1:0".parse().unwrap()));
        assert!(!r.matches(AddrUse::Connect, "127.0.0.1:80".parse().unwrap()));
    }

    #[test]
    fn bad_cidr_is_an_error() {
        assert!("1.2.3.4/x".parse::<Cidr>().is_err());
        assert!("nope/8".parse::<Cidr>().is_err());
        assert!("1.2.3.4/33".parse::<Cidr>().is_err());
    }
}
