// Charts on canvas, written for this dashboard (no third-party code).
//
//   import { drawChart } from "./chart.js";
//   drawChart(canvas, [{label: "cpu=0", points: [[t, v], ...]}, ...], {unit: "%"});
//
// drawChart draws at once (synchronously) and sets canvas.chartData = {series, unit};
// attachHover(canvas, readout) adds the hover / keyboard read-out.

import { formatTime, formatValue } from "./format.js";

export const PALETTE = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#ec4899", "#14b8a6", "#84cc16"];

function colors(canvas) {
  const style = getComputedStyle(canvas);
  return {
    text: style.getPropertyValue("--muted").trim() || "#666",
    grid: style.getPropertyValue("--grid").trim() || "rgba(128,128,128,.25)",
    cursor: style.getPropertyValue("--fg").trim() || "#888",
  };
}

function extent(series, options) {
  let t0 = Infinity, t1 = -Infinity, v0 = Infinity, v1 = -Infinity;
  for (const s of series) {
    for (const [t, v] of s.points) {
      if (t < t0) t0 = t;
      if (t > t1) t1 = t;
      if (v === null || Number.isNaN(v)) continue;
      if (v < v0) v0 = v;
      if (v > v1) v1 = v;
    }
  }
  if (options.from !== undefined) t0 = options.from;
  if (options.to !== undefined) t1 = Math.max(options.to, t1);
  if (!Number.isFinite(t0)) { t0 = Date.now() / 1000 - 3600; t1 = Date.now() / 1000; }
  if (t1 <= t0) t1 = t0 + 1;
  if (!Number.isFinite(v0)) { v0 = 0; v1 = 1; }
  if (options.unit === "%" && v0 >= 0 && v1 <= 100) { v0 = 0; v1 = Math.max(v1, 1); }
  if (v0 > 0 && v0 < v1 * 0.5) v0 = 0;
  if (v1 === v0) { v1 += Math.abs(v1) * 0.1 || 1; v0 -= Math.abs(v0) * 0.1 || 0; }
  return { t0, t1, v0, v1 };
}

function niceTicks(lo, hi, count) {
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(v);
  return ticks;
}

// Reading a canvas's CSS size forces the browser to lay the page out; with hundreds of
// sparklines redrawn per frame between DOM updates, that layout ran for every one of them
// (most of the main thread's time in the benchmark). A sparkline's size (fixed by the
// stylesheet) is measured once, and again only after the window was resized; a chart's
// (a few per page, resized by their own observer) at every draw.
let layoutGeneration = 0;
window.addEventListener("resize", () => { layoutGeneration += 1; });
const measured = new WeakMap();

function measure(canvas, cached) {
  let known = cached ? measured.get(canvas) : undefined;
  if (!known || known.generation !== layoutGeneration || !known.width) {
    known = {
      generation: layoutGeneration,
      width: canvas.clientWidth || canvas.width,
      height: canvas.clientHeight || canvas.height,
    };
    measured.set(canvas, known);
  }
  return known;
}

/**
 * Measure the sparklines about to be drawn, all before any is drawn: a draw resizes its
 * canvas, and a measure after that would lay the page out again, once per sparkline.
 */
export function measureSparklines(canvases) {
  for (const canvas of canvases) measure(canvas, true);
}

function size(canvas, cached = false) {
  const ratio = window.devicePixelRatio || 1;
  const { width, height } = measure(canvas, cached);
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  return { width, height, ratio };
}

/**
 * Draw `series` ([{label, points: [[t, v], ...]}]) on `canvas`, synchronously.
 * options: unit (for the axis), from / to (epoch seconds), cursor (epoch seconds to mark).
 * Returns the layout used (for hover look-ups).
 */
export function drawChart(canvas, series, options = {}) {
  const { width, height, ratio } = size(canvas);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const c = colors(canvas);
  const { t0, t1, v0, v1 } = extent(series, options);
  ctx.font = "11px system-ui, sans-serif";
  const right = 8, top = 8, bottom = 22;
  const h = Math.max(10, height - top - bottom);
  const yTicks = niceTicks(v0, v1, Math.max(2, Math.floor(h / 40)));
  const left = 8 + Math.max(30, ...yTicks.map((v) => ctx.measureText(formatValue(v, options.unit)).width));
  const w = Math.max(10, width - left - right);
  const x = (t) => left + ((t - t0) / (t1 - t0)) * w;
  const y = (v) => top + h - ((v - v0) / (v1 - v0)) * h;

  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  ctx.strokeStyle = c.grid;
  ctx.fillStyle = c.text;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  ctx.beginPath();
  for (const v of yTicks) {
    const yy = Math.round(y(v)) + 0.5;
    ctx.moveTo(left, yy);
    ctx.lineTo(left + w, yy);
    ctx.fillText(formatValue(v, options.unit), left - 6, yy);
  }
  ctx.stroke();
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const long = t1 - t0 > 86400;
  const tickCount = Math.max(2, Math.floor(w / 110));
  for (let i = 0; i <= tickCount; i += 1) {
    const t = t0 + ((t1 - t0) * i) / tickCount;
    const label = long ? new Date(t * 1000).toLocaleDateString(undefined, { month: "short", day: "numeric" })
      : formatTime(t).slice(0, 5);
    ctx.fillText(label, Math.min(Math.max(x(t), left + 16), left + w - 16), top + h + 6);
  }

  ctx.lineWidth = 1.5;
  ctx.lineJoin = "round";
  series.forEach((s, i) => {
    ctx.strokeStyle = s.color || PALETTE[i % PALETTE.length];
    ctx.beginPath();
    let pen = false;
    for (const [t, v] of s.points) {
      if (v === null || Number.isNaN(v)) { pen = false; continue; }
      const xx = x(t), yy = y(v);
      if (pen) ctx.lineTo(xx, yy); else { ctx.moveTo(xx, yy); pen = true; }
    }
    if (s.points.length === 1) {
      const [t, v] = s.points[0];
      ctx.moveTo(x(t) - 2, y(v));
      ctx.lineTo(x(t) + 2, y(v));
    }
    ctx.stroke();
  });

  if (options.cursor !== undefined) {
    ctx.strokeStyle = c.cursor;
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(Math.round(x(options.cursor)) + 0.5, top);
    ctx.lineTo(Math.round(x(options.cursor)) + 0.5, top + h);
    ctx.stroke();
  }
  const layout = { left, top, w, h, t0, t1 };
  canvas.chartData = { series, unit: options.unit || "" };
  canvas.chartLayout = layout;
  return layout;
}

function nearest(points, t) {
  let lo = 0, hi = points.length - 1;
  if (hi < 0) return null;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (points[mid][0] < t) lo = mid; else hi = mid;
  }
  return Math.abs(points[lo][0] - t) <= Math.abs(points[hi][0] - t) ? points[lo] : points[hi];
}

/** Hover (and arrow keys on the focused canvas) show the time and values in `readout`. */
export function attachHover(canvas, readout, getOptions) {
  let cursor = null;
  const show = () => {
    const data = canvas.chartData;
    const layout = canvas.chartLayout;
    if (!data || !layout || cursor === null) { readout.textContent = ""; return; }
    const opts = { ...getOptions(), cursor };
    drawChart(canvas, data.series, opts);
    const parts = [formatTime(cursor, layout.t1 - layout.t0 > 86400)];
    for (const s of data.series) {
      const p = nearest(s.points, cursor);
      if (p) parts.push(`${s.label || "value"}: ${formatValue(p[1], data.unit)}`);
    }
    readout.textContent = parts.join(" · ");
  };
  canvas.addEventListener("mousemove", (e) => {
    const layout = canvas.chartLayout;
    if (!layout) return;
    const rect = canvas.getBoundingClientRect();
    const frac = Math.min(1, Math.max(0, (e.clientX - rect.left - layout.left) / layout.w));
    cursor = layout.t0 + frac * (layout.t1 - layout.t0);
    show();
  });
  canvas.addEventListener("mouseleave", () => {
    cursor = null;
    readout.textContent = "";
    if (canvas.chartData) drawChart(canvas, canvas.chartData.series, getOptions());
  });
  canvas.addEventListener("keydown", (e) => {
    const layout = canvas.chartLayout;
    if (!layout || (e.key !== "ArrowLeft" && e.key !== "ArrowRight")) return;
    e.preventDefault();
    const step = (layout.t1 - layout.t0) / 50;
    cursor = cursor === null ? layout.t1 : cursor + (e.key === "ArrowLeft" ? -step : step);
    cursor = Math.min(layout.t1, Math.max(layout.t0, cursor));
    show();
  });
  canvas.addEventListener("blur", () => { cursor = null; readout.textContent = ""; });
}

/** A small line without axes. */
export function drawSparkline(canvas, points, color) {
  canvas.chartData = { series: [{ label: "", points }], unit: "" };
  const { width, height, ratio } = size(canvas, true);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  if (!points.length) return;
  let v0 = Infinity, v1 = -Infinity;
  for (const [, v] of points) { if (v < v0) v0 = v; if (v > v1) v1 = v; }
  if (v1 === v0) { v1 += 1; v0 -= 1; }
  // The last hour, or less when the data is younger (a line across the tile either way).
  const t1 = Math.max(Date.now() / 1000, points.at(-1)[0]);
  const t0 = Math.min(t1 - 60, Math.max(t1 - 3600, points[0][0]));
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  points.forEach(([t, v], i) => {
    const xx = ((t - t0) / (t1 - t0)) * width;
    const yy = height - 2 - ((v - v0) / (v1 - v0)) * (height - 4);
    if (i) ctx.lineTo(xx, yy); else ctx.moveTo(xx, yy);
  });
  ctx.stroke();
}
