//! An event's payload: its own, shared with whoever handed it in, or the
//! JSON text it arrived in, parsed when first read.

use std::fmt;
use std::sync::Arc;

use once_cell::race::OnceBox;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The owned case is a plain `Value` (the enum uses spare tags of `Value`,
/// so it is no larger), sharing costs one reference count, and a deferred
/// payload one allocation, its text, until something reads it.
#[derive(Clone)]
pub(super) enum Payload {
    Owned(Value),
    Shared(Arc<Value>),
    Deferred(Deferred),
}

/// Well-formed JSON text that `serde_json` parses into a `Value` without
/// error (checked by [`may_refuse`] before one is made), and that `Value`
/// once read. `OnceBox`, not std's `OnceLock`: one word, so the text and
/// its cache fit beside `Value`'s tag, and a payload stays `Value`'s size.
pub(super) struct Deferred {
    text: Box<str>,
    parsed: OnceBox<Value>,
}

impl Clone for Deferred {
    fn clone(&self) -> Self {
        let parsed = OnceBox::new();
        if let Some(v) = self.parsed.get() {
            let _ = parsed.set(Box::new(v.clone()));
        }
        Self {
            text: self.text.clone(),
            parsed,
        }
    }
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
            Ok(Self::Deferred(Deferred {
                text: text.into(),
                parsed: OnceBox::new(),
            }))
        } else {
            serde_json::from_str(text).map(Self::Owned)
        }
    }

    /// A payload for `text`, JSON text not yet checked: deferred when
    /// [`plain`] takes it, otherwise as [`from_raw`](Self::from_raw) after
    /// `serde_json` checked it.
    pub(super) fn from_text(text: &str) -> Result<Self, serde_json::Error> {
        let trimmed = text.trim_ascii();
        if plain(trimmed.as_bytes()) {
            return Ok(Self::Deferred(Deferred {
                text: trimmed.into(),
                parsed: OnceBox::new(),
            }));
        }
        let raw: &serde_json::value::RawValue = serde_json::from_str(text)?;
        Self::from_raw(raw.get())
    }

    pub(super) fn get(&self) -> &Value {
        match self {
            Self::Owned(v) => v,
            Self::Shared(v) => v,
            Self::Deferred(d) => d.parsed.get_or_init(|| Box::new(d.parse())),
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

/// Whether `text` is one JSON array or object that `serde_json` takes, and
/// takes as a `Value`, for sure: checked in one pass over a subset of JSON
/// (no `\u` escape, no exponent, numbers of at most [`MAX_NUMBER`]
/// characters, at most [`MAX_DEPTH`] levels). A no means "not sure", not
/// "not JSON": the caller asks `serde_json`.
///
/// By hand: `serde_json` checks a text only by parsing it (`RawValue`),
/// then [`may_refuse`] walks it again; this is both in one walk.
fn plain(text: &[u8]) -> bool {
    let mut at = Plain { text, i: 0 };
    if !matches!(text.first(), Some(b'{' | b'[')) {
        return false;
    }
    // Bit `d` set: level `d` is an object. 100 levels fit in 128 bits.
    let mut objects = 0_u128;
    let mut depth = 0_u32;
    loop {
        // A value.
        match at.next() {
            Some(b'{') => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return false;
                }
                objects |= 1 << depth;
                if at.peek() == Some(b'}') {
                    at.i += 1;
                    depth -= 1;
                } else {
                    if !at.key() {
                        return false;
                    }
                    continue;
                }
            }
            Some(b'[') => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return false;
                }
                objects &= !(1 << depth);
                if at.peek() == Some(b']') {
                    at.i += 1;
                    depth -= 1;
                } else {
                    continue;
                }
            }
            Some(b'"') => {
                if !at.string() {
                    return false;
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                at.i -= 1;
                if !at.number() {
                    return false;
                }
            }
            Some(b't') => {
                if !at.word(b"rue") {
                    return false;
                }
            }
            Some(b'f') => {
                if !at.word(b"alse") {
                    return false;
                }
            }
            Some(b'n') => {
                if !at.word(b"ull") {
                    return false;
                }
            }
            _ => return false,
        }
        // After a value: closes, then a comma or the end.
        loop {
            if depth == 0 {
                return at.i == text.len();
            }
            let object = objects & (1 << depth) != 0;
            match at.next() {
                Some(b',') => {
                    if object && !at.key() {
                        return false;
                    }
                    break;
                }
                Some(b'}') if object => depth -= 1,
                Some(b']') if !object => depth -= 1,
                _ => return false,
            }
        }
    }
}

/// The cursor of [`plain`]: whitespace is skipped before every token.
struct Plain<'a> {
    text: &'a [u8],
    i: usize,
}

impl Plain<'_> {
    /// The next token's first byte, taken.
    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    /// The next token's first byte, left.
    fn peek(&mut self) -> Option<u8> {
        let b = *self.text.get(self.i)?;
        if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            return Some(b);
        }
        let spaces = self.text[self.i..]
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .count();
        self.i += spaces;
        self.text.get(self.i).copied()
    }

    /// An object's key and its colon.
    fn key(&mut self) -> bool {
        self.next() == Some(b'"') && self.string() && self.next() == Some(b':')
    }

    /// The rest of a string after its opening quote: no control character,
    /// escapes other than `\u`.
    fn string(&mut self) -> bool {
        loop {
            let rest = &self.text[self.i..];
            let Some(n) = rest.iter().position(|&b| STRING_STOPS[usize::from(b)]) else {
                return false;
            };
            self.i += n + 1;
            match rest[n] {
                b'"' => return true,
                b'\\' => match self.text.get(self.i) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                    _ => return false,
                },
                _ => return false,
            }
        }
    }

    /// A number without exponent: `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, at most
    /// [`MAX_NUMBER`] characters.
    fn number(&mut self) -> bool {
        let start = self.i;
        if self.text.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.text.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return false,
        }
        if self.text.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !matches!(self.text.get(self.i), Some(b'0'..=b'9')) {
                return false;
            }
            self.digits();
        }
        !matches!(self.text.get(self.i), Some(b'e' | b'E' | b'0'..=b'9'))
            && self.i - start <= MAX_NUMBER
    }

    fn digits(&mut self) {
        while matches!(self.text.get(self.i), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    /// The rest of `true`, `false` or `null`.
    fn word(&mut self, rest: &[u8]) -> bool {
        let ok = self.text[self.i..].starts_with(rest);
        self.i += rest.len();
        ok
    }
}

/// Where [`Plain::string`] stops: a quote, a backslash, a control character.
static STRING_STOPS: [bool; 256] = {
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

    /// What [`Payload::from_text`] makes of `text` agrees with
    /// `serde_json`: the same `Value`, or an error where it errs; and a
    /// text [`plain`] takes is one `serde_json` takes.
    fn text_agrees(text: &str) {
        let want = serde_json::from_str::<Value>(text).ok();
        if plain(text.as_bytes()) {
            assert!(want.is_some(), "plain, yet serde_json refuses {text:?}");
        }
        let got = Payload::from_text(text).ok().map(|p| p.get().clone());
        assert_eq!(got, want, "{text:?}");
    }

    #[test]
    fn plain_text_is_checked_in_one_pass() {
        for (text, plain_) in [
            (
                r#"{"order_id":7,"customer":"c-1042","total":99.5,"tags":["a","b"]}"#,
                true,
            ),
            (
                " { \"a\" : [ 1 , -0.25 , true , false , null , { } , [ ] ] } ",
                false,
            ),
            (
                "{\"a\":[1,-0.25,true,false,null,{},[]],\"b\\n\\\"\":\"\\/\"}",
                true,
            ),
            ("[]", true),
            ("{}", true),
            ("[1e5]", false),
            ("[\"\\u00e9\"]", false),
            ("[01]", false),
            ("[1.]", false),
            ("[-]", false),
            ("[1,]", false),
            ("{\"a\":1,}", false),
            ("{\"a\" 1}", false),
            ("[tru]", false),
            ("[true1]", false),
            ("[\"a\tb\"]", false),
            ("[1] [2]", false),
            ("[[1]", false),
            ("[1]]", false),
            ("{\"a\":1]", false),
            ("7", false),
        ] {
            assert_eq!(plain(text.as_bytes()), plain_, "{text:?}");
            text_agrees(text);
        }
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(plain(deep(MAX_DEPTH as usize).as_bytes()));
        assert!(!plain(deep(MAX_DEPTH as usize + 1).as_bytes()));
        assert!(plain(format!("[{}]", "9".repeat(MAX_NUMBER)).as_bytes()));
        assert!(!plain(
            format!("[{}]", "9".repeat(MAX_NUMBER + 1)).as_bytes()
        ));
        for text in [
            deep(129),
            format!("[1{}]", "0".repeat(400)),
            "[1e400]".into(),
        ] {
            text_agrees(&text);
        }
    }

    /// JSON as writers write it: compact or spaced, strings with any
    /// character (escaped by `serde_json`), numbers of every kind.
    fn written_json() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            "[\\x00-\\x7f]{0,6}".prop_map(Value::from),
        ];
        let tree = leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                proptest::collection::btree_map("[a-z\"\\\\]{0,4}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        (tree, any::<bool>()).prop_map(|(v, pretty)| {
            if pretty {
                serde_json::to_string_pretty(&v)
            } else {
                serde_json::to_string(&v)
            }
            .expect("a Value writes")
        })
    }

    proptest! {
        #[test]
        fn text_agrees_with_serde_json(text in written_json()) {
            text_agrees(&text);
            text_agrees(&format!("[{text}]"));
        }

        #[test]
        fn damaged_text_agrees_with_serde_json(
            text in written_json(),
            at in any::<prop::sample::Index>(),
            with in prop::sample::select(vec!["", "\"", "\\", ",", ":", "[", "]", "{", "}", "0", "-", ".", "e", " ", "\n", "\u{1}", "t", "\\u"]),
            cut in 0_usize..3,
        ) {
            let mut chars: Vec<char> = text.chars().collect();
            let at = at.index(chars.len() + 1);
            let cut = cut.min(chars.len() - at.min(chars.len()));
            chars.splice(at..at + cut, with.chars());
            text_agrees(&chars.into_iter().collect::<String>());
        }

        #[test]
        fn a_payload_agrees_with_serde_json(text in risky_json()) {
            prop_assert!(made(&text).is_some(), "well-formed: {text:?}");
            agrees(&text);
            text_agrees(&text);
            agrees(&format!("{{\"k\": [{text}]}}"));
        }

        #[test]
        fn an_arbitrary_text_agrees_with_serde_json(text in "\\PC{0,64}") {
            agrees(&text);
            agrees(&format!("[{text}]"));
            text_agrees(&text);
            text_agrees(&format!("[{text}]"));
        }
    }
}
