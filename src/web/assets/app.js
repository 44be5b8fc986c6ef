// coding-swarm dashboard. Data comes from the JSON API; user text is always set with
// textContent (never innerHTML), so prompts, summaries and logs show as text.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
async function api(path, options = {}) {
  const headers = Object.assign({ "X-Swarm-Csrf": "1" }, options.body ? { "Content-Type": "application/json" } : {});
  const res = await fetch(path, Object.assign({ headers, credentials: "same-origin" }, options));
  const text = await res.text();
  let body = text;
  try { body = JSON.parse(text); } catch (_) {}
  if (!res.ok) throw new Error((body && body.error) || text || res.statusText);
  return body;
}
const post = (path, data) => api(path, { method: "POST", body: JSON.stringify(data || {}) });
const taskPath = (t) => `${encodeURIComponent(t.project)}/${encodeURIComponent(t.key)}`;
function verdict(t) {
  if (t.status !== "completed") return t.status;
  if (!t.result) return "completed";
  if (t.result.success) return "succeeded";
  return `failed (${t.result.error_class || "error"})`;
}
function flash(root, text, isError) {
  const f = el("div", { class: isError ? "flash err" : "flash", text });
  root.prepend(f);
  setTimeout(() => f.remove(), 8000);
}
function liveStream(onTask) {
  const live = $("#live");
  const es = new EventSource("/api/events");
  // What changed before the stream was open (or while it reconnected) is not sent on it: the
  // page reads its data again once it is open, and once more when the engine surely follows
  // (it looks for changes every 250 ms).
  es.onopen = () => {
    live.textContent = "live"; live.classList.add("on");
    onTask(null);
    setTimeout(() => onTask(null), 1000);
  };
  es.onerror = () => { live.textContent = "reconnecting…"; live.classList.remove("on"); };
  es.addEventListener("task", (e) => onTask(JSON.parse(e.data)));
  es.addEventListener("resync", () => onTask(null));
  return es;
}

// ---- overview --------------------------------------------------------------------------
async function overview() {
  const root = $("#content");
  const render = async () => {
    const projects = await api("/api/projects");
    root.replaceChildren(el("div", { class: "cards" }, ...projects.map(projectCard)));
  };
  await render();
  let pending = null;
  liveStream(() => { clearTimeout(pending); pending = setTimeout(render, 300); });
}
function projectCard(p) {
  const pct = p.plan_total ? Math.round((100 * p.plan_done) / p.plan_total) : 0;
  const bar = el("div", { class: "bar" }, el("span", { style: `width:${pct}%` }));
  const epics = el("ul");
  for (const e of p.epics) {
    epics.append(el("li", {}, el("b", { text: e.name }), ` ${e.state} · $${e.spend_usd.toFixed(2)} · ${e.activations} manager runs`, e.reason ? el("div", { class: "err", text: e.reason }) : null));
  }
  return el("div", { class: "card project", "data-project": p.name },
    el("h2", {}, el("a", { href: `/board?project=${encodeURIComponent(p.name)}`, text: p.name })),
    el("div", { class: "muted", text: `${p.repo} · ${p.default_branch}` }),
    el("div", { text: `plan: ${p.plan_done}/${p.plan_total} steps done` }), bar,
    el("div", { class: "counts", text: `${p.pending} pending · ${p.running} running · ${p.completed} completed` }),
    p.running_tasks.length ? el("div", { class: "muted", text: `running: ${p.running_tasks.join(", ")}` }) : null,
    el("div", { class: "muted", text: p.synced_at ? `synced ${new Date(p.synced_at).toLocaleString()} at ${String(p.synced_commit).slice(0, 10)}` : "not synced yet" }),
    p.sync_error ? el("div", { class: "err", text: `sync error: ${p.sync_error}` }) : null,
    p.bad_files ? el("div", {}, el("a", { href: "/errors", class: "err", text: `${p.bad_files} bad task file(s)` })) : null,
    p.epics.length ? el("h3", { text: "Epics" }) : null, p.epics.length ? epics : null);
}

// ---- board -----------------------------------------------------------------------------
async function board() {
  const root = $("#content");
  const params = new URLSearchParams(location.search);
  const filter = { project: params.get("project") || "", addressee: params.get("addressee") || "", epic: params.get("epic") || "" };
  const projects = await api("/api/projects");

  const projectSelect = el("select", { name: "project" }, el("option", { value: "", text: "all projects" }), ...projects.map((p) => el("option", { value: p.name, text: p.name })));
  projectSelect.value = filter.project;
  const filters = el("form", { class: "inline", method: "get", action: "/board" },
    projectSelect,
    el("input", { name: "addressee", placeholder: "addressee", value: filter.addressee }),
    el("input", { name: "epic", placeholder: "epic", value: filter.epic }),
    el("button", { type: "submit", text: "Filter" }));

  const epicProject = el("select", { name: "epic-project" }, ...projects.map((p) => el("option", { value: p.name, text: p.name })));
  if (filter.project) epicProject.value = filter.project;
  const epicText = el("input", { name: "epic-text", placeholder: "a new epic, in plain words", size: "60" });
  const epicForm = el("form", { class: "inline", id: "epic-form" }, el("b", { text: "New epic:" }), epicProject, epicText, el("button", { type: "submit", text: "Submit epic" }));
  epicForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const e = await post(`/api/projects/${encodeURIComponent(epicProject.value)}/epics`, { text: epicText.value });
      flash(root, `epic ${e.epic} committed as ${e.path}; its task appears when the engine syncs`);
      epicText.value = "";
    } catch (err) { flash(root, err.message, true); }
  });

  const columns = {};
  const grid = el("div", { class: "board" });
  for (const status of ["pending", "running", "completed"]) {
    const list = el("div", { class: "list" });
    const more = el("button", { text: "more", hidden: "" });
    columns[status] = { list, more, offset: 0 };
    grid.append(el("section", { class: "column", id: `col-${status}` }, el("h2", { text: status }), list, more));
    more.addEventListener("click", () => loadColumn(status));
  }
  root.replaceChildren(filters, epicForm, grid);

  const matches = (t) => (!filter.project || t.project === filter.project) && (!filter.addressee || t.addressee === filter.addressee) && (!filter.epic || t.epic === filter.epic);
  async function loadColumn(status) {
    const c = columns[status];
    const q = new URLSearchParams({ status, limit: "50", offset: String(c.offset) });
    for (const [k, v] of Object.entries(filter)) if (v) q.set(k, v);
    const page = await api(`/api/tasks?${q}`);
    for (const t of page.tasks) c.list.append(card(t));
    c.offset = page.next_offset || c.offset + page.tasks.length;
    c.more.hidden = !page.next_offset;
  }
  async function reloadAll() {
    for (const status of Object.keys(columns)) { columns[status].list.replaceChildren(); columns[status].offset = 0; await loadColumn(status); }
  }
  await reloadAll();
  liveStream(async (ev) => {
    if (!ev) return reloadAll();
    const id = `task-${ev.project}/${ev.key}`;
    let data;
    try { data = await api(`/api/tasks/${encodeURIComponent(ev.project)}/${encodeURIComponent(ev.key)}`); } catch (_) { document.getElementById(id)?.remove(); return; }
    const t = Object.assign({}, data.task, { waiting: data.waiting });
    document.getElementById(id)?.remove();
    if (matches(t)) columns[t.status].list.prepend(card(t));
  });
}
function card(t) {
  const cls = t.status === "completed" ? (t.result && t.result.success ? "ok" : "failed") : t.status;
  const c = el("a", { class: `task ${cls}`, id: `task-${t.project}/${t.key}`, href: `/tasks/${taskPath(t)}`, "data-status": t.status },
    el("div", { class: "key", text: t.key }),
    el("div", { class: "meta", text: `${t.project} · ${t.addressee}${t.epic ? " · " + t.epic : ""} · gen ${t.generation}` }),
    el("div", { class: "meta state", text: verdict(t) }));
  if (t.waiting) c.append(el("div", { class: "meta waiting", text: `waits: ${t.waiting}` }));
  const r = t.result;
  if (r && (r.cost_usd != null || r.turns != null)) {
    c.append(el("div", { class: "meta cost", "data-cost": r.cost_usd != null ? String(r.cost_usd) : "", "data-turns": r.turns != null ? String(r.turns) : "",
      text: [r.cost_usd != null ? `$${r.cost_usd.toFixed(2)}` : null, r.turns != null ? `${r.turns} turns` : null].filter(Boolean).join(" · ") }));
  }
  return c;
}

// ---- task ------------------------------------------------------------------------------
async function taskPage() {
  const root = $("#content");
  const { project, key } = document.body.dataset;
  const base = `/api/tasks/${encodeURIComponent(project)}/${encodeURIComponent(key)}`;
  const status = el("div", { id: "status" });
  const actions = el("div", { class: "inline" });
  const prompt = el("pre", { class: "text", id: "prompt" });
  const spec = el("pre", { class: "text", id: "spec" });
  const result = el("pre", { class: "text", id: "result" });
  const links = el("div", { id: "links" });
  const events = el("table", { id: "events" });
  const transcript = el("div", { id: "transcript", class: "transcript", "data-state": "idle", "data-entries": "0" });
  const rawLog = el("a", { id: "raw-log", href: `${base}/log`, target: "_blank", text: "raw log" });
  root.replaceChildren(status, actions, links, el("h2", { text: "Prompt" }), prompt, el("h2", { text: "Result" }), result,
    el("h2", {}, "Transcript ", el("span", { class: "muted small" }, "(", rawLog, ")")), transcript,
    el("h2", { text: "Events" }), events, el("h2", { text: "Spec" }), spec);

  const stop = el("button", { class: "danger", id: "stop", text: "Stop" });
  const retry = el("button", { id: "retry", text: "Retry" });
  const prio = el("input", { id: "priority", type: "number", min: "-1000", max: "1000", style: "width:7em" });
  const setPrio = el("button", { id: "set-priority", text: "Set priority" });
  actions.append(stop, retry, prio, setPrio);
  const act = async (f) => { try { await f(); await refresh(); } catch (err) { flash(root, err.message, true); } };
  stop.addEventListener("click", () => act(() => post(`${base}/stop`)));
  retry.addEventListener("click", () => act(() => post(`${base}/retry`)));
  setPrio.addEventListener("click", () => act(() => post(`${base}/priority`, { priority: Number(prio.value) })));

  async function refresh() {
    const d = await api(base);
    const t = d.task;
    status.replaceChildren(...[
      el("span", { class: "state", id: "state", "data-status": t.status, text: verdict(t) }),
      el("span", { class: "muted", text: ` · ${t.addressee} · generation ${t.generation} · attempt ${t.attempts} · priority ${t.priority}` }),
      d.waiting ? el("div", { class: "muted", id: "waiting", text: `waits: ${d.waiting}` }) : null].filter(Boolean));
    stop.disabled = t.status === "completed";
    retry.disabled = t.status !== "completed";
    prio.value = t.priority;
    prompt.textContent = t.prompt;
    spec.textContent = JSON.stringify(t.spec, null, 2);
    const r = t.result;
    result.textContent = r ? [
      `success: ${r.success}`, r.error_class ? `class: ${r.error_class}` : "", r.error ? `error: ${r.error}` : "",
      r.summary ? `summary: ${r.summary}` : "", r.cost_usd != null ? `cost: $${r.cost_usd.toFixed(4)}` : "",
      r.turns != null ? `turns: ${r.turns}` : "", r.commit_sha ? `commit: ${r.commit_sha}` : ""].filter(Boolean).join("\n") : "(no result yet)";
    const branch = (r && r.branch) || t.branch;
    links.replaceChildren(el("span", { text: `branch ${branch}` }));
    if (d.github) {
      links.append(" · ", el("a", { href: `https://github.com/${d.github}/tree/${branch}`, text: "branch on GitHub" }),
        " · ", el("a", { href: `https://github.com/${d.github}/pulls?q=head:${encodeURIComponent(branch)}`, text: "pull request" }),
        " · ", el("a", { href: `https://github.com/${d.github}/blob/HEAD/.ai/status/${encodeURIComponent(t.key)}.yaml`, text: "status file" }));
    } else {
      links.append(el("span", { class: "muted", text: ` · status file .ai/status/${t.key}.yaml` }));
    }
    events.replaceChildren(...d.events.map((e) => el("tr", {}, el("td", { class: "muted", text: new Date(e.at).toLocaleString() }), el("td", { text: `g${e.generation}` }), el("td", { text: e.kind }), el("td", { text: e.message }))));
    return d;
  }
  // The transcript follows the latest run while it runs, and stops with it; a new run opens it anew.
  let following = null;
  let followedRun = null;
  function follow(t) {
    const run = `${t.generation}/${t.attempts}`;
    if (t.attempts === 0 || followedRun === run) return;
    if (following) following.close();
    followedRun = run;
    transcript.replaceChildren();
    transcript.dataset.entries = "0";
    transcript.dataset.state = "live";
    const es = new EventSource(`${base}/transcript`);
    following = es;
    // The stream starts from the log's beginning, also when the browser reconnects it.
    es.onopen = () => { transcript.replaceChildren(); transcript.dataset.entries = "0"; };
    es.addEventListener("restart", () => { transcript.replaceChildren(); transcript.dataset.entries = "0"; });
    es.addEventListener("entry", (e) => {
      const atBottom = transcript.scrollTop + transcript.clientHeight >= transcript.scrollHeight - 4;
      transcript.append(entryView(JSON.parse(e.data)));
      transcript.dataset.entries = String(transcript.children.length);
      if (atBottom) transcript.scrollTop = transcript.scrollHeight;
    });
    es.addEventListener("end", () => { es.close(); if (following === es) following = null; transcript.dataset.state = "ended"; });
  }
  // A page opened before its task exists (a task file pushed a moment ago, not synced yet)
  // says so and keeps listening: the task appears on the page once the engine has it.
  const refreshAndFollow = async () => {
    try {
      follow((await refresh()).task);
    } catch (err) {
      status.replaceChildren(el("span", { class: "muted", id: "not-yet", text: `${err.message} (waiting for the task to appear)` }));
    }
  };
  liveStream((ev) => { if (!ev || (ev.project === project && ev.key === key)) refreshAndFollow(); });
  await refreshAndFollow();
}
function entryView(e) {
  const box = (label, ...body) => el("div", { class: `entry ${e.kind}`, "data-kind": e.kind }, el("div", { class: "who", text: label }), ...body);
  switch (e.kind) {
    case "text": return box("agent", el("div", { class: "body", text: e.text }));
    case "thinking": return box("thinking", el("div", { class: "body muted", text: e.text }));
    case "tool": return box(`tool call · ${e.name}`, el("pre", { class: "body", text: e.input }));
    case "tool_result": return box(e.is_error ? "tool result · error" : "tool result", el("pre", { class: "body", text: e.text }));
    case "final": return box(e.is_error ? "final answer · error" : "final answer", el("div", { class: "body", text: e.text }),
      el("div", { class: "muted", text: [e.turns != null ? `${e.turns} turns` : null, e.cost_usd != null ? `$${e.cost_usd.toFixed(4)}` : null].filter(Boolean).join(" · ") }));
    case "system": return box("session", el("div", { class: "body muted", text: e.text }));
    default: return box("log", el("div", { class: "body mono", text: e.text }));
  }
}

// ---- pause banner (every page) ---------------------------------------------------------
async function pauseBanner() {
  const box = $("#pauses");
  if (!box) return;
  let pauses = [];
  try { pauses = await api("/api/pauses"); } catch (_) { return; }
  box.replaceChildren(...pauses.map((p) => el("div", { class: "banner pause", "data-agent": p.agent, "data-until": p.until },
    el("b", { text: `Agent ${p.agent} is paused by a usage limit` }),
    ` until ${new Date(p.until).toISOString().replace(".000Z", "Z")} (${new Date(p.until).toLocaleString()}): ${p.reason}`)));
}

// ---- queues ----------------------------------------------------------------------------
async function queuesPage() {
  const root = $("#content");
  const render = async () => {
    const d = await api("/api/queues");
    const head = el("p", { class: "muted", id: "queue-summary", text: `${d.running} of at most ${d.max_running} running` });
    if (!d.queues.length) return root.replaceChildren(head, el("p", { class: "muted", text: "Nothing runs and nothing waits." }));
    root.replaceChildren(head, el("div", { class: "cards" }, ...d.queues.map((q) => el("section", { class: "card queue", "data-addressee": q.addressee },
      el("h2", { text: q.addressee }),
      el("div", { class: "running", text: q.running ? `running: ${q.running}` : "nothing running" }),
      q.pending.length ? el("ol", {}, ...q.pending.map((t) => el("li", { class: "queued", "data-task": `${t.project}/${t.key}`, "data-position": String(t.position) },
        el("a", { href: `/tasks/${taskPath(t)}`, text: `${t.project}/${t.key}` }),
        el("span", { class: "muted", text: ` · priority ${t.priority} · agent ${t.agent}` }),
        t.waiting ? el("div", { class: "waiting muted", text: `waits: ${t.waiting}` }) : null))) : el("div", { class: "muted", text: "no pending tasks" })))));
  };
  await render();
  let pending = null;
  liveStream(() => { clearTimeout(pending); pending = setTimeout(() => { render(); pauseBanner(); }, 300); });
}

// ---- stats: charts drawn as inline SVG -------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  for (const c of children) if (c != null) e.append(c);
  return e;
}
const COLORS = { succeeded: "#1a7f37", failed: "#c62828", cancelled: "#8c959f", retried: "#9a6700", rate_limited: "#bf3989", superseded: "#6639ba", deleted: "#57606a" };
const PALETTE = ["#1f6feb", "#1a7f37", "#9a6700", "#bf3989", "#6639ba", "#c62828", "#0a7ea4", "#57606a"];
const colorOf = (name, i) => COLORS[name] || PALETTE[i % PALETTE.length];
const sum = (xs) => xs.reduce((a, b) => a + b, 0);
const round2 = (x) => Math.round(x * 100) / 100;
function legend(series) {
  return el("div", { class: "legend" }, ...series.map(([name, values], i) => el("span", { "data-series": name },
    el("i", { style: `background:${colorOf(name, i)}` }), `${name} (${Number.isInteger(sum(values)) ? sum(values) : round2(sum(values)).toFixed(2)})`)));
}
// Stacked bars: one bar per point, one layer per series.
function barChart(id, labels, series, opts = {}) {
  const W = 720, H = 200, P = 28, n = labels.length;
  const totals = labels.map((_, i) => sum(series.map(([, v]) => v[i] || 0)));
  const max = Math.max(1e-9, ...totals);
  const bw = (W - P) / Math.max(1, n);
  const chart = svg("svg", { id, class: "chart", viewBox: `0 0 ${W} ${H + 18}`, "data-points": n, "data-series": series.length,
    "data-total": String(round2(sum(totals))), role: "img" });
  chart.append(svg("text", { x: 0, y: 10, class: "axis" }, document.createTextNode(opts.money ? `$${round2(max)}` : String(max))));
  series.forEach(([name, values], s) => {
    const g = svg("g", { "data-series": name, "data-total": String(round2(sum(values))), fill: colorOf(name, s) });
    values.forEach((v, i) => {
      if (!v) return;
      const below = sum(series.slice(0, s).map(([, w]) => w[i] || 0));
      const h = (v / max) * (H - 14), y = H - (below / max) * (H - 14) - h;
      g.append(svg("rect", { x: P + i * bw + 1, y, width: Math.max(1, bw - 2), height: h, "data-value": v },
        svg("title", {}, document.createTextNode(`${labels[i]} · ${name}: ${opts.money ? "$" + round2(v) : v}`))));
    });
    chart.append(g);
  });
  const every = Math.max(1, Math.ceil(n / 8));
  labels.forEach((l, i) => { if (i % every === 0) chart.append(svg("text", { x: P + i * bw, y: H + 14, class: "axis" }, document.createTextNode(l))); });
  return el("div", { class: "chart-box" }, chart, legend(series));
}
// Lines: one polyline per series.
function lineChart(id, labels, series) {
  const W = 720, H = 200, P = 28, n = labels.length;
  const max = Math.max(1, ...series.flatMap(([, v]) => v));
  const x = (i) => P + (n <= 1 ? 0 : (i * (W - P - 4)) / (n - 1));
  const y = (v) => H - (v / max) * (H - 14);
  const chart = svg("svg", { id, class: "chart", viewBox: `0 0 ${W} ${H + 18}`, "data-points": n, "data-series": series.length, "data-max": max, role: "img" });
  chart.append(svg("text", { x: 0, y: 10, class: "axis" }, document.createTextNode(String(max))));
  series.forEach(([name, values], s) => {
    chart.append(svg("polyline", { "data-series": name, "data-points": values.length, "data-last": values.length ? values[values.length - 1] : 0,
      "data-values": values.join(","), fill: "none", stroke: colorOf(name, s + 1), "stroke-width": 2,
      points: values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ") }));
  });
  const every = Math.max(1, Math.ceil(n / 8));
  labels.forEach((l, i) => { if (i % every === 0) chart.append(svg("text", { x: x(i), y: H + 14, class: "axis" }, document.createTextNode(l))); });
  return el("div", { class: "chart-box" }, chart, el("div", { class: "legend" }, ...series.map(([name, v], i) => el("span", { "data-series": name },
    el("i", { style: `background:${colorOf(name, i + 1)}` }), `${name} (now ${v.length ? v[v.length - 1] : 0})`))));
}
// Horizontal bars against a cap (or the longest).
function meterChart(id, rows, opts = {}) {
  const W = 720, RH = 22, H = Math.max(1, rows.length) * RH;
  const max = Math.max(1e-9, ...rows.map((r) => Math.max(r.value, r.cap || 0)));
  const chart = svg("svg", { id, class: "chart meters", viewBox: `0 0 ${W} ${H}`, "data-points": rows.length, "data-total": String(round2(sum(rows.map((r) => r.value)))), role: "img" });
  rows.forEach((r, i) => {
    const g = svg("g", { "data-name": r.name, "data-value": r.value, ...(r.cap != null ? { "data-cap": r.cap } : {}) });
    const w = 460;
    if (r.cap != null) g.append(svg("rect", { x: 240, y: i * RH + 4, width: (r.cap / max) * w, height: RH - 8, fill: "#e4e7ec" }));
    const over = r.cap != null && r.value >= 0.8 * r.cap;
    g.append(svg("rect", { x: 240, y: i * RH + 4, width: Math.max(1, (r.value / max) * w), height: RH - 8, fill: over ? "#c62828" : "#1f6feb" }));
    g.append(svg("text", { x: 0, y: i * RH + 16, class: "label" }, document.createTextNode(`${r.name}: ${opts.money ? "$" + r.value.toFixed(2) : r.value}${r.cap != null ? " of $" + r.cap.toFixed(2) : ""}`)));
    chart.append(g);
  });
  return el("div", { class: "chart-box" }, rows.length ? chart : el("p", { class: "muted", text: opts.empty || "nothing" }));
}
async function statsPage() {
  const root = $("#content");
  const params = new URLSearchParams(location.search);
  const since = params.get("since") || "24h", step = params.get("step") || "1h";
  const choose = (name, value, options) => { const s = el("select", { name }, ...options.map((o) => el("option", { value: o, text: o }))); s.value = value; return s; };
  const form = el("form", { class: "inline", method: "get", action: "/stats" }, el("b", { text: "Since" }), choose("since", since, ["6h", "24h", "7d", "30d"]),
    el("b", { text: "step" }), choose("step", step, ["15m", "1h", "6h", "1d"]), el("button", { type: "submit", text: "Show" }));
  const charts = el("div", { id: "charts" });
  root.replaceChildren(form, charts);
  const render = async () => {
    const d = await api(`/api/stats?${new URLSearchParams({ since, step })}`);
    const stepLabel = (t) => { const x = new Date(t); return d.step_secs >= 86400 ? x.toISOString().slice(5, 10) : x.toISOString().slice(5, 16).replace("T", " "); };
    const labels = d.steps.map(stepLabel);
    const ends = d.steps.map((t, i) => i + 1 < d.steps.length ? stepLabel(d.steps[i + 1]) : "now");
    const runs = Object.entries(d.runs).filter(([, v]) => sum(v) > 0);
    const du = d.durations;
    const secs = (s) => s == null ? "–" : s >= 3600 ? `${(s / 3600).toFixed(1)} h` : s >= 60 ? `${(s / 60).toFixed(1)} min` : `${s} s`;
    charts.replaceChildren(
      el("h2", { text: `Runs ended per ${step}, by outcome` }), barChart("chart-runs", labels, runs.length ? runs : [["succeeded", d.runs.succeeded]]),
      el("h2", { text: "Pending tasks at the end of each step, per project" }), lineChart("chart-pending", ends, Object.entries(d.pending)),
      el("h2", { text: "Longest queues now" }), meterChart("chart-queues", d.queues.map((q) => ({ name: q.addressee, value: q.pending })), { empty: "no pending tasks" }),
      el("h2", { text: "Spend per day, by project" }), barChart("chart-spend-project", d.days.map((x) => x.slice(5)), Object.entries(d.spend_by_project), { money: true }),
      el("h2", { text: "Spend per day, by agent" }), barChart("chart-spend-agent", d.days.map((x) => x.slice(5)), Object.entries(d.spend_by_agent), { money: true }),
      el("h2", { text: "Active epics: spend against the cap" }), meterChart("chart-epics", d.epics.map((e) => ({ name: `${e.project}/${e.name}`, value: e.spend_usd, cap: e.cap_usd })), { money: true, empty: "no active epics" }),
      el("h2", { text: "Run durations (claim to end)" }),
      el("dl", { id: "durations", class: "durations", "data-runs": du.runs, "data-p50": du.p50_secs ?? "", "data-p90": du.p90_secs ?? "", "data-p99": du.p99_secs ?? "" },
        el("dt", { text: "runs" }), el("dd", { text: String(du.runs) }), el("dt", { text: "p50" }), el("dd", { text: secs(du.p50_secs) }),
        el("dt", { text: "p90" }), el("dd", { text: secs(du.p90_secs) }), el("dt", { text: "p99" }), el("dd", { text: secs(du.p99_secs) })));
    charts.dataset.until = d.until;
  };
  await render();
  let pending = null;
  liveStream(() => { clearTimeout(pending); pending = setTimeout(render, 2000); });
}

// ---- errors ----------------------------------------------------------------------------
async function errorsPage() {
  const root = $("#content");
  const render = async () => {
    const errors = await api("/api/errors");
    if (!errors.length) return root.replaceChildren(el("p", { class: "muted", text: "No bad task files." }));
    root.replaceChildren(el("table", { id: "errors" }, el("tr", {}, el("th", { text: "project" }), el("th", { text: "file:line:column" }), el("th", { text: "problem" })),
      ...errors.map((e) => el("tr", { class: "spec-error" }, el("td", { text: e.project }), el("td", { class: "where", text: `${e.path}:${e.line}:${e.col}` }), el("td", { text: e.message })))));
  };
  await render();
  liveStream(() => render());
}

const pages = { overview, board, task: taskPage, errors: errorsPage, queues: queuesPage, stats: statsPage };
pauseBanner();
(pages[document.body.dataset.page] || (() => {}))().catch((err) => { const c = $("#content"); c && c.prepend(el("div", { class: "flash err", text: err.message })); });
