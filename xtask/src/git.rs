//! The few git questions and commands a release needs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use semver::Version;

/// git, run in one checkout.
#[derive(Clone, Debug)]
pub(crate) struct Git {
    /// The checkout's root.
    root: PathBuf,
}

impl Git {
    /// git in the checkout at `root`.
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// Runs `git args` and returns its stdout.
    ///
    /// # Errors
    ///
    /// When git cannot start or fails; the error carries its stderr.
    pub(crate) fn run(&self, args: &[&str]) -> Result<String> {
        let output = Command::new("git")
            .arg("-C")
            .arg(&self.root)
            .args(args)
            .output()
            .with_context(|| format!("could not start `git {}`", args.join(" ")))?;
        if !output.status.success() {
            bail!(
                "`git {}` failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// What `git status --porcelain` lists: changed, staged and untracked
    /// files (ignored ones excepted). Empty when the tree is clean.
    ///
    /// # Errors
    ///
    /// When this is not a git checkout.
    pub(crate) fn uncommitted(&self) -> Result<String> {
        self.run(&["status", "--porcelain", "--untracked-files=normal"])
    }

    /// Whether the tag exists.
    ///
    /// # Errors
    ///
    /// When git cannot be run.
    pub(crate) fn has_tag(&self, tag: &str) -> Result<bool> {
        let listed = self.run(&["tag", "--list", tag])?;
        Ok(listed.lines().any(|line| line.trim() == tag))
    }

    /// The newest release tag (`v` and a version) older than `version`.
    ///
    /// # Errors
    ///
    /// When git cannot be run.
    pub(crate) fn previous_release(&self, version: &Version) -> Result<Option<String>> {
        let tags = self.run(&["tag", "--list", "v*"])?;
        Ok(tags
            .lines()
            .filter_map(|tag| {
                let parsed: Version = tag.trim().strip_prefix('v')?.parse().ok()?;
                (parsed < *version).then(|| (parsed, tag.trim().to_owned()))
            })
            .max()
            .map(|(_, tag)| tag))
    }

    /// The tags pointing at `HEAD`.
    ///
    /// # Errors
    ///
    /// When git cannot be run.
    pub(crate) fn tags_at_head(&self) -> Result<Vec<String>> {
        Ok(self
            .run(&["tag", "--points-at", "HEAD"])?
            .lines()
            .map(|tag| tag.trim().to_owned())
            .collect())
    }
}
