//! Early validation across processes at the bridge: an imported item that
//! a local validator halts was still imported, and its verdict goes back.

use std::time::Duration;

use nerve::HandlerError;
use nerve::json;
use nerve::nats::{NatsBridge, NatsOptions};

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
