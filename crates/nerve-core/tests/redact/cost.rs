//! Every detector is linear in its input: each of the worst shapes found
//! (`shapes.rs`), 64 KiB long, is redacted within a bound generous enough
//! to hold on a loaded machine in a debug build, and far below what a
//! quadratic detector takes (the email detector took 222 ms in release on
//! 64 KiB of short addresses before it was made linear; seconds in debug).
//! The release figures are in `docs/benchmarks.md` (`worst/*`).

use std::time::{Duration, Instant};

use super::ALL;
use super::shapes::{LINE_LEN, shapes};

/// The bound per 64 KiB line: generous, so that the test stays
/// deterministic; a timing target lives in the benchmark, not here.
fn bound() -> Duration {
    if cfg!(debug_assertions) {
        Duration::from_millis(3_000)
    } else {
        Duration::from_millis(100)
    }
}

#[test]
fn every_worst_shape_costs_time_linear_in_its_length() {
    let mut slowest = (Duration::ZERO, "");
    for (name, line) in shapes() {
        assert!(
            line.len() <= LINE_LEN && line.len() > LINE_LEN - 64,
            "{name}"
        );
        let start = Instant::now();
        let out = ALL.redact_str(&line);
        let took = start.elapsed();
        assert!(
            took < bound(),
            "{name}: {took:?} for {} bytes (bound {:?})",
            line.len(),
            bound()
        );
        assert_eq!(ALL.redact_str(&out), out, "{name}: not idempotent");
        slowest = slowest.max((took, name));
    }
    eprintln!("slowest shape: {} in {:?}", slowest.1, slowest.0);
}
