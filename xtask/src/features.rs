//! `cargo xtask features`: every publishable crate is usable on its own,
//! with no default features and with each of its features alone.
//!
//! For each publishable crate and each of those feature sets (`default`
//! left out, `full` included):
//!
//! 1. `cargo check -p CRATE --lib` (`--bins` for a binary): the crate as a
//!    user's project builds it, without its dev-dependencies. This is the
//!    real "alone" check: a missing `features = [...]` on a dependency, or
//!    an item used outside its `#[cfg(feature)]`, fails here.
//! 2. `cargo test -p CRATE --lib` (`--bins` for a binary): its unit tests,
//!    for crates that have some (the facade, re-exports only, has none).
//!    Test builds unify features with the dev-dependencies (the crates'
//!    doctests reach the facade with some features on), so step 1 is the
//!    one that proves a crate builds with nothing else switched on.
//!
//! A loop here rather than `cargo hack --each-feature`: the same checks
//! without installing and building cargo-hack in CI, and with the
//! crate list taken from `cargo metadata` like every other xtask step.
//! Integration tests and doctests run once, with every feature, in the
//! `test` and `doctest` steps.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cargo::{Cargo, workspace_root};
use crate::metadata::{Crate, Workspace};

/// Checks every publishable crate with no default features and with each
/// feature alone.
///
/// # Errors
///
/// When the workspace cannot be read or any check fails.
pub(crate) fn check() -> Result<()> {
    let workspace = Workspace::load(workspace_root())?;
    let crates: Vec<&Crate> = workspace.publish_order()?;
    let total: usize = crates.iter().map(|krate| feature_sets(krate).len()).sum();
    println!(
        "xtask: {total} feature sets over {} crates (no default features, then each feature alone)",
        crates.len()
    );
    for krate in crates {
        for features in feature_sets(krate) {
            for args in commands(krate, features.as_deref()) {
                Cargo::new(args).run().with_context(|| {
                    format!(
                        "{} with {}",
                        krate.name,
                        features
                            .as_deref()
                            .map_or("no default features".to_owned(), |f| format!("only `{f}`"))
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// The feature sets of a crate: `None` for no default features, then each
/// of its features alone.
fn feature_sets(krate: &Crate) -> Vec<Option<String>> {
    std::iter::once(None)
        .chain(krate.features.iter().cloned().map(Some))
        .collect()
}

/// Whether the crate's sources hold unit tests (`#[test]` or a
/// `#[cfg(test)]` module). Without them a `cargo test --lib` would only
/// compile the dev-dependencies (for the facade: criterion, the
/// OpenTelemetry SDK, proptest...) once per feature set, for nothing.
fn has_unit_tests(krate: &Crate) -> bool {
    fn scan(dir: &Path) -> bool {
        let Ok(entries) = fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().any(|entry| {
            let path = entry.path();
            if path.is_dir() {
                scan(&path)
            } else {
                path.extension().is_some_and(|ext| ext == "rs")
                    && fs::read_to_string(&path)
                        .is_ok_and(|text| text.contains("#[test]") || text.contains("#[cfg(test)]"))
            }
        })
    }
    scan(&krate.dir().join("src"))
}

/// The cargo commands for one crate and feature set: a check without
/// dev-dependencies, then its unit tests when it has any.
fn commands(krate: &Crate, features: Option<&str>) -> Vec<Vec<String>> {
    let target = if krate.has_lib() { "--lib" } else { "--bins" };
    let mut common = vec![
        "-p".to_owned(),
        krate.name.clone(),
        target.to_owned(),
        "--no-default-features".to_owned(),
    ];
    if let Some(feature) = features {
        common.extend(["--features".to_owned(), feature.to_owned()]);
    }
    let command = |name: &str| {
        let mut args = vec![name.to_owned()];
        args.extend(common.iter().cloned());
        args
    };
    if has_unit_tests(krate) {
        vec![command("check"), command("test")]
    } else {
        vec![command("check")]
    }
}

/// Unit tests for the feature sets.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Fixture;

    /// Each publishable crate gets no-default-features and each feature
    /// alone; the check comes first; unpublished crates are left out.
    #[test]
    fn covers_every_publishable_crate_and_feature() {
        let fixture = Fixture::new();
        let workspace = Workspace::load(fixture.root()).unwrap();
        let core = workspace.get("fx-core").unwrap();
        assert_eq!(feature_sets(core), [None, Some("extra".to_owned())]);
        let lines: Vec<String> = commands(core, Some("extra"))
            .iter()
            .map(|args| args.join(" "))
            .collect();
        // fx-core has no unit tests: only the check.
        assert_eq!(
            lines,
            ["check -p fx-core --lib --no-default-features --features extra"]
        );
        fixture.write(
            "crates/fx-core/src/tests.rs",
            "#[test]\nfn one_is_one() {\n    assert_eq!(super::one(), 1);\n}\n",
        );
        let lines: Vec<String> = commands(core, None)
            .iter()
            .map(|args| args.join(" "))
            .collect();
        assert_eq!(
            lines,
            [
                "check -p fx-core --lib --no-default-features",
                "test -p fx-core --lib --no-default-features",
            ]
        );
        let app = workspace.get("fx-app").unwrap();
        assert_eq!(feature_sets(app), [None]);
        let tool = workspace.get("fx-tool").unwrap();
        assert_eq!(
            commands(tool, None)[0].join(" "),
            "check -p fx-tool --bins --no-default-features"
        );
    }

    /// The real workspace: every publishable crate is covered, the facade
    /// with each of its features; unit tests run where there are some.
    #[test]
    fn covers_this_workspace() {
        let workspace = Workspace::load(workspace_root()).unwrap();
        let order = workspace.publish_order().unwrap();
        assert!(order.iter().any(|krate| krate.name == "nerve-core"));
        let facade = workspace.get("nerve").unwrap();
        let sets = feature_sets(facade);
        assert!(sets.contains(&Some("full".to_owned())));
        assert!(sets.contains(&Some("journal".to_owned())));
        assert_eq!(sets[0], None);
        assert_eq!(
            commands(facade, None).len(),
            1,
            "the facade has no unit tests"
        );
        let core = workspace.get("nerve-core").unwrap();
        assert_eq!(commands(core, None).len(), 2, "nerve-core has unit tests");
    }
}
