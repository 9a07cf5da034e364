//! The soak: a bus with every feature on, at full rate from several threads
//! for a given time, then a check that nothing grew, leaked or went
//! unaccounted for.
//!
//! Run it through `cargo xtask soak --minutes N`, which builds this example
//! and the `nerve` binary and passes them the arguments below:
//!
//! ```text
//! soak --seconds S --dir DIR [--nerve PATH] [--emitters N]
//! ```
//!
//! What runs: a journal in `DIR` rotated every few seconds (small files,
//! redacted, the default fsync policy), a dead letter queue, inline, queued
//! and async handlers that sometimes fail or panic, for each overflow policy
//! a stream with a fast reader and one with a slow reader, the
//! OpenTelemetry layer over an SDK provider whose sampler is always off,
//! runs that come and go (the per-run history evicts them), and a
//! subscription made and removed every second. `N` threads emit as fast as
//! the bus takes events.
//!
//! What is checked at the end (exit 1 if any check fails):
//!
//! * resident memory (`VmRSS`, sampled every second) stayed under
//!   `warm-up peak × 1.5 + 32 MiB`, a bound that does not grow with the
//!   run's length;
//! * per subscriber, `offered == delivered + dropped` (by reason), handlers'
//!   outcomes add up to `delivered`, each stream reader received exactly
//!   what its stream delivered;
//! * the bus's totals are the sums of its subscribers' counts, and count
//!   every event the emitters had acknowledged;
//! * the journal wrote every event the bus accepted, and lost none;
//! * every failure and every drop became a dead letter;
//! * `nerve verify DIR` exits 0 (when `--nerve` is given);
//! * no tokio task is left alive after shutdown, and the process has as many
//!   threads after the run as before it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nerve::journal::{Fsync, Journal};
use nerve::otel::OtelLayer;
use nerve::redact::Redactor;
use nerve::{
    Bus, DeadLetterQueue, EmitError, Event, EventStream, HandlerError, Overflow, StreamOptions,
    Subscribe, json,
};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

/// How long the RSS peak is taken as the warm-up's.
const WARM_UP: Duration = Duration::from_secs(15);
/// The memory bound: the warm-up peak times this...
const RSS_FACTOR: f64 = 1.5;
/// ... plus this many bytes.
const RSS_SLACK: u64 = 32 << 20;
/// The journal's file size: small, so that it rotates every few seconds.
const JOURNAL_FILE_BYTES: u64 = 4 << 20;
/// Events per run id, per emitter thread.
const RUN_LENGTH: u64 = 2_000;
/// The message of every panic this program causes on purpose.
const INJECTED: &str = "soak: injected panic";

/// The command line.
struct Args {
    seconds: u64,
    dir: PathBuf,
    nerve: Option<PathBuf>,
    emitters: usize,
}

impl Args {
    fn parse() -> Result<Self, String> {
        let mut args = Args {
            seconds: 60,
            dir: std::env::temp_dir().join("nerve-soak"),
            nerve: None,
            emitters: 4,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--seconds" => args.seconds = value()?.parse().map_err(|e| format!("{e}"))?,
                "--dir" => args.dir = value()?.into(),
                "--nerve" => args.nerve = Some(value()?.into()),
                "--emitters" => args.emitters = value()?.parse().map_err(|e| format!("{e}"))?,
                other => return Err(format!("unknown argument {other}")),
            }
        }
        Ok(args)
    }
}

/// What the emitter threads counted.
#[derive(Default)]
struct Emitted {
    /// Events the bus accepted (`Ok`, or `QueueFull` from a stream with the
    /// `Error` policy: accepted, delivered to every other subscriber).
    accepted: AtomicU64,
    /// Of those, the ones refused by a full `Error` stream.
    refused: AtomicU64,
    /// Any other error: a failure of the soak.
    errors: AtomicU64,
    /// Per event type, what was accepted.
    by_type: [AtomicU64; 3],
}

/// The event types the emitters use, in [`Emitted::by_type`] order. The
/// third is terminal (and so durable): rare, since each waits for the disk.
const TYPES: [&str; 3] = ["soak.tick", "soak.order.placed", "soak.job.completed"];

/// One stream and the count of what its reader received.
struct Reader {
    name: String,
    received: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    id: nerve::SubscriptionId,
}

/// Memory and thread figures sampled over the run.
#[derive(Default)]
struct Samples {
    rss_min: u64,
    rss_max: u64,
    warm_up_peak: u64,
    threads_max: usize,
    count: u64,
}

impl Samples {
    fn take(&mut self, elapsed: Duration) {
        let rss = rss_bytes();
        if self.count == 0 || rss < self.rss_min {
            self.rss_min = rss;
        }
        self.rss_max = self.rss_max.max(rss);
        if elapsed <= WARM_UP {
            self.warm_up_peak = self.warm_up_peak.max(rss);
        }
        self.threads_max = self.threads_max.max(threads());
        self.count += 1;
    }
}

/// The process's resident memory, from `/proc/self/status`.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The process's threads, from `/proc/self/task`.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / f64::from(1 << 20))
}

/// The checks, each with its verdict.
#[derive(Default)]
struct Checks {
    lines: Vec<(bool, String)>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        self.lines.push((ok, what.into()));
    }

    fn passed(&self) -> bool {
        self.lines.iter().all(|(ok, _)| *ok)
    }
}

fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    match soak(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(2)
        }
    }
}

/// Silences the panics this program causes on purpose; others still print.
fn quiet_injected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str));
        if message != Some(INJECTED) {
            default(info);
        }
    }));
}

/// A handler's verdict on the `n`th event: fail every `fail`th, panic every
/// `panic`th.
fn verdict(e: &Event, fail: u64, panic: u64) -> Result<(), HandlerError> {
    let n = e.seq();
    if n % panic == 0 {
        panic!("{INJECTED}");
    }
    if n % fail == 0 {
        return Err(HandlerError::new("soak: injected failure"));
    }
    Ok(())
}

#[allow(clippy::too_many_lines)] // one run, read top to bottom
fn soak(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    quiet_injected_panics();
    let threads_before = threads();
    let rss_before = rss_bytes();
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)?;
    }
    std::fs::create_dir_all(&args.dir)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOff)
        .build();
    let journal = Journal::builder(args.dir.join("events.jsonl"))
        .max_bytes(JOURNAL_FILE_BYTES)
        .max_files(3)
        .fsync(Fsync::Interval(Duration::from_millis(200)))
        .redactor(Redactor::default())
        .build()?;
    let dlq = DeadLetterQueue::new(10_000);
    let bus = Bus::builder()
        .runtime(runtime.handle().clone())
        .journal(journal.clone())
        .dead_letters(dlq.clone())
        .instrument(OtelLayer::with_tracer(provider.tracer("soak")))
        .run_history(100, 50)
        .build()?;

    // Handlers: inline, queued and async; some fail and panic now and then.
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    bus.subscribe_with(
        "soak.*",
        move |_: &Event| {
            counter.fetch_add(1, Ordering::Relaxed);
        },
        Subscribe::new().name("count").priority(10),
    )?;
    bus.subscribe_with(
        "soak.*",
        |e: &Event| verdict(e, 101, 1009),
        Subscribe::new().name("flaky"),
    )?;
    bus.subscribe_with(
        "soak.order.*",
        |e: &Event| verdict(e, 211, 2003),
        Subscribe::new()
            .name("archive")
            .queued(256)
            .overflow(Overflow::DropOldest),
    )?;
    bus.subscribe_async_with(
        "soak.*",
        |e: Event| async move {
            tokio::task::yield_now().await;
            verdict(&e, 307, 3001)
        },
        Subscribe::new()
            .name("upload")
            .queued(1024)
            .overflow(Overflow::Block),
    )?;
    bus.subscribe_async_with(
        "soak.*",
        |e: Event| async move {
            if e.seq() % 64 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            verdict(&e, 401, 4001)
        },
        Subscribe::new()
            .name("slow-upload")
            .queued(256)
            .overflow(Overflow::DropNewest),
    )?;

    // Streams: a fast and a slow reader under each policy.
    let policies = [
        ("drop-newest", Overflow::DropNewest, 8),
        ("drop-oldest", Overflow::DropOldest, 8),
        ("error", Overflow::Error, 8),
        ("block", Overflow::Block, 128),
        (
            "block-timeout",
            Overflow::BlockTimeout(Duration::from_millis(2)),
            128,
        ),
    ];
    let mut readers = Vec::new();
    for (label, policy, pause_every) in policies {
        for slow in [false, true] {
            let name = format!("{}-{label}", if slow { "slow" } else { "fast" });
            let stream = bus.stream_with(
                "soak.*",
                StreamOptions::new()
                    .name(name.clone())
                    .capacity(if slow { 256 } else { 1024 })
                    .overflow(policy),
            )?;
            let received = Arc::new(AtomicU64::new(0));
            let id = stream.id();
            let task = runtime.spawn(read(stream, received.clone(), slow.then_some(pause_every)));
            readers.push(Reader {
                name,
                received,
                task,
                id,
            });
        }
    }

    // The emitters.
    let stop = Arc::new(AtomicBool::new(false));
    let emitted = Arc::new(Emitted::default());
    let emitters: Vec<_> = (0..args.emitters)
        .map(|t| {
            let (bus, stop, emitted) = (bus.clone(), stop.clone(), emitted.clone());
            thread::Builder::new()
                .name(format!("soak-emit-{t}"))
                .spawn(move || emit(&bus, t, &stop, &emitted))
        })
        .collect::<Result<_, _>>()?;

    // The run: sample memory and threads every second; a subscription comes
    // and goes each second too.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut samples = Samples::default();
    let mut churn = None;
    let mut next = started;
    let mut next_report = started + Duration::from_secs(60);
    while Instant::now() < deadline {
        next += Duration::from_secs(1);
        thread::sleep(next.saturating_duration_since(Instant::now()));
        samples.take(started.elapsed());
        if let Some(id) = churn.take() {
            bus.unsubscribe(id);
        }
        churn = Some(bus.subscribe("soak.churn.never", |_: &Event| {})?);
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(60);
            let n = emitted.accepted.load(Ordering::Relaxed);
            println!(
                "soak: {:>4} s  {n} events  {:.0}/s  RSS {}  threads {}  rotations {}",
                started.elapsed().as_secs(),
                n as f64 / started.elapsed().as_secs_f64(),
                mib(rss_bytes()),
                threads(),
                journal.stats().rotations,
            );
        }
    }
    if let Some(id) = churn.take() {
        bus.unsubscribe(id);
    }

    // Stop, drain, and take the final counts while every subscription lives.
    stop.store(true, Ordering::Relaxed);
    for emitter in emitters {
        emitter.join().map_err(|_| "an emitter thread panicked")?;
    }
    let elapsed = started.elapsed();
    samples.take(elapsed);
    runtime.block_on(bus.flush());
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    let stats = loop {
        let stats = bus.stats();
        let caught_up = readers.iter().all(|r| {
            stats.subscribers.iter().any(|s| {
                s.id == r.id.as_u64()
                    && s.queued == 0
                    && s.delivered == r.received.load(Ordering::Relaxed)
            })
        });
        if caught_up && stats.pending == 0 || Instant::now() > drain_deadline {
            break stats;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let dead = dlq.stats();

    let mut checks = Checks::default();
    let accepted = emitted.accepted.load(Ordering::Relaxed);
    checks.check(
        emitted.errors.load(Ordering::Relaxed) == 0,
        format!(
            "emit errors other than QueueFull: {}",
            emitted.errors.load(Ordering::Relaxed)
        ),
    );

    // Per subscriber.
    let mut sums = BTreeMap::<&str, u64>::new();
    let mut overflow_drops = 0;
    for s in &stats.subscribers {
        let label = s.name.clone().unwrap_or_else(|| s.id.to_string());
        let by_reason: u64 = s.dropped_by_reason.values().sum();
        checks.check(
            s.offered == s.delivered + s.dropped + s.queued && by_reason == s.dropped,
            format!(
                "{label}: offered {} == delivered {} + dropped {} {:?} + queued {}",
                s.offered, s.delivered, s.dropped, s.dropped_by_reason, s.queued
            ),
        );
        if s.kind != "stream" {
            checks.check(
                s.delivered
                    == s.succeeded + s.failed + s.timed_out + s.halted + s.not_recorded
                    && s.pending == 0,
                format!(
                    "{label}: delivered {} == succeeded {} + failed {} + timed out {} + halted {} + not recorded {}, pending {}",
                    s.delivered, s.succeeded, s.failed, s.timed_out, s.halted, s.not_recorded, s.pending
                ),
            );
        }
        if s.kind == "sync" {
            checks.check(
                s.offered == accepted || s.patterns != ["soak.*"],
                format!(
                    "{label}: inline handler offered {} == accepted {accepted}",
                    s.offered
                ),
            );
        }
        *sums.entry("succeeded").or_default() += s.succeeded;
        *sums.entry("failed").or_default() += s.failed;
        *sums.entry("panicked").or_default() += s.panicked;
        *sums.entry("timed_out").or_default() += s.timed_out;
        *sums.entry("dropped").or_default() += s.dropped;
        *sums.entry("failures").or_default() += s.failed + s.timed_out;
        overflow_drops += s.dropped - s.dropped_by_reason.get("closed").copied().unwrap_or(0);
    }
    for r in &readers {
        let delivered = stats
            .subscribers
            .iter()
            .find(|s| s.id == r.id.as_u64())
            .map_or(u64::MAX, |s| s.delivered);
        let received = r.received.load(Ordering::Relaxed);
        checks.check(
            received == delivered,
            format!(
                "{}: reader received {received} == delivered {delivered}",
                r.name
            ),
        );
    }
    checks.check(
        seen.load(Ordering::Relaxed) == accepted,
        format!(
            "count handler saw {} == accepted {accepted}",
            seen.load(Ordering::Relaxed)
        ),
    );

    // Bus totals.
    let e = &stats.events;
    let soak_types: u64 = TYPES
        .iter()
        .map(|t| stats.by_event_type.get(*t).copied().unwrap_or(0))
        .sum();
    let by_type_ok = TYPES.iter().zip(&emitted.by_type).all(|(t, n)| {
        stats.by_event_type.get(*t).copied().unwrap_or(0) == n.load(Ordering::Relaxed)
    });
    checks.check(
        soak_types == accepted && by_type_ok,
        format!("bus counted {soak_types} soak events by type == accepted {accepted}"),
    );
    checks.check(
        stats.by_event_type.values().sum::<u64>() == e.emitted,
        format!(
            "by_event_type sums to emitted {} (system events: {})",
            e.emitted,
            e.emitted - soak_types
        ),
    );
    checks.check(
        e.delivered == sums["succeeded"]
            && e.failed == sums["failed"]
            && e.panicked == sums["panicked"]
            && e.timed_out == sums["timed_out"]
            && e.dropped == sums["dropped"],
        format!(
            "bus totals == sums over subscribers (delivered {}, failed {}, panicked {}, timed out {}, dropped {})",
            e.delivered, e.failed, e.panicked, e.timed_out, e.dropped
        ),
    );
    checks.check(
        e.journal_errors == 0 && e.abandoned == 0 && e.rejected == 0,
        format!(
            "journal errors {}, abandoned {}, rejected {}",
            e.journal_errors, e.abandoned, e.rejected
        ),
    );

    // Dead letters.
    let expected_dead = sums["failures"] + overflow_drops;
    checks.check(
        dead.added == expected_dead && dead.size as u64 + dead.evicted == dead.added,
        format!(
            "dead letters added {} == failures {} + overflow drops {overflow_drops}; held {} + evicted {}",
            dead.added, sums["failures"], dead.size, dead.evicted
        ),
    );

    // Shut down: end the readers, then the bus (which closes the journal).
    for r in &readers {
        bus.unsubscribe(r.id);
    }
    let tasks_before_join = runtime.metrics().num_alive_tasks();
    for r in readers {
        runtime.block_on(r.task)?;
    }
    let report = runtime.block_on(bus.shutdown());
    checks.check(
        report.drained && report.abandoned == 0,
        format!(
            "shutdown drained {}, abandoned {}",
            report.drained, report.abandoned
        ),
    );
    let after = bus.stats().events.emitted;
    let js = journal.stats();
    checks.check(
        js.written == after && js.lost == 0 && js.dropped == 0 && js.io_errors == 0,
        format!(
            "journal written {} == bus emitted {after} (lost {}, dropped {}, I/O errors {})",
            js.written, js.lost, js.dropped, js.io_errors
        ),
    );
    let alive = runtime.metrics().num_alive_tasks();
    checks.check(
        alive == 0,
        format!(
            "tokio tasks alive after shutdown: {alive} (readers before join: {tasks_before_join})"
        ),
    );
    drop(bus);
    drop(journal);
    drop(dlq);
    provider.shutdown()?;
    drop(provider);
    runtime.shutdown_timeout(Duration::from_secs(10));
    // Threads end a little after they are told to: wait for them, boundedly.
    let settle = Instant::now() + Duration::from_secs(10);
    let mut threads_after = threads();
    while threads_after > threads_before && Instant::now() < settle {
        thread::sleep(Duration::from_millis(20));
        threads_after = threads();
    }
    checks.check(
        threads_after <= threads_before,
        format!("threads {threads_before} before, {threads_after} after"),
    );

    // Memory.
    let bound = (samples.warm_up_peak as f64 * RSS_FACTOR) as u64 + RSS_SLACK;
    checks.check(
        samples.rss_max <= bound,
        format!(
            "RSS max {} <= bound {} (warm-up peak {} x {RSS_FACTOR} + {})",
            mib(samples.rss_max),
            mib(bound),
            mib(samples.warm_up_peak),
            mib(RSS_SLACK)
        ),
    );

    // The journal, as the CLI sees it.
    let verify = match &args.nerve {
        Some(nerve) => Some(verify(nerve, &args.dir)?),
        None => None,
    };
    if let Some((ok, summary)) = &verify {
        checks.check(*ok, format!("nerve verify: {summary}"));
    }

    let rate = accepted as f64 / elapsed.as_secs_f64();
    println!();
    println!(
        "soak: {} s, {} emitter threads",
        elapsed.as_secs(),
        args.emitters
    );
    println!(
        "  events     {accepted} accepted ({rate:.0}/s; {} refused by a full Error stream), {} emitted with system events",
        emitted.refused.load(Ordering::Relaxed),
        after
    );
    println!(
        "  deliveries {} ok, {} failed ({} panics), {} dropped, {} dead letters",
        e.delivered, e.failed, e.panicked, e.dropped, dead.added
    );
    println!(
        "  RSS        {} before, min {} / max {} (warm-up peak {}, bound {}), {} samples",
        mib(rss_before),
        mib(samples.rss_min),
        mib(samples.rss_max),
        mib(samples.warm_up_peak),
        mib(bound),
        samples.count
    );
    println!(
        "  threads    {threads_before} -> {} -> {threads_after}",
        samples.threads_max
    );
    println!(
        "  journal    {} written, {} rotations, {} MiB",
        js.written,
        js.rotations,
        js.bytes >> 20
    );
    println!(
        "  verify     {}",
        verify
            .as_ref()
            .map_or("skipped (no --nerve)", |(_, s)| s.as_str())
    );
    let failed: Vec<_> = checks.lines.iter().filter(|(ok, _)| !ok).collect();
    println!(
        "  checks     {} passed, {} failed",
        checks.lines.len() - failed.len(),
        failed.len()
    );
    for (_, line) in &failed {
        println!("    FAILED {line}");
    }
    if std::env::var_os("SOAK_VERBOSE").is_some() {
        for (ok, line) in &checks.lines {
            println!("    {} {line}", if *ok { "ok" } else { "FAILED" });
        }
    }
    Ok(checks.passed())
}

/// Reads `stream` to its end, counting; a slow reader pauses 1 ms every
/// `pause_every` events.
async fn read(mut stream: EventStream, received: Arc<AtomicU64>, pause_every: Option<u64>) {
    let mut n = 0u64;
    while stream.next().await.is_some() {
        n += 1;
        received.store(n, Ordering::Relaxed);
        if pause_every.is_some_and(|k| n % k == 0) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// One emitter thread: events as fast as the bus takes them, in runs that
/// come and go.
fn emit(bus: &Bus, thread: usize, stop: &AtomicBool, emitted: &Emitted) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let kind = if n % 10_000 == 0 {
            2
        } else {
            usize::from(n % 3 == 0)
        };
        let event = Event::builder(TYPES[kind])
            .run_id(format!("run-{thread}-{}", n / RUN_LENGTH))
            .data(json!({
                "n": n,
                "thread": thread,
                "user": "alice@example.com",
                "note": "card 4111 1111 1111 1111",
            }))
            .build()
            .expect("a valid event");
        match bus.emit_event(event) {
            Ok(_) => {}
            Err(EmitError::QueueFull { .. }) => {
                emitted.refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                emitted.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("soak: emit failed: {e}");
                continue;
            }
        }
        emitted.accepted.fetch_add(1, Ordering::Relaxed);
        emitted.by_type[kind].fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `nerve verify` on the journal: whether it exited 0, and its last
/// line.
fn verify(nerve: &Path, dir: &Path) -> Result<(bool, String), std::io::Error> {
    let out = Command::new(nerve).arg("verify").arg(dir).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let code = out.status.code().map_or("signal".into(), |c| c.to_string());
    Ok((
        out.status.success(),
        format!("exit {code}: {}", last.trim()),
    ))
}
