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

pub(crate) const EMAIL: &str =
    r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b";
pub(crate) const CREDIT_CARD: &str = r"\b\d(?:[ -]?\d){12,18}\b";
pub(crate) const US_SSN: &str = r"\b\d{3}(?:-\d{2}-| \d{2} )\d{4}\b";
pub(crate) const PHONE: &str = concat!(
    r"(?:\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,6}",
    r"|\(\d{3}\) ?\d{3}[ .-]\d{4}",
    r"|\b\d{3}[ .-]\d{3}[ .-]\d{4}",
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
pub(crate) const DATE_OF_BIRTH: &str = concat!(
    r#"(?i)\b(?:dob|date[ _-]?of[ _-]?birth|birth[ _-]?date|birthday|born(?:[ _-]on)?)"#,
    r#"["']?\s*[:=]?\s*["']?"#,
    r"(\d{4}-\d{1,2}-\d{1,2}|\d{4}/\d{1,2}/\d{1,2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{4})",
);
pub(crate) const PASSPORT: &str = concat!(
    r#"(?i)\bpassport(?:[ _-]?(?:no|nr|num|number|id))?\.?["']?\s*[:=#]?\s*["']?"#,
    r"((?-i:[A-Z0-9]{6,9}))\b",
);
pub(crate) const JWT: &str = r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*";
pub(crate) const BEARER_TOKEN: &str = r"(?i)\bbearer\s+([A-Za-z0-9_.~+/-]{16,}=*)";
pub(crate) const BASIC_AUTH: &str = r"(?i)\bbasic\s+([A-Za-z0-9+/]{6,}={0,2})";
pub(crate) const AWS_ACCESS_KEY_ID: &str =
    r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA)[A-Z0-9]{16}\b";
pub(crate) const AWS_SECRET_ACCESS_KEY: &str = concat!(
    r#"(?i)\baws[A-Za-z0-9_.-]{0,20}(?:secret|sk)[A-Za-z0-9_.-]{0,20}["']?\s*[:=]\s*["']?"#,
    r"([A-Za-z0-9/+]{40})",
);
pub(crate) const GITHUB_TOKEN: &str =
    r"\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{50,255})\b";
pub(crate) const GITLAB_TOKEN: &str = r"\bglpat-[A-Za-z0-9_-]{20,64}";
pub(crate) const SLACK_TOKEN: &str = concat!(
    r"\bxox[abposr]-\d{6,}-[A-Za-z0-9-]{8,}",
    r"|\bhttps://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,}",
);
pub(crate) const STRIPE_KEY: &str =
    r"\b(?:(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,247}|whsec_[A-Za-z0-9]{24,64})\b";
pub(crate) const GOOGLE_API_KEY: &str = r"\bAIza[0-9A-Za-z_-]{35}";
pub(crate) const OPENAI_KEY: &str = r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}";
pub(crate) const NPM_TOKEN: &str = r"\bnpm_[A-Za-z0-9]{36}\b";
pub(crate) const PRIVATE_KEY: &str = concat!(
    r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----",
    r"(?:(?s:.)*?-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\]*)",
);
pub(crate) const URL_PASSWORD: &str =
    r#"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s:/?#@"'<>]*:([^\s/?#@"'<>]+)@"#;
pub(crate) const SECRET_ASSIGNMENT: &str = concat!(
    r"(?i)\b(?:[A-Za-z0-9]+[_-]){0,2}",
    r"(?:api[_-]?key|api[_-]?secret|access[_-]?key|secret[_-]?key|client[_-]?secret|secret",
    r"|access[_-]?token|auth[_-]?token|refresh[_-]?token|token|password|passwd|passphrase)",
    r#"["']?\s*[:=]\s*["']?([^\s"'&,;<>{}\[\]]{3,})"#,
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
