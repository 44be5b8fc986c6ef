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
  es.onopen = () => { live.textContent = "live"; live.classList.add("on"); };
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
  const log = el("pre", { id: "log", text: "" });
  root.replaceChildren(status, actions, links, el("h2", { text: "Prompt" }), prompt, el("h2", { text: "Result" }), result,
    el("h2", { text: "Log (live)" }), log, el("h2", { text: "Events" }), events, el("h2", { text: "Spec" }), spec);

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
  }
  async function tail() {
    try { log.textContent = await api(`${base}/log`); log.scrollTop = log.scrollHeight; } catch (_) {}
  }
  await refresh();
  await tail();
  setInterval(tail, 1000);
  liveStream((ev) => { if (!ev || (ev.project === project && ev.key === key)) refresh(); });
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

const pages = { overview, board, task: taskPage, errors: errorsPage };
(pages[document.body.dataset.page] || (() => {}))().catch((err) => { const c = $("#content"); c && c.prepend(el("div", { class: "flash err", text: err.message })); });
