//! A real `nats-server` per test: on 127.0.0.1, a free port, JetStream on,
//! a temporary store directory, killed on drop. Tests never use a server
//! they did not start.
//!
//! Without `nats-server` on PATH (or in /usr/sbin, where Debian puts it) a
//! test skips with a loud message naming the package, or fails when `CI`
//! is set, so CI cannot go green without running them.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PACKAGE_HINT: &str =
    "install Debian's package `nats-server` (apt-get install -y nats-server)";

/// The `nats-server` binary, if there is one. `NERVE_NATS_SERVER` names
/// the one to use instead (a path that does not exist shows what happens
/// without one).
fn binary() -> Option<PathBuf> {
    let works = |p: &PathBuf| {
        Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Some(path) = std::env::var_os("NERVE_NATS_SERVER") {
        return Some(PathBuf::from(path)).filter(works);
    }
    [
        PathBuf::from("nats-server"),
        PathBuf::from("/usr/sbin/nats-server"),
    ]
    .into_iter()
    .find(works)
}

/// The `nats-server` binary, or `None` after a loud message when there is
/// none and `CI` is not set.
///
/// # Panics
///
/// When there is none and `CI` is set: CI cannot go green without these
/// tests.
pub(crate) fn server_binary() -> Option<PathBuf> {
    let Some(binary) = binary() else {
        if std::env::var_os("CI").is_some() {
            panic!("nats-server not found on PATH and CI is set: {PACKAGE_HINT}");
        }
        // Straight to the stream, past libtest's capture of
        // `eprintln!`, so `cargo test` shows it even for a passing test
        // (nextest keeps a passing test's output unless asked).
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: nats-server not found on PATH; the NATS bridge tests did not run: {PACKAGE_HINT} ***\n"
        );
        return None;
    };
    Some(binary)
}

/// A running `nats-server`, killed on drop.
pub(crate) struct NatsServer {
    binary: PathBuf,
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server, or returns `None` (after a loud message) when there
    /// is no `nats-server` and `CI` is not set.
    ///
    /// # Panics
    ///
    /// When there is no `nats-server` and `CI` is set, or the server does
    /// not come up.
    pub(crate) fn start() -> Option<Self> {
        let binary = server_binary()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self {
            binary,
            child: None,
            port,
            store: tempfile::tempdir().expect("a store directory"),
        };
        server.spawn();
        Some(server)
    }

    /// `nats://127.0.0.1:{port}`.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut child = Command::new(&self.binary)
                .args([
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-sd",
                ])
                .arg(self.store.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server starts");
            // Up when it accepts a connection and says INFO; gone early when
            // the port was not free yet (a restart right after a kill).
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if accepts(self.port) {
                    self.child = Some(child);
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "nats-server did not come up in 30 s"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(
                Instant::now() < deadline,
                "nats-server kept exiting at start"
            );
        }
    }
}

pub(crate) fn accepts(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut hello = [0u8; 4];
    stream.read_exact(&mut hello).is_ok() && &hello == b"INFO"
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP forwarder in front of a server that the test can close to new
/// connections: what lets a test decide which client reconnects first after
/// a restart, instead of hoping.
pub(crate) struct Gate {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    /// Forwards `127.0.0.1:{port of this gate}` to `upstream`; open.
    pub(crate) async fn start(upstream: u16) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let is_open = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                tokio::spawn(async move {
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self { port, open, task }
    }

    /// `nats://127.0.0.1:{port}`.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Whether new connections are forwarded.
    pub(crate) fn set_open(&self, open: bool) {
        self.open.store(open, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NatsServer {
    /// The client port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}
