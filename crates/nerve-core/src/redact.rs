//! Redaction of personal data and secrets from what leaves the process
//! (feature `redact`).
//!
//! A [`Redactor`] is applied to events on their way out: to the journal,
//! dead letter persistence, alert payloads and bridges. It redacts in two
//! ways:
//!
//! * **By key.** The whole value of an object key in the key list (any JSON
//!   type, at any depth, in objects inside arrays too) becomes the string
//!   [`"[REDACTED]"`](REDACTED). Keys match ignoring ASCII case, `-` and
//!   `_`: the key `api_key` also matches `API-KEY`, `apiKey` and `ApiKey`.
//! * **By pattern.** Every string value, and an event's `source` and
//!   `correlation_id`, is searched by the [detectors](#detectors); each
//!   finding becomes the detector's token, such as `[REDACTED_EMAIL]`.
//!
//! Object keys themselves and JSON numbers are not searched: a card number
//! stored as a number is caught only under a redacted key.
//!
//! # Example
//!
//! ```
//! use nerve::redact::Redactor;
//! use nerve::json;
//!
//! let redactor = Redactor::default();
//! let mut data = json!({
//!     "user": {"email": "alice@example.com", "Password": "hunter2"},
//!     "note": "card 4111 1111 1111 1111, call +1 415 555 2671",
//!     "sessions": [{"token": {"id": 7}}, {"ip": "203.0.113.9"}],
//! });
//! let replaced = redactor.redact_value(&mut data);
//!
//! assert_eq!(replaced, 6);
//! assert_eq!(data, json!({
//!     "user": {"email": "[REDACTED_EMAIL]", "Password": "[REDACTED]"},
//!     "note": "card [REDACTED_CARD], call [REDACTED_PHONE]",
//!     "sessions": [{"token": "[REDACTED]"}, {"ip": "[REDACTED_IPV4]"}],
//! }));
//! ```
//!
//! # Detectors
//!
//! Each detector has a pattern that finds candidates and, where one exists,
//! a check that rejects candidates that cannot be what it names. Detectors
//! marked *labelled* only match after a label (`dob:`, `passport no`,
//! `aws_secret_access_key=`), because the value alone looks like many
//! harmless things; they redact the value and keep the label.
//!
//! | detector | token | matches | check |
//! |----------|-------|---------|-------|
//! | `email` | `[REDACTED_EMAIL]` | `local@domain.tld`, internationalized too (`josé@exämple.com`, `用户@例子.广告`, `xn--` domains), always the whole address | local part ≤ 64 and labels ≤ 63 characters; not after a letter or digit; not `user@host:path` (`git@github.com:org/repo`) or `host:port`; not an asset name (`logo@2x.png`, an image, style or font extension for a top-level domain) |
//! | `credit_card` | `[REDACTED_CARD]` | 13 to 19 digits, spaces or dashes between groups | Luhn, card network prefix and length, one kind of separator |
//! | `us_ssn` | `[REDACTED_SSN]` | `123-45-6789`, `123 45 6789`; nine bare digits after a label (`SSN: 123456789`, `social security number`) | area not 000, 666, 9xx; group not 00; serial not 0000 |
//! | `phone` | `[REDACTED_PHONE]` | E.164 (`+44 (0)20 7946 0958`), North American with or without the trunk prefix 1 (`(415) 555-2671`, `1-800-555-0199`, `1 (800) 555-0199`), national with trunk 0 (`06 12 34 56 78`, `0171 1234567`, `020 7946 0958`) | digit count per form; area code and exchange 2 to 9 |
//! | `ipv4` | `[REDACTED_IPV4]` | dotted quad | octets ≤ 255, no leading zeros, not part of a longer dotted run; not loopback (`127.0.0.0/8`) or unspecified (`0.0.0.0`); not a section or version number (after `section`, `§`, `chapter`, `version`, `release`, … or before `-beta` / `+build`) |
//! | `ipv6` | `[REDACTED_IPV6]` | full, compressed (`2001:db8::1`), IPv4-embedded | parses as IPv6; not loopback or unspecified (`::1`, `::`, `::ffff:127.0.0.1`) |
//! | `mac_address` | `[REDACTED_MAC]` | `00:1a:2b:3c:4d:5e`, dashed, Cisco `001a.2b3c.4d5e` | not all zeros or broadcast |
//! | `iban` | `[REDACTED_IBAN]` | `DE89 3704 0044 0532 0130 00` | country length, mod-97 |
//! | `date_of_birth` | `[REDACTED_DOB]` | labelled date, numeric (`dob: 1990-05-17`, `17/05/1990`, `17.05.1990`) or with an English, French or German month (`17 May 1990`, `May 17, 1990`, `17. Mai 1990`, `1er août 1975`); labels `dob`, `date of birth`, `birth date`, `birthday`, `born (on)`, `date de naissance`, `né(e) le`, `Geburtsdatum`, `geboren (am)`, `geb.` | a real date, 1900 to 2100 |
//! | `passport` | `[REDACTED_PASSPORT]` | labelled 6 to 9 upper-case letters and digits | at least two digits |
//! | `jwt` | `[REDACTED_JWT]` | `eyJ….eyJ….…` | header decodes to JSON naming `alg`, payload to JSON |
//! | `bearer_token` | `[REDACTED_BEARER_TOKEN]` | the credential after `Bearer`, also URL-encoded (`Bearer%20…`, `Bearer+…`) | after `Authorization:` or `Proxy-Authorization:`, 8+ characters; elsewhere 16+ with letters and digits |
//! | `basic_auth` | `[REDACTED_BASIC_AUTH]` | the credential after `Basic` | decodes to `user:password` |
//! | `aws_access_key_id` | `[REDACTED_AWS_KEY_ID]` | `AKIA…`, `ASIA…` and the other id prefixes, 16 more characters | not one repeated character |
//! | `aws_secret_access_key` | `[REDACTED_AWS_SECRET]` | secret access keys (40 base64 characters) and session tokens (100+) after the labels AWS tools print: `aws_secret_access_key = …`, `aws_session_token = …`, `"SecretAccessKey": "…"`, `"SessionToken": "…"`, `AWS Secret Access Key [None]: …`, `aws secret key: …` | mixed case and digits (not hex) |
//! | `github_token` | `[REDACTED_GITHUB_TOKEN]` | `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_` | |
//! | `gitlab_token` | `[REDACTED_GITLAB_TOKEN]` | `glpat-…` | |
//! | `slack_token` | `[REDACTED_SLACK_TOKEN]` | `xoxb-`, `xoxp-`, `xoxa-`, `xoxo-`, `xoxs-`, `xoxr-`, `xoxe-`, `xoxe.xoxp-` (a number after the kind), `xapp-`, incoming-webhook URLs | |
//! | `stripe_key` | `[REDACTED_STRIPE_KEY]` | `sk_live_`, `rk_test_`, `pk_live_`, `whsec_` | |
//! | `google_api_key` | `[REDACTED_GOOGLE_API_KEY]` | `AIza` and 35 characters | |
//! | `openai_key` | `[REDACTED_OPENAI_KEY]` | `sk-…`, `sk-proj-…` | mixed case and digits |
//! | `npm_token` | `[REDACTED_NPM_TOKEN]` | `npm_` and 36 characters | |
//! | `private_key` | `[REDACTED_PRIVATE_KEY]` | PEM and PGP private key blocks, truncated ones too | |
//! | `url_password` | `[REDACTED_PASSWORD]` | the password in `scheme://user:password@host` | |
//! | `secret_assignment` | `[REDACTED_SECRET]` | the value in `api_key=…`, `"password": "…"`, `client_secret: …`, also in JSON text inside JSON text (`\"password\":\"…\"`) and URL-encoded (`token%3D…`): a quoted value up to its closing quote, an unquoted one with the words after it on its line up to a delimiter or the next `key=` / `key:` | 3+ characters; not a placeholder (`null`, `****`, `${VAR}`) |
//!
//! A card or IBAN candidate that has the right shape (network prefix and
//! length, country and length) but fails its checksum vetoes the other
//! detectors: nothing inside it is redacted, not even a phone number that
//! fits its tail.
//!
//! Not redacted, by design and by test: millisecond timestamps
//! (`1732356000123`), UUIDs, SHA-1 and SHA-256 hex, RFC 3339 times,
//! semantic versions (`v10.0.1-beta.2`), section numbers (`§ 4.2.1.3`),
//! asset names (`logo@2x.png`), `scp` remotes (`git@github.com:org/repo`)
//! and loopback and unspecified addresses (`127.0.0.1`, `0.0.0.0`, `::1`,
//! `::`), which identify no one. What the redactor does not catch is listed
//! in `docs/reliability.md`.
//!
//! # Guarantees
//!
//! * **Deterministic.** Overlapping findings resolve earliest first, then
//!   longest, then by detector order ([`Detector::ALL`]).
//! * **Idempotent.** No detector matches a token, so redacting redacted
//!   output changes nothing and counts nothing.
//! * **Valid JSON stays valid.** [`Redactor::redact_value`] changes only
//!   strings. Tokens need no escaping, and [`Redactor::redact_str`] never
//!   splits an escape sequence, so JSON text stays valid as long as its PII
//!   is inside strings (a bare card number in a number position is not).
//! * **Fast.** One [`RegexSet`](regex::RegexSet) pass tells which detectors
//!   can match; only those run, and only over the part of the text where
//!   the set matched (JSON text is scanned in chunks split between fields).
//!   With every detector on, a 1 KiB JSON line costs about 5 µs when clean
//!   and under 20 µs with several findings (see `docs/benchmarks.md`).
//! * **Linear.** Every detector's cost grows linearly with its input: a
//!   rejected candidate is not rescanned from each of its characters, and
//!   what a check needs from before a candidate is remembered, not searched
//!   for again. 64 KiB lines of the worst shapes found cost a few
//!   milliseconds each (`docs/benchmarks.md`, `worst/*`).
//!
//! Redacted text is scanned again until nothing more is found, because a
//! token can change how its neighbour reads (`alice@example.com-(415)
//! 555-2671`: the number stops being joined to the address); only the
//! chunks that received a token are scanned again.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::Event;
use crate::correlation::CorrelationId;

mod detectors;
mod patterns;
mod scan;
mod validate;

pub use detectors::Detector;

use scan::Scanner;

/// What replaces the value of a redacted key.
pub const REDACTED: &str = "[REDACTED]";

/// The keys a [`Redactor`] redacts unless [`RedactorBuilder::keys`] says
/// otherwise. They match ignoring ASCII case, `-` and `_`.
pub const DEFAULT_KEYS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "x-api-key",
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "session",
    "ssn",
    "credit_card",
    "card_number",
    "cvv",
    "private_key",
    "aws_secret_access_key",
    "passport_number",
];

/// The longest key, once `-` and `_` are dropped, a key list may hold.
pub const MAX_KEY_LEN: usize = 64;

/// Why a [`Redactor`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedactError {
    /// A key is empty once `-` and `_` are ignored.
    #[error("key {index} of the key list is empty")]
    EmptyKey {
        /// Its position in the list.
        index: usize,
    },
    /// A key is longer than [`MAX_KEY_LEN`] once `-` and `_` are ignored.
    #[error("key {index} of the key list is longer than {MAX_KEY_LEN} bytes")]
    KeyTooLong {
        /// Its position in the list.
        index: usize,
    },
    /// The detectors' patterns did not compile (a size limit of the regex
    /// engine, not something the caller controls).
    #[error("the detector patterns did not compile")]
    Compile(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Redacts personal data and secrets from JSON values, text and events.
///
/// Built with [`Redactor::builder`]; [`Redactor::default`] has the
/// [`DEFAULT_KEYS`] and every detector. Cloning shares the compiled
/// patterns. See the [module docs](self) for what is redacted and how.
///
/// ```
/// use nerve::Event;
/// use nerve::redact::{Detector, Redactor};
///
/// let redactor = Redactor::builder()
///     .keys(["password", "session"])
///     .detectors([Detector::Email, Detector::Ipv4])
///     .build()?;
///
/// assert_eq!(redactor.redact_str("from bob@example.org at 10.1.2.3"),
///            "from [REDACTED_EMAIL] at [REDACTED_IPV4]");
///
/// let event = Event::builder("user.login")
///     .data(nerve::json!({"user": "bob@example.org", "SESSION": "s-42"}))
///     .source("10.1.2.3")
///     .build()?;
/// let clean = redactor.redact_event(&event);
/// assert_eq!(clean.data()["user"], "[REDACTED_EMAIL]");
/// assert_eq!(clean.data()["SESSION"], "[REDACTED]");
/// assert_eq!(clean.source(), Some("[REDACTED_IPV4]"));
/// assert_eq!(clean.event_id(), event.event_id());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Redactor {
    inner: Arc<Inner>,
}

struct Inner {
    keys: KeySet,
    detectors: Vec<Detector>,
    scanner: Scanner,
}

impl Redactor {
    /// Starts building a redactor; see [`RedactorBuilder`] for the defaults.
    pub fn builder() -> RedactorBuilder {
        RedactorBuilder {
            keys: DEFAULT_KEYS.iter().map(|&k| k.to_owned()).collect(),
            detectors: Detector::ALL.to_vec(),
        }
    }

    /// The detectors this redactor runs, in [`Detector::ALL`] order.
    pub fn detectors(&self) -> &[Detector] {
        &self.inner.detectors
    }

    /// Whether the value of object key `key` is redacted whole.
    pub fn is_redacted_key(&self, key: &str) -> bool {
        self.inner.keys.contains(key)
    }

    /// `text` with every finding of the detectors replaced by its token.
    /// Borrows `text` when nothing was found.
    pub fn redact_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.inner.scanner.redact(text).0
    }

    /// Redacts `value` in place: the values of redacted keys and the
    /// findings in strings. Returns the number of replacements, 0 when
    /// `value` is unchanged.
    pub fn redact_value(&self, value: &mut Value) -> usize {
        match value {
            Value::String(s) => {
                let (redacted, count) = self.inner.scanner.redact(s);
                if let Cow::Owned(redacted) = redacted {
                    *s = redacted;
                }
                count
            }
            Value::Array(items) => items.iter_mut().map(|v| self.redact_value(v)).sum(),
            Value::Object(map) => map
                .iter_mut()
                .map(|(key, v)| {
                    if !self.inner.keys.contains(key) {
                        self.redact_value(v)
                    } else if v.as_str() == Some(REDACTED) {
                        0
                    } else {
                        *v = Value::String(REDACTED.to_owned());
                        1
                    }
                })
                .sum(),
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        }
    }

    /// `event` with its data, `source` and `correlation_id` redacted; every
    /// other field is kept. When nothing was found this is `event` itself,
    /// the same allocation ([`Event::ptr_eq`]), and nothing was copied.
    pub fn redact_event(&self, event: &Event) -> Event {
        let data = self.redacted(event.data());
        let source = event.source().and_then(|s| owned(self.redact_str(s)));
        let correlation_id = event
            .correlation_id()
            .and_then(|id| owned(self.redact_str(id.as_str())).map(CorrelationId::from));
        if data.is_none() && source.is_none() && correlation_id.is_none() {
            event.clone()
        } else {
            event.with_redacted_parts(data, source, correlation_id)
        }
    }

    /// A redacted copy of `value`, or `None` when nothing would change;
    /// copies only when something does.
    fn redacted(&self, value: &Value) -> Option<Value> {
        match value {
            Value::String(s) => owned(self.redact_str(s)).map(Value::String),
            Value::Array(items) => {
                let (first, changed) = items
                    .iter()
                    .enumerate()
                    .find_map(|(i, v)| self.redacted(v).map(|c| (i, c)))?;
                let mut out = Vec::with_capacity(items.len());
                out.extend_from_slice(&items[..first]);
                out.push(changed);
                out.extend(
                    items[first + 1..]
                        .iter()
                        .map(|v| self.redacted(v).unwrap_or_else(|| v.clone())),
                );
                Some(Value::Array(out))
            }
            Value::Object(map) => {
                let redact_entry = |(key, v): (&String, &Value)| {
                    if !self.inner.keys.contains(key) {
                        self.redacted(v)
                    } else if v.as_str() == Some(REDACTED) {
                        None
                    } else {
                        Some(Value::String(REDACTED.to_owned()))
                    }
                };
                let first = map.iter().position(|entry| redact_entry(entry).is_some())?;
                let out = map
                    .iter()
                    .enumerate()
                    .map(|(i, entry)| {
                        let changed = if i < first { None } else { redact_entry(entry) };
                        (entry.0.clone(), changed.unwrap_or_else(|| entry.1.clone()))
                    })
                    .collect();
                Some(Value::Object(out))
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => None,
        }
    }
}

fn owned(text: Cow<'_, str>) -> Option<String> {
    match text {
        Cow::Borrowed(_) => None,
        Cow::Owned(s) => Some(s),
    }
}

/// Every key and every detector.
impl Default for Redactor {
    fn default() -> Self {
        // The built-in keys and patterns are covered by tests.
        Self::builder()
            .build()
            .expect("the default redactor builds")
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("keys", &self.inner.keys.len())
            .field("detectors", &self.inner.detectors)
            .finish()
    }
}

/// Builds a [`Redactor`]. Made by [`Redactor::builder`].
///
/// | setting | default |
/// |---------|---------|
/// | [`keys`](Self::keys) | [`DEFAULT_KEYS`] |
/// | [`detectors`](Self::detectors) | [`Detector::ALL`] |
#[derive(Debug, Clone)]
#[must_use]
pub struct RedactorBuilder {
    keys: Vec<String>,
    detectors: Vec<Detector>,
}

impl RedactorBuilder {
    /// The object keys whose values are redacted whole, replacing the
    /// default list. Matching ignores ASCII case, `-` and `_`. To extend
    /// the defaults, chain [`DEFAULT_KEYS`] with your own.
    pub fn keys<I>(mut self, keys: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// The detectors to run, replacing the default of every detector.
    /// Order and duplicates do not matter; an empty list turns
    /// pattern-based redaction off.
    pub fn detectors(mut self, detectors: impl IntoIterator<Item = Detector>) -> Self {
        self.detectors = detectors.into_iter().collect();
        self
    }

    /// The redactor.
    ///
    /// # Errors
    ///
    /// [`RedactError::EmptyKey`] or [`RedactError::KeyTooLong`] for a key
    /// that is empty or longer than [`MAX_KEY_LEN`] once `-` and `_` are
    /// ignored; [`RedactError::Compile`] if the regex engine refuses the
    /// patterns.
    pub fn build(self) -> Result<Redactor, RedactError> {
        let keys = KeySet::new(&self.keys)?;
        let mut detectors = self.detectors;
        detectors.sort_unstable();
        detectors.dedup();
        let scanner = Scanner::new(&detectors).map_err(|e| RedactError::Compile(Box::new(e)))?;
        Ok(Redactor {
            inner: Arc::new(Inner {
                keys,
                detectors,
                scanner,
            }),
        })
    }
}

/// Keys compared ignoring ASCII case, `-` and `_`, without allocating.
struct KeySet {
    keys: HashSet<Box<[u8]>>,
}

impl KeySet {
    fn new(keys: &[String]) -> Result<Self, RedactError> {
        let mut set = HashSet::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            let mut buf = [0; MAX_KEY_LEN];
            match normalize(key, &mut buf) {
                None => return Err(RedactError::KeyTooLong { index }),
                Some([]) => return Err(RedactError::EmptyKey { index }),
                Some(k) => set.insert(Box::from(k)),
            };
        }
        Ok(Self { keys: set })
    }

    fn contains(&self, key: &str) -> bool {
        let mut buf = [0; MAX_KEY_LEN];
        !self.keys.is_empty() && normalize(key, &mut buf).is_some_and(|k| self.keys.contains(k))
    }

    fn len(&self) -> usize {
        self.keys.len()
    }
}

/// `key` lower-cased without `-` and `_`, in `buf`; `None` if too long.
fn normalize<'b>(key: &str, buf: &'b mut [u8; MAX_KEY_LEN]) -> Option<&'b [u8]> {
    let mut len = 0;
    for b in key.bytes().filter(|&b| b != b'-' && b != b'_') {
        *buf.get_mut(len)? = b.to_ascii_lowercase();
        len += 1;
    }
    Some(&buf[..len])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn redactor_is_clone_send_sync() {
        fn assert_traits<T: Clone + Send + Sync + 'static>() {}
        assert_traits::<Redactor>();
    }

    #[test]
    fn keys_match_ignoring_case_dashes_and_underscores() {
        let r = Redactor::default();
        for key in [
            "password",
            "PASSWORD",
            "Api-Key",
            "apiKey",
            "X_API_KEY",
            "creditCard",
        ] {
            assert!(r.is_redacted_key(key), "{key}");
        }
        for key in ["passwords", "user", "tokens", ""] {
            assert!(!r.is_redacted_key(key), "{key}");
        }
    }

    #[test]
    fn key_redaction_reaches_every_depth_and_type() {
        let r = Redactor::builder().detectors([]).build().unwrap();
        let mut value = json!({
            "a": [{"b": {"Token": {"nested": [1, 2]}}}, {"PASSWORD": 42}],
            "secret": null,
            "list": [[{"cookie": true}]],
            "keep": "alice@example.com",
        });
        assert_eq!(r.redact_value(&mut value), 4);
        assert_eq!(
            value,
            json!({
                "a": [{"b": {"Token": "[REDACTED]"}}, {"PASSWORD": "[REDACTED]"}],
                "secret": "[REDACTED]",
                "list": [[{"cookie": "[REDACTED]"}]],
                "keep": "alice@example.com",
            })
        );
        assert_eq!(r.redact_value(&mut value), 0, "idempotent");
    }

    #[test]
    fn custom_keys_replace_the_defaults() {
        let r = Redactor::builder().keys(["Session-ID"]).build().unwrap();
        let mut value = json!({"session_id": "abc", "password": "kept"});
        assert_eq!(r.redact_value(&mut value), 1);
        assert_eq!(
            value,
            json!({"session_id": "[REDACTED]", "password": "kept"})
        );
    }

    #[test]
    fn bad_keys_are_errors() {
        assert!(matches!(
            Redactor::builder().keys(["ok", "-_-"]).build(),
            Err(RedactError::EmptyKey { index: 1 })
        ));
        assert!(matches!(
            Redactor::builder().keys(["k".repeat(65)]).build(),
            Err(RedactError::KeyTooLong { index: 0 })
        ));
    }

    #[test]
    fn clean_events_come_back_unchanged_and_uncopied() {
        let r = Redactor::default();
        let event = Event::builder("order.placed")
            .data(json!({"order": 17, "items": ["a", "b"], "at": "2026-11-23T09:01:32Z"}))
            .source("checkout")
            .correlation_id("0b7a4f9e-4b2e-4f7c-9d1a-3c5e8f2a6b10")
            .build()
            .unwrap();
        assert!(Event::ptr_eq(&r.redact_event(&event), &event));
    }

    #[test]
    fn events_redact_data_source_and_correlation_id_only() {
        let r = Redactor::default();
        let event = Event::builder("user.login")
            .data(json!({"list": [1, "x", {"who": "bob@example.org"}], "n": 3}))
            .source("bob@example.org")
            .correlation_id("req:bob@example.org")
            .run_id("run-1")
            .lane("a")
            .seq(9)
            .build()
            .unwrap()
            .terminal();
        let clean = r.redact_event(&event);
        assert_eq!(
            clean.data(),
            &json!({"list": [1, "x", {"who": "[REDACTED_EMAIL]"}], "n": 3})
        );
        assert_eq!(clean.source(), Some("[REDACTED_EMAIL]"));
        assert_eq!(
            clean.correlation_id().map(CorrelationId::as_str),
            Some("req:[REDACTED_EMAIL]")
        );
        assert_eq!(clean.event_id(), event.event_id());
        assert_eq!(clean.timestamp(), event.timestamp());
        assert_eq!(clean.run_id(), Some("run-1"));
        assert_eq!(clean.lane(), Some("a"));
        assert_eq!(clean.seq(), 9);
        assert!(clean.is_marked_terminal());
        assert!(Event::ptr_eq(&r.redact_event(&clean), &clean), "idempotent");
    }

    #[test]
    fn copy_on_write_matches_in_place() {
        let r = Redactor::default();
        let value = json!({"a": ["ok", "call 415-555-2671", {"pwd": 1, "Password": 2}], "z": "x"});
        let mut in_place = value.clone();
        r.redact_value(&mut in_place);
        assert_eq!(r.redacted(&value), Some(in_place));
    }
}
