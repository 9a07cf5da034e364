//! What a bench run measured: criterion's estimates and the paired
//! harnesses' reports, read from the JSON files they write, and the results
//! of every bench kept between runs in `target/nerve-bench/results.json`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One criterion benchmark's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Measurement {
    /// The criterion group, e.g. `routing_flat`.
    pub(crate) group: String,
    /// The benchmark within the group, with its parameter: `nerve/100`.
    pub(crate) name: String,
    /// Criterion's median time per iteration, in nanoseconds.
    pub(crate) median_ns: f64,
    /// Events per iteration, when the bench declares a throughput.
    pub(crate) elements: Option<u64>,
}

impl Measurement {
    /// The median time per element (per iteration without a throughput).
    pub(crate) fn per_element_ns(&self) -> f64 {
        self.median_ns / self.elements.unwrap_or(1).max(1) as f64
    }
}

/// A ratio measured round by round: its median and quartiles.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Ratio {
    /// What the row is divided by.
    pub(crate) to: String,
    /// The first quartile of the per-round ratios.
    pub(crate) q1: f64,
    /// The median of the per-round ratios.
    pub(crate) median: f64,
    /// The third quartile of the per-round ratios.
    pub(crate) q3: f64,
}

/// The bound a ratio should stay within.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Bound {
    /// At most this.
    AtMost(f64),
    /// At least this.
    AtLeast(f64),
}

impl Bound {
    /// Whether `ratio` is within the bound.
    pub(crate) fn met(self, ratio: f64) -> bool {
        match self {
            Bound::AtMost(bound) => ratio <= bound,
            Bound::AtLeast(bound) => ratio >= bound,
        }
    }
}

/// One row of a paired harness's report (`support/paired.rs` in
/// `crates/nerve/benches`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct PairedRow {
    /// The group, as the criterion group of the same measurement.
    pub(crate) group: String,
    /// What was measured.
    pub(crate) name: String,
    /// The median over the rounds, in `unit`.
    pub(crate) value: f64,
    /// `ns` (per operation) or `events/s`.
    pub(crate) unit: String,
    /// How many rounds were measured.
    pub(crate) rounds: usize,
    /// The ratio to another row, taken round by round.
    #[serde(default)]
    pub(crate) ratio: Option<Ratio>,
    /// The bound of the ratio, when it is a target.
    #[serde(default)]
    pub(crate) target: Option<Bound>,
}

/// The JSON file a paired harness writes.
#[derive(Debug, Deserialize)]
struct PairedReport {
    rows: Vec<PairedRow>,
}

/// Everything one bench target measured in its last run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct BenchResult {
    /// The bench target, e.g. `dispatch`.
    pub(crate) bench: String,
    /// The commit measured (`git describe --always --dirty`).
    pub(crate) revision: String,
    /// The day of the run, `YYYY-MM-DD` (UTC).
    pub(crate) date: String,
    /// Whether it was a `--quick` smoke run.
    pub(crate) quick: bool,
    /// Criterion's results, in the order they ran.
    pub(crate) criterion: Vec<Measurement>,
    /// The paired harness's rows, if the bench has one.
    pub(crate) paired: Vec<PairedRow>,
}

/// The results of every bench, the last run of each.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Results {
    /// One entry per bench target.
    pub(crate) benches: Vec<BenchResult>,
}

impl Results {
    /// Reads `path`; no results when it does not exist.
    pub(crate) fn load(path: &Path) -> Result<Self> {
        match fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("could not parse {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Results::default()),
            Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
        }
    }

    /// Writes the results to `path`.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(self)?;
        fs::write(path, text).with_context(|| format!("could not write {}", path.display()))
    }

    /// Replaces the result of `result.bench`, or adds it, keeping the
    /// benches in the order of `order`.
    pub(crate) fn insert(&mut self, result: BenchResult, order: &[&str]) {
        self.benches.retain(|b| b.bench != result.bench);
        self.benches.push(result);
        let rank = |name: &str| order.iter().position(|o| *o == name).unwrap_or(order.len());
        self.benches.sort_by_key(|b| rank(&b.bench));
    }

    /// The result of `bench`, if it ran.
    pub(crate) fn get(&self, bench: &str) -> Option<&BenchResult> {
        self.benches.iter().find(|b| b.bench == bench)
    }
}

/// Reads one benchmark's result from the text of its criterion files
/// `new/benchmark.json` and `new/estimates.json`.
pub(crate) fn measurement(benchmark: &str, estimates: &str) -> Result<Measurement> {
    let benchmark: Value = serde_json::from_str(benchmark).context("benchmark.json")?;
    let estimates: Value = serde_json::from_str(estimates).context("estimates.json")?;
    let text = |key: &str| benchmark[key].as_str().map(str::to_owned);
    let group = text("group_id").context("benchmark.json has no group_id")?;
    let name = match (text("function_id"), text("value_str")) {
        (Some(function), Some(value)) => format!("{function}/{value}"),
        (Some(name), None) | (None, Some(name)) => name,
        (None, None) => group.clone(),
    };
    let median_ns = estimates["median"]["point_estimate"]
        .as_f64()
        .context("estimates.json has no median")?;
    let elements = benchmark["throughput"]["Elements"].as_u64();
    Ok(Measurement {
        group,
        name,
        median_ns,
        elements,
    })
}

/// Every benchmark criterion wrote under `home` since `since`, in the order
/// they were written.
pub(crate) fn read_criterion(home: &Path, since: SystemTime) -> Result<Vec<Measurement>> {
    let mut found = Vec::new();
    for dir in new_dirs(home)? {
        let estimates = dir.join("estimates.json");
        let Ok(modified) = fs::metadata(&estimates).and_then(|m| m.modified()) else {
            continue;
        };
        if modified < since {
            continue;
        }
        let read = |file: &Path| {
            fs::read_to_string(file).with_context(|| format!("could not read {}", file.display()))
        };
        let m = measurement(&read(&dir.join("benchmark.json"))?, &read(&estimates)?)
            .with_context(|| format!("in {}", dir.display()))?;
        found.push((modified, m));
    }
    found.sort_by_key(|(modified, _)| *modified);
    Ok(found.into_iter().map(|(_, m)| m).collect())
}

/// The directories named `new` under `dir`, at any depth.
fn new_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(found);
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            let path = entry.path();
            if entry.file_name() == "new" {
                found.push(path);
            } else {
                found.extend(new_dirs(&path)?);
            }
        }
    }
    Ok(found)
}

/// The rows of the paired report at `path`; none when there is no report.
pub(crate) fn read_paired(path: &Path) -> Result<Vec<PairedRow>> {
    match fs::read_to_string(path) {
        Ok(text) => {
            Ok(parse_paired(&text)
                .with_context(|| format!("could not parse {}", path.display()))?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
    }
}

/// The rows of a paired report's text.
pub(crate) fn parse_paired(text: &str) -> Result<Vec<PairedRow>> {
    Ok(serde_json::from_str::<PairedReport>(text)?.rows)
}

/// Fixture JSON shaped as criterion 0.8 and the paired harness write it.
#[cfg(test)]
pub(crate) mod fixtures {
    /// `new/benchmark.json` of `routing_flat/nerve/100`.
    pub(crate) const BENCHMARK: &str = r#"{"group_id":"routing_flat","function_id":"nerve",
        "value_str":"100","throughput":{"Elements":1},"full_id":"routing_flat/nerve/100",
        "directory_name":"routing_flat/nerve/100","title":"routing_flat/nerve/100"}"#;

    /// `new/estimates.json` with a median of 197.2 ns.
    pub(crate) const ESTIMATES: &str = r#"{
        "mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":196.0,"upper_bound":199.0},"point_estimate":197.5,"standard_error":0.7},
        "median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":196.5,"upper_bound":198.0},"point_estimate":197.2,"standard_error":0.4},
        "median_abs_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0},"point_estimate":1.5,"standard_error":0.2},
        "slope":null,
        "std_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":2.0,"upper_bound":3.0},"point_estimate":2.5,"standard_error":0.2}}"#;

    /// A paired report with a target row, a plain row and a throughput row.
    pub(crate) const PAIRED: &str = r#"{"bench":"emit","quick":true,"rows":[
        {"group":"emit_json","name":"nerve emit","value":750.0,"unit":"ns","rounds":11,
         "ratio":{"to":"tokio broadcast send + try_recv","q1":5.9,"median":6.1,"q3":6.3},
         "target":{"at_most":2.5}},
        {"group":"emit_json","name":"tokio broadcast send + try_recv","value":123.0,"unit":"ns","rounds":11},
        {"group":"emit_threads","name":"nerve emit, 2 threads","value":2400000.0,"unit":"events/s","rounds":5,
         "ratio":{"to":"nerve emit, 1 thread","q1":1.5,"median":1.6,"q3":1.7},
         "target":{"at_least":1.5}}]}"#;
}

/// Unit tests for reading criterion's and the paired harness's JSON.
#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    /// The group, the name with its parameter, the median and the
    /// throughput come from criterion's two files.
    #[test]
    fn reads_a_criterion_benchmark() {
        let m = measurement(BENCHMARK, ESTIMATES).unwrap();
        assert_eq!(
            m,
            Measurement {
                group: "routing_flat".into(),
                name: "nerve/100".into(),
                median_ns: 197.2,
                elements: Some(1),
            }
        );
    }

    /// A benchmark without a parameter or throughput is named by its
    /// function, and its time per element is its time per iteration.
    #[test]
    fn reads_a_plain_benchmark() {
        let benchmark =
            r#"{"group_id":"emit","function_id":"1 sync","value_str":null,"throughput":null}"#;
        let m = measurement(benchmark, ESTIMATES).unwrap();
        assert_eq!(m.name, "1 sync");
        assert_eq!(m.elements, None);
        assert_eq!(m.per_element_ns(), 197.2);
    }

    /// Broken files are errors, not zeros.
    #[test]
    fn rejects_files_without_a_median() {
        assert!(measurement(BENCHMARK, "{}").is_err());
        assert!(measurement("{}", ESTIMATES).is_err());
    }

    /// Paired rows keep their ratio and target; rows without them parse.
    #[test]
    fn reads_a_paired_report() {
        let rows = parse_paired(PAIRED).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].target, Some(Bound::AtMost(2.5)));
        assert_eq!(rows[0].ratio.as_ref().unwrap().median, 6.1);
        assert_eq!(rows[1].ratio, None);
        assert_eq!(rows[2].target, Some(Bound::AtLeast(1.5)));
        assert!(Bound::AtLeast(1.5).met(1.6));
        assert!(!Bound::AtMost(2.5).met(6.1));
    }

    /// A bench's new result replaces its old one, in suite order.
    #[test]
    fn keeps_the_last_result_of_each_bench() {
        let result = |bench: &str, quick| BenchResult {
            bench: bench.into(),
            revision: "abc".into(),
            date: "2026-12-02".into(),
            quick,
            criterion: Vec::new(),
            paired: Vec::new(),
        };
        let mut results = Results::default();
        results.insert(result("flow", true), &["emit", "flow"]);
        results.insert(result("emit", true), &["emit", "flow"]);
        results.insert(result("flow", false), &["emit", "flow"]);
        let names: Vec<_> = results.benches.iter().map(|b| b.bench.as_str()).collect();
        assert_eq!(names, ["emit", "flow"]);
        assert!(!results.get("flow").unwrap().quick);
    }
}
