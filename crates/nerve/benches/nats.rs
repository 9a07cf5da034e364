//! The NATS bridge against `async-nats` itself, on the same messages, in the
//! same run, through a real `nats-server` the bench starts on 127.0.0.1
//! (Debian's package `nats-server`; `NERVE_NATS_SERVER` names another
//! binary).
//!
//! * **Throughput** (`core`): a batch of events emitted on bus A, exported
//!   by A's bridge, imported by B's bridge, read from a stream of bus B;
//!   against one `async-nats` client publishing the same bytes (the
//!   journal line of the event) with the same headers and another
//!   receiving them. Events per second from the first emit (publish) to the
//!   last receipt; the ratio is taken round by round.
//! * **Latency** (`core_latency`): one event at a time, the next emitted
//!   once the previous arrived; p50 and p99 of emit-to-receipt (publish to
//!   receipt) per round.
//!
//! Run by `cargo xtask bench nats`, which puts the rows in
//! `docs/benchmarks.md` ("NATS bridge").

#[path = "support/paired.rs"]
mod paired;

use std::cell::RefCell;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use nerve::nats::{NatsBridge, NatsOptions};
use nerve::{Bus, Event, EventStream, StreamOptions, json};
use paired::{Report, Rounds, Target, pick};
use tokio::runtime::Runtime;

const LIMIT: Duration = Duration::from_secs(60);

/// The comparator's subject: apart from the bridge's `order.>`, so neither
/// side receives the other's messages.
const RAW_SUBJECT: &str = "raw.order.placed";

/// A `nats-server` on a free loopback port, killed on drop.
struct Server {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let binary = std::env::var_os("NERVE_NATS_SERVER")
            .map(PathBuf::from)
            .or_else(|| {
                ["nats-server", "/usr/sbin/nats-server"]
                    .into_iter()
                    .map(PathBuf::from)
                    .find(|p| Command::new(p).arg("--version").output().is_ok())
            })
            .expect(
                "nats-server not found: install Debian's package `nats-server` \
                 (apt-get install -y nats-server)",
            );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let store = tempfile::tempdir().expect("a store directory");
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            child,
            port,
            _store: store,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The event users send: a small JSON object, with a correlation id.
fn order(i: u64) -> Event {
    Event::builder("order.placed")
        .data(json!({"order_id": i, "customer": "c-1042", "items": 3, "total": 99.5, "currency": "EUR"}))
        .correlation_id("checkout-7f3a")
        .source("shop")
        .build()
        .expect("a valid event")
}

/// The bridge's side: bus A exports `order.*`, bus B imports it.
struct Bridged {
    a: Bus,
    _b: Bus,
    exporter: NatsBridge,
    importer: NatsBridge,
    at_b: EventStream,
}

impl Bridged {
    async fn new(url: &str, capacity: usize) -> Self {
        let a = Bus::builder().history_capacity(0).build().unwrap();
        let b = Bus::builder().history_capacity(0).build().unwrap();
        let exporter = NatsBridge::connect(url, &a, NatsOptions::new().capacity(capacity))
            .await
            .unwrap();
        let importer = NatsBridge::connect(url, &b, NatsOptions::new())
            .await
            .unwrap();
        importer.import("order.*").await.unwrap();
        exporter.export("order.*").unwrap();
        let at_b = b
            .stream_with("order.*", StreamOptions::new().capacity(capacity))
            .unwrap();
        Self {
            a,
            _b: b,
            exporter,
            importer,
            at_b,
        }
    }

    /// Events per second through the bridge for `n` events.
    async fn throughput(&mut self, n: usize) -> f64 {
        // Built before the clock starts, as the raw side's message is.
        let events: Vec<Event> = (0..n as u64).map(order).collect();
        let start = Instant::now();
        for event in events {
            self.a.emit_event(event).unwrap();
        }
        self.receive(n).await;
        let rate = n as f64 / start.elapsed().as_secs_f64();
        self.check();
        rate
    }

    /// `n` emit-to-receipt latencies, one event at a time, in nanoseconds.
    async fn latencies(&mut self, n: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let event = order(i as u64);
            let start = Instant::now();
            self.a.emit_event(event).unwrap();
            self.receive(1).await;
            out.push(start.elapsed().as_nanos() as f64);
        }
        self.check();
        out
    }

    async fn receive(&mut self, n: usize) {
        for _ in 0..n {
            tokio::time::timeout(LIMIT, self.at_b.next())
                .await
                .expect("an event lost on the way")
                .expect("the stream ended");
        }
    }

    /// Nothing was dropped anywhere: a figure over lost events would lie.
    fn check(&self) {
        let (e, i) = (self.exporter.stats(), self.importer.stats());
        assert_eq!(
            (e.dropped, e.publish_errors, i.import_rejected),
            (0, 0, 0),
            "the bridge lost events: exporter {e:?} importer {i:?}"
        );
    }
}

/// The comparator: async-nats publishing the bridge's message (the same
/// body and headers) and subscribing to it.
struct Raw {
    publisher: async_nats::Client,
    subscriber: async_nats::Subscriber,
    _receiving: async_nats::Client,
    /// Copied into each message, as the bridge copies its encoded line.
    body: Vec<u8>,
    headers: async_nats::HeaderMap,
}

impl Raw {
    async fn new(url: &str) -> Self {
        let publisher = async_nats::connect(url).await.unwrap();
        let receiving = async_nats::connect(url).await.unwrap();
        let subscriber = receiving.subscribe(RAW_SUBJECT).await.unwrap();
        // The server takes a connection's commands in order: once a message
        // to a fresh inbox comes back, it has the subscription too.
        let inbox = receiving.new_inbox();
        let mut probe = receiving.subscribe(inbox.clone()).await.unwrap();
        receiving.publish(inbox, Vec::new().into()).await.unwrap();
        tokio::time::timeout(LIMIT, probe.next())
            .await
            .expect("the server answers")
            .expect("the probe");
        let event = order(0);
        let mut body = Vec::new();
        nerve::journal::line::encode(&event, &mut body);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.event_id().to_string().as_str());
        headers.insert("Nerve-Origin", "raw-publisher");
        headers.insert("Nerve-Correlation-Id", "checkout-7f3a");
        Self {
            publisher,
            subscriber,
            _receiving: receiving,
            body,
            headers,
        }
    }

    async fn publish(&self) {
        self.publisher
            .publish_with_headers(RAW_SUBJECT, self.headers.clone(), self.body.clone().into())
            .await
            .unwrap();
    }

    async fn throughput(&mut self, n: usize) -> f64 {
        let start = Instant::now();
        for _ in 0..n {
            self.publish().await;
        }
        self.publisher.flush().await.unwrap();
        self.receive(n).await;
        n as f64 / start.elapsed().as_secs_f64()
    }

    async fn latencies(&mut self, n: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            self.publish().await;
            self.publisher.flush().await.unwrap();
            self.receive(1).await;
            out.push(start.elapsed().as_nanos() as f64);
        }
        out
    }

    async fn receive(&mut self, n: usize) {
        for i in 0..n {
            tokio::time::timeout(LIMIT, self.subscriber.next())
                .await
                .unwrap_or_else(|_| panic!("only {i} of {n} messages arrived"))
                .expect("the subscription ended");
        }
    }
}

/// The `q`-quantile of `values` (sorted here).
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    if !paired::selected("core") {
        return;
    }
    let batch = pick(50_000, 5_000);
    let samples = pick(2_000, 200);
    let rounds = pick(10, 2);
    let server = Server::start();
    let rt = Runtime::new().unwrap();
    // async-nats's clients and subscribers need the runtime when dropped.
    let _in_runtime = rt.enter();
    let url = server.url();
    let mut bridged = rt.block_on(Bridged::new(&url, 2 * batch));
    let mut raw = rt.block_on(Raw::new(&url));
    let mut report = Report::new("nats");

    // Throughput.
    let (bridged_cell, raw_cell) = (RefCell::new(&mut bridged), RefCell::new(&mut raw));
    let mut bridge_rate = || rt.block_on(bridged_cell.borrow_mut().throughput(batch));
    let mut raw_rate = || rt.block_on(raw_cell.borrow_mut().throughput(batch));
    let r = Rounds::run(
        1,
        rounds,
        &mut [("bridge", &mut bridge_rate), ("async-nats", &mut raw_rate)],
    );
    let n = r.count();
    report.row(
        "core",
        "async-nats, same bytes and headers",
        (r.spread("async-nats").median, "events/s"),
        n,
        None,
        None,
    );
    report.row(
        "core",
        "bridge (emit → export → import → stream)",
        (r.spread("bridge").median, "events/s"),
        n,
        Some(("async-nats", r.ratio("bridge", "async-nats"))),
        Some(Target::AtLeast(0.7)),
    );

    // Latency, one event at a time: each variant gives its p50 per round,
    // and keeps its p99s aside.
    let (bridge_p99, raw_p99) = (RefCell::new(Vec::new()), RefCell::new(Vec::new()));
    let mut bridge_p50 = || {
        let mut l = rt.block_on(bridged_cell.borrow_mut().latencies(samples));
        bridge_p99.borrow_mut().push(quantile(&mut l, 0.99));
        quantile(&mut l, 0.5)
    };
    let mut raw_p50 = || {
        let mut l = rt.block_on(raw_cell.borrow_mut().latencies(samples));
        raw_p99.borrow_mut().push(quantile(&mut l, 0.99));
        quantile(&mut l, 0.5)
    };
    let r = Rounds::run(
        0,
        rounds,
        &mut [("bridge", &mut bridge_p50), ("async-nats", &mut raw_p50)],
    );
    let n = r.count();
    let p99 = |v: &RefCell<Vec<f64>>| paired::Spread::of(v.borrow().clone());
    let (b99, r99) = (p99(&bridge_p99), p99(&raw_p99));
    let p99_ratio = paired::Spread::of(
        bridge_p99
            .borrow()
            .iter()
            .zip(raw_p99.borrow().iter())
            .map(|(b, r)| b / r)
            .collect(),
    );
    report.row(
        "core_latency",
        "async-nats p50",
        (r.spread("async-nats").median, "ns"),
        n,
        None,
        None,
    );
    report.row(
        "core_latency",
        "bridge p50",
        (r.spread("bridge").median, "ns"),
        n,
        Some(("async-nats p50", r.ratio("bridge", "async-nats"))),
        None,
    );
    report.row(
        "core_latency",
        "async-nats p99",
        (r99.median, "ns"),
        n,
        None,
        None,
    );
    report.row(
        "core_latency",
        "bridge p99",
        (b99.median, "ns"),
        n,
        Some(("async-nats p99", p99_ratio)),
        None,
    );
    report.write();
    rt.block_on(async {
        bridged.exporter.shutdown(LIMIT).await;
        bridged.importer.shutdown(LIMIT).await;
    });
}
