//! The checks that make up `cargo xtask ci`, each also runnable alone.

use anyhow::Result;

use crate::cargo::Cargo;
use crate::{deny, features, loom, soak, tidy};

/// One check, run alone as `cargo xtask <name>` or as part of `ci`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// `cargo fmt --all --check`.
    Fmt,
    /// Clippy on every target and feature, warnings denied. Every target
    /// includes the benches, so this is also the check that every benchmark
    /// still compiles (type-checked, not linked: cheap; `cargo xtask bench`
    /// builds them for real).
    Clippy,
    /// Unit, integration and example tests, with nextest when installed.
    Test,
    /// Doctests, which nextest does not run.
    Doctest,
    /// Rustdoc with warnings denied, so broken intra-doc links fail.
    Doc,
    /// Every publishable crate builds and passes its unit tests with no
    /// default features and with each feature alone; see [`features`].
    Features,
    /// Project conventions no compiler checks; see [`tidy`].
    Tidy,
    /// Licenses and duplicate crates with cargo-deny; see [`deny`].
    Deny,
    /// Every feature of the bus at full rate for one minute, then memory,
    /// accounting, journal and leak checks; see [`soak`].
    Soak,
    /// The loom models at a small preemption bound; see [`loom`].
    LoomCi,
}

impl Step {
    /// Every step, in the order `ci` runs them.
    pub(crate) const ALL: [Step; 10] = [
        Step::Fmt,
        Step::Clippy,
        Step::Test,
        Step::Doctest,
        Step::Doc,
        Step::Features,
        Step::Tidy,
        Step::Deny,
        Step::LoomCi,
        Step::Soak,
    ];

    /// The subcommand name, as typed after `cargo xtask`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Step::Fmt => "fmt",
            Step::Clippy => "clippy",
            Step::Test => "test",
            Step::Doctest => "doctest",
            Step::Doc => "doc",
            Step::Features => "features",
            Step::Tidy => "tidy",
            Step::Deny => "deny",
            Step::Soak => "soak",
            Step::LoomCi => "loom-ci",
        }
    }

    /// A one-line description for the help and the step header.
    pub(crate) fn about(self) -> &'static str {
        match self {
            Step::Fmt => "Check formatting (cargo fmt --all --check)",
            Step::Clippy => {
                "Lint every target (benches included: they must compile) and feature, warnings denied"
            }
            Step::Test => "Run the tests (cargo nextest if installed, else cargo test)",
            Step::Doctest => "Run the doctests",
            Step::Doc => "Build the docs with warnings denied",
            Step::Features => {
                "Build and unit-test every publishable crate with no default features and each feature alone"
            }
            Step::Tidy => {
                "Check project conventions (lints, leftovers, crate docs, layering, crate metadata, changelog, readme)"
            }
            Step::Deny => {
                "Check licenses and duplicate crates with cargo-deny (advisories when online)"
            }
            Step::Soak => {
                "Soak every feature at full rate for 1 minute; check memory, accounting, journal, leaks"
            }
            Step::LoomCi => "Run the loom models at preemption bound 1 (own target dir)",
        }
    }

    /// The step called `name`, if there is one.
    pub(crate) fn from_name(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|step| step.name() == name)
    }

    /// Runs the step.
    ///
    /// # Errors
    ///
    /// When the check fails or its tool cannot be started.
    pub(crate) fn run(self) -> Result<()> {
        match self {
            Step::Fmt => Cargo::new(["fmt", "--all", "--check"]).run(),
            Step::Clippy => clippy().run(),
            Step::Test => test(),
            Step::Doctest => Cargo::new(["test", "--workspace", "--all-features", "--doc"]).run(),
            Step::Doc => Cargo::new(["doc", "--workspace", "--no-deps", "--all-features"])
                .env("RUSTDOCFLAGS", "-D warnings")
                .run(),
            Step::Features => features::check(),
            Step::Tidy => tidy::check(),
            Step::Deny => deny::check(),
            Step::Soak => soak::run(&soak::Options::default()),
            Step::LoomCi => loom::ci().run(),
        }
    }
}

/// Clippy over the workspace. `--all-targets` takes in every bench (and
/// test and example) with `--all-features` meeting their
/// `required-features`, so a bench that stops compiling fails CI here.
fn clippy() -> Cargo {
    Cargo::new([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])
}

/// Runs the tests with nextest when it is installed, else with `cargo test` on
/// the same targets. Neither runs doctests; [`Step::Doctest`] does.
fn test() -> Result<()> {
    if Cargo::new(["nextest", "--version"]).succeeds_quietly() {
        // `--no-tests=warn`: a workspace without tests yet is not a failure,
        // matching what `cargo test` does.
        Cargo::new([
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
            "--no-tests=warn",
        ])
        .run()
    } else {
        println!("xtask: cargo-nextest not found, falling back to cargo test");
        Cargo::new([
            "test",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
            "--lib",
            "--bins",
            "--tests",
            "--examples",
        ])
        .run()
    }
}

/// Unit tests for step names.
#[cfg(test)]
mod tests {
    use super::*;

    /// Every step can be found by its own name, and names are unique.
    #[test]
    fn names_round_trip() {
        for step in Step::ALL {
            assert_eq!(Step::from_name(step.name()), Some(step));
        }
        assert_eq!(Step::from_name("ci"), None);
    }

    /// The clippy step is the one that checks that every bench compiles:
    /// it must keep covering all targets.
    #[test]
    fn clippy_checks_the_benches() {
        let line = clippy().to_string();
        assert!(line.contains("--all-targets"), "{line}");
        assert!(line.contains("--all-features"), "{line}");
    }
}
