//! What the journal owes the file: marker lines for numbered events it could
//! not write, so that every `seq` a bus assigns appears in the journal.
//!
//! An event refused by a full queue (`dropped`) or lost to a failed write
//! (`io`) is remembered here and written later as its own envelope with an
//! error marker for `data`; past [`OWED_MAX`] remembered events, the rest of
//! that reason are summed up in one range line (`system.journal_gap`). Events
//! re-emitted by `replay` and not recorded again are written as range lines
//! too (`replayed`). See `docs/journal-format.md`, "Markers".

use std::sync::Arc;

use nerve_core::Event;

/// How many events one list remembers one by one before it sums the rest of
/// a reason up in a range. Bounds the memory a long outage can hold (each
/// entry keeps its event's payload alive).
pub(crate) const OWED_MAX: usize = 1024;

/// `$nerve_error` of an event refused by a full queue.
pub(crate) const DROPPED: &str = "dropped";
/// `$nerve_error` of an event lost to a failed write.
pub(crate) const IO: &str = "io";
/// `reason` of a range of replayed events not recorded again.
pub(crate) const REPLAYED: &str = "replayed";

/// An event to be written as a marker line: its envelope, `data` replaced by
/// `{"$nerve_error":reason,"message":message}`.
#[derive(Debug, Clone)]
pub(crate) struct Marker {
    pub(crate) event: Event,
    pub(crate) reason: &'static str,
    pub(crate) message: Arc<str>,
}

/// A range of `count` numbered events, between `from` and `to` inclusive,
/// that are not in the journal for `reason`: a `system.journal_gap` line.
/// Other numbers of the range may be in the journal as events: the range
/// says where to look, `count` how many are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap {
    pub(crate) from: u64,
    pub(crate) to: u64,
    pub(crate) count: u64,
    pub(crate) reason: &'static str,
}

impl Gap {
    pub(crate) fn one(seq: u64, reason: &'static str) -> Self {
        Self {
            from: seq,
            to: seq,
            count: 1,
            reason,
        }
    }

    /// Takes `seq` in, widening the range.
    pub(crate) fn add(&mut self, seq: u64) {
        self.from = self.from.min(seq);
        self.to = self.to.max(seq);
        self.count += 1;
    }

    fn merge(&mut self, other: Gap) {
        self.from = self.from.min(other.from);
        self.to = self.to.max(other.to);
        self.count += other.count;
    }
}

/// Markers not yet written: up to [`OWED_MAX`] one by one, then one range per
/// reason.
#[derive(Debug, Default)]
pub(crate) struct Owed {
    pub(crate) markers: Vec<Marker>,
    pub(crate) gaps: Vec<Gap>,
}

impl Owed {
    pub(crate) fn is_empty(&self) -> bool {
        self.markers.is_empty() && self.gaps.is_empty()
    }

    /// Remembers `marker`, or counts it in its reason's range once full.
    pub(crate) fn push(&mut self, marker: Marker) {
        if self.markers.len() < OWED_MAX {
            self.markers.push(marker);
        } else {
            let seq = marker.event.seq();
            match self.gaps.iter_mut().find(|g| g.reason == marker.reason) {
                Some(g) => g.add(seq),
                None => self.gaps.push(Gap::one(seq, marker.reason)),
            }
        }
    }

    /// Adds a range (merged with one of the same reason).
    pub(crate) fn push_gap(&mut self, gap: Gap) {
        match self.gaps.iter_mut().find(|g| g.reason == gap.reason) {
            Some(g) => g.merge(gap),
            None => self.gaps.push(gap),
        }
    }

    /// Moves everything of `other` in.
    pub(crate) fn append(&mut self, other: Owed) {
        for m in other.markers {
            self.push(m);
        }
        for g in other.gaps {
            self.push_gap(g);
        }
    }
}

/// Consecutive numbers of replayed events not recorded again, written as
/// one range once the run of numbers breaks (or at a flush).
#[derive(Debug, Default)]
pub(crate) struct Skipped(Option<Gap>);

impl Skipped {
    /// Takes `seq` in; returns the range it closed, if it did not continue it.
    pub(crate) fn add(&mut self, seq: u64) -> Option<Gap> {
        match &mut self.0 {
            Some(g) if seq == g.to + 1 => {
                g.to = seq;
                g.count += 1;
                None
            }
            open => open.replace(Gap::one(seq, REPLAYED)),
        }
    }

    /// The open range, closed.
    pub(crate) fn take(&mut self) -> Option<Gap> {
        self.0.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(seq: u64, reason: &'static str) -> Marker {
        Marker {
            event: Event::builder("a.b").seq(seq).build().unwrap(),
            reason,
            message: "m".into(),
        }
    }

    #[test]
    fn past_the_bound_a_reason_is_summed_up_in_one_range() {
        let mut owed = Owed::default();
        for seq in 1..=OWED_MAX as u64 + 3 {
            owed.push(marker(seq, DROPPED));
        }
        owed.push(marker(9_000, IO));
        assert_eq!(owed.markers.len(), OWED_MAX);
        let top = OWED_MAX as u64;
        assert_eq!(
            owed.gaps,
            [
                Gap {
                    from: top + 1,
                    to: top + 3,
                    count: 3,
                    reason: DROPPED
                },
                Gap::one(9_000, IO)
            ]
        );
        let mut more = Owed::default();
        more.push_gap(Gap::one(2, DROPPED));
        owed.append(more);
        assert_eq!(owed.gaps[0].from, 2);
        assert_eq!(owed.gaps[0].count, 4);
    }

    #[test]
    fn replayed_numbers_make_one_range_per_run() {
        let mut s = Skipped::default();
        assert_eq!(s.add(5), None);
        assert_eq!(s.add(6), None);
        assert_eq!(s.add(7), None);
        let closed = s.add(10).unwrap();
        assert_eq!((closed.from, closed.to, closed.count), (5, 7, 3));
        assert_eq!(s.take(), Some(Gap::one(10, REPLAYED)));
        assert_eq!(s.take(), None);
    }
}
