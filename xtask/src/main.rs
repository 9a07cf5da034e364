//! `cargo xtask`: the project's checks, written in Rust so that CI and
//! contributors run exactly the same commands.
//!
//! `cargo xtask ci` is what CI runs; every step it runs can also be run alone.
//! `cargo xtask bench` runs the benchmarks and regenerates their page.
//! `cargo xtask soak --minutes N` runs every feature at full rate for N minutes.
//! `cargo xtask fuzz` runs the cargo-fuzz targets (not part of `ci`).
//! `cargo xtask loom` runs the loom models in full.
//! `cargo xtask screenshot` regenerates the README's picture of the dashboard.
//! `cargo xtask release <VERSION> [--dry-run]` prepares a release (commit
//! and tag); `cargo xtask publish` publishes it.
//! `cargo xtask nats` runs the heavy NATS tests (cluster failover) in full.
//! See `cargo xtask --help`.

mod bench;
mod cargo;
mod ci;
mod deny;
mod disk;
mod features;
#[cfg(test)]
mod fixture;
mod fuzz;
mod git;
mod loom;
mod metadata;
mod nats;
mod publish;
mod release;
#[cfg(test)]
mod scratch;
mod screenshot;
mod soak;
mod step;
mod tidy;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::step::Step;

/// What the command line asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Command {
    /// Print the usage text.
    Help,
    /// Run every step in order.
    Ci,
    /// Run one step alone.
    Step(Step),
    /// Run the benchmarks and regenerate their page and charts.
    Bench(bench::Options),
    /// Run the soak for as long as asked.
    Soak(soak::Options),
    /// Run the cargo-fuzz targets for a while each.
    Fuzz(fuzz::Options),
    /// Run every loom model in full.
    Loom,
    /// Regenerate the README's screenshot of the dashboard.
    Screenshot,
    /// Prepare a release: bump, checks, packages, commit and tag.
    Release(release::Options),
    /// Publish the tagged release.
    Publish(publish::Options),
    /// Run the heavy NATS tests in full.
    Nats,
}

/// Runs the command, printing any error as one line.
fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the arguments and dispatches to the command.
fn run() -> Result<ExitCode> {
    let Some(command) = parse(std::env::args().skip(1))? else {
        // A bare `cargo xtask` is more likely a mistake than a request for help,
        // so it must not look like a passing check.
        eprint!("{}", usage());
        return Ok(ExitCode::from(2));
    };
    match command {
        Command::Help => print!("{}", usage()),
        Command::Ci => return Ok(ci::run()),
        Command::Step(step) => step
            .run()
            .with_context(|| format!("{} failed", step.name()))?,
        Command::Bench(options) => bench::run(&options).context("bench failed")?,
        Command::Soak(options) => soak::run(&options).context("soak failed")?,
        Command::Fuzz(options) => fuzz::run(&options).context("fuzz failed")?,
        Command::Loom => loom::run().context("loom failed")?,
        Command::Screenshot => screenshot::run().context("screenshot failed")?,
        Command::Release(options) => release::run(&options).context("release failed")?,
        Command::Publish(options) => publish::run(&options).context("publish failed")?,
        Command::Nats => nats::run().context("nats failed")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the command from the arguments after the program name; `None` when
/// there are none.
fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Command>> {
    let Some(first) = args.next() else {
        return Ok(None);
    };
    let command = match first.as_str() {
        "bench" => return Ok(Some(Command::Bench(bench::parse(args)?))),
        "soak" => return Ok(Some(Command::Soak(soak::parse(args)?))),
        "fuzz" => return Ok(Some(Command::Fuzz(fuzz::parse(args)?))),
        "release" => return Ok(Some(Command::Release(release::parse(args)?))),
        "publish" => return Ok(Some(Command::Publish(publish::parse(args)?))),
        "-h" | "--help" | "help" => Command::Help,
        "ci" => Command::Ci,
        "loom" => Command::Loom,
        "screenshot" => Command::Screenshot,
        "nats" => Command::Nats,
        name => match Step::from_name(name) {
            Some(step) => Command::Step(step),
            None => bail!("unknown command `{name}`, see `cargo xtask --help`"),
        },
    };
    if let Some(extra) = args.next() {
        bail!("unexpected argument `{extra}` after `{first}`, see `cargo xtask --help`");
    }
    Ok(Some(command))
}

/// The text printed by `cargo xtask --help`, listing every command.
fn usage() -> String {
    let mut text = String::from(
        "Checks for the nerve workspace.\n\nUsage: cargo xtask <COMMAND>\n\nCommands:\n",
    );
    let mut line = |name: &str, about: &str| text.push_str(&format!("  {name:<10}{about}\n"));
    line(
        "ci",
        "Run every step below in order, stopping at the first failure",
    );
    for step in Step::ALL {
        line(step.name(), step.about());
    }
    line("help", "Print this help (also -h, --help)");
    text.push_str(bench::USAGE);
    text.push_str(soak::USAGE);
    text.push_str(fuzz::USAGE);
    text.push_str(loom::USAGE);
    text.push_str(screenshot::USAGE);
    text.push_str(release::USAGE);
    text.push_str(publish::USAGE);
    text.push_str(nats::USAGE);
    text
}

/// Unit tests for argument parsing.
#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `args` as if they followed `cargo xtask`.
    fn check(args: &[&str], expected: Option<Command>) {
        let parsed = parse(args.iter().map(|arg| arg.to_string())).unwrap();
        assert_eq!(parsed, expected, "args: {args:?}");
    }

    /// Every documented spelling reaches its command.
    #[test]
    fn parses_commands() {
        check(&[], None);
        check(&["--help"], Some(Command::Help));
        check(&["-h"], Some(Command::Help));
        check(&["ci"], Some(Command::Ci));
        check(&["fmt"], Some(Command::Step(Step::Fmt)));
        check(&["tidy"], Some(Command::Step(Step::Tidy)));
        check(&["loom"], Some(Command::Loom));
        check(&["deny"], Some(Command::Step(Step::Deny)));
        check(
            &["release", "0.2.0", "--dry-run"],
            Some(Command::Release(release::Options {
                version: semver::Version::new(0, 2, 0),
                dry_run: true,
            })),
        );
        check(
            &["publish", "--dry-run"],
            Some(Command::Publish(publish::Options {
                dry_run: true,
                registry: None,
            })),
        );
        check(&["nats"], Some(Command::Nats));
        check(&["loom-ci"], Some(Command::Step(Step::LoomCi)));
        check(&["screenshot"], Some(Command::Screenshot));
        check(&["bench"], Some(Command::Bench(bench::parse([]).unwrap())));
        let quick = check_bench(&["bench", "--quick", "emit"]);
        assert!(quick.quick);
        assert_eq!(quick.benches, ["emit"]);
        check(&["soak"], Some(Command::Soak(soak::Options::default())));
        check(
            &["soak", "--minutes", "30"],
            Some(Command::Soak(soak::Options {
                minutes: 30,
                release: false,
            })),
        );
        check(
            &["fuzz", "--seconds", "5", "name"],
            Some(Command::Fuzz(
                fuzz::parse(["--seconds".into(), "5".into(), "name".into()]).unwrap(),
            )),
        );
    }

    /// The bench options of `args`.
    fn check_bench(args: &[&str]) -> bench::Options {
        match parse(args.iter().map(|arg| arg.to_string())).unwrap() {
            Some(Command::Bench(options)) => options,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    /// Typos and stray arguments are errors, not silently ignored.
    #[test]
    fn rejects_unknown_and_extra_arguments() {
        assert!(parse(["lint".to_string()].into_iter()).is_err());
        assert!(parse(["ci".to_string(), "--fast".to_string()].into_iter()).is_err());
    }

    /// The help lists every step, and the bench command.
    #[test]
    fn usage_lists_every_step() {
        let text = usage();
        assert!(text.contains("cargo xtask bench [--quick]"));
        assert!(text.contains("cargo xtask soak [--minutes N]"));
        assert!(text.contains("cargo xtask fuzz [--seconds N]"));
        assert!(text.contains("screenshot"));
        assert!(text.contains("cargo xtask release <VERSION> [--dry-run]"));
        assert!(text.contains("cargo xtask publish [--dry-run]"));
        for step in Step::ALL {
            assert!(
                text.contains(step.name()),
                "{} missing from help",
                step.name()
            );
        }
    }
}
