// What both dashboard pages share: the API key (this tab's sessionStorage only), calls to the
// gateway with it, the task event stream read through fetch, the sign-in form, and building
// elements. Every value from the API is put on the page as text (textContent, text nodes):
// never as HTML, since task data is untrusted input.

const KEY_NAME = "wealthai.dashboard.apiKey";
const TERMINAL = new Set(["completed", "error", "cancelled"]);
export const TASK_ID = /^task_[0-9]{14}_[0-9a-f]{8}$/;
export const FILE_ID = /^f_[0-9a-f]{32}_[0-9a-f]{24}$/;

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

export const isTerminal = (status) => TERMINAL.has(status);

function savedKey() {
  return sessionStorage.getItem(KEY_NAME);
}

export function signOut() {
  sessionStorage.removeItem(KEY_NAME);
}

// A call to the gateway with the key; an ApiError for any answer but 2xx.
export async function call(path, { method = "GET", accept = "application/json", signal } = {}) {
  const key = savedKey();
  if (!key) throw new ApiError(401, "unauthenticated", "not signed in");
  const reply = await fetch(path, {
    method,
    signal,
    cache: "no-store",
    credentials: "omit",
    redirect: "error",
    headers: { Authorization: `Bearer ${key}`, Accept: accept },
  });
  if (!reply.ok) {
    let body = {};
    try {
      body = await reply.json();
    } catch {
      // not JSON: the status says enough
    }
    throw new ApiError(reply.status, body.error || "", body.detail || reply.statusText);
  }
  return reply;
}

export async function getJson(path, options) {
  return (await call(path, options)).json();
}

// Reads one stream of task events (data: <json> blocks) and hands each event to onEvent;
// returns when the server ends the stream.
async function readEvents(taskId, onEvent, signal) {
  const reply = await call(`/task/${encodeURIComponent(taskId)}/events`, {
    accept: "text/event-stream",
    signal,
  });
  const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll("\r\n", "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data) onEvent(JSON.parse(data));
    }
  }
}

// Follows a task's events until it finishes or signal aborts: a stream that ends early (its
// lifetime, a restart) is opened again after a pause that grows while it keeps failing.
export async function follow(taskId, onEvent, signal) {
  let finished = false;
  let pause = 1000;
  const seen = (event) => {
    pause = 1000;
    if (isTerminal(event.status)) finished = true;
    onEvent(event);
  };
  while (!finished && !signal.aborted) {
    try {
      await readEvents(taskId, seen, signal);
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && [401, 403, 404].includes(error.status)) throw error;
    }
    if (finished || signal.aborted) return;
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, 15000);
  }
}

// Saves the bytes of a file under its name, fetched with the key (no key in any URL).
export async function download(fileId, name) {
  if (!FILE_ID.test(fileId)) throw new Error("not a file id");
  const blob = await (await call(`/files/${fileId}`, { accept: "*/*" })).blob();
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: name || fileId, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// An element with attributes and children; strings become text nodes, never markup.
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function badge(text, extra = "") {
  return el("span", { class: `badge ${text} ${extra}`.trim() }, text);
}

export function dollars(value) {
  return `$${Number(value || 0).toFixed(4)}`;
}

export function when(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", "") : "";
}

// Fills a two-column table (th: name, td: value) from [name, value] pairs.
export function fillPairs(table, pairs) {
  table.replaceChildren(
    ...pairs.map(([name, value]) =>
      el("tr", {}, el("th", { scope: "row" }, name), el("td", {}, value)),
    ),
  );
}

// Shows the sign-in form until a key is accepted (GET /me), then calls start(me). The key is
// kept only once the gateway accepted it.
export function signIn(start) {
  const form = document.getElementById("signin-form");
  const panel = document.getElementById("signin");
  const app = document.getElementById("app");
  const who = document.getElementById("who");
  const out = document.getElementById("signout");
  const problem = document.getElementById("signin-error");

  const open = async () => {
    try {
      const me = await getJson("/me");
      panel.hidden = true;
      app.hidden = false;
      out.hidden = false;
      who.textContent = `${me.principal_id} · ${me.role}`;
      start(me);
    } catch (error) {
      signOut();
      panel.hidden = false;
      app.hidden = true;
      out.hidden = true;
      who.textContent = "";
      if (error.status !== 401 || problem.dataset.tried) problem.textContent = error.message;
    }
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = form.elements.key;
    problem.textContent = "";
    problem.dataset.tried = "1";
    sessionStorage.setItem(KEY_NAME, input.value.trim());
    input.value = "";
    await open();
  });
  out.addEventListener("click", () => {
    signOut();
    window.location.assign("/dashboard");
  });
  if (savedKey()) open();
  else panel.hidden = false;
}
