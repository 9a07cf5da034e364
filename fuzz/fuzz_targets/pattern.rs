//! Pattern parsing and matching against the naive reference: the first line
//! of the input is the pattern, the others are event names.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/nerve-core/tests/fuzz/check.rs"]
#[allow(dead_code, reason = "the test's helpers this target does not use")]
mod check;

fuzz_target!(|data: &[u8]| {
    check::pattern_bytes(data);
});
