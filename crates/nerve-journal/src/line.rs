//! The journal's line format for other transports: the encoder and decoder
//! the journal itself uses, so that a bridge (the NATS bridge sends one line
//! per message) writes and reads exactly what a journal file holds. One
//! format everywhere: a line taken off the wire can be appended to a journal
//! and `nerve verify` reads it as if the journal had written it.
//!
//! ```
//! let event = nerve::Event::builder("order.placed").data(nerve::json!({"id": 7})).build()?;
//! let mut line = Vec::new();
//! assert!(nerve::journal::line::encode(&event, &mut line).is_none());
//! assert!(line.ends_with(b"\n"));
//! let back = nerve::journal::line::decode(&line)?;
//! assert_eq!(back.event_id(), event.event_id());
//! assert_eq!(back.data(), event.data());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use nerve_core::Event;

/// Appends `event` to `out` as one journal line, newline included.
///
/// Returns the reason (`"too_deep"`, `"too_long"`, `"serialize"`) when the payload could
/// not be written as it is and was replaced by an error marker object
/// (`{"$nerve_error":reason,"message":...}`, see
/// [`ERROR_MARKER_KEY`](crate::ERROR_MARKER_KEY)); the line is written
/// either way.
pub fn encode(event: &Event, out: &mut Vec<u8>) -> Option<&'static str> {
    crate::format::encode(event, None, out).map(|r| r.reason)
}

/// Appends `event` to `out` as one journal line, as a journal whose
/// redaction hook is `redact` writes it (`JournalBuilder::redact_with`):
/// the payload, `source` and correlation id come from what `redact`
/// returns, every other field (ids, type, time, run, lane, `seq`) from
/// `event`, so a hook cannot make a line lie about which event it carries.
/// If `redact` panics, the payload is replaced by an error marker
/// (`{"$nerve_error":"redact","message":"redaction panicked: ..."}`), never
/// written unredacted.
///
/// ```
/// use nerve::{Event, json};
/// let event = Event::builder("user.login").data(json!({"email": "ada@example.com"})).build()?;
/// let hide = |e: &Event| {
///     Event::builder(e.event_type()).data(json!({"email": "[redacted]"})).build().unwrap()
/// };
/// let mut line = Vec::new();
/// let redacted = nerve::journal::line::encode_redacted(&event, &hide, &mut line);
/// assert!(redacted.replaced.is_none());
/// let back = nerve::journal::line::decode(&line)?;
/// assert_eq!(back.event_id(), event.event_id());
/// assert_eq!(back.data(), &json!({"email": "[redacted]"}));
///
/// let broken = |_: &Event| -> Event { panic!("no rule for this") };
/// let mut line = Vec::new();
/// let redacted = nerve::journal::line::encode_redacted(&event, &broken, &mut line);
/// assert_eq!(redacted.replaced, Some("redact"));
/// assert!(!String::from_utf8(line)?.contains("ada@"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode_redacted(
    event: &Event,
    redact: &(dyn Fn(&Event) -> Event + '_),
    out: &mut Vec<u8>,
) -> Redacted {
    let (event, replaced) = crate::format::encode_through(event, redact, out);
    let (replaced, message) = match replaced {
        Some(r) => (Some(r.reason), Some(r.message)),
        None => (None, None),
    };
    Redacted {
        event,
        replaced,
        message,
    }
}

/// What [`encode_redacted`] wrote.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Redacted {
    /// What the hook returned, whose payload, `source` and correlation id
    /// the line holds; `None` when the hook panicked.
    pub event: Option<Event>,
    /// Why the line's payload is an error marker instead of the hook's:
    /// `"redact"` when the hook panicked, else as [`encode`] says.
    pub replaced: Option<&'static str>,
    /// What happened, when `replaced` is set.
    pub message: Option<String>,
}

/// Parses one line (with or without its newline) back into an event, every
/// field as written: id, type, time, source, correlation and causation ids,
/// run, lane, `seq`, trace context and payload.
///
/// An array or object payload is kept as its text and parsed the first
/// time [`Event::data`] reads it (see
/// [`EventBuilder::data_raw`](nerve_core::EventBuilder::data_raw)), so an
/// event that is only passed on never pays for its `Value`; a payload a
/// `Value` could refuse is parsed here, and refused here.
///
/// # Errors
///
/// A [`DecodeLineError`] when the line is not a record of this format (not
/// a JSON object, a bad id, a newer format version, an invalid name).
pub fn decode(line: &[u8]) -> Result<Event, DecodeLineError> {
    crate::format::decode(line).map_err(DecodeLineError)
}

/// A line that is not a record of the journal's format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a journal line: {0}")]
pub struct DecodeLineError(String);
