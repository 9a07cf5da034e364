//! The worst shapes of text found for the redactor's cost: each repeats a
//! unit that makes some detector find, reject or extend many candidates.
//! Shared by the `cost` test (a generous bound, so that a quadratic
//! detector fails it) and the `redact` benchmark (`worst/*`, the figures in
//! `docs/benchmarks.md`).

/// The length of each line.
pub(crate) const LINE_LEN: usize = 64 * 1024;

/// `unit` repeated to [`LINE_LEN`] bytes (cut at a character boundary).
pub(crate) fn repeat(unit: &str) -> String {
    let mut line = unit.repeat(LINE_LEN / unit.len() + 1);
    let mut end = LINE_LEN;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line.truncate(end);
    line
}

/// `head`, then `unit` repeated, to [`LINE_LEN`] bytes (ASCII only).
fn prefixed(head: &str, unit: &str) -> String {
    let mut line = repeat(unit);
    line.replace_range(..head.len(), head);
    line
}

/// Every shape, by name.
pub(crate) fn shapes() -> Vec<(&'static str, String)> {
    let mut long_local = "a".repeat(LINE_LEN - 8);
    long_local.push_str("@b.co.uk");
    vec![
        // Email: many short addresses; addresses with nothing between them;
        // inside one endless URL authority; one huge local part; local
        // parts with no domain; non-ASCII local parts.
        ("emails", repeat("a@b.co ")),
        ("emails_joined", repeat("a@b.co,")),
        ("emails_in_authority", prefixed("https://", "u@h.co:")),
        ("long_local_part", long_local),
        ("at_signs", repeat("aaaaaaaaaa@")),
        ("unicode_emails", repeat("josé@exämple.com ")),
        ("asset_names", repeat("logo@2x.png ")),
        // Digits: one run; groups that cards, phones and SSNs try at every
        // start; dotted and dashed runs; checksum-rejected cards (vetoes).
        ("digits", repeat("1")),
        ("digit_pairs", repeat("1 ")),
        ("digit_dashes", repeat("1-")),
        ("digit_dots", repeat("1.")),
        ("bad_cards", repeat("4111 1111 1111 1112 ")),
        ("phones", repeat("06 12 34 56 78 ")),
        ("trunk_phones", repeat("1-800-555-0199 ")),
        ("ssns", repeat("SSN: 123456789 ")),
        // Addresses.
        ("ipv4", repeat("10.0.0.1 ")),
        ("unspecified", repeat("0.0.0.0 ")),
        ("sections", repeat("§ 4.2.1.3 ")),
        ("hex_colons", repeat("a:")),
        ("ipv6", repeat("2001:db8::1 ")),
        ("macs", repeat("00:1a:2b:3c:4d:5e ")),
        // Labelled values: quotes that never close, secrets of many words,
        // keys with nothing after them, labels everywhere.
        ("open_quotes", repeat("password=\"a\\\" ")),
        ("escaped_keys", repeat("\\\"password\\\":\\\"a b\\\",")),
        ("secret_words", prefixed("password: ", "a ")),
        ("bare_keys", repeat("token=")),
        ("aws_labels", repeat("aws secret key: ")),
        ("dob_labels", repeat("dob: 17 May ")),
        ("bearers", repeat("Bearer abcdefgh ")),
        ("authorization", repeat("Authorization: Bearer ")),
        // Tokens and blocks.
        ("pem_headers", repeat("-----BEGIN PRIVATE KEY-----")),
        ("jwt_like", repeat("eyJhbGciOi.eyJzdWIi.")),
        ("slack_like", repeat("xoxb-1-")),
        ("url_userinfo", repeat("a://b:c@")),
        // Text in general.
        ("backslashes", repeat("\\")),
        ("cjk", repeat("用户")),
        ("json_fields", repeat("\"e\":\"a@b.co\",")),
    ]
}
