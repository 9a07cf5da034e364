//! The regular expressions that find candidates, one per detector, in the
//! order of `Detector::ALL`.
//!
//! This file depends on nothing else in the crate so that the `redact`
//! benchmark can include it and compare against the same patterns. A
//! pattern with a capture group redacts only that group (the value after
//! `password=`, the token after `Bearer`); otherwise the whole match.
//!
//! The patterns are written with `\b` and `\d` for readability; [`ascii`]
//! makes both ASCII-only before compiling, which keeps them off the slow
//! path the regex engines take for Unicode word boundaries on non-ASCII
//! text, and keeps `\d` from matching other scripts' digits.

// Any non-ASCII character counts as a letter here, so that
// internationalized addresses (RFC 6531) are matched whole, never from
// their first ASCII letter; non-ASCII punctuation at either end is trimmed
// off in `detectors.rs` (a Unicode letter class would cost more on every
// line). What follows the top-level domain is checked there too, because
// an ASCII-only `\b` sees no boundary after a non-ASCII character.
pub(crate) const EMAIL: &str = concat!(
    r"[A-Za-z0-9._%+\x{80}-\x{10FFFF}-]+@",
    r"(?:[A-Za-z0-9\x{80}-\x{10FFFF}](?:[A-Za-z0-9\x{80}-\x{10FFFF}-]*[A-Za-z0-9\x{80}-\x{10FFFF}])?\.)+",
    r"(?:xn--[A-Za-z0-9-]{1,59}|[A-Za-z\x{80}-\x{10FFFF}]{2,24})",
);
pub(crate) const CREDIT_CARD: &str = r"\b[2-6](?:[ -]?\d){12,18}\b";
pub(crate) const US_SSN: &str = concat!(
    r"\b[0-8]\d{2}(?:-\d{2}-| \d{2} )\d{4}\b",
    // Nine bare digits only right after an SSN label.
    r#"|(?i:\b(?:ssn|social[ _-]?security(?:[ _-]?(?:number|num|no))?)\.?\\?["']?\s*[:=#]?\s*\\?["']?)"#,
    r"(\d{9})\b",
);
pub(crate) const PHONE: &str = concat!(
    r"(?:\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,6}",
    // North American, with or without the trunk prefix 1.
    r"|(?:\b1[ .-]?)?\([2-9]\d{2}\) ?[2-9]\d{2}[ .-]\d{4}",
    r"|\b(?:1[ .-])?[2-9]\d{2}[ .-][2-9]\d{2}[ .-]\d{4}",
    r"|\b0\d{1,4}(?:[ .-]\d{2,8}){1,4})\b",
);
pub(crate) const IPV4: &str = r"\b(?:\d{1,3}\.){3}\d{1,3}\b";
pub(crate) const IPV6: &str = concat!(
    r"(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}",
    r"|(?:[0-9A-Fa-f]{1,4}:){1,7}:(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?(?:\.\d{1,3}){0,3}",
    r"|::(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?(?:\.\d{1,3}){0,3}",
);
pub(crate) const MAC_ADDRESS: &str = concat!(
    r"\b(?:[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}",
    r"|[0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){5}",
    r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})\b",
);
pub(crate) const IBAN: &str = r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b";
/// English, French and German month names and their usual abbreviations.
macro_rules! month {
    () => {
        concat!(
            r"(?:jan(?:uary|vier|uar)?|j[äa]n(?:ner)?|feb(?:ruary|ruar)?|f[ée]v(?:rier)?",
            r"|mar(?:ch|s)?|m[äa]rz|apr(?:il)?|avr(?:il)?|may|mai|june?|juin|juni",
            r"|july?|juil(?:let)?|juli|aug(?:ust)?|ao[ûu]t|sept?(?:ember|embre)?",
            r"|oct(?:ober|obre)?|okt(?:ober)?|nov(?:ember|embre)?|d[ée]c(?:ember|embre)?",
            r"|dez(?:ember)?)\.?",
        )
    };
}

pub(crate) const DATE_OF_BIRTH: &str = concat!(
    r#"(?i)\b(?:dob|d\.o\.b\.?|date[ _-]?of[ _-]?birth|birth[ _-]?date|birthday|born(?:[ _-]on)?"#,
    r"|date[ _-]de[ _-]naissance|n[ée](?:\(e\)|e)?[ _-]le",
    r"|geburtsdatum|geburtstag|geb(?:oren)?(?:[ _-]am)?\.?)",
    r#"\\?["']?\s*[:=]?\s*\\?["']?"#,
    r"(\d{4}-\d{1,2}-\d{1,2}|\d{4}/\d{1,2}/\d{1,2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{4}",
    // 17 May 1990, 17th of May, 1990, 1er mai 1990, 17. Mai 1990.
    r"|\d{1,2}(?:st|nd|rd|th|er|\.)?(?:\s+of)?\s+",
    month!(),
    r",?\s+\d{4}",
    // May 17, 1990.
    r"|",
    month!(),
    r"\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4})",
);
pub(crate) const PASSPORT: &str = concat!(
    r#"(?i)\bpassport(?:[ _-]?(?:no|nr|num|number|id))?\.?\\?["']?\s*[:=#]?\s*\\?["']?"#,
    r"((?-i:[A-Z0-9]{6,9}))\b",
);
pub(crate) const JWT: &str = r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*";
// The separator may be URL-encoded (`Bearer%20…`, `Bearer+…`).
pub(crate) const BEARER_TOKEN: &str = r"(?i)\bbearer(?:\s|%20|\+)+([A-Za-z0-9_.~+/%-]{8,}=*)";
pub(crate) const BASIC_AUTH: &str = r"(?i)\bbasic\s+([A-Za-z0-9+/]{6,}={0,2})";
pub(crate) const AWS_ACCESS_KEY_ID: &str =
    r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA)[A-Z0-9]{16}\b";
// Secret keys (40 characters) and session tokens (hundreds), after the
// labels the AWS tools print: `aws_secret_access_key = …` (credentials
// file), `"SecretAccessKey": "…"` (STS JSON), `AWS Secret Access Key
// [None]: …` (`aws configure`), `aws secret key: …`, `aws_session_token`.
pub(crate) const AWS_SECRET_ACCESS_KEY: &str = concat!(
    r"(?i)(?:\baws[A-Za-z0-9_. -]{0,20}(?:secret|sk)[A-Za-z0-9_. -]{0,20}",
    r"|\bsecret[_-]?access[_-]?key|\b(?:aws[_-]?)?session[_-]?token)",
    r"(?:\s*\[[^\]\n]{0,40}\])?",
    r#"\\?["']?\s*[:=]\s*\\?["']?"#,
    r"([A-Za-z0-9/+]{40,}={0,2})",
);
pub(crate) const GITHUB_TOKEN: &str =
    r"\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{50,255})\b";
pub(crate) const GITLAB_TOKEN: &str = r"\bglpat-[A-Za-z0-9_-]{20,64}";
pub(crate) const SLACK_TOKEN: &str = concat!(
    r"\b(?:xoxe\.)?xox[abeoprs]-\d+-[A-Za-z0-9-]{8,}",
    r"|\bxapp-\d+-[A-Za-z0-9-]{8,}",
    r"|\bhttps://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,}",
);
pub(crate) const STRIPE_KEY: &str =
    r"\b(?:(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,247}|whsec_[A-Za-z0-9]{24,64})\b";
pub(crate) const GOOGLE_API_KEY: &str = r"\bAIza[0-9A-Za-z_-]{35}";
pub(crate) const OPENAI_KEY: &str = r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}";
pub(crate) const NPM_TOKEN: &str = r"\bnpm_[A-Za-z0-9]{36}\b";
// The header and the base64 that follows; the match is extended to the
// footer in `detectors.rs` (a lazy `.*?` to the footer here would rescan
// the rest of the text for every header: quadratic).
pub(crate) const PRIVATE_KEY: &str = concat!(
    r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----",
    r"[A-Za-z0-9+/=\s\\]*",
);
pub(crate) const URL_PASSWORD: &str =
    r#"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s:/?#@"'<>]*:([^\s/?#@"'<>]+)@"#;
// Keys may sit in JSON text inside JSON text (`\"password\":\"…\"`) and
// the `=` may be URL-encoded (`%3D`). The value is the first word here; a
// quoted value is extended to its closing quote and an unquoted one over
// the words that follow it in `detectors.rs`.
pub(crate) const SECRET_ASSIGNMENT: &str = concat!(
    r"(?i)\b(?:[A-Za-z0-9]+[_-]){0,2}",
    r"(?:api[_-]?key|api[_-]?secret|access[_-]?key|secret[_-]?key|client[_-]?secret",
    r"|private[_-]?key|secret|access[_-]?token|auth[_-]?token|refresh[_-]?token",
    r"|session[_-]?token|token|password|passwd|passphrase)",
    r#"\\?["']?\s*(?:[:=]|%3[ADad])\s*\\?["']?([^\s"'&,;<>{}\[\]]+)"#,
);

/// Every pattern, in the order of `Detector::ALL`.
pub(crate) const ALL: [&str; 25] = [
    EMAIL,
    CREDIT_CARD,
    US_SSN,
    PHONE,
    IPV4,
    IPV6,
    MAC_ADDRESS,
    IBAN,
    DATE_OF_BIRTH,
    PASSPORT,
    JWT,
    BEARER_TOKEN,
    BASIC_AUTH,
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    GITHUB_TOKEN,
    GITLAB_TOKEN,
    SLACK_TOKEN,
    STRIPE_KEY,
    GOOGLE_API_KEY,
    OPENAI_KEY,
    NPM_TOKEN,
    PRIVATE_KEY,
    URL_PASSWORD,
    SECRET_ASSIGNMENT,
];

/// `pattern` with `\b` and `\d` made ASCII-only.
pub(crate) fn ascii(pattern: &str) -> String {
    pattern.replace(r"\b", r"(?-u:\b)").replace(r"\d", "[0-9]")
}
