//! Early validation across processes at the bridge: an imported item that
//! a local validator halts was still imported, and its verdict goes back;
//! so was one the local journal could not record.

use std::time::Duration;

use nerve::HandlerError;
use nerve::json;
use nerve::nats::{DeliverFrom, NatsBridge, NatsOptions};

use crate::support::NatsServer;
use crate::{bus, collect};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_a_handler_halts_is_counted_as_imported() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (worker, validator) = (bus(), bus());
    let opts = || NatsOptions::new().prefix("nerve.halt.");
    let out = NatsBridge::connect(&server.url(), &worker, opts().origin("worker"))
        .await
        .unwrap();
    let inn = NatsBridge::connect(&server.url(), &validator, opts().origin("validator"))
        .await
        .unwrap();
    out.export("specimen.*").unwrap();
    inn.import("specimen.*").await.unwrap();
    // Halts every item, as a validator does after a failed checkpoint.
    validator
        .subscribe("specimen.*", |_: &nerve::Event| {
            Err::<(), _>(HandlerError::halt("early validation failed"))
        })
        .unwrap();
    let mut seen = validator.stream("specimen.*").unwrap();
    for sequence in 1..=3 {
        worker
            .emit("specimen.failed", json!({"sequence": sequence}))
            .unwrap();
    }
    let got = collect(&mut seen, 3, LIMIT).await;
    assert_eq!(got.len(), 3);
    crate::eventually(LIMIT, || {
        inn.stats().imported + inn.stats().import_rejected == 3
    })
    .await;
    let stats = inn.stats();
    assert_eq!((stats.imported, stats.import_rejected), (3, 0), "{stats:?}");
    out.shutdown(LIMIT).await;
    inn.shutdown(LIMIT).await;
}

/// The same through a durable import: the item a handler halts was
/// delivered, so it is imported and acknowledged once, not refused and
/// delivered again (and halted again) every second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_import_a_handler_halts_is_acknowledged_once() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (worker, validator) = (bus(), bus());
    let out = NatsBridge::connect(&server.url(), &worker, NatsOptions::new().origin("worker"))
        .await
        .unwrap();
    out.export_durable("specimen.*", "SPECIMENS").await.unwrap();
    for sequence in 1..=3 {
        worker
            .emit("specimen.failed", json!({"sequence": sequence}))
            .unwrap();
    }
    assert!(out.flush(LIMIT).await);
    let halts = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = halts.clone();
    validator
        .subscribe("specimen.*", move |_: &nerve::Event| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err::<(), _>(HandlerError::halt("early validation failed"))
        })
        .unwrap();
    let inn = NatsBridge::connect(
        &server.url(),
        &validator,
        NatsOptions::new().origin("validator"),
    )
    .await
    .unwrap();
    inn.import_durable("SPECIMENS", "validator", DeliverFrom::All)
        .await
        .unwrap();
    // A refused item would be answered with a negative acknowledgement
    // and come back a second later: none is refused.
    crate::eventually(LIMIT, || inn.stats().acks_sent == 3).await;
    let stats = inn.stats();
    assert_eq!(
        (stats.imported, stats.import_rejected, stats.acks_sent),
        (3, 0, 3),
        "{stats:?}"
    );
    assert_eq!(halts.load(std::sync::atomic::Ordering::Relaxed), 3);
    out.shutdown(LIMIT).await;
    inn.shutdown(LIMIT).await;
}

/// An import whose local journal cannot record it (a full disk) reached
/// every local handler: imported, with the journal's failure counted by
/// the bus, not refused by the bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_the_local_journal_cannot_record_is_imported() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fs = nerve_journal::fs::FaultyFs::new();
    let journal = nerve_journal::Journal::builder(dir.path().join("events.jsonl"))
        .file_system(fs.clone())
        .build()
        .unwrap();
    fs.fail_always(nerve_journal::fs::Op::Write);
    let recorder = nerve::Bus::builder().journal(journal).build().unwrap();
    let worker = bus();
    let out = NatsBridge::connect(&server.url(), &worker, NatsOptions::new().origin("worker"))
        .await
        .unwrap();
    let inn = NatsBridge::connect(&server.url(), &recorder, NatsOptions::new().origin("rec"))
        .await
        .unwrap();
    out.export("extraction.*").unwrap();
    inn.import("extraction.*").await.unwrap();
    let mut seen = recorder.stream("extraction.*").unwrap();
    // Terminal: the recorder's emit of each returns `NotRecorded`.
    for run in 1..=3 {
        worker
            .emit("extraction.failed", json!({"run": run}))
            .unwrap();
    }
    assert_eq!(collect(&mut seen, 3, LIMIT).await.len(), 3);
    crate::eventually(LIMIT, || {
        inn.stats().imported + inn.stats().import_rejected == 3
    })
    .await;
    let stats = inn.stats();
    assert_eq!((stats.imported, stats.import_rejected), (3, 0), "{stats:?}");
    assert!(recorder.stats().events.journal_errors >= 3);
    out.shutdown(LIMIT).await;
    inn.shutdown(LIMIT).await;
}
