//! Distributed-trace context carried by events: the W3C [Trace Context]
//! `traceparent` and `tracestate` of the span an event was emitted in.
//!
//! The bus itself never creates trace context; an instrument (the
//! `nerve-otel` bridge) records it on an event at emit time, handlers'
//! spans take it as their parent even when they run later on another thread,
//! the journal writes it (key `trace_context`) and bridges carry it as the
//! `traceparent` / `tracestate` headers.
//!
//! ```
//! use nerve::trace::TraceContext;
//! let tc = TraceContext::parse(
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
//!     Some("congo=t61rcWkgMzE"),
//! )?;
//! assert!(tc.is_sampled());
//! assert_eq!(tc.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert_eq!(tc.traceparent(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
//! # Ok::<(), nerve::trace::TraceContextError>(())
//! ```
//!
//! [Trace Context]: https://www.w3.org/TR/trace-context/

use std::fmt;

use serde::{Deserialize, Serialize};

/// The W3C trace context of the span an event was emitted in.
///
/// Serialized as `{"traceparent": "00-…-…-01", "tracestate": "k=v"}`, with
/// `tracestate` omitted when empty: the two HTTP header values, unchanged.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
    state: Option<Box<str>>,
}

/// Why a `traceparent` header value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent {value:?}: {reason}")]
pub struct TraceContextError {
    value: String,
    reason: &'static str,
}

impl TraceContextError {
    fn new(value: &str, reason: &'static str) -> Self {
        Self {
            // Bounded: the value may come from an untrusted header.
            value: value.chars().take(80).collect(),
            reason,
        }
    }
}

/// The W3C sampled flag.
const SAMPLED: u8 = 0x01;

impl TraceContext {
    /// A trace context from its parts.
    ///
    /// # Errors
    ///
    /// A [`TraceContextError`] when the trace id or the span id is all
    /// zeros, which W3C Trace Context defines as invalid.
    pub fn new(
        trace_id: [u8; 16],
        span_id: [u8; 8],
        flags: u8,
        tracestate: Option<&str>,
    ) -> Result<Self, TraceContextError> {
        if trace_id == [0; 16] {
            return Err(TraceContextError::new("", "the trace id is all zeros"));
        }
        if span_id == [0; 8] {
            return Err(TraceContextError::new("", "the span id is all zeros"));
        }
        Ok(Self {
            trace_id,
            span_id,
            flags,
            state: tracestate.filter(|s| !s.is_empty()).map(Box::from),
        })
    }

    /// Parses the values of the `traceparent` and `tracestate` headers.
    ///
    /// Version `00` is parsed strictly; a higher version is parsed by its
    /// first four fields, as the specification asks, and `ff` is refused.
    ///
    /// # Errors
    ///
    /// A [`TraceContextError`] naming what is wrong with `traceparent`.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Result<Self, TraceContextError> {
        let err = |reason| TraceContextError::new(traceparent, reason);
        let v = traceparent.trim().as_bytes();
        if v.len() < 55 {
            return Err(err("shorter than 55 characters"));
        }
        if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return Err(err("fields are not separated by '-'"));
        }
        let version = hex_byte(&v[0..2]).ok_or_else(|| err("the version is not hex"))?;
        if version == 0xff {
            return Err(err("version ff is forbidden"));
        }
        if version == 0 && v.len() != 55 {
            return Err(err("version 00 is exactly 55 characters"));
        }
        if version != 0 && v.len() > 55 && v[55] != b'-' {
            return Err(err("fields are not separated by '-'"));
        }
        let mut trace_id = [0; 16];
        for (i, b) in trace_id.iter_mut().enumerate() {
            *b =
                hex_byte(&v[3 + 2 * i..5 + 2 * i]).ok_or_else(|| err("the trace id is not hex"))?;
        }
        let mut span_id = [0; 8];
        for (i, b) in span_id.iter_mut().enumerate() {
            *b = hex_byte(&v[36 + 2 * i..38 + 2 * i])
                .ok_or_else(|| err("the span id is not hex"))?;
        }
        let flags = hex_byte(&v[53..55]).ok_or_else(|| err("the flags are not hex"))?;
        if trace_id == [0; 16] {
            return Err(err("the trace id is all zeros"));
        }
        if span_id == [0; 8] {
            return Err(err("the span id is all zeros"));
        }
        Ok(Self {
            trace_id,
            span_id,
            flags,
            state: tracestate
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(Box::from),
        })
    }

    /// The 16-byte trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The 8-byte id of the span the event was emitted in.
    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the trace is sampled (recorded) upstream.
    pub fn is_sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The `tracestate` header value, when there is one.
    pub fn tracestate(&self) -> Option<&str> {
        self.state.as_deref()
    }

    /// The trace id as 32 lowercase hex characters.
    pub fn trace_id_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        push_hex(&mut s, &self.trace_id);
        s
    }

    /// The `traceparent` header value (version `00`).
    pub fn traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        push_hex(&mut s, &self.trace_id);
        s.push('-');
        push_hex(&mut s, &self.span_id);
        s.push('-');
        push_hex(&mut s, &[self.flags]);
        s
    }
}

// Hex by hand: twenty lines, where a crate would be a dependency of every
// nerve user for two fixed-width fields.
fn hex_byte(pair: &[u8]) -> Option<u8> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            // W3C asks for lowercase; uppercase is accepted when read.
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    Some(nibble(pair[0])? << 4 | nibble(pair[1])?)
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("traceparent", &self.traceparent())
            .field("tracestate", &self.state)
            .finish()
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    traceparent: std::borrow::Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    tracestate: Option<std::borrow::Cow<'a, str>>,
}

impl Serialize for TraceContext {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Wire {
            traceparent: self.traceparent().into(),
            tracestate: self.state.as_deref().map(Into::into),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TraceContext {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        Self::parse(&wire.traceparent, wire.tracestate.as_deref()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_specification_example() {
        let tc = TraceContext::parse(EXAMPLE, None).unwrap();
        assert_eq!(tc.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            tc.span_id(),
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert!(tc.is_sampled());
        assert_eq!(tc.tracestate(), None);
        assert_eq!(tc.traceparent(), EXAMPLE);
    }

    #[test]
    fn refuses_what_the_specification_refuses() {
        for (bad, why) in [
            ("", "shorter"),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "shorter",
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "separated",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "forbidden",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "trace id is all zeros",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "span id is all zeros",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                "trace id is not hex",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                "exactly 55",
            ),
        ] {
            let e = TraceContext::parse(bad, None).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn future_versions_keep_their_first_four_fields() {
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        let tc = TraceContext::parse(future, None).unwrap();
        assert_eq!(tc.traceparent(), EXAMPLE);
    }

    #[test]
    fn serializes_as_the_two_header_values() {
        let tc = TraceContext::parse(EXAMPLE, Some("congo=t61rcWkgMzE")).unwrap();
        let json = serde_json::to_string(&tc).unwrap();
        assert_eq!(
            json,
            format!(r#"{{"traceparent":"{EXAMPLE}","tracestate":"congo=t61rcWkgMzE"}}"#)
        );
        assert_eq!(serde_json::from_str::<TraceContext>(&json).unwrap(), tc);
        let bare = TraceContext::parse(EXAMPLE, Some("")).unwrap();
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            format!(r#"{{"traceparent":"{EXAMPLE}"}}"#)
        );
    }

    proptest! {
        #[test]
        fn round_trips(trace in any::<[u8; 16]>(), span in any::<[u8; 8]>(), flags in any::<u8>()) {
            prop_assume!(trace != [0; 16] && span != [0; 8]);
            let tc = TraceContext::new(trace, span, flags, None).unwrap();
            let back = TraceContext::parse(&tc.traceparent(), None).unwrap();
            prop_assert_eq!(back, tc);
        }
    }
}
