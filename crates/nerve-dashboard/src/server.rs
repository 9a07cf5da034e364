//! The HTTP side: the page, the JSON API, the SSE stream, and the guard in
//! front of them (bearer token, loopback host check, security headers).

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::Stream;
use nerve_core::Pattern;
use serde::Deserialize;
use tokio::sync::{broadcast, watch};

use crate::hub::{Entry, Hub};

/// The page and its assets, in the binary.
const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// The cookie the page's token is kept in once given as `/?token=`.
pub(crate) const TOKEN_COOKIE: &str = "nerve_dashboard_token";

/// `GET /api/events` answers at most this many events, 1,000 by default.
const MAX_LIMIT: usize = 10_000;
const DEFAULT_LIMIT: usize = 1_000;

/// How often an idle stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Ask browsers to reconnect after this long (SSE `retry`).
const RETRY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) hub: Arc<Hub>,
    pub(crate) token: Option<Arc<str>>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/app.css", get(app_css))
        .route("/healthz", get(healthz))
        .route("/api/summary", get(summary))
        .route("/api/events", get(events))
        .route("/api/events/{id}", get(event_by_id))
        .route("/api/events/{id}/chain", get(chain))
        .route("/api/stream", get(stream))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

// ----- errors -----

/// A JSON error: `{"error": "..."}` with its status.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no such page: {method} {}; the dashboard serves /, /api/summary, /api/events, /api/events/{{id}}, /api/events/{{id}}/chain and /api/stream",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} {} is not allowed: the dashboard is read-only (GET)",
            uri.path()
        ),
    )
}

/// A query string the handler could not read, as a clear 400.
fn bad_query(e: axum::extract::rejection::QueryRejection) -> Response {
    let text = e.body_text();
    let text = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&text);
    error(StatusCode::BAD_REQUEST, format!("bad query: {text}"))
}

fn parse_pattern(p: Option<&str>) -> Result<Option<Pattern>, Response> {
    match p.map(str::trim).filter(|p| !p.is_empty()) {
        None => Ok(None),
        Some(p) => Pattern::parse(p)
            .map(Some)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad pattern: {e}"))),
    }
}

// ----- guard -----

/// Token check, host check (against DNS rebinding when there is no token)
/// and the security headers every answer carries.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = match check(&state, &request) {
        Ok(None) => next.run(request).await,
        Ok(Some(redirect)) => redirect,
        Err(refusal) => refusal,
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// `Ok(None)`: let the request through; `Ok(Some(r))`: answer `r` (the
/// token given in the page's URL, kept in a cookie); `Err(r)`: refused.
fn check(state: &AppState, request: &Request) -> Result<Option<Response>, Response> {
    let headers = request.headers();
    let Some(token) = state.token.as_deref() else {
        return check_host(headers).map(|()| None);
    };
    if bearer(headers).is_some_and(|t| same(t, token))
        || cookie(headers, TOKEN_COOKIE).is_some_and(|t| same(t, token))
    {
        return Ok(None);
    }
    // `/?token=...`: the link the server printed. The token moves into an
    // HttpOnly cookie and the address bar loses it.
    if request.uri().path() == "/" {
        if let Some(given) = request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
        {
            if same(given, token) {
                let cookie = format!("{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
                let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
                return Ok(Some(r));
            }
        }
    }
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "this dashboard needs its token: send `Authorization: Bearer <token>`, or open the link with ?token=<token> that `nerve serve` printed",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"nerve-dashboard\""),
    );
    Err(r)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Compares in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Without a token the server is bound to loopback; a page on another site
/// could still reach it through DNS rebinding, so only loopback host names
/// are answered.
fn check_host(headers: &HeaderMap) -> Result<(), Response> {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return Ok(()); // HTTP/1.0 without Host: not a browser.
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(error(
            StatusCode::FORBIDDEN,
            format!(
                "host {host:?} refused: without a token this dashboard answers only to localhost names; bind to another address with a token to share it"
            ),
        ))
    }
}

// ----- page -----

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
        .into_response()
}

async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

async fn app_css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS).into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

// ----- API -----

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn summary(State(state): State<AppState>) -> Response {
    state.hub.publish_summary();
    let text = state.hub.summary().borrow().clone();
    json_response(text.to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    after: Option<u64>,
    limit: Option<usize>,
    pattern: Option<String>,
    run: Option<String>,
    correlation: Option<String>,
}

async fn events(
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    let pattern = match parse_pattern(q.pattern.as_deref()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return error(
            StatusCode::BAD_REQUEST,
            format!("bad query: limit must be from 1 to {MAX_LIMIT}, got {limit}"),
        );
    }
    let after = q.after.unwrap_or(0);
    let history = state.hub.history();
    let first_id = history.front().map(|e| e.id);
    let last_id = state.hub.last_id();
    let mut items = Vec::new();
    for e in history.iter().filter(|e| e.id > after) {
        if !pattern
            .as_ref()
            .is_none_or(|p| p.matches(e.event.event_type()))
        {
            continue;
        }
        if let Some(run) = &q.run {
            if nerve_core::run::explicit_run_id(&e.event) != Some(run.as_str()) {
                continue;
            }
        }
        if let Some(c) = &q.correlation {
            if e.event.correlation_id().map(|c| c.as_str()) != Some(c.as_str()) {
                continue;
            }
        }
        items.push(e.json.clone());
        if items.len() == limit {
            break;
        }
    }
    let list = items.iter().map(|j| &**j).collect::<Vec<_>>().join(",");
    json_response(format!(
        "{{\"first_id\":{},\"last_id\":{last_id},\"events\":[{list}]}}",
        first_id.map_or("null".to_owned(), |i| i.to_string())
    ))
}

fn parse_id(state: &AppState, id: &str) -> Result<Arc<Entry>, Response> {
    let n: u64 = id.parse().map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad event id {id:?}: a dashboard id is a whole number (the `id` of an event in /api/events)"),
        )
    })?;
    state.hub.get(n).ok_or_else(|| {
        let history = state.hub.history();
        let range = match (history.front(), history.back()) {
            (Some(a), Some(b)) => format!("ids {}..={} are retained", a.id, b.id),
            _ => "no event has been seen yet".to_owned(),
        };
        error(StatusCode::NOT_FOUND, format!("no event {n}: {range}"))
    })
}

async fn event_by_id(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match parse_id(&state, &id) {
        Ok(e) => json_response(e.json.to_string()),
        Err(r) => r,
    }
}

/// The event's correlation chain: every retained event sharing its
/// correlation id, and the events its causation ids lead back to, oldest
/// first, with the causation links between them.
async fn chain(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let entry = match parse_id(&state, &id) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let history = state.hub.history();
    let by_event_id: HashMap<nerve_core::EventId, &Arc<Entry>> =
        history.iter().map(|e| (e.event.event_id(), e)).collect();
    let correlation = entry.event.correlation_id().cloned();
    let mut members: HashSet<u64> = HashSet::new();
    if let Some(c) = &correlation {
        members.extend(
            history
                .iter()
                .filter(|e| e.event.correlation_id() == Some(c))
                .map(|e| e.id),
        );
    }
    members.insert(entry.id);
    // Causes outside the correlation (a handler that changed it) are
    // followed too, as far as the history reaches.
    let mut missing = Vec::new();
    let mut todo: VecDeque<Arc<Entry>> = VecDeque::from([entry.clone()]);
    let mut visited = HashSet::new();
    while let Some(e) = todo.pop_front() {
        if !visited.insert(e.id) {
            continue;
        }
        if let Some(cause) = e.event.causation_id() {
            match by_event_id.get(&cause) {
                Some(c) => {
                    members.insert(c.id);
                    todo.push_back((*c).clone());
                }
                None => missing.push(cause.to_string()),
            }
        }
    }
    let mut chain: Vec<&Arc<Entry>> = history.iter().filter(|e| members.contains(&e.id)).collect();
    chain.sort_by_key(|e| e.id);
    let links: Vec<serde_json::Value> = chain
        .iter()
        .filter_map(|e| {
            let cause = by_event_id.get(&e.event.causation_id()?)?;
            Some(serde_json::json!({ "cause": cause.id, "effect": e.id }))
        })
        .collect();
    let list = chain.iter().map(|e| &*e.json).collect::<Vec<_>>().join(",");
    let head = serde_json::json!({
        "id": entry.id,
        "correlation_id": correlation.as_ref().map(|c| c.as_str()),
        "links": links,
        "missing_causes": missing,
    })
    .to_string();
    // `head` ends with `}`: the events go in before it.
    json_response(format!("{},\"events\":[{list}]}}", &head[..head.len() - 1]))
}

// ----- the stream -----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    pattern: Option<String>,
    /// Resume after this id, like `Last-Event-ID` (which wins if both).
    after: Option<String>,
}

/// Where a client resumes.
enum Resume {
    /// From the start of the retained history.
    Start,
    /// After this id of this server.
    After(u64),
    /// The id came from another server (a restart): from the start, after a
    /// `reset` notice.
    OtherServer,
}

fn parse_resume(instance: &str, text: &str, last_id: u64) -> Result<Resume, String> {
    let text = text.trim();
    let (from, n) = match text.rsplit_once('-') {
        Some((i, n)) => (Some(i), n),
        None => (None, text),
    };
    let n: u64 = n.parse().map_err(|_| {
        format!(
            "bad Last-Event-ID {text:?}: expected `<server>-<n>` as the stream sent it, or a number"
        )
    })?;
    if from.is_some_and(|i| i != instance) {
        return Ok(Resume::OtherServer);
    }
    if n > last_id {
        return Err(format!(
            "Last-Event-ID {text:?} is ahead of this dashboard, whose last id is {last_id}"
        ));
    }
    Ok(Resume::After(n))
}

async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    let pattern = match parse_pattern(q.pattern.as_deref()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let join = state.hub.join();
    let given = match headers.get("last-event-id") {
        Some(v) => match v.to_str() {
            Ok(s) => Some(s.to_owned()),
            Err(_) => {
                return error(StatusCode::BAD_REQUEST, "bad Last-Event-ID: not text");
            }
        },
        None => q.after.clone(),
    };
    let resume = match given.as_deref().filter(|s| !s.trim().is_empty()) {
        None => Resume::Start,
        Some(text) => match parse_resume(&state.hub.instance, text, join.last_id) {
            Ok(r) => r,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        },
    };
    let client = Client::new(
        state.hub.clone(),
        join,
        resume,
        pattern,
        state.shutdown.clone(),
    );
    Sse::new(client.into_stream())
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// One connected client, as a state machine: hello, summary, missed notice
/// (events before the retained history), history, `caught-up`, then live
/// events and summaries.
struct Client {
    hub: Arc<Hub>,
    out: VecDeque<SseEvent>,
    history: imbl::Vector<Arc<Entry>>,
    next_in_history: usize,
    after: u64,
    live: broadcast::Receiver<Arc<Entry>>,
    summary: watch::Receiver<Arc<str>>,
    pattern: Option<Pattern>,
    shutdown: watch::Receiver<bool>,
    caught_up: bool,
    /// The id of the last event taken from the history or the live queue,
    /// whether or not the filter let it through.
    position: u64,
    /// The last id when the client joined: where the history ends.
    joined_last: u64,
}

/// Counts the client as connected while it lives.
impl Drop for Client {
    fn drop(&mut self) {
        self.hub.clients.fetch_sub(1, Ordering::Relaxed);
        self.hub.touch();
    }
}

impl Client {
    fn new(
        hub: Arc<Hub>,
        join: crate::hub::Join,
        resume: Resume,
        pattern: Option<Pattern>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        hub.clients.fetch_add(1, Ordering::Relaxed);
        hub.touch();
        hub.publish_summary();
        let mut summary = hub.summary();
        let first_summary = summary.borrow_and_update().clone();
        let first_id = join.history.front().map_or(join.last_id + 1, |e| e.id);
        let mut out = VecDeque::new();
        let after = match resume {
            Resume::Start => 0,
            Resume::After(n) => n,
            Resume::OtherServer => {
                out.push_back(notice(
                    "reset",
                    serde_json::json!({"reason": "the stream's ids came from another server (it restarted): the history follows from the start"}),
                ));
                0
            }
        };
        out.push_front(notice(
            "hello",
            serde_json::json!({
                "instance": hub.instance,
                "resumed_after": after,
                "last_id": join.last_id,
                "first_retained_id": first_id,
            }),
        ));
        out.push_back(
            SseEvent::default()
                .event("summary")
                .data(&*first_summary)
                .retry(RETRY),
        );
        // Events after `after` that the history no longer holds.
        if first_id > after + 1 && join.last_id > 0 {
            let count = first_id - 1 - after;
            hub.missed_by_clients.fetch_add(count, Ordering::Relaxed);
            out.push_back(notice(
                "missed",
                serde_json::json!({
                    "count": count,
                    "first": after + 1,
                    "last": first_id - 1,
                    "reason": "evicted",
                    "message": format!("missed {count} events: older than the {} events this dashboard retains", join.history.len()),
                }),
            ));
        }
        let next_in_history = usize::try_from(after.saturating_sub(first_id - 1))
            .unwrap_or(usize::MAX)
            .min(join.history.len());
        Self {
            hub,
            out,
            history: join.history,
            next_in_history,
            after,
            live: join.live,
            summary,
            pattern,
            shutdown,
            caught_up: false,
            position: after,
            joined_last: join.last_id,
        }
    }

    fn wants(&self, e: &Entry) -> bool {
        self.pattern
            .as_ref()
            .is_none_or(|p| p.matches(e.event.event_type()))
    }

    fn event(&self, e: &Entry) -> SseEvent {
        SseEvent::default()
            .event("event")
            .id(format!("{}-{}", self.hub.instance, e.id))
            .data(&*e.json)
    }

    fn into_stream(self) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send {
        futures::stream::unfold(self, |mut c| async move {
            let item = c.next().await?;
            Some((Ok(item), c))
        })
    }

    async fn next(&mut self) -> Option<SseEvent> {
        if let Some(e) = self.out.pop_front() {
            return Some(e);
        }
        while self.next_in_history < self.history.len() {
            let e = self.history[self.next_in_history].clone();
            self.next_in_history += 1;
            self.position = self.position.max(e.id);
            if e.id > self.after && self.wants(&e) {
                return Some(self.event(&e));
            }
        }
        if !self.caught_up {
            self.caught_up = true;
            self.history = imbl::Vector::new();
            let last = self.joined_last.max(self.after);
            return Some(notice("caught-up", serde_json::json!({ "last_id": last })));
        }
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => return None,
                changed = self.summary.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    let text = self.summary.borrow_and_update().clone();
                    return Some(SseEvent::default().event("summary").data(&*text));
                }
                got = self.live.recv() => match got {
                    Ok(e) => {
                        if e.id <= self.position {
                            continue;
                        }
                        self.position = e.id;
                        if self.wants(&e) {
                            return Some(self.event(&e));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.hub.missed_by_clients.fetch_add(n, Ordering::Relaxed);
                        self.hub.touch();
                        let first = self.position + 1;
                        self.position += n;
                        return Some(notice("missed", serde_json::json!({
                            "count": n,
                            "first": first,
                            "last": first + n - 1,
                            "reason": "slow_client",
                            "message": format!("missed {n} events: this page fell more than the client queue behind the live stream"),
                        })));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }
}

fn notice(kind: &str, data: serde_json::Value) -> SseEvent {
    SseEvent::default().event(kind).data(data.to_string())
}
