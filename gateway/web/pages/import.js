// Import annotations: a file (or a folder of label files), format auto-detected; problems
// shown with their JSON paths.

import { ApiError, base64, post } from "../api.js";
import { clear, field, h } from "../dom.js";
import { busy, clearFormErrors, errorBox, toast } from "../ui.js";
import { forgetAnnotations } from "./gallery.js";

let pending = null; // {dataset, files} handed over by the upload page

export function setPendingImport(dataset, files) {
  pending = { dataset, files };
}

export function renderImport(body, ctx) {
  if (!ctx.owner) {
    body.append(h("p", { class: "muted" }, "Only the dataset's owner can import annotations."));
    return null;
  }
  let chosen = [];
  if (pending && pending.dataset === ctx.name) chosen = pending.files;
  pending = null;

  const filePicker = h("input", { type: "file", name: "files", multiple: true, accept: ".json,.txt,.yaml,.yml" });
  const folderPicker = h("input", { type: "file", name: "folder", webkitdirectory: true, multiple: true });
  const format = h(
    "select",
    { name: "format" },
    h("option", { value: "" }, "Detect automatically"),
    h("option", { value: "ANNOTATION_FORMAT_DICE" }, "DICE (COCO-compatible)"),
    h("option", { value: "ANNOTATION_FORMAT_COCO" }, "COCO"),
    h("option", { value: "ANNOTATION_FORMAT_YOLO" }, "YOLO"),
    h("option", { value: "ANNOTATION_FORMAT_IMAGEFOLDER" }, "ImageFolder (labels from folder names)"),
  );
  const classNames = h("textarea", { name: "classNames", rows: 3 });
  const allowWarnings = h("input", { type: "checkbox", name: "allowWarnings" });
  const replace = h("input", { type: "checkbox", name: "replaceExisting", checked: !!ctx.dataset.labeled });
  const chosenList = h("p", { class: "muted", id: "import-chosen", "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "btn btn-primary" }, "Import");
  const result = h("div", { id: "import-result" });
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "import-title" },
    h("h2", { id: "import-title" }, "Import annotations"),
    h(
      "p",
      { class: "muted" },
      "A DICE/COCO JSON file, a YOLO labels folder (with data.yaml, or class names below), or nothing for ImageFolder. The import replaces the dataset's annotations all at once, or changes nothing.",
    ),
    h("div", { class: "row wrap" }, field("Annotation file(s)", filePicker, { name: "files" }), field("…or a folder of label files", folderPicker)),
    chosenList,
    field("Format", format, { name: "format" }),
    field("Class names (one per line; for YOLO labels without data.yaml)", classNames, { name: "class_names" }),
    h("div", { class: "row" }, allowWarnings, h("label", { for: (allowWarnings.id = "allow-warnings") }, "Import even when there are warnings")),
    h("div", { class: "row", dataset: { field: "replace_existing" } }, replace, h("label", { for: (replace.id = "replace-existing") }, "Replace the dataset's current annotations"), h("p", { class: "field-error", hidden: true })),
    errorBox(),
    h("div", { class: "row" }, submit),
  );

  const paintChosen = () => {
    chosenList.textContent = chosen.length
      ? `${chosen.length} file(s): ${chosen.slice(0, 5).map((f) => f.path).join(", ")}${chosen.length > 5 ? ", …" : ""}`
      : "No file chosen (ImageFolder datasets need none).";
  };
  filePicker.addEventListener("change", () => {
    chosen = [...filePicker.files].map((f) => ({ file: f, path: f.name }));
    paintChosen();
  });
  folderPicker.addEventListener("change", () => {
    chosen = [...folderPicker.files]
      .filter((f) => /\.(json|txt|ya?ml)$/i.test(f.name))
      .map((f) => ({ file: f, path: stripTop(f.webkitRelativePath || f.name) }));
    paintChosen();
  });

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(submit, async () => {
      clearFormErrors(form);
      clear(result);
      try {
        const files = await Promise.all(
          chosen.map(async (f) => ({ path: f.path, content: await base64(f.file) })),
        );
        const names = classNames.value
          .split(/[\n,]/)
          .map((s) => s.trim())
          .filter(Boolean);
        const reply = await post(`/v1/${ctx.name}:importAnnotations`, {
          files,
          format: format.value || undefined,
          allowWarnings: allowWarnings.checked,
          classNames: names,
          replaceExisting: replace.checked,
        });
        forgetAnnotations(ctx.name);
        toast(`Imported ${reply.annotationCount || 0} annotations.`);
        await ctx.refresh().catch(() => {});
        replace.checked = true;
        const warnings = reply.warnings || [];
        clear(
          result,
          h(
            "div",
            { class: "card", id: "import-summary" },
            h("h2", {}, "Imported"),
            h(
              "p",
              {},
              `Read as ${reply.variant || "?"}: ${reply.imageCount || 0} images, ${reply.annotationCount || 0} annotations, ${reply.categoryCount || 0} classes.`,
            ),
            warnings.length ? problems("Warnings", warnings.map((w) => ({ field: w.path, description: w.message }))) : null,
            h("a", { href: `#/datasets/${ctx.id}/gallery`, class: "btn" }, "See them in the gallery"),
          ),
        );
      } catch (err) {
        const box = form.querySelector(".form-error");
        clear(box, h("p", {}, err.message));
        box.hidden = false;
        if (err instanceof ApiError && err.fieldViolations.length) {
          clear(result, problems(`${err.fieldViolations.length} problems`, err.fieldViolations));
        }
      }
    });
  });
  paintChosen();
  body.append(form, result);
  return null;
}

function problems(title, items) {
  return h(
    "table",
    { class: "table problems-table", id: "import-problems" },
    h("caption", {}, title),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Where (JSON path)"), h("th", { scope: "col" }, "Problem"))),
    h(
      "tbody",
      {},
      items.map((v) => h("tr", {}, h("td", {}, h("code", {}, v.field || "(document)")), h("td", {}, v.description))),
    ),
  );
}

function stripTop(p) {
  const i = p.indexOf("/");
  return i > 0 ? p.slice(i + 1) : p;
}
