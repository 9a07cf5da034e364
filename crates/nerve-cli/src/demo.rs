//! `nerve demo`: the integration guide's story, simulated. One healthy run
//! (about 92 % success) completes; one broken run (about 20 %) is stopped
//! by early validation at specimen 5, minutes into what would have been a
//! 22-hour job. Ctrl-C ends a run cleanly: its journal ends with
//! `system.interrupted` and the demo exits with status 130.
//!
//! With `--serve` the two runs go side by side, slowly enough to watch, with
//! the dashboard open on both buses; it stays open after the runs until
//! Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use nerve::{Bus, EmitError};
use nerve::{Event, json};
use nerve::{Fsync, Journal};

use crate::output::{Out, say};

#[derive(Debug, Args, Clone)]
pub(crate) struct DemoArgs {
    /// Where each run's journal goes: DIR/<run_id>/events.jsonl.
    #[arg(long, value_name = "DIR", default_value = "demo_event_output")]
    pub(crate) out: PathBuf,
    /// Specimens in each run.
    #[arg(long, value_name = "N", default_value_t = 25)]
    pub(crate) specimens: u32,
    /// Seed of the simulation: the same seed, the same events.
    #[arg(long, value_name = "S", default_value_t = 42)]
    pub(crate) seed: u64,
    /// Simulated work per specimen, in milliseconds (0: as fast as
    /// possible). Default 40, or 400 with --serve (a run then takes about
    /// ten seconds, long enough to watch).
    #[arg(long, value_name = "MS")]
    pub(crate) delay_ms: Option<u64>,
    /// Run each run's extraction as a separate worker process that talks to
    /// this one through the NATS server at URL (`nats://127.0.0.1:4222`);
    /// validation, metrics and the journals stay here.
    #[arg(long, value_name = "URL")]
    pub(crate) nats: Option<String>,
    /// Run the two runs side by side with the live dashboard open on them
    /// (see `nerve serve --help` for its options); it stays open after the
    /// runs until Ctrl-C.
    #[arg(long, conflicts_with = "nats")]
    serve: bool,
    #[command(flatten)]
    dashboard: crate::serve::DashboardArgs,
}

impl DemoArgs {
    /// The simulated work per specimen.
    pub(crate) fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms.unwrap_or(if self.serve { 400 } else { 40 }))
    }
}

/// One simulated run.
pub(crate) struct Plan {
    pub(crate) run_id: &'static str,
    success_rate: f64,
}

pub(crate) const PLANS: [Plan; 2] = [
    Plan {
        run_id: "run-healthy",
        success_rate: 0.92,
    },
    Plan {
        run_id: "run-broken",
        success_rate: 0.20,
    },
];

/// How a run ended.
pub(crate) struct Summary {
    pub(crate) run_id: &'static str,
    pub(crate) processed: u32,
    pub(crate) succeeded: u32,
    pub(crate) outcome: String,
    pub(crate) elapsed: Duration,
    pub(crate) log: PathBuf,
}

pub(crate) fn run(args: &DemoArgs, out: &mut Out) -> Result<ExitCode> {
    // A bad address, or a server that does not answer, is refused before
    // any run's directory is made.
    if let Some(url) = &args.nats {
        crate::tail_nats::reachable(url)?;
    }
    if args.serve {
        return serve(args, out);
    }
    let mut summaries = Vec::new();
    for (i, plan) in PLANS.iter().enumerate() {
        let seed = args.seed.wrapping_add(i as u64);
        summaries.push(match &args.nats {
            Some(url) => crate::demo_nats::run_one(plan, args, seed, url)?,
            None => run_one(plan, args, seed)?,
        });
    }
    print_summary(&summaries, out)
}

/// `demo --serve`: both runs at once on their own buses and journals, the
/// dashboard watching both buses.
fn serve(args: &DemoArgs, out: &mut Out) -> Result<ExitCode> {
    let opened: Vec<Opened> = PLANS
        .iter()
        .map(|plan| open_run(plan, args, false))
        .collect::<Result<_>>()?;
    let mut builder = args.dashboard.builder();
    for (plan, o) in PLANS.iter().zip(&opened) {
        builder = builder.bus(plan.run_id, &o.bus);
    }
    let dashboard = builder
        .start()
        .with_context(|| format!("cannot serve on {}", args.dashboard.bind))?;
    crate::serve::announce(&dashboard, out)?;
    out.line(format!(
        "running {} side by side, {} ms per specimen; open the address above to watch",
        PLANS
            .iter()
            .map(|p| p.run_id)
            .collect::<Vec<_>>()
            .join(" and "),
        args.delay().as_millis()
    ))?;
    out.flush()?;
    // One signal handler for both runs: Ctrl-C ends the first bus, whose
    // `system.interrupted` handler ends the second the same way (recorded,
    // flushed) before the process exits with 130.
    #[cfg(unix)]
    let _signals = {
        let handler = nerve::signals::install(&opened[0].bus).context("cannot handle Ctrl-C")?;
        let others: Vec<Bus> = opened[1..].iter().map(|o| o.bus.clone()).collect();
        opened[0]
            .bus
            .subscribe(nerve::signals::INTERRUPTED, move |e: &Event| {
                for bus in &others {
                    let last = Event::builder(nerve::signals::INTERRUPTED)
                        .source("nerve")
                        .data(e.data().clone())
                        .build();
                    if let Ok(last) = last {
                        bus.shutdown_with(last.terminal());
                    }
                }
            })
            .context("cannot watch for Ctrl-C")?;
        handler
    };
    let handles: Vec<_> = PLANS
        .iter()
        .zip(opened)
        .enumerate()
        .map(|(i, (plan, opened))| {
            let seed = args.seed.wrapping_add(i as u64);
            let args = args.clone();
            std::thread::Builder::new()
                .name(format!("demo-{}", plan.run_id))
                .spawn(move || drive(plan, opened, &args, seed))
        })
        .collect::<std::io::Result<_>>()
        .context("cannot start the runs")?;
    let mut summaries = Vec::new();
    for h in handles {
        match h.join() {
            Ok(summary) => summaries.push(summary?),
            Err(_) => anyhow::bail!("a run's thread panicked"),
        }
    }
    print_summary(&summaries, out)?;
    #[cfg(unix)]
    drop(_signals);
    out.line(format!(
        "the runs are done; the dashboard stays open at {} until Ctrl-C",
        dashboard.url()
    ))?;
    out.flush()?;
    dashboard.wait();
    Ok(ExitCode::SUCCESS)
}

/// The table of runs and a hint to explore the last journal.
fn print_summary(summaries: &[Summary], out: &mut Out) -> Result<ExitCode> {
    out.line("")?;
    for line in table(summaries) {
        out.line(line)?;
    }
    out.line("")?;
    out.line(format!(
        "Try: jq -r '.event_type' {} | sort | uniq -c",
        summaries
            .last()
            .map_or_else(String::new, |s| s.log.display().to_string())
    ))?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The summary table, one line per run, its columns as wide as their
/// widest cell so that a long outcome does not push the event log column
/// out of line.
fn table(summaries: &[Summary]) -> Vec<String> {
    let rows: Vec<[String; 6]> = summaries
        .iter()
        .map(|s| {
            let rate = if s.processed == 0 {
                "-".to_owned()
            } else {
                format!(
                    "{:.0}%",
                    100.0 * f64::from(s.succeeded) / f64::from(s.processed)
                )
            };
            [
                s.run_id.to_owned(),
                s.processed.to_string(),
                rate,
                format!("{:.1}s", s.elapsed.as_secs_f64()),
                s.outcome.clone(),
                s.log.display().to_string(),
            ]
        })
        .collect();
    let header = [
        "run",
        "processed",
        "success",
        "time",
        "outcome",
        "event log",
    ]
    .map(String::from);
    let width = |column: usize| {
        std::iter::once(&header)
            .chain(&rows)
            .map(|row| row[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: [usize; 5] = std::array::from_fn(width);
    std::iter::once(&header)
        .chain(&rows)
        .map(|[run, processed, rate, time, outcome, log]| {
            format!(
                "{run:<w0$} {processed:>w1$} {rate:>w2$} {time:>w3$}  {outcome:<w4$}  {log}",
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
                w4 = widths[4],
            )
        })
        .collect()
}

/// Which specimens succeed: in every block of five, `round(rate × 5)` of
/// them, at positions a seeded shuffle picks. The proportion is exact per
/// block, so the broken run fails its checkpoint and the healthy run passes
/// it whatever the seed; the seed only moves the failures around.
fn outcomes(rate: f64, n: u32, seed: u64) -> Vec<bool> {
    let mut rng = SplitMix64(seed);
    let per_block = (rate * 5.0).round() as usize;
    let mut all = Vec::with_capacity(n as usize);
    while all.len() < n as usize {
        let mut block = [false; 5];
        for slot in block.iter_mut().take(per_block) {
            *slot = true;
        }
        for i in (1..5).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            block.swap(i, j);
        }
        all.extend_from_slice(&block);
    }
    // A healthy run of 25 at 0.92: 5 blocks of 5 at round(4.6) = 5 would be
    // 100 %; keep the overall proportion by failing a seeded few more.
    let want = (rate * f64::from(n)).round() as usize;
    let mut have = all.iter().take(n as usize).filter(|s| **s).count();
    let mut i = (n as usize).saturating_sub(1);
    while have > want && i > 5 {
        if all[i] {
            all[i] = false;
            have -= 1;
        }
        i -= 1 + (rng.next() % 3) as usize;
    }
    all.truncate(n as usize);
    all
}

/// A tiny seeded generator (SplitMix64): the demo needs reproducible
/// choices, not statistical quality, and this keeps `rand`'s changing API
/// out of the CLI.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn run_one(plan: &Plan, args: &DemoArgs, seed: u64) -> Result<Summary> {
    let (log, bus) = journal_bus(plan, args)?;
    // Ctrl-C (or a scheduler's SIGTERM) records `system.interrupted`,
    // flushes the journal and the alerts, and exits with 130 (or 143).
    #[cfg(unix)]
    let _signals = watch_signals(&bus, &log)?;
    let consumers = crate::demo_consumers::attach(&bus, true)?;
    drive(
        plan,
        Opened {
            bus,
            log,
            consumers,
        },
        args,
        seed,
    )
}

/// A run's bus, journal and consumers, ready to go.
struct Opened {
    bus: Bus,
    log: PathBuf,
    consumers: crate::demo_consumers::Attached,
}

/// A run of `demo --serve`: its journal and bus, the consumers without a
/// progress bar (two bars side by side would garble the terminal).
fn open_run(plan: &Plan, args: &DemoArgs, progress: bool) -> Result<Opened> {
    let (log, bus) = journal_bus(plan, args)?;
    let consumers = crate::demo_consumers::attach(&bus, progress)?;
    Ok(Opened {
        bus,
        log,
        consumers,
    })
}

/// Runs the simulation on an opened run and sums it up.
fn drive(plan: &Plan, opened: Opened, args: &DemoArgs, seed: u64) -> Result<Summary> {
    let Opened {
        bus,
        log,
        consumers,
    } = opened;
    let start = Instant::now();
    let delay = u64::try_from(args.delay().as_millis()).unwrap_or(u64::MAX);
    let ran = simulate(plan, args.specimens, delay, seed, &bus, |_| Ok(None))?;
    consumers.finish();
    // The summary reports what the consumers measured, and checks it against
    // what the simulation did.
    let metrics = consumers
        .snapshot()
        .context("the metrics consumer saw no run")?;
    anyhow::ensure!(
        (metrics.processed, metrics.succeeded)
            == (u64::from(ran.processed), u64::from(ran.succeeded)),
        "the metrics consumer counted {} processed, {} succeeded; the run did {}, {}",
        metrics.processed,
        metrics.succeeded,
        ran.processed,
        ran.succeeded
    );
    let mut outcome = ran.outcome;
    if let Some(status) = consumers.validation.status() {
        if let Some(reason) = status.halt_reason {
            outcome = format!("stopped: {reason}");
        }
    }
    bus.shutdown_blocking();
    Ok(Summary {
        run_id: plan.run_id,
        processed: ran.processed,
        succeeded: ran.succeeded,
        outcome,
        elapsed: start.elapsed(),
        log,
    })
}

/// A run's journal, emptied of an earlier demo's, and a bus recording to it.
pub(crate) fn journal_bus(plan: &Plan, args: &DemoArgs) -> Result<(PathBuf, Bus)> {
    let dir = args.out.join(plan.run_id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log = dir.join("events.jsonl");
    clear(&log)?;
    let journal = Journal::builder(&log)
        .fsync(Fsync::Interval(Duration::from_millis(200)))
        .build()
        .with_context(|| format!("cannot open the journal {}", log.display()))?;
    let bus = Bus::builder()
        .journal(journal)
        .build()
        .context("cannot build the bus")?;
    Ok((log, bus))
}

/// Ctrl-C (or a scheduler's SIGTERM) records `system.interrupted`, flushes
/// the journal and the alerts, and exits with 130 (or 143).
#[cfg(unix)]
pub(crate) fn watch_signals(bus: &Bus, log: &Path) -> Result<nerve::signals::SignalHandler> {
    let guard = nerve::signals::install(bus).context("cannot handle Ctrl-C")?;
    // The process exits right after the signal is recorded: say where the
    // interrupted run's events are (after the progress bar's last frame,
    // whose handler runs first), instead of ending without a word.
    let log = log.to_owned();
    bus.subscribe(nerve::signals::INTERRUPTED, move |e: &Event| {
        let signal = e.data()["signal"].as_str().unwrap_or("a signal");
        say!(
            "\ninterrupted by {signal}: the run's events so far are in {}",
            log.display()
        );
    })
    .context("cannot watch for Ctrl-C")?;
    Ok(guard)
}

/// What a run's emitter did.
pub(crate) struct Simulated {
    pub(crate) processed: u32,
    pub(crate) succeeded: u32,
    pub(crate) outcome: String,
}

/// Emits one run's events on `bus`, as the integration guide's extraction
/// does. A halt (`emit` returning [`EmitError::Halted`]) stops the run, as
/// does `after_item(sequence)` returning a reason (it is called after
/// each item's outcome was emitted).
pub(crate) fn simulate(
    plan: &Plan,
    specimens: u32,
    delay_ms: u64,
    seed: u64,
    bus: &Bus,
    mut after_item: impl FnMut(usize) -> Result<Option<String>>,
) -> Result<Simulated> {
    let plan_outcomes = outcomes(plan.success_rate, specimens, seed);
    let emit = |event: Event| bus.emit_event(event);
    let event = |kind: &str, data: serde_json::Value| {
        Event::builder(kind)
            .run_id(plan.run_id)
            .source("extractor")
            .data(data)
            .build()
    };
    // The data follows the integration guide field by field (`run_id` in
    // the start and end events, `sequence` and `metrics` on every item), so
    // its `jq` commands run unchanged on the demo's journals.
    emit(event(
        "extraction.started",
        json!({"run_id": plan.run_id, "total_specimens": specimens, "model": "demo-model", "seed": seed}),
    )?)?;
    let (mut processed, mut succeeded, mut failed) = (0u32, 0u32, 0u32);
    let mut stopped = None;
    for (n, ok) in plan_outcomes.iter().enumerate() {
        let specimen = format!("HERB-{:05}", 1000 + n);
        let sequence = n + 1;
        match emit(event(
            "specimen.processing",
            json!({"specimen_id": specimen, "sequence": sequence}),
        )?) {
            Ok(_) => {}
            // A verdict from elsewhere (`nerve demo --nats`) halts here.
            Err(EmitError::Halted { reason, .. }) => {
                stopped = Some(reason);
                break;
            }
            Err(e) => return Err(e.into()),
        }
        if delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(delay_ms));
        }
        processed += 1;
        if *ok {
            succeeded += 1;
        } else {
            failed += 1;
        }
        let rate = f64::from(succeeded) / f64::from(processed);
        let metrics = json!({
            "total_processed": processed,
            "success_count": succeeded,
            "failed_count": failed,
            "success_rate": rate,
        });
        let (kind, data) = if *ok {
            (
                "specimen.completed",
                json!({
                    "specimen_id": specimen,
                    "sequence": sequence,
                    "result": {"dwc": {"catalogNumber": specimen, "scientificName": "Carex aquatilis"}},
                    "fields_extracted": 12,
                    "metrics": metrics,
                }),
            )
        } else {
            (
                "specimen.failed",
                json!({
                    "specimen_id": specimen,
                    "sequence": sequence,
                    "result": {"dwc": {}},
                    "error": "no label text recognised",
                    "metrics": metrics,
                }),
            )
        };
        match emit(event(kind, data)?) {
            Ok(_) => {}
            Err(EmitError::Halted { reason, .. }) => {
                stopped = Some(reason);
                break;
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(reason) = after_item(sequence)? {
            stopped = Some(reason);
            break;
        }
    }
    let rate = f64::from(succeeded) / f64::from(processed.max(1));
    let outcome = match stopped {
        Some(reason) => {
            emit(event(
                "extraction.failed",
                json!({
                    "run_id": plan.run_id,
                    "reason": "early_validation_failed",
                    "message": reason,
                    "processed": processed,
                    "success_rate": rate,
                }),
            )?)?;
            format!("stopped: {reason}")
        }
        None => {
            emit(event(
                "extraction.completed",
                json!({
                    "run_id": plan.run_id,
                    "total_processed": processed,
                    "successful": succeeded,
                    "failed": failed,
                    "success_rate": rate,
                }),
            )?)?;
            "completed".to_owned()
        }
    };
    Ok(Simulated {
        processed,
        succeeded,
        outcome,
    })
}

/// Removes an earlier demo's journal, so that each run's log holds one run.
fn clear(log: &Path) -> Result<()> {
    if log.exists() {
        let journal = Journal::builder(log)
            .build()
            .with_context(|| format!("cannot open {}", log.display()))?;
        journal
            .clear()
            .with_context(|| format!("cannot clear {}", log.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_stays_aligned_whatever_the_outcome() {
        let summary = |run_id, outcome: &str| Summary {
            run_id,
            processed: 25,
            succeeded: 23,
            outcome: outcome.to_owned(),
            elapsed: Duration::from_millis(1234),
            log: PathBuf::from(format!("demo_event_output/{run_id}/events.jsonl")),
        };
        for outcome in [
            "completed",
            "stopped: early validation failed: 20% success rate after 5 specimens",
            &format!("stopped: {}", "a very long reason ".repeat(12)),
            "stopped: né à Zürich, 5 spécimens",
        ] {
            let lines = table(&[
                summary("run-healthy", "completed"),
                summary("run-broken", outcome),
            ]);
            let log_column: Vec<usize> = lines
                .iter()
                .map(|l| {
                    let at = l.rfind("  ").unwrap() + 2;
                    l[..at].chars().count()
                })
                .collect();
            assert!(log_column.iter().all(|c| *c == log_column[0]), "{lines:#?}");
            assert!(lines[0].starts_with("run "), "{lines:#?}");
            assert!(lines[2].contains(outcome), "{lines:#?}");
        }
    }

    #[test]
    fn outcomes_are_seeded_and_keep_the_proportion() {
        for seed in 0..50 {
            let broken = outcomes(0.2, 25, seed);
            assert_eq!(
                broken.iter().take(5).filter(|s| **s).count(),
                1,
                "seed {seed}"
            );
            let healthy = outcomes(0.92, 25, seed);
            assert!(
                healthy.iter().take(5).filter(|s| **s).count() >= 4,
                "seed {seed}"
            );
            assert_eq!(healthy.iter().filter(|s| **s).count(), 23, "seed {seed}");
            assert_eq!(outcomes(0.92, 25, seed), healthy, "deterministic");
        }
        assert_ne!(outcomes(0.2, 25, 1), outcomes(0.2, 25, 2));
    }
}
