// Compatibility: for each task, whether the dataset can train it (and by which conversion,
// lossy or not, or why not), and which trainers' models serve that task.

import { capabilities, get } from "../api.js";
import { clear, dataTable, enumLabel, h, taskLabel } from "../dom.js";
import { alertText } from "../ui.js";

export async function renderCompat(body, ctx) {
  const out = h("div", { id: "compat" }, h("p", { class: "muted" }, "Checking…"));
  body.append(h("h2", {}, "What this dataset can train"), out);
  let reports;
  let caps;
  try {
    [reports, caps] = await Promise.all([
      get(`/v1/${ctx.name}:summarizeCompatibility`).then((r) => r.reports || []),
      capabilities(),
    ]);
  } catch (err) {
    clear(out, alertText(err));
    return null;
  }
  const modelsFor = (task) =>
    caps
      .map((c) => ({
        framework: c.framework,
        error: c.error,
        models: (c.models || []).filter((m) => (m.taskTypes || []).includes(task)),
      }))
      .filter((c) => c.models.length || c.error);
  clear(
    out,
    dataTable(
      {
        className: "table compat-table",
        caption: "Compatibility per task",
        headers: ["Task", "Dataset", "Conversion", "Usable images", "Notes", "Models that train it"],
      },
        h(
          "tbody",
          {},
          reports.map((r) => {
            const ok = !!r.compatible;
            const fws = modelsFor(r.taskType);
            return h(
              "tr",
              { dataset: { task: r.taskType, compatible: String(ok) } },
              h("th", { scope: "row" }, taskLabel(r.taskType)),
              h("td", {}, h("span", { class: ok ? "badge ok" : "badge bad" }, ok ? "Can train" : "Cannot train")),
              h(
                "td",
                {},
                enumLabel(r.conversion, "CONVERSION_") || "—",
                r.lossy ? h("span", { class: "badge warn" }, "lossy") : null,
              ),
              h(
                "td",
                { class: "num" },
                `${Number(r.usableImageCount || 0)} / ${Number(r.totalImageCount || 0)}`,
                Number(r.droppedAnnotationCount || 0)
                  ? h("div", { class: "muted" }, `${r.droppedAnnotationCount} annotations dropped`)
                  : null,
              ),
              h(
                "td",
                {},
                (r.errors || []).map((e) => h("p", { class: "error-text" }, e)),
                (r.warnings || []).map((w) => h("p", { class: "warn-text" }, w)),
                r.splitGenerated ? h("p", { class: "muted" }, `split generated (seed ${r.splitSeed || 0})`) : null,
              ),
              h(
                "td",
                {},
                fws.length
                  ? fws.map((f) =>
                      h(
                        "details",
                        {},
                        h("summary", {}, `${f.framework}: ${f.error ? "unavailable" : `${f.models.length} models`}`),
                        f.error
                          ? h("p", { class: "error-text" }, f.error)
                          : h("p", { class: "models" }, f.models.map((m) => m.name).join(", ")),
                      ),
                    )
                  : h("span", { class: "muted" }, "no trainer"),
                ok && fws.some((f) => f.models.length)
                  ? h(
                      "a",
                      {
                        class: "btn btn-small",
                        href: `#/train?dataset=${encodeURIComponent(ctx.name)}&task=${r.taskType}`,
                        "aria-label": `Train ${taskLabel(r.taskType)} on this dataset`,
                      },
                      "Train…",
                    )
                  : null,
              ),
            );
          }),
        ),
    ),
  );
  return null;
}
