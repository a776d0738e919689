// qmpevents fleet timeline: one lane per VM, drawn on a canvas; no library, no network
// beyond this server's API (or none at all when the data is embedded in the page).
// Every outside text (VM names, event data, gap reasons) is shown with textContent.
"use strict";
(() => {
  const SEED = {
    DUMP_COMPLETED: "#1f77b4", GUEST_PANICKED: "#d62728", MEM_UNPLUG_ERROR: "#ff7f0e",
    QUORUM_FAILURE: "#9467bd", QUORUM_REPORT_BAD: "#e377c2", MIGRATION_PASS: "#2ca02c",
    VSERPORT_CHANGE: "#00acc1",
  };
  const LIFECYCLE = new Set(["STOP", "RESUME", "SHUTDOWN", "POWERDOWN", "RESET", "SUSPEND",
    "SUSPEND_DISK", "WAKEUP", "MIGRATION", "DEVICE_DELETED"]);
  const MIN_RANGE = 60, MAX_RANGE = 604800, LANE = 18, BUCKET_PX = 2;
  const embedded = document.getElementById("qmp-data");
  const STATIC = embedded ? JSON.parse(embedded.textContent) : null;
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas"), axis = $("axis"), tip = $("tip");
  const state = { view: null, data: null, shapes: [], loads: 0, seq: 0, live: 0,
    streamOpen: false, source: null, laneKey: "", limited: new Set() };

  const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));
  const colour = (name) => SEED[name] || (LIFECYCLE.has(name) ? "#b0bec5" : "#8d6e63");
  const globRe = (glob) => new RegExp("^" + glob.replace(/[.+^${}()|\\]/g, "\\$&")
    .replace(/\*/g, ".*").replace(/\?/g, ".") + "$");
  const nowSec = () => (STATIC ? STATIC.generated : Date.now() / 1000);
  const fmt = (t) => new Date(t * 1000).toISOString().replace("T", " ").replace("Z", " UTC");

  function readURL() {
    const p = new URLSearchParams(location.search);
    let range = Number(p.get("range"));
    let end = p.has("end") && isFinite(Number(p.get("end"))) ? Number(p.get("end")) : null;
    if (STATIC && !p.has("range")) {
      const times = STATIC.events.map((e) => e[3]).concat(STATIC.gaps.map((g) => g[1]));
      const hi = times.length ? Math.max(...times) : STATIC.generated;
      const lo = times.length ? Math.min(...times) : hi - 3600;
      range = (hi - lo) * 1.1 + 10;
      end = hi + (range - (hi - lo)) / 2;
    }
    return { vm: p.get("vm") || "", event: p.get("event") || "",
      range: clamp(range || 3600, MIN_RANGE, MAX_RANGE), end };
  }

  function writeURL() {
    const v = state.view, p = new URLSearchParams();
    if (v.vm) p.set("vm", v.vm);
    if (v.event) p.set("event", v.event);
    p.set("range", String(Math.round(v.range)));
    if (v.end !== null) p.set("end", v.end.toFixed(3));
    try { history.replaceState(null, "", location.pathname + "?" + p.toString()); } catch (e) { /* file: */ }
  }

  function viewRange() {
    const until = state.view.end === null ? nowSec() : state.view.end;
    return { since: until - state.view.range, until };
  }
  const plotWidth = () => Math.max(100, Math.floor($("plot").clientWidth));

  function buildStatic(since, until, width, v) {
    const slots = Math.max(1, Math.floor(width / BUCKET_PX)), secs = (until - since) / slots;
    const vmRe = v.vm ? globRe(v.vm) : null;
    const evRes = v.event ? v.event.split(",").map((s) => s.trim()).filter(Boolean).map(globRe) : null;
    const lanes = new Map(), kinds = [], kindIndex = new Map(), counts = {};
    const kind = (n) => { if (!kindIndex.has(n)) { kindIndex.set(n, kinds.length); kinds.push(n); } return kindIndex.get(n); };
    const lane = (vm) => { if (!lanes.has(vm)) lanes.set(vm, { vm, count: 0, marks: [], buckets: [], gaps: [], all: [] }); return lanes.get(vm); };
    for (const e of STATIC.events) if (!vmRe || vmRe.test(e[1])) lane(e[1]);
    for (const g of STATIC.gaps) if (!vmRe || vmRe.test(g[0])) lane(g[0]);
    for (const [id, vm, name, ts, held] of STATIC.events) {
      if (!lanes.has(vm) || ts < since || ts > until || (evRes && !evRes.some((r) => r.test(name)))) continue;
      const l = lanes.get(vm); l.count++; l.all.push([id, kind(name), ts, held]);
      counts[name] = (counts[name] || 0) + 1;
    }
    for (const l of lanes.values()) {
      if (l.count <= slots) l.marks = l.all;
      else {
        const cells = new Map();
        for (const [, k, ts, held] of l.all) {
          const i = Math.min(slots - 1, Math.floor((ts - since) / secs));
          const c = cells.get(i) || { n: 0, per: new Map(), limited: 0 };
          c.n++; c.per.set(k, (c.per.get(k) || 0) + 1); if (held !== null) c.limited++;
          cells.set(i, c);
        }
        l.buckets = [...cells.entries()].sort((a, b) => a[0] - b[0]).map(([i, c]) =>
          [i, c.n, [...c.per.entries()].sort((a, b) => b[1] - a[1])[0][0], c.limited]);
      }
      delete l.all;
    }
    for (const [vm, s, e, reason] of STATIC.gaps)
      if (lanes.has(vm) && s <= until && (e === null || e >= since)) lanes.get(vm).gaps.push([s, e, reason]);
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    return { since, until, now: STATIC.generated, bucket_seconds: secs, kinds, counts, total,
      rate_limited: ["QUORUM_FAILURE", "QUORUM_REPORT_BAD", "VSERPORT_CHANGE", "RTC_CHANGE",
        "WATCHDOG", "BALLOON_CHANGE", "MEMORY_DEVICE_SIZE_CHANGE"],
      lanes: [...lanes.values()].sort((a, b) => (a.vm < b.vm ? -1 : a.vm > b.vm ? 1 : 0)) };
  }

  async function load() {
    const seq = ++state.seq, v = state.view, { since, until } = viewRange(), width = plotWidth();
    let data;
    if (STATIC) data = buildStatic(since, until, width, v);
    else {
      const q = new URLSearchParams({ since: since.toFixed(3), until: until.toFixed(3),
        width: String(width), bucket: String(BUCKET_PX) });
      if (v.vm) q.set("vm", v.vm);
      if (v.event) q.set("event", v.event);
      let body;
      try {
        const reply = await fetch("api/timeline?" + q.toString());
        body = await reply.json();
        if (!reply.ok) { status("error: " + body.error); return; }
      } catch (e) { status("cannot load: " + e); return; }
      data = body;
    }
    if (seq !== state.seq) return;
    data.kindIndex = new Map(data.kinds.map((k, i) => [k, i]));
    state.limited = new Set(data.rate_limited);
    state.data = data;
    state.loads++;
    document.body.dataset.loads = String(state.loads);
    render();
  }

  function status(text) { $("status").textContent = text; }

  function renderLegend(d) {
    const legend = $("legend");
    legend.replaceChildren();
    const names = Object.keys(d.counts).sort((a, b) => d.counts[b] - d.counts[a] || (a < b ? -1 : 1));
    for (const name of names) {
      const item = document.createElement("span");
      item.className = "kind" + (state.limited.has(name) ? " limited" : "");
      item.dataset.event = name;
      const sw = document.createElement("span");
      sw.className = "swatch"; sw.style.background = colour(name);
      const label = document.createElement("span");
      label.textContent = name + " " + d.counts[name];
      item.append(sw, label);
      legend.append(item);
    }
  }

  function renderLabels(d) {
    const key = d.lanes.map((l) => l.vm).join("\u0000");
    if (key === state.laneKey) return;
    state.laneKey = key;
    const labels = $("labels");
    labels.replaceChildren(...d.lanes.map((l) => {
      const div = document.createElement("div");
      div.className = "lane"; div.textContent = l.vm; div.title = l.vm; div.dataset.vm = l.vm;
      return div;
    }));
  }

  function ticks(since, until, width) {
    const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
      21600, 43200, 86400, 172800];
    const step = steps.find((s) => (until - since) / s <= width / 110) || 604800;
    const out = [];
    for (let t = Math.ceil(since / step) * step; t <= until; t += step) out.push(t);
    return { out, step };
  }

  function render() {
    const d = state.data;
    if (!d) return;
    const { since, until } = viewRange(), width = plotWidth(), dpr = window.devicePixelRatio || 1;
    const X = (t) => ((t - since) / (until - since)) * width;
    renderLegend(d);
    renderLabels(d);
    const height = Math.max(LANE, d.lanes.length * LANE);
    canvas.width = width * dpr; canvas.height = height * dpr; canvas.style.height = height + "px";
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, height);
    const shapes = [];
    d.lanes.forEach((lane, i) => {
      const top = i * LANE;
      g.fillStyle = i % 2 ? "#f3f5f6" : "#ffffff"; g.fillRect(0, top, width, LANE);
      for (const [s, e, reason] of lane.gaps) {
        const x0 = Math.max(0, X(s)), x1 = Math.min(width, X(e === null ? nowSec() : e));
        if (x1 < 0 || x0 > width) continue;
        g.fillStyle = "rgba(120,120,120,0.28)"; g.fillRect(x0, top + 1, Math.max(1, x1 - x0), LANE - 2);
        shapes.push({ type: "gap", lane: i, vm: lane.vm, x0, x1, y: top + LANE / 2, reason, started: s, ended: e });
      }
      for (const [idx, n, k, limited] of lane.buckets) {
        const t0 = d.since + idx * d.bucket_seconds, x0 = X(t0), w = Math.max(2, X(t0 + d.bucket_seconds) - x0);
        if (x0 + w < 0 || x0 > width) continue;
        const h = Math.min(LANE - 4, 4 + Math.log2(n) * 2), name = d.kinds[k];
        g.fillStyle = colour(name); g.fillRect(x0, top + LANE - 2 - h, w, h);
        if (limited) { g.fillStyle = "#000"; g.fillRect(x0, top + 1, w, 2); }
        shapes.push({ type: "bucket", lane: i, vm: lane.vm, x0, x1: x0 + w, y: top + LANE / 2,
          count: n, name, limited, t0, t1: t0 + d.bucket_seconds });
      }
      for (const [id, k, ts, held] of lane.marks) {
        const x = X(ts), name = d.kinds[k];
        if (x < -4 || x > width + 4) continue;
        if (held !== null && held > 0) {  // how long QEMU held it back: a tail to its arrival
          g.strokeStyle = "#455a64"; g.beginPath(); g.moveTo(x, top + LANE / 2);
          g.lineTo(Math.min(width, X(ts + held)), top + LANE / 2); g.stroke();
        }
        g.fillStyle = colour(name); g.fillRect(x - 1.5, top + 3, 3, LANE - 6);
        if (state.limited.has(name)) {  // rate-limited kind: a small triangle on top
          g.fillStyle = "#263238"; g.beginPath(); g.moveTo(x - 3, top); g.lineTo(x + 3, top);
          g.lineTo(x, top + 4); g.fill();
        }
        shapes.push({ type: "mark", lane: i, vm: lane.vm, id, name, ts, held, x0: x - 3, x1: x + 3, x, y: top + LANE / 2 });
      }
    });
    const now = nowSec();
    if (now >= since && now <= until) {
      g.strokeStyle = "#e53935"; g.lineWidth = 1.5; g.beginPath();
      g.moveTo(X(now), 0); g.lineTo(X(now), height); g.stroke(); g.lineWidth = 1;
    }
    state.shapes = shapes;
    drawAxis(since, until, width, dpr, X, now);
    const aggregated = d.lanes.filter((l) => l.buckets.length).length;
    status(`${d.total} event(s) in view, ${d.lanes.length} VM(s)` +
      (aggregated ? `, ${aggregated} lane(s) aggregated` : "") +
      (STATIC ? ", saved view" : state.view.end === null ? ", live" : ", paused"));
    for (const b of document.querySelectorAll("#zoom [data-range]"))
      b.classList.toggle("active", Number(b.dataset.range) === Math.round(state.view.range));
    $("live").classList.toggle("active", state.view.end === null);
  }

  function drawAxis(since, until, width, dpr, X, now) {
    axis.width = width * dpr; axis.style.width = width + "px";
    const g = axis.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, 24); g.fillStyle = "#37474f"; g.font = "11px sans-serif";
    const { out, step } = ticks(since, until, width);
    for (const t of out) {
      const x = X(t), date = new Date(t * 1000);
      const text = step >= 86400 ? date.toLocaleDateString() : step >= 60
        ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : date.toLocaleTimeString();
      g.fillRect(x, 16, 1, 8); g.fillText(text, x + 2, 12);
    }
    if (now >= since && now <= until) { g.fillStyle = "#e53935"; g.fillRect(X(now) - 1, 0, 2, 24); }
  }

  function shapeAt(x, y) {
    const lane = Math.floor(y / LANE);
    let best = null, dist = 5;
    for (const s of state.shapes) {
      if (s.lane !== lane || s.type === "gap") continue;
      const dd = s.type === "mark" ? Math.abs(s.x - x) : (x >= s.x0 && x <= s.x1 ? 0 : 99);
      if (dd < dist) { best = s; dist = dd; }
    }
    if (best) return best;
    return state.shapes.find((s) => s.type === "gap" && s.lane === lane && x >= s.x0 && x <= s.x1) || null;
  }

  function describe(s) {
    if (s.type === "mark") return `${s.name}\nVM ${s.vm}\n${fmt(s.ts)}` +
      (s.held !== null ? `\nrate-limited, held back ${s.held.toFixed(3)} s` : "");
    if (s.type === "bucket") return `${s.count} events (mostly ${s.name})\nVM ${s.vm}` +
      (s.limited ? `\n${s.limited} rate-limited` : "") + "\nclick to zoom in";
    return `gap: ${s.reason}\nVM ${s.vm}\n${fmt(s.started)} to ${s.ended === null ? "now (open)" : fmt(s.ended)}`;
  }

  async function showDetail(id) {
    let d;
    if (STATIC) d = STATIC.details[String(id)];
    else {
      const reply = await fetch("api/events/" + encodeURIComponent(id));
      d = await reply.json();
      if (!reply.ok) { status("error: " + d.error); return; }
    }
    $("detail-title").textContent = `${d.event} on ${d.vm}`;
    const meta = $("detail-meta");
    meta.replaceChildren();
    const row = (k, v) => { const dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = k; dd.textContent = v; meta.append(dt, dd); };
    row("VM", d.vm);
    row("QEMU time", `${fmt(d.timestamp)} (${d.timestamp})`);
    row("received", `${fmt(d.received_at)} (${d.received_at})`);
    if (d.rate_limited) row("rate-limited", `by QEMU` + (d.rate_limited.key ? ` per data.${d.rate_limited.key}` : "") +
      `; held back ${d.held.toFixed(3)} s`);
    row("model", d.model || "not modeled (generic event)");
    if (d.problem) row("problem", d.problem);
    const body = $("detail-fields").tBodies[0];
    body.replaceChildren(...d.fields.map((f) => {
      const tr = document.createElement("tr");
      for (const text of [f.name, f.type, JSON.stringify(f.value)]) {
        const td = document.createElement("td"); td.textContent = text; tr.append(td);
      }
      return tr;
    }));
    $("raw").textContent = d.raw;
    $("detail").dataset.id = String(id);
    $("detail").hidden = false;
  }

  function onLiveEvent(e) {
    const d = state.data;
    if (!d || state.view.end !== null) return;
    const { since } = viewRange();
    if (e.timestamp < since) return;
    let lane = d.lanes.find((l) => l.vm === e.vm);
    if (!lane) {
      lane = { vm: e.vm, count: 0, marks: [], buckets: [], gaps: [] };
      d.lanes.push(lane); d.lanes.sort((a, b) => (a.vm < b.vm ? -1 : a.vm > b.vm ? 1 : 0));
    }
    if (lane.marks.some((m) => m[0] === e.id)) return;
    if (!d.kindIndex.has(e.event)) { d.kindIndex.set(e.event, d.kinds.length); d.kinds.push(e.event); }
    const k = d.kindIndex.get(e.event);
    if (lane.buckets.length) {
      const i = Math.floor((e.timestamp - d.since) / d.bucket_seconds);
      const cell = lane.buckets.find((b) => b[0] === i);
      if (cell) cell[1]++; else lane.buckets.push([i, 1, k, e.held !== null ? 1 : 0]);
    } else lane.marks.push([e.id, k, e.timestamp, e.held]);
    lane.count++; d.total++;
    d.counts[e.event] = (d.counts[e.event] || 0) + 1;
    state.live++;
    document.body.dataset.live = String(state.live);
    render();
  }

  function onLiveGap(gap) {
    const d = state.data;
    if (!d) return;
    let lane = d.lanes.find((l) => l.vm === gap.vm);
    if (!lane) { lane = { vm: gap.vm, count: 0, marks: [], buckets: [], gaps: [] }; d.lanes.push(lane); }
    const known = lane.gaps.find((x) => x[0] === gap.started);
    if (known) known[1] = gap.ended; else lane.gaps.push([gap.started, gap.ended, gap.reason]);
    render();
  }

  function connectStream() {
    if (STATIC || !window.EventSource) return;
    if (state.source) state.source.close();
    state.streamOpen = false;
    const q = new URLSearchParams();
    if (state.view.vm) q.set("vm", state.view.vm);
    if (state.view.event) q.set("event", state.view.event);
    const source = new EventSource("api/stream?" + q.toString());
    source.addEventListener("hello", () => { state.streamOpen = true; document.body.dataset.stream = "open"; });
    source.addEventListener("event", (m) => onLiveEvent(JSON.parse(m.data)));
    source.addEventListener("gap", (m) => onLiveGap(JSON.parse(m.data)));
    source.addEventListener("reset", () => load());
    source.onerror = () => { state.streamOpen = false; document.body.dataset.stream = "closed"; };
    state.source = source;
  }

  function changed(reconnect) { writeURL(); if (reconnect) connectStream(); load(); }

  function setup() {
    state.view = readURL();
    if (STATIC && STATIC.title) $("title").textContent = STATIC.title;
    if (STATIC) for (const id of ["live", "later", "earlier"]) $(id).hidden = id === "live";
    $("vm").value = state.view.vm; $("event").value = state.view.event;
    for (const b of document.querySelectorAll("#zoom [data-range]"))
      b.addEventListener("click", () => {
        const { until } = viewRange(), mid = until - state.view.range / 2, r = Number(b.dataset.range);
        state.view.range = r;
        if (state.view.end !== null) state.view.end = mid + r / 2;
        changed(false);
      });
    $("earlier").addEventListener("click", () => { state.view.end = viewRange().until - state.view.range / 2; changed(false); });
    $("later").addEventListener("click", () => {
      const end = viewRange().until + state.view.range / 2;
      state.view.end = !STATIC && end >= nowSec() ? null : end; changed(false);
    });
    $("live").addEventListener("click", () => { state.view.end = null; changed(false); });
    $("filters").addEventListener("submit", (ev) => {
      ev.preventDefault();
      state.view.vm = $("vm").value.trim(); state.view.event = $("event").value.trim();
      changed(true);
    });
    $("close-detail").addEventListener("click", () => { $("detail").hidden = true; });
    canvas.addEventListener("click", (ev) => {
      const r = canvas.getBoundingClientRect(), s = shapeAt(ev.clientX - r.left, ev.clientY - r.top);
      if (!s) return;
      if (s.type === "mark") showDetail(s.id);
      else if (s.type === "bucket") {
        state.view.range = clamp(state.view.range / 10, MIN_RANGE, MAX_RANGE);
        state.view.end = (s.t0 + s.t1) / 2 + state.view.range / 2; changed(false);
      }
    });
    canvas.addEventListener("mousemove", (ev) => {
      const r = canvas.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top;
      const s = shapeAt(x, y);
      tip.hidden = !s;
      if (s) { tip.textContent = describe(s); tip.style.left = (x + 12) + "px"; tip.style.top = (y + 12) + "px"; }
    });
    canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
    canvas.addEventListener("wheel", (ev) => {
      if (!ev.ctrlKey && !ev.altKey) return;
      ev.preventDefault();
      const { since, until } = viewRange(), r = canvas.getBoundingClientRect();
      const at = since + ((ev.clientX - r.left) / r.width) * (until - since);
      const range = clamp(state.view.range * (ev.deltaY > 0 ? 1.5 : 1 / 1.5), MIN_RANGE, MAX_RANGE);
      const end = at + (until - at) * (range / state.view.range);
      state.view.range = range;
      state.view.end = !STATIC && state.view.end === null && end >= nowSec() ? null : end;
      changed(false);
    }, { passive: false });
    let resize = 0;
    window.addEventListener("resize", () => { clearTimeout(resize); resize = setTimeout(load, 200); });
    if (!STATIC) {
      setInterval(() => { if (state.view.end === null) render(); }, 1000);
      setInterval(() => { if (state.view.end === null) load(); }, 60000);
    }
    connectStream();
    load();
  }

  window.qmpTimeline = { state, load, showDetail,
    shapes: () => state.shapes.map((s) => Object.assign({}, s)) };
  setup();
})();
