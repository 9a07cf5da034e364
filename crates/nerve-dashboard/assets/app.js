// The nerve dashboard's page. No framework, no build step, no third-party
// code. Event data is untrusted: it only ever reaches the page as text
// (textContent, attribute values), never as markup.
"use strict";

(function () {
  const MAX_EVENTS = 20000; // kept in the page for the filter
  const MAX_ROWS = 1000; // rows drawn in the table
  const SVG = "http://www.w3.org/2000/svg";

  const state = {
    events: [], // items {id, source, event}, oldest first
    byId: new Map(),
    summary: null,
    pattern: null, // compiled filter, null = all
    selected: null,
    live: false,
    dirtyRows: false,
    dirtySummary: false,
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v !== undefined && v !== null) e.setAttribute(k, String(v));
      }
    }
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }

  // ----- patterns, as nerve's Pattern matches them -----

  function compilePattern(text) {
    const t = text.trim();
    if (t === "" || t === "*") return { ok: true, match: null };
    const segments = t.split(".");
    for (const s of segments) {
      if (s === "") return { ok: false, message: "empty segment (two dots, or a dot at an end)" };
      if (s !== "*" && s.includes("*")) return { ok: false, message: "`*` must be a whole segment" };
      if (/\s/.test(s)) return { ok: false, message: "no spaces in a pattern" };
    }
    const match = (type) => {
      const parts = type.split(".");
      for (let i = 0; i < segments.length; i++) {
        const s = segments[i];
        const last = i === segments.length - 1;
        if (s === "*" && last) return parts.length >= segments.length;
        if (i >= parts.length) return false;
        if (s !== "*" && s !== parts[i]) return false;
      }
      return parts.length === segments.length;
    };
    return { ok: true, match };
  }

  function wanted(item) {
    return !state.pattern || state.pattern(item.event.event_type || "");
  }

  // ----- formatting -----

  function pct(x) {
    return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %";
  }

  function duration(s) {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (h > 0) return h + " h " + m + " min";
    if (m > 0) return m + " min " + sec + " s";
    return sec + " s";
  }

  function rate(x) {
    if (x === null || x === undefined) return "–";
    return x >= 10 ? x.toFixed(0) + "/s" : x >= 1 ? x.toFixed(1) + "/s" : (x * 60).toFixed(1) + "/min";
  }

  function time(ts) {
    if (!ts) return "";
    const i = ts.indexOf("T");
    return i >= 0 ? ts.slice(i + 1, i + 13) : ts;
  }

  function runOf(ev) {
    if (ev.run_id) return ev.run_id;
    if (ev.data && typeof ev.data === "object" && typeof ev.data.run_id === "string") return ev.data.run_id;
    return "";
  }

  function short(value, n) {
    let t;
    try {
      t = JSON.stringify(value);
    } catch (e) {
      t = String(value);
    }
    if (t === undefined) t = "";
    return t.length > n ? t.slice(0, n) + "…" : t;
  }

  // ----- notices -----

  function notice(text, kind) {
    const li = el("li", { "data-testid": "notice", "data-kind": kind }, text);
    $("notices").prepend(li);
    while ($("notices").children.length > 5) $("notices").lastElementChild.remove();
  }

  function setConnection(s, text) {
    const c = $("connection");
    c.dataset.state = s;
    c.textContent = text;
  }

  // ----- runs -----

  function chart(run) {
    const W = 360, H = 130, L = 34, R = 8, T = 8, B = 20;
    const w = W - L - R, h = H - T - B;
    const series = run.series || [];
    const lastItem = series.length ? series[series.length - 1][0] : 0;
    const maxX = Math.max(run.total || 0, lastItem, (run.checkpoint && run.checkpoint.at) || 0, 1);
    const x = (n) => L + (w * n) / maxX;
    const y = (r) => T + h * (1 - r);
    const s = svg("svg", {
      viewBox: "0 0 " + W + " " + H,
      class: "chart",
      role: "img",
      "data-testid": "run-chart",
      "aria-label": "success rate over items",
    });
    s.appendChild(svg("line", { x1: L, y1: T, x2: L, y2: T + h, class: "axis" }));
    s.appendChild(svg("line", { x1: L, y1: T + h, x2: L + w, y2: T + h, class: "axis" }));
    for (const r of [0, 0.5, 1]) {
      const t = svg("text", { x: L - 4, y: y(r) + 3, "text-anchor": "end" });
      t.textContent = (r * 100).toFixed(0) + "%";
      s.appendChild(t);
    }
    const t0 = svg("text", { x: L, y: H - 6 });
    t0.textContent = "0";
    s.appendChild(t0);
    const t1 = svg("text", { x: L + w, y: H - 6, "text-anchor": "end" });
    t1.textContent = maxX + (run.total ? " items" : "");
    s.appendChild(t1);
    const thresholds = [
      ["warning", run.warning_threshold, "warning " + pct(run.warning_threshold)],
      ["checkpoint", run.checkpoint_threshold, "checkpoint " + pct(run.checkpoint_threshold)],
    ];
    for (const [cls, value, label] of thresholds) {
      if (typeof value !== "number") continue;
      const line = svg("line", { x1: L, y1: y(value), x2: L + w, y2: y(value), class: cls, "data-testid": "threshold-" + cls });
      const title = svg("title", {});
      title.textContent = label;
      line.appendChild(title);
      s.appendChild(line);
    }
    if (run.checkpoint) {
      const cx = x(run.checkpoint.at);
      s.appendChild(svg("line", { x1: cx, y1: T, x2: cx, y2: T + h, class: "checkpoint-at" }));
      const dot = svg("circle", {
        cx: cx,
        cy: y(run.checkpoint.success_rate),
        r: 4,
        class: run.checkpoint.passed ? "dot-passed" : "dot-failed",
        "data-testid": "checkpoint-marker",
      });
      const title = svg("title", {});
      title.textContent = "checkpoint at " + run.checkpoint.at + ": " + pct(run.checkpoint.success_rate) + (run.checkpoint.passed ? " (passed)" : " (failed)");
      dot.appendChild(title);
      s.appendChild(dot);
    }
    if (series.length) {
      const points = series.map(([n, r]) => x(n).toFixed(1) + "," + y(r).toFixed(1));
      if (series.length === 1) points.unshift(x(0).toFixed(1) + "," + y(series[0][1]).toFixed(1));
      s.appendChild(svg("polyline", { points: points.join(" "), class: "rate", "data-testid": "rate-line" }));
    }
    return s;
  }

  function stat(label, value, testid) {
    const d = el("div");
    d.appendChild(el("span", { class: "k" }, label));
    d.appendChild(el("span", { "data-testid": testid }, value));
    return d;
  }

  function renderRuns(runs) {
    const box = $("runs");
    if (!runs.length) return;
    box.replaceChildren();
    // Running first, then the most recent.
    const sorted = runs.slice().sort((a, b) => {
      const ra = a.status === "running" ? 0 : 1, rb = b.status === "running" ? 0 : 1;
      if (ra !== rb) return ra - rb;
      return String(b.started_at || "").localeCompare(String(a.started_at || ""));
    });
    for (const run of sorted) {
      const card = el("article", { class: "run", "data-testid": "run", "data-run": run.key, "data-status": run.status });
      const head = el("div", { class: "run-head" });
      head.appendChild(el("span", { class: "run-name", "data-testid": "run-name" }, run.key));
      const label = run.status === "stopped" ? "stopped early" : run.status;
      head.appendChild(el("span", { class: "status status-" + run.status, "data-testid": "run-status", "data-status": run.status }, label));
      card.appendChild(head);
      if (run.reason) card.appendChild(el("p", { class: "reason", "data-testid": "run-reason" }, run.reason));
      const stats = el("div", { class: "stats" });
      stats.appendChild(stat("items", run.processed + (run.total ? " / " + run.total : ""), "run-items"));
      stats.appendChild(stat("success", pct(run.success_rate), "run-rate"));
      stats.appendChild(stat("throughput", rate(run.throughput), "run-throughput"));
      stats.appendChild(stat(run.status === "running" ? "ETA" : "ended", run.status === "running" ? duration(run.eta_seconds) : time(run.ended_at), "run-eta"));
      card.appendChild(stats);
      card.appendChild(chart(run));
      card.appendChild(el("p", { class: "note" }, "source " + run.source + " · " + run.events + " events · " + run.failed + " failed" + (run.warnings ? " · " + run.warnings + " warnings" : "")));
      box.appendChild(card);
    }
  }

  function renderCounts(counts) {
    const body = $("counts").tBodies[0];
    body.replaceChildren();
    const rows = Object.entries(counts || {}).sort((a, b) => b[1] - a[1]);
    for (const [type, n] of rows) {
      const tr = el("tr", { "data-testid": "count-row", "data-type": type });
      tr.appendChild(el("td", { class: "mono" }, type));
      tr.appendChild(el("td", { class: "num" }, n));
      body.appendChild(tr);
    }
  }

  function renderLosses(s) {
    const dl = $("losses");
    dl.replaceChildren();
    const add = (label, n, key) => {
      dl.appendChild(el("dt", null, label));
      dl.appendChild(el("dd", { class: n > 0 ? "nonzero" : "", "data-testid": "loss-" + key }, n));
    };
    const l = s.losses || {};
    add("events dropped (reported)", l.events_dropped || 0, "events-dropped");
    add("handler errors", l.handler_errors || 0, "handler-errors");
    add("dead letters (reported)", l.dead_letters || 0, "dead-letters");
    add("journal errors", l.journal_errors || 0, "journal-errors");
    add("journal gaps", l.journal_gaps || 0, "journal-gaps");
    let busDropped = 0, notRecorded = 0, held = null, streamMissed = 0, damaged = 0;
    for (const src of s.sources || []) {
      streamMissed += src.missed || 0;
      damaged += src.damaged_lines || 0;
      if (src.bus) {
        busDropped += src.bus.dropped || 0;
        notRecorded += src.bus.not_recorded || 0;
        if (src.bus.dead_letters) held = (held || 0) + src.bus.dead_letters.held;
      }
    }
    add("dropped by bus queues", busDropped, "bus-dropped");
    add("not confirmed by an export", notRecorded, "not-recorded");
    if (held !== null) add("dead letters held", held, "dead-letters-held");
    add("missed by the dashboard's feeds", streamMissed, "feed-missed");
    add("damaged journal lines", damaged, "damaged-lines");
    add("missed by slow pages", (s.clients && s.clients.missed) || 0, "clients-missed");
  }

  function renderSources(s) {
    const ul = $("sources");
    ul.replaceChildren();
    for (const src of s.sources || []) {
      ul.appendChild(el("li", { "data-testid": "source", "data-kind": src.kind }, src.kind + " " + src.name + ": " + src.status + ", " + src.events + " events"));
    }
    const r = s.retained || {};
    $("totals").textContent = (s.events || 0) + " events · " + ((s.clients && s.clients.connected) || 0) + " watching";
    $("events-note").textContent =
      "The server keeps the last " + (r.capacity || 0) + " events for late joiners (" + (r.evicted || 0) + " older ones left out); the summaries above cover all " + (s.events || 0) + ".";
  }

  function renderSummary() {
    state.dirtySummary = false;
    const s = state.summary;
    if (!s) return;
    renderRuns(s.runs || []);
    renderCounts(s.counts);
    renderLosses(s);
    renderSources(s);
  }

  // ----- the event table -----

  function row(item) {
    const ev = item.event || {};
    const type = String(ev.event_type || "");
    const cls = type.endsWith(".failed") ? "t-failed" : type.startsWith("system.") ? "t-system" : "";
    const tr = el("tr", { "data-testid": "event-row", "data-id": item.id, "data-type": type, class: cls });
    if (state.selected === item.id) tr.classList.add("selected");
    tr.appendChild(el("td", { class: "num" }, item.id));
    tr.appendChild(el("td", { class: "mono" }, time(ev.timestamp)));
    tr.appendChild(el("td", { class: "type mono" }, type));
    tr.appendChild(el("td", null, runOf(ev)));
    tr.appendChild(el("td", null, item.source));
    tr.appendChild(el("td", { class: "corr mono", title: ev.correlation_id || "" }, ev.correlation_id || ""));
    tr.appendChild(el("td", { class: "data" }, short(ev.data, 160)));
    return tr;
  }

  function renderRows() {
    state.dirtyRows = false;
    const body = $("event-rows");
    const shown = [];
    for (let i = state.events.length - 1; i >= 0 && shown.length < MAX_ROWS; i--) {
      if (wanted(state.events[i])) shown.push(state.events[i]);
    }
    const frag = document.createDocumentFragment();
    for (const item of shown) frag.appendChild(row(item));
    body.replaceChildren(frag);
  }

  function add(item) {
    state.events.push(item);
    state.byId.set(item.id, item);
    if (state.events.length > MAX_EVENTS) {
      const old = state.events.shift();
      state.byId.delete(old.id);
    }
    if (wanted(item)) state.dirtyRows = true;
  }

  // ----- detail and chain -----

  async function getJson(url) {
    const r = await fetch(url, { credentials: "same-origin" });
    const body = await r.json().catch(() => ({ error: "not JSON (" + r.status + ")" }));
    if (!r.ok) throw new Error(body.error || "HTTP " + r.status);
    return body;
  }

  async function openEvent(id) {
    state.selected = id;
    for (const tr of $("event-rows").children) tr.classList.toggle("selected", tr.dataset.id === String(id));
    const panel = $("detail");
    panel.hidden = false;
    $("detail-id").textContent = "#" + id;
    const local = state.byId.get(id);
    $("detail-json").textContent = local ? JSON.stringify(local.event, null, 2) : "loading…";
    $("chain").replaceChildren();
    $("chain-note").textContent = "loading…";
    try {
      const item = local || (await getJson("/api/events/" + id));
      $("detail-json").textContent = JSON.stringify(item.event, null, 2);
      const chain = await getJson("/api/events/" + id + "/chain");
      renderChain(chain, id);
    } catch (e) {
      $("chain-note").textContent = "cannot load: " + e.message;
    }
  }

  function renderChain(chain, id) {
    const causeOf = new Map();
    for (const l of chain.links || []) causeOf.set(l.effect, l.cause);
    $("chain-id").textContent = chain.correlation_id ? "(correlation " + chain.correlation_id + ")" : "(no correlation id)";
    const ol = $("chain");
    ol.replaceChildren();
    for (const item of chain.events || []) {
      const ev = item.event || {};
      const cause = causeOf.get(item.id);
      const li = el("li", {
        "data-testid": "chain-row",
        "data-id": item.id,
        "data-cause": cause === undefined ? null : cause,
        class: item.id === id ? "current" : "",
      });
      li.appendChild(el("span", { class: "mono" }, "#" + item.id + " " + (ev.event_type || "") + " "));
      li.appendChild(el("span", { class: "note" }, time(ev.timestamp)));
      if (cause !== undefined) li.appendChild(el("span", { class: "cause" }, " ← caused by #" + cause));
      li.addEventListener("click", () => openEvent(item.id));
      ol.appendChild(li);
    }
    const missing = (chain.missing_causes || []).length;
    $("chain-note").textContent =
      (chain.events || []).length + " events" + (missing ? "; " + missing + " causes are older than the retained history" : "");
  }

  // ----- the stream -----

  function connect() {
    setConnection("connecting", "connecting…");
    const source = new EventSource("/api/stream");
    source.addEventListener("hello", (m) => {
      const h = JSON.parse(m.data);
      setConnection("history", "loading history…");
      if (state.instance && state.instance !== h.instance) {
        // Another server: its ids start again.
        state.events = [];
        state.byId.clear();
        state.dirtyRows = true;
      }
      state.instance = h.instance;
    });
    source.addEventListener("reset", (m) => {
      const r = JSON.parse(m.data);
      state.events = [];
      state.byId.clear();
      state.dirtyRows = true;
      notice(r.reason, "reset");
      schedule();
    });
    source.addEventListener("summary", (m) => {
      state.summary = JSON.parse(m.data);
      state.dirtySummary = true;
      schedule();
    });
    source.addEventListener("event", (m) => {
      add(JSON.parse(m.data));
      schedule();
    });
    source.addEventListener("missed", (m) => {
      const x = JSON.parse(m.data);
      notice(x.message + " (ids " + x.first + "–" + x.last + ")", "missed");
    });
    source.addEventListener("caught-up", () => {
      setConnection("live", "live");
      state.dirtyRows = true;
      frame();
    });
    source.onerror = () => {
      // The browser reconnects by itself with Last-Event-ID.
      setConnection(source.readyState === EventSource.CLOSED ? "error" : "connecting", source.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…");
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
    };
  }

  // Drawn at most ten times a second however fast events come: at once
  // when the last drawing is old enough, else by a timer.
  let lastDraw = 0;
  let timer = null;
  function frame() {
    timer = null;
    lastDraw = Date.now();
    if (state.dirtySummary) renderSummary();
    if (state.dirtyRows) renderRows();
  }
  function schedule() {
    if (timer !== null) return;
    const wait = 100 - (Date.now() - lastDraw);
    if (wait <= 0) frame();
    else timer = setTimeout(frame, wait);
  }

  function init() {
    const filter = $("filter");
    const fromUrl = new URLSearchParams(location.search).get("pattern");
    if (fromUrl) filter.value = fromUrl;
    const apply = () => {
      const p = compilePattern(filter.value);
      filter.dataset.valid = String(p.ok);
      $("filter-message").textContent = p.ok ? "" : "bad pattern: " + p.message;
      if (p.ok) {
        state.pattern = p.match;
        state.dirtyRows = true;
        schedule();
      }
    };
    filter.addEventListener("input", apply);
    apply();
    $("event-rows").addEventListener("click", (e) => {
      const tr = e.target.closest("tr[data-id]");
      if (tr) openEvent(Number(tr.dataset.id));
    });
    $("detail-close").addEventListener("click", () => {
      $("detail").hidden = true;
      state.selected = null;
      state.dirtyRows = true;
      schedule();
    });
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
