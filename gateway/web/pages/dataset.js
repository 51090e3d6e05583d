// One dataset: header with counts, then sections as tabs.

import { get } from "../api.js";
import { clear, formatBytes, h } from "../dom.js";
import { alertText, tabs } from "../ui.js";
import { renderCompat } from "./compat.js";
import { renderGallery } from "./gallery.js";
import { renderImport } from "./import.js";
import { renderSnapshots } from "./snapshots.js";
import { renderTools } from "./tools.js";
import { renderUpload } from "./upload.js";
import { isOwner } from "./datasets.js";

const SECTIONS = [
  ["gallery", "Gallery"],
  ["upload", "Upload"],
  ["import", "Import annotations"],
  ["snapshots", "Snapshots"],
  ["compatibility", "Compatibility"],
  ["tools", "Integrity & export"],
];

const RENDER = {
  gallery: renderGallery,
  upload: renderUpload,
  import: renderImport,
  snapshots: renderSnapshots,
  compatibility: renderCompat,
  tools: renderTools,
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
      const ds = ctx.dataset;
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
      return ds;
    },
  };
  try {
    await ctx.refresh();
  } catch (err) {
    clear(body, alertText(err));
    return null;
  }
  cleanup = await RENDER[section](body, ctx);
  return () => {
    document.title = "visionmesh";
    if (typeof cleanup === "function") cleanup();
  };
}
