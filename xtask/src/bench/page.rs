//! The generated parts of `docs/benchmarks.md`: tables written between
//! marker comments (`<!-- bench:NAME:begin -->` … `<!-- bench:NAME:end -->`),
//! so that regenerating never touches the hand-written text around them.

use std::fmt::Write as _;

use anyhow::{Result, bail};

use super::results::{BenchResult, Bound, Measurement, PairedRow, Results};

/// Replaces what lies between the markers of block `name` in `doc`.
///
/// # Errors
///
/// When the page lacks either marker, or has them in the wrong order.
pub(crate) fn replace_block(doc: &str, name: &str, content: &str) -> Result<String> {
    let begin = format!("<!-- bench:{name}:begin -->");
    let end = format!("<!-- bench:{name}:end -->");
    let (Some(start), Some(stop)) = (doc.find(&begin), doc.find(&end)) else {
        bail!("the page has no `{begin}` … `{end}` block");
    };
    let start = start + begin.len();
    if stop < start {
        bail!("`{end}` comes before `{begin}`");
    }
    Ok(format!(
        "{}\n{}\n{}",
        &doc[..start],
        content.trim_end(),
        &doc[stop..]
    ))
}

/// A time in the unit that reads best: `742 ns`, `20.1 µs`, `3.40 ms`.
pub(crate) fn time(ns: f64) -> String {
    let (value, unit) = if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    format!("{} {unit}", three_digits(value))
}

/// A rate: `850 K events/s`, `2.41 M events/s`.
pub(crate) fn rate(per_second: f64) -> String {
    let (value, unit) = if per_second < 1e3 {
        (per_second, "")
    } else if per_second < 1e6 {
        (per_second / 1e3, "K ")
    } else {
        (per_second / 1e6, "M ")
    };
    format!("{} {unit}events/s", three_digits(value))
}

/// A value with three significant digits (no fewer than its integer part).
fn three_digits(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// A paired row's value in its unit.
fn paired_value(row: &PairedRow) -> String {
    match row.unit.as_str() {
        "ns" => time(row.value),
        "events/s" => rate(row.value),
        unit => format!("{} {unit}", three_digits(row.value)),
    }
}

/// `at most 2.5 ×: **not met**`.
fn verdict(bound: Bound, ratio: f64) -> String {
    let (word, value) = match bound {
        Bound::AtMost(v) => ("≤", v),
        Bound::AtLeast(v) => ("≥", v),
    };
    let met = if bound.met(ratio) {
        "met"
    } else {
        "**not met**"
    };
    format!("{word} {value} ×: {met}")
}

/// The line saying which run a table comes from.
fn provenance(result: &BenchResult) -> String {
    let kind = if result.quick {
        "a `--quick` smoke run: figures for checking the generator, not measurements"
    } else {
        "a full run"
    };
    format!(
        "_`{}` at `{}`, {}, {kind}._",
        result.bench, result.revision, result.date
    )
}

/// The headline table: every paired row of `bench`, ratios and targets.
pub(crate) fn headline(results: &Results, bench: &str) -> String {
    let Some(result) = results.get(bench).filter(|r| !r.paired.is_empty()) else {
        return format!("_No paired results of `{bench}` yet: run `cargo xtask bench {bench}`._");
    };
    let mut text = String::new();
    text.push_str(
        "| group | case | median | ratio (quartiles) | target |\n|---|---|---:|---|---|\n",
    );
    for row in &result.paired {
        let ratio = row.ratio.as_ref().map_or(String::new(), |r| {
            format!(
                "**{:.2} ×** {} ({:.2} to {:.2})",
                r.median, r.to, r.q1, r.q3
            )
        });
        let target = match (row.target, &row.ratio) {
            (Some(bound), Some(r)) => verdict(bound, r.median),
            _ => String::new(),
        };
        let _ = writeln!(
            text,
            "| `{}` | {} | {} | {ratio} | {target} |",
            row.group,
            row.name,
            paired_value(row)
        );
    }
    let rounds = result.paired.iter().map(|r| r.rounds).max().unwrap_or(0);
    let _ = write!(
        text,
        "\nRatios are medians of per-round ratios over up to {rounds} rounds in which the \
         variants take turns; quartiles in brackets. {}",
        provenance(result)
    );
    text
}

/// A plain table of every paired row of `bench`: what was measured, its
/// median over the rounds, and its ratio when it has one. For harnesses
/// whose phases run one after the other rather than taking turns.
pub(crate) fn measured(results: &Results, bench: &str) -> String {
    let Some(result) = results.get(bench).filter(|r| !r.paired.is_empty()) else {
        return format!("_No results of `{bench}` yet: run `cargo xtask bench {bench}`._");
    };
    let mut text = String::from("| measured | median | ratio |\n|---|---:|---|\n");
    for row in &result.paired {
        let ratio = row
            .ratio
            .as_ref()
            .map_or(String::new(), |r| format!("**{:.2} ×** {}", r.median, r.to));
        let _ = writeln!(text, "| {} | {} | {ratio} |", row.name, paired_value(row));
    }
    let rounds = result.paired.iter().map(|r| r.rounds).max().unwrap_or(0);
    let _ = write!(
        text,
        "\nMedians over {rounds} round(s). {}",
        provenance(result)
    );
    text
}

/// The criterion groups of `measurements`, in the order they first ran.
pub(crate) fn groups(measurements: &[Measurement]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for m in measurements {
        if !names.contains(&m.group.as_str()) {
            names.push(&m.group);
        }
    }
    names
}

/// The file name of a group's chart: `dispatch-routing_flat.svg`.
pub(crate) fn chart_name(bench: &str, group: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!("{}-{}.svg", clean(bench), clean(group))
}

/// One table per criterion group of every bench, each under its chart.
pub(crate) fn criterion_tables(results: &Results) -> String {
    let mut text = String::new();
    for result in &results.benches {
        if result.criterion.is_empty() {
            continue;
        }
        let _ = writeln!(text, "### `{}`\n\n{}\n", result.bench, provenance(result));
        for group in groups(&result.criterion) {
            let _ = writeln!(
                text,
                "#### `{group}`\n\n![{group}](bench/{})\n",
                chart_name(&result.bench, group)
            );
            text.push_str("| benchmark | median | per event | events/s |\n|---|---:|---:|---:|\n");
            for m in result.criterion.iter().filter(|m| m.group == group) {
                let (per_event, rate_text) = match m.elements {
                    Some(n) if n > 1 => {
                        let per = m.per_element_ns();
                        (time(per), rate(1e9 / per))
                    }
                    Some(_) => (String::new(), rate(1e9 / m.median_ns)),
                    None => (String::new(), String::new()),
                };
                let _ = writeln!(
                    text,
                    "| {} | {} | {per_event} | {rate_text} |",
                    m.name,
                    time(m.median_ns)
                );
            }
            text.push('\n');
        }
    }
    if text.is_empty() {
        text.push_str("_No criterion results yet: run `cargo xtask bench`._");
    }
    text
}

/// Unit tests for the page's tables.
#[cfg(test)]
mod tests {
    use super::super::results::fixtures;
    use super::*;

    fn result(criterion: Vec<Measurement>, paired: Vec<PairedRow>) -> Results {
        Results {
            benches: vec![BenchResult {
                bench: "emit".into(),
                revision: "abc1234".into(),
                date: "2026-12-02".into(),
                quick: true,
                criterion,
                paired,
            }],
        }
    }

    /// Only the block's inside changes; text around it stays as it was.
    #[test]
    fn replaces_only_inside_the_markers() {
        let doc = "intro\n<!-- bench:x:begin -->\nold\n<!-- bench:x:end -->\nhand-written\n";
        let new = replace_block(doc, "x", "new table\n").unwrap();
        assert_eq!(
            new,
            "intro\n<!-- bench:x:begin -->\nnew table\n<!-- bench:x:end -->\nhand-written\n"
        );
        // Regenerating gives the same page.
        assert_eq!(replace_block(&new, "x", "new table").unwrap(), new);
        assert!(replace_block(doc, "y", "t").is_err());
        let reversed = "<!-- bench:x:end --> <!-- bench:x:begin -->";
        assert!(replace_block(reversed, "x", "t").is_err());
    }

    /// Times and rates read in their natural unit, three digits.
    #[test]
    fn formats_times_and_rates() {
        assert_eq!(time(742.4), "742 ns");
        assert_eq!(time(20_100.0), "20.1 µs");
        assert_eq!(time(3_400_000.0), "3.40 ms");
        assert_eq!(time(2.5e9), "2.50 s");
        assert_eq!(rate(850_000.0), "850 K events/s");
        assert_eq!(rate(2_414_000.0), "2.41 M events/s");
    }

    /// The headline lists each paired row with its ratio and whether the
    /// target is met, and says that a quick run is not a measurement.
    #[test]
    fn headline_shows_ratios_and_targets() {
        let rows = super::super::results::parse_paired(fixtures::PAIRED).unwrap();
        let text = headline(&result(Vec::new(), rows), "emit");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[2],
            "| `emit_json` | nerve emit | 750 ns | **6.10 ×** tokio broadcast send + try_recv \
             (5.90 to 6.30) | ≤ 2.5 ×: **not met** |"
        );
        assert_eq!(
            lines[3],
            "| `emit_json` | tokio broadcast send + try_recv | 123 ns |  |  |"
        );
        assert_eq!(
            lines[4],
            "| `emit_threads` | nerve emit, 2 threads | 2.40 M events/s | **1.60 ×** nerve emit, \
             1 thread (1.50 to 1.70) | ≥ 1.5 ×: met |"
        );
        assert!(text.contains("`--quick` smoke run"));
        assert!(headline(&Results::default(), "emit").contains("No paired results"));
    }

    /// The plain table: each row's value in its unit, the ratio when there
    /// is one, and a note when there is nothing yet.
    #[test]
    fn measured_lists_every_row() {
        let rows = super::super::results::parse_paired(fixtures::PAIRED).unwrap();
        let text = measured(&result(Vec::new(), rows), "emit");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[2],
            "| nerve emit | 750 ns | **6.10 ×** tokio broadcast send + try_recv |"
        );
        assert_eq!(lines[3], "| tokio broadcast send + try_recv | 123 ns |  |");
        assert!(text.contains("Medians over 11 round(s)"), "{text}");
        assert!(measured(&Results::default(), "dashboard").contains("No results"));
    }

    /// One table per group, in run order, each under its chart, with the
    /// time per event when an iteration holds many.
    #[test]
    fn criterion_tables_per_group() {
        let m = |group: &str, name: &str, median_ns, elements| Measurement {
            group: group.into(),
            name: name.into(),
            median_ns,
            elements,
        };
        let measured = vec![
            m("routing", "hot/nerve", 231.6, Some(1)),
            m("journal_burst", "journal on", 68_000_000.0, Some(20_000)),
            m("routing", "hot/naive", 134_570.0, None),
        ];
        let text = criterion_tables(&result(measured, Vec::new()));
        let routing = text.find("#### `routing`").unwrap();
        let burst = text.find("#### `journal_burst`").unwrap();
        assert!(routing < burst);
        assert!(text.contains("![routing](bench/emit-routing.svg)"));
        assert!(text.contains("| hot/nerve | 232 ns |  | 4.32 M events/s |"));
        assert!(text.contains("| hot/naive | 135 µs |  |  |"));
        assert!(text.contains("| journal on | 68.0 ms | 3.40 µs | 294 K events/s |"));
    }

    /// Chart names are safe file names.
    #[test]
    fn chart_names_are_file_names() {
        assert_eq!(
            chart_name("flow", "fanout_lossless"),
            "flow-fanout_lossless.svg"
        );
        assert_eq!(chart_name("emit", "a b/c"), "emit-a-b-c.svg");
    }
}
