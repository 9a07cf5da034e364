//! The journal reader's fuzz floor inside `cargo test`: 1,000,000 generated
//! lines by default, in 16 seeded shards (`journal_reader_00` ..
//! `journal_reader_15`) so that each test takes a few seconds in a debug
//! build and the shards run in parallel. The lines are written as journal
//! files of 1 to 100 lines and read back with a `JournalReader`.
//!
//! The lines mix valid records (this crate's format and aperion-event-bus's,
//! with odd Unicode, escapes, CRLF endings, surrounding whitespace, long
//! payloads), truncated records, torn last lines, corrupt JSON, fields of the
//! wrong type, bad names and ids, NUL bytes, deep nesting, duplicate keys and
//! blank lines. The invariants (in `check.rs`, shared with the cargo-fuzz
//! target `journal_reader`): no panic, no I/O error, `valid + bad + torn ==
//! lines read`, each item at its line number; and here, where the kind of
//! each generated line is known, every valid line reads as its record and
//! every corrupt one as a bad line.
//!
//! `NERVE_FUZZ_CASES` sets the number of lines (split over the shards) and
//! `NERVE_FUZZ_SEED` the seed:
//!
//! ```sh
//! NERVE_FUZZ_CASES=20000000 NERVE_FUZZ_SEED=7 \
//!     cargo test -p nerve-journal --release --test fuzz
//! ```
//!
//! `fuzz_regressions_replay` replays every input in
//! `fuzz/regressions/journal_reader/` (crashes found by `cargo xtask fuzz`).

mod check;

use check::{Item, show};
use serde_json::{Value, json};

/// Lines per `cargo test` run, over all shards.
const DEFAULT_LINES: u64 = 1_000_000;
const SHARDS: u64 = 16;

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

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// What a generated line must read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The record with this `seq`.
    Valid(u64),
    /// A bad line (or a torn tail, when last and without its newline).
    Corrupt,
    /// Either: a valid line with random bytes changed.
    Mutated,
    /// Only whitespace: no item.
    Blank,
}

const NAMES: &[&str] = &[
    "a.b",
    "user.login",
    "system.journal_gap",
    "用户.登录",
    "é.ü.ß",
    "x",
    "a-b_c.d1.e2.f3.g4.h5",
    "emoji.🎉",
];

const BAD_NAMES: &[&str] = &[
    "", "a..b", ".a", "a.", "a b", "a.*", "*", "a\tb", "a\u{0}b", "\u{7f}",
];

/// A string of odd characters: any plane, controls, quotes, backslashes,
/// escapes, surrogates' neighbours, the replacement character, NUL.
fn odd_string(rng: &mut Rng, max: usize) -> String {
    const PIECES: &[&str] = &[
        "\"",
        "\\",
        "\\\"",
        "\u{0}",
        "\n",
        "\r\n",
        "\t",
        "\u{1f}",
        "\u{7f}",
        "\u{a0}",
        "\u{2028}",
        "\u{feff}",
        "\u{fffd}",
        "\u{d7ff}",
        "\u{e000}",
        "\u{10ffff}",
        "é",
        "用户",
        "🎉",
        "a",
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "null",
        " ",
    ];
    let mut s = String::new();
    for _ in 0..rng.below(max + 1) {
        if rng.one_in(3) {
            let c = char::from_u32(u32::try_from(rng.next() % 0x11_0000).unwrap_or(0));
            s.push(c.unwrap_or('?'));
        } else {
            s.push_str(rng.pick::<&str>(PIECES));
        }
    }
    s
}

fn uuid(rng: &mut Rng) -> String {
    let (a, b) = (rng.next(), rng.next());
    format!(
        "{:08x}-{:04x}-7{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn timestamp(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 => json!(format!(
            "20{:02}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            rng.below(100),
            rng.below(12) + 1,
            rng.below(28) + 1,
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.below(1_000_000)
        )),
        1 => json!("2026-11-23T09:01:32+02:00"),
        2 => json!(rng.below(2_000_000_000)),
        3 => json!(rng.below(2_000_000_000) as f64 + 0.25),
        _ => json!("1970-01-01T00:00:00Z"),
    }
}

/// A payload: scalars, odd strings, nesting up to 40 levels.
fn payload(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 40 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.one_in(2)),
        2 => json!(rng.next()),
        3 => json!(-(rng.below(1000) as i64)),
        4 => json!(odd_string(rng, 12)),
        5 => json!(f64::from_bits(rng.next() & 0x7fef_ffff_ffff_ffff)),
        6 => Value::Array((0..rng.below(4)).map(|_| payload(rng, depth + 1)).collect()),
        _ => Value::Object(
            (0..rng.below(4))
                .map(|_| (odd_string(rng, 4), payload(rng, depth + 1)))
                .collect(),
        ),
    }
}

/// A valid record as a JSON object (this crate's format, or with
/// aperion-event-bus's `payload` and no `seq`), and its `seq`.
fn record(rng: &mut Rng) -> (serde_json::Map<String, Value>, u64) {
    let mut m = serde_json::Map::new();
    let seq = if rng.one_in(10) { 0 } else { rng.next() };
    if !rng.one_in(10) {
        m.insert("event_id".into(), json!(uuid(rng)));
    }
    m.insert("event_type".into(), json!(rng.pick(NAMES)));
    m.insert("timestamp".into(), timestamp(rng));
    for key in ["source", "correlation_id", "run_id", "lane"] {
        if rng.one_in(3) {
            m.insert(key.into(), json!(odd_string(rng, 8)));
        }
    }
    if rng.one_in(4) {
        m.insert("causation_id".into(), json!(uuid(rng)));
    }
    if rng.one_in(4) {
        m.insert("lane_seq".into(), json!(rng.next()));
    }
    if seq != 0 {
        m.insert("seq".into(), json!(seq));
    }
    if rng.one_in(8) {
        m.insert(
            "trace_context".into(),
            json!({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}),
        );
    }
    let data = if rng.one_in(500) {
        // A long payload: up to 64 KiB.
        json!("x".repeat(rng.below(64 * 1024)))
    } else {
        payload(rng, 0)
    };
    if rng.one_in(5) {
        m.insert("payload".into(), data);
    } else {
        m.insert("data".into(), data);
    }
    if rng.one_in(6) {
        m.insert(odd_string(rng, 5), payload(rng, 30));
    }
    if !rng.one_in(5) {
        m.insert("v".into(), json!(rng.below(2)));
    }
    (m, seq)
}

/// A field of a valid record made wrong: a bad line.
fn wrong_field(rng: &mut Rng, m: &mut serde_json::Map<String, Value>) {
    let (key, value) = match rng.below(14) {
        0 => ("event_type", json!(rng.below(10))),
        1 => ("event_type", Value::Null),
        2 => ("event_type", json!(rng.pick(BAD_NAMES))),
        3 => ("event_type", json!("a.".repeat(200))),
        4 => (
            "timestamp",
            json!(rng.pick(&["yesterday", "", "2026-13-01T00:00:00Z"])),
        ),
        5 => ("timestamp", json!([1])),
        6 => ("seq", json!(-1 - rng.below(10) as i64)),
        7 => ("seq", json!(1.5)),
        8 => ("seq", json!("1")),
        9 => ("event_id", json!(odd_string(rng, 6) + "x")),
        10 => ("v", json!(2 + rng.below(100))),
        11 => ("lane_seq", json!(-1)),
        12 => ("source", json!(rng.below(10))),
        _ => ("trace_context", json!({"traceparent": "00-zz"})),
    };
    m.insert(key.into(), value);
    if rng.one_in(4) {
        // Or a required field missing.
        let key = *rng.pick(&["event_type", "timestamp"]);
        m.remove(key);
    }
}

/// One generated line, without its newline, and what it must read as.
fn line(rng: &mut Rng) -> (Vec<u8>, Kind) {
    let roll = rng.below(100);
    let (mut text, kind) = match roll {
        0..=39 => {
            let (m, seq) = record(rng);
            (
                serde_json::to_vec(&Value::Object(m)).unwrap(),
                Kind::Valid(seq),
            )
        }
        40..=47 => {
            // Truncated: a strict prefix of a record never is one.
            let (m, _) = record(rng);
            let full = serde_json::to_vec(&Value::Object(m)).unwrap();
            let cut = 1 + rng.below(full.len() - 1);
            (full[..cut].to_vec(), Kind::Corrupt)
        }
        48..=59 => {
            let (mut m, _) = record(rng);
            wrong_field(rng, &mut m);
            (
                serde_json::to_vec(&Value::Object(m)).unwrap(),
                Kind::Corrupt,
            )
        }
        60..=64 => {
            // Not an object: scalars, arrays, garbage.
            let text = match rng.below(5) {
                0 => serde_json::to_vec(&payload(rng, 38)).unwrap(),
                1 => {
                    // A record's values in an array, in field order.
                    let (m, _) = record(rng);
                    let values: Vec<&Value> = m.values().collect();
                    serde_json::to_vec(&values).unwrap()
                }
                2 => odd_string(rng, 40).replace('\n', "").into_bytes(),
                3 => (0..rng.below(60))
                    .map(|_| (rng.next() as u8) | 0x80)
                    .collect(),
                _ => b"not json".to_vec(),
            };
            let text = if text.trim_ascii().is_empty() || text.first() == Some(&b'{') {
                b"[]".to_vec()
            } else {
                text
            };
            (text, Kind::Corrupt)
        }
        65..=69 => {
            // NUL bytes outside or raw inside strings; raw control characters.
            let (m, _) = record(rng);
            let mut full = serde_json::to_vec(&Value::Object(m)).unwrap();
            let at = rng.below(full.len() + 1);
            full.insert(at, *rng.pick(&[0u8, 1, 0x1f]));
            // Only outside a string is it surely corrupt; inside one, a raw
            // control character is not JSON either.
            (full, Kind::Corrupt)
        }
        70..=72 => {
            // Nesting deeper than a JSON parser should follow.
            let depth = 129 + rng.below(20_000);
            let mut s = br#"{"event_type":"a.b","timestamp":1,"data":"#.to_vec();
            s.extend(std::iter::repeat_n(b'[', depth));
            s.extend(std::iter::repeat_n(b']', depth));
            s.push(b'}');
            (s, Kind::Corrupt)
        }
        73..=74 => {
            // A duplicate key.
            let (m, _) = record(rng);
            let mut full = serde_json::to_vec(&Value::Object(m)).unwrap();
            full.pop();
            full.extend_from_slice(br#","event_type":"a.b"}"#);
            (full, Kind::Corrupt)
        }
        75..=89 => {
            let (m, _) = record(rng);
            let mut full = serde_json::to_vec(&Value::Object(m)).unwrap();
            for _ in 0..=rng.below(3) {
                let at = rng.below(full.len());
                match rng.below(3) {
                    0 => full[at] = rng.next() as u8,
                    1 => {
                        full.remove(at);
                    }
                    _ => full.insert(at, *rng.pick(b"{}[]\",:\\ 0e.-\x00\xff")),
                }
            }
            full.retain(|&b| b != b'\n');
            let kind = if full.trim_ascii().is_empty() {
                Kind::Blank
            } else {
                Kind::Mutated
            };
            (full, kind)
        }
        _ => {
            const BLANKS: &[&[u8]] = &[b"", b" ", b"\t", b"\r", b" \t \r", b"\x0c"];
            (rng.pick(BLANKS).to_vec(), Kind::Blank)
        }
    };
    if kind != Kind::Blank && rng.one_in(8) {
        // Surrounding ASCII whitespace, or a CRLF ending.
        let pad = *rng.pick(&[&b" "[..], b"\t", b"\r", b"  \t"]);
        if rng.one_in(2) {
            text.splice(0..0, pad.iter().copied());
        } else {
            text.extend_from_slice(pad);
        }
    }
    (text, kind)
}

/// Writes journal files of 1 to 100 generated lines, some with a torn last
/// line, until `lines` lines are written, and checks each read.
fn journal_reader_shard(shard: u64) {
    let total = cases(DEFAULT_LINES);
    let lines = total / SHARDS + u64::from(shard < total % SHARDS);
    let mut rng = Rng::new(0x6a6f_7572 ^ shard);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut done = 0;
    let mut counts = [0u64; 3];
    while done < lines {
        let n = (1 + rng.below(100) as u64).min(lines - done);
        done += n;
        let mut bytes = Vec::new();
        let mut kinds = Vec::new();
        for i in 0..n {
            let (text, kind) = line(&mut rng);
            let torn = i + 1 == n && rng.one_in(6) && !text.is_empty();
            bytes.extend_from_slice(&text);
            if torn {
                kinds.push(Kind::Corrupt);
            } else {
                bytes.push(b'\n');
                kinds.push(kind);
            }
        }
        let read = check::check(&path, &bytes);
        counts[0] += read.valid;
        counts[1] += read.bad;
        counts[2] += read.torn;
        // Each item against the kind of its line.
        for (line, item) in &read.items {
            let kind = kinds[usize::try_from(*line - 1).unwrap()];
            let ok = match (item, kind) {
                (Item::Valid(e), Kind::Valid(seq)) => e.seq() == seq,
                (Item::Bad | Item::Torn, Kind::Corrupt) | (_, Kind::Mutated) => true,
                _ => false,
            };
            assert!(
                ok,
                "line {line} ({kind:?}) read as {item:?} in {}",
                show(&bytes)
            );
        }
    }
    eprintln!(
        "shard {shard}: {lines} lines: {} valid, {} bad, {} torn",
        counts[0], counts[1], counts[2]
    );
}

macro_rules! shards {
    ($($name:ident = $n:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                journal_reader_shard($n);
            }
        )*
    };
}

shards!(
    journal_reader_00 = 0,
    journal_reader_01 = 1,
    journal_reader_02 = 2,
    journal_reader_03 = 3,
    journal_reader_04 = 4,
    journal_reader_05 = 5,
    journal_reader_06 = 6,
    journal_reader_07 = 7,
    journal_reader_08 = 8,
    journal_reader_09 = 9,
    journal_reader_10 = 10,
    journal_reader_11 = 11,
    journal_reader_12 = 12,
    journal_reader_13 = 13,
    journal_reader_14 = 14,
    journal_reader_15 = 15,
);

/// Every input in `fuzz/regressions/journal_reader/` (crashes found by
/// `cargo xtask fuzz`, and inputs kept as seeds) reads under the same
/// invariants.
#[test]
fn fuzz_regressions_replay() {
    let inputs = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/regressions/journal_reader"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut replayed = 0;
    for entry in std::fs::read_dir(inputs).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        check::check(&path, &bytes);
        replayed += 1;
    }
    assert!(replayed > 0, "no input in {inputs}");
}
