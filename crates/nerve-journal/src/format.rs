//! The line format: one JSON object per event, newline-terminated.
//!
//! See the [crate docs](crate#the-line-format) and `docs/journal-format.md`
//! for the specification; this module is its one implementation.

use std::cell::Cell;

use nerve_core::correlation::CorrelationId;
use nerve_core::trace::TraceContext;
use nerve_core::{Event, EventId, Timestamp, Value};
use serde::{Deserialize, Serialize};

/// The format version every line this crate writes carries, as `"v":1`, the
/// line's last key. Lines without `v` are read as version 1 (and as the
/// aperion-event-bus format when they carry `payload`).
pub const FORMAT_VERSION: u32 = 1;

/// The deepest `data` a line may hold: containers nested more than this are
/// replaced by an error marker, because `serde_json` (and so every reader
/// built on it) refuses to parse deeper documents.
pub const MAX_DATA_DEPTH: usize = 126;

/// The key of the error marker object that replaces a payload which could not
/// be written: `{"$nerve_error":"too_deep","message":"..."}`.
pub const ERROR_MARKER_KEY: &str = "$nerve_error";

/// A line as written, keys in the documented order.
#[derive(Serialize)]
struct LineOut<'a> {
    event_id: EventId,
    event_type: &'a str,
    timestamp: Rfc3339Micros,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a CorrelationId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    causation_id: Option<EventId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lane: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lane_seq: Option<u64>,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_context: Option<&'a TraceContext>,
    data: Data<'a>,
    v: u32,
}

/// A line's payload: a value to write, or the JSON text a payload was kept
/// as ([`Event::data_text`]), copied as it is.
#[derive(Clone, Copy)]
enum Data<'a> {
    Value(&'a Value),
    Text(&'a str),
}

impl<'a> Data<'a> {
    /// What `event`'s line holds when nothing replaces its payload: its
    /// text when it was kept as text and fits on one line (JSON may carry
    /// newlines as whitespace), so that a line read and written again,
    /// as a recorder does, is neither parsed nor rebuilt.
    fn of(event: &'a Event) -> Self {
        match event.data_text() {
            Some(text) if !text.as_bytes().iter().any(|&b| b == b'\n' || b == b'\r') => {
                Self::Text(text)
            }
            _ => Self::Value(event.data()),
        }
    }

    /// How deeply the payload nests (for the `too_deep` marker's message).
    fn depth(self) -> usize {
        match self {
            Self::Value(v) => depth(v),
            Self::Text(t) => serde_json::from_str(t).map_or(0, |v: Value| depth(&v)),
        }
    }
}

impl Serialize for Data<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(v) => v.serialize(serializer),
            Self::Text(t) => serde_json::from_str::<Value>(t)
                .map_err(serde::ser::Error::custom)?
                .serialize(serializer),
        }
    }
}

/// Why a payload was replaced by an error marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replaced {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

/// The error marker object written in place of a payload.
pub(crate) fn error_marker(reason: &str, message: &str) -> Value {
    let mut map = serde_json::Map::new();
    map.insert(ERROR_MARKER_KEY.to_owned(), Value::from(reason));
    map.insert("message".to_owned(), Value::from(message));
    Value::Object(map)
}

/// The `event_type` of a range marker line: numbered events, `count` of them
/// between `from_seq` and `to_seq`, that the journal holds no line for.
pub const GAP_EVENT_TYPE: &str = "system.journal_gap";

/// Appends the range marker line for `gap`: a fresh `event_id`, the time it
/// is written, `source` `"nerve"`, no `seq` (it numbers no event of its own),
/// `data` `{"from_seq":a,"to_seq":b,"count":n,"reason":"..."}`.
pub(crate) fn encode_gap(gap: &crate::marker::Gap, out: &mut Vec<u8>) {
    let mut uuid = uuid::Uuid::encode_buffer();
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(b"{\"event_id\":\"");
    out.extend_from_slice(
        EventId::new()
            .as_uuid()
            .hyphenated()
            .encode_lower(&mut uuid)
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"event_type\":\"");
    out.extend_from_slice(GAP_EVENT_TYPE.as_bytes());
    out.extend_from_slice(b"\",\"timestamp\":");
    // A timestamp always serializes: four-digit years by hand, others by chrono.
    let _ = Rfc3339Micros(Timestamp::now()).write(out);
    out.extend_from_slice(b",\"source\":\"nerve\",\"data\":{\"from_seq\":");
    out.extend_from_slice(digits.format(gap.from).as_bytes());
    out.extend_from_slice(b",\"to_seq\":");
    out.extend_from_slice(digits.format(gap.to).as_bytes());
    out.extend_from_slice(b",\"count\":");
    out.extend_from_slice(digits.format(gap.count).as_bytes());
    out.extend_from_slice(b",\"reason\":\"");
    // Reasons are this crate's constants: plain ASCII, nothing to escape.
    out.extend_from_slice(gap.reason.as_bytes());
    out.extend_from_slice(b"\"},\"v\":");
    out.extend_from_slice(digits.format(FORMAT_VERSION).as_bytes());
    out.extend_from_slice(b"}\n");
}

/// The highest sequence number one line accounts for: its `seq`, or a range
/// marker's `to_seq`. `None` for a line without either (an aperion-event-bus
/// line) or one that does not parse (a reader reports those).
pub(crate) fn seq_accounted(line: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Tail {
        #[serde(default)]
        seq: Option<u64>,
        #[serde(default)]
        event_type: String,
        #[serde(default)]
        data: Value,
    }
    let tail: Tail = serde_json::from_slice(line).ok()?;
    if tail.event_type == GAP_EVENT_TYPE {
        return tail.data.get("to_seq").and_then(Value::as_u64);
    }
    tail.seq
}

/// Appends `event` as `redacted` says it may be written: the payload,
/// `source` and `correlation_id` (what a redactor rewrites) come from
/// `redacted`, every other field (ids, type, time, run, lane, seq) from
/// `event`, so a hook cannot make a line lie about which event it records.
pub(crate) fn encode_redacted(
    event: &Event,
    redacted: &Event,
    out: &mut Vec<u8>,
) -> Option<Replaced> {
    encode_parts(
        event,
        Some(redacted.data()),
        redacted.source(),
        redacted.correlation_id(),
        out,
    )
}

/// Appends `event` as a journal with the redaction hook `redact` writes it:
/// [`encode_redacted`] with what `redact` returns, or, if it panics, the
/// event with its payload replaced by an error marker (`"redact"`): never
/// unredacted. Returns what the hook returned (`None` if it panicked) and
/// why the payload was replaced, if it was.
pub(crate) fn encode_through(
    event: &Event,
    redact: &(dyn Fn(&Event) -> Event + '_),
    out: &mut Vec<u8>,
) -> (Option<Event>, Option<Replaced>) {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| redact(event))) {
        Ok(redacted) => {
            let replaced = encode_redacted(event, &redacted, out);
            (Some(redacted), replaced)
        }
        Err(panic) => {
            // Writing the unredacted payload could leak what the hook
            // exists to hide, so the payload is replaced.
            let message = format!(
                "redaction panicked: {}",
                crate::writer::panic_message(&*panic)
            );
            let marker = error_marker("redact", &message);
            encode(event, Some(&marker), out);
            (
                None,
                Some(Replaced {
                    reason: "redact",
                    message,
                }),
            )
        }
    }
}

/// Appends `event` to `out` as one line; `data` overrides the event's payload
/// (the redacted or replacement payload). Returns why the payload was
/// replaced, if it was.
pub(crate) fn encode(event: &Event, data: Option<&Value>, out: &mut Vec<u8>) -> Option<Replaced> {
    encode_parts(event, data, event.source(), event.correlation_id(), out)
}

fn encode_parts(
    event: &Event,
    data: Option<&Value>,
    source: Option<&str>,
    correlation_id: Option<&CorrelationId>,
    out: &mut Vec<u8>,
) -> Option<Replaced> {
    let data = data.map_or_else(|| Data::of(event), Data::Value);
    let line = LineOut {
        event_id: event.event_id(),
        event_type: event.event_type(),
        timestamp: Rfc3339Micros(event.timestamp()),
        source,
        correlation_id,
        causation_id: event.causation_id(),
        run_id: event.run_id(),
        lane: event.lane(),
        lane_seq: event.lane_seq(),
        seq: event.seq(),
        trace_context: event.trace_context(),
        data,
        v: FORMAT_VERSION,
    };
    let start = out.len();
    let failure = match write_line(&line, out) {
        // The newline counts towards the readers' limit.
        Ok(()) if out.len() - start < MAX_LINE_BYTES => {
            out.push(b'\n');
            return None;
        }
        Ok(()) => LineError::TooLong(out.len() - start + 1),
        Err(failure) => failure,
    };
    out.truncate(start);
    let (replaced, marker) = match failure {
        LineError::TooDeep => {
            let depth = data.depth();
            let message = format!(
                "payload nests {depth} levels deep, more than the {MAX_DATA_DEPTH} a journal line may hold"
            );
            let marker = error_marker("too_deep", &message);
            (
                Replaced {
                    reason: "too_deep",
                    message,
                },
                marker,
            )
        }
        LineError::TooLong(bytes) => {
            let message = format!(
                "the event's line would be {bytes} bytes, more than the {MAX_LINE_BYTES} a journal line may hold"
            );
            let marker = error_marker("too_long", &message);
            (
                Replaced {
                    reason: "too_long",
                    message,
                },
                marker,
            )
        }
        // Unreachable with `serde_json::Value` payloads (string keys, finite
        // numbers), kept so that a future payload type cannot tear a line.
        LineError::Serialize(e) => {
            let message = format!("payload could not be serialized: {e}");
            let marker = error_marker("serialize", &message);
            (
                Replaced {
                    reason: "serialize",
                    message,
                },
                marker,
            )
        }
    };
    let line = LineOut {
        data: Data::Value(&marker),
        ..line
    };
    if write_line(&line, out).is_err() {
        out.truncate(start);
        serde_json::to_writer(&mut *out, &line).unwrap_or_else(|_| out.truncate(start));
    }
    out.push(b'\n');
    Some(replaced)
}

/// The longest line a reader holds in memory, newline included: 64 MiB.
///
/// A longer line is skipped without being read into memory (reported as a
/// [`ReadError::BadLine`](crate::ReadError::BadLine), or a
/// [`ReadError::TornTail`](crate::ReadError::TornTail) at the end of a
/// file), so a damaged or hostile file cannot make a reader allocate
/// without bound. The writer keeps to it: an event whose line would be
/// longer is written with its payload replaced by a `too_long` error
/// marker, counted and reported like a payload nested too deep.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// Why [`write_line`] wrote no line.
#[derive(Debug)]
enum LineError {
    /// The payload nests deeper than [`MAX_DATA_DEPTH`].
    TooDeep,
    /// The line, newline included, would be longer than [`MAX_LINE_BYTES`]
    /// (its length).
    TooLong(usize),
    /// `serde_json` refused a part it writes (a float, the trace context).
    Serialize(serde_json::Error),
}

impl From<serde_json::Error> for LineError {
    fn from(e: serde_json::Error) -> Self {
        Self::Serialize(e)
    }
}

/// Writes `line` as compact JSON, keys in order: what `serde_json` would
/// write for `LineOut`, byte for byte (tests check), without its per-field
/// machinery, because this runs on the writer thread for every event and
/// sets the journal's pace (docs/benchmarks.md, "Journal throughput").
/// Fails without a usable line if the payload is too deep: the depth is
/// checked while writing it, in the same walk.
fn write_line(line: &LineOut<'_>, out: &mut Vec<u8>) -> Result<(), LineError> {
    let mut uuid = uuid::Uuid::encode_buffer();
    out.extend_from_slice(b"{\"event_id\":\"");
    out.extend_from_slice(
        line.event_id
            .as_uuid()
            .hyphenated()
            .encode_lower(&mut uuid)
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"event_type\":");
    write_str(line.event_type, out)?;
    out.extend_from_slice(b",\"timestamp\":");
    line.timestamp.write(out)?;
    if let Some(v) = line.source {
        out.extend_from_slice(b",\"source\":");
        write_str(v, out)?;
    }
    if let Some(id) = line.correlation_id {
        out.extend_from_slice(b",\"correlation_id\":");
        // As bytes: `as_str` re-checks an inline id's UTF-8 (docs/benchmarks.md, "Journal").
        let bytes = id.as_bytes();
        if needs_escape(bytes) {
            write_str(id.as_str(), out)?;
        } else {
            out.reserve(bytes.len() + 2);
            out.push(b'"');
            out.extend_from_slice(bytes);
            out.push(b'"');
        }
    }
    if let Some(id) = line.causation_id {
        out.extend_from_slice(b",\"causation_id\":\"");
        out.extend_from_slice(id.as_uuid().hyphenated().encode_lower(&mut uuid).as_bytes());
        out.push(b'"');
    }
    for (key, value) in [
        (&b",\"run_id\":"[..], line.run_id),
        (&b",\"lane\":"[..], line.lane),
    ] {
        if let Some(v) = value {
            out.extend_from_slice(key);
            write_str(v, out)?;
        }
    }
    let mut digits = itoa::Buffer::new();
    if let Some(n) = line.lane_seq {
        out.extend_from_slice(b",\"lane_seq\":");
        out.extend_from_slice(digits.format(n).as_bytes());
    }
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(digits.format(line.seq).as_bytes());
    if let Some(tc) = line.trace_context {
        out.extend_from_slice(b",\"trace_context\":");
        serde_json::to_writer(&mut *out, tc)?;
    }
    out.extend_from_slice(b",\"data\":");
    match line.data {
        Data::Value(v) => write_value(v, MAX_DATA_DEPTH, out)?,
        // Nested at most 100 deep (`EventBuilder::data_raw`), well within
        // `MAX_DATA_DEPTH`; on one line (`Data::of`).
        Data::Text(t) => out.extend_from_slice(t.as_bytes()),
    }
    out.extend_from_slice(b",\"v\":");
    out.extend_from_slice(digits.format(line.v).as_bytes());
    out.push(b'}');
    Ok(())
}

/// Writes `value` as `serde_json` writes it compactly, byte for byte, or
/// fails with [`LineError::TooDeep`] on a container nested more than `left`
/// levels (so the recursion is never deeper than `MAX_DATA_DEPTH + 1`).
/// Non-integer numbers are left to `serde_json` (its float formatting).
fn write_value(value: &Value, left: usize, out: &mut Vec<u8>) -> Result<(), LineError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => match n.as_u64() {
            Some(u) => out.extend_from_slice(itoa::Buffer::new().format(u).as_bytes()),
            None => serde_json::to_writer(&mut *out, n)?,
        },
        Value::String(s) => write_str(s, out)?,
        Value::Array(items) => {
            if left == 0 {
                return Err(LineError::TooDeep);
            }
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, left - 1, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            if left == 0 {
                return Err(LineError::TooDeep);
            }
            out.push(b'{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(key, out)?;
                out.push(b':');
                write_value(item, left - 1, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// A JSON string: copied as is when nothing in it needs escaping (the
/// bytes `serde_json` escapes are `"`, `\\` and controls below 0x20).
fn write_str(s: &str, out: &mut Vec<u8>) -> serde_json::Result<()> {
    if !needs_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *out, s)
    }
}

/// Whether any byte of `s` is one `serde_json` escapes (`"`, `\\`, below
/// 0x20), eight bytes at a time: ids and names are checked on every line.
fn needs_escape(s: &[u8]) -> bool {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether some byte of `x` is zero (exact, not a heuristic).
    let has_zero = |x: u64| x.wrapping_sub(LO) & !x & HI != 0;
    let mut chunks = s.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word);
        // A byte below 0x20 or one of the two: some byte of `x` is, or of
        // `x` xor the quote or backslash repeated is, zero.
        let below = x.wrapping_sub(LO * 0x20) & !x & HI != 0;
        if below || has_zero(x ^ (LO * u64::from(b'"'))) || has_zero(x ^ (LO * u64::from(b'\\'))) {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Whether containers in `value` nest more than `limit` levels: what
/// [`write_value`] refuses.
#[cfg(test)]
fn deeper_than(value: &Value, limit: usize) -> bool {
    matches!(
        write_value(value, limit, &mut Vec::new()),
        Err(LineError::TooDeep)
    )
}

/// How deeply containers nest in `value` (a scalar is 0, `[]` is 1), counted
/// without recursion so that a hostile payload cannot overflow the stack.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(items) => {
                deepest = deepest.max(d + 1);
                stack.extend(items.iter().map(|i| (i, d + 1)));
            }
            Value::Object(map) => {
                deepest = deepest.max(d + 1);
                stack.extend(map.values().map(|i| (i, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// A timestamp written as `2026-11-23T09:01:32.123456Z` without allocating.
struct Rfc3339Micros(Timestamp);

impl Rfc3339Micros {
    /// The text, for a four-digit year; `None` outside them, where RFC 3339
    /// has no form (and chrono's is written).
    fn text(&self) -> Option<[u8; 27]> {
        thread_local! {
            /// The last second written and its text up to the fraction:
            /// consecutive events mostly share it, so only the fraction's
            /// digits are new.
            static LAST_SECOND: Cell<(i64, [u8; 27])> = const { Cell::new((i64::MIN, [0; 27])) };
        }
        let micros = self.0.as_micros();
        let secs = micros.div_euclid(1_000_000);
        let frac = micros.rem_euclid(1_000_000);
        let (last, mut b) = LAST_SECOND.get();
        if last != secs {
            let days = secs.div_euclid(86_400);
            let tod = secs.rem_euclid(86_400);
            let (y, m, d) = civil_from_days(days);
            if !(0..=9999).contains(&y) {
                return None;
            }
            b = *b"0000-00-00T00:00:00.000000Z";
            put(&mut b[0..4], y);
            put(&mut b[5..7], m);
            put(&mut b[8..10], d);
            put(&mut b[11..13], tod / 3600);
            put(&mut b[14..16], tod % 3600 / 60);
            put(&mut b[17..19], tod % 60);
            LAST_SECOND.set((secs, b));
        }
        put(&mut b[20..26], frac);
        Some(b)
    }

    /// Appends the JSON string, as `serde_json` would write it.
    fn write(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self.text() {
            Some(b) => {
                out.push(b'"');
                out.extend_from_slice(&b);
                out.push(b'"');
                Ok(())
            }
            None => serde_json::to_writer(&mut *out, self),
        }
    }
}

impl Serialize for Rfc3339Micros {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.text() {
            Some(b) => serializer.serialize_str(std::str::from_utf8(&b).unwrap_or_default()),
            None => serializer.collect_str(&self.0),
        }
    }
}

/// Writes `n` as zero-padded decimal digits filling `out`.
fn put(out: &mut [u8], mut n: i64) {
    for slot in out.iter_mut().rev() {
        #[allow(clippy::cast_possible_truncation, reason = "a single digit")]
        let digit = (n % 10) as u8;
        *slot = b'0' + digit;
        n /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A line as read: this crate's format, or aperion-event-bus's (`payload`
/// instead of `data`, epoch-float timestamps, no `seq`).
#[derive(Deserialize)]
struct LineIn<'a> {
    // Borrowed when unescaped (always, as written): ids are parsed, not kept.
    #[serde(default, borrow)]
    event_id: Option<Text<'a>>,
    event_type: String,
    timestamp: Timestamp,
    #[serde(default)]
    source: Option<String>,
    #[serde(default, borrow)]
    correlation_id: Option<Text<'a>>,
    #[serde(default, borrow)]
    causation_id: Option<Text<'a>>,
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    lane: Option<String>,
    #[serde(default)]
    lane_seq: Option<u64>,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    trace_context: Option<TraceContext>,
    #[serde(default, borrow)]
    data: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    payload: Option<&'a serde_json::value::RawValue>,
    /// The payload as the fast reader found it, not yet checked: checked
    /// as the event is made (`EventBuilder::data_json`, one pass).
    #[serde(skip)]
    data_text: Option<&'a str>,
    #[serde(default)]
    v: Option<u32>,
}

/// A string of a line: borrowed from it when it has no escapes, owned when
/// it has. (`Option<Cow<str>>` with `#[serde(borrow)]` always owns: serde
/// borrows a `Cow` only as a field of its own, as here.)
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

/// Reads a line in the form [`write_line`] writes, in one pass: the keys in
/// its order, no whitespace, strings without escapes, no trace context.
/// `None` for anything else, which serde reads (and whose errors it words);
/// what this reads, serde reads the same (a property test says so).
///
/// By hand: serde's derive matches each key against every field's name and
/// scans each string twice; a reader that knows the order skips both (the
/// NATS bridge's import and `nerve query` read every line through here).
fn read_written(text: &str) -> Option<LineIn<'_>> {
    let mut r = Written { text, at: 0 };
    r.key(b"{\"event_id\":")?;
    let event_id = Text(std::borrow::Cow::Borrowed(r.string()?));
    r.key(b",\"event_type\":")?;
    let event_type = r.string()?.to_owned();
    r.key(b",\"timestamp\":")?;
    // Through the type's own `Deserialize`: the same checks as serde's read.
    let timestamp = Timestamp::deserialize(serde::de::value::BorrowedStrDeserializer::<
        serde_json::Error,
    >::new(r.string()?))
    .ok()?;
    let source = r.optional(b",\"source\":", Written::string)?;
    let correlation_id = r.optional(b",\"correlation_id\":", Written::string)?;
    let causation_id = r.optional(b",\"causation_id\":", Written::string)?;
    let run_id = r.optional(b",\"run_id\":", Written::string)?;
    let lane = r.optional(b",\"lane\":", Written::string)?;
    let lane_seq = r.optional(b",\"lane_seq\":", Written::number)?;
    r.key(b",\"seq\":")?;
    let seq = r.number()?;
    r.key(b",\"data\":")?;
    // The line ends in `,"v":N}` (and what JSON takes after a value, a
    // journal line's newline say); the payload is all before it, and
    // serde_json checks that it is one value with nothing around it.
    let rest = r.rest();
    let end = rest
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
    let rest = rest[..=end].strip_suffix(b"}")?;
    let digits = rest.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let (rest, version) = rest.split_at(rest.len() - digits);
    let rest = rest.strip_suffix(b",\"v\":")?;
    let version = u32::try_from(unsigned(version)?).ok()?;
    let data = text.get(r.at..r.at + rest.len())?;
    if data.starts_with(|c: char| c.is_ascii_whitespace())
        || data.ends_with(|c: char| c.is_ascii_whitespace())
    {
        return None;
    }
    Some(LineIn {
        event_id: Some(event_id),
        event_type,
        timestamp,
        source: source.map(str::to_owned),
        correlation_id: correlation_id.map(|c| Text(std::borrow::Cow::Borrowed(c))),
        causation_id: causation_id.map(|c| Text(std::borrow::Cow::Borrowed(c))),
        run_id: run_id.map(str::to_owned),
        lane: lane.map(str::to_owned),
        lane_seq,
        seq,
        trace_context: None,
        data: None,
        payload: None,
        data_text: Some(data),
        v: Some(version),
    })
}

/// Where a string in the written form stops: its closing quote, or what the
/// fast reader leaves to serde (an escape, a control character).
static STOPS: [bool; 256] = {
    let mut stops = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        stops[b] = true;
        b += 1;
    }
    stops[b'"' as usize] = true;
    stops[b'\\' as usize] = true;
    stops
};

/// A cursor over a line in the written form (`read_written`).
struct Written<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Written<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.text.as_bytes()[self.at..]
    }

    /// Steps over `key` if it is next, or `None`.
    fn key(&mut self, key: &[u8]) -> Option<()> {
        self.rest().starts_with(key).then(|| self.at += key.len())
    }

    /// The value of an optional `key`: `Some(None)` when the key is not
    /// next, `None` when its value is not in the written form.
    fn optional<T>(
        &mut self,
        key: &[u8],
        value: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<Option<T>> {
        match self.key(key) {
            Some(()) => value(self).map(Some),
            None => Some(None),
        }
    }

    /// A string without escapes or control characters (which JSON wants
    /// escaped), or `None`.
    fn string(&mut self) -> Option<&'a str> {
        let rest = self.rest().strip_prefix(b"\"")?;
        let len = rest.iter().position(|&b| STOPS[usize::from(b)])?;
        if rest[len] != b'"' {
            return None;
        }
        let start = self.at + 1;
        self.at = start + len + 1;
        // Between two ASCII quotes of valid UTF-8: on character boundaries.
        self.text.get(start..start + len)
    }

    /// An unsigned integer as JSON writes it, within `u64`, or `None`.
    fn number(&mut self) -> Option<u64> {
        let rest = self.rest();
        let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if matches!(rest.get(len), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let n = unsigned(&rest[..len])?;
        self.at += len;
        Some(n)
    }
}

/// `digits` as JSON writes an unsigned integer (no leading zero), within
/// `u64`, or `None`.
fn unsigned(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}

/// Parses one line (without its newline) back into an event.
pub(crate) fn decode(line: &[u8]) -> Result<Event, String> {
    decode_with(line, read_written)
}

/// `decode`, with `fast` tried before serde.
fn decode_with(
    line: &[u8],
    fast: impl for<'a> FnOnce(&'a str) -> Option<LineIn<'a>>,
) -> Result<Event, String> {
    // A record is a JSON object: serde would also take a struct from an
    // array of its fields in order (`[null,"a.b",1]`), which is no record.
    if line.trim_ascii_start().first() != Some(&b'{') {
        return Err("not a JSON object".to_owned());
    }
    // One UTF-8 check for the whole line, not one per string.
    let text = std::str::from_utf8(line).map_err(|e| {
        format!(
            "not UTF-8 text (invalid byte at column {})",
            e.valid_up_to() + 1
        )
    })?;
    // A line the fast reader took but whose event could not be made (a
    // payload that is not JSON, an id that is no UUID) is read again by
    // serde, so that its error is serde's, as for any other line.
    if let Some(event) = fast(text).and_then(|l| into_event(l).ok()) {
        return Ok(event);
    }
    into_event(serde_json::from_str(text).map_err(|e| e.to_string())?)
}

/// The event of a line as read.
fn into_event(l: LineIn<'_>) -> Result<Event, String> {
    if let Some(v) = l.v {
        if v > FORMAT_VERSION {
            return Err(format!(
                "format version {v} is newer than this reader (version {FORMAT_VERSION})"
            ));
        }
    }
    let mut b = Event::builder(l.event_type)
        .timestamp(l.timestamp)
        .seq(l.seq);
    if let Some(text) = l.data_text {
        b = b.data_json(text).map_err(|e| e.to_string())?;
    } else if let Some(raw) = l.data.or(l.payload) {
        b = b.data_raw(raw).map_err(|e| e.to_string())?;
    }
    if let Some(id) = l.event_id {
        let id: EventId = id
            .parse()
            .map_err(|e| format!("event_id {id:?} is not a UUID: {e}"))?;
        b = b.event_id(id);
    }
    if let Some(s) = l.source {
        b = b.source(s);
    }
    if let Some(c) = l.correlation_id {
        b = b.correlation_id(&*c);
    }
    if let Some(c) = l.causation_id {
        let c: EventId = c
            .parse()
            .map_err(|e| format!("causation_id {c:?} is not a UUID: {e}"))?;
        b = b.causation_id(c);
    }
    if let Some(r) = l.run_id {
        b = b.run_id(r);
    }
    if let Some(lane) = l.lane {
        b = b.lane(lane);
    }
    if let Some(n) = l.lane_seq {
        b = b.lane_seq(n);
    }
    if let Some(tc) = l.trace_context {
        b = b.trace_context(tc);
    }
    b.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod write_line_tests {
    use super::*;
    use serde_json::json;

    fn both(e: &Event) -> (String, String) {
        let line = LineOut {
            event_id: e.event_id(),
            event_type: e.event_type(),
            timestamp: Rfc3339Micros(e.timestamp()),
            source: e.source(),
            correlation_id: e.correlation_id(),
            causation_id: e.causation_id(),
            run_id: e.run_id(),
            lane: e.lane(),
            lane_seq: e.lane_seq(),
            seq: e.seq(),
            trace_context: e.trace_context(),
            data: Data::Value(e.data()),
            v: FORMAT_VERSION,
        };
        let mut fast = Vec::new();
        write_line(&line, &mut fast).unwrap();
        (
            String::from_utf8(fast).unwrap(),
            serde_json::to_string(&line).unwrap(),
        )
    }

    #[test]
    fn the_fast_writer_writes_what_serde_json_writes() {
        let plain = Event::builder("a.b").build().unwrap();
        let full = Event::builder("user.login")
            .source("auth \"svc\"\n")
            .correlation_id("req-1\\x")
            .causation_id(plain.event_id())
            .run_id("rün-1")
            .lane("left\u{1}")
            .lane_seq(7)
            .seq(42)
            .trace_context(
                TraceContext::parse(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    Some("congo=t61rcWkgMzE"),
                )
                .unwrap(),
            )
            .data(json!({"k": [1, "two", {"three": null}], "é": "\u{0}"}))
            .build()
            .unwrap();
        for e in [&plain, &full] {
            let (fast, serde) = both(e);
            assert_eq!(fast, serde);
        }
    }

    #[test]
    fn the_fast_writer_writes_every_kind_of_payload_as_serde_json_does() {
        let payloads = [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(-1),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1.5),
            json!(-0.0),
            json!(0.1),
            json!(1e300),
            json!(-2.5e-8),
            json!(""),
            json!("plain"),
            json!("tab\tquote\"back\\slash\u{7f}\u{1f}é😀"),
            json!([]),
            json!({}),
            json!([[], {}, [null, [1, [2.0]]]]),
            json!({"i": 7}),
            json!({"a\"b": {"": [1, -2, 3.25]}, "z": "\n", "é": false}),
        ];
        for (i, data) in payloads.into_iter().enumerate() {
            let e = Event::builder("a.b")
                .seq(i as u64)
                .data(data)
                .build()
                .unwrap();
            let (fast, serde) = both(&e);
            assert_eq!(fast, serde);
        }
        // Years without an RFC 3339 form are written as chrono writes them.
        for micros in [
            i64::MIN / 2,
            -62_135_596_800_000_001,
            253_402_300_800_000_000,
        ] {
            let e = Event::builder("a.b")
                .timestamp(Timestamp::from_micros(micros))
                .build()
                .unwrap();
            let (fast, serde) = both(&e);
            assert_eq!(fast, serde);
        }
    }

    /// The bytes of one line, pinned: the format on disk does not change
    /// when the encoder does.
    #[test]
    fn a_line_is_written_byte_for_byte_as_before() {
        let id: EventId = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".parse().unwrap();
        let cause: EventId = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c".parse().unwrap();
        let e = Event::builder("specimen.completed")
            .event_id(id)
            .timestamp(Timestamp::from_micros(1_700_000_000_123_456))
            .source("extraction")
            .correlation_id("req-1")
            .causation_id(cause)
            .run_id("run-1")
            .lane("left")
            .lane_seq(7)
            .seq(42)
            .data(json!({"i": 3, "ok": true, "rate": 0.5, "tags": ["a", "b\"c"], "none": null}))
            .build()
            .unwrap();
        let mut out = Vec::new();
        assert_eq!(encode(&e, None, &mut out), None);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"event_id":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","event_type":"specimen.completed","#,
                r#""timestamp":"2023-11-14T22:13:20.123456Z","source":"extraction","correlation_id":"req-1","#,
                r#""causation_id":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c","run_id":"run-1","lane":"left","#,
                r#""lane_seq":7,"seq":42,"data":{"i":3,"none":null,"ok":true,"rate":0.5,"tags":["a","b\"c"]},"v":1}"#,
                "\n"
            )
        );
    }

    #[test]
    fn a_gap_line_reads_back_without_a_seq_and_accounts_for_its_range() {
        let gap = crate::marker::Gap {
            from: 7,
            to: 19,
            count: 4,
            reason: "dropped",
        };
        let mut out = Vec::new();
        encode_gap(&gap, &mut out);
        assert!(out.ends_with(b"}\n"));
        let line = &out[..out.len() - 1];
        let value: Value = serde_json::from_slice(line).unwrap();
        assert!(value.get("seq").is_none(), "{value}");
        assert_eq!(
            value["data"],
            json!({"from_seq": 7, "to_seq": 19, "count": 4, "reason": "dropped"})
        );
        let e = decode(line).unwrap();
        assert_eq!(
            (e.event_type(), e.seq(), e.source()),
            (GAP_EVENT_TYPE, 0, Some("nerve"))
        );
        assert_eq!(seq_accounted(line), Some(19));
        let mut event = Vec::new();
        encode(
            &Event::builder("a.b").seq(5).build().unwrap(),
            None,
            &mut event,
        );
        assert_eq!(seq_accounted(&event[..event.len() - 1]), Some(5));
        assert_eq!(
            seq_accounted(b"{\"event_type\":\"a.b\",\"payload\":1}"),
            None
        );
    }

    #[test]
    fn needs_escape_finds_what_serde_json_escapes() {
        let naive = |s: &[u8]| s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"bench.tick".to_vec(),
            "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            "rün-é-😀-\u{7f}-\u{80}".into(),
        ];
        for b in 0u8..=0x7f {
            for at in [0, 7, 8, 15, 16, 20] {
                let mut s = vec![b'a'; 21];
                s[at] = b;
                cases.push(s);
            }
        }
        for s in &cases {
            assert_eq!(needs_escape(s), naive(s), "{s:?}");
        }
    }

    #[test]
    fn depth_limits() {
        let mut v = json!(1);
        for _ in 0..3 {
            v = json!([v]);
        }
        assert!(!deeper_than(&v, 3));
        assert!(deeper_than(&v, 2));
        assert_eq!(depth(&v), 3);
        assert!(!deeper_than(&json!({"a": 1}), 1));
        assert!(deeper_than(&json!({"a": {}}), 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nerve_core::json;

    /// `event`'s line as the journal writes it, newline included.
    pub(super) fn line(event: &Event) -> String {
        let mut out = Vec::new();
        assert_eq!(encode(event, None, &mut out), None);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn keys_in_order_and_round_trip() {
        let e = Event::builder("user.login")
            .data(json!({"u": "alice", "metrics": {"success_rate": 0.5}}))
            .source("auth")
            .correlation_id("req-1")
            .causation_id(EventId::new())
            .run_id("run-1")
            .lane("left")
            .lane_seq(7)
            .timestamp(Timestamp::from_micros(1_700_000_000_123_456))
            .seq(3)
            .trace_context(
                TraceContext::parse(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                    None,
                )
                .unwrap(),
            )
            .build()
            .unwrap();
        let text = line(&e);
        assert!(text.ends_with("}\n") && !text[..text.len() - 1].contains('\n'));
        let keys = [
            "event_id",
            "event_type",
            "timestamp",
            "source",
            "correlation_id",
            "causation_id",
            "run_id",
            "lane",
            "lane_seq",
            "seq",
            "trace_context",
            "data",
            "v",
        ];
        let pos: Vec<usize> = keys
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(
            text.contains("\"timestamp\":\"2023-11-14T22:13:20.123456Z\""),
            "{text}"
        );
        assert!(text.ends_with(",\"v\":1}\n"), "{text}");
        assert_eq!(decode(text.trim_end().as_bytes()).unwrap(), e);
    }

    #[test]
    fn timestamps_match_chrono() {
        for micros in [
            0,
            1,
            -1,
            951_782_400_000_000,
            1_700_000_000_999_999,
            4_102_444_800_000_000,
            -62_135_596_800_000_000,
        ] {
            let t = Timestamp::from_micros(micros);
            let ours = serde_json::to_string(&Rfc3339Micros(t)).unwrap();
            assert_eq!(ours, format!("\"{t}\""), "{micros}");
        }
    }

    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!([v]);
        }
        v
    }

    #[test]
    fn the_deepest_payload_allowed_reads_back_and_deeper_ones_are_marked() {
        let ok = Event::new("a.b", nested(MAX_DATA_DEPTH)).unwrap();
        let text = line(&ok);
        assert_eq!(decode(text.trim_end().as_bytes()).unwrap(), ok);

        let deep = Event::new("a.b", nested(MAX_DATA_DEPTH + 1)).unwrap();
        let mut out = Vec::new();
        let replaced = encode(&deep, None, &mut out).unwrap();
        assert_eq!(replaced.reason, "too_deep");
        let back = decode(&out[..out.len() - 1]).unwrap();
        assert_eq!(back.data()[ERROR_MARKER_KEY], "too_deep");
        assert_eq!(back.event_id(), deep.event_id());
        // The payload is parsed on its own, not inside the line's object:
        // a reader takes one level more than the writer writes, and refuses
        // what serde_json refuses, with its error.
        let deeper = |levels: usize| {
            let mut raw = line(&ok);
            for _ in 0..levels {
                raw = raw
                    .replacen("\"data\":", "\"data\":[", 1)
                    .replacen(",\"v\"", "],\"v\"", 1);
            }
            decode(raw.trim_end().as_bytes())
        };
        assert_eq!(deeper(1).unwrap().data(), &json!([nested(MAX_DATA_DEPTH)]));
        let refused = deeper(2).unwrap_err();
        assert!(refused.contains("recursion limit"), "{refused}");
    }

    #[test]
    fn a_line_longer_than_readers_hold_is_written_with_a_too_long_marker() {
        // Measure the line around an empty string, then fill the string so
        // the line with its newline is exactly the limit: written as it is.
        let empty = Event::new("a.b", Value::String(String::new())).unwrap();
        let overhead = line(&empty).len();
        let fits = Event::new("a.b", Value::String("x".repeat(MAX_LINE_BYTES - overhead))).unwrap();
        let mut out = Vec::new();
        assert!(encode(&fits, None, &mut out).is_none());
        assert_eq!(out.len(), MAX_LINE_BYTES);

        // One byte more and the payload is replaced, the line kept short.
        let long = Event::new(
            "a.b",
            Value::String("x".repeat(MAX_LINE_BYTES - overhead + 1)),
        )
        .unwrap();
        out.clear();
        let replaced = encode(&long, None, &mut out).unwrap();
        assert_eq!(replaced.reason, "too_long");
        assert!(out.len() < 1024, "{} bytes", out.len());
        let back = decode(&out[..out.len() - 1]).unwrap();
        assert_eq!(back.data()[ERROR_MARKER_KEY], "too_long");
        assert_eq!(back.event_id(), long.event_id());
    }

    #[test]
    fn aperion_lines_read() {
        let text = r#"{"event_type": "user.login", "payload": {"user": "alice"}, "timestamp": 1700000000.25, "event_id": "6f1c0b8e-3c1d-4c5e-9a0b-2b1d3c4e5f60", "source": null, "correlation_id": "req-abc-123"}"#;
        let e = decode(text.as_bytes()).unwrap();
        assert_eq!(e.event_type(), "user.login");
        assert_eq!(e.data()["user"], "alice");
        assert_eq!(e.timestamp().as_micros(), 1_700_000_000_250_000);
        assert_eq!(e.correlation_id().unwrap().as_str(), "req-abc-123");
        assert_eq!(e.source(), None);
        assert_eq!(
            e.event_id().to_string(),
            "6f1c0b8e-3c1d-4c5e-9a0b-2b1d3c4e5f60"
        );
    }

    #[test]
    fn newer_versions_and_garbage_are_refused() {
        assert!(decode(br#"{"event_id":"6f1c0b8e-3c1d-4c5e-9a0b-2b1d3c4e5f60","event_type":"a.b","timestamp":"2024-01-01T00:00:00Z","seq":1,"data":null,"v":2}"#)
            .unwrap_err()
            .contains("version 2"));
        assert!(decode(b"{\"event_type\":").is_err());
        assert!(decode(b"").is_err());
    }

    #[test]
    fn a_line_that_is_not_utf8_is_refused_with_the_column_and_escapes_still_read() {
        // The line is checked once, as a whole, before it is parsed: a bad
        // byte inside a string is still found, and named by its column.
        let mut bad = br#"{"event_type":"a.b","timestamp":1,"source":"x"}"#.to_vec();
        let at = bad.iter().position(|&b| b == b'x').unwrap();
        bad[at] = 0xff;
        let error = decode(&bad).unwrap_err();
        assert!(error.contains("not UTF-8"), "{error}");
        assert!(error.contains(&format!("column {}", at + 1)), "{error}");
        // A correlation id written with escapes is read unescaped (owned,
        // not borrowed from the line).
        let e = decode(br#"{"event_type":"a.b","timestamp":1,"correlation_id":"req-\u00e9\"1"}"#)
            .unwrap();
        assert_eq!(e.correlation_id().unwrap().as_str(), "req-\u{e9}\"1");
    }

    #[test]
    fn a_payload_kept_as_text_is_written_back_as_it_was_read() {
        let text = r#"{"event_type":"a.b","timestamp":1,"seq":3,"data":{"z": 1, "a": [true, "\u00e9"], "z": 2}}"#;
        let read = decode(text.as_bytes()).unwrap();
        assert_eq!(
            read.data_text(),
            Some(r#"{"z": 1, "a": [true, "\u00e9"], "z": 2}"#)
        );
        let mut out = Vec::new();
        assert!(encode(&read, None, &mut out).is_none());
        let line = String::from_utf8(out).unwrap();
        // Copied, not rebuilt: its order, spacing, escapes and duplicate key.
        assert!(
            line.contains(r#","data":{"z": 1, "a": [true, "\u00e9"], "z": 2},"v":"#),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
        let again = decode(line.trim_end().as_bytes()).unwrap();
        assert_eq!(again, read);
        assert_eq!(again.data(), &json!({"a": [true, "\u{e9}"], "z": 2}));
        // Read (parsed) first: still the text.
        let mut after_read = Vec::new();
        encode(&again, None, &mut after_read);
        assert_eq!(after_read, line.as_bytes());
    }

    #[test]
    fn a_payload_text_with_newlines_is_written_on_one_line() {
        let text = "{\"event_type\":\"a.b\",\"timestamp\":1,\"data\":{\r\n  \"k\": [1,\n 2]\n}}";
        let read = decode(text.as_bytes()).unwrap();
        assert!(read.data_text().unwrap().contains('\n'));
        let mut out = Vec::new();
        encode(&read, None, &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(line.contains(r#","data":{"k":[1,2]},"v":"#), "{line}");
        assert_eq!(line.matches('\n').count(), 1);
        assert!(!line.contains('\r'));
    }

    #[test]
    fn a_replaced_payload_is_written_instead_of_the_text() {
        let read = decode(br#"{"event_type":"a.b","timestamp":1,"data":{"secret":"x"}}"#).unwrap();
        let mut out = Vec::new();
        encode(&read, Some(&json!({"secret": "***"})), &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(line.contains(r#""data":{"secret":"***"}"#), "{line}");
    }

    #[test]
    fn ids_without_escapes_are_borrowed_from_the_line() {
        let text = r#"{"event_id":"0190b6e0-1c2d-7a3b-8c4d-5e6f708192a3","event_type":"a.b","timestamp":1,"correlation_id":"req-1","causation_id":"0190b6e0-1c2d-7a3b-8c4d-5e6f708192a4"}"#;
        let l: LineIn<'_> = serde_json::from_str(text).unwrap();
        for id in [l.event_id, l.correlation_id, l.causation_id] {
            assert!(matches!(id.unwrap().0, std::borrow::Cow::Borrowed(_)));
        }
        let l: LineIn<'_> =
            serde_json::from_str(r#"{"event_type":"a.b","timestamp":1,"correlation_id":"a\"b"}"#)
                .unwrap();
        assert_eq!(
            l.correlation_id.unwrap().0,
            std::borrow::Cow::<str>::Owned("a\"b".into())
        );
    }

    #[test]
    fn a_json_array_of_a_records_fields_is_not_a_record() {
        // Found by the fuzz floor: serde takes a struct from an array of
        // its fields in order, so these read as events before.
        for line in [
            &br#"[null,"a.b",1]"#[..],
            br#"["6f1c0b8e-3c1d-4c5e-9a0b-2b1d3c4e5f60","a.b","2024-01-01T00:00:00Z"]"#,
            br#" [null,"a.b",1,null,null,null,null,null,null,null,0,null,null,null,null]"#,
        ] {
            assert!(decode(line).is_err(), "{}", String::from_utf8_lossy(line));
        }
        assert!(decode(br#" {"event_type":"a.b","timestamp":1}"#).is_ok());
    }
}

#[cfg(test)]
mod read_written_tests {
    use proptest::prelude::*;

    use super::*;

    /// What serde alone reads of `line`.
    fn by_serde(line: &str) -> Result<Event, String> {
        decode_with(line.as_bytes(), |_| None)
    }

    fn both(line: &str) -> (Result<Event, String>, Result<Event, String>) {
        (decode(line.as_bytes()), by_serde(line))
    }

    /// `event`'s line without its newline.
    fn written(event: &Event) -> String {
        let mut line = super::tests::line(event);
        line.pop();
        line
    }

    #[test]
    fn a_line_as_written_is_read_in_one_pass_as_serde_reads_it() {
        let cause = Event::builder("a.b").build().unwrap();
        let e = Event::builder("order.placed")
            .source("shop")
            .correlation_id("checkout-7f3a")
            .causation_id(cause.event_id())
            .run_id("run-1")
            .lane("left")
            .lane_seq(7)
            .seq(42)
            .data(nerve_core::json!({"order_id": 1, "customer": "c-1042", "total": 99.5, "v": 3}))
            .build()
            .unwrap();
        let line = written(&e);
        assert!(read_written(&line).is_some(), "{line}");
        // With its newline too, as a NATS message carries it.
        assert!(read_written(&format!("{line}\n")).is_some(), "{line}");
        assert_eq!(decode(format!("{line}\r\n").as_bytes()).unwrap(), e);
        assert_eq!(decode(line.as_bytes()).unwrap(), e);
        assert_eq!(by_serde(&line).unwrap(), e);
        // Escapes, or a trace context, go to serde.
        let escaped = Event::builder("a.b").source("say \"hi\"").build().unwrap();
        assert!(read_written(&written(&escaped)).is_none());
        assert_eq!(decode(written(&escaped).as_bytes()).unwrap(), escaped);
    }

    #[test]
    fn a_deep_payload_is_read_as_serde_reads_it() {
        let id = EventId::new();
        for levels in 95..=131 {
            let data = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
            let line = format!(
                "{{\"event_id\":\"{id}\",\"event_type\":\"a.b\",\"timestamp\":\"2026-12-06T04:30:17.123456Z\",\"seq\":1,\"data\":{data},\"v\":1}}"
            );
            let (fast, serde) = both(&line);
            assert_eq!(fast, serde, "{levels} levels");
        }
    }

    /// Pieces of JSON an edit puts into a line.
    const PIECES: &[&str] = &[
        "\"",
        "\\",
        ",",
        "}",
        "{",
        "[",
        "]",
        "0",
        "01",
        "-",
        " ",
        "e5",
        ".5",
        ":",
        "null",
        "\u{1}",
        "é",
        ",\"v\":1}",
        ",\"v\":2",
        "\"seq\":",
        ",\"x\":1",
        "18446744073709551616",
        "\"2026-12-06T04:30:17.123456Z\"",
        "Z",
        "\\u0041",
        "\n",
        "\r\n",
        "\t",
        "\u{c}",
    ];

    fn any_event() -> impl Strategy<Value = Event> {
        let text = prop_oneof![
            "[a-z0-9_-]{1,10}",
            "[ -~]{0,8}",
            "\\PC{0,6}",
            Just("a\"b".to_owned()),
            Just("a\\b".to_owned()),
            Just("a\u{1}b".to_owned()),
        ];
        let data = prop_oneof![
            Just(nerve_core::json!(null)),
            any::<i64>().prop_map(|n| nerve_core::json!({"i": n, "v": [n, "x"]})),
            // Floats serde_json reads back exactly.
            (any::<i16>(), 0..4_i32).prop_map(
                |(n, k)| nerve_core::json!([f64::from(n) / f64::from(1 << k), {"é": "\u{7}"}])
            ),
            "\\PC{0,12}".prop_map(|s| nerve_core::json!({ "s": s, ",\"v\":": 1 })),
        ];
        (
            "[a-z]{1,6}\\.[a-z]{1,6}",
            proptest::option::of(text.clone()),
            proptest::option::of("[a-zA-Z0-9_.:-]{1,12}"),
            any::<bool>(),
            proptest::option::of(text.clone()),
            proptest::option::of(text),
            proptest::option::of(any::<u64>()),
            any::<u64>(),
            -62_135_596_800_000_000_i64..253_402_300_799_999_999,
            data,
        )
            .prop_filter_map(
                "a valid event",
                |(ty, source, corr, cause, run, lane, lane_seq, seq, micros, data)| {
                    let mut b = Event::builder(ty)
                        .timestamp(Timestamp::from_micros(micros))
                        .seq(seq)
                        .data(data);
                    if let Some(s) = source {
                        b = b.source(s);
                    }
                    if let Some(c) = corr {
                        b = b.correlation_id(c);
                    }
                    if cause {
                        b = b.causation_id(EventId::new());
                    }
                    if let Some(r) = run {
                        b = b.run_id(r);
                    }
                    if let Some(l) = lane {
                        b = b.lane(l);
                    }
                    if let Some(n) = lane_seq {
                        b = b.lane_seq(n);
                    }
                    b.build().ok()
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every line written reads back as the event written, and as
        /// serde reads it.
        #[test]
        fn written_lines_read_back(event in any_event()) {
            let line = written(&event);
            let (fast, serde) = both(&line);
            prop_assert_eq!(&fast, &serde);
            prop_assert_eq!(fast.unwrap(), event);
        }

        /// A line damaged anywhere reads as serde reads it: the same event,
        /// or the same error.
        #[test]
        fn damaged_lines_read_as_serde_reads_them(
            event in any_event(),
            edits in proptest::collection::vec(
                (any::<prop::sample::Index>(), 0..3_usize, 0..4_usize, prop::sample::select(PIECES)),
                1..3,
            ),
        ) {
            let mut line = written(&event).into_bytes();
            for (at, kind, len, piece) in edits {
                let at = at.index(line.len() + 1);
                let end = (at + len).min(line.len());
                match kind {
                    0 => { line.drain(at..end); }
                    1 => { line.splice(at..at, piece.bytes()); }
                    _ => { line.splice(at..end, piece.bytes()); }
                }
            }
            let Ok(line) = String::from_utf8(line) else { return Ok(()) };
            match both(&line) {
                (Ok(fast), Ok(serde)) => {
                    // A line without an id gets a new one each time it is read.
                    let rest = |e: &Event| written(e)[51..].to_owned();
                    prop_assert_eq!(rest(&fast), rest(&serde), "{}", line);
                    prop_assert!(
                        fast.event_id() == serde.event_id()
                            || !line.contains(&fast.event_id().to_string()),
                        "{}", line
                    );
                }
                (fast, serde) => prop_assert_eq!(fast, serde, "{}", line),
            }
        }
    }
}
