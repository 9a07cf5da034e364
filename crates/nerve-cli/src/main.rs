//! `nerve`: run the demo, and read, summarise, follow and verify event
//! journals written by nerve (or by aperion-event-bus).
//!
//! Every command prints one clear line and exits non-zero on error, never a
//! panic or a backtrace, and stops quietly when its output pipe closes
//! (`nerve query ... | head`). Every command that reads a journal says on
//! stderr how many damaged lines it skipped, and where; `--strict` makes
//! that exit 1.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod damage;
mod demo;
mod demo_consumers;
mod demo_nats;
mod inspect;
mod output;
mod path;
mod record;
mod serve;
mod tail_nats;
mod verify;

use output::{Out, say};

/// nerve: the event bus's command line.
#[derive(Debug, Parser)]
#[command(name = "nerve", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the extraction demo: a healthy run that completes and a broken
    /// one that early validation stops at specimen 5.
    ///
    /// Example: nerve demo --out demo_event_output --seed 7
    Demo(demo::DemoArgs),
    /// Count events by type, runs, time span, success rate per run, and
    /// damaged lines.
    ///
    /// An event's run is its `run_id`, else `data.run_id`, else the run
    /// opened by the latest `*.started` event naming one (until that run's
    /// end event); a run started again under the same id is listed again
    /// (`id #2`).
    ///
    /// Example: nerve stats demo_event_output/run-broken/events.jsonl
    Stats(StatsArgs),
    /// Print matching events as JSON lines (or a table), oldest first.
    ///
    /// Example: nerve query events.jsonl --type 'specimen.*' --run run-1 --limit 20
    Query(QueryArgs),
    /// Show one field over the run, with a sparkline: when did it drop?
    ///
    /// Example: nerve timeline events.jsonl --field data.metrics.success_rate --type specimen.completed
    Timeline(TimelineArgs),
    /// Print the last events, and with -f follow the journal across
    /// rotations; with --nats, follow live events from a NATS server.
    ///
    /// Example: nerve tail -f events.jsonl --type 'validation.*'
    ///
    /// Example: nerve tail --nats nats://10.0.0.5:4222 'specimen.*'
    Tail(TailArgs),
    /// Check a journal's integrity: torn tails, corrupt lines, seq gaps,
    /// duplicate ids, rotation numbering. Exit 0 clean, 1 problems, 2 unreadable.
    ///
    /// Seq numbers below the oldest retained file's first record were removed
    /// by retention and are reported as such, not as missing; marker lines
    /// (events written as `$nerve_error` markers, `system.journal_gap`
    /// ranges) account for their seq numbers and are summarised.
    ///
    /// Example: nerve verify demo_event_output/run-healthy
    Verify(VerifyArgs),
    /// One run of `nerve demo --nats`, in a process of its own.
    #[command(hide = true)]
    DemoWorker(demo_nats::WorkerArgs),
    /// Serve the live dashboard of journals: runs, success-rate charts,
    /// throughput and ETA, drops, and every event as it is written (open
    /// the printed address in a browser).
    ///
    /// Example: nerve serve demo_event_output --bind 127.0.0.1:8080
    Serve(serve::ServeArgs),
    /// Record a NATS JetStream stream into a journal directory through a
    /// durable consumer: restartable, one line per event, `nerve verify`
    /// clean. Runs until SIGINT/SIGTERM, or with --drain until caught up.
    /// Exit 0, or 1 when messages were refused (not events of this prefix:
    /// acknowledged, named on stderr) or not recorded (left for the next
    /// run).
    ///
    /// Example: nerve record --nats nats://127.0.0.1:4222 --stream ORDERS archive/
    Record(record::RecordArgs),
}

#[derive(Debug, Args)]
struct VerifyArgs {
    #[command(flatten)]
    path: PathArg,
    /// Accepted for symmetry with the other commands: `verify` is always
    /// strict (a damaged line is a problem, exit 1).
    #[arg(long)]
    strict: bool,
}

/// A journal file, or a directory holding one journal.
#[derive(Debug, Args)]
struct PathArg {
    /// A journal file (`events.jsonl`; its rotated backups and pending
    /// files are read too) or a directory holding one journal.
    path: PathBuf,
}

/// How a read treats damaged lines.
#[derive(Debug, Args, Default, Clone, Copy)]
struct Strict {
    /// Exit 1 if any line was skipped as torn or corrupt (the output is still
    /// printed; the skipped lines are always named on stderr).
    #[arg(long)]
    strict: bool,
}

#[derive(Debug, Args)]
struct StatsArgs {
    #[command(flatten)]
    path: PathArg,
    #[command(flatten)]
    strict: Strict,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Event types (pattern) that count as a success.
    #[arg(long, default_value = "specimen.completed")]
    success: String,
    /// Event types (pattern) that count as a failure.
    #[arg(long, default_value = "specimen.failed")]
    failure: String,
}

/// The conditions shared by `query` and `timeline`.
#[derive(Debug, Args, Default)]
struct Filter {
    /// Only event types matching this pattern (`user.*`, `*.failed`).
    #[arg(long = "type", value_name = "PATTERN")]
    event_type: Option<String>,
    /// Only events at or after this time (RFC 3339, a date alone for its
    /// midnight UTC, or seconds since the epoch).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only events at or before this time (RFC 3339, a date alone for its
    /// midnight UTC, or seconds since the epoch).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only events with this correlation id.
    #[arg(long, value_name = "ID")]
    correlation: Option<String>,
    /// Only events of this run (its `run_id`, else `data.run_id`, else the
    /// run opened by the latest `*.started` event naming one).
    #[arg(long, value_name = "ID")]
    run: Option<String>,
    /// Only events from this source.
    #[arg(long, value_name = "SOURCE")]
    source: Option<String>,
}

#[derive(Debug, Args)]
struct QueryArgs {
    #[command(flatten)]
    path: PathArg,
    #[command(flatten)]
    strict: Strict,
    #[command(flatten)]
    filter: Filter,
    /// At most this many events.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Newest first (with --limit: the newest N).
    #[arg(long)]
    reverse: bool,
    /// Print a table instead of JSON lines.
    #[arg(long)]
    table: bool,
}

#[derive(Debug, Args)]
struct TimelineArgs {
    #[command(flatten)]
    path: PathArg,
    #[command(flatten)]
    strict: Strict,
    /// The field to follow, as a dotted path into the event
    /// (`data.metrics.success_rate`, `seq`).
    #[arg(long, value_name = "PATH")]
    field: String,
    #[command(flatten)]
    filter: Filter,
}

#[derive(Debug, Args)]
struct TailArgs {
    /// A journal file (`events.jsonl`; its rotated backups and pending
    /// files are read too) or a directory holding one journal; with
    /// `--nats`, the pattern of event types to follow (`'*'`: all).
    #[arg(value_name = "PATH|PATTERN")]
    path: PathBuf,
    #[command(flatten)]
    strict: Strict,
    /// Keep following the journal, across rotations, until interrupted. A
    /// journal that does not exist yet is waited for; falling behind
    /// retention is said on stderr (how many events were missed), and the
    /// tail goes on with the oldest file left.
    #[arg(short, long)]
    follow: bool,
    /// How many of the last events to print first.
    #[arg(short = 'n', long, default_value_t = 10, conflicts_with = "nats")]
    lines: usize,
    /// Only event types matching this pattern.
    #[arg(long = "type", value_name = "PATTERN")]
    event_type: Option<String>,
    /// Follow the live events bridges publish to this NATS server
    /// (`nats://host:4222`) instead of a journal, from now on, as `-f`
    /// prints them; the positional argument is then a pattern.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// With `--nats`: the subject prefix the bridges publish under
    /// (`nerve.prod.`). Without it, `'*'` also shows events published under
    /// any prefix (`nerve demo --nats` uses a fresh one per run), and names
    /// each prefix on stderr.
    #[arg(long, value_name = "PREFIX", default_value = "", requires = "nats")]
    prefix: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = Out::stdout();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args, &mut out),
        Command::Stats(args) => inspect::stats(&args, &mut out),
        Command::Query(args) => inspect::query(&args, &mut out),
        Command::Timeline(args) => inspect::timeline(&args, &mut out),
        Command::Tail(args) => match &args.nats {
            Some(url) => tail_nats::tail(url, &args, &mut out),
            None => inspect::tail(&args, &mut out),
        },
        Command::DemoWorker(args) => demo_nats::worker(&args),
        Command::Verify(args) => verify::verify(&args.path, &mut out),
        Command::Serve(args) => serve::serve(&args, &mut out),
        Command::Record(args) => record::record(&args, &mut out),
    };
    match result {
        Ok(code) => code,
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            say!("nerve: error: {}", output::chain(&e));
            ExitCode::from(2)
        }
    }
}
