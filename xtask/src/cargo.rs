//! Running cargo the same way for every step.

use std::env;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

/// The workspace root.
///
/// xtask lives in `<root>/xtask`, so this is fixed when xtask is compiled and
/// does not depend on the directory `cargo xtask` was called from.
pub(crate) fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in a directory of the workspace root")
}

/// Where cargo builds: `CARGO_TARGET_DIR` when set (relative to the
/// directory `cargo xtask` was called from, as cargo reads it), else
/// `<root>/target`.
pub(crate) fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => env::current_dir().map_or_else(|_| PathBuf::from(&dir), |cwd| cwd.join(&dir)),
        None => workspace_root().join("target"),
    }
}

/// Whether cargo runs from here on build without incremental compilation;
/// see [`build_without_incremental`].
static WITHOUT_INCREMENTAL: AtomicBool = AtomicBool::new(false);

/// Makes every cargo run from here on build without incremental
/// compilation (`CARGO_INCREMENTAL=0`), unless the caller's environment
/// sets `CARGO_INCREMENTAL` itself. `cargo xtask ci` calls it: a run from a
/// fresh clone never reuses incremental state, which was a quarter of
/// its target directory. Returns whether it took effect.
pub(crate) fn build_without_incremental() -> bool {
    let takes_effect = env::var_os("CARGO_INCREMENTAL").is_none();
    WITHOUT_INCREMENTAL.store(takes_effect, Ordering::Relaxed);
    takes_effect
}

/// A cargo invocation, run from the workspace root with inherited stdio.
#[derive(Clone, Debug)]
pub(crate) struct Cargo {
    /// Arguments after `cargo`.
    args: Vec<String>,
    /// Extra environment variables for this invocation only.
    env: Vec<(String, String)>,
    /// Where to run it; the workspace root when `None`.
    dir: Option<PathBuf>,
}

impl Cargo {
    /// A `cargo` invocation with these arguments.
    pub(crate) fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut env = Vec::new();
        if WITHOUT_INCREMENTAL.load(Ordering::Relaxed) {
            env.push(("CARGO_INCREMENTAL".to_owned(), "0".to_owned()));
        }
        Self {
            args: args.into_iter().map(Into::into).collect(),
            env,
            dir: None,
        }
    }

    /// Sets an environment variable for this invocation.
    #[must_use]
    pub(crate) fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs in `dir` (another checkout) instead of the workspace root.
    #[must_use]
    pub(crate) fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Echoes the command line, runs it and waits for it.
    ///
    /// # Errors
    ///
    /// When cargo cannot be started or exits unsuccessfully.
    pub(crate) fn run(&self) -> Result<()> {
        println!("$ {self}");
        let status = self
            .command()
            .status()
            .with_context(|| format!("could not start `{self}`"))?;
        if !status.success() {
            bail!("`{self}` failed ({status})");
        }
        Ok(())
    }

    /// As [`run`](Self::run), also copying what the command prints on
    /// stdout to the file `log`.
    ///
    /// # Errors
    ///
    /// When cargo cannot be started or exits unsuccessfully, or the log
    /// cannot be written.
    pub(crate) fn run_logged(&self, log: &Path) -> Result<()> {
        use std::io::{BufRead, BufReader, Write};
        println!("$ {self}");
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::File::create(log)
            .with_context(|| format!("could not create {}", log.display()))?;
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start `{self}`"))?;
        let stdout = child.stdout.take().expect("piped");
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            writeln!(file, "{line}")?;
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("`{self}` failed ({status})");
        }
        Ok(())
    }

    /// As [`run`](Self::run), returning what the command printed on stdout
    /// (stderr is inherited, so cargo's progress still shows).
    ///
    /// # Errors
    ///
    /// When cargo cannot be started or exits unsuccessfully.
    pub(crate) fn stdout(&self) -> Result<String> {
        println!("$ {self}");
        let output = self
            .command()
            .stdout(Stdio::piped())
            .output()
            .with_context(|| format!("could not start `{self}`"))?;
        if !output.status.success() {
            bail!("`{self}` failed ({})", output.status);
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs the command with its output discarded and reports whether it
    /// succeeded; used to probe for optional tools.
    pub(crate) fn succeeds_quietly(&self) -> bool {
        self.command()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// The process to spawn.
    ///
    /// `CARGO` is set by `cargo run`, so nested invocations use the same
    /// toolchain as the one that built xtask. The other variables `cargo
    /// run` sets describe xtask's own package; they are not passed on (see
    /// [`is_package_env`]).
    fn command(&self) -> Command {
        let program = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut command = Command::new(program);
        for (key, _) in env::vars_os() {
            if key.to_str().is_some_and(is_package_env) {
                command.env_remove(key);
            }
        }
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.as_deref().unwrap_or(workspace_root()));
        command
    }
}

impl fmt::Display for Cargo {
    /// Formats the invocation as a shell command line a reader can paste.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(dir) = &self.dir {
            write!(f, "cd {} && ", quoted(&dir.display().to_string()))?;
        }
        for (key, value) in &self.env {
            write!(f, "{key}={} ", quoted(value))?;
        }
        f.write_str("cargo")?;
        for arg in &self.args {
            write!(f, " {}", quoted(arg))?;
        }
        Ok(())
    }
}

/// Whether `key` is one of the variables `cargo run` sets for the package it
/// runs (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, ...), here xtask's.
///
/// A nested cargo must not inherit them: build scripts that declare
/// `rerun-if-env-changed` on them (ring's does, for `CARGO_MANIFEST_DIR` and
/// `CARGO_PKG_*`) would see them change between `cargo build` and `cargo
/// xtask`, and rebuild ring and everything above it on each switch.
fn is_package_env(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
        )
}

/// Quotes a shell word when it contains spaces.
fn quoted(word: &str) -> String {
    if word.contains(char::is_whitespace) {
        format!("\"{word}\"")
    } else {
        word.to_owned()
    }
}

/// Unit tests for the command line echo.
#[cfg(test)]
mod tests {
    use super::*;

    /// The echoed line is a command that can be pasted into a shell.
    #[test]
    fn displays_as_a_shell_command() {
        let doc = Cargo::new(["doc", "--no-deps"]).env("RUSTDOCFLAGS", "-D warnings");
        assert_eq!(
            doc.to_string(),
            "RUSTDOCFLAGS=\"-D warnings\" cargo doc --no-deps"
        );
    }

    /// The variables `cargo run` sets for xtask's own package are not passed
    /// to the cargo it starts; the ones that configure cargo are.
    #[test]
    fn nested_cargo_does_not_inherit_xtasks_package_env() {
        for key in [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
        ] {
            assert!(is_package_env(key), "{key}");
        }
        for key in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_TERM_COLOR",
        ] {
            assert!(!is_package_env(key), "{key}");
        }
        // `cargo test` sets CARGO_MANIFEST_DIR for this test as `cargo run`
        // does for xtask: the command removes it.
        assert!(env::var_os("CARGO_MANIFEST_DIR").is_some());
        let command = Cargo::new(["build"]).command();
        let removed = command
            .get_envs()
            .any(|(key, value)| key == "CARGO_MANIFEST_DIR" && value.is_none());
        assert!(removed);
    }

    /// The root is the directory holding the workspace manifest.
    #[test]
    fn workspace_root_holds_xtask() {
        assert!(workspace_root().join("xtask").join("Cargo.toml").is_file());
    }
}
