//! Reading a journal back: every file, oldest first, streaming.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use nerve_core::Event;
use nerve_core::query::HistoryQuery;

use crate::files::{Paths, RenameLock};
use crate::format;

/// Reading a journal found something other than a well-formed event.
/// Iteration continues after every error but [`ReadError::Io`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A file could not be opened or read.
    #[error("could not read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A complete line is not a journal record (reading continues).
    #[error("{path}:{line}: not a journal record: {message}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: u64,
        /// What is wrong with it.
        message: String,
    },
    /// The file ends in a line without its newline: the write of the last
    /// record was cut short (a crash, or a write in progress).
    #[error("{path}:{line}: torn last line ({bytes} bytes without a newline)")]
    TornTail {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: u64,
        /// The bytes of the torn line.
        bytes: u64,
    },
    /// A [`Follow`](crate::Follow) fell behind retention: the file it was
    /// reading was deleted, and records after what it read were gone with
    /// it or with the files after it. Following continues with the oldest
    /// file left.
    #[error("{}", missed_message(path, *from_seq, *to_seq))]
    Missed {
        /// The file that was being read when it was removed.
        path: PathBuf,
        /// The first `seq` missed, when known (one after the last read).
        from_seq: Option<u64>,
        /// The last `seq` missed, when known (one before the next read).
        to_seq: Option<u64>,
    },
    /// A [`Follow`](crate::Follow) found the file it follows cut or
    /// rewritten beneath whole records it had read: truncated by something
    /// other than the journal's writer (`> events.jsonl`, logrotate's
    /// `copytruncate`), or a failed write of several records cut back by
    /// the writer. Following reads the file again from its start, so
    /// records may repeat.
    #[error(
        "{path} was truncated or rewritten while being followed ({read} bytes had been read, it now holds {len}); reading it again from its start, so events may repeat"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// How many of its bytes had been read.
        read: u64,
        /// Its length when the cut was noticed.
        len: u64,
    },
}

fn missed_message(path: &Path, from: Option<u64>, to: Option<u64>) -> String {
    let what = match (from, to) {
        (Some(a), Some(b)) if b >= a => {
            let n = b - a + 1;
            let s = if n == 1 { "" } else { "s" };
            if a == b {
                format!("missed {n} event{s} (seq {a})")
            } else {
                format!("missed {n} event{s} (seq {a}..={b})")
            }
        }
        (Some(a), _) => format!("missed the events from seq {a}"),
        _ => "missed an unknown number of events".to_owned(),
    };
    format!(
        "fell behind retention: {} was removed while being read; {what}, continuing with the oldest file left",
        path.display()
    )
}

impl ReadError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::BadLine { path, .. }
            | Self::TornTail { path, .. }
            | Self::Missed { path, .. }
            | Self::Truncated { path, .. } => path,
        }
    }

    /// The line the error is about (from 1), for a bad line or a torn tail.
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::BadLine { line, .. } | Self::TornTail { line, .. } => Some(*line),
            Self::Io { .. } | Self::Missed { .. } | Self::Truncated { .. } => None,
        }
    }

    /// Whether this is a damaged line (a bad line or a torn tail) that
    /// reading skipped, rather than a file that could not be read.
    pub fn is_damaged_line(&self) -> bool {
        matches!(self, Self::BadLine { .. } | Self::TornTail { .. })
    }
}

/// What is wrong with a line that [`format::decode`] refused, in words a
/// person can act on: which field, with at most [`QUOTE`] characters of the
/// offending value quoted, and never the name of a Rust type. Runs only
/// for bad lines.
pub(crate) fn explain(line: &[u8], message: String) -> String {
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(e) => {
            return format!(
                "not UTF-8 text (invalid byte at column {})",
                e.valid_up_to() + 1
            );
        }
    };
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return format!("not JSON ({e})"),
    };
    let Some(obj) = value.as_object() else {
        return format!("not a JSON object but {}", quote(&value.to_string()));
    };
    match obj.get("event_type") {
        None => return "no `event_type` field".to_owned(),
        Some(serde_json::Value::String(name)) => {
            if let Err(e) = nerve_core::name::check_event_type(name) {
                return format!(
                    "field `event_type`: {} is not an event type ({})",
                    quote(name),
                    e.rule()
                );
            }
        }
        Some(other) => {
            return format!(
                "field `event_type`: {} is not a string",
                quote(&other.to_string())
            );
        }
    }
    match obj.get("timestamp") {
        None => return "no `timestamp` field".to_owned(),
        Some(t) => {
            if let Err(e) = serde_json::from_value::<nerve_core::Timestamp>(t.clone()) {
                let e = e.to_string();
                if let Some(at) = e.find(" is outside the years 1 to 9999") {
                    // A time, but not one a record can hold: say which.
                    return format!("field `timestamp`: {}{}", quote(&t.to_string()), &e[at..]);
                }
                return format!(
                    "field `timestamp`: {} is not a time (RFC 3339, or seconds since the epoch)",
                    quote(&t.to_string())
                );
            }
        }
    }
    for key in ["event_id", "causation_id"] {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(id)) if id.parse::<nerve_core::EventId>().is_ok() => {}
            Some(other) => {
                return format!("field `{key}`: {} is not a UUID", quote(&other.to_string()));
            }
        }
    }
    for key in ["seq", "lane_seq", "v"] {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) => {}
            Some(v) if v.is_u64() => {}
            Some(other) => {
                return format!(
                    "field `{key}`: {} is not a whole number",
                    quote(&other.to_string())
                );
            }
        }
    }
    for key in ["source", "correlation_id", "run_id", "lane"] {
        match obj.get(key) {
            None | Some(serde_json::Value::Null | serde_json::Value::String(_)) => {}
            Some(other) => {
                return format!(
                    "field `{key}`: {} is not a string",
                    quote(&other.to_string())
                );
            }
        }
    }
    scrub(&message)
}

/// How many characters of a value an error message quotes.
pub(crate) const QUOTE: usize = 64;

/// `text` in backquotes, cut to its first [`QUOTE`] characters.
pub(crate) fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE) {
        Some((cut, _)) => format!(
            "`{}`... ({} characters)",
            &text[..cut],
            text.chars().count()
        ),
        None => format!("`{text}`"),
    }
}

/// A decoder message without the internal names serde puts in it
/// (`expected struct LineIn`).
fn scrub(message: &str) -> String {
    let mut out = message.replace("struct LineIn", "a journal record");
    if out.chars().count() > 4 * QUOTE {
        let cut = out
            .char_indices()
            .nth(4 * QUOTE)
            .map_or(out.len(), |(i, _)| i);
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// A file's identity, to notice that a path now names another file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId(u64, u64);

#[cfg(unix)]
pub(crate) fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    FileId(meta.dev(), meta.ino())
}

#[cfg(not(unix))]
pub(crate) fn file_id(meta: &std::fs::Metadata) -> FileId {
    let created = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    FileId(created, 0)
}

pub(crate) use crate::format::MAX_LINE_BYTES;

/// The message of a [`ReadError::BadLine`] longer than [`MAX_LINE_BYTES`].
pub(crate) fn too_long(bytes: u64) -> String {
    format!(
        "a line of {bytes} bytes, longer than the {MAX_LINE_BYTES} a journal line may hold (skipped unread)"
    )
}

/// What [`read_line_capped`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Line {
    /// Bytes consumed, the newline included; 0 at the end of the input.
    pub(crate) bytes: u64,
    /// Whether the line ended with `\n` (rather than the end of the input).
    pub(crate) newline: bool,
    /// Whether the line is in the buffer; `false` when it was longer than
    /// the cap, and was consumed but not kept.
    pub(crate) kept: bool,
}

/// `read_until(b'\n')` that keeps at most `max` bytes in `buf`: a longer
/// line is consumed to its end but not kept (`buf` is left empty), so
/// memory stays bounded whatever the input.
pub(crate) fn read_line_capped(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    let start = buf.len();
    let mut bytes = 0u64;
    let mut kept = true;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(Line {
                bytes,
                newline: false,
                kept,
            });
        }
        let (take, newline) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if kept && buf.len() - start + take > max {
            kept = false;
            buf.truncate(start);
            buf.shrink_to(max.min(1024 * 1024));
        }
        if kept {
            buf.extend_from_slice(&available[..take]);
        }
        reader.consume(take);
        bytes += take as u64;
        if newline {
            return Ok(Line {
                bytes,
                newline,
                kept,
            });
        }
    }
}

/// Lines of one file, numbered.
pub(crate) struct Lines {
    pub(crate) path: PathBuf,
    reader: BufReader<File>,
    line: u64,
    buf: Vec<u8>,
}

impl Lines {
    pub(crate) fn new(path: PathBuf, file: File) -> Self {
        Self {
            path,
            reader: BufReader::with_capacity(64 * 1024, file),
            line: 0,
            buf: Vec::with_capacity(1024),
        }
    }

    /// The next record, bad line or torn tail; `None` at the end.
    fn next_record(&mut self) -> Option<Result<Event, ReadError>> {
        loop {
            self.buf.clear();
            match read_line_capped(&mut self.reader, &mut self.buf, MAX_LINE_BYTES) {
                Ok(Line { bytes: 0, .. }) => return None,
                Ok(Line {
                    bytes,
                    newline,
                    kept,
                }) => {
                    self.line += 1;
                    if !newline {
                        return Some(Err(ReadError::TornTail {
                            path: self.path.clone(),
                            line: self.line,
                            bytes,
                        }));
                    }
                    if !kept {
                        return Some(Err(ReadError::BadLine {
                            path: self.path.clone(),
                            line: self.line,
                            message: too_long(bytes),
                        }));
                    }
                    let n = self.buf.len();
                    let text = self.buf[..n - 1].trim_ascii();
                    if text.is_empty() {
                        continue;
                    }
                    return Some(format::decode(text).map_err(|message| ReadError::BadLine {
                        path: self.path.clone(),
                        line: self.line,
                        message: explain(text, message),
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Some(Err(ReadError::Io {
                        path: self.path.clone(),
                        source,
                    }));
                }
            }
        }
    }
}

/// Reads a journal (this crate's, or an aperion-event-bus log) from its
/// oldest backup to its active file, one line at a time.
///
/// The files are opened when the reader is made, as one consistent snapshot:
/// the backups, the rotated files still waiting for their number
/// (`events.p<g>.jsonl`, newer than `events.1.jsonl`), and the active file.
/// A rotation or renumbering at that moment cannot make it skip or repeat a
/// file (it waits for a renumbering pass in progress to finish); rotations
/// afterwards do not affect it. As an
/// [`Iterator`] it yields every event and every [`ReadError`], continuing
/// after bad lines; [`query`](Self::query) answers a [`HistoryQuery`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("events.jsonl");
/// # std::fs::write(&path, concat!(
/// #     r#"{"event_type":"user.login","payload":{"user":"alice"},"timestamp":1700000000.5,"#,
/// #     r#""event_id":"6f1c0b8e-3c1d-4c5e-9a0b-2b1d3c4e5f60","correlation_id":"req-1"}"#, "\n"))?;
/// use nerve::HistoryQuery;
/// use nerve::journal::JournalReader;
///
/// let logins = JournalReader::open(&path)?
///     .query(&HistoryQuery::new().pattern("user.*")?.limit(100))?;
/// assert_eq!(logins[0].data()["user"], "alice");
/// # Ok(()) }
/// ```
pub struct JournalReader {
    /// Oldest first.
    files: VecDeque<(PathBuf, File)>,
    current: Option<Lines>,
}

impl std::fmt::Debug for JournalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalReader")
            .field(
                "files",
                &self.files.iter().map(|f| &f.0).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl JournalReader {
    /// Opens the journal whose active file is `path` (which need not exist:
    /// a journal with only backups, or none, reads as what it has).
    ///
    /// # Errors
    ///
    /// [`ReadError::Io`] if a file cannot be opened or the directory listed.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ReadError> {
        let paths = Paths::new(path.as_ref());
        let files = open_files(&paths)?
            .into_iter()
            .map(|f| (f.path, f.file))
            .collect();
        Ok(Self {
            files,
            current: None,
        })
    }

    /// The file the last item came from (the one being read), if reading
    /// has started.
    pub fn current_file(&self) -> Option<&Path> {
        self.current.as_ref().map(|c| c.path.as_path())
    }

    /// The files this reader will read, oldest first.
    pub fn files(&self) -> Vec<&Path> {
        let mut all: Vec<&Path> = self.current.iter().map(|c| c.path.as_path()).collect();
        all.extend(self.files.iter().map(|f| f.0.as_path()));
        all
    }

    /// The events matching `query` (its conditions, limit and order),
    /// reading only as much as the answer needs: oldest first streams
    /// forward and stops at the limit; newest first reads the newest file
    /// first, keeping at most `limit` events in memory per file.
    ///
    /// Bad lines and torn tails are skipped and logged (iterate the reader,
    /// or use [`query_with`](Self::query_with), to see them).
    ///
    /// # Errors
    ///
    /// [`ReadError::Io`] if a file cannot be read.
    pub fn query(self, query: &HistoryQuery) -> Result<Vec<Event>, ReadError> {
        self.query_with(query, |e| {
            tracing::warn!(error = %e, "skipped a journal line");
        })
    }

    /// [`query`](Self::query), handing every line it skips (a bad line or a
    /// torn tail) to `skipped`, so that the caller can say what it did not
    /// read. Only the files the answer needs are read, so a newest-first
    /// query with a limit may not see damage in older files.
    ///
    /// # Errors
    ///
    /// [`ReadError::Io`] if a file cannot be read.
    pub fn query_with(
        mut self,
        query: &HistoryQuery,
        mut skipped: impl FnMut(ReadError),
    ) -> Result<Vec<Event>, ReadError> {
        let limit = query.get_limit().unwrap_or(usize::MAX);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        if query.is_oldest_first() {
            for item in self.by_ref() {
                if let Some(e) = keep(item, query, &mut skipped)? {
                    out.push(e);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            return Ok(out);
        }
        while let Some((path, file)) = self.files.pop_back() {
            let want = limit - out.len();
            let mut lines = Lines::new(path, file);
            let mut newest = VecDeque::new();
            while let Some(item) = lines.next_record() {
                if let Some(e) = keep(item, query, &mut skipped)? {
                    if newest.len() == want {
                        newest.pop_front();
                    }
                    newest.push_back(e);
                }
            }
            out.extend(newest.into_iter().rev());
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }
}

/// The event if it matches; bad lines go to `skipped`.
fn keep(
    item: Result<Event, ReadError>,
    query: &HistoryQuery,
    skipped: &mut impl FnMut(ReadError),
) -> Result<Option<Event>, ReadError> {
    match item {
        Ok(e) => Ok(query.matches(&e).then_some(e)),
        Err(e @ ReadError::Io { .. }) => Err(e),
        Err(e) => {
            skipped(e);
            Ok(None)
        }
    }
}

/// A file of the journal, opened.
pub(crate) struct Opened {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) id: FileId,
}

fn open_one(path: PathBuf) -> io::Result<Opened> {
    let file = File::open(&path)?;
    let id = file_id(&file.metadata()?);
    Ok(Opened { path, file, id })
}

fn names(path: &Path, id: FileId) -> bool {
    std::fs::metadata(path).is_ok_and(|m| file_id(&m) == id)
}

/// How many times a snapshot that raced with a rotation is retried before
/// the last one is taken as it is.
const ATTEMPTS: usize = 1000;

/// Opens every file of the journal as one consistent snapshot, oldest first:
/// backups from the highest number down, pending files by generation, the
/// active file last (if there is one).
///
/// The active file is opened first and defines the snapshot: everything
/// rotated before it, nothing after. Renumbering cannot run meanwhile (the
/// rename lock is held shared), so the only name that can change is the
/// active file's own, renamed to a pending name by a rotation: it is
/// recognised by its identity, and the files listed after it (newer) are
/// left out.
pub(crate) fn open_files(paths: &Paths) -> Result<Vec<Opened>, ReadError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReadError::Io { path, source }
    };
    let list = || paths.list().map_err(io(paths.dir()));
    let lock = RenameLock::open_existing(paths);
    let held = lock.shared();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let retry = attempt < ATTEMPTS;
        let active = match open_one(paths.active().to_path_buf()) {
            Ok(a) => Some(a),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(paths.active())(e)),
        };
        let mut listing = list()?;
        match &active {
            // Rotated since it was opened: list again, so that the listing
            // surely holds it under its pending name.
            Some(a) if !names(&a.path, a.id) => listing = list()?,
            Some(_) => {}
            // Between a rotation's rename and the new file's creation, or a
            // journal without an active file: take it only if nothing moved.
            None => {
                if retry && (paths.active().exists() || list()? != listing) {
                    std::thread::yield_now();
                    continue;
                }
            }
        }
        let mut files = Vec::with_capacity(listing.backups.len() + listing.pending.len() + 1);
        let mut vanished = false;
        for name in paths.oldest_first(&listing) {
            match open_one(name) {
                Ok(f) if active.as_ref().is_some_and(|a| a.id == f.id) => break,
                Ok(f) => files.push(f),
                // Renamed by a renumbering that did not wait for the lock (it
                // could not be taken here): only a retry can tell.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    vanished = true;
                    break;
                }
                Err(e) => {
                    return Err(ReadError::Io {
                        path: paths.dir().to_path_buf(),
                        source: e,
                    });
                }
            }
        }
        let moved = || !held.is_held() && files.iter().any(|f| !names(&f.path, f.id));
        if retry && (vanished || moved()) {
            std::thread::yield_now();
            continue;
        }
        files.extend(active);
        return Ok(files);
    }
}

impl Iterator for JournalReader {
    type Item = Result<Event, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(lines) = &mut self.current {
                if let Some(item) = lines.next_record() {
                    return Some(item);
                }
            }
            let (path, file) = self.files.pop_front()?;
            self.current = Some(Lines::new(path, file));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = r#"{"event_id":"0190b6e0-0000-7000-8000-000000000001","event_type":"a.one","timestamp":"2024-01-01T00:00:00.000001Z","seq":1,"data":1,"v":1}"#;
    const B: &str = r#"{"event_id":"0190b6e0-0000-7000-8000-000000000002","event_type":"b.two","timestamp":"2024-01-01T00:00:00.000002Z","seq":2,"data":2,"v":1}"#;
    const C: &str = r#"{"event_id":"0190b6e0-0000-7000-8000-000000000003","event_type":"a.three","timestamp":"2024-01-01T00:00:00.000003Z","seq":3,"data":3,"v":1}"#;

    fn seqs(events: &[Event]) -> Vec<u64> {
        events.iter().map(Event::seq).collect()
    }

    #[test]
    fn reads_across_files_with_bad_lines_and_queries_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        let paths = Paths::new(&p);
        std::fs::write(paths.backup(2), format!("{A}\n")).unwrap();
        std::fs::write(paths.backup(1), format!("{B}\nnot json\n\n")).unwrap();
        std::fs::write(&p, format!("{C}\n{{\"torn")).unwrap();

        let items: Vec<_> = JournalReader::open(&p).unwrap().collect();
        assert_eq!(items.len(), 5);
        assert!(matches!(&items[2], Err(ReadError::BadLine { line: 2, .. })));
        assert!(matches!(
            &items[4],
            Err(ReadError::TornTail {
                line: 2,
                bytes: 6,
                ..
            })
        ));

        let all = HistoryQuery::new();
        let q = |q: &HistoryQuery| seqs(&JournalReader::open(&p).unwrap().query(q).unwrap());
        assert_eq!(q(&all), [3, 2, 1]);
        assert_eq!(q(&all.clone().oldest_first()), [1, 2, 3]);
        assert_eq!(q(&all.clone().limit(2)), [3, 2]);
        assert_eq!(q(&all.clone().oldest_first().limit(2)), [1, 2]);
        assert_eq!(q(&HistoryQuery::new().pattern("a.*").unwrap()), [3, 1]);
        assert_eq!(q(&all.clone().limit(0)), Vec::<u64>::new());
    }

    #[test]
    fn a_line_longer_than_the_cap_is_consumed_but_not_kept() {
        let input = b"0123456789abcdef\nshort\n0123456789abcdef".as_slice();
        // A tiny buffer, so the long line arrives in several pieces.
        let mut reader = io::BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let read = |reader: &mut io::BufReader<&[u8]>, buf: &mut Vec<u8>| {
            buf.clear();
            read_line_capped(reader, buf, 8).unwrap()
        };
        let long = read(&mut reader, &mut buf);
        assert_eq!((long.bytes, long.newline, long.kept), (17, true, false));
        assert!(buf.is_empty());
        let short = read(&mut reader, &mut buf);
        assert_eq!((short.bytes, short.newline, short.kept), (6, true, true));
        assert_eq!(buf, b"short\n");
        let torn = read(&mut reader, &mut buf);
        assert_eq!((torn.bytes, torn.newline, torn.kept), (16, false, false));
        assert_eq!(read(&mut reader, &mut buf).bytes, 0);
        // Exactly the cap, newline included, is kept.
        let mut exact = io::BufReader::new(b"1234567\n".as_slice());
        let line = read(&mut exact, &mut buf);
        assert!(line.kept && line.newline);
        assert_eq!(buf, b"1234567\n");
    }

    #[test]
    fn a_line_longer_than_max_line_bytes_is_a_bad_line_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        let mut text = Vec::with_capacity(MAX_LINE_BYTES + 2 * A.len() + 8);
        text.extend_from_slice(A.as_bytes());
        text.push(b'\n');
        // A JSON string that would be a valid payload, only too long.
        text.extend_from_slice(b"{\"event_type\":\"a.b\",\"timestamp\":1,\"data\":\"");
        let start = text.len();
        text.resize(start + MAX_LINE_BYTES, b'x');
        text.extend_from_slice(b"\"}\n");
        text.extend_from_slice(B.as_bytes());
        text.push(b'\n');
        // And a torn tail longer than the cap.
        text.resize(text.len() + MAX_LINE_BYTES + 1, b' ');
        std::fs::write(&p, &text).unwrap();
        let items: Vec<_> = JournalReader::open(&p).unwrap().collect();
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].as_ref().unwrap().seq(), 1);
        let Err(ReadError::BadLine {
            line: 2, message, ..
        }) = &items[1]
        else {
            panic!("line 2 was read");
        };
        assert!(message.contains("longer than the 67108864"), "{message}");
        assert_eq!(items[2].as_ref().unwrap().seq(), 2);
        assert!(matches!(
            &items[3],
            Err(ReadError::TornTail { line: 4, bytes, .. }) if *bytes == MAX_LINE_BYTES as u64 + 1
        ));
    }

    #[test]
    fn a_missing_journal_reads_empty() {
        let dir = tempfile::tempdir().unwrap();
        let r = JournalReader::open(dir.path().join("none.jsonl")).unwrap();
        assert_eq!(r.count(), 0);
    }

    #[test]
    fn bad_lines_are_explained_by_field_without_internal_names() {
        let check = |line: &str, want: &str| {
            let message = format::decode(line.as_bytes()).unwrap_err();
            let got = explain(line.as_bytes(), message);
            assert!(got.contains(want), "{line}: {got}");
            assert!(!got.contains("LineIn"), "{got}");
        };
        check("1", "not a JSON object");
        check("[1,2]", "not a JSON object");
        check("{not json", "not JSON");
        check(r#"{"timestamp":"2024-01-01T00:00:00Z"}"#, "no `event_type`");
        check(
            r#"{"event_type":"a.b","timestamp":1764936000000}"#,
            "field `timestamp`: `1764936000000` is outside the years 1 to 9999 (milliseconds, not seconds?)",
        );
        check(
            r#"{"event_type":"a.b","timestamp":"9999-12-31T23:59:59-05:00"}"#,
            "field `timestamp`: `\"9999-12-31T23:59:59-05:00\"` is outside the years 1 to 9999",
        );
        check(
            r#"{"event_type":"a.b","timestamp":"yesterday"}"#,
            "field `timestamp`: `\"yesterday\"` is not a time",
        );
        check(
            r#"{"event_type":"a.b","timestamp":1,"seq":-1}"#,
            "field `seq`",
        );
        check(
            r#"{"event_type":"a.b","timestamp":1,"event_id":"x"}"#,
            "field `event_id`",
        );
        let long = "x y".repeat(1000);
        let line = format!(r#"{{"event_type":"{long}","timestamp":1}}"#);
        let message = format::decode(line.as_bytes()).unwrap_err();
        let got = explain(line.as_bytes(), message);
        assert!(got.contains("field `event_type`"), "{got}");
        assert!(got.len() < 300, "quotes at most 64 characters: {got}");
        let bytes = b"{\"event_type\":\"a.\xff\"}";
        let got = explain(bytes, String::new());
        assert!(got.contains("not UTF-8"), "{got}");
    }
}
