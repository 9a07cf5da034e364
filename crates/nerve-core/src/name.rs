//! Event type names: the `{domain}.{action}` convention and its validation.
//!
//! Two levels of checking exist:
//!
//! * **Always** (every [`Event`](crate::Event) carries this invariant): a name is
//!   non-empty, at most [`MAX_NAME_LEN`] bytes, has no empty segment (`a..b`, `a.`),
//!   no whitespace or control character (a trailing `\n` is rejected) and no `*`
//!   (that belongs to [`Pattern`](crate::Pattern)s).
//! * **Strict**, opted into with [`NameRules`] (the bus builder's
//!   `validate_names(true)`): at least two segments, each `[a-z][a-z0-9_]*`, and
//!   optionally a domain from an allowed set.

use std::collections::BTreeSet;
use std::fmt;

/// The longest event type name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// An event type name broke a naming rule.
///
/// The message names the rule, for example
/// `invalid event type "User.login": segment "User" must match [a-z][a-z0-9_]*`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event type {name:?}: {rule}")]
pub struct ValidationError {
    name: String,
    rule: Rule,
}

impl ValidationError {
    fn new(name: &str, rule: Rule) -> Self {
        Self {
            name: name.to_owned(),
            rule,
        }
    }

    /// The name that was rejected.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rule that failed.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }
}

/// The naming rule an event type broke.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name contains whitespace or a control character.
    Whitespace,
    /// The name contains `*`, which only patterns may.
    Wildcard,
    /// A segment is empty (`a..b`, `.a`, `a.`).
    EmptySegment,
    /// Strict rule: fewer than two segments.
    TooFewSegments,
    /// Strict rule: a segment is not `[a-z][a-z0-9_]*`.
    BadSegment {
        /// The offending segment.
        segment: String,
    },
    /// Strict rule: the domain (first segment) is not in the allowed set.
    DomainNotAllowed {
        /// The domain found.
        domain: String,
        /// The domains allowed.
        allowed: Vec<String>,
    },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Empty => f.write_str("name is empty"),
            Rule::TooLong { len } => write!(f, "name is {len} bytes, longer than {MAX_NAME_LEN}"),
            Rule::Whitespace => f.write_str("name contains whitespace or a control character"),
            Rule::Wildcard => f.write_str("name contains '*', which only patterns may"),
            Rule::EmptySegment => f.write_str("name has an empty segment"),
            Rule::TooFewSegments => {
                f.write_str("name must have at least two segments, as in {domain}.{action}")
            }
            Rule::BadSegment { segment } => {
                write!(f, "segment {segment:?} must match [a-z][a-z0-9_]*")
            }
            Rule::DomainNotAllowed { domain, allowed } => {
                write!(f, "domain {domain:?} is not one of {allowed:?}")
            }
        }
    }
}

/// An event type name that passed [`check_event_type`]: the type carries
/// the check, so an event made of one is not checked again. Names of up to
/// 23 bytes are kept inline, so making an event of one allocates nothing
/// for its name (a bus keeps one per topic it routes).
///
/// ```
/// use nerve::name::EventType;
/// let login = EventType::new("user.login")?;
/// assert_eq!(login.as_str(), "user.login");
/// assert!(EventType::new("user..login").is_err());
/// # Ok::<(), nerve::name::ValidationError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(pub(crate) smol_str::SmolStr);

impl EventType {
    /// `name`, checked.
    ///
    /// # Errors
    ///
    /// A [`ValidationError`] when `name` breaks the rules every name follows.
    pub fn new(name: &str) -> Result<Self, ValidationError> {
        check_event_type(name)?;
        Ok(Self(smol_str::SmolStr::new(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for EventType {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Hashes and compares as its text, so a map keyed by `EventType` is
/// looked up by `&str`.
impl std::borrow::Borrow<str> for EventType {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// Checks the invariants every event type name carries (see the module docs).
///
/// # Errors
///
/// A [`ValidationError`] naming the first rule that failed.
pub fn check_event_type(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::new(name, Rule::Empty));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ValidationError::new(
            name,
            Rule::TooLong { len: name.len() },
        ));
    }
    // The common case, an ASCII name, byte by byte through one table: this
    // runs on every emit. A non-ASCII byte hands over to the check by chars.
    let mut segment_empty = true;
    for &b in name.as_bytes() {
        let class = BYTE_CLASS[usize::from(b)];
        if class == PLAIN {
            segment_empty = false;
            continue;
        }
        match class {
            DOT if segment_empty => {
                return Err(ValidationError::new(name, Rule::EmptySegment));
            }
            DOT => segment_empty = true,
            STAR => return Err(ValidationError::new(name, Rule::Wildcard)),
            SPACE => return Err(ValidationError::new(name, Rule::Whitespace)),
            _ => return check_chars(name),
        }
    }
    if segment_empty {
        return Err(ValidationError::new(name, Rule::EmptySegment));
    }
    Ok(())
}

/// Classes of a byte in an event type name, for [`BYTE_CLASS`].
const PLAIN: u8 = 0;
const DOT: u8 = 1;
const STAR: u8 = 2;
/// ASCII whitespace or control.
const SPACE: u8 = 3;
/// Part of a non-ASCII character: checked by chars.
const NON_ASCII: u8 = 4;

/// The class of every byte value.
static BYTE_CLASS: [u8; 256] = {
    let mut table = [PLAIN; 256];
    let mut b = 0;
    while b < 256 {
        #[allow(clippy::cast_possible_truncation, reason = "b < 256")]
        let byte = b as u8;
        table[b] = if byte == b'.' {
            DOT
        } else if byte == b'*' {
            STAR
        } else if byte.is_ascii_whitespace() || byte.is_ascii_control() {
            SPACE
        } else if !byte.is_ascii() {
            NON_ASCII
        } else {
            PLAIN
        };
        b += 1;
    }
    table
};

/// [`check_event_type`] for a name with a non-ASCII character.
fn check_chars(name: &str) -> Result<(), ValidationError> {
    let mut segment_len = 0usize;
    for c in name.chars() {
        match c {
            '.' => {
                if segment_len == 0 {
                    return Err(ValidationError::new(name, Rule::EmptySegment));
                }
                segment_len = 0;
            }
            '*' => return Err(ValidationError::new(name, Rule::Wildcard)),
            c if c.is_whitespace() || c.is_control() => {
                return Err(ValidationError::new(name, Rule::Whitespace));
            }
            _ => segment_len += 1,
        }
    }
    if segment_len == 0 {
        return Err(ValidationError::new(name, Rule::EmptySegment));
    }
    Ok(())
}

/// Checks the strict `{domain}.{action}` convention: the invariants of
/// [`check_event_type`], at least two segments, each `[a-z][a-z0-9_]*`.
///
/// # Errors
///
/// A [`ValidationError`] naming the first rule that failed.
pub fn validate_event_type(name: &str) -> Result<(), ValidationError> {
    check_event_type(name)?;
    let mut count = 0;
    for segment in name.split('.') {
        count += 1;
        let mut bytes = segment.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
        if !first_ok || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(ValidationError::new(
                name,
                Rule::BadSegment {
                    segment: segment.to_owned(),
                },
            ));
        }
    }
    if count < 2 {
        return Err(ValidationError::new(name, Rule::TooFewSegments));
    }
    Ok(())
}

/// Whether `name` follows the strict `{domain}.{action}` convention.
///
/// ```
/// use nerve::name::is_valid_event_type;
/// assert!(is_valid_event_type("user.login"));
/// assert!(is_valid_event_type("chat.message.sent"));
/// assert!(!is_valid_event_type("user"));
/// assert!(!is_valid_event_type("User.login"));
/// assert!(!is_valid_event_type("user.login\n"));
/// ```
pub fn is_valid_event_type(name: &str) -> bool {
    validate_event_type(name).is_ok()
}

/// The domain of an event type: its first segment.
///
/// ```
/// assert_eq!(nerve::name::extract_domain("chat.message.sent"), "chat");
/// assert_eq!(nerve::name::extract_domain("ping"), "ping");
/// ```
pub fn extract_domain(name: &str) -> &str {
    name.split_once('.').map_or(name, |(domain, _)| domain)
}

/// The action of an event type: everything after the domain, or `""`.
///
/// ```
/// assert_eq!(nerve::name::extract_action("chat.message.sent"), "message.sent");
/// assert_eq!(nerve::name::extract_action("ping"), "");
/// ```
pub fn extract_action(name: &str) -> &str {
    name.split_once('.').map_or("", |(_, action)| action)
}

/// Strict naming rules: the `{domain}.{action}` convention, optionally
/// restricted to a set of domains.
///
/// ```
/// use nerve::name::NameRules;
/// let rules = NameRules::new().allowed_domains(["user", "chat"]);
/// assert!(rules.validate("user.login").is_ok());
/// let err = rules.validate("billing.charge").unwrap_err();
/// assert!(err.to_string().contains("domain \"billing\" is not one of"));
/// assert!(rules.validate("system.interrupted").is_ok());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameRules {
    allowed_domains: Option<BTreeSet<String>>,
}

impl NameRules {
    /// The convention with every domain allowed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restricts names to these domains. The bus's own domain, `system`, is
    /// always allowed, so that its reports (`system.handler_error`,
    /// `system.interrupted`, ...) are never refused.
    #[must_use]
    pub fn allowed_domains<I, S>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_domains = Some(domains.into_iter().map(Into::into).collect());
        self
    }

    /// Checks `name` against the convention and the allowed domains.
    ///
    /// # Errors
    ///
    /// A [`ValidationError`] naming the first rule that failed.
    pub fn validate(&self, name: &str) -> Result<(), ValidationError> {
        validate_event_type(name)?;
        if let Some(allowed) = &self.allowed_domains {
            let domain = extract_domain(name);
            if domain != SYSTEM_DOMAIN && !allowed.contains(domain) {
                return Err(ValidationError::new(
                    name,
                    Rule::DomainNotAllowed {
                        domain: domain.to_owned(),
                        allowed: allowed.iter().cloned().collect(),
                    },
                ));
            }
        }
        Ok(())
    }
}

/// The domain of the events a bus emits about itself.
const SYSTEM_DOMAIN: &str = "system";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_table_agrees_with_the_check_by_chars() {
        let mut names: Vec<String> = (0u8..128)
            .flat_map(|b| {
                let c = char::from(b);
                [
                    format!("a{c}b"),
                    format!("{c}a.b"),
                    format!("a.b{c}"),
                    format!("a.{c}"),
                ]
            })
            .collect();
        names.extend(
            [
                "é.b",
                "a.é",
                "a..é",
                "é..a",
                "a.\u{a0}b",
                "a.b\u{2028}",
                "a*é",
                "日本.語",
            ]
            .map(String::from),
        );
        for name in &names {
            assert_eq!(check_event_type(name), check_chars(name), "{name:?}");
        }
    }

    fn check(name: &str, base_ok: bool, strict_ok: bool) {
        assert_eq!(
            check_event_type(name).is_ok(),
            base_ok,
            "base rules on {name:?}"
        );
        assert_eq!(
            is_valid_event_type(name),
            strict_ok,
            "strict rules on {name:?}"
        );
    }

    #[test]
    fn names() {
        check("user.login", true, true);
        check("chat.message.sent", true, true);
        check("a1.b_2", true, true);
        check("user", true, false);
        check("User.login", true, false);
        check("user.Login", true, false);
        check("user.1login", true, false);
        check("user-x.login", true, false);
        check("", false, false);
        check("user.", false, false);
        check(".user", false, false);
        check("user..login", false, false);
        check("user.login\n", false, false);
        check("user.login ", false, false);
        check(" user.login", false, false);
        check("user.log in", false, false);
        check("user.*", false, false);
        check(&"a".repeat(MAX_NAME_LEN + 1), false, false);
        check("café.ouvert", true, false);
        check("café.\u{a0}x", false, false);
        check("x.\u{b}", false, false);
    }

    #[test]
    fn errors_name_the_rule() {
        let err = validate_event_type("user.login\n").unwrap_err();
        assert_eq!(err.rule(), &Rule::Whitespace);
        assert!(err.to_string().contains("whitespace"), "{err}");
        let err = validate_event_type("user").unwrap_err();
        assert_eq!(err.rule(), &Rule::TooFewSegments);
        let err = validate_event_type("user.Login").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid event type "user.Login": segment "Login" must match [a-z][a-z0-9_]*"#
        );
    }

    #[test]
    fn domain_and_action() {
        assert_eq!(extract_domain("chat.message.sent"), "chat");
        assert_eq!(extract_action("chat.message.sent"), "message.sent");
        assert_eq!(extract_action("user.login"), "login");
    }

    #[test]
    fn allowed_domains() {
        let rules = NameRules::new().allowed_domains(["user"]);
        assert!(rules.validate("user.login").is_ok());
        let err = rules.validate("chat.message").unwrap_err();
        assert!(matches!(err.rule(), Rule::DomainNotAllowed { domain, .. } if domain == "chat"));
        assert!(rules.validate("user").is_err());
    }
}
