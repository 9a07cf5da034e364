//! Events: what happened, when, where, and what caused it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use smol_str::SmolStr;

use crate::correlation::CorrelationId;
use crate::name::{EventType, ValidationError, check_event_type};
use crate::trace::TraceContext;

mod clock;
mod id;
mod payload;

use payload::Payload;

/// A globally unique, time-sortable event id (a UUIDv7).
///
/// Ids made later on one thread compare greater; ids made anywhere are
/// unique; the id's millisecond is its event's (see [`EventId::for_timestamp`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(uuid::Uuid);

/// A fresh id and the current time, from one clock read.
#[inline]
fn now_id_and_time() -> (EventId, Timestamp) {
    let timestamp = Timestamp::now();
    // The id's millisecond is the timestamp's, by construction.
    (EventId::for_timestamp(timestamp), timestamp)
}

impl EventId {
    /// A fresh id.
    #[inline]
    pub fn new() -> Self {
        now_id_and_time().0
    }

    /// A fresh id for an event made at `timestamp`, without reading the
    /// clock: its millisecond field is `timestamp`'s (0 before the epoch).
    ///
    /// Ids from one thread never go backwards: after an id for a later
    /// millisecond (the clock stepped back) the thread keeps that
    /// millisecond and counts on.
    ///
    /// ```
    /// use nerve::{EventId, Timestamp};
    /// let t = Timestamp::from_micros(1_700_000_000_123_456);
    /// let a = EventId::for_timestamp(t);
    /// let b = EventId::for_timestamp(t);
    /// assert!(a < b);
    /// assert_eq!(a.as_uuid().get_version_num(), 7);
    /// ```
    #[inline]
    pub fn for_timestamp(timestamp: Timestamp) -> Self {
        let millis = u64::try_from(timestamp.0.div_euclid(1000)).unwrap_or(0);
        Self(id::next(millis))
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<uuid::Uuid> for EventId {
    fn from(id: uuid::Uuid) -> Self {
        Self(id)
    }
}

impl FromStr for EventId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.0.hyphenated())
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// A UTC instant with microsecond precision.
///
/// Serialized as RFC 3339 text (`2026-11-23T09:01:32.123456Z`); deserialized
/// from that or from a number of seconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time.
    #[inline]
    pub fn now() -> Self {
        Self(clock::now_micros())
    }

    /// The instant `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(&self) -> i64 {
        self.0
    }

    /// The instant as a `chrono` date-time.
    pub fn to_datetime(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }

    /// Parses RFC 3339 text.
    ///
    /// # Errors
    ///
    /// The `chrono` parse error when `s` is not RFC 3339.
    pub fn parse_rfc3339(s: &str) -> Result<Self, chrono::ParseError> {
        if let Some(micros) = clock::parse_same_second(s) {
            return Ok(Self(micros));
        }
        let micros = chrono::DateTime::parse_from_rfc3339(s)?.timestamp_micros();
        clock::remember_second(s, micros);
        Ok(Self(micros))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self
            .to_datetime()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        f.write_str(&text)
    }
}

impl From<std::time::SystemTime> for Timestamp {
    fn from(t: std::time::SystemTime) -> Self {
        Self(chrono::DateTime::<chrono::Utc>::from(t).timestamp_micros())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The instants RFC 3339 can write, years 1 to 9999, in microseconds since
/// the epoch: what a timestamp read from text may be, so that every one read
/// is written back as it was read.
const RFC3339_MICROS: std::ops::RangeInclusive<i64> =
    -62_135_596_800_000_000..=253_402_300_799_999_999;

/// `micros` as a timestamp, if RFC 3339 can write it; else an error naming
/// `what` was read, and a `hint`.
fn within_rfc3339<E: serde::de::Error>(
    micros: Option<i64>,
    what: impl fmt::Display,
    hint: &str,
) -> Result<Timestamp, E> {
    match micros {
        Some(m) if RFC3339_MICROS.contains(&m) => Ok(Timestamp(m)),
        _ => Err(E::custom(format_args!(
            "{what} is outside the years 1 to 9999{hint}"
        ))),
    }
}

/// The hint of a number of seconds out of range.
const MILLISECONDS: &str = " (milliseconds, not seconds?)";

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp or seconds since the Unix epoch")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                let t = Timestamp::parse_rfc3339(v).map_err(E::custom)?;
                // An offset can carry 9999-12-31 past the year's end in UTC.
                within_rfc3339(Some(t.0), format_args!("{v:?} in UTC"), "")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Timestamp, E> {
                if !v.is_finite() {
                    return Err(E::custom("timestamp is not finite"));
                }
                // Float seconds carry about microsecond precision today.
                let micros = (v * 1e6).round();
                #[allow(
                    clippy::cast_possible_truncation,
                    reason = "rounded, and within i64 whenever within RFC3339_MICROS"
                )]
                let m = (micros.abs() < 9.0e18).then_some(micros as i64);
                within_rfc3339(m, format_args!("{v} seconds since the epoch"), MILLISECONDS)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Timestamp, E> {
                within_rfc3339(
                    v.checked_mul(1_000_000),
                    format_args!("{v} seconds since the epoch"),
                    MILLISECONDS,
                )
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Timestamp, E> {
                let m = i64::try_from(v).ok().and_then(|v| v.checked_mul(1_000_000));
                within_rfc3339(m, format_args!("{v} seconds since the epoch"), MILLISECONDS)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Something that happened: an immutable, cheaply cloned record.
///
/// Cloning an `Event` clones a pointer: fanning one event out to many handlers
/// never copies its payload, and no handler can change what another sees.
///
/// | field            | meaning                                                                       |
/// |------------------|-------------------------------------------------------------------------------|
/// | `event_id`       | unique across buses, processes and time; time-sortable (UUIDv7)               |
/// | `event_type`     | the name, `{domain}.{action}` by convention                                   |
/// | `timestamp`      | when it was created, UTC, microseconds                                        |
/// | `source`         | who emitted it (a component or service name)                                  |
/// | `correlation_id` | the piece of work it belongs to                                               |
/// | `causation_id`   | the event whose handler emitted this one                                      |
/// | `run_id`         | the run (a job, an agent run) it belongs to                                   |
/// | `lane`           | a parallel branch of the run                                                  |
/// | `lane_seq`       | sequence number within its lane, strictly increasing per lane; set by the bus |
/// | `seq`            | bus-wide sequence number, strictly increasing; 0 until emitted                |
/// | `trace_context`  | the W3C trace context of the span it was emitted in (see [`crate::trace`])     |
/// | `data`           | the payload, any JSON value                                                   |
///
/// ```
/// use nerve::Event;
/// let event = Event::builder("user.login")
///     .data(nerve::json!({"username": "alice"}))
///     .source("auth")
///     .correlation_id("req-1")
///     .build()?;
/// assert_eq!(event.event_type(), "user.login");
/// assert_eq!(event.data()["username"], "alice");
/// assert_eq!(event.correlation_id().unwrap().as_str(), "req-1");
/// # Ok::<(), nerve::name::ValidationError>(())
/// ```
#[derive(Clone)]
pub struct Event(Arc<Inner>);

#[derive(Clone, Serialize, Deserialize)]
struct Inner {
    event_id: EventId,
    /// Inline when short (see [`EventType`]).
    event_type: SmolStr,
    timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation_id: Option<CorrelationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    causation_id: Option<EventId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run_id: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lane: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lane_seq: Option<u64>,
    #[serde(default)]
    seq: u64,
    // Boxed: most events carry none, and every event pays for the field's
    // size in its allocation and in every move of its builder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_context: Option<Box<TraceContext>>,
    #[serde(default)]
    data: Payload,
    /// Marked never to be dropped by a full queue. Not part of the JSON form:
    /// buses decide terminality by pattern (and mark what matched when they
    /// accept it), this marks one event more.
    #[serde(skip)]
    terminal: bool,
}

impl Event {
    /// Starts building an event of type `event_type`.
    pub fn builder(event_type: impl Into<String>) -> EventBuilder {
        EventBuilder {
            event_type: event_type.into(),
            data: Payload::default(),
            event_id: None,
            timestamp: None,
            source: None,
            correlation_id: None,
            causation_id: None,
            run_id: None,
            lane: None,
            lane_seq: None,
            terminal: false,
            seq: 0,
            trace_context: None,
        }
    }

    /// An event of type `event_type` carrying `data`, with every other field
    /// defaulted.
    ///
    /// # Errors
    ///
    /// A [`ValidationError`] when `event_type` breaks the rules every name
    /// follows (see [`crate::name`]).
    pub fn new(
        event_type: impl AsRef<str>,
        data: impl Into<Value>,
    ) -> Result<Self, ValidationError> {
        // What `builder(..).data(..).build()` makes, without moving the
        // builder's thirteen fields about: `Bus::emit` comes here. The name
        // is borrowed: one of up to 23 bytes is kept inline, no allocation.
        let event_type = event_type.as_ref();
        let data = data.into();
        check_event_type(event_type)?;
        let (event_id, timestamp) = now_id_and_time();
        Ok(Self(Arc::new(Inner {
            event_id,
            event_type: SmolStr::new(event_type),
            timestamp,
            source: None,
            correlation_id: None,
            causation_id: None,
            run_id: None,
            lane: None,
            lane_seq: None,
            seq: 0,
            trace_context: None,
            data: Payload::Owned(data),
            terminal: false,
        })))
    }

    /// An event of the checked type `event_type` carrying `data`, with
    /// what a bus fills in when it accepts an event (`stamp`): what a bus
    /// makes when it is handed a type and a payload, in one allocation,
    /// without checking the name again (every other field defaulted).
    ///
    /// ```
    /// use nerve::{Event, EventId, Stamp, Timestamp, name::EventType};
    /// let login = EventType::new("user.login")?;
    /// let at = Timestamp::now();
    /// let stamp = Stamp::new(EventId::for_timestamp(at), at).with_seq(7);
    /// let event = Event::stamped(&login, nerve::json!({"u": 1}), stamp);
    /// assert_eq!((event.event_type(), event.seq()), ("user.login", 7));
    /// # Ok::<(), nerve::name::ValidationError>(())
    /// ```
    #[inline]
    pub fn stamped(event_type: &EventType, data: Value, stamp: Stamp) -> Self {
        Self::from_stamp(event_type, Payload::Owned(data), stamp)
    }

    /// As [`stamped`](Self::stamped), with a payload shared with the caller
    /// (see [`EventBuilder::data_shared`]).
    #[inline]
    pub fn stamped_shared(event_type: &EventType, data: Arc<Value>, stamp: Stamp) -> Self {
        Self::from_stamp(event_type, Payload::Shared(data), stamp)
    }

    #[inline]
    fn from_stamp(event_type: &EventType, data: Payload, stamp: Stamp) -> Self {
        let Stamp {
            event_id,
            timestamp,
            correlation_id,
            causation_id,
            seq,
            terminal,
        } = stamp;
        Self(Arc::new(Inner {
            event_id,
            event_type: event_type.0.clone(),
            timestamp,
            source: None,
            correlation_id,
            causation_id,
            run_id: None,
            lane: None,
            lane_seq: None,
            seq,
            trace_context: None,
            data,
            terminal,
        }))
    }

    /// The unique id.
    pub fn event_id(&self) -> EventId {
        self.0.event_id
    }

    /// The type name.
    pub fn event_type(&self) -> &str {
        &self.0.event_type
    }

    /// The type name as an [`EventType`]: a copy, inline when short.
    #[inline]
    pub fn checked_type(&self) -> EventType {
        EventType(self.0.event_type.clone())
    }

    /// The first segment of the type name.
    pub fn domain(&self) -> &str {
        crate::name::extract_domain(&self.0.event_type)
    }

    /// The type name after the domain.
    pub fn action(&self) -> &str {
        crate::name::extract_action(&self.0.event_type)
    }

    /// When the event was created.
    pub fn timestamp(&self) -> Timestamp {
        self.0.timestamp
    }

    /// Who emitted it.
    pub fn source(&self) -> Option<&str> {
        self.0.source.as_deref()
    }

    /// The piece of work it belongs to.
    pub fn correlation_id(&self) -> Option<&CorrelationId> {
        self.0.correlation_id.as_ref()
    }

    /// The event whose handler emitted this one.
    pub fn causation_id(&self) -> Option<EventId> {
        self.0.causation_id
    }

    /// The run it belongs to.
    pub fn run_id(&self) -> Option<&str> {
        self.0.run_id.as_deref()
    }

    /// The parallel branch of its run.
    pub fn lane(&self) -> Option<&str> {
        self.0.lane.as_deref()
    }

    /// The sequence number within its lane, strictly increasing per lane;
    /// `None` until a bus accepted an event that has a [`lane`](Self::lane).
    pub fn lane_seq(&self) -> Option<u64> {
        self.0.lane_seq
    }

    /// Whether this event is marked terminal: by [`EventBuilder::terminal`]
    /// or [`Event::terminal`], or by a bus that accepted it because its type
    /// matched the bus's terminal patterns (so subscribers see the mark on
    /// every event the bus will never drop).
    pub fn is_marked_terminal(&self) -> bool {
        self.0.terminal
    }

    /// This event, marked terminal: a full queue never drops it.
    #[must_use]
    pub fn terminal(mut self) -> Self {
        self.make_mut().terminal = true;
        self
    }

    /// The bus-wide sequence number; 0 until a bus accepted the event.
    pub fn seq(&self) -> u64 {
        self.0.seq
    }

    /// The trace context of the span the event was emitted in, when an
    /// instrument recorded one (see [`crate::trace`]).
    pub fn trace_context(&self) -> Option<&TraceContext> {
        self.0.trace_context.as_deref()
    }

    /// This event with its trace context set (or cleared).
    #[must_use]
    pub fn with_trace_context(mut self, trace_context: Option<TraceContext>) -> Self {
        self.make_mut().trace_context = trace_context.map(Box::new);
        self
    }

    /// The payload.
    pub fn data(&self) -> &Value {
        self.0.data.get()
    }

    /// The JSON text the payload was kept as, for an event made with
    /// [`EventBuilder::data_raw`] or [`EventBuilder::data_json`] whose
    /// payload was deferred (an array or object; see there), whether or not
    /// [`data`](Self::data) has parsed
    /// it since; `None` for any other event. A writer can copy it instead
    /// of parsing and writing the payload again: it is the payload's text
    /// as received (its key order, its spacing), nested at most 100 deep.
    ///
    /// ```
    /// use nerve::{Event, RawValue};
    /// let json = RawValue::from_string(r#"{"b": 1, "a": [2]}"#.to_owned())?;
    /// let event = Event::builder("batch.ready").data_raw(&json)?.build()?;
    /// assert_eq!(event.data_text(), Some(r#"{"b": 1, "a": [2]}"#));
    /// assert_eq!(Event::new("batch.ready", 7)?.data_text(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn data_text(&self) -> Option<&str> {
        self.0.data.text()
    }

    /// Deserializes the payload into `T`.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming the event and the target type.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, DecodeError> {
        T::deserialize(self.0.data.get()).map_err(|source| DecodeError {
            event_type: self.event_type().to_owned(),
            event_id: self.event_id(),
            target: std::any::type_name::<T>(),
            source,
        })
    }

    /// Whether two handles point to the same event in memory (no copy was made).
    pub fn ptr_eq(a: &Event, b: &Event) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }

    fn make_mut(&mut self) -> &mut Inner {
        // Copies only when the event is shared; a freshly built event is not.
        Arc::make_mut(&mut self.0)
    }

    /// This event with `seq` set. Buses call this when they accept an event.
    #[must_use]
    pub fn with_seq(mut self, seq: u64) -> Self {
        self.make_mut().seq = seq;
        self
    }

    /// This event with `lane_seq` set. Buses call this when they accept an
    /// event that has a [`lane`](Self::lane).
    #[must_use]
    pub fn with_lane_seq(mut self, lane_seq: u64) -> Self {
        self.make_mut().lane_seq = Some(lane_seq);
        self
    }

    /// This event with its `source` set (what a bridge does to an event it
    /// imports). Copies nothing else when the event is not shared.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.make_mut().source = Some(source.into().into_boxed_str());
        self
    }

    /// This event with `correlation_id` set.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<CorrelationId>) -> Self {
        self.make_mut().correlation_id = Some(id.into());
        self
    }

    /// This event with the given parts replaced (`None` keeps a part): what
    /// [`Redactor::redact_event`](crate::redact::Redactor::redact_event)
    /// returns. Copies the parts it keeps, never the payload it replaces.
    #[cfg(feature = "redact")]
    pub(crate) fn with_redacted_parts(
        &self,
        data: Option<Value>,
        source: Option<String>,
        correlation_id: Option<CorrelationId>,
    ) -> Self {
        let i = &*self.0;
        Self(Arc::new(Inner {
            event_id: i.event_id,
            event_type: i.event_type.clone(),
            timestamp: i.timestamp,
            source: source
                .map(String::into_boxed_str)
                .or_else(|| i.source.clone()),
            correlation_id: correlation_id.or_else(|| i.correlation_id.clone()),
            causation_id: i.causation_id,
            run_id: i.run_id.clone(),
            lane: i.lane.clone(),
            lane_seq: i.lane_seq,
            seq: i.seq,
            trace_context: i.trace_context.clone(),
            data: data.map_or_else(|| i.data.clone(), Payload::Owned),
            terminal: i.terminal,
        }))
    }

    /// This event with `causation_id` set.
    #[must_use]
    pub fn with_causation_id(mut self, id: EventId) -> Self {
        self.make_mut().causation_id = Some(id);
        self
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &*self.0;
        f.debug_struct("Event")
            .field("event_id", &i.event_id)
            .field("event_type", &i.event_type)
            .field("timestamp", &i.timestamp)
            .field("source", &i.source)
            .field("correlation_id", &i.correlation_id)
            .field("causation_id", &i.causation_id)
            .field("run_id", &i.run_id)
            .field("lane", &i.lane)
            .field("lane_seq", &i.lane_seq)
            .field("seq", &i.seq)
            .field("trace_context", &i.trace_context)
            .field("data", i.data.get())
            .finish()
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || {
            let (a, b) = (&*self.0, &*other.0);
            a.event_id == b.event_id
                && a.event_type == b.event_type
                && a.timestamp == b.timestamp
                && a.source == b.source
                && a.correlation_id == b.correlation_id
                && a.causation_id == b.causation_id
                && a.run_id == b.run_id
                && a.lane == b.lane
                && a.lane_seq == b.lane_seq
                && a.seq == b.seq
                && a.trace_context == b.trace_context
                && a.data.get() == b.data.get()
        }
    }
}

/// Serialized as one JSON object with keys in the order of the field table;
/// absent optional fields are omitted.
impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Deserialized from the form [`Serialize`] writes; the name must pass
/// [`check_event_type`].
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let inner = Inner::deserialize(deserializer)?;
        check_event_type(&inner.event_type).map_err(serde::de::Error::custom)?;
        Ok(Self(Arc::new(inner)))
    }
}

/// What a bus fills in on an event it makes itself (see [`Event::stamped`]).
///
/// Made with [`Stamp::new`] and the `with_*` methods, so that a field added
/// later is not a breaking change; its fields can be read.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Stamp {
    /// The event's id; its millisecond should be `timestamp`'s (see
    /// [`EventId::for_timestamp`]).
    pub event_id: EventId,
    /// When the event was made.
    pub timestamp: Timestamp,
    /// The piece of work it belongs to.
    pub correlation_id: Option<CorrelationId>,
    /// The event whose handler emitted it.
    pub causation_id: Option<EventId>,
    /// The bus-wide sequence number.
    pub seq: u64,
    /// Marked never to be dropped by a full queue.
    pub terminal: bool,
}

impl Stamp {
    /// The stamp of an event with id `event_id` made at `timestamp`: no
    /// correlation or causation, `seq` 0, not terminal.
    #[inline]
    #[must_use]
    pub fn new(event_id: EventId, timestamp: Timestamp) -> Self {
        Self {
            event_id,
            timestamp,
            correlation_id: None,
            causation_id: None,
            seq: 0,
            terminal: false,
        }
    }

    /// With the piece of work the event belongs to.
    #[inline]
    #[must_use]
    pub fn with_correlation_id(mut self, correlation_id: Option<CorrelationId>) -> Self {
        self.correlation_id = correlation_id;
        self
    }

    /// With the event whose handler emitted it.
    #[inline]
    #[must_use]
    pub fn with_causation_id(mut self, causation_id: Option<EventId>) -> Self {
        self.causation_id = causation_id;
        self
    }

    /// With the bus-wide sequence number.
    #[inline]
    #[must_use]
    pub fn with_seq(mut self, seq: u64) -> Self {
        self.seq = seq;
        self
    }

    /// Marked (or not) never to be dropped by a full queue.
    #[inline]
    #[must_use]
    pub fn with_terminal(mut self, terminal: bool) -> Self {
        self.terminal = terminal;
        self
    }
}

/// Builds an [`Event`]. Made by [`Event::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct EventBuilder {
    event_type: String,
    data: Payload,
    event_id: Option<EventId>,
    timestamp: Option<Timestamp>,
    source: Option<String>,
    correlation_id: Option<CorrelationId>,
    causation_id: Option<EventId>,
    run_id: Option<String>,
    lane: Option<String>,
    lane_seq: Option<u64>,
    seq: u64,
    terminal: bool,
    trace_context: Option<Box<TraceContext>>,
}

impl EventBuilder {
    /// The trace context of the span it belongs to, for example one
    /// extracted from incoming HTTP headers (default: the current span's,
    /// recorded at emit by an OpenTelemetry instrument, if one is installed).
    pub fn trace_context(mut self, trace_context: TraceContext) -> Self {
        self.trace_context = Some(Box::new(trace_context));
        self
    }

    /// Marks the event terminal: a full queue never drops it (see the bus's
    /// overflow policies).
    #[inline]
    pub fn terminal(mut self) -> Self {
        self.terminal = true;
        self
    }

    /// The payload (default `null`).
    #[inline]
    pub fn data(mut self, data: impl Into<Value>) -> Self {
        self.data = Payload::Owned(data.into());
        self
    }

    /// A payload shared with the caller (default `null`): emitting the same
    /// payload again, or keeping it, costs a reference count instead of a
    /// deep copy, and the last holder frees it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use nerve::Event;
    /// let payload = Arc::new(nerve::json!({"rows": [1, 2, 3]}));
    /// let a = Event::builder("batch.ready").data_shared(Arc::clone(&payload)).build()?;
    /// let b = Event::builder("batch.ready").data_shared(Arc::clone(&payload)).build()?;
    /// assert!(std::ptr::eq(a.data(), b.data()));
    /// assert_eq!(a.data()["rows"][2], 3);
    /// # Ok::<(), nerve::name::ValidationError>(())
    /// ```
    #[inline]
    pub fn data_shared(mut self, data: Arc<Value>) -> Self {
        self.data = Payload::Shared(data);
        self
    }

    /// A payload given as the JSON text it arrived in, for an event read
    /// from the wire or a file: it is parsed into a `Value` the first time
    /// something reads [`Event::data`], so an event that is only passed
    /// on (forwarded, counted, filtered by its type) never pays for the
    /// parse or for the `Value`'s allocations.
    ///
    /// `json` is already known to be well-formed JSON (it is a
    /// [`RawValue`], made by `RawValue::from_string` or borrowed by serde
    /// from the text it deserializes). A text that a `Value`
    /// could still refuse (a number out of `f64`'s range, an unpaired
    /// UTF-16 surrogate escape, nesting deeper than `serde_json`'s limit)
    /// is parsed here instead, and its error returned, so that reading the
    /// payload later never fails.
    ///
    /// ```
    /// use nerve::{Event, RawValue};
    /// let json = RawValue::from_string(r#"{"rows": [1, 2, 3]}"#.to_owned())?;
    /// let event = Event::builder("batch.ready").data_raw(&json)?.build()?;
    /// assert_eq!(event.data()["rows"][2], 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The `serde_json` error of a text a `Value` refuses.
    pub fn data_raw(mut self, json: &RawValue) -> Result<Self, serde_json::Error> {
        self.data = Payload::from_raw(json.get())?;
        Ok(self)
    }

    /// A payload given as JSON text not yet checked, as [`data_raw`]
    /// keeps it: an array or object is checked and kept as text, parsed
    /// when first read; anything else is parsed now. For text a reader has
    /// not parsed yet (a message body, an HTTP request's), this checks it
    /// in one pass where `RawValue` and then `data_raw` take two.
    ///
    /// ```
    /// use nerve::Event;
    /// let event = Event::builder("batch.ready")
    ///     .data_json(r#"{"rows": [1, 2, 3]}"#)?
    ///     .build()?;
    /// assert_eq!(event.data_text(), Some(r#"{"rows": [1, 2, 3]}"#));
    /// assert_eq!(event.data()["rows"][2], 3);
    /// assert!(Event::builder("batch.ready").data_json("{\"rows\": [1,").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The `serde_json` error of a text that is not one JSON value, or that
    /// a `Value` refuses.
    ///
    /// [`data_raw`]: Self::data_raw
    pub fn data_json(mut self, json: &str) -> Result<Self, serde_json::Error> {
        self.data = Payload::from_text(json)?;
        Ok(self)
    }

    /// Who emits it.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The piece of work it belongs to (default: the ambient id when emitted).
    #[inline]
    pub fn correlation_id(mut self, id: impl Into<CorrelationId>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// The event that caused it (default: the event being handled when emitted).
    #[inline]
    pub fn causation_id(mut self, id: EventId) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// The run it belongs to.
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// The parallel branch of its run.
    pub fn lane(mut self, lane: impl Into<String>) -> Self {
        self.lane = Some(lane.into());
        self
    }

    /// A given sequence number within the lane, for example when re-emitting a
    /// recorded event; buses overwrite it when they accept an event that has a
    /// lane.
    pub fn lane_seq(mut self, lane_seq: u64) -> Self {
        self.lane_seq = Some(lane_seq);
        self
    }

    /// A given id, for example when re-emitting a recorded event (default: fresh).
    #[inline]
    pub fn event_id(mut self, id: EventId) -> Self {
        self.event_id = Some(id);
        self
    }

    /// A given time (default: now).
    #[inline]
    pub fn timestamp(mut self, timestamp: Timestamp) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// A given sequence number; buses overwrite it when they accept the event.
    #[inline]
    pub fn seq(mut self, seq: u64) -> Self {
        self.seq = seq;
        self
    }

    /// Whether a correlation id was given.
    pub fn has_correlation_id(&self) -> bool {
        self.correlation_id.is_some()
    }

    /// The event.
    ///
    /// # Errors
    ///
    /// A [`ValidationError`] when the type name breaks the rules every name
    /// follows (see [`crate::name`]).
    #[inline]
    pub fn build(self) -> Result<Event, ValidationError> {
        check_event_type(&self.event_type)?;
        let event_type = SmolStr::from(self.event_type);
        let (event_id, timestamp) = match (self.event_id, self.timestamp) {
            (Some(id), Some(t)) => (id, t),
            (Some(id), None) => (id, Timestamp::now()),
            (None, Some(t)) => (EventId::new(), t),
            (None, None) => now_id_and_time(),
        };
        Ok(Event(Arc::new(Inner {
            event_id,
            event_type,
            timestamp,
            source: self.source.map(String::into_boxed_str),
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            run_id: self.run_id.map(String::into_boxed_str),
            lane: self.lane.map(String::into_boxed_str),
            lane_seq: self.lane_seq,
            seq: self.seq,
            trace_context: self.trace_context,
            data: self.data,
            terminal: self.terminal,
        })))
    }
}

/// An event's payload did not deserialize into the requested type.
#[derive(Debug, thiserror::Error)]
#[error("event {event_type} ({event_id}) does not deserialize into {target}: {source}")]
pub struct DecodeError {
    event_type: String,
    event_id: EventId,
    target: &'static str,
    #[source]
    source: serde_json::Error,
}

impl DecodeError {
    /// The type of the event that failed to decode.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The Rust type it was decoded into.
    pub fn target(&self) -> &'static str {
        self.target
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_stamp_made_with_its_methods_fills_in_every_field_it_names() {
        let at = Timestamp::from_micros(1_700_000_000_123_456);
        let id = EventId::for_timestamp(at);
        let cause = EventId::for_timestamp(at);
        let work = CorrelationId::from(cause);
        let bare = Event::stamped(
            &EventType::new("a.b").unwrap(),
            json!(1),
            Stamp::new(id, at),
        );
        assert_eq!(
            (
                bare.event_id(),
                bare.timestamp(),
                bare.seq(),
                bare.is_marked_terminal()
            ),
            (id, at, 0, false)
        );
        assert!(bare.correlation_id().is_none() && bare.causation_id().is_none());
        let stamp = Stamp::new(id, at)
            .with_correlation_id(Some(work.clone()))
            .with_causation_id(Some(cause))
            .with_seq(9)
            .with_terminal(true);
        let full = Event::stamped(&EventType::new("a.b").unwrap(), json!(1), stamp);
        assert_eq!(full.correlation_id(), Some(&work));
        assert_eq!(full.causation_id(), Some(cause));
        assert_eq!((full.seq(), full.is_marked_terminal()), (9, true));
    }

    #[test]
    fn with_source_replaces_the_source_and_keeps_every_other_field() {
        let e = Event::builder("a.b")
            .data(json!({"k": [1, 2]}))
            .source("worker-1")
            .correlation_id("run-7")
            .build()
            .unwrap();
        let shared = e.clone();
        let moved = e.with_source("nats:o/worker-1");
        assert_eq!(moved.source(), Some("nats:o/worker-1"));
        assert_eq!(
            shared.source(),
            Some("worker-1"),
            "a shared event is copied"
        );
        assert_eq!(moved.event_id(), shared.event_id());
        assert_eq!(moved.timestamp(), shared.timestamp());
        assert_eq!(moved.correlation_id(), shared.correlation_id());
        assert_eq!(moved.data(), shared.data());
    }

    #[test]
    fn ids_are_unique_and_sorted() {
        let ids: Vec<EventId> = (0..1000).map(|_| EventId::new()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn an_id_carries_its_events_millisecond() {
        for _ in 0..1000 {
            let e = Event::builder("a.b").build().unwrap();
            let ms = e.event_id().as_uuid().as_u128() >> 80;
            let ts_ms = u128::try_from(e.timestamp().as_micros() / 1000).unwrap();
            assert_eq!(ms, ts_ms, "{e:?}");
        }
        let t = Timestamp::from_micros(2_000_000_000_123_999);
        let id = EventId::for_timestamp(t);
        assert_eq!(id.as_uuid().as_u128() >> 80, 2_000_000_000_123);
    }

    #[test]
    fn ids_are_unique_across_threads() {
        const THREADS: usize = 8;
        const IDS: usize = 20_000;
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                std::thread::spawn(|| {
                    let ids: Vec<EventId> = (0..IDS).map(|_| EventId::new()).collect();
                    assert!(ids.windows(2).all(|w| w[0] < w[1]));
                    ids
                })
            })
            .collect();
        let mut all: Vec<EventId> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), THREADS * IDS);
        assert!(all.iter().all(|id| id.as_uuid().get_version_num() == 7
            && id.as_uuid().get_variant() == uuid::Variant::RFC4122));
    }

    #[test]
    fn a_shared_payload_is_not_copied() {
        assert_eq!(
            std::mem::size_of::<Payload>(),
            std::mem::size_of::<Value>(),
            "an owned payload costs nothing more"
        );
        let payload = Arc::new(json!({"big": [1, 2, 3]}));
        let a = Event::builder("a.b")
            .data_shared(Arc::clone(&payload))
            .build()
            .unwrap();
        assert!(std::ptr::eq(a.data(), &*payload));
        let restamped = a.clone().with_seq(4);
        assert!(std::ptr::eq(restamped.data(), &*payload));
        let owned = Event::builder("a.b")
            .data(json!({"big": [1, 2, 3]}))
            .event_id(a.event_id())
            .timestamp(a.timestamp())
            .build()
            .unwrap();
        assert_eq!(owned, a);
        assert_eq!(
            serde_json::to_string(&owned).unwrap(),
            serde_json::to_string(&a).unwrap()
        );
        assert_eq!(
            a.decode::<serde_json::Map<String, Value>>().unwrap().len(),
            1
        );
    }

    /// The JSON form, byte for byte: journals written before must read the
    /// same, and journals written now must read the same in older versions.
    #[test]
    fn json_lines_are_pinned() {
        let id: EventId = "0190b6e0-1c2d-7a3b-8c4d-5e6f708192a3".parse().unwrap();
        let cause: EventId = "0190b6e0-1c2d-7a3b-8c4d-5e6f708192a4".parse().unwrap();
        let at = Timestamp::from_micros(1_720_000_000_123_456);
        let base = || Event::builder("user.login").event_id(id).timestamp(at);
        let cases = [
            (
                base().build().unwrap(),
                r#"{"event_id":"0190b6e0-1c2d-7a3b-8c4d-5e6f708192a3","event_type":"user.login","timestamp":"2024-07-03T09:46:40.123456Z","seq":0,"data":null}"#,
            ),
            (
                base()
                    .data(
                        json!({"i": 7, "name": "alice", "tags": ["a", "b"], "nested": {"x": 1.5}}),
                    )
                    .source("auth")
                    .correlation_id("req-1")
                    .causation_id(cause)
                    .run_id("run-1")
                    .lane("left")
                    .lane_seq(2)
                    .seq(9)
                    .terminal()
                    .build()
                    .unwrap(),
                r#"{"event_id":"0190b6e0-1c2d-7a3b-8c4d-5e6f708192a3","event_type":"user.login","timestamp":"2024-07-03T09:46:40.123456Z","source":"auth","correlation_id":"req-1","causation_id":"0190b6e0-1c2d-7a3b-8c4d-5e6f708192a4","run_id":"run-1","lane":"left","lane_seq":2,"seq":9,"data":{"i":7,"name":"alice","nested":{"x":1.5},"tags":["a","b"]}}"#,
            ),
            (
                base()
                    .data_shared(Arc::new(json!({"i": 1})))
                    .build()
                    .unwrap()
                    .with_correlation_id(id),
                r#"{"event_id":"0190b6e0-1c2d-7a3b-8c4d-5e6f708192a3","event_type":"user.login","timestamp":"2024-07-03T09:46:40.123456Z","correlation_id":"0190b6e0-1c2d-7a3b-8c4d-5e6f708192a3","seq":0,"data":{"i":1}}"#,
            ),
        ];
        for (event, line) in cases {
            assert_eq!(serde_json::to_string(&event).unwrap(), line);
            let back: Event = serde_json::from_str(line).unwrap();
            assert_eq!(back, event);
            assert_eq!(serde_json::to_string(&back).unwrap(), line);
        }
    }

    #[test]
    fn generated_correlation_ids_read_as_text() {
        let id = EventId::new();
        let from_id = CorrelationId::from(id);
        assert_eq!(from_id.as_str(), id.to_string());
        assert_eq!(from_id, CorrelationId::from(id.to_string()));
        let mut set = std::collections::HashSet::new();
        set.insert(from_id.clone());
        assert!(set.contains(id.to_string().as_str()));
        assert_ne!(CorrelationId::generate(), CorrelationId::generate());
    }

    #[test]
    fn clone_shares_payload() {
        let e = Event::new("a.b", json!({"big": [1, 2, 3]})).unwrap();
        let c = e.clone();
        assert!(Event::ptr_eq(&e, &c));
        let restamped = c.with_seq(9);
        assert_eq!(e.seq(), 0, "the original is unchanged");
        assert_eq!(restamped.seq(), 9);
    }

    #[test]
    fn json_shape_and_key_order() {
        let e = Event::builder("user.login")
            .data(json!({"u": "alice"}))
            .source("auth")
            .correlation_id("req-1")
            .run_id("run-1")
            .lane("left")
            .lane_seq(7)
            .timestamp(Timestamp::from_micros(1_700_000_000_123_456))
            .seq(3)
            .build()
            .unwrap();
        let text = serde_json::to_string(&e).unwrap();
        let keys: Vec<&str> = [
            "event_id",
            "event_type",
            "timestamp",
            "source",
            "correlation_id",
            "run_id",
            "lane",
            "lane_seq",
            "seq",
            "data",
        ]
        .into_iter()
        .collect();
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| text.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(
            text.contains("\"timestamp\":\"2023-11-14T22:13:20.123456Z\""),
            "{text}"
        );
        assert!(
            !text.contains("causation_id"),
            "absent fields are omitted: {text}"
        );
        assert!(text.contains("\"lane_seq\":7,"), "{text}");
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.lane_seq(), Some(7));
    }

    #[test]
    fn lane_seq_is_omitted_when_absent_and_settable() {
        let e = Event::builder("a.b").lane("left").build().unwrap();
        assert_eq!(e.lane_seq(), None);
        let text = serde_json::to_string(&e).unwrap();
        assert!(!text.contains("lane_seq"), "{text}");
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back.lane_seq(), None);

        let shared = e.clone();
        let stamped = shared.with_lane_seq(4);
        assert_eq!(stamped.lane_seq(), Some(4));
        assert_eq!(e.lane_seq(), None, "the original is unchanged");
        assert_ne!(stamped, e, "lane_seq takes part in equality");
    }

    #[test]
    fn epoch_float_timestamps_deserialize() {
        let t: Timestamp = serde_json::from_str("1700000000.5").unwrap();
        assert_eq!(t.as_micros(), 1_700_000_000_500_000);
    }

    /// A timestamp read is one RFC 3339 can write, so every record read is
    /// written back as it was read. Before, `1e300` read as 1970 and
    /// milliseconds (`1764936000000`) as the year 57898, which was written
    /// as `+57898-…` and could not be read back.
    #[test]
    fn timestamps_read_are_ones_rfc3339_writes_back() {
        let read = |json: &str| serde_json::from_str::<Timestamp>(json).map_err(|e| e.to_string());
        for ok in [
            "0",
            "-62135596800",
            "253402300799",
            "253402300799.5",
            "1764936000.25",
            "\"0001-01-01T00:00:00Z\"",
            "\"9999-12-31T23:59:59.999999Z\"",
        ] {
            let t = read(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            let text = serde_json::to_string(&t).unwrap();
            assert_eq!(read(&text), Ok(t), "{ok} written as {text}");
        }
        for (bad, why) in [
            (
                "1764936000000",
                "1764936000000 seconds since the epoch is outside the years 1 to 9999 (milliseconds, not seconds?)",
            ),
            ("1e300", "outside the years 1 to 9999"),
            ("-1e300", "outside the years 1 to 9999"),
            ("-62135596801", "outside the years 1 to 9999"),
            ("253402300800", "outside the years 1 to 9999"),
            ("18446744073709551615", "outside the years 1 to 9999"),
            ("-9223372036854775808", "outside the years 1 to 9999"),
            (
                "\"9999-12-31T23:59:59-05:00\"",
                "\"9999-12-31T23:59:59-05:00\" in UTC is outside the years 1 to 9999",
            ),
        ] {
            let e = read(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn invalid_names_are_rejected() {
        assert!(Event::new("a..b", json!(null)).is_err());
        assert!(serde_json::from_str::<Event>(
            r#"{"event_id":"0190b6e0-0000-7000-8000-000000000000","event_type":"bad name","timestamp":"2024-01-01T00:00:00Z"}"#
        )
        .is_err());
    }

    #[test]
    fn decode_errors_name_the_event() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code, reason = "only decoded")]
        struct Login {
            username: String,
        }
        let e = Event::new("user.login", json!({"user": 1})).unwrap();
        let err = e.decode::<Login>().unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("event user.login ("), "{text}");
        assert!(text.contains("Login: missing field `username`"), "{text}");
    }
}
