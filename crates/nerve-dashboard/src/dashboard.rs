//! [`Dashboard`], its builder and [`serve`].

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nerve_core::{Pattern, PatternError};
use nerve_router::{Bus, DeadLetterQueue, SubscribeError};
use tokio::sync::watch;

use crate::hub::Hub;
use crate::server::{self, AppState};
use crate::source::{self, BusSource};
use crate::summary::Rules;

/// How often the summary is recomputed for the clients when it changed.
const SUMMARY_EVERY: Duration = Duration::from_millis(250);

/// How long [`Dashboard::shutdown`] waits for the server's tasks.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Why a dashboard could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address did not resolve.
    #[error("cannot resolve the address {addr}")]
    Resolve {
        /// The address as given.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The address could not be bound (in use, not permitted).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token is empty or holds characters a header or cookie cannot.
    #[error("bad token: {0}")]
    BadToken(&'static str),
    /// A success or failure pattern is invalid.
    #[error("bad item pattern")]
    Pattern(#[from] PatternError),
    /// A threshold is outside `0..=1`.
    #[error("the {name} must be within 0..=1, got {value}")]
    Threshold {
        /// Which threshold.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// A bus refused the dashboard's stream (it is shut down).
    #[error("cannot watch the bus")]
    Subscribe(#[from] SubscribeError),
    /// The server's runtime or a journal thread could not start.
    #[error("cannot start the dashboard's threads")]
    Runtime(#[source] std::io::Error),
}

/// Builds a [`Dashboard`].
///
/// | option | default |
/// |--------|---------|
/// | `bind` | `127.0.0.1:8080` |
/// | `token` | none on loopback; generated for any other address |
/// | `retain` | 50,000 events kept for late joiners, `Last-Event-ID` and the API |
/// | `client_queue` | 4,096 events per client before it misses some |
/// | `items` | `*.completed` succeeded, `*.failed` failed |
/// | `warning_threshold` | 0.7 (the validation consumer's default) |
/// | `checkpoint_threshold` | 0.5 (the validation consumer's default) |
/// | sources | none: add buses with `bus`, journals with `journal` |
#[must_use]
pub struct DashboardBuilder {
    bind: Result<SocketAddr, (String, std::io::Error)>,
    token: Option<String>,
    retain: usize,
    client_queue: usize,
    success: String,
    failure: String,
    warning_threshold: f64,
    checkpoint_threshold: f64,
    buses: Vec<BusSource>,
    journals: Vec<(String, PathBuf)>,
}

impl std::fmt::Debug for DashboardBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardBuilder")
            .field("bind", &self.bind.as_ref().map_err(|e| &e.0))
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("retain", &self.retain)
            .field("client_queue", &self.client_queue)
            .field("buses", &self.buses.len())
            .field("journals", &self.journals)
            .finish_non_exhaustive()
    }
}

impl Default for DashboardBuilder {
    fn default() -> Self {
        Self {
            bind: Ok(SocketAddr::from(([127, 0, 0, 1], 8080))),
            token: None,
            retain: 50_000,
            client_queue: 4_096,
            success: "*.completed".to_owned(),
            failure: "*.failed".to_owned(),
            warning_threshold: 0.7,
            checkpoint_threshold: 0.5,
            buses: Vec::new(),
            journals: Vec::new(),
        }
    }
}

impl DashboardBuilder {
    /// Where to listen (`"127.0.0.1:8080"`, `([0, 0, 0, 0], 8080)`; port 0
    /// picks a free one, see [`Dashboard::local_addr`]). An address other
    /// than loopback requires a token.
    pub fn bind(mut self, addr: impl ToSocketAddrs + std::fmt::Display) -> Self {
        let text = addr.to_string();
        self.bind = match addr.to_socket_addrs() {
            Ok(mut it) => it.next().ok_or_else(|| {
                (
                    text,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
                )
            }),
            Err(e) => Err((text, e)),
        };
        self
    }

    /// The bearer token every request must carry (see the crate docs),
    /// also on loopback. Without it, one is generated for a non-loopback
    /// address.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How many events are kept for late joiners, resuming clients and the
    /// API (at least 1). The summary covers every event whatever this is.
    pub fn retain(mut self, events: usize) -> Self {
        self.retain = events.max(1);
        self
    }

    /// How many events a client may fall behind the live stream before it
    /// loses the oldest of them and is told so (`missed`); at least 1.
    pub fn client_queue(mut self, events: usize) -> Self {
        self.client_queue = events.max(1);
        self
    }

    /// The patterns of a run's item events: `success` counts as succeeded,
    /// `failure` as failed (default `*.completed` and `*.failed`; the run's
    /// own start and end events never count).
    pub fn items(mut self, success: impl Into<String>, failure: impl Into<String>) -> Self {
        self.success = success.into();
        self.failure = failure.into();
        self
    }

    /// The warning threshold drawn on a run's chart until a
    /// `validation.warning` event gives the run's own.
    pub fn warning_threshold(mut self, rate: f64) -> Self {
        self.warning_threshold = rate;
        self
    }

    /// The checkpoint threshold drawn on a run's chart until a
    /// `validation.checkpoint` event gives the run's own.
    pub fn checkpoint_threshold(mut self, rate: f64) -> Self {
        self.checkpoint_threshold = rate;
        self
    }

    /// Shows `bus`: its in-memory history first, then every event live.
    /// `name` labels it in the page (`bus`, or the program's name).
    pub fn bus(mut self, name: impl Into<String>, bus: &Bus) -> Self {
        self.buses.push(BusSource {
            name: name.into(),
            bus: bus.clone(),
            dead_letters: None,
        });
        self
    }

    /// Shows `bus` and the state of its dead letter queue.
    pub fn bus_with_dead_letters(
        mut self,
        name: impl Into<String>,
        bus: &Bus,
        dead_letters: &DeadLetterQueue,
    ) -> Self {
        self.buses.push(BusSource {
            name: name.into(),
            bus: bus.clone(),
            dead_letters: Some(dead_letters.clone()),
        });
        self
    }

    /// Shows the journal whose active file is `active` (`events.jsonl`):
    /// all its files first, then what is appended, across rotations. A
    /// journal that does not exist yet is waited for.
    pub fn journal(mut self, name: impl Into<String>, active: impl Into<PathBuf>) -> Self {
        self.journals.push((name.into(), active.into()));
        self
    }

    /// Binds, subscribes to the buses, starts following the journals, and
    /// serves. Every event a bus accepts after this returns is shown.
    ///
    /// # Errors
    ///
    /// [`ServeError`]: the address, the token, a pattern or threshold, a
    /// shut-down bus, or the runtime.
    pub fn start(self) -> Result<Dashboard, ServeError> {
        let addr = self
            .bind
            .map_err(|(addr, source)| ServeError::Resolve { addr, source })?;
        let rules = Rules {
            success: Pattern::parse(&self.success)?,
            failure: Pattern::parse(&self.failure)?,
            warning_threshold: threshold("warning threshold", self.warning_threshold)?,
            checkpoint_threshold: threshold("checkpoint threshold", self.checkpoint_threshold)?,
        };
        let (token, generated) = match self.token {
            Some(t) => {
                if t.is_empty() {
                    return Err(ServeError::BadToken("it is empty"));
                }
                if !t
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b';' && b != b',' && b != b'"')
                {
                    return Err(ServeError::BadToken(
                        "use visible ASCII characters other than ; , and \"",
                    ));
                }
                (Some(t), false)
            }
            None if addr.ip().is_loopback() => (None, false),
            None => (Some(uuid::Uuid::new_v4().simple().to_string()), true),
        };
        let listener =
            TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ServeError::Bind { addr, source })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nerve-dashboard")
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        let hub = Arc::new(Hub::new(rules, self.retain, self.client_queue));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        for bus in self.buses {
            source::start_bus(&hub, bus, runtime.handle(), shutdown_rx.clone())?;
        }
        let stop_journals = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (name, path) in self.journals {
            threads.push(
                source::start_journal(&hub, name, path, stop_journals.clone())
                    .map_err(ServeError::Runtime)?,
            );
        }
        let state = AppState {
            hub: hub.clone(),
            token: token.as_deref().map(Arc::from),
            shutdown: shutdown_rx.clone(),
        };
        let app = server::router(state);
        let mut stop = shutdown_rx.clone();
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
                .map_err(|source| ServeError::Bind { addr, source })?
        };
        runtime.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the dashboard's server stopped");
            }
        });
        let summary_hub = hub.clone();
        let mut stop = shutdown_rx;
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(SUMMARY_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => summary_hub.publish_summary(),
                    _ = stop.changed() => break,
                }
            }
        });
        Ok(Dashboard {
            inner: Arc::new(Inner {
                addr: local,
                token,
                generated,
                hub,
                shutdown: shutdown_tx,
                runtime: Mutex::new(Some(runtime)),
                stop_journals,
                threads: Mutex::new(threads),
                stopped: (Mutex::new(false), std::sync::Condvar::new()),
            }),
        })
    }
}

fn threshold(name: &'static str, value: f64) -> Result<f64, ServeError> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(ServeError::Threshold { name, value })
    }
}

/// A running dashboard: cheap to clone; the server stops when the last
/// clone is dropped or at [`shutdown`](Self::shutdown).
#[derive(Clone)]
#[must_use = "the dashboard stops when dropped"]
pub struct Dashboard {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    token: Option<String>,
    generated: bool,
    hub: Arc<Hub>,
    shutdown: watch::Sender<bool>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    stop_journals: Arc<AtomicBool>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Set once shut down, for [`Dashboard::wait`].
    stopped: (Mutex<bool>, std::sync::Condvar),
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("addr", &self.inner.addr)
            .field("token", &self.inner.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl Dashboard {
    /// A builder with the defaults (see [`DashboardBuilder`]).
    pub fn builder() -> DashboardBuilder {
        DashboardBuilder::default()
    }

    /// The address it listens on (the port chosen when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The token requests need, if any.
    pub fn token(&self) -> Option<&str> {
        self.inner.token.as_deref()
    }

    /// Whether the token was generated (no token given, non-loopback
    /// address): the program should print it.
    pub fn token_generated(&self) -> bool {
        self.inner.generated
    }

    /// The page's address, with `?token=` when there is a token: the link
    /// to open (it moves the token into a cookie).
    pub fn url(&self) -> String {
        let addr = self.inner.addr;
        let host = if addr.ip().is_unspecified() {
            // 0.0.0.0 / :: listens everywhere; loopback reaches it here.
            match addr {
                SocketAddr::V4(_) => format!("127.0.0.1:{}", addr.port()),
                SocketAddr::V6(_) => format!("[::1]:{}", addr.port()),
            }
        } else {
            addr.to_string()
        };
        match &self.inner.token {
            Some(t) => format!("http://{host}/?token={t}"),
            None => format!("http://{host}/"),
        }
    }

    /// Events taken in so far, over all sources.
    pub fn events_seen(&self) -> u64 {
        self.inner.hub.last_id()
    }

    /// Stops the server: open streams end, the journal followers stop, and
    /// the runtime's threads are joined (within 2 s). Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown_now();
    }

    /// Blocks until [`shutdown`](Self::shutdown) is called from elsewhere
    /// (a signal handler, another thread). For a program whose only job is
    /// to serve.
    pub fn wait(&self) {
        let (lock, signal) = &self.inner.stopped;
        let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !*stopped {
            stopped = signal.wait(stopped).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Inner {
    fn shutdown_now(&self) {
        self.shutdown.send_replace(true);
        self.stop_journals.store(true, Ordering::Relaxed);
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rt) = runtime {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Inside a runtime a blocking wait is not allowed: the
                // server's tasks end on their own after the signal.
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(SHUTDOWN_WAIT);
            }
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        let (lock, signal) = &self.stopped;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        signal.notify_all();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

/// Shows `bus` at `addr` until the returned [`Dashboard`] is dropped: the
/// bus's in-memory history first, then every event live. On a loopback
/// address no token is needed; on any other one a token is generated
/// ([`Dashboard::token`], included in [`Dashboard::url`]).
///
/// ```
/// let bus = nerve::Bus::new();
/// let dashboard = nerve::dashboard::serve(&bus, "127.0.0.1:0")?;
/// assert!(dashboard.url().starts_with("http://127.0.0.1:"));
/// # Ok::<(), nerve::dashboard::ServeError>(())
/// ```
///
/// # Errors
///
/// [`ServeError`]: the address cannot be resolved or bound, or the bus is
/// shut down.
pub fn serve(
    bus: &Bus,
    addr: impl ToSocketAddrs + std::fmt::Display,
) -> Result<Dashboard, ServeError> {
    Dashboard::builder().bind(addr).bus("bus", bus).start()
}
