#![no_main]

use libfuzzer_sys::fuzz_target;

// See `hostsock_fuzz::checks::check_sockaddr_sockets` for the invariants.
fuzz_target!(|data: &[u8]| {
    hostsock_fuzz::init();
    hostsock_fuzz::checks::check_sockaddr_sockets(data);
});
