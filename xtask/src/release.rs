//! `cargo xtask release <VERSION> [--dry-run]`: prepares a release in one
//! commit and one tag, after every check a registry and a user would make.
//!
//! In order, stopping at the first failure:
//!
//! 1. refusals: the tree has uncommitted changes; `VERSION` is not newer
//!    than the workspace's; its tag `vVERSION` exists; CHANGELOG.md's
//!    `[Unreleased]` section lists no change; the publishable crates are
//!    not all at the workspace's version;
//! 2. the plan: every manifest edit (computed in memory with `toml_edit`),
//!    the changelog roll, the crates in publish order; `--dry-run` stops
//!    here, having written nothing;
//! 3. the edits: every publishable crate and every internal requirement
//!    bumped in lock-step (comments and layout kept), `[Unreleased]`
//!    rolled into `[VERSION] - date`, `Cargo.lock` refreshed;
//! 4. `cargo xtask ci`;
//! 5. `cargo semver-checks` against the previous release tag, when there
//!    is one (installed with `cargo install` when missing; skipped, loudly,
//!    when `CARGO_NET_OFFLINE` is set and it is not installed);
//! 6. `cargo package` of every publishable crate in one invocation, which
//!    verifies each in dependency order against the others' packages
//!    through a local overlay registry (so crates whose internal
//!    dependencies are not on crates.io yet still verify, offline too);
//! 7. one commit (`Release VERSION`) and an annotated tag `vVERSION`.
//!
//! When a step after the edits fails, the edited files are put back as
//! they were, so the tree is clean for another try. Nothing is pushed and
//! nothing is published: `git push` and `cargo xtask publish` are the
//! maintainer's next steps, printed at the end.

mod bump;
mod changelog;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use semver::Version;
use toml_edit::DocumentMut;

use crate::cargo::{Cargo, workspace_root};
use crate::git::Git;
use crate::metadata::Workspace;
use crate::tidy::crates::workspace_version;

/// The help text of the release commands.
pub(crate) const USAGE: &str = "
Release (never pushes, never publishes):
  cargo xtask release <VERSION> [--dry-run]
            Bump every publishable crate to VERSION in lock-step, roll the
            CHANGELOG, run `cargo xtask ci`, cargo-semver-checks against the
            previous tag, `cargo package` every crate, then commit and tag
            vVERSION. Refuses a dirty tree, a VERSION not newer than the
            current one, an existing tag and an empty [Unreleased] section.
            --dry-run: the refusals and the plan only; changes nothing
";

/// The arguments of `cargo xtask release`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Options {
    /// The version to release.
    pub(crate) version: Version,
    /// Check and print the plan, change nothing.
    pub(crate) dry_run: bool,
}

/// Reads the arguments after `release`.
///
/// # Errors
///
/// When the version is missing or not a semantic version, or an argument
/// is unknown.
pub(crate) fn parse(args: impl Iterator<Item = String>) -> Result<Options> {
    let mut version = None;
    let mut dry_run = false;
    for arg in args {
        match arg.as_str() {
            "--dry-run" => dry_run = true,
            flag if flag.starts_with('-') => {
                bail!("unknown option `{flag}` for release, see `cargo xtask --help`")
            }
            text if version.is_none() => {
                let text = text.strip_prefix('v').unwrap_or(text);
                version = Some(text.parse::<Version>().with_context(|| {
                    format!("`{arg}` is not a version (MAJOR.MINOR.PATCH, as in 0.2.0)")
                })?);
            }
            extra => bail!("unexpected argument `{extra}` for release"),
        }
    }
    let Some(version) = version else {
        bail!("release needs the version to release: cargo xtask release <VERSION> [--dry-run]");
    };
    Ok(Options { version, dry_run })
}

/// Runs `cargo xtask release` on this workspace.
///
/// # Errors
///
/// On any refusal or failed step; see the module docs.
pub(crate) fn run(options: &Options) -> Result<()> {
    Release::new(workspace_root()).run(options).map(drop)
}

/// A release of the workspace in one checkout.
#[derive(Clone, Debug)]
pub(crate) struct Release {
    /// The checkout's root.
    root: PathBuf,
    /// The checks run after the edits, as cargo arguments.
    ci: Vec<String>,
    /// The release date, `YYYY-MM-DD`.
    date: String,
    /// Environment for every cargo this runs (tests give fixtures their
    /// own target directory).
    env: Vec<(String, String)>,
}

/// What a release will do, computed before anything is written.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The workspace's version now.
    pub(crate) current: Version,
    /// The version being released.
    pub(crate) version: Version,
    /// The tag the release creates.
    pub(crate) tag: String,
    /// The release tag semver-checks compares against, if there is one.
    pub(crate) previous_tag: Option<String>,
    /// The file edits, manifests then the changelog.
    pub(crate) edits: Vec<Edit>,
    /// The publishable crates in dependency order.
    pub(crate) order: Vec<String>,
}

/// One file the release rewrites.
#[derive(Debug)]
pub(crate) struct Edit {
    /// The file.
    pub(crate) path: PathBuf,
    /// Its text now.
    pub(crate) before: String,
    /// Its text after the release.
    pub(crate) after: String,
    /// What changes, for the plan.
    pub(crate) summary: String,
}

impl Release {
    /// A release of the checkout at `root` that runs `cargo xtask ci` and
    /// is dated today (UTC).
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            ci: vec!["xtask".to_owned(), "ci".to_owned()],
            date: today(),
            env: Vec::new(),
        }
    }

    /// Runs these cargo arguments as the release's checks instead of
    /// `cargo xtask ci` (a fixture workspace has no xtask).
    #[cfg(test)]
    pub(crate) fn checks(mut self, args: &[&str]) -> Self {
        self.ci = args.iter().map(|arg| (*arg).to_owned()).collect();
        self
    }

    /// Sets an environment variable for every cargo the release runs.
    #[cfg(test)]
    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// A cargo invocation in the checkout.
    fn cargo<I, S>(&self, args: I) -> Cargo
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.env
            .iter()
            .fold(Cargo::new(args).dir(&self.root), |cargo, (key, value)| {
                cargo.env(key.clone(), value.clone())
            })
    }

    /// Makes the refusals and computes the plan, writing nothing.
    ///
    /// # Errors
    ///
    /// On any refusal, or when a manifest or the changelog cannot be read.
    pub(crate) fn plan(&self, version: &Version) -> Result<Plan> {
        let git = Git::new(&self.root);
        let dirty = git.uncommitted()?;
        if !dirty.trim().is_empty() {
            bail!(
                "refusing to release: the working tree has uncommitted changes \
                 (commit or stash them first):\n{}",
                dirty.trim_end()
            );
        }
        let root_manifest = self.root.join("Cargo.toml");
        let root_text = read(&root_manifest)?;
        let root_doc: DocumentMut = root_text
            .parse()
            .with_context(|| format!("{} is not valid TOML", root_manifest.display()))?;
        let current = workspace_version(&root_doc)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("in {}", root_manifest.display()))?;
        if *version <= current {
            bail!(
                "refusing to release {version}: it is not newer than the current version {current}"
            );
        }
        let tag = format!("v{version}");
        if git.has_tag(&tag)? {
            bail!("refusing to release {version}: the tag {tag} already exists");
        }
        let changelog_path = self.root.join("CHANGELOG.md");
        let changelog_text = read(&changelog_path)?;
        if !changelog::has_unreleased_changes(&changelog_text)? {
            bail!(
                "refusing to release {version}: CHANGELOG.md's [Unreleased] section lists no change"
            );
        }

        let workspace = Workspace::load(&self.root)?;
        let out_of_step: Vec<String> = workspace
            .publishable()
            .filter(|krate| krate.version != current)
            .map(|krate| format!("{} {}", krate.name, krate.version))
            .collect();
        if !out_of_step.is_empty() {
            bail!(
                "refusing to release: these publishable crates are not at the workspace's version {current}: {}",
                out_of_step.join(", ")
            );
        }
        let internal: BTreeSet<String> = workspace
            .publishable()
            .map(|krate| krate.name.clone())
            .collect();
        let mut edits = Vec::new();
        let mut manifests = vec![(root_manifest.clone(), false)];
        manifests.extend(
            workspace
                .crates
                .iter()
                .filter(|krate| krate.manifest != root_manifest)
                .map(|krate| (krate.manifest.clone(), krate.publishable)),
        );
        for (path, own_version) in manifests {
            let before = read(&path)?;
            let (after, changes) = bump::bump(
                &before,
                bump::Bump {
                    internal: &internal,
                    version,
                    own_version,
                },
            )
            .with_context(|| format!("could not bump {}", path.display()))?;
            if changes > 0 {
                edits.push(Edit {
                    summary: format!("{changes} version{}", if changes == 1 { "" } else { "s" }),
                    path,
                    before,
                    after,
                });
            }
        }
        edits.push(Edit {
            after: changelog::roll(&changelog_text, version, &self.date)?,
            path: changelog_path,
            before: changelog_text,
            summary: format!("[Unreleased] becomes [{version}] - {}", self.date),
        });
        let order = workspace
            .publish_order()?
            .into_iter()
            .map(|krate| krate.name.clone())
            .collect();
        Ok(Plan {
            current,
            version: version.clone(),
            previous_tag: git.previous_release(version)?,
            tag,
            edits,
            order,
        })
    }

    /// Prints what the release does, step by step.
    fn print(&self, plan: &Plan, dry_run: bool) {
        println!(
            "xtask: release {} -> {}{}",
            plan.current,
            plan.version,
            if dry_run { " (dry run)" } else { "" }
        );
        println!("  edits:");
        for edit in &plan.edits {
            let path = edit.path.strip_prefix(&self.root).unwrap_or(&edit.path);
            println!("    {}: {}", path.display(), edit.summary);
        }
        println!("    Cargo.lock: the workspace's versions");
        println!("  checks: cargo {}", self.ci.join(" "));
        match &plan.previous_tag {
            Some(tag) => println!("  semver: cargo semver-checks --workspace --baseline-rev {tag}"),
            None => println!("  semver: skipped, no earlier release tag"),
        }
        println!("  package, in this order: {}", plan.order.join(", "));
        println!(
            "  commit: Release {}; tag: {} (annotated)",
            plan.version, plan.tag
        );
        println!("  not done: git push, cargo xtask publish");
    }

    /// Runs the release; returns the plan it carried out.
    ///
    /// # Errors
    ///
    /// On a refusal or a failed step (the edits are then undone).
    pub(crate) fn run(&self, options: &Options) -> Result<Plan> {
        let plan = self.plan(&options.version)?;
        self.print(&plan, options.dry_run);
        if options.dry_run {
            println!("xtask: dry run, nothing changed");
            return Ok(plan);
        }
        let lock = self.root.join("Cargo.lock");
        let lock_before = fs::read_to_string(&lock).ok();
        for edit in &plan.edits {
            write(&edit.path, &edit.after)?;
        }
        if let Err(err) = self.check_and_package(&plan) {
            for edit in &plan.edits {
                write(&edit.path, &edit.before)?;
            }
            if let Some(text) = &lock_before {
                write(&lock, text)?;
            }
            return Err(err.context(format!(
                "release {} stopped; the files it had edited are back as they were",
                plan.version
            )));
        }
        self.commit_and_tag(&plan)?;
        println!(
            "xtask: released {} as commit `Release {}` and tag {}.\n\
             Next: git push origin HEAD {}, then cargo xtask publish",
            plan.version, plan.version, plan.tag, plan.tag
        );
        Ok(plan)
    }

    /// The steps between the edits and the commit.
    fn check_and_package(&self, plan: &Plan) -> Result<()> {
        // The bumped versions into Cargo.lock, without touching any other
        // package (and without the network).
        self.cargo(["update", "--workspace", "--offline"])
            .run()
            .context("could not refresh Cargo.lock")?;
        self.cargo(self.ci.clone())
            .run()
            .context("the checks failed")?;
        if let Some(tag) = &plan.previous_tag {
            self.semver_checks(tag)?;
        }
        self.package(plan)
    }

    /// `cargo semver-checks` against the previous release.
    fn semver_checks(&self, tag: &str) -> Result<()> {
        if !self
            .cargo(["semver-checks", "--version"])
            .succeeds_quietly()
        {
            if offline() {
                println!(
                    "xtask: WARNING: SKIPPED cargo-semver-checks: it is not installed and \
                     CARGO_NET_OFFLINE is set; API breaks since {tag} are NOT checked"
                );
                return Ok(());
            }
            self.cargo(["install", "cargo-semver-checks", "--locked"])
                .run()
                .context(
                    "could not install cargo-semver-checks; without a network, set \
                     CARGO_NET_OFFLINE=true to skip this check (loudly)",
                )?;
        }
        self.cargo(["semver-checks", "--workspace", "--baseline-rev", tag])
            .run()
            .context("cargo semver-checks found API changes that need a bigger version step")
    }

    /// `cargo package` of every publishable crate, then a check that each
    /// `.crate` file is there.
    fn package(&self, plan: &Plan) -> Result<()> {
        // One invocation for all of them: cargo packages them in dependency
        // order and verifies each against the packages of the ones before
        // it (a local overlay registry), so no crate needs its internal
        // dependencies on crates.io first. `--allow-dirty`: the only
        // changes are the release's own edits, committed right after.
        let mut args = vec!["package".to_owned(), "--allow-dirty".to_owned()];
        for name in &plan.order {
            args.push("-p".to_owned());
            args.push(name.clone());
        }
        self.cargo(args).run().context("cargo package failed")?;
        let target = self.target_dir()?;
        for name in &plan.order {
            let file = target
                .join("package")
                .join(format!("{name}-{}.crate", plan.version));
            if !file.is_file() {
                bail!("cargo package did not produce {}", file.display());
            }
            println!("xtask: packaged {}", file.display());
        }
        Ok(())
    }

    /// The target directory cargo uses for this checkout.
    fn target_dir(&self) -> Result<PathBuf> {
        if let Some((_, dir)) = self.env.iter().find(|(key, _)| key == "CARGO_TARGET_DIR") {
            return Ok(PathBuf::from(dir));
        }
        let metadata = cargo_metadata::MetadataCommand::new()
            .manifest_path(self.root.join("Cargo.toml"))
            .no_deps()
            .exec()
            .context("could not ask cargo for the target directory")?;
        Ok(metadata.target_directory.into_std_path_buf())
    }

    /// Commits the edits and `Cargo.lock`, and tags the commit.
    fn commit_and_tag(&self, plan: &Plan) -> Result<()> {
        let git = Git::new(&self.root);
        let mut paths: Vec<String> = plan
            .edits
            .iter()
            .map(|edit| edit.path.display().to_string())
            .collect();
        if self.root.join("Cargo.lock").is_file() {
            paths.push(self.root.join("Cargo.lock").display().to_string());
        }
        let mut add = vec!["add", "--"];
        add.extend(paths.iter().map(String::as_str));
        git.run(&add)?;
        let message = format!("Release {}", plan.version);
        git.run(&["commit", "--quiet", "-m", &message])?;
        let tag_message = format!("Release {}", plan.version);
        git.run(&["tag", "-a", &plan.tag, "-m", &tag_message])?;
        Ok(())
    }
}

/// Whether cargo was told to stay off the network.
pub(crate) fn offline() -> bool {
    std::env::var("CARGO_NET_OFFLINE").is_ok_and(|value| value == "true" || value == "1")
}

/// Reads a file, naming it in the error.
fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))
}

/// Writes a file, naming it in the error.
fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("could not write {}", path.display()))
}

/// Today's date in UTC, `YYYY-MM-DD`.
fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let (year, month, day) = civil_date(secs / 86_400);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests;
