//! `nerve record` against a real `nats-server` (started here on a free
//! loopback port, JetStream on, a temporary store): the real binary
//! records a stream into a journal directory, is killed with SIGKILL
//! mid-stream, is started again, and the journal ends with exactly one
//! line per event and `nerve verify` clean. Bad input fails clearly.
//!
//! Without `nats-server` the tests skip loudly naming the Debian package,
//! or fail when `CI` is set (as the bridge's own tests do).

use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nerve::nats::{NatsBridge, NatsOptions};
use nerve::{Bus, EventId, json};

use super::{dir, nerve, stderr, stdout};

const PACKAGE_HINT: &str =
    "install Debian's package `nats-server` (apt-get install -y nats-server)";
const LIMIT: Duration = Duration::from_secs(120);

/// A `nats-server` on 127.0.0.1, killed on drop.
struct NatsServer {
    child: Child,
    port: u16,
    _store: PathBuf,
}

impl NatsServer {
    fn start(name: &str) -> Option<Self> {
        let works = |p: &str| {
            Command::new(p)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let Some(binary) = ["nats-server", "/usr/sbin/nats-server"]
            .into_iter()
            .find(|p| works(p))
        else {
            if std::env::var_os("CI").is_some() {
                panic!("nats-server not found on PATH and CI is set: {PACKAGE_HINT}");
            }
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: nats-server not found on PATH; the `nerve record` tests did not run: {PACKAGE_HINT} ***\n"
            );
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let store = dir(&format!("{name}-store"));
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not come up");
            std::thread::sleep(Duration::from_millis(5));
        }
        Some(Self {
            child,
            port,
            _store: store,
        })
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A publishing process's bus and bridge, exporting `order.*` durably into
/// the stream `ORDERS`.
struct Publisher {
    runtime: tokio::runtime::Runtime,
    bus: Bus,
    bridge: NatsBridge,
}

impl Publisher {
    fn start(url: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let bus = Bus::builder().history_capacity(0).build().unwrap();
        let bridge = runtime.block_on(async {
            let bridge = NatsBridge::connect(url, &bus, NatsOptions::new())
                .await
                .unwrap();
            bridge.export_durable("order.*", "ORDERS").await.unwrap();
            bridge
        });
        Self {
            runtime,
            bus,
            bridge,
        }
    }

    /// Emits `n` events numbered from `from`; returns once the stream
    /// acknowledged all of them.
    fn emit(&self, from: usize, n: usize) -> Vec<EventId> {
        let _guard = self.runtime.enter();
        let ids = (from..from + n)
            .map(|i| self.bus.emit("order.placed", json!({"i": i})).unwrap())
            .collect();
        assert!(self.runtime.block_on(self.bridge.flush(LIMIT)));
        ids
    }
}

/// The event ids of the journal in `dir`, in file order (a torn last line,
/// as SIGKILL may leave, is not counted).
fn journal_ids(dir: &Path) -> Vec<EventId> {
    let Ok(text) = std::fs::read(dir.join("events.jsonl")) else {
        return Vec::new();
    };
    text.split(|b| *b == b'\n')
        .filter_map(|line| nerve::journal::line::decode(line).ok())
        .map(|e| e.event_id())
        .collect()
}

fn record(url: &str, dir: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nerve"));
    command
        .args(["record", "--nats", url, "--stream", "ORDERS"])
        .args(extra)
        .arg(dir)
        .stdin(Stdio::null());
    command
}

#[test]
fn record_survives_a_sigkill_mid_stream_with_one_line_per_event() {
    let Some(server) = NatsServer::start("record-kill") else {
        return;
    };
    let url = server.url();
    let out = dir("record-kill");
    let publisher = Publisher::start(&url);
    let mut sent = publisher.emit(0, 2_000);

    // First recorder: killed (SIGKILL) while it is recording.
    // (`--ack-wait 1`: what it took and did not acknowledge comes back to
    // the second one after a second rather than the default 30.)
    let mut first = record(&url, &out, &["--ack-wait", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    while journal_ids(&out).len() < 300 {
        assert!(
            Instant::now() < deadline,
            "the recorder did not start recording"
        );
        assert!(first.try_wait().unwrap().is_none(), "the recorder exited");
        std::thread::sleep(Duration::from_millis(2));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let before = journal_ids(&out).len();

    // The stream goes on while no recorder runs.
    sent.extend(publisher.emit(2_000, 1_000));

    // Second recorder: continues where the first stopped, then exits.
    let second = record(&url, &out, &["--drain"]).output().unwrap();
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(stdout(&second).contains("recorded "), "{}", stdout(&second));

    let recorded = journal_ids(&out);
    let unique: HashSet<EventId> = recorded.iter().copied().collect();
    assert_eq!(
        recorded.len(),
        unique.len(),
        "an event was recorded twice (the first recorder had written {before})"
    );
    assert_eq!(unique, sent.iter().copied().collect(), "events missing");
    let verify = nerve(&["verify", out.to_str().unwrap()]);
    assert!(
        verify.status.success(),
        "verify: {}{}",
        stdout(&verify),
        stderr(&verify)
    );

    // Run again: nothing new, nothing written twice.
    let again = record(&url, &out, &["--drain"]).output().unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("recorded 0 events"),
        "{}",
        stdout(&again)
    );
    assert_eq!(journal_ids(&out).len(), sent.len());
}

#[test]
fn record_refuses_bad_input_clearly() {
    let out = dir("record-bad");
    // Nothing listens on this port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = format!("nats://127.0.0.1:{port}");
    let o = record(&unreachable, &out, &["--drain"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        !out.join("events.jsonl").exists(),
        "no journal made for a server that is not there"
    );
    assert!(
        stderr(&o).contains(&format!("cannot connect to NATS at `{unreachable}`")),
        "{}",
        stderr(&o)
    );

    // A file where the directory should be: said as such, not as "File
    // exists".
    let file = out.with_extension("file");
    std::fs::write(&file, b"").unwrap();
    let o = record(&unreachable, &file, &["--drain"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is a file: name a directory"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_file(&file).unwrap();

    let o = record(&unreachable, &out, &["--from", "yesterday"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("expected all, new, seq:N or time:SECONDS"),
        "{}",
        stderr(&o)
    );

    let Some(server) = NatsServer::start("record-bad") else {
        return;
    };
    let o = record(&server.url(), &out, &["--drain"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no JetStream stream named \"ORDERS\""),
        "{}",
        stderr(&o)
    );
    assert!(
        !out.join("events.jsonl").exists(),
        "no journal made for a stream that is not there"
    );
}

/// A stream holding messages that are not nerve events (another program's
/// JSON, an empty body): the recorder records the events, acknowledges the
/// rest (they would come again forever), names each on stderr, counts them
/// in its summary and exits 1. Before, it exited 0 with a summary that did
/// not mention them.
#[test]
fn record_counts_and_names_the_messages_it_refuses() {
    let Some(server) = NatsServer::start("record-refused") else {
        return;
    };
    let out = dir("record-refused");
    let publisher = Publisher::start(&server.url());
    let ids = publisher.emit(0, 3);
    publisher.runtime.block_on(async {
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        for body in [&b"{\"hello\":1}"[..], b"", b"not json"] {
            js.publish("order.foreign", body.to_vec().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
    let o = record(&server.url(), &out, &["--drain"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("recorded 3 events into")
            && stdout(&o).contains("(0 duplicates dropped, 3 messages refused)"),
        "{}",
        stdout(&o)
    );
    let err = stderr(&o);
    assert_eq!(
        err.matches("nerve record: system.bridge_error {").count(),
        3,
        "{err}"
    );
    assert!(
        err.contains("3 messages of the stream were not events"),
        "{err}"
    );
    assert_eq!(journal_ids(&out), ids);
    assert!(nerve(&["verify", out.to_str().unwrap()]).status.success());
    // They were acknowledged: a second run has nothing left to refuse.
    let again = record(&server.url(), &out, &["--drain"]).output().unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("recorded 0 events"),
        "{}",
        stdout(&again)
    );
}
