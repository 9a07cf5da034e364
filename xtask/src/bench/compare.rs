//! `cargo xtask bench --compare <REV>`: the suite on another revision and on
//! this tree, taking turns bench by bench in the same conditions, and a
//! before/after table in `docs/benchmarks.md`.
//!
//! The revision is checked out in a temporary git worktree under
//! `target/nerve-bench/compare/tree` and built into a target directory of
//! its own, `target/nerve-bench/compare/target` (cargo names a workspace
//! member's artifacts by its path relative to the workspace root, so two
//! checkouts sharing a directory would run one side's benches twice). It is
//! seeded with a copy of this tree's release dependencies, without the
//! workspace's own crates, so only those are compiled again. Both
//! sides are built first, so no compiler runs while the other side is
//! measured; then, for each round and bench, one side runs and then the
//! other, the order swapping every round. A figure is the median over the
//! rounds of criterion's median.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::page::{self, time};
use super::results::{BenchResult, Measurement, PairedRow};
use super::{Options, Side, describe, git, out_dir, page_path, selected};
use crate::cargo::workspace_root;

/// A change smaller than this (either way) is within the noise of criterion
/// medians on a shared machine, and the table says "same".
const NOISE: f64 = 0.10;

/// Runs the comparison and writes the `compare` block of the page.
pub(crate) fn run(revision: &str, options: &Options) -> Result<()> {
    let root = workspace_root();
    let commit = git(
        root,
        &["rev-parse", "--verify", &format!("{revision}^{{commit}}")],
    )?;
    let base = out_dir().join("compare");
    let tree = base.join("tree");
    remove_worktree(&tree);
    fs::create_dir_all(&base)?;
    git(
        root,
        &[
            "worktree",
            "add",
            "--detach",
            &tree.display().to_string(),
            &commit,
        ],
    )?;
    let outcome = measure(&base, &tree, options);
    remove_worktree(&tree);
    let (before, after) = outcome?;
    let table = table(&before, &after, options);
    println!("{table}");
    let path = page_path();
    let doc =
        fs::read_to_string(&path).with_context(|| format!("could not read {}", path.display()))?;
    fs::write(&path, page::replace_block(&doc, "compare", &table)?)?;
    println!("xtask: wrote the before/after table to {}", path.display());
    Ok(())
}

/// Builds and runs both sides, returning their results, round after round.
fn measure(
    base: &std::path::Path,
    tree: &std::path::Path,
    options: &Options,
) -> Result<(Vec<BenchResult>, Vec<BenchResult>)> {
    let before = Side {
        tree: tree.to_owned(),
        out: base.join("before"),
        revision: describe(tree)?,
        target: seeded_target(base)?,
    };
    let after = Side {
        tree: workspace_root().to_owned(),
        out: base.join("after"),
        revision: describe(workspace_root())?,
        target: workspace_root().join("target"),
    };
    let benches: Vec<_> = selected(options)
        .into_iter()
        .filter(|b| {
            let has = before.has(*b);
            if !has {
                println!(
                    "xtask: {} has no `{}` bench; skipped",
                    before.revision, b.name
                );
            }
            has
        })
        .collect();
    for bench in &benches {
        before.build(*bench)?;
        after.build(*bench)?;
    }
    let (mut old, mut new) = (Vec::new(), Vec::new());
    for round in 0..options.rounds {
        for bench in &benches {
            let round_side = |side: &Side| Side {
                out: side.out.join(format!("round{round}")),
                ..side.clone()
            };
            let (b, a) = (round_side(&before), round_side(&after));
            if round % 2 == 0 {
                old.push(b.run(*bench, options.quick)?);
                new.push(a.run(*bench, options.quick)?);
            } else {
                new.push(a.run(*bench, options.quick)?);
                old.push(b.run(*bench, options.quick)?);
            }
        }
    }
    Ok((old, new))
}

/// The other side's target directory under `base`, seeded on first use with
/// this workspace's optimized third-party artifacts (the workspace's own
/// crates' fingerprints are left out, so cargo builds them from the other
/// checkout).
fn seeded_target(base: &Path) -> Result<PathBuf> {
    let target = base.join("target");
    let release = target.join("release");
    let ours = workspace_root().join("target").join("release");
    if !release.exists() && ours.is_dir() {
        fs::create_dir_all(&target)?;
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&ours)
            .arg(&release)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            // Not fatal: the other side then builds from scratch.
            let _ = fs::remove_dir_all(&release);
        }
    }
    let fingerprints = release.join(".fingerprint");
    if fingerprints.is_dir() {
        for entry in fs::read_dir(&fingerprints)? {
            let path = entry?.path();
            let ours = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("nerve") || n.starts_with("xtask"));
            if ours {
                fs::remove_dir_all(&path)
                    .with_context(|| format!("could not remove {}", path.display()))?;
            }
        }
    }
    Ok(target)
}

/// Removes the temporary worktree, if there is one.
fn remove_worktree(tree: &std::path::Path) {
    if tree.exists() {
        let path = tree.display().to_string();
        let _ = git(workspace_root(), &["worktree", "remove", "--force", &path]);
        let _ = fs::remove_dir_all(tree);
    }
    let _ = git(workspace_root(), &["worktree", "prune"]);
}

/// The median of `values` (not empty).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// "slower", "faster" or "same" for an after/before ratio of times.
fn verdict(ratio: f64) -> &'static str {
    if ratio > 1.0 + NOISE {
        "**slower**"
    } else if ratio < 1.0 - NOISE {
        "faster"
    } else {
        "same"
    }
}

/// One line of the comparison: a criterion benchmark on both sides.
#[derive(Clone, Debug, PartialEq)]
struct Line {
    bench: String,
    group: String,
    name: String,
    before: Option<f64>,
    after: Option<f64>,
}

/// The criterion benchmarks of both sides, each the median over rounds of
/// its time per event, in the after side's order (then the ones only
/// before had).
fn lines(before: &[BenchResult], after: &[BenchResult]) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    for result in after.iter().chain(before) {
        for m in &result.criterion {
            let known = lines
                .iter()
                .any(|l| l.bench == result.bench && l.group == m.group && l.name == m.name);
            if !known {
                lines.push(Line {
                    bench: result.bench.clone(),
                    group: m.group.clone(),
                    name: m.name.clone(),
                    before: None,
                    after: None,
                });
            }
        }
    }
    let collect = |results: &[BenchResult], line: &Line| {
        let values: Vec<f64> = results
            .iter()
            .filter(|r| r.bench == line.bench)
            .flat_map(|r| &r.criterion)
            .filter(|m| m.group == line.group && m.name == line.name)
            .map(Measurement::per_element_ns)
            .collect();
        (!values.is_empty()).then(|| median(values))
    };
    for line in &mut lines {
        line.before = collect(before, line);
        line.after = collect(after, line);
    }
    lines
}

/// The paired ratios of both sides: `(bench, row)` with the median over
/// rounds of each side's ratio median.
fn paired_lines(
    before: &[BenchResult],
    after: &[BenchResult],
) -> Vec<(String, PairedRow, Option<f64>, Option<f64>)> {
    let mut out = Vec::new();
    let ratio_of = |results: &[BenchResult], bench: &str, row: &PairedRow| {
        let to = row.ratio.as_ref().map(|r| r.to.as_str());
        let values: Vec<f64> = results
            .iter()
            .filter(|r| r.bench == bench)
            .flat_map(|r| &r.paired)
            .filter(|p| p.group == row.group && p.name == row.name)
            .filter_map(|p| p.ratio.as_ref().filter(|r| Some(r.to.as_str()) == to))
            .map(|r| r.median)
            .collect();
        (!values.is_empty()).then(|| median(values))
    };
    for result in after.iter().chain(before) {
        for row in result.paired.iter().filter(|r| r.ratio.is_some()) {
            let to = row.ratio.as_ref().map(|r| &r.to);
            let seen = out.iter().any(|(b, r, _, _): &(String, PairedRow, _, _)| {
                *b == result.bench
                    && r.group == row.group
                    && r.name == row.name
                    && r.ratio.as_ref().map(|x| &x.to) == to
            });
            if !seen {
                out.push((
                    result.bench.clone(),
                    row.clone(),
                    ratio_of(before, &result.bench, row),
                    ratio_of(after, &result.bench, row),
                ));
            }
        }
    }
    out
}

/// The before/after table.
fn table(before: &[BenchResult], after: &[BenchResult], options: &Options) -> String {
    let name = |results: &[BenchResult]| {
        results
            .first()
            .map_or_else(|| "?".to_owned(), |r| r.revision.clone())
    };
    let mut text = format!(
        "Before: `{}`; after: `{}`; {} round(s), the sides taking turns bench by bench{}. \
         Times are medians per event; \"same\" means within ±{:.0} %, the noise of criterion \
         medians here.\n\n",
        name(before),
        name(after),
        options.rounds,
        if options.quick {
            ", **`--quick` smoke run: not a measurement**"
        } else {
            ""
        },
        NOISE * 100.0
    );
    text.push_str("| bench | benchmark | before | after | after / before | |\n");
    text.push_str("|---|---|---:|---:|---:|---|\n");
    let fmt = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), time);
    for line in lines(before, after) {
        let (ratio, word) = match (line.before, line.after) {
            (Some(b), Some(a)) => (format!("{:.2}", a / b), verdict(a / b)),
            _ => (String::new(), "only one side"),
        };
        let _ = writeln!(
            text,
            "| {} | `{}` {} | {} | {} | {ratio} | {word} |",
            line.bench,
            line.group,
            line.name,
            fmt(line.before),
            fmt(line.after)
        );
    }
    let paired = paired_lines(before, after);
    if !paired.is_empty() {
        text.push_str(
            "\nPaired ratios (median of per-round ratios; lower is better for times):\n\n",
        );
        text.push_str("| bench | ratio | before | after |\n|---|---|---:|---:|\n");
        let fmt = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.2} ×"));
        for (bench, row, b, a) in paired {
            let to = row.ratio.map(|r| r.to).unwrap_or_default();
            let _ = writeln!(
                text,
                "| {bench} | `{}` {} / {to} | {} | {} |",
                row.group,
                row.name,
                fmt(b),
                fmt(a)
            );
        }
    }
    text
}

/// Unit tests for the comparison table.
#[cfg(test)]
mod tests {
    use super::super::results::Ratio;
    use super::*;

    fn result(revision: &str, medians: &[(&str, f64)], ratio: Option<f64>) -> BenchResult {
        BenchResult {
            bench: "dispatch".into(),
            revision: revision.into(),
            date: "2026-12-02".into(),
            quick: false,
            criterion: medians
                .iter()
                .map(|(name, ns)| Measurement {
                    group: "emit".into(),
                    name: (*name).into(),
                    median_ns: *ns,
                    elements: Some(1),
                })
                .collect(),
            paired: ratio
                .map(|median| PairedRow {
                    group: "emit_json".into(),
                    name: "nerve emit".into(),
                    value: 700.0,
                    unit: "ns".into(),
                    rounds: 11,
                    ratio: Some(Ratio {
                        to: "tokio".into(),
                        q1: median,
                        median,
                        q3: median,
                    }),
                    target: None,
                })
                .into_iter()
                .collect(),
        }
    }

    /// Medians over rounds on each side, a verdict per line, and a line
    /// for a benchmark only one side has.
    #[test]
    fn before_after_table() {
        let before = [
            result("old", &[("1 sync", 500.0), ("gone", 10.0)], Some(6.0)),
            result("old", &[("1 sync", 540.0), ("gone", 10.0)], Some(6.2)),
            result("old", &[("1 sync", 520.0), ("gone", 10.0)], Some(6.4)),
        ];
        let after = [
            result("new", &[("1 sync", 260.0), ("new", 5.0)], Some(2.1)),
            result("new", &[("1 sync", 250.0), ("new", 5.0)], Some(2.3)),
            result("new", &[("1 sync", 270.0), ("new", 5.0)], Some(2.2)),
        ];
        let options = Options {
            rounds: 3,
            ..Options::default()
        };
        let text = table(&before, &after, &options);
        assert!(text.starts_with("Before: `old`; after: `new`; 3 round(s)"));
        assert!(
            text.contains("| dispatch | `emit` 1 sync | 520 ns | 260 ns | 0.50 | faster |"),
            "{text}"
        );
        assert!(text.contains("| dispatch | `emit` new | — | 5.00 ns |  | only one side |"));
        assert!(text.contains("| dispatch | `emit` gone | 10.0 ns | — |  | only one side |"));
        assert!(text.contains("| dispatch | `emit_json` nerve emit / tokio | 6.20 × | 2.20 × |"));
    }

    /// Within the noise is "same"; beyond it, slower or faster.
    #[test]
    fn verdicts() {
        assert_eq!(verdict(1.05), "same");
        assert_eq!(verdict(0.95), "same");
        assert_eq!(verdict(1.2), "**slower**");
        assert_eq!(verdict(0.8), "faster");
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
