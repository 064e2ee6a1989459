// The instance page (#/instance/<id>): charts, executions, health, actions, config.

import { api } from "./api.js";
import { attachHover, drawChart, PALETTE } from "./chart.js";
import { el, notice } from "./dom.js";
import { ago, formatTime, formatValue, labelText } from "./format.js";
import { clearErrors, field, showError, showServerError, valueOf } from "./form.js";
import { onChange, onEvent, reloadInstance, seriesKey, stateOf, store } from "./store.js";

/** Ranges and the step each asks for (about 360 buckets). */
export const RANGES = [
  { id: "1h", seconds: 3600, step: "10s" },
  { id: "6h", seconds: 6 * 3600, step: "1m" },
  { id: "24h", seconds: 86400, step: "5m" },
  { id: "7d", seconds: 7 * 86400, step: "30m" },
  { id: "30d", seconds: 30 * 86400, step: "2h" },
];
const NICE_STEPS = [10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
const SECRET = "**********";

/** A step of about 360 buckets for a custom range of `seconds`. */
export function stepFor(seconds) {
  const want = seconds / 360;
  return NICE_STEPS.find((s) => s >= want) || 86400;
}

window.homelabCharts = window.homelabCharts || {};

export function instancePage(root, id) {
  const p = store.plugins.get(id);
  if (!p?.info) {
    root.append(el("h1", { text: id }), notice(`There is no instance ${id}.`, "error"), el("a", { href: "#/", text: "Back to the overview" }));
    return () => {};
  }
  const stateWord = el("span", { class: "state-word" });
  const heading = el("h1", { class: "instance-title" }, id, " ", stateWord);
  const message = el("p", { class: "health-message" });
  const feedback = el("p", { class: "feedback", role: "status", "aria-live": "polite" });
  const toggle = el("button", { type: "button", id: "toggle-enabled" });
  const runNow = el("button", { type: "button", id: "run-now", text: "Run now" });
  const actions = el("div", { class: "actions" }, toggle, runNow);
  const charts = el("div", { class: "charts" });
  const configBox = el("section", { class: "card", "aria-labelledby": "config-h" });
  const execBox = el("section", { class: "card", "aria-labelledby": "exec-h" });
  const healthBox = el("section", { class: "card", "aria-labelledby": "healthh-h" });

  const rangeState = { id: "1h", since: "-1h", step: "10s", from: null, to: null, live: true };
  const rangeButtons = el("div", { class: "ranges", role: "group", "aria-label": "Range" });
  for (const r of RANGES) {
    rangeButtons.append(el("button", { type: "button", "data-range": r.id, text: r.id, "aria-pressed": r.id === "1h" ? "true" : "false",
      onclick: () => { Object.assign(rangeState, { id: r.id, since: `-${r.id}`, until: null, step: r.step, live: true }); loadCharts(); } }));
  }
  const customFrom = el("input", { type: "datetime-local", id: "range-from" });
  const customTo = el("input", { type: "datetime-local", id: "range-to" });
  const custom = el("form", { class: "custom-range", onsubmit: (e) => {
    e.preventDefault();
    const from = new Date(customFrom.value).getTime() / 1000, to = new Date(customTo.value || Date.now()).getTime() / 1000;
    if (!(from < to)) { feedback.textContent = "The custom range must start before it ends."; return; }
    Object.assign(rangeState, { id: "custom", since: String(Math.floor(from)), until: String(Math.ceil(to)), step: `${stepFor(to - from)}s`, live: false });
    loadCharts();
  } }, el("label", { for: "range-from", text: "From" }), customFrom, el("label", { for: "range-to", text: "To" }), customTo,
  el("button", { type: "submit", text: "Show" }));

  root.append(el("p", { class: "crumbs" }, el("a", { href: "#/", text: "Overview" }), " / ", id), heading, message, actions, feedback,
    el("section", { class: "card", "aria-labelledby": "charts-h" }, el("h2", { id: "charts-h", text: "Metrics" }), rangeButtons, custom, charts),
    execBox, healthBox, configBox);

  function renderHead() {
    const cur = store.plugins.get(id);
    if (!cur?.info) return;
    const state = stateOf(cur);
    stateWord.textContent = state;
    stateWord.className = `state-word badge state-${state}`;
    message.textContent = [`${cur.info.title} (${cur.info.type}, ${cur.info.category})`, `every ${cur.info.interval} s`,
      cur.health?.message, `last success ${ago(cur.health?.last_success)}`].filter(Boolean).join(" · ");
    toggle.textContent = cur.info.enabled ? "Disable" : "Enable";
    runNow.disabled = !cur.info.enabled;
  }
  renderHead();

  async function act(label, fn) {
    feedback.textContent = `${label}…`;
    try { await fn(); feedback.textContent = `${label}: done.`; } catch (error) { feedback.textContent = `${label}: ${error.message}`; }
  }
  toggle.addEventListener("click", () => act(toggle.textContent, async () => {
    const enabled = !store.plugins.get(id).info.enabled;
    await api(`/api/plugins/${encodeURIComponent(id)}/enable`, { method: "POST", body: { enabled } });
    await reloadInstance(id);
  }));
  runNow.addEventListener("click", () => act("Run", async () => {
    const run = await api(`/api/plugins/${encodeURIComponent(id)}/run`, { method: "POST" });
    feedback.textContent = `Run: ${run.status}${run.error ? ` (${run.error})` : ""}`;
    loadExecutions();
  }));

  // Charts.
  const chartsByName = new Map(); // metric name -> {canvas, series: [{label, key, points}], unit}
  let drawPending = false;
  function redraw() {
    drawPending = false;
    for (const [name, c] of chartsByName) {
      drawChart(c.canvas, c.series, chartOptions(c));
      window.homelabCharts[name] = c.canvas.chartData;
    }
  }
  // Redrawn when a chart changes size or the theme changes (their pixels depend on both).
  const schedule = () => { if (!drawPending) { drawPending = true; requestAnimationFrame(redraw); } };
  const resized = new ResizeObserver(schedule);
  const scheme = window.matchMedia("(prefers-color-scheme: dark)");
  scheme.addEventListener("change", schedule);
  function chartOptions(c) {
    const now = Date.now() / 1000;
    const range = RANGES.find((r) => r.id === rangeState.id);
    return range ? { unit: c.unit, from: now - range.seconds, to: now } : { unit: c.unit, from: rangeState.from, to: rangeState.to };
  }
  async function loadCharts() {
    for (const b of rangeButtons.children) b.setAttribute("aria-pressed", String(b.dataset.range === rangeState.id));
    const query = new URLSearchParams({ since: rangeState.since, step: rangeState.step });
    if (rangeState.until) query.set("until", rangeState.until);
    let answer;
    try {
      answer = await api(`/api/plugins/${encodeURIComponent(id)}/metrics/history?${query}`);
    } catch (error) {
      charts.replaceChildren(notice(`Could not load the history: ${error.message}`, "error"));
      return;
    }
    rangeState.from = answer.since;
    rangeState.to = answer.until;
    chartsByName.clear();
    resized.disconnect();
    window.homelabCharts = {};
    for (const s of answer.series) {
      let c = chartsByName.get(s.name);
      if (!c) { c = { series: [], unit: s.unit }; chartsByName.set(s.name, c); }
      c.series.push({ label: labelText(s.labels) || s.name, key: seriesKey(s), points: s.points });
    }
    const figures = [];
    for (const [name, c] of [...chartsByName].sort(([a], [b]) => a.localeCompare(b))) {
      const readout = el("p", { class: "readout", "aria-live": "polite" });
      c.canvas = el("canvas", { class: "chart", tabindex: "0", role: "img", "data-metric": name,
        "aria-label": `${name} chart; arrow keys read values` });
      const legend = el("ul", { class: "legend" }, ...c.series.map((s, i) => el("li", {}, el("span", { class: "swatch", style: `background:${PALETTE[i % PALETTE.length]}` }), s.label)));
      figures.push(el("figure", { class: "chart-box" }, el("figcaption", {}, el("strong", { text: name }), c.unit ? ` (${c.unit})` : ""), c.canvas, readout, c.series.length > 1 ? legend : null));
      attachHover(c.canvas, readout, () => chartOptions(c));
      resized.observe(c.canvas);
    }
    charts.replaceChildren(...(figures.length ? figures : [notice("No data in this range.")]));
    redraw();
  }
  const stopEvents = onEvent((m) => {
    if (m.plugin_id !== id) return;
    if (m.type === "metrics" && rangeState.live) {
      for (const metric of m.data) {
        const c = chartsByName.get(metric.name);
        if (!c) continue;
        const key = seriesKey(metric);
        let s = c.series.find((x) => x.key === key);
        if (!s) { s = { label: labelText(metric.labels) || metric.name, key, points: [] }; c.series.push(s); }
        s.points.push([metric.timestamp, metric.value]);
      }
      schedule();
    }
    if (m.type === "metrics" || m.type === "status") loadExecutions();  // a run ended
  });

  // Executions and health history.
  const statusFilter = el("select", { id: "exec-status", onchange: () => loadExecutions() },
    ...["", "ok", "error", "timeout", "skipped"].map((s) => el("option", { value: s, text: s || "every status" })));
  const execTable = el("tbody");
  execBox.append(el("h2", { id: "exec-h", text: "Executions" }), el("label", { for: "exec-status", text: "Status " }), statusFilter,
    el("div", { class: "table-wrap" }, el("table", { class: "executions" },
      el("thead", {}, el("tr", {}, ...["Started", "Trigger", "Status", "Duration", "Error"].map((h) => el("th", { scope: "col", text: h })))), execTable)));
  const healthList = el("ol", { class: "health-history" });
  healthBox.append(el("h2", { id: "healthh-h", text: "Health history" }),
    el("p", { class: "muted", text: "The last 50 changes of the instance's health, newest first." }), healthList);
  let execTimer = null;
  function loadExecutions() {
    clearTimeout(execTimer);
    execTimer = setTimeout(async () => {
      const q = new URLSearchParams({ limit: "50" });
      if (statusFilter.value) q.set("status", statusFilter.value);
      try {
        const [filtered, health] = await Promise.all([
          api(`/api/plugins/${encodeURIComponent(id)}/executions?${q}`),
          api(`/api/plugins/${encodeURIComponent(id)}/health/history?limit=50`),
        ]);
        execTable.replaceChildren(...filtered.executions.map((x) => el("tr", { class: `exec-${x.status}` },
          el("td", { text: formatTime(x.started_at, true) }), el("td", { text: x.trigger }), el("td", {}, el("span", { class: `badge exec-${x.status}`, text: x.status })),
          el("td", { text: formatValue(x.duration, "s") }), el("td", { class: "error-text", text: x.error || "" }))));
        if (!filtered.executions.length) execTable.append(el("tr", {}, el("td", { colspan: "5", text: "No execution." })));
        healthList.replaceChildren(...health.transitions.map((x) => el("li", {},
          el("span", { class: `badge state-${x.new_state}`, text: x.new_state }),
          ` since ${formatTime(x.ts, true)} (was ${x.old_state})`, x.message ? ` — ${x.message}` : "")));
        if (!health.transitions.length) healthList.append(el("li", { class: "muted", text: "No change stored yet." }));
      } catch (error) {
        execTable.replaceChildren(el("tr", {}, el("td", { colspan: "5", text: error.message })));
      }
    }, 150);
  }

  // Config, edit and delete.
  function renderConfig() {
    const info = store.plugins.get(id)?.info;
    if (!info) return;
    const rows = Object.entries(info.config || {}).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [k,
      v === SECRET ? "set (secret, not shown)" : typeof v === "string" ? v : JSON.stringify(v)]);
    configBox.replaceChildren(el("h2", { id: "config-h", text: "Configuration" }),
      el("p", { class: "muted", text: `Source: ${info.source === "api" ? "the API (editable here)" : "homelab.toml (edit the file)"}; interval ${info.interval} s, timeout ${info.timeout} s.` }),
      el("dl", { class: "config" }, ...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])));
    if (info.source !== "api") return;
    const edit = el("form", { class: "edit", novalidate: true }, el("h3", { text: "Edit" }), el("p", { class: "muted", text: "Loading the type's options..." }));
    configBox.append(edit);
    api(`/api/types/${encodeURIComponent(info.type)}`).then((t) => editForm(edit, info, t),
      (x) => edit.replaceChildren(el("h3", { text: "Edit" }), notice(`Could not load the type: ${x.message}`, "error")));
    const del = el("button", { type: "button", class: "danger", id: "delete-instance", text: "Delete this instance", onclick: () => act("Delete", async () => {
      if (!window.confirm(`Delete ${id}? Its history stays.`)) return;
      await api(`/api/plugins/${encodeURIComponent(id)}`, { method: "DELETE" });
      store.plugins.delete(id);
      location.hash = "#/";
    }) });
    configBox.append(del);
  }

  /** The edit form: interval, timeout and every option of the type's JSON Schema, filled
   * in with the instance's values; a PATCH sends them, an emptied option goes back to its
   * default and an empty secret keeps its value. */
  function editForm(form, info, t) {
    const schema = t.config_schema || { properties: {} };
    const config = info.config || {};
    const common = [
      field("interval", { type: "number", exclusiveMinimum: 0, description: "Seconds between runs." }, { value: info.interval, prefix: "edit" }),
      field("timeout", { type: "number", exclusiveMinimum: 0, description: "Seconds a run may take." }, { value: info.timeout, prefix: "edit" }),
    ];
    const options = Object.entries(schema.properties || {}).map(([name, prop]) =>
      field(name, prop, { value: config[name], secretSet: config[name] === SECRET, prefix: "edit" }));
    const all = [...common, ...options];
    const general = el("p", { class: "field-error", role: "alert" });
    const save = el("button", { type: "submit", text: "Save" });
    form.replaceChildren(el("h3", { text: "Edit" }),
      el("fieldset", {}, el("legend", { text: "Instance" }), ...common.map((f) => f.wrap)),
      el("fieldset", {}, el("legend", { text: `Options of ${t.type.title || t.type.name}` }),
        ...(options.length ? options.map((f) => f.wrap) : [el("p", { text: "This type has no options." })])),
      general, save);
    form.onsubmit = async (e) => {
      e.preventDefault();
      clearErrors(all, general);
      const body = { options: {} };
      for (const f of all) {
        let v;
        try { v = valueOf(f); } catch (x) { showError(f, `not JSON: ${x.message}`); return; }
        if (common.includes(f)) { if (v !== undefined) body[f.name] = v; continue; }
        if (v !== undefined) body.options[f.name] = v;
        else if (!f.secret && f.initial !== "") body.options[f.name] = null; // emptied: the default
      }
      save.disabled = true;
      try {
        await api(`/api/plugins/${encodeURIComponent(id)}`, { method: "PATCH", body });
        await reloadInstance(id);
        renderConfig();
        feedback.textContent = "Saved; the instance restarted with the change.";
      } catch (x) {
        showServerError(all, general, x.message);
      } finally {
        save.disabled = false;
      }
    };
  }
  renderConfig();
  loadCharts();
  loadExecutions();
  const stop = onChange((ids) => { if (ids.has(id)) renderHead(); });
  return () => { stop(); stopEvents(); clearTimeout(execTimer); resized.disconnect(); scheme.removeEventListener("change", schedule); };
}
