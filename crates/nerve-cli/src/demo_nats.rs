//! `nerve demo --nats URL`: the demo's runs, each extracted by a worker
//! process of its own (`nerve demo-worker`, hidden) that talks to this
//! process through a NATS server. This process keeps what a central
//! service keeps: the early validation, the metrics, the progress bar and
//! the journals; the worker only emits, and stops when the validation's
//! verdict comes back.
//!
//! Subjects are `nerve.demo.{nonce}.{event type}`, a fresh nonce per demo,
//! so that demos sharing a server do not hear each other. The worker
//! publishes everything with one export (NATS keeps one publisher's order
//! within a subscription, and the validation counts items in order); this
//! process imports everything with one import and exports the validation's
//! events. After the checkpoint's item the worker waits for the verdict,
//! so that a broken run stops at specimen 5 as it does in one process; a
//! later verdict (none in the demo) would halt the worker's next emit
//! through its [`VerdictConsumer`].

use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use nerve::consumers::VerdictConsumer;
use nerve::nats::{NatsBridge, NatsOptions};
use nerve::{Bus, Event};

use crate::demo::{DemoArgs, PLANS, Plan, Summary};

/// The checkpoint of the demo's validation (`demo_consumers::attach`).
const CHECKPOINT: usize = 5;
/// Generous bound on a verdict, a flush, or a run's last events arriving
/// after its worker exited.
const PATIENCE: Duration = Duration::from_secs(30);
/// How long the import must stay quiet, after a worker died, before its
/// failure is recorded: its last messages may still be in the server or
/// in this process's import. NATS cannot say when a dead publisher's
/// messages are all delivered, so this waits for silence, at most
/// `PATIENCE`.
const QUIET: Duration = Duration::from_millis(300);

/// `nerve demo-worker`: one run of `nerve demo --nats`.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// The NATS server.
    #[arg(long, value_name = "URL")]
    nats: String,
    /// The subject prefix of this demo.
    #[arg(long, value_name = "PREFIX")]
    prefix: String,
    /// The run to extract (`run-healthy`, `run-broken`).
    #[arg(long, value_name = "ID")]
    run: String,
    #[arg(long, value_name = "N")]
    specimens: u32,
    #[arg(long, value_name = "S")]
    seed: u64,
    #[arg(long, value_name = "MS")]
    delay_ms: u64,
    /// The demo's process: this worker ends when it does.
    #[arg(long, value_name = "PID")]
    parent: Option<u32>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

async fn connect(url: &str, bus: &Bus, options: NatsOptions) -> Result<NatsBridge> {
    NatsBridge::connect(url, bus, options)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", crate::inspect::quote(url)))
}

/// One run, extracted by a worker process, validated and recorded here.
pub(crate) fn run_one(plan: &Plan, args: &DemoArgs, seed: u64, url: &str) -> Result<Summary> {
    let rt = runtime()?;
    let (log, bus) = crate::demo::journal_bus(plan, args)?;
    #[cfg(unix)]
    let _signals = crate::demo::watch_signals(&bus, &log)?;
    let consumers = crate::demo_consumers::attach(&bus, true)?;
    let (ended_tx, ended_rx) = mpsc::channel::<Event>();
    bus.subscribe(
        ["extraction.completed", "extraction.failed"],
        move |e: &Event| {
            let _ = ended_tx.send(e.clone());
        },
    )?;
    let prefix = format!(
        "nerve.demo.{}{}.",
        std::process::id(),
        nerve::EventId::new().to_string().replace('-', "")
    );
    let bridge = rt.block_on(connect(
        url,
        &bus,
        NatsOptions::new().prefix(&prefix).origin("demo"),
    ))?;
    // Everything the worker publishes, in its order, by one subscription.
    rt.block_on(bridge.import("*"))?;
    bridge.export("validation.*")?;

    let start = Instant::now();
    let exe = std::env::current_exe().context("cannot find the nerve binary to start a worker")?;
    let mut worker = Command::new(exe)
        .arg("demo-worker")
        .args(["--nats", url, "--prefix", &prefix, "--run", plan.run_id])
        .args(["--parent", &std::process::id().to_string()])
        .args(["--specimens", &args.specimens.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--delay-ms", &args.delay().as_millis().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start a worker process")?;
    let status = worker.wait().context("lost the worker process")?;
    if !status.success() {
        // The run did not end as a run ends: the journal says so, as it
        // does for Ctrl-C, instead of leaving a run that never ended;
        // after the worker's last events, not among them.
        settle(&bridge);
        let processed = consumers.snapshot().map_or(0, |m| m.processed);
        let failed = Event::builder("extraction.failed")
            .run_id(plan.run_id)
            .source("demo")
            .data(serde_json::json!({
                "run_id": plan.run_id,
                "reason": "worker_failed",
                "message": format!("the worker process failed ({status})"),
                "processed": processed,
            }))
            .build()?;
        let recorded = bus.emit_event(failed);
        consumers.finish();
        bus.shutdown_blocking();
        recorded.context("cannot record the run's failure")?;
        // A worker that exited said why; one killed by a signal could not.
        let see = if status.code().is_some() {
            "; see its message above"
        } else {
            ""
        };
        anyhow::bail!(
            "the worker of {} failed ({status}){see}. Its events so far, and its failure, are in {}",
            plan.run_id,
            log.display()
        );
    }
    // The worker flushed before exiting: its last event is on its way.
    let end = ended_rx.recv_timeout(PATIENCE).with_context(|| {
        format!(
            "the end of {} did not arrive within {PATIENCE:?}; bridge: {:?}",
            plan.run_id,
            bridge.stats()
        )
    })?;
    consumers.finish();
    let metrics = consumers
        .snapshot()
        .context("the metrics consumer saw no run")?;
    // The worker said how many it processed; the metrics here saw them all.
    let told = end.data()["processed"]
        .as_u64()
        .or_else(|| end.data()["total_processed"].as_u64());
    anyhow::ensure!(
        told == Some(metrics.processed),
        "the worker processed {told:?} specimens; {} arrived here",
        metrics.processed
    );
    let outcome = match consumers.validation.status().and_then(|s| s.halt_reason) {
        Some(reason) => format!("stopped: {reason}"),
        None if end.event_type() == "extraction.completed" => "completed".to_owned(),
        None => format!(
            "stopped: {}",
            end.data()["message"].as_str().unwrap_or("failed")
        ),
    };
    let stats = bridge.stats();
    anyhow::ensure!(
        stats.import_rejected == 0,
        "{} messages could not be imported: {stats:?}",
        stats.import_rejected
    );
    rt.block_on(bridge.shutdown(PATIENCE));
    bus.shutdown_blocking();
    Ok(Summary {
        run_id: plan.run_id,
        processed: u32::try_from(metrics.processed).unwrap_or(u32::MAX),
        succeeded: u32::try_from(metrics.succeeded).unwrap_or(u32::MAX),
        outcome,
        elapsed: start.elapsed(),
        log,
    })
}

/// Waits until the import has received nothing for [`QUIET`] (at most
/// [`PATIENCE`]): what a dead worker sent before it died is then in the
/// bus.
fn settle(bridge: &NatsBridge) {
    let received = |s: nerve::nats::BridgeStats| {
        s.imported + s.import_rejected + s.echoes_suppressed + s.internal_skipped
    };
    let deadline = Instant::now() + PATIENCE;
    let mut seen = received(bridge.stats());
    while Instant::now() < deadline {
        std::thread::sleep(QUIET);
        let now = received(bridge.stats());
        if now == seen {
            return;
        }
        seen = now;
    }
}

/// Asks the kernel to end this worker (SIGTERM) when the demo that
/// started it dies, however it dies (SIGKILL too): an orphan would go on
/// extracting and publishing to nobody, for as long as its run lasts.
/// The spawning thread waits for the worker, so it outlives it.
#[cfg(target_os = "linux")]
fn end_with_parent(parent: Option<u32>) -> Result<()> {
    use rustix::process::{Pid, Signal, getppid, set_parent_process_death_signal};
    set_parent_process_death_signal(Some(Signal::TERM))
        .context("cannot ask to end with the demo")?;
    // The demo may have died before the line above: this process then
    // has another parent already.
    if let Some(parent) = parent {
        let now = Pid::as_raw(getppid());
        anyhow::ensure!(
            u32::try_from(now).ok() == Some(parent),
            "the demo that started this worker (process {parent}) is gone"
        );
    }
    Ok(())
}

/// `nerve demo-worker`: extracts one run, publishing its events, until
/// it completes or the validation's verdict stops it.
pub(crate) fn worker(args: &WorkerArgs) -> Result<ExitCode> {
    #[cfg(target_os = "linux")]
    end_with_parent(args.parent)?;
    let plan = PLANS
        .iter()
        .find(|p| p.run_id == args.run)
        .with_context(|| format!("no demo run {:?}", args.run))?;
    let rt = runtime()?;
    let bus = Bus::builder()
        .history_capacity(0)
        .build()
        .context("cannot build the bus")?;
    let verdicts = VerdictConsumer::new();
    verdicts.attach(&bus)?;
    let bridge = rt.block_on(connect(
        &args.nats,
        &bus,
        NatsOptions::new()
            .prefix(&args.prefix)
            .origin(format!("worker-{}", args.run)),
    ))?;
    rt.block_on(bridge.import("validation.checkpoint"))?;
    bridge.export("*")?;
    // The run's outcome travels as its end event.
    crate::demo::simulate(
        plan,
        args.specimens,
        args.delay_ms,
        args.seed,
        &bus,
        |sequence| {
            if sequence != CHECKPOINT {
                return Ok(None);
            }
            // Not past the checkpoint before the validation has spoken.
            let verdict = verdicts
                .wait_verdict(plan.run_id, PATIENCE)
                .with_context(|| format!("no verdict on {} within {PATIENCE:?}", plan.run_id))?;
            Ok(verdict.reason.filter(|_| !verdict.passed))
        },
    )?;
    anyhow::ensure!(
        rt.block_on(bridge.flush(PATIENCE)),
        "the run's last events could not be sent to NATS within {PATIENCE:?}"
    );
    let stats = bridge.stats();
    anyhow::ensure!(
        stats.dropped + stats.publish_errors + stats.unmappable == 0,
        "events of {} were not sent to NATS: {stats:?}",
        plan.run_id
    );
    rt.block_on(bridge.shutdown(PATIENCE));
    bus.shutdown_blocking();
    Ok(ExitCode::SUCCESS)
}
