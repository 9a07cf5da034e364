//! The routing table: a token trie over pattern segments, published as an
//! immutable snapshot, with a bounded cache of topic -> handlers in front.
//!
//! Writers (subscribe, unsubscribe) copy the path they change and publish a
//! new snapshot; emitters load the current snapshot without locking. The
//! trie's child maps are persistent (`imbl`), so a copy is O(depth · log n),
//! not O(subscriptions). Every snapshot starts with an empty cache, which is
//! how subscribing invalidates it.

use std::cell::RefCell;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock, PoisonError, Weak};

use dashmap::DashMap;
use nerve_core::Segment;
use nerve_core::name::EventType;

use crate::counter::{Counter, thread_number};
use crate::subscribe::SubscriptionId;
use crate::subscription::Subscription;
// The publishing protocol (snapshot, version, writers' lock) goes through
// the shim, so that `--cfg nerve_loom` model-checks it (see `sync.rs`); the
// cache above it is filled from one immutable snapshot and stays std.
use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering, Snapshot, SnapshotGuard};

/// The handlers one topic routes to, highest priority first, ties in
/// subscription order, each subscription once.
#[derive(Clone)]
pub(crate) struct Route {
    /// The topic this is the route of: the name its events carry.
    pub(crate) event_type: EventType,
    pub(crate) subscriptions: Box<[Arc<Subscription>]>,
    pub(crate) has_async: bool,
    /// Whether anything runs on the emitting thread for this topic (an
    /// inline handler or a filter), and so needs the event's ambient
    /// correlation set around it.
    pub(crate) runs_inline: bool,
    /// Events emitted of this type, shared with the bus's stats, so that the
    /// emit path counts with one atomic add and no map lookup.
    pub(crate) type_counter: Arc<Counter>,
    /// Whether the topic matches the bus's terminal patterns.
    pub(crate) terminal: bool,
    /// Whether the topic matches the bus's durable patterns (when it has
    /// patterns of its own; by default durability follows `terminal`).
    pub(crate) durable: bool,
    /// Whether events of the topic are numbered and recorded in the sink
    /// (all but the bus's reports of sink faults).
    pub(crate) recorded: bool,
}

/// What the bus knows of a topic, apart from its subscriptions: computed
/// once per topic when its route is made.
pub(crate) struct TopicTraits {
    pub(crate) event_type: EventType,
    pub(crate) type_counter: Arc<Counter>,
    pub(crate) terminal: bool,
    pub(crate) durable: bool,
    pub(crate) recorded: bool,
}

/// Topics cached per snapshot. When the cache fills up it is cleared, so a
/// stream of all-distinct topics costs one trie walk and one insert each and
/// memory stays bounded, while hot topics are cached again right away.
const CACHE_CAPACITY: usize = 4096;

/// Copies of each cached route, one per stripe of threads (see [`Copies`]).
const ROUTE_COPIES: usize = 8;

/// A cached route and its copies, one per stripe of threads, each its own
/// allocation, made on first use: an emit counts a reference to its own
/// thread's copy, so threads emitting one topic share no written cache
/// line (docs/benchmarks.md, "Router design notes").
struct Copies {
    /// The first copy made, which the others are cloned from.
    route: Arc<Route>,
    copies: [OnceLock<Arc<Route>>; ROUTE_COPIES],
}

impl Copies {
    /// The copies of `route`, its first one made for the threads numbered
    /// `thread` (the route itself: a missed lookup clones nothing).
    fn new(route: Route, thread: usize) -> Self {
        let route = Arc::new(route);
        let copies: [OnceLock<Arc<Route>>; ROUTE_COPIES] = Default::default();
        let _ = copies[thread % ROUTE_COPIES].set(route.clone());
        Self { route, copies }
    }

    /// The copy of the threads numbered `thread` modulo the copies.
    fn of(&self, thread: usize) -> Arc<Route> {
        self.copies[thread % ROUTE_COPIES]
            .get_or_init(|| Arc::new(Route::clone(&self.route)))
            .clone()
    }
}

type Hasher = foldhash::fast::RandomState;

#[derive(Clone, Default)]
struct Node {
    literal: imbl::HashMap<Box<str>, Arc<Node>>,
    wildcard: Option<Arc<Node>>,
    /// Subscriptions whose pattern ends at this node.
    here: imbl::Vector<Arc<Subscription>>,
    /// Subscriptions whose pattern ends with `*` after this node: they match
    /// one or more further segments.
    tail: imbl::Vector<Arc<Subscription>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.wildcard.is_none()
            && self.here.is_empty()
            && self.tail.is_empty()
    }

    fn inserted(&self, segments: &[Segment], sub: &Arc<Subscription>) -> Node {
        let mut node = self.clone();
        match segments {
            [] => node.here.push_back(sub.clone()),
            [Segment::Wildcard] => node.tail.push_back(sub.clone()),
            [Segment::Literal(lit), rest @ ..] => {
                let child = match self.literal.get(lit) {
                    Some(child) => child.inserted(rest, sub),
                    None => Node::default().inserted(rest, sub),
                };
                node.literal.insert(lit.clone(), Arc::new(child));
            }
            [Segment::Wildcard, rest @ ..] => {
                let child = match &self.wildcard {
                    Some(child) => child.inserted(rest, sub),
                    None => Node::default().inserted(rest, sub),
                };
                node.wildcard = Some(Arc::new(child));
            }
        }
        node
    }

    fn removed(&self, segments: &[Segment], id: SubscriptionId) -> Node {
        let mut node = self.clone();
        match segments {
            [] => node.here.retain(|s| s.id != id),
            [Segment::Wildcard] => node.tail.retain(|s| s.id != id),
            [Segment::Literal(lit), rest @ ..] => {
                if let Some(child) = self.literal.get(lit) {
                    let child = child.removed(rest, id);
                    if child.is_empty() {
                        node.literal.remove(lit);
                    } else {
                        node.literal.insert(lit.clone(), Arc::new(child));
                    }
                }
            }
            [Segment::Wildcard, rest @ ..] => {
                if let Some(child) = &self.wildcard {
                    let child = child.removed(rest, id);
                    node.wildcard = (!child.is_empty()).then(|| Arc::new(child));
                }
            }
        }
        node
    }

    fn collect(&self, parts: &[&str], out: &mut Matched) {
        let Some((first, rest)) = parts.split_first() else {
            out.extend(self.here.iter().cloned());
            return;
        };
        out.extend(self.tail.iter().cloned());
        if let Some(child) = self.literal.get(*first) {
            child.collect(rest, out);
        }
        if let Some(child) = &self.wildcard {
            child.collect(rest, out);
        }
    }
}

/// The subscriptions a topic matches, gathered before they are sorted:
/// inline for the usual few, so a route costs one allocation for them.
type Matched = smallvec::SmallVec<[Arc<Subscription>; 8]>;

/// One published version of the routing table.
#[derive(Default)]
pub(crate) struct RouteTable {
    root: Node,
    subscriptions: imbl::OrdMap<SubscriptionId, Arc<Subscription>>,
    cache: DashMap<Box<str>, Copies, Hasher>,
    cached: AtomicUsize,
}

impl RouteTable {
    pub(crate) fn with(&self, sub: Arc<Subscription>) -> RouteTable {
        let mut root = self.root.clone();
        for pattern in &sub.patterns {
            root = root.inserted(pattern.segments(), &sub);
        }
        RouteTable {
            root,
            subscriptions: self.subscriptions.update(sub.id, sub),
            ..RouteTable::default()
        }
    }

    pub(crate) fn without(&self, id: SubscriptionId) -> Option<(RouteTable, Arc<Subscription>)> {
        let sub = self.subscriptions.get(&id)?.clone();
        let mut root = self.root.clone();
        for pattern in &sub.patterns {
            root = root.removed(pattern.segments(), id);
        }
        let table = RouteTable {
            root,
            subscriptions: self.subscriptions.without(&id),
            ..RouteTable::default()
        };
        Some((table, sub))
    }

    pub(crate) fn subscriptions(&self) -> impl Iterator<Item = &Arc<Subscription>> {
        self.subscriptions.values()
    }

    pub(crate) fn len(&self) -> usize {
        self.subscriptions.len()
    }

    /// The route of `topic` (this thread's copy of it), from the cache
    /// when possible.
    pub(crate) fn route(
        &self,
        topic: &str,
        extras: impl FnOnce(&str) -> TopicTraits,
    ) -> Arc<Route> {
        let thread = thread_number();
        if let Some(copies) = self.cache.get(topic) {
            return copies.of(thread);
        }
        let copies = Copies::new(self.compute(topic, extras(topic)), thread);
        let route = copies.of(thread);
        if self.cached.fetch_add(1, Ordering::Relaxed) >= CACHE_CAPACITY {
            self.cache.clear();
            self.cached.store(1, Ordering::Relaxed);
        }
        self.cache.insert(topic.into(), copies);
        route
    }

    /// The route of `topic` (this thread's copy) if the cache holds it.
    fn cached(&self, topic: &str) -> Option<Arc<Route>> {
        self.cache
            .get(topic)
            .map(|copies| copies.of(thread_number()))
    }

    fn compute(&self, topic: &str, traits: TopicTraits) -> Route {
        let TopicTraits {
            event_type,
            type_counter,
            terminal,
            durable,
            recorded,
        } = traits;
        let mut parts: smallvec::SmallVec<[&str; 8]> = topic.split('.').collect();
        parts.retain(|p| !p.is_empty());
        let mut subs = Matched::new();
        self.root.collect(&parts, &mut subs);
        subs.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
        // A subscription with several matching patterns is delivered once.
        subs.dedup_by_key(|s| s.id);
        Route {
            event_type,
            has_async: subs.iter().any(|s| s.is_async()),
            runs_inline: subs.iter().any(|s| s.is_inline() || s.filter.is_some()),
            subscriptions: subs.into_iter().collect(),
            type_counter,
            terminal,
            durable,
            recorded,
        }
    }
}

/// The current routing table of a bus, with a per-thread memo of the last
/// route looked up in front of it.
///
/// An emitter looking up its topic in the table's cache pays for loading the
/// table (`arc_swap`'s debt slot), hashing the topic, the cache shard's read
/// lock and counting a reference to the route (its cost: see
/// `docs/benchmarks.md`, "Router design notes"). A thread emitting the same topic again (the common case: a
/// loop of one kind of event) finds it in the memo for one load, one compare
/// and one count, on its own copy of the route.
pub(crate) struct Routes {
    table: Snapshot<RouteTable>,
    /// Which table is current: unique across every bus in the process, so a
    /// memo from another bus, or from an older table, never matches.
    version: AtomicU64,
    /// Serializes writers of `table`; emitters never take it.
    writer: Mutex<()>,
}

/// Where table versions come from; 0 is never one.
#[cfg(not(nerve_loom))]
static VERSIONS: AtomicU64 = AtomicU64::new(1);
// A model build has no `const` atomics: a lazy static, fresh per execution.
#[cfg(nerve_loom)]
loom::lazy_static! {
    static ref VERSIONS: AtomicU64 = AtomicU64::new(1);
}

/// What the memo holds: the table version, and the route looked up in it.
type Memo = RefCell<(u64, Weak<Route>)>;

#[cfg(not(nerve_loom))]
thread_local! {
    /// The last route this thread looked up, and the table version it came
    /// from. Weak: a memo must not keep a dropped bus's subscriptions (and
    /// what their handlers own) alive.
    static LAST: Memo = const { RefCell::new((0, Weak::new())) };
}
// One memo per modelled thread (loom's `thread_local!` takes no `const`).
#[cfg(nerve_loom)]
loom::thread_local! {
    static LAST: Memo = RefCell::new((0, Weak::new()));
}

impl Routes {
    pub(crate) fn new() -> Self {
        Self {
            table: Snapshot::from_pointee(RouteTable::default()),
            version: AtomicU64::new(VERSIONS.fetch_add(1, Ordering::Relaxed)),
            writer: Mutex::new(()),
        }
    }

    /// The writers' lock, held while a table is made and published.
    pub(crate) fn writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes subscription `id`, closing its queue; `false` if it is not here.
    pub(crate) fn remove(&self, id: SubscriptionId) -> bool {
        let _writer = self.writer();
        let Some((table, sub)) = self.load().without(id) else {
            return false;
        };
        sub.active.store(false, Ordering::Release);
        self.store(table);
        sub.close_queue();
        true
    }

    pub(crate) fn load(&self) -> SnapshotGuard<RouteTable> {
        self.table.load()
    }

    /// Publishes `table`; writers hold [`writer`](Self::writer).
    pub(crate) fn store(&self, table: RouteTable) {
        self.swap(table);
    }

    /// Publishes `table`, returning the one it replaces.
    pub(crate) fn swap(&self, table: RouteTable) -> Arc<RouteTable> {
        let old = self.table.swap(Arc::new(table));
        // After the table: a thread that sees the new version sees the new
        // table too (and one that sees the old version looks again later).
        self.version
            .store(VERSIONS.fetch_add(1, Ordering::Relaxed), Ordering::Release);
        old
    }

    /// The route of `topic` if this thread's memo or the current table's
    /// cache holds it: only topics of events routed before, so `topic` is a
    /// valid name when this finds it.
    #[inline]
    pub(crate) fn cached(&self, topic: &str) -> Option<Arc<Route>> {
        let version = self.version.load(Ordering::Acquire);
        let memo = LAST.try_with(|last| {
            let last = last.borrow();
            if last.0 != version {
                return None;
            }
            last.1
                .upgrade()
                .filter(|route| route.event_type.as_str() == topic)
        });
        if let Ok(Some(route)) = memo {
            return Some(route);
        }
        let route = self.table.load().cached(topic)?;
        let _ = LAST.try_with(|last| *last.borrow_mut() = (version, Arc::downgrade(&route)));
        Some(route)
    }

    /// The route of `topic` in the current table (see [`RouteTable::route`]).
    pub(crate) fn route(
        &self,
        topic: &str,
        extras: impl FnOnce(&str) -> TopicTraits,
    ) -> Arc<Route> {
        if let Some(route) = self.cached(topic) {
            return route;
        }
        // The version read before the table: if a writer publishes in
        // between, the memo is stale at once and the next lookup misses.
        let version = self.version.load(Ordering::Acquire);
        let route = self.table.load().route(topic, extras);
        let _ = LAST.try_with(|last| *last.borrow_mut() = (version, Arc::downgrade(&route)));
        route
    }
}
