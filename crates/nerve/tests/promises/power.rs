//! What each fsync policy has made durable, read from a file system that
//! records, per file, how many bytes were written and how many a sync
//! covered: what a power loss at that moment would keep of the file is its
//! synced prefix.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nerve::journal::fs::{JournalFile, JournalFs, StdFs};
use nerve::sink::EventSink;
use nerve::{Bus, Event, Fsync, Journal, json};

use crate::WAIT;

/// One file's bytes: written (handed to the OS) and synced.
#[derive(Debug, Default, Clone, Copy)]
struct Bytes {
    written: u64,
    synced: u64,
}

#[derive(Default)]
struct Disk {
    /// By current name.
    files: HashMap<PathBuf, Arc<Mutex<Bytes>>>,
    file_syncs: u64,
    dir_syncs: u64,
    /// Renames of a file some of whose written bytes no sync covered.
    unsynced_renames: Vec<String>,
    /// Names made, renamed or removed since the directory's last sync:
    /// what a power loss now could undo.
    dir_changes_unsynced: u64,
}

/// The real file system, recording writes, syncs and renames.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Disk>>);

impl Recorder {
    fn bytes(&self, path: &Path) -> Bytes {
        *self.0.lock().unwrap().files[path].lock().unwrap()
    }
    fn syncs(&self) -> (u64, u64) {
        let d = self.0.lock().unwrap();
        (d.file_syncs, d.dir_syncs)
    }
    fn dir_changes_unsynced(&self) -> u64 {
        self.0.lock().unwrap().dir_changes_unsynced
    }
}

struct RecordedFile {
    inner: Box<dyn JournalFile>,
    bytes: Arc<Mutex<Bytes>>,
    disk: Recorder,
}

impl JournalFs for Recorder {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn JournalFile>> {
        let made = !path.exists();
        let inner = StdFs.open_append(path)?;
        let len = inner.len()?;
        // What is in the file already counts as synced: recovery synced it.
        let bytes = Arc::new(Mutex::new(Bytes {
            written: len,
            synced: len,
        }));
        let mut d = self.0.lock().unwrap();
        d.files.insert(path.to_path_buf(), bytes.clone());
        d.dir_changes_unsynced += u64::from(made);
        drop(d);
        Ok(Box::new(RecordedFile {
            inner,
            bytes,
            disk: self.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)?;
        let mut d = self.0.lock().unwrap();
        d.dir_changes_unsynced += 1;
        if let Some(bytes) = d.files.remove(from) {
            let b = *bytes.lock().unwrap();
            if b.synced < b.written {
                let name = format!("{} ({b:?})", from.display());
                d.unsynced_renames.push(name);
            }
            d.files.insert(to.to_path_buf(), bytes);
        }
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdFs.remove(path)?;
        let mut d = self.0.lock().unwrap();
        d.files.remove(path);
        d.dir_changes_unsynced += 1;
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFs.sync_dir(dir)?;
        let mut d = self.0.lock().unwrap();
        d.dir_syncs += 1;
        d.dir_changes_unsynced = 0;
        Ok(())
    }
}

impl JournalFile for RecordedFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.bytes.lock().unwrap().written += buf.len() as u64;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()?;
        let mut b = self.bytes.lock().unwrap();
        b.synced = b.written;
        drop(b);
        self.disk.0.lock().unwrap().file_syncs += 1;
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)?;
        let mut b = self.bytes.lock().unwrap();
        b.written = len;
        b.synced = b.synced.min(len);
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

/// The ids of the events in the first `len` bytes of the file at `path`:
/// what a power loss now would leave of it.
fn ids_in_prefix(path: &Path, len: u64) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let prefix = &bytes[..usize::try_from(len).unwrap()];
    prefix
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let line: serde_json::Value = serde_json::from_slice(l).unwrap();
            line["event_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn journal(path: &Path, fsync: Fsync, max_bytes: u64, fs: &Recorder) -> Journal {
    Journal::builder(path)
        .fsync(fsync)
        .max_bytes(max_bytes)
        .max_files(100)
        .file_system(fs.clone())
        .build()
        .unwrap()
}

/// Under `Always`, the moment `emit` returns, its event (and every event
/// before it) is in the synced part of the file, from four threads at once.
#[test]
fn under_always_every_event_whose_emit_returned_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let fs = Recorder::default();
    let bus = Bus::builder()
        .journal(journal(&path, Fsync::Always, 10 << 20, &fs))
        .history_capacity(0)
        .build()
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (bus, fs, path) = (&bus, &fs, &path);
            s.spawn(move || {
                for i in 0..50 {
                    let e = Event::builder("work.item")
                        .data(json!({"t": t, "i": i}))
                        .build()
                        .unwrap();
                    let id = e.event_id().to_string();
                    bus.emit_event(e).unwrap();
                    let synced = fs.bytes(path).synced;
                    let durable = ids_in_prefix(path, synced);
                    assert!(durable.contains(&id), "emit returned before its sync");
                }
            });
        }
    });
    let b = fs.bytes(&path);
    assert_eq!(b.synced, b.written);
    assert_eq!(ids_in_prefix(&path, b.synced).len(), 200);
}

/// Rotating every few events, then flushing and closing: the counts of
/// file and directory syncs, and the renames of files with unsynced bytes.
fn rotate_flush_close(fsync: Fsync) -> (Recorder, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let fs = Recorder::default();
    let journal = journal(&path, fsync, 1_000, &fs);
    for i in 0..200 {
        journal
            .record(&Event::builder("work.item").data(json!(i)).build().unwrap())
            .unwrap();
    }
    journal.flush(WAIT).unwrap();
    let after_flush = fs.bytes(&path);
    if fsync != Fsync::Never {
        assert_eq!(after_flush.synced, after_flush.written, "flush syncs");
        assert_eq!(fs.dir_changes_unsynced(), 0, "flush syncs the directory");
    }
    assert!(journal.stats().rotations >= 10, "{:?}", journal.stats());
    journal
        .record(&Event::builder("work.last").build().unwrap())
        .unwrap();
    journal.close(WAIT).unwrap();
    (fs, path, dir)
}

/// `Never` never syncs: not a batch, not at rotation, flush or close, not
/// the directory. A power loss keeps whatever the OS had written back.
#[test]
fn under_never_nothing_is_ever_synced() {
    let (fs, path, _dir) = rotate_flush_close(Fsync::Never);
    assert_eq!(fs.syncs(), (0, 0), "file syncs, directory syncs");
    let b = fs.bytes(&path);
    assert_eq!(b.synced, 0);
    assert!(b.written > 0);
}

/// `Interval(d)` syncs a file before rotating it away (so a rotated file is
/// whole on disk), and the directory and everything else on flush and
/// close, without waiting for `d` (an hour here). The directory is synced
/// once per pass of renames, not once per rotation: how many rotations a
/// pass takes depends on the threads' timing, so only the file syncs are
/// counted.
#[test]
fn under_interval_a_file_is_synced_before_rotation_and_on_flush_and_close() {
    let (fs, path, _dir) = rotate_flush_close(Fsync::Interval(Duration::from_secs(3600)));
    let d = fs.0.lock().unwrap();
    assert!(
        d.unsynced_renames.is_empty(),
        "rotated with unsynced bytes: {:?}",
        d.unsynced_renames
    );
    assert!(d.file_syncs >= 10, "one a rotation: {}", d.file_syncs);
    assert!(d.dir_syncs >= 1, "{}", d.dir_syncs);
    assert_eq!(d.dir_changes_unsynced, 0, "close syncs the directory");
    drop(d);
    let b = fs.bytes(&path);
    assert_eq!(b.synced, b.written, "close syncs");
}
