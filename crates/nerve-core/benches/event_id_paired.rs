//! The event id against what it replaced, in interleaved rounds: a paired
//! harness for a shared, noisy machine, where criterion's means move with
//! the load. Each round times 20,000 calls of each contender in turn; the
//! minimum and the median of 300 rounds are printed (the minimum is the
//! cost on an idle core).
//!
//! Run with `cargo bench -p nerve-core --bench event_id_paired`; the target
//! (the id for a time already read at most 15 ns) is in `docs/benchmarks.md`.
//!
//! * `id given clock`: `EventId::for_timestamp`, the time advancing by a
//!   millisecond every 10,000 ids.
//! * `uuid v7 context (before)`: `uuid::Uuid::new_v7` with a thread-local
//!   `uuid::ContextV7`, what nerve did before, for a time already read.
//! * `clock read`: `SystemTime::now`, which every event pays once.
//! * `EventId::new`: a clock read and an id.
//! * `correlation from id`: the correlation id a bus gives a root event
//!   (kept inline), against `correlation Arc<str> (before)`, the same text
//!   in a fresh `Arc<str>` as nerve made it before.
//! * `build *`: `Event::builder("user.login")` with `json!({"i": n})` made
//!   in the loop, with a shared `Arc`'d payload (`data_shared`), and with
//!   none (`null`); each built event is dropped in the loop, as a bus's
//!   history drops it in the end.

use std::hint::black_box;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use nerve_core::{CorrelationId, Event, EventId, Timestamp, json};

const CALLS: u32 = 20_000;
const ROUNDS: usize = 300;

thread_local! {
    static V7_CONTEXT: uuid::ContextV7 = const { uuid::ContextV7::new() };
}

/// Nanoseconds per call of `f`, over one round.
fn round(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..CALLS {
        f();
    }
    start.elapsed().as_secs_f64() * 1e9 / f64::from(CALLS)
}

fn main() {
    let start = Timestamp::now().as_micros();
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut n = 0_i64;
    let id = EventId::new();
    let shared = Arc::new(json!({"i": 1}));
    let mut rounds: [Vec<f64>; 9] = Default::default();
    for _ in 0..ROUNDS {
        rounds[0].push(round(|| {
            n += 1;
            black_box(EventId::for_timestamp(Timestamp::from_micros(
                start + n / 10,
            )));
        }));
        rounds[1].push(round(|| {
            let ts = uuid::Timestamp::from_unix(
                uuid::timestamp::context::ThreadLocalContext::new(&V7_CONTEXT),
                since_epoch.as_secs(),
                since_epoch.subsec_nanos(),
            );
            black_box(uuid::Uuid::new_v7(black_box(ts)));
        }));
        rounds[2].push(round(|| {
            black_box(SystemTime::now());
        }));
        rounds[3].push(round(|| {
            black_box(EventId::new());
        }));
        rounds[4].push(round(|| {
            black_box(CorrelationId::from(black_box(id)));
        }));
        rounds[5].push(round(|| {
            let mut buf = uuid::Uuid::encode_buffer();
            let text = black_box(id).as_uuid().hyphenated().encode_lower(&mut buf);
            black_box(Arc::<str>::from(&*text));
        }));
        rounds[6].push(round(|| {
            n += 1;
            let _ = black_box(
                Event::builder(black_box("user.login"))
                    .data(json!({"i": n}))
                    .build(),
            );
        }));
        rounds[7].push(round(|| {
            let _ = black_box(
                Event::builder(black_box("user.login"))
                    .data_shared(Arc::clone(&shared))
                    .build(),
            );
        }));
        rounds[8].push(round(|| {
            let _ = black_box(Event::builder(black_box("user.login")).build());
        }));
    }
    let names = [
        "id given clock",
        "uuid v7 context (before)",
        "clock read",
        "EventId::new",
        "correlation from id",
        "correlation Arc<str> (before)",
        "build json i",
        "build shared json i",
        "build null",
    ];
    for (name, mut ns) in names.into_iter().zip(rounds) {
        ns.sort_by(f64::total_cmp);
        println!(
            "{name:30} min {:6.1} ns  median {:6.1} ns",
            ns[0],
            ns[ns.len() / 2]
        );
    }
}
