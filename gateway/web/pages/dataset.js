// One dataset: header with counts, then sections as tabs.

import { get } from "../api.js";
import { clear, formatBytes, h } from "../dom.js";
import { alertText, tabs } from "../ui.js";
import { isOwner } from "./datasets.js";
import { renderGallery } from "./gallery.js";

const SECTIONS = [
  ["gallery", "Gallery"],
  ["upload", "Upload"],
  ["import", "Import annotations"],
  ["snapshots", "Snapshots"],
  ["compatibility", "Compatibility"],
  ["tools", "Integrity & export"],
];

// The gallery (the default section) is loaded with this module; the others when opened.
const RENDER = {
  gallery: async () => renderGallery,
  upload: () => import("./upload.js").then((m) => m.renderUpload),
  import: () => import("./import.js").then((m) => m.renderImport),
  snapshots: () => import("./snapshots.js").then((m) => m.renderSnapshots),
  compatibility: () => import("./compat.js").then((m) => m.renderCompat),
  tools: () => import("./tools.js").then((m) => m.renderTools),
};

export async function renderDataset({ main, match, params }) {
  const [id, sectionRaw] = match;
  const section = RENDER[sectionRaw] ? sectionRaw : "gallery";
  const name = `datasets/${id}`;
  const title = h("h1", {}, id);
  const facts = h("p", { class: "muted facts" });
  const body = h("div", { class: "section-body" });
  main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/datasets" }, "Datasets"), " / "),
    title,
    facts,
    tabs(SECTIONS, section, (k) => `#/datasets/${id}/${k}`),
    body,
  );
  let cleanup = null;
  const ctx = {
    name,
    id,
    params,
    dataset: null,
    /** Re-reads the dataset (counts, categories, health) after a change. */
    async refresh() {
      const reply = await get(`/v1/${name}`);
      ctx.dataset = reply.dataset || reply;
      paintHeader(ctx.dataset);
      const { health, ...summary } = ctx.dataset;
      sessionStorage.setItem(`visionmesh.${name}`, JSON.stringify(summary));
      return ctx.dataset;
    },
  };
  function paintHeader(ds) {
    title.textContent = ds.displayName || id;
    document.title = `${ds.displayName || id} · visionmesh`;
    clear(
      facts,
      `${Number(ds.imageCount || 0).toLocaleString()} images · `,
      `${Number(ds.annotationCount || 0).toLocaleString()} annotations · `,
      `${(ds.categories || []).length} classes · `,
      ds.labeled ? `labeled (${ds.annotationVariant || "annotations"})` : "unlabeled",
      ` · ${ds.visibility === "VISIBILITY_PUBLIC" ? "public" : "private"}`,
      ` · owner ${(ds.owner || "").replace(/^users\//, "")}`,
      ds.totalBytes ? ` · ${formatBytes(ds.totalBytes)}` : "",
    );
    ctx.owner = isOwner(ds);
  }
  // what the datasets table knew paints the header at once; GetDataset (with the health
  // summary, the costly part on a big dataset) follows
  try {
    const known = JSON.parse(sessionStorage.getItem(`visionmesh.${name}`) || "null");
    if (known) paintHeader(known);
  } catch {
    /* nothing cached */
  }
  // The gallery asks for its first page of images before the dataset: GetDataset computes
  // the health summary (histogram, class counts), which the first screen does not need.
  let firstScreen;
  ctx.firstScreen = new Promise((resolve) => {
    firstScreen = resolve;
  });
  ctx.onFirstScreen = () => firstScreen();
  ctx.ready =
    section === "gallery"
      ? Promise.race([ctx.firstScreen, new Promise((r) => setTimeout(r, 1500))]).then(() =>
          ctx.refresh(),
        )
      : ctx.refresh();
  const render = RENDER[section]();
  if (section !== "gallery") {
    try {
      await ctx.ready;
    } catch (err) {
      clear(body, alertText(err));
      return null;
    }
  } else {
    ctx.ready.catch((err) => clear(body, alertText(err)));
  }
  cleanup = await (await render)(body, ctx);
  return () => {
    document.title = "visionmesh";
    if (typeof cleanup === "function") cleanup();
  };
}
