//! The commands that read a journal: stats, query, timeline, tail.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use nerve::HistoryQuery;
use nerve::journal::{Follow, JournalReader, ReadError};
use nerve::run::{RunRole, RunTracker};
use nerve::{Event, Pattern, Timestamp};
use serde::Serialize;
use serde_json::Value;

use crate::damage::Skipped;
use crate::output::{Out, say};
use crate::path::JournalFiles;
use crate::{Filter, PathArg, QueryArgs, StatsArgs, TailArgs, TimelineArgs};

pub(crate) fn open(path: &PathArg) -> Result<(JournalFiles, JournalReader)> {
    let files = JournalFiles::resolve(&path.path)?;
    let reader = JournalReader::open(&files.active)
        .with_context(|| format!("cannot open the journal {}", files.active.display()))?;
    Ok((files, reader))
}

/// `text` quoted for an error message, cut to its first 64 characters.
pub(crate) fn quote(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!(
            "`{}`... ({} characters)",
            &text[..cut],
            text.chars().count()
        ),
        None => format!("`{text}`"),
    }
}

/// The span of times RFC 3339 can write (years 1 to 9999), in seconds
/// since the epoch.
const EPOCH_SECONDS: std::ops::RangeInclusive<f64> = -62_135_596_800.0..=253_402_300_799.0;

/// `text` as seconds since the epoch, if it is a number; a number outside
/// the years 1 to 9999 is an error (milliseconds are the likely slip), not
/// a time that matches nothing.
pub(crate) fn epoch_seconds(text: &str) -> Option<Result<f64>> {
    let secs = text.parse::<f64>().ok().filter(|s| s.is_finite())?;
    if !EPOCH_SECONDS.contains(&secs) {
        return Some(Err(anyhow::anyhow!(
            "{} seconds since the epoch is outside the years 1 to 9999 (milliseconds, not seconds?)",
            quote(text)
        )));
    }
    Some(Ok(secs))
}

fn parse_time(text: &str) -> Result<Timestamp> {
    if let Some(secs) = epoch_seconds(text) {
        #[allow(clippy::cast_possible_truncation, reason = "within EPOCH_SECONDS")]
        return Ok(Timestamp::from_micros((secs? * 1e6).round() as i64));
    }
    // A date alone is its midnight, UTC (as `journalctl --since` reads one).
    let is_date = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let parsed = if is_date {
        Timestamp::parse_rfc3339(&format!("{text}T00:00:00Z"))
    } else {
        Timestamp::parse_rfc3339(text)
    };
    parsed.map_err(|_| {
        anyhow::anyhow!(
            "{} is not a time (RFC 3339, like 2026-11-23T10:00:00Z, a date, or seconds since the epoch)",
            quote(text)
        )
    })
}

fn parse_pattern(text: &str) -> Result<Pattern> {
    // The parser's own message quotes the whole text, however long.
    Pattern::parse(text)
        .map_err(|e| anyhow::anyhow!("{} is not a valid pattern: {}", quote(text), e.reason()))
}

impl Filter {
    /// The conditions but the run, which [`RunTracker`] decides.
    fn query(&self) -> Result<HistoryQuery> {
        let mut q = HistoryQuery::new();
        if let Some(p) = &self.event_type {
            q = q.with_pattern(parse_pattern(p)?);
        }
        let since = self.since.as_deref().map(parse_time).transpose()?;
        let until = self.until.as_deref().map(parse_time).transpose()?;
        if let (Some(since), Some(until)) = (since, until) {
            if until < since {
                anyhow::bail!(
                    "--until {} is before --since {}: no event can match",
                    quote(self.until.as_deref().unwrap_or_default()),
                    quote(self.since.as_deref().unwrap_or_default())
                );
            }
        }
        if let Some(t) = since {
            q = q.since(t);
        }
        if let Some(t) = until {
            q = q.until(t);
        }
        if let Some(c) = &self.correlation {
            q = q.correlation_id(c.as_str());
        }
        if let Some(s) = &self.source {
            q = q.source(s);
        }
        Ok(q)
    }
}

/// The events `query` selects (its limit and order included), of run `run`
/// when given, noting damaged lines in `skipped`.
///
/// Without a run the reader answers the query itself (newest first reads
/// only the newest files). With a run every event is read oldest first, since
/// an event's run may depend on the events before it.
fn select(
    reader: JournalReader,
    query: &HistoryQuery,
    run: Option<&str>,
    skipped: &mut Skipped,
) -> Result<Vec<Event>> {
    let Some(run) = run else {
        return Ok(reader.query_with(query, |e| {
            skipped.note(&e);
        })?);
    };
    let limit = query.get_limit().unwrap_or(usize::MAX);
    let mut runs = RunTracker::new();
    let mut kept = VecDeque::new();
    if limit == 0 {
        return Ok(Vec::new());
    }
    for item in reader {
        let e = match item {
            Ok(e) => e,
            Err(e) if skipped.note(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        if runs.run_of(&e).as_deref() != Some(run) || !query.matches(&e) {
            continue;
        }
        if kept.len() == limit {
            if query.is_oldest_first() {
                break;
            }
            kept.pop_front();
        }
        kept.push_back(e);
    }
    let mut out: Vec<Event> = kept.into();
    if !query.is_oldest_first() {
        out.reverse();
    }
    Ok(out)
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

/// Runs as `stats` lists them: keyed by run id, a run started again under
/// an id already seen becoming `id #2` (and the first `id #1`), in the order
/// they started.
#[derive(Debug, Default)]
struct Runs {
    tracker: RunTracker,
    /// Starts seen per run id.
    starts: HashMap<String, u32>,
    /// Labels in first-seen order.
    order: Vec<String>,
}

impl Runs {
    /// The label of `event`'s run, if it has one.
    fn label(&mut self, event: &Event) -> Option<String> {
        let role = self.tracker.role(event);
        let run = self.tracker.observe(event, role)?;
        let n = if role == RunRole::Start {
            let n = self.starts.entry(run.clone()).or_default();
            *n += 1;
            *n
        } else {
            self.starts.get(&run).copied().unwrap_or(1)
        };
        let label = if n > 1 { format!("{run} #{n}") } else { run };
        if !self.order.contains(&label) {
            self.order.push(label.clone());
        }
        Some(label)
    }

    /// Renames the first run of ids started more than once to `id #1`.
    fn finish(&mut self, runs: &mut BTreeMap<String, RunSummary>) {
        for (id, n) in &self.starts {
            if *n > 1 {
                if let Some(r) = runs.remove(id) {
                    let label = format!("{id} #1");
                    runs.insert(label.clone(), r);
                    if let Some(slot) = self.order.iter_mut().find(|l| *l == id) {
                        *slot = label;
                    }
                }
            }
        }
    }
}

pub(crate) fn stats(args: &StatsArgs, out: &mut Out) -> Result<ExitCode> {
    let (_, reader) = open(&args.path)?;
    let (success, failure) = (parse_pattern(&args.success)?, parse_pattern(&args.failure)?);
    let mut s = Stats::default();
    let mut skipped = Skipped::default();
    let mut runs = Runs::default();
    let (mut first, mut last): (Option<Timestamp>, Option<Timestamp>) = (None, None);
    for item in reader {
        let e = match item {
            Ok(e) => e,
            Err(e) if skipped.note(&e) => {
                s.damaged.push(e.to_string());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        s.events += 1;
        *s.by_type.entry(e.event_type().to_owned()).or_default() += 1;
        let t = e.timestamp();
        first = Some(first.map_or(t, |f| f.min(t)));
        last = Some(last.map_or(t, |l| l.max(t)));
        if let Some(run) = runs.label(&e) {
            let r = s.runs.entry(run).or_default();
            r.events += 1;
            if success.matches(e.event_type()) {
                r.succeeded += 1;
            } else if failure.matches(e.event_type()) {
                r.failed += 1;
            }
        }
    }
    runs.finish(&mut s.runs);
    s.torn_lines = skipped.torn;
    s.corrupt_lines = skipped.corrupt;
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
        return Ok(skipped.report(&args.path.path, args.strict.strict));
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
        for id in &runs.order {
            let Some(r) = s.runs.get(id) else { continue };
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
    for d in s.damaged.iter().take(20) {
        out.line(format!("  {d}"))?;
    }
    if s.damaged.len() > 20 {
        out.line(format!("  ... and {} more", s.damaged.len() - 20))?;
    }
    out.flush()?;
    Ok(skipped.report(&args.path.path, args.strict.strict))
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
    let mut skipped = Skipped::default();
    let events = select(reader, &q, args.filter.run.as_deref(), &mut skipped)?;
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
                nerve::run::explicit_run_id(e).unwrap_or("-"),
            ))?;
        } else {
            out.line(serde_json::to_string(e)?)?;
        }
    }
    out.flush()?;
    Ok(skipped.report(&args.path.path, args.strict.strict))
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
    let mut skipped = Skipped::default();
    let events = select(reader, &q, args.filter.run.as_deref(), &mut skipped)?;
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
        // The payload lives under `data`: a path written without it (as the
        // guide's jq writes `.data.metrics...`) gets a hint.
        let in_data = format!("data.{}", args.field);
        if !args.field.starts_with("data.") && events.iter().any(|e| field(e, &in_data).is_some()) {
            out.line(format!("hint: did you mean --field {in_data}?"))?;
        }
        out.flush()?;
        return Ok(skipped.report(&args.path.path, args.strict.strict));
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
    Ok(skipped.report(&args.path.path, args.strict.strict))
}

// ----- tail -----

/// How often `tail -f` looks for a journal that does not exist yet.
const WAIT_POLL: Duration = Duration::from_millis(50);

/// Waits until the journal has an active file to follow (`tail -F`); says
/// so once when `say` (a journal that does not exist yet, rather than one
/// between a rotation's rename and its new file).
fn wait_for(active: &Path, say: bool) -> Follow {
    let mut said = !say;
    loop {
        if let Ok(f) = Follow::from_end(active) {
            return f;
        }
        if !said {
            say!(
                "nerve: {} does not exist yet; waiting for it",
                active.display()
            );
            said = true;
        }
        std::thread::sleep(WAIT_POLL);
    }
}

pub(crate) fn tail(args: &TailArgs, out: &mut Out) -> Result<ExitCode> {
    let files = if args.follow {
        JournalFiles::resolve_missing_ok(&args.path)?
    } else {
        JournalFiles::resolve(&args.path)?
    };
    let pattern = args.event_type.as_deref().map(parse_pattern).transpose()?;
    let keep = |e: &Event| pattern.as_ref().is_none_or(|p| p.matches(e.event_type()));
    let strict = args.strict.strict;
    let mut skipped = Skipped::default();
    // Start following before reading the last lines, so that nothing
    // written in between is missed; what it repeats is skipped by id. A
    // journal created after the tail started is new: all of it is shown.
    let fresh = !files.active.exists() && files.backups.is_empty() && files.pending.is_empty();
    let (follow, lines) = if !args.follow {
        (None, args.lines)
    } else {
        match Follow::from_end(&files.active) {
            Ok(f) => (Some(f), args.lines),
            Err(_) if !files.active.exists() => {
                let lines = if fresh { usize::MAX } else { args.lines };
                (Some(wait_for(&files.active, fresh)), lines)
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("cannot follow {}", files.active.display())));
            }
        }
    };
    let mut q = HistoryQuery::new().limit(lines);
    if let Some(p) = &pattern {
        q = q.with_pattern(p.clone());
    }
    let mut last = JournalReader::open(&files.active)?.query_with(&q, |e| {
        skipped.note(&e);
    })?;
    last.reverse();
    let shown: HashSet<_> = last.iter().map(Event::event_id).collect();
    for e in &last {
        out.line(serde_json::to_string(e)?)?;
    }
    out.flush()?;
    let code = skipped.report(&args.path, strict);
    let Some(follow) = follow else {
        return Ok(code);
    };
    if strict && skipped.total() > 0 {
        return Ok(code);
    }
    for item in follow {
        match item {
            Ok(e) if keep(&e) && !shown.contains(&e.event_id()) => {
                out.line(serde_json::to_string(&e)?)?;
                out.flush()?;
            }
            Ok(_) => {}
            Err(e @ (ReadError::Missed { .. } | ReadError::Truncated { .. })) => {
                out.flush()?;
                say!("nerve: warning: {e}");
            }
            Err(e) if e.is_damaged_line() => {
                out.flush()?;
                let mut one = Skipped::default();
                one.note(&e);
                let code = one.report(&args.path, strict);
                if strict {
                    return Ok(code);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ExitCode::SUCCESS)
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
