//! Journal throughput under each fsync policy, emit latency with and
//! without the journal, sustained emits with and without it, what a
//! durable event (`record_and_wait`) costs its emitter, and reading a line
//! back against `serde_json` parsing it, in the same run.
//!
//! `cargo bench -p nerve-journal --bench journal` (`-- sustained` for the
//! paired 2,000,000-event run alone, `-- sustained --quick` for a short one)

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use nerve_core::sink::EventSink;
use nerve_core::{Event, json};
use nerve_journal::{Fsync, Journal, JournalStats};
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
    latency_journal_with(path, Fsync::Never)
}

/// [`latency_journal`] with another policy.
fn latency_journal_with(path: &std::path::Path, fsync: Fsync) -> Journal {
    Journal::builder(path)
        .fsync(fsync)
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

/// The per-item event of the extraction guide: a small JSON object.
fn specimen_event(i: u64) -> Event {
    Event::builder("specimen.completed")
        .source("extraction")
        .seq(i)
        .data(json!({
            "run_id": "extraction_001",
            "specimen_id": format!("S{i:03}"),
            "sequence": i,
            "status": "ok",
            "duration_ms": 412
        }))
        .build()
        .unwrap()
}

/// What a durable event costs its emitter: `record_and_wait` against plain
/// `record` and against `record` + `flush` (what `EventSink::record_and_wait`
/// does by default), the same payload, paired: each round times a burst of
/// `BURST` calls of each, back to back on one journal (the writer catching
/// up, untimed, in between), so that every ratio compares one moment of the
/// machine. Then single calls after the writer went idle (asleep on its
/// channel, past its linger): the wake-up an emitter pays for the first
/// durable event after a pause. Prints medians and quartiles of the ratios.
fn durable_paired() {
    const ROUNDS: usize = 201;
    const BURST: u64 = 100;
    const IDLE: Duration = Duration::from_millis(3);
    let dir = tempfile::tempdir().unwrap();
    for (name, fsync) in [
        ("never", Fsync::Never),
        (
            "interval_200ms",
            Fsync::Interval(Duration::from_millis(200)),
        ),
    ] {
        let journal =
            latency_journal_with(&dir.path().join(format!("durable-{name}.jsonl")), fsync);
        let events: Vec<Event> = (0..BURST).map(specimen_event).collect();
        let time = |f: &dyn Fn(&Event)| {
            let start = Instant::now();
            for e in &events {
                f(e);
            }
            let per_call = start.elapsed().as_secs_f64() / BURST as f64;
            journal.flush(Duration::from_secs(60)).unwrap();
            per_call
        };
        let record = |e: &Event| journal.record(e).unwrap();
        let wait = |e: &Event| journal.record_and_wait(e).unwrap();
        let flush = |e: &Event| {
            journal.record(e).unwrap();
            journal.flush(Duration::from_secs(60)).unwrap();
        };
        let idle = |f: &dyn Fn(&Event)| {
            // Past the writer's ~1 ms linger: it sleeps on its channel.
            std::thread::sleep(IDLE);
            let start = Instant::now();
            f(&events[0]);
            start.elapsed().as_secs_f64()
        };
        for _ in 0..20 {
            time(&record);
            time(&wait);
            time(&flush);
        }
        let mut cols: [Vec<f64>; 5] = Default::default();
        for _ in 0..ROUNDS {
            cols[0].push(time(&record));
            cols[1].push(time(&wait));
            cols[2].push(time(&flush));
            cols[3].push(idle(&record));
            cols[4].push(idle(&wait));
        }
        let ratios = |a: usize, b: usize| {
            let mut r: Vec<f64> = cols[a].iter().zip(&cols[b]).map(|(x, y)| x / y).collect();
            r.sort_by(f64::total_cmp);
            (r[ROUNDS / 4], r[ROUNDS / 2], r[ROUNDS * 3 / 4])
        };
        let (wr, wf, iw) = (ratios(1, 0), ratios(1, 2), ratios(4, 3));
        for c in &mut cols {
            c.sort_by(f64::total_cmp);
        }
        let ns = |c: usize| cols[c][ROUNDS / 2] * 1e9;
        println!(
            "durable_paired/{name}: per call, medians over {ROUNDS} rounds of bursts of {BURST}: \
             record {:.0} ns, record_and_wait {:.0} ns, record + flush {:.0} ns; \
             record_and_wait / record {:.1} x (quartiles {:.1} to {:.1}), \
             record_and_wait / (record + flush) {:.2} x ({:.2} to {:.2}); \
             after {IDLE:?} idle: record {:.0} ns, record_and_wait {:.0} ns ({:.1} x, {:.1} to {:.1})",
            ns(0),
            ns(1),
            ns(2),
            wr.1,
            wr.0,
            wr.2,
            wf.1,
            wf.0,
            wf.2,
            ns(3),
            ns(4),
            iw.1,
            iw.0,
            iw.2,
        );
    }
}

/// What a terminal event costs its emitter through a bus: `emit` of the
/// guide's `specimen.completed` (terminal, so durable by default) on a bus
/// with a `Fsync::Never` journal, against the same emit on a bus whose
/// durable events are turned off (`durable_patterns([])`: the old
/// behaviour), and a non-terminal `specimen.processing` on both. Paired
/// bursts, as `durable_paired`.
fn durable_emit_paired() {
    const ROUNDS: usize = 201;
    const BURST: u64 = 100;
    let dir = tempfile::tempdir().unwrap();
    let durable = Bus::builder()
        .journal(latency_journal(&dir.path().join("emit-durable.jsonl")))
        .build()
        .unwrap();
    let off = Bus::builder()
        .journal(latency_journal(&dir.path().join("emit-off.jsonl")))
        .durable_patterns(Vec::<&str>::new())
        .unwrap()
        .build()
        .unwrap();
    for bus in [&durable, &off] {
        bus.subscribe("specimen.*", |e: &Event| {
            black_box(e.seq());
        })
        .unwrap();
    }
    let data = |i: u64| {
        json!({
            "specimen_id": format!("S{i:03}"),
            "sequence": i,
            "metrics": {"total_processed": i, "success_count": i, "failed_count": 0, "success_rate": 1.0}
        })
    };
    let time = |bus: &Bus, event_type: &str| {
        let start = Instant::now();
        for i in 0..BURST {
            bus.emit(event_type, data(i)).unwrap();
        }
        let per_emit = start.elapsed().as_secs_f64() / BURST as f64;
        bus.flush_blocking();
        per_emit
    };
    let cases = [
        (&durable, "specimen.completed"),
        (&off, "specimen.completed"),
        (&durable, "specimen.processing"),
        (&off, "specimen.processing"),
    ];
    for _ in 0..20 {
        for (bus, t) in cases {
            time(bus, t);
        }
    }
    let mut cols: [Vec<f64>; 4] = Default::default();
    for _ in 0..ROUNDS {
        for (col, (bus, t)) in cols.iter_mut().zip(cases) {
            col.push(time(bus, t));
        }
    }
    let ratios = |a: usize, b: usize| {
        let mut r: Vec<f64> = cols[a].iter().zip(&cols[b]).map(|(x, y)| x / y).collect();
        r.sort_by(f64::total_cmp);
        (r[ROUNDS / 4], r[ROUNDS / 2], r[ROUNDS * 3 / 4])
    };
    let (terminal, plain) = (ratios(0, 1), ratios(2, 3));
    for c in &mut cols {
        c.sort_by(f64::total_cmp);
    }
    let ns = |c: usize| cols[c][ROUNDS / 2] * 1e9;
    println!(
        "durable_emit_paired: per emit, medians over {ROUNDS} rounds of bursts of {BURST}: \
         terminal durable {:.0} ns, terminal not durable {:.0} ns ({:.1} x, quartiles {:.1} to {:.1}); \
         non-terminal on the durable bus {:.0} ns, on the other {:.0} ns ({:.2} x, {:.2} to {:.2})",
        ns(0),
        ns(1),
        terminal.1,
        terminal.0,
        terminal.2,
        ns(2),
        ns(3),
        plain.1,
        plain.0,
        plain.2,
    );
    durable.shutdown_blocking();
    off.shutdown_blocking();
}

/// Sustained emits with the journal on against off, paired: each round
/// emits `n` events (`json!({"i": n})`, one inline sync handler, default
/// bus) back to back on a fresh bus without a journal, then on a fresh bus
/// with a default journal (`Journal::builder` defaults: `Fsync::Interval`
/// of 200 ms, capacity 8,192, `Block`) into a fresh temp dir, with files
/// large enough not to rotate. Each time runs until the bus is shut down
/// and the journal closed, so it is the time until every event is written.
/// Prints every round's ratio and the median. `n` is 2,000,000 (5 rounds),
/// or 200,000 (7 rounds) with `--quick`.
fn journal_sustained() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, rounds): (u64, usize) = if quick { (200_000, 7) } else { (2_000_000, 5) };
    let run = |journal_on: bool| -> Sustained {
        let dir = tempfile::tempdir().unwrap();
        let journal = journal_on.then(|| {
            Journal::builder(dir.path().join("events.jsonl"))
                .max_bytes(1 << 40)
                .build()
                .unwrap()
        });
        let mut builder = Bus::builder();
        if let Some(j) = &journal {
            builder = builder.journal(j.clone());
        }
        let bus = builder.build().unwrap();
        bus.subscribe("bench.*", |e: &Event| {
            black_box(e.seq());
        })
        .unwrap();
        let (start, cpu) = (Instant::now(), process_cpu());
        for i in 0..n {
            bus.emit("bench.tick", json!({"i": i})).unwrap();
        }
        let emitted = start.elapsed();
        // Handed to the OS: what a process crash no longer loses. Polled,
        // so up to a millisecond late.
        while journal.as_ref().is_some_and(|j| j.stats().written < n) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let written = start.elapsed();
        bus.shutdown_blocking();
        if let Some(j) = &journal {
            j.close(Duration::from_secs(600)).unwrap();
        }
        Sustained {
            emitted,
            written,
            closed: start.elapsed(),
            cpu: process_cpu() - cpu,
            stats: journal.map(|j| j.stats()).unwrap_or_default(),
        }
    };
    // Warm up both sides once (page cache, allocator, thread start).
    run(false);
    run(true);
    let ns = |d: Duration| d.as_secs_f64() * 1e9 / n as f64;
    let mut ratios = Vec::with_capacity(rounds);
    let (mut off, mut on, mut cpu_off, mut cpu_on) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let a = run(false);
        let b = run(true);
        assert!(
            b.stats.written >= n,
            "{} of {n} events written",
            b.stats.written
        );
        let ratio = b.closed.as_secs_f64() / a.closed.as_secs_f64();
        println!(
            "journal_sustained round {round}: {n} events, off {:.3} s ({:.0} ns/event, CPU {:.0}), \
             on {:.3} s ({:.0} ns/event, CPU {:.0}; emitted at {:.0}, written at {:.0} ns/event), \
             on / off {ratio:.2} x; {} bytes/event, {:.0} events per write, {} syncs",
            a.closed.as_secs_f64(),
            ns(a.closed),
            a.cpu * 1e9 / n as f64,
            b.closed.as_secs_f64(),
            ns(b.closed),
            b.cpu * 1e9 / n as f64,
            ns(b.emitted),
            ns(b.written),
            b.stats.bytes / b.stats.written.max(1),
            b.stats.written as f64 / b.stats.batches.max(1) as f64,
            b.stats.syncs,
        );
        off.push(a.closed.as_secs_f64());
        on.push(b.closed.as_secs_f64());
        cpu_off.push(a.cpu);
        cpu_on.push(b.cpu);
        ratios.push(ratio);
    }
    for v in [&mut ratios, &mut off, &mut on, &mut cpu_off, &mut cpu_on] {
        v.sort_by(f64::total_cmp);
    }
    let m = rounds / 2;
    let per = |v: &[f64]| v[m] * 1e9 / n as f64;
    println!(
        "journal_sustained: {n} events, medians over {rounds} rounds: off {:.0} ns/event \
         (CPU {:.0}), on {:.0} ns/event (CPU {:.0}); on / off {:.2} x (min {:.2}, max {:.2})",
        per(&off),
        per(&cpu_off),
        per(&on),
        per(&cpu_on),
        ratios[m],
        ratios[0],
        ratios[rounds - 1],
    );
}

/// One run of [`journal_sustained`]: times from the first emit.
struct Sustained {
    /// The last emit returned.
    emitted: Duration,
    /// Every event was written (handed to the OS).
    written: Duration,
    /// The bus was shut down and the journal closed (so, under the default
    /// policy, synced).
    closed: Duration,
    /// CPU time of the process, every thread.
    cpu: f64,
    stats: JournalStats,
}

/// CPU time this process (every thread, finished ones included) has used,
/// in seconds, at the kernel's 10 ms resolution; 0 off Linux.
fn process_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command's closing parenthesis: state is the first,
    // utime and stime (clock ticks of 1/100 s) the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Reading one line back (`journal_read`): the journal's decoder, on a
/// line in the form it writes and on the same record spaced out (its
/// slower path), with and without reading the payload, against
/// `serde_json` parsing the line into a `Value` (what a reader of a JSONL
/// log does without nerve). The event users send: a small object, a
/// correlation id and a source, as the NATS bench's.
fn read(c: &mut Criterion) {
    let event = Event::builder("order.placed")
        .data(json!({"order_id": 7, "customer": "c-1042", "items": 3, "total": 99.5, "currency": "EUR"}))
        .correlation_id("checkout-7f3a")
        .source("shop")
        .seq(42)
        .build()
        .unwrap();
    let mut written = Vec::new();
    nerve_journal::line::encode(&event, &mut written);
    let value: serde_json::Value = serde_json::from_slice(&written).unwrap();
    let spaced = serde_json::to_vec_pretty(&value).unwrap();
    let mut group = c.benchmark_group("journal_read");
    group.throughput(Throughput::Elements(1));
    group.bench_function("nerve line::decode", |b| {
        b.iter(|| nerve_journal::line::decode(black_box(&written)).unwrap());
    });
    group.bench_function("nerve line::decode, payload read", |b| {
        b.iter(|| {
            let event = nerve_journal::line::decode(black_box(&written)).unwrap();
            black_box(event.data().is_object());
            event
        });
    });
    group.bench_function("nerve line::decode, spaced", |b| {
        b.iter(|| nerve_journal::line::decode(black_box(&spaced)).unwrap());
    });
    group.bench_function("serde_json Value", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&written)).unwrap());
    });
    group.finish();
}

criterion_group!(benches, throughput, emit_latency, read);

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
    if selected("sustained") {
        journal_sustained();
    }
    if selected("durable") {
        durable_paired();
        durable_emit_paired();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
