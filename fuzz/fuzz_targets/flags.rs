#![no_main]

use libfuzzer_sys::fuzz_target;

// See `hostsock_fuzz::checks::check_flags` for the invariants.
fuzz_target!(|data: &[u8]| {
    hostsock_fuzz::init();
    hostsock_fuzz::checks::check_flags(data);
});
