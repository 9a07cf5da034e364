//! Integration tests of the journal: writing through a bus, rotation and
//! retention under concurrency, recovery, faults, the lock, crashes, follow
//! and replay.
//!
//! Some tests run this binary again as a child process; the child's entry
//! points are ordinary `#[test]`s that do nothing unless `NERVE_JOURNAL_CHILD`
//! is set.

mod child;
mod concurrency;
mod crash;
mod dead_letters;
mod durability;
mod faults;
mod follow;
mod markers;
mod recovery;
mod removed;
mod replay;
mod writing;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nerve_core::Event;
use nerve_journal::{JournalReader, ReadError};
use nerve_router::Bus;

/// A generous bound for waits that should take milliseconds.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Every event of the journal at `path`, oldest first; panics on any bad line.
pub(crate) fn read_all(path: &Path) -> Vec<Event> {
    JournalReader::open(path)
        .unwrap()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// The journal's files, oldest first.
pub(crate) fn files(path: &Path) -> Vec<PathBuf> {
    JournalReader::open(path)
        .unwrap()
        .files()
        .into_iter()
        .map(Path::to_path_buf)
        .collect()
}

/// The names in `dir`, sorted.
pub(crate) fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The rotated files in `dir` still waiting for their number
/// (`events.p<g>.jsonl`).
pub(crate) fn pending_names(dir: &Path) -> Vec<String> {
    names_in(dir)
        .into_iter()
        .filter(|n| n.starts_with("events.p"))
        .collect()
}

/// What `bus` publishes as `system.journal_error`, each as the string in
/// its data's `field` (`kind`, `error`), in order.
pub(crate) fn journal_errors(bus: &Bus, field: &'static str) -> Arc<Mutex<Vec<String>>> {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    bus.subscribe("system.journal_error", move |e: &Event| {
        seen.lock()
            .unwrap()
            .push(e.data()[field].as_str().unwrap_or_default().to_owned());
    })
    .unwrap();
    errors
}

/// Asserts that every file of the journal holds only whole, valid lines.
pub(crate) fn assert_whole_lines(path: &Path) {
    for f in files(path) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            bytes.is_empty() || bytes.ends_with(b"\n"),
            "{} ends in a partial line",
            f.display()
        );
    }
    let bad: Vec<ReadError> = JournalReader::open(path)
        .unwrap()
        .filter_map(Result::err)
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
}
