//! The extraction guide over several processes: three workers split the
//! specimens, one validator sees every worker's events through NATS and
//! runs the early validation for the whole run. When the run is broken,
//! the validator's verdict goes back to the workers, and each stops at its
//! next specimen, as the single-process guide stops at specimen 5.
//!
//! Run a server first (Debian/Ubuntu: `apt-get install nats-server`, then
//! `nats-server -js -a 127.0.0.1`), then:
//!
//! ```sh
//! cargo run -p nerve --features consumers,nats --example extraction_nats
//! EXTRACTION_BROKEN=1 EXTRACTION_RUN_ID=extraction_002 \
//!     cargo run -p nerve --features consumers,nats --example extraction_nats
//! jq -r '.event_type' extraction_output/events.jsonl | sort | uniq -c
//! ```
//!
//! Without a role the program is the validator, and starts the workers
//! itself as child processes (`extraction_nats worker URL I N`); on
//! several machines, start `extraction_nats validator URL DIR` on one and
//! `extraction_nats worker URL I N` (I = 1..=N) on the others, the
//! validator first.
//!
//! | variable               | meaning |
//! |------------------------|---------|
//! | `NATS_URL`             | the server (default `nats://127.0.0.1:4222`) |
//! | `EXTRACTION_OUTPUT`    | the validator's output directory (default `extraction_output`) |
//! | `EXTRACTION_RUN_ID`    | the run's id (default `extraction_001`) |
//! | `EXTRACTION_BROKEN`    | `1`: every extraction comes back empty, as with a broken prompt |
//! | `EXTRACTION_WORKERS`   | worker processes the validator starts (default 3) |
//! | `EXTRACTION_SPECIMENS` | specimens in the run (default 300) |
//! | `EXTRACTION_DELAY_MS`  | simulated model call per specimen, in ms (default 20) |
//!
//! The validator writes every event of the run (its own and the workers')
//! to `OUTPUT_DIR/events.jsonl`, and prints the verdict and, for each
//! worker, how it ended and how many of its specimens came in after the
//! verdict. Exit status: 0 when the run completed, 1 when it was stopped
//! (the guide's `sys.exit(1)`), 2 on any other error.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nerve::consumers::{MetricsConsumer, ValidationConsumer, VerdictConsumer};
use nerve::nats::{NatsBridge, NatsOptions};
use nerve::{Bus, EmitError, Event, Journal, Subscribe, Value, json};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// Every subject of the example is under this prefix.
const PREFIX: &str = "nerve.extraction.";
/// Generous bound on a flush or on the last events of a worker arriving.
const PATIENCE: Duration = Duration::from_secs(30);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = || std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let result = match args.first().map(String::as_str) {
        Some("worker") => match (args.get(1), parse(args.get(2)), parse(args.get(3))) {
            (Some(url), Some(i), Some(n)) if (1..=n).contains(&i) => worker(url, i, n),
            _ => Err("usage: extraction_nats worker URL I N (1 <= I <= N)".into()),
        },
        Some("validator") => match (args.get(1), args.get(2)) {
            (Some(url), Some(dir)) => validator(url, PathBuf::from(dir), false),
            _ => Err("usage: extraction_nats validator URL OUTPUT_DIR".into()),
        },
        Some(other) if other.starts_with('-') => {
            Err(format!("unknown option {other}; see the example's docs").into())
        }
        _ => {
            let dir =
                std::env::var("EXTRACTION_OUTPUT").unwrap_or_else(|_| "extraction_output".into());
            validator(&url(), PathBuf::from(dir), true)
        }
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("extraction_nats: error: {e}");
            std::process::exit(2);
        }
    }
}

fn parse(arg: Option<&String>) -> Option<usize> {
    arg.and_then(|a| a.parse().ok())
}

fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a number").into()),
        Err(_) => Ok(default),
    }
}

fn run_id() -> String {
    std::env::var("EXTRACTION_RUN_ID").unwrap_or_else(|_| "extraction_001".into())
}

/// The specimens of the whole run; worker `i` of `n` takes every `n`-th,
/// starting at its own.
fn specimens() -> Result<Vec<String>> {
    let total = env_number("EXTRACTION_SPECIMENS", 300)?;
    Ok((1..=total).map(|n| format!("HERB-{n:04}")).collect())
}

// ----- the validator -----

/// What the validator learns about each worker.
#[derive(Default, Debug)]
struct WorkerReport {
    /// Items received from the worker.
    items: u64,
    /// `specimen.completed` among them.
    successful: u64,
    /// Items received after the verdict.
    after_verdict: u64,
    /// `worker.finished` or `worker.stopped`, when it came.
    end: Option<Value>,
}

impl WorkerReport {
    /// Whether its last word and every specimen it names are in.
    fn complete(&self) -> bool {
        self.end
            .as_ref()
            .is_some_and(|e| e["processed"].as_u64().is_some_and(|p| self.items >= p))
    }
}

fn validator(url: &str, output_dir: PathBuf, spawn: bool) -> Result<i32> {
    let rt = tokio::runtime::Runtime::new()?;
    std::fs::create_dir_all(&output_dir)?;
    let bus = Bus::builder()
        .journal(Journal::builder(output_dir.join("events.jsonl")).build()?)
        .build()?;
    let _shutdown = bus.shutdown_guard();
    // The guide's settings, over the whole run: the checkpoint comes after
    // the first 5 specimens of any workers.
    let validation = ValidationConsumer::builder()
        .early_checkpoint(5)
        .early_threshold(0.5)
        .warning_threshold(0.7)
        .warning_interval(50)
        .build()?;
    validation.attach(&bus)?;
    // Live metrics over all workers (`metrics.snapshot` events in the journal).
    MetricsConsumer::builder().build()?.attach(&bus)?;
    let run_id = run_id();

    // The verdict: a failed checkpoint becomes the run's `extraction.failed`,
    // which, with the checkpoint itself, goes out to every worker.
    let verdict: Arc<Mutex<Option<String>>> = Arc::default();
    let decided = Arc::new(AtomicBool::new(false));
    {
        let weak = bus.downgrade();
        let verdict = verdict.clone();
        let decided = decided.clone();
        let run_id = run_id.clone();
        bus.subscribe(
            nerve::consumers::validation::CHECKPOINT_EVENT,
            move |e: &Event| {
                if e.data()["passed"] != json!(false) {
                    return Ok(());
                }
                let reason = e.data()["reason"]
                    .as_str()
                    .unwrap_or("early validation failed");
                *verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_owned());
                decided.store(true, Ordering::Release);
                let Some(bus) = weak.upgrade() else {
                    return Ok(());
                };
                bus.emit(
                    "extraction.failed",
                    json!({
                        "run_id": run_id,
                        "reason": "early_validation_failed",
                        "message": reason,
                        "processed": e.data()["processed"],
                        "success_rate": e.data()["success_rate"],
                    }),
                )
                .map(drop)
            },
        )?;
    }
    // Per worker: items in, items in after the verdict, and how it ended.
    // It runs before the validation handler, so the item that decides the
    // checkpoint counts as before the verdict.
    let reports: Arc<(Mutex<BTreeMap<u64, WorkerReport>>, Condvar)> = Arc::default();
    {
        let reports = reports.clone();
        bus.subscribe_with(
            ["specimen.completed", "specimen.failed", "worker.*"],
            move |e: &Event| {
                let Some(worker) = e.data()["worker"].as_u64() else {
                    return;
                };
                let (lock, changed) = &*reports;
                let mut reports = lock.lock().unwrap_or_else(|p| p.into_inner());
                let report = reports.entry(worker).or_default();
                match e.event_type() {
                    "worker.finished" | "worker.stopped" => report.end = Some(e.data().clone()),
                    "worker.started" => {}
                    _ => {
                        report.items += 1;
                        if e.event_type() == "specimen.completed" {
                            report.successful += 1;
                        }
                        if decided.load(Ordering::Acquire) {
                            report.after_verdict += 1;
                        }
                    }
                }
                changed.notify_all();
            },
            Subscribe::new()
                .name("example.workers")
                .priority(nerve::consumers::validation::DEFAULT_PRIORITY + 1),
        )?;
    }

    let bridge = rt.block_on(NatsBridge::connect(
        url,
        &bus,
        NatsOptions::new().prefix(PREFIX).origin("validator"),
    ))?;
    // In: every worker's items and reports. Out: the run's own events and
    // the validation's.
    rt.block_on(bridge.import("specimen.*"))?;
    rt.block_on(bridge.import("worker.*"))?;
    bridge.export("extraction.*")?;
    bridge.export("validation.*")?;

    let specimens = specimens()?;
    let workers = env_number("EXTRACTION_WORKERS", 3)?.max(1);
    bus.emit(
        "extraction.started",
        json!({"run_id": run_id, "total_specimens": specimens.len(), "model": "gpt-4o-mini", "workers": workers}),
    )?;
    println!(
        "validator ready: run {run_id}, {} specimens",
        specimens.len()
    );

    let mut children: Vec<(u64, Child)> = Vec::new();
    if spawn {
        let exe = std::env::current_exe()?;
        for i in 1..=workers {
            let child = Command::new(&exe)
                .args(["worker", url, &i.to_string(), &workers.to_string()])
                .spawn()?;
            children.push((i, child));
        }
    }
    // Wait for every worker's last word (`worker.finished` or
    // `worker.stopped`, saying how many specimens it processed) and for
    // all those specimens: NATS keeps the order of one export's messages,
    // not across a worker's two exports (`specimen.*`, `worker.*`), so its
    // last word may overtake its last specimens.
    let all_in = |reports: &BTreeMap<u64, WorkerReport>| {
        reports.values().filter(|r| r.complete()).count() as u64 >= workers
    };
    let mut statuses = BTreeMap::new();
    let mut all_exited_at = None;
    let (lock, changed) = &*reports;
    let mut guard = lock.lock().unwrap_or_else(|p| p.into_inner());
    while !all_in(&guard) {
        guard = changed
            .wait_timeout(guard, Duration::from_secs(1))
            .unwrap_or_else(|p| p.into_inner())
            .0;
        if children.is_empty() {
            // Workers started elsewhere: wait for them as long as it takes.
            continue;
        }
        for (i, child) in &mut children {
            if let Some(status) = child.try_wait()? {
                statuses.insert(*i, status);
            }
        }
        // Every worker exited: what they sent is on its way; a worker that
        // died without a word is said, not waited for.
        if statuses.len() == children.len() {
            let since = *all_exited_at.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > PATIENCE && !all_in(&guard) {
                return Err(format!(
                    "not every worker's events came in; exit statuses: {statuses:?}, received: {guard:?}"
                )
                .into());
            }
        }
    }
    drop(guard);
    for (i, mut child) in children {
        statuses.insert(i, child.wait()?);
    }
    let halted = verdict.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let reports = std::mem::take(&mut *lock.lock().unwrap_or_else(|p| p.into_inner()));
    let total_items: u64 = reports.values().map(|r| r.items).sum();
    if let Some(reason) = &halted {
        println!("verdict: {reason}");
    }
    for (worker, report) in &reports {
        let end = report.end.as_ref();
        let how = match end.map(|e| e["outcome"].as_str().unwrap_or("?")) {
            Some("stopped") => format!(
                "stopped at the checkpoint after {} specimens",
                end.map_or(0, |e| e["processed"].as_u64().unwrap_or(0))
            ),
            Some(other) => format!("{other} ({} specimens)", report.items),
            None => "no report".to_owned(),
        };
        let status = statuses
            .get(worker)
            .and_then(std::process::ExitStatus::code)
            .map_or_else(String::new, |c| format!(", exit status {c}"));
        println!(
            "worker {worker}: {how}, {} after the verdict{status}",
            report.after_verdict
        );
    }
    let code = if let Some(reason) = halted {
        // The validator's own `extraction.failed` is in the journal; like
        // the guide's `sys.exit(1)`, once everything is flushed.
        eprintln!("❌ Extraction stopped: {reason}");
        1
    } else {
        let successful: u64 = reports.values().map(|r| r.successful).sum();
        bus.emit(
            "extraction.completed",
            json!({
                "run_id": run_id,
                "total_processed": total_items,
                "successful": successful,
                "failed": total_items - successful,
                "success_rate": successful as f64 / total_items.max(1) as f64,
            }),
        )?;
        println!("{total_items} specimens, {successful} successful");
        0
    };
    rt.block_on(bridge.shutdown(PATIENCE));
    bus.shutdown_blocking();
    Ok(code)
}

// ----- a worker -----

fn worker(url: &str, i: usize, n: usize) -> Result<i32> {
    let rt = tokio::runtime::Runtime::new()?;
    let bus = Bus::builder().history_capacity(0).build()?;
    let _shutdown = bus.shutdown_guard();
    // The validator's verdicts halt this worker's next specimen.
    let verdicts = VerdictConsumer::new();
    verdicts.attach(&bus)?;
    let bridge = rt.block_on(NatsBridge::connect(
        url,
        &bus,
        NatsOptions::new()
            .prefix(PREFIX)
            .origin(format!("worker-{i}")),
    ))?;
    rt.block_on(bridge.import("validation.checkpoint"))?;
    rt.block_on(bridge.import("extraction.failed"))?;
    bridge.export("specimen.*")?;
    bridge.export("worker.*")?;

    let run_id = run_id();
    let delay = Duration::from_millis(env_number("EXTRACTION_DELAY_MS", 20)?);
    let mine: Vec<String> = specimens()?.into_iter().skip(i - 1).step_by(n).collect();
    bus.emit(
        "worker.started",
        json!({"run_id": run_id, "worker": i, "specimens": mine.len()}),
    )?;
    let (mut successful, mut failed) = (0_u32, 0_u32);
    let mut stopped = None;
    for (k, specimen_id) in mine.iter().enumerate() {
        let sequence = k + 1;
        let emitted = bus.emit(
            "specimen.processing",
            json!({"run_id": run_id, "worker": i, "specimen_id": specimen_id, "sequence": sequence}),
        );
        if let Err(EmitError::Halted { reason, .. }) = emitted {
            stopped = Some(reason);
            break;
        }
        emitted?;
        std::thread::sleep(delay);
        let result = extract_specimen(specimen_id);
        let event_type = if result["dwc"].as_object().is_some_and(|dwc| !dwc.is_empty()) {
            successful += 1;
            "specimen.completed"
        } else {
            failed += 1;
            "specimen.failed"
        };
        // The validator is in another process: a verdict on this run halts
        // the next emit here, as a local validator halts this one.
        let emitted = bus.emit(
            event_type,
            json!({
                "run_id": run_id,
                "worker": i,
                "specimen_id": specimen_id,
                "sequence": sequence,
                "result": result,
                "metrics": {
                    "total_processed": sequence,
                    "success_count": successful,
                    "failed_count": failed,
                    "success_rate": f64::from(successful) / sequence as f64,
                },
            }),
        );
        if let Err(EmitError::Halted { reason, .. }) = emitted {
            stopped = Some(reason);
            break;
        }
        emitted?;
    }
    let processed = successful + failed;
    let code = match stopped {
        Some(reason) => {
            // The guide's `print(f"❌ Extraction stopped: {e}")`.
            println!("❌ Extraction stopped: {reason}");
            bus.emit(
                "worker.stopped",
                json!({"run_id": run_id, "worker": i, "outcome": "stopped", "processed": processed, "reason": reason}),
            )?;
            1
        }
        None => {
            bus.emit(
                "worker.finished",
                json!({"run_id": run_id, "worker": i, "outcome": "finished", "processed": processed, "successful": successful}),
            )?;
            0
        }
    };
    // Everything this worker emitted reaches the server before it exits.
    if !rt.block_on(bridge.flush(PATIENCE)) {
        return Err("the last events could not be sent to NATS in time".into());
    }
    let stats = bridge.stats();
    if stats.dropped + stats.publish_errors > 0 {
        return Err(format!(
            "{} events were not sent to NATS: {stats:?}",
            stats.dropped + stats.publish_errors
        )
        .into());
    }
    rt.block_on(bridge.shutdown(PATIENCE));
    // Like the guide's `sys.exit(1)` when stopped.
    Ok(code)
}

/// Stands in for the model call: Darwin Core fields for most specimens,
/// nothing at all when the prompt is broken.
fn extract_specimen(specimen_id: &str) -> Value {
    let broken = std::env::var("EXTRACTION_BROKEN").is_ok_and(|v| v == "1");
    let unreadable = specimen_id.ends_with('7'); // one label in ten
    if broken || unreadable {
        return json!({"dwc": {}});
    }
    json!({"dwc": {"catalogNumber": specimen_id, "scientificName": "Carex aquatilis"}})
}
