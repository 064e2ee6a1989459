// Form fields made from a plugin type's JSON Schema (GET /api/types), for the add form and
// the edit form of an instance, and the server's 400 messages shown beside the field.

import { el } from "./dom.js";

/** The kind of input a schema property gets: enum, boolean, integer, number, string, json. */
export function kindOf(prop) {
  if (prop.enum) return "enum";
  let types = prop.type ? [].concat(prop.type) : [];
  if (prop.anyOf) types = prop.anyOf.flatMap((x) => (x.enum ? ["enum"] : [].concat(x.type || [])));
  types = types.filter((t) => t !== "null");
  if (types.length === 1) {
    const t = types[0];
    if (t === "array" || t === "object") return "json";
    if (["boolean", "integer", "number", "string"].includes(t)) return t;
  }
  if (types.includes("string")) return "string-or-json";
  return "json";
}

export function isSecret(prop) {
  return Boolean(prop.writeOnly || prop["x-secret"] || prop.format === "password");
}

function fieldId(prefix, name) {
  return `${prefix}-${name.replace(/[^A-Za-z0-9_-]/g, "_")}`;
}

function shown(kind, value) {
  if (value === undefined || value === null) return "";
  if (kind === "enum" || kind === "boolean") return JSON.stringify(value);
  if (kind === "json" || (kind === "string-or-json" && typeof value !== "string")) return JSON.stringify(value, null, 2);
  return String(value);
}

/**
 * One labelled input for schema property `prop`, with its help text and a place for the
 * server's message. `value` (if given) fills it in; a secret is never filled in: left
 * empty, it keeps the value it has (`secretSet` says there is one).
 */
export function field(name, prop, { required = false, value, secretSet = false, prefix = "field" } = {}) {
  const id = fieldId(prefix, name);
  const kind = kindOf(prop);
  const secret = isSecret(prop);
  const help = el("small", { id: `${id}-help`, class: "help" },
    prop.description || "", prop.default !== undefined && prop.default !== null && !secret ? ` Default: ${JSON.stringify(prop.default)}.` : "",
    secretSet ? " Set; leave empty to keep it." : "");
  const error = el("span", { id: `${id}-error`, class: "field-error", role: "alert" });
  let input;
  const common = { id, name, "aria-describedby": `${id}-help ${id}-error` };
  if (kind === "enum" || kind === "boolean") {
    const values = kind === "boolean" ? [true, false] : prop.enum || prop.anyOf.flatMap((x) => x.enum || []);
    input = el("select", common, required ? null : el("option", { value: "", text: "(default)" }),
      ...values.map((v) => el("option", { value: JSON.stringify(v), text: String(v) })));
  } else if (kind === "json") {
    input = el("textarea", { ...common, rows: "3", placeholder: prop.type === "object" ? '{"key": "value"}' : '["a", "b"]' });
  } else if (kind === "integer" || kind === "number") {
    const min = prop.minimum ?? prop.exclusiveMinimum;
    input = el("input", { ...common, type: "number", step: kind === "integer" ? "1" : "any",
      min: min !== undefined ? String(min) : null, max: prop.maximum !== undefined ? String(prop.maximum) : null });
  } else {
    input = el("input", { ...common, type: secret ? "password" : "text", autocomplete: secret ? "new-password" : "off" });
  }
  input.required = required;
  if (!secret) input.value = shown(kind, value);
  const wrap = el("div", { class: "field", "data-field": name },
    el("label", { for: id }, name, required ? " (required)" : "", secret ? " (secret)" : ""), input, help, error);
  return { name, kind, secret, input, error, wrap, initial: secret ? "" : input.value };
}

/** The field's value for the API (undefined when left empty); throws on bad JSON. */
export function valueOf(f) {
  const raw = f.input.value;
  if (raw === "") return undefined;
  if (f.kind === "enum" || f.kind === "boolean") return JSON.parse(raw);
  if (f.kind === "integer" || f.kind === "number") return Number(raw);
  if (f.kind === "json") return JSON.parse(raw);
  if (f.kind === "string-or-json" && /^\s*[[{]/.test(raw)) return JSON.parse(raw);
  return raw;
}

export function clearErrors(fields, general) {
  general.textContent = "";
  for (const f of fields) { f.error.textContent = ""; f.wrap.classList.remove("invalid"); f.input.removeAttribute("aria-invalid"); }
}

export function showError(f, text) {
  f.error.textContent = text;
  f.wrap.classList.add("invalid");
  f.input.setAttribute("aria-invalid", "true");
  f.input.focus();
}

/** Show an API error beside the field its message names (`[plugins.<id>] <field>: ...`). */
export function showServerError(fields, general, message) {
  const m = /^\[plugins\.[^\]]*\]\s+([^:]+):\s*(.*)$/s.exec(message);
  const name = m && m[1].trim().split(/[.[\s]/)[0];
  const f = name && fields.find((x) => x.name === name);
  if (f) showError(f, message); else general.textContent = message;
}
