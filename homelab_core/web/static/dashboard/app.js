// The dashboard (see docs/dashboard.md): a router over hash paths, the views, and the
// connection state in the header.

import { addForm } from "./add.js";
import { alertsPage } from "./alerts.js";
import { el, notice } from "./dom.js";
import { instancePage } from "./instance.js";
import { overview } from "./overview.js";
import { start } from "./store.js";

const app = document.getElementById("app");
const connection = document.getElementById("connection");
let cleanup = null;

function setConnection(state) {
  connection.textContent = state;
  connection.className = `connection conn-${state}`;
  document.body.dataset.connection = state;
}

function route() {
  const hash = location.hash.replace(/^#/, "").split("?")[0] || "/";
  if (cleanup) { cleanup(); cleanup = null; }
  app.replaceChildren();
  for (const a of document.querySelectorAll("header nav a")) {
    const target = a.getAttribute("href").slice(1);
    if ((target === "/" && hash === "/") || (target !== "/" && hash.startsWith(target))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const instance = hash.match(/^\/instance\/(.+)$/);
  try {
    if (instance) cleanup = instancePage(app, decodeURIComponent(instance[1]));
    else if (hash === "/add") cleanup = addForm(app);
    else if (hash === "/alerts") cleanup = alertsPage(app);
    else if (hash === "/") cleanup = overview(app);
    else app.append(el("h1", { text: "Not found" }), el("p", {}, el("a", { href: "#/", text: "Back to the overview" })));
  } catch (error) {
    app.append(notice(String(error.message || error), "error"));
  }
  document.title = `Homelab · ${app.querySelector("h1")?.textContent || "dashboard"}`;
}

window.addEventListener("hashchange", route);
start(setConnection).then(route, (error) => {
  app.replaceChildren(notice(`Could not load the instances: ${error.message}`, "error"));
});
