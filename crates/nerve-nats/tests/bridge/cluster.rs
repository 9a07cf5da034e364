//! A three-node JetStream cluster on loopback: the node a durable exporter
//! is connected to is killed (SIGKILL) mid-stream; the exporter fails over
//! to another node, every event is acknowledged and in the replicated
//! stream exactly once, and a durable importer receives each exactly once.
//!
//! Sizes: `NERVE_NATS_CLUSTER_EVENTS` (default 3,000) events and
//! `NERVE_NATS_CLUSTER_KILLS` (default 1) kills, each of the node the
//! exporter is on at that moment (the node killed before is restarted and
//! the cluster is whole again first). `cargo xtask nats` runs the full
//! variant.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use nerve::nats::{DeliverFrom, DurableStream, NatsBridge, NatsOptions};
use nerve::{EventId, StreamOptions, json};

use crate::durable::stream_ids;
use crate::support::{accepts, server_binary};
use crate::{bus, collect};

const LIMIT: Duration = Duration::from_secs(120);

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{var}={v}: not a number"))
        })
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

struct Node {
    name: String,
    port: u16,
    cluster_port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

/// Three `nats-server` processes with routes to each other, JetStream on,
/// each with its own store; killed on drop.
pub(crate) struct Cluster {
    binary: PathBuf,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts the three nodes and waits until JetStream can place a stream
    /// with three replicas; `None` (after a loud message) when there is no
    /// `nats-server` and `CI` is not set.
    pub(crate) async fn start() -> Option<Self> {
        let binary = server_binary()?;
        let nodes = (0..3)
            .map(|i| Node {
                name: format!("node-{i}"),
                port: free_port(),
                cluster_port: free_port(),
                store: tempfile::tempdir().expect("a store directory"),
                child: None,
            })
            .collect();
        let mut cluster = Self { binary, nodes };
        for i in 0..3 {
            cluster.spawn(i);
        }
        cluster.wait_until_whole().await;
        Some(cluster)
    }

    /// `nats://127.0.0.1:{port}` of node `i`.
    pub(crate) fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Every node's URL, comma-separated (as `NatsBridge::connect` takes them).
    pub(crate) fn urls(&self) -> String {
        (0..3).map(|i| self.url(i)).collect::<Vec<_>>().join(",")
    }

    /// The node whose URL is `url`.
    pub(crate) fn node_of(&self, url: &str) -> Option<usize> {
        (0..3).find(|i| self.url(*i) == url)
    }

    /// A node that is running.
    pub(crate) fn live(&self) -> usize {
        (0..3)
            .find(|i| self.nodes[*i].child.is_some())
            .expect("a live node")
    }

    /// Kills node `i` (SIGKILL) and waits for it to be gone.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its ports and store, and waits until the
    /// cluster is whole.
    pub(crate) async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_until_whole().await;
    }

    fn spawn(&mut self, i: usize) {
        let routes: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| format!("nats://127.0.0.1:{}", self.nodes[j].cluster_port))
            .collect();
        let node = &self.nodes[i];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut child = Command::new(&self.binary)
                .args(["-js", "-a", "127.0.0.1", "-p", &node.port.to_string()])
                .args(["-n", &node.name, "--cluster_name", "nerve"])
                .args([
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", node.cluster_port),
                ])
                .args(["--routes", &routes.join(",")])
                .arg("-sd")
                .arg(node.store.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server starts");
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // a port not free yet after a kill: again
                }
                if accepts(node.port) {
                    self.nodes[i].child = Some(child);
                    return;
                }
                assert!(Instant::now() < deadline, "{} did not come up", node.name);
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(Instant::now() < deadline, "{} kept exiting", node.name);
        }
    }

    /// Waits until there is a JetStream meta leader and every running node
    /// takes part: a probe stream with one replica per running node is
    /// created (and deleted) through each of them.
    async fn wait_until_whole(&self) {
        let live: Vec<usize> = (0..3).filter(|i| self.nodes[*i].child.is_some()).collect();
        let deadline = Instant::now() + LIMIT;
        for &i in &live {
            let client = async_nats::connect(self.url(i)).await.unwrap();
            let js = jetstream::new(client);
            let probe = format!("PROBE_{i}");
            loop {
                let created = js
                    .create_stream(jetstream::stream::Config {
                        name: probe.clone(),
                        subjects: vec![format!("probe.{i}")],
                        num_replicas: live.len(),
                        storage: jetstream::stream::StorageType::Memory,
                        ..Default::default()
                    })
                    .await;
                if created.is_ok() && js.delete_stream(&probe).await.is_ok() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "JetStream not ready through node {i}: {:?}",
                    created.err()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cluster_node_fails_over_losing_and_repeating_nothing() {
    let Some(mut cluster) = Cluster::start().await else {
        return;
    };
    let events = size("NERVE_NATS_CLUSTER_EVENTS", 3_000);
    let kills = size("NERVE_NATS_CLUSTER_KILLS", 1);
    let options = || {
        NatsOptions::new()
            .reconnect_delay(Duration::from_millis(10))
            .capacity(events + 1)
            .publish_attempts(1_000)
            .terminal_wait(LIMIT)
    };
    let (a, b) = (bus(), bus());
    let exporter = NatsBridge::connect(&cluster.urls(), &a, options().origin("exporter"))
        .await
        .unwrap();
    exporter
        .export_durable("order.*", DurableStream::new("ORDERS").replicas(3))
        .await
        .unwrap();
    let importer = NatsBridge::connect(&cluster.urls(), &b, options().origin("importer"))
        .await
        .unwrap();
    let mut at_b = b
        .stream_with("order.*", StreamOptions::new().capacity(2 * events + 2))
        .unwrap();
    importer
        .import_durable("ORDERS", "reader", DeliverFrom::All)
        .await
        .unwrap();

    // `kills` times, a part of the events is emitted and then the node
    // the exporter is on is killed mid-stream; the last part follows.
    let mut sent: Vec<EventId> = Vec::with_capacity(events + 1);
    let part = events / (kills + 1);
    let mut killed: Option<usize> = None;
    for round in 0..=kills {
        let n = if round == kills {
            events - part * kills
        } else {
            part
        };
        for _ in 0..n {
            let i = sent.len();
            sent.push(a.emit("order.placed", json!({"i": i})).unwrap());
        }
        if round == kills {
            break;
        }
        if let Some(k) = killed.take() {
            cluster.restart(k).await;
        }
        let server = exporter.stats().server.expect("a server");
        let on = cluster.node_of(&server).expect("one of the nodes");
        // Mid-stream: some of this part is acknowledged, some not yet.
        until("part of the events acknowledged", || {
            exporter.stats().acked > (sent.len() - n) as u64
        })
        .await;
        cluster.kill(on);
        killed = Some(on);
        until("the exporter fails over", || {
            let s = exporter.stats();
            s.connected && s.server.as_deref().is_some_and(|u| u != server)
        })
        .await;
    }
    // A terminal event: its emit returns once the stream has it and every
    // event before it.
    sent.push(a.emit("order.completed", json!({})).unwrap());

    let stored = stream_ids(&cluster.url(cluster.live()), "ORDERS").await;
    assert_eq!(
        stored.len(),
        sent.len(),
        "missing or repeated in the stream"
    );
    let unique: HashSet<EventId> = stored.iter().copied().collect();
    assert_eq!(unique, sent.iter().copied().collect::<HashSet<_>>());

    assert!(exporter.flush(LIMIT).await, "the exporter could not flush");
    let s = exporter.stats();
    assert_eq!(
        (s.acked, s.ack_failed, s.dropped),
        (sent.len() as u64, 0, 0),
        "{s:?}"
    );
    assert!(s.disconnects >= kills as u64, "{s:?}");
    assert_eq!(s.nacked, s.retried, "a failed publish not retried: {s:?}");

    let received: Vec<EventId> = collect(&mut at_b, sent.len(), LIMIT)
        .await
        .iter()
        .map(|e| e.event_id())
        .collect();
    let once: HashSet<EventId> = received.iter().copied().collect();
    assert_eq!(
        once.len(),
        received.len(),
        "an event reached the importer twice"
    );
    assert_eq!(once, unique);
    until("the importer acknowledges everything", || {
        let s = importer.stats();
        s.acks_sent >= s.imported + s.duplicates_dropped
    })
    .await;
    assert!(at_b.is_empty(), "more arrived than was sent");
    exporter.shutdown(LIMIT).await;
    importer.shutdown(LIMIT).await;
}

/// Regression: `connect` took a comma-separated list as one address (the
/// list failed to parse), so a bridge could not be given a cluster's nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comma_separated_server_list_connects_to_a_live_server() {
    let Some(server) = crate::support::NatsServer::start() else {
        return;
    };
    // A port held but not listening: a connection to it is refused, and
    // no server started meanwhile (another test's) can take it, as one
    // could take a port that was only found free.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = format!("nats://{}", held.local_addr().unwrap());
    let a = bus();
    let bridge = NatsBridge::connect(&format!("{dead}, {}", server.url()), &a, NatsOptions::new())
        .await
        .unwrap();
    assert_eq!(bridge.stats().server, Some(server.url()));
    bridge.shutdown(LIMIT).await;
}
