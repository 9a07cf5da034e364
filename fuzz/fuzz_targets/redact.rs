//! The default redactor: never panics, idempotent, JSON text stays JSON.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use nerve_core::redact::Redactor;

#[path = "../../crates/nerve-core/tests/fuzz/check.rs"]
#[allow(dead_code, reason = "the test's helpers this target does not use")]
mod check;

static REDACTOR: LazyLock<Redactor> = LazyLock::new(Redactor::default);

fuzz_target!(|data: &[u8]| {
    // Bounded, so that a run measures breadth, not one huge input.
    if data.len() > 64 * 1024 {
        return;
    }
    check::redact(&REDACTOR, &String::from_utf8_lossy(data));
});
