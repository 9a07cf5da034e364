//! `cargo xtask tidy`: project conventions that no compiler or linter checks.
//!
//! - every `crates/*/Cargo.toml` inherits the workspace lints (`[lints]` with
//!   `workspace = true`);
//! - no file under `crates/` contains a leftover `todo!(`, `unimplemented!(`
//!   or `dbg!(` (this file is under `xtask/`, so it may name them);
//! - every `crates/*/src/lib.rs` starts with a `//!` crate doc;
//! - doc examples in library crates are written from the facade's point of
//!   view: no `nerve_core::`, `nerve_router::`, `nerve_journal::`,
//!   `nerve_consumers::`, `nerve_nats::`, `nerve_otel::` or `serde_json::` paths, which a
//!   user of `nerve` alone could not paste;
//! - `CHANGELOG.md` has a standing `## [Unreleased]` section;
//! - `README.md` shows how to run the demo and how to run the checks;
//! - the modules of `crates/nerve-router/src` depend on each other one way:
//!   no file reaches (through `crate::…` paths) a file that reaches it;
//! - the crate-level conventions of [`crates`], read from `cargo metadata`:
//!   the layering of crates, what every publishable crate carries for
//!   crates.io and docs.rs, internal dependencies with `path` and
//!   `version`, versions in lock-step.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use toml_edit::{DocumentMut, Item};

use crate::cargo::workspace_root;
use crate::metadata::Workspace;

pub(crate) mod crates;

/// Macros that mark unfinished or debugging code.
const LEFTOVERS: [&str; 3] = ["todo!(", "unimplemented!(", "dbg!("];

/// Commands the README shows for trying the project; one is enough.
const README_DEMOS: [&str; 2] = [
    "cargo run --release -p nerve-cli -- demo",
    "cargo run --release -p nerve --example quickstart",
];

/// Paths a doc example may not use: a user depends on `nerve` alone, which
/// re-exports the crates as `nerve::…` and serde_json's `json!` and `Value`.
const INTERNAL_PATHS: [&str; 7] = [
    "nerve_consumers::",
    "nerve_core::",
    "nerve_journal::",
    "nerve_nats::",
    "nerve_otel::",
    "nerve_router::",
    "serde_json::",
];

/// Code block attributes rustdoc treats as Rust.
const RUST_BLOCKS: [&str; 7] = [
    "",
    "rust",
    "no_run",
    "ignore",
    "should_panic",
    "compile_fail",
    "test_harness",
];

/// The source directory whose modules must form no cycle.
const LAYERED_CRATE: &str = "crates/nerve-router/src";

/// The command the README must give for running the checks.
const README_CHECKS: &str = "cargo xtask ci";

/// A broken convention, printed as `path: message`.
#[derive(Debug)]
struct Problem {
    /// The offending file, relative to the workspace root.
    path: PathBuf,
    /// What is wrong with it.
    message: String,
}

impl fmt::Display for Problem {
    /// Formats as `path: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

/// The problems found so far, with paths made relative to the root.
struct Report<'a> {
    /// The workspace root.
    root: &'a Path,
    /// Everything found so far.
    problems: Vec<Problem>,
}

impl Report<'_> {
    /// Records a problem with `path`.
    fn add(&mut self, path: &Path, message: impl Into<String>) {
        let path = path.strip_prefix(self.root).unwrap_or(path).to_path_buf();
        self.problems.push(Problem {
            path,
            message: message.into(),
        });
    }

    /// Reads a text file, recording a problem and returning `None` if it cannot.
    fn read(&mut self, path: &Path) -> Option<String> {
        match fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(err) => {
                self.add(path, format!("cannot read: {err}"));
                None
            }
        }
    }
}

/// Runs every tidy check and prints each problem found.
///
/// # Errors
///
/// When any convention is broken or `crates/` cannot be listed.
pub(crate) fn check() -> Result<()> {
    check_at(workspace_root(), crates::LAYERS)
}

/// Runs every tidy check on the workspace at `root`, with `layers` as the
/// allowed edges between its crates.
fn check_at(root: &Path, layers: &[(&str, &[&str])]) -> Result<()> {
    let mut report = Report {
        root,
        problems: Vec::new(),
    };
    let crates = root.join("crates");
    for krate in sorted_entries(&crates)?
        .into_iter()
        .filter(|path| path.is_dir())
    {
        check_crate(&mut report, &krate);
    }
    for file in files_under(&crates)? {
        check_leftovers(&mut report, &file);
    }
    check_changelog(&mut report, &root.join("CHANGELOG.md"));
    check_readme(&mut report, &root.join("README.md"));
    if root.join(LAYERED_CRATE).is_dir() {
        check_module_layers(&mut report, &root.join(LAYERED_CRATE));
    }
    let workspace = Workspace::load(root)?;
    for finding in crates::check(&workspace, layers) {
        report.add(&finding.path, finding.message);
    }

    for problem in &report.problems {
        println!("{problem}");
    }
    match report.problems.len() {
        0 => {
            println!("xtask: tidy found no problems");
            Ok(())
        }
        1 => bail!("tidy found 1 problem"),
        n => bail!("tidy found {n} problems"),
    }
}

/// Checks one `crates/<name>` directory: its manifest and its crate docs.
fn check_crate(report: &mut Report<'_>, krate: &Path) {
    let manifest_path = krate.join("Cargo.toml");
    let manifest = report.read(&manifest_path);
    if manifest.is_some_and(|manifest| !inherits_workspace_lints(&manifest)) {
        report.add(&manifest_path, "missing `[lints]` with `workspace = true`");
    }
    let lib = krate.join("src").join("lib.rs");
    if !lib.is_file() {
        return;
    }
    let text = report.read(&lib);
    if text.is_some_and(|text| !has_crate_docs(&text)) {
        report.add(&lib, "does not start with a `//!` crate doc comment");
    }
    let Ok(files) = files_under(&krate.join("src")) else {
        report.add(&krate.join("src"), "cannot list");
        return;
    };
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
    {
        let Some(text) = report.read(file) else {
            continue;
        };
        for (line, path) in internal_paths_in_doc_examples(&text) {
            report.add(
                file,
                format!(
                    "line {line}: doc example uses `{path}`; write it as a user of `nerve` would (`nerve::…`)"
                ),
            );
        }
    }
}

/// Records each line of `path` that holds a leftover macro; files that are not
/// UTF-8 text are skipped.
fn check_leftovers(report: &mut Report<'_>, path: &Path) {
    let Ok(text) = fs::read_to_string(path) else {
        return;
    };
    for (line, leftover) in leftovers(&text) {
        report.add(path, format!("line {line}: leftover `{leftover}`"));
    }
}

/// Checks that the changelog keeps a section for unreleased changes.
fn check_changelog(report: &mut Report<'_>, path: &Path) {
    let text = report.read(path);
    if text.is_some_and(|text| !text.contains("## [Unreleased]")) {
        report.add(path, "missing a `## [Unreleased]` section");
    }
}

/// Checks that the README tells a newcomer how to try the project and how to
/// run the checks.
fn check_readme(report: &mut Report<'_>, path: &Path) {
    let Some(text) = report.read(path) else {
        return;
    };
    if !README_DEMOS.iter().any(|demo| text.contains(demo)) {
        let demos = README_DEMOS.map(|demo| format!("`{demo}`")).join(" or ");
        report.add(path, format!("does not mention {demos}"));
    }
    if !text.contains(README_CHECKS) {
        report.add(path, format!("does not mention `{README_CHECKS}`"));
    }
}

/// Whether a crate manifest opts into the workspace lints, in any of the
/// spellings Cargo accepts.
fn inherits_workspace_lints(manifest: &str) -> bool {
    manifest.parse::<DocumentMut>().is_ok_and(|doc| {
        doc.get("lints")
            .and_then(|lints| lints.get("workspace"))
            .and_then(Item::as_bool)
            == Some(true)
    })
}

/// Whether a `lib.rs` opens with a crate doc comment.
fn has_crate_docs(text: &str) -> bool {
    text.trim_start().starts_with("//!")
}

/// The one-based line numbers and paths of every internal path used inside
/// a Rust code block of a doc comment (`///` or `//!`) in `text`.
fn internal_paths_in_doc_examples(text: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    // Whether the current line is inside a code block, and a Rust one.
    let mut block: Option<bool> = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let Some(doc) = trimmed
            .strip_prefix("///")
            .or_else(|| trimmed.strip_prefix("//!"))
        else {
            block = None;
            continue;
        };
        let doc = doc.trim_start();
        if let Some(info) = doc.strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None => Some(is_rust_block(info)),
            };
            continue;
        }
        if block == Some(true) {
            found.extend(
                INTERNAL_PATHS
                    .into_iter()
                    .filter(|path| contains_path(doc, path))
                    .map(|path| (index + 1, path)),
            );
        }
    }
    found
}

/// Whether `text` names `path` as a path of its own, not as the end of a
/// longer name (`my_nerve_core::` is not `nerve_core::`).
fn contains_path(text: &str, path: &str) -> bool {
    text.match_indices(path).any(|(at, _)| {
        !text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// Whether a code block opened with ```` ```info ```` is Rust to rustdoc.
fn is_rust_block(info: &str) -> bool {
    info.split(',')
        .map(str::trim)
        .all(|attr| RUST_BLOCKS.contains(&attr) || attr.starts_with("edition"))
}

/// The one-based line numbers and macros of every leftover in `text`.
fn leftovers(text: &str) -> Vec<(usize, &'static str)> {
    text.lines()
        .enumerate()
        .flat_map(|(index, line)| {
            LEFTOVERS
                .into_iter()
                .filter(move |leftover| line.contains(leftover))
                .map(move |leftover| (index + 1, leftover))
        })
        .collect()
}

/// Every file under `dir`, sorted, skipping hidden entries and `target`.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in sorted_entries(dir)? {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            files.extend(files_under(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

/// The entries of `dir`, sorted so the report reads the same on every machine.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .and_then(|entries| {
            entries
                .map(|entry| entry.map(|entry| entry.path()))
                .collect()
        })
        .with_context(|| format!("could not list {}", dir.display()))?;
    paths.sort();
    Ok(paths)
}

/// Records a cycle among the modules of `dir` (its `*.rs` files but
/// `lib.rs`, which declares them all), naming the files in order.
fn check_module_layers(report: &mut Report<'_>, dir: &Path) {
    let Ok(entries) = sorted_entries(dir) else {
        report.add(dir, "cannot list");
        return;
    };
    let mut sources = BTreeMap::new();
    for file in entries
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
    {
        let Some(name) = file.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if name == "lib" {
            continue;
        }
        if let Some(text) = report.read(file) {
            sources.insert(name.to_owned(), text);
        }
    }
    if let Some(cycle) = module_cycle(&module_graph(&sources)) {
        let files: Vec<String> = cycle.iter().map(|m| format!("{m}.rs")).collect();
        report.add(
            dir,
            format!(
                "modules depend on each other in a cycle: {}",
                files.join(" -> ")
            ),
        );
    }
}

/// Which of the `sources` (module name -> text) each one names through a
/// `crate::module` path, in code (comments, doc comments included, are
/// skipped; so is a module naming itself).
fn module_graph(sources: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    sources
        .iter()
        .map(|(name, text)| {
            let used = text
                .lines()
                .flat_map(|line| crate_paths(code_of(line)))
                .filter(|m| m != name && sources.contains_key(m))
                .collect();
            (name.clone(), used)
        })
        .collect()
}

/// `line` without its comment, if it has one.
fn code_of(line: &str) -> &str {
    line.find("//").map_or(line, |at| &line[..at])
}

/// The first segment of every `crate::` path in `code`, including each path
/// of a `crate::{a::X, b}` group.
fn crate_paths(code: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::`, `my_crate::`
        }
        let rest = &code[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            found.push(ident(rest));
            continue;
        };
        let mut depth = 0usize;
        let mut start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => start = true,
                c if start && !c.is_whitespace() => {
                    found.push(ident(&group[i..]));
                    start = false;
                }
                _ => {}
            }
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

/// A cycle in `graph`, as the modules along it with the first repeated at
/// the end, if there is one.
fn module_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    /// Depth-first from `node`; `path` is the current chain of modules.
    fn visit<'a>(
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        node: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| *m == node) {
            let mut cycle: Vec<String> = path[at..].iter().map(|m| (*m).to_owned()).collect();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(graph, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(graph, node, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

/// Unit tests for the individual conventions.
#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo xtask tidy` as a test, as rust-analyzer runs its tidy: this
    /// workspace keeps every convention.
    #[test]
    fn this_workspace_is_tidy() {
        check().unwrap();
    }

    /// Checks whether `manifest` inherits the workspace lints.
    fn check_lints(manifest: &str, expected: bool) {
        assert_eq!(
            inherits_workspace_lints(manifest),
            expected,
            "manifest:\n{manifest}"
        );
    }

    /// The section form and both dotted forms count; anything else does not.
    #[test]
    fn finds_workspace_lints() {
        check_lints(
            "[package]\nname = \"a\"\n\n[lints]\nworkspace = true\n",
            true,
        );
        check_lints("[lints]\nworkspace=true # inherited\n", true);
        check_lints("lints.workspace = true\n[package]\n", true);
        check_lints("lints = { workspace = true }\n", true);
        check_lints("[package]\nname = \"a\"\n", false);
        check_lints("[lints]\nworkspace = false\n", false);
        check_lints("[lints.rust]\nworkspace = true\n", false);
        check_lints("[package]\nworkspace = true\n", false);
    }

    /// Crate docs may follow blank lines but must come first.
    #[test]
    fn finds_crate_docs() {
        assert!(has_crate_docs("//! The core.\n"));
        assert!(has_crate_docs("\n//! The core.\n"));
        assert!(!has_crate_docs("// licence\n//! The core.\n"));
        assert!(!has_crate_docs("/// Not crate docs.\npub struct A;\n"));
        assert!(!has_crate_docs(""));
    }

    /// Internal paths count inside Rust doc examples only: not in prose,
    /// links, other languages or ordinary comments.
    #[test]
    fn finds_internal_paths_in_doc_examples() {
        let text = "\
//! Uses [`Bus`](nerve_router::Bus).
//!
//! ```
//! use nerve_router::Bus;
//! # let v = serde_json::json!({});
//! ```
//!
//! ```text
//! nerve_core::Event
//! ```
/// ```no_run
/// use nerve::consumers::alert::WebhookSink;
/// use my_nerve_core::Thing;
/// let e = nerve_core::Event::new(\"a.b\", 1)?;
/// ```
// use nerve_journal::Journal;
fn f() { nerve_otel::traced(\"x\", || ()); }
";
        assert_eq!(
            internal_paths_in_doc_examples(text),
            [
                (4, "nerve_router::"),
                (5, "serde_json::"),
                (14, "nerve_core::")
            ]
        );
    }

    /// Each leftover is reported with its line.
    #[test]
    fn finds_leftovers() {
        let text =
            "fn a() {\n    todo!()\n}\nfn b() { dbg!(1); unimplemented!(\"x\") }\nfn todo() {}\n";
        assert_eq!(
            leftovers(text),
            [(2, "todo!("), (4, "unimplemented!("), (4, "dbg!(")]
        );
    }

    /// Module references come from code paths, grouped or not; comments,
    /// other crates and `$crate` do not count.
    #[test]
    fn finds_crate_paths() {
        assert_eq!(crate_paths("use crate::bus::Bus;"), ["bus"]);
        assert_eq!(
            crate_paths("use crate::{queue::Queue, ledger, stats::{A, B}};"),
            ["queue", "ledger", "stats"]
        );
        assert_eq!(
            crate_paths("let q = crate::queue::wake_all(None);"),
            ["queue"]
        );
        assert!(crate_paths("use nerve_crate::x; $crate::y").is_empty());
        assert_eq!(code_of("x(); // crate::bus"), "x(); ");
    }

    /// A cycle is found and named in order; a layered graph passes.
    #[test]
    fn finds_module_cycles() {
        let sources = |files: &[(&str, &str)]| -> BTreeMap<String, String> {
            files
                .iter()
                .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
                .collect()
        };
        let layered = sources(&[
            (
                "bus",
                "use crate::dispatch::Dispatcher;\n/// [`x`](crate::bus)",
            ),
            ("dispatch", "use crate::{ledger::Ledger, queue};"),
            ("ledger", "use crate::queue::Queue; // crate::bus"),
            ("queue", "use std::sync::Arc;"),
        ]);
        assert_eq!(module_cycle(&module_graph(&layered)), None);
        let cyclic = sources(&[
            ("bus", "use crate::dispatch::Dispatcher;"),
            ("dispatch", "use crate::{ledger::Ledger, queue};"),
            ("ledger", "fn f() { crate::bus::announce(); }"),
            ("queue", "use crate::queue::Queue;"),
        ]);
        assert_eq!(
            module_cycle(&module_graph(&cyclic)),
            Some(vec![
                "bus".to_owned(),
                "dispatch".to_owned(),
                "ledger".to_owned(),
                "bus".to_owned()
            ])
        );
    }
}
