//! `cargo xtask loom`: the `loom` models of the hand-written concurrency
//! (the router's queue and route table, the journal's writer hand-off),
//! every test named `loom_*` in the libraries built with `--cfg nerve_loom`.
//!
//! The models build into a target directory of their own, `target/loom`
//! (the cfg changes every crate's build), so running them never invalidates
//! the normal build. `cargo xtask loom` runs them in full, optimized; CI's
//! `loom-ci` step runs the same models with a preemption bound of one and
//! the dev profile, whose build is the larger part of its time.

use anyhow::Result;

use crate::cargo::Cargo;

/// The usage line of the command.
pub(crate) const USAGE: &str =
    "  loom      Run every loom model in full (release; LOOM_MAX_PREEMPTIONS, default 2)\n";

/// The crates whose libraries hold `loom_*` models.
const CRATES: [&str; 2] = ["nerve-router", "nerve-journal"];

/// The preemption bound of `cargo xtask loom` when `LOOM_MAX_PREEMPTIONS` is
/// not set. Bound 3 took over 15 minutes for one model on 2 cores.
const FULL_PREEMPTIONS: &str = "2";

/// CI's preemption bound: every model still runs each thread against every
/// other at one preemption, which is where lost wake-ups and the eviction
/// overshoot were found.
const CI_PREEMPTIONS: &str = "1";

/// The models' own target directory, under the workspace's.
const TARGET_DIR: &str = "target/loom";

/// `cargo test` of the models: `release` or not, with `preemptions` when
/// given (else the caller's `LOOM_MAX_PREEMPTIONS` or the models' default).
fn models(release: bool, preemptions: Option<&str>) -> Cargo {
    let mut args = vec!["test".to_owned()];
    for krate in CRATES {
        args.extend(["-p".to_owned(), krate.to_owned()]);
    }
    args.push("--lib".to_owned());
    if release {
        args.push("--release".to_owned());
    }
    // The models print their interleavings and time.
    args.extend(["loom_", "--", "--nocapture"].map(str::to_owned));
    let mut cargo = Cargo::new(args)
        .env("RUSTFLAGS", "--cfg nerve_loom")
        .env("CARGO_TARGET_DIR", TARGET_DIR);
    if let Some(bound) = preemptions {
        cargo = cargo.env("LOOM_MAX_PREEMPTIONS", bound);
    }
    cargo
}

/// `cargo xtask loom`: every model, optimized, the full bound unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise.
pub(crate) fn full() -> Cargo {
    let bound = std::env::var("LOOM_MAX_PREEMPTIONS").ok();
    models(true, Some(bound.as_deref().unwrap_or(FULL_PREEMPTIONS)))
}

/// CI's `loom-ci` step: every model at the small bound, dev profile.
pub(crate) fn ci() -> Cargo {
    models(false, Some(CI_PREEMPTIONS))
}

/// Runs `cargo xtask loom`.
///
/// # Errors
///
/// When a model fails or cargo cannot be started.
pub(crate) fn run() -> Result<()> {
    full().run()
}

/// Unit tests for the command lines.
#[cfg(test)]
mod tests {
    use super::*;

    /// Both runs build with the cfg, in their own target directory, and
    /// take every `loom_` test of both crates.
    #[test]
    fn runs_every_model_in_its_own_target() {
        for cargo in [full(), ci()] {
            let line = cargo.to_string();
            assert!(line.contains("RUSTFLAGS=\"--cfg nerve_loom\""), "{line}");
            assert!(line.contains("CARGO_TARGET_DIR=target/loom"), "{line}");
            assert!(
                line.contains("-p nerve-router -p nerve-journal --lib"),
                "{line}"
            );
            assert!(line.contains(" loom_ "), "{line}");
        }
        assert!(ci().to_string().contains("LOOM_MAX_PREEMPTIONS=1 "));
        assert!(!ci().to_string().contains("--release"));
    }
}
