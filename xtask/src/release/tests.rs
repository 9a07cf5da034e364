//! Tests of `cargo xtask release` on the fixture workspace (and, for the
//! dry run, on a clone of this repository): every refusal, the dry run,
//! and a whole release down to the commit, the tag and the packages.

use std::process::Command;

use super::*;
use crate::fixture::Fixture;

/// A release of the fixture, dated for the tests, with `cargo check` as
/// its checks and its own target directory.
fn release(fixture: &Fixture) -> Release {
    let target = fixture.path("target").display().to_string();
    Release {
        date: "2026-12-03".to_owned(),
        ..Release::new(fixture.root())
    }
    .checks(&["check", "--workspace", "--all-targets", "--offline"])
    .env("CARGO_TARGET_DIR", &target)
}

/// `version` parsed.
fn version(text: &str) -> Version {
    text.parse().unwrap()
}

/// The error of planning `version` on the fixture, as text.
fn refusal(fixture: &Fixture, to: &str) -> String {
    format!("{:#}", release(fixture).plan(&version(to)).unwrap_err())
}

/// A modified or an untracked file stops the release.
#[test]
fn refuses_a_dirty_tree() {
    let fixture = Fixture::new();
    fixture.write("crates/fx-core/src/lib.rs", "//! Changed.\n");
    let err = refusal(&fixture, "0.2.0");
    assert!(err.contains("uncommitted changes"), "{err}");
    assert!(err.contains("crates/fx-core/src/lib.rs"), "{err}");

    let fixture = Fixture::new();
    fixture.write("notes.txt", "not committed\n");
    let err = refusal(&fixture, "0.2.0");
    assert!(err.contains("notes.txt"), "{err}");
}

/// The same version, an older one and a lower pre-release are refused.
#[test]
fn refuses_a_version_that_is_not_newer() {
    let fixture = Fixture::new();
    for to in ["0.1.0", "0.0.9", "0.1.0-rc.1"] {
        let err = refusal(&fixture, to);
        assert!(
            err.contains("not newer than the current version 0.1.0"),
            "{to}: {err}"
        );
    }
    assert!(release(&fixture).plan(&version("0.1.1")).is_ok());
}

/// A version whose tag exists was released (or started) already.
#[test]
fn refuses_an_existing_tag() {
    let fixture = Fixture::new();
    fixture.git(&["tag", "v0.2.0"]);
    let err = refusal(&fixture, "0.2.0");
    assert!(err.contains("the tag v0.2.0 already exists"), "{err}");
}

/// Nothing under `[Unreleased]` but headings: nothing to release.
#[test]
fn refuses_an_empty_unreleased_section() {
    let fixture = Fixture::new();
    fixture.write(
        "CHANGELOG.md",
        "# Changelog\n\n## [Unreleased]\n\n### Added\n\n### Fixed\n\n## [0.0.1] - 2026-01-01\n\n- The start.\n",
    );
    fixture.commit("empty unreleased");
    let err = refusal(&fixture, "0.2.0");
    assert!(
        err.contains("[Unreleased] section lists no change"),
        "{err}"
    );
}

/// Crates out of step with the workspace's version are refused.
#[test]
fn refuses_crates_out_of_step() {
    let fixture = Fixture::new();
    let manifest = fixture
        .read("crates/fx-app/Cargo.toml")
        .replace("version.workspace = true", "version = \"0.1.5\"");
    fixture.write("crates/fx-app/Cargo.toml", &manifest);
    fixture.commit("out of step");
    let err = refusal(&fixture, "0.2.0");
    assert!(err.contains("fx-app 0.1.5"), "{err}");
}

/// The plan: every edit, comments kept, the crates in dependency order.
#[test]
fn plans_the_bump_the_roll_and_the_order() {
    let fixture = Fixture::new();
    let plan = release(&fixture).plan(&version("0.2.0")).unwrap();
    assert_eq!(plan.current, version("0.1.0"));
    assert_eq!(plan.tag, "v0.2.0");
    assert_eq!(plan.previous_tag, None);
    assert_eq!(plan.order, ["fx-core", "fx-app"]);
    let edited: Vec<String> = plan
        .edits
        .iter()
        .map(|edit| {
            edit.path
                .strip_prefix(fixture.root())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        edited,
        ["Cargo.toml", "crates/fx-app/Cargo.toml", "CHANGELOG.md"]
    );
    let root = &plan.edits[0].after;
    assert_eq!(
        *root, ROOT_MANIFEST_BUMPED,
        "the root manifest changes in its versions only"
    );
    assert!(plan.edits[1].after.contains(
        "fx-core = { path = \"../fx-core\", version = \"0.2.0\", features = [\"extra\"] } # with extra"
    ));
}

/// The fixture's root manifest after the bump to 0.2.0.
const ROOT_MANIFEST_BUMPED: &str = r#"[workspace]
resolver = "3"
members = ["crates/*"]

[workspace.package]
# Every publishable crate inherits this version: they release in lock-step.
version = "0.2.0"
edition = "2024"
license = "MIT OR Apache-2.0"
repository = "https://example.com/fx"

[workspace.dependencies]
# Internal crates: path + version so they can be published.
fx-core = { path = "crates/fx-core", version = "0.2.0" } # the vocabulary
fx-app = { path = "crates/fx-app", version = "0.2.0" }

[workspace.lints.rust]
unexpected_cfgs = { level = "warn", check-cfg = ["cfg(docsrs)"] }
"#;

/// The previous release tag is the newest one below the new version.
#[test]
fn finds_the_previous_release_tag() {
    let fixture = Fixture::new();
    for tag in ["v0.0.1", "v0.1.0", "v0.3.0", "not-a-release"] {
        fixture.git(&["tag", tag]);
    }
    let plan = release(&fixture).plan(&version("0.2.0")).unwrap();
    assert_eq!(plan.previous_tag.as_deref(), Some("v0.1.0"));
}

/// `--dry-run` writes nothing: the same files, no commit, no tag.
#[test]
fn dry_run_changes_nothing() {
    let fixture = Fixture::new();
    let head = fixture.git(&["rev-parse", "HEAD"]);
    let manifest = fixture.read("Cargo.toml");
    let changelog = fixture.read("CHANGELOG.md");
    release(&fixture)
        .run(&Options {
            version: version("0.2.0"),
            dry_run: true,
        })
        .unwrap();
    assert_eq!(fixture.git(&["status", "--porcelain", "--ignored"]), "");
    assert_eq!(fixture.git(&["rev-parse", "HEAD"]), head);
    assert_eq!(fixture.git(&["tag", "--list"]), "");
    assert_eq!(fixture.read("Cargo.toml"), manifest);
    assert_eq!(fixture.read("CHANGELOG.md"), changelog);
}

/// A whole release: checks run, every crate packaged, one commit with the
/// bump, the roll and the lock file, one annotated tag, a clean tree.
#[test]
fn release_commits_and_tags_after_packaging_every_crate() {
    let fixture = Fixture::new();
    let before = fixture.git(&["rev-parse", "HEAD"]);
    release(&fixture)
        .run(&Options {
            version: version("0.2.0"),
            dry_run: false,
        })
        .unwrap();
    for name in ["fx-core", "fx-app"] {
        let file = fixture.path(&format!("target/package/{name}-0.2.0.crate"));
        assert!(file.is_file(), "{} missing", file.display());
    }
    assert!(!fixture.path("target/package/fx-tool-0.0.0.crate").exists());
    assert_eq!(fixture.git(&["status", "--porcelain"]), "");
    assert_eq!(
        fixture.git(&["log", "-1", "--format=%s"]).trim(),
        "Release 0.2.0"
    );
    assert_eq!(fixture.git(&["rev-parse", "HEAD~1"]), before);
    assert_eq!(
        fixture.git(&["tag", "--points-at", "HEAD"]).trim(),
        "v0.2.0"
    );
    assert_eq!(fixture.git(&["cat-file", "-t", "v0.2.0"]).trim(), "tag");
    let changed = fixture.git(&["show", "--name-only", "--format=", "HEAD"]);
    let mut changed: Vec<&str> = changed.lines().collect();
    changed.sort_unstable();
    assert_eq!(
        changed,
        [
            "CHANGELOG.md",
            "Cargo.lock",
            "Cargo.toml",
            "crates/fx-app/Cargo.toml"
        ]
    );
    assert_eq!(fixture.read("Cargo.toml"), ROOT_MANIFEST_BUMPED);
    let changelog = fixture.read("CHANGELOG.md");
    assert!(
        changelog.starts_with(
            "# Changelog\n\n## [Unreleased]\n\n## [0.2.0] - 2026-12-03\n\n### Added\n\n- `fx_core::one`.\n\n## [0.0.1]"
        ),
        "{changelog}"
    );
    let lock = fixture.read("Cargo.lock");
    assert!(
        lock.contains("name = \"fx-core\"\nversion = \"0.2.0\""),
        "{lock}"
    );
    // The next release starts from here: 0.2.0 is now the one to compare to.
    fixture.write(
        "CHANGELOG.md",
        &changelog.replace("## [Unreleased]\n", "## [Unreleased]\n\n- More.\n"),
    );
    fixture.commit("more");
    let plan = release(&fixture).plan(&version("0.2.1")).unwrap();
    assert_eq!(plan.previous_tag.as_deref(), Some("v0.2.0"));
    assert_eq!(plan.current, version("0.2.0"));
}

/// When a check fails after the edits, the files are put back and nothing
/// is committed or tagged.
#[test]
fn failed_checks_put_the_files_back() {
    let fixture = Fixture::new();
    fixture.write(
        "crates/fx-app/src/lib.rs",
        "#![doc = include_str!(\"../README.md\")]\n\n/// Three.\npub fn three() -> u32 {\n    fx_core::one() + \"2\"\n}\n",
    );
    fixture.commit("a compile error");
    let head = fixture.git(&["rev-parse", "HEAD"]);
    let err = release(&fixture)
        .run(&Options {
            version: version("0.2.0"),
            dry_run: false,
        })
        .unwrap_err();
    assert!(format!("{err:#}").contains("the checks failed"), "{err:#}");
    assert!(format!("{err:#}").contains("back as they were"), "{err:#}");
    // Cargo.lock did not exist before and is not tracked: only it may be left.
    let status = fixture.git(&["status", "--porcelain"]);
    assert!(
        status.lines().all(|line| line == "?? Cargo.lock"),
        "{status}"
    );
    assert_eq!(fixture.git(&["rev-parse", "HEAD"]), head);
    assert_eq!(fixture.git(&["tag", "--list"]), "");
    assert!(fixture.read("Cargo.toml").contains("version = \"0.1.0\""));
}

/// `cargo xtask release 0.X.0 --dry-run` on a clean clone of this
/// repository: the refusals pass, the plan covers every publishable crate,
/// and the clone is left exactly as it was.
#[test]
fn dry_run_on_a_clone_of_this_repository_changes_nothing() {
    let clone = tempfile::tempdir().unwrap();
    let git = |dir: &Path, args: &[&str]| -> String {
        let output = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    git(
        workspace_root(),
        &[
            "clone",
            "--quiet",
            "--no-hardlinks",
            &workspace_root().display().to_string(),
            &clone.path().display().to_string(),
        ],
    );
    let root = clone.path();
    let changelog = fs::read_to_string(root.join("CHANGELOG.md")).unwrap();
    if !changelog::has_unreleased_changes(&changelog).unwrap() {
        // Right after a release: give the clone something to release.
        let changelog = changelog.replace("## [Unreleased]\n", "## [Unreleased]\n\n- A change.\n");
        fs::write(root.join("CHANGELOG.md"), changelog).unwrap();
        git(
            root,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "commit",
                "--quiet",
                "-am",
                "a change",
            ],
        );
    }
    let current = Workspace::load(root)
        .unwrap()
        .get("nerve")
        .unwrap()
        .version
        .clone();
    let next = Version::new(current.major, current.minor + 1, 0);
    let head = git(root, &["rev-parse", "HEAD"]);
    let plan = Release::new(root)
        .run(&Options {
            version: next.clone(),
            dry_run: true,
        })
        .unwrap();
    assert_eq!(plan.version, next);
    for name in [
        "nerve-core",
        "nerve-router",
        "nerve-journal",
        "nerve-consumers",
        "nerve-otel",
        "nerve-nats",
        "nerve",
        "nerve-cli",
    ] {
        assert!(
            plan.order.iter().any(|n| n == name),
            "{name} not in {:?}",
            plan.order
        );
    }
    let position = |name: &str| plan.order.iter().position(|n| n == name).unwrap();
    assert!(position("nerve-core") < position("nerve-router"));
    assert!(position("nerve-journal") < position("nerve-nats"));
    assert!(position("nerve") < position("nerve-cli"));
    assert!(!plan.order.iter().any(|n| n == "xtask"));
    assert_eq!(git(root, &["status", "--porcelain"]), "");
    assert_eq!(git(root, &["rev-parse", "HEAD"]), head);
}

/// Command-line forms of the release command.
#[test]
fn parses_release_arguments() {
    let parse_args = |args: &[&str]| parse(args.iter().map(|arg| (*arg).to_owned()));
    assert_eq!(
        parse_args(&["0.2.0", "--dry-run"]).unwrap(),
        Options {
            version: version("0.2.0"),
            dry_run: true
        }
    );
    assert_eq!(parse_args(&["v1.0.0"]).unwrap().version, version("1.0.0"));
    for bad in [&[][..], &["0.2"], &["0.2.0", "0.3.0"], &["0.2.0", "--push"]] {
        assert!(parse_args(bad).is_err(), "{bad:?}");
    }
}

/// Dates of the changelog heading.
#[test]
fn computes_civil_dates() {
    assert_eq!(civil_date(0), (1970, 1, 1));
    assert_eq!(civil_date(20_423), (2025, 12, 1));
    assert_eq!(civil_date(11_016), (2000, 2, 29));
    assert_eq!(today().len(), "2026-12-03".len());
}
