// The REST API and the live stream, with the token the user typed (localStorage).

const PREFIX = document.body.dataset.prefix || "";
const TOKEN_KEY = "homelab.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  try { return localStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; }
}

function saveToken(value) {
  try { localStorage.setItem(TOKEN_KEY, value); } catch { /* private mode: kept for this page */ }
}

let asking = null;

/** Ask the user for the token once (one form, however many requests need it). */
export function askToken(reason) {
  if (asking) return asking;
  asking = new Promise((resolve) => {
    const dialog = document.createElement("dialog");
    dialog.className = "token-dialog";
    const form = document.createElement("form");
    form.method = "dialog";
    const title = document.createElement("h2");
    title.textContent = "API token";
    const text = document.createElement("p");
    text.textContent = reason;
    const label = document.createElement("label");
    label.textContent = "Token ([server] api_token)";
    const input = document.createElement("input");
    input.type = "password";
    input.name = "token";
    input.id = "token-input";
    input.autocomplete = "current-password";
    input.required = true;
    label.htmlFor = "token-input";
    const button = document.createElement("button");
    button.type = "submit";
    button.textContent = "Use token";
    form.append(title, text, label, input, button);
    dialog.append(form);
    document.body.append(dialog);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      saveToken(input.value);
      dialog.close();
      dialog.remove();
      asking = null;
      resolve(input.value);
    });
    dialog.addEventListener("cancel", (e) => e.preventDefault());
    dialog.showModal();
    input.focus();
  });
  return asking;
}

/** A request to the API: JSON in and out; a 401/403 asks for the token and retries. */
export async function api(path, { method = "GET", body, retry = true } = {}) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined || method !== "GET") headers["Content-Type"] = "application/json";
  const response = await fetch(PREFIX + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if ((response.status === 401 || (response.status === 403 && t)) && retry) {
    const data = await response.json().catch(() => ({}));
    if (data?.error?.code === "forbidden_origin") throw new ApiError(403, data.error.code, data.error.message);
    await askToken(response.status === 401 ? "This server needs its API token." : "The token was refused; type it again.");
    return api(path, { method, body, retry: true });
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const error = data?.error || {};
    throw new ApiError(response.status, error.code || "http_error", error.message || `${response.status} ${response.statusText}`);
  }
  return data;
}

/** Calls `fn` with at most `limit` running at once (for sparklines of many instances). */
export function limiter(limit) {
  let running = 0;
  const waiting = [];
  const next = () => {
    if (running >= limit || !waiting.length) return;
    running += 1;
    const [fn, resolve, reject] = waiting.shift();
    fn().then(resolve, reject).finally(() => { running -= 1; next(); });
  };
  return (fn) => new Promise((resolve, reject) => { waiting.push([fn, resolve, reject]); next(); });
}

/**
 * The live stream (/ws/metrics, docs/websocket.md): connects, authenticates with the token,
 * resumes after a dropped connection with since/stream, and calls
 * handlers.snapshot(plugins, resumed), handlers.event(message), handlers.state(text).
 */
export class LiveStream {
  constructor(handlers) {
    this.handlers = handlers;
    this.lastSeq = null;
    this.stream = null;
    this.delay = 500;
    this.stopped = false;
    this.connect();
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}${PREFIX}/ws/metrics`);
    this.ws = ws;
    let hello = null;
    let synced = false;
    const subscribe = () => {
      // Every event but executions: with hundreds of instances they are half the
      // stream, and the pages read executions from the API when a run reports.
      // Batches of a quarter of a second: a few frames a second instead of one per event.
      const request = { type: "subscribe", types: ["metrics", "status", "plugin", "alert"], batch: 0.25 };
      if (this.lastSeq !== null && this.stream === hello.stream) {
        request.since = this.lastSeq;
        request.stream = this.stream;
      }
      synced = false;
      ws.send(JSON.stringify(request));
    };
    const handle = async (message) => {
      const kind = message.type;
      if (kind === "batch") {
        for (const m of message.messages) await handle(m);
      } else if (kind === "hello") {
        hello = message;
        if (message.auth_required) {
          const t = token() || (await askToken("The live stream needs the API token."));
          ws.send(JSON.stringify({ type: "auth", token: t }));
        } else subscribe();
      } else if (kind === "authenticated") subscribe();
      else if (kind === "snapshot") {
        synced = true;
        this.stream = hello.stream;
        this.lastSeq = message.seq;
        this.delay = 500;
        this.handlers.state("live");
        this.handlers.snapshot(message.plugins, message.resumed);
      } else if (kind === "error") {
        if (message.code === "forbidden") {
          try { localStorage.removeItem("homelab.token"); } catch { /* ignore */ }
          this.handlers.state("reconnecting");
        }
      } else if (!synced) {
        /* events of the previous subscription */
      } else if (kind === "lagged") subscribe();
      else if (kind === "heartbeat") this.lastSeq = message.seq;
      else if (message.seq !== undefined) {
        this.lastSeq = message.seq;
        this.handlers.event(message);
      }
    };
    ws.addEventListener("message", (frame) => handle(JSON.parse(frame.data)));
    ws.addEventListener("close", (e) => {
      if (this.stopped) return;
      if (e.code === 4403 || e.code === 4401) {
        askToken("The live stream refused the token; type it again.").then(() => this.connect());
        return;
      }
      this.handlers.state("reconnecting");
      setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 10000);
    });
  }

  close() {
    this.stopped = true;
    this.ws?.close();
  }
}
