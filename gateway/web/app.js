// visionmesh web UI: a hash router over plain ES modules (no build step, nothing external).

import { session, setUnauthenticatedHandler } from "./api.js";
import { clear, h } from "./dom.js";
import { navigate, toast } from "./ui.js";

const main = document.getElementById("main");
let current = null; // {cleanup} of the page on screen

// Each page is its own module, loaded when first visited.
const routes = [
  [/^\/login$/, "login", () => import("./pages/login.js").then((m) => m.renderLogin)],
  [/^\/datasets$/, "datasets", () => import("./pages/datasets.js").then((m) => m.renderDatasets)],
  [
    /^\/datasets\/([^/]+)(?:\/([a-z-]+))?$/,
    "datasets",
    () => import("./pages/dataset.js").then((m) => m.renderDataset),
  ],
  [/^\/train$/, "train", () => import("./pages/train.js").then((m) => m.renderTrain)],
  [/^\/jobs$/, "jobs", () => import("./pages/jobs.js").then((m) => m.renderJobs)],
  [/^\/jobs\/([^/]+)\/([^/]+)$/, "jobs", () => import("./pages/job.js").then((m) => m.renderJob)],
];

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/datasets";
  const [path, q = ""] = raw.split("?");
  return { path, params: new URLSearchParams(q) };
}

function renderWho() {
  const who = document.getElementById("who");
  const nav = document.getElementById("nav");
  const user = session.user;
  if (!session.token) {
    nav.hidden = true;
    clear(who);
    return;
  }
  nav.hidden = false;
  clear(
    who,
    h("span", { class: "who-name" }, "Signed in as ", h("strong", {}, user?.username || "?")),
    h(
      "button",
      {
        type: "button",
        class: "btn btn-small",
        onclick: () => {
          session.clear();
          navigate("#/login");
        },
      },
      "Sign out",
    ),
  );
}

async function route() {
  const { path, params } = parseHash();
  if (current?.cleanup) {
    try {
      current.cleanup();
    } catch {
      /* page already gone */
    }
  }
  current = null;
  renderWho();
  if (!session.token && path !== "/login") {
    const next = location.hash && location.hash !== "#/login" ? location.hash : "";
    location.replace(`#/login${next ? `?next=${encodeURIComponent(next)}` : ""}`);
    return;
  }
  for (const [re, navKey, load] of routes) {
    const m = re.exec(path);
    if (!m) continue;
    for (const a of document.querySelectorAll("[data-nav]")) {
      if (a.dataset.nav === navKey) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    // each page renders into its own container: a page still loading when the user moves on
    // fills a detached element, never the next page
    const container = h("div", { class: "page" });
    clear(main, container);
    const ctx = { main: container, params, match: m.slice(1).map((s) => (s ? decodeURIComponent(s) : s)) };
    const page = { cleanup: null };
    current = page;
    try {
      const render = await load();
      if (current !== page) return;
      page.cleanup = (await render(ctx)) || null;
    } catch (err) {
      clear(main, h("h1", {}, "Something went wrong"), h("p", { role: "alert" }, err.message));
    }
    if (current !== page && page.cleanup) page.cleanup();
    return;
  }
  clear(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/datasets" }, "Datasets")));
}

setUnauthenticatedHandler(() => {
  if (!session.token) return;
  session.clear();
  toast("Your session ended: sign in again.", "error");
  navigate("#/login");
});

window.addEventListener("hashchange", route);
route();
