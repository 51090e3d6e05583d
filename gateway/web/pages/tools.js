// Integrity check and export + download.

import { download, get, post } from "../api.js";
import { clear, field, formatBytes, h, TASKS, taskLabel } from "../dom.js";
import { busy, clearFormErrors, errorBox, showFormError, toast } from "../ui.js";

export async function renderTools(body, ctx) {
  // integrity
  const verify = h("input", { type: "checkbox", id: "verify-hashes" });
  const checkBtn = h("button", { type: "submit", class: "btn btn-primary" }, "Check integrity");
  const checkOut = h("div", { id: "integrity-result", "aria-live": "polite" });
  const check = h(
    "form",
    { class: "card", "aria-labelledby": "integrity-title" },
    h("h2", { id: "integrity-title" }, "Integrity"),
    h("p", { class: "muted" }, "Looks for image blobs that are missing from storage or whose bytes no longer match their hash, and the snapshots they affect."),
    h("div", { class: "row" }, verify, h("label", { for: verify.id }, "Re-hash every image (slower)")),
    errorBox(),
    h("div", { class: "row" }, checkBtn),
    checkOut,
  );
  check.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(checkBtn, async () => {
      clearFormErrors(check);
      clear(checkOut);
      try {
        const r = await post(`/v1/${ctx.name}:checkIntegrity`, { verifyHashes: verify.checked });
        const problems = r.problems || [];
        clear(
          checkOut,
          h(
            "p",
            { class: r.ok ? "ok-text" : "error-text" },
            r.ok
              ? `All ${Number(r.checkedBlobCount || 0)} blobs are present${verify.checked ? " and match their hashes" : ""}.`
              : `${problems.length} problems in ${Number(r.checkedBlobCount || 0)} blobs.`,
          ),
          problems.length
            ? h(
                "table",
                { class: "table" },
                h("caption", {}, "Problems"),
                h("thead", {}, h("tr", {}, ["Blob", "Kind", "Images", "Snapshots affected"].map((t) => h("th", { scope: "col" }, t)))),
                h(
                  "tbody",
                  {},
                  problems.map((p) =>
                    h(
                      "tr",
                      {},
                      h("td", {}, h("code", {}, (p.sha256 || "").slice(0, 12))),
                      h("td", {}, p.kind),
                      h("td", {}, (p.paths || []).join(", ")),
                      h("td", {}, (p.affectedSnapshots || []).join(", ")),
                    ),
                  ),
                ),
              )
            : null,
        );
      } catch (err) {
        showFormError(check, err);
      }
    });
  });

  // export
  const source = h("select", { name: "name" }, h("option", { value: ctx.name }, "Current dataset (head)"));
  const format = h(
    "select",
    { name: "format" },
    h("option", { value: "ANNOTATION_FORMAT_DICE" }, "DICE (COCO-compatible + meta.json)"),
    h("option", { value: "ANNOTATION_FORMAT_COCO" }, "COCO"),
    h("option", { value: "ANNOTATION_FORMAT_YOLO" }, "YOLO"),
  );
  const task = h(
    "select",
    { name: "taskType" },
    h("option", { value: "" }, "Richest the annotations allow"),
    TASKS.map((t) => h("option", { value: t }, taskLabel(t))),
  );
  const annotationsOnly = h("input", { type: "checkbox", id: "annotations-only" });
  const exportBtn = h("button", { type: "submit", class: "btn btn-primary" }, "Export and download");
  const exportOut = h("div", { id: "export-result", "aria-live": "polite" });
  const exp = h(
    "form",
    { class: "card", "aria-labelledby": "export-title" },
    h("h2", { id: "export-title" }, "Export"),
    h(
      "div",
      { class: "row wrap" },
      field("Version", source, { name: "name" }),
      field("Format", format, { name: "format" }),
      field("Task (COCO, YOLO)", task, { name: "task_type" }),
    ),
    h("div", { class: "row" }, annotationsOnly, h("label", { for: annotationsOnly.id }, "Annotations only (no images)")),
    errorBox(),
    h("div", { class: "row" }, exportBtn),
    exportOut,
  );
  exp.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(exportBtn, async () => {
      clearFormErrors(exp);
      clear(exportOut, h("p", { class: "muted" }, "Exporting…"));
      try {
        const r = await post(`/v1/${source.value}:export`, {
          format: format.value,
          taskType: task.value || undefined,
          annotationsOnly: annotationsOnly.checked,
        });
        const fmt = format.value.replace("ANNOTATION_FORMAT_", "").toLowerCase();
        const filename = `${(ctx.dataset.displayName || ctx.id).replace(/[^\w.-]+/g, "_")}.${fmt}.zip`;
        await download(`/v1/${r.export}:download`, filename);
        toast(`Downloaded ${filename}.`);
        clear(
          exportOut,
          h(
            "p",
            { class: "ok-text" },
            `${filename}: ${formatBytes(r.sizeBytes)}, ${r.imageCount || 0} images, ${r.annotationCount || 0} annotations (sha256 ${String(r.sha256 || "").slice(0, 12)}…).`,
          ),
        );
      } catch (err) {
        clear(exportOut);
        showFormError(exp, err);
      }
    });
  });
  if (!ctx.owner) check.hidden = true;

  body.append(check, exp);
  try {
    const reply = await get(`/v1/${ctx.name}/snapshots`, { pageSize: 100 });
    for (const s of reply.snapshots || []) {
      source.append(h("option", { value: s.name }, `Snapshot ${s.versionName || s.name.split("/").pop()}`));
    }
  } catch {
    /* head only */
  }
  return null;
}
