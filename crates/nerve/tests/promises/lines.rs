//! Lines of several megabytes: the journal writes and reads back a record of
//! any size (one larger than `max_bytes` alone in its file); a damaged line
//! of any size is one bad line, named by its number with a message of
//! bounded length, and reading goes on after it.

use std::io::Write;

use nerve::journal::{JournalReader, ReadError};
use nerve::{Bus, Event, Journal, json};

const BIG: usize = 4 << 20;

#[test]
fn a_record_of_several_megabytes_is_written_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let journal = Journal::builder(&path).max_bytes(1 << 20).build().unwrap();
    let bus = Bus::builder().journal(journal).build().unwrap();
    bus.emit("blob.before", json!({})).unwrap();
    bus.emit("blob.stored", json!({ "blob": "b".repeat(BIG) }))
        .unwrap();
    bus.emit("blob.after", json!({})).unwrap();
    bus.shutdown_blocking();
    let reader = JournalReader::open(&path).unwrap();
    let files = reader.files().len();
    let events: Vec<Event> = reader.map(Result::unwrap).collect();
    let types: Vec<&str> = events.iter().map(Event::event_type).collect();
    assert_eq!(types, ["blob.before", "blob.stored", "blob.after"]);
    assert_eq!(events[1].data()["blob"].as_str().unwrap().len(), BIG);
    // The oversized record sits alone: one file before it, one after.
    assert_eq!(files, 3);
}

#[test]
fn a_damaged_line_of_several_megabytes_is_one_bad_line_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    // Two good lines, written by a journal.
    {
        let journal = Journal::builder(&path).build().unwrap();
        let bus = Bus::builder().journal(journal).build().unwrap();
        bus.emit("good.one", json!({})).unwrap();
        bus.emit("good.two", json!({})).unwrap();
        bus.shutdown_blocking();
    }
    let good = std::fs::read_to_string(&path).unwrap();
    let (one, two) = good.split_once('\n').unwrap();
    let huge_name = format!(
        r#"{{"event_id":"0190b6e0-8c4e-7a31-9f2d-3c5b1e7a9d40","event_type":"{}","timestamp":"2026-11-23T09:01:32.123456Z","seq":9,"data":{{}},"v":1}}"#,
        "a.".repeat(BIG / 2) + "b"
    );
    let mut file = std::fs::File::create(&path).unwrap();
    writeln!(file, "{one}").unwrap();
    writeln!(file, "{}", "x".repeat(BIG)).unwrap(); // not JSON
    writeln!(file, "\"{}\"", "y".repeat(BIG)).unwrap(); // not an object
    writeln!(file, "{huge_name}").unwrap(); // a name over 255 bytes
    write!(file, "{two}").unwrap(); // still read
    write!(file, "{}", "z".repeat(BIG)).unwrap(); // a long torn tail
    drop(file);

    let results: Vec<Result<Event, ReadError>> = JournalReader::open(&path).unwrap().collect();
    assert_eq!(results.len(), 6, "{results:?}");
    assert_eq!(results[0].as_ref().unwrap().event_type(), "good.one");
    for (i, r) in results[1..4].iter().enumerate() {
        match r {
            Err(e @ ReadError::BadLine { line, message, .. }) => {
                assert_eq!(*line, i as u64 + 2);
                assert!(
                    message.len() < 1_000,
                    "line {line}: {} bytes",
                    message.len()
                );
                assert!(e.to_string().len() < 2_000);
            }
            other => panic!("line {}: {other:?}", i + 2),
        }
    }
    assert_eq!(results[4].as_ref().unwrap().event_type(), "good.two");
    match &results[5] {
        Err(ReadError::TornTail { line, bytes, .. }) => {
            assert_eq!(*line, 6);
            assert_eq!(*bytes as usize, BIG);
        }
        other => panic!("{other:?}"),
    }
}

/// A line whose `trace_context` holds a malformed `traceparent` is a bad
/// line named by its field, like a malformed `event_id`; the lines around it
/// are read.
#[test]
fn a_malformed_traceparent_makes_a_bad_line_named_by_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let line = |seq: u64, traceparent: &str| {
        format!(
            r#"{{"event_id":"0190b6e0-8c4e-7a31-9f2d-3c5b1e7a9d4{seq}","event_type":"order.placed","timestamp":"2026-11-23T09:01:32.200000Z","seq":{seq},"trace_context":{{"traceparent":"{traceparent}"}},"data":{{}},"v":1}}"#
        )
    };
    let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let text = [
        line(1, good),
        line(2, "00-not-a-trace-context"),
        line(3, "00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        line(4, good),
    ]
    .join("\n")
        + "\n";
    std::fs::write(&path, text).unwrap();
    let results: Vec<Result<Event, ReadError>> = JournalReader::open(&path).unwrap().collect();
    let seqs: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(Event::seq))
        .collect();
    assert_eq!(seqs, [1, 4]);
    assert_eq!(
        results[0]
            .as_ref()
            .unwrap()
            .trace_context()
            .unwrap()
            .traceparent(),
        good
    );
    for (r, line) in results[1..3].iter().zip([2, 3]) {
        match r {
            Err(ReadError::BadLine {
                line: l, message, ..
            }) => {
                assert_eq!(*l, line);
                assert!(message.contains("traceparent"), "{message}");
            }
            other => panic!("line {line}: {other:?}"),
        }
    }
}
