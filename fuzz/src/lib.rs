//! Shared code of the hostsock fuzz targets: the invariants
//! ([`checks`], also compiled into `tests/fuzz_twins.rs` on stable) and
//! the entry into a private network namespace for the targets that use
//! real sockets.

pub mod checks;

use std::sync::Once;

/// Once per process: when running as root outside a private network
/// namespace, moves this thread into a fresh one (`unshare(CLONE_NEWNET)`)
/// and brings its loopback up, so that nothing a fuzz input does can reach
/// a real network. Without root, the checks force every address onto
/// loopback instead (see `checks::loopback_only`). Each fuzz target runs
/// its inputs on the thread that called this (libFuzzer's main thread).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if checks::private_netns() {
            return;
        }
        let root = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .map(|l| l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false);
        if !root {
            eprintln!("hostsock-fuzz: not root; addresses are forced onto loopback");
            return;
        }
        // SAFETY: unshare takes no pointers; CLONE_NEWNET only changes the
        // calling thread's network namespace (allowed in a multi-threaded
        // process), and every socket of the checks is made on this thread.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        // A child forked from this thread inherits its namespace.
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("running ip");
        assert!(up.success(), "ip link set lo up");
        assert!(checks::private_netns());
        eprintln!("hostsock-fuzz: running in a private network namespace");
    });
}
