//! Following the active file as it grows and rotates (`tail -F`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nerve_core::Event;

use crate::files::{Paths, last_boundary};
use crate::format;
use crate::reader::{FileId, Opened, ReadError, file_id, open_files};

/// How often a [`Follow`] at the end of the file looks for more (default).
const DEFAULT_POLL: Duration = Duration::from_millis(20);

/// A tail of a journal: yields each record appended to the active file, in
/// order, following the file when it is rotated, without losing or
/// repeating a line. Made by [`Journal::follow`](crate::Journal::follow) or
/// [`Follow::from_end`].
///
/// At the end of the file it polls (every 20 ms by default). A rotation is
/// noticed when the active path names a new file: the old one (now a pending
/// `events.p<g>.jsonl`, or already `events.1.jsonl`) is read to its end
/// first, then any newer rotated files, then the new active file from its
/// start. Files are followed by identity, so the renumbering that renames
/// them meanwhile changes nothing. The writer never writes to a renamed
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
    fn from_opened(f: Opened) -> Self {
        Self {
            path: f.path,
            id: f.id,
            reader: BufReader::new(f.file),
            partial: Vec::new(),
            line: 0,
        }
    }

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
    /// between the one being read and the new active file (pending ones
    /// included: they are newer than every backup).
    fn rotated(&mut self) -> Result<bool, ReadError> {
        let active = self.paths.active();
        match std::fs::metadata(active) {
            Ok(m) if file_id(&m) == self.current.id => return Ok(false),
            Ok(_) => {}
            // Between the rename and the new file's creation.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(ReadError::Io {
                    path: active.to_path_buf(),
                    source,
                });
            }
        }
        // Bytes written to the old file just before its rename are read
        // first: queued files only follow once it is at its end again.
        let files = open_files(&self.paths)?;
        let Some(at) = files.iter().position(|f| f.id == self.current.id) else {
            // Ours was deleted by retention before we finished it (so every
            // file left is newer): say so, and carry on with the oldest.
            let mut rest = files.into_iter().map(Source::from_opened);
            let Some(next) = rest.next() else {
                return Ok(false);
            };
            let lost = std::mem::replace(&mut self.current, next);
            self.queue.extend(rest);
            return Err(ReadError::Io {
                path: lost.path,
                source: io::Error::other("rotated away before it was read to the end"),
            });
        };
        let newer = files.len() - at - 1;
        self.queue
            .extend(files.into_iter().skip(at + 1).map(Source::from_opened));
        Ok(newer > 0)
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
