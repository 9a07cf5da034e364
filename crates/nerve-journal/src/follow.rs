//! Following the active file as it grows and rotates (`tail -F`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nerve_core::Event;

use crate::files::{Paths, last_boundary};
use crate::format;
use crate::reader::{
    FileId, MAX_LINE_BYTES, Opened, ReadError, explain, file_id, open_files, read_line_capped,
    too_long,
};

/// How often a [`Follow`] at the end of the file looks for more (default).
const DEFAULT_POLL: Duration = Duration::from_millis(20);

/// How many of the last bytes read a [`Follow`] checks are still in the
/// file before it reads on from where it stopped at the end: a whole
/// record as users write them, so its event id is among them (records of
/// one shape end alike).
const FINGERPRINT: usize = 4096;

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
/// miss lines; it is reported as a [`ReadError::Missed`] naming the lost
/// file and the `seq` numbers missed (from the last record read to the
/// first one read after it), and following continues with the oldest file
/// left.
///
/// As an [`Iterator`] it blocks until the next record; use
/// [`next_timeout`](Self::next_timeout) to wait a bounded time.
pub struct Follow {
    paths: Paths,
    current: Source,
    /// Rotated files still to read after `current`, oldest first.
    queue: VecDeque<Source>,
    poll: Duration,
    /// The `seq` of the last record read (0 if none, or the journal has none).
    last_seq: u64,
    /// A file removed by retention before it was read to its end, reported
    /// with the first record read after it.
    lost: Option<PathBuf>,
    /// A record held back while the loss before it is reported.
    held: Option<Event>,
}

struct Source {
    path: PathBuf,
    id: FileId,
    reader: BufReader<File>,
    partial: Vec<u8>,
    /// The bytes so far of a line longer than [`MAX_LINE_BYTES`], being
    /// skipped without being kept.
    skipping: Option<u64>,
    /// Lines read (counted from where reading began; see `uncounted`).
    line: u64,
    /// Where reading began, when that was not the file's start and the
    /// lines before it are not counted yet: counted once a line number is
    /// needed (a bad line), not when following starts (a file of gigabytes
    /// would take seconds).
    uncounted: Option<u64>,
    /// The last bytes (at most [`FINGERPRINT`]) of the whole lines read,
    /// ending where `partial` begins.
    last_bytes: Vec<u8>,
    /// Reading reached the end of the file: before reading on, check that
    /// what was read is still there.
    at_end: bool,
}

/// What a check at the end of a followed file found.
enum Cut {
    /// What was read is still there.
    None,
    /// The line in progress was cut off (its bytes); reading goes on from
    /// where it began.
    TornLine(u64),
    /// The file was cut or rewritten beneath whole lines read (the bytes
    /// read, the file's length); reading starts again from its start.
    Rewritten(u64, u64),
}

/// A whole line of a followed file.
enum Piece {
    /// The line, without its newline.
    Line(Vec<u8>),
    /// A line longer than [`MAX_LINE_BYTES`] (its length, newline
    /// included), skipped unread.
    TooLong(u64),
}

impl Source {
    fn from_opened(f: Opened) -> Self {
        Self {
            path: f.path,
            id: f.id,
            reader: BufReader::new(f.file),
            partial: Vec::new(),
            skipping: None,
            line: 0,
            uncounted: None,
            last_bytes: Vec::new(),
            at_end: false,
        }
    }

    fn open(path: &Path, from_end: bool) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let id = file_id(&file.metadata()?);
        let mut last_bytes = Vec::new();
        let mut uncounted = None;
        if from_end {
            // Start after the last whole record; a record being written is
            // read once it is complete.
            let len = file.metadata()?.len();
            let at = last_boundary(&mut file, len)?;
            uncounted = (at > 0).then_some(at);
            let before = at.min(FINGERPRINT as u64);
            file.seek(SeekFrom::Start(at - before))?;
            (&mut file).take(before).read_to_end(&mut last_bytes)?;
            file.seek(SeekFrom::Start(at))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            id,
            reader: BufReader::new(file),
            partial: Vec::new(),
            skipping: None,
            line: 0,
            uncounted,
            last_bytes,
            at_end: false,
        })
    }

    /// The number in the file of the last line read (from 1), counting the
    /// lines before where reading began the first time it is asked.
    fn line_number(&mut self) -> u64 {
        if let Some(at) = self.uncounted.take() {
            // On the file itself, its offset put back: the buffer stays valid.
            let file = self.reader.get_mut();
            let counted = file.stream_position().and_then(|back| {
                file.seek(SeekFrom::Start(0))?;
                let n = count_lines(file, at);
                file.seek(SeekFrom::Start(back))?;
                n
            });
            // On an error the number stays relative: nothing better is known.
            if let Ok(n) = counted {
                self.line += n;
            }
        }
        self.line
    }

    /// Whether the `expected` bytes end at offset `end` of the file. Reads
    /// through the buffer (empty at the end of the file), leaving the
    /// position at `end` when they do.
    fn holds(&mut self, expected: &[u8], end: u64) -> io::Result<bool> {
        let Some(start) = end.checked_sub(expected.len() as u64) else {
            return Ok(false);
        };
        self.reader.seek(SeekFrom::Start(start))?;
        let mut found = vec![0; expected.len()];
        match self.reader.read_exact(&mut found) {
            Ok(()) => Ok(found == expected),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// At the end of the file, before reading on: checks that the bytes
    /// read are still there (a writer reopening after a crash cuts a torn
    /// last line; someone may truncate the file), and if not, moves back to
    /// where reading can go on.
    fn check_cut(&mut self) -> io::Result<Cut> {
        let len = self.reader.get_ref().metadata()?.len();
        let pos = self.reader.stream_position()?;
        if self.skipping.is_none() {
            let partial = &self.partial[self.partial.len().saturating_sub(FINGERPRINT)..];
            let wanted = FINGERPRINT - partial.len();
            let last = &self.last_bytes[self.last_bytes.len().saturating_sub(wanted)..];
            let expected = [last, partial].concat();
            if len >= pos && self.holds(&expected, pos)? {
                // Nothing new yet: checked again at the next poll.
                self.at_end = len == pos;
                return Ok(Cut::None);
            }
            self.at_end = false;
            let start = pos - self.partial.len() as u64;
            if !self.partial.is_empty() && len >= start {
                let last = self.last_bytes.clone();
                if self.holds(&last, start)? {
                    let torn = self.partial.len() as u64;
                    self.partial.clear();
                    self.reader.seek(SeekFrom::Start(start))?;
                    return Ok(Cut::TornLine(torn));
                }
            }
        } else if len >= pos {
            self.at_end = len == pos;
            return Ok(Cut::None);
        } else {
            self.at_end = false;
        }
        self.reader.seek(SeekFrom::Start(0))?;
        self.partial.clear();
        self.skipping = None;
        self.line = 0;
        self.uncounted = None;
        self.last_bytes.clear();
        Ok(Cut::Rewritten(pos, len))
    }

    /// The next whole line, if one is there now. A line in progress is
    /// kept across calls up to [`MAX_LINE_BYTES`]; past that it is skipped
    /// to its end without being kept.
    fn next_line(&mut self) -> io::Result<Option<Piece>> {
        let start = self.partial.len();
        let max = match self.skipping {
            Some(_) => 0,
            None => MAX_LINE_BYTES.saturating_sub(start),
        };
        let got = read_line_capped(&mut self.reader, &mut self.partial, max)?;
        if !got.kept || self.skipping.is_some() {
            self.partial = Vec::new();
            self.last_bytes.clear();
            let bytes = self.skipping.unwrap_or(start as u64) + got.bytes;
            if got.newline {
                self.line += 1;
                self.skipping = None;
                return Ok(Some(Piece::TooLong(bytes)));
            }
            self.skipping = Some(bytes);
            return Ok(None);
        }
        if got.newline {
            self.line += 1;
            let from = self.partial.len().saturating_sub(FINGERPRINT);
            self.last_bytes.clear();
            self.last_bytes.extend_from_slice(&self.partial[from..]);
            self.partial.pop();
            return Ok(Some(Piece::Line(std::mem::take(&mut self.partial))));
        }
        self.at_end = true;
        Ok(None)
    }
}

/// The newlines in the next `len` bytes of `file`.
fn count_lines(file: &mut File, len: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    let mut lines = 0;
    while left > 0 {
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        file.read_exact(&mut buf[..n])?;
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        left -= n as u64;
    }
    Ok(lines)
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
            last_seq: 0,
            lost: None,
            held: None,
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

    /// A record if one is available now, switching files on rotation; a
    /// loss to retention is reported before the first record after it.
    fn try_next(&mut self) -> Result<Option<Result<Event, ReadError>>, ReadError> {
        if let Some(e) = self.held.take() {
            return Ok(Some(Ok(e)));
        }
        let item = self.try_read()?;
        if let Some(Ok(e)) = &item {
            if let Some(path) = self.lost.take() {
                let known = self.last_seq > 0 && e.seq() > 0;
                if known && e.seq() == self.last_seq + 1 {
                    // Removed only after it was read to its end: nothing missed.
                    self.last_seq = e.seq();
                    return Ok(item);
                }
                let (from_seq, to_seq) = if known {
                    (Some(self.last_seq + 1), e.seq().checked_sub(1))
                } else {
                    (None, None)
                };
                self.last_seq = e.seq();
                self.held = item.and_then(Result::ok);
                return Ok(Some(Err(ReadError::Missed {
                    path,
                    from_seq,
                    to_seq,
                })));
            }
            self.last_seq = e.seq();
        }
        Ok(item)
    }

    /// The next line as a record, if one is available now.
    fn try_read(&mut self) -> Result<Option<Result<Event, ReadError>>, ReadError> {
        loop {
            if self.current.at_end {
                let cut = self.current.check_cut().map_err(|source| ReadError::Io {
                    path: self.current.path.clone(),
                    source,
                })?;
                match cut {
                    Cut::None => {}
                    Cut::TornLine(bytes) => {
                        return Ok(Some(Err(ReadError::TornTail {
                            path: self.current.path.clone(),
                            line: self.current.line_number() + 1,
                            bytes,
                        })));
                    }
                    Cut::Rewritten(read, len) => {
                        return Ok(Some(Err(ReadError::Truncated {
                            path: self.current.path.clone(),
                            read,
                            len,
                        })));
                    }
                }
            }
            let line = self.current.next_line().map_err(|source| ReadError::Io {
                path: self.current.path.clone(),
                source,
            })?;
            if let Some(Piece::TooLong(bytes)) = line {
                return Ok(Some(Err(ReadError::BadLine {
                    path: self.current.path.clone(),
                    line: self.current.line_number(),
                    message: too_long(bytes),
                })));
            }
            if let Some(Piece::Line(line)) = line {
                let text = line.trim_ascii();
                if text.is_empty() {
                    continue;
                }
                return Ok(Some(format::decode(text).map_err(|message| {
                    ReadError::BadLine {
                        path: self.current.path.clone(),
                        line: self.current.line_number(),
                        message: explain(text, message),
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
            // file left is newer): carry on with the oldest, and say what was
            // missed once the next record shows where reading resumed.
            let mut rest = files.into_iter().map(Source::from_opened);
            let Some(next) = rest.next() else {
                return Ok(false);
            };
            let lost = std::mem::replace(&mut self.current, next);
            self.queue.extend(rest);
            self.lost.get_or_insert(lost.path);
            return Ok(true);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64) -> String {
        format!(
            "{{\"event_id\":\"0190b6e0-0000-7000-8000-{seq:012}\",\"event_type\":\"a.b\",\"timestamp\":\"2024-01-01T00:00:00Z\",\"seq\":{seq},\"data\":null,\"v\":1}}\n"
        )
    }

    fn lines(seqs: std::ops::RangeInclusive<u64>) -> String {
        seqs.map(line).collect()
    }

    fn next(f: &mut Follow) -> Result<u64, String> {
        match f.next_timeout(Duration::from_secs(10)) {
            Some(Ok(e)) => Ok(e.seq()),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("nothing came".to_owned()),
        }
    }

    #[test]
    fn falling_behind_retention_says_what_was_missed_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("events.jsonl");
        let paths = Paths::new(&active);
        std::fs::write(&active, lines(1..=2)).unwrap();
        let mut f = Follow::from_start(&active).unwrap();
        assert_eq!(next(&mut f), Ok(1));
        // Retention outruns the tail: its file and the next ones are gone;
        // what is left starts at seq 6.
        std::fs::remove_file(&active).unwrap();
        std::fs::write(paths.backup(1), lines(6..=7)).unwrap();
        std::fs::write(&active, lines(8..=8)).unwrap();
        // The open file is still read to its end first.
        assert_eq!(next(&mut f), Ok(2));
        let missed = next(&mut f).unwrap_err();
        assert!(missed.contains("missed 3 events (seq 3..=5)"), "{missed}");
        assert_eq!(next(&mut f), Ok(6));
        assert_eq!(next(&mut f), Ok(7));
        assert_eq!(next(&mut f), Ok(8));
    }

    #[test]
    fn a_file_removed_after_it_was_read_misses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("events.jsonl");
        let paths = Paths::new(&active);
        std::fs::write(&active, lines(1..=2)).unwrap();
        let mut f = Follow::from_start(&active).unwrap();
        assert_eq!(next(&mut f), Ok(1));
        assert_eq!(next(&mut f), Ok(2));
        std::fs::remove_file(&active).unwrap();
        std::fs::write(paths.backup(1), lines(3..=3)).unwrap();
        std::fs::write(&active, lines(4..=4)).unwrap();
        assert_eq!(next(&mut f), Ok(3));
        assert_eq!(next(&mut f), Ok(4));
    }

    /// A tail from the end names a bad line by its number in the file, as
    /// `nerve verify` does (it said 1 for the first line after its start).
    #[test]
    fn a_tail_from_the_end_names_a_bad_line_by_its_number_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("events.jsonl");
        std::fs::write(&active, lines(1..=13)).unwrap();
        let mut f = Follow::from_end(&active).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&active)
            .unwrap();
        std::io::Write::write_all(&mut file, b"garbage\n").unwrap();
        let bad = next(&mut f).unwrap_err();
        assert!(
            bad.contains("events.jsonl:14: not a journal record"),
            "{bad}"
        );
        // Counted once, when first needed; reading goes on from there.
        std::io::Write::write_all(&mut file, (line(14) + "again\n").as_bytes()).unwrap();
        assert_eq!(next(&mut f), Ok(14));
        let bad = next(&mut f).unwrap_err();
        assert!(
            bad.contains("events.jsonl:16: not a journal record"),
            "{bad}"
        );
    }

    fn nothing_yet(f: &mut Follow) -> bool {
        f.next_timeout(Duration::from_millis(1)).is_none()
    }

    /// A writer reopening after a crash cuts the torn last line and
    /// appends: the tail, which had read the torn bytes, says so and reads
    /// the new records whole, even when they are longer than what was cut.
    #[test]
    fn a_torn_line_cut_beneath_the_tail_is_reported_and_what_follows_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("events.jsonl");
        // The crashed run's last record, cut short: not the next run's.
        let torn = &line(99)[..60];
        std::fs::write(&active, lines(1..=2) + torn).unwrap();
        let mut f = Follow::from_start(&active).unwrap();
        assert_eq!(next(&mut f), Ok(1));
        assert_eq!(next(&mut f), Ok(2));
        assert!(nothing_yet(&mut f));
        // The cut and the next records, all before the tail looks again.
        let kept = lines(1..=2).len() as u64;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&active)
            .unwrap();
        file.set_len(kept).unwrap();
        drop(file);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&active)
            .unwrap();
        std::io::Write::write_all(&mut file, lines(3..=4).as_bytes()).unwrap();
        let cut = next(&mut f).unwrap_err();
        assert!(
            cut.ends_with(":3: torn last line (60 bytes without a newline)"),
            "{cut}"
        );
        assert_eq!(next(&mut f), Ok(3));
        assert_eq!(next(&mut f), Ok(4));
        // The same when the cut is seen before anything new is written.
        std::io::Write::write_all(&mut file, &line(98).as_bytes()[..55]).unwrap();
        assert!(nothing_yet(&mut f));
        let kept = lines(1..=4).len() as u64;
        file.set_len(kept).unwrap();
        assert!(
            next(&mut f)
                .unwrap_err()
                .contains("torn last line (55 bytes")
        );
        assert!(nothing_yet(&mut f));
        std::io::Write::write_all(&mut file, lines(5..=5).as_bytes()).unwrap();
        assert_eq!(next(&mut f), Ok(5));
    }

    /// `> events.jsonl` (or logrotate's `copytruncate`) beneath the tail:
    /// reported, and the file read again from its start, whether the tail
    /// sees it shorter or already longer again.
    #[test]
    fn a_file_truncated_beneath_the_tail_is_reported_and_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("events.jsonl");
        std::fs::write(&active, lines(1..=3)).unwrap();
        let mut f = Follow::from_end(&active).unwrap();
        assert!(nothing_yet(&mut f));
        std::fs::write(&active, lines(10..=10)).unwrap();
        let cut = next(&mut f).unwrap_err();
        let read = lines(1..=3).len();
        let len = lines(10..=10).len();
        assert!(
            cut.contains(&format!(
                "was truncated or rewritten while being followed ({read} bytes had been read, it now holds {len})"
            )),
            "{cut}"
        );
        assert_eq!(next(&mut f), Ok(10));
        assert!(nothing_yet(&mut f));
        // Rewritten longer than what was read before the tail looked.
        std::fs::write(&active, lines(20..=25)).unwrap();
        assert!(next(&mut f).unwrap_err().contains("truncated or rewritten"));
        for seq in 20..=25 {
            assert_eq!(next(&mut f), Ok(seq));
        }
        // Appends after a check are read as usual, with no report.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&active)
            .unwrap();
        std::io::Write::write_all(&mut file, lines(26..=27).as_bytes()).unwrap();
        assert_eq!(next(&mut f), Ok(26));
        assert_eq!(next(&mut f), Ok(27));
    }

    /// What happens to a followed file, in any order: records appended,
    /// a record begun (a crash mid-write) then completed or cut back by the
    /// next writer, the file emptied (after the tail read it), the tail
    /// polling in between.
    #[derive(Debug, Clone)]
    enum Step {
        Append(u8),
        Begin(u8),
        Complete,
        CutBack,
        Empty,
        Poll,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            (1u8..4).prop_map(Step::Append),
            (1u8..100).prop_map(Step::Begin),
            Just(Step::Complete),
            Just(Step::CutBack),
            Just(Step::Empty),
            Just(Step::Poll),
            Just(Step::Poll),
        ]
    }

    /// Everything the tail yields now: records' `seq`s, and how many torn
    /// lines and truncations it reported. Any other error fails.
    fn drain(f: &mut Follow, seqs: &mut Vec<u64>, torn: &mut usize, cut: &mut usize) {
        while let Some(item) = f.next_timeout(Duration::ZERO) {
            match item {
                Ok(e) => seqs.push(e.seq()),
                Err(ReadError::TornTail { .. }) => *torn += 1,
                Err(ReadError::Truncated { .. }) => *cut += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// The tail yields every record that became whole in the file,
        /// once, in order, and never a damaged line; it reports each
        /// emptying of a file that held records, and at most one torn line
        /// per cut-back.
        #[test]
        fn a_tail_yields_every_whole_record_whatever_is_done_to_its_file(
            steps in proptest::collection::vec(step(), 1..40)
        ) {
            use std::io::Write;
            let dir = tempfile::tempdir().unwrap();
            let active = dir.path().join("events.jsonl");
            std::fs::write(&active, "").unwrap();
            let mut file = std::fs::OpenOptions::new().append(true).open(&active).unwrap();
            let mut f = Follow::from_start(&active).unwrap();
            let (mut next_seq, mut whole) = (1u64, 0usize);
            // The record begun and not finished: its seq, line and bytes written.
            let mut begun: Option<(u64, String, usize)> = None;
            let (mut want, mut cut_backs, mut emptied) = (Vec::new(), 0, 0);
            // A file holding only a torn record: emptying it cuts that back.
            let mut torn_emptied = 0;
            let (mut got, mut torn, mut cut) = (Vec::new(), 0, 0);
            for step in steps {
                match step {
                    Step::Append(n) => {
                        if let Some((_, _, written)) = begun.take() {
                            // The next writer cuts the torn record first.
                            let len = file.metadata().unwrap().len();
                            file.set_len(len - written as u64).unwrap();
                            cut_backs += 1;
                        }
                        for _ in 0..n {
                            file.write_all(line(next_seq).as_bytes()).unwrap();
                            want.push(next_seq);
                            next_seq += 1;
                            whole += 1;
                        }
                    }
                    Step::Begin(percent) if begun.is_none() => {
                        let seq = next_seq;
                        next_seq += 1;
                        let text = line(seq);
                        let written = (text.len() * usize::from(percent) / 100).clamp(1, text.len() - 1);
                        file.write_all(&text.as_bytes()[..written]).unwrap();
                        begun = Some((seq, text, written));
                    }
                    Step::Complete => {
                        if let Some((seq, text, written)) = begun.take() {
                            file.write_all(&text.as_bytes()[written..]).unwrap();
                            want.push(seq);
                            whole += 1;
                        }
                    }
                    Step::CutBack => {
                        if let Some((_, _, written)) = begun.take() {
                            let len = file.metadata().unwrap().len();
                            file.set_len(len - written as u64).unwrap();
                            cut_backs += 1;
                        }
                    }
                    Step::Empty => {
                        drain(&mut f, &mut got, &mut torn, &mut cut);
                        if whole > 0 {
                            emptied += 1;
                        } else if begun.is_some() {
                            torn_emptied += 1;
                        }
                        file.set_len(0).unwrap();
                        begun = None;
                        whole = 0;
                    }
                    Step::Poll | Step::Begin(_) => drain(&mut f, &mut got, &mut torn, &mut cut),
                }
            }
            drain(&mut f, &mut got, &mut torn, &mut cut);
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert!(torn <= cut_backs + torn_emptied, "{} torn, {} cut backs", torn, cut_backs);
            proptest::prop_assert_eq!(cut, emptied);
        }
    }

    #[test]
    fn a_line_longer_than_max_line_bytes_is_skipped_across_polls() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("events.jsonl");
        std::fs::write(&active, lines(1..=1)).unwrap();
        let mut f = Follow::from_start(&active).unwrap();
        assert_eq!(next(&mut f), Ok(1));
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&active)
            .unwrap();
        // The line in progress passes the cap before it is complete.
        file.write_all(&vec![b'x'; MAX_LINE_BYTES]).unwrap();
        assert!(f.next_timeout(Duration::from_millis(1)).is_none());
        file.write_all(b"xx").unwrap();
        assert!(f.next_timeout(Duration::from_millis(1)).is_none());
        assert!(f.current.partial.capacity() <= MAX_LINE_BYTES);
        file.write_all(format!("\n{}", line(2)).as_bytes()).unwrap();
        let bad = next(&mut f).unwrap_err();
        assert!(
            bad.contains(":2: not a journal record: a line of 67108867 bytes"),
            "{bad}"
        );
        assert_eq!(next(&mut f), Ok(2));
    }
}
