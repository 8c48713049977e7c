//! The command line.

use hostsock::Policy;
use hostsock::policy::{AddrRule, AddrUse, Cidr, Verdict};

pub const USAGE: &str =
    "usage: sandbox [--preset default|sandbox|gvisor] [--allow CIDR[:PORTS]]... \
[--deny CIDR[:PORTS]]... [--default allow|deny] -- PROGRAM ARGS...
  CIDR is ADDR or ADDR/PREFIX (IPv6 with ports in brackets: [::1]:80, [fe80::/10]:1-1023);
  PORTS is N or N-M. Rules apply to every use (bind, connect, send, accepted peer,
  IP_PKTINFO source), in order, after the preset's own rules; the first match wins.";

/// What to run and under which policy.
#[derive(Debug)]
pub struct Args {
    pub preset: String,
    pub rules: Vec<AddrRule>,
    pub default: Verdict,
    pub program: String,
    pub args: Vec<String>,
}

impl Args {
    /// The policy: the preset, then the rules, then the default verdict.
    pub fn policy(&self) -> Result<hostsock::policy::PolicyBuilder, String> {
        let base = match self.preset.as_str() {
            "default" => Policy::default(),
            "sandbox" => Policy::sandbox(),
            "gvisor" => Policy::gvisor_compat(),
            other => return Err(format!("unknown preset {other:?}")),
        };
        let mut b = Policy::builder_from(base);
        for r in &self.rules {
            b = b.addr_rule(*r);
        }
        Ok(b.default_verdict(self.default))
    }
}

/// Parses `CIDR[:PORTS]`.
pub fn rule(verdict: Verdict, s: &str) -> Result<AddrRule, String> {
    let bad = || format!("not CIDR[:PORTS]: {s:?}");
    let (net, ports) = if let Some(rest) = s.strip_prefix('[') {
        let (net, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (net, None),
            _ => (net, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else if s.matches(':').count() > 1 {
        (s, None)
    } else {
        match s.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (s, None),
        }
    };
    let net: Cidr = net.parse().map_err(|_| bad())?;
    let rule = AddrRule::new(verdict, net, &AddrUse::ALL);
    let Some(ports) = ports else {
        return Ok(rule);
    };
    let (lo, hi) = ports.split_once('-').unwrap_or((ports, ports));
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    Ok(rule.ports(lo, hi))
}

/// Parses the arguments after the program name.
pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        preset: "default".into(),
        rules: Vec::new(),
        default: Verdict::Allow,
        program: String::new(),
        args: Vec::new(),
    };
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--preset" => args.preset = value()?,
            "--allow" => args.rules.push(rule(Verdict::Allow, &value()?)?),
            "--deny" => args.rules.push(rule(Verdict::Deny, &value()?)?),
            "--default" => {
                args.default = match value()?.as_str() {
                    "allow" => Verdict::Allow,
                    "deny" => Verdict::Deny,
                    other => return Err(format!("--default allow|deny, not {other:?}")),
                }
            }
            "--" => {
                args.program = it.next().ok_or("no PROGRAM after --")?;
                args.args = it.collect();
                return Ok(args);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Err("no -- PROGRAM".into())
}
