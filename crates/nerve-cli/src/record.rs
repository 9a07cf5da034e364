//! `nerve record`: a central recorder. Consumes a JetStream stream through
//! a durable consumer into a journal directory, restartable, one line per
//! event.
//!
//! How "one line per event" holds across a crash: a message is
//! acknowledged only after its event's journal line is written (handed to
//! the operating system, so SIGKILL cannot lose it), and a message that
//! was written but not acknowledged when the recorder died comes again on
//! restart; the restarted recorder knows it from the journal's tail (the
//! last [`TAIL_IDS`] event ids, more than the consumer's `max_ack_pending`
//! of [`MAX_ACK_PENDING`], so every such message is among them) and drops
//! it. While running, the last 100,000 ids are remembered, so a stream
//! that holds one event twice (re-published after JetStream's duplicate
//! window) gets one line too when the copies are that close.
//!
//! The journal holds only the stream's events: the bridge's own reports
//! (connection lost and back, errors) are printed on stderr instead.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use nerve::HistoryQuery;
use nerve::journal::{Journal, JournalReader};
use nerve::nats::{DeliverFrom, DurableImport, NatsBridge, NatsOptions, imported_from};
use nerve::sink::EventSink;
use nerve::{Bus, Reject};

use crate::output::{Out, say};

/// How many event ids of the journal's tail a restarted recorder knows.
const TAIL_IDS: usize = 10_000;
/// The durable consumer's limit of delivered, unacknowledged messages.
const MAX_ACK_PENDING: usize = 1_000;

#[derive(Debug, Args)]
pub(crate) struct RecordArgs {
    /// The NATS server (`nats://host:4222`).
    #[arg(long, value_name = "URL")]
    nats: String,
    /// The JetStream stream to record (it must exist).
    #[arg(long, value_name = "NAME")]
    stream: String,
    /// The durable consumer's name: a restarted recorder with the same
    /// name continues where it stopped. One name per recorder.
    #[arg(long, value_name = "NAME", default_value = "nerve-record")]
    consumer: String,
    /// Where a new consumer starts: `all`, `new`, `seq:N` (stream sequence
    /// N on) or `time:SECONDS` (seconds since the epoch). A consumer that
    /// exists continues where it stopped.
    #[arg(long, value_name = "FROM", default_value = "all")]
    from: String,
    /// The subject prefix of the bridges that publish into the stream
    /// (`nerve.prod.`).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    prefix: String,
    /// Seconds before JetStream delivers an unacknowledged message again
    /// (what a recorder that died had taken); set when the consumer is
    /// created.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    ack_wait: f64,
    /// Exit once everything the stream holds is recorded (catch up, then
    /// stop) instead of running until SIGINT or SIGTERM.
    #[arg(long)]
    drain: bool,
    /// The journal directory (created if missing; `events.jsonl` inside).
    dir: PathBuf,
}

fn parse_from(from: &str) -> Result<DeliverFrom> {
    Ok(match from {
        "all" => DeliverFrom::All,
        "new" => DeliverFrom::New,
        _ => {
            if let Some(n) = from.strip_prefix("seq:") {
                let n: u64 = n
                    .parse()
                    .with_context(|| format!("--from {from:?}: not a sequence number"))?;
                DeliverFrom::Seq(n)
            } else if let Some(t) = from.strip_prefix("time:") {
                let secs = match crate::inspect::epoch_seconds(t) {
                    Some(Ok(secs)) if secs >= 0.0 => secs,
                    Some(Err(e)) => return Err(e.context(format!("--from {from:?}"))),
                    _ => bail!("--from {from:?}: not seconds since the epoch"),
                };
                DeliverFrom::Time(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs))
            } else {
                bail!("--from {from:?}: expected all, new, seq:N or time:SECONDS");
            }
        }
    })
}

pub(crate) fn record(args: &RecordArgs, out: &mut Out) -> Result<ExitCode> {
    let from = parse_from(&args.from)?;
    if !args.ack_wait.is_finite() || args.ack_wait <= 0.0 || args.ack_wait > 86_400.0 {
        bail!(
            "--ack-wait {}: expected seconds between 0 and 86400",
            args.ack_wait
        );
    }
    if args.dir.exists() && !args.dir.is_dir() {
        bail!(
            "{} is a file: name a directory for the journal (events.jsonl goes inside)",
            args.dir.display()
        );
    }
    // Before the directory is made: nothing is left behind for a server
    // that is not there or a stream it does not have.
    crate::tail_nats::reachable_with_stream(&args.nats, &args.stream)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let path = args.dir.join("events.jsonl");
    // What the journal already holds, newest last: a restart drops the
    // messages it recorded and could not acknowledge before it stopped.
    let known: Vec<nerve::EventId> = if path.exists() {
        let mut tail = JournalReader::open(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .query_with(&HistoryQuery::new().limit(TAIL_IDS), |_| {})
            .with_context(|| format!("cannot read {}", path.display()))?;
        tail.sort_by_key(|e| e.seq());
        tail.iter().map(|e| e.event_id()).collect()
    } else {
        Vec::new()
    };
    let journal = Arc::new(
        Journal::builder(&path)
            .build()
            .with_context(|| format!("cannot open the journal {}", path.display()))?,
    );
    let bus = Bus::builder()
        .journal(journal.clone())
        .history_capacity(0)
        // Only the stream's events go in the journal; the bridge's own
        // reports are said on stderr.
        .guard(|e| {
            if imported_from(e).is_some() {
                return Ok(());
            }
            say!("nerve record: {} {}", e.event_type(), e.data());
            Err(Reject::new("not from the stream"))
        })
        .build()
        .context("cannot build the bus")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let result = runtime.block_on(consume(args, from, known, &bus, journal.clone()));
    bus.shutdown_blocking();
    let (recorded, duplicates, refused) = result?;
    out.line(format!(
        "recorded {recorded} events into {} ({duplicates} duplicates dropped, {refused} messages refused)",
        path.display()
    ))?;
    let mut code = ExitCode::SUCCESS;
    if refused > 0 {
        // Acknowledged (they would come again forever), so said here.
        say!(
            "nerve record: {refused} messages of the stream were not events of this prefix \
             ({:?}) and are not in the journal; each is named in a system.bridge_error line above",
            args.prefix
        );
        code = ExitCode::from(1);
    }
    let (errors, dropped) = (bus.stats().events.journal_errors, journal.stats().dropped);
    if errors > 0 || dropped > 0 {
        // Not acknowledged either: the next run records them.
        say!(
            "nerve record: the journal reported {errors} errors and dropped {dropped} events; \
             their messages were not acknowledged and come again on the next run"
        );
        code = ExitCode::from(1);
    }
    Ok(code)
}

/// Runs the import until SIGINT/SIGTERM, or (with `--drain`) until the
/// consumer has nothing left; events recorded, duplicates dropped and
/// messages refused.
async fn consume(
    args: &RecordArgs,
    from: DeliverFrom,
    known: Vec<nerve::EventId>,
    bus: &Bus,
    journal: Arc<Journal>,
) -> Result<(u64, u64, u64)> {
    let options = NatsOptions::new()
        .prefix(args.prefix.clone())
        .origin(format!("nerve-record/{}", args.consumer));
    let bridge = NatsBridge::connect(&args.nats, bus, options)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", args.nats))?;
    let sink: Arc<dyn EventSink> = journal;
    bridge
        .import_durable_with(
            DurableImport::new(&args.stream, &args.consumer)
                .deliver_from(from)
                .max_ack_pending(MAX_ACK_PENDING)
                .ack_wait(Duration::from_secs_f64(args.ack_wait))
                .already_delivered(known)
                .ack_after_flush(sink),
        )
        .await
        .with_context(|| format!("cannot record the stream {:?}", args.stream))?;
    if args.drain {
        loop {
            let pending = bridge
                .consumer_pending(&args.stream, &args.consumer)
                .await
                .context("cannot ask how far the consumer is")?;
            if pending.is_caught_up() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = stop_signal() => break,
            }
        }
    } else {
        stop_signal().await;
    }
    bridge.shutdown(Duration::from_secs(5)).await;
    let s = bridge.stats();
    Ok((s.imported, s.duplicates_dropped, s.import_rejected))
}

/// SIGINT, or SIGTERM on Unix.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_parses_every_form_and_refuses_the_rest() {
        assert_eq!(parse_from("all").unwrap(), DeliverFrom::All);
        assert_eq!(parse_from("new").unwrap(), DeliverFrom::New);
        assert_eq!(parse_from("seq:7").unwrap(), DeliverFrom::Seq(7));
        assert_eq!(
            parse_from("time:10").unwrap(),
            DeliverFrom::Time(SystemTime::UNIX_EPOCH + Duration::from_secs(10))
        );
        for bad in [
            "",
            "last",
            "seq:x",
            "time:-1",
            "time:nan",
            "time:1e300",
            "time:inf",
        ] {
            assert!(parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
