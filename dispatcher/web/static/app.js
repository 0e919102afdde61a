// The fleet page: one server-sent event stream ("snapshot" each second, "event" per new event),
// rendered with DOM calls and textContent only (data never becomes markup), and three actions.
"use strict";

const STATE_ORDER = ["failed", "stuck", "blocked", "invalid", "launching", "dispatched", "waiting", "ready", "done"];
const COUNT_COLS = ["pending", "blocked", "stuck", "invalid", "launching", "dispatched", "failed", "done"];
const MAX_EVENTS = 300;
let lastSvg = null;
let serverSkew = 0; // server time minus browser time: durations are computed with the server's clock

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// "3m12s", "2h05m", "4d03h": the same words as `dispatcher status`.
function dur(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "-";
  let s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  const two = (n) => String(n).padStart(2, "0");
  if (d) return `${d}d${two(h)}h`;
  if (h) return `${h}h${two(m)}m`;
  if (m) return `${m}m${two(s)}s`;
  return `${s}s`;
}

function now() { return Date.now() / 1000 + serverSkew; }

// Keyed update: existing nodes are kept (a button being clicked is not replaced every second).
function sync(container, items, key, create, update) {
  const old = new Map();
  for (const child of Array.from(container.children)) old.set(child.dataset.key, child);
  let prev = null;
  for (const item of items) {
    const k = key(item);
    let node = old.get(k);
    if (node) old.delete(k); else { node = create(item); node.dataset.key = k; }
    update(node, item);
    const want = prev ? prev.nextSibling : container.firstChild;
    if (want !== node) container.insertBefore(node, want);
    prev = node;
  }
  for (const node of old.values()) node.remove();
}

function renderBanners(st) {
  const box = $("banners");
  const items = [];
  if (!st.redis) items.push(["warn", "Redis unreachable: session states are rebuilt from tmux; actions need Redis."]);
  if (st.paused) items.push(["alert", `POOL PAUSED: ${st.pause_reason}`, "pause-banner"]);
  for (const [project, hold] of Object.entries(st.held || {})) {
    items.push(["warn", `project ${project} held for ${dur(hold.until - now())}: ${hold.reason}`]);
  }
  sync(box, items, (i) => i[1], (i) => el("div", {}), (node, i) => {
    node.className = `banner ${i[0]}`;
    if (i[2]) node.id = i[2];
    node.textContent = i[1];
  });
  document.body.dataset.paused = st.paused ? "1" : "0";
  $("resume-btn").classList.toggle("primary", !!st.paused || Object.keys(st.held || {}).length > 0);
}

function renderHosts(st) {
  const hosts = st.hosts || [];
  $("hosts-section").hidden = hosts.length === 0;
  const body = $("hosts").tBodies[0];
  sync(body, hosts, (h) => h.host, () => el("tr"), (tr, h) => {
    tr.replaceChildren(...[h.host + (h.this ? " (this)" : ""), h.alive ? "yes" : "NO", dur(h.last_seen_s) + " ago",
      h.version || "-", h.account || "-", h.sessions ?? "-", h.working ?? "-", h.idle ?? "-"].map((v) => el("td", {}, v)));
    tr.className = h.alive ? "" : "dead";
  });
}

function renderSessions(snap) {
  const rows = snap.status.sessions || [];
  $("session-count").textContent = `${rows.filter((r) => r.state === "working").length} working of ${rows.length}`;
  sync($("sessions"), rows, (r) => r.ref || r.session, (r) => {
    const card = el("article", { class: "card" });
    card.append(el("div", { class: "head" }, el("strong", { class: "name" }), el("span", { class: "st" })),
      el("div", { class: "task" }), el("div", { class: "meta muted" }), el("div", { class: "detail" }),
      el("pre", { class: "screen" }),
      el("div", { class: "links" }, el("a", { class: "open", target: "_blank", rel: "noopener" }, "open screen")));
    return card;
  }, (card, r) => {
    const local = snap.screens[r.session] !== undefined;
    card.dataset.session = r.session;
    card.dataset.state = r.state;
    card.querySelector(".name").textContent = r.ref || r.session;
    const badge = card.querySelector(".st");
    badge.textContent = r.state + (r.cooldown ? " (cooling down)" : "");
    badge.className = `st ${r.state}`;
    card.querySelector(".task").textContent = r.task ? `${r.project}:${r.task}` : "no task";
    const since = r.for_s === null || r.for_s === undefined ? "-" : dur(r.for_s + (now() - snap.time));
    card.querySelector(".meta").textContent = `${r.model || "-"} · for ${since}`;
    card.querySelector(".detail").textContent = r.detail || "";
    card.querySelector(".screen").textContent = local ? snap.screens[r.session] : "(screen on another host)";
    const link = card.querySelector(".open");
    link.hidden = !local;
    link.href = `/session/${encodeURIComponent(r.session)}`;
  });
}

function renderProjects(snap) {
  const counts = snap.status.counts || {};
  const names = Object.keys(snap.tasks).sort();
  sync($("projects"), names, (p) => p, (p) => {
    const box = el("div", { class: "project", "data-project": p });
    box.append(el("h3", {}, p), el("div", { class: "bar" }), el("div", { class: "counts muted" }),
      el("table", { class: "grid tasks" }, el("tbody")));
    return box;
  }, (box, p) => {
    const c = counts[p] || {};
    const total = COUNT_COLS.reduce((n, k) => n + (c[k] || 0), 0) || 1;
    sync(box.querySelector(".bar"), COUNT_COLS.filter((k) => c[k]), (k) => k, (k) => el("span"), (seg, k) => {
      seg.className = `seg ${k === "pending" ? "ready" : k}`;
      seg.style.width = `${(100 * c[k]) / total}%`;
      seg.title = `${k}: ${c[k]}`;
    });
    box.querySelector(".counts").textContent = COUNT_COLS.map((k) => `${k} ${c[k] || 0}`).join(" · ");
    const tasks = snap.tasks[p].slice().sort((a, b) => STATE_ORDER.indexOf(a.state) - STATE_ORDER.indexOf(b.state));
    sync(box.querySelector("tbody"), tasks, (t) => `${p}:${t.id}:${t.state === "done" ? "done" : "live"}`, (t) => {
      const tr = el("tr");
      tr.append(el("td", {}, el("span", { class: "st" })), el("td", { class: "id" }), el("td", { class: "title" }),
        el("td", { class: "reason" }), el("td", { class: "age muted" }), el("td", { class: "act" }));
      return tr;
    }, (tr, t) => {
      tr.dataset.task = `${p}:${t.id}`;
      tr.dataset.state = t.state;
      const badge = tr.querySelector(".st");
      badge.textContent = t.state;
      badge.className = `st ${t.state}`;
      tr.querySelector(".id").textContent = t.id;
      tr.querySelector(".title").textContent = t.title || "";
      tr.querySelector(".reason").textContent = t.reason || "";
      tr.querySelector(".age").textContent = t.since ? dur(now() - t.since) : "";
      const act = tr.querySelector(".act");
      if (t.state === "failed" && !act.firstChild) {
        act.append(el("button", { class: "retry", type: "button", onclick: () => retry(`${p}:${t.id}`) }, "Retry"));
      } else if (t.state !== "failed") act.replaceChildren();
    });
  });
}

function renderGraph(snap) {
  const g = snap.graph;
  $("graph-count").textContent = (g.nodes ? `${g.nodes} tasks` : "") + (g.omitted ? `, ${g.omitted} more not drawn` : "");
  if (g.svg !== lastSvg) {
    // Server-built SVG: every task ID, title and reason in it is escaped there.
    $("graph").innerHTML = g.nodes ? g.svg : "";
    lastSvg = g.svg;
  }
  sync($("cycles"), g.cycles, (c) => c, () => el("li", { class: "cycle" }), (li, c) => { li.textContent = `cycle: ${c}`; });
}

function render(snap) {
  serverSkew = snap.time - Date.now() / 1000;
  $("clock").textContent = new Date(snap.time * 1000).toLocaleTimeString([], { hour12: false });
  renderBanners(snap.status);
  renderHosts(snap.status);
  renderSessions(snap);
  renderProjects(snap);
  renderGraph(snap);
}

const seenEvents = new Set(); // a reconnect without Last-Event-ID resends the backlog: show each event once

function addEvent(ev) {
  if (seenEvents.has(ev.id)) return;
  seenEvents.add(ev.id);
  const list = $("events");
  const when = new Date(ev.time * 1000).toLocaleTimeString([], { hour12: false });
  const li = el("li", { class: `ev ${ev.kind}`, "data-kind": ev.kind, "data-task": ev.task || "" },
    el("span", { class: "when muted" }, when), el("span", { class: "kind" }, ev.kind),
    el("span", { class: "what" }, [ev.task, ev.session].filter(Boolean).join(" @ ")),
    el("span", { class: "detail muted" }, ev.detail || ""));
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

async function post(path, body) {
  const msg = $("action-msg");
  msg.textContent = "…";
  try {
    const res = await fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-AQ-CSRF": "1" }, body: JSON.stringify(body || {}),
    });
    const data = await res.json().catch(() => ({}));
    msg.textContent = res.ok ? Object.values(data).flat().join("; ") || "done" : `failed: ${data.error || res.status}`;
    msg.className = res.ok ? "ok" : "err";
  } catch (err) {
    msg.textContent = `failed: ${err}`;
    msg.className = "err";
  }
}

function retry(task) { return post("/api/retry", { task }); }

function connect() {
  const conn = $("conn");
  const es = new EventSource("/api/stream");
  es.addEventListener("open", () => { conn.textContent = "live"; conn.className = "conn ok"; });
  es.addEventListener("error", () => { conn.textContent = "reconnecting…"; conn.className = "conn wait"; });
  es.addEventListener("snapshot", (e) => render(JSON.parse(e.data)));
  es.addEventListener("event", (e) => addEvent(JSON.parse(e.data)));
}

$("pause-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = e.target;
  post("/api/pause", { until: f.until.value, reason: f.reason.value });
});
$("resume-btn").addEventListener("click", () => post("/api/resume", {}));
connect();
