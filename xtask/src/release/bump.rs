//! The lock-step version bump, edited with `toml_edit` so that every
//! comment, blank line and key order of a manifest stays as written.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use semver::Version;
use toml_edit::{DocumentMut, Item, Table, TableLike, Value};

/// The dependency tables a manifest can have, at the top or under
/// `[target.'cfg(..)']`.
const DEPENDENCY_TABLES: [&str; 3] = ["dependencies", "dev-dependencies", "build-dependencies"];

/// What to change in one manifest.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bump<'a> {
    /// The workspace's crates that publish: requirements on them are bumped.
    pub(crate) internal: &'a BTreeSet<String>,
    /// The release's version.
    pub(crate) version: &'a Version,
    /// Whether this manifest's own `[package] version`, when written out
    /// rather than inherited, is bumped (publishable crates only).
    pub(crate) own_version: bool,
}

/// The manifest `text` with every version of the release bumped, and how
/// many values changed.
///
/// Bumped: `[workspace.package] version`, a literal `[package] version`
/// when [`Bump::own_version`], and the `version` of every dependency on an
/// internal crate in `[workspace.dependencies]` and in every dependency
/// table (target-specific ones included). A requirement keeps its
/// operator (`=0.1.0` becomes `=0.2.0`). Nothing else is touched.
///
/// # Errors
///
/// When `text` is not valid TOML.
pub(crate) fn bump(text: &str, bump: Bump<'_>) -> Result<(String, usize)> {
    let mut doc: DocumentMut = text.parse().context("not valid TOML")?;
    let new = bump.version.to_string();
    let mut changed = 0;
    if let Some(workspace) = doc.get_mut("workspace").and_then(Item::as_table_like_mut) {
        if let Some(version) = workspace
            .get_mut("package")
            .and_then(Item::as_table_like_mut)
            .and_then(|package| package.get_mut("version"))
            .and_then(Item::as_value_mut)
        {
            changed += set_version(version, &new, false)?;
        }
        if let Some(deps) = workspace
            .get_mut("dependencies")
            .and_then(Item::as_table_like_mut)
        {
            changed += bump_dependencies(deps, bump.internal, &new)?;
        }
    }
    if bump.own_version {
        if let Some(version) = doc
            .get_mut("package")
            .and_then(Item::as_table_like_mut)
            .and_then(|package| package.get_mut("version"))
            .and_then(Item::as_value_mut)
        {
            // `version.workspace = true` is a table, not a string: inherited.
            if version.is_str() {
                changed += set_version(version, &new, false)?;
            }
        }
    }
    for name in DEPENDENCY_TABLES {
        if let Some(deps) = doc.get_mut(name).and_then(Item::as_table_like_mut) {
            changed += bump_dependencies(deps, bump.internal, &new)?;
        }
    }
    if let Some(targets) = doc.get_mut("target").and_then(Item::as_table_like_mut) {
        for (_, target) in targets.iter_mut() {
            let Some(target) = target.as_table_like_mut() else {
                continue;
            };
            for name in DEPENDENCY_TABLES {
                if let Some(deps) = target.get_mut(name).and_then(Item::as_table_like_mut) {
                    changed += bump_dependencies(deps, bump.internal, &new)?;
                }
            }
        }
    }
    Ok((doc.to_string(), changed))
}

/// Bumps the requirement of each internal dependency in one table.
fn bump_dependencies(
    deps: &mut dyn TableLike,
    internal: &BTreeSet<String>,
    new: &str,
) -> Result<usize> {
    let mut changed = 0;
    for (key, item) in deps.iter_mut() {
        // `alias = { package = "nerve-core", ... }` depends on `nerve-core`.
        let package = item
            .get("package")
            .and_then(Item::as_str)
            .unwrap_or(key.get())
            .to_owned();
        if !internal.contains(&package) {
            continue;
        }
        match item {
            // `nerve-core = "0.1.0"`
            Item::Value(value) if value.is_str() => changed += set_version(value, new, true)?,
            // `nerve-core = { path = "..", version = "0.1.0" }`
            Item::Value(Value::InlineTable(table)) => {
                if let Some(version) = table.get_mut("version") {
                    changed += set_version(version, new, true)?;
                }
            }
            // `[dependencies.nerve-core]` with `version = "0.1.0"`
            Item::Table(table) => changed += bump_table_version(table, new)?,
            _ => {}
        }
    }
    Ok(changed)
}

/// Bumps the `version` key of a dependency written as a full table.
fn bump_table_version(table: &mut Table, new: &str) -> Result<usize> {
    match table.get_mut("version").and_then(Item::as_value_mut) {
        Some(version) => set_version(version, new, true),
        None => Ok(0),
    }
}

/// Replaces the version string `value` with `new`, keeping its comments
/// and spacing (its decor) and, for a requirement, its operator. Returns 1
/// when it changed.
fn set_version(value: &mut Value, new: &str, requirement: bool) -> Result<usize> {
    let Some(old) = value.as_str() else {
        bail!("a version that is not a string: `{value}`");
    };
    let operator = if requirement {
        let digits = old.find(|c: char| c.is_ascii_digit()).unwrap_or(old.len());
        old[..digits].to_owned()
    } else {
        String::new()
    };
    let replacement = format!("{operator}{new}");
    if replacement == old {
        return Ok(0);
    }
    let decor = value.decor().clone();
    *value = Value::from(replacement);
    *value.decor_mut() = decor;
    Ok(1)
}

/// Unit tests for the bump.
#[cfg(test)]
mod tests {
    use super::*;

    /// Bumps `text` to 0.2.0 with `nerve-core` and `nerve` internal.
    fn check(text: &str, own_version: bool, expected: &str, changes: usize) {
        let internal: BTreeSet<String> = ["nerve-core", "nerve"].map(str::to_owned).into();
        let version = Version::new(0, 2, 0);
        let (out, changed) = bump(
            text,
            Bump {
                internal: &internal,
                version: &version,
                own_version,
            },
        )
        .unwrap();
        assert_eq!(out, expected);
        assert_eq!(changed, changes);
    }

    /// The workspace version and internal requirements change; comments,
    /// layout, external crates and other keys do not.
    #[test]
    fn bumps_the_workspace_and_keeps_comments() {
        check(
            "\
[workspace.package]
# The version every crate inherits.
version = \"0.1.0\"   # lock-step
edition = \"2024\"

[workspace.dependencies]
# Internal crates: path + version.
nerve-core = { path = \"crates/nerve-core\", version = \"0.1.0\" } # core
nerve = { path = \"crates/nerve\",    version = \"=0.1.0\" }
# External.
serde = { version = \"0.1.0\", features = [\"derive\"] }
",
            false,
            "\
[workspace.package]
# The version every crate inherits.
version = \"0.2.0\"   # lock-step
edition = \"2024\"

[workspace.dependencies]
# Internal crates: path + version.
nerve-core = { path = \"crates/nerve-core\", version = \"0.2.0\" } # core
nerve = { path = \"crates/nerve\",    version = \"=0.2.0\" }
# External.
serde = { version = \"0.1.0\", features = [\"derive\"] }
",
            3,
        );
    }

    /// In a crate: a literal own version, every dependency table and
    /// spelling, target tables and renamed dependencies; an inherited
    /// version and path-only dev-dependencies stay as they are.
    #[test]
    fn bumps_every_dependency_spelling() {
        check(
            "\
[package]
name = \"nerve-x\"
version = \"0.1.0\"

[dependencies]
nerve-core = \"0.1.0\"
core = { package = \"nerve-core\", version = \"~0.1.0\", path = \"../nerve-core\" }
other = \"0.1.0\"

[dev-dependencies]
nerve = { path = \"../nerve\" } # dropped by cargo publish

[dependencies.nerve]
path = \"../nerve\"
version = \"0.1.0\" # table form

[target.'cfg(unix)'.build-dependencies]
nerve-core = { workspace = true }
nerve = { path = \"../nerve\", version = \"0.1.0\" }
",
            true,
            "\
[package]
name = \"nerve-x\"
version = \"0.2.0\"

[dependencies]
nerve-core = \"0.2.0\"
core = { package = \"nerve-core\", version = \"~0.2.0\", path = \"../nerve-core\" }
other = \"0.1.0\"

[dev-dependencies]
nerve = { path = \"../nerve\" } # dropped by cargo publish

[dependencies.nerve]
path = \"../nerve\"
version = \"0.2.0\" # table form

[target.'cfg(unix)'.build-dependencies]
nerve-core = { workspace = true }
nerve = { path = \"../nerve\", version = \"0.2.0\" }
",
            5,
        );
        // Inherited versions are left to the workspace; an unpublished
        // crate keeps its own version.
        check(
            "[package]\nversion.workspace = true\n",
            true,
            "[package]\nversion.workspace = true\n",
            0,
        );
        check(
            "[package]\nversion = \"0.0.0\"\n",
            false,
            "[package]\nversion = \"0.0.0\"\n",
            0,
        );
    }

    /// A manifest that is not TOML is an error, not a silent no-op.
    #[test]
    fn rejects_invalid_toml() {
        let internal = BTreeSet::new();
        let version = Version::new(0, 2, 0);
        let bump_args = Bump {
            internal: &internal,
            version: &version,
            own_version: true,
        };
        assert!(bump("[package\nversion = 1", bump_args).is_err());
    }
}
