//! The fuzz floor inside `cargo test`: generated inputs for the redactor,
//! the pattern parser and matcher, and event-name validation, each checked
//! against its invariants or a naive reference written here.
//!
//! Each target runs `NERVE_FUZZ_CASES` inputs (default in [`DEFAULT_CASES`])
//! from the seed `NERVE_FUZZ_SEED` (default fixed, so a failure replays):
//!
//! ```sh
//! NERVE_FUZZ_CASES=1000000 NERVE_FUZZ_SEED=7 \
//!     cargo test -p nerve-core --features redact --release --test fuzz
//! ```
//!
//! A failure prints the input; add it to the fixtures of the target's own
//! tests as a regression case.

use nerve_core::name::{MAX_NAME_LEN, check_event_type};
use nerve_core::redact::Redactor;
use nerve_core::{Pattern, Value};

/// Inputs per target by default: `(redactor, patterns, names)`, chosen so
/// that each target takes a few seconds at most in a debug build.
const DEFAULT_CASES: (u64, u64, u64) = (20_000, 1_000_000, 1_000_000);

fn cases(default: u64) -> u64 {
    std::env::var("NERVE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: small, fast and reproducible.
struct Rng(u64);

impl Rng {
    fn new(salt: u64) -> Self {
        let seed = std::env::var("NERVE_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x5eed_u64);
        Self((seed ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// --- Redactor -------------------------------------------------------------

/// Pieces of personal data, secrets, labels, separators and noise that the
/// redactor's detectors react to, joined at random.
const PIECES: &[&str] = &[
    "alice@example.com",
    "josé.garcía@exämple.com",
    "logo@2x.png",
    "git@h.io:o/r",
    "4111 1111 1111 1111",
    "4111 1111 1111 1112",
    "DE89 3704 0044 0532 0130 00",
    "DE89 3704 0044 0532 0130 01",
    "123-45-6789",
    "SSN: 123456789",
    "+33 (0)6 12 34 56 78",
    "1-800-555-0199",
    "06 12 34 56 78",
    "10.0.0.1",
    "127.0.0.1",
    "§ 4.2.1.3",
    "2001:db8::1",
    "::1",
    "00:1a:2b:3c:4d:5e",
    "dob: 17 May 1990",
    "né le 17/05/1990",
    "passport: X1234567",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
    "Bearer ",
    "Bearer%20",
    "abcdef0123456789abcd",
    "Authorization: ",
    "Basic dXNlcjpwYXNz",
    "AKIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key = ",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "xoxe.xoxp-1-Mi0yLTEyMzQ1Njc4",
    "-----BEGIN PRIVATE KEY-----",
    "-----END PRIVATE KEY-----",
    "https://u:pw@host",
    "password",
    "token",
    "api_key",
    "=",
    ":",
    "%3D",
    "\"",
    "'",
    "\\\"",
    "\\",
    " ",
    ",",
    ",\"",
    "\n",
    "{",
    "}",
    "[",
    "]",
    "[REDACTED]",
    "[REDACTED_EMAIL]",
    "é",
    "用户",
    "\u{a0}",
    "«",
    "0",
    "1",
    "7",
    ".",
    "-",
    "@",
    "a",
    "Z",
];

fn redactor_input(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..rng.below(12) {
        if rng.below(8) == 0 {
            // A random character, any plane.
            let c = char::from_u32(u32::try_from(rng.next() % 0x11_0000).unwrap_or(0));
            s.push(c.unwrap_or('?'));
        } else {
            s.push_str(rng.pick::<&str>(PIECES));
        }
    }
    s
}

#[test]
fn redactor_never_panics_is_idempotent_and_keeps_json_valid() {
    let redactor = Redactor::default();
    let mut rng = Rng::new(1);
    for _ in 0..cases(DEFAULT_CASES.0) {
        let text = redactor_input(&mut rng);
        let once = redactor.redact_str(&text).into_owned();
        assert_eq!(
            redactor.redact_str(&once),
            once,
            "not idempotent on {text:?}"
        );
        // JSON text in gives JSON text out.
        let json = serde_json::to_string(&Value::from(text.clone())).unwrap();
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
}

// --- Patterns -------------------------------------------------------------

const NAME_CHARS: &[char] = &[
    'a', 'b', 'c', '.', '.', '*', '_', '-', 'é', '用', ' ', '\t', '\0',
];

fn name(rng: &mut Rng, chars: &[char]) -> String {
    if rng.below(200) == 0 {
        return "a.".repeat(rng.below(200) + 60);
    }
    (0..rng.below(9)).map(|_| *rng.pick(chars)).collect()
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

#[test]
fn patterns_parse_and_match_as_the_naive_reference_does() {
    let mut rng = Rng::new(2);
    // Names drawn from few letters, so that patterns and names often meet.
    let letters = ['a', 'b', '.', '.', '*'];
    for _ in 0..cases(DEFAULT_CASES.1) {
        let raw = if rng.below(2) == 0 {
            name(&mut rng, NAME_CHARS)
        } else {
            name(&mut rng, &letters)
        };
        let parsed = Pattern::parse(&raw);
        assert_eq!(parsed.is_ok(), reference_parse(&raw), "parse {raw:?}");
        let Ok(pattern) = parsed else { continue };
        for _ in 0..4 {
            // Events carry valid names only (checked at construction), so
            // the matcher is only asked about those.
            let event_type = name(&mut rng, &letters[..4]);
            if check_event_type(&event_type).is_err() {
                continue;
            }
            let segments: Vec<&str> = raw.split('.').collect();
            let names: Vec<&str> = event_type.split('.').collect();
            assert_eq!(
                pattern.matches(&event_type),
                reference_match(&segments, &names),
                "{raw:?} on {event_type:?}"
            );
        }
    }
}

// --- Event names ----------------------------------------------------------

#[test]
fn event_names_validate_as_the_naive_reference_does() {
    let mut rng = Rng::new(3);
    for _ in 0..cases(DEFAULT_CASES.2) {
        let n = name(&mut rng, NAME_CHARS);
        let expected = !n.is_empty()
            && n.len() <= MAX_NAME_LEN
            && !n.contains('*')
            && !n.chars().any(|c| c.is_whitespace() || c.is_control())
            && n.split('.').all(|s| !s.is_empty());
        assert_eq!(check_event_type(&n).is_ok(), expected, "{n:?}");
    }
}
