//! An event's payload: its own, shared with whoever handed it in, or the
//! JSON text it arrived in, parsed when first read.

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The owned case is a plain `Value` (the enum uses spare tags of `Value`,
/// so it is no larger), sharing costs one reference count, and a deferred
/// payload one allocation for its text until something reads it.
#[derive(Clone)]
pub(super) enum Payload {
    Owned(Value),
    Shared(Arc<Value>),
    Deferred(Box<Deferred>),
}

/// Well-formed JSON text that `serde_json` parses into a `Value` without
/// error (checked by [`may_refuse`] before one is made).
#[derive(Clone)]
pub(super) struct Deferred {
    text: Box<str>,
    parsed: OnceLock<Value>,
}

/// Nesting deeper than this is parsed at once: `serde_json` refuses more
/// than 128 levels.
const MAX_DEPTH: u32 = 100;

/// A number token longer than this is parsed at once: an integer of over
/// 308 digits is out of `f64`'s range, and `serde_json` refuses it.
const MAX_NUMBER: usize = 300;

impl Payload {
    /// A payload for `text`, well-formed JSON: deferred when it is an
    /// array or an object that a `Value` takes for sure, parsed now
    /// otherwise (a scalar is cheaper parsed than deferred).
    pub(super) fn from_raw(text: &str) -> Result<Self, serde_json::Error> {
        let bytes = text.trim_ascii_start().as_bytes();
        if matches!(bytes.first(), Some(b'{' | b'[')) && !may_refuse(bytes) {
            Ok(Self::Deferred(Box::new(Deferred {
                text: text.into(),
                parsed: OnceLock::new(),
            })))
        } else {
            serde_json::from_str(text).map(Self::Owned)
        }
    }

    pub(super) fn get(&self) -> &Value {
        match self {
            Self::Owned(v) => v,
            Self::Shared(v) => v,
            Self::Deferred(d) => d.parsed.get_or_init(|| d.parse()),
        }
    }

    /// The JSON text a deferred payload was made from, parsed or not.
    pub(super) fn text(&self) -> Option<&str> {
        match self {
            Self::Deferred(d) => Some(&d.text),
            _ => None,
        }
    }
}

impl Deferred {
    fn parse(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            // `may_refuse` said it would parse. Should it ever be wrong, the
            // text is kept, as a string, rather than lost.
            debug_assert!(false, "a deferred payload did not parse: {e}");
            Value::String(self.text.to_string())
        })
    }
}

/// Whether `serde_json` could refuse `text`, well-formed JSON, as a
/// `Value`: a number with an exponent or longer than [`MAX_NUMBER`] (out of
/// `f64`'s range), a `\uD800` to `\uDFFF` escape (a UTF-16 surrogate, which
/// it refuses unpaired), or nesting deeper than [`MAX_DEPTH`]. Errs on the
/// side of yes: a yes only means the text is parsed at once.
///
/// By hand: no crate answers "would this parse" without parsing.
fn may_refuse(text: &[u8]) -> bool {
    let mut depth = 0_u32;
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b'"' => {
                i += 1;
                while let Some(&c) = text.get(i) {
                    match c {
                        b'"' => break,
                        b'\\' => {
                            if text.get(i + 1) == Some(&b'u')
                                && matches!(text.get(i + 2), Some(b'd' | b'D'))
                                && matches!(
                                    text.get(i + 3),
                                    Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
                                )
                            {
                                return true;
                            }
                            i += 2;
                        }
                        _ => i += 1,
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while let Some(&c) = text.get(i) {
                    match c {
                        b'e' | b'E' => return true,
                        b'0'..=b'9' | b'.' | b'-' | b'+' => i += 1,
                        _ => break,
                    }
                }
                if i - start > MAX_NUMBER {
                    return true;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    false
}

impl Default for Payload {
    fn default() -> Self {
        Self::Owned(Value::Null)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.get(), f)
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Self::Owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    /// What a payload made from `text` holds, and whether it was deferred;
    /// `None` when `RawValue` refuses the text (not JSON).
    fn made(text: &str) -> Option<(Result<Value, String>, bool)> {
        let raw: &RawValue = serde_json::from_str(text).ok()?;
        Some(match Payload::from_raw(raw.get()) {
            Ok(p) => {
                let deferred = p.text().is_some();
                (Ok(p.get().clone()), deferred)
            }
            Err(e) => (Err(e.to_string()), false),
        })
    }

    /// Whatever `RawValue` takes, a payload holds what `serde_json` parses
    /// or refuses with its error, deferred or not.
    fn agrees(text: &str) {
        let Some((got, _)) = made(text) else { return };
        let want = serde_json::from_str::<Value>(text).map_err(|e| e.to_string());
        assert_eq!(got, want, "{text:?}");
    }

    #[test]
    fn what_a_value_refuses_is_refused_at_once() {
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        let long = format!("[1{}]", "0".repeat(400));
        for text in [
            "[1e400]",
            "{\"a\": -1E400}",
            &long,
            "[\"\\ud800\"]",
            "{\"a\": \"\\uDC00x\"}",
            &deep,
        ] {
            let (got, deferred) = made(text).expect("well-formed JSON");
            assert!(got.is_err(), "{text:?} refused");
            assert!(!deferred);
            agrees(text);
        }
    }

    #[test]
    fn an_object_or_array_is_deferred_and_parsed_when_read() {
        let mid = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH as usize),
            "]".repeat(MAX_DEPTH as usize)
        );
        for text in [
            r#"{"order_id": 7, "customer": "c-1042", "total": 99.5, "tags": ["a", "b"]}"#,
            r#"[1, -2, 3.25, true, false, null, "e\"E\\u00e9"]"#,
            " {\"true\": \"1e400\"} ",
            r#"["\ud834\udd1e is not refused, only parsed at once"]"#,
            &mid,
        ] {
            let (got, deferred) = made(text).unwrap();
            assert_eq!(got.unwrap(), serde_json::from_str::<Value>(text).unwrap());
            assert_eq!(deferred, !text.contains("\\ud8"), "{text:?}");
        }
    }

    #[test]
    fn a_scalar_is_parsed_at_once() {
        for text in ["null", "7", "\"x\"", "true", "1e5"] {
            let (got, deferred) = made(text).unwrap();
            assert_eq!(got.unwrap(), serde_json::from_str::<Value>(text).unwrap());
            assert!(!deferred);
        }
    }

    /// Well-formed JSON whose leaves touch every rule: numbers with and
    /// without exponents, long digit runs, surrogate escapes, and nesting
    /// on either side of `serde_json`'s limit.
    fn risky_json() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("\"k\"".to_owned()),
            Just("\"\\ud800\"".to_owned()),
            Just("\"\\uDBFF\\uDFFF\"".to_owned()),
            Just("\"\\u00e9\\\"e\\\\\"".to_owned()),
            Just("-0.5".to_owned()),
            Just("1e308".to_owned()),
            Just("2E309".to_owned()),
            Just("-1e-400".to_owned()),
            (1_usize..400).prop_map(|n| "9".repeat(n)),
            (1_usize..400).prop_map(|n| format!("0.{}", "1".repeat(n))),
        ];
        let tree = leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec(inner, 0..6).prop_map(|v| {
                    let fields: Vec<String> = v
                        .iter()
                        .enumerate()
                        .map(|(i, x)| format!("\"f{i}\": {x}"))
                        .collect();
                    format!("{{{}}}", fields.join(", "))
                }),
            ]
        });
        (tree, 0_usize..140).prop_map(|(t, n)| format!("{}{t}{}", "[".repeat(n), "]".repeat(n)))
    }

    proptest! {
        #[test]
        fn a_payload_agrees_with_serde_json(text in risky_json()) {
            prop_assert!(made(&text).is_some(), "well-formed: {text:?}");
            agrees(&text);
            agrees(&format!("{{\"k\": [{text}]}}"));
        }

        #[test]
        fn an_arbitrary_text_agrees_with_serde_json(text in "\\PC{0,64}") {
            agrees(&text);
            agrees(&format!("[{text}]"));
        }
    }
}
