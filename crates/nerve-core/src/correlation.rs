//! Correlation ids: one id that follows a piece of work across events,
//! threads and tasks.
//!
//! An event takes its correlation id from, in order: the explicit value given
//! when it is built, the **ambient** id of the code that emits it, or a fresh
//! id made by the bus. The ambient id is set
//!
//! * for a block of sync code by [`enter`], which returns a guard that restores
//!   the previous id when dropped (guards nest);
//! * for a future by [`scope`] (or [`FutureExt::with_correlation`]): the id is
//!   ambient while the future is being polled, on whatever thread polls it;
//! * by the bus while a handler runs: the ambient id is the event's, and the
//!   event being handled becomes the `causation_id` of events emitted there.
//!
//! A task spawned by your own code does not inherit the ambient id unless you
//! carry it: `tokio::spawn(fut.in_current_correlation())`.
//!
//! ```
//! use nerve::correlation::{self, CorrelationId};
//! assert_eq!(correlation::current(), None);
//! {
//!     let _guard = correlation::enter(CorrelationId::from("req-1"));
//!     assert_eq!(correlation::current().unwrap().as_str(), "req-1");
//! }
//! assert_eq!(correlation::current(), None);
//! ```

use std::borrow::Borrow;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use smol_str::SmolStr;

use crate::event::{Event, EventId};

/// A correlation id: an opaque, cheaply cloned string.
///
/// ```
/// use nerve::correlation::CorrelationId;
/// let id = CorrelationId::from("req-42");
/// assert_eq!(id.as_str(), "req-42");
/// assert_ne!(CorrelationId::generate(), CorrelationId::generate());
/// ```
#[derive(Clone)]
pub struct CorrelationId(Repr);

/// The text of a correlation id. Ids made from a UUID (every generated id,
/// and a root event's, named after its event id) keep their 36 characters
/// inline: a bus makes one for every root event, and copying 40 bytes costs
/// less than allocating and later freeing a string. Other text is inline up
/// to 23 bytes (`req-42`, `checkout-7f3a`), shared by reference count beyond.
#[derive(Clone)]
enum Repr {
    Text(SmolStr),
    Uuid([u8; uuid::fmt::Hyphenated::LENGTH]),
}

impl CorrelationId {
    /// A fresh, time-sortable id (a UUIDv7 in hyphenated form).
    pub fn generate() -> Self {
        Self::from(EventId::new())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Text(text) => text,
            // Always valid: lower-case hex digits and hyphens.
            Repr::Uuid(bytes) => std::str::from_utf8(bytes).unwrap_or_default(),
        }
    }

    /// The id's text as bytes: [`as_str`](Self::as_str) without the UTF-8
    /// check it makes on an id kept inline, for writers of bytes (the
    /// journal encodes one for every event).
    ///
    /// ```
    /// use nerve::correlation::CorrelationId;
    /// let id = CorrelationId::generate();
    /// assert_eq!(id.as_bytes(), id.as_str().as_bytes());
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Text(text) => text.as_bytes(),
            Repr::Uuid(bytes) => bytes,
        }
    }
}

impl PartialEq for CorrelationId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for CorrelationId {}

impl PartialOrd for CorrelationId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CorrelationId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// Hashes as its text, as [`Borrow<str>`] requires.
impl std::hash::Hash for CorrelationId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The correlation id a bus gives an event that starts a new piece of work:
/// the event's own id, so the root of every correlation is easy to find.
impl From<EventId> for CorrelationId {
    fn from(id: EventId) -> Self {
        // A byte at a time through a table of hex pairs: a bus makes one of
        // these for every root event.
        let uuid = id.as_uuid();
        let bytes = uuid.as_bytes();
        let mut text = [b'-'; uuid::fmt::Hyphenated::LENGTH];
        for (&byte, &at) in bytes.iter().zip(&HEX_AT) {
            let [high, low] = HEX_PAIRS[usize::from(byte)];
            text[at] = high;
            text[at + 1] = low;
        }
        Self(Repr::Uuid(text))
    }
}

/// Where the two hex digits of each of a UUID's 16 bytes go in its
/// hyphenated form (`8-4-4-4-12`).
const HEX_AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/// The two lower-case hex digits of every byte value.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0; 2]; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = [DIGITS[b >> 4], DIGITS[b & 0xf]];
        b += 1;
    }
    table
};

impl From<&str> for CorrelationId {
    fn from(s: &str) -> Self {
        Self(Repr::Text(SmolStr::new(s)))
    }
}

impl From<String> for CorrelationId {
    fn from(s: String) -> Self {
        Self(Repr::Text(SmolStr::from(s)))
    }
}

impl From<&String> for CorrelationId {
    fn from(s: &String) -> Self {
        Self(Repr::Text(SmolStr::new(s)))
    }
}

impl From<&CorrelationId> for CorrelationId {
    fn from(id: &CorrelationId) -> Self {
        id.clone()
    }
}

impl AsRef<str> for CorrelationId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for CorrelationId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for CorrelationId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for CorrelationId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for CorrelationId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for CorrelationId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(Self::from(s.as_ref()))
    }
}

/// What is ambient on a thread: the correlation id and the event being handled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ambient {
    /// The ambient correlation id.
    pub correlation_id: Option<CorrelationId>,
    /// The event being handled, if a handler is running: the causation of
    /// events emitted now.
    pub causation_id: Option<EventId>,
}

impl Ambient {
    /// The ambient context of a handler running for `event`.
    pub fn of_event(event: &Event) -> Self {
        Self {
            correlation_id: event.correlation_id().cloned(),
            causation_id: Some(event.event_id()),
        }
    }
}

impl Ambient {
    fn is_empty(&self) -> bool {
        self.correlation_id.is_none() && self.causation_id.is_none()
    }
}

/// What `AMBIENT` holds: nothing, a context, or the event being handled (a
/// handler's context, kept as the event itself: one reference count instead
/// of a copy of its correlation id, made only when someone asks). Two words,
/// so that entering and leaving a handler's context moves little.
#[derive(Default, Clone)]
enum Slot {
    #[default]
    Empty,
    Ambient(Box<Ambient>),
    Event(Event),
}

impl Slot {
    fn from_ambient(ambient: Ambient) -> Self {
        if ambient.is_empty() {
            Self::Empty
        } else {
            Self::Ambient(Box::new(ambient))
        }
    }

    fn to_ambient(&self) -> Ambient {
        match self {
            Self::Empty => Ambient::default(),
            Self::Ambient(ambient) => Ambient::clone(ambient),
            Self::Event(event) => Ambient::of_event(event),
        }
    }

    fn correlation_id(&self) -> Option<CorrelationId> {
        match self {
            Self::Empty => None,
            Self::Ambient(ambient) => ambient.correlation_id.clone(),
            Self::Event(event) => event.correlation_id().cloned(),
        }
    }
}

thread_local! {
    static AMBIENT: RefCell<Slot> = const { RefCell::new(Slot::Empty) };
    /// Whether `AMBIENT` holds anything: a plain flag, so that the common
    /// case of an emit with nothing ambient does not touch `AMBIENT`, whose
    /// destructor makes each access check that it is registered.
    static SET: Cell<bool> = const { Cell::new(false) };
}

/// Makes `slot` the thread's ambient context, returning the previous one.
fn replace(slot: Slot) -> Slot {
    let set = !matches!(slot, Slot::Empty);
    if !set && !SET.get() {
        return Slot::Empty;
    }
    SET.set(set);
    // `try_with`: during thread teardown the slot may be gone already
    // (a guard or a scoped future dropped then).
    AMBIENT.try_with(|a| a.replace(slot)).unwrap_or_default()
}

/// The ambient correlation id, if any.
pub fn current() -> Option<CorrelationId> {
    if !SET.get() {
        return None;
    }
    AMBIENT.with(|a| a.borrow().correlation_id())
}

/// The whole ambient context (correlation and causation).
pub fn current_ambient() -> Ambient {
    if !SET.get() {
        return Ambient::default();
    }
    AMBIENT.with(|a| a.borrow().to_ambient())
}

/// Makes `id` the ambient correlation id until the guard is dropped.
///
/// The causation (the event being handled, if any) is kept. Guards nest; drop
/// them in reverse order of creation (the natural order of scopes).
pub fn enter(id: impl Into<CorrelationId>) -> AmbientGuard {
    let mut next = current_ambient();
    next.correlation_id = Some(id.into());
    enter_ambient(next)
}

/// Makes `ambient` the whole ambient context until the guard is dropped.
///
/// Bus implementations use this around a handler with [`Ambient::of_event`].
pub fn enter_ambient(ambient: Ambient) -> AmbientGuard {
    enter_slot(Slot::from_ambient(ambient))
}

/// Makes `event` the ambient context until the guard is dropped, as
/// [`enter_ambient`]`(`[`Ambient::of_event`]`(event))` does: its correlation
/// id is ambient, and it is the cause of events emitted meanwhile. Cheaper
/// (the event is shared, its id not copied): what a bus does around every
/// handler call.
///
/// ```
/// use nerve::{Event, correlation};
/// let event = Event::builder("user.login").correlation_id("req-9").build()?;
/// {
///     let _guard = correlation::enter_event(&event);
///     assert_eq!(correlation::current().unwrap().as_str(), "req-9");
///     assert_eq!(correlation::current_ambient().causation_id, Some(event.event_id()));
/// }
/// assert_eq!(correlation::current(), None);
/// # Ok::<(), nerve::name::ValidationError>(())
/// ```
pub fn enter_event(event: &Event) -> AmbientGuard {
    enter_slot(Slot::Event(event.clone()))
}

fn enter_slot(slot: Slot) -> AmbientGuard {
    let previous = replace(slot);
    AmbientGuard {
        previous: Some(previous),
        _not_send: PhantomData,
    }
}

/// Restores the previous ambient context when dropped. Returned by [`enter`].
#[must_use = "the ambient id is restored as soon as the guard is dropped"]
pub struct AmbientGuard {
    previous: Option<Slot>,
    // The guard restores a thread-local, so it must be dropped on its thread.
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for AmbientGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmbientGuard").finish_non_exhaustive()
    }
}

impl Drop for AmbientGuard {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            replace(previous);
        }
    }
}

/// Runs `future` with `id` as its ambient correlation id, on whatever thread
/// polls it.
///
/// ```
/// use nerve::correlation::{self, CorrelationId};
/// let seen = futures::executor::block_on(correlation::scope(CorrelationId::from("job-7"), async {
///     correlation::current()
/// }));
/// assert_eq!(seen.unwrap().as_str(), "job-7");
/// ```
pub fn scope<F: Future>(id: impl Into<CorrelationId>, future: F) -> Scoped<F> {
    Scoped::new(
        Ambient {
            correlation_id: Some(id.into()),
            causation_id: None,
        },
        future,
    )
}

/// Runs `future` with `event` as its ambient context (as
/// [`Scoped::new`]`(`[`Ambient::of_event`]`(event), future)`, sharing the
/// event instead of copying its ids): what a bus does around an async
/// handler.
///
/// ```
/// use nerve::{Event, correlation};
/// let event = Event::builder("user.login").correlation_id("req-9").build()?;
/// let seen = futures::executor::block_on(correlation::scope_event(&event, async {
///     correlation::current_ambient()
/// }));
/// assert_eq!(seen, correlation::Ambient::of_event(&event));
/// # Ok::<(), nerve::name::ValidationError>(())
/// ```
pub fn scope_event<F: Future>(event: &Event, future: F) -> Scoped<F> {
    Scoped {
        slot: Slot::Event(event.clone()),
        inner: future,
    }
}

pin_project_lite::pin_project! {
    /// A future that runs with an ambient context. Made by [`scope`] and
    /// [`FutureExt`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Scoped<F> {
        slot: Slot,
        #[pin]
        inner: F,
    }
}

impl<F> Scoped<F> {
    /// Wraps `inner` so that `ambient` is the ambient context while it is polled.
    pub fn new(ambient: Ambient, inner: F) -> Self {
        Self {
            slot: Slot::from_ambient(ambient),
            inner,
        }
    }
}

impl<F: fmt::Debug> fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped")
            .field("ambient", &self.slot.to_ambient())
            .field("inner", &self.inner)
            .finish()
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // Swap the context in rather than cloning it; the swap back happens in
        // `Drop`, so it is restored even if the inner future panics.
        struct Restore<'a> {
            slot: &'a mut Slot,
            previous: Option<Slot>,
        }
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                if let Some(previous) = self.previous.take() {
                    *self.slot = replace(previous);
                }
            }
        }
        let previous = replace(std::mem::take(this.slot));
        let _restore = Restore {
            slot: this.slot,
            previous: Some(previous),
        };
        this.inner.poll(cx)
    }
}

/// Correlation combinators for futures.
pub trait FutureExt: Future + Sized {
    /// Runs this future with `id` as its ambient correlation id.
    fn with_correlation(self, id: impl Into<CorrelationId>) -> Scoped<Self> {
        scope(id, self)
    }

    /// Runs this future with the ambient context of the caller, wherever it is
    /// polled later: `tokio::spawn(work.in_current_correlation())`.
    fn in_current_correlation(self) -> Scoped<Self> {
        let slot = if SET.get() {
            AMBIENT.with(|a| a.borrow().clone())
        } else {
            Slot::Empty
        };
        Scoped { slot, inner: self }
    }
}

impl<F: Future> FutureExt for F {}

/// The longest header value taken as a correlation id; longer ones are ignored.
const MAX_HEADER_ID_LEN: usize = 255;

/// Picks the correlation id from request headers, or `None` when none is usable.
///
/// Header names match case-insensitively, in this order of preference:
/// `X-Correlation-ID`, `X-Request-ID`, then the trace id of a W3C
/// `traceparent`. Values are trimmed; empty values, values longer than 255
/// bytes or with control characters, and malformed `traceparent`s are ignored.
pub fn try_from_headers<I, K, V>(headers: I) -> Option<CorrelationId>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut found: [Option<String>; 3] = [None, None, None];
    for (name, value) in headers {
        let name = name.as_ref();
        let slot = if name.eq_ignore_ascii_case("x-correlation-id") {
            0
        } else if name.eq_ignore_ascii_case("x-request-id") {
            1
        } else if name.eq_ignore_ascii_case("traceparent") {
            2
        } else {
            continue;
        };
        if found[slot].is_some() {
            continue;
        }
        let value = value.as_ref().trim();
        let usable = if slot == 2 {
            trace_id_from_traceparent(value).map(str::to_owned)
        } else if !value.is_empty()
            && value.len() <= MAX_HEADER_ID_LEN
            && !value.chars().any(char::is_control)
        {
            Some(value.to_owned())
        } else {
            None
        };
        found[slot] = usable;
    }
    found.into_iter().flatten().next().map(CorrelationId::from)
}

/// Picks the correlation id from request headers (see [`try_from_headers`]),
/// or generates a fresh one when none is present.
///
/// ```
/// use nerve::correlation::from_headers;
/// let id = from_headers([("x-request-id", "r-1"), ("X-Correlation-ID", "c-1")]);
/// assert_eq!(id.as_str(), "c-1");
/// let id = from_headers([("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]);
/// assert_eq!(id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// let fresh = from_headers(Vec::<(String, String)>::new());
/// assert!(!fresh.as_str().is_empty());
/// ```
pub fn from_headers<I, K, V>(headers: I) -> CorrelationId
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    try_from_headers(headers).unwrap_or_else(CorrelationId::generate)
}

/// The trace id of a W3C `traceparent` header value
/// (`{version}-{trace-id}-{parent-id}-{flags}`), or `None` if it is malformed
/// or the trace id is all zeros.
pub fn trace_id_from_traceparent(value: &str) -> Option<&str> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    // Version ff is invalid; version 00 has exactly four fields.
    if !lower_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !lower_hex(trace_id, 32) || !lower_hex(parent_id, 16) || !lower_hex(flags, 2) {
        return None;
    }
    if trace_id.bytes().all(|b| b == b'0') || parent_id.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(trace_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enter_nests_and_restores() {
        assert_eq!(current(), None);
        let a = enter("a");
        assert_eq!(current().unwrap(), "a");
        {
            let _b = enter("b");
            assert_eq!(current().unwrap(), "b");
        }
        assert_eq!(current().unwrap(), "a");
        drop(a);
        assert_eq!(current(), None);
    }

    #[test]
    fn scope_applies_only_while_polled() {
        let _outer = enter("outer");
        let fut = scope("inner", async {
            let inside = current();
            // Yield once so that the context is swapped out and in again.
            futures::future::ready(()).await;
            (inside, current())
        });
        assert_eq!(current().unwrap(), "outer");
        let (first, second) = futures::executor::block_on(fut);
        assert_eq!(first.unwrap(), "inner");
        assert_eq!(second.unwrap(), "inner");
        assert_eq!(current().unwrap(), "outer");
    }

    #[test]
    fn scope_restores_after_panic() {
        let _outer = enter("outer");
        let result = std::panic::catch_unwind(|| {
            futures::executor::block_on(scope("inner", async { panic!("boom") }))
        });
        assert!(result.is_err());
        assert_eq!(current().unwrap(), "outer");
    }

    #[test]
    fn in_current_correlation_carries_to_another_thread() {
        let _g = enter("carried");
        let fut = async { current() }.in_current_correlation();
        let seen = std::thread::spawn(move || futures::executor::block_on(fut))
            .join()
            .unwrap();
        assert_eq!(seen.unwrap(), "carried");
    }

    #[test]
    fn headers_order_and_case() {
        fn check(headers: &[(&str, &str)], expected: Option<&str>) {
            let got = try_from_headers(headers.iter().copied());
            assert_eq!(
                got.as_ref().map(CorrelationId::as_str),
                expected,
                "{headers:?}"
            );
        }
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        check(&[("X-CORRELATION-ID", "c")], Some("c"));
        check(
            &[("x-request-id", "r"), ("x-correlation-id", "c")],
            Some("c"),
        );
        check(&[("traceparent", tp), ("X-Request-Id", "r")], Some("r"));
        check(
            &[("Traceparent", tp)],
            Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        );
        check(
            &[("x-correlation-id", "  "), ("x-request-id", " r ")],
            Some("r"),
        );
        check(&[("x-correlation-id", "a\nb")], None);
        check(&[("content-type", "json")], None);
        check(&[("traceparent", "garbage")], None);
        check(
            &[(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )],
            None,
        );
        check(
            &[(
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            )],
            None,
        );
        assert!(!from_headers(Vec::<(&str, &str)>::new()).as_str().is_empty());
    }
}
