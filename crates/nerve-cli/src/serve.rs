//! `nerve serve`: the live dashboard over journals on disk, each followed
//! across rotations.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use nerve::dashboard::{Dashboard, DashboardBuilder};

use crate::output::Out;
use crate::path::JournalFiles;

/// The dashboard's options shared by `serve` and `demo --serve`.
#[derive(Debug, Args, Clone)]
pub(crate) struct DashboardArgs {
    /// Where to listen. Loopback needs no token; any other address
    /// requires one (generated and printed if not given).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub(crate) bind: String,
    /// The bearer token requests must carry (also on loopback when given).
    #[arg(long, value_name = "TOKEN")]
    pub(crate) token: Option<String>,
    /// How many events the server keeps for late joiners and resumes (the
    /// runs and counts cover every event whatever this is).
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    pub(crate) retain: usize,
    /// How many events a page may fall behind before it misses some (and
    /// is told how many).
    #[arg(long, value_name = "N", default_value_t = 4_096)]
    pub(crate) client_queue: usize,
    /// Event types (pattern) that count as an item that succeeded.
    #[arg(long, value_name = "PATTERN", default_value = "*.completed")]
    pub(crate) success: String,
    /// Event types (pattern) that count as an item that failed.
    #[arg(long, value_name = "PATTERN", default_value = "*.failed")]
    pub(crate) failure: String,
    /// The warning threshold drawn on the charts (until a
    /// `validation.warning` event gives a run's own).
    #[arg(long, value_name = "RATE", default_value_t = 0.7)]
    pub(crate) warning_threshold: f64,
    /// The checkpoint threshold drawn on the charts (until a
    /// `validation.checkpoint` event gives a run's own).
    #[arg(long, value_name = "RATE", default_value_t = 0.5)]
    pub(crate) checkpoint_threshold: f64,
}

impl DashboardArgs {
    pub(crate) fn builder(&self) -> DashboardBuilder {
        let mut b = Dashboard::builder()
            .bind(self.bind.as_str())
            .retain(self.retain)
            .client_queue(self.client_queue)
            .items(self.success.as_str(), self.failure.as_str())
            .warning_threshold(self.warning_threshold)
            .checkpoint_threshold(self.checkpoint_threshold);
        if let Some(t) = &self.token {
            b = b.token(t.as_str());
        }
        b
    }
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Journals to show: a journal file (`events.jsonl`), a directory
    /// holding one journal, or a directory whose subdirectories each hold
    /// one (`demo_event_output`). A journal that does not exist yet is
    /// waited for.
    #[arg(value_name = "JOURNAL_DIR")]
    paths: Vec<PathBuf>,
    /// Also show the events arriving on NATS (what `nerve` NATS bridges
    /// export), imported through a bridge into a bus of this process: from
    /// the moment the page starts, live (a journal written by `nerve record`
    /// holds the history). Several servers: comma-separated.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// The pattern of the events to import from NATS (with --nats).
    #[arg(long, value_name = "PATTERN", default_value = "*", requires = "nats")]
    nats_pattern: String,
    /// The subject prefix the exporting bridges use (with --nats), as
    /// `NatsOptions::prefix`. Without one, events published under any
    /// prefix are shown too (`nerve demo --nats` uses a fresh one per run).
    #[arg(long, value_name = "PREFIX", default_value = "", requires = "nats")]
    prefix: String,
    #[command(flatten)]
    dashboard: DashboardArgs,
}

/// The journals named by `path`, with the names the page shows.
fn journals(path: &Path) -> Result<Vec<(String, PathBuf)>> {
    let name_of = |active: &Path| -> String {
        let dir = active.parent().and_then(|p| p.file_name());
        match (dir, active.file_name()) {
            (Some(d), Some(f)) if f == "events.jsonl" => d.to_string_lossy().into_owned(),
            (_, Some(f)) => f.to_string_lossy().into_owned(),
            _ => active.display().to_string(),
        }
    };
    if path.is_dir() {
        match JournalFiles::resolve(path) {
            Ok(files) => return Ok(vec![(name_of(&files.active), files.active)]),
            Err(direct) => {
                // A directory of journal directories (the demo's output).
                let mut found = Vec::new();
                let entries = std::fs::read_dir(path)
                    .with_context(|| format!("cannot list {}", path.display()))?;
                let mut dirs: Vec<PathBuf> = entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect();
                dirs.sort();
                for dir in dirs {
                    if let Ok(files) = JournalFiles::resolve(&dir) {
                        found.push((name_of(&files.active), files.active));
                    }
                }
                if found.is_empty() {
                    return Err(direct.context(format!(
                        "{} holds no journal, nor do its subdirectories",
                        path.display()
                    )));
                }
                return Ok(found);
            }
        }
    }
    let files = JournalFiles::resolve_missing_ok(path)?;
    Ok(vec![(name_of(&files.active), files.active)])
}

pub(crate) fn serve(args: &ServeArgs, out: &mut Out) -> Result<ExitCode> {
    if args.paths.is_empty() && args.nats.is_none() {
        bail!(
            "name at least one journal to show: nerve serve JOURNAL_DIR... (or --nats URL; try `nerve demo --serve`)"
        );
    }
    let mut builder = args.dashboard.builder();
    let mut names: Vec<String> = Vec::new();
    // Kept alive while the page is served: the bridge's runtime, the bus it
    // imports into, and the bridge.
    let _nats = match &args.nats {
        Some(url) => {
            let source = NatsSource::connect(url, &args.nats_pattern, &args.prefix)?;
            let name = format!("nats {url}");
            builder = builder.bus(name.clone(), &source.bus);
            names.push(name);
            Some(source)
        }
        None => None,
    };
    for path in &args.paths {
        for (name, active) in journals(path)? {
            // Two journals of the same directory name stay apart in the page.
            let mut unique = name.clone();
            let mut n = 2;
            while names.contains(&unique) {
                unique = format!("{name} ({n})");
                n += 1;
            }
            names.push(unique.clone());
            builder = builder.journal(unique, active);
        }
    }
    let dashboard = builder
        .start()
        .with_context(|| format!("cannot serve on {}", args.dashboard.bind))?;
    announce(&dashboard, out)?;
    out.line(format!("following {}; Ctrl-C stops", names.join(", ")))?;
    out.flush()?;
    dashboard.wait();
    Ok(ExitCode::SUCCESS)
}

/// Prints where the page is, and the token when one was generated.
pub(crate) fn announce(dashboard: &Dashboard, out: &mut Out) -> Result<()> {
    out.line(format!("dashboard: {}", dashboard.url()))?;
    if dashboard.token_generated() {
        out.line(format!(
            "token (generated, needed off loopback): {}",
            dashboard.token().unwrap_or_default()
        ))?;
        out.line("give it as `Authorization: Bearer <token>`, or open the link above")?;
    }
    Ok(())
}

/// A dashboard source on NATS: a bus of this process with a bridge
/// importing into it, on a runtime of its own.
struct NatsSource {
    bus: nerve::Bus,
    bridge: nerve::nats::NatsBridge,
    runtime: tokio::runtime::Runtime,
}

impl NatsSource {
    fn connect(url: &str, pattern: &str, prefix: &str) -> Result<Self> {
        use nerve::nats::{NatsBridge, NatsOptions};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("cannot start the tokio runtime")?;
        let bus = nerve::Bus::new();
        let mut options = NatsOptions::new().origin(format!("nerve-serve-{}", std::process::id()));
        options = if prefix.is_empty() {
            // Every deployment on the server, as `nerve tail --nats '*'`
            // shows them (`nerve demo --nats` publishes under a prefix).
            options.any_prefix(true)
        } else {
            options.prefix(prefix)
        };
        let bridge = runtime
            .block_on(NatsBridge::connect(url, &bus, options))
            .with_context(|| format!("--nats {url}: cannot connect"))?;
        runtime
            .block_on(bridge.import(pattern))
            .with_context(|| format!("--nats-pattern {pattern}: cannot import"))?;
        Ok(Self {
            bus,
            bridge,
            runtime,
        })
    }
}

impl Drop for NatsSource {
    fn drop(&mut self) {
        self.runtime
            .block_on(self.bridge.shutdown(std::time::Duration::from_secs(5)));
    }
}
