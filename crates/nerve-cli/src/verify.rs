//! `nerve verify`: the authority on a journal's integrity. Exit 0 clean, 1
//! problems, 2 could not read.
//!
//! What counts as a problem: damaged lines (torn or corrupt), duplicate
//! event ids, repeated seq numbers (journals written before one sequence per
//! journal, or duplicated records), seq numbers missing inside the retained
//! window, and a gap in the backups' numbering. What is only reported:
//! seq numbers below the oldest retained file's first record (removed by
//! retention, and those among the first records of that file that were
//! written before it, see [`EDGE`]), marker lines (events written as `$nerve_error` markers, and
//! `system.journal_gap` ranges, whose seq numbers count as accounted for),
//! pending files of an interrupted rotation, and the quarantine file.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use nerve::journal::{ERROR_MARKER_KEY, ReadError};
use nerve::{Event, EventId};

use crate::PathArg;
use crate::damage::Skipped;
use crate::inspect::open;
use crate::output::{Out, say};
use crate::path::JournalFiles;

/// The event type of a range marker: `seq` numbers `from_seq..=to_seq` were
/// taken but their events could not be written (`data.reason` says why).
pub(crate) const GAP_MARKER: &str = "system.journal_gap";

/// How many of the oldest retained file's first records may have been
/// overtaken by records written before them into a file retention removed.
///
/// Emitters on several threads hand their events to the journal's writer
/// slightly out of order (`docs/journal-format.md`, "One sequence per
/// journal"), so the oldest file kept can hold a straggler numbered below
/// records of the file retention removed before it. A seq number missing
/// below the highest of the oldest file's first `EDGE` records may have been
/// in that removed file: it is not a problem. The same allowance the journal
/// makes when it finds its last seq number at open (its last 64 lines).
const EDGE: usize = 64;

/// How many gaps or ranges are listed one by one.
const LISTED: usize = 20;

/// A `system.journal_gap` line: seq numbers accounted for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Accounted {
    from: u64,
    to: u64,
    reason: String,
}

/// The range a gap marker accounts for, if `event` is one.
fn accounted(event: &Event) -> Option<Accounted> {
    if event.event_type() != GAP_MARKER {
        return None;
    }
    let data = event.data();
    let from = data.get("from_seq")?.as_u64()?;
    let to = data.get("to_seq")?.as_u64()?;
    let reason = data
        .get("reason")
        .and_then(|r| r.as_str())
        .unwrap_or("unknown")
        .to_owned();
    (from <= to).then_some(Accounted { from, to, reason })
}

/// The reason of a per-event error marker, if `event`'s data is one.
fn marker_reason(event: &Event) -> Option<String> {
    let reason = event.data().get(ERROR_MARKER_KEY)?;
    Some(reason.as_str().unwrap_or("unknown").to_owned())
}

/// `a..=b` as words.
fn range(from: u64, to: u64) -> String {
    if from == to {
        format!("seq {from}")
    } else {
        format!("seq {from}..={to}")
    }
}

/// What reading the journal found.
#[derive(Debug, Default)]
struct Findings {
    records: u64,
    problems: Vec<String>,
    ids: HashMap<EventId, u64>,
    seqs: Vec<u64>,
    /// Files in reading order with the lowest seq each holds.
    lowest: Vec<(PathBuf, u64)>,
    /// The highest seq among the oldest file's first [`EDGE`] records, and
    /// how many of them were seen.
    edge: (u64, usize),
    markers: BTreeMap<String, u64>,
    ranges: Vec<Accounted>,
}

impl Findings {
    fn event(&mut self, file: Option<PathBuf>, e: &Event) {
        self.records += 1;
        *self.ids.entry(e.event_id()).or_default() += 1;
        if let Some(r) = marker_reason(e) {
            *self.markers.entry(r).or_default() += 1;
        }
        if let Some(a) = accounted(e) {
            self.ranges.push(a);
        }
        let seq = e.seq();
        if seq == 0 {
            return;
        }
        self.seqs.push(seq);
        let file = file.unwrap_or_default();
        if self.lowest.first().is_none_or(|(f, _)| *f == file) && self.edge.1 < EDGE {
            self.edge = (self.edge.0.max(seq), self.edge.1 + 1);
        }
        match self.lowest.last_mut() {
            Some((f, lo)) if *f == file => *lo = (*lo).min(seq),
            _ => self.lowest.push((file, seq)),
        }
    }
}

/// Seq numbers missing between `seqs` (sorted), at or above `window`, and
/// not accounted for by `ranges`; and how many repeat.
fn gaps(seqs: &[u64], window: u64, ranges: &[Accounted]) -> (Vec<(u64, u64)>, u64) {
    let mut repeated = 0;
    let mut missing = Vec::new();
    for w in seqs.windows(2) {
        if w[1] == w[0] {
            repeated += 1;
        } else if w[1] > w[0] + 1 {
            let from = (w[0] + 1).max(window);
            let to = w[1] - 1;
            if from <= to {
                missing.extend(uncovered(from, to, ranges));
            }
        }
    }
    (missing, repeated)
}

/// The parts of `from..=to` that no range covers.
fn uncovered(from: u64, to: u64, ranges: &[Accounted]) -> Vec<(u64, u64)> {
    let mut covers: Vec<(u64, u64)> = ranges
        .iter()
        .filter(|r| r.to >= from && r.from <= to)
        .map(|r| (r.from, r.to))
        .collect();
    covers.sort_unstable();
    let mut out = Vec::new();
    let mut at = from;
    for (a, b) in covers {
        if a > at {
            out.push((at, a - 1));
        }
        at = at.max(b.saturating_add(1));
        if at > to {
            return out;
        }
    }
    if at <= to {
        out.push((at, to));
    }
    out
}

pub(crate) fn verify(args: &PathArg, out: &mut Out) -> Result<ExitCode> {
    let (files, mut reader) = match open(args) {
        Ok(opened) => opened,
        Err(e) => {
            say!("nerve: error: {}", crate::output::chain(&e));
            return Ok(ExitCode::from(2));
        }
    };
    let read_files: Vec<String> = reader
        .files()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut f = Findings::default();
    let mut skipped = Skipped::default();
    while let Some(item) = reader.next() {
        match item {
            Ok(e) => f.event(reader.current_file().map(PathBuf::from), &e),
            Err(e @ ReadError::Io { .. }) => {
                say!(
                    "nerve: error: {}",
                    crate::output::chain(&anyhow::Error::new(e))
                );
                return Ok(ExitCode::from(2));
            }
            Err(e) => {
                skipped.note(&e);
                f.problems.push(e.to_string());
            }
        }
    }
    // Said on stderr too, as every reading command does; the details are
    // the problems listed on stdout.
    if let Some(s) = skipped.summary() {
        say!("nerve: warning: {s}");
    }
    let mut notes: Vec<String> = Vec::new();
    let mut duplicates: Vec<String> = f
        .ids
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| format!("event id {id} appears {n} times"))
        .collect();
    duplicates.sort();
    f.problems.extend(duplicates);

    f.seqs.sort_unstable();
    // The retained window starts at the oldest file's lowest record. When
    // retention removed older files (the sequence does not start at 1),
    // numbers missing among the oldest file's first records may have been
    // in them (see `EDGE`).
    let window = f.lowest.first().map_or(0, |(_, lo)| *lo);
    let checked_from = if window > 1 {
        window.max(f.edge.0)
    } else {
        window
    };
    let (missing, repeated) = gaps(&f.seqs, checked_from, &f.ranges);
    let edge: Vec<(u64, u64)> = gaps(&f.seqs, window, &f.ranges)
        .0
        .into_iter()
        .filter(|(from, _)| *from < checked_from)
        .map(|(from, to)| (from, to.min(checked_from - 1)))
        .collect();
    if let (Some((oldest, _)), Some(hi)) = (f.lowest.first(), f.seqs.last()) {
        let oldest = oldest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        notes.push(format!(
            "retained window: seq {window}..={hi}, from {oldest} (the oldest file kept; {} backups kept)",
            files.backups.len()
        ));
        if window > 1 {
            let rotated = !files.backups.is_empty() || !files.pending.is_empty();
            notes.push(if rotated {
                format!(
                    "{} removed by retention (older than {oldest}; the journal keeps {} backups)",
                    range(1, window - 1),
                    files.backups.len()
                )
            } else {
                format!(
                    "{} are not in this journal (it starts at seq {window})",
                    range(1, window - 1)
                )
            });
        }
    }
    if !edge.is_empty() {
        let listed: Vec<String> = edge
            .iter()
            .take(LISTED)
            .map(|(a, b)| range(*a, *b))
            .collect();
        notes.push(format!(
            "{} not in the oldest file kept, whose first {EDGE} records reach seq {checked_from}: taken as removed by retention (emitters hand events to the writer slightly out of order)",
            listed.join(", ")
        ));
    }
    for (from, to) in missing.iter().take(LISTED) {
        f.problems.push(if from == to {
            format!("seq {from} is missing")
        } else {
            format!("seq {from}..={to} are missing")
        });
    }
    if missing.len() > LISTED {
        f.problems
            .push(format!("... and {} more seq gaps", missing.len() - LISTED));
    }
    if repeated > 0 {
        f.problems.push(format!(
            "{repeated} seq numbers repeat (several buses or restarts wrote this journal before it kept one sequence, or records were duplicated)"
        ));
    }
    if !f.markers.is_empty() {
        let total: u64 = f.markers.values().sum();
        let by: Vec<String> = f
            .markers
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        notes.push(format!(
            "error markers: {total} events written as markers ({})",
            by.join(", ")
        ));
    }
    for r in f.ranges.iter().take(LISTED) {
        notes.push(format!(
            "gap marker: {} accounted for ({} events, {})",
            range(r.from, r.to),
            r.to - r.from + 1,
            r.reason
        ));
    }
    if f.ranges.len() > LISTED {
        notes.push(format!(
            "... and {} more gap markers",
            f.ranges.len() - LISTED
        ));
    }
    numbering(&files, &mut f.problems, &mut notes);
    quarantine(&files, &mut notes);

    out.line(format!("journal: {}", files.active.display()))?;
    out.line(format!(
        "files: {} ({})",
        read_files.len(),
        read_files.join(", ")
    ))?;
    out.line(format!("records: {}", f.records))?;
    if let (Some(lo), Some(hi)) = (f.seqs.first(), f.seqs.last()) {
        out.line(format!("seq: {lo}..={hi}"))?;
    }
    for n in &notes {
        out.line(format!("note: {n}"))?;
    }
    if f.problems.is_empty() {
        out.line("ok: no problems found")?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    out.line(format!("problems: {}", f.problems.len()))?;
    for p in &f.problems {
        out.line(format!("  {p}"))?;
    }
    out.flush()?;
    Ok(ExitCode::from(1))
}

/// Gaps in the backups' numbering: a problem, unless rotated files still
/// wait for their number (an interrupted rotation, which the journal's next
/// open finishes; seq numbers tell whether anything is missing).
fn numbering(files: &JournalFiles, problems: &mut Vec<String>, notes: &mut Vec<String>) {
    let stem = files.stem();
    if !files.pending.is_empty() {
        let names: Vec<String> = files
            .pending
            .iter()
            .map(|g| format!("{stem}.p{g}.jsonl"))
            .collect();
        notes.push(format!(
            "interrupted rotation: {} file(s) wait for their number ({}); the journal's next open numbers them",
            names.len(),
            names.join(", ")
        ));
        return;
    }
    for n in files.numbering_gaps() {
        problems.push(format!(
            "backup {stem}.{n}.jsonl is missing: rotation numbering has a gap"
        ));
    }
}

/// The quarantine file of torn tails cut off at recovery, if it holds any.
fn quarantine(files: &JournalFiles, notes: &mut Vec<String>) {
    let name = format!("{}.jsonl.torn", files.stem());
    let path = files.sibling(&name);
    if let Ok(meta) = std::fs::metadata(&path) {
        if meta.len() > 0 {
            notes.push(format!(
                "{name} holds {} bytes of torn lines cut off when the journal was recovered (not part of the journal)",
                meta.len()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(from: u64, to: u64) -> Accounted {
        Accounted {
            from,
            to,
            reason: "dropped".into(),
        }
    }

    #[test]
    fn gaps_inside_the_window_not_accounted_for() {
        let check = |seqs: &[u64], window: u64, ranges: &[Accounted], want: &[(u64, u64)]| {
            assert_eq!(gaps(seqs, window, ranges).0, want, "{seqs:?} {window}");
        };
        check(&[1, 2, 3], 1, &[], &[]);
        check(&[1, 5], 1, &[], &[(2, 4)]);
        check(&[1, 5], 1, &[acc(2, 4)], &[]);
        check(
            &[1, 9],
            1,
            &[acc(3, 4), acc(6, 6)],
            &[(2, 2), (5, 5), (7, 8)],
        );
        check(&[1, 9], 1, &[acc(0, 20)], &[]);
        // Below the window: removed by retention, not missing.
        check(&[3, 100, 101, 105], 100, &[], &[(102, 104)]);
        assert_eq!(gaps(&[1, 1, 2, 2], 1, &[]).1, 2);
    }
}
