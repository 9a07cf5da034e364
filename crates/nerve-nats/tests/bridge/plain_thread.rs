//! A program whose emitting code is plain threads: the bridge is connected
//! inside a runtime it owns, `export` is called outside it.

use std::time::Duration;

use nerve::json;
use nerve::nats::{NatsBridge, NatsOptions};

use crate::support::NatsServer;
use crate::{bus, collect};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn export_called_outside_a_runtime_runs_on_the_connect_runtime() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = (bus(), bus());
    let opts = || NatsOptions::new().prefix("nerve.plain.");
    let out = rt
        .block_on(NatsBridge::connect(&server.url(), &a, opts()))
        .unwrap();
    let inn = rt
        .block_on(NatsBridge::connect(&server.url(), &b, opts()))
        .unwrap();
    // Not inside `block_on`: no runtime in this thread's context.
    out.export("job.*").unwrap();
    rt.block_on(inn.import("job.*")).unwrap();
    let mut seen = b.stream("job.*").unwrap();
    a.emit("job.done", json!({"n": 1})).unwrap();
    let got = rt.block_on(collect(&mut seen, 1, LIMIT));
    assert_eq!(got[0].data()["n"], 1);
    rt.block_on(out.shutdown(LIMIT));
    rt.block_on(inn.shutdown(LIMIT));
}
