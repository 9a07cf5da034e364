//! Re-emitting recorded events into a bus, to rebuild state after a restart.

use nerve_core::Event;
use nerve_core::query::HistoryQuery;
use nerve_router::{Bus, EmitError};

use crate::reader::{JournalReader, ReadError};

/// Whether `event` was re-emitted by [`replay`]: its `causation_id` is its
/// own `event_id`.
///
/// A live event never carries that mark (its cause is an earlier event, and
/// ids are unique), and the bus keeps both fields as given, so the mark
/// survives to every handler, stream and sink. The replayed copy keeps the
/// original `event_id`, `event_type`, `timestamp`, `source`,
/// `correlation_id`, `run_id`, `lane` and `data`; the bus gives it a new
/// `seq` (and `lane_seq`). The original `causation_id` is the one field not
/// carried: it is in the journal line with the same `event_id`.
pub fn is_replayed(event: &Event) -> bool {
    event.causation_id() == Some(event.event_id())
}

/// The copy of a recorded event that [`replay`] emits.
pub fn replayed_copy(event: &Event) -> Event {
    let mut b = Event::builder(event.event_type())
        .event_id(event.event_id())
        .timestamp(event.timestamp())
        .causation_id(event.event_id())
        .data(event.data().clone());
    if let Some(s) = event.source() {
        b = b.source(s);
    }
    if let Some(c) = event.correlation_id() {
        b = b.correlation_id(c.clone());
    }
    if let Some(r) = event.run_id() {
        b = b.run_id(r);
    }
    if let Some(l) = event.lane() {
        b = b.lane(l);
    }
    // The name was valid when it was read back, so this cannot fail; the
    // fallback keeps the original rather than panic.
    b.build().unwrap_or_else(|_| event.clone())
}

/// What [`replay`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Events re-emitted.
    pub replayed: u64,
    /// Events the bus refused (a guard, name rules), with why.
    pub refused: Vec<(Event, EmitError)>,
    /// Lines that could not be read (skipped).
    pub bad_lines: Vec<ReadError>,
}

/// Replaying stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The journal could not be read.
    #[error("could not read the journal")]
    Read(#[from] ReadError),
    /// The bus is closed; `replayed` events were re-emitted before.
    #[error("the bus closed after {replayed} replayed events")]
    Closed {
        /// Events re-emitted before the bus closed.
        replayed: u64,
    },
}

/// Re-emits the recorded events matching `query` into `bus`, in the order
/// they were recorded (the query's limit picks the newest or oldest
/// matches, per its order; either way they are emitted oldest first), each
/// marked as replayed (see [`is_replayed`]).
///
/// A journal does not record replayed events again unless built with
/// [`record_replayed(true)`](crate::JournalBuilder::record_replayed), so a
/// service can replay its own journal into its own bus at start-up. The bus
/// still numbers them; such a journal accounts for their numbers with one
/// range line per run of consecutive numbers
/// (`{"event_type":"system.journal_gap",...,"data":{"from_seq":a,"to_seq":b,"count":n,"reason":"replayed"}}`,
/// see `docs/journal-format.md`), not with lines of their own, which would
/// repeat the originals' `event_id`s.
///
/// # Errors
///
/// [`ReplayError::Read`] if the journal cannot be read,
/// [`ReplayError::Closed`] if the bus closes.
pub fn replay(
    reader: JournalReader,
    query: &HistoryQuery,
    bus: &Bus,
) -> Result<ReplayReport, ReplayError> {
    let mut report = ReplayReport::default();
    let selected: Vec<Event> = if query.get_limit().is_some() && !query.is_oldest_first() {
        let mut newest = reader.query(query)?;
        newest.reverse();
        newest
    } else {
        let limit = query.get_limit().unwrap_or(usize::MAX);
        let mut out = Vec::new();
        for item in reader {
            match item {
                Ok(e) if query.matches(&e) => {
                    out.push(e);
                    if out.len() == limit {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e @ ReadError::Io { .. }) => return Err(e.into()),
                Err(e) => report.bad_lines.push(e),
            }
        }
        out
    };
    for event in selected {
        match bus.emit_event(replayed_copy(&event)) {
            // A halt still delivered the event.
            Ok(_) | Err(EmitError::Halted { .. }) => report.replayed += 1,
            Err(EmitError::Closed) => {
                return Err(ReplayError::Closed {
                    replayed: report.replayed,
                });
            }
            Err(e) => report.refused.push((event, e)),
        }
    }
    Ok(report)
}

impl crate::Journal {
    /// Flushes this journal, then [`replay`]s what it holds into `bus`.
    ///
    /// # Errors
    ///
    /// As [`replay`]; a failed flush is logged, and what is on disk replayed.
    pub fn replay(&self, query: &HistoryQuery, bus: &Bus) -> Result<ReplayReport, ReplayError> {
        use nerve_core::sink::EventSink;
        if let Err(e) = self.flush(std::time::Duration::from_secs(30)) {
            tracing::warn!(error = %e, "journal not flushed before replay");
        }
        replay(self.reader()?, query, bus)
    }
}
