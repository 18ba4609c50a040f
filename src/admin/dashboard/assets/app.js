// Eventyard's dashboard: plain JavaScript, no framework, no build step.
// Data comes from the admin endpoints (fetch with the pasted admin token) and from one
// WebSocket, /ui/live, opened with a one-use ticket: routed events and a stats frame
// every 2 s. Everything shown is put in the page as text (never as HTML): event bodies,
// plugin messages and type names are other people's input.
"use strict";

const TOKEN_KEY = "eventyard-admin-token";
const TAIL_MAX = 500;            // events kept in the tail (the oldest go first)
const CHART_WINDOW_MS = 5 * 60e3; // what a plugin chart shows
const RECONNECT_MS = 2000;       // wait before opening the live stream again
const PAGES = ["tail", "plugins", "dead-letters", "schemas", "workflows", "cluster"];

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY);
let socket = null;

// h("td", {class: "x"}, "text", child): an element with attributes and text or children.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") el.addEventListener("click", v);
    else if (v !== undefined && v !== null) el.setAttribute(k, v);
  }
  for (const c of children) el.append(c instanceof Node ? c : String(c ?? ""));
  return el;
}

function fill(el, children) {
  el.replaceChildren(...children);
}

async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + token, ...(options.headers || {}) };
  const res = await fetch(path, { ...options, headers });
  const body = res.status === 204 ? null : await res.json().catch(() => null);
  if (res.status === 401 || res.status === 403) {
    logout((body && body.message) || "the token was refused");
    throw new Error("unauthorized");
  }
  return { status: res.status, body };
}

function shortTime(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", "") : "";
}

// ---- login and navigation ----

async function login(candidate) {
  token = candidate;
  const res = await api("/v1/plugins").catch(() => null);
  if (!res || res.status !== 200) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("login").hidden = true;
  $("logout").hidden = false;
  connect();
  show();
}

function logout(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  if (socket) socket.close();
  $("login-error").textContent = why || "";
  $("login").hidden = false;
  $("logout").hidden = true;
  for (const p of PAGES) $("page-" + p).hidden = true;
}

function currentPage() {
  const p = location.hash.slice(1);
  return PAGES.includes(p) ? p : "tail";
}

function show() {
  if (!token) return;
  const page = currentPage();
  for (const p of PAGES) $("page-" + p).hidden = p !== page;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  ({ plugins: renderPlugins, "dead-letters": loadDeadLetters, schemas: loadSchemas,
     workflows: loadWorkflows, cluster: renderCluster })[page]?.();
}

// ---- the live stream ----

async function connect() {
  if (!token || (socket && socket.readyState <= WebSocket.OPEN)) return;
  let ticket;
  try {
    ticket = (await api("/ui/ticket", { method: "POST" })).body.ticket;
  } catch (e) {
    return setTimeout(connect, RECONNECT_MS);
  }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(`${scheme}//${location.host}/ui/live?ticket=${encodeURIComponent(ticket)}`);
  socket.onopen = () => setLive(true);
  socket.onclose = () => {
    setLive(false);
    socket = null;
    if (token) setTimeout(connect, RECONNECT_MS);
  };
  socket.onmessage = (m) => {
    const frame = JSON.parse(m.data);
    if (frame.stats) onStats(frame.stats);
    else if (frame.error === "lagged") $("tail-note").textContent = `missed ${frame.missed} events (too fast to show)`;
    else onEvent(frame);
  };
}

function setLive(on) {
  $("live").textContent = on ? "live" : "offline";
  $("live").className = "status " + (on ? "on" : "off");
}

// ---- tail ----

const tail = { events: [], paused: false, held: 0, filter: null, drawing: false };

// "infrahub/*, idem/idem-*" -> a RegExp; `*` crosses `/`, as the router's globs do.
function globs(text) {
  const parts = text.split(",").map((s) => s.trim()).filter(Boolean);
  if (!parts.length) return null;
  const esc = (s) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*");
  return new RegExp("^(" + parts.map(esc).join("|") + ")$");
}

function onEvent(e) {
  tail.events.unshift(e);
  if (tail.events.length > TAIL_MAX) tail.events.length = TAIL_MAX;
  if (/^fixinventory\/(task_started|progress|task_end)$/.test(e.type) && currentPage() === "workflows") loadWorkflows();
  if (tail.paused) {
    tail.held++;
    $("tail-note").textContent = `paused: ${tail.held} new`;
  } else if (!tail.drawing) {
    // At most one redraw per frame, however many events arrive in it.
    tail.drawing = true;
    requestAnimationFrame(() => {
      tail.drawing = false;
      renderTail();
    });
  }
}

function renderTail() {
  const rows = [];
  for (const e of tail.events) {
    if (tail.filter && !tail.filter.test(e.type)) continue;
    const detail = h("tr", { class: "detail", hidden: "" }, h("td", { colspan: 5 }, h("pre", {}, JSON.stringify(e.data, null, 2))));
    const row = h("tr", { class: "event", "data-id": e.id, "data-type": e.type, onclick: () => (detail.hidden = !detail.hidden) },
      h("td", {}, shortTime(e.time)), h("td", { class: "mono" }, e.type), h("td", { class: "mono" }, e.id),
      h("td", {}, e.priority), h("td", {}, e.source || ""));
    rows.push(row, detail);
  }
  fill($("tail-rows"), rows);
}

// ---- plugins and their charts ----

const samplesOf = new Map(); // plugin name -> [{t, calls, failures, count, sum}]
let lastStats = null;
let lettersSeen = null;

function onStats(s) {
  lastStats = s;
  const t = Date.parse(s.time);
  for (const p of s.plugins) {
    const samples = samplesOf.get(p.name) || [];
    const failures = Object.values(p.failures).reduce((a, b) => a + b, 0);
    samples.push({ t, calls: p.calls, failures, count: p.latency.count, sum: p.latency.sum_seconds });
    while (samples.length && samples[0].t < t - CHART_WINDOW_MS) samples.shift();
    samplesOf.set(p.name, samples);
  }
  const letters = s.dead_letters;
  $("dl-count").textContent = letters.count || "";
  const seen = letters.count + ":" + letters.newest;
  if (seen !== lettersSeen && lettersSeen !== null && currentPage() === "dead-letters") loadDeadLetters();
  lettersSeen = seen;
  if (currentPage() === "plugins") renderPlugins();
  if (currentPage() === "cluster") renderCluster();
}

// Rates between consecutive samples: calls/s, failures/s, mean latency (ms) of the calls made.
function series(samples) {
  const out = { calls: [], failures: [], latency: [] };
  for (let i = 1; i < samples.length; i++) {
    const [a, b] = [samples[i - 1], samples[i]];
    const secs = Math.max((b.t - a.t) / 1000, 0.001);
    const n = b.count - a.count;
    out.calls.push([b.t, (b.calls - a.calls) / secs]);
    out.failures.push([b.t, (b.failures - a.failures) / secs]);
    if (n > 0) out.latency.push([b.t, ((b.sum - a.sum) / n) * 1000]); // no calls: no latency
  }
  return out;
}

const SVG = "http://www.w3.org/2000/svg";
const CHART_MIN_SPAN_MS = 20e3; // a page open for seconds still draws a readable line

// A line of [time, value] points, scaled to its own maximum, over the last CHART_WINDOW_MS
// (or over the history there is, while the page has been open for less).
function sparkline(points, label, unit, cls) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 100 40");
  svg.setAttribute("preserveAspectRatio", "none");
  const now = points.length ? points[points.length - 1][0] : Date.now();
  const span = Math.min(CHART_WINDOW_MS, Math.max(CHART_MIN_SPAN_MS, points.length ? now - points[0][0] : 0));
  const max = Math.max(...points.map((p) => p[1]), 1e-9);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map(([t, v]) => {
    const x = 100 - ((now - t) / span) * 100;
    return `${x.toFixed(1)},${(38 - (v / max) * 36).toFixed(1)}`;
  }).join(" "));
  svg.append(line);
  const last = points.length ? points[points.length - 1][1] : 0;
  return h("div", { class: "chart " + cls }, `${label}: ${last.toFixed(last < 10 ? 2 : 0)} ${unit}`, svg);
}

function bytes(n) {
  return n >= 1 << 20 ? (n / (1 << 20)).toFixed(0) + " MiB" : n >= 1024 ? (n / 1024).toFixed(0) + " KiB" : n + " B";
}

function renderPlugins() {
  if (!lastStats) return;
  const cards = lastStats.plugins.map((p) => {
    const s = series(samplesOf.get(p.name) || []);
    const failures = Object.entries(p.failures).map(([k, n]) => `${k} ${n}`).join(", ") || "none";
    const mean = p.latency.count ? ((p.latency.sum_seconds / p.latency.count) * 1e6).toFixed(0) + " µs" : "–";
    const l = p.limits;
    const limits = `memory ${bytes(l.memory_bytes)}, deadline ${l.deadline_ms} ms, fuel ${l.fuel ?? "off"}, ` +
      `emits ≤ ${l.max_emits} / ${bytes(l.max_emit_bytes)}${l.strict ? ", strict" : ""}`;
    return h("div", { class: "card", "data-plugin": p.name },
      h("h3", {}, p.name, " ", h("span", { class: "note" }, p.world), p.circuit_open ? h("span", { class: "error" }, " circuit open") : ""),
      h("dl", {},
        h("dt", {}, "revision"), h("dd", { class: "mono" }, p.revision.slice(0, 16), ` (loaded ${shortTime(p.loaded_at)}, ${p.reloads} reloads)`),
        h("dt", {}, "limits"), h("dd", {}, limits),
        h("dt", {}, "calls"), h("dd", {}, p.calls, " (mean ", mean, ")"),
        h("dt", {}, "failures"), h("dd", {}, failures),
        h("dt", {}, "last reload error"), h("dd", { class: p.last_reload_error ? "error" : "note" }, p.last_reload_error || "none")),
      h("div", { class: "charts" },
        sparkline(s.calls, "calls", "/s", "calls"),
        sparkline(s.failures, "failures", "/s", "failures"),
        sparkline(s.latency, "latency", "ms", "latency")));
  });
  fill($("plugin-cards"), cards.length ? cards : [h("p", { class: "note" }, "No plugins are loaded.")]);
}

// ---- dead letters ----

function letterSelection() {
  const q = new URLSearchParams();
  for (const [k, v] of new FormData($("dl-filter"))) if (v.trim()) q.set(k, v.trim());
  return q;
}

async function loadDeadLetters() {
  const q = letterSelection();
  const { status, body } = await api("/v1/dead-letters?" + q);
  if (status !== 200) return ($("dl-note").textContent = body.message);
  $("dl-note").textContent = `${body.count} shown`;
  const rows = [];
  for (const d of body.dead_letters) {
    const detail = h("tr", { class: "detail", hidden: "" }, h("td", { colspan: 7 },
      h("strong", {}, "failure"), h("pre", {}, `${d.kind}${d.retryable ? " (retryable)" : ""} in route ${d.route}: ${d.message}`),
      h("strong", {}, "event"), h("pre", {}, JSON.stringify(d.event, null, 2))));
    const act = (what) => async (ev) => {
      ev.stopPropagation();
      const res = what === "replay"
        ? await api(`/v1/dead-letters/${encodeURIComponent(d.id)}/replay`, { method: "POST" })
        : await api(`/v1/dead-letters/${encodeURIComponent(d.id)}`, { method: "DELETE" });
      $("dl-note").textContent = res.status < 300 ? `${what}: ${d.id}` : res.body.message;
      if (what === "purge") loadDeadLetters();
    };
    rows.push(h("tr", { class: "event", "data-id": d.id, onclick: () => (detail.hidden = !detail.hidden) },
      h("td", {}, shortTime(d.time)), h("td", {}, d.plugin), h("td", {}, d.kind), h("td", { class: "mono" }, d.event.type),
      h("td", { class: "message" }, d.message), h("td", {}, d.attempts),
      h("td", {}, h("button", { type: "button", class: "replay", onclick: act("replay") }, "Replay"), " ",
        h("button", { type: "button", class: "purge danger", onclick: act("purge") }, "Purge"))), detail);
  }
  fill($("dl-rows"), rows);
}

async function onSelection(method, path) {
  const q = letterSelection();
  if (method === "DELETE" && ![...q.keys()].length && !confirm("Purge every dead letter?")) return;
  const { body } = await api(path + "?" + q, { method });
  $("dl-note").textContent = body.replaying !== undefined ? `replaying ${body.replaying}` : `purged ${body.purged}`;
  loadDeadLetters();
}

// ---- schemas ----

let schemaTypes = null;
let schemaChosen = null;

async function loadSchemas() {
  if (!schemaTypes) schemaTypes = (await api("/v1/schemas")).body.types;
  const needle = $("schema-search").value.trim().toLowerCase();
  fill($("schema-list"), schemaTypes.filter((t) => t.type.includes(needle)).map((t) =>
    h("li", { "data-type": t.type, class: t.type === schemaChosen ? "active" : "", onclick: () => chooseSchema(t) }, t.type)));
}

async function chooseSchema(t) {
  schemaChosen = t.type;
  $("schema-title").textContent = t.type;
  $("schema-description").textContent = `${t.description || ""} (priority ${t.priority})`;
  $("schema-tools").hidden = false;
  fill($("schema-result"), []);
  const res = await fetch("/v1/schemas/" + t.type);
  $("schema-json").textContent = JSON.stringify(await res.json(), null, 2);
  loadSchemas();
}

// The value at a JSON pointer ("" is the whole document), or undefined.
function at(doc, pointer) {
  if (pointer === "") return doc;
  return pointer.slice(1).split("/").map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"))
    .reduce((v, key) => (v !== null && typeof v === "object" ? v[key] : undefined), doc);
}

async function validateBody() {
  const text = $("schema-body").value;
  const { status, body } = await api("/v1/validate/" + schemaChosen, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: text,
  });
  let out;
  if (status === 200 && body.valid) {
    out = [h("p", { class: "valid" }, "valid")];
  } else if (status === 200) {
    const doc = JSON.parse(text);
    out = [h("p", { class: "error" }, `${body.errors.length} error(s)`), h("ul", { class: "violations" },
      ...body.errors.map((e) => h("li", { "data-pointer": e.instance_path },
        h("span", { class: "pointer mono" }, e.instance_path || "/ (the whole body)"), " ",
        h("span", { class: "note mono" }, "= " + JSON.stringify(at(doc, e.instance_path))), h("br"),
        e.message, " ", h("span", { class: "note mono" }, `(${e.schema_path})`))))];
  } else {
    const where = body.line ? ` (line ${body.line}, column ${body.column})` : "";
    out = [h("p", { class: "error" }, `${body.error}: ${body.message}${where}`)];
  }
  fill($("schema-result"), out);
}

// ---- workflows and tasks ----

async function loadWorkflows() {
  const [wf, tasks] = await Promise.all([fetch("/v1/workflows").then((r) => r.json()), fetch("/v1/tasks").then((r) => r.json())]);
  fill($("wf-rows"), wf.workflows.map((w) => h("tr", {}, h("td", { class: "mono" }, w.name), h("td", {}, w.steps.length),
    h("td", {}, w.schedule || ""), h("td", {}, (w.on_event || []).join(", ")))));
  fill($("tasks"), tasks.tasks.length ? tasks.tasks.map(renderTask) : [h("p", { class: "note" }, "No tasks yet.")]);
}

function renderTask(t) {
  const end = t.finished_at ? Date.parse(t.finished_at) : Date.now();
  const steps = t.steps.map((s) => {
    const from = s.started_at ? Date.parse(s.started_at) : null;
    const to = s.finished_at ? Date.parse(s.finished_at) : from && end;
    const ms = from ? Math.max(to - from, 0) : 0;
    const who = [...s.answered.map((p) => `${p.name}: ${p.kind}${p.error ? " " + p.error : ""}`),
      ...s.timed_out.map((w) => `${w}: timed out`)].join("\n");
    const el = h("div", { class: "step " + s.state, title: `${s.step}: ${s.state}, ${ms} ms\n${who}` },
      s.step, h("br"), from ? `${ms} ms` : s.state);
    el.style.flexGrow = String(Math.max(ms, 1)); // CSSOM, which the page's CSP allows
    return el;
  });
  return h("div", { class: "task", "data-id": t.id },
    h("strong", {}, t.workflow), " ", h("span", { class: "state-" + t.state }, t.state),
    h("span", { class: "note" }, ` · ${t.trigger} · created ${shortTime(t.created_at)}`,
      t.finished_at ? ` · took ${((end - Date.parse(t.started_at)) / 1000).toFixed(1)} s` : ""),
    h("div", { class: "timeline" }, ...steps));
}

// ---- cluster ----

function renderCluster() {
  const c = lastStats && lastStats.cluster;
  if (!c) return ($("cluster-note").textContent = "waiting for the first stats frame");
  if (c.backend === "local") {
    $("cluster-note").textContent = "This router runs alone on its local log (store.backend = \"local\"): no cluster.";
    return fill($("cluster-rows"), []);
  }
  $("cluster-note").textContent = `${c.instances.length} instance(s) share the NATS log; this page talks to ${c.instance}.`;
  fill($("cluster-rows"), c.instances.map((i) => h("tr", {}, h("td", { class: "mono" }, i.instance, i.instance === c.instance ? " (this one)" : ""),
    h("td", {}, i.version), h("td", {}, shortTime(i.started_at)), h("td", {}, shortTime(i.seen_at)))));
}

// ---- wiring ----

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    login($("token").value.trim());
    $("token").value = "";
  });
  $("logout").addEventListener("click", () => logout());
  window.addEventListener("hashchange", show);
  $("tail-filter").addEventListener("input", (e) => {
    try {
      tail.filter = globs(e.target.value);
      $("tail-note").textContent = "";
    } catch (err) {
      $("tail-note").textContent = "not a type pattern";
    }
    renderTail();
  });
  $("tail-pause").addEventListener("click", () => {
    tail.paused = !tail.paused;
    tail.held = 0;
    $("tail-pause").textContent = tail.paused ? "Resume" : "Pause";
    $("tail-note").textContent = tail.paused ? "paused" : "";
    if (!tail.paused) renderTail();
  });
  $("tail-clear").addEventListener("click", () => {
    tail.events = [];
    renderTail();
  });
  $("dl-filter").addEventListener("submit", (e) => {
    e.preventDefault();
    loadDeadLetters();
  });
  $("dl-replay-all").addEventListener("click", () => onSelection("POST", "/v1/dead-letters/replay"));
  $("dl-purge-all").addEventListener("click", () => onSelection("DELETE", "/v1/dead-letters"));
  $("schema-search").addEventListener("input", loadSchemas);
  $("schema-validate").addEventListener("click", validateBody);
  if (token) login(token);
});
