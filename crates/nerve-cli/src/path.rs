//! What a `PATH` argument names: a journal's active file, or a directory
//! holding one journal.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// One journal on disk: its active file and its backups, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct JournalFiles {
    /// The active file (`events.jsonl`), which may not exist.
    pub(crate) active: PathBuf,
    /// Backup numbers found (`events.N.jsonl`), ascending.
    pub(crate) backups: Vec<u32>,
}

impl JournalFiles {
    /// Resolves `path`: a file is the journal's active file (or one of its
    /// backups, which names the same journal); a directory must hold exactly
    /// one journal.
    pub(crate) fn resolve(path: &Path) -> Result<Self> {
        if path.is_dir() {
            let mut stems: Vec<String> = Vec::new();
            let entries = std::fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?;
            for entry in entries {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if let Some((stem, _)) = split(&name) {
                    if !stems.contains(&stem) {
                        stems.push(stem);
                    }
                }
            }
            stems.sort();
            return match stems.as_slice() {
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
            };
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some((stem, _)) = split(&name) else {
            bail!("{} is not a journal file (*.jsonl)", path.display());
        };
        let dir = path.parent().unwrap_or(Path::new(""));
        let active = dir.join(format!("{stem}.jsonl"));
        if !active.exists() && !path.exists() {
            bail!("{}: no such file or directory", path.display());
        }
        Self::of(active)
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
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some((s, Some(n))) = split(&name) {
                    if s == stem {
                        backups.push(n);
                    }
                }
            }
        }
        backups.sort_unstable();
        Ok(Self { active, backups })
    }

    /// Backup numbers missing from `1..=max`: a broken rotation.
    pub(crate) fn numbering_gaps(&self) -> Vec<u32> {
        let max = self.backups.last().copied().unwrap_or(0);
        (1..=max).filter(|n| !self.backups.contains(n)).collect()
    }
}

/// `events.jsonl` → `("events", None)`, `events.3.jsonl` → `("events", Some(3))`.
fn split(name: &str) -> Option<(String, Option<u32>)> {
    let stem = name.strip_suffix(".jsonl")?;
    if stem.is_empty() {
        return None;
    }
    if let Some((base, n)) = stem.rsplit_once('.') {
        if let Ok(n) = n.parse::<u32>() {
            if !base.is_empty() {
                return Some((base.to_owned(), Some(n)));
            }
        }
    }
    Some((stem.to_owned(), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(split("events.jsonl"), Some(("events".into(), None)));
        assert_eq!(split("events.12.jsonl"), Some(("events".into(), Some(12))));
        assert_eq!(split("a.b.jsonl"), Some(("a.b".into(), None)));
        assert_eq!(split("events.json"), None);
        assert_eq!(split(".jsonl"), None);
    }
}
