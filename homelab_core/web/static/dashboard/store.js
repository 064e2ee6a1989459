// What the page knows about every instance, kept current by the live stream; views
// subscribe and are told, once per animation frame, which instances changed.

import { api, LiveStream } from "./api.js";

export const store = {
  plugins: new Map(), // id -> {info, health, metrics: Map(key -> metric)}
  alerts: [],
  connection: "connecting",
  loaded: null,
};

const listeners = new Set();
const dirty = new Set();
let framePending = false;
let alertsDirty = false;

function flush() {
  framePending = false;
  const ids = new Set(dirty);
  dirty.clear();
  const alerts = alertsDirty;
  alertsDirty = false;
  for (const fn of listeners) fn(ids, alerts);
}

export function markDirty(id) {
  dirty.add(id);
  if (!framePending) {
    framePending = true;
    requestAnimationFrame(flush);
  }
}

export function onChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function seriesKey(metric) {
  const labels = metric.labels || {};
  const keys = Object.keys(labels).sort();
  return keys.length ? `${metric.name}{${keys.map((k) => `${k}=${labels[k]}`).join(",")}}` : metric.name;
}

function entry(id) {
  let p = store.plugins.get(id);
  if (!p) {
    p = { info: null, health: null, metrics: new Map(), listeners: new Set() };
    store.plugins.set(id, p);
  }
  return p;
}

/** The word (and colour class) an instance's tile shows. */
export function stateOf(p) {
  if (p.info && !p.info.enabled) return "disabled";
  const s = p.health?.state || p.info?.health?.state || "unknown";
  return s === "failed" ? "failing" : s;
}

async function loadInstance(id) {
  try {
    const info = (await api(`/api/plugins/${encodeURIComponent(id)}`)).plugin;
    const p = entry(id);
    p.info = info;
    p.health = info.health;
  } catch (error) {
    if (error.status === 404) store.plugins.delete(id);
  }
  markDirty(id);
}

/** Read the list of instances again: new ones are added, deleted ones removed. */
async function syncList() {
  try {
    const list = await api("/api/plugins");
    const ids = new Set(list.plugins.map((x) => x.id));
    for (const id of store.plugins.keys()) if (!ids.has(id)) { store.plugins.delete(id); markDirty(id); }
    for (const info of list.plugins) {
      const p = entry(info.id);
      p.info = info;
      p.health = info.health;
      markDirty(info.id);
    }
  } catch { /* the next event tries again */ }
}

let alertTimer = null;
export function refreshAlerts() {
  clearTimeout(alertTimer);
  alertTimer = setTimeout(async () => {
    try {
      store.alerts = (await api("/api/alerts")).alerts;
      alertsDirty = true;
      markDirty("");
    } catch { /* shown on the next success */ }
  }, 200);
}

const eventListeners = new Set();
/** fn(message) for every stream event (instance pages extend their charts with it). */
export function onEvent(fn) {
  eventListeners.add(fn);
  return () => eventListeners.delete(fn);
}

function apply(message) {
  const id = message.plugin_id;
  if (message.type === "metrics") {
    const p = entry(id);
    for (const m of message.data) p.metrics.set(seriesKey(m), m);
  } else if (message.type === "status") entry(id).health = message.data;
  else if (message.type === "plugin") {
    const p = entry(id);
    // A new instance, or maybe a deleted one ("stopped": the list says whether it is gone).
    if (message.data.state === "stopped") syncList();
    else if (!p.info) loadInstance(id);
    else { p.info.enabled = message.data.enabled; p.info.state = message.data.state; }
  } else if (message.type === "alert") refreshAlerts();
  if (id) markDirty(id);
  for (const fn of eventListeners) fn(message);
}

/** Load the instances and alerts, then follow the stream. */
export function start(setConnection) {
  if (store.loaded) return store.loaded;
  store.loaded = (async () => {
    const [list, alerts] = await Promise.all([api("/api/plugins"), api("/api/alerts")]);
    for (const info of list.plugins) {
      const p = entry(info.id);
      p.info = info;
      p.health = info.health;
    }
    store.alerts = alerts.alerts;
    new LiveStream({
      state: (s) => { store.connection = s; setConnection(s); },
      snapshot: (plugins, resumed) => {
        for (const [id, current] of Object.entries(plugins)) {
          const p = entry(id);
          if (!resumed) p.metrics.clear();
          p.health = current.status;
          for (const m of current.metrics) p.metrics.set(seriesKey(m), m);
          if (!p.info) loadInstance(id);
          markDirty(id);
        }
        refreshAlerts();
      },
      event: apply,
    });
  })();
  return store.loaded;
}

/** Reload one instance's description (after an edit). */
export const reloadInstance = loadInstance;
/** Read the list of instances again (where each runs, in a cluster). */
export const refreshInstances = syncList;
