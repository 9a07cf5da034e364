//! The one ordered log every source feeds and every client reads.
//!
//! Each event taken in gets the next dashboard id (1, 2, 3, ...), is
//! appended to the retained history (a bounded ring), folded into the
//! [`Summary`] and broadcast to the connected clients, all under one lock.
//! A client joins under the same lock: it takes a snapshot of the retained
//! history and its broadcast receiver at one instant, so the history it
//! replays and the live events after it meet with no gap and no duplicate.
//!
//! The broadcast channel is each client's bounded queue: a client that
//! falls `client_queue` events behind loses the oldest of them and is told
//! how many ([`tokio::sync::broadcast`]'s `Lagged`), and the server's
//! memory stays bounded whatever the clients do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nerve_core::Event;
use tokio::sync::{broadcast, watch};

use crate::summary::{Rules, Summary};

/// One event as the dashboard holds it.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The dashboard id: the position in the log, from 1.
    pub(crate) id: u64,
    pub(crate) event: Event,
    /// `{"id":..,"source":"..","event":{..}}`: the SSE `event` data and the
    /// API's item, serialized once.
    pub(crate) json: Arc<str>,
}

/// A source, as the summary lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct SourceInfo {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    /// `starting`, `following`, `ended`, or `error: ...`.
    pub(crate) status: String,
    pub(crate) events: u64,
    /// Journal lines skipped as damaged (torn or corrupt).
    pub(crate) damaged_lines: u64,
    /// Journal records missed because retention removed a file before it
    /// was read; for a bus, events its stream to the dashboard dropped.
    pub(crate) missed: u64,
    /// Events skipped as already taken from history at the seam.
    pub(crate) duplicates_skipped: u64,
    /// The bus's own counters (bus sources only), refreshed every second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bus: Option<serde_json::Value>,
}

struct State {
    log: imbl::Vector<Arc<Entry>>,
    next_id: u64,
    evicted: u64,
    summary: Summary,
    sources: Vec<SourceInfo>,
    dirty: bool,
}

/// What a client gets when it joins.
pub(crate) struct Join {
    /// The retained history, oldest first.
    pub(crate) history: imbl::Vector<Arc<Entry>>,
    pub(crate) live: broadcast::Receiver<Arc<Entry>>,
    /// The id of the last event in the log when the client joined.
    pub(crate) last_id: u64,
}

pub(crate) struct Hub {
    state: Mutex<State>,
    tx: broadcast::Sender<Arc<Entry>>,
    retain: usize,
    client_queue: usize,
    /// Random per server: an id from another server's stream is recognised
    /// as such (`Last-Event-ID` after a restart).
    pub(crate) instance: String,
    /// Events clients were told they missed, over all clients.
    pub(crate) missed_by_clients: AtomicU64,
    pub(crate) clients: AtomicU64,
    summary_tx: watch::Sender<Arc<str>>,
}

impl Hub {
    pub(crate) fn new(rules: Rules, retain: usize, client_queue: usize) -> Self {
        let (tx, _) = broadcast::channel(client_queue.max(1));
        let summary = Summary::new(rules);
        let (summary_tx, _) = watch::channel(Arc::from("{}"));
        let hub = Self {
            state: Mutex::new(State {
                log: imbl::Vector::new(),
                next_id: 1,
                evicted: 0,
                summary,
                sources: Vec::new(),
                dirty: true,
            }),
            tx,
            retain: retain.max(1),
            client_queue: client_queue.max(1),
            instance: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            missed_by_clients: AtomicU64::new(0),
            clients: AtomicU64::new(0),
            summary_tx,
        };
        hub.publish_summary();
        hub
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data behind
        // (every step is a push or a counter), so a poisoned lock is used.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add_source(&self, name: String, kind: &'static str) -> usize {
        let mut s = self.lock();
        s.sources.push(SourceInfo {
            name,
            kind,
            status: "starting".to_owned(),
            events: 0,
            damaged_lines: 0,
            missed: 0,
            duplicates_skipped: 0,
            bus: None,
        });
        s.dirty = true;
        s.sources.len() - 1
    }

    /// Changes a source's counters or status.
    pub(crate) fn update_source(&self, source: usize, f: impl FnOnce(&mut SourceInfo)) {
        let mut s = self.lock();
        if let Some(info) = s.sources.get_mut(source) {
            f(info);
            s.dirty = true;
        }
    }

    /// Takes in one event of `source`.
    pub(crate) fn publish(&self, source: usize, event: Event) {
        // Serialized outside the lock; only the id is spliced in under it.
        let body = match serde_json::to_string(&event) {
            Ok(b) => b,
            Err(e) => format!(
                "{{\"event_type\":{},\"error\":{}}}",
                serde_json::Value::from(event.event_type()),
                serde_json::Value::from(format!("cannot serialize: {e}"))
            ),
        };
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        let name = s
            .sources
            .get(source)
            .map(|i| i.name.clone())
            .unwrap_or_default();
        let json = format!(
            "{{\"id\":{id},\"source\":{},\"event\":{body}}}",
            serde_json::Value::from(name.as_str())
        );
        s.summary.observe(source, &name, &event);
        if let Some(info) = s.sources.get_mut(source) {
            info.events += 1;
        }
        let entry = Arc::new(Entry {
            id,
            event,
            json: Arc::from(json),
        });
        s.log.push_back(entry.clone());
        if s.log.len() > self.retain {
            s.log.pop_front();
            s.evicted += 1;
        }
        s.dirty = true;
        // No receiver is not an error: nobody is watching yet.
        let _ = self.tx.send(entry);
    }

    /// A client joins: the retained history and the live receiver, taken
    /// at one instant.
    pub(crate) fn join(&self) -> Join {
        let s = self.lock();
        Join {
            history: s.log.clone(),
            live: self.tx.subscribe(),
            last_id: s.next_id - 1,
        }
    }

    /// The retained history.
    pub(crate) fn history(&self) -> imbl::Vector<Arc<Entry>> {
        self.lock().log.clone()
    }

    /// The id of the last event taken in (0 if none).
    pub(crate) fn last_id(&self) -> u64 {
        self.lock().next_id - 1
    }

    /// One retained event by id.
    pub(crate) fn get(&self, id: u64) -> Option<Arc<Entry>> {
        let s = self.lock();
        let first = s.log.front()?.id;
        let at = usize::try_from(id.checked_sub(first)?).ok()?;
        s.log.get(at).cloned()
    }

    /// Serializes the summary if something changed since the last time,
    /// and hands it to the clients.
    pub(crate) fn publish_summary(&self) {
        let json = {
            let mut s = self.lock();
            if !s.dirty {
                return;
            }
            s.dirty = false;
            let mut v = s.summary.to_json();
            let first_id = s.log.front().map_or(s.next_id, |e| e.id);
            v["instance"] = self.instance.clone().into();
            v["sources"] = serde_json::to_value(&s.sources).unwrap_or_default();
            v["last_id"] = (s.next_id - 1).into();
            v["retained"] = serde_json::json!({
                "events": s.log.len(),
                "capacity": self.retain,
                "first_id": first_id,
                "evicted": s.evicted,
            });
            v["clients"] = serde_json::json!({
                "connected": self.clients.load(Ordering::Relaxed),
                "missed": self.missed_by_clients.load(Ordering::Relaxed),
                "queue": self.client_queue,
            });
            v
        };
        let text: Arc<str> = Arc::from(json.to_string());
        self.summary_tx.send_replace(text);
    }

    /// Marks the summary as changed (a counter outside the lock moved).
    pub(crate) fn touch(&self) {
        self.lock().dirty = true;
    }

    pub(crate) fn summary(&self) -> watch::Receiver<Arc<str>> {
        self.summary_tx.subscribe()
    }
}
