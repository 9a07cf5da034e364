//! The file operations the writer performs, behind a seam so that tests can
//! make any of them fail. Not a stable API.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// The file system as the journal's writer uses it. [`StdFs`] is the real
/// one; [`FaultyFs`] fails on command.
pub trait JournalFs: Send + Sync + 'static {
    /// Opens `path` for appending, creating it if missing.
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn JournalFile>>;
    /// Renames `from` to `to`, replacing `to` (the writer's rotation).
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Renames a rotated file to its number, off the writer's thread (the
    /// background renumbering). [`rename`](Self::rename) unless overridden.
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn renumber(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.rename(from, to)
    }
    /// Removes the file at `path`.
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Syncs the directory `dir`, making renames and creations durable.
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates `dir` and its parents where missing: the writer makes the
    /// journal's directory again when it was removed while in use.
    /// `std::fs::create_dir_all` unless overridden.
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
}

/// A file open for appending.
#[allow(
    clippy::len_without_is_empty,
    reason = "a file length, not a collection"
)]
pub trait JournalFile: Send {
    /// Appends all of `buf`. On error, part of it may have been written.
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Hands buffered bytes to the OS.
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn flush(&mut self) -> io::Result<()>;
    /// Makes the written bytes durable (`fdatasync`).
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes.
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// The file's current length.
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn len(&self) -> io::Result<u64>;
    /// Asks the OS to start writing `len` bytes from `offset` to the disk
    /// now, without waiting for it: a hint that makes the next
    /// [`sync`](Self::sync) shorter. Nothing is promised by it, so it has no
    /// error; does nothing unless overridden.
    fn write_behind(&mut self, offset: u64, len: u64) {
        let _ = (offset, len);
    }
    /// Whether the file was removed while open, alone or with its
    /// directory: no directory links to it any more, so what was written
    /// to it goes when it is closed. `false` unless overridden.
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn is_removed(&self) -> io::Result<bool> {
        Ok(false)
    }
}

/// The real file system, through `std::fs`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

impl JournalFs for StdFs {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn JournalFile>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Box::new(StdFile(file)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            File::open(dir)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            let _ = dir;
            Ok(())
        }
    }
}

struct StdFile(File);

impl JournalFile for StdFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn write_behind(&mut self, offset: u64, len: u64) {
        // Linux starts writeback (without waiting) of the dirty pages of the
        // range on `POSIX_FADV_DONTNEED`, then drops only the clean ones.
        #[cfg(target_os = "linux")]
        if let Some(len) = std::num::NonZeroU64::new(len) {
            let _ = rustix::fs::fadvise(&self.0, offset, Some(len), rustix::fs::Advice::DontNeed);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (offset, len);
    }
    fn is_removed(&self) -> io::Result<bool> {
        is_unlinked(&self.0)
    }
}

/// Whether an open file was removed: Unix keeps it while it is open, with
/// no link left; elsewhere an open file cannot be removed.
///
/// # Errors
///
/// The I/O error of reading its metadata.
pub(crate) fn is_unlinked(file: &File) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Ok(file.metadata()?.nlink() == 0)
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(false)
    }
}

/// An operation [`FaultyFs`] can be told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Op {
    /// Opening the active file.
    Open,
    /// Appending; a failing write first writes half of its buffer.
    Write,
    /// Flushing.
    Flush,
    /// Syncing a file.
    Sync,
    /// Renaming the active file (rotation, on the writer thread).
    Rename,
    /// Renaming a rotated file to its number (the background renumbering).
    Renumber,
    /// Removing (retention, `clear`).
    Remove,
    /// Truncating back to a record boundary.
    Truncate,
}

const OPS: usize = 8;

/// The real file system, except that the operations it is told to fail fail
/// with an I/O error (`EIO`-like `Other`). Clones share their faults.
#[derive(Debug, Clone, Default)]
pub struct FaultyFs {
    /// Per operation: how many more calls fail (`u32::MAX`: until cleared).
    faults: Arc<[AtomicU32; OPS]>,
}

impl FaultyFs {
    /// A file system with no faults yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `times` calls of `op` fail.
    pub fn fail(&self, op: Op, times: u32) {
        self.faults[op as usize].store(times, Ordering::SeqCst);
    }

    /// Makes every call of `op` fail until [`heal`](Self::heal).
    pub fn fail_always(&self, op: Op) {
        self.fail(op, u32::MAX);
    }

    /// Clears every fault.
    pub fn heal(&self) {
        for f in self.faults.iter() {
            f.store(0, Ordering::SeqCst);
        }
    }

    fn check(&self, op: Op) -> io::Result<()> {
        let slot = &self.faults[op as usize];
        let failed = slot
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                0 => None,
                u32::MAX => Some(u32::MAX),
                n => Some(n - 1),
            })
            .is_ok();
        if failed {
            Err(io::Error::other(format!("injected {op:?} failure")))
        } else {
            Ok(())
        }
    }
}

impl JournalFs for FaultyFs {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn JournalFile>> {
        self.check(Op::Open)?;
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Box::new(FaultyFile {
            file: StdFile(file),
            fs: self.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(Op::Rename)?;
        StdFs.rename(from, to)
    }
    fn renumber(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(Op::Renumber)?;
        StdFs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.check(Op::Remove)?;
        StdFs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(Op::Sync)?;
        StdFs.sync_dir(dir)
    }
}

struct FaultyFile {
    file: StdFile,
    fs: FaultyFs,
}

impl JournalFile for FaultyFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Err(e) = self.fs.check(Op::Write) {
            // A torn write: half the bytes land before the error.
            self.file.write_all(&buf[..buf.len() / 2])?;
            return Err(e);
        }
        self.file.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.fs.check(Op::Flush)?;
        self.file.flush()
    }
    fn sync(&mut self) -> io::Result<()> {
        self.fs.check(Op::Sync)?;
        self.file.sync()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.fs.check(Op::Truncate)?;
        self.file.truncate(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn write_behind(&mut self, offset: u64, len: u64) {
        self.file.write_behind(offset, len);
    }
    fn is_removed(&self) -> io::Result<bool> {
        self.file.is_removed()
    }
}
