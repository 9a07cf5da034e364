//! The invariants of the redactor, the pattern parser and matcher, and
//! event-name validation, with the naive references they are held to;
//! shared by the fuzz floor in `cargo test` (`tests/fuzz/main.rs`) and the
//! cargo-fuzz targets `redact`, `pattern` and `name` (`fuzz/fuzz_targets/`,
//! which include this file by path), so that both check the same thing.

use nerve_core::name::{MAX_NAME_LEN, check_event_type};
use nerve_core::redact::Redactor;
use nerve_core::{Pattern, Value};

/// The redactor never panics, is idempotent, keeps JSON text JSON, and a
/// redacted value needs no second pass.
pub(crate) fn redact(redactor: &Redactor, text: &str) {
    let once = redactor.redact_str(text).into_owned();
    assert_eq!(
        redactor.redact_str(&once),
        once,
        "not idempotent on {text:?}"
    );
    // JSON text in gives JSON text out.
    let json = serde_json::to_string(&Value::from(text)).unwrap();
    let redacted = redactor.redact_str(&json);
    assert!(
        serde_json::from_str::<Value>(&redacted).is_ok(),
        "{json} became {redacted}"
    );
    let mut value = serde_json::json!({"note": text, "password": "x"});
    redactor.redact_value(&mut value);
    let mut again = value.clone();
    assert_eq!(redactor.redact_value(&mut again), 0, "on {text:?}");
}

/// Whether the naive reading of the pattern rules accepts `p`.
fn reference_parse(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= MAX_NAME_LEN
        && !p.chars().any(|c| c.is_whitespace() || c.is_control())
        && p.split('.')
            .all(|s| !s.is_empty() && (s == "*" || !s.contains('*')))
}

/// The matching rules read naively: a literal matches itself, `*` one
/// non-empty segment, and a final `*` one or more.
fn reference_match(pattern: &[&str], name: &[&str]) -> bool {
    match (pattern, name) {
        ([], []) => true,
        (["*"], rest) => !rest.is_empty() && rest.iter().all(|s| !s.is_empty()),
        (["*", p @ ..], [n, rest @ ..]) => !n.is_empty() && reference_match(p, rest),
        ([lit, p @ ..], [n, rest @ ..]) => lit == n && reference_match(p, rest),
        _ => false,
    }
}

/// `Pattern::parse` accepts `raw` exactly when the naive rules do, and the
/// pattern matches each of `names` that is a valid event name exactly when
/// the naive matcher does (events carry valid names only: they are checked
/// when an event is built).
pub(crate) fn pattern<'a>(raw: &str, names: impl IntoIterator<Item = &'a str>) {
    let parsed = Pattern::parse(raw);
    assert_eq!(parsed.is_ok(), reference_parse(raw), "parse {raw:?}");
    let Ok(pattern) = parsed else { return };
    let segments: Vec<&str> = raw.split('.').collect();
    for event_type in names {
        if check_event_type(event_type).is_err() {
            continue;
        }
        let parts: Vec<&str> = event_type.split('.').collect();
        assert_eq!(
            pattern.matches(event_type),
            reference_match(&segments, &parts),
            "{raw:?} on {event_type:?}"
        );
    }
}

/// [`pattern`] on raw bytes, as the cargo-fuzz target reads them: the first
/// line is the pattern, the other lines the names (lossy UTF-8).
pub(crate) fn pattern_bytes(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split('\n');
    let raw = lines.next().unwrap_or_default();
    pattern(raw, lines);
}

/// Event-name validation agrees with a naive reading of its rules.
pub(crate) fn name(n: &str) {
    let expected = !n.is_empty()
        && n.len() <= MAX_NAME_LEN
        && !n.contains('*')
        && !n.chars().any(|c| c.is_whitespace() || c.is_control())
        && n.split('.').all(|s| !s.is_empty());
    assert_eq!(check_event_type(n).is_ok(), expected, "{n:?}");
}
