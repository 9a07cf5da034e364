//! The crate-level conventions of `cargo xtask tidy`, read from `cargo
//! metadata` and the manifests (through `toml_edit`), never by scanning
//! text:
//!
//! - crates depend on each other only in the directions of [`LAYERS`];
//! - every publishable crate carries what crates.io and docs.rs show: a
//!   README that exists, a description, license, repository, keywords,
//!   categories, and `[package.metadata.docs.rs]` with `all-features = true`
//!   and `rustdoc-args = ["--cfg", "docsrs"]`;
//! - a publishable library with features turns on `doc(cfg)` badges under
//!   `docsrs` (`#![cfg_attr(docsrs, feature(doc_cfg))]`), and the workspace's
//!   `unexpected_cfgs` lint knows `cfg(docsrs)`;
//! - a library's README holds a Rust example that uses that crate without
//!   the facade (naming no other member but those it depends on), compiled
//!   as a doctest (`#[doc = include_str!("../README.md")]`);
//! - internal dependencies have both `path` (for the workspace) and
//!   `version` (for the registry), dev-dependencies on the facade excepted
//!   (path only: `cargo publish` drops them, and with them the cycle);
//! - every publishable crate has the workspace's version and every internal
//!   requirement asks for exactly that version (lock-step releases).

use std::fs;
use std::path::{Path, PathBuf};

use semver::{Version, VersionReq};
use toml_edit::{DocumentMut, Item};

use crate::metadata::{Crate, Kind, Workspace};

/// Which members each member may depend on (normal and build
/// dependencies); see docs/architecture.md, "Crates and layering". A
/// member missing from this table is itself a problem: a new crate must
/// take its place in the layering on purpose.
pub(crate) const LAYERS: &[(&str, &[&str])] = &[
    ("nerve-core", &[]),
    ("nerve-router", &["nerve-core"]),
    // Sideways on purpose: `replay` needs a `Bus`.
    ("nerve-journal", &["nerve-core", "nerve-router"]),
    ("nerve-consumers", &["nerve-core", "nerve-router"]),
    ("nerve-otel", &["nerve-core"]),
    // Sideways on purpose: the journal's line is the message body.
    (
        "nerve-nats",
        &["nerve-core", "nerve-router", "nerve-journal"],
    ),
    // The dashboard follows journals and buses.
    (
        "nerve-dashboard",
        &["nerve-core", "nerve-router", "nerve-journal"],
    ),
    (
        "nerve",
        &[
            "nerve-core",
            "nerve-router",
            "nerve-journal",
            "nerve-consumers",
            "nerve-otel",
            "nerve-nats",
            "nerve-dashboard",
        ],
    ),
    // The binary uses nerve the way a user's program does.
    ("nerve-cli", &["nerve"]),
    ("xtask", &[]),
];

/// The crate whose README is the workspace's own and whose examples are
/// the doc examples of every other crate: it is checked for metadata, not
/// for a README of its own.
const FACADE: &str = "nerve";

/// The attribute that turns feature badges on for docs.rs builds.
const DOC_CFG: &str = "#![cfg_attr(docsrs, feature(doc_cfg))]";

/// One broken convention: the file to fix and what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Finding {
    /// The file to change.
    pub(crate) path: PathBuf,
    /// What is wrong with it.
    pub(crate) message: String,
}

/// Every crate-level problem of `workspace`, with `layers` as the allowed
/// edges.
pub(crate) fn check(workspace: &Workspace, layers: &[(&str, &[&str])]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let root_manifest = workspace.root.join("Cargo.toml");
    let root = match fs::read_to_string(&root_manifest)
        .map_err(|err| err.to_string())
        .and_then(|text| text.parse::<DocumentMut>().map_err(|err| err.to_string()))
    {
        Ok(root) => root,
        Err(err) => {
            findings.push(finding(&root_manifest, format!("cannot read: {err}")));
            return findings;
        }
    };
    check_check_cfg(&root, &root_manifest, &mut findings);
    let version = match workspace_version(&root) {
        Ok(version) => Some(version),
        Err(message) => {
            findings.push(finding(&root_manifest, message));
            None
        }
    };
    for krate in &workspace.crates {
        check_layers(workspace, krate, layers, &mut findings);
        check_internal_dependencies(workspace, krate, version.as_ref(), &mut findings);
        if krate.publishable {
            check_package_fields(krate, &mut findings);
            check_docs_rs(krate, &mut findings);
            if let Some(version) = &version {
                if krate.version != *version {
                    findings.push(finding(
                        &krate.manifest,
                        format!(
                            "version {} is not the workspace's {version}; publishable crates are released in lock-step",
                            krate.version
                        ),
                    ));
                }
            }
            if krate.has_lib() && krate.name != FACADE {
                check_readme_example(workspace, krate, &mut findings);
            }
        }
    }
    if let Err(err) = workspace.publish_order() {
        findings.push(finding(&root_manifest, format!("{err:#}")));
    }
    findings
}

/// The `workspace.package.version` of a root manifest.
pub(crate) fn workspace_version(root: &DocumentMut) -> Result<Version, String> {
    let text = root
        .get("workspace")
        .and_then(|workspace| workspace.get("package"))
        .and_then(|package| package.get("version"))
        .and_then(Item::as_str)
        .ok_or("no `[workspace.package] version`; the crates inherit their version from it")?;
    text.parse()
        .map_err(|err| format!("`[workspace.package] version = \"{text}\"`: {err}"))
}

/// A finding about `path`.
fn finding(path: &Path, message: impl Into<String>) -> Finding {
    Finding {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The workspace's `unexpected_cfgs` lint must know `cfg(docsrs)`, or the
/// `cfg_attr(docsrs, ...)` attributes warn (and fail under `-D warnings`).
fn check_check_cfg(root: &DocumentMut, path: &Path, findings: &mut Vec<Finding>) {
    let knows_docsrs = root
        .get("workspace")
        .and_then(|item| item.get("lints"))
        .and_then(|item| item.get("rust"))
        .and_then(|item| item.get("unexpected_cfgs"))
        .and_then(|item| item.get("check-cfg"))
        .and_then(Item::as_array)
        .is_some_and(|cfgs| cfgs.iter().any(|cfg| cfg.as_str() == Some("cfg(docsrs)")));
    if !knows_docsrs {
        findings.push(finding(
            path,
            "`[workspace.lints.rust] unexpected_cfgs` has no `check-cfg = [\"cfg(docsrs)\"]`",
        ));
    }
}

/// Records each normal or build dependency on a member that the layering
/// does not allow.
fn check_layers(
    workspace: &Workspace,
    krate: &Crate,
    layers: &[(&str, &[&str])],
    findings: &mut Vec<Finding>,
) {
    let Some((_, allowed)) = layers.iter().find(|(name, _)| *name == krate.name) else {
        findings.push(finding(
            &krate.manifest,
            format!(
                "`{}` has no place in the layering table (`LAYERS` in xtask/src/tidy/crates.rs)",
                krate.name
            ),
        ));
        return;
    };
    for dep in workspace.internal_dependencies(krate) {
        if dep.kind != Kind::Dev && !allowed.contains(&dep.name.as_str()) {
            findings.push(finding(
                &krate.manifest,
                format!(
                    "`{}` depends on `{}` ([{}]), against the layering: it may depend on {}",
                    krate.name,
                    dep.name,
                    dep.kind.table(),
                    if allowed.is_empty() {
                        "no other member".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                ),
            ));
        }
    }
}

/// Internal dependencies carry `path` and `version`, and the version is the
/// workspace's; a crate that publishes depends on nothing that does not.
fn check_internal_dependencies(
    workspace: &Workspace,
    krate: &Crate,
    version: Option<&Version>,
    findings: &mut Vec<Finding>,
) {
    for dep in workspace.internal_dependencies(krate) {
        let table = dep.kind.table();
        if dep.path.is_none() {
            findings.push(finding(
                &krate.manifest,
                format!(
                    "[{table}] `{}` has no `path`: inside the workspace it must build from source",
                    dep.name
                ),
            ));
        }
        if !dep.survives_publish() {
            // A path-only dev-dependency: dropped by `cargo publish`.
            continue;
        }
        if dep.req == VersionReq::STAR {
            findings.push(finding(
                &krate.manifest,
                format!(
                    "[{table}] `{}` has no `version`: `cargo publish` needs one (or, for a dev-dependency, leave only the `path` so that publishing drops it)",
                    dep.name
                ),
            ));
            continue;
        }
        if let Some(version) = version {
            let exact =
                VersionReq::parse(&version.to_string()).expect("a version is a requirement");
            if dep.req != exact {
                findings.push(finding(
                    &krate.manifest,
                    format!(
                        "[{table}] `{}` asks for `{}`, not the workspace's version `{version}`",
                        dep.name, dep.req
                    ),
                ));
            }
        }
        let target_publishes = workspace
            .get(&dep.name)
            .is_some_and(|target| target.publishable);
        if krate.publishable && !target_publishes {
            findings.push(finding(
                &krate.manifest,
                format!(
                    "[{table}] `{}` does not publish (`publish = false`), so `{}` cannot either",
                    dep.name, krate.name
                ),
            ));
        }
    }
}

/// The fields crates.io shows and searches.
fn check_package_fields(krate: &Crate, findings: &mut Vec<Finding>) {
    let package = &krate.package;
    let mut missing = Vec::new();
    if package.description.as_deref().is_none_or(str::is_empty) {
        missing.push("description");
    }
    if package.license.is_none() && package.license_file.is_none() {
        missing.push("license");
    }
    if package.repository.is_none() {
        missing.push("repository");
    }
    if package.keywords.is_empty() {
        missing.push("keywords");
    }
    if package.categories.is_empty() {
        missing.push("categories");
    }
    if !missing.is_empty() {
        findings.push(finding(
            &krate.manifest,
            format!("publishable crate without {}", missing.join(", ")),
        ));
    }
    match &package.readme {
        None => findings.push(finding(
            &krate.manifest,
            "publishable crate without a README (add README.md beside Cargo.toml)",
        )),
        Some(readme) => {
            let path = krate.dir().join(readme.as_std_path());
            if !path.is_file() {
                findings.push(finding(
                    &krate.manifest,
                    format!("its readme `{readme}` does not exist"),
                ));
            }
        }
    }
}

/// `[package.metadata.docs.rs]` builds every feature with `--cfg docsrs`,
/// and a library with features shows which feature each item needs.
fn check_docs_rs(krate: &Crate, findings: &mut Vec<Finding>) {
    let docs_rs = &krate.package.metadata["docs"]["rs"];
    if docs_rs["all-features"] != true {
        findings.push(finding(
            &krate.manifest,
            "no `[package.metadata.docs.rs] all-features = true`",
        ));
    }
    let has_cfg_docsrs = docs_rs["rustdoc-args"].as_array().is_some_and(|args| {
        args.windows(2)
            .any(|pair| pair[0] == "--cfg" && pair[1] == "docsrs")
    });
    if !has_cfg_docsrs {
        findings.push(finding(
            &krate.manifest,
            "no `[package.metadata.docs.rs] rustdoc-args = [\"--cfg\", \"docsrs\"]`",
        ));
    }
    if !krate.has_lib() || krate.features.is_empty() {
        return;
    }
    let lib = krate.dir().join("src").join("lib.rs");
    let text = fs::read_to_string(&lib).unwrap_or_default();
    if !text.lines().any(|line| line.trim() == DOC_CFG) {
        findings.push(finding(
            &lib,
            format!("has features but no `{DOC_CFG}`, so docs.rs shows no feature badges"),
        ));
    }
}

/// A library's README has a Rust example, compiled as a doctest of the
/// crate, written for a user who depends on this crate rather than the
/// facade: it names no member of the workspace but the crate itself and
/// the members it depends on (which such a user adds beside it).
fn check_readme_example(workspace: &Workspace, krate: &Crate, findings: &mut Vec<Finding>) {
    let Some(readme) = &krate.package.readme else {
        return; // reported by check_package_fields
    };
    let readme = krate.dir().join(readme.as_std_path());
    let Ok(text) = fs::read_to_string(&readme) else {
        return;
    };
    let code = rust_blocks(&text);
    if code.is_empty() {
        findings.push(finding(
            &readme,
            "has no ```rust example of the crate used without the facade",
        ));
    }
    let allowed: Vec<&str> = workspace
        .internal_dependencies(krate)
        .filter(|dep| dep.kind == Kind::Normal)
        .map(|dep| dep.name.as_str())
        .chain([krate.name.as_str()])
        .collect();
    for other in workspace
        .crates
        .iter()
        .filter(|other| !allowed.contains(&other.name.as_str()))
    {
        let path = format!("{}::", other.name.replace('-', "_"));
        if code.iter().any(|block| names_path(block, &path)) {
            findings.push(finding(
                &readme,
                format!(
                    "its example uses `{path}`, which `{}` does not depend on; it should need {} alone",
                    krate.name,
                    allowed.join(" and ")
                ),
            ));
        }
    }
    let lib = krate.dir().join("src").join("lib.rs");
    let text = fs::read_to_string(&lib).unwrap_or_default();
    if !text.contains("include_str!(\"../README.md\")") {
        findings.push(finding(
            &lib,
            "does not compile its README's example: add `#[doc = include_str!(\"../README.md\")]` (a doctest)",
        ));
    }
}

/// The code of every Rust block (```` ``` ```` or ```` ```rust ````) of a
/// Markdown text; blocks in other languages are skipped whole.
fn rust_blocks(markdown: &str) -> Vec<String> {
    /// Where the scan is: outside any block, in a Rust one, in another.
    enum State {
        Text,
        Rust(String),
        Other,
    }
    let mut blocks = Vec::new();
    let mut state = State::Text;
    for line in markdown.lines() {
        let fence = line.trim_start().strip_prefix("```");
        state = match (state, fence) {
            (State::Text, Some(info)) => {
                let lang = info.trim().split(',').next().unwrap_or_default().trim();
                if lang.is_empty() || lang == "rust" {
                    State::Rust(String::new())
                } else {
                    State::Other
                }
            }
            (State::Rust(block), Some(_)) => {
                blocks.push(block);
                State::Text
            }
            (State::Other, Some(_)) => State::Text,
            (State::Rust(mut block), None) => {
                block.push_str(line);
                block.push('\n');
                State::Rust(block)
            }
            (state, None) => state,
        };
    }
    blocks.retain(|block| !block.trim().is_empty());
    blocks
}

/// Whether `code` uses `path` (`nerve_core::`) as a path of its own.
fn names_path(code: &str, path: &str) -> bool {
    code.match_indices(path).any(|(at, _)| {
        !code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// Tests on the fixture workspace, each planting one problem.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Fixture;

    /// The fixture's layering: the app on the core, the tool on both.
    const FIXTURE_LAYERS: &[(&str, &[&str])] = &[
        ("fx-core", &[]),
        ("fx-app", &["fx-core"]),
        ("fx-tool", &["fx-core", "fx-app"]),
    ];

    /// The findings for the fixture as it is now, as `path: message` with
    /// paths relative to its root.
    fn findings(fixture: &Fixture) -> Vec<String> {
        let workspace = Workspace::load(fixture.root()).unwrap();
        check(&workspace, FIXTURE_LAYERS)
            .into_iter()
            .map(|finding| {
                let path = finding
                    .path
                    .strip_prefix(fixture.root())
                    .unwrap_or(&finding.path);
                format!("{}: {}", path.display(), finding.message)
            })
            .collect()
    }

    /// Replaces `from` with `to` in a fixture file, checking it was there.
    fn edit(fixture: &Fixture, file: &str, from: &str, to: &str) {
        let text = fixture.read(file);
        assert!(text.contains(from), "{file} has no `{from}`");
        fixture.write(file, &text.replacen(from, to, 1));
    }

    /// The fixture as laid out keeps every convention.
    #[test]
    fn a_tidy_workspace_passes() {
        let fixture = Fixture::new();
        assert_eq!(findings(&fixture), Vec::<String>::new());
    }

    /// A dependency against the layering is found in cargo's metadata,
    /// whatever way the manifest spells it; a dev-dependency is not an edge.
    #[test]
    fn finds_a_planted_bad_edge() {
        let fixture = Fixture::new();
        edit(
            &fixture,
            "crates/fx-core/Cargo.toml",
            "[dev-dependencies]",
            "[target.'cfg(unix)'.dependencies.app]\npackage = \"fx-app\"\npath = \"../fx-app\"\nversion = \"0.1.0\"\n\n[dev-dependencies]",
        );
        let found = findings(&fixture);
        assert!(
            found.contains(&"crates/fx-core/Cargo.toml: `fx-core` depends on `fx-app` ([dependencies]), against the layering: it may depend on no other member".to_owned()),
            "{found:#?}"
        );
        // fx-app and fx-core now need each other to publish.
        assert!(found.iter().any(|f| f.contains("in a cycle")), "{found:#?}");
    }

    /// A crate with no place in the layering table is reported.
    #[test]
    fn finds_a_crate_outside_the_layering() {
        let fixture = Fixture::new();
        let workspace = Workspace::load(fixture.root()).unwrap();
        let found = check(&workspace, &FIXTURE_LAYERS[..2]);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0]
                .message
                .contains("`fx-tool` has no place in the layering table")
        );
    }

    /// A publishable crate without a README, or whose README example is
    /// missing, names another crate or is not compiled, is reported.
    #[test]
    fn finds_a_crate_without_a_readme() {
        let fixture = Fixture::new();
        std::fs::remove_file(fixture.path("crates/fx-app/README.md")).unwrap();
        assert_eq!(
            findings(&fixture),
            [
                "crates/fx-app/Cargo.toml: publishable crate without a README (add README.md beside Cargo.toml)"
            ]
        );

        let fixture = Fixture::new();
        fixture.write(
            "crates/fx-app/README.md",
            "# fx-app\n\n```text\nno code\n```\n",
        );
        assert_eq!(
            findings(&fixture),
            [
                "crates/fx-app/README.md: has no ```rust example of the crate used without the facade"
            ]
        );

        // fx-app depends on fx-core: its example may use both.
        let fixture = Fixture::new();
        fixture.write(
            "crates/fx-app/README.md",
            "```rust\nassert_eq!(fx_app::three(), fx_core::one() + 2);\n```\n",
        );
        assert_eq!(findings(&fixture), Vec::<String>::new());
        // fx-core does not depend on fx-app (only a path dev-dependency):
        // a user of fx-core alone could not run this.
        fixture.write(
            "crates/fx-core/README.md",
            "```rust\nassert_eq!(fx_app::three(), fx_core::one() + 2);\n```\n",
        );
        edit(
            &fixture,
            "crates/fx-core/src/lib.rs",
            "#![doc = include_str!(\"../README.md\")]\n",
            "",
        );
        assert_eq!(
            findings(&fixture),
            [
                "crates/fx-core/README.md: its example uses `fx_app::`, which `fx-core` does not depend on; it should need fx-core alone",
                "crates/fx-core/src/lib.rs: does not compile its README's example: add `#[doc = include_str!(\"../README.md\")]` (a doctest)",
            ]
        );
    }

    /// crates.io and docs.rs metadata, and the `doc(cfg)` badges.
    #[test]
    fn finds_missing_package_metadata() {
        let fixture = Fixture::new();
        edit(
            &fixture,
            "crates/fx-core/Cargo.toml",
            "keywords = [\"fixture\"]\n",
            "",
        );
        edit(
            &fixture,
            "crates/fx-core/Cargo.toml",
            "all-features = true\n",
            "",
        );
        edit(
            &fixture,
            "crates/fx-core/Cargo.toml",
            "repository.workspace = true\n",
            "",
        );
        edit(
            &fixture,
            "crates/fx-core/src/lib.rs",
            "#![cfg_attr(docsrs, feature(doc_cfg))]\n",
            "",
        );
        edit(
            &fixture,
            "Cargo.toml",
            "check-cfg = [\"cfg(docsrs)\"]",
            "check-cfg = []",
        );
        assert_eq!(
            findings(&fixture),
            [
                "Cargo.toml: `[workspace.lints.rust] unexpected_cfgs` has no `check-cfg = [\"cfg(docsrs)\"]`",
                "crates/fx-core/Cargo.toml: publishable crate without repository, keywords",
                "crates/fx-core/Cargo.toml: no `[package.metadata.docs.rs] all-features = true`",
                "crates/fx-core/src/lib.rs: has features but no `#![cfg_attr(docsrs, feature(doc_cfg))]`, so docs.rs shows no feature badges",
            ]
        );
    }

    /// Internal dependencies need `path` and `version`, at the workspace's
    /// version; publishable crates stay in step and off unpublished ones.
    #[test]
    fn finds_internal_dependencies_without_path_or_version() {
        let fixture = Fixture::new();
        edit(
            &fixture,
            "crates/fx-app/Cargo.toml",
            "fx-core = { path = \"../fx-core\", version = \"0.1.0\", features = [\"extra\"] }",
            "fx-core = { path = \"../fx-core\", features = [\"extra\"] }",
        );
        edit(
            &fixture,
            "Cargo.toml",
            "fx-app = { path = \"crates/fx-app\", version = \"0.1.0\" }",
            "fx-app = { path = \"crates/fx-app\", version = \"0.0.9\" }",
        );
        assert_eq!(
            findings(&fixture),
            [
                "crates/fx-tool/Cargo.toml: [dependencies] `fx-app` asks for `^0.0.9`, not the workspace's version `0.1.0`",
            ],
            "a path-only dev-dependency is dropped at publish, so it is fine"
        );
        edit(
            &fixture,
            "crates/fx-app/Cargo.toml",
            "fx-core.workspace = true",
            "fx-core = { path = \"../fx-core\" }",
        );
        edit(
            &fixture,
            "crates/fx-core/Cargo.toml",
            "version.workspace = true",
            "version = \"0.1.1\"",
        );
        let found = findings(&fixture);
        assert!(found.contains(&"crates/fx-app/Cargo.toml: [dependencies] `fx-core` has no `version`: `cargo publish` needs one (or, for a dev-dependency, leave only the `path` so that publishing drops it)".to_owned()), "{found:#?}");
        assert!(found.contains(&"crates/fx-core/Cargo.toml: version 0.1.1 is not the workspace's 0.1.0; publishable crates are released in lock-step".to_owned()), "{found:#?}");
    }

    /// A publishable crate cannot depend on one that does not publish.
    #[test]
    fn finds_a_dependency_on_an_unpublished_crate() {
        let fixture = Fixture::new();
        edit(
            &fixture,
            "crates/fx-core/Cargo.toml",
            "[package]\n",
            "[package]\npublish = false\n",
        );
        let found = findings(&fixture);
        assert!(
            found.contains(&"crates/fx-app/Cargo.toml: [dependencies] `fx-core` does not publish (`publish = false`), so `fx-app` cannot either".to_owned()),
            "{found:#?}"
        );
    }

    /// Rust blocks of a README: fenced without a language or as `rust`.
    #[test]
    fn reads_rust_blocks_of_markdown() {
        let text = "# T\n\n```rust,no_run\nlet a = 1;\n```\n\n```toml\n[dependencies]\n```\n\n```\nlet b = 2;\n```\n";
        assert_eq!(rust_blocks(text), ["let a = 1;\n", "let b = 2;\n"]);
        assert!(names_path("use fx_core::one;", "fx_core::"));
        assert!(!names_path("use my_fx_core::one;", "fx_core::"));
    }
}
