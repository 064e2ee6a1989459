// Add an instance (#/add): a form made from the type's JSON Schema (GET /api/types).

import { api } from "./api.js";
import { el, notice } from "./dom.js";
import { reloadInstance } from "./store.js";

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

function isSecret(prop) {
  return Boolean(prop.writeOnly || prop["x-secret"] || prop.format === "password");
}

function fieldId(name) {
  return `field-${name.replace(/[^A-Za-z0-9_-]/g, "_")}`;
}

function field(name, prop, required) {
  const id = fieldId(name);
  const kind = kindOf(prop);
  const help = el("small", { id: `${id}-help`, class: "help" },
    prop.description || "", prop.default !== undefined && prop.default !== null && !isSecret(prop) ? ` Default: ${JSON.stringify(prop.default)}.` : "");
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
    input = el("input", { ...common, type: isSecret(prop) ? "password" : "text", autocomplete: isSecret(prop) ? "new-password" : "off" });
  }
  input.required = required;
  const wrap = el("div", { class: "field", "data-field": name },
    el("label", { for: id }, name, required ? " (required)" : "", isSecret(prop) ? " (secret)" : ""), input, help, error);
  return { name, kind, input, error, wrap };
}

function valueOf(f) {
  const raw = f.input.value;
  if (raw === "") return undefined;
  if (f.kind === "enum" || f.kind === "boolean") return JSON.parse(raw);
  if (f.kind === "integer" || f.kind === "number") return Number(raw);
  if (f.kind === "json") return JSON.parse(raw);
  if (f.kind === "string-or-json" && /^\s*[[{]/.test(raw)) return JSON.parse(raw);
  return raw;
}

export function addForm(root) {
  const typeSelect = el("select", { id: "add-type", required: true });
  const fields = el("div", { class: "fields" });
  const general = el("p", { class: "field-error", role: "alert", id: "add-error" });
  const submit = el("button", { type: "submit", text: "Create" });
  const form = el("form", { class: "card add-form", novalidate: true }, el("label", { for: "add-type", text: "Type" }), typeSelect,
    el("small", { class: "help", id: "add-type-help" }), fields, general, submit);
  root.append(el("h1", { text: "Add an instance" }), form);
  let types = [];
  let current = [];

  function build() {
    const t = types.find((x) => x.type.name === typeSelect.value);
    if (!t) return;
    form.querySelector("#add-type-help").textContent = t.type.description || "";
    const schema = t.config_schema || { properties: {} };
    const required = new Set(schema.required || []);
    current = [
      field("id", { type: "string", description: "A slug, unique among instances (letters, digits, - and _)." }, true),
      field("interval", { type: "number", exclusiveMinimum: 0, description: "Seconds between runs.", default: t.type.default_interval }, false),
      field("timeout", { type: "number", exclusiveMinimum: 0, description: "Seconds a run may take." }, false),
      field("enabled", { type: "boolean", default: true, description: "Start it at once." }, false),
    ];
    current.forEach((f) => { f.common = true; });
    const options = Object.entries(schema.properties || {}).map(([name, prop]) => field(name, prop, required.has(name)));
    current.push(...options);
    fields.replaceChildren(
      el("fieldset", {}, el("legend", { text: "Instance" }), ...current.filter((f) => f.common).map((f) => f.wrap)),
      el("fieldset", {}, el("legend", { text: `Options of ${t.type.title || t.type.name}` }),
        ...(options.length ? options.map((f) => f.wrap) : [el("p", { text: "This type has no options." })])));
  }

  function clearErrors() {
    general.textContent = "";
    for (const f of current) { f.error.textContent = ""; f.wrap.classList.remove("invalid"); f.input.removeAttribute("aria-invalid"); }
  }

  function showError(f, text) {
    f.error.textContent = text;
    f.wrap.classList.add("invalid");
    f.input.setAttribute("aria-invalid", "true");
    f.input.focus();
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors();
    const body = { type: typeSelect.value, options: {} };
    for (const f of current) {
      let v;
      try { v = valueOf(f); } catch (x) { showError(f, `not JSON: ${x.message}`); return; }
      if (v === undefined) continue;
      if (f.common) body[f.name] = v; else body.options[f.name] = v;
    }
    submit.disabled = true;
    try {
      const made = await api("/api/plugins", { method: "POST", body });
      await reloadInstance(made.id);
      location.hash = `#/instance/${encodeURIComponent(made.id)}`;
    } catch (error) {
      const m = /^\[plugins\.[^\]]*\]\s+([^:]+):\s*(.*)$/s.exec(error.message);
      const name = m && m[1].trim().split(/[.[\s]/)[0];
      const f = name && current.find((x) => x.name === name);
      if (f) showError(f, error.message); else general.textContent = error.message;
    } finally {
      submit.disabled = false;
    }
  });
  typeSelect.addEventListener("change", build);

  api("/api/types").then((answer) => {
    types = answer.types.sort((a, b) => a.type.name.localeCompare(b.type.name));
    typeSelect.replaceChildren(...types.map((t) => el("option", { value: t.type.name, text: `${t.type.title} (${t.type.name})` })));
    const wanted = new URLSearchParams(location.hash.split("?")[1] || "").get("type");
    if (wanted) typeSelect.value = wanted;
    build();
  }, (error) => form.replaceChildren(notice(`Could not load the types: ${error.message}`, "error")));
  return () => {};
}
