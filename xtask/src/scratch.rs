//! Tests that a user's project depending on one nerve crate alone builds
//! and runs that crate's README example: a scratch package outside the
//! workspace (under the target directory) with the crate as its only
//! dependency, the README's first Rust block as `main`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::cargo::{Cargo, workspace_root};
use crate::metadata::Workspace;

/// The README example of `name` as the body of a `main` returning a
/// `Result`: hidden lines (`# `) shown, as rustdoc compiles them.
fn main_rs(readme: &str) -> String {
    /// Where the scan is: in text, in the first Rust block, in another.
    #[derive(PartialEq)]
    enum State {
        Text,
        Rust,
        Other,
    }
    let mut body = String::new();
    let mut state = State::Text;
    for line in readme.lines() {
        let fence = line.trim_start().strip_prefix("```");
        state = match (state, fence) {
            (State::Text, Some(info)) => {
                let lang = info.split(',').next().unwrap_or_default().trim();
                if lang.is_empty() || lang == "rust" {
                    State::Rust
                } else {
                    State::Other
                }
            }
            (State::Rust, Some(_)) => break,
            (State::Other, Some(_)) => State::Text,
            (State::Rust, None) => {
                let shown = line
                    .strip_prefix("# ")
                    .or_else(|| (line == "#").then_some(""))
                    .unwrap_or(line);
                body.push_str("    ");
                body.push_str(shown);
                body.push('\n');
                State::Rust
            }
            (state, None) => state,
        };
    }
    assert!(!body.is_empty(), "the README has no Rust block");
    format!("fn main() -> Result<(), Box<dyn std::error::Error>> {{\n{body}}}\n")
}

/// Creates the scratch package for `name` under `dir` and runs it.
fn run_alone(name: &str, dir: &Path) {
    let workspace = Workspace::load(workspace_root()).unwrap();
    let krate = workspace.get(name).unwrap();
    let readme = fs::read_to_string(krate.dir().join("README.md")).unwrap();
    let project = dir.join(format!("{name}-alone"));
    fs::create_dir_all(project.join("src")).unwrap();
    fs::write(
        project.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}-alone\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
             [dependencies]\n{name} = {{ path = {:?} }}\n\n# Not part of any workspace above it.\n[workspace]\n",
            krate.dir().display().to_string()
        ),
    )
    .unwrap();
    fs::write(project.join("src/main.rs"), main_rs(&readme)).unwrap();
    // The workspace's lock file: the same dependency versions, so the
    // build reuses what the workspace already compiled, offline.
    fs::copy(
        workspace_root().join("Cargo.lock"),
        project.join("Cargo.lock"),
    )
    .unwrap();
    Cargo::new(["run", "--quiet", "--offline"])
        .dir(&project)
        .run()
        .unwrap_or_else(|err| panic!("{name}'s README example, alone: {err:#}"));
}

/// Where the scratch packages go: the target directory.
fn scratch_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    target.join("xtask-scratch")
}

/// A project depending on `nerve-core` alone runs its README example.
#[test]
fn nerve_core_alone_runs_its_readme_example() {
    run_alone("nerve-core", &scratch_dir());
}

/// A project depending on `nerve-journal` alone runs its README example.
#[test]
fn nerve_journal_alone_runs_its_readme_example() {
    run_alone("nerve-journal", &scratch_dir());
}

/// The README block becomes `main`'s body, hidden lines included.
#[test]
fn readme_block_becomes_main() {
    let readme = "# T\n\n```toml\n[x]\n```\n\n```rust,no_run\nlet a = 1;\n# Ok::<(), Box<dyn std::error::Error>>(())\n```\n```rust\nsecond();\n```\n";
    assert_eq!(
        main_rs(readme),
        "fn main() -> Result<(), Box<dyn std::error::Error>> {\n    let a = 1;\n    Ok::<(), Box<dyn std::error::Error>>(())\n}\n"
    );
}
