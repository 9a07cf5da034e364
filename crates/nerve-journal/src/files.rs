//! The journal's files: names, and repair after a crash.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::fs::{JournalFs, StdFs};

/// The names of one journal's files: `events.jsonl` (active),
/// `events.1.jsonl` (newest backup) ... `events.N.jsonl` (oldest),
/// rotated files waiting for their number (`events.p7.jsonl`),
/// `events.jsonl.lock`, `events.jsonl.rename-lock` and `events.jsonl.torn`.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    active: PathBuf,
    dir: PathBuf,
    stem: String,
    ext: Option<String>,
}

impl Paths {
    pub(crate) fn new(active: &Path) -> Self {
        let dir = match active.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = active
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (stem, ext) = match name.rfind('.') {
            Some(i) if i > 0 => (name[..i].to_owned(), Some(name[i + 1..].to_owned())),
            _ => (name, None),
        };
        Self {
            active: active.to_path_buf(),
            dir,
            stem,
            ext,
        }
    }

    pub(crate) fn active(&self) -> &Path {
        &self.active
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Backup number `k` (1 is the newest).
    pub(crate) fn backup(&self, k: usize) -> PathBuf {
        let name = match &self.ext {
            Some(ext) => format!("{}.{k}.{ext}", self.stem),
            None => format!("{}.{k}", self.stem),
        };
        self.dir.join(name)
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.active.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    }

    pub(crate) fn lock(&self) -> PathBuf {
        self.sibling(".lock")
    }

    pub(crate) fn torn(&self) -> PathBuf {
        self.sibling(".torn")
    }

    /// The file a compaction writes before renaming it over the active one
    /// (the dead letter file's, `dead_letters.jsonl.compact`).
    pub(crate) fn compacting(&self) -> PathBuf {
        self.sibling(".compact")
    }

    /// A rotated file still waiting for its number: generation `g` (larger
    /// is newer). `events.p7.jsonl`.
    pub(crate) fn pending(&self, g: u64) -> PathBuf {
        let name = match &self.ext {
            Some(ext) => format!("{}.p{g}.{ext}", self.stem),
            None => format!("{}.p{g}", self.stem),
        };
        self.dir.join(name)
    }

    /// The lock that renumbering holds exclusively and readers hold shared
    /// while they open the files, so that they see the names stand still.
    pub(crate) fn rename_lock(&self) -> PathBuf {
        self.sibling(".rename-lock")
    }

    /// The backups and pending files present, found by listing the directory
    /// (at open, by readers, and by the renumbering after a failure).
    pub(crate) fn list(&self) -> io::Result<Listing> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            names.push(entry?.file_name());
        }
        Ok(self.listing_of(names.iter().filter_map(|n| n.to_str())))
    }

    /// The backups and pending files among the file names `names` (of the
    /// journal's directory): [`list`](Self::list) without the directory.
    pub(crate) fn listing_of<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Listing {
        let prefix = format!("{}.", self.stem);
        let suffix = self
            .ext
            .as_ref()
            .map(|e| format!(".{e}"))
            .unwrap_or_default();
        let mut found = Listing::default();
        for name in names {
            let Some(mid) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(suffix.as_str()))
            else {
                continue;
            };
            let (digits, pending) = match mid.strip_prefix('p') {
                Some(rest) => (rest, true),
                None => (mid, false),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if pending {
                if let Ok(g) = digits.parse::<u64>() {
                    found.pending.push(g);
                }
            } else if let Ok(k) = digits.parse::<usize>() {
                if k > 0 {
                    found.backups.push(k);
                }
            }
        }
        found.backups.sort_unstable();
        found.pending.sort_unstable();
        found
    }

    /// The files of a listing, oldest first: backups from the highest
    /// number down, then pending files by generation.
    pub(crate) fn oldest_first(&self, listing: &Listing) -> Vec<PathBuf> {
        let mut names: Vec<PathBuf> = listing
            .backups
            .iter()
            .rev()
            .map(|k| self.backup(*k))
            .collect();
        names.extend(listing.pending.iter().map(|g| self.pending(*g)));
        names
    }
}

/// The rotated files of a journal present on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    /// Backup numbers, ascending (newest first).
    pub(crate) backups: Vec<usize>,
    /// Pending generations, ascending (oldest first).
    pub(crate) pending: Vec<u64>,
}

impl Listing {
    /// Whether the files are already `1..=n` with nothing pending.
    pub(crate) fn is_final(&self, max_files: usize) -> bool {
        self.pending.is_empty()
            && self.backups.len() <= max_files
            && self.backups.iter().enumerate().all(|(i, k)| *k == i + 1)
    }
}

/// What one renumbering did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Renumbered {
    /// Backups present afterwards, `1..=backups`.
    pub(crate) backups: usize,
    /// Renames done.
    pub(crate) renames: u64,
}

/// Gives the files of `listing` their final names: the newest pending file
/// becomes `.1`, the others follow in order, and the oldest beyond
/// `max_files` are deleted. One pass, whatever the number of pending files.
///
/// Every intermediate state keeps the files' order as readers compute it
/// (backups by descending number, then pending files by generation): the
/// oldest files are deleted first, backups moving down are renamed in
/// ascending order and those moving up in descending order (so each target
/// name is free), and pending files are numbered oldest first, each into the
/// slot just below the backups. A crash at any point leaves a state that
/// this function, run again at open, completes.
pub(crate) fn renumber(
    fs: &dyn JournalFs,
    paths: &Paths,
    listing: &Listing,
    max_files: usize,
) -> io::Result<Renumbered> {
    renumber_with(fs, paths, listing, max_files, &mut || {})
}

/// [`renumber`], calling `between` after each removal and rename (the
/// renumbering thread keeps its spare files topped up there, so that a long
/// pass does not leave rotations without one).
pub(crate) fn renumber_with(
    fs: &dyn JournalFs,
    paths: &Paths,
    listing: &Listing,
    max_files: usize,
    between: &mut dyn FnMut(),
) -> io::Result<Renumbered> {
    let pending = listing.pending.len();
    let total = pending + listing.backups.len();
    let kept = total.min(max_files);
    // Newest first, position i (from 0) gets number i + 1; the oldest
    // positions `kept..total` go, oldest first.
    for i in (kept..total).rev() {
        let path = if i < pending {
            paths.pending(listing.pending[pending - 1 - i])
        } else {
            paths.backup(listing.backups[i - pending])
        };
        remove_if_present(fs, &path)?;
        between();
    }
    let mut renames = 0;
    let kept_backups = kept.saturating_sub(pending);
    let moves: Vec<(usize, usize)> = listing.backups[..kept_backups]
        .iter()
        .enumerate()
        .map(|(r, b)| (*b, pending + r + 1))
        .collect();
    // Moving down, ascending; then moving up, descending.
    for (from, to) in moves.iter().filter(|(b, t)| t < b) {
        fs.renumber(&paths.backup(*from), &paths.backup(*to))?;
        renames += 1;
        between();
    }
    for (from, to) in moves.iter().rev().filter(|(b, t)| t > b) {
        fs.renumber(&paths.backup(*from), &paths.backup(*to))?;
        renames += 1;
        between();
    }
    // Pending, oldest kept first, into `min(pending, kept)..=1`.
    let kept_pending = pending.min(kept);
    for (j, g) in listing.pending[pending - kept_pending..].iter().enumerate() {
        fs.renumber(&paths.pending(*g), &paths.backup(kept_pending - j))?;
        renames += 1;
        between();
    }
    Ok(Renumbered {
        backups: kept,
        renames,
    })
}

/// Removes `path`; a file already gone is not an error.
pub(crate) fn remove_if_present(fs: &dyn JournalFs, path: &Path) -> io::Result<()> {
    match fs.remove(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The advisory lock on `events.jsonl.rename-lock`: renumbering holds it
/// exclusively, readers shared while they list and open the files, so that a
/// reader never sees a file under two names or under none. The writer's own
/// rename of the active file is not under it (it must not wait for readers);
/// readers tell that one apart by the file's identity.
#[derive(Debug)]
pub(crate) struct RenameLock(Option<File>);

/// A held [`RenameLock`]; released when dropped.
#[derive(Debug)]
pub(crate) struct Held<'a>(Option<&'a File>);

impl RenameLock {
    /// The writer's side: creates the file if missing.
    pub(crate) fn create(paths: &Paths) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(paths.rename_lock())?;
        Ok(Self(Some(file)))
    }

    /// A reader's side: the file if it is there and can be opened (a reader
    /// may not write to the directory; a journal without the file has no
    /// renumbering to wait for).
    pub(crate) fn open_existing(paths: &Paths) -> Self {
        Self(File::open(paths.rename_lock()).ok())
    }

    /// Waits for the lock, exclusively.
    pub(crate) fn exclusive(&self) -> io::Result<Held<'_>> {
        if let Some(f) = &self.0 {
            fs4::FileExt::lock(f)?;
        }
        Ok(Held(self.0.as_ref()))
    }

    /// Waits for the lock, shared. A lock that cannot be taken (a file system
    /// without `flock`) is skipped: readers then rely on their checks alone.
    pub(crate) fn shared(&self) -> Held<'_> {
        match &self.0 {
            Some(f) if fs4::FileExt::lock_shared(f).is_ok() => Held(Some(f)),
            _ => Held(None),
        }
    }
}

impl RenameLock {
    /// Whether its file was removed while open (the journal's directory
    /// removed mid-run): readers look for the lock by name, so one no name
    /// leads to keeps no reader waiting.
    pub(crate) fn is_removed(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|f| crate::fs::is_unlinked(f).unwrap_or(false))
    }

    /// Waits for the lock, exclusively, as [`exclusive`](Self::exclusive),
    /// keeping the lock alive while held: for the renumbering thread, whose
    /// lock is replaced when it was removed.
    pub(crate) fn exclusive_shared(self: &std::sync::Arc<Self>) -> io::Result<HeldShared> {
        if let Some(f) = &self.0 {
            fs4::FileExt::lock(f)?;
        }
        Ok(HeldShared(std::sync::Arc::clone(self)))
    }
}

/// A held [`RenameLock`] that keeps it alive; released when dropped.
#[derive(Debug)]
pub(crate) struct HeldShared(std::sync::Arc<RenameLock>);

impl Drop for HeldShared {
    fn drop(&mut self) {
        if let Some(f) = &(self.0).0 {
            let _ = fs4::FileExt::unlock(f);
        }
    }
}

impl Held<'_> {
    /// Whether the lock is actually held.
    pub(crate) fn is_held(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.0 {
            let _ = fs4::FileExt::unlock(f);
        }
    }
}

/// What opening the journal found and repaired ([`Journal::recovery`](crate::Journal::recovery)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Bytes of a torn last line cut off the active file and appended to the
    /// `.torn` quarantine file.
    pub torn_bytes: u64,
    /// Whether backups were renumbered to close a gap, pending files
    /// numbered, or backups trimmed to `max_files`.
    pub renumbered: bool,
    /// Whether the active file was missing and created.
    pub created_active: bool,
    /// Rotated files found still waiting for their final number (a crash
    /// between a rotation and the renumbering that follows it); they were
    /// numbered in order, newest `.1`.
    pub pending: usize,
}

impl Recovery {
    /// Whether anything needed repair.
    pub fn repaired_anything(&self) -> bool {
        self.torn_bytes > 0 || self.renumbered
    }
}

/// Repairs the journal's files after a crash: numbers pending files, closes
/// gaps in the backup numbering, creates a missing active file, and moves a torn last line of the
/// active file into the quarantine file so that the next append starts on a
/// record boundary. Returns the report and the active file's length.
pub(crate) fn recover(paths: &Paths, max_files: usize) -> io::Result<(Recovery, u64)> {
    let mut report = Recovery::default();
    let listing = paths.list()?;
    if !listing.is_final(max_files) {
        // Readers in other processes wait while the names move.
        let lock = RenameLock::create(paths)?;
        let _held = lock.exclusive()?;
        renumber(&StdFs, paths, &listing, max_files)?;
        report.renumbered = true;
        report.pending = listing.pending.len();
    }
    if !paths.active().exists() {
        report.created_active = true;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(paths.active())?;
    if report.renumbered || report.created_active {
        // The finished rotation is made durable before anything is appended,
        // so a power loss cannot bring back names from before it.
        StdFs.sync_dir(paths.dir())?;
    }
    let len = file.metadata()?.len();
    let boundary = last_boundary(&mut file, len)?;
    if boundary < len {
        let mut torn = Vec::new();
        file.seek(SeekFrom::Start(boundary))?;
        file.read_to_end(&mut torn)?;
        quarantine(paths, [torn.as_slice()])?;
        file.set_len(boundary)?;
        file.sync_all()?;
        report.torn_bytes = len - boundary;
    }
    Ok((report, boundary))
}

/// Appends `records` to the quarantine file (`events.jsonl.torn`), each
/// followed by a newline, and syncs it: what a reopen cut off or could not
/// read is set aside, never deleted.
pub(crate) fn quarantine<'a>(
    paths: &Paths,
    records: impl IntoIterator<Item = &'a [u8]>,
) -> io::Result<()> {
    let mut bytes = Vec::new();
    for record in records {
        bytes.extend_from_slice(record);
        bytes.push(b'\n');
    }
    let mut quarantine = OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.torn())?;
    quarantine.write_all(&bytes)?;
    quarantine.sync_data()
}

/// How many of the newest records [`last_seq`] looks at: concurrent emitters
/// hand events to the writer slightly out of `seq` order, so the last line
/// need not hold the highest number.
const TAIL_RECORDS: usize = 64;

/// The highest `seq` the journal holds: the largest number among its
/// newest [`TAIL_RECORDS`] numbered records (a range marker counts with its
/// `to_seq`), read from the end of the active file and, while fewer than
/// that were found, of the rotated files, newest first. Files and lines that
/// carry no number (damaged, or another program's) are passed over. Across
/// files, because a rotation can fall between an out-of-order pair and leave
/// the higher number in the older file. `None` for an empty journal or one
/// without numbers (an aperion-event-bus log). Reads a few blocks per file,
/// whatever the files' sizes.
pub(crate) fn last_seq(paths: &Paths) -> io::Result<Option<u64>> {
    let listing = paths.list()?;
    let mut newest_first = vec![paths.active().to_path_buf()];
    newest_first.extend(paths.oldest_first(&listing).into_iter().rev());
    let mut highest: Option<u64> = None;
    let mut numbered = 0;
    for path in newest_first {
        if numbered >= TAIL_RECORDS {
            break;
        }
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len == 0 {
            continue;
        }
        let tail = tail_lines(&mut file, len, TAIL_RECORDS - numbered)?;
        for seq in tail
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(crate::format::seq_accounted)
        {
            numbered += 1;
            highest = highest.max(Some(seq));
        }
    }
    Ok(highest)
}

/// The file's last `n` whole lines (fewer if it has fewer), reading
/// backwards from `len` in growing blocks; a torn last line is left out.
fn tail_lines(file: &mut File, len: u64, n: usize) -> io::Result<Vec<u8>> {
    let mut block: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(block);
        let size = usize::try_from(len - start).unwrap_or(usize::MAX);
        let mut buf = vec![0u8; size];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf)?;
        // Whole lines only: up to the last newline, and after the first
        // newline unless the block starts the file.
        let end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        buf.truncate(end);
        let newlines = buf.iter().filter(|b| **b == b'\n').count();
        if start == 0 || newlines > n {
            let first = if start == 0 {
                0
            } else {
                // Keep the last `n` lines: skip past the (newlines - n)th newline.
                let mut seen = 0;
                buf.iter()
                    .position(|b| {
                        seen += usize::from(*b == b'\n');
                        seen == newlines - n
                    })
                    .map_or(0, |i| i + 1)
            };
            return Ok(buf.split_off(first));
        }
        block *= 4;
    }
}

/// The offset just past the file's last newline (0 if it has none), reading
/// backwards in blocks.
pub(crate) fn last_boundary(file: &mut File, len: u64) -> io::Result<u64> {
    const BLOCK: u64 = 64 * 1024;
    let mut end = len;
    let mut buf = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let n = usize::try_from(end - start).unwrap_or(buf.len());
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let p = Paths::new(Path::new("/tmp/x/events.jsonl"));
        assert_eq!(p.backup(3), Path::new("/tmp/x/events.3.jsonl"));
        assert_eq!(p.lock(), Path::new("/tmp/x/events.jsonl.lock"));
        assert_eq!(p.torn(), Path::new("/tmp/x/events.jsonl.torn"));
        assert_eq!(p.pending(12), Path::new("/tmp/x/events.p12.jsonl"));
        let bare = Paths::new(Path::new("log"));
        assert_eq!(bare.backup(1), Path::new("./log.1"));
    }

    #[test]
    fn gaps_are_closed_and_torn_tails_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths::new(&dir.path().join("events.jsonl"));
        std::fs::write(p.backup(2), "b\n").unwrap();
        std::fs::write(p.backup(5), "a\n").unwrap();
        std::fs::write(p.backup(7), "old\n").unwrap();
        std::fs::write(p.active(), "c\n{\"torn").unwrap();
        let (report, len) = recover(&p, 2).unwrap();
        assert!(report.renumbered);
        assert_eq!(report.torn_bytes, 6);
        assert_eq!(len, 2);
        assert_eq!(std::fs::read_to_string(p.backup(1)).unwrap(), "b\n");
        assert_eq!(std::fs::read_to_string(p.backup(2)).unwrap(), "a\n");
        assert!(!p.backup(3).exists(), "beyond max_files is deleted");
        assert_eq!(std::fs::read_to_string(p.active()).unwrap(), "c\n");
        assert_eq!(std::fs::read_to_string(p.torn()).unwrap(), "{\"torn\n");
        let (again, _) = recover(&p, 2).unwrap();
        assert!(!again.repaired_anything());
    }

    /// Writes one file per name, its content its age (0 oldest).
    fn layout(p: &Paths, oldest_first: &[PathBuf]) {
        for (age, path) in oldest_first.iter().enumerate() {
            std::fs::write(path, format!("{age}\n")).unwrap();
        }
        let _ = p;
    }

    /// The ages read in reader order (backups descending, then pending).
    fn ages(p: &Paths) -> Vec<String> {
        p.oldest_first(&p.list().unwrap())
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap().trim().to_owned())
            .collect()
    }

    #[test]
    fn pending_files_are_numbered_in_order_in_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths::new(&dir.path().join("events.jsonl"));
        // Backups 1..=3 and three rotations pending.
        layout(
            &p,
            &[
                p.backup(3),
                p.backup(2),
                p.backup(1),
                p.pending(4),
                p.pending(5),
                p.pending(9),
            ],
        );
        let listing = p.list().unwrap();
        assert_eq!(listing.backups, [1, 2, 3]);
        assert_eq!(listing.pending, [4, 5, 9]);
        assert_eq!(ages(&p), ["0", "1", "2", "3", "4", "5"]);
        let done = renumber(&StdFs, &p, &listing, 5).unwrap();
        assert_eq!(
            done,
            Renumbered {
                backups: 5,
                renames: 5
            }
        );
        let after = p.list().unwrap();
        assert!(after.is_final(5), "{after:?}");
        assert_eq!(ages(&p), ["1", "2", "3", "4", "5"], "the oldest went");
    }

    #[test]
    fn more_pending_than_max_files_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths::new(&dir.path().join("events.jsonl"));
        layout(
            &p,
            &[
                p.backup(2),
                p.backup(1),
                p.pending(1),
                p.pending(2),
                p.pending(3),
            ],
        );
        renumber(&StdFs, &p, &p.list().unwrap(), 2).unwrap();
        assert_eq!(p.list().unwrap().backups, [1, 2]);
        assert_eq!(ages(&p), ["3", "4"]);
    }

    #[test]
    fn every_crash_point_of_a_pass_reads_in_order_and_recovers() {
        // Gaps, moves both ways, pending: replay the pass one step at a time.
        let dir = tempfile::tempdir().unwrap();
        let p = Paths::new(&dir.path().join("events.jsonl"));
        let start = [
            p.backup(9),
            p.backup(4),
            p.backup(3),
            p.backup(1),
            p.pending(7),
            p.pending(8),
        ];
        let steps = {
            layout(&p, &start);
            let listing = p.list().unwrap();
            let mut n = 0;
            loop {
                // Fail the (n+1)th rename: the state after n of them.
                let case = tempfile::tempdir().unwrap();
                let q = Paths::new(&case.path().join("events.jsonl"));
                let names: Vec<PathBuf> = start
                    .iter()
                    .map(|f| case.path().join(f.file_name().unwrap()))
                    .collect();
                layout(&q, &names);
                let ok = renumber(
                    &CrashAfter(n, std::sync::atomic::AtomicUsize::new(0)),
                    &q,
                    &listing,
                    5,
                );
                // Readers see the surviving files in age order at every step.
                let seen = ages(&q);
                let mut sorted = seen.clone();
                sorted.sort();
                assert_eq!(seen, sorted, "after {n} renames");
                // Recovery completes it.
                let (_, _) = recover(&q, 5).unwrap();
                assert!(q.list().unwrap().is_final(5));
                assert_eq!(ages(&q), ["1", "2", "3", "4", "5"], "after {n} renames");
                if ok.is_ok() {
                    break n;
                }
                n += 1;
            }
        };
        let _ = p;
        assert!(steps >= 5, "{steps}");
    }

    /// Fails every rename after the first `n`.
    struct CrashAfter(usize, std::sync::atomic::AtomicUsize);

    impl JournalFs for CrashAfter {
        fn open_append(&self, path: &Path) -> io::Result<Box<dyn crate::fs::JournalFile>> {
            StdFs.open_append(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            if self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= self.0 {
                return Err(io::Error::other("crash"));
            }
            StdFs.rename(from, to)
        }
        fn remove(&self, path: &Path) -> io::Result<()> {
            StdFs.remove(path)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            StdFs.sync_dir(dir)
        }
    }
}
