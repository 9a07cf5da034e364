//! The journal's files: names, and repair after a crash.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The names of one journal's files: `events.jsonl` (active),
/// `events.1.jsonl` (newest backup) ... `events.N.jsonl` (oldest),
/// `events.jsonl.lock` and `events.jsonl.torn`.
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

    /// The numbers of the backups present, ascending, found by listing the
    /// directory (only at open and after a failed rotation).
    pub(crate) fn backup_numbers(&self) -> io::Result<Vec<usize>> {
        let prefix = format!("{}.", self.stem);
        let suffix = self
            .ext
            .as_ref()
            .map(|e| format!(".{e}"))
            .unwrap_or_default();
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(mid) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(suffix.as_str()))
            else {
                continue;
            };
            if !mid.is_empty() && mid.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(k) = mid.parse::<usize>() {
                    if k > 0 {
                        found.push(k);
                    }
                }
            }
        }
        found.sort_unstable();
        Ok(found)
    }

    /// Renumbers the backups `1..=n` without gaps (keeping their order) and
    /// deletes the oldest beyond `max_files`. Returns how many remain.
    pub(crate) fn repair_numbering(&self, max_files: usize) -> io::Result<usize> {
        let found = self.backup_numbers()?;
        let mut kept = 0;
        for (i, k) in found.iter().enumerate() {
            let want = i + 1;
            if want > max_files {
                std::fs::remove_file(self.backup(*k))?;
                continue;
            }
            if *k != want {
                // Ascending, so the target number is always free.
                std::fs::rename(self.backup(*k), self.backup(want))?;
            }
            kept = want;
        }
        Ok(kept)
    }
}

/// What opening the journal found and repaired ([`Journal::recovery`](crate::Journal::recovery)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Bytes of a torn last line cut off the active file and appended to the
    /// `.torn` quarantine file.
    pub torn_bytes: u64,
    /// Whether backups were renumbered to close a gap (or trimmed to
    /// `max_files`).
    pub renumbered: bool,
    /// Whether the active file was missing and created.
    pub created_active: bool,
}

impl Recovery {
    /// Whether anything needed repair.
    pub fn repaired_anything(&self) -> bool {
        self.torn_bytes > 0 || self.renumbered
    }
}

/// Repairs the journal's files after a crash: closes gaps in the backup
/// numbering, creates a missing active file, and moves a torn last line of the
/// active file into the quarantine file so that the next append starts on a
/// record boundary. Returns the report and the active file's length.
pub(crate) fn recover(paths: &Paths, max_files: usize) -> io::Result<(Recovery, u64)> {
    let mut report = Recovery::default();
    let before = paths.backup_numbers()?;
    let kept = paths.repair_numbering(max_files)?;
    report.renumbered = before.len() != kept || before.iter().enumerate().any(|(i, k)| *k != i + 1);
    if !paths.active().exists() {
        report.created_active = true;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(paths.active())?;
    let len = file.metadata()?.len();
    let boundary = last_boundary(&mut file, len)?;
    if boundary < len {
        let mut torn = Vec::new();
        file.seek(SeekFrom::Start(boundary))?;
        file.read_to_end(&mut torn)?;
        let mut quarantine = OpenOptions::new()
            .create(true)
            .append(true)
            .open(paths.torn())?;
        torn.push(b'\n');
        quarantine.write_all(&torn)?;
        quarantine.sync_data()?;
        file.set_len(boundary)?;
        file.sync_all()?;
        report.torn_bytes = len - boundary;
    }
    Ok((report, boundary))
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
}
