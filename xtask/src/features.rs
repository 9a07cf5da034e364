//! `cargo xtask features`: the facade builds with no default features and with
//! each feature alone, so every feature stays additive and self-contained.

use std::fs;

use anyhow::{Context, Result};

use crate::cargo::{Cargo, workspace_root};
use crate::manifest;

/// The crate whose features are checked: the facade, where features are wired.
const FACADE: &str = "nerve";

/// Checks the facade with `--no-default-features`, then with each feature of
/// its `[features]` table alone (`default` excluded, `full` included).
///
/// # Errors
///
/// When the manifest cannot be read or any check fails.
pub(crate) fn check() -> Result<()> {
    let path = workspace_root()
        .join("crates")
        .join(FACADE)
        .join("Cargo.toml");
    let manifest =
        fs::read_to_string(&path).with_context(|| format!("could not read {}", path.display()))?;
    let features = feature_names(&manifest);
    println!("xtask: features of {FACADE}: {}", list(&features));
    Cargo::new(["check", "-p", FACADE, "--no-default-features"]).run()?;
    for feature in &features {
        Cargo::new([
            "check",
            "-p",
            FACADE,
            "--no-default-features",
            "--features",
            feature,
        ])
        .run()?;
    }
    Ok(())
}

/// The features declared in a manifest, in order, without `default`.
fn feature_names(manifest: &str) -> Vec<String> {
    manifest::entries(manifest)
        .into_iter()
        .filter(|entry| entry.table == "features" && entry.key != "default")
        .map(|entry| entry.key)
        .collect()
}

/// The features as a readable list.
fn list(features: &[String]) -> String {
    if features.is_empty() {
        "(none)".to_owned()
    } else {
        features.join(", ")
    }
}

/// Unit tests for reading feature names.
#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the feature names out of `manifest`.
    fn check(manifest: &str, expected: &[&str]) {
        assert_eq!(feature_names(manifest), expected, "manifest:\n{manifest}");
    }

    /// Features come out in declaration order, `default` left out.
    #[test]
    fn lists_features_in_order() {
        check("[package]\nname = \"nerve\"\n", &[]);
        check("[features]\ndefault = []\n", &[]);
        check(
            "[features]\n## docs\ndefault = [\"journal\"]\njournal = []\nfull = [\n  \"journal\",\n]\n\n[dependencies]\nserde = \"1\"\n",
            &["journal", "full"],
        );
        check(
            "[dependencies]\nfoo = { version = \"1\", features = [\"x\"] }\n[features]\nunstable-tap = [\"dep:foo\"]\n",
            &["unstable-tap"],
        );
    }
}
