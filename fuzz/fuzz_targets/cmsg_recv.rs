#![no_main]

use libfuzzer_sys::fuzz_target;

// See `hostsock_fuzz::checks::check_cmsg_recv` for the invariants.
fuzz_target!(|data: &[u8]| {
    hostsock_fuzz::checks::check_cmsg_recv(data);
});
