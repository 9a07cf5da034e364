//! Spare files: what a rotation makes its new active file from, so that the
//! writer thread never waits for the file system to allocate a file.
//!
//! On ext4, creating a file is the slowest step of a rotation, and it is
//! slowest under the churn rotation itself causes: the inode allocator skips
//! inodes freed in the last minutes, so each creation after many deletions
//! scans past them, and it does so holding the directory's lock. A spare is
//! an unnamed file (`O_TMPFILE`) made by the renumbering thread outside the
//! directory's lock; a rotation gives it the active name with one `linkat`,
//! which allocates nothing. Spares never hold a record, and an unnamed file
//! vanishes with the process, so a crash leaves nothing behind.
//!
//! Linux only (`O_TMPFILE`, `linkat` through `/proc/self/fd`), and only
//! where the file system supports it; elsewhere, or when making or linking
//! a spare fails, the writer creates the active file itself, as it does at
//! open. The system calls go through `rustix`.

use std::fs::File;
use std::io;
use std::path::Path;

/// Whether this platform can make spares at all.
const SUPPORTED: bool = cfg!(target_os = "linux");

/// An unnamed file in the journal's directory, ready to be linked in.
#[derive(Debug)]
pub(crate) struct Spare(File);

/// Up to `n` spares in `dir`: fewer (none where unsupported) if making one
/// fails, which is not an error (rotations then create their file).
pub(crate) fn make_up_to(dir: &Path, n: usize) -> Vec<Spare> {
    if !SUPPORTED {
        return Vec::new();
    }
    (0..n).map_while(|_| Spare::make(dir).ok()).collect()
}

#[cfg(target_os = "linux")]
impl Spare {
    /// Makes an unnamed, empty file in `dir`.
    pub(crate) fn make(dir: &Path) -> io::Result<Self> {
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::open(
            dir,
            OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )?;
        Ok(Self(File::from(fd)))
    }

    /// Gives the file the name `path` (which must not exist).
    pub(crate) fn link(self, path: &Path) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // `AT_EMPTY_PATH` on the descriptor itself would need a capability;
        // the descriptor's `/proc` link does not.
        let from = format!("/proc/self/fd/{}", self.0.as_raw_fd());
        rustix::fs::linkat(
            rustix::fs::CWD,
            from.as_str(),
            rustix::fs::CWD,
            path,
            rustix::fs::AtFlags::SYMLINK_FOLLOW,
        )?;
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
impl Spare {
    pub(crate) fn make(_dir: &Path) -> io::Result<Self> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no unnamed files here",
        ))
    }

    pub(crate) fn link(self, _path: &Path) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no unnamed files here",
        ))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_spare_is_unnamed_until_linked_and_then_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let Ok(spare) = Spare::make(dir.path()) else {
            // A file system without O_TMPFILE: rotations create files.
            return;
        };
        assert!(
            names(dir.path()).is_empty(),
            "nothing named before the link"
        );
        let path = dir.path().join("events.jsonl");
        spare.link(&path).unwrap();
        assert_eq!(names(dir.path()), ["events.jsonl"]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn linking_never_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let Ok(spare) = Spare::make(dir.path()) else {
            return;
        };
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "{\"a\":1}\n").unwrap();
        let err = spare.link(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
    }

    #[test]
    fn an_unlinked_spare_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        drop(Spare::make(dir.path()));
        assert!(names(dir.path()).is_empty());
    }
}
