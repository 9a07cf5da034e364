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
//! * **JetStream throughput** (`jetstream`): the same batch through
//!   `export_durable` on bus A (each message acknowledged by the stream, at
//!   most [`WINDOW`] awaiting their acknowledgement) and `import_durable`
//!   on bus B (a durable pull consumer, each message acknowledged after
//!   its event was emitted into B), read from a stream of bus B; against
//!   `async-nats`'s JetStream context publishing the same bytes and
//!   headers (a fresh `Nats-Msg-Id` each, as each event has its own id, so
//!   the stream stores every one) with the same number of acknowledgements
//!   outstanding, all awaited, and a durable pull consumer of the same
//!   configuration reading and acknowledging them in another task. Both
//!   streams have the bridge's configuration (file storage, one replica);
//!   each is purged before each round, so rounds are alike. Events per
//!   second from the first emit (publish) to the last receipt.
//! * **JetStream latency** (`jetstream_latency`): one event at a time, as
//!   `core_latency`, through the durable path; the raw side publishes,
//!   and stops the clock when its consumer receives the message (while the
//!   publish acknowledgement is awaited alongside).
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

use std::collections::VecDeque;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use nerve::nats::{DeliverFrom, NatsBridge, NatsOptions};
use nerve::{Bus, Event, EventId, EventStream, StreamOptions, json};
use paired::{Report, Rounds, Spread, Target, pick};
use tokio::runtime::Runtime;

const LIMIT: Duration = Duration::from_secs(60);

/// The comparator's subject: apart from the bridge's `order.>`, so neither
/// side receives the other's messages.
const RAW_SUBJECT: &str = "raw.order.placed";

/// The subject prefix of the JetStream bridges: their subjects
/// (`js.order.>`) are apart from the core bridges' and the comparators'.
const JS_PREFIX: &str = "js.";

/// The durable export's stream and the durable import's consumer.
const JS_STREAM: &str = "BENCH_ORDERS";
const JS_CONSUMER: &str = "bench-importer";

/// The JetStream comparator's stream, consumer and subject.
const RAW_JS_STREAM: &str = "BENCH_RAW";
const RAW_JS_CONSUMER: &str = "bench-raw";
const RAW_JS_SUBJECT: &str = "rawjs.order.placed";

/// Publishes awaiting their acknowledgement at once, on both sides (the
/// bridge's default `max_in_flight`, set explicitly).
const WINDOW: usize = 256;

/// Messages delivered and not yet acknowledged, on both sides (the default
/// of a durable import).
const MAX_ACK_PENDING: i64 = 1_000;

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
        receive(&mut self.at_b, n).await;
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

/// Reads `n` events from `stream`.
async fn receive(stream: &mut EventStream, n: usize) {
    for i in 0..n {
        tokio::time::timeout(LIMIT, stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {i} of {n} events arrived"))
            .expect("the stream ended");
    }
}

/// Empties `stream` (before a round: every round starts from an empty
/// stream).
async fn purge(stream: &stream::Stream) {
    stream.purge().await.expect("the stream is purged");
}

/// Polls `done` until it holds (between rounds, not timed).
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The durable path: bus A exports `order.*` into a JetStream stream
/// (`export_durable`), bus B imports it through a durable pull consumer
/// (`import_durable`).
struct Durable {
    a: Bus,
    _b: Bus,
    exporter: NatsBridge,
    importer: NatsBridge,
    at_b: EventStream,
    /// The export's stream, to purge it between rounds.
    stream: stream::Stream,
    _admin: async_nats::Client,
    /// Events emitted so far (all rounds).
    sent: u64,
}

impl Durable {
    async fn new(url: &str, capacity: usize) -> Self {
        let a = Bus::builder().history_capacity(0).build().unwrap();
        let b = Bus::builder().history_capacity(0).build().unwrap();
        let exporter = NatsBridge::connect(
            url,
            &a,
            NatsOptions::new()
                .prefix(JS_PREFIX)
                .capacity(capacity)
                .max_in_flight(WINDOW),
        )
        .await
        .unwrap();
        let importer = NatsBridge::connect(url, &b, NatsOptions::new().prefix(JS_PREFIX))
            .await
            .unwrap();
        exporter.export_durable("order.*", JS_STREAM).await.unwrap();
        importer
            .import_durable(JS_STREAM, JS_CONSUMER, DeliverFrom::New)
            .await
            .unwrap();
        let at_b = b
            .stream_with("order.*", StreamOptions::new().capacity(capacity))
            .unwrap();
        let admin = async_nats::connect(url).await.unwrap();
        let stream = jetstream::new(admin.clone())
            .get_stream(JS_STREAM)
            .await
            .unwrap();
        Self {
            a,
            _b: b,
            exporter,
            importer,
            at_b,
            stream,
            _admin: admin,
            sent: 0,
        }
    }

    /// Events per second through the durable path for `n` events.
    async fn throughput(&mut self, n: usize) -> f64 {
        purge(&self.stream).await;
        let start = Instant::now();
        for i in 0..n {
            self.a.emit_event(order(i as u64)).unwrap();
        }
        receive(&mut self.at_b, n).await;
        let rate = n as f64 / start.elapsed().as_secs_f64();
        self.sent += n as u64;
        self.settle().await;
        rate
    }

    /// `n` emit-to-receipt latencies, one event at a time, in nanoseconds.
    async fn latencies(&mut self, n: usize) -> Vec<f64> {
        purge(&self.stream).await;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let start = Instant::now();
            self.a.emit_event(order(i as u64)).unwrap();
            receive(&mut self.at_b, 1).await;
            out.push(start.elapsed().as_nanos() as f64);
        }
        self.sent += n as u64;
        self.settle().await;
        out
    }

    /// Waits until the stream acknowledged every publish and the importer
    /// every delivery, so that no round's work spills into the next; checks
    /// that nothing was lost or repeated.
    async fn settle(&self) {
        let sent = self.sent;
        until("the export's acknowledgements", async || {
            self.exporter.stats().acked >= sent
        })
        .await;
        until("the import's acknowledgements", async || {
            self.importer
                .consumer_pending(JS_STREAM, JS_CONSUMER)
                .await
                .unwrap()
                .is_caught_up()
        })
        .await;
        let (e, i) = (self.exporter.stats(), self.importer.stats());
        assert_eq!(
            (e.dropped, e.publish_errors, e.nacked, e.ack_failed),
            (0, 0, 0, 0),
            "the durable export lost or retried events: {e:?}"
        );
        assert_eq!(
            (i.import_rejected, i.redelivered, i.duplicates_dropped),
            (0, 0, 0),
            "the durable import lost or repeated events: {i:?}"
        );
    }
}

/// The JetStream comparator: async-nats's JetStream context publishing the
/// bridge's message (the same body and headers, a fresh `Nats-Msg-Id`
/// each) into a stream configured as the bridge's, and a durable pull
/// consumer configured as the bridge's import reading and acknowledging it.
struct RawJs {
    js: jetstream::Context,
    stream: stream::Stream,
    consumer: consumer::PullConsumer,
    /// Taken by the receiving task during a throughput round.
    messages: Option<consumer::pull::Stream>,
    _receiving: async_nats::Client,
    body: Vec<u8>,
    /// The bridge's headers but the message id, set per message.
    headers: async_nats::HeaderMap,
}

impl RawJs {
    /// `like` is the bridge's stream: this one takes its configuration.
    async fn new(url: &str, like: &stream::Stream) -> Self {
        let publisher = async_nats::connect(url).await.unwrap();
        let receiving = async_nats::connect(url).await.unwrap();
        let js = jetstream::new(publisher);
        let config = stream::Config {
            name: RAW_JS_STREAM.to_owned(),
            subjects: vec![RAW_JS_SUBJECT.to_owned()],
            ..like.cached_info().config.clone()
        };
        let stream = js.create_stream(config).await.unwrap();
        let mut consumer: consumer::PullConsumer = jetstream::new(receiving.clone())
            .get_stream(RAW_JS_STREAM)
            .await
            .unwrap()
            .create_consumer(consumer::pull::Config {
                durable_name: Some(RAW_JS_CONSUMER.to_owned()),
                deliver_policy: consumer::DeliverPolicy::New,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            })
            .await
            .unwrap();
        consumer.info().await.unwrap();
        let messages = consumer.messages().await.unwrap();
        let mut body = Vec::new();
        nerve::journal::line::encode(&order(0), &mut body);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nerve-Origin", "raw-publisher");
        headers.insert("Nerve-Correlation-Id", "checkout-7f3a");
        Self {
            js,
            stream,
            consumer,
            messages: Some(messages),
            _receiving: receiving,
            body,
            headers,
        }
    }

    /// Sends one message; its acknowledgement to come.
    async fn publish(
        js: &jetstream::Context,
        headers: &async_nats::HeaderMap,
        body: &[u8],
    ) -> jetstream::context::PublishAckFuture {
        let mut headers = headers.clone();
        headers.insert("Nats-Msg-Id", EventId::new().to_string().as_str());
        js.publish_with_headers(RAW_JS_SUBJECT, headers, body.to_vec().into())
            .await
            .expect("published")
    }

    async fn throughput(&mut self, n: usize) -> f64 {
        purge(&self.stream).await;
        let mut messages = self.messages.take().expect("between rounds");
        let start = Instant::now();
        let receiver = tokio::spawn(async move {
            for i in 0..n {
                let message = tokio::time::timeout(LIMIT, next_message(&mut messages))
                    .await
                    .unwrap_or_else(|_| panic!("only {i} of {n} messages arrived"));
                message.ack().await.expect("acknowledged");
            }
            (messages, Instant::now())
        });
        let mut acks = VecDeque::with_capacity(WINDOW);
        for _ in 0..n {
            if acks.len() == WINDOW {
                let ack: jetstream::context::PublishAckFuture =
                    acks.pop_front().expect("a full window");
                ack.await.expect("stored");
            }
            acks.push_back(Self::publish(&self.js, &self.headers, &self.body).await);
        }
        for ack in acks {
            ack.await.expect("stored");
        }
        let (messages, end) = receiver.await.expect("the receiver");
        self.messages = Some(messages);
        let rate = n as f64 / (end - start).as_secs_f64();
        self.settle().await;
        rate
    }

    async fn latencies(&mut self, n: usize) -> Vec<f64> {
        purge(&self.stream).await;
        let messages = self.messages.as_mut().expect("between rounds");
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            let ack = Self::publish(&self.js, &self.headers, &self.body).await;
            let receipt = async {
                let message = tokio::time::timeout(LIMIT, next_message(messages))
                    .await
                    .expect("the message arrives");
                let took = start.elapsed();
                message.ack().await.expect("acknowledged");
                took
            };
            let (took, stored) = tokio::join!(receipt, ack.into_future());
            stored.expect("stored");
            out.push(took.as_nanos() as f64);
        }
        self.settle().await;
        out
    }

    /// Waits until the consumer's acknowledgements reached the server.
    async fn settle(&mut self) {
        let consumer = &mut self.consumer;
        until("the raw consumer's acknowledgements", async || {
            let info = consumer.info().await.unwrap();
            info.num_pending == 0 && info.num_ack_pending == 0
        })
        .await;
    }
}

/// The next message of the comparator's pull consumer. Missed idle
/// heartbeats are skipped, as the bridge's durable import skips them
/// (counted there): the stream goes on after one, and one is reported
/// when the stream was not polled for a while, between rounds.
async fn next_message(messages: &mut consumer::pull::Stream) -> jetstream::Message {
    loop {
        match messages.next().await.expect("the consumer's stream ended") {
            Ok(message) => return message,
            Err(e)
                if matches!(
                    e.kind(),
                    consumer::pull::MessagesErrorKind::MissingHeartbeat
                ) => {}
            Err(e) => panic!("a message: {e}"),
        }
    }
}

/// Runs throughput rounds of `bridge` against `raw` and adds their rows to
/// `group`: the comparator first, then the bridge with its ratio and the
/// target.
fn throughput_rows(
    report: &mut Report,
    group: &str,
    rounds: usize,
    (bridge_name, bridge): (&str, &mut dyn FnMut() -> f64),
    (raw_name, raw): (&str, &mut dyn FnMut() -> f64),
) {
    let r = Rounds::run(1, rounds, &mut [("bridge", bridge), ("raw", raw)]);
    let n = r.count();
    report.row(
        group,
        raw_name,
        (r.spread("raw").median, "events/s"),
        n,
        None,
        None,
    );
    // The ratio names the comparator without its details.
    let to = raw_name.split(',').next().unwrap_or(raw_name);
    report.row(
        group,
        bridge_name,
        (r.spread("bridge").median, "events/s"),
        n,
        Some((to, r.ratio("bridge", "raw"))),
        Some(Target::AtLeast(0.7)),
    );
}

/// Runs latency rounds of `bridge` against `raw` (each gives `samples`
/// latencies per round: its p50 is the round's figure, its p99 kept aside)
/// and adds the p50 and p99 rows of both to `group`.
fn latency_rows(
    report: &mut Report,
    group: &str,
    rounds: usize,
    (bridge_name, bridge): (&str, &mut dyn FnMut() -> Vec<f64>),
    (raw_name, raw): (&str, &mut dyn FnMut() -> Vec<f64>),
) {
    let (bridge_p99, raw_p99) = (RefCell::new(Vec::new()), RefCell::new(Vec::new()));
    let mut bridge_p50 = || {
        let mut l = bridge();
        bridge_p99.borrow_mut().push(quantile(&mut l, 0.99));
        quantile(&mut l, 0.5)
    };
    let mut raw_p50 = || {
        let mut l = raw();
        raw_p99.borrow_mut().push(quantile(&mut l, 0.99));
        quantile(&mut l, 0.5)
    };
    let r = Rounds::run(
        0,
        rounds,
        &mut [("bridge", &mut bridge_p50), ("raw", &mut raw_p50)],
    );
    let n = r.count();
    let (bridge_p99, raw_p99) = (bridge_p99.into_inner(), raw_p99.into_inner());
    let p99_ratio = Spread::of(
        bridge_p99
            .iter()
            .zip(&raw_p99)
            .map(|(b, r)| b / r)
            .collect(),
    );
    let (raw50, raw99) = (format!("{raw_name} p50"), format!("{raw_name} p99"));
    report.row(group, &raw50, (r.spread("raw").median, "ns"), n, None, None);
    report.row(
        group,
        &format!("{bridge_name} p50"),
        (r.spread("bridge").median, "ns"),
        n,
        Some((&raw50, r.ratio("bridge", "raw"))),
        None,
    );
    report.row(
        group,
        &raw99,
        (Spread::of(raw_p99).median, "ns"),
        n,
        None,
        None,
    );
    report.row(
        group,
        &format!("{bridge_name} p99"),
        (Spread::of(bridge_p99).median, "ns"),
        n,
        Some((&raw99, p99_ratio)),
        None,
    );
}

/// The `q`-quantile of `values` (sorted here).
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let (core, js) = (paired::selected("core"), paired::selected("jetstream"));
    if !core && !js {
        return;
    }
    let rounds = pick(10, 2);
    let server = Server::start();
    let rt = Runtime::new().unwrap();
    // async-nats's clients and subscribers need the runtime when dropped.
    let _in_runtime = rt.enter();
    let url = server.url();
    let mut report = Report::new("nats");

    if core {
        let batch = pick(50_000, 5_000);
        let samples = pick(2_000, 200);
        let mut bridged = rt.block_on(Bridged::new(&url, 2 * batch));
        let mut raw = rt.block_on(Raw::new(&url));
        let (bridged_cell, raw_cell) = (RefCell::new(&mut bridged), RefCell::new(&mut raw));
        throughput_rows(
            &mut report,
            "core",
            rounds,
            (
                "bridge (emit → export → import → stream)",
                &mut || rt.block_on(bridged_cell.borrow_mut().throughput(batch)),
            ),
            ("async-nats, same bytes and headers", &mut || {
                rt.block_on(raw_cell.borrow_mut().throughput(batch))
            }),
        );
        latency_rows(
            &mut report,
            "core_latency",
            rounds,
            ("bridge", &mut || {
                rt.block_on(bridged_cell.borrow_mut().latencies(samples))
            }),
            ("async-nats", &mut || {
                rt.block_on(raw_cell.borrow_mut().latencies(samples))
            }),
        );
        rt.block_on(async {
            bridged.exporter.shutdown(LIMIT).await;
            bridged.importer.shutdown(LIMIT).await;
        });
    }

    if js {
        let batch = pick(20_000, 2_000);
        let samples = pick(1_000, 100);
        let mut durable = rt.block_on(Durable::new(&url, 2 * batch));
        let mut raw = rt.block_on(RawJs::new(&url, &durable.stream));
        let (durable_cell, raw_cell) = (RefCell::new(&mut durable), RefCell::new(&mut raw));
        throughput_rows(
            &mut report,
            "jetstream",
            rounds,
            (
                "bridge durable (emit → export_durable → import_durable → stream)",
                &mut || rt.block_on(durable_cell.borrow_mut().throughput(batch)),
            ),
            ("async-nats JetStream, same bytes and headers", &mut || {
                rt.block_on(raw_cell.borrow_mut().throughput(batch))
            }),
        );
        latency_rows(
            &mut report,
            "jetstream_latency",
            rounds,
            ("bridge durable", &mut || {
                rt.block_on(durable_cell.borrow_mut().latencies(samples))
            }),
            ("async-nats JetStream", &mut || {
                rt.block_on(raw_cell.borrow_mut().latencies(samples))
            }),
        );
        rt.block_on(async {
            durable.exporter.shutdown(LIMIT).await;
            durable.importer.shutdown(LIMIT).await;
        });
    }
    report.write();
}
