//! Journal throughput under each fsync policy, and emit latency with and
//! without the journal, in the same run.
//!
//! `cargo bench -p nerve-journal --bench journal`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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
    let journal = Journal::builder(dir.path().join("latency.jsonl"))
        .fsync(Fsync::Never)
        .max_bytes(64 << 20)
        .max_files(2)
        .build()
        .unwrap();
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
/// of 4 KiB (about 20 records each, so about 500 rotations), keeping 2, 20 or
/// 100 backups. Each sample ends with a flush, which waits for the
/// background renumbering too. Printed after each case: the writer thread's
/// own time per rotation (`JournalStats::rotation_nanos`), and the
/// background passes and renames per rotation.
fn rotation(c: &mut Criterion) {
    let mut group = c.benchmark_group("rotation");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(10_000));
    for max_files in [2usize, 20, 100] {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::builder(dir.path().join("events.jsonl"))
            .fsync(Fsync::Never)
            .max_bytes(4 << 10)
            .max_files(max_files)
            .build()
            .unwrap();
        group.bench_function(format!("max_files {max_files}"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| persist(&journal, 1, 10_000)).sum());
        });
        let s = journal.stats();
        let rotations = s.rotations.max(1);
        println!(
            "max_files {max_files}: {} rotations, writer {:.1} us per rotation, \
             {} renumbering passes ({:.1} rotations per pass), {:.1} renames per rotation",
            s.rotations,
            s.rotation_nanos as f64 / rotations as f64 / 1_000.0,
            s.renumber_passes,
            s.rotations as f64 / s.renumber_passes.max(1) as f64,
            s.renumber_renames as f64 / rotations as f64,
        );
    }
    group.finish();
}

criterion_group!(benches, throughput, emit_latency, rotation);
criterion_main!(benches);
