// One task: status and progress, each section's result, cost, files and path through its
// fallback chain, the trace as a timeline, and the input records; kept current through the
// task's event stream while it runs (each event reads status and result again, at most one
// read of each at a time).

import {
  TASK_ID,
  badge,
  dollars,
  download,
  el,
  fillPairs,
  follow,
  getJson,
  isTerminal,
  signIn,
  when,
} from "./api.js";

const $ = (id) => document.getElementById(id);
const taskId = decodeURIComponent(window.location.pathname.split("/").pop() || "");
let reading = null; // the read in flight
let again = false; // an event came during it: read once more

function fileButtons(files) {
  return files.map((file) =>
    el(
      "button",
      {
        type: "button",
        class: "download",
        "data-file": file.file_id,
        onclick: async (event) => {
          const button = event.currentTarget;
          button.disabled = true;
          try {
            await download(file.file_id, file.name);
          } catch (error) {
            $("task-error").textContent = `download of ${file.name}: ${error.message}`;
          } finally {
            button.disabled = false;
          }
        },
      },
      `⬇ ${file.name} (${file.size} B)`,
    ),
  );
}

function attemptsTable(attempts) {
  if (!attempts.length) return el("p", { class: "muted" }, "No platform attempt recorded.");
  return el(
    "table",
    { class: "tasks attempts" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        ["#", "Asset", "Outcome", "Reason", "Cost", "Seconds"].map((h) => el("th", {}, h)),
      ),
    ),
    el(
      "tbody",
      {},
      attempts.map((a, i) =>
        el(
          "tr",
          {},
          el("td", {}, String(i + 1)),
          el("td", { class: "mono" }, a.asset_id),
          el("td", {}, badge(a.outcome)),
          el("td", { class: "message" }, a.reason),
          el("td", { class: "num" }, dollars(a.cost)),
          el("td", { class: "num" }, a.duration_s.toFixed(2)),
        ),
      ),
    ),
  );
}

function renderSections(status, result) {
  const outcomes = result.data || {};
  $("sections").tBodies[0].replaceChildren(
    ...status.sections.map((section) => {
      const outcome = outcomes[section.name] || {};
      return el(
        "tr",
        { "data-section": section.name },
        el("td", {}, section.name),
        el("td", {}, badge(section.status)),
        el("td", { class: "muted" }, section.progress),
        el("td", { class: "num cost" }, dollars(section.cost)),
        el("td", { class: "mono" }, outcome.model_used || ""),
        el("td", {}, fileButtons(outcome.files || [])),
        el("td", { class: "message" }, section.error),
      );
    }),
  );
  $("section-details").replaceChildren(
    ...Object.entries(outcomes).map(([name, outcome]) =>
      el(
        "div",
        { class: "section-detail", "data-section": name },
        el("h3", {}, name, " ", badge(outcome.status)),
        outcome.response ? el("pre", { class: "response" }, outcome.response) : null,
        outcome.result ? el("pre", { class: "result" }, JSON.stringify(outcome.result, null, 2)) : null,
        el("h4", {}, "Fallback path"),
        attemptsTable(outcome.attempts || []),
      ),
    ),
  );
}

function renderTrace(trace) {
  const longest = Math.max(1, ...trace.map((t) => t.duration_ms));
  $("trace").replaceChildren(
    ...trace.map((entry) => {
      const span = el("div", { class: "span" });
      // CSSOM, not a style attribute: the page's policy allows no inline styles.
      span.style.width = `${(100 * entry.duration_ms) / longest}%`;
      return el(
        "li",
        {},
        el("span", { class: "step" }, entry.step),
        el("span", {}, badge(entry.status)),
        el("div", { class: "track", title: `${entry.duration_ms} ms` }, span),
        el(
          "div",
          { class: "detail" },
          el("span", { class: "when" }, `${when(entry.at)} · ${entry.duration_ms} ms`),
          entry.detail ? ` — ${entry.detail}` : "",
        ),
      );
    }),
  );
}

function renderTask(status, result) {
  $("task-id").textContent = status.task_id;
  const state = $("task-status");
  state.className = `badge ${status.status}`;
  state.textContent = status.status;
  $("task-progress").value = status.progress;
  $("task-percent").textContent = `${status.progress}%`;
  $("task-message").textContent = status.message;
  fillPairs($("task-facts"), [
    ["Sections", result.section_detected],
    ["Total cost", dollars(result.cost)],
    ["Elapsed", `${result.elapsed_seconds.toFixed(1)} s`],
    ["Created (UTC)", when(status.created_at)],
    ["Updated (UTC)", when(status.updated_at)],
    ["Completed (UTC)", when(status.completed_at)],
  ]);
  renderSections(status, result);
  renderTrace(status.trace);
}

async function read() {
  if (reading) {
    again = true;
    return reading;
  }
  reading = (async () => {
    do {
      again = false;
      try {
        const path = `/task/${encodeURIComponent(taskId)}`;
        const [status, result] = await Promise.all([
          getJson(`${path}/status`),
          getJson(`${path}/result`),
        ]);
        $("task-error").textContent = "";
        renderTask(status, result);
      } catch (error) {
        $("task-error").textContent = error.message;
      }
    } while (again);
    reading = null;
  })();
  return reading;
}

async function records() {
  try {
    const input = await getJson(`/task/${encodeURIComponent(taskId)}/input`);
    $("records").textContent = input.data.map((r) => JSON.stringify(r, null, 2)).join("\n\n");
  } catch (error) {
    $("records").textContent = `(not available: ${error.message})`;
  }
}

async function start() {
  if (!TASK_ID.test(taskId)) {
    $("task-error").textContent = "not a task id";
    return;
  }
  document.title = `${taskId} · Wealth AI dashboard`;
  await read();
  records();
  if (isTerminal($("task-status").textContent)) return;
  const stream = new AbortController();
  window.addEventListener("pagehide", () => stream.abort());
  try {
    await follow(taskId, () => read(), stream.signal);
  } catch (error) {
    $("task-error").textContent = error.message;
  }
  await read();
}

signIn(start);
