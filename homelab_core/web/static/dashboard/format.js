// Formatting of values with their units, and of times (see docs/dashboard.md).

const BYTES = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

function trim(n) {
  const a = Math.abs(n);
  if (a !== 0 && (a < 0.01 || a >= 1e15)) return n.toExponential(2);
  if (a >= 1e4) return String(Math.round(n));
  return n.toFixed(a >= 100 ? 0 : a >= 10 ? 1 : 2).replace(/\.?0+$/, "") || "0";
}

function bytes(v) {
  let i = 0;
  let x = v;
  while (Math.abs(x) >= 1024 && i < BYTES.length - 1) { x /= 1024; i += 1; }
  return `${trim(x)} ${BYTES[i]}`;
}

function seconds(v) {
  const a = Math.abs(v);
  if (a === 0) return "0 s";
  if (a < 1e-3) return `${trim(v * 1e6)} µs`;
  if (a < 1) return `${trim(v * 1e3)} ms`;
  if (a < 120) return `${trim(v)} s`;
  if (a < 7200) return `${trim(v / 60)} min`;
  if (a < 172800) return `${trim(v / 3600)} h`;
  return `${trim(v / 86400)} d`;
}

/** A value with its unit: bytes, %, seconds and rates get readable forms. */
export function formatValue(value, unit) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const u = unit || "";
  if (u === "bytes" || u === "B") return bytes(value);
  if (u === "bytes/s" || u === "B/s") return `${bytes(value)}/s`;
  if (u === "bits/s" || u === "bit/s") return `${trim(value)} bit/s`;
  if (u === "%") return `${trim(value)} %`;
  if (u === "s" || u === "seconds") return seconds(value);
  if (u === "ms") return seconds(value / 1000);
  if (u.endsWith("/s")) return `${trim(value)} ${u}`;
  return u ? `${trim(value)} ${u}` : trim(value);
}

/** A short time of day (or date and time for ranges over a day). */
export function formatTime(ts, withDate = false) {
  const d = new Date(ts * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return withDate ? `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}` : time;
}

/** "3 min ago" and so on. */
export function ago(ts) {
  if (!ts) return "never";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** A series' label text: "name{k=v,...}" without the braces when there are none. */
export function labelText(labels) {
  const keys = Object.keys(labels || {}).sort();
  return keys.map((k) => `${k}=${labels[k]}`).join(", ");
}
