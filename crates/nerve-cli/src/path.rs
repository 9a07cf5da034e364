//! What a `PATH` argument names: a journal's active file, or a directory
//! holding one journal.
//!
//! A journal's files are `events.jsonl` (active), `events.N.jsonl`
//! (backups, 1 newest), `events.p<g>.jsonl` (rotated files waiting for their
//! number after a crash mid-rotation), and beside them `events.jsonl.lock`,
//! `events.jsonl.rename-lock` and `events.jsonl.torn` (quarantined torn
//! tails). All of them name the same one journal.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// One journal on disk: its active file and its rotated files.
#[derive(Debug, Clone)]
pub(crate) struct JournalFiles {
    /// The active file (`events.jsonl`), which may not exist.
    pub(crate) active: PathBuf,
    /// Backup numbers found (`events.N.jsonl`), ascending.
    pub(crate) backups: Vec<u32>,
    /// Pending generations found (`events.p<g>.jsonl`), ascending.
    pub(crate) pending: Vec<u64>,
}

/// What a file name says about the journal it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Active,
    Backup(u32),
    Pending(u64),
    /// `.lock`, `.rename-lock`, `.torn`: beside the journal, not part of it.
    Beside,
}

impl JournalFiles {
    /// Resolves `path`: a file is the journal's active file (or one of its
    /// backups, pending files or side files, which name the same journal);
    /// a directory must hold exactly one journal.
    ///
    /// # Errors
    ///
    /// When nothing is at `path` ("no such file or directory"), it is not a
    /// journal's file, or a directory holds no journal or several.
    pub(crate) fn resolve(path: &Path) -> Result<Self> {
        let files = Self::resolve_missing_ok(path)?;
        if !path.exists() && !files.active.exists() {
            bail!("{}: no such file or directory", path.display());
        }
        Ok(files)
    }

    /// [`resolve`](Self::resolve), but a journal file that does not exist
    /// yet is accepted (`tail -f` waits for it).
    pub(crate) fn resolve_missing_ok(path: &Path) -> Result<Self> {
        // Only a journal that does not exist yet is worth waiting for, not
        // a link that loops or a directory on the way that cannot be
        // searched: said as the system says it, which `Path::exists` (and
        // so every check below) hides.
        if let Err(e) = std::fs::metadata(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                bail!("{}: {e}", path.display());
            }
        }
        if path.is_dir() {
            return Self::in_dir(path);
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some((stem, _)) = split(&name) else {
            if !path.exists() {
                bail!("{}: no such file or directory", path.display());
            }
            bail!(
                "{} is not a journal file (events.jsonl, or a directory holding one)",
                path.display()
            );
        };
        let dir = path.parent().unwrap_or(Path::new(""));
        Self::of(dir.join(format!("{stem}.jsonl")))
    }

    fn in_dir(path: &Path) -> Result<Self> {
        let mut stems: Vec<String> = Vec::new();
        let entries =
            std::fs::read_dir(path).with_context(|| format!("cannot list {}", path.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", path.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((stem, kind)) = split(&name) {
                // A lock or quarantine file alone does not make a journal.
                if kind != Kind::Beside && !stems.contains(&stem) {
                    stems.push(stem);
                }
            }
        }
        stems.sort();
        match stems.as_slice() {
            [] => bail!("{} holds no journal (no *.jsonl file)", path.display()),
            [one] => Self::of(path.join(format!("{one}.jsonl"))),
            many => bail!(
                "{} holds {} journals ({}); name one file",
                path.display(),
                many.len(),
                many.iter()
                    .map(|s| format!("{s}.jsonl"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn of(active: PathBuf) -> Result<Self> {
        let dir = match active.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let stem = active
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut backups = Vec::new();
        let mut pending = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                match split(&name) {
                    Some((s, Kind::Backup(n))) if s == stem => backups.push(n),
                    Some((s, Kind::Pending(g))) if s == stem => pending.push(g),
                    _ => {}
                }
            }
        }
        backups.sort_unstable();
        pending.sort_unstable();
        Ok(Self {
            active,
            backups,
            pending,
        })
    }

    /// The journal's name without `.jsonl` (`events`).
    pub(crate) fn stem(&self) -> String {
        self.active
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// A file of this journal beside the active one, by name.
    pub(crate) fn sibling(&self, name: &str) -> PathBuf {
        self.active.with_file_name(name)
    }

    /// Backup numbers missing from `1..=max`: a broken rotation.
    pub(crate) fn numbering_gaps(&self) -> Vec<u32> {
        let max = self.backups.last().copied().unwrap_or(0);
        (1..=max).filter(|n| !self.backups.contains(n)).collect()
    }
}

/// `events.jsonl` → `("events", Active)`, `events.3.jsonl` → `("events",
/// Backup(3))`, `events.p7.jsonl` → `("events", Pending(7))`,
/// `events.jsonl.torn` → `("events", Beside)`.
fn split(name: &str) -> Option<(String, Kind)> {
    for side in [".lock", ".rename-lock", ".torn"] {
        if let Some(active) = name.strip_suffix(side) {
            let (stem, kind) = split(active)?;
            return (kind == Kind::Active).then_some((stem, Kind::Beside));
        }
    }
    let stem = name.strip_suffix(".jsonl")?;
    if stem.is_empty() {
        return None;
    }
    if let Some((base, tail)) = stem.rsplit_once('.') {
        if !base.is_empty() && !tail.is_empty() {
            let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
            if digits(tail) {
                if let Ok(n) = tail.parse::<u32>() {
                    if n > 0 {
                        return Some((base.to_owned(), Kind::Backup(n)));
                    }
                }
            }
            if let Some(g) = tail.strip_prefix('p').filter(|g| digits(g)) {
                if let Ok(g) = g.parse::<u64>() {
                    return Some((base.to_owned(), Kind::Pending(g)));
                }
            }
        }
    }
    Some((stem.to_owned(), Kind::Active))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let check = |name: &str, want: Option<(&str, Kind)>| {
            assert_eq!(split(name), want.map(|(s, k)| (s.to_owned(), k)), "{name}");
        };
        check("events.jsonl", Some(("events", Kind::Active)));
        check("events.12.jsonl", Some(("events", Kind::Backup(12))));
        check("events.p129.jsonl", Some(("events", Kind::Pending(129))));
        check("events.jsonl.torn", Some(("events", Kind::Beside)));
        check("events.jsonl.lock", Some(("events", Kind::Beside)));
        check("events.jsonl.rename-lock", Some(("events", Kind::Beside)));
        check("events.3.jsonl.lock", None);
        check("a.b.jsonl", Some(("a.b", Kind::Active)));
        check("a.p.jsonl", Some(("a.p", Kind::Active)));
        check("events.json", None);
        check(".jsonl", None);
    }

    #[test]
    fn a_directory_after_a_crash_mid_rotation_is_one_journal() {
        let dir = tempfile_dir("crash");
        for name in [
            "events.jsonl",
            "events.p129.jsonl",
            "events.p130.jsonl",
            "events.jsonl.torn",
            "events.jsonl.lock",
            "events.2.jsonl",
        ] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        let files = JournalFiles::resolve(&dir).unwrap();
        assert_eq!(files.active, dir.join("events.jsonl"));
        assert_eq!(files.backups, [2]);
        assert_eq!(files.pending, [129, 130]);
        let same = JournalFiles::resolve(&dir.join("events.p129.jsonl")).unwrap();
        assert_eq!(same.active, files.active);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nerve-cli-path-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
