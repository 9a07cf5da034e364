//! A small workspace in a temporary git repository, laid out like nerve's,
//! for the tests of tidy, release and publish: they run against it, never
//! against the real workspace.
//!
//! - `fx-core`: a library with a feature, a README example compiled as a
//!   doctest, and a path-only dev-dependency on `fx-app` (dropped by
//!   `cargo publish`, as nerve's crates reach the facade);
//! - `fx-app`: a library on `fx-core` (through `[workspace.dependencies]`,
//!   and once more written out in its own manifest);
//! - `fx-tool`: `publish = false`, on both.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// The root manifest. Its comments are there to be kept by the bump.
pub(crate) const ROOT_MANIFEST: &str = r#"[workspace]
resolver = "3"
members = ["crates/*"]

[workspace.package]
# Every publishable crate inherits this version: they release in lock-step.
version = "0.1.0"
edition = "2024"
license = "MIT OR Apache-2.0"
repository = "https://example.com/fx"

[workspace.dependencies]
# Internal crates: path + version so they can be published.
fx-core = { path = "crates/fx-core", version = "0.1.0" } # the vocabulary
fx-app = { path = "crates/fx-app", version = "0.1.0" }

[workspace.lints.rust]
unexpected_cfgs = { level = "warn", check-cfg = ["cfg(docsrs)"] }
"#;

/// A publishable library's manifest fields after `[package] name`.
const PACKAGE_FIELDS: &str = r#"version.workspace = true
edition.workspace = true
license.workspace = true
repository.workspace = true
keywords = ["fixture"]
categories = ["development-tools"]
"#;

/// docs.rs metadata as tidy wants it.
const DOCS_RS: &str = r#"
[package.metadata.docs.rs]
all-features = true
rustdoc-args = ["--cfg", "docsrs"]
"#;

/// `fx-core`'s manifest.
const CORE_MANIFEST: &str = r#"[package]
name = "fx-core"
description = "The fixture's core"
{fields}
[features]
## An extra function.
extra = []

[dev-dependencies]
# Path only: dropped by cargo publish.
fx-app = { path = "../fx-app" }

[lints]
workspace = true
{docs_rs}"#;

/// `fx-app`'s manifest.
const APP_MANIFEST: &str = r#"[package]
name = "fx-app"
description = "The fixture's app"
{fields}
[dependencies]
fx-core.workspace = true

[dev-dependencies]
# Written out here rather than inherited: the bump must find it too.
fx-core = { path = "../fx-core", version = "0.1.0", features = ["extra"] } # with extra

[lints]
workspace = true
{docs_rs}"#;

/// `fx-tool`'s manifest: not published.
const TOOL_MANIFEST: &str = r#"[package]
name = "fx-tool"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
fx-app.workspace = true
fx-core.workspace = true

[lints]
workspace = true
"#;

/// The changelog, with one unreleased change.
pub(crate) const CHANGELOG: &str = "# Changelog

## [Unreleased]

### Added

- `fx_core::one`.

### Fixed

## [0.0.1] - 2026-01-01

- The start.
";

/// The fixture workspace, removed on drop.
pub(crate) struct Fixture {
    /// The temporary directory holding it.
    dir: TempDir,
}

impl Fixture {
    /// Lays out the workspace and commits it in a fresh repository.
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let fixture = Self { dir };
        let fill = |template: &str| {
            template
                .replace("{fields}", PACKAGE_FIELDS)
                .replace("{docs_rs}", DOCS_RS)
        };
        fixture.write("Cargo.toml", ROOT_MANIFEST);
        fixture.write("CHANGELOG.md", CHANGELOG);
        fixture.write(".gitignore", "/target\n");
        fixture.write("crates/fx-core/Cargo.toml", &fill(CORE_MANIFEST));
        fixture.write(
            "crates/fx-core/README.md",
            "# fx-core\n\n```rust\nassert_eq!(fx_core::one(), 1);\n```\n",
        );
        fixture.write(
            "crates/fx-core/src/lib.rs",
            "#![doc = include_str!(\"../README.md\")]\n#![cfg_attr(docsrs, feature(doc_cfg))]\n\n\
             /// One.\npub fn one() -> u32 {\n    1\n}\n\n\
             /// Two, with `extra`.\n#[cfg(feature = \"extra\")]\npub fn two() -> u32 {\n    2\n}\n",
        );
        fixture.write("crates/fx-app/Cargo.toml", &fill(APP_MANIFEST));
        fixture.write(
            "crates/fx-app/README.md",
            "# fx-app\n\n```rust\nassert_eq!(fx_app::three(), 3);\n```\n",
        );
        fixture.write(
            "crates/fx-app/src/lib.rs",
            "#![doc = include_str!(\"../README.md\")]\n\n\
             /// Three.\npub fn three() -> u32 {\n    fx_core::one() + 2\n}\n",
        );
        fixture.write("crates/fx-tool/Cargo.toml", TOOL_MANIFEST);
        fixture.write(
            "crates/fx-tool/src/main.rs",
            "//! The tool.\n\nfn main() {\n    println!(\"{}\", fx_app::three());\n}\n",
        );
        fixture.git(&["init", "--quiet", "--initial-branch=main"]);
        fixture.git(&["config", "user.name", "xtask tests"]);
        fixture.git(&["config", "user.email", "xtask@example.com"]);
        fixture.git(&["config", "commit.gpgsign", "false"]);
        fixture.git(&["config", "tag.gpgsign", "false"]);
        fixture.commit("the fixture");
        fixture
    }

    /// The workspace root.
    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the workspace.
    pub(crate) fn path(&self, relative: &str) -> PathBuf {
        self.root().join(relative)
    }

    /// Writes a file, creating its directory.
    pub(crate) fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().expect("a parent")).expect("create directory");
        fs::write(&path, text).expect("write fixture file");
    }

    /// Reads a file of the workspace.
    pub(crate) fn read(&self, relative: &str) -> String {
        fs::read_to_string(self.path(relative)).expect("read fixture file")
    }

    /// Runs git in the workspace and returns its stdout; panics on failure.
    pub(crate) fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .arg("-C")
            .arg(self.root())
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Commits everything.
    pub(crate) fn commit(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "--quiet", "-m", message]);
    }
}
