// The overview (#/): a tile per instance, grouped by category (or by node), live.

import { api, limiter } from "./api.js";
import { drawSparkline, measureSparklines } from "./chart.js";
import { el, setText } from "./dom.js";
import { formatValue } from "./format.js";
import { onChange, onEvent, refreshInstances, seriesKey, stateOf, store } from "./store.js";

const STATES = ["ok", "degraded", "failing", "disabled", "unknown"];
const HOUR = 3600;
// Sparkline requests in flight at once, and instances per request (the first screen's
// some 30 tiles in one).
const queue = limiter(4);
const SPARKS_PER_REQUEST = 50;
const sparks = new Map(); // id -> {key, points} (kept across visits of the page)

/** The metrics a tile shows: the instance's own ones first (not `<type>.`), by name. */
function headline(p) {
  const type = p.info?.type || "";
  const seen = new Set();
  const list = [];
  for (const m of p.metrics.values()) {
    if (seen.has(m.name)) continue;
    seen.add(m.name);
    list.push(m);
  }
  list.sort((a, b) => {
    const ao = a.name.startsWith(`${type}.`), bo = b.name.startsWith(`${type}.`);
    return ao === bo ? a.name.localeCompare(b.name) : ao ? 1 : -1;
  });
  return list.slice(0, 3);
}

export function overview(root) {
  const filters = { state: "", category: "", node: "", q: "" };
  let groupBy = "category";
  const counts = {};
  const countBar = el("ul", { class: "counts", "aria-label": "Instances by state" });
  for (const s of STATES.slice(0, 4)) {
    counts[s] = el("span", { class: "count-n", text: "0" });
    countBar.append(el("li", { class: `count state-${s}` }, counts[s], ` ${s}`));
  }
  const stateSelect = el("select", { id: "filter-state", onchange: (e) => { filters.state = e.target.value; applyFilters(); } },
    el("option", { value: "", text: "every state" }), ...STATES.map((s) => el("option", { value: s, text: s })));
  const categorySelect = el("select", { id: "filter-category", onchange: (e) => { filters.category = e.target.value; applyFilters(); } },
    el("option", { value: "", text: "every category" }));
  // Nodes: shown once the instances run on more than one (a cluster, docs/scale-out.md).
  const nodeSelect = el("select", { id: "filter-node", onchange: (e) => { filters.node = e.target.value; applyFilters(); } },
    el("option", { value: "", text: "every node" }));
  const groupSelect = el("select", { id: "group-by", onchange: (e) => { groupBy = e.target.value; regroup(); } },
    el("option", { value: "category", text: "category" }), el("option", { value: "node", text: "node" }));
  const nodeTools = el("span", { class: "node-tools", hidden: true },
    el("label", { for: "filter-node", text: "Node" }), nodeSelect,
    el("label", { for: "group-by", text: "Group by" }), groupSelect);
  const knownNodes = new Set();
  const search = el("input", { id: "filter-search", type: "search", placeholder: "id, type, title", oninput: (e) => { filters.q = e.target.value.trim().toLowerCase(); applyFilters(); } });
  const toolbar = el("div", { class: "toolbar", role: "search" },
    el("label", { for: "filter-state", text: "State" }), stateSelect,
    el("label", { for: "filter-category", text: "Category" }), categorySelect, nodeTools,
    el("label", { for: "filter-search", text: "Search" }), search);
  const alertBox = el("section", { class: "firing", "aria-label": "Firing alerts", hidden: true });
  const groups = el("div", { class: "groups" });
  const empty = el("p", { class: "notice", text: "No instance matches.", hidden: true });
  root.append(el("h1", { class: "visually-hidden", text: "Overview" }), alertBox, countBar, toolbar, groups, empty);

  const tiles = new Map(); // id -> {node, parts}
  const sections = new Map(); // group (a category or a node) -> {section, list}

  const visible = new Set();
  const stale = new Set(); // tiles off the screen whose text is behind
  const observer = new IntersectionObserver((entries) => {
    const shown = [];
    for (const e of entries) {
      const id = e.target.dataset.id;
      if (e.isIntersecting) {
        visible.add(id);
        if (stale.has(id)) tile(id);
        shown.push(id);
      } else visible.delete(id);
    }
    drawSparks(shown);
  }, { rootMargin: "200px" });

  const categories = new Set();
  function section(name) {
    let s = sections.get(name);
    if (!s) {
      const list = el("ul", { class: "tiles" });
      const heading = el("h2", { text: groupBy === "node" ? `node ${name}` : name });
      s = { section: el("section", { class: "group", "aria-label": heading.textContent }, heading, list), list };
      sections.set(name, s);
      const names = [...sections.keys()].sort();
      const after = names[names.indexOf(name) + 1];
      groups.insertBefore(s.section, after ? sections.get(after).section : null);
    }
    return s;
  }

  function groupOf(t) {
    return groupBy === "node" ? t.nodeName || "(none)" : t.category;
  }

  /** Put every tile in the section of its group again (the grouping changed). */
  function regroup() {
    for (const s of sections.values()) s.section.remove();
    sections.clear();
    for (const t of tiles.values()) section(groupOf(t)).list.append(t.node);
    applyFilters();
  }

  function noteNode(name) {
    if (!name || knownNodes.has(name)) return;
    knownNodes.add(name);
    nodeSelect.append(el("option", { value: name, text: name }));
    nodeTools.hidden = knownNodes.size < 2;
  }

  function tile(id) {
    let t = tiles.get(id);
    const p = store.plugins.get(id);
    if (!p?.info) return null;
    if (!t) {
      const word = el("span", { class: "state-word" });
      const title = el("a", { href: `#/instance/${encodeURIComponent(id)}`, class: "tile-title", text: id });
      const sub = el("span", { class: "tile-sub" });
      const values = el("dl", { class: "values" });
      const canvas = el("canvas", { class: "spark", width: 160, height: 32, "aria-hidden": "true" });
      const node = el("li", { class: "tile", "data-id": id }, el("div", { class: "tile-head" }, title, word), sub, values, canvas);
      t = { node, word, sub, values, canvas, state: "", category: "", nodeName: null, valuesText: "", filled: false };
      tiles.set(id, t);
      observer.observe(node);
    }
    const category = p.info.category || "other";
    const nodeName = p.info.running_on || "";
    noteNode(nodeName);
    if (!categories.has(category)) {
      categories.add(category);
      categorySelect.append(el("option", { value: category, text: category }));
    }
    if (t.category !== category || t.nodeName !== nodeName) {
      t.category = category;
      t.nodeName = nodeName;
      section(groupOf(t)).list.append(t.node);
    }
    const state = stateOf(p);
    if (t.state !== state) {
      t.node.classList.remove(`state-${t.state}`);
      t.node.classList.add(`state-${state}`);
      t.node.dataset.state = state;
      t.state = state;
      setText(t.word, state);
    }
    t.search = `${id} ${p.info.type} ${p.info.title} ${category} ${nodeName}`.toLowerCase();
    // A tile off the screen keeps its state (filters and counts read it); its text is
    // brought up to date when it comes into view: 500 tiles change every second.
    if (!visible.has(id) && t.filled) { stale.add(id); return t; }
    writeText(id, t, p);
    return t;
  }

  function writeText(id, t, p) {
    stale.delete(id);
    t.filled = true;
    const where = knownNodes.size > 1 && t.nodeName ? ` · on ${t.nodeName}` : "";
    setText(t.sub, `${p.info.title || p.info.type}${where} · ${p.health?.message || p.info.state || ""}`);
    const shown = headline(p);
    const text = shown.map((m) => `${m.name}=${m.value}`).join("|");
    if (text !== t.valuesText) {
      t.valuesText = text;
      const names = shown.map((m) => m.name).join("|");
      if (names === t.valueNames) {
        // The same series: change only the numbers (no new elements, less layout).
        shown.forEach((m, i) => setText(t.values.children[2 * i + 1], formatValue(m.value, m.unit)));
      } else {
        t.valueNames = names;
        t.values.replaceChildren(...shown.flatMap((m) => [el("dt", { text: m.name }), el("dd", { text: formatValue(m.value, m.unit) })]));
      }
    }
  }

  // Sparklines wanted in one pass of the page are asked for together (GET /api/history,
  // up to SPARKS_PER_REQUEST each): one request for the first screen instead of one per tile.
  const wanted = new Map(); // id -> spark
  function loadSpark(id) {
    if (sparks.has(id)) return;
    const p = store.plugins.get(id);
    const first = p && headline(p)[0];
    if (!first) return;
    const spark = { key: seriesKey(first), name: first.name, points: [] };
    sparks.set(id, spark);
    wanted.set(id, spark);
    if (wanted.size === 1) queueMicrotask(requestSparks);
  }

  function requestSparks() {
    const batch = [...wanted].slice(0, SPARKS_PER_REQUEST);
    for (const [id] of batch) wanted.delete(id);
    if (wanted.size) queueMicrotask(requestSparks);
    const series = batch.map(([id, spark]) => `${id}:${spark.name}`).join(",");
    queue(() => api(`/api/history?series=${encodeURIComponent(series)}&points=60`))
      .then((answer) => {
        for (const result of answer.results) {
          const spark = sparks.get(result.plugin_id);
          if (!spark) continue;
          const s = result.series.find((x) => seriesKey(x) === spark.key) || result.series[0];
          if (s) spark.points = s.points.concat(spark.points.filter(([t]) => t > (s.points.at(-1)?.[0] ?? 0)));
        }
        measureSparklines(batch.map(([id]) => tiles.get(id)?.canvas).filter(Boolean));
        for (const [id] of batch) drawSpark(id);
      }).catch(() => { for (const [id] of batch) sparks.delete(id); });
  }

  // The line colour of each state, read from the style sheet once (again when the theme
  // changes): a style read per tile would lay the page out again for every tile.
  const colors = new Map();
  function colorOf(t) {
    let color = colors.get(t.state);
    if (!color) {
      color = getComputedStyle(t.node).getPropertyValue("--state").trim() || "#3b82f6";
      colors.set(t.state, color);
    }
    return color;
  }

  function drawSpark(id) {
    const t = tiles.get(id);
    const spark = sparks.get(id);
    if (!t || !spark || !visible.has(id)) return;
    drawSparkline(t.canvas, spark.points, colorOf(t));
    // How many points the sparkline shows (tests and the benchmark read it).
    t.canvas.dataset.points = String(spark.points.length);
  }

  /** Load and draw the sparklines of `ids`, after every change to the page's text: a
   * canvas's first draw reads its size, which lays the page out if anything changed. */
  function drawSparks(ids) {
    measureSparklines(ids.map((id) => tiles.get(id)?.canvas).filter(Boolean));
    for (const id of ids) { loadSpark(id); drawSpark(id); }
  }

  /** Show or hide the tiles of `ids` (all of them when left out) by the filters. */
  function applyFilters(ids) {
    let flipped = false;
    for (const id of ids || tiles.keys()) {
      const t = tiles.get(id);
      if (!t) continue;
      const hide = Boolean((filters.state && t.state !== filters.state)
        || (filters.category && t.category !== filters.category)
        || (filters.node && t.nodeName !== filters.node)
        || (filters.q && !t.search.includes(filters.q)));
      if (t.node.hidden !== hide) { t.node.hidden = hide; flipped = true; }
    }
    if (!flipped && ids) return;
    let shown = 0;
    for (const sec of sections.values()) {
      const n = [...sec.list.children].filter((c) => !c.hidden).length;
      sec.section.hidden = n === 0;
      shown += n;
    }
    empty.hidden = shown > 0;
  }

  function renderCounts() {
    const n = { ok: 0, degraded: 0, failing: 0, disabled: 0, unknown: 0 };
    for (const p of store.plugins.values()) if (p.info) n[stateOf(p)] = (n[stateOf(p)] || 0) + 1;
    for (const s of Object.keys(counts)) setText(counts[s], String(n[s]));
  }

  function renderAlerts() {
    const firing = store.alerts.filter((a) => a.state === "firing");
    alertBox.hidden = firing.length === 0;
    alertBox.replaceChildren(el("h2", { text: `Firing alerts (${firing.length})` }),
      el("ul", {}, ...firing.map((a) => el("li", { class: `alert sev-${a.severity}` },
        el("strong", { text: a.severity }), " ",
        a.instance_id ? el("a", { href: `#/instance/${encodeURIComponent(a.instance_id)}`, text: a.instance_id }) : "",
        ` ${a.rule}: ${a.summary || ""}`, a.silenced ? " (silenced)" : ""))),
      el("a", { href: "#/alerts", text: "All alerts" }));
  }

  function render(ids, alerts) {
    let changed = false;
    let removed = false;
    const shown = [];
    for (const id of ids) {
      if (!id) continue;
      if (!store.plugins.has(id) && tiles.has(id)) { tiles.get(id).node.remove(); tiles.delete(id); removed = true; continue; }
      const t = tile(id);
      if (t) { changed = true; if (visible.has(id)) shown.push(id); }
    }
    if (changed || removed) { renderCounts(); applyFilters(removed ? undefined : ids); }
    if (alerts) renderAlerts();
    drawSparks(shown);
  }

  const stopEvents = onEvent((message) => {
    if (message.type !== "metrics") return;
    const spark = sparks.get(message.plugin_id);
    if (!spark) return;
    for (const m of message.data) {
      if (seriesKey(m) !== spark.key) continue;
      spark.points.push([m.timestamp, m.value]);
      const cut = Date.now() / 1000 - HOUR;
      while (spark.points.length && (spark.points[0][0] < cut || spark.points.length > 600)) spark.points.shift();
    }
  });
  // Instances move between nodes with their leases: in a cluster, the list is read again
  // now and then to show where each runs.
  const whereTimer = setInterval(() => { if (knownNodes.size > 1) refreshInstances(); }, 10000);
  render(new Set(store.plugins.keys()), true);
  const stop = onChange(render);
  // Sparklines are redrawn when the tiles change width or the theme changes.
  let resizePending = false;
  const redrawVisible = () => {
    if (resizePending) return;
    resizePending = true;
    requestAnimationFrame(() => {
      resizePending = false;
      colors.clear();
      for (const id of visible) drawSpark(id);
    });
  };
  const scheme = window.matchMedia("(prefers-color-scheme: dark)");
  scheme.addEventListener("change", redrawVisible);
  window.addEventListener("resize", redrawVisible);
  return () => {
    stop(); stopEvents(); observer.disconnect(); clearInterval(whereTimer);
    scheme.removeEventListener("change", redrawVisible);
    window.removeEventListener("resize", redrawVisible);
  };
}
