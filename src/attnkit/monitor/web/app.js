// attnkit monitor dashboard: reads the /v1 API with the bearer token the user enters.
// Every string from the API (tags, token text, messages) is untrusted: it goes into the page
// through textContent only, never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#2f6fed", "#e8590c", "#0ca678", "#ae3ec9", "#f59f00", "#1098ad", "#c92a2a"];
const $ = (id) => document.getElementById(id);

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  return node;
}

function number(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function when(seconds) {
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19);
}

function setStatus(message) {
  $("status").textContent = message;
}

async function api(path) {
  const token = sessionStorage.getItem("attnkit-token");
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(path, { headers });
  if (response.status === 401 || response.status === 403) {
    throw new Error(response.status === 401 ? "enter a token" : "the token was refused");
  }
  if (!response.ok) throw new Error(path + " answered " + response.status);
  return response.json();
}

function fillTable(id, rows) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(...rows);
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.append(cell instanceof Node ? cell : element("td", cell));
  return tr;
}

// ----- signals over time: one SVG line per group --------------------------------------------

function drawSeries(data, start, end) {
  const width = 1000, height = 260, left = 56, right = 12, top = 10, bottom = 26;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  const groups = new Map();
  for (const point of data.points) {
    if (!groups.has(point.group)) groups.set(point.group, []);
    groups.get(point.group).push(point);
  }
  const values = data.points.map((p) => p.mean);
  let low = values.length ? Math.min(...values) : 0;
  let high = values.length ? Math.max(...values) : 1;
  if (high - low < 1e-9) { low -= 0.5; high += 0.5; }
  const x = (t) => left + ((t - start) / (end - start)) * (width - left - right);
  const y = (v) => top + (1 - (v - low) / (high - low)) * (height - top - bottom);
  chart.append(svg("line", { class: "axis", x1: left, y1: height - bottom, x2: width - right, y2: height - bottom }));
  chart.append(svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: height - bottom }));
  for (const v of [low, (low + high) / 2, high]) {
    const label = svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" });
    label.textContent = number(v, 3);
    chart.append(label);
  }
  for (const t of [start, (start + end) / 2, end]) {
    const label = svg("text", { x: x(t), y: height - 8, "text-anchor": "middle" });
    label.textContent = when(t).slice(5, 16);
    chart.append(label);
  }
  const legend = [];
  let i = 0;
  for (const [group, points] of groups) {
    const colour = COLOURS[i++ % COLOURS.length];
    const path = points.map((p, k) => `${k ? "L" : "M"}${x(p.bucket + data.bucket_s / 2).toFixed(1)},${y(p.mean).toFixed(1)}`);
    chart.append(svg("path", { d: path.join(" "), fill: "none", stroke: colour, "stroke-width": 2 }));
    for (const p of points) {
      const dot = svg("circle", { cx: x(p.bucket + data.bucket_s / 2), cy: y(p.mean), r: 2.5, fill: colour });
      const title = svg("title");
      title.textContent = `${group || "all"} ${when(p.bucket)}: ${number(p.mean)} (${p.count} records)`;
      dot.append(title);
      chart.append(dot);
    }
    const item = element("li");
    const swatch = element("span", null, "swatch");
    swatch.style.background = colour;
    item.append(swatch, document.createTextNode(group || "all records"));
    legend.push(item);
  }
  if (!data.points.length) {
    const empty = svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle" });
    empty.textContent = "no records in this range";
    chart.append(empty);
  }
  $("chart").replaceChildren(chart);
  $("legend").replaceChildren(...legend);
}

async function loadSeries() {
  const end = Date.now() / 1000;
  const start = end - Number($("range").value);
  const params = new URLSearchParams({ signal: $("signal").value, start, end });
  if ($("by").value) params.set("by", $("by").value);
  drawSeries(await api("/v1/series?" + params), start, end);
}

// ----- drift, alerts, records ----------------------------------------------------------------

async function loadDrift() {
  const params = new URLSearchParams();
  if ($("by").value) params.set("by", $("by").value);
  const data = await api("/v1/drift?" + params);
  const rows = [];
  for (const group of data.groups) {
    for (const [signal, result] of Object.entries(group.signals)) {
      const verdict = element("td", result.drifted ? "drifted" : "stable", result.drifted ? "drifted" : "stable");
      rows.push(row([group.group || "all", signal, result.method, number(result.statistic, 4), result.threshold, verdict]));
    }
    for (const signal of group.skipped) {
      rows.push(row([group.group || "all", signal, "–", "–", "–", "not enough data"]));
    }
  }
  fillTable("drift", rows);
}

async function loadAlerts() {
  const data = await api("/v1/alerts?limit=50");
  fillTable("alerts", data.alerts.map((a) => row([when(a.fired_at), a.rule, a.severity, a.signal, a.message])));
}

async function loadRecords() {
  const data = await api("/v1/records?limit=50");
  fillTable("records", data.records.map((r) => {
    const tags = Object.entries(r.tags).map(([k, v]) => k + "=" + v).join(", ");
    const tr = row([when(r.time), r.request_id, r.model, r.version, tags,
      number(r.lookback_ratio), number(r.entropy), number(r.detector_score)]);
    tr.dataset.requestId = r.request_id;
    tr.addEventListener("click", () => showRequest(r.request_id).catch((e) => setStatus(e.message)));
    return tr;
  }));
}

// ----- drill-down: the answer's tokens and the context tokens they leaned on ------------------

function lookbackColour(ratio) {
  // low lookback (the answer ignores its context) in red, high in green
  const hue = Math.round(120 * Math.max(0, Math.min(1, ratio)));
  return `hsl(${hue}, 70%, 85%)`;
}

async function showRequest(requestId) {
  const record = await api("/v1/records/" + encodeURIComponent(requestId));
  $("drill").hidden = false;
  $("drill-id").textContent = record.request_id;
  $("drill-summary").textContent =
    `${record.model || "–"} ${record.version || ""} · ${record.prompt_tokens} prompt tokens, ` +
    `${record.new_tokens} new · lookback ${number(record.lookback_ratio)} · entropy ` +
    `${number(record.entropy)} · sink ${number(record.sink)} · detector ${number(record.detector_score)}`;
  const answer = $("answer"), context = $("context");
  const trace = record.trace;
  if (!trace) {
    answer.replaceChildren(element("em", "no per-token trace was logged for this request"));
    context.replaceChildren();
    return;
  }
  const contextSpans = trace.context.tokens.map((text, i) => {
    const span = element("span", text, "token");
    span.dataset.position = String(i);
    return span;
  });
  const leaned = new Set(trace.leaned_on.flat().map(([position]) => position));
  contextSpans.forEach((span, i) => { if (leaned.has(i)) span.classList.add("leaned"); });
  const answerSpans = trace.tokens.map((text, i) => {
    const span = element("span", text, "token");
    span.style.background = lookbackColour(trace.lookback_ratio[i]);
    span.title = `lookback ${number(trace.lookback_ratio[i])}, entropy ${number(trace.entropy[i])}, ` +
      `copied by ${Math.round(100 * trace.retrieval[i])}% of heads`;
    if (trace.leaned_on[i].length) span.classList.add("copied");
    span.addEventListener("click", () => {
      answerSpans.forEach((s) => s.classList.remove("selected"));
      contextSpans.forEach((s) => s.classList.remove("focus"));
      span.classList.add("selected");
      for (const [position] of trace.leaned_on[i]) contextSpans[position].classList.add("focus");
    });
    return span;
  });
  answer.replaceChildren(...answerSpans);
  context.replaceChildren(...contextSpans);
  if (trace.context.truncated) context.append(element("em", " … (context truncated)"));
}

// ----- wiring ---------------------------------------------------------------------------------

async function refresh() {
  try {
    await Promise.all([loadSeries(), loadDrift(), loadAlerts(), loadRecords()]);
    setStatus("updated " + new Date().toLocaleTimeString());
  } catch (error) {
    setStatus(error.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("attnkit-token", $("token").value);
    $("token").value = "";
    refresh();
  });
  for (const id of ["signal", "by", "range"]) $(id).addEventListener("change", refresh);
  if (sessionStorage.getItem("attnkit-token") === null) {
    setStatus("enter the token and connect (leave it empty if the server has none)");
  } else {
    refresh();
  }
  setInterval(() => { if (sessionStorage.getItem("attnkit-token") !== null) refresh(); }, 30000);
});
