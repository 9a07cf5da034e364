//! Alert rules: which events alert, under which condition, with which key
//! and message.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use nerve_core::{Event, Value};

/// The dedup window of a rule unless set: the same alert key is sent at
/// most once in this long.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

/// A test on an event: only events that pass it alert.
///
/// ```
/// use nerve::consumers::alert::Condition;
/// use nerve::Event;
///
/// let low = Condition::below("success_rate", 0.6);
/// let e = Event::builder("validation.warning")
///     .data(nerve::json!({"success_rate": 0.55}))
///     .build()?;
/// assert!(low.matches(&e));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Condition(Arc<dyn Fn(&Event) -> bool + Send + Sync>);

impl Condition {
    /// Any test.
    pub fn new(test: impl Fn(&Event) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(test))
    }

    /// The number at `path` (dot-separated keys in the event's data) is
    /// below `limit`; false when it is missing or not a number.
    pub fn below(path: impl Into<String>, limit: f64) -> Self {
        let path = path.into();
        Self::new(move |e| {
            lookup(e.data(), &path)
                .and_then(Value::as_f64)
                .is_some_and(|v| v < limit)
        })
    }

    /// The number at `path` is above `limit`; false when it is missing or
    /// not a number.
    pub fn above(path: impl Into<String>, limit: f64) -> Self {
        let path = path.into();
        Self::new(move |e| {
            lookup(e.data(), &path)
                .and_then(Value::as_f64)
                .is_some_and(|v| v > limit)
        })
    }

    /// The value at `path` equals `value`.
    pub fn equals(path: impl Into<String>, value: impl Into<Value>) -> Self {
        let path = path.into();
        let value = value.into();
        Self::new(move |e| lookup(e.data(), &path) == Some(&value))
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        (self.0)(event)
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Condition(..)")
    }
}

/// The value at a dot-separated path in `value`.
pub(crate) fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|k| !k.is_empty())
        .try_fold(value, |v, key| match v {
            Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => v.get(key),
        })
}

/// One alert rule: a pattern, an optional condition, the key that
/// deduplicates it, its message and its window.
///
/// Templates (`key`, `message`) replace `{name}` with a field of the alert:
/// `{rule}`, `{event_type}`, `{run_id}`, `{event_id}`, or `{data.PATH}` for a
/// value in the event's data; `{data.PATH:%}` prints a rate as a rounded
/// percentage (`0.55` → `55%`). Unknown fields are left as written.
///
/// | option    | default |
/// |-----------|---------|
/// | condition | none: every matching event alerts |
/// | key       | `{rule}:{run_id}`: one alert per rule and run per window |
/// | message   | `{rule}: {event_type}` |
/// | window    | [`DEFAULT_WINDOW`] (5 minutes) |
///
/// ```
/// use std::time::Duration;
/// use nerve::consumers::alert::{AlertRule, Condition};
///
/// let rule = AlertRule::new("low-success", "validation.warning")
///     .when(Condition::below("success_rate", 0.6))
///     .message("Success rate dropped to {data.success_rate:%} in {run_id}")
///     .window(Duration::from_secs(3600));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct AlertRule {
    pub(crate) name: String,
    pub(crate) pattern: String,
    pub(crate) condition: Option<Condition>,
    pub(crate) key: String,
    pub(crate) message: String,
    pub(crate) window: Duration,
}

impl AlertRule {
    /// A rule named `name` for events matching `pattern`.
    pub fn new(name: impl Into<String>, pattern: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            pattern: pattern.into(),
            condition: None,
            key: "{rule}:{run_id}".to_owned(),
            message: "{rule}: {event_type}".to_owned(),
            window: DEFAULT_WINDOW,
        }
    }

    /// Alerts only for events passing `condition`.
    pub fn when(mut self, condition: Condition) -> Self {
        self.condition = Some(condition);
        self
    }

    /// The dedup key template (default `{rule}:{run_id}`).
    pub fn key(mut self, template: impl Into<String>) -> Self {
        self.key = template.into();
        self
    }

    /// The message template (default `{rule}: {event_type}`).
    pub fn message(mut self, template: impl Into<String>) -> Self {
        self.message = template.into();
        self
    }

    /// The same key alerts at most once in `window`.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Fills a template from the rule and the event (see [`AlertRule`]).
pub(crate) fn render(template: &str, rule: &str, event: &Event) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let field = &after[..close];
        match field_value(field, rule, event) {
            Some(text) => out.push_str(&text),
            None => out.push_str(&rest[open..=open + close + 1]),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

fn field_value(field: &str, rule: &str, event: &Event) -> Option<String> {
    let (name, percent) = match field.strip_suffix(":%") {
        Some(name) => (name, true),
        None => (field, false),
    };
    let text = match name {
        "rule" => rule.to_owned(),
        "event_type" => event.event_type().to_owned(),
        "event_id" => event.event_id().to_string(),
        "run_id" => crate::run::run_of(event).unwrap_or("").to_owned(),
        _ => {
            let value = lookup(event.data(), name.strip_prefix("data.")?)?;
            match (value, percent) {
                (Value::Number(n), true) => format!("{:.0}%", n.as_f64()? * 100.0),
                (Value::String(s), _) => s.clone(),
                (other, _) => other.to_string(),
            }
        }
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(template: &str, expected: &str) {
        let e = Event::builder("validation.warning")
            .data(json!({"run_id": "r1", "success_rate": 0.554, "n": {"list": [1, "two"]}}))
            .build()
            .unwrap();
        assert_eq!(render(template, "low", &e), expected, "{template}");
    }

    #[test]
    fn templates_fill_known_fields_and_keep_the_rest() {
        check("{rule}:{run_id}", "low:r1");
        check("{event_type}", "validation.warning");
        check("rate {data.success_rate:%}", "rate 55%");
        check("{data.success_rate}", "0.554");
        check("{data.n.list.1} {data.n.list.0}", "two 1");
        check("{nope} {data.missing}", "{nope} {data.missing}");
        check("open { brace", "open { brace");
        check("", "");
    }

    #[test]
    fn conditions_test_numbers_and_values() {
        let e = Event::builder("a.b")
            .data(json!({"rate": 0.5, "status": "failed"}))
            .build()
            .unwrap();
        assert!(Condition::below("rate", 0.6).matches(&e));
        assert!(!Condition::above("rate", 0.6).matches(&e));
        assert!(!Condition::below("missing", 0.6).matches(&e));
        assert!(Condition::equals("status", "failed").matches(&e));
        assert!(Condition::new(|e| e.event_type() == "a.b").matches(&e));
    }
}
