// nvr-edge's page: plain JavaScript over the JSON API, no build step. Every value from the
// API goes into the page as text (textContent), never as HTML.
"use strict";

const state = { csrf: null, role: null, cursor: null, timers: [], cameras: [] };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function say(text, bad) {
  const m = $("message");
  m.textContent = text;
  m.className = bad ? "bad" : "";
  m.hidden = !text;
}

// Every request says it is the page's (a 401 then shows the login form, not the browser's
// password dialog) and a change carries the session's CSRF token.
async function api(path, opts) {
  opts = opts || {};
  const headers = Object.assign({ "X-Requested-With": "nvr-edge" }, opts.headers || {});
  if (opts.method && opts.method !== "GET") headers["X-CSRF-Token"] = state.csrf || "";
  if (opts.json !== undefined) {
    headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(opts.json);
  }
  const r = await fetch(path, { method: opts.method || "GET", headers, body: opts.body, credentials: "same-origin" });
  if (r.status === 401 && path !== "/api/login") { showLogin(); throw new Error("log in first"); }
  const body = r.headers.get("Content-Type")?.includes("json") ? await r.json() : null;
  if (!r.ok) throw new Error((body && body.error) || r.statusText);
  return body;
}

function stopTimers() {
  state.timers.forEach(clearInterval);
  state.timers = [];
  // Streams end when their images go: a hidden view must not hold a stream slot.
  document.querySelectorAll("img[data-stream]").forEach((i) => { i.removeAttribute("src"); });
}

function every(ms, f) { f(); state.timers.push(setInterval(f, ms)); }

function showLogin() {
  stopTimers();
  $("nav").hidden = true;
  document.querySelectorAll(".view").forEach((v) => { v.hidden = true; });
  $("login").hidden = false;
}

async function boot() {
  const s = await api("/api/session");
  if (s.login_required) { showLogin(); return; }
  state.csrf = s.csrf;
  state.role = s.role;
  $("who").textContent = s.user ? `${s.user} (${s.role})` : "local admin";
  $("logout").hidden = !s.user;
  document.body.classList.toggle("is-admin", s.role === "admin");
  $("login").hidden = true;
  $("nav").hidden = false;
  const cams = await api("/api/cameras");
  state.cameras = cams.cameras;
  const sel = document.querySelector("#event-filters select[name=camera]");
  sel.replaceChildren(el("option", { value: "", text: "all" }));
  for (const c of state.cameras) sel.append(el("option", { value: c.id, text: c.id }));
  route();
}

function route() {
  stopTimers();
  say("");
  const view = (location.hash || "#cameras").slice(1);
  const views = { cameras: showCameras, events: showEvents, household: showHousehold, status: showStatus };
  const show = views[view] || showCameras;
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== (views[view] ? view : "cameras"); });
  document.querySelectorAll("#nav a").forEach((a) => { a.classList.toggle("here", a.getAttribute("href") === "#" + view); });
  show().catch((e) => say(e.message, true));
}

// Cameras: each tile plays its live MJPEG stream; when the server has no stream slot left
// (http.max_streams) the tile shows the newest frame, refreshed every second.
async function showCameras() {
  const grid = $("camera-grid");
  grid.replaceChildren();
  const tiles = {};
  for (const c of state.cameras) {
    const img = el("img", { alt: `camera ${c.id}`, "data-stream": "1" });
    img.addEventListener("error", () => {
      if (img.dataset.fallback) return;
      img.dataset.fallback = "1";
      every(1000, () => { img.src = `${c.latest}?t=${Date.now()}`; });
    }, { once: true });
    img.src = c.stream;
    const info = el("span", { class: "cam-info", text: "…" });
    const tile = el("figure", { class: "tile", "data-camera": c.id }, img, el("figcaption", {}, el("strong", { text: c.id }), " ", info));
    tiles[c.id] = info;
    grid.append(tile);
  }
  every(2000, async () => {
    const h = await api("/api/health");
    const s = await api("/api/stats");
    for (const c of s.cameras) {
      const live = h.cameras.find((x) => x.id === c.id)?.live;
      const info = tiles[c.id];
      if (!info) continue;
      info.textContent = `${live ? "live" : "NOT LIVE"} · ${(c.capture.camera_fps || 0).toFixed(1)} fps`;
      info.className = "cam-info " + (live ? "ok" : "bad");
    }
  });
}

function stamp(t) { return t ? new Date(t.epoch * 1000).toLocaleString() : "…"; }

function household(e) {
  const who = ((e.household && e.household.identified) || []).map((i) => i.kind === "member" ? i.name : (i.plate || i.description));
  return who.length ? who.join(", ") : "";
}

async function showEvents() {
  await fillMembers(document.querySelector("#event-filters select[name=member]"), "anyone");
  state.cursor = null;
  $("event-list").replaceChildren();
  await moreEvents();
}

function eventQuery() {
  const f = new FormData($("event-filters"));
  const q = new URLSearchParams();
  for (const k of ["camera", "min_risk", "member"]) if (f.get(k)) q.set(k, f.get(k));
  for (const k of ["since", "until"]) if (f.get(k)) q.set(k, String(new Date(f.get(k)).getTime() / 1000));
  q.set("limit", "30");
  if (state.cursor) q.set("cursor", state.cursor);
  return q;
}

async function moreEvents() {
  const r = await api("/api/events?" + eventQuery());
  for (const e of r.events) $("event-list").append(eventRow(e));
  state.cursor = r.next_cursor;
  $("event-more").hidden = !r.next_cursor;
  if (!$("event-list").children.length) $("event-list").append(el("li", { class: "empty", text: "No events." }));
}

function eventRow(e) {
  const thumb = e.snapshot_url ? el("img", { src: e.snapshot_url, alt: `event ${e.id}`, loading: "lazy" }) : el("div", { class: "no-snap", text: "no picture" });
  const risk = e.risk || "unrated";
  const li = el("li", { class: "event", "data-event": String(e.id) },
    thumb,
    el("div", {},
      el("strong", { text: `${e.camera} · ${stamp(e.start)}` }),
      el("div", { text: `${e.action || "motion"}${e.model_placeholder ? " (placeholder model)" : ""}` }),
      el("div", {}, el("span", { class: `risk risk-${risk}`, text: risk }), " ", household(e)),
    ));
  if (e.clip_mjpeg_url) li.dataset.clip = "1";
  li.addEventListener("click", () => play(e));
  return li;
}

function play(e) {
  $("event-title").textContent = `${e.camera} · ${stamp(e.start)} · ${e.action || "motion"}`;
  const v = $("event-video");
  v.dataset.stream = "1";
  if (e.clip_mjpeg_url) { v.src = e.clip_mjpeg_url; } else if (e.snapshot_url) { v.src = e.snapshot_url; } else { v.removeAttribute("src"); }
  const dl = $("event-download");
  dl.hidden = !e.clip_url;
  if (e.clip_url) dl.href = e.clip_url;
  $("event-delete").dataset.event = String(e.id);
  $("event-player").hidden = false;
  $("event-player").scrollIntoView({ block: "nearest" });
}

async function fillMembers(sel, none) {
  const h = await api("/api/household");
  const keep = sel.value;
  sel.replaceChildren();
  if (none) sel.append(el("option", { value: "", text: none }));
  for (const m of h.members) sel.append(el("option", { value: String(m.id), text: m.name }));
  sel.value = keep;
  return h;
}

async function showHousehold() {
  const h = await fillMembers(document.querySelector("#enrol-form select[name=member]"));
  const rows = $("member-rows");
  rows.replaceChildren();
  for (const m of h.members) {
    const faces = Object.entries(m.embeddings).map(([k, n]) => `${n}${k.endsWith("(negative)") ? " negative" : ""}`).join(", ") || "none";
    const rm = el("button", { type: "button", class: "admin danger", text: "Remove" });
    rm.addEventListener("click", () => change(`/api/household/members/${m.id}`, "DELETE", `Remove ${m.name}?`).then(showHousehold));
    rows.append(el("tr", {}, el("td", { text: m.name }), el("td", { text: m.role }), el("td", { text: m.schedules.join("; ") }), el("td", { text: faces }), el("td", {}, rm)));
  }
  const vrows = $("vehicle-rows");
  vrows.replaceChildren();
  for (const v of h.vehicles) {
    const rm = el("button", { type: "button", class: "admin danger", text: "Remove" });
    rm.addEventListener("click", () => change(`/api/household/vehicles/${v.id}`, "DELETE", `Remove ${v.plate || v.description}?`).then(showHousehold));
    vrows.append(el("tr", {}, el("td", { text: v.plate || "" }), el("td", { text: v.description }), el("td", { text: v.trusted ? "yes" : "no" }), el("td", {}, rm)));
  }
}

async function change(path, method, question) {
  if (question && !confirm(question)) return;
  try { await api(path, { method }); } catch (e) { say(e.message, true); }
}

// The faces an enrolment stored, drawn on their photos.
function showFaces(files, stored) {
  const out = $("enrol-result");
  out.replaceChildren();
  stored.forEach((s, i) => {
    const file = files[i];
    if (!file) return;
    const canvas = el("canvas", { class: "face" });
    const img = new Image();
    img.addEventListener("load", () => {
      const scale = Math.min(1, 320 / img.naturalWidth);
      canvas.width = img.naturalWidth * scale;
      canvas.height = img.naturalHeight * scale;
      const g = canvas.getContext("2d");
      g.drawImage(img, 0, 0, canvas.width, canvas.height);
      const [x0, y0, x1, y1] = s.box;
      g.strokeStyle = "#2ecc71";
      g.lineWidth = 3;
      g.strokeRect(x0 * scale, y0 * scale, (x1 - x0) * scale, (y1 - y0) * scale);
      URL.revokeObjectURL(img.src);
    });
    img.src = URL.createObjectURL(file);
    out.append(el("figure", {}, canvas, el("figcaption", { text: `${s.image}: face ${s.face}, sharpness ${s.sharpness.toFixed(0)}` })));
  });
}

function row(cells) { return el("tr", {}, ...cells.map((c) => el("td", { text: String(c) }))); }
const mib = (b) => (b == null ? "?" : (b / 1048576).toFixed(1) + " MiB");

async function showStatus() {
  every(3000, async () => {
    const s = await api("/api/stats");
    $("stats-rows").replaceChildren(...s.cameras.map((c) => row([
      c.id, c.capture.state, (c.capture.camera_fps || 0).toFixed(1), c.capture.frames, c.capture.bad_frames,
      c.capture.reconnects, `${c.ring.len} frames, ${mib(c.ring.bytes_used)}`, mib(c.memory_bytes), c.analysis ? c.analysis.events : 0,
    ])));
    const p = s.process_memory;
    $("process-memory").textContent = p ? `Process memory: ${mib(p.allocated)} allocated, ${mib(p.resident)} resident` : "";
  });
  try {
    const t = await api("/api/selftest");
    const about = [`nvr-edge ${t.version}`];
    if (t.system) about.push(t.system.arch, `kernel tier ${t.system.kernel_tier}`);
    if (t.seconds) about.push(`${Number(t.seconds).toFixed(0)} s`);
    $("selftest-verdict").textContent = `Verdict: ${t.verdict} (${about.join(", ")})`;
    $("selftest-rows").replaceChildren(...t.checks.map((c) => {
      const r = row([c.name, c.camera || "", `${Number(c.measured).toPrecision(4)} ${c.unit}`, `${c.op} ${c.target}`, c.pass ? "PASS" : "FAIL"]);
      r.className = c.pass ? "ok" : "bad";
      return r;
    }));
  } catch (e) {
    $("selftest-verdict").textContent = e.message;
    $("selftest-rows").replaceChildren();
  }
}

function wire() {
  window.addEventListener("hashchange", route);
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    try {
      await api("/api/login", { method: "POST", json: { name: f.get("name"), password: f.get("password") } });
      ev.target.reset();
      say("");
      await boot();
    } catch (e) { say(e.message, true); }
  });
  $("logout").addEventListener("click", async () => {
    await api("/api/logout", { method: "POST" }).catch(() => {});
    location.hash = "";
    showLogin();
  });
  $("event-filters").addEventListener("submit", (ev) => { ev.preventDefault(); showEvents().catch((e) => say(e.message, true)); });
  $("event-more").addEventListener("click", () => moreEvents().catch((e) => say(e.message, true)));
  $("event-close").addEventListener("click", () => { $("event-video").removeAttribute("src"); $("event-player").hidden = true; });
  $("event-delete").addEventListener("click", async (ev) => {
    await change(`/api/events/${ev.target.dataset.event}`, "DELETE", "Delete this event and its video?");
    $("event-video").removeAttribute("src");
    $("event-player").hidden = true;
    showEvents().catch((e) => say(e.message, true));
  });
  $("member-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const schedules = f.get("schedule") ? [f.get("schedule")] : [];
    try {
      await api("/api/household/members", { method: "POST", json: { name: f.get("name"), role: f.get("role"), schedules } });
      ev.target.reset();
      await showHousehold();
    } catch (e) { say(e.message, true); }
  });
  $("enrol-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const files = f.getAll("photos").filter((x) => x.size);
    const body = new FormData();
    files.forEach((x) => body.append("photo", x, x.name));
    const q = f.get("not") ? "?not=1" : "";
    say("Finding faces…");
    try {
      const r = await api(`/api/household/members/${f.get("member")}/photos${q}`, { method: "POST", body });
      say(`Stored ${r.stored.length} face(s).`);
      showFaces(files, r.stored);
      await showHousehold();
    } catch (e) { say(e.message, true); }
  });
  $("vehicle-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    try {
      await api("/api/household/vehicles", { method: "POST", json: { plate: f.get("plate"), description: f.get("description") || "", trusted: !!f.get("trusted") } });
      ev.target.reset();
      await showHousehold();
    } catch (e) { say(e.message, true); }
  });
}

wire();
boot().catch((e) => say(e.message, true));
