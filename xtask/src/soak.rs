//! `cargo xtask soak [--minutes N] [--release]`: builds the soak example of
//! the `nerve` crate (`crates/nerve/examples/soak.rs`) and the `nerve`
//! binary, runs the soak for N minutes (1 by default, which is what
//! `cargo xtask ci` runs) with the journal in a fresh directory, and fails
//! when any of its checks fails. The example's own docs list what runs and
//! what is checked; it runs `nerve verify` on the journal itself.
//!
//! The dev profile is the default: `cargo xtask ci` has built the
//! dependencies in it already (the test step), so the soak step builds
//! little more than the example. `--release` measures the optimised code,
//! at the cost of building every dependency once more.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::cargo::{Cargo, workspace_root};

/// The usage lines of `soak` for `cargo xtask --help`.
pub(crate) const USAGE: &str = "\nSoak: cargo xtask soak [--minutes N] [--release]\n  \
Run a bus with every feature on at full rate for N minutes (default 1), then\n  \
check memory, accounting, `nerve verify` on its journal, and thread and task leaks\n";

/// What `cargo xtask soak` was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Options {
    /// How long the soak runs.
    pub(crate) minutes: u64,
    /// Build with the release profile.
    pub(crate) release: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            minutes: 1,
            release: false,
        }
    }
}

/// Reads the options after `soak`.
///
/// # Errors
///
/// An unknown option, or a minute count that is not a positive number.
pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Options> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--minutes" => {
                let value = args.next().context("`--minutes` needs a number")?;
                options.minutes = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("`--minutes {value}`: not a positive number"))?;
            }
            "--release" => options.release = true,
            other => bail!("unknown option `{other}` of `soak`, see `cargo xtask --help`"),
        }
    }
    Ok(options)
}

/// The cargo invocation building the soak and the CLI.
///
/// With the workspace and every feature, as the clippy and test steps of
/// `ci` do: the same feature resolution, so nothing they built is built
/// again (`-p nerve -p nerve-cli --features nerve/full` would resolve
/// tokio without the `test-util` the workspace's tests turn on, and rebuild
/// tokio and everything above it).
fn build(options: &Options) -> Cargo {
    let mut args = vec![
        "build",
        "--workspace",
        "--all-features",
        "--example",
        "soak",
        "--bin",
        "nerve",
        "--message-format",
        "json-render-diagnostics",
    ];
    if options.release {
        args.push("--release");
    }
    Cargo::new(args)
}

/// Builds and runs the soak.
///
/// # Errors
///
/// When the build fails, or the soak fails a check or cannot run.
pub(crate) fn run(options: &Options) -> Result<()> {
    let started = Instant::now();
    let messages = build(options).stdout()?;
    let soak = executable(&messages, "soak")?;
    let nerve = executable(&messages, "nerve")?;
    let built = started.elapsed();
    println!("xtask: built in {:.0} s", built.as_secs_f64());

    let dir = std::env::temp_dir().join(format!("nerve-soak-{}", std::process::id()));
    let seconds = options.minutes * 60;
    let mut command = Command::new(&soak);
    command
        .arg("--seconds")
        .arg(seconds.to_string())
        .arg("--dir")
        .arg(&dir)
        .arg("--nerve")
        .arg(&nerve)
        .current_dir(workspace_root());
    println!(
        "$ {} --seconds {seconds} --dir {} --nerve {}",
        soak.display(),
        dir.display(),
        nerve.display()
    );
    let status = command
        .status()
        .with_context(|| format!("could not start {}", soak.display()))?;
    println!(
        "xtask: soak took {:.0} s ({:.0} s with the build)",
        (started.elapsed() - built).as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!(
            "the soak failed ({status}); its journal is kept in {}",
            dir.display()
        );
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("could not remove {}", dir.display()))
}

/// The path of the executable `name` among cargo's JSON messages.
fn executable(messages: &str, name: &str) -> Result<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .filter(|path| Path::new(path).is_file())
        .with_context(|| format!("cargo built no executable `{name}`"))
}

/// Unit tests for the options and the build line.
#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Result<Options> {
        parse(args.iter().map(|a| (*a).to_owned()))
    }

    /// One minute in the dev profile unless told otherwise.
    #[test]
    fn parses_options() {
        assert_eq!(parsed(&[]).unwrap(), Options::default());
        let long = parsed(&["--minutes", "30", "--release"]).unwrap();
        assert_eq!((long.minutes, long.release), (30, true));
        assert!(parsed(&["--minutes", "0"]).is_err());
        assert!(parsed(&["--minutes"]).is_err());
        assert!(parsed(&["--hours", "1"]).is_err());
    }

    /// The soak and the CLI are built together, with the features the other
    /// steps use, in the dev profile unless `--release`.
    #[test]
    fn builds_the_soak_and_the_cli_together() {
        let line = build(&Options::default()).to_string();
        assert!(line.contains("--example soak --bin nerve"), "{line}");
        assert!(line.contains("--workspace --all-features"), "{line}");
        assert!(!line.contains("--release"), "{line}");
        let release = build(&Options {
            minutes: 1,
            release: true,
        });
        assert!(release.to_string().ends_with("--release"));
    }

    /// Executables are found by target name among cargo's messages.
    #[test]
    fn finds_executables_in_cargo_messages() {
        let this = std::env::current_exe().unwrap();
        let message = serde_json::json!({
            "reason": "compiler-artifact",
            "target": {"name": "soak"},
            "executable": this,
        });
        let messages = format!("{{\"reason\":\"build-finished\"}}\n{message}\n");
        assert_eq!(executable(&messages, "soak").unwrap(), this);
        assert!(executable(&messages, "nerve").is_err());
    }
}
