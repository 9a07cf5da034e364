//! `cargo xtask fuzz`: runs the cargo-fuzz targets of `fuzz/` for a while
//! each and keeps whatever they find as regression inputs.
//!
//! The targets need libFuzzer and `-Z` compiler flags, so a nightly
//! toolchain (`cargo +nightly fuzz`) and the `cargo-fuzz` subcommand. When
//! `cargo-fuzz` is missing it is installed with `cargo install cargo-fuzz`;
//! without a nightly toolchain the stable one is tried with
//! `RUSTC_BOOTSTRAP=1` and no sanitizer. When neither can build the targets
//! the command says so and exits successfully: fuzzing is an extra, not a
//! check every machine must be able to run (`cargo test` replays the
//! inputs of `fuzz/regressions/` on any toolchain).
//!
//! Each target runs from the corpus `fuzz/corpus/<target>/` (kept between
//! runs, not committed) and the inputs of `fuzz/regressions/<target>/`. A
//! crash, timeout or out-of-memory input libFuzzer writes to
//! `fuzz/artifacts/<target>/` is copied to `fuzz/regressions/<target>/`,
//! where `fuzz_regressions_replay` (in `nerve-core` and `nerve-journal`)
//! replays it as a regular test; commit it with the fix.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::cargo::workspace_root;

/// The targets of `fuzz/fuzz_targets/`, in the order they run.
pub(crate) const TARGETS: [&str; 4] = ["journal_reader", "pattern", "name", "redact"];

/// Seconds per target by default.
const DEFAULT_SECONDS: u64 = 60;

pub(crate) const USAGE: &str =
    "  fuzz      Run the cargo-fuzz targets (nightly or cargo-fuzz needed; skipped otherwise)
            cargo xtask fuzz [--seconds N] [TARGET...]
            --seconds N      run each target N seconds (default 60)
            TARGET           journal_reader, pattern, name, redact (default: all)
            Crash inputs are copied to fuzz/regressions/<target>/, replayed by cargo test.
";

/// What `cargo xtask fuzz` was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Options {
    /// Seconds per target.
    pub(crate) seconds: u64,
    /// The targets to run; every one when empty.
    pub(crate) targets: Vec<String>,
}

/// Reads the options after `fuzz`.
pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Options> {
    let mut options = Options {
        seconds: DEFAULT_SECONDS,
        targets: Vec::new(),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = args.next().context("`--seconds` needs a number")?;
                options.seconds = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("`--seconds {value}`: not a positive number"))?;
            }
            name if name.starts_with('-') => {
                bail!("unknown option `{name}` of `fuzz`, see `cargo xtask --help`")
            }
            name => {
                if !TARGETS.contains(&name) {
                    bail!(
                        "unknown fuzz target `{name}`; there are {}",
                        TARGETS.join(", ")
                    );
                }
                options.targets.push(name.to_owned());
            }
        }
    }
    Ok(options)
}

/// How the targets can be built here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Toolchain {
    /// `cargo +nightly fuzz`, with the address sanitizer.
    Nightly,
    /// `RUSTC_BOOTSTRAP=1 cargo fuzz` on the default toolchain, no sanitizer.
    Bootstrap,
}

/// `cargo` as rustup's proxy (so that `+nightly` works), without the
/// variables a parent cargo set that would pin its toolchain.
fn cargo(toolchain: Option<Toolchain>) -> Command {
    let mut command = Command::new("cargo");
    command
        .current_dir(workspace_root())
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER");
    match toolchain {
        Some(Toolchain::Nightly) => {
            command.arg("+nightly");
        }
        Some(Toolchain::Bootstrap) => {
            command.env("RUSTC_BOOTSTRAP", "1");
        }
        None => {}
    }
    command
}

fn quietly(mut command: Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The toolchain to fuzz with, installing `cargo-fuzz` if needed; `None`
/// (after saying why) when fuzzing is not possible here.
fn toolchain() -> Option<Toolchain> {
    let has_fuzz = || {
        let mut c = cargo(None);
        c.args(["fuzz", "--version"]);
        quietly(c)
    };
    if !has_fuzz() {
        println!("cargo-fuzz is not installed; trying `cargo install cargo-fuzz`");
        let mut c = cargo(None);
        c.args(["install", "--locked", "cargo-fuzz"]);
        if !c.status().is_ok_and(|s| s.success()) || !has_fuzz() {
            println!(
                "xtask fuzz: skipped: cargo-fuzz is not installed and could not be \
                 (`cargo install cargo-fuzz`); the inputs of fuzz/regressions/ are \
                 still replayed by `cargo test`"
            );
            return None;
        }
    }
    let mut nightly = cargo(Some(Toolchain::Nightly));
    nightly.args(["--version"]);
    if quietly(nightly) {
        return Some(Toolchain::Nightly);
    }
    println!(
        "no nightly toolchain (`rustup toolchain install nightly` adds one); \
         trying the default toolchain with RUSTC_BOOTSTRAP=1 and no sanitizer"
    );
    Some(Toolchain::Bootstrap)
}

/// What one target's run gave.
#[derive(Debug)]
struct Outcome {
    target: String,
    /// Inputs run, from libFuzzer's final statistics.
    execs: Option<u64>,
    /// Crash inputs copied to `fuzz/regressions/<target>/`.
    crashes: Vec<String>,
    /// Whether libFuzzer exited successfully.
    passed: bool,
}

/// Builds and runs every target asked for, then prints a summary.
///
/// # Errors
///
/// When a target cannot be built, or a target found a crash.
pub(crate) fn run(options: &Options) -> Result<()> {
    let Some(toolchain) = toolchain() else {
        return Ok(());
    };
    let targets: Vec<String> = if options.targets.is_empty() {
        TARGETS.iter().map(|t| (*t).to_owned()).collect()
    } else {
        options.targets.clone()
    };
    let sanitizer = match toolchain {
        Toolchain::Nightly => "address",
        Toolchain::Bootstrap => "none",
    };
    let mut build = cargo(Some(toolchain));
    build.args(["fuzz", "build", "--sanitizer", sanitizer]);
    println!("$ {build:?}");
    if !build.status().is_ok_and(|s| s.success()) {
        if toolchain == Toolchain::Bootstrap {
            println!(
                "xtask fuzz: skipped: the targets do not build without a nightly \
                 toolchain here (`rustup toolchain install nightly`)"
            );
            return Ok(());
        }
        bail!("the fuzz targets do not build");
    }
    let fuzz = workspace_root().join("fuzz");
    let mut outcomes = Vec::new();
    for target in &targets {
        outcomes.push(run_target(
            toolchain,
            sanitizer,
            &fuzz,
            target,
            options.seconds,
        )?);
    }
    println!("\nxtask fuzz: {} s per target", options.seconds);
    for o in &outcomes {
        let execs = o.execs.map_or_else(|| "?".to_owned(), |n| n.to_string());
        println!(
            "  {:<15} {:>12} execs  {}",
            o.target,
            execs,
            if o.crashes.is_empty() && o.passed {
                "no crash".to_owned()
            } else {
                format!("FAILED, inputs kept: {}", o.crashes.join(", "))
            }
        );
    }
    if outcomes.iter().any(|o| !o.passed || !o.crashes.is_empty()) {
        bail!("a target failed; its inputs are in fuzz/regressions/, replayed by `cargo test`");
    }
    Ok(())
}

fn run_target(
    toolchain: Toolchain,
    sanitizer: &str,
    fuzz: &Path,
    target: &str,
    seconds: u64,
) -> Result<Outcome> {
    let corpus = fuzz.join("corpus").join(target);
    let regressions = fuzz.join("regressions").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    fs::create_dir_all(&corpus)?;
    fs::create_dir_all(&regressions)?;
    let before = listing(&artifacts);
    let mut command = cargo(Some(toolchain));
    command
        .args(["fuzz", "run", "--sanitizer", sanitizer, target])
        .arg(&corpus)
        .arg(&regressions)
        .args([
            "--".to_owned(),
            format!("-max_total_time={seconds}"),
            "-print_final_stats=1".to_owned(),
            "-timeout=10".to_owned(),
        ])
        .stderr(Stdio::piped());
    println!("\n$ {command:?}");
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start the fuzz target {target}"))?;
    let stderr = child.stderr.take().context("piped stderr")?;
    let mut execs = None;
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            execs = n.trim().parse().ok();
        }
        // libFuzzer's periodic status lines are many; keep the rest.
        if !line.contains(" pulse ") {
            eprintln!("{line}");
        }
    }
    let passed = child.wait()?.success();
    let mut crashes = Vec::new();
    for name in listing(&artifacts) {
        if before.contains(&name) {
            continue;
        }
        let to = regressions.join(&name);
        fs::copy(artifacts.join(&name), &to)
            .with_context(|| format!("could not copy {name} to {}", to.display()))?;
        crashes.push(format!("fuzz/regressions/{target}/{name}"));
    }
    Ok(Outcome {
        target: target.to_owned(),
        execs,
        crashes,
        passed,
    })
}

/// The names of the files in `dir` (none when it does not exist).
fn listing(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Options> {
        parse(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn parses_seconds_and_targets() {
        let all = parse_args(&[]).unwrap();
        assert_eq!((all.seconds, all.targets.len()), (DEFAULT_SECONDS, 0));
        let one = parse_args(&["--seconds", "240", "redact"]).unwrap();
        assert_eq!(one.seconds, 240);
        assert_eq!(one.targets, ["redact"]);
        assert!(parse_args(&["--seconds"]).is_err());
        assert!(parse_args(&["--seconds", "0"]).is_err());
        assert!(parse_args(&["nothing"]).is_err());
        assert!(parse_args(&["--fast"]).is_err());
    }

    #[test]
    fn every_target_has_a_source_and_a_regressions_directory() {
        let fuzz = workspace_root().join("fuzz");
        for target in TARGETS {
            assert!(
                fuzz.join("fuzz_targets")
                    .join(format!("{target}.rs"))
                    .is_file()
            );
            assert!(fuzz.join("regressions").join(target).is_dir());
        }
    }
}
