// The task list: the caller's tasks (an admin's: everyone's, by owner and tenant), newest first,
// a page at a time, by status; rows of unfinished tasks follow their event stream, and the
// first page is listed again every few seconds so new tasks appear without a reload. Admins
// also see the platform's totals (GET /admin/stats).

import {
  TASK_ID,
  badge,
  dollars,
  el,
  fillPairs,
  follow,
  getJson,
  isTerminal,
  signIn,
  when,
} from "./api.js";

const PAGE_SIZE = 20;
const RUNNING = ["pending", "authenticating", "authenticated", "detecting_section", "processing"];
const REFRESH_MS = 4000;
const TOTALS_MS = 5000;
// Streams one page holds open at most; the gateway allows 20 per caller, and the task page
// needs one too.
const MAX_STREAMS = 6;

const $ = (id) => document.getElementById(id);
const rows = new Map(); // task id -> {tr, summary, sections, stream}
let tokens = [""]; // page_token of each page visited; the last is the current page
let nextToken = null;
let admin = false;
let listing = null; // the AbortController of the listing in flight

function filters() {
  const params = new URLSearchParams(window.location.search);
  return {
    status: params.get("status") || "",
    owner: admin ? params.get("owner") || "" : "",
    tenant: admin ? params.get("tenant") || "" : "",
  };
}

function listPath(token) {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  for (const [name, value] of Object.entries(filters())) if (value) query.set(name, value);
  if (token) query.set("page_token", token);
  return `/tasks?${query}`;
}

function sectionChips(row) {
  const names = row.sections
    ? row.sections.map((s) => [s.name, s.status])
    : (row.summary.section_detected || "")
        .split(", ")
        .filter(Boolean)
        .map((name) => [name, ""]);
  return el(
    "div",
    { class: "chips" },
    names.map(([name, status]) =>
      el("span", { class: `badge ${status}`, title: status || "section" }, name),
    ),
  );
}

function render(row) {
  const task = row.summary;
  const link = TASK_ID.test(task.task_id)
    ? el("a", { href: `/dashboard/tasks/${task.task_id}`, class: "mono" }, task.task_id)
    : el("span", { class: "mono" }, task.task_id);
  const cells = [
    el("td", {}, link),
    el("td", { class: "status" }, badge(task.status)),
    el(
      "td",
      {},
      el("progress", { max: 100, value: task.progress }),
      " ",
      el("span", { class: "percent muted" }, `${task.progress}%`),
    ),
    el("td", { class: "sections" }, sectionChips(row)),
    el("td", { class: "message" }, task.message),
    el("td", { class: "num cost" }, dollars(task.cost)),
    el("td", { class: "owner" }, task.owner, el("div", { class: "muted" }, task.tenant)),
    el("td", { class: "muted" }, when(task.created_at)),
  ];
  row.tr.replaceChildren(...cells);
  row.tr.dataset.status = task.status;
}

// The task's sections and cost as they are now, for a row whose stream named a section or
// ended. One read at a time per row; an event during it asks for one more read after it, so
// the last event is always followed by a read that saw it.
async function refreshSections(row) {
  if (row.reading) {
    row.again = true;
    return;
  }
  row.reading = true;
  try {
    do {
      row.again = false;
      try {
        const status = await getJson(`/task/${encodeURIComponent(row.summary.task_id)}/status`);
        row.sections = status.sections;
        row.summary.cost = status.sections.reduce((sum, s) => sum + s.cost, 0);
        Object.assign(row.summary, {
          status: status.status,
          progress: status.progress,
          message: status.message,
        });
        render(row);
      } catch {
        // the next event or listing tries again
      }
    } while (row.again);
  } finally {
    row.reading = false;
  }
}

function startStream(row) {
  const live = [...rows.values()].filter((r) => r.stream).length;
  if (row.stream || isTerminal(row.summary.status) || live >= MAX_STREAMS) return;
  row.stream = new AbortController();
  const onEvent = (event) => {
    Object.assign(row.summary, {
      status: event.status,
      progress: event.progress,
      message: event.message,
    });
    render(row);
    if (event.section || isTerminal(event.status)) refreshSections(row);
  };
  follow(row.summary.task_id, onEvent, row.stream.signal)
    .catch(() => {})
    .finally(() => {
      row.stream = null;
    });
}

function stopStreams() {
  for (const row of rows.values()) row.stream?.abort();
  rows.clear();
}

async function list() {
  listing?.abort();
  listing = new AbortController();
  const token = tokens[tokens.length - 1];
  let page;
  try {
    page = await getJson(listPath(token), { signal: listing.signal });
  } catch (error) {
    if (error.name !== "AbortError") $("list-error").textContent = error.message;
    return;
  }
  $("list-error").textContent = "";
  const body = $("tasks").tBodies[0];
  const seen = new Set();
  const order = [];
  for (const summary of page.tasks) {
    seen.add(summary.task_id);
    let row = rows.get(summary.task_id);
    if (row === undefined) {
      row = { tr: el("tr", { "data-task": summary.task_id }), summary, sections: null };
      rows.set(summary.task_id, row);
    } else if (!(isTerminal(row.summary.status) && !isTerminal(summary.status))) {
      // A finished row never goes back to running on an older view of the task.
      row.summary = { ...summary, cost: Math.max(summary.cost, row.summary.cost) };
    }
    render(row);
    order.push(row.tr);
  }
  for (const [taskId, row] of rows) {
    if (!seen.has(taskId)) {
      row.stream?.abort();
      rows.delete(taskId);
    }
  }
  body.replaceChildren(...order);
  for (const summary of page.tasks) startStream(rows.get(summary.task_id));
  nextToken = page.next_page_token;
  $("empty").hidden = page.tasks.length > 0;
  $("older").disabled = !nextToken;
  $("newer").disabled = tokens.length < 2;
  $("page").textContent = `page ${tokens.length}`;
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function totals() {
  let stats;
  try {
    stats = await getJson("/admin/stats");
  } catch {
    return;
  }
  $("totals").hidden = false;
  const finished = Object.entries(stats.tasks_finished).map(([state, n]) => [
    `${state} (since start)`,
    n,
  ]);
  const running = RUNNING.map((state) => [state, stats.tasks_by_state[state] ?? 0]);
  fillPairs($("by-state"), [...running, ...finished]);
  $("spend-day").textContent = stats.spend_day ? `(${stats.spend_day} UTC)` : "";
  const spend = Object.entries(stats.spend_today_usd).sort();
  fillPairs($("spend"), spend.length ? spend.map(([t, d]) => [t, dollars(d)]) : [["—", "$0"]]);
  fillPairs($("sections-now"), [
    ["in flight", stats.sections_in_flight],
    ["queued", stats.sections_queued],
    ["worker slots", stats.worker_capacity],
    ["workers ready", `${stats.workers_ready}/${stats.workers}`],
  ]);
  const breakers = Object.entries(stats.breakers).sort();
  fillPairs(
    $("breakers"),
    breakers.length
      ? breakers.map(([asset, state]) => [asset, badge(state)])
      : [["no asset called yet", ""]],
  );
}

function applyFilters(event) {
  event.preventDefault();
  const query = new URLSearchParams();
  for (const name of ["status", "owner", "tenant"]) {
    const value = $(name).value.trim();
    if (value && (name === "status" || admin)) query.set(name, value);
  }
  // The filters live in the address (never the key), so a reload or a link keeps them.
  window.history.replaceState(null, "", query.size ? `/dashboard?${query}` : "/dashboard");
  tokens = [""];
  stopStreams();
  list();
}

function start(me) {
  admin = me.role === "admin";
  for (const label of document.querySelectorAll(".admin-only")) label.hidden = !admin;
  const current = filters();
  $("status").value = current.status;
  $("owner").value = current.owner;
  $("tenant").value = current.tenant;
  $("filters").addEventListener("submit", applyFilters);
  $("refresh").addEventListener("click", () => list());
  $("older").addEventListener("click", () => {
    if (!nextToken) return;
    tokens.push(nextToken);
    stopStreams();
    list();
  });
  $("newer").addEventListener("click", () => {
    if (tokens.length < 2) return;
    tokens.pop();
    stopStreams();
    list();
  });
  list();
  setInterval(() => {
    if (tokens.length === 1 && document.visibilityState === "visible") list();
  }, REFRESH_MS);
  if (admin) {
    totals();
    setInterval(() => {
      if (document.visibilityState === "visible") totals();
    }, TOTALS_MS);
  }
}

signIn(start);
