// The public status page: fetches <prefix>/api/status and shows it. Every value from the
// server goes into the page as text (textContent), never as markup.

const prefix = document.body.dataset.prefix || "";
const REFRESH_MS = 60_000;
const WORDS = { up: "Up", down: "Down", unknown: "Unknown" };
const WINDOW_NAMES = { "24h": "24 hours", "7d": "7 days", "30d": "30 days" };

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function percent(value) {
  if (value === null || value === undefined) return "–";
  if (value === 100 || value === 0) return `${value}%`;
  return `${value.toFixed(value >= 99.9 || value < 0.1 ? 3 : 2)}%`;
}

function moment(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return new Date(seconds * 1000).toLocaleString();
}

function instanceItem(item) {
  const li = element("li");
  li.dataset.instance = item.id;
  li.dataset.status = item.status;
  const row = element("div", "row");
  row.append(element("span", "name", item.id));
  const badge = element("span", `badge ${WORDS[item.status] ? item.status : "unknown"}`,
    WORDS[item.status] || WORDS.unknown);
  badge.title = `${item.state} since ${moment(item.since)}`;
  row.append(badge);
  li.append(row);
  li.append(element("div", "kind", `${item.title} · ${item.category}`));
  const list = element("dl", "uptime");
  list.setAttribute("aria-label", `Uptime of ${item.id}`);
  for (const window of item.uptime) {
    const cell = element("div");
    cell.append(element("dt", "", WINDOW_NAMES[window.window] || window.window));
    const value = element("dd", "", percent(window.percent));
    value.dataset.window = window.window;
    cell.append(value);
    list.append(cell);
  }
  li.append(list);
  return li;
}

function incidentItem(incident) {
  const li = element("li", incident.severity);
  const row = element("div", "row");
  row.append(element("span", "name", incident.summary || incident.rule));
  row.append(element("span", "kind", `${incident.instance_id} · ${incident.severity}`));
  li.append(row);
  if (incident.since) li.append(element("div", "when", `Since ${moment(incident.since)}`));
  return li;
}

function render(page) {
  document.title = page.title;
  document.getElementById("title").textContent = page.title;
  const description = document.getElementById("description");
  description.textContent = page.description;
  description.hidden = !page.description;

  const down = page.instances.filter((i) => i.status === "down").length;
  const overall = document.getElementById("overall");
  if (page.instances.length === 0) {
    overall.textContent = "No services are shown.";
    overall.className = "overall unknown";
  } else if (down === 0) {
    overall.textContent = "All services are up.";
    overall.className = "overall up";
  } else {
    overall.textContent = `${down} of ${page.instances.length} services down.`;
    overall.className = "overall down";
  }

  document.getElementById("instances").replaceChildren(...page.instances.map(instanceItem));
  document.getElementById("incidents").replaceChildren(...page.incidents.map(incidentItem));
  document.getElementById("incidents-section").hidden = page.incidents.length === 0;
  document.getElementById("updated").textContent = `Updated ${moment(page.generated_at)}`;
  document.body.dataset.loaded = "true";
}

async function refresh() {
  try {
    const response = await fetch(`${prefix}/api/status`, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`the server answered ${response.status}`);
    render(await response.json());
  } catch (error) {
    const overall = document.getElementById("overall");
    overall.textContent = `Cannot load the status: ${error.message}`;
    overall.className = "overall unknown error";
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
