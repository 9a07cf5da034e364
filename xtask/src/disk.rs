//! How much room a `ci` run takes and how much is left.
//!
//! A `ci` run builds the workspace several ways (tests, every feature alone,
//! loom, the soak), and on a small disk the step that runs out fails with
//! cargo's `No space left on device`, in the middle of whatever it was
//! compiling. `ci` says before it starts whether the disk has the room a
//! run is known to take, and after every step what the target directory
//! weighs and what is free, so a run that fills its disk shows where the
//! space went.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::path::Path;

/// What a `ci` run from a fresh clone leaves in its target directory, in
/// bytes, with room to spare: 6.6 GB when last measured
/// (`docs/benchmarks.md`, "Disk a CI run takes").
pub(crate) const CI_NEEDS: u64 = 8 * GB;

/// A gigabyte, as `df -H` counts it.
const GB: u64 = 1_000_000_000;

/// What a directory weighs and what its disk has left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Bytes in the directory's files, allocated on disk.
    pub(crate) used: u64,
    /// Bytes an unprivileged writer may still take on its disk, when the
    /// system says.
    pub(crate) free: Option<u64>,
}

impl Usage {
    /// The usage of `dir`; a directory that does not exist weighs nothing.
    pub(crate) fn of(dir: &Path) -> Self {
        let free = fs4::available_space(existing_ancestor(dir)).ok();
        Self {
            used: weight(dir),
            free,
        }
    }
}

impl fmt::Display for Usage {
    /// `target/ 5.2 GB, 61.0 GB free`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "target/ {}", Bytes(self.used))?;
        match self.free {
            Some(free) => write!(f, ", {} free", Bytes(free)),
            None => f.write_str(", free space unknown"),
        }
    }
}

/// A warning when `free` bytes are fewer than a run is known to need on
/// top of what `used` already holds; `None` when there is room or the
/// free space is unknown.
pub(crate) fn shortfall(usage: Usage) -> Option<String> {
    let free = usage.free?;
    let still_needed = CI_NEEDS.saturating_sub(usage.used);
    (free < still_needed).then(|| {
        format!(
            "only {} free for the target directory, and a ci run from a fresh clone \
             takes about {}; a step that runs out fails with `No space left on device`",
            Bytes(free),
            Bytes(CI_NEEDS)
        )
    })
}

/// The nearest of `path` and its ancestors that exists, so the free space
/// of a target directory not made yet is that of the disk it will be on.
fn existing_ancestor(path: &Path) -> &Path {
    path.ancestors()
        .find(|ancestor| ancestor.exists())
        .unwrap_or(path)
}

/// The bytes allocated to the files under `path`, not following symbolic
/// links, each file once however many hard links it has (cargo links
/// `target/debug/nerve` to its copy in `deps/`), as `du` counts.
/// Unreadable entries count as nothing: this is a report, not a check. By
/// hand rather than with `walkdir`: a dozen lines, where the crate would
/// add a dependency to xtask for one sum.
fn weight(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    weigh(path, &mut seen)
}

/// [`weight`]'s walk; `seen` holds the files with several links met so far.
fn weigh(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        let Ok(entries) = fs::read_dir(path) else {
            return 0;
        };
        entries
            .flatten()
            .map(|entry| weigh(&entry.path(), seen))
            .sum()
    } else if first_link(&meta, seen) {
        allocated(&meta)
    } else {
        0
    }
}

/// Whether this is the first of a file's hard links met in the walk.
#[cfg(unix)]
fn first_link(meta: &fs::Metadata, seen: &mut HashSet<(u64, u64)>) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.nlink() < 2 || seen.insert((meta.dev(), meta.ino()))
}

/// Whether this is the first of a file's hard links met in the walk:
/// always, where links are not told apart.
#[cfg(not(unix))]
fn first_link(_meta: &fs::Metadata, _seen: &mut HashSet<(u64, u64)>) -> bool {
    true
}

/// Bytes on disk: blocks where the system counts them, else the length.
#[cfg(unix)]
fn allocated(meta: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks() * 512
}

/// Bytes on disk: blocks where the system counts them, else the length.
#[cfg(not(unix))]
fn allocated(meta: &fs::Metadata) -> u64 {
    meta.len()
}

/// A byte count the way `df -H` shows it: `812 MB`, `5.2 GB`.
struct Bytes(u64);

impl fmt::Display for Bytes {
    /// Megabytes below a gigabyte, else gigabytes with one decimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < GB {
            write!(f, "{} MB", self.0 / 1_000_000)
        } else {
            // Precision is a report's: f64 holds any disk's size to 1 MB.
            #[allow(clippy::cast_precision_loss)]
            let gb = self.0 as f64 / GB as f64;
            write!(f, "{gb:.1} GB")
        }
    }
}

/// Unit tests for the usage report.
#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes read as `df -H` writes them.
    #[test]
    fn bytes_read_like_df() {
        assert_eq!(Bytes(0).to_string(), "0 MB");
        assert_eq!(Bytes(812_400_000).to_string(), "812 MB");
        assert_eq!(Bytes(5_240_000_000).to_string(), "5.2 GB");
    }

    /// A directory weighs at least what its files hold, a missing one
    /// nothing, and its free space is that of the disk it is on.
    #[test]
    fn weighs_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("deps")).unwrap();
        fs::write(dir.path().join("deps/a"), vec![1u8; 100_000]).unwrap();
        fs::write(dir.path().join("b"), vec![1u8; 50_000]).unwrap();
        let usage = Usage::of(dir.path());
        assert!(usage.used >= 150_000, "{usage:?}");
        assert!(usage.free.is_some_and(|free| free > 0), "{usage:?}");

        // A second link to a file adds nothing, as with `du`.
        fs::hard_link(dir.path().join("deps/a"), dir.path().join("a")).unwrap();
        assert_eq!(Usage::of(dir.path()).used, usage.used);

        let missing = Usage::of(&dir.path().join("not/made/yet"));
        assert_eq!(missing.used, 0);
        assert!(missing.free.is_some(), "{missing:?}");
    }

    /// The warning comes when the free space is short of what a run still
    /// needs, counting what the target directory already holds.
    #[test]
    fn warns_only_when_short() {
        let fresh = |free| Usage {
            used: 0,
            free: Some(free),
        };
        let warning = shortfall(fresh(CI_NEEDS / 2)).expect("short");
        assert!(warning.contains("No space left on device"), "{warning}");
        assert_eq!(shortfall(fresh(CI_NEEDS)), None);
        let built = Usage {
            used: CI_NEEDS - GB,
            free: Some(2 * GB),
        };
        assert_eq!(shortfall(built), None);
        assert_eq!(
            shortfall(Usage {
                used: 0,
                free: None
            }),
            None
        );
    }
}
