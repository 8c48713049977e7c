#![no_main]

use libfuzzer_sys::fuzz_target;

// See `hostsock_fuzz::checks::check_cmsg_send` for the invariants.
fuzz_target!(|data: &[u8]| {
    hostsock_fuzz::init();
    hostsock_fuzz::checks::check_cmsg_send(data);
});
