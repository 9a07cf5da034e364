//! Event-name validation against the naive reference.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/nerve-core/tests/fuzz/check.rs"]
#[allow(dead_code, reason = "the test's helpers this target does not use")]
mod check;

fuzz_target!(|data: &[u8]| {
    check::name(&String::from_utf8_lossy(data));
});
