// axcell operator HMI: plain JS, no dependencies, works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const ACTING = new Set(["Resetting", "Starting", "Stopping", "Aborting", "Holding", "Unholding", "Suspending",
  "Unsuspending", "Clearing", "Completing"]);
const HELP = {
  Stopped: "Cell stopped. Press RESET to prepare it.", Idle: "Ready. Press START to produce.",
  Execute: "Producing.", Held: "Held by a fault: acknowledge the alarm, fix the cause, then UNHOLD.",
  Suspended: "Waiting for the line (starved or blocked).", Aborted: "Aborted. Press CLEAR, then RESET.",
  Complete: "Job complete. Press RESET.",
};
const ORDER = ["reset", "start", "unhold", "unsuspend", "clear", "hold", "suspend", "stop", "abort"];
let state = { auth: { commands: true, reads: false }, cameras: [], busy: false, lastState: "" };
const trend = [];

function token() { return sessionStorage.getItem("axcell-token") || ""; }
function authHeaders() { const t = token(); return t ? { Authorization: "Bearer " + t } : {}; }
function withToken(url) {
  const t = token();
  return state.auth.reads && t ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(t) : url;
}
async function getJSON(url) {
  const r = await fetch(url, { headers: state.auth.reads ? authHeaders() : {} });
  if (!r.ok) throw new Error(r.status + " " + (await r.text()));
  return r.json();
}
function pct(x) { return (x * 100).toFixed(1) + "%"; }
function esc(s) { return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c])); }
function fmtT(t) { t = Math.floor(t || 0); const h = Math.floor(t / 3600), m = Math.floor(t / 60) % 60, s = t % 60;
  return (h ? h + ":" : "") + String(m).padStart(2, "0") + ":" + String(s).padStart(2, "0"); }

// ---- token --------------------------------------------------------------------------------------
function showToken() {
  $("token-status").textContent = token() ? "token set (this browser tab only)" : "no token: read-only";
}
$("token-save").addEventListener("click", () => {
  const v = $("token").value.trim();
  if (v) sessionStorage.setItem("axcell-token", v); else sessionStorage.removeItem("axcell-token");
  $("token").value = "";
  showToken(); setCamera(); refresh();
});
$("token").addEventListener("keydown", (e) => { if (e.key === "Enter") $("token-save").click(); });

// ---- commands -----------------------------------------------------------------------------------
async function send(cmd) {
  const msg = $("cmd-msg");
  if (!token()) { msg.className = "msg err"; msg.textContent = "Enter the operator token first."; $("token").focus(); return; }
  state.busy = true; renderButtons(state.legal || []);
  try {
    const r = await fetch("/api/cell/command", { method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify({ command: cmd }) });
    const j = await r.json().catch(() => ({}));
    if (r.ok) { msg.className = "msg"; msg.textContent = cmd.toUpperCase() + " accepted → " + j.state; }
    else if (r.status === 401) { msg.className = "msg err"; msg.textContent = "Token refused (401): check the operator token."; }
    else { msg.className = "msg err"; msg.textContent = (r.status === 409 ? "Not now: " : r.status + ": ") + (j.detail || ""); }
  } catch (e) { msg.className = "msg err"; msg.textContent = "No connection: " + e.message; }
  state.busy = false;
  refresh();
}
function renderButtons(legal) {
  const box = $("buttons");
  const want = ORDER.filter((c) => legal.includes(c));
  const have = [...box.children].map((b) => b.dataset.cmd);
  if (want.join() !== have.join()) {
    box.innerHTML = "";
    for (const c of want) {
      const b = document.createElement("button");
      b.textContent = c; b.dataset.cmd = c; b.className = "cmd-" + c; b.id = "btn-" + c;
      b.addEventListener("click", () => send(c));
      box.appendChild(b);
    }
  }
  for (const b of box.children) b.disabled = state.busy;
}

// ---- rendering ----------------------------------------------------------------------------------
function spark(svg, values, { min = 0, max = null, color = "#2f7fd6" } = {}) {
  if (!values.length) { svg.innerHTML = ""; return; }
  const hi = max ?? Math.max(1e-9, ...values), W = 300, H = 60;
  const pts = values.map((v, i) => [values.length === 1 ? W : (i * W) / (values.length - 1), H - 4 - ((v - min) / (hi - min || 1)) * (H - 8)]);
  const d = pts.map((p, i) => (i ? "L" : "M") + p[0].toFixed(1) + " " + p[1].toFixed(1)).join(" ");
  svg.innerHTML = `<path d="${d} L ${W} ${H} L 0 ${H} Z" fill="${color}" fill-opacity=".18"/>` +
    `<path d="${d}" fill="none" stroke="${color}" stroke-width="2" vector-effect="non-scaling-stroke"/>` +
    `<text x="296" y="12" text-anchor="end" fill="#8a97a6" font-size="10">${(values[values.length - 1]).toFixed(hi <= 1.001 ? 2 : 1)}</text>`;
}
function renderTrend() {
  const pts = trend.slice(-180);
  const rate = [];
  for (let i = 1; i < pts.length; i++) {
    const a = pts[Math.max(0, i - 10)], b = pts[i], dt = b.t - a.t;
    rate.push(dt > 0 ? ((b.packed - a.packed) / dt) * 60 : 0);
  }
  spark($("trend-rate"), rate, { color: "#4cd07d" });
  spark($("trend-oee"), pts.map((p) => p.oee), { max: 1, color: "#2f7fd6" });
}
function renderCell(c) {
  state.auth = c.auth_required || state.auth;
  state.legal = c.legal_commands || [];
  $("cell-name").textContent = c.name;
  $("clock").textContent = "cell time " + fmtT(c.time);
  $("run-id").textContent = c.run_id || "–";
  const b = $("state-banner");
  b.className = "banner st-" + c.state + (ACTING.has(c.state) ? " acting" : "");
  b.dataset.state = c.state;
  $("state-label").textContent = c.state;
  $("state-sub").textContent = (c.stop_reason && c.state !== "Execute" ? "Stop reason: " + c.stop_reason + " · " : "") + (HELP[c.state] || "");
  renderButtons(state.legal);
  const n = c.counts || {};
  $("count-packed").textContent = n.packed ?? 0; $("count-rejected").textContent = n.rejected ?? 0;
  $("count-missed").textContent = n.missed ?? 0; $("count-arrived").textContent = n.arrived ?? 0;
  $("count-cases").textContent = n.cases_completed ?? 0;
  const o = c.oee || {};
  $("oee-value").textContent = o.processed ? pct(o.oee) : "–";
  for (const [k, v] of [["a", o.availability], ["p", o.performance], ["q", o.quality]]) {
    $("bar-" + k).style.width = Math.min(100, (v || 0) * 100) + "%"; $("val-" + k).textContent = v != null ? pct(v) : "–";
  }
  const acc = o.acc || {};
  $("acc").textContent = acc.processed != null ? `processed ${acc.processed} · good ${acc.good} · defective ${acc.defective}` : "–";
  const losses = Object.entries(o.losses_s || {}).filter(([k, v]) => v > 0.05 && k !== "run");
  const dt = (o.downtime || []).slice(0, 4);
  $("losses").innerHTML = (losses.length ? "<div><b>Losses</b><span>seconds</span></div>" : "") +
    losses.map(([k, v]) => `<div><span>${esc(k.replace(/_/g, " "))}</span><span>${v.toFixed(0)}</span></div>`).join("") +
    dt.map((d) => `<div><span>${esc(d.state)}: ${esc(d.reason || "no alarm")}</span><span>${d.seconds.toFixed(0)} s</span></div>`).join("");
  renderTree(c.process, new Set(c.current_skill || []));
  $("running").textContent = (c.current_skill || []).join(", ");
  if (JSON.stringify(c.cameras) !== JSON.stringify(state.cameras)) {
    state.cameras = c.cameras || [];
    $("camera-select").innerHTML = state.cameras.map((n) => `<option>${esc(n)}</option>`).join("");
    setCamera();
  }
  if (state.lastState !== c.state) { state.lastState = c.state; refreshAlarms(); }
}
function renderTree(node, active) {
  const el = $("tree");
  if (!node) { el.innerHTML = '<span class="muted">The process tree starts with the cell (press START).</span>'; return; }
  const walk = (n) => {
    const cls = "n " + String(n.status || "").toUpperCase() + (active.has(n.name) ? " active" : "");
    return `<div class="node"><span class="${cls}">${esc(n.name)}</span> <span class="t">${esc(n.type)}</span>` +
      (n.children || []).map(walk).join("") + "</div>";
  };
  el.innerHTML = walk(node);
}
function setCamera() {
  const name = $("camera-select").value || state.cameras[0];
  if (name) $("camera").src = withToken(`/api/camera/${encodeURIComponent(name)}.mjpg`);
}
$("camera-select").addEventListener("change", setCamera);

async function refreshAlarms() {
  try {
    const alarms = await getJSON("/api/alarms?limit=50");
    const unacked = alarms.filter((a) => a.active && !a.acked).length;
    $("alarm-count").textContent = alarms.filter((a) => a.active).length;
    $("alarm-count").className = "badge" + (unacked ? " hot" : "");
    $("alarms").innerHTML = alarms.length ? alarms.map((a) => `
      <li class="sev-${esc(a.severity)} ${a.active && !a.acked ? "unacked" : ""} ${a.active ? "" : "cleared"}" data-alarm="${a.id}">
        <div class="sev"></div>
        <div><div><b>#${a.id}</b> ${esc(a.message)}${a.first_out ? '<span class="fo">FIRST-OUT</span>' : ""}</div>
          <div class="meta">${esc(a.severity)} · ${esc(a.source)} · ${esc(a.code)} · t=${fmtT(a.time)}${a.acked ? " · acked by " + esc(a.acked_by) : ""}${a.active ? "" : " · cleared"}</div></div>
        <div>${a.active && !a.acked ? `<button class="small cmd-ack" data-ack="${a.id}">Ack</button>` : ""}</div>
      </li>`).join("") : '<li class="muted">No alarms.</li>';
    for (const b of $("alarms").querySelectorAll("button[data-ack]")) b.addEventListener("click", () => ack(b.dataset.ack));
  } catch (e) { /* shown by the connection dot */ }
}
async function ack(id) {
  if (!token()) { $("cmd-msg").className = "msg err"; $("cmd-msg").textContent = "Enter the operator token to acknowledge."; return; }
  const r = await fetch(`/api/alarms/${encodeURIComponent(id)}/ack`, { method: "POST", headers: authHeaders() });
  $("cmd-msg").className = r.ok ? "msg" : "msg err";
  $("cmd-msg").textContent = r.ok ? `Alarm #${id} acknowledged.` : `Acknowledge failed (${r.status}).`;
  refreshAlarms();
}
async function refreshParts() {
  try {
    const parts = await getJSON("/api/parts?limit=12");
    $("parts").innerHTML = parts.map((p) => `<tr>
      <td>${esc(p.part_id)}</td><td><span class="chip ${esc(p.verdict)}">${esc(p.verdict || "–")}</span></td>
      <td><span class="chip ${esc(p.outcome || "open")}">${esc(p.outcome || "on belt")}</span></td>
      <td>${esc((p.defects || []).join(", "))}</td><td>${p.score != null ? Number(p.score).toFixed(2) : ""}</td>
      <td>${p.image_url ? `<img loading="lazy" src="${withToken(p.image_url)}" data-full="${withToken(p.image_url)}" alt="${esc(p.part_id)}">` : ""}</td></tr>`).join("");
    for (const img of $("parts").querySelectorAll("img")) img.addEventListener("click", () => {
      $("viewer-img").src = img.dataset.full; $("viewer-cap").textContent = img.alt; $("viewer").classList.remove("hidden");
    });
  } catch (e) { /* ignore */ }
}
$("viewer").addEventListener("click", () => $("viewer").classList.add("hidden"));

let inflight = false;
async function refresh() {
  if (inflight) return;
  inflight = true;
  try { renderCell(await getJSON("/api/cell")); $("conn").className = "dot on"; }
  catch (e) { $("conn").className = "dot off"; }
  finally { inflight = false; }
}
async function refreshTrend() {
  try { const t = await getJSON("/api/trend"); trend.length = 0; trend.push(...t); renderTrend(); } catch (e) { /* ignore */ }
}

// ---- live events --------------------------------------------------------------------------------
let ws = null;
function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(withToken(`${proto}//${location.host}/api/events`));
  ws.onopen = () => $("conn").className = "dot on";
  ws.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    if (ev.type === "state" || ev.type === "hello") refresh();
    if (ev.type === "alarm") { refreshAlarms(); refresh(); }
  };
  ws.onclose = () => { $("conn").className = "dot off"; setTimeout(connect, 2000); };
}

showToken();
refresh().then(() => { connect(); refreshAlarms(); refreshParts(); refreshTrend(); });
setInterval(refresh, 1000);
setInterval(refreshParts, 2000);
setInterval(refreshTrend, 2000);
setInterval(refreshAlarms, 3000);
