//! Mapping between nerve names and patterns and NATS subjects: pure
//! functions, see the [table](crate#subject-mapping).

use nerve_core::Pattern;
use nerve_core::Segment;

/// A name, pattern or prefix that has no NATS subject (or a subject that
/// has no nerve name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} cannot be mapped: {reason}")]
pub struct SubjectError {
    what: &'static str,
    value: String,
    reason: &'static str,
}

impl SubjectError {
    fn new(what: &'static str, value: &str, reason: &'static str) -> Self {
        Self {
            what,
            value: value.to_owned(),
            reason,
        }
    }

    /// The name, pattern, prefix or subject that was refused.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Why, for people.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// Why `token` cannot be a literal NATS subject token, if it cannot.
///
/// NATS splits subjects on `.`, reads a token `*` or `>` as a wildcard and
/// ends the subject at whitespace; the bridge further keeps to printable
/// ASCII, which every NATS client and server version accepts.
fn token_problem(token: &str) -> Option<&'static str> {
    if token.is_empty() {
        return Some("empty token");
    }
    if token.contains('>') {
        return Some("'>' is a NATS wildcard");
    }
    if token.contains('*') {
        return Some("'*' is a NATS wildcard");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Some("only printable ASCII other than '.', '*' and '>' is carried");
    }
    None
}

/// A checked subject prefix: empty, or tokens ending in `.`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    /// No prefix: subjects are the event types themselves.
    pub fn none() -> Self {
        Self(String::new())
    }

    /// `prefix`, with a `.` added when it lacks one (`nerve.prod` and
    /// `nerve.prod.` are the same prefix).
    ///
    /// # Errors
    ///
    /// A [`SubjectError`] when a token of the prefix is empty, a wildcard,
    /// or not printable ASCII.
    pub fn new(prefix: &str) -> Result<Self, SubjectError> {
        if prefix.is_empty() {
            return Ok(Self::none());
        }
        let trimmed = prefix.strip_suffix('.').unwrap_or(prefix);
        for token in trimmed.split('.') {
            if let Some(reason) = token_problem(token) {
                return Err(SubjectError::new("prefix", prefix, reason));
            }
        }
        Ok(Self(format!("{trimmed}.")))
    }

    /// The prefix as written before subjects (empty or ending in `.`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The subject an event of type `event_type` is published on.
///
/// # Errors
///
/// A [`SubjectError`] when a segment of the name is not a NATS token
/// (contains `>`, or is not printable ASCII).
pub fn event_subject(prefix: &Prefix, event_type: &str) -> Result<String, SubjectError> {
    for token in event_type.split('.') {
        if let Some(reason) = token_problem(token) {
            return Err(SubjectError::new("event type", event_type, reason));
        }
    }
    let mut subject = String::with_capacity(prefix.0.len() + event_type.len());
    subject.push_str(&prefix.0);
    subject.push_str(event_type);
    Ok(subject)
}

/// The subject filter a nerve `pattern` subscribes to: a trailing `*` (and
/// the bare `*`) becomes `>`, any other `*` stays `*`.
///
/// # Errors
///
/// A [`SubjectError`] when a literal segment is not a NATS token.
pub fn pattern_subject(prefix: &Prefix, pattern: &Pattern) -> Result<String, SubjectError> {
    let segments = pattern.segments();
    let mut subject = prefix.0.clone();
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            subject.push('.');
        }
        match segment {
            Segment::Wildcard if i + 1 == segments.len() => subject.push('>'),
            Segment::Wildcard => subject.push('*'),
            Segment::Literal(text) => {
                if let Some(reason) = token_problem(text) {
                    return Err(SubjectError::new("pattern", pattern.as_str(), reason));
                }
                subject.push_str(text);
            }
        }
    }
    Ok(subject)
}

/// The event type a message on `subject` carries: the subject without the
/// prefix, checked against nerve's naming rules.
///
/// # Errors
///
/// A [`SubjectError`] when the subject lacks the prefix or the rest is not
/// a valid event type.
pub fn subject_event_type<'s>(prefix: &Prefix, subject: &'s str) -> Result<&'s str, SubjectError> {
    let name = subject
        .strip_prefix(prefix.0.as_str())
        .ok_or_else(|| SubjectError::new("subject", subject, "does not start with the prefix"))?;
    if nerve_core::name::check_event_type(name).is_err() {
        return Err(SubjectError::new(
            "subject",
            subject,
            "the rest is not a valid nerve event type",
        ));
    }
    Ok(name)
}

/// The subject prefix `subject` was published under, when it is some
/// prefix followed by `event_type` (`nerve.demo.7f3a.order.placed` for
/// `order.placed`: `nerve.demo.7f3a.`); `None` otherwise. How a reader with
/// no prefix of its own takes events published under one
/// ([`NatsOptions::any_prefix`](crate::NatsOptions::any_prefix), `nerve
/// tail --nats '*'`).
pub fn published_prefix<'s>(subject: &'s str, event_type: &str) -> Option<&'s str> {
    subject
        .strip_suffix(event_type)
        .filter(|p| p.len() > 1 && p.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_published_prefix_is_what_comes_before_the_event_type() {
        let got = |s| published_prefix(s, "order.placed");
        assert_eq!(
            got("nerve.demo.7f3a.order.placed"),
            Some("nerve.demo.7f3a.")
        );
        assert_eq!(got("order.placed"), None);
        assert_eq!(got("xorder.placed"), None);
        assert_eq!(got(".order.placed"), None);
        assert_eq!(got("nerve.order.shipped"), None);
    }

    fn pat(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn wildcards_map_as_the_table_says() {
        let none = Prefix::none();
        assert_eq!(pattern_subject(&none, &pat("*")).unwrap(), ">");
        assert_eq!(pattern_subject(&none, &pat("chat.*")).unwrap(), "chat.>");
        assert_eq!(
            pattern_subject(&none, &pat("*.failed")).unwrap(),
            "*.failed"
        );
        assert_eq!(pattern_subject(&none, &pat("a.*.c")).unwrap(), "a.*.c");
        assert_eq!(pattern_subject(&none, &pat("a.*.*")).unwrap(), "a.*.>");
        assert_eq!(
            pattern_subject(&none, &pat("user.login")).unwrap(),
            "user.login"
        );
    }

    #[test]
    fn prefixes_namespace_both_directions() {
        let p = Prefix::new("nerve.prod").unwrap();
        assert_eq!(p, Prefix::new("nerve.prod.").unwrap());
        assert_eq!(pattern_subject(&p, &pat("*")).unwrap(), "nerve.prod.>");
        assert_eq!(event_subject(&p, "a.b").unwrap(), "nerve.prod.a.b");
        assert_eq!(subject_event_type(&p, "nerve.prod.a.b").unwrap(), "a.b");
        assert!(subject_event_type(&p, "nerve.test.a.b").is_err());
        for bad in ["a..b", "a.>", "a.*", "a b", "ünï"] {
            assert!(Prefix::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_nats_cannot_carry_are_refused_with_the_reason() {
        let none = Prefix::none();
        let e = event_subject(&none, "a.>").unwrap_err();
        assert!(e.to_string().contains("'>' is a NATS wildcard"), "{e}");
        assert!(event_subject(&none, "a.b>c").is_err());
        assert!(event_subject(&none, "café.opened").is_err());
        assert!(pattern_subject(&none, &pat("café.*")).is_err());
        assert!(pattern_subject(&none, &pat("a.>")).is_err());
    }

    #[test]
    fn subjects_nerve_cannot_carry_are_refused() {
        let none = Prefix::none();
        // NATS allows these subjects; nerve names do not.
        assert!(subject_event_type(&none, "a.*").is_err());
        assert!(subject_event_type(&none, "").is_err());
        assert!(subject_event_type(&none, &"x".repeat(300)).is_err());
    }

    proptest! {
        /// A name that maps comes back as itself, and the subject of a
        /// pattern matches (in NATS terms) exactly the subjects of the names
        /// the pattern matches.
        #[test]
        fn names_round_trip_and_patterns_agree(
            name in "[a-z0-9_-]{1,4}(\\.[a-z0-9_-]{1,4}){0,3}",
            pattern in "(\\*|[a-z0-9_-]{1,4})(\\.(\\*|[a-z0-9_-]{1,4})){0,3}",
            prefix in "(|[a-z]{1,3}\\.)",
        ) {
            let prefix = Prefix::new(&prefix).unwrap();
            let subject = event_subject(&prefix, &name).unwrap();
            prop_assert_eq!(subject_event_type(&prefix, &subject).unwrap(), name.as_str());
            let p = pat(&pattern);
            let filter = pattern_subject(&prefix, &p).unwrap();
            prop_assert_eq!(nats_matches(&filter, &subject), p.matches(&name));
        }

        /// Any name nerve accepts either maps or is refused with an error:
        /// never a subject NATS would read differently.
        #[test]
        fn every_name_maps_or_is_refused(name in "\\PC{1,12}") {
            if nerve_core::name::check_event_type(&name).is_ok() {
                match event_subject(&Prefix::none(), &name) {
                    Ok(s) => prop_assert!(s.split('.').all(|t| token_problem(t).is_none())),
                    Err(e) => prop_assert_eq!(e.value(), name.as_str()),
                }
            }
        }
    }

    /// NATS subject matching, as the server does it.
    fn nats_matches(filter: &str, subject: &str) -> bool {
        let f: Vec<&str> = filter.split('.').collect();
        let s: Vec<&str> = subject.split('.').collect();
        for (i, token) in f.iter().enumerate() {
            match *token {
                ">" => return s.len() > i,
                "*" if i < s.len() => {}
                t if i < s.len() && s[i] == t => {}
                _ => return false,
            }
        }
        f.len() == s.len()
    }
}
