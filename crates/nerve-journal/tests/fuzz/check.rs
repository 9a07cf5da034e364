//! The journal reader's invariants on the bytes of one file, shared by the
//! fuzz floor in `cargo test` (`tests/fuzz/main.rs`) and the cargo-fuzz
//! target `journal_reader` (`fuzz/fuzz_targets/journal_reader.rs`, which
//! includes this file by path), so that both check exactly the same thing.

use std::path::Path;

use nerve_core::Event;
use nerve_journal::{JournalReader, MAX_LINE_BYTES, ReadError};

/// What the reader yielded for one line.
#[derive(Debug)]
pub(crate) enum Item {
    /// A record.
    Valid(Event),
    /// A complete line that is not a record.
    Bad,
    /// The last line, without its newline.
    Torn,
}

/// What reading one file gave.
#[derive(Debug, Default)]
pub(crate) struct Read {
    /// Lines that give an item: complete lines that are not blank (only
    /// ASCII whitespace), and a last line without its newline.
    pub(crate) lines_read: u64,
    /// Valid, bad and torn lines, as counted from what the reader yielded.
    pub(crate) valid: u64,
    pub(crate) bad: u64,
    pub(crate) torn: u64,
    /// Each item with its line number (from 1), in file order.
    pub(crate) items: Vec<(u64, Item)>,
}

/// A short, printable view of an input for failure messages.
pub(crate) fn show(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(300)];
    format!("{:?} ({} bytes)", String::from_utf8_lossy(cut), bytes.len())
}

/// Writes `bytes` as the journal file `path`, reads it back with a
/// [`JournalReader`], and checks, panicking with the input otherwise:
///
/// - no I/O error and no panic;
/// - `valid + bad + torn == lines read`, and each item comes from the next
///   line that should give one, at its line number: blank lines give none,
///   a last line without its newline is a torn tail with its byte count;
/// - a line longer than [`MAX_LINE_BYTES`] is a bad line.
pub(crate) fn check(path: &Path, bytes: &[u8]) -> Read {
    std::fs::write(path, bytes).expect("write the journal file");
    let reader = JournalReader::open(path).expect("open the journal");
    let mut read = Read::default();
    for item in reader {
        let got = match item {
            Ok(event) => {
                read.valid += 1;
                // A record's line is the line after the previous item's
                // at least; its exact number is checked below.
                (0, Item::Valid(event))
            }
            Err(ReadError::BadLine { line, .. }) => {
                read.bad += 1;
                (line, Item::Bad)
            }
            Err(ReadError::TornTail { line, bytes: n, .. }) => {
                read.torn += 1;
                let tail = bytes.rsplit(|&b| b == b'\n').next().unwrap_or_default();
                assert_eq!(n, tail.len() as u64, "torn tail's size on {}", show(bytes));
                (line, Item::Torn)
            }
            Err(e) => panic!("{e} on {}", show(bytes)),
        };
        read.items.push(got);
    }
    // The reference: which lines give an item, and of what kind when the
    // kind follows from the bytes alone.
    let mut expected = Vec::new();
    let mut pieces = bytes.split(|&b| b == b'\n').peekable();
    let mut number = 0u64;
    while let Some(piece) = pieces.next() {
        number += 1;
        let last = pieces.peek().is_none();
        if last {
            if !piece.is_empty() {
                expected.push((number, Some(false), true));
            }
        } else if !piece.trim_ascii().is_empty() {
            let too_long = piece.len() + 1 > MAX_LINE_BYTES;
            expected.push((number, too_long.then_some(false), false));
        }
    }
    read.lines_read = expected.len() as u64;
    assert_eq!(
        read.valid + read.bad + read.torn,
        read.lines_read,
        "valid + bad + torn != lines read on {}",
        show(bytes)
    );
    for ((line, item), (number, valid, torn)) in read.items.iter_mut().zip(&expected) {
        match item {
            Item::Valid(_) => {
                assert!(
                    !torn && *valid != Some(false),
                    "line {number} read as a record on {}",
                    show(bytes)
                );
                *line = *number;
            }
            Item::Bad => assert!(
                !torn && *line == *number,
                "bad line {line}, expected line {number} on {}",
                show(bytes)
            ),
            Item::Torn => assert!(
                *torn && *line == *number,
                "torn line {line}, expected line {number} on {}",
                show(bytes)
            ),
        }
    }
    read
}
