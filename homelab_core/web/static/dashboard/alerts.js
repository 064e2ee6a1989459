// The alerts page (#/alerts): current and recent alerts, silences, notifiers.

import { api } from "./api.js";
import { el, notice } from "./dom.js";
import { ago, formatTime, formatValue } from "./format.js";
import { onChange, refreshAlerts, store } from "./store.js";

const DURATIONS = [["1h", 3600], ["2h", 7200], ["8h", 28800], ["1d", 86400], ["7d", 604800]];

export function alertsPage(root) {
  const current = el("div");
  const recent = el("div");
  const silences = el("div");
  const notifiers = el("div");
  const feedback = el("p", { class: "feedback", role: "status", "aria-live": "polite" });
  root.append(el("h1", { text: "Alerts" }), feedback,
    el("section", { class: "card", "aria-labelledby": "cur-h" }, el("h2", { id: "cur-h", text: "Current alerts" }), current),
    el("section", { class: "card", "aria-labelledby": "sil-h" }, el("h2", { id: "sil-h", text: "Silences" }), silences),
    el("section", { class: "card", "aria-labelledby": "not-h" }, el("h2", { id: "not-h", text: "Notifiers" }), notifiers),
    el("section", { class: "card", "aria-labelledby": "rec-h" }, el("h2", { id: "rec-h", text: "Recent transitions" }), recent));

  function silenceForm(a, index) {
    const id = `silence-${index}`;
    const duration = el("select", { id: `${id}-duration` }, ...DURATIONS.map(([t, s]) => el("option", { value: String(s), text: t })));
    const comment = el("input", { id: `${id}-comment`, type: "text", placeholder: "why" });
    const matchers = { rule: a.rule };
    if (a.labels?.instance) matchers.instance = a.labels.instance;
    return el("form", { class: "silence-form", "aria-label": `Silence ${a.rule}${matchers.instance ? ` on ${matchers.instance}` : ""}`, onsubmit: async (e) => {
      e.preventDefault();
      try {
        await api("/api/silences", { method: "POST", body: { matchers, duration: Number(duration.value), comment: comment.value, author: "dashboard" } });
        feedback.textContent = `Silenced ${a.rule}${matchers.instance ? ` on ${matchers.instance}` : ""}.`;
        refreshAlerts();
        loadSilences();
      } catch (error) { feedback.textContent = `Could not silence: ${error.message}`; }
    } }, el("label", { for: `${id}-duration`, text: "for" }), duration,
    el("label", { for: `${id}-comment`, text: "comment" }), comment, el("button", { type: "submit", text: "Silence" }));
  }

  function renderCurrent() {
    const alerts = store.alerts;
    if (!alerts.length) { current.replaceChildren(el("p", { text: "No alert is pending, firing or recently resolved." })); return; }
    current.replaceChildren(el("ul", { class: "alert-list" }, ...alerts.map((a, i) => el("li", { class: `alert state-${a.state} sev-${a.severity}` },
      el("div", {}, el("span", { class: `badge alert-${a.state}`, text: a.state }), " ", el("strong", { text: a.rule }), ` (${a.severity}) `,
        a.instance_id ? el("a", { href: `#/instance/${encodeURIComponent(a.instance_id)}`, text: a.instance_id }) : "",
        a.silenced ? el("span", { class: "badge", text: `silenced by ${a.silenced_by.join(", ")}` }) : ""),
      el("p", { text: `${a.summary || ""}${a.value !== null ? ` · value ${formatValue(a.value, "")}` : ""} · since ${ago(a.active_since)}` }),
      a.state !== "resolved" && !a.silenced ? silenceForm(a, i) : null))));
  }

  async function loadSilences() {
    try {
      const answer = await api("/api/silences");
      silences.replaceChildren(answer.silences.length ? el("ul", {}, ...answer.silences.map((s) => el("li", { "data-silence": s.id },
        `${Object.entries(s.matchers).map(([k, v]) => `${k}=${v}`).join(", ")} until ${formatTime(s.ends_at, true)}`,
        s.comment ? ` — ${s.comment}` : "", s.author ? ` (${s.author})` : "", " ",
        el("button", { type: "button", text: "Remove", "aria-label": `Remove silence ${s.id}`, onclick: async () => {
          try { await api(`/api/silences/${encodeURIComponent(s.id)}`, { method: "DELETE" }); refreshAlerts(); loadSilences(); } catch (error) { feedback.textContent = error.message; }
        } })))) : el("p", { text: "No silence." }));
    } catch (error) { silences.replaceChildren(notice(error.message, "error")); }
  }

  async function loadNotifiers() {
    try {
      const answer = await api("/api/notifiers");
      notifiers.replaceChildren(answer.notifiers.length ? el("ul", {}, ...answer.notifiers.map((n) => {
        const result = el("span", { class: "test-result", role: "status" });
        return el("li", {}, el("strong", { text: n.id }), ` (${n.type}) sent ${n.sent}, failed ${n.failed}, queued ${n.queued}`,
          n.last_error ? ` · last error: ${n.last_error}` : "", " ",
          el("button", { type: "button", text: "Send a test", "aria-label": `Send a test message with ${n.id}`, onclick: async () => {
            result.textContent = "sending…";
            try { const r = await api(`/api/notifiers/${encodeURIComponent(n.id)}/test`, { method: "POST" }); result.textContent = r.ok ? "ok" : `failed: ${r.error}`; } catch (error) { result.textContent = error.message; }
          } }), " ", result);
      })) : el("p", { text: "No notifier is configured." }));
    } catch (error) { notifiers.replaceChildren(notice(error.message, "error")); }
  }

  async function loadRecent() {
    try {
      const answer = await api("/api/alerts/history?limit=50");
      recent.replaceChildren(answer.events.length ? el("ul", {}, ...answer.events.map((x) => el("li", {},
        `${formatTime(x.ts, true)} ${x.rule_id}${x.labels?.instance ? ` on ${x.labels.instance}` : ""}: ${x.old_state} → ${x.new_state}`,
        x.summary ? ` — ${x.summary}` : "")))
        : el("p", { text: "No transition yet." }));
    } catch (error) { recent.replaceChildren(notice(error.message, "error")); }
  }

  renderCurrent();
  refreshAlerts();
  loadSilences();
  loadNotifiers();
  loadRecent();
  const stop = onChange((ids, alerts) => { if (alerts) { renderCurrent(); loadRecent(); } });
  return stop;
}
