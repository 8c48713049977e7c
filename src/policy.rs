//! `Policy`: what may reach the kernel.
//!
//! Every socket carries an `Arc<Policy>` from its creation, and an accepted
//! socket inherits its listener's. The foundation's policy allows everything
//! (a server embedding the crate should not be surprised); the option
//! allowlist, flag masks, control-message allowlist and address rules of
//! SPEC.md fill this type in without changing how sockets carry it.

use std::sync::{Arc, OnceLock};

/// The rules a socket's calls are checked against before they reach the
/// kernel.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use hostsock::{Policy, UdpSocket};
///
/// #[tokio::main]
/// async fn main() -> hostsock::Result<()> {
///     let policy = Arc::new(Policy::allow_all());
///     let sock = UdpSocket::bind_with_policy("127.0.0.1:0", policy.clone()).await?;
///     assert!(Arc::ptr_eq(sock.policy(), &policy));
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {}

impl Policy {
    /// A policy that lets every call through to the kernel.
    pub fn allow_all() -> Policy {
        Policy {}
    }

    /// The process-wide default policy, shared by every socket made without
    /// an explicit one. Cloning the `Arc` costs an atomic increment, no
    /// allocation.
    pub fn shared_default() -> Arc<Policy> {
        static DEFAULT: OnceLock<Arc<Policy>> = OnceLock::new();
        DEFAULT.get_or_init(|| Arc::new(Policy::default())).clone()
    }
}
