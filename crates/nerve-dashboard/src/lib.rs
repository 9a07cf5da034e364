//! A live web dashboard for nerve: the runs as they happen (running,
//! completed, stopped early and why), each run's success rate over its items
//! with the warning and checkpoint thresholds, throughput and ETA, counts by
//! event type, drops and dead letters, and every event in a live table with
//! a pattern filter, its full JSON and its correlation chain, over
//! Server-Sent Events.
//!
//! # Key types
//!
//! * [`serve`]: show a bus of this program at an address.
//! * [`Dashboard`]: the running server (a guard: dropping it stops it), made
//!   by [`Dashboard::builder`] for several buses, journals followed live
//!   across rotations, a token, and the limits.
//!
//! The server runs on a small tokio runtime of its own, so a program needs
//! no runtime to use it, and one with a runtime can use it too.
//!
//! # Example
//!
//! ```
//! use nerve::{Bus, json};
//!
//! let bus = Bus::new();
//! // Port 0: any free port; a loopback address needs no token.
//! let dashboard = nerve::dashboard::serve(&bus, "127.0.0.1:0")?;
//! println!("watch at {}", dashboard.url());
//! bus.emit("extraction.started", json!({"run_id": "r1", "total_specimens": 2}))?;
//! bus.emit("specimen.completed", json!({"run_id": "r1"}))?;
//! dashboard.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Safe by default
//!
//! * It binds loopback unless told otherwise. Bound to any other address it
//!   requires a bearer token, generated when none is given
//!   ([`Dashboard::token`]). Without a token only loopback host names are
//!   answered (no DNS rebinding).
//! * Event data is untrusted: the page writes it as text only
//!   (`textContent`, never `innerHTML`), and a Content-Security-Policy
//!   allows only the page's own script.
//! * Memory is bounded: the retained history holds
//!   [`retain`](DashboardBuilder::retain) events; each client reads through
//!   a bounded queue ([`client_queue`](DashboardBuilder::client_queue)) and
//!   one that falls behind loses the oldest events and is told how many
//!   (`missed`). The summary covers every event ever seen, not only the
//!   retained ones.
//!
//! # The contract (for the page, tests and other clients)
//!
//! Every answer carries `Content-Security-Policy`, `X-Content-Type-Options:
//! nosniff` and `Cache-Control: no-store`. Errors are JSON,
//! `{"error": "<what went wrong and what to do>"}`, with status 400 (a bad
//! query, pattern, id or `Last-Event-ID`), 401 (token missing or wrong,
//! with `WWW-Authenticate: Bearer`), 403 (a non-loopback `Host` without a
//! token), 404 (no such page, or an event not retained) or 405 (not GET).
//!
//! ## Authentication
//!
//! With a token, every request needs one of: `Authorization: Bearer <token>`;
//! the cookie `nerve_dashboard_token=<token>`; or, for `GET /` only,
//! `?token=<token>`, which answers `303` to `/` setting that cookie
//! (HttpOnly, SameSite=Strict), so the link a server prints opens the page.
//!
//! ## Endpoints (all GET)
//!
//! | path | answer |
//! |------|--------|
//! | `/` | the page (`/app.js`, `/app.css` beside it) |
//! | `/healthz` | `ok` |
//! | `/api/summary` | the summary (below) |
//! | `/api/events?after=N&limit=L&pattern=P&run=R&correlation=C` | `{"first_id", "last_id", "events": [item...]}`: retained events with id > `after` (default 0), oldest first, at most `limit` (1..=10,000, default 1,000); `pattern` on the event type, `run` on the event's run id, `correlation` on its correlation id |
//! | `/api/events/{id}` | one item; 404 when not retained |
//! | `/api/events/{id}/chain` | `{"id", "correlation_id", "events": [item...], "links": [{"cause": id, "effect": id}], "missing_causes": [event_id...]}`: the retained events sharing the event's correlation id plus the events its causation ids lead back to, in emission order (timestamp, then `seq`; a handler's inline emit can reach the dashboard before the event it handles) |
//! | `/api/stream?pattern=P&after=ID` | the SSE stream (below); unknown parameters are a 400 |
//!
//! An *item* is `{"id": N, "source": "<source name>", "event": <the event
//! as the journal writes it: event_id, event_type, timestamp, seq, data,
//! correlation_id, causation_id, run_id, source, ...>}`. `id` is the
//! dashboard's own number, from 1, in the order events reached it (several
//! sources have several `seq` series; the id is one).
//!
//! ## The SSE stream
//!
//! Named events, in this order on every connection:
//!
//! 1. `hello`: `{"instance", "resumed_after", "last_id", "first_retained_id"}`.
//!    `instance` is random per server start.
//! 2. `reset` (only when `Last-Event-ID` came from another server
//!    instance): `{"reason"}`; the history then follows from the start.
//! 3. `summary`: the summary JSON (also sent with `retry: 1000`).
//! 4. `missed` when events after the resume point are no longer retained:
//!    `{"count", "first", "last", "reason": "evicted", "message"}`.
//! 5. `event` for each retained event after the resume point, oldest
//!    first, then `caught-up`: `{"last_id"}`: the history is done.
//! 6. Live: `event` as they come, `summary` when it changed (at most four
//!    times a second), and `missed` `{"count", "first", "last", "reason":
//!    "slow_client", "message"}` when this client fell more than
//!    `client_queue` events behind and lost them.
//!
//! Each `event` has the SSE id `<instance>-<id>`. A client that reconnects
//! with `Last-Event-ID` (browsers do it by themselves) or `?after=` gets
//! exactly the events after it: no loss, no repeat. An id of another
//! instance means the server restarted (see `reset`); an id ahead of the
//! server, or not of this form, is a 400. The `pattern` filter applies to
//! `event` only.
//!
//! ## The summary
//!
//! `{"instance", "last_id", "events": <count>, "runs": [run...], "counts":
//! {"<event type>": n}, "losses": {"events_dropped", "handler_errors",
//! "journal_errors", "journal_gaps", "dead_letters"} (from the `system.*`
//! events), "sources": [{"name", "kind": "bus"|"journal", "status",
//! "events", "damaged_lines", "missed", "duplicates_skipped", "bus": {the
//! bus's counters, and `dead_letters` when a queue was given}}],
//! "retained": {"events", "capacity", "first_id", "evicted"}, "clients":
//! {"connected", "missed", "queue"}}`.
//!
//! A run: `{"key", "run_id", "source", "status": "running"|"completed"|
//! "stopped", "reason", "ended_by", "started_at", "ended_at", "last_at",
//! "total", "processed", "succeeded", "failed", "success_rate",
//! "throughput" (items/s), "eta_seconds", "warning_threshold",
//! "checkpoint_threshold", "checkpoint": {"at", "threshold",
//! "success_rate", "passed"} | null, "warnings", "events", "series":
//! [[item, rate]...]}`.
//!
//! Runs are found as `nerve::run` says: a `<prefix>.started` event naming a
//! run opens it; `<prefix>.completed` (or `.ended`) completes it; another
//! end action (`.failed`, `.stopped`, `.cancelled`, `.aborted`,
//! `.interrupted`) or `system.interrupted` stops it, the reason taken from
//! the end event's `message`, `reason` or `error`, else the failed
//! checkpoint's. Items are events matching the success and failure
//! patterns (`*.completed` / `*.failed` by default) other than the run's
//! own start and end events. `validation.checkpoint` and
//! `validation.warning` events set the thresholds drawn.
//!
//! ## The page's element ids
//!
//! Stable for tests: `#runs` (the runs list), each run `[data-testid=run]`
//! with `data-run` = its key and `data-status`, inside it
//! `[data-testid=run-status]`, `[data-testid=run-reason]`,
//! `[data-testid=run-chart]` (an inline SVG), `[data-testid=run-rate]`,
//! `[data-testid=run-throughput]`, `[data-testid=run-eta]`;
//! `#counts` (counts by type), `#losses` (drops and dead letters),
//! `#sources`, `#connection` (`data-state` = `connecting`, `history`,
//! `live` or `error`), `#notices` (missed events and resets);
//! `#filter` (the pattern input, `data-valid` = `true`/`false`),
//! `#events` (the table), its body `#event-rows` whose rows are
//! `[data-testid=event-row]` with `data-id` and `data-type`;
//! `#detail` (the event panel) with `#detail-json` (the full JSON, as text),
//! and `#chain` (the correlation chain) whose rows are
//! `[data-testid=chain-row]` with `data-id`, and `data-cause` naming the
//! id of the event that caused it.
//!
//! # Supported Rust versions
//!
//! The minimum supported Rust version is 1.85 (edition 2024).

/// The README's example, compiled as a doctest: the crate used without the
/// `nerve` facade, as its own dependency.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod dashboard;
mod hub;
mod server;
mod source;
mod summary;

pub use dashboard::{Dashboard, DashboardBuilder, ServeError, serve};
