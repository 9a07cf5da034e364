//! Paired measurement for the benches: variants take turns, round after
//! round, and ratios are taken within a round, so that both sides of a ratio
//! see the same moment of a shared machine (criterion's separate medians
//! drift by 10 % or more between runs here; a per-round ratio much less).
//!
//! Included by the benches that use it as
//! `#[path = "support/paired.rs"] mod paired;`: a directory under `benches/`
//! is not a bench target of its own.

// Each bench uses a different part of this file.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::{Value, json};

/// The environment variable `cargo xtask bench --quick` sets: fewer rounds
/// and smaller batches, for a smoke run.
pub(crate) const QUICK_ENV: &str = "NERVE_BENCH_QUICK";

/// The environment variable naming the directory the JSON reports go to;
/// `cargo xtask bench` sets it. Without it, `<target>/nerve-bench/paired`.
pub(crate) const OUT_ENV: &str = "NERVE_BENCH_OUT";

/// Whether this is a smoke run (see [`QUICK_ENV`]).
pub(crate) fn quick() -> bool {
    std::env::var_os(QUICK_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// `full` in a full run, `quick` in a smoke run.
pub(crate) fn pick<T>(full: T, quick_value: T) -> T {
    if quick() { quick_value } else { full }
}

/// The first quartile, the median and the third quartile of a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Spread {
    /// The first quartile.
    pub(crate) q1: f64,
    /// The median.
    pub(crate) median: f64,
    /// The third quartile.
    pub(crate) q3: f64,
}

impl Spread {
    /// The quartiles of `values` (not empty).
    pub(crate) fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let at = |q: usize| values[(values.len() - 1) * q / 4];
        Spread {
            q1: at(1),
            median: at(2),
            q3: at(3),
        }
    }
}

/// A variant of a paired measurement: its name and a closure that measures
/// it once, returning its figure (seconds per operation, events per second:
/// the caller's choice, the same for the variants it compares).
pub(crate) type Variant<'a> = (&'a str, &'a mut dyn FnMut() -> f64);

/// A boxed measurement, for variants built in a loop.
pub(crate) type Measure<'a> = Box<dyn FnMut() -> f64 + 'a>;

/// What each variant measured, one figure per round.
#[derive(Debug)]
pub(crate) struct Rounds {
    names: Vec<String>,
    values: Vec<Vec<f64>>,
}

impl Rounds {
    /// Runs `warm_up` rounds (discarded), then `rounds` rounds; in each,
    /// every variant once, in order.
    pub(crate) fn run(warm_up: usize, rounds: usize, variants: &mut [Variant<'_>]) -> Self {
        for _ in 0..warm_up {
            for (_, measure) in variants.iter_mut() {
                measure();
            }
        }
        let mut values = vec![Vec::with_capacity(rounds); variants.len()];
        for _ in 0..rounds {
            for (i, (_, measure)) in variants.iter_mut().enumerate() {
                values[i].push(measure());
            }
        }
        Rounds {
            names: variants
                .iter()
                .map(|(name, _)| (*name).to_owned())
                .collect(),
            values,
        }
    }

    /// As [`run`](Self::run), for variants built in a loop.
    pub(crate) fn run_boxed<S: AsRef<str>>(
        warm_up: usize,
        rounds: usize,
        measures: &mut [(S, Measure<'_>)],
    ) -> Self {
        let mut variants: Vec<Variant<'_>> = measures
            .iter_mut()
            .map(|(name, measure)| (S::as_ref(name), &mut **measure as &mut dyn FnMut() -> f64))
            .collect();
        Self::run(warm_up, rounds, &mut variants)
    }

    /// How many rounds were measured.
    pub(crate) fn count(&self) -> usize {
        self.values.first().map_or(0, Vec::len)
    }

    fn index(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no variant `{name}`"))
    }

    /// The quartiles of what `name` measured.
    pub(crate) fn spread(&self, name: &str) -> Spread {
        Spread::of(self.values[self.index(name)].clone())
    }

    /// The quartiles of `a / b`, taken round by round.
    pub(crate) fn ratio(&self, a: &str, b: &str) -> Spread {
        let (a, b) = (&self.values[self.index(a)], &self.values[self.index(b)]);
        Spread::of(a.iter().zip(b).map(|(a, b)| a / b).collect())
    }
}

/// A bound a ratio should stay within.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    /// The ratio's median at most this.
    AtMost(f64),
    /// The ratio's median at least this.
    AtLeast(f64),
}

/// The machine-readable result of a paired harness: rows that
/// `cargo xtask bench` turns into the tables of `docs/benchmarks.md`.
#[derive(Debug)]
pub(crate) struct Report {
    bench: &'static str,
    rows: Vec<Value>,
}

impl Report {
    /// An empty report for the bench target `bench`.
    pub(crate) fn new(bench: &'static str) -> Self {
        Report {
            bench,
            rows: Vec::new(),
        }
    }

    /// Adds and prints a row: `name` in `group` measured `value` (the
    /// median, in `unit`) over `rounds` rounds and, when given, its ratio to
    /// `to` with the ratio's quartiles and its target.
    pub(crate) fn row(
        &mut self,
        group: &str,
        name: &str,
        (value, unit): (f64, &str),
        rounds: usize,
        ratio: Option<(&str, Spread)>,
        target: Option<Target>,
    ) {
        let mut line = format!("paired/{group}/{name}: {value:.1} {unit}");
        let mut row = json!({
            "group": group,
            "name": name,
            "value": value,
            "unit": unit,
            "rounds": rounds,
        });
        if let Some((to, s)) = ratio {
            line += &format!(
                "; {:.3} x {to} (quartiles {:.3} to {:.3})",
                s.median, s.q1, s.q3
            );
            row["ratio"] = json!({"to": to, "q1": s.q1, "median": s.median, "q3": s.q3});
        }
        if let Some(target) = target {
            let (key, bound, word) = match target {
                Target::AtMost(b) => ("at_most", b, "at most"),
                Target::AtLeast(b) => ("at_least", b, "at least"),
            };
            line += &format!(" (target: {word} {bound})");
            row["target"] = json!({ key: bound });
        }
        println!("{line}");
        self.rows.push(row);
    }

    /// Writes the report as `<bench>.json` (see [`OUT_ENV`]), printing where.
    pub(crate) fn write(self) {
        let dir = std::env::var_os(OUT_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(default_dir);
        let path = dir.join(format!("{}.json", self.bench));
        let report = json!({
            "bench": self.bench,
            "quick": quick(),
            "rows": self.rows,
        });
        let text = serde_json::to_string_pretty(&report).expect("serializable");
        match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text)) {
            Ok(()) => println!("paired: wrote {}", path.display()),
            Err(e) => eprintln!("paired: could not write {}: {e}", path.display()),
        }
    }
}

/// `<target>/nerve-bench/paired`, found from the bench binary's own path
/// (`<target>/<profile>/deps/<bench>-<hash>`).
fn default_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let target = exe.ancestors().nth(3).expect("in <target>/<profile>/deps");
    target.join("nerve-bench").join("paired")
}

/// Criterion's options that take a value, so that the value is not taken
/// for a filter.
const VALUED: [&str; 16] = [
    "--warm-up-time",
    "--measurement-time",
    "--sample-size",
    "--save-baseline",
    "-s",
    "--baseline",
    "-b",
    "--baseline-lenient",
    "--load-baseline",
    "--profile-time",
    "--nresamples",
    "--noise-threshold",
    "--confidence-level",
    "--significance-level",
    "--color",
    "--output-format",
];

/// The filter criterion would read from the command line: the first
/// argument that is neither an option nor an option's value.
pub(crate) fn filter() -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if VALUED.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            return Some(arg);
        }
    }
    None
}

/// Whether the measurement `name` runs: a filter that does not name it
/// skips it, as criterion skips what a filter does not match, and so do
/// `--list` and criterion's `--test` mode, which measure nothing.
pub(crate) fn selected(name: &str) -> bool {
    let listing = std::env::args().any(|a| a == "--list" || a == "--test");
    !listing && filter().is_none_or(|f| name.contains(&f) || f.contains(name))
}
