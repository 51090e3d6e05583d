// Upload a folder (drag-and-drop or folder picker), structure kept, with a progress bar.
// Annotation files found in the folder (.json, .txt, .yaml) are kept aside and offered
// for import right after the images are in.

import { uploadFiles } from "../api.js";
import { clear, formatBytes, h } from "../dom.js";
import { alertText, toast } from "../ui.js";
import { setPendingImport } from "./import.js";

const ANNOTATION = /\.(json|txt|ya?ml|xml)$/i;
const IGNORED = /(^|\/)(\.[^/]*|__MACOSX|Thumbs\.db)(\/|$)/;

/** Files of a drop, with their relative paths (folders walked). */
async function droppedFiles(dataTransfer) {
  const out = [];
  const entries = [...dataTransfer.items]
    .map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry())
    .filter(Boolean);
  if (!entries.length) {
    for (const f of dataTransfer.files) out.push({ file: f, path: f.name });
    return out;
  }
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      const file = await new Promise((res, rej) => entry.file(res, rej));
      out.push({ file, path: prefix + entry.name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        if (!batch.length) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`);
      }
    }
  };
  for (const e of entries) await walk(e, "");
  return out;
}

export function renderUpload(body, ctx) {
  if (!ctx.owner) {
    body.append(h("p", { class: "muted" }, "Only the dataset's owner can upload images."));
    return null;
  }
  const picker = h("input", {
    type: "file",
    id: "folder-picker",
    webkitdirectory: true,
    multiple: true,
    class: "sr-only",
  });
  const filesPicker = h("input", {
    type: "file",
    id: "files-picker",
    multiple: true,
    accept: "image/*",
    class: "sr-only",
  });
  const stripTop = h("input", { type: "checkbox", id: "strip-top", checked: true });
  const zone = h(
    "div",
    { class: "dropzone", id: "dropzone" },
    h("p", {}, h("strong", {}, "Drop a folder here"), " — its structure is kept (train/, val/, class folders)."),
    // the file inputs themselves take focus (Tab, then Enter or Space); their labels are
    // what shows, outlined while the input has focus
    h(
      "div",
      { class: "row" },
      picker,
      h("label", { for: picker.id, class: "btn btn-primary" }, "Choose a folder…"),
      filesPicker,
      h("label", { for: filesPicker.id, class: "btn" }, "Choose images…"),
    ),
  );
  const options = h(
    "div",
    { class: "row" },
    stripTop,
    h("label", { for: stripTop.id }, "Leave out the chosen folder's own name from the paths"),
  );
  const progress = h("progress", { id: "upload-progress", max: 100, value: 0, hidden: true });
  const progressLabel = h("label", { for: progress.id, hidden: true }, "Upload progress");
  const progressText = h("p", { class: "muted", "aria-live": "polite" });
  const result = h("div", { id: "upload-result" });

  async function send(files) {
    const top = files.length && stripTop.checked ? commonTop(files.map((f) => f.path)) : "";
    const rel = (p) => (top ? p.slice(top.length + 1) : p);
    const wanted = files.filter((f) => !IGNORED.test(f.path));
    const annotationFiles = wanted.filter((f) => ANNOTATION.test(f.path));
    const images = wanted.filter((f) => !ANNOTATION.test(f.path));
    clear(result);
    if (!images.length) {
      clear(result, alertText(new Error("No image files in what was chosen.")));
      return;
    }
    const parts = images.map((f) => ({ file: f.file, path: rel(f.path) }));
    const total = parts.reduce((n, p) => n + p.file.size, 0);
    progress.hidden = false;
    progressLabel.hidden = false;
    progress.value = 0;
    progressText.textContent = `Uploading ${parts.length} files (${formatBytes(total)})…`;
    try {
      const reply = await uploadFiles(`/v1/${ctx.name}/images:upload`, parts, (loaded, all) => {
        progress.value = Math.round((100 * loaded) / all);
        progressText.textContent = `Uploading ${parts.length} files: ${formatBytes(loaded)} of ${formatBytes(all)}`;
      });
      progress.value = 100;
      const added = (reply.images || []).length;
      const skipped = reply.skipped || [];
      progressText.textContent = `Done: ${added} images in the dataset from this upload.`;
      toast(`Uploaded ${added} images.`);
      await ctx.refresh().catch(() => {});
      const aside = annotationFiles.map((f) => ({ file: f.file, path: rel(f.path) }));
      clear(
        result,
        h(
          "div",
          { class: "card", id: "upload-summary" },
          h("h2", {}, "Upload finished"),
          h(
            "ul",
            {},
            h("li", {}, `${added} images added or replaced`),
            h("li", {}, `${reply.deduplicatedCount || 0} already stored (same bytes), not stored again`),
            h("li", {}, `${formatBytes(reply.receivedBytes || 0)} received`),
            h("li", {}, `${skipped.length} files skipped`),
          ),
          skipped.length
            ? h(
                "table",
                { class: "table", id: "skipped-files" },
                h("caption", {}, "Skipped files and why"),
                h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "File"), h("th", { scope: "col" }, "Reason"))),
                h(
                  "tbody",
                  {},
                  skipped.map((s) => h("tr", {}, h("td", {}, h("code", {}, s.path)), h("td", {}, s.reason))),
                ),
              )
            : null,
          aside.length
            ? h(
                "div",
                { class: "callout" },
                h(
                  "p",
                  {},
                  `The folder also holds ${aside.length} annotation files (${aside
                    .slice(0, 3)
                    .map((f) => f.path)
                    .join(", ")}${aside.length > 3 ? ", …" : ""}). They were not uploaded as images.`,
                ),
                h(
                  "a",
                  {
                    class: "btn btn-primary",
                    href: `#/datasets/${ctx.id}/import`,
                    onclick: () => setPendingImport(ctx.name, aside),
                  },
                  `Import these ${aside.length} annotation files…`,
                ),
              )
            : null,
        ),
      );
    } catch (err) {
      progressText.textContent = "The upload failed; nothing was added.";
      clear(result, alertText(err));
    }
  }

  picker.addEventListener("change", () => {
    const files = [...picker.files].map((f) => ({ file: f, path: f.webkitRelativePath || f.name }));
    picker.value = "";
    send(files);
  });
  filesPicker.addEventListener("change", () => {
    const files = [...filesPicker.files].map((f) => ({ file: f, path: f.name }));
    filesPicker.value = "";
    send(files);
  });
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    send(await droppedFiles(e.dataTransfer));
  });

  body.append(
    h("h2", {}, "Upload images"),
    h(
      "p",
      { class: "muted" },
      "Images keep their relative paths: train/ and val/ folders become splits, class folders become ImageFolder labels. Files already stored (same bytes) are not stored twice.",
    ),
    zone,
    options,
    h("div", { class: "row" }, progressLabel, progress),
    progressText,
    result,
  );
  return null;
}

function commonTop(paths) {
  const firsts = new Set(paths.map((p) => (p.includes("/") ? p.split("/")[0] : "")));
  if (firsts.size !== 1) return "";
  const [top] = firsts;
  return top;
}
