//! The seccomp BPF program: which system calls the supervisor serves.

/// `AUDIT_ARCH_X86_64` (linux/audit.h).
pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// Set in the number of x32 system calls; they have socket calls of their
/// own, so they must not slip past the filter.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `FIONBIO` (asm-generic/ioctls.h).
pub const FIONBIO: u32 = 0x5421;

/// The socket calls served by the supervisor: number, name, arity.
pub const SERVED: &[(i64, &str, usize)] = &[
    (libc::SYS_socket, "socket", 3),
    (libc::SYS_connect, "connect", 3),
    (libc::SYS_bind, "bind", 3),
    (libc::SYS_listen, "listen", 2),
    (libc::SYS_accept, "accept", 3),
    (libc::SYS_accept4, "accept4", 4),
    (libc::SYS_setsockopt, "setsockopt", 5),
    (libc::SYS_getsockopt, "getsockopt", 5),
    (libc::SYS_sendto, "sendto", 6),
    (libc::SYS_recvfrom, "recvfrom", 6),
    (libc::SYS_sendmsg, "sendmsg", 3),
    (libc::SYS_sendmmsg, "sendmmsg", 4),
    (libc::SYS_recvmsg, "recvmsg", 3),
    (libc::SYS_shutdown, "shutdown", 2),
];

/// A system call's name, for the audit lines.
pub fn name(nr: i64) -> &'static str {
    match nr {
        libc::SYS_fcntl => "fcntl",
        libc::SYS_ioctl => "ioctl",
        _ => SERVED
            .iter()
            .find(|(n, _, _)| *n == nr)
            .map_or("?", |(_, name, _)| name),
    }
}

/// How many arguments a served call has, for the audit lines.
pub fn arity(nr: i64) -> usize {
    SERVED
        .iter()
        .find(|(n, _, _)| *n == nr)
        .map_or(3, |(_, _, a)| *a)
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

const LD_ABS: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
const JGE: u32 = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
const RET: u32 = libc::BPF_RET | libc::BPF_K;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
/// The low 32 bits of the second argument (little-endian): `fcntl`'s and
/// `ioctl`'s command, which the kernel reads as an `unsigned int`.
const ARG1_LO: u32 = 16 + 8;

/// The program: a call from another architecture kills the process (its
/// numbers mean other calls); an x32 call and io_uring fail with `ENOSYS`;
/// the served
/// socket calls, `fcntl(F_GETFL/F_SETFL)` and `ioctl(FIONBIO)` go to the
/// supervisor (`SECCOMP_RET_USER_NOTIF`); everything else runs.
pub fn filter() -> Vec<libc::sock_filter> {
    let notify = libc::SECCOMP_RET_USER_NOTIF;
    let allow = libc::SECCOMP_RET_ALLOW;
    let mut p = vec![
        stmt(LD_ABS, ARCH),
        jump(JEQ, AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(LD_ABS, NR),
        jump(JGE, X32_SYSCALL_BIT, 0, 1),
        stmt(RET, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ];
    // io_uring runs socket operations (connect, accept, sendmsg, socket)
    // without system calls the filter would see: refuse it, as if the
    // kernel had none (programs fall back to plain calls).
    for nr in [
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ] {
        p.push(jump(JEQ, nr as u32, 0, 1));
        p.push(stmt(RET, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    }
    for &(nr, _, _) in SERVED {
        p.push(jump(JEQ, nr as u32, 0, 1));
        p.push(stmt(RET, notify));
    }
    // fcntl: only F_GETFL and F_SETFL (the guest's view of O_NONBLOCK).
    p.push(jump(JEQ, libc::SYS_fcntl as u32, 0, 5));
    p.push(stmt(LD_ABS, ARG1_LO));
    p.push(jump(JEQ, libc::F_GETFL as u32, 2, 0));
    p.push(jump(JEQ, libc::F_SETFL as u32, 1, 0));
    p.push(stmt(RET, allow));
    p.push(stmt(RET, notify));
    // ioctl: only FIONBIO. (The accumulator still holds the number here:
    // only the fcntl branch above loaded another word.)
    p.push(jump(JEQ, libc::SYS_ioctl as u32, 0, 4));
    p.push(stmt(LD_ABS, ARG1_LO));
    p.push(jump(JEQ, FIONBIO, 1, 0));
    p.push(stmt(RET, allow));
    p.push(stmt(RET, notify));
    p.push(stmt(RET, allow));
    p
}
