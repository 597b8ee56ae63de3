-- console: the web console's files, served by admin.lua under /console/.
-- Plain HTML, CSS and vanilla JavaScript shipped inside the binary with the
-- stdlib: nothing to build. The page holds no data of its own: it asks for
-- the admin token once (kept in the tab's sessionStorage) and reads and acts
-- through the JSON API (/api/), so every piece of data is behind the token.
-- Everything from the API is put in the page as text (textContent), never
-- as HTML: payloads and log lines come from outside.

local INDEX = [==[<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rill console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/console/console.css">
<script src="/console/console.js" defer></script>
</head>
<body>
<header>
  <span class="brand">rill</span>
  <nav>
    <a href="#/flows" id="nav-flows">Flows</a>
    <a href="#/runs" id="nav-runs">Runs</a>
  </nav>
  <button id="forget" class="link" hidden>Forget token</button>
</header>
<main id="main">
  <form id="login" hidden>
    <h1>Admin token</h1>
    <p>Type the token rill was started with (<code>RILL_ADMIN_TOKEN</code>). It is kept in this tab only.</p>
    <input id="token" type="password" autocomplete="off" placeholder="token" required>
    <button type="submit">Open the console</button>
    <p id="login-error" class="error"></p>
  </form>
  <section id="view"></section>
</main>
</body>
</html>
]==]

local CSS = [==[
:root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --bg: #f7f8fa; --accent: #2f5bd3;
        --ok: #137333; --bad: #b42318; --warn: #a15c07; --idle: #475467; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: center; gap: 24px; padding: 10px 24px; background: #fff; border-bottom: 1px solid var(--line); }
.brand { font-weight: 700; font-size: 18px; letter-spacing: .5px; }
nav a { margin-right: 16px; color: var(--muted); text-decoration: none; font-weight: 500; }
nav a.active { color: var(--accent); }
header .link { margin-left: auto; }
main { padding: 20px 24px; max-width: 1200px; }
h1 { font-size: 20px; margin: 0 0 12px; }
h2 { font-size: 16px; margin: 20px 0 8px; }
table { width: 100%; border-collapse: collapse; background: #fff; border: 1px solid var(--line); }
th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; text-transform: uppercase; color: var(--muted); font-weight: 600; background: #fbfbfc; }
tr.clickable { cursor: pointer; }
tr.clickable:hover { background: #f2f5fd; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
pre { background: #fff; border: 1px solid var(--line); padding: 10px; overflow: auto; max-height: 320px; margin: 0; white-space: pre-wrap; word-break: break-word; }
button { font: inherit; padding: 5px 12px; border: 1px solid var(--accent); background: var(--accent); color: #fff; border-radius: 4px; cursor: pointer; }
button.secondary { background: #fff; color: var(--accent); }
button.link { border: 0; background: none; color: var(--muted); padding: 0; }
button:disabled { opacity: .5; cursor: default; }
input, select { font: inherit; padding: 5px 8px; border: 1px solid var(--line); border-radius: 4px; background: #fff; }
.toolbar { display: flex; gap: 10px; align-items: center; margin-bottom: 12px; flex-wrap: wrap; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; background: #eef0f3; color: var(--idle); }
.badge.succeeded, .badge.active { background: #e6f4ea; color: var(--ok); }
.badge.dead, .badge.failed, .badge.error { background: #fdecea; color: var(--bad); }
.badge.retrying, .badge.paused, .badge.sleeping, .badge.waiting { background: #fff4e5; color: var(--warn); }
.badge.running, .badge.queued { background: #e8eefc; color: var(--accent); }
.error { color: var(--bad); }
.muted { color: var(--muted); }
.kv { display: grid; grid-template-columns: 140px 1fr; gap: 4px 12px; background: #fff; border: 1px solid var(--line); padding: 12px; }
.kv div:nth-child(odd) { color: var(--muted); }
.attempt { margin: 10px 0; background: #fff; border: 1px solid var(--line); }
.attempt h3 { margin: 0; padding: 8px 10px; font-size: 13px; border-bottom: 1px solid var(--line); background: #fbfbfc; }
.line { display: grid; grid-template-columns: 110px 60px 1fr; gap: 8px; padding: 3px 10px; border-bottom: 1px solid #f0f1f3; }
.line:last-child { border-bottom: 0; }
.lvl-error { color: var(--bad); font-weight: 600; }
.lvl-warn { color: var(--warn); font-weight: 600; }
#notice { margin: 0 0 12px; }
form#login { max-width: 420px; background: #fff; border: 1px solid var(--line); padding: 20px; }
form#login input { width: 100%; margin: 8px 0 12px; }
#sequence { background: #fff; border: 1px solid var(--line); padding: 8px; overflow-x: auto; }
svg.seq { display: block; font: 12px system-ui, -apple-system, "Segoe UI", sans-serif; }
.seq-participant rect { fill: #eef2fb; stroke: var(--accent); }
.seq-participant text { font-size: 11px; }
.seq-participant.trigger rect { fill: #f4f0fb; stroke: #6941c6; }
.seq-participant.flow rect { fill: var(--accent); }
.seq-participant.flow text { fill: #fff; font-weight: 600; }
.seq-lifeline { stroke: #c5cad3; stroke-dasharray: 4 4; }
.seq-message line, .seq-message path { stroke: var(--fg); fill: none; }
.seq-message.reply line, .seq-message.async_reply line, .seq-message.lost line { stroke-dasharray: 5 3; }
.seq-message.lost line { stroke: var(--bad); }
.seq-message.lost text { fill: var(--bad); }
.seq-note rect { fill: #fff8db; stroke: #e0c36b; }
.seq-note.bad rect { fill: #fdecea; stroke: var(--bad); }
#sequence details { margin-top: 6px; }
]==]

local JS = [==[
"use strict";
// rill console: a hash-routed page over the admin API.
//   #/flows            flows, their status and load errors, pause/resume, reload
//   #/runs?flow=&state= runs with filters
//   #/runs/ID          one run: summary, its sequence diagram, attempts and log lines, steps,
//                      outbound calls, retry/cancel
const KEY = "rill-admin-token";
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "onclick" || k === "onchange" || k === "onsubmit") e[k] = v;
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// ---- a run's sequence, drawn as SVG from /api/runs/ID's sequence (no library, no request) ----

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
// text cut to fit a width (its whole in a tooltip)
const fit = (s, n) => s.length > n ? s.slice(0, n - 1) + "…" : s;

function sequenceDiagram(seq) {
  const COL = 190, TOP = 14, HEAD = 30, ROW = 30, CH = 28;
  const col = {};
  seq.participants.forEach((p, i) => { col[p.id] = i; });
  const x = (id) => 10 + (col[id] || 0) * COL + COL / 2;
  const width = 20 + seq.participants.length * COL + 40;
  const height = TOP + HEAD + (seq.messages.length + 1) * ROW;
  const root = svg("svg", { class: "seq", width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  const defs = svg("defs");
  defs.append(svg("marker", { id: "seq-head", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8,
    markerHeight: 8, orient: "auto" }));
  defs.lastChild.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#1d2330" }));
  defs.append(svg("marker", { id: "seq-open", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8,
    markerHeight: 8, orient: "auto" }));
  defs.lastChild.append(svg("path", { d: "M0,0 L10,5 L0,10", fill: "none", stroke: "#1d2330" }));
  defs.append(svg("marker", { id: "seq-cross", viewBox: "0 0 10 10", refX: 5, refY: 5, markerWidth: 9,
    markerHeight: 9, orient: "auto" }));
  defs.lastChild.append(svg("path", { d: "M0,0 L10,10 M10,0 L0,10", stroke: "#b42318" }));
  root.append(defs);
  const bottom = height - 6;
  for (const p of seq.participants) {
    const cx = x(p.id);
    root.append(svg("line", { class: "seq-lifeline", x1: cx, y1: TOP + HEAD, x2: cx, y2: bottom }));
    const g = svg("g", { class: "seq-participant " + p.kind, "data-id": p.id });
    g.append(svg("title", {}, p.label));
    g.append(svg("rect", { x: cx - COL / 2 + 8, y: TOP, width: COL - 16, height: HEAD - 4, rx: 4 }));
    g.append(svg("text", { x: cx, y: TOP + 17, "text-anchor": "middle" }, fit(p.label, CH)));
    root.append(g);
  }
  seq.messages.forEach((m, i) => {
    const y = TOP + HEAD + (i + 1) * ROW;
    const x1 = x(m.from), x2 = x(m.to);
    if (m.kind === "note") {
      const bad = /^(failed|dead)/.test(m.text);
      const g = svg("g", { class: "seq-note" + (bad ? " bad" : "") });
      const w = Math.min(Math.max(COL - 20, m.text.length * 6.4 + 16), width - 20);
      const left = Math.max(4, Math.min(x1 - w / 2, width - w - 4));
      g.append(svg("title", {}, m.text));
      g.append(svg("rect", { x: left, y: y - 15, width: w, height: 20, rx: 3 }));
      g.append(svg("text", { x: left + w / 2, y: y - 1, "text-anchor": "middle" }, m.text));
      root.append(g);
      return;
    }
    const g = svg("g", { class: "seq-message " + m.kind, "data-kind": m.kind });
    g.append(svg("title", {}, m.text));
    const head = m.kind === "lost" ? "url(#seq-cross)" : (m.kind.startsWith("async") ? "url(#seq-open)" : "url(#seq-head)");
    if (x1 === x2) {
      g.append(svg("path", { d: `M${x1},${y - 8} h26 v12 h-24`, "marker-end": head }));
      g.append(svg("text", { x: x1 + 32, y: y }, fit(m.text, CH + 6)));
    } else {
      g.append(svg("line", { x1, y1: y, x2, y2: y, "marker-end": head }));
      g.append(svg("text", { x: (x1 + x2) / 2, y: y - 5, "text-anchor": "middle" },
        fit(m.text, Math.floor(Math.abs(x2 - x1) / 6.5))));
    }
    root.append(g);
  });
  return el("div", { id: "sequence" }, root,
    el("details", {}, el("summary", { class: "muted" }, "Mermaid text (rill runs show ID --diagram)"),
      el("pre", { id: "sequence-mermaid" }, seq.mermaid)));
}

const badge = (s) => el("span", { class: "badge " + s, "data-state": s }, s);
const when = (iso) => iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
const pretty = (v) => v === undefined || v === null ? "" : (typeof v === "string" ? v : JSON.stringify(v, null, 2));

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, payload) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(KEY) };
  if (payload !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers,
    body: payload === undefined ? undefined : JSON.stringify(payload) });
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON */ }
  if (res.status === 401) { sessionStorage.removeItem(KEY); showLogin("The token was refused."); }
  if (!res.ok) throw new ApiError(res.status, (body && body.error) || res.statusText);
  return body;
}

function showLogin(message) {
  $("#login").hidden = false;
  $("#view").replaceChildren();
  $("#forget").hidden = true;
  $("#login-error").textContent = message || "";
  $("#token").focus();
}

function view(...children) {
  $("#login").hidden = true;
  $("#forget").hidden = false;
  $("#view").replaceChildren(...children.flat(2).filter((c) => c !== "" && c !== null && c !== undefined));
}

function notice(text, isError) {
  const n = $("#notice");
  if (n) { n.textContent = text; n.className = isError ? "error" : "muted"; }
}

// ---- flows ----

async function flowsPage() {
  const data = await api("GET", "/api/flows");
  const rows = data.flows.map((f) => el("tr", { "data-flow": f.name || f.file },
    el("td", {}, el("strong", {}, f.name || "(not loaded)"), el("div", { class: "muted mono" }, f.file)),
    el("td", {}, badge(f.status)),
    el("td", { class: "mono" }, f.version || "", el("div", { class: "muted" }, when(f.loaded_at))),
    el("td", {}, (f.triggers || []).map((t) => el("div", { class: "mono" }, triggerText(t)))),
    el("td", { class: "mono" }, (f.next_fires || []).map((n) => el("div", {}, when(n.next)))),
    el("td", { class: "mono" }, (f.settings || []).map((s) => el("div", { title: s.description || "" },
      `${s.name} = ${JSON.stringify(s.value)}`, s.value !== s.default ? el("span", { class: "muted" },
        ` (default ${JSON.stringify(s.default)})`) : "", " ",
      el("a", { href: "#/flows", "data-setting": s.name, onclick: (ev) => { ev.preventDefault(); changeSetting(f, s); } },
        "change")))),
    el("td", { class: "error mono" }, f.load_error || ""),
    el("td", {}, f.name ? el("button", {
      class: "secondary", "data-action": f.paused ? "resume" : "pause",
      onclick: () => act("POST", "/api/flows/" + encodeURIComponent(f.name) + "/" + (f.paused ? "resume" : "pause")),
    }, f.paused ? "Resume" : "Pause") : "",
    " ", f.name ? el("a", { href: "#/runs?flow=" + encodeURIComponent(f.name) }, "runs") : "")));
  view(
    el("div", { class: "toolbar" }, el("h1", {}, "Flows"),
      el("button", { id: "reload", onclick: reload }, "Reload flows"),
      el("span", { class: "muted" }, data.reloads + " reload(s) since start")),
    el("p", { id: "notice" }),
    el("table", {}, el("thead", {}, el("tr", {}, ["Flow", "Status", "Version", "Triggers", "Next cron fire",
      "Settings", "Load error", ""].map((h) => el("th", {}, h)))), el("tbody", {}, rows)));
}

function triggerText(t) {
  if (t.type === "webhook") return `webhook ${t.method} ${t.path}` + (t.mode ? ` (${t.mode})` : "");
  if (t.type === "cron") return `cron "${t.expr}" ${t.tz || ""}`;
  if (t.type === "db_event") return `db_event ${t.table || ""}`;
  if (t.type === "event") return `event ${t.name || t.event || ""}` + (t.emitted_by ? ` from run ${t.emitted_by}` : "");
  return t.type;
}

async function reload() {
  try {
    const r = await api("POST", "/api/reload");
    await flowsPage();
    notice(`Reloaded: ${r.loaded.length} loaded, ${r.removed.length} removed, ${r.failed.length} with errors.`,
      r.failed.length > 0);
  } catch (e) { notice(e.message, true); }
}

// Asks for a setting's new value (empty: its default) and PUTs it; the
// server validates it and says why it refuses one.
async function changeSetting(f, s) {
  const text = prompt(`${f.name}: ${s.name} (${s.type})${s.description ? "\n" + s.description : ""}` +
    `\nEmpty: the default, ${JSON.stringify(s.default)}`, typeof s.value === "string" ? s.value : JSON.stringify(s.value));
  if (text === null) return;
  let value = text;
  if (text === "") value = null;
  else if (s.type !== "string") { try { value = JSON.parse(text); } catch (_) { value = text; } }
  try {
    await api("PUT", "/api/flows/" + encodeURIComponent(f.name) + "/settings", { [s.name]: value });
    await flowsPage();
    notice(`${f.name}: ${s.name} changed.`, false);
  } catch (e) { notice(e.message, true); }
}

async function act(method, path) {
  try { await api(method, path); await route(); } catch (e) { notice(e.message, true); }
}

// ---- runs ----

const STATES = ["", "queued", "running", "retrying", "sleeping", "waiting", "succeeded", "failed", "dead", "cancelled"];

async function runsPage(params) {
  const q = new URLSearchParams();
  for (const k of ["flow", "state", "since", "until"]) if (params.get(k)) q.set(k, params.get(k));
  q.set("limit", "100");
  const [data, flows] = await Promise.all([api("GET", "/api/runs?" + q), api("GET", "/api/flows")]);
  const go = () => {
    const p = new URLSearchParams();
    if ($("#f-flow").value) p.set("flow", $("#f-flow").value);
    if ($("#f-state").value) p.set("state", $("#f-state").value);
    location.hash = "#/runs" + (p.toString() ? "?" + p : "");
  };
  const names = [""].concat(flows.flows.filter((f) => f.name).map((f) => f.name));
  const rows = data.runs.map((r) => el("tr", { class: "clickable", "data-run": r.id,
      onclick: () => { location.hash = "#/runs/" + r.id; } },
    el("td", { class: "mono" }, el("a", { href: "#/runs/" + r.id }, r.id)),
    el("td", {}, r.flow), el("td", {}, badge(r.state)),
    el("td", {}, `${r.attempt}/${r.max_attempts}`),
    el("td", { class: "mono" }, when(r.created)), el("td", { class: "mono" }, when(r.finished)),
    el("td", { class: "error" }, r.error && r.error.message ? r.error.message.split("\n")[0].slice(0, 120) : "")));
  view(
    el("div", { class: "toolbar" }, el("h1", {}, "Runs"),
      el("select", { id: "f-flow", onchange: go }, names.map((n) =>
        el("option", { value: n, selected: n === (params.get("flow") || "") }, n || "all flows"))),
      el("select", { id: "f-state", onchange: go }, STATES.map((s) =>
        el("option", { value: s, selected: s === (params.get("state") || "") }, s || "all states"))),
      el("button", { class: "secondary", onclick: route }, "Refresh")),
    el("p", { id: "notice" }),
    el("table", { id: "runs" }, el("thead", {}, el("tr", {}, ["Run", "Flow", "State", "Attempt", "Created",
      "Finished", "Error"].map((h) => el("th", {}, h)))), el("tbody", {}, rows)),
    data.runs.length === 0 ? el("p", { class: "muted" }, "No runs match.") : "");
}

let pollTimer = null;

async function runPage(id) {
  const r = await api("GET", "/api/runs/" + encodeURIComponent(id));
  const canRetry = ["failed", "dead", "retrying"].includes(r.state);
  const canCancel = ["queued", "retrying", "sleeping", "waiting"].includes(r.state);
  const kv = (k, v) => v === undefined || v === null || v === "" ? [] : [el("div", {}, k), el("div", { class: "mono" }, v)];
  const byAttempt = {};
  for (const l of r.logs) (byAttempt[l.attempt] = byAttempt[l.attempt] || []).push(l);
  const attempts = r.attempts.map((a) => el("div", { class: "attempt", "data-attempt": a.attempt },
    el("h3", {}, `Attempt ${a.attempt}`, el("span", { class: "muted" },
      `  ${when(a.first_at)} → ${when(a.last_at)} · ${a.lines} line(s)` + (a.errors ? ` · ${a.errors} error(s)` : ""))),
    (byAttempt[a.attempt] || []).map((l) => el("div", { class: "line" },
      el("span", { class: "mono muted" }, (l.at || "").slice(11, 23)),
      el("span", { class: "lvl-" + l.level }, l.level.toUpperCase()),
      el("span", {}, l.message, l.fields ? el("span", { class: "mono muted" }, "  " + JSON.stringify(l.fields)) : "")))));
  view(
    el("div", { class: "toolbar" },
      el("a", { href: "#/runs?flow=" + encodeURIComponent(r.flow) }, "← runs of " + r.flow)),
    el("div", { class: "toolbar" }, el("h1", {}, "Run ", el("span", { class: "mono" }, r.id)),
      el("span", { id: "run-state" }, badge(r.state)),
      canRetry ? el("button", { id: "retry", onclick: () => runAction(r.id, "retry") }, "Retry") : "",
      canCancel ? el("button", { id: "cancel", class: "secondary", onclick: () => runAction(r.id, "cancel") }, "Cancel") : ""),
    el("p", { id: "notice" }),
    el("div", { class: "kv" }, kv("flow", r.flow + (r.version ? ` (version ${r.version})` : "")),
      kv("state", r.state), kv("attempt", `${r.attempt} of ${r.max_attempts}`),
      kv("trigger", r.trigger ? triggerText(r.trigger) : ""), kv("created", when(r.created)),
      kv("started", when(r.started)), kv("finished", when(r.finished)), kv("next try", when(r.next_try)),
      kv("parent", r.parent),
      r.started_by ? [el("div", {}, "started by"), el("div", { class: "mono", id: "run-started-by" },
        `event ${r.started_by.event} ${r.started_by.event_id}`,
        r.started_by.emitted_by ? [" emitted by run ", el("a", { id: "run-emitted-by",
          href: "#/runs/" + encodeURIComponent(r.started_by.emitted_by) }, r.started_by.emitted_by)] : "")] : []),
    r.error ? [el("h2", {}, "Error"), el("pre", { class: "error", id: "run-error" },
      r.error.message + (r.error.traceback ? "\n" + r.error.traceback : ""))] : "",
    el("h2", {}, "Payload"), el("pre", { id: "run-payload" }, pretty(r.payload)),
    r.result !== undefined ? [el("h2", {}, "Result"), el("pre", { id: "run-result" }, pretty(r.result))] : "",
    r.event_runs && r.event_runs.length ? [el("h2", {}, "Runs its events started"), el("table", { id: "event-runs" },
      el("thead", {}, el("tr", {}, ["Event", "Event id", "Flow", "Run"].map((h) => el("th", {}, h)))),
      el("tbody", {}, r.event_runs.map((e) => el("tr", { "data-run": e.run_id }, el("td", {}, e.event), el("td", { class: "mono" }, e.event_id),
        el("td", {}, e.flow), el("td", { class: "mono" },
          el("a", { href: "#/runs/" + encodeURIComponent(e.run_id) }, e.run_id))))))] : "",
    r.sequence ? [el("h2", {}, "Sequence"), sequenceDiagram(r.sequence)] : "",
    el("h2", {}, "Timeline"), attempts.length ? attempts : el("p", { class: "muted" }, "No attempt yet."),
    r.steps.length ? [el("h2", {}, "Steps"), el("table", {}, el("thead", {}, el("tr", {},
      ["#", "Step", "Attempts", "Finished", "Result"].map((h) => el("th", {}, h)))),
      el("tbody", {}, r.steps.map((s) => el("tr", {}, el("td", {}, s.seq), el("td", {}, s.name),
        el("td", {}, s.attempts), el("td", { class: "mono" }, when(s.finished)),
        el("td", { class: "mono" }, pretty(s.result))))))] : "",
    r.outbound.length ? [el("h2", {}, "Outbound calls"), el("table", {}, el("thead", {}, el("tr", {},
      ["Attempt", "At", "Method", "URL", "Status", "ms"].map((h) => el("th", {}, h)))),
      el("tbody", {}, r.outbound.map((o) => el("tr", {}, el("td", {}, o.attempt), el("td", { class: "mono" }, when(o.at)),
        el("td", {}, o.method || ""), el("td", { class: "mono" }, o.url || ""),
        el("td", {}, o.status !== undefined ? o.status : (o.error || "")), el("td", {}, o.ms !== undefined ? o.ms : "")))))] : "");
  // a run on its way is looked at again until it ends
  if (["queued", "running", "retrying"].includes(r.state)) {
    pollTimer = setTimeout(() => { if (location.hash === "#/runs/" + id) route(); }, 1000);
  }
}

async function runAction(id, action) {
  try {
    await api("POST", `/api/runs/${encodeURIComponent(id)}/${action}`);
    await route();
    notice(action === "retry" ? "Queued again." : "Cancelled.");
  } catch (e) { notice(e.message, true); }
}

// ---- routing ----

async function route() {
  clearTimeout(pollTimer);
  if (!sessionStorage.getItem(KEY)) return showLogin();
  const hash = location.hash || "#/runs";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", path.startsWith(a.getAttribute("href").slice(1))));
  try {
    const m = path.match(/^\/runs\/([\w-]+)$/);
    if (m) await runPage(m[1]);
    else if (path === "/flows") await flowsPage();
    else await runsPage(params);
  } catch (e) {
    if (e.status !== 401) view(el("p", { class: "error", id: "page-error" }, e.message));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login").onsubmit = (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("#token").value.trim());
    $("#token").value = "";
    route();
  };
  $("#forget").onclick = () => { sessionStorage.removeItem(KEY); showLogin(); };
  window.addEventListener("hashchange", route);
  route();
});
]==]

return {
  ["index.html"] = { type = "text/html; charset=utf-8", body = INDEX },
  ["console.css"] = { type = "text/css; charset=utf-8", body = CSS },
  ["console.js"] = { type = "text/javascript; charset=utf-8", body = JS },
}
