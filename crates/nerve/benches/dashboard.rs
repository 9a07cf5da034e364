//! The dashboard under load: one server, 50 browsers' worth of SSE clients
//! following a run of 1,000 events per second (`cargo xtask bench
//! dashboard`; `--quick` for a 3-second smoke run).
//!
//! Each round has two phases of the same length, run one after the other in
//! this process:
//!
//! 1. **comparator**: a bus and a paced emitter alone, 1,000 events per
//!    second of the run, no dashboard. Its CPU and memory are what the
//!    program costs without a dashboard.
//! 2. **dashboard**: the same emitter on a fresh bus, with
//!    `nerve::dashboard::serve` on it and 50 SSE clients connected to
//!    `/api/stream`. The clients run in a child process (this binary,
//!    started again with [`CLIENT_ENV`]), so that this process's CPU and
//!    memory are the server's (plus the emitter's, measured in phase 1).
//!
//! Every client must receive every event of the run, in order, with no
//! `missed` notice, or the bench fails. CPU is read from `/proc/self/stat`
//! (user + system time), memory from `/proc/self/status` (`VmRSS`, sampled
//! every 50 ms for the peak). Rows go to the paired report, which `cargo
//! xtask bench` turns into the "Dashboard" table of `docs/benchmarks.md`.

#[path = "support/paired.rs"]
mod paired;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use nerve::{Bus, json};
use paired::{Report, Spread};
use serde_json::Value;

/// Set (to `URL CLIENTS EVENTS`) in the child process that runs the
/// clients.
const CLIENT_ENV: &str = "NERVE_DASHBOARD_BENCH_CLIENT";

/// SSE clients connected to the one server.
const CLIENTS: usize = 50;

/// Events per second of the run.
const RATE: u64 = 1_000;

/// The run's id: every item event names it.
const RUN_ID: &str = "bench-run";

/// How long the clients may take to receive the last event after it was
/// emitted before the round counts as failed. Generous: a client that
/// keeps up has it within milliseconds.
const DRAIN: Duration = Duration::from_secs(60);

fn main() {
    if let Ok(spec) = std::env::var(CLIENT_ENV) {
        clients::main(&spec);
        return;
    }
    // Three rounds, so the median is one of them and not the lower of two.
    let seconds = paired::pick(20, 3);
    let rounds = paired::pick(3, 1);
    let events = seconds * RATE;
    println!(
        "dashboard: {rounds} round(s); each: {seconds} s at {RATE} events/s ({events} events), \
         alone, then with a dashboard and {CLIENTS} SSE clients"
    );
    let mut alone_cpu = Vec::new();
    let mut served_cpu = Vec::new();
    let mut alone_rss = Vec::new();
    let mut served_rss = Vec::new();
    let mut client_cpu = Vec::new();
    let mut delivered_rate = Vec::new();
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut max = Vec::new();
    for round in 1..=rounds {
        let alone = phase_alone(events);
        println!(
            "round {round}: alone: {:.1} % of a core, peak RSS {:.1} MiB, {:.0} events/s emitted",
            alone.cpu * 100.0,
            alone.peak_rss_mib,
            alone.emit_rate
        );
        let served = phase_served(events);
        println!(
            "round {round}: with the dashboard: {:.1} % of a core, peak RSS {:.1} MiB, \
             {:.0} events/s emitted; clients: {:.1} % of a core, latency p50 {:.2} ms, \
             p99 {:.2} ms, max {:.2} ms",
            served.server.cpu * 100.0,
            served.server.peak_rss_mib,
            served.server.emit_rate,
            served.clients.cpu * 100.0,
            served.clients.p50_ms,
            served.clients.p99_ms,
            served.clients.max_ms,
        );
        alone_cpu.push(alone.cpu * 100.0);
        served_cpu.push(served.server.cpu * 100.0);
        // Memory from the first round only: the allocator keeps what a
        // dashboard phase freed, so a later round's comparator would start
        // from the earlier dashboard's high-water mark.
        if round == 1 {
            alone_rss.push(alone.peak_rss_mib);
            served_rss.push(served.server.peak_rss_mib);
        }
        client_cpu.push(served.clients.cpu * 100.0);
        delivered_rate.push(served.clients.delivered_per_second);
        p50.push(served.clients.p50_ms * 1e6);
        p99.push(served.clients.p99_ms * 1e6);
        max.push(served.clients.max_ms * 1e6);
    }
    let ratio = |a: &[f64], b: &[f64]| Spread::of(a.iter().zip(b).map(|(a, b)| a / b).collect());
    let diff = |a: &[f64], b: &[f64]| Spread::of(a.iter().zip(b).map(|(a, b)| a - b).collect());
    let median = |v: &[f64]| Spread::of(v.to_vec()).median;
    let mut report = Report::new("dashboard");
    let group = "dashboard_50_clients";
    let alone_name = "bus + paced emitter alone: CPU";
    report.row(
        group,
        alone_name,
        (median(&alone_cpu), "% of a core"),
        rounds,
        None,
        None,
    );
    report.row(
        group,
        "with the dashboard and 50 SSE clients: CPU",
        (median(&served_cpu), "% of a core"),
        rounds,
        Some((alone_name, ratio(&served_cpu, &alone_cpu))),
        None,
    );
    report.row(
        group,
        "the dashboard's own CPU (difference)",
        (diff(&served_cpu, &alone_cpu).median, "% of a core"),
        rounds,
        None,
        None,
    );
    let alone_rss_name = "bus + paced emitter alone: peak RSS (first round)";
    report.row(
        group,
        alone_rss_name,
        (median(&alone_rss), "MiB"),
        1,
        None,
        None,
    );
    report.row(
        group,
        "with the dashboard and 50 SSE clients: peak RSS (first round)",
        (median(&served_rss), "MiB"),
        1,
        Some((alone_rss_name, ratio(&served_rss, &alone_rss))),
        None,
    );
    report.row(
        group,
        "events delivered to the 50 clients, all of them",
        (median(&delivered_rate), "events/s"),
        rounds,
        None,
        None,
    );
    report.row(
        group,
        "emit to client, median",
        (median(&p50), "ns"),
        rounds,
        None,
        None,
    );
    report.row(
        group,
        "emit to client, 99th percentile",
        (median(&p99), "ns"),
        rounds,
        None,
        None,
    );
    report.row(
        group,
        "emit to client, slowest",
        (median(&max), "ns"),
        rounds,
        None,
        None,
    );
    report.row(
        group,
        "the 50 clients' process: CPU",
        (median(&client_cpu), "% of a core"),
        rounds,
        None,
        None,
    );
    report.write();
}

/// What the server's process used during a phase.
struct Usage {
    /// CPU time over wall time, 1.0 = one core.
    cpu: f64,
    /// The highest resident set seen, in MiB.
    peak_rss_mib: f64,
    /// Events emitted per second of the emitting.
    emit_rate: f64,
}

/// Phase 1: a bus and the emitter, nothing else.
fn phase_alone(events: u64) -> Usage {
    let bus = Bus::new();
    let meter = Meter::start();
    let emit_rate = emit_run(&bus, events);
    let usage = meter.stop(emit_rate);
    drop(bus);
    usage
}

/// What the clients' process reported.
struct ClientsReport {
    cpu: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    delivered_per_second: f64,
}

/// What phase 2 measured.
struct Served {
    server: Usage,
    clients: ClientsReport,
}

/// Phase 2: the same with a dashboard and the clients following it.
fn phase_served(events: u64) -> Served {
    let bus = Bus::new();
    let dashboard = nerve::dashboard::serve(&bus, "127.0.0.1:0").expect("the dashboard starts");
    let url = dashboard.url();
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .env(CLIENT_ENV, format!("{url} {CLIENTS} {events}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the clients' process starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut next_line = || {
        lines
            .next()
            .and_then(Result::ok)
            .expect("a line from the clients' process")
    };
    assert_eq!(next_line(), "connected", "the clients could not connect");
    // Every client has its stream open (`hello` received); the server
    // counts them too before the run starts.
    let deadline = Instant::now() + DRAIN;
    while connected_clients(&url) < CLIENTS {
        assert!(
            Instant::now() < deadline,
            "the server never counted {CLIENTS} clients"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let meter = Meter::start();
    let emit_rate = emit_run(&bus, events);
    let report: Value = serde_json::from_str(&next_line()).expect("the clients' report");
    let server = meter.stop(emit_rate);
    let status = child.wait().expect("the clients' process ends");
    let failures = report["failures"].as_array().cloned().unwrap_or_default();
    assert!(
        status.success() && failures.is_empty(),
        "not every client received every event in order: {failures:?}"
    );
    dashboard.shutdown();
    let number = |key: &str| report[key].as_f64().expect("a number in the report");
    Served {
        server,
        clients: ClientsReport {
            cpu: number("cpu"),
            p50_ms: number("p50_ms"),
            p99_ms: number("p99_ms"),
            max_ms: number("max_ms"),
            delivered_per_second: number("delivered_per_second"),
        },
    }
}

/// `clients.connected` of the server's summary.
fn connected_clients(url: &str) -> usize {
    let summary = http_get_json(&format!("{url}api/summary"));
    summary["clients"]["connected"].as_u64().unwrap_or(0) as usize
}

/// A blocking GET of a JSON answer, over a plain socket (the bench has no
/// blocking HTTP client and needs none for this).
fn http_get_json(url: &str) -> Value {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut stream = std::net::TcpStream::connect(host).expect("the server accepts");
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("the request is sent");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stream, &mut text).expect("an answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{url}: {head}");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body}"))
}

/// The body of a chunked answer.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// Emits the run: a start event, `events` items paced at [`RATE`] per
/// second (each carrying its sequence number and the wall-clock time it
/// was emitted, for the clients' latency), and the end event. Returns the
/// achieved rate.
fn emit_run(bus: &Bus, events: u64) -> f64 {
    bus.emit(
        "bench.started",
        json!({"run_id": RUN_ID, "total_specimens": events}),
    )
    .expect("emit");
    let start = Instant::now();
    let period = Duration::from_secs(1) / RATE as u32;
    for seq in 0..events {
        // Paced, not a synchronisation: the run is meant to last
        // `events / RATE` seconds, like a real one.
        let due = start + period * seq as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        bus.emit(
            "item.completed",
            json!({
                "run_id": RUN_ID,
                "seq": seq,
                "sent_us": now_us(),
                "specimen": format!("S-{seq:06}"),
                "confidence": 0.93,
            }),
        )
        .expect("emit");
    }
    let elapsed = start.elapsed();
    bus.emit(
        "bench.completed",
        json!({"run_id": RUN_ID, "total": events}),
    )
    .expect("emit");
    events as f64 / elapsed.as_secs_f64()
}

/// Microseconds since the Unix epoch: the clock both processes share.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64
}

/// This process's user + system CPU time, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name, which is in brackets and may hold
    // spaces: utime and stime are the 14th and 15th of the whole line.
    let after = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}

/// This process's resident set, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// Measures CPU over a phase and samples the resident set for its peak.
struct Meter {
    wall: Instant,
    cpu: f64,
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<()>,
}

impl Meter {
    fn start() -> Self {
        let peak_kib = Arc::new(AtomicU64::new((rss_mib() * 1024.0) as u64));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak_kib, stop) = (peak_kib.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak_kib.fetch_max((rss_mib() * 1024.0) as u64, Ordering::Relaxed);
                    // A sampling period, not a synchronisation.
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Self {
            wall: Instant::now(),
            cpu: cpu_seconds(),
            peak_kib,
            stop,
            sampler,
        }
    }

    fn stop(self, emit_rate: f64) -> Usage {
        let cpu = (cpu_seconds() - self.cpu) / self.wall.elapsed().as_secs_f64();
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.join().expect("the sampler");
        self.peak_kib
            .fetch_max((rss_mib() * 1024.0) as u64, Ordering::Relaxed);
        Usage {
            cpu,
            peak_rss_mib: self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0,
            emit_rate,
        }
    }
}

/// The child process: the SSE clients.
mod clients {
    use std::io::Write;
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use super::{DRAIN, RUN_ID, cpu_seconds, now_us};

    /// What one client saw.
    #[derive(Default)]
    struct Seen {
        /// Item events received, in order.
        items: u64,
        /// Latencies of the items, in microseconds.
        latencies_us: Vec<u64>,
        /// What went wrong, if anything.
        failure: Option<String>,
    }

    impl Seen {
        /// Records what went wrong; the first failure is the one kept.
        fn fail(&mut self, why: String) {
            self.failure.get_or_insert(why);
        }
    }

    /// Connects `CLIENTS` clients to `URL`, says `connected` once each has
    /// its `hello`, then follows the run to its end event and prints one
    /// JSON line: CPU, latency percentiles, and the failures.
    pub(super) fn main(spec: &str) {
        let mut parts = spec.split(' ');
        let url = parts.next().expect("a URL").to_owned();
        let clients: usize = parts.next().and_then(|n| n.parse().ok()).expect("a count");
        let events: u64 = parts.next().and_then(|n| n.parse().ok()).expect("events");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let http = reqwest::Client::new();
            let (hello_tx, mut hello_rx) = tokio::sync::mpsc::channel(clients);
            let tasks: Vec<_> = (0..clients)
                .map(|_| {
                    let (http, url, hello_tx) = (http.clone(), url.clone(), hello_tx.clone());
                    tokio::spawn(async move { follow(&http, &url, events, hello_tx).await })
                })
                .collect();
            drop(hello_tx);
            for _ in 0..clients {
                hello_rx
                    .recv()
                    .await
                    .expect("every client connects or fails loudly");
            }
            let cpu_start = cpu_seconds();
            let wall = Instant::now();
            println!("connected");
            std::io::stdout().flush().expect("stdout");
            let mut seen = Vec::new();
            for task in tasks {
                seen.push(task.await.expect("a client task"));
            }
            let elapsed = wall.elapsed().as_secs_f64();
            let cpu = (cpu_seconds() - cpu_start) / elapsed;
            let mut all: Vec<u64> = seen.iter().flat_map(|s| s.latencies_us.clone()).collect();
            all.sort_unstable();
            let pick = |q: f64| {
                all.get(((all.len() as f64 - 1.0) * q).round() as usize)
                    .copied()
                    .unwrap_or(0) as f64
                    / 1e3
            };
            let delivered: u64 = seen.iter().map(|s| s.items).sum();
            let failures: Vec<String> = seen
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.failure.as_ref().map(|f| format!("client {i}: {f}")))
                .collect();
            let report = json!({
                "cpu": cpu,
                "p50_ms": pick(0.5),
                "p99_ms": pick(0.99),
                "max_ms": pick(1.0),
                "delivered_per_second": delivered as f64 / elapsed,
                "failures": failures,
            });
            println!("{report}");
        });
    }

    /// One client: opens the stream, reports `hello`, and reads events
    /// until the run's end event, checking that the items come in order
    /// 0, 1, 2, ... with none missing.
    async fn follow(
        http: &reqwest::Client,
        url: &str,
        events: u64,
        hello: tokio::sync::mpsc::Sender<()>,
    ) -> Seen {
        let mut seen = Seen::default();
        let mut response = match http
            .get(format!("{url}api/stream"))
            .header("accept", "text/event-stream")
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                seen.fail(format!("status {}", r.status()));
                let _ = hello.send(()).await;
                return seen;
            }
            Err(e) => {
                seen.fail(format!("could not connect: {e}"));
                let _ = hello.send(()).await;
                return seen;
            }
        };
        let mut hello = Some(hello);
        let mut buffer = String::new();
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(events / super::RATE + DRAIN.as_secs());
        loop {
            let chunk = match tokio::time::timeout_at(deadline, response.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => {
                    seen.fail(format!("stream ended after {} items", seen.items));
                    break;
                }
                Ok(Err(e)) => {
                    seen.fail(format!("stream failed after {} items: {e}", seen.items));
                    break;
                }
                Err(_) => {
                    seen.fail(format!(
                        "no end event in time; {} items received",
                        seen.items
                    ));
                    break;
                }
            };
            buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
            // One SSE message per blank line; a partial one waits for more.
            while let Some(end) = buffer.find("\n\n") {
                let message: String = buffer.drain(..end + 2).collect();
                let (name, data) = parse(&message);
                match name.as_str() {
                    "hello" => {
                        if let Some(tx) = hello.take() {
                            let _ = tx.send(()).await;
                        }
                    }
                    "missed" | "reset" => seen.fail(format!("{name}: {data}")),
                    "event" => {
                        let item: Value = serde_json::from_str(&data).expect("an item");
                        let event = &item["event"];
                        if event["data"]["run_id"] != RUN_ID {
                            continue;
                        }
                        match event["event_type"].as_str() {
                            Some("item.completed") => {
                                let seq = event["data"]["seq"].as_u64().expect("seq");
                                if seq != seen.items {
                                    seen.fail(format!(
                                        "item {seq} came where {} was due",
                                        seen.items
                                    ));
                                }
                                let sent = event["data"]["sent_us"].as_u64().expect("sent_us");
                                seen.latencies_us.push(now_us().saturating_sub(sent));
                                seen.items += 1;
                            }
                            Some("bench.completed") => {
                                if seen.items != events {
                                    seen.fail(format!(
                                        "{} of {events} items before the end",
                                        seen.items
                                    ));
                                }
                                return seen;
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(tx) = hello.take() {
            let _ = tx.send(()).await;
        }
        seen
    }

    /// The event name (`message` when none) and the data of one SSE
    /// message; comment lines (`:`) are skipped.
    fn parse(message: &str) -> (String, String) {
        let mut name = String::from("message");
        let mut data = Vec::new();
        for line in message.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim_start().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        (name, data.join("\n"))
    }
}
