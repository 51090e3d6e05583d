// After training, on the job page: the evaluation of the job's best checkpoint
// (GetEvaluation: overall metrics, a per-class table, the confusion matrix as a heat-map
// table, the PNG pictures) and model export (ExportModel / GetModelExport: ONNX and
// TorchScript, a state pill that follows the export, then a download).

import { download, get, post } from "../api.js";
import { fmt } from "../chart.js";
import { clear, formatBytes, h } from "../dom.js";
import { alertText, busy, toast } from "../ui.js";

// per-class value keys in this order first; others follow alphabetically
const CLASS_KEYS = ["ap50", "ap50_95", "precision", "recall", "accuracy", "iou"];
const KEY_LABELS = {
  ap50: "AP50",
  ap50_95: "AP50-95",
  precision: "Precision",
  recall: "Recall",
  accuracy: "Accuracy",
  iou: "IoU",
};
const PICTURE_ALT = {
  "confusion_matrix.png": "Confusion matrix of the evaluation, as a picture",
  "pr_curve.png": "Precision-recall curve per class",
};

/** The Evaluation section; `load()` asks for it once the job has ended. */
export function evaluationSection(name, { signal } = {}) {
  const body = h("div", { id: "evaluation-body", "aria-live": "polite" });
  const el = h(
    "section",
    { id: "evaluation", "aria-labelledby": "evaluation-title" },
    h("h2", { id: "evaluation-title" }, "Evaluation"),
    body,
  );
  let state = "idle"; // idle | loading | done
  clear(body, h("p", { class: "muted" }, "Shown once the job has ended."));

  async function load() {
    if (state !== "idle") return;
    state = "loading";
    clear(body, h("p", { class: "muted" }, "Loading the evaluation…"));
    // it is written as the job ends: a job seen ended a moment ago may not have it yet
    for (let attempt = 0; attempt < 6; attempt += 1) {
      try {
        const reply = await get(`/v1/${name}/evaluation`, undefined, { signal });
        paint(reply.evaluation || reply);
        state = "done";
        return;
      } catch (err) {
        if (signal?.aborted) return;
        if (err.httpStatus === 404 && attempt < 5) {
          await new Promise((r) => setTimeout(r, 1500));
          continue;
        }
        clear(body, err.httpStatus === 404 ? h("p", { class: "muted", id: "evaluation-missing" }, err.message) : alertText(err));
        state = "done";
        return;
      }
    }
  }

  function paint(ev) {
    const metrics = Object.entries(ev.metrics || {}).sort(([a], [b]) => a.localeCompare(b));
    const classes = ev.classes || [];
    const present = new Set(classes.flatMap((c) => Object.keys(c.values || {})));
    const keys = [
      ...CLASS_KEYS.filter((k) => present.has(k)),
      ...[...present].filter((k) => !CLASS_KEYS.includes(k)).sort(),
    ];
    clear(
      body,
      h("p", { class: "muted" }, `Checkpoint ${ev.checkpoint || "best.pt"} on the val split.`),
      metrics.length
        ? h(
            "dl",
            { class: "facts-grid", id: "evaluation-metrics" },
            metrics.map(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { key: k, value: String(v) } }, fmt(v))]),
          )
        : null,
      classes.length ? classSection(classes, keys) : h("p", { class: "muted" }, "No per-class metrics."),
      confusionTable(ev.confusionMatrix),
      pictures(ev.pictures || []),
    );
  }

  return { el, load };
}

// a class with no instance in val and nothing but zeros (COCO's 80 names on a small set) is
// left out unless asked for
const seen = (c) => Number(c.instanceCount || 0) > 0 || Object.values(c.values || {}).some((v) => Number(v) !== 0);

function classSection(classes, keys) {
  const some = classes.filter(seen);
  const hidden = classes.length - some.length;
  const wrap = h("div", {}, classTable(some.length ? some : classes, keys));
  if (!hidden || !some.length) return wrap;
  const toggle = h("input", { type: "checkbox", id: "eval-all-classes" });
  toggle.addEventListener("change", () => clear(wrap, classTable(toggle.checked ? classes : some, keys)));
  return h(
    "div",
    {},
    h(
      "div",
      { class: "row" },
      toggle,
      h("label", { for: toggle.id }, `Show all ${classes.length} classes (${hidden} have no instance in the val split and only zeros)`),
    ),
    wrap,
  );
}

function classTable(classes, keys) {
  return h(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Metrics per class" },
    h(
      "table",
      { class: "table", id: "eval-classes" },
      h("caption", {}, "Per class"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "Class"),
          keys.map((k) => h("th", { scope: "col", class: "num", dataset: { key: k } }, KEY_LABELS[k] || k)),
          h("th", { scope: "col", class: "num" }, "Instances"),
        ),
      ),
      h(
        "tbody",
        {},
        classes.map((c) =>
          h(
            "tr",
            { dataset: { classId: String(c.categoryId ?? 0), className: c.categoryName || "" } },
            h("th", { scope: "row" }, c.categoryName || String(c.categoryId ?? "")),
            keys.map((k) => {
              const v = c.values?.[k];
              return h(
                "td",
                { class: "num", dataset: v === undefined ? { key: k } : { key: k, value: String(v) } },
                v === undefined ? "–" : fmt(v),
              );
            }),
            h("td", { class: "num", dataset: { key: "instances", value: String(Number(c.instanceCount || 0)) } }, String(Number(c.instanceCount || 0))),
          ),
        ),
      ),
    ),
  );
}

// white (no count) to dark blue (the largest count); the text is black or white, whichever
// reads better on that background (WCAG relative luminance)
const LIGHT = [255, 255, 255];
const DARK = [8, 48, 107];
function heat(fraction) {
  const rgb = LIGHT.map((l, i) => Math.round(l + (DARK[i] - l) * fraction));
  const lin = rgb.map((c) => {
    const s = c / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  });
  const lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
  return { background: `rgb(${rgb.join(", ")})`, color: lum >= 0.18 ? "#000" : "#fff" };
}

function confusionTable(cm) {
  const labels = cm?.labels || [];
  const rows = cm?.rows || [];
  if (!labels.length || !rows.length) return h("p", { class: "muted" }, "No confusion matrix.");
  const max = Math.max(1, ...rows.flatMap((r) => (r.counts || []).map(Number)));
  // a class neither true nor predicted anywhere is an all-zero row and column: left out
  const count = (i, j) => Number(rows[i]?.counts?.[j] || 0);
  const keep = labels.map((_, i) => labels.some((__, j) => count(i, j) || count(j, i))).flatMap((k, i) => (k ? [i] : []));
  const idx = keep.length ? keep : labels.map((_, i) => i);
  const dropped = labels.length - idx.length;
  return h(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Confusion matrix" },
    h(
      "table",
      { class: "table confusion", id: "confusion" },
      h("caption", {}, "Confusion matrix: rows are the true class, columns the predicted class"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("td", { class: "corner" }, "true \\ predicted"),
          idx.map((j) => h("th", { scope: "col", class: "num", dataset: { col: String(j) } }, labels[j])),
        ),
      ),
      h(
        "tbody",
        {},
        idx.map((i) =>
          h(
            "tr",
            { dataset: { row: String(i) } },
            h("th", { scope: "row" }, labels[i]),
            idx.map((j) => {
              const n = count(i, j);
              return h(
                "td",
                { class: "num cell", style: heat(n / max), dataset: { col: String(j), count: String(n) } },
                Number.isInteger(n) ? String(n) : fmt(n),
              );
            }),
          ),
        ),
      ),
    ),
    dropped ? h("p", { class: "muted", id: "confusion-note" }, `${dropped} of ${labels.length} classes are neither in the val split nor predicted: left out.`) : null,
  );
}

function pictures(list) {
  if (!list.length) return null;
  return h(
    "div",
    { class: "eval-pictures", id: "evaluation-pictures" },
    list.map((p) => {
      const what = PICTURE_ALT[p.filename] || `Evaluation picture ${p.filename}`;
      return h(
        "figure",
        {},
        h("img", { src: `data:${p.contentType || "image/png"};base64,${p.data}`, alt: what, dataset: { file: p.filename } }),
        h("figcaption", { class: "muted" }, p.filename),
      );
    }),
  );
}

const FORMATS = [
  { format: "MODEL_FORMAT_ONNX", key: "onnx", label: "ONNX" },
  { format: "MODEL_FORMAT_TORCHSCRIPT", key: "torchscript", label: "TorchScript" },
];

/** The Export section; `update(job)` paints it from the job (its checkpoints and exports). */
export function exportSection(name, jobId, { signal } = {}) {
  const rows = new Map(); // key -> {pill, out, btn, export, timer}
  const note = h("p", { class: "muted", id: "export-note" });
  const list = h("ul", { class: "exports", id: "exports" });
  const el = h(
    "section",
    { id: "export", "aria-labelledby": "export-title" },
    h("h2", { id: "export-title" }, "Export"),
    note,
    list,
  );
  for (const f of FORMATS) {
    const btn = h("button", { type: "button", class: "btn btn-small", dataset: { format: f.key } }, `Export ${f.label}`);
    const pill = h("span", { class: "badge", id: `export-${f.key}-state`, dataset: { state: "none" } }, "not exported");
    const out = h("span", { class: "export-out", id: `export-${f.key}-out` });
    const row = { f, btn, pill, out, export: null, timer: null };
    rows.set(f.key, row);
    btn.addEventListener("click", () =>
      busy(btn, async () => {
        try {
          const reply = await post(`/v1/${name}:exportModel`, { format: f.format });
          paintRow(row, reply.export || reply);
        } catch (err) {
          clear(out, h("span", { class: "error-text", role: "alert" }, err.message));
        }
      }),
    );
    list.append(h("li", { class: "row wrap", dataset: { format: f.key } }, btn, pill, out));
  }

  function paintRow(row, exp) {
    row.export = exp;
    const s = (exp.state || "EXPORT_STATE_UNSPECIFIED").replace("EXPORT_STATE_", "").toLowerCase();
    row.pill.dataset.state = s;
    row.pill.className = `badge state-${s}`;
    row.pill.textContent = s;
    clearTimeout(row.timer);
    if (s === "running") {
      clear(row.out, h("span", { class: "muted" }, `exporting ${exp.source || "best.pt"}…`));
      row.timer = setTimeout(() => poll(row), 1000);
    } else if (s === "succeeded" && exp.file) {
      const file = exp.file;
      const filename = file.filename || file.name.split("/").pop();
      const dl = h("button", { type: "button", class: "btn btn-small", dataset: { file: filename } }, `Download ${filename}`);
      dl.addEventListener("click", () =>
        busy(dl, async () => {
          try {
            const blob = await download(`/v1/${file.name}:download`, `${jobId}-${filename}`);
            dl.dataset.downloaded = String(blob.size);
            toast(`Downloaded ${filename} (${formatBytes(blob.size)}).`);
          } catch (err) {
            toast(err.message, "error");
          }
        }),
      );
      clear(row.out, dl, h("span", { class: "muted" }, ` from ${exp.source || "best.pt"} · ${formatBytes(file.sizeBytes)}`));
    } else if (s === "failed") {
      clear(row.out, h("span", { class: "error-text", role: "alert" }, exp.error || "The export failed."));
    } else {
      clear(row.out);
    }
  }

  async function poll(row) {
    if (signal?.aborted || !row.export?.name) return;
    try {
      const reply = await get(`/v1/${row.export.name}`, undefined, { signal });
      paintRow(row, reply.export || reply);
    } catch (err) {
      if (signal?.aborted) return;
      clear(row.out, alertText(err));
      row.timer = setTimeout(() => poll(row), 2000);
    }
  }

  function update(job, active) {
    const ready = (job.checkpoints || []).some((c) => c.filename === "best.pt" || c.filename === "last.pt");
    note.textContent = ready
      ? active
        ? "The checkpoint so far can be exported; export again after the job ends for the final one."
        : "Export the best checkpoint to run it without this platform."
      : "Available once the job has weights.";
    for (const row of rows.values()) {
      row.btn.disabled = !ready || row.export?.state === "EXPORT_STATE_RUNNING";
      const known = (job.exports || []).find((e) => e.format === row.f.format);
      // the job's copy is older than one this page follows
      if (known && (!row.export || (row.export.state !== "EXPORT_STATE_RUNNING" && known.updateTime >= (row.export.updateTime || "")))) {
        if (!row.export || known.state !== row.export.state || known.updateTime !== row.export.updateTime) paintRow(row, known);
      }
    }
  }

  function stop() {
    for (const row of rows.values()) clearTimeout(row.timer);
  }

  return { el, update, stop };
}
