//! Following the active file as it grows and rotates (`tail -F`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nerve_core::Event;

use crate::files::{Paths, last_boundary};
use crate::format;
use crate::reader::{FileId, ReadError, file_id};

/// How often a [`Follow`] at the end of the file looks for more (default).
const DEFAULT_POLL: Duration = Duration::from_millis(20);

/// A tail of a journal: yields each record appended to the active file, in
/// order, following the file when it is rotated, without losing or
/// repeating a line. Made by [`Journal::follow`](crate::Journal::follow) or
/// [`Follow::from_end`].
///
/// At the end of the file it polls (every 20 ms by default). A rotation is
/// noticed when the active path names a new file: the old one (now
/// `events.1.jsonl`) is read to its end first, then any newer backups, then
/// the new active file from its start. The writer never writes to a renamed
/// file, so nothing can appear behind the tail. Retention faster than the
/// tail reads (`max_files` rotations between two polls) is the one way to
/// miss lines; it is reported as a [`ReadError::Io`] naming the lost file.
///
/// As an [`Iterator`] it blocks until the next record; use
/// [`next_timeout`](Self::next_timeout) to wait a bounded time.
pub struct Follow {
    paths: Paths,
    current: Source,
    /// Rotated files still to read after `current`, oldest first.
    queue: VecDeque<Source>,
    poll: Duration,
}

struct Source {
    path: PathBuf,
    id: FileId,
    reader: BufReader<File>,
    partial: Vec<u8>,
    line: u64,
}

impl Source {
    fn open(path: &Path, from_end: bool) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let id = file_id(&file.metadata()?);
        if from_end {
            // Start after the last whole record; a record being written is
            // read once it is complete.
            let len = file.metadata()?.len();
            let at = last_boundary(&mut file, len)?;
            file.seek(SeekFrom::Start(at))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            id,
            reader: BufReader::new(file),
            partial: Vec::new(),
            line: 0,
        })
    }

    /// The next whole line, if one is there now.
    fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            match self.reader.read_until(b'\n', &mut self.partial) {
                Ok(_) if self.partial.last() == Some(&b'\n') => {
                    self.line += 1;
                    self.partial.pop();
                    return Ok(Some(std::mem::take(&mut self.partial)));
                }
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl std::fmt::Debug for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follow")
            .field("path", &self.current.path)
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl Follow {
    /// Follows the journal whose active file is `path` from its current end.
    ///
    /// # Errors
    ///
    /// [`ReadError::Io`] if the active file cannot be opened.
    pub fn from_end(path: impl AsRef<Path>) -> Result<Self, ReadError> {
        Self::open(path.as_ref(), true)
    }

    /// Follows the journal's active file from its start.
    ///
    /// # Errors
    ///
    /// [`ReadError::Io`] if the active file cannot be opened.
    pub fn from_start(path: impl AsRef<Path>) -> Result<Self, ReadError> {
        Self::open(path.as_ref(), false)
    }

    fn open(path: &Path, from_end: bool) -> Result<Self, ReadError> {
        let current = Source::open(path, from_end).map_err(|source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            paths: Paths::new(path),
            current,
            queue: VecDeque::new(),
            poll: DEFAULT_POLL,
        })
    }

    /// Polls every `interval` at the end of the file (default 20 ms).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll = interval;
        self
    }

    /// The next record, waiting at most `timeout` for one; `None` if none
    /// came.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<Event, ReadError>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            match self.try_next() {
                Ok(Some(item)) => return Some(item),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            let now = Instant::now();
            let wait = match deadline {
                Some(d) if now >= d => return None,
                Some(d) => self.poll.min(d - now),
                None => self.poll,
            };
            std::thread::sleep(wait);
        }
    }

    /// A record if one is available now, switching files on rotation.
    fn try_next(&mut self) -> Result<Option<Result<Event, ReadError>>, ReadError> {
        loop {
            let line = self.current.next_line().map_err(|source| ReadError::Io {
                path: self.current.path.clone(),
                source,
            })?;
            if let Some(line) = line {
                let text = line.trim_ascii();
                if text.is_empty() {
                    continue;
                }
                return Ok(Some(format::decode(text).map_err(|message| {
                    ReadError::BadLine {
                        path: self.current.path.clone(),
                        line: self.current.line,
                        message,
                    }
                })));
            }
            if let Some(next) = self.queue.pop_front() {
                self.current = next;
                continue;
            }
            if !self.rotated()? {
                return Ok(None);
            }
        }
    }

    /// Whether the active path names a new file; if so, queues the files
    /// between the one being read and the new active file.
    fn rotated(&mut self) -> Result<bool, ReadError> {
        let active = self.paths.active();
        // Rotation renames backups one by one, so a scan racing with it can
        // see a file twice or not at all: it is retried until every path
        // still names what was opened (or left to the next poll).
        for _ in 0..100 {
            let next = match Source::open(active, false) {
                Ok(s) => s,
                // Between the rename and the new file's creation.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(source) => {
                    return Err(ReadError::Io {
                        path: active.to_path_buf(),
                        source,
                    });
                }
            };
            if next.id == self.current.id {
                return Ok(false);
            }
            // The files rotated between the one being read and the new
            // active file. Bytes written to the old file just before its
            // rename are read first: queued files only follow once it is at
            // its end again.
            let (newer, found) = self.scan_backups()?;
            let still =
                |path: &Path, id: FileId| std::fs::metadata(path).is_ok_and(|m| file_id(&m) == id);
            let consistent = still(active, next.id)
                && newer.iter().all(|s| still(&s.path, s.id))
                && found.as_ref().is_none_or(|p| still(p, self.current.id));
            if !consistent {
                std::thread::yield_now();
                continue;
            }
            if found.is_none() {
                // Ours was deleted by retention before we finished it: say
                // so, and carry on with the active file.
                let lost = std::mem::replace(&mut self.current, next);
                return Err(ReadError::Io {
                    path: lost.path,
                    source: io::Error::other("rotated away before it was read to the end"),
                });
            }
            self.queue.extend(newer.into_iter().rev());
            self.queue.push_back(next);
            return Ok(true);
        }
        Ok(false)
    }

    /// The backups newer than the file being read (newest first), and the
    /// path where that file was found.
    fn scan_backups(&self) -> Result<(Vec<Source>, Option<PathBuf>), ReadError> {
        let numbers = self
            .paths
            .backup_numbers()
            .map_err(|source| ReadError::Io {
                path: self.paths.dir().to_path_buf(),
                source,
            })?;
        let mut newer = Vec::new();
        for k in numbers {
            let path = self.paths.backup(k);
            let Ok(source) = Source::open(&path, false) else {
                continue;
            };
            if source.id == self.current.id {
                return Ok((newer, Some(path)));
            }
            newer.push(source);
        }
        Ok((newer, None))
    }
}

impl Iterator for Follow {
    type Item = Result<Event, ReadError>;

    /// Blocks until the next record.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.next_timeout(Duration::from_secs(3600)) {
                return Some(item);
            }
        }
    }
}
