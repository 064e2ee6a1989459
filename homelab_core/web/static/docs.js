/* Homelab Core API docs: renders the server's OpenAPI description; no dependencies.
 * Every string from the document reaches the page through textContent or attributes. */
(function () {
  "use strict";

  var METHODS = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];
  var TOKEN_KEY = "homelab-docs-token";
  var body = document.body;
  var openapiUrl = body.getAttribute("data-openapi") || "openapi.json";
  // The API's URL prefix: the static folder is served at <prefix>/docs/static.
  var prefix = (body.getAttribute("data-static") || "").replace(/\/docs\/static\/?$/, "");
  var spec = null;
  var usedIds = {};

  /* A DOM element; attributes set with setAttribute, children appended as text nodes. */
  function h(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) return;
      node.setAttribute(key, value === true ? "" : String(value));
    });
    for (var i = 2; i < arguments.length; i++) add(node, arguments[i]);
    return node;
  }

  function add(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) child.forEach(function (c) { add(node, c); });
    else node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }

  function uniqueId(text) {
    var base = "op-" + String(text).replace(/[^A-Za-z0-9_-]+/g, "-");
    var id = base;
    for (var n = 2; usedIds[id]; n++) id = base + "-" + n;
    usedIds[id] = true;
    return id;
  }

  function json(value) {
    try { return JSON.stringify(value); } catch (e) { return String(value); }
  }

  /* Text with `code` or ``code`` spans as nodes (the rest stays plain text). */
  function inline(text) {
    return String(text).split(/``?([^`]+)``?/).map(function (part, i) {
      return i % 2 ? h("code", {}, part) : part;
    });
  }

  /* Description text: paragraphs split on blank lines. */
  function prose(text, cls) {
    if (!text) return null;
    return h("div", { class: cls || "prose" }, String(text).split(/\n\s*\n/).map(function (para) {
      return h("p", {}, inline(para));
    }));
  }

  /* ---- schemas ---- */

  function refName(ref) {
    return decodeURIComponent(String(ref).split("/").pop().replace(/~1/g, "/").replace(/~0/g, "~"));
  }

  function resolve(ref) {
    var match = /^#\/components\/schemas\/(.+)$/.exec(String(ref));
    var schemas = (spec.components && spec.components.schemas) || {};
    if (!match) return null;
    var name = refName(ref);
    return Object.prototype.hasOwnProperty.call(schemas, name) ? schemas[name] : null;
  }

  function isNull(s) {
    return s && (s.type === "null" || (Array.isArray(s.enum) && s.enum.length === 1 && s.enum[0] === null));
  }

  /* A short type description such as "array of PluginOut" or "string | null". */
  function typeLabel(s, depth) {
    depth = depth || 0;
    if (!s || typeof s !== "object") return s === false ? "never" : "any";
    if (depth > 6) return "…";
    if (s.$ref) return refName(s.$ref);
    var alts = s.anyOf || s.oneOf;
    if (alts) return alts.map(function (a) { return typeLabel(a, depth + 1); }).join(" | ");
    if (s.allOf) return s.allOf.map(function (a) { return typeLabel(a, depth + 1); }).join(" & ");
    if (Array.isArray(s.enum)) return s.enum.map(json).join(" | ");
    if ("const" in s) return json(s["const"]);
    var type = Array.isArray(s.type) ? s.type.join(" | ") : s.type;
    if (type === "array") {
      var item = typeLabel(s.items, depth + 1);
      return "array of " + (/[|&]/.test(item) ? "(" + item + ")" : item);
    }
    if (type === "object" || (!type && s.properties)) {
      if (!s.properties && s.additionalProperties && typeof s.additionalProperties === "object") {
        return "map of string → " + typeLabel(s.additionalProperties, depth + 1);
      }
      return s.title ? "object " + s.title : "object";
    }
    if (!type) return "any";
    return s.format ? type + " (" + s.format + ")" : type;
  }

  /* Facts worth showing beside a type: default, limits, pattern. */
  function facts(s) {
    var out = [];
    if (!s || typeof s !== "object") return out;
    if ("default" in s && s["default"] !== null) out.push("default " + json(s["default"]));
    [["minimum", "≥ "], ["maximum", "≤ "], ["exclusiveMinimum", "> "], ["exclusiveMaximum", "< "],
      ["minLength", "min length "], ["maxLength", "max length "], ["minItems", "min items "],
      ["maxItems", "max items "], ["pattern", "pattern "]].forEach(function (pair) {
      if (pair[0] in s && typeof s[pair[0]] !== "boolean") out.push(pair[1] + s[pair[0]]);
    });
    return out;
  }

  /* The nested structure of a schema (properties, items, alternatives), or null if flat. */
  function structure(s, seen, depth) {
    if (!s || typeof s !== "object" || depth > 8) return null;
    if (s.$ref) {
      var target = resolve(s.$ref);
      if (!target) return h("p", { class: "muted note" }, refName(s.$ref) + ": not described in this document.");
      if (seen.indexOf(s.$ref) >= 0) return h("p", { class: "muted note" }, refName(s.$ref) + " (recursive, see above)");
      return structure(target, seen.concat([s.$ref]), depth);
    }
    var parts = [];
    var alts = s.anyOf || s.oneOf;
    if (alts) {
      var real = alts.filter(function (a) { return !isNull(a); });
      if (real.length === 1) return structure(real[0], seen, depth);
      real.forEach(function (alt, i) {
        var inner = structure(alt, seen, depth + 1);
        if (inner) parts.push(h("div", { class: "alt" }, h("span", { class: "alt-label" }, (s.anyOf ? "any of" : "one of") + " #" + (i + 1) + ": " + typeLabel(alt)), inner));
      });
    }
    (s.allOf || []).forEach(function (part) { parts.push(structure(part, seen, depth + 1)); });
    if (s.properties) {
      var required = s.required || [];
      var list = h("ul", { class: "props" });
      Object.keys(s.properties).forEach(function (name) {
        var prop = s.properties[name];
        var shown = prop && prop.$ref ? resolve(prop.$ref) || prop : prop;
        list.appendChild(h("li", {},
          h("code", { class: "prop-name" }, name), " ",
          required.indexOf(name) >= 0 ? h("span", { class: "badge req" }, "required") : null, " ",
          h("span", { class: "type" }, typeLabel(prop)),
          facts(prop).map(function (f) { return [" ", h("span", { class: "fact" }, f)]; }),
          prose(prop && prop.description || (shown && shown.description), "prose small"),
          structure(prop, seen, depth + 1)));
      });
      parts.push(list);
    }
    if (s.items) {
      var items = structure(s.items, seen, depth + 1);
      if (items) parts.push(h("div", { class: "nested" }, h("span", { class: "alt-label" }, "each item:"), items));
    }
    if (s.additionalProperties && typeof s.additionalProperties === "object") {
      var values = structure(s.additionalProperties, seen, depth + 1);
      if (values) parts.push(h("div", { class: "nested" }, h("span", { class: "alt-label" }, "each value:"), values));
    }
    parts = parts.filter(Boolean);
    return parts.length ? h("div", { class: "structure" }, parts) : null;
  }

  function schemaView(s) {
    var target = s && s.$ref ? resolve(s.$ref) : s;
    return h("div", { class: "schema" },
      h("div", {}, h("span", { class: "type" }, typeLabel(s)),
        facts(s).map(function (f) { return [" ", h("span", { class: "fact" }, f)]; })),
      prose(target && target.description, "prose small"),
      structure(s, [], 0));
  }

  /* An example value for a request body, built from its schema. */
  function example(s, seen) {
    if (!s || typeof s !== "object" || seen.length > 6) return null;
    if ("example" in s) return s.example;
    if (Array.isArray(s.examples) && s.examples.length) return s.examples[0];
    if ("default" in s) return s["default"];
    if (s.$ref) {
      var target = resolve(s.$ref);
      return target && seen.indexOf(s.$ref) < 0 ? example(target, seen.concat([s.$ref])) : {};
    }
    var alts = (s.anyOf || s.oneOf || []).filter(function (a) { return !isNull(a); });
    if (alts.length) return example(alts[0], seen);
    if (s.allOf) return Object.assign.apply(null, [{}].concat(s.allOf.map(function (a) { return example(a, seen) || {}; })));
    if (Array.isArray(s.enum)) return s.enum[0];
    var type = Array.isArray(s.type) ? s.type[0] : s.type;
    if (type === "array") return [example(s.items, seen.concat(["[]"]))];
    if (type === "string") return "";
    if (type === "integer" || type === "number") return 0;
    if (type === "boolean") return false;
    if (type === "object" || s.properties) {
      var out = {};
      Object.keys(s.properties || {}).forEach(function (k) { out[k] = example(s.properties[k], seen.concat(["."])); });
      return out;
    }
    return null;
  }

  /* ---- operations ---- */

  function groupOf(path, op) {
    if (op.tags && op.tags.length) return String(op.tags[0]);
    var rest = prefix && path.indexOf(prefix + "/") === 0 ? path.slice(prefix.length) : path;
    var segs = rest.split("/").filter(Boolean);
    if (segs[0] === "api" && segs.length > 1) segs.shift();
    var first = segs[0] || "root";
    return /^\{.*\}$/.test(first) ? "root" : first;
  }

  function securityView(op) {
    var reqs = op.security || spec.security;
    if (!reqs) return null;
    var schemes = (spec.components && spec.components.securitySchemes) || {};
    var text = !reqs.length ? "none (public)" : reqs.map(function (req) {
      var names = Object.keys(req);
      if (!names.length) return "none";
      return names.map(function (name) {
        var sch = schemes[name] || {};
        var kind = sch.type === "http" ? "HTTP " + (sch.scheme || "") : sch.type || "unknown scheme";
        return name + " (" + kind + (req[name] && req[name].length ? "; scopes " + req[name].join(", ") : "") + ")";
      }).join(" and ");
    }).join(", or ");
    return h("p", { class: "security" }, h("strong", {}, "Security: "), text);
  }

  function paramsView(params) {
    if (!params.length) return null;
    var described = params.some(function (p) { return p.description || (p.schema && p.schema.description); });
    var rows = params.map(function (p) {
      return h("tr", {},
        h("td", {}, h("code", {}, p.name)),
        h("td", {}, p["in"]),
        h("td", {}, h("span", { class: "type" }, typeLabel(p.schema)),
          facts(p.schema).map(function (f) { return [" ", h("span", { class: "fact" }, f)]; })),
        h("td", {}, p.required ? "yes" : "no"),
        described ? h("td", {}, prose(p.description || (p.schema && p.schema.description), "prose small") || "") : null);
    });
    return h("div", { class: "section" }, h("h4", {}, "Parameters"),
      h("div", { class: "scroll" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Name", "In", "Type", "Required", described ? "Description" : null].filter(Boolean).map(function (t) { return h("th", { scope: "col" }, t); }))),
        h("tbody", {}, rows))));
  }

  function contentView(content) {
    return Object.keys(content || {}).map(function (type) {
      var media = content[type] || {};
      return h("div", { class: "media" }, h("span", { class: "media-type" }, type),
        media.schema ? schemaView(media.schema) : h("p", { class: "muted" }, "No schema."));
    });
  }

  function bodyView(rb) {
    if (!rb) return null;
    return h("div", { class: "section" },
      h("h4", {}, "Request body", rb.required ? " (required)" : ""),
      prose(rb.description, "prose small"), contentView(rb.content));
  }

  /* Responses; statuses with the same body (errors, typically) share one schema view. */
  function responsesView(responses) {
    var codes = Object.keys(responses || {});
    if (!codes.length) return null;
    var shared = [];
    codes.forEach(function (code) {
      var r = responses[code] || {};
      var key = r.content ? json(r.content) : "";
      var same = key && shared.filter(function (g) { return g.key === key; })[0];
      if (same) same.codes.push(code);
      else shared.push({ key: key, codes: [code], content: r.content });
    });
    return h("div", { class: "section" }, h("h4", {}, "Responses"), shared.map(function (g) {
      return h("div", { class: "response" },
        h("ul", { class: "codes" }, g.codes.map(function (code) {
          var cls = /^2/.test(code) ? "ok" : /^[45]/.test(code) ? "bad" : "other";
          return h("li", {}, h("span", { class: "status " + cls }, code), " ", inline(responses[code].description || ""));
        })),
        g.content ? contentView(g.content) : h("p", { class: "muted small" }, "No body described."));
    }));
  }

  function field(id, label, control, hint) {
    return h("div", { class: "field" }, h("label", { for: id }, label, hint ? h("span", { class: "muted" }, " " + hint) : null), control);
  }

  function paramControl(id, p) {
    var s = p.schema || {};
    var alts = (s.anyOf || s.oneOf || [s]).filter(function (a) { return !isNull(a); });
    var one = alts.length === 1 ? (alts[0].$ref ? resolve(alts[0].$ref) || {} : alts[0]) : {};
    var choices = Array.isArray(one.enum) ? one.enum : one.type === "boolean" ? [true, false] : null;
    if (choices) {
      var select = h("select", { id: id, name: p.name, required: !!p.required });
      select.appendChild(h("option", { value: "" }, p.required ? "choose…" : "(not set)"));
      choices.forEach(function (c) { select.appendChild(h("option", { value: String(c) }, String(c))); });
      return select;
    }
    var placeholder = "default" in s && s["default"] !== null ? String(s["default"]) : typeLabel(s);
    return h("input", { id: id, name: p.name, type: "text", required: !!p.required, placeholder: placeholder, spellcheck: "false" });
  }

  function tryForm(id, method, path, op, params) {
    var form = h("form", { class: "try-it", "aria-label": "Try " + method.toUpperCase() + " " + path });
    form.appendChild(h("h4", {}, "Try it"));
    var inputs = params.filter(function (p) { return ["path", "query", "header"].indexOf(p["in"]) >= 0; });
    var controls = inputs.map(function (p, i) {
      var control = paramControl(id + "-p" + i, p);
      form.appendChild(field(id + "-p" + i, p.name, control, "(" + p["in"] + (p.required ? ", required" : "") + ")"));
      return control;
    });
    var rb = op.requestBody;
    var types = rb && rb.content ? Object.keys(rb.content) : [];
    var bodyType = types.filter(function (t) { return /json/.test(t); })[0] || types[0];
    var textarea = null;
    if (bodyType) {
      var ex = example(rb.content[bodyType].schema, []);
      textarea = h("textarea", { id: id + "-body", rows: 5, spellcheck: "false" });
      textarea.value = /json/.test(bodyType) ? JSON.stringify(ex, null, 2) : "";
      form.appendChild(field(id + "-body", "Request body", textarea, "(" + bodyType + ")"));
    }
    var button = h("button", { type: "submit", class: "send" }, "Send " + method.toUpperCase() + " request");
    var result = h("div", { class: "result", "aria-live": "polite" });
    form.appendChild(h("div", { class: "row" }, button));
    form.appendChild(result);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var url = path;
      var query = new URLSearchParams();
      var headers = { Accept: "application/json, text/plain;q=0.9, */*;q=0.5" };
      inputs.forEach(function (p, i) {
        var value = controls[i].value;
        if (p["in"] === "path") url = url.split("{" + p.name + "}").join(encodeURIComponent(value));
        else if (value !== "" && p["in"] === "query") query.append(p.name, value);
        else if (value !== "") headers[p.name] = value;
      });
      var qs = query.toString();
      if (qs) url += "?" + qs;
      var token = document.getElementById("token").value.trim();
      if (token) headers.Authorization = "Bearer " + token;
      var init = { method: method.toUpperCase(), headers: headers, credentials: "same-origin" };
      if (textarea && textarea.value.trim()) {
        headers["Content-Type"] = bodyType;
        init.body = textarea.value;
      } else if (init.method !== "GET" && init.method !== "HEAD") {
        // The server refuses changes that a form of another site could send: say JSON.
        headers["Content-Type"] = "application/json";
      }
      button.disabled = true;
      result.textContent = "Sending " + init.method + " " + url + " …";
      var started = performance.now();
      fetch(url, init).then(function (response) {
        return response.text().then(function (text) { showResult(result, init.method, url, response, text, started); });
      }).catch(function (error) {
        result.textContent = "";
        add(result, h("p", { class: "status bad" }, "Request failed: " + error.message));
      }).then(function () { button.disabled = false; });
    });
    return form;
  }

  function showResult(box, method, url, response, text, started) {
    var pretty = text;
    try { pretty = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON: shown as is */ }
    if (pretty.length > 200000) pretty = pretty.slice(0, 200000) + "\n… (truncated)";
    var headerLines = [];
    response.headers.forEach(function (value, name) { headerLines.push(name + ": " + value); });
    box.textContent = "";
    add(box, [
      h("p", {}, h("code", {}, method + " " + url), " → ",
        h("span", { class: "status " + (response.ok ? "ok" : "bad") }, response.status + " " + response.statusText),
        h("span", { class: "muted" }, " in " + Math.round(performance.now() - started) + " ms")),
      h("h5", {}, "Response headers"), h("pre", { class: "headers" }, headerLines.sort().join("\n")),
      h("h5", {}, "Response body"), h("pre", { class: "body", tabindex: 0 }, pretty || "(empty)")
    ]);
  }

  function operationView(path, method, op, pathItem) {
    var id = uniqueId(op.operationId || method + path);
    var params = (pathItem.parameters || []).concat(op.parameters || []).map(function (p) {
      return p && p.$ref ? resolveAny(p.$ref) || { name: refName(p.$ref), "in": "?" } : p;
    });
    var panel = h("div", { class: "op-body", id: id + "-body", hidden: true },
      op.description && op.description !== op.summary ? prose(op.description) : null,
      op.deprecated ? h("p", { class: "status bad" }, "Deprecated.") : null,
      securityView(op), paramsView(params), bodyView(op.requestBody),
      responsesView(op.responses), tryForm(id, method, path, op, params));
    var toggle = h("button", { type: "button", class: "op-toggle", "aria-expanded": "false", "aria-controls": id + "-body" },
      h("span", { class: "method m-" + method }, method.toUpperCase()), " ",
      h("code", { class: "path" }, path), " ",
      h("span", { class: "summary" }, inline(op.summary || "")));
    toggle.addEventListener("click", function () { setOpen(section, toggle.getAttribute("aria-expanded") !== "true"); });
    var section = h("section", { class: "op", id: id }, h("h3", {}, toggle), panel);
    return section;
  }

  function resolveAny(ref) {
    var node = spec;
    String(ref).replace(/^#\//, "").split("/").forEach(function (key) {
      node = node && node[decodeURIComponent(key).replace(/~1/g, "/").replace(/~0/g, "~")];
    });
    return node || null;
  }

  function setOpen(section, open) {
    section.querySelector(".op-toggle").setAttribute("aria-expanded", open ? "true" : "false");
    section.querySelector(".op-body").hidden = !open;
  }

  /* ---- page ---- */

  function render() {
    var info = spec.info || {};
    document.title = (info.title || "API") + " — API docs";
    document.getElementById("api-title").textContent = info.title || "API";
    document.getElementById("api-meta").textContent = "Version " + (info.version || "?") + " · OpenAPI " + (spec.openapi || spec.swagger || "?") + " · ";
    add(document.getElementById("api-meta"), h("a", { href: openapiUrl }, "raw description (JSON)"));
    add(document.getElementById("api-description"), prose(info.description));
    var schemes = (spec.components && spec.components.securitySchemes) || {};
    var names = Object.keys(schemes);
    document.getElementById("auth-note").textContent = names.length
      ? "Security schemes: " + names.map(function (n) { return n + " (" + (schemes[n].type === "http" ? "HTTP " + schemes[n].scheme : schemes[n].type) + ")"; }).join(", ") +
        ". The token is sent as “Authorization: Bearer …” with every Try-it request."
      : "The token, if set, is sent as “Authorization: Bearer …” with every Try-it request.";

    var groups = {};
    Object.keys(spec.paths || {}).forEach(function (path) {
      var item = spec.paths[path] || {};
      METHODS.forEach(function (method) {
        if (!item[method]) return;
        var group = groupOf(path, item[method]);
        (groups[group] = groups[group] || []).push(operationView(path, method, item[method], item));
      });
    });
    var main = document.getElementById("operations");
    var status = document.getElementById("status");
    var toc = h("ul", {});
    var groupNames = Object.keys(groups).sort();
    groupNames.forEach(function (name) {
      var gid = uniqueId("group-" + name);
      toc.appendChild(h("li", {}, h("a", { href: "#" + gid }, name), h("span", { class: "muted" }, " (" + groups[name].length + ")")));
      main.appendChild(h("section", { class: "group", id: gid, "aria-labelledby": gid + "-h" },
        h("h2", { id: gid + "-h" }, name), groups[name]));
    });
    var nav = document.getElementById("toc");
    add(nav, [h("h2", { class: "visually-hidden" }, "Groups"), toc,
      h("div", { class: "row" },
        h("button", { type: "button", id: "expand-all" }, "Expand all"),
        h("button", { type: "button", id: "collapse-all" }, "Collapse all"))]);
    document.getElementById("expand-all").addEventListener("click", function () { toggleAll(true); });
    document.getElementById("collapse-all").addEventListener("click", function () { toggleAll(false); });
    status.textContent = groupNames.length ? "" : "The description has no operations.";
    status.hidden = !!groupNames.length;
    openFromHash();
  }

  function toggleAll(open) {
    Array.prototype.forEach.call(document.querySelectorAll("section.op"), function (s) { setOpen(s, open); });
  }

  function openFromHash() {
    var id = decodeURIComponent(location.hash.slice(1));
    var target = id && document.getElementById(id);
    if (target && target.classList.contains("op")) {
      setOpen(target, true);
      target.scrollIntoView();
    }
  }

  function setupToken() {
    var input = document.getElementById("token");
    try { input.value = sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { /* storage disabled */ }
    input.addEventListener("input", function () {
      try {
        if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
        else sessionStorage.removeItem(TOKEN_KEY);
      } catch (e) { /* storage disabled: the token lives in the field only */ }
    });
    document.getElementById("token-clear").addEventListener("click", function () {
      input.value = "";
      try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* ignored */ }
    });
    document.getElementById("auth").addEventListener("submit", function (e) { e.preventDefault(); });
  }

  function setupWebSocketNote() {
    var path = prefix + "/ws/metrics";
    document.getElementById("ws-path").textContent = path;
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    add(document.getElementById("ws-url"), [" (here: ", h("code", {}, scheme + "//" + location.host + path), ")"]);
  }

  setupToken();
  setupWebSocketNote();
  window.addEventListener("hashchange", openFromHash);
  var specHeaders = { Accept: "application/json" };
  if (document.getElementById("token").value) specHeaders.Authorization = "Bearer " + document.getElementById("token").value.trim();
  fetch(openapiUrl, { headers: specHeaders, credentials: "same-origin" })
    .then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status + " " + response.statusText);
      return response.json();
    })
    .then(function (doc) { spec = doc; render(); })
    .catch(function (error) {
      var status = document.getElementById("status");
      status.textContent = "Could not load the API description from " + openapiUrl + ": " + error.message;
      status.className = "error";
    });
})();
