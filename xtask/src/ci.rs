//! `cargo xtask ci`: every step in order, timed, stopping at the first failure.

use std::fmt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cargo::{build_without_incremental, target_dir};
use crate::disk::{self, Usage};
use crate::step::Step;

/// How one step of a `ci` run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The step ran and passed, taking this long.
    Passed(Duration),
    /// The step ran and failed, taking this long.
    Failed(Duration),
    /// An earlier step failed, so this one did not run.
    Skipped,
}

/// Runs every step in [`Step::ALL`], printing a header and the elapsed time
/// for each, with the target directory's weight and the disk's free space
/// (see [`disk`]), then a table of timings.
///
/// The last line printed is always `xtask: N passed, M failed`; CI harnesses
/// read it, so its wording is fixed.
pub(crate) fn run() -> ExitCode {
    let total = Step::ALL.len();
    if build_without_incremental() {
        println!(
            "xtask: building without incremental compilation (CARGO_INCREMENTAL=0; set CARGO_INCREMENTAL to choose)"
        );
    }
    let target = target_dir();
    let usage = Usage::of(&target);
    println!("xtask: before the first step: {usage}");
    if let Some(warning) = disk::shortfall(usage) {
        eprintln!("xtask: warning: {warning}");
    }
    let mut outcomes = Vec::with_capacity(total);
    for (index, step) in Step::ALL.into_iter().enumerate() {
        if outcomes
            .iter()
            .any(|(_, outcome)| matches!(outcome, Outcome::Failed(_)))
        {
            outcomes.push((step, Outcome::Skipped));
            continue;
        }
        println!(
            "\n==> [{}/{total}] {}: {}",
            index + 1,
            step.name(),
            step.about()
        );
        let start = Instant::now();
        let result = step.run();
        let elapsed = start.elapsed();
        let usage = Usage::of(&target);
        match result {
            Ok(()) => {
                println!(
                    "==> {} passed in {} ({usage})",
                    step.name(),
                    Elapsed(elapsed)
                );
                outcomes.push((step, Outcome::Passed(elapsed)));
            }
            Err(err) => {
                eprintln!(
                    "xtask: ci stopped: step `{}` failed after {} ({usage}): {err:#}",
                    step.name(),
                    Elapsed(elapsed)
                );
                outcomes.push((step, Outcome::Failed(elapsed)));
            }
        }
    }
    print_summary(&outcomes);
    let passed = count(&outcomes, |outcome| matches!(outcome, Outcome::Passed(_)));
    let failed = count(&outcomes, |outcome| matches!(outcome, Outcome::Failed(_)));
    println!("xtask: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints one line per step with its time and outcome, then the total.
fn print_summary(outcomes: &[(Step, Outcome)]) {
    println!("\n==> summary");
    let mut total = Duration::ZERO;
    for (step, outcome) in outcomes {
        let (elapsed, word) = match *outcome {
            Outcome::Passed(elapsed) => (Some(elapsed), "passed"),
            Outcome::Failed(elapsed) => (Some(elapsed), "FAILED"),
            Outcome::Skipped => (None, "skipped"),
        };
        total += elapsed.unwrap_or_default();
        let time = elapsed
            .map(|elapsed| Elapsed(elapsed).to_string())
            .unwrap_or_default();
        println!("    {:<10}{time:>8}  {word}", step.name());
    }
    println!("    {:<10}{:>8}", "total", Elapsed(total).to_string());
}

/// How many outcomes match.
fn count(outcomes: &[(Step, Outcome)], matches: impl Fn(&Outcome) -> bool) -> usize {
    outcomes
        .iter()
        .filter(|(_, outcome)| matches(outcome))
        .count()
}

/// A duration shown the way a person reads a build log: `4.2s`, `2m 05s`.
struct Elapsed(Duration);

impl fmt::Display for Elapsed {
    /// Formats seconds with one decimal under a minute, whole seconds above.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        if secs < 60 {
            write!(f, "{:.1}s", self.0.as_secs_f64())
        } else {
            write!(f, "{}m {:02}s", secs / 60, secs % 60)
        }
    }
}

/// Unit tests for the timing display.
#[cfg(test)]
mod tests {
    use super::*;

    /// Short steps show tenths, long ones minutes and seconds.
    #[test]
    fn formats_elapsed_time() {
        let check = |millis, expected: &str| {
            assert_eq!(Elapsed(Duration::from_millis(millis)).to_string(), expected);
        };
        check(0, "0.0s");
        check(4_249, "4.2s");
        check(59_900, "59.9s");
        check(125_000, "2m 05s");
    }
}
