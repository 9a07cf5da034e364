//! Subscription patterns: which event types a subscriber receives.
//!
//! A pattern is a dot-separated list of segments. A literal segment matches
//! itself; a `*` segment matches exactly one segment, except as the **last**
//! segment, where it matches one or more:
//!
//! | pattern      | matches                                 | does not match       |
//! |--------------|-----------------------------------------|----------------------|
//! | `user.login` | `user.login`                            | `user.logout`        |
//! | `chat.*`     | `chat.message`, `chat.message.sent`     | `chat`               |
//! | `*`          | every event type                        |                      |
//! | `*.failed`   | `task.failed`                           | `task.run.failed`    |
//! | `a.*.c`      | `a.x.c`                                 | `a.c`, `a.x.y.c`     |

use std::fmt;
use std::str::FromStr;

/// A parsed, validated subscription pattern.
///
/// A `Pattern` that exists is valid: it is only made by [`Pattern::parse`].
///
/// ```
/// use nerve::Pattern;
/// let p = Pattern::parse("chat.*")?;
/// assert!(p.matches("chat.message.sent"));
/// assert!(!p.matches("chat"));
/// assert!(Pattern::parse("ch*t").is_err());
/// # Ok::<(), nerve::PatternError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    raw: Box<str>,
    segments: Box<[Segment]>,
}

/// One segment of a [`Pattern`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches exactly this text.
    Literal(Box<str>),
    /// `*`: one segment, or one or more when it is the last segment.
    Wildcard,
}

/// A pattern could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pattern: String,
    reason: PatternErrorReason,
}

impl PatternError {
    /// The text that failed to parse.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &PatternErrorReason {
        &self.reason
    }
}

/// What is wrong with a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatternErrorReason {
    /// The pattern is empty.
    Empty,
    /// The pattern is longer than [`MAX_NAME_LEN`](crate::name::MAX_NAME_LEN).
    TooLong,
    /// Segment number `index` (from 0) is empty, as in `chat.` or `a..b`.
    EmptySegment {
        /// Position of the segment, from 0.
        index: usize,
    },
    /// A `*` shares its segment with other characters, as in `ch*t`.
    PartialWildcard {
        /// Position of the segment, from 0.
        index: usize,
    },
    /// The pattern contains whitespace or a control character.
    Whitespace,
}

/// A position counted from 0, said as people count: 1st, 2nd, 3rd, 4th, ...
struct Ordinal(usize);

impl fmt::Display for Ordinal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0 + 1;
        let suffix = match (n % 10, n % 100) {
            (_, 11..=13) => "th",
            (1, _) => "st",
            (2, _) => "nd",
            (3, _) => "rd",
            _ => "th",
        };
        write!(f, "{n}{suffix}")
    }
}

impl fmt::Display for PatternErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("pattern is empty"),
            Self::TooLong => write!(
                f,
                "pattern is longer than {} bytes",
                crate::name::MAX_NAME_LEN
            ),
            // Said to people, who count segments from 1: `a..b` has its
            // 2nd segment empty (the `index` fields count from 0).
            Self::EmptySegment { index } => write!(f, "the {} segment is empty", Ordinal(*index)),
            Self::PartialWildcard { index } => write!(
                f,
                "the {} segment mixes '*' with other characters; '*' must be a whole segment",
                Ordinal(*index)
            ),
            Self::Whitespace => f.write_str("pattern contains whitespace or a control character"),
        }
    }
}

impl Pattern {
    /// Parses and validates a pattern.
    ///
    /// # Errors
    ///
    /// A [`PatternError`] saying what is wrong: empty pattern or segment,
    /// `*` inside a segment, whitespace.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let fail = |reason| {
            Err(PatternError {
                pattern: pattern.to_owned(),
                reason,
            })
        };
        if pattern.is_empty() {
            return fail(PatternErrorReason::Empty);
        }
        if pattern.len() > crate::name::MAX_NAME_LEN {
            return fail(PatternErrorReason::TooLong);
        }
        if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return fail(PatternErrorReason::Whitespace);
        }
        let mut segments = Vec::new();
        for (index, segment) in pattern.split('.').enumerate() {
            if segment.is_empty() {
                return fail(PatternErrorReason::EmptySegment { index });
            }
            if segment == "*" {
                segments.push(Segment::Wildcard);
            } else if segment.contains('*') {
                return fail(PatternErrorReason::PartialWildcard { index });
            } else {
                segments.push(Segment::Literal(segment.into()));
            }
        }
        Ok(Self {
            raw: pattern.into(),
            segments: segments.into(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The parsed segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether the pattern has no wildcard (it matches one event type).
    pub fn is_exact(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// Whether `event_type` matches.
    pub fn matches(&self, event_type: &str) -> bool {
        let mut parts = event_type.split('.');
        let last = self.segments.len() - 1;
        for (i, segment) in self.segments.iter().enumerate() {
            let Some(part) = parts.next() else {
                return false;
            };
            match segment {
                Segment::Wildcard if i == last => return !part.is_empty(),
                Segment::Wildcard => {
                    if part.is_empty() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if **lit != *part {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.raw)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for Pattern {
    type Error = PatternError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Pattern {
    type Error = PatternError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl TryFrom<&String> for Pattern {
    type Error = PatternError;

    fn try_from(s: &String) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<&Pattern> for Pattern {
    type Error = PatternError;

    fn try_from(p: &Pattern) -> Result<Self, Self::Error> {
        Ok(p.clone())
    }
}

impl serde::Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

impl<'de> serde::Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Pattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(pattern: &str, event_type: &str, expected: bool) {
        let p = Pattern::parse(pattern).unwrap();
        assert_eq!(p.matches(event_type), expected, "{pattern} ~ {event_type}");
    }

    #[test]
    fn table() {
        check("user.login", "user.login", true);
        check("user.login", "user.logout", false);
        check("user.login", "user.login.extra", false);
        check("user.login", "user", false);
        check("chat.*", "chat.message", true);
        check("chat.*", "chat.message.sent", true);
        check("chat.*", "chat", false);
        check("chat.*", "chatter.message", false);
        check("*", "user", true);
        check("*", "user.login", true);
        check("*", "a.b.c.d", true);
        check("*.failed", "task.failed", true);
        check("*.failed", "task.run.failed", false);
        check("*.failed", "failed", false);
        check("a.*.c", "a.x.c", true);
        check("a.*.c", "a.c", false);
        check("a.*.c", "a.x.y.c", false);
        check("a.*.*", "a.x.y.z", true);
        check("a.*.*", "a.x", false);
    }

    #[test]
    fn errors() {
        for (bad, reason) in [
            ("", PatternErrorReason::Empty),
            ("chat.", PatternErrorReason::EmptySegment { index: 1 }),
            (".chat", PatternErrorReason::EmptySegment { index: 0 }),
            ("a..b", PatternErrorReason::EmptySegment { index: 1 }),
            ("ch*t", PatternErrorReason::PartialWildcard { index: 0 }),
            ("chat.**", PatternErrorReason::PartialWildcard { index: 1 }),
            ("chat .x", PatternErrorReason::Whitespace),
            ("chat.x\n", PatternErrorReason::Whitespace),
        ] {
            let err = Pattern::parse(bad).unwrap_err();
            assert_eq!(err.reason(), &reason, "{bad:?}");
            assert!(err.to_string().starts_with("invalid pattern"), "{err}");
        }
    }

    /// Messages count segments from 1, as the person reading them does.
    #[test]
    fn error_messages_count_segments_from_one() {
        for (bad, says) in [
            (".chat", "the 1st segment is empty"),
            ("a..b", "the 2nd segment is empty"),
            ("chat.", "the 2nd segment is empty"),
            ("a.b.c..d", "the 4th segment is empty"),
            ("a.b.c.d.e.f.g.h.i.j.k.", "the 12th segment is empty"),
            ("chat.x.ch*t", "the 3rd segment mixes '*'"),
        ] {
            let err = Pattern::parse(bad).unwrap_err();
            assert!(err.to_string().contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn exactness() {
        assert!(Pattern::parse("a.b").unwrap().is_exact());
        assert!(!Pattern::parse("a.*").unwrap().is_exact());
    }

    /// A deliberately naive matcher written from the spec's words, by recursion.
    fn reference(pattern: &[&str], topic: &[&str]) -> bool {
        match (pattern, topic) {
            ([], []) => true,
            (["*"], rest) => !rest.is_empty(),
            (["*", p_rest @ ..], [_, t_rest @ ..]) => reference(p_rest, t_rest),
            ([lit, p_rest @ ..], [t, t_rest @ ..]) => lit == t && reference(p_rest, t_rest),
            _ => false,
        }
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("cc".to_owned())
        ]
    }

    proptest! {
        #[test]
        fn agrees_with_reference(
            pattern in prop::collection::vec(prop_oneof![3 => segment(), 1 => Just("*".to_owned())], 1..5),
            topic in prop::collection::vec(segment(), 1..6),
        ) {
            let pattern_text = pattern.join(".");
            let topic_text = topic.join(".");
            let p = Pattern::parse(&pattern_text).unwrap();
            let pattern_refs: Vec<&str> = pattern.iter().map(String::as_str).collect();
            let topic_refs: Vec<&str> = topic.iter().map(String::as_str).collect();
            prop_assert_eq!(p.matches(&topic_text), reference(&pattern_refs, &topic_refs));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,20}") {
            let _ = Pattern::parse(&s);
        }

        #[test]
        fn display_round_trips(pattern in prop::collection::vec(prop_oneof![segment(), Just("*".to_owned())], 1..5)) {
            let text = pattern.join(".");
            prop_assert_eq!(Pattern::parse(&text).unwrap().to_string(), text);
        }
    }
}
