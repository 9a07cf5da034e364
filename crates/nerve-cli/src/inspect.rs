//! The commands that read a journal: stats, query, timeline, tail, verify.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::ExitCode;

use anyhow::{Context, Result};
use nerve_core::query::HistoryQuery;
use nerve_core::{Event, Pattern, Timestamp};
use nerve_journal::{Follow, JournalReader, ReadError};
use serde::Serialize;
use serde_json::Value;

use crate::output::Out;
use crate::path::JournalFiles;
use crate::{Filter, PathArg, QueryArgs, StatsArgs, TailArgs, TimelineArgs};

fn open(path: &PathArg) -> Result<(JournalFiles, JournalReader)> {
    let files = JournalFiles::resolve(&path.path)?;
    let reader = JournalReader::open(&files.active)
        .with_context(|| format!("cannot open the journal {}", files.active.display()))?;
    Ok((files, reader))
}

fn parse_time(text: &str) -> Result<Timestamp> {
    if let Ok(secs) = text.parse::<f64>() {
        return Ok(Timestamp::from_micros((secs * 1e6) as i64));
    }
    Timestamp::parse_rfc3339(text).with_context(|| {
        format!("`{text}` is not a time (RFC 3339, like 2026-11-23T10:00:00Z, or seconds since the epoch)")
    })
}

fn parse_pattern(text: &str) -> Result<Pattern> {
    Pattern::parse(text).with_context(|| format!("`{text}` is not a valid pattern"))
}

impl Filter {
    fn query(&self) -> Result<HistoryQuery> {
        let mut q = HistoryQuery::new();
        if let Some(p) = &self.event_type {
            q = q.with_pattern(parse_pattern(p)?);
        }
        if let Some(t) = &self.since {
            q = q.since(parse_time(t)?);
        }
        if let Some(t) = &self.until {
            q = q.until(parse_time(t)?);
        }
        if let Some(c) = &self.correlation {
            q = q.correlation_id(c.as_str());
        }
        if let Some(r) = &self.run {
            q = q.run_id(r);
        }
        if let Some(s) = &self.source {
            q = q.source(s);
        }
        Ok(q)
    }
}

/// A record that could not be read, for reports.
fn damage(e: &ReadError) -> Option<String> {
    match e {
        ReadError::Io { .. } => None,
        other => Some(other.to_string()),
    }
}

// ----- stats -----

#[derive(Debug, Default, Serialize)]
struct RunSummary {
    events: u64,
    succeeded: u64,
    failed: u64,
    success_rate: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
struct Stats {
    events: u64,
    by_type: BTreeMap<String, u64>,
    runs: BTreeMap<String, RunSummary>,
    first: Option<String>,
    last: Option<String>,
    span_seconds: Option<f64>,
    torn_lines: u64,
    corrupt_lines: u64,
    damaged: Vec<String>,
}

pub(crate) fn stats(args: &StatsArgs, out: &mut Out) -> Result<ExitCode> {
    let (_, reader) = open(&args.path)?;
    let (success, failure) = (parse_pattern(&args.success)?, parse_pattern(&args.failure)?);
    let mut s = Stats::default();
    let (mut first, mut last): (Option<Timestamp>, Option<Timestamp>) = (None, None);
    for item in reader {
        let e = match item {
            Ok(e) => e,
            Err(e @ ReadError::Io { .. }) => return Err(e.into()),
            Err(e) => {
                if matches!(e, ReadError::TornTail { .. }) {
                    s.torn_lines += 1;
                } else {
                    s.corrupt_lines += 1;
                }
                s.damaged.extend(damage(&e));
                continue;
            }
        };
        s.events += 1;
        *s.by_type.entry(e.event_type().to_owned()).or_default() += 1;
        let t = e.timestamp();
        first = Some(first.map_or(t, |f| f.min(t)));
        last = Some(last.map_or(t, |l| l.max(t)));
        if let Some(run) = e.run_id() {
            let r = s.runs.entry(run.to_owned()).or_default();
            r.events += 1;
            if success.matches(e.event_type()) {
                r.succeeded += 1;
            } else if failure.matches(e.event_type()) {
                r.failed += 1;
            }
        }
    }
    for r in s.runs.values_mut() {
        let done = r.succeeded + r.failed;
        r.success_rate = (done > 0).then(|| r.succeeded as f64 / done as f64);
    }
    s.first = first.map(|t| t.to_string());
    s.last = last.map(|t| t.to_string());
    if let (Some(f), Some(l)) = (first, last) {
        s.span_seconds = Some((l.as_micros() - f.as_micros()) as f64 / 1e6);
    }
    if args.json {
        out.line(serde_json::to_string_pretty(&s)?)?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    out.line(format!("{:>8}  event type", "count"))?;
    for (t, n) in &s.by_type {
        out.line(format!("{n:>8}  {t}"))?;
    }
    out.line(format!("{:>8}  total", s.events))?;
    out.line("")?;
    if let (Some(f), Some(l), Some(span)) = (&s.first, &s.last, s.span_seconds) {
        out.line(format!("time span: {f} .. {l} ({span:.3} s)"))?;
    }
    if !s.runs.is_empty() {
        out.line(format!(
            "{:<24} {:>8} {:>10} {:>8} {:>9}",
            "run", "events", "succeeded", "failed", "success"
        ))?;
        for (id, r) in &s.runs {
            let rate = r
                .success_rate
                .map_or("-".to_owned(), |v| format!("{:.1}%", v * 100.0));
            out.line(format!(
                "{id:<24} {:>8} {:>10} {:>8} {rate:>9}",
                r.events, r.succeeded, r.failed
            ))?;
        }
    }
    out.line(format!(
        "damaged lines: {} torn, {} corrupt",
        s.torn_lines, s.corrupt_lines
    ))?;
    for d in &s.damaged {
        out.line(format!("  {d}"))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

// ----- query -----

pub(crate) fn query(args: &QueryArgs, out: &mut Out) -> Result<ExitCode> {
    let (_, reader) = open(&args.path)?;
    let mut q = args.filter.query()?;
    if let Some(n) = args.limit {
        q = q.limit(n);
    }
    if !args.reverse {
        q = q.oldest_first();
    }
    let events = reader.query(&q)?;
    if args.table {
        out.line(format!(
            "{:>8}  {:<27}  {:<28}  {:<16}  data",
            "seq", "timestamp", "event type", "run"
        ))?;
    }
    for e in &events {
        if args.table {
            let mut data = e.data().to_string();
            if data.len() > 60 {
                let cut = (0..=60)
                    .rev()
                    .find(|i| data.is_char_boundary(*i))
                    .unwrap_or(0);
                data.truncate(cut);
                data.push('…');
            }
            out.line(format!(
                "{:>8}  {:<27}  {:<28}  {:<16}  {data}",
                e.seq(),
                e.timestamp().to_string(),
                e.event_type(),
                e.run_id().unwrap_or("-"),
            ))?;
        } else {
            out.line(serde_json::to_string(e)?)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

// ----- timeline -----

/// The value at a dotted path into the event's JSON form.
fn field(event: &Event, path: &str) -> Option<Value> {
    let json = serde_json::to_value(event).ok()?;
    let pointer = format!("/{}", path.replace('.', "/"));
    json.pointer(&pointer).cloned()
}

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

fn sparkline(values: &[f64]) -> String {
    let (min, max) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    values
        .iter()
        .map(|v| {
            if max > min {
                BARS[(((v - min) / (max - min)) * 7.0).round() as usize]
            } else {
                BARS[3]
            }
        })
        .collect()
}

pub(crate) fn timeline(args: &TimelineArgs, out: &mut Out) -> Result<ExitCode> {
    let (_, reader) = open(&args.path)?;
    let q = args.filter.query()?.oldest_first();
    let events = reader.query(&q)?;
    let mut points: Vec<(u64, String, f64)> = Vec::new();
    let mut missing = 0;
    out.line(format!("{:>8}  {:<27}  {}", "seq", "timestamp", args.field))?;
    for e in &events {
        match field(e, &args.field) {
            Some(v) => {
                out.line(format!(
                    "{:>8}  {:<27}  {v}",
                    e.seq(),
                    e.timestamp().to_string()
                ))?;
                if let Some(n) = v.as_f64() {
                    points.push((e.seq(), e.timestamp().to_string(), n));
                }
            }
            None => missing += 1,
        }
    }
    out.line("")?;
    if points.is_empty() {
        out.line(format!(
            "no numeric values of `{}` in {} matching events ({missing} without the field)",
            args.field,
            events.len()
        ))?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let values: Vec<f64> = points.iter().map(|p| p.2).collect();
    out.line(sparkline(&values))?;
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    out.line(format!(
        "{} values, min {lo}, max {hi}, first {}, last {}",
        values.len(),
        values[0],
        values[values.len() - 1]
    ))?;
    if let Some((i, drop)) = points
        .windows(2)
        .enumerate()
        .map(|(i, w)| (i + 1, w[0].2 - w[1].2))
        .filter(|(_, d)| *d > 0.0)
        .max_by(|a, b| a.1.total_cmp(&b.1))
    {
        let (seq, ts, v) = &points[i];
        out.line(format!(
            "largest drop: {drop} at seq {seq} ({ts}), down to {v}"
        ))?;
    }
    if missing > 0 {
        out.line(format!("{missing} matching events lack the field"))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

// ----- tail -----

pub(crate) fn tail(args: &TailArgs, out: &mut Out) -> Result<ExitCode> {
    let files = JournalFiles::resolve(&args.path.path)?;
    let pattern = args.event_type.as_deref().map(parse_pattern).transpose()?;
    let keep = |e: &Event| pattern.as_ref().is_none_or(|p| p.matches(e.event_type()));
    // Start following before reading the last lines, so that nothing
    // written in between is missed; what it repeats is skipped by seq/id.
    let follow = if args.follow {
        Some(
            Follow::from_end(&files.active)
                .with_context(|| format!("cannot follow {}", files.active.display()))?,
        )
    } else {
        None
    };
    let mut q = HistoryQuery::new().limit(args.lines);
    if let Some(p) = &pattern {
        q = q.with_pattern(p.clone());
    }
    let mut last = JournalReader::open(&files.active)?.query(&q)?;
    last.reverse();
    let shown: HashSet<_> = last.iter().map(Event::event_id).collect();
    for e in &last {
        out.line(serde_json::to_string(e)?)?;
    }
    out.flush()?;
    let Some(follow) = follow else {
        return Ok(ExitCode::SUCCESS);
    };
    for item in follow {
        match item {
            Ok(e) if keep(&e) && !shown.contains(&e.event_id()) => {
                out.line(serde_json::to_string(&e)?)?;
                out.flush()?;
            }
            Ok(_) => {}
            Err(e @ ReadError::Io { .. }) => return Err(e.into()),
            Err(e) => eprintln!("nerve: warning: {e}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ----- verify -----

pub(crate) fn verify(args: &PathArg, out: &mut Out) -> Result<ExitCode> {
    let (files, reader) = match open(args) {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("nerve: error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let read_files: Vec<String> = reader
        .files()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut problems: Vec<String> = Vec::new();
    let mut records = 0u64;
    let mut ids: HashMap<nerve_core::EventId, u64> = HashMap::new();
    let mut seqs: Vec<u64> = Vec::new();
    for item in reader {
        match item {
            Ok(e) => {
                records += 1;
                *ids.entry(e.event_id()).or_default() += 1;
                if e.seq() > 0 {
                    seqs.push(e.seq());
                }
            }
            Err(e @ ReadError::Io { .. }) => {
                eprintln!("nerve: error: {e:#}");
                return Ok(ExitCode::from(2));
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    let duplicates: Vec<String> = ids
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| format!("event id {id} appears {n} times"))
        .collect();
    problems.extend(duplicates);
    seqs.sort_unstable();
    let mut repeated = 0u64;
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    for w in seqs.windows(2) {
        if w[1] == w[0] {
            repeated += 1;
        } else if w[1] > w[0] + 1 {
            gaps.push((w[0] + 1, w[1] - 1));
        }
    }
    for (from, to) in gaps.iter().take(20) {
        problems.push(if from == to {
            format!("seq {from} is missing")
        } else {
            format!("seq {from}..={to} are missing")
        });
    }
    if gaps.len() > 20 {
        problems.push(format!("... and {} more seq gaps", gaps.len() - 20));
    }
    if repeated > 0 {
        problems.push(format!(
            "{repeated} seq numbers repeat (several buses or restarts wrote this journal, or records were duplicated)"
        ));
    }
    for n in files.numbering_gaps() {
        let name = files
            .active
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        problems.push(format!(
            "backup {name}.{n}.jsonl is missing: rotation numbering has a gap"
        ));
    }
    out.line(format!("journal: {}", files.active.display()))?;
    out.line(format!(
        "files: {} ({})",
        read_files.len(),
        read_files.join(", ")
    ))?;
    out.line(format!("records: {records}"))?;
    if let (Some(lo), Some(hi)) = (seqs.first(), seqs.last()) {
        out.line(format!("seq: {lo}..={hi}"))?;
    }
    if problems.is_empty() {
        out.line("ok: no problems found")?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    out.line(format!("problems: {}", problems.len()))?;
    for p in &problems {
        out.line(format!("  {p}"))?;
    }
    out.flush()?;
    Ok(ExitCode::from(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_spans_the_range() {
        assert_eq!(sparkline(&[0.0, 0.5, 1.0]), "▁▅█");
        assert_eq!(sparkline(&[2.0, 2.0]), "▄▄");
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1.5").unwrap().as_micros(), 1_500_000);
        assert!(parse_time("2026-11-23T10:00:00Z").is_ok());
        assert!(
            parse_time("yesterday")
                .unwrap_err()
                .to_string()
                .contains("not a time")
        );
    }

    #[test]
    fn fields() {
        let e = Event::builder("a.b")
            .data(serde_json::json!({"metrics": {"success_rate": 0.5}}))
            .build()
            .unwrap();
        assert_eq!(
            field(&e, "data.metrics.success_rate"),
            Some(serde_json::json!(0.5))
        );
        assert_eq!(field(&e, "event_type"), Some(serde_json::json!("a.b")));
        assert_eq!(field(&e, "data.nope"), None);
    }
}
