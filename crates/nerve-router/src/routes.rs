//! The routing table: a token trie over pattern segments, published as an
//! immutable snapshot, with a bounded cache of topic -> handlers in front.
//!
//! Writers (subscribe, unsubscribe) copy the path they change and publish a
//! new snapshot; emitters load the current snapshot without locking. The
//! trie's child maps are persistent (`imbl`), so a copy is O(depth · log n),
//! not O(subscriptions). Every snapshot starts with an empty cache, which is
//! how subscribing invalidates it. A topic's route is cached from its
//! second miss on (a doorkeeper remembers the first), and past the cache's
//! capacity each new entry evicts the oldest, so topics that never repeat
//! neither churn the cache nor free it all at once.

use std::cell::RefCell;
use std::collections::VecDeque;
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

/// Topics cached per snapshot. Past it, each new topic evicts the oldest
/// cached one (first in, first out), so a stream of all-distinct topics
/// costs one trie walk, one insert and one eviction each, memory stays
/// bounded, and no emit frees the whole cache at once.
const CACHE_CAPACITY: usize = 4096;

/// Copies of each cached route, one per stripe of threads (see [`Copies`]).
const ROUTE_COPIES: usize = 8;

/// A cached route and its copies, one per stripe of threads, each its own
/// allocation, made on first use: an emit counts a reference to its own
/// thread's copy, so threads emitting one topic share no written cache
/// line (docs/benchmarks.md, "Router design notes"). The slots of the
/// other stripes are allocated once a second stripe emits the topic, so
/// a topic emitted from one thread costs a cache entry of a few words.
struct Copies {
    /// The first copy made, which the others are cloned from.
    route: Arc<Route>,
    /// The stripe `route` is the copy of.
    first: usize,
    others: OnceLock<Box<[OnceLock<Arc<Route>>; ROUTE_COPIES]>>,
}

impl Copies {
    /// The copies of `route`, its first one made for the threads numbered
    /// `thread` (the route itself: a missed lookup clones nothing).
    fn new(route: Route, thread: usize) -> Self {
        Self {
            route: Arc::new(route),
            first: thread % ROUTE_COPIES,
            others: OnceLock::new(),
        }
    }

    /// The copy of the threads numbered `thread` modulo the copies.
    fn of(&self, thread: usize) -> Arc<Route> {
        let stripe = thread % ROUTE_COPIES;
        if stripe == self.first {
            return self.route.clone();
        }
        self.others.get_or_init(Default::default)[stripe]
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
    /// Keyed by the route's checked name, which keeps a short topic inline.
    cache: DashMap<EventType, Copies, Hasher>,
    /// The cached topics, oldest first. Every insert into and removal from
    /// `cache` happens under this lock, so each cached topic is here once.
    order: std::sync::Mutex<VecDeque<EventType>>,
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

    /// The route of `topic` (this thread's copy of it), computed, and
    /// cached if `keep`: for a topic [`cached`](Self::cached) just missed.
    /// Should another thread have cached it in between, this replaces its
    /// entry.
    fn route_missed(
        &self,
        topic: &str,
        extras: impl FnOnce(&str) -> TopicTraits,
        keep: bool,
    ) -> Arc<Route> {
        let route = self.compute(topic, extras(topic));
        if !keep {
            return Arc::new(route);
        }
        let thread = thread_number();
        let copies = Copies::new(route, thread);
        let route = copies.of(thread);
        debug_assert_eq!(route.event_type.as_str(), topic);
        let topic = route.event_type.clone();
        let evicted = {
            let mut order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
            if self.cache.insert(topic.clone(), copies).is_none() {
                order.push_back(topic);
            }
            if order.len() > CACHE_CAPACITY {
                order
                    .pop_front()
                    .and_then(|oldest| self.cache.remove(&oldest))
            } else {
                None
            }
        };
        // Freed once the lock is let go.
        drop(evicted);
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
    /// The topics missed once lately: a route is cached from its topic's
    /// second miss on.
    seen: Seen,
}

/// Sets of remembered topics (their hashes' tags); [`SEEN_WAYS`] a set.
const SEEN_SETS: usize = 1024;
const SEEN_WAYS: usize = 4;

/// The doorkeeper of the route cache (as TinyLFU's): a route is cached the
/// second time its topic misses, so a stream of topics that never come
/// back (ids in names) neither fills the cache nor evicts the topics that
/// do; they cost a trie walk each, as a topic just evicted would. It
/// remembers a topic by a 32-bit tag of its hash in one of the four ways
/// of its set, written in turn, so two topics of one set do not keep
/// forgetting each other. Hand-written: a cache crate's admission policy
/// would not hold the per-stripe route copies this cache holds.
#[derive(Default)]
struct Seen {
    /// Allocated on the first miss: `SEEN_SETS * SEEN_WAYS` tags, 0 for none.
    tags: OnceLock<Box<[std::sync::atomic::AtomicU32]>>,
    /// Which way of its set the next tag goes in.
    turn: std::sync::atomic::AtomicUsize,
}

impl Seen {
    fn hash(topic: &str) -> u64 {
        use std::hash::BuildHasher;
        foldhash::fast::FixedState::with_seed(0x006e_6572_7665).hash_one(topic)
    }

    /// Whether `topic` was missed lately; if not, it is remembered.
    fn again(&self, topic: &str) -> bool {
        use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

        let hash = Self::hash(topic);
        // The set from the low bits, the tag from the high ones; never 0.
        let tag = (hash >> 32) as u32 | 1;
        let set = (hash as usize % SEEN_SETS) * SEEN_WAYS;
        let tags = self.tags.get_or_init(|| {
            (0..SEEN_SETS * SEEN_WAYS)
                .map(|_| AtomicU32::new(0))
                .collect()
        });
        let ways = &tags[set..set + SEEN_WAYS];
        if ways.iter().any(|way| way.load(Relaxed) == tag) {
            return true;
        }
        ways[self.turn.fetch_add(1, Relaxed) % SEEN_WAYS].store(tag, Relaxed);
        false
    }
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
            seen: Seen::default(),
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

    /// The route of `topic` in the current table: from this thread's memo
    /// or the table's cache when they hold it, else made and cached.
    pub(crate) fn route(
        &self,
        topic: &str,
        extras: impl FnOnce(&str) -> TopicTraits,
    ) -> Arc<Route> {
        match self.cached(topic) {
            Some(route) => route,
            None => self.route_missed(topic, extras),
        }
    }

    /// [`route`](Self::route) for a topic [`cached`](Self::cached) just
    /// missed: made and cached without looking again.
    pub(crate) fn route_missed(
        &self,
        topic: &str,
        extras: impl FnOnce(&str) -> TopicTraits,
    ) -> Arc<Route> {
        // The version read before the table: if a writer publishes in
        // between, the memo is stale at once and the next lookup misses.
        let version = self.version.load(Ordering::Acquire);
        let keep = self.seen.again(topic);
        let route = self.table.load().route_missed(topic, extras, keep);
        // A route not cached is dropped after this emit: not worth a memo.
        if keep {
            let _ = LAST.try_with(|last| *last.borrow_mut() = (version, Arc::downgrade(&route)));
        }
        route
    }
}

#[cfg(all(test, not(nerve_loom)))]
mod tests {
    use super::*;

    fn subscription(id: u64, pattern: &str) -> Arc<Subscription> {
        Subscription::stream_for_test(id, pattern)
    }

    fn traits(topic: &str) -> TopicTraits {
        TopicTraits {
            event_type: EventType::new(topic).unwrap(),
            type_counter: Arc::new(Counter::default()),
            terminal: false,
            durable: false,
            recorded: true,
        }
    }

    fn ids(route: &Route) -> Vec<SubscriptionId> {
        route.subscriptions.iter().map(|s| s.id).collect()
    }

    #[test]
    fn past_capacity_each_new_topic_evicts_the_oldest_and_routes_stay_right() {
        let table = RouteTable::default()
            .with(subscription(1, "svc.*"))
            .with(subscription(2, "*.done"));
        let topic = |n: usize| format!("svc.t{n}");
        for n in 0..CACHE_CAPACITY + 10 {
            let route = table.route_missed(&topic(n), traits, true);
            assert_eq!(ids(&route), [SubscriptionId::from_u64(1)]);
        }
        assert_eq!(table.cache.len(), CACHE_CAPACITY);
        assert_eq!(table.order.lock().unwrap().len(), CACHE_CAPACITY);
        // The first ten are gone, oldest first; the rest are kept.
        for n in 0..10 {
            assert!(table.cached(&topic(n)).is_none(), "{n}");
        }
        for n in 10..CACHE_CAPACITY + 10 {
            assert!(table.cached(&topic(n)).is_some(), "{n}");
        }
        // An evicted topic routes as before, and is cached again.
        let route = table.route_missed("svc.done", traits, true);
        assert_eq!(
            ids(&route),
            [SubscriptionId::from_u64(1), SubscriptionId::from_u64(2)]
        );
        assert!(table.cached("svc.done").is_some());
        assert_eq!(table.cache.len(), CACHE_CAPACITY);
    }

    #[test]
    fn a_route_is_cached_from_its_topics_second_miss_and_one_off_topics_never_are() {
        let routes = Routes::new();
        {
            let _writer = routes.writer();
            routes.store(routes.load().with(subscription(1, "a.*")));
        }
        let route = routes.route("a.b", traits);
        assert_eq!(ids(&route), [SubscriptionId::from_u64(1)]);
        drop(route);
        assert_eq!(routes.load().cache.len(), 0);
        routes.route("a.b", traits);
        assert_eq!(routes.load().cache.len(), 1);
        for n in 0..3 * CACHE_CAPACITY {
            let route = routes.route(&format!("a.n{n}"), traits);
            assert_eq!(ids(&route), [SubscriptionId::from_u64(1)]);
        }
        // Neither cached nor evicting the topic that came back.
        assert_eq!(routes.load().cache.len(), 1);
        assert!(routes.load().cached("a.b").is_some());
    }

    #[test]
    fn the_doorkeeper_remembers_four_topics_of_one_set() {
        let set = |topic: &str| Seen::hash(topic) as usize % SEEN_SETS;
        let want = set("t.0");
        let topics: Vec<String> = (0..)
            .map(|n| format!("t.{n}"))
            .filter(|t| set(t) == want)
            .take(SEEN_WAYS)
            .collect();
        let seen = Seen::default();
        for topic in &topics {
            assert!(!seen.again(topic), "{topic} not seen yet");
        }
        for topic in &topics {
            assert!(seen.again(topic), "{topic} seen");
        }
    }

    #[test]
    fn a_topic_cached_twice_is_kept_once() {
        let table = RouteTable::default().with(subscription(1, "a.*"));
        table.route_missed("a.b", traits, true);
        table.route_missed("a.b", traits, true);
        assert_eq!(table.cache.len(), 1);
        assert_eq!(table.order.lock().unwrap().len(), 1);
    }

    #[test]
    fn each_stripe_of_threads_gets_its_own_copy_of_a_route() {
        let table = RouteTable::default().with(subscription(1, "a.*"));
        let first = table.route_missed("a.b", traits, true);
        let copies = table.cache.get("a.b").unwrap();
        let same = copies.of(copies.first);
        assert!(Arc::ptr_eq(&first, &same));
        let other = copies.of(copies.first + 1);
        assert!(!Arc::ptr_eq(&first, &other));
        assert!(Arc::ptr_eq(&other, &copies.of(copies.first + 1)));
        assert_eq!(ids(&other), ids(&first));
    }
}
