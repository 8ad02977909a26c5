// flowedge station page: live view over server-sent events, trend, review queue, search.
// No libraries; the CSP allows only this file. Every write carries the session's CSRF token.
"use strict";

const CSRF = document.querySelector('meta[name="csrf"]').content;
const state = { latest: {}, trend: {}, queue: [], selected: 0, refit: null, user: null };
window.flowedgeLatencyMs = []; // decision to shown, for bench/web.py

const $ = (id) => document.getElementById(id);
const IMAGE_EVERY_MS = 500;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

function number(value) {
  return value === null || value === undefined ? "-" : Number(value).toPrecision(4);
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

// --- tabs ------------------------------------------------------------------------------
function showTab() {
  const tab = (location.hash || "#live").slice(1);
  for (const section of document.querySelectorAll(".tab")) section.hidden = section.id !== `tab-${tab}`;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("on", link.dataset.tab === tab);
  if (tab === "review") loadQueue();
  if (tab === "trend") drawTrends();
}

// --- live ------------------------------------------------------------------------------
function card(item) {
  const id = `live-${item.source}`;
  let node = $(id);
  if (!node) { node = el("div", { id, class: "card" }); $("sources").append(node); }
  // a new overlay at most every IMAGE_EVERY_MS (the text is always the newest decision):
  // a fast line must not keep the browser, or a station it shares cores with, busy decoding
  const image = item.overlay || item.input;
  const shown = node.querySelector("img");
  const fresh = !shown || Date.now() - Number(node.dataset.imageAt || 0) >= IMAGE_EVERY_MS;
  if (fresh) node.dataset.imageAt = Date.now();
  // the threshold sits mid-bar; a full bar is one threshold's size (at least 1) above it
  const scale = Math.max(Math.abs(item.threshold ?? 0), 1);
  const share = item.score === null || item.threshold === null ? 0 : Math.min(Math.max(0.5 + (item.score - item.threshold) / (2 * scale), 0), 1);
  const bar = el("div", { class: "bar" }, el("div", { class: `fill ${item.decision}` }), el("div", { class: "mark" }));
  bar.firstChild.style.width = `${share * 100}%`;
  node.replaceChildren(
    el("h2", {}, item.source, " ", el("span", { class: `badge ${item.decision}`, "data-role": "decision" }, item.decision)),
    !fresh ? shown : image ? el("img", { src: image, alt: `overlay of ${item.part_id}` }) : el("div", { class: "noimage" }, "no overlay kept"),
    el("p", {}, `part ${item.part_id} · #${item.seq} · ${item.decided_utc}`),
    item.detail ? el("p", { "data-role": "detail" }, item.detail) : "",
    el("p", {}, `score ${number(item.score)} / threshold ${number(item.threshold)}`, item.drift ? ` · drift ${item.drift}` : "",
      item.error ? ` · ${item.error}` : ""),
    bar,
  );
  node.dataset.seq = item.seq;
  node.dataset.decision = item.decision;
}

function counters(shift) {
  $("counters").replaceChildren(
    el("p", { class: "muted" }, `since ${shift.start}`),
    ...["OK", "ANOMALY", "ERROR"].map((name) => el("div", { class: `count ${name}`, id: `count-${name}` }, el("b", {}, shift[name]), ` ${name}`)),
  );
}

function health(status) {
  const rows = [];
  if (status.threshold !== undefined) rows.push(el("p", { id: "threshold" }, `threshold ${number(status.threshold)} (${status.model_id || ""})`));
  for (const [source, info] of Object.entries(status.sources || {})) {
    const text = typeof info === "object" ? (info.state || JSON.stringify(info)) : info;
    rows.push(el("p", {}, `source ${source}: ${text}`));
  }
  for (const [sink, info] of Object.entries(status.sinks || {})) {
    rows.push(el("p", { class: "sink" }, `sink ${sink}: ${info.health}; ${info.backlog} waiting`));
  }
  rows.push(el("p", {}, `spool ${status.spooled ?? "-"} record(s)${status.spool_overflowed ? " (overflowed)" : ""}`));
  $("health").replaceChildren(...rows);
}

function addEvent(item) {
  const list = $("events");
  list.prepend(el("li", { class: item.severity }, `${item.utc} ${item.sensor || "station"} ${item.kind}: ${item.message}`));
  while (list.children.length > 50) list.lastChild.remove();
}

function onDecisions(items) {
  const newest = {};
  for (const item of items) {
    newest[item.source] = item;
    (state.trend[item.source] ||= []).push([item.decided_utc, item.score, item.threshold, item.decision]);
    const count = $(`count-${item.decision}`);
    if (count) count.firstChild.textContent = Number(count.firstChild.textContent) + 1;
  }
  for (const item of Object.values(newest)) card(item); // one drawing per source and batch
  Object.assign(state.latest, newest);
  requestAnimationFrame(() => {
    const now = Date.now();
    for (const item of items) window.flowedgeLatencyMs.push(now - Date.parse(item.decided_utc));
  });
  if (!$("tab-trend").hidden) drawTrends();
}

async function connect() {
  const snap = await api("/api/snapshot");
  state.user = snap.user;
  state.trend = snap.trend;
  $("sources").replaceChildren();
  for (const item of Object.values(snap.latest)) card(item);
  counters(snap.shift);
  $("events").replaceChildren();
  for (const item of snap.events) addEvent(item);
  health(await api("/api/status"));
  const stream = new EventSource("/api/events");
  stream.onopen = () => { $("stream-state").textContent = "live"; };
  stream.onerror = () => { $("stream-state").textContent = "reconnecting"; };
  stream.addEventListener("decisions", (e) => onDecisions(JSON.parse(e.data)));
  stream.addEventListener("event", (e) => addEvent(JSON.parse(e.data)));
  stream.addEventListener("status", (e) => health(JSON.parse(e.data)));
}

// --- trend -----------------------------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function drawTrends() {
  const hours = Number($("trend-hours").value);
  const since = Date.now() - hours * 3600e3;
  const box = $("trends");
  box.replaceChildren();
  for (const [source, points] of Object.entries(state.trend)) {
    const shown = points.map(([t, s, th, d]) => [Date.parse(t), s, th, d]).filter((p) => p[0] >= since && p[1] !== null);
    const width = 900, height = 220, pad = 30;
    const plot = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "trend", id: `trend-${source}` });
    const values = shown.flatMap((p) => [p[1], p[2] ?? p[1]]);
    const low = Math.min(...values, 0), high = Math.max(...values, 1e-9) * 1.1;
    const x = (t) => pad + ((t - since) / (hours * 3600e3)) * (width - 2 * pad);
    const y = (v) => height - pad - ((v - low) / (high - low)) * (height - 2 * pad);
    plot.append(svg("line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, class: "axis" }));
    if (shown.length) {
      plot.append(svg("polyline", { points: shown.map((p) => `${x(p[0])},${y(p[1])}`).join(" "), class: "score" }));
      const steps = shown.filter((p) => p[2] !== null).map((p) => `${x(p[0])},${y(p[2])}`);
      if (steps.length) plot.append(svg("polyline", { points: steps.join(" "), class: "threshold" }));
      for (const p of shown) {
        if (p[3] === "ANOMALY" || p[3] === "ERROR") plot.append(svg("circle", { cx: x(p[0]), cy: y(p[1]), r: 4, class: p[3] }));
      }
    }
    const label = svg("text", { x: pad, y: 16 });
    label.textContent = `${source}: ${shown.length} decision(s), scores ${number(low)} to ${number(high)}`;
    plot.append(label);
    box.append(plot);
  }
}

// --- review ----------------------------------------------------------------------------
const KEYS = { a: "confirmed_anomaly", f: "false_alarm", m: "missed_defect", o: "confirmed_normal" };

async function loadQueue() {
  try { state.queue = await api("/api/queue"); } catch (error) { $("review-result").textContent = error.message; return; }
  state.selected = Math.min(state.selected, Math.max(state.queue.length - 1, 0));
  drawQueue();
  loadRefit();
}

function drawQueue() {
  const rows = state.queue.map((item, i) => {
    const row = el("tr", { class: i === state.selected ? "selected" : null, "data-key": `${item.source}/${item.seq}` },
      el("td", {}, item.overlay ? el("img", { src: item.overlay, class: "thumb", alt: "" }) : ""),
      el("td", {}, item.source), el("td", {}, item.seq), el("td", {}, item.part_id), el("td", {}, item.captured_utc),
      el("td", {}, el("span", { class: `badge ${item.decision}` }, item.decision)),
      el("td", {}, number(item.score)), el("td", {}, number(item.threshold)), el("td", { class: "verdict" }, item.verdict || ""));
    row.addEventListener("click", () => { state.selected = i; drawQueue(); });
    return row;
  });
  $("queue").tBodies[0].replaceChildren(...rows);
  const item = state.queue[state.selected];
  $("selected").replaceChildren(item
    ? el("div", {}, (item.overlay || item.input) ? el("img", { src: item.overlay || item.input, alt: "" }) : "", el("p", {}, `${item.source} #${item.seq} part ${item.part_id}: ${item.decision}`))
    : el("p", { class: "muted" }, "nothing to review"));
}

async function reviewSelected(verdict) {
  const item = state.queue[state.selected];
  if (!item) return;
  try {
    await api("/api/review", { source: item.source, seq: item.seq, verdict });
    item.verdict = verdict;
    $("review-result").textContent = `${item.source} #${item.seq}: ${verdict}`;
    state.selected = Math.min(state.selected + 1, state.queue.length - 1);
    drawQueue();
    loadRefit();
  } catch (error) {
    $("review-result").textContent = `refused: ${error.message}`;
  }
}

async function loadRefit() {
  const chosen = $("refit-recipe").value;
  const refit = await api("/api/refit" + (chosen ? `?recipe=${encodeURIComponent(chosen)}` : ""));
  if (refit.recipes) {  // a station with recipes: each recipe's model has its own threshold
    const select = $("refit-recipe");
    $("refit-recipe-label").hidden = false;
    if ([...select.options].map((o) => o.value).join("\n") !== refit.recipes.join("\n")) {
      select.replaceChildren(...refit.recipes.map((name) => el("option", { value: name }, name)));
      select.value = refit.recipe ?? "";
    }
    if (!refit.recipe && refit.recipes.length) {
      select.value = refit.recipes[0];
      return loadRefit();
    }
  }
  state.refit = refit;
  $("refit").textContent = refit.after === null ? refit.reason : refit.lines.join("\n");
  $("apply").disabled = refit.after === null;
  $("apply").textContent = refit.after === null ? "Apply" : `Apply threshold ${number(refit.after)}`;
}

async function apply() {
  if (!state.refit || state.refit.after === null) return;
  try {
    const done = await api("/api/apply", { threshold: state.refit.after, recipe: state.refit.recipe ?? null });
    $("apply-result").textContent = `applied: ${done.message}`;
  } catch (error) {
    $("apply-result").textContent = `refused: ${error.message}`;
  }
  health(await api("/api/status"));
}

function onKey(event) {
  if ($("tab-review").hidden || event.target.matches("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "j" || event.key === "ArrowDown") { state.selected = Math.min(state.selected + 1, state.queue.length - 1); drawQueue(); }
  else if (event.key === "k" || event.key === "ArrowUp") { state.selected = Math.max(state.selected - 1, 0); drawQueue(); }
  else if (event.key === "r") loadQueue();
  else if (KEYS[event.key]) reviewSelected(KEYS[event.key]);
  else return;
  event.preventDefault();
}

// --- search ----------------------------------------------------------------------------
async function search(event) {
  event.preventDefault();
  const query = new URLSearchParams(new FormData($("search-form")));
  try {
    const rows = await api(`/api/search?${query}`);
    $("search-result").textContent = `${rows.length} decision(s), newest first`;
    $("results").tBodies[0].replaceChildren(...rows.map((r) => el("tr", {},
      el("td", {}, ...[r.overlay, r.input].filter(Boolean).map((src) => el("a", { href: src, target: "_blank" }, el("img", { src, class: "thumb", alt: "" })))),
      el("td", {}, r.source), el("td", {}, r.seq), el("td", {}, r.part_id), el("td", {}, r.captured_utc),
      el("td", {}, el("span", { class: `badge ${r.decision}` }, r.decision)), el("td", {}, number(r.score)),
      el("td", {}, number(r.threshold)), el("td", {}, r.verdict || ""))));
  } catch (error) {
    $("search-result").textContent = error.message;
  }
}

async function logout() {
  await api("/logout", {});
  location.href = "/login";
}

window.addEventListener("hashchange", showTab);
document.addEventListener("keydown", onKey);
$("apply").addEventListener("click", apply);
$("refit-recipe").addEventListener("change", loadRefit);
$("logout").addEventListener("click", logout);
$("search-form").addEventListener("submit", search);
$("trend-hours").addEventListener("change", drawTrends);
showTab();
connect();
