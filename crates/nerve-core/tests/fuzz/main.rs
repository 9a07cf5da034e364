//! The fuzz floor inside `cargo test`: generated inputs for the redactor,
//! the pattern parser and matcher, and event-name validation, each checked
//! against its invariants or a naive reference (in `check.rs`, shared with
//! the cargo-fuzz targets `redact`, `pattern` and `name`).
//!
//! Each target runs `NERVE_FUZZ_CASES` inputs (default in [`DEFAULT_CASES`]:
//! 1,000,000 each; the redactor's spread over 16 tests, `redactor_00` ..
//! `redactor_15`) from the seed `NERVE_FUZZ_SEED` (default fixed, so a
//! failure replays):
//!
//! ```sh
//! NERVE_FUZZ_CASES=20000000 NERVE_FUZZ_SEED=7 \
//!     cargo test -p nerve-core --features redact --release --test fuzz
//! ```
//!
//! A failure prints the input; add it to `fuzz/regressions/<target>/`,
//! which `fuzz_regressions_replay` replays, and to the fixtures of the
//! target's own tests as a regression case.

mod check;

use nerve_core::redact::Redactor;

/// Inputs per target by default: `(redactor, patterns, names)`, chosen so
/// that each test takes a few seconds at most in a debug build.
const DEFAULT_CASES: (u64, u64, u64) = (1_000_000, 1_000_000, 1_000_000);

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

/// Inputs per shard: the redactor's 1,000,000 by default are spread over
/// 16 tests (`redactor_00` .. `redactor_15`), each a few seconds in a debug
/// build, so that they run in parallel.
const REDACTOR_SHARDS: u64 = 16;

fn redactor_shard(shard: u64) {
    let redactor = Redactor::default();
    let total = cases(DEFAULT_CASES.0);
    let inputs = total / REDACTOR_SHARDS + u64::from(shard < total % REDACTOR_SHARDS);
    let mut rng = Rng::new(1 ^ (shard << 32));
    for _ in 0..inputs {
        check::redact(&redactor, &redactor_input(&mut rng));
    }
}

macro_rules! redactor_shards {
    ($($name:ident = $n:literal),* $(,)?) => {
        $(
            /// Never panics, idempotent, JSON text stays JSON (one shard).
            #[test]
            fn $name() {
                redactor_shard($n);
            }
        )*
    };
}

redactor_shards!(
    redactor_00 = 0,
    redactor_01 = 1,
    redactor_02 = 2,
    redactor_03 = 3,
    redactor_04 = 4,
    redactor_05 = 5,
    redactor_06 = 6,
    redactor_07 = 7,
    redactor_08 = 8,
    redactor_09 = 9,
    redactor_10 = 10,
    redactor_11 = 11,
    redactor_12 = 12,
    redactor_13 = 13,
    redactor_14 = 14,
    redactor_15 = 15,
);

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
        // Events carry valid names only (checked at construction), so the
        // matcher is only asked about those.
        let names: Vec<String> = (0..4).map(|_| name(&mut rng, &letters[..4])).collect();
        check::pattern(&raw, names.iter().map(String::as_str));
    }
}

// --- Event names ----------------------------------------------------------

#[test]
fn event_names_validate_as_the_naive_reference_does() {
    let mut rng = Rng::new(3);
    for _ in 0..cases(DEFAULT_CASES.2) {
        check::name(&name(&mut rng, NAME_CHARS));
    }
}

/// Every input in `fuzz/regressions/{pattern,name,redact}/` (crashes found
/// by `cargo xtask fuzz`, and inputs kept as seeds) passes the same checks
/// as the cargo-fuzz targets make.
#[test]
fn fuzz_regressions_replay() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/regressions");
    let redactor = Redactor::default();
    let mut replayed = 0;
    for target in ["pattern", "name", "redact"] {
        for entry in std::fs::read_dir(format!("{root}/{target}")).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            match target {
                "pattern" => check::pattern_bytes(&bytes),
                "name" => check::name(&String::from_utf8_lossy(&bytes)),
                _ => check::redact(&redactor, &String::from_utf8_lossy(&bytes)),
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 3, "no inputs in {root}");
}
