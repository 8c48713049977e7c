//! Runs an unmodified Linux program with its socket calls served through
//! `hostsock::raw` under a policy, by seccomp user notification.
//!
//! ```text
//! cargo run --example sandbox -- [--preset default|sandbox|gvisor] \
//!     [--allow CIDR[:PORTS]]... [--deny CIDR[:PORTS]]... [--default allow|deny] \
//!     -- PROGRAM ARGS...
//! ```
//!
//! For example `cargo run --example sandbox -- --deny 127.0.0.1:8000 -- curl
//! http://127.0.0.1:8000/` fails with "Connection refused" (curl exit 7)
//! and prints one audit line, without a SYN ever leaving the host.
//!
//! The child sets `PR_SET_NO_NEW_PRIVS` (no root needed), installs a filter
//! that sends socket, connect, bind, listen, accept, accept4, setsockopt,
//! getsockopt, sendto, recvfrom, sendmsg, sendmmsg, recvmsg, shutdown,
//! `fcntl(F_GETFL/F_SETFL)` and `ioctl(FIONBIO)` to this supervisor
//! (`SECCOMP_RET_USER_NOTIF`), refuses io_uring (`ENOSYS`), hands the
//! listener over, and execs the program. The supervisor serves each
//! notification in its own tokio task, so a blocking connect, accept or
//! receive holds up nothing else. See
//! `serve.rs` for how sockets move between the guest and the raw layer,
//! and the README section for what stays in the kernel.
//!
//! x86_64 Linux only (the filter checks `AUDIT_ARCH_X86_64`).

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod args;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod guest_mem;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod msg;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod seccomp;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod serve;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod sys;

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {
    eprintln!("sandbox: this example runs on x86_64 Linux only");
    std::process::exit(125);
}

/// Exit status when seccomp user notification cannot be set up.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
const UNAVAILABLE: i32 = 125;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn main() {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("sandbox: {msg}");
            }
            eprintln!("{}", args::USAGE);
            std::process::exit(2);
        }
    };
    let policy = match args.policy() {
        Ok(b) => b.audit(audit).build(),
        Err(msg) => {
            eprintln!("sandbox: {msg}\n{}", args::USAGE);
            std::process::exit(2);
        }
    };
    // One thread: every call is a task, so blocking calls still interleave,
    // and no task hops between threads (about half the latency of a
    // two-worker runtime here).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let code = rt.block_on(run(args, std::sync::Arc::new(policy)));
    // Calls of guest processes that outlive the program are abandoned:
    // with the listener closed they fail with ENOSYS.
    rt.shutdown_background();
    std::process::exit(code);
}

/// The audit hook: one line per denial, with the program, the call and
/// its raw arguments, and the rule.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn audit(event: &hostsock::policy::AuditEvent<'_>) {
    let shown = serve::CALL.try_with(|c| {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", c.tid)).unwrap_or_default();
        let arity = seccomp::arity(c.nr);
        let args: Vec<String> = c.args[..arity]
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if i == 0 {
                    (*a as u32 as i32).to_string()
                } else if *a < 0x10000 {
                    a.to_string()
                } else {
                    format!("{a:#x}")
                }
            })
            .collect();
        eprintln!(
            "sandbox: audit: {}[{}] {}({}): {}",
            comm.trim_end(),
            c.tid,
            seccomp::name(c.nr),
            args.join(", "),
            event.denial
        );
    });
    if shown.is_err() {
        eprintln!("sandbox: audit: {}", event.denial);
    }
}

/// Takes the listener from the child: reads its pid and the listener's
/// number from `report`, copies the descriptor with `pidfd_getfd`, and
/// lets the child go on by writing to `ack`. `Ok(None)`: the child never
/// reported (its filter could not be installed).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn take_listener(
    report: std::os::fd::OwnedFd,
    ack: std::os::fd::OwnedFd,
) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    let mut report = std::fs::File::from(report);
    let mut msg = [0u8; 8];
    match report.read_exact(&mut msg) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let pid = u32::from_ne_bytes(msg[..4].try_into().expect("4 bytes"));
    let fd = i32::from_ne_bytes(msg[4..].try_into().expect("4 bytes"));
    let pidfd = sys::pidfd_open(pid)?;
    let listener = sys::pidfd_getfd(pidfd.as_fd(), fd)?;
    std::fs::File::from(ack).write_all(&[1])?;
    Ok(Some(listener))
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
async fn run(args: args::Args, policy: std::sync::Arc<hostsock::Policy>) -> i32 {
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::process::ExitStatusExt;
    use std::sync::Arc;

    let pipes = sys::pipe().and_then(|r| Ok((r, sys::pipe()?)));
    let ((report_r, report_w), (ack_r, ack_w)) = match pipes {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sandbox: pipe: {e}");
            return UNAVAILABLE;
        }
    };
    let mut cmd = tokio::process::Command::new(&args.program);
    cmd.args(&args.args);
    sys::filter_before_exec(
        cmd.as_std_mut(),
        seccomp::filter(),
        report_w.as_raw_fd(),
        ack_r.as_raw_fd(),
    );
    let taker = std::thread::spawn(move || take_listener(report_r, ack_w));
    let spawned = cmd.spawn();
    // The child has its copies (or is gone): a child that never reports
    // now ends the taker's read.
    drop((report_w, ack_r));
    let taken = taker.join().expect("the listener thread does not panic");
    let mut child = match (spawned, taken) {
        (Ok(child), Ok(Some(listener))) => (child, listener),
        (Err(e), Ok(None)) | (Ok(_), Err(e)) | (Err(_), Err(e)) => {
            eprintln!("sandbox: seccomp user notification is not available here: {e}");
            return UNAVAILABLE;
        }
        (Ok(_), Ok(None)) => {
            eprintln!("sandbox: the child did not hand over its seccomp listener");
            return UNAVAILABLE;
        }
        (Err(e), Ok(Some(_))) => {
            eprintln!("sandbox: cannot run {}: {e}", args.program);
            return 127;
        }
    };
    let listener = match sys::register_listener(child.1) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sandbox: cannot register the listener: {e}");
            return UNAVAILABLE;
        }
    };
    let sup = Arc::new(serve::Supervisor::new(listener, policy));
    let mut listening = true;
    let status = loop {
        tokio::select! {
            status = child.0.wait() => break status,
            ready = sup.notify_fd().readable(), if listening => {
                let Ok(mut guard) = ready else {
                    listening = false;
                    continue;
                };
                let fd = sup.notify_fd().get_ref().as_fd();
                match sys::poll_now(fd) {
                    Ok((true, _)) => match sys::notif_recv(fd) {
                        Ok(n) => {
                            tokio::spawn(serve::serve(sup.clone(), n));
                        }
                        // The caller was interrupted before we took it.
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                        Err(e) => {
                            eprintln!("sandbox: SECCOMP_IOCTL_NOTIF_RECV: {e}");
                            listening = false;
                        }
                    },
                    // No process uses the filter any more.
                    Ok((false, true)) => listening = false,
                    Ok((false, false)) => guard.clear_ready(),
                    Err(e) => {
                        eprintln!("sandbox: poll: {e}");
                        listening = false;
                    }
                }
            }
        }
    };
    match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(e) => {
            eprintln!("sandbox: wait: {e}");
            1
        }
    }
}
