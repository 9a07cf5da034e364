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
