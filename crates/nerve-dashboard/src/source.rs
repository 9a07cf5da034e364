//! Where the dashboard's events come from: a bus in this process, or a
//! journal on disk followed across rotations.
//!
//! Both join history and live the same way: open the live feed first (the
//! bus's stream, the journal's [`Follow`]), then read the history (the
//! bus's in-memory history, the journal's files), then take the live feed,
//! skipping what the history already gave. Nothing written between the two
//! is missed, and nothing is shown twice.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use nerve_core::query::HistoryQuery;
use nerve_core::{Event, EventId};
use nerve_journal::{Follow, JournalReader, ReadError};
use nerve_router::{Bus, DeadLetterQueue, Overflow, StreamOptions, WeakBus};
use tokio::sync::watch;

use crate::hub::Hub;

/// The name the dashboard's stream has in the bus's stats.
pub(crate) const STREAM_NAME: &str = "nerve-dashboard";

/// The dashboard's stream of a bus holds this many events before it drops
/// the oldest (counted, and shown as the source's `missed`).
const BUS_STREAM_CAPACITY: usize = 65_536;

/// How often a bus's counters are read into the summary.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// How long a journal follower waits for new lines before it looks at
/// whether the dashboard is shutting down.
const FOLLOW_WAIT: Duration = Duration::from_millis(100);

/// A journal's history is read after its follower opened; the follower's
/// first events may repeat the history's last ones. Events this much older
/// than the follower's opening cannot be among them (the journal writes an
/// event within moments of its emission), so only newer ids are kept to
/// skip repeats, which bounds the memory a huge journal's history costs.
const SEAM_SLACK_MICROS: i64 = 300_000_000;

/// A bus to show, as given to the builder.
#[derive(Clone)]
pub(crate) struct BusSource {
    pub(crate) name: String,
    pub(crate) bus: Bus,
    pub(crate) dead_letters: Option<DeadLetterQueue>,
}

/// Subscribes the dashboard to `bus` (synchronously, so that no event
/// emitted after `serve` returns is missed) and spawns the task that feeds
/// its events to the hub.
pub(crate) fn start_bus(
    hub: &Arc<Hub>,
    source: BusSource,
    rt: &tokio::runtime::Handle,
    shutdown: watch::Receiver<bool>,
) -> Result<(), nerve_router::SubscribeError> {
    let index = hub.add_source(source.name.clone(), "bus");
    let mut stream = source.bus.stream_with(
        "*",
        StreamOptions::new()
            .capacity(BUS_STREAM_CAPACITY)
            .overflow(Overflow::DropOldest)
            .name(STREAM_NAME),
    )?;
    let stream_id = stream.id();
    let history = source.bus.history(&HistoryQuery::new().oldest_first());
    let mut seam = Seam::new(history);
    seam.publish_ready(hub, index);
    hub.update_source(index, |s| s.status = "following".to_owned());
    let weak = source.bus.downgrade();
    let dead_letters = source.dead_letters.clone();
    drop(source);

    let feed_hub = hub.clone();
    let feed_bus = weak.clone();
    let mut stop = shutdown.clone();
    rt.spawn(async move {
        loop {
            let next = async {
                if seam.pending.is_empty() {
                    Some(stream.next().await)
                } else {
                    tokio::time::timeout(SEAM_IDLE, stream.next()).await.ok()
                }
            };
            tokio::select! {
                event = next => match event {
                    Some(Some(event)) => seam.live(&feed_hub, index, &feed_bus, event),
                    // Quiet for a while: what the history still holds back
                    // cannot be overtaken any more.
                    None => seam.flush(&feed_hub, index),
                    Some(None) => {
                        seam.flush(&feed_hub, index);
                        feed_hub.update_source(index, |s| s.status = "ended: the bus shut down".to_owned());
                        break;
                    }
                },
                _ = stop.changed() => break,
            }
        }
    });

    let stats_hub = hub.clone();
    let mut stop = shutdown;
    rt.spawn(async move {
        let mut tick = tokio::time::interval(STATS_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let Some(bus) = WeakBus::upgrade(&weak) else {
                break;
            };
            let stats = bus.stats();
            drop(bus);
            let dropped_by_dashboard = stats
                .subscribers
                .iter()
                .find(|s| s.id == stream_id.as_u64())
                .map_or(0, |s| s.dropped);
            let mut json = serde_json::json!({
                "emitted": stats.events.emitted,
                "rejected": stats.events.rejected,
                "dropped": stats.events.dropped,
                "failed": stats.events.failed,
                "panicked": stats.events.panicked,
                "timed_out": stats.events.timed_out,
                "halted": stats.events.halted,
                "not_recorded": stats.events.not_recorded,
                "abandoned": stats.events.abandoned,
                "journal_errors": stats.events.journal_errors,
                "handler_failures": stats.handler_failures,
                "dropped_by_subscriber": stats.subscribers.iter()
                    .filter(|s| s.dropped > 0)
                    .map(|s| (s.name.clone().unwrap_or_else(|| format!("#{}", s.id)), s.dropped))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            });
            if let Some(q) = &dead_letters {
                let d = q.stats();
                json["dead_letters"] = serde_json::json!({
                    "held": d.size,
                    "max": d.max_size,
                    "added": d.added,
                    "evicted": d.evicted,
                    "retried_ok": d.retried_ok,
                    "retried_failed": d.retried_failed,
                    "persist_errors": d.persist_errors,
                    "by_reason": d.by_reason,
                });
            }
            stats_hub.update_source(index, |s| {
                s.missed = dropped_by_dashboard;
                s.bus = Some(json);
            });
        }
    });
    Ok(())
}

/// How long a bus's live stream may be quiet before the history events
/// held back at the seam are published anyway.
const SEAM_IDLE: Duration = Duration::from_millis(200);

/// Joins a bus's in-memory history to its live stream, opened first.
///
/// The history is read slot by slot while the bus goes on emitting, so it
/// may hold a later event and miss an earlier one that the stream has; and
/// an emit that chose its subscribers before the stream existed may reach
/// the history only after it was read. So history events after the first
/// gap in `seq` are held back and published in `seq` order among the live
/// ones; at the first live event the history is read once more for what
/// came before it; and every event is published once (by id).
struct Seam {
    /// History events not yet published, by (`seq`, position).
    pending: BTreeMap<(u64, usize), Event>,
    /// Ids published or pending from the history, to skip live repeats.
    seen: HashSet<EventId>,
    /// The history was read again at the first live event.
    checked: bool,
    /// The last `seq` published.
    last: u64,
}

impl Seam {
    fn new(history: Vec<Event>) -> Self {
        let mut seam = Self {
            pending: BTreeMap::new(),
            seen: HashSet::with_capacity(history.len()),
            checked: false,
            last: 0,
        };
        seam.hold(history);
        seam
    }

    fn hold(&mut self, events: Vec<Event>) {
        for event in events {
            if self.seen.insert(event.event_id()) {
                let at = self.pending.len();
                self.pending.insert((event.seq(), at), event);
            }
        }
    }

    /// Publishes the held events that continue the `seq` series without a
    /// gap (all of them the first time: nothing came before).
    fn publish_ready(&mut self, hub: &Hub, index: usize) {
        while let Some(entry) = self.pending.first_entry() {
            let seq = entry.key().0;
            if self.last != 0 && seq != 0 && seq > self.last + 1 {
                break;
            }
            let event = entry.remove();
            self.last = self.last.max(event.seq());
            hub.publish(index, event);
        }
    }

    /// Publishes every held event with a `seq` below `seq`.
    fn publish_before(&mut self, hub: &Hub, index: usize, seq: u64) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 >= seq {
                break;
            }
            let event = entry.remove();
            self.last = self.last.max(event.seq());
            hub.publish(index, event);
        }
    }

    fn flush(&mut self, hub: &Hub, index: usize) {
        self.publish_before(hub, index, u64::MAX);
    }

    fn live(&mut self, hub: &Hub, index: usize, bus: &WeakBus, event: Event) {
        if !self.checked {
            self.checked = true;
            if let Some(bus) = bus.upgrade() {
                let before = event.seq();
                let again: Vec<Event> = bus
                    .history(&HistoryQuery::new().oldest_first())
                    .into_iter()
                    .filter(|e| e.seq() < before)
                    .collect();
                self.hold(again);
            }
        }
        if !self.seen.is_empty() && self.seen.remove(&event.event_id()) {
            // The history had it: published from there, in order.
            hub.update_source(index, |s| s.duplicates_skipped += 1);
            self.publish_ready(hub, index);
            return;
        }
        self.publish_before(hub, index, event.seq());
        self.last = self.last.max(event.seq());
        hub.publish(index, event);
        self.publish_ready(hub, index);
    }
}

/// Follows one journal on a thread of its own until `stop` is set.
pub(crate) fn start_journal(
    hub: &Arc<Hub>,
    name: String,
    active: PathBuf,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let index = hub.add_source(name, "journal");
    let hub = hub.clone();
    std::thread::Builder::new()
        .name("nerve-dashboard-journal".to_owned())
        .spawn(move || follow_journal(&hub, index, &active, &stop))
}

fn follow_journal(hub: &Hub, index: usize, active: &Path, stop: &AtomicBool) {
    let set_status = |status: String| hub.update_source(index, |s| s.status = status);
    // The follower first: what is written while the history is read is
    // then in its feed.
    let mut said = false;
    let opened_at = nerve_core::Timestamp::now().as_micros();
    let mut follow = loop {
        match Follow::from_end(active) {
            Ok(f) => break f.poll_interval(Duration::from_millis(20)),
            Err(e) => {
                if !said {
                    let why = if active.exists() {
                        format!("error: {e}")
                    } else {
                        format!("waiting for {}", active.display())
                    };
                    set_status(why);
                    said = true;
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(FOLLOW_WAIT);
            }
        }
    };
    let mut seen: HashSet<EventId> = HashSet::new();
    match JournalReader::open(active) {
        Ok(reader) => {
            for item in reader {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                match item {
                    Ok(event) => {
                        if event.timestamp().as_micros() >= opened_at - SEAM_SLACK_MICROS {
                            seen.insert(event.event_id());
                        }
                        hub.publish(index, event);
                    }
                    Err(e) => note_error(hub, index, &e),
                }
            }
        }
        Err(e) => set_status(format!("error: {e}")),
    }
    set_status("following".to_owned());
    while !stop.load(Ordering::Relaxed) {
        match follow.next_timeout(FOLLOW_WAIT) {
            Some(Ok(event)) => {
                if !seen.is_empty() {
                    if seen.remove(&event.event_id()) {
                        hub.update_source(index, |s| s.duplicates_skipped += 1);
                        continue;
                    }
                    // Both read the files in order: the first event the
                    // history did not have ends the overlap.
                    seen = HashSet::new();
                }
                hub.publish(index, event);
            }
            Some(Err(e)) => note_error(hub, index, &e),
            None => {}
        }
    }
}

/// Counts a journal read error where the page shows it.
fn note_error(hub: &Hub, index: usize, e: &ReadError) {
    match e {
        ReadError::Missed {
            from_seq, to_seq, ..
        } => {
            let n = match (from_seq, to_seq) {
                (Some(a), Some(b)) if b >= a => b - a + 1,
                _ => 1,
            };
            tracing::warn!(error = %e, "dashboard journal follower");
            hub.update_source(index, |s| s.missed += n);
        }
        // Following goes on, from the file's start.
        ReadError::Truncated { .. } => {
            tracing::warn!(error = %e, "dashboard journal follower");
            let status = format!("following; {e}");
            hub.update_source(index, |s| s.status = status);
        }
        e if e.is_damaged_line() => {
            tracing::warn!(error = %e, "skipped a journal line");
            hub.update_source(index, |s| s.damaged_lines += 1);
        }
        e => {
            let status = format!("error: {e}");
            hub.update_source(index, |s| s.status = status);
        }
    }
}
