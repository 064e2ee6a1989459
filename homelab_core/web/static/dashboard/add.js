// Add an instance (#/add): a form made from the type's JSON Schema (GET /api/types).

import { api } from "./api.js";
import { el, notice } from "./dom.js";
import { clearErrors, field, showError, showServerError, valueOf } from "./form.js";
import { reloadInstance } from "./store.js";

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
      field("id", { type: "string", description: "A slug, unique among instances (letters, digits, - and _)." }, { required: true }),
      field("interval", { type: "number", exclusiveMinimum: 0, description: "Seconds between runs.", default: t.type.default_interval }),
      field("timeout", { type: "number", exclusiveMinimum: 0, description: "Seconds a run may take." }),
      field("enabled", { type: "boolean", default: true, description: "Start it at once." }),
    ];
    current.forEach((f) => { f.common = true; });
    const options = Object.entries(schema.properties || {}).map(([name, prop]) => field(name, prop, { required: required.has(name) }));
    current.push(...options);
    fields.replaceChildren(
      el("fieldset", {}, el("legend", { text: "Instance" }), ...current.filter((f) => f.common).map((f) => f.wrap)),
      el("fieldset", {}, el("legend", { text: `Options of ${t.type.title || t.type.name}` }),
        ...(options.length ? options.map((f) => f.wrap) : [el("p", { text: "This type has no options." })])));
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(current, general);
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
      showServerError(current, general, error.message);
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
