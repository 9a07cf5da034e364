//! The built-in detectors: what each looks for, its token, and the checks a
//! candidate must pass.
//!
//! No maintained Rust crate offers validated detectors for this set (the
//! existing PII crates cover a handful of kinds without mod-97, SSN area
//! rules or JWT header checks, and none covers provider tokens), so they are
//! written here: a pattern in `patterns.rs` finds candidates, a check below
//! rejects the ones that cannot be what the detector names.

use std::fmt;
use std::ops::Range;

use super::{patterns, validate};

/// A kind of personal data or secret that a [`Redactor`](super::Redactor)
/// finds in text and replaces with the detector's [`token`](Self::token).
///
/// See the [module docs](super#detectors) for what each one matches and
/// which checks it applies. New detectors may be added in minor releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Detector {
    /// Email addresses.
    Email,
    /// Payment card numbers (Luhn and card network prefix and length).
    CreditCard,
    /// US Social Security Numbers, dashed or spaced (area and group rules).
    UsSsn,
    /// Phone numbers: E.164 (`+` and country code) and common national forms.
    Phone,
    /// IPv4 addresses (octets at most 255).
    Ipv4,
    /// IPv6 addresses, compressed and IPv4-embedded forms too.
    Ipv6,
    /// MAC addresses (colon, dash or Cisco dot form).
    MacAddress,
    /// International Bank Account Numbers (country length and mod-97).
    Iban,
    /// Dates of birth, after a `dob` / `date of birth` / `born` label.
    DateOfBirth,
    /// Passport numbers, after a `passport` label.
    Passport,
    /// JSON Web Tokens (header decoded and checked).
    Jwt,
    /// The credential of an HTTP `Bearer` authorization.
    BearerToken,
    /// The credential of an HTTP `Basic` authorization (decoded and checked).
    BasicAuth,
    /// AWS access key ids (`AKIA…`, `ASIA…`).
    AwsAccessKeyId,
    /// AWS secret access keys, after an `aws…secret` label.
    AwsSecretAccessKey,
    /// GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`).
    GithubToken,
    /// GitLab personal access tokens (`glpat-`).
    GitlabToken,
    /// Slack tokens (`xoxb-`, `xoxp-`, …) and incoming-webhook URLs.
    SlackToken,
    /// Stripe secret, restricted and publishable keys and webhook secrets.
    StripeKey,
    /// Google API keys (`AIza…`).
    GoogleApiKey,
    /// OpenAI API keys (`sk-…`, `sk-proj-…`).
    OpenAiKey,
    /// npm access tokens (`npm_…`).
    NpmToken,
    /// PEM and PGP private key blocks.
    PrivateKey,
    /// The password in a URL's user info (`scheme://user:password@host`).
    UrlPassword,
    /// The value of `api_key=`, `secret:`, `password=`, `token:` and similar
    /// assignments, in text and in JSON text.
    SecretAssignment,
}

impl Detector {
    /// Every detector, in the order that breaks ties between findings of
    /// equal span: the more specific detector comes first.
    pub const ALL: &'static [Detector] = &[
        Self::Email,
        Self::CreditCard,
        Self::UsSsn,
        Self::Phone,
        Self::Ipv4,
        Self::Ipv6,
        Self::MacAddress,
        Self::Iban,
        Self::DateOfBirth,
        Self::Passport,
        Self::Jwt,
        Self::BearerToken,
        Self::BasicAuth,
        Self::AwsAccessKeyId,
        Self::AwsSecretAccessKey,
        Self::GithubToken,
        Self::GitlabToken,
        Self::SlackToken,
        Self::StripeKey,
        Self::GoogleApiKey,
        Self::OpenAiKey,
        Self::NpmToken,
        Self::PrivateKey,
        Self::UrlPassword,
        Self::SecretAssignment,
    ];

    /// The detector's name in `snake_case`, for configuration and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::CreditCard => "credit_card",
            Self::UsSsn => "us_ssn",
            Self::Phone => "phone",
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
            Self::MacAddress => "mac_address",
            Self::Iban => "iban",
            Self::DateOfBirth => "date_of_birth",
            Self::Passport => "passport",
            Self::Jwt => "jwt",
            Self::BearerToken => "bearer_token",
            Self::BasicAuth => "basic_auth",
            Self::AwsAccessKeyId => "aws_access_key_id",
            Self::AwsSecretAccessKey => "aws_secret_access_key",
            Self::GithubToken => "github_token",
            Self::GitlabToken => "gitlab_token",
            Self::SlackToken => "slack_token",
            Self::StripeKey => "stripe_key",
            Self::GoogleApiKey => "google_api_key",
            Self::OpenAiKey => "openai_key",
            Self::NpmToken => "npm_token",
            Self::PrivateKey => "private_key",
            Self::UrlPassword => "url_password",
            Self::SecretAssignment => "secret_assignment",
        }
    }

    /// The text that replaces what the detector finds, such as
    /// `[REDACTED_EMAIL]`. No detector matches any token, which is what
    /// makes redaction idempotent.
    pub const fn token(self) -> &'static str {
        match self {
            Self::Email => "[REDACTED_EMAIL]",
            Self::CreditCard => "[REDACTED_CARD]",
            Self::UsSsn => "[REDACTED_SSN]",
            Self::Phone => "[REDACTED_PHONE]",
            Self::Ipv4 => "[REDACTED_IPV4]",
            Self::Ipv6 => "[REDACTED_IPV6]",
            Self::MacAddress => "[REDACTED_MAC]",
            Self::Iban => "[REDACTED_IBAN]",
            Self::DateOfBirth => "[REDACTED_DOB]",
            Self::Passport => "[REDACTED_PASSPORT]",
            Self::Jwt => "[REDACTED_JWT]",
            Self::BearerToken => "[REDACTED_BEARER_TOKEN]",
            Self::BasicAuth => "[REDACTED_BASIC_AUTH]",
            Self::AwsAccessKeyId => "[REDACTED_AWS_KEY_ID]",
            Self::AwsSecretAccessKey => "[REDACTED_AWS_SECRET]",
            Self::GithubToken => "[REDACTED_GITHUB_TOKEN]",
            Self::GitlabToken => "[REDACTED_GITLAB_TOKEN]",
            Self::SlackToken => "[REDACTED_SLACK_TOKEN]",
            Self::StripeKey => "[REDACTED_STRIPE_KEY]",
            Self::GoogleApiKey => "[REDACTED_GOOGLE_API_KEY]",
            Self::OpenAiKey => "[REDACTED_OPENAI_KEY]",
            Self::NpmToken => "[REDACTED_NPM_TOKEN]",
            Self::PrivateKey => "[REDACTED_PRIVATE_KEY]",
            Self::UrlPassword => "[REDACTED_PASSWORD]",
            Self::SecretAssignment => "[REDACTED_SECRET]",
        }
    }

    /// The pattern that finds candidates (see `patterns.rs`).
    pub(crate) fn pattern(self) -> &'static str {
        patterns::ALL[self as usize]
    }

    /// Where the value starts in `matched`, a match of a labelled pattern
    /// whose value is the match's tail; `None` when the capture group must
    /// say.
    pub(crate) fn value_offset(self, matched: &str) -> Option<usize> {
        match self {
            // `Bearer <token>`, `Bearer%20<token>`.
            Self::BearerToken => {
                let mut rest = matched.get(6..)?;
                loop {
                    rest = if let Some(r) = rest.strip_prefix("%20") {
                        r
                    } else if let Some(r) = rest.strip_prefix(['+', ' ', '\t', '\n', '\r']) {
                        r
                    } else {
                        break;
                    };
                }
                Some(matched.len() - rest.len())
            }
            // `Basic <credentials>`.
            Self::BasicAuth => {
                let label = matched.find(char::is_whitespace)?;
                let rest = &matched[label..];
                Some(label + rest.len() - rest.trim_start().len())
            }
            // The key, then `:` / `=` / `%3A` / `%3D` between optional
            // quotes and spaces: the capture engine would cost more than
            // the search on a long value.
            Self::SecretAssignment => {
                let b = matched.as_bytes();
                let skip =
                    |i: usize, f: fn(u8) -> bool| i + b[i..].iter().take_while(|&&c| f(c)).count();
                let mut i = skip(0, |c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
                i += usize::from(b.get(i) == Some(&b'\\'));
                i += usize::from(matches!(b.get(i), Some(b'"' | b'\'')));
                i = skip(i, |c| c.is_ascii_whitespace());
                if matches!(b.get(i), Some(b':' | b'=')) {
                    i += 1;
                } else if matched
                    .get(i..i + 3)
                    .is_some_and(|e| e.eq_ignore_ascii_case("%3a") || e.eq_ignore_ascii_case("%3d"))
                {
                    i += 3;
                } else {
                    return None;
                }
                i = skip(i, |c| c.is_ascii_whitespace());
                i += usize::from(b.get(i) == Some(&b'\\'));
                i += usize::from(matches!(b.get(i), Some(b'"' | b'\'')));
                (i < b.len()).then_some(i)
            }
            // The value is base64 after the last separator of the label.
            Self::AwsSecretAccessKey => matched
                .trim_end_matches('=')
                .rfind([':', '=', '"', '\'', ' ', '\t', '\n'])
                .map(|i| i + 1),
            _ => None,
        }
    }

    /// The span of the value found at `span` of `text`, extended where a
    /// pattern finds only its beginning: a quoted or several-word secret,
    /// a private key block's footer.
    pub(crate) fn extend(self, text: &str, span: Range<usize>, cx: &mut Context) -> Range<usize> {
        match self {
            // A URL-encoded `&` ends a URL-encoded query parameter.
            // Non-ASCII punctuation (`«`, `’`, a no-break space) is not
            // part of an address.
            Self::Email => {
                let stray = |c: char| !c.is_ascii() && !c.is_alphanumeric();
                let found = &text[span.clone()];
                let start = span.start + found.len() - found.trim_start_matches(stray).len();
                let end = span.start + found.trim_end_matches(stray).len();
                start..end.max(start)
            }
            Self::SecretAssignment => {
                let end = secret_end(text, &span, cx);
                let value = &text[span.start..end];
                span.start..value.find("%26").map_or(end, |i| span.start + i)
            }
            Self::PrivateKey => span.start..cx.pem_footer_end(text, span.end).unwrap_or(span.end),
            _ => span,
        }
    }

    /// Whether a candidate this detector rejected had its shape (a card
    /// number's network prefix and length, an IBAN's country and length)
    /// and failed only its checksum: then no other detector may take a
    /// piece of it (a phone number in the tail of a mistyped IBAN).
    pub(crate) fn vetoes(self, text: &str, span: Range<usize>) -> bool {
        let found = &text[span];
        match self {
            Self::CreditCard => {
                consistent_separators(found) && validate::card_network(&validate::digits(found))
            }
            Self::Iban => validate::iban_shape(found),
            _ => false,
        }
    }

    /// Where to search again after the candidate matched at `whole` was
    /// rejected: one character later, so that a false candidate cannot hide
    /// a true one it overlaps (`12 4111 1111 1111 1111`), unless no
    /// candidate starting before some later point can be accepted. Keeps
    /// each detector linear: a rejected candidate is not rescanned from
    /// each of its characters (an address with a 60 KiB local part, a
    /// dotted run of 30,000 numbers).
    pub(crate) fn resume(self, text: &str, whole: Range<usize>) -> usize {
        let bytes = text.as_bytes();
        let run_end = |joiner: fn(u8) -> bool| {
            whole.start
                + bytes[whole.start..]
                    .iter()
                    .take_while(|&&b| joiner(b))
                    .count()
        };
        let next = match self {
            // An address is whole or not at all; a key block ends where its
            // base64 does.
            Self::Email | Self::PrivateKey => whole.end,
            // Every later start in the same dotted or colon-joined run is
            // joined to what precedes it, which these detectors reject.
            Self::Ipv4 => run_end(|b| b.is_ascii_digit() || b == b'.'),
            Self::Ipv6 => run_end(|b| b.is_ascii_alphanumeric() || b == b':' || b == b'.'),
            Self::MacAddress => {
                run_end(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'.'))
            }
            // A card starts a group of 3 or more digits, 2 to 6 first.
            Self::CreditCard => {
                let mut p = whole.start + 1;
                while p < bytes.len()
                    && !(matches!(bytes[p], b'2'..=b'6')
                        && !is_word(bytes[p - 1])
                        && bytes[p..].iter().take(3).all(u8::is_ascii_digit))
                {
                    p += 1;
                }
                p
            }
            _ => whole.start + 1,
        };
        // On a character boundary, and always forward.
        let mut next = next.max(whole.start + 1).min(text.len());
        while !text.is_char_boundary(next) {
            next += 1;
        }
        next
    }

    /// Whether the candidate at `span` of `text` is what the detector names.
    pub(crate) fn accepts(self, text: &str, span: Range<usize>, cx: &mut Context) -> bool {
        let found = &text[span.clone()];
        match self {
            Self::Email => email(text, &span) && !cx.in_url_authority(text, span.start),
            Self::CreditCard => {
                let digits = validate::digits(found);
                consistent_separators(found)
                    && validate::card_network(&digits)
                    && validate::luhn(&digits)
            }
            Self::UsSsn => detached(text, &span, b"-.") && validate::ssn(&validate::digits(found)),
            Self::Phone => detached(text, &span, b"-.") && phone(found),
            Self::Ipv4 => {
                detached(text, &span, b".")
                    && validate::ipv4(found)
                    && validate::ip_identifies(found)
                    && !version_like(text, &span)
            }
            Self::Ipv6 => {
                !is_token_byte(before(text, &span), b":.")
                    && !is_token_byte(after(text, &span), b":")
                    && validate::ipv6(found)
            }
            Self::MacAddress => {
                detached(text, &span, b":-.")
                    && !found
                        .bytes()
                        .filter(u8::is_ascii_hexdigit)
                        .all(|b| b == b'0' || b.eq_ignore_ascii_case(&b'f'))
            }
            Self::Iban => validate::iban(found),
            Self::DateOfBirth => {
                !after(text, &span).is_some_and(|b| b.is_ascii_digit())
                    && validate::birth_date(found)
            }
            Self::Passport => found.bytes().filter(u8::is_ascii_digit).count() >= 2,
            Self::Jwt => !is_token_byte(after(text, &span), b"-_=") && validate::jwt(found),
            // After an `Authorization:` label the token is one whatever it
            // looks like; elsewhere `bearer` is also an English word.
            Self::BearerToken => {
                authorization_label(text, span.start)
                    || (found.len() >= 16
                        && found.bytes().any(|b| b.is_ascii_digit())
                        && found.bytes().any(|b| b.is_ascii_alphabetic()))
            }
            Self::BasicAuth => validate::basic_credentials(found),
            Self::AwsAccessKeyId => {
                let body = &found.as_bytes()[4..];
                body.iter().any(|&b| b != body[0])
            }
            // A secret access key is 40 characters, a session token hundreds.
            Self::AwsSecretAccessKey => {
                let len = found.trim_end_matches('=').len();
                (len == 40 || len >= 100)
                    && !is_token_byte(after(text, &span), b"/+=")
                    && mixed_case_and_digits(found)
            }
            Self::GitlabToken | Self::GoogleApiKey => !is_token_byte(after(text, &span), b"-_"),
            Self::OpenAiKey => {
                let key = found.trim_start_matches("sk-");
                let key = ["proj-", "svcacct-", "admin-"]
                    .iter()
                    .find_map(|p| key.strip_prefix(p))
                    .unwrap_or(key);
                !is_token_byte(after(text, &span), b"-_") && mixed_case_and_digits(key)
            }
            Self::SlackToken
            | Self::GithubToken
            | Self::StripeKey
            | Self::NpmToken
            | Self::PrivateKey
            | Self::UrlPassword => true,
            Self::SecretAssignment => {
                found.chars().count() >= 3 && !placeholder(found) && !bare_json_value(text, &span)
            }
        }
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn before(text: &str, span: &Range<usize>) -> Option<u8> {
    text.as_bytes()[..span.start].last().copied()
}

fn after(text: &str, span: &Range<usize>) -> Option<u8> {
    text.as_bytes().get(span.end).copied()
}

/// Whether `b` is a letter, a digit, or one of `extra`.
fn is_token_byte(b: Option<u8>, extra: &[u8]) -> bool {
    b.is_some_and(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// Whether the candidate stands alone rather than being one piece of a
/// longer dotted or dashed run: `1.2.3.4.5` holds no IPv4 address and a
/// UUID holds no phone number.
fn detached(text: &str, span: &Range<usize>, joiners: &[u8]) -> bool {
    let bytes = text.as_bytes();
    let joined = |joiner: Option<u8>, beyond: Option<u8>| {
        joiner.is_some_and(|j| joiners.contains(&j))
            && beyond.is_some_and(|b| b.is_ascii_alphanumeric())
    };
    let start_ok = match span.start {
        0 => true,
        1 => !bytes[0].is_ascii_alphanumeric(),
        s => {
            !bytes[s - 1].is_ascii_alphanumeric() && !joined(Some(bytes[s - 1]), Some(bytes[s - 2]))
        }
    };
    let end_ok = !bytes.get(span.end).is_some_and(u8::is_ascii_alphanumeric)
        && !joined(
            bytes.get(span.end).copied(),
            bytes.get(span.end + 1).copied(),
        );
    start_ok && end_ok
}

/// An email address at `span`: the whole address (the pattern's local part
/// starts at the first character that can be in one, so a match preceded
/// by such a character is a piece of something longer), within the RFC
/// 5321 lengths, and not one of the shapes that only look like one: an
/// `scp`-style remote or `host:port` after it (`git@github.com:org/repo`),
/// an asset name with a pixel density (`logo@2x.png`) or an image
/// extension for a top-level domain.
fn email(text: &str, span: &Range<usize>) -> bool {
    let found = &text[span.clone()];
    let Some((local, domain)) = found.rsplit_once('@') else {
        return false;
    };
    let local_char = |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-');
    let rest = &text[span.end..];
    let mut next = rest.chars();
    let follower = next.next();
    let scp_like = follower == Some(':') && next.next().is_some_and(|c| !c.is_whitespace());
    let (hosts, tld) = domain.rsplit_once('.').unwrap_or(("", domain));
    let density = hosts
        .split('.')
        .next()
        .and_then(|first| first.strip_suffix(['x', 'X']))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    !text[..span.start]
        .chars()
        .next_back()
        .is_some_and(local_char)
        && !follower.is_some_and(|c| c.is_alphanumeric() || c == '_')
        && !scp_like
        && !density
        && !ASSET_EXTENSIONS.iter().any(|e| tld.eq_ignore_ascii_case(e))
        && local.chars().count() <= 64
        && found.chars().count() <= 254
        && domain.split('.').all(|label| label.chars().count() <= 63)
}

/// File extensions that are not top-level domains in practice, which is
/// how `sprite@2.png` or `icon@dark.svg` is told from an address.
const ASSET_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "ico", "bmp", "tif", "tiff", "heic", "css",
    "js", "mjs", "map", "woff", "woff2", "ttf", "otf",
];

/// What a detector remembers while it scans one chunk, so that the checks
/// that look around a candidate stay linear in the chunk instead of
/// scanning from its start for every candidate.
#[derive(Debug)]
pub(crate) struct Context {
    /// Bytes before this have been read for [`Self::in_url_authority`].
    seen: usize,
    /// Where the authority of the URL being read starts (after `://`),
    /// while no character that ends an authority has followed.
    authority: Option<usize>,
    /// Where the first private key footer at or after `.0` starts and
    /// ends, if there is one.
    footer: Option<(usize, Option<Range<usize>>)>,
    /// The last search for a closing quote: which quote, whether escaped,
    /// from where, and where it stopped (the quote, a newline or the end).
    quote: Option<(u8, bool, usize, usize)>,
}

impl Context {
    /// A context for a chunk starting at `start`. No finding straddles a
    /// chunk's start, and neither does a URL authority (a chunk starts
    /// after `,"`, and `"` ends an authority).
    pub(crate) fn new(start: usize) -> Self {
        Self {
            seen: start,
            authority: None,
            footer: None,
            quote: None,
        }
    }

    /// The first `quote` at or after `from` that is escaped when `escaped`
    /// says (`\"` in JSON text inside JSON text) and not otherwise, or
    /// `None` when a newline or the end of `text` comes first. Remembered,
    /// so that a text of many opening quotes and no closing one is read
    /// once.
    fn closing_quote(
        &mut self,
        text: &str,
        quote: u8,
        escaped: bool,
        from: usize,
    ) -> Option<usize> {
        let bytes = text.as_bytes();
        let stop = match self.quote {
            Some((q, e, searched_from, stop))
                if q == quote && e == escaped && searched_from <= from && from <= stop =>
            {
                stop
            }
            _ => {
                let mut i = from;
                while i < bytes.len()
                    && bytes[i] != b'\n'
                    && !(bytes[i] == quote && is_escaped(bytes, i) == escaped)
                {
                    i += 1;
                }
                self.quote = Some((quote, escaped, from, i));
                i
            }
        };
        (bytes.get(stop) == Some(&quote)).then_some(stop)
    }

    /// Whether `at` is inside the authority of a URL
    /// (`scheme://user:pw@host`), where `user@host` or `pw@host` is not an
    /// email address. Calls must come with `at` not decreasing.
    fn in_url_authority(&mut self, text: &str, at: usize) -> bool {
        let bytes = text.as_bytes();
        while self.seen < at {
            let b = bytes[self.seen];
            if b == b':' && bytes[self.seen + 1..].starts_with(b"//") {
                self.seen += 3;
                self.authority = Some(self.seen);
                continue;
            }
            if b.is_ascii_whitespace()
                || matches!(b, b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>')
            {
                self.authority = None;
            }
            self.seen += 1;
        }
        self.authority.is_some_and(|start| start <= at)
    }

    /// The end of the first private key footer (`-----END … PRIVATE
    /// KEY-----`) at or after `from`, remembered so that a text of many
    /// headers and no footer is searched once.
    fn pem_footer_end(&mut self, text: &str, from: usize) -> Option<usize> {
        if let Some((searched_from, found)) = &self.footer {
            if *searched_from <= from && found.as_ref().is_none_or(|f| f.start >= from) {
                return found.as_ref().map(|f| f.end);
            }
        }
        let found = pem_footer(text, from);
        let end = found.as_ref().map(|f| f.end);
        self.footer = Some((from, found));
        end
    }
}

fn pem_footer(text: &str, from: usize) -> Option<Range<usize>> {
    let mut at = from;
    while let Some(i) = text[at..].find("-----END ") {
        let start = at + i;
        let rest = &text[start + 8..];
        let label_len = rest.len()
            - rest
                .trim_start_matches(|c: char| {
                    c == ' ' || c.is_ascii_uppercase() || c.is_ascii_digit()
                })
                .len();
        let label = rest[..label_len].trim_end();
        if rest[label_len..].starts_with("-----")
            && (label.ends_with("PRIVATE KEY") || label.ends_with("PRIVATE KEY BLOCK"))
        {
            return Some(start..start + 8 + label_len + 5);
        }
        at = start + 8;
    }
    None
}

/// Where a secret value that starts at `span.start` ends: at its closing
/// quote when it is quoted (`"correct horse"`, `\"…\"` in JSON text inside
/// JSON text), else after the words that follow it on the same line, up to
/// a delimiter or to what reads as the next assignment (`user=bob`,
/// `user: bob`).
fn secret_end(text: &str, span: &Range<usize>, cx: &mut Context) -> usize {
    let bytes = text.as_bytes();
    match span.start.checked_sub(1).map(|i| (i, bytes[i])) {
        Some((q, quote @ (b'"' | b'\''))) => {
            let escaped = is_escaped(bytes, q);
            match cx.closing_quote(text, quote, escaped, span.start) {
                Some(i) if escaped => i - 1,
                Some(i) => i,
                None => span.end,
            }
        }
        _ => {
            let delimiter = |b: u8| {
                matches!(
                    b,
                    b'"' | b'\'' | b'&' | b',' | b';' | b'<' | b'>' | b'{' | b'}' | b'[' | b']'
                )
            };
            let mut end = span.end;
            loop {
                let spaces = bytes[end..]
                    .iter()
                    .take_while(|&&b| b == b' ' || b == b'\t')
                    .count();
                if spaces == 0 {
                    return end;
                }
                let start = end + spaces;
                let word = bytes[start..]
                    .iter()
                    .take_while(|&&b| !b.is_ascii_whitespace() && !delimiter(b))
                    .count();
                let next = bytes[start + word..]
                    .iter()
                    .find(|&&b| b != b' ' && b != b'\t');
                let key = bytes[start..start + word].contains(&b'=')
                    || bytes[start..start + word].ends_with(b":")
                    || next == Some(&b':');
                if word == 0 || key {
                    return end;
                }
                end = start + word;
            }
        }
    }
}

/// Whether the byte at `i` is escaped by an odd run of backslashes.
fn is_escaped(bytes: &[u8], i: usize) -> bool {
    bytes[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// Whether `start`, the start of a bearer token, follows `Authorization:`
/// or `Proxy-Authorization:` and `Bearer`, in headers or in JSON text.
fn authorization_label(text: &str, start: usize) -> bool {
    let before = text[..start.min(text.len())]
        .trim_end_matches(|c: char| c.is_whitespace() || c == '+')
        .trim_end_matches("%20");
    let Some(label) = before.len().checked_sub(6).and_then(|i| before.get(..i)) else {
        return false;
    };
    let label = label.trim_end_matches(|c: char| {
        c.is_whitespace() || matches!(c, ':' | '=' | '"' | '\'' | '\\')
    });
    label
        .len()
        .checked_sub(13)
        .and_then(|i| label.get(i..))
        .is_some_and(|l| l.eq_ignore_ascii_case("authorization"))
}

/// Whether a dotted quad at `span` is a section or version number rather
/// than an address: right after a word that introduces one (`section`,
/// `§`, `chapter`, `version`, `release`, … with optional `.` and spaces),
/// or followed by a pre-release or build suffix (`4.2.1.3-beta`,
/// `1.2.3.4+build`).
fn version_like(text: &str, span: &Range<usize>) -> bool {
    const WORDS: &[&str] = &[
        "section",
        "sections",
        "sec",
        "sect",
        "chapter",
        "chap",
        "ch",
        "clause",
        "article",
        "art",
        "paragraph",
        "para",
        "part",
        "rule",
        "item",
        "step",
        "table",
        "figure",
        "fig",
        "appendix",
        "annex",
        "version",
        "ver",
        "v",
        "release",
        "rel",
        "revision",
        "rev",
        "build",
    ];
    let bytes = text.as_bytes();
    let suffix = bytes.get(span.end).copied();
    let beyond = bytes.get(span.end + 1).copied();
    if (suffix == Some(b'-') && beyond.is_some_and(|b| b.is_ascii_alphabetic()))
        || (suffix == Some(b'+') && beyond.is_some_and(|b| b.is_ascii_alphanumeric()))
    {
        return true;
    }
    let before = text[..span.start].trim_end_matches([' ', '\u{a0}', '.']);
    if before.ends_with('§') {
        return true;
    }
    let word_len = before
        .bytes()
        .rev()
        .take_while(u8::is_ascii_alphabetic)
        .count();
    let word = &before[before.len() - word_len..];
    word_len > 0 && word_len < 12 && WORDS.iter().any(|w| word.eq_ignore_ascii_case(w))
}

/// Card numbers are written with one kind of separator, in groups of 3 to 6.
fn consistent_separators(found: &str) -> bool {
    let mut separators = found.bytes().filter(|b| !b.is_ascii_digit());
    let Some(first) = separators.next() else {
        return true;
    };
    separators.all(|s| s == first)
        && found
            .split(char::from(first))
            .all(|group| (3..=6).contains(&group.len()))
}

fn phone(found: &str) -> bool {
    let digits = validate::digits(found);
    if found.matches('(').count() != found.matches(')').count() {
        return false;
    }
    match found.as_bytes()[0] {
        b'+' => (8..=15).contains(&digits.len()),
        b'0' => (9..=12).contains(&digits.len()),
        // North American numbering plan, after the trunk prefix 1 or not:
        // area code and exchange start 2 to 9.
        _ => {
            let national = match digits.len() {
                10 => &digits[..],
                11 if digits[0] == 1 => &digits[1..],
                _ => return false,
            };
            national[0] >= 2 && national[3] >= 2
        }
    }
}

fn mixed_case_and_digits(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_uppercase())
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && s.bytes().any(|b| b.is_ascii_digit())
}

/// Whether the value at `span` follows a quoted key without a quote of its
/// own (`"token":12345`): a JSON number, `null` or `true`, which a token in
/// its place would turn into invalid JSON. Such values are left to
/// key-based redaction.
fn bare_json_value(text: &str, span: &Range<usize>) -> bool {
    let before = text[..span.start].trim_end();
    if before.ends_with(['"', '\'']) {
        return false;
    }
    before
        .strip_suffix([':', '='])
        .is_some_and(|key| key.trim_end().ends_with('"'))
}

/// Values that stand in for a secret rather than being one.
fn placeholder(value: &str) -> bool {
    const WORDS: &[&str] = &[
        "null",
        "none",
        "nil",
        "true",
        "false",
        "undefined",
        "bearer",
        "basic",
        "redacted",
    ];
    WORDS.iter().any(|w| value.eq_ignore_ascii_case(w))
        || value
            .bytes()
            .all(|b| b == b'*' || b == b'x' || b == b'X' || b == b'.')
        || value.starts_with("${")
        || value.starts_with("{{")
        || value.starts_with("%(")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn all_lists_every_detector_once_in_pattern_order() {
        assert_eq!(Detector::ALL.len(), patterns::ALL.len());
        for (i, d) in Detector::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i, "{d} is out of order");
        }
        let names: HashSet<_> = Detector::ALL.iter().map(|d| d.name()).collect();
        let tokens: HashSet<_> = Detector::ALL.iter().map(|d| d.token()).collect();
        assert_eq!(names.len(), Detector::ALL.len());
        assert_eq!(tokens.len(), Detector::ALL.len());
    }

    #[test]
    fn every_pattern_compiles() {
        for d in Detector::ALL {
            regex::Regex::new(&patterns::ascii(d.pattern())).unwrap_or_else(|e| panic!("{d}: {e}"));
        }
    }

    #[test]
    fn no_pattern_matches_a_token() {
        for d in Detector::ALL {
            let re = regex::Regex::new(&patterns::ascii(d.pattern())).unwrap();
            for t in Detector::ALL {
                assert!(!re.is_match(t.token()), "{d} matches {}", t.token());
            }
            assert!(
                !re.is_match(super::super::REDACTED),
                "{d} matches [REDACTED]"
            );
        }
    }

    #[test]
    fn detached_rejects_pieces_of_longer_runs() {
        let text = "1.2.3.4.5";
        assert!(!detached(text, &(0..7), b"."));
        assert!(!detached(text, &(2..9), b"."));
        assert!(detached("ip 1.2.3.4.", &(3..10), b"."));
    }
}
