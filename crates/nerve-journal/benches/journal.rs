//! Journal throughput under each fsync policy, and emit latency with and
//! without the journal, in the same run.
//!
//! `cargo bench -p nerve-journal --bench journal`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use nerve_core::sink::EventSink;
use nerve_core::{Event, json};
use nerve_journal::{Fsync, Journal};
use nerve_router::Bus;

fn small_event(i: u64) -> Event {
    Event::builder("bench.tick")
        .source("bench")
        .seq(i)
        .data(json!({"i": i, "ok": true}))
        .build()
        .unwrap()
}

/// Records `per_emitter` events from each of `emitters` threads, then flushes.
fn persist(journal: &Journal, emitters: u64, per_emitter: u64) -> Duration {
    let events: Vec<Event> = (0..per_emitter).map(small_event).collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..emitters {
            s.spawn(|| {
                for e in &events {
                    journal.record(e).unwrap();
                }
            });
        }
    });
    journal.flush(Duration::from_secs(60)).unwrap();
    start.elapsed()
}

fn throughput(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("journal_throughput");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    let cases: [(&str, Fsync, u64, u64); 4] = [
        ("never", Fsync::Never, 1, 100_000),
        (
            "interval_200ms",
            Fsync::Interval(Duration::from_millis(200)),
            1,
            100_000,
        ),
        ("always_1_emitter", Fsync::Always, 1, 200),
        ("always_4_emitters", Fsync::Always, 4, 200),
    ];
    for (name, fsync, emitters, per) in cases {
        let path = dir.path().join(format!("{name}.jsonl"));
        let journal = Journal::builder(&path)
            .fsync(fsync)
            .max_bytes(64 << 20)
            .max_files(2)
            .build()
            .unwrap();
        group.throughput(Throughput::Elements(emitters * per));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| persist(&journal, emitters, per)).sum());
        });
        let stats = journal.stats();
        println!(
            "{name}: {} bytes/event over {} events, {} syncs",
            stats.bytes / stats.written.max(1),
            stats.written,
            stats.syncs
        );
    }
    group.finish();
}

/// The journal both emit-latency measurements record into: no fsync, and
/// files large enough that a run does not rotate.
fn latency_journal(path: &std::path::Path) -> Journal {
    Journal::builder(path)
        .fsync(Fsync::Never)
        .max_bytes(64 << 20)
        .max_files(2)
        .build()
        .unwrap()
}

fn emit_latency(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("emit_latency");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    let plain = Bus::builder().build().unwrap();
    plain
        .subscribe("bench.*", |e: &Event| {
            black_box(e.seq());
        })
        .unwrap();
    group.bench_function("journal_off", |b| {
        b.iter(|| plain.emit("bench.tick", json!({"ok": true})).unwrap());
    });
    let journal = latency_journal(&dir.path().join("latency.jsonl"));
    let bus = Bus::builder().journal(journal.clone()).build().unwrap();
    bus.subscribe("bench.*", |e: &Event| {
        black_box(e.seq());
    })
    .unwrap();
    group.bench_function("journal_on_never", |b| {
        b.iter(|| bus.emit("bench.tick", json!({"ok": true})).unwrap());
    });
    // The latency an emitter sees while the writer keeps up: bursts of
    // 1,000 emits, each timed, with the writer catching up (untimed) in
    // between. The tight loop above is bound by the writer's throughput
    // instead, once the queue is full.
    let burst = |b: &mut criterion::Bencher<'_>, bus: &Bus, flush: bool| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = (iters - done).min(1_000);
                let start = std::time::Instant::now();
                for _ in 0..n {
                    bus.emit("bench.tick", json!({"ok": true})).unwrap();
                }
                total += start.elapsed();
                done += n;
                if flush {
                    bus.flush_blocking();
                }
            }
            total
        });
    };
    group.bench_function("journal_off, bursts of 1000", |b| burst(b, &plain, false));
    group.bench_function("journal_on_never, bursts of 1000", |b| burst(b, &bus, true));
    group.finish();
    bus.shutdown_blocking();
}

/// What rotation costs as `max_files` grows: 10,000 small events into files
/// of 4 KiB (about 20 records each, so about 490 rotations), keeping 2, 20
/// or 100 backups; each batch ends with a flush, which waits for the
/// background renumbering too.
///
/// The three journals share one directory and take turns, batch by batch
/// (`ROUNDS` rounds), rather than running one after the other: on ext4 the
/// cost of creating a file grows with the number of files deleted in the
/// last minutes (its inode allocator skips recently freed inodes), so a
/// case run after the others, in the same file system, pays for their
/// deletions; taking turns gives each the same history. Prints, per case,
/// the median time per batch and, over all batches, the writer thread's
/// own time per rotation (`JournalStats::rotation_nanos`), the rotations
/// per background pass and the background renames per rotation.
fn rotation() {
    const ROUNDS: usize = 15;
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(usize, Journal)> = [2usize, 20, 100]
        .into_iter()
        .map(|max_files| {
            let journal = Journal::builder(dir.path().join(format!("m{max_files}.jsonl")))
                .fsync(Fsync::Never)
                .max_bytes(4 << 10)
                .max_files(max_files)
                .build()
                .unwrap();
            (max_files, journal)
        })
        .collect();
    // Warm up: every journal at its full number of backups.
    for (_, journal) in &cases {
        persist(journal, 1, 10_000);
    }
    let before: Vec<_> = cases.iter().map(|(_, j)| j.stats()).collect();
    let mut times = vec![Vec::with_capacity(ROUNDS); cases.len()];
    for _ in 0..ROUNDS {
        for (i, (_, journal)) in cases.iter().enumerate() {
            times[i].push(persist(journal, 1, 10_000));
        }
    }
    for (i, (max_files, journal)) in cases.iter().enumerate() {
        times[i].sort();
        let median = times[i][ROUNDS / 2];
        let (s, b) = (journal.stats(), &before[i]);
        let rotations = (s.rotations - b.rotations).max(1);
        let passes = (s.renumber_passes - b.renumber_passes).max(1);
        println!(
            "rotation/max_files {max_files}: {:.1} ms per 10,000 events ({:.0} K events/s, \
             median of {ROUNDS}, taking turns); {rotations} rotations, writer {:.1} us \
             per rotation, {:.1} rotations per pass, {:.1} renames per rotation, \
             {} created the active file (no spare ready)",
            median.as_secs_f64() * 1e3,
            10_000.0 / median.as_secs_f64() / 1e3,
            (s.rotation_nanos - b.rotation_nanos) as f64 / rotations as f64 / 1_000.0,
            rotations as f64 / passes as f64,
            (s.renumber_renames - b.renumber_renames) as f64 / rotations as f64,
            s.rotations_created - b.rotations_created,
        );
    }
}

/// Emit latency with the journal against without, paired: rounds of a
/// burst of `BURST` emits on a bus without a journal and a burst on one
/// with (`Fsync::Never`; its writer then catches up, untimed), back to back,
/// so that both sides of each ratio see the same machine. Prints the median
/// ratio and its quartiles over `ROUNDS` rounds.
fn emit_latency_paired() {
    const ROUNDS: usize = 301;
    const BURST: u32 = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let plain = Bus::builder().build().unwrap();
    let journal = latency_journal(&dir.path().join("paired.jsonl"));
    let with = Bus::builder().journal(journal).build().unwrap();
    for bus in [&plain, &with] {
        bus.subscribe("bench.*", |e: &Event| {
            black_box(e.seq());
        })
        .unwrap();
    }
    let burst = |bus: &Bus| {
        let start = Instant::now();
        for _ in 0..BURST {
            bus.emit("bench.tick", json!({"ok": true})).unwrap();
        }
        let per_emit = start.elapsed().as_secs_f64() / f64::from(BURST);
        bus.flush_blocking();
        per_emit
    };
    for _ in 0..20 {
        burst(&plain);
        burst(&with);
    }
    let (mut ratios, mut off, mut on) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let a = burst(&plain);
        let b = burst(&with);
        off.push(a);
        on.push(b);
        ratios.push(b / a);
    }
    for v in [&mut ratios, &mut off, &mut on] {
        v.sort_by(f64::total_cmp);
    }
    let (q1, m, q3) = (
        ratios[ROUNDS / 4],
        ratios[ROUNDS / 2],
        ratios[ROUNDS * 3 / 4],
    );
    println!(
        "emit_latency_paired: journal off {:.0} ns, on {:.0} ns per emit (medians, bursts of \
         {BURST}); on / off {m:.2} x (quartiles {q1:.2} to {q3:.2}) over {ROUNDS} rounds",
        off[ROUNDS / 2] * 1e9,
        on[ROUNDS / 2] * 1e9,
    );
    with.shutdown_blocking();
}

criterion_group!(benches, throughput, emit_latency);

/// Whether the measurement `name` runs: a filter (the first argument not
/// starting with '-') skips what it does not name, as criterion skips what
/// it does not match.
fn selected(name: &str) -> bool {
    std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .is_none_or(|f| name.contains(&f) || f.contains(name))
}

fn main() {
    if selected("rotation") {
        rotation();
    }
    if selected("paired") {
        emit_latency_paired();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
