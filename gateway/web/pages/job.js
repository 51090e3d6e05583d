// One job: live charts from StreamMetrics (SSE), log tail from StreamLogs, cancel / stop
// early / resume, checkpoint downloads, and predict with the result drawn on the image.

import { base64, download, get, post, stream } from "../api.js";
import { fmt, metricCharts } from "../chart.js";
import { clear, field, formatBytes, formatTime, h, taskLabel } from "../dom.js";
import { itemFromDetection, overlaySvg } from "../overlay.js";
import { alertText, busy, clearFormErrors, confirmDialog, errorBox, showFormError, toast } from "../ui.js";
import { evaluationSection, exportSection } from "./job_after.js";
import { ACTIVE, stateBadge } from "./jobs.js";

const LOG_LINES = 400;

export async function renderJob({ main, match }) {
  const [framework, id] = match;
  const name = `trainers/${framework}/jobs/${id}`;
  const controller = new AbortController();
  let job = null;
  let pollTimer = null;
  let alive = true;

  const title = h("h1", {}, `Job ${id}`);
  const badge = h("span", { id: "job-state" });
  const facts = h("dl", { class: "facts-grid" });
  const progress = h("progress", { id: "job-progress", max: 1, value: 0 });
  const progressText = h("span", { class: "muted", "aria-live": "polite" });
  const errorLine = h("div", {});
  const cancelBtn = h("button", { type: "button", class: "btn btn-danger" }, "Cancel");
  const stopBtn = h("button", { type: "button", class: "btn" }, "Stop early");
  const resumeBtn = h("button", { type: "button", class: "btn" }, "Resume");
  const charts = h("div", { class: "charts", id: "charts", "aria-live": "off" });
  const chartStatus = h("p", { class: "muted", id: "chart-status" });
  const epochBody = h("tbody", {});
  const logPre = h("pre", { class: "log", id: "log", tabindex: "0", role: "log", "aria-label": "Job log" });
  const ckptList = h("ul", { class: "ckpts", id: "checkpoints" });

  main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / "),
    h("div", { class: "row spread" }, h("div", { class: "row" }, title, badge), h("div", { class: "row" }, stopBtn, cancelBtn, resumeBtn)),
    h("div", { class: "row" }, h("label", { for: progress.id }, "Progress"), progress, progressText),
    errorLine,
    facts,
    h("h2", {}, "Metrics"),
    chartStatus,
    charts,
    h(
      "details",
      { class: "epoch-table" },
      h("summary", {}, "Every epoch as a table"),
      h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Epochs" }, h("table", { class: "table", id: "epochs-table" }, h("caption", { class: "sr-only" }, "Metrics per epoch"), h("thead", {}), epochBody)),
    ),
    h("h2", {}, "Log"),
    logPre,
    h("h2", {}, "Weights"),
    ckptList,
  );

  const evaluation = evaluationSection(name, { signal: controller.signal });
  const exporter = exportSection(name, id, { signal: controller.signal });
  main.append(evaluation.el, exporter.el);

  const predictSection = h("section", { "aria-labelledby": "predict-title" });
  main.append(predictSection);

  function paintJob() {
    const spec = job.spec || {};
    clear(badge, stateBadge(job.state));
    paintProgress();
    const row = (k, v) => (v || v === 0 ? [h("dt", {}, k), h("dd", {}, v)] : null);
    const best = job.bestMetricName ? job.bestMetrics?.[job.bestMetricName] : undefined;
    clear(
      facts,
      row("Model", `${job.framework || framework} · ${spec.model || ""}`),
      row("Task", taskLabel(spec.taskType)),
      row("Dataset", spec.dataset ? h("a", { href: `#/datasets/${spec.dataset.split("/")[1]}` }, spec.dataset) : ""),
      row("Snapshot", job.snapshot),
      row("Conversion", job.conversion),
      row("Split", `${job.splitGenerated ? "generated" : "from the images"}, seed ${job.splitSeed || 0}`),
      row("Hyperparameters", `${spec.epochs || "default"} epochs · batch ${spec.batchSize || "default"} · ${spec.imageSize || "default"} px`),
      row("Runs on", [spec.device || "auto", Number(spec.devices || 1) > 1 ? `× ${spec.devices} processes` : "", job.replica ? `· replica ${job.replica}` : ""].filter(Boolean).join(" ")),
      row("Best", best !== undefined ? `epoch ${job.bestEpoch}: ${job.bestMetricName} ${fmt(best)}` : ""),
      row("Created", formatTime(job.createTime)),
      row("Ended", formatTime(job.endTime)),
      row("Resumed", job.resumeCount ? `${job.resumeCount} times` : ""),
    );
    clear(errorLine, job.error ? h("p", { class: "error-text", role: "alert" }, job.error) : null);
    const active = ACTIVE.has(job.state);
    cancelBtn.disabled = !active;
    stopBtn.disabled = job.state !== "JOB_STATE_RUNNING";
    resumeBtn.disabled = !["JOB_STATE_INTERRUPTED", "JOB_STATE_FAILED"].includes(job.state);
    const ckpts = [...(job.checkpoints || [])].sort((a, b) => rank(a.filename) - rank(b.filename));
    clear(
      ckptList,
      ckpts.length
        ? ckpts.map((c) => {
            const btn = h(
              "button",
              { type: "button", class: "btn btn-small", dataset: { file: c.filename } },
              `Download ${c.filename}`,
            );
            btn.addEventListener("click", () =>
              busy(btn, async () => {
                try {
                  const blob = await download(`/v1/${c.name || `${name}/checkpoints/${c.filename}`}:download`, `${id}-${c.filename}`);
                  toast(`Downloaded ${c.filename} (${formatBytes(blob.size)}).`);
                  btn.dataset.downloaded = String(blob.size);
                } catch (err) {
                  toast(err.message, "error");
                }
              }),
            );
            return h("li", {}, btn, h("span", { class: "muted" }, ` epoch ${c.epoch || "?"} · ${formatBytes(c.sizeBytes)}`));
          })
        : h("li", { class: "muted" }, "No weights yet: checkpoints appear after the first epoch."),
    );
    paintPredict();
    exporter.update(job, active);
    if (!active && job.state !== "JOB_STATE_CANCELLED") evaluation.load();
    if (!active && epochs.size) paintEpochs();
  }

  function paintProgress() {
    const spec = job.spec || {};
    // the stream may be ahead of the last GetJob
    const cur = Math.max(Number(job.currentEpoch || 0), epochs.size ? Math.max(...epochs.keys()) : 0);
    const total = Number(job.totalEpochs || spec.epochs || 0);
    progress.max = total || 1;
    progress.value = cur;
    progressText.textContent =
      job.state === "JOB_STATE_QUEUED"
        ? job.queuePosition
          ? `queued, position ${job.queuePosition}`
          : "queued, starting"
        : `epoch ${cur} of ${total}`;
  }

  async function refresh() {
    clearTimeout(pollTimer);
    try {
      const reply = await get(`/v1/${name}`);
      if (!alive) return;
      job = reply.job || reply;
      paintJob();
    } catch (err) {
      if (alive) clear(errorLine, alertText(err));
    }
    if (alive && job && ACTIVE.has(job.state)) pollTimer = setTimeout(refresh, 2000);
  }

  // actions
  cancelBtn.addEventListener("click", async () => {
    if (!(await confirmDialog("Cancel this job?", "Its weights are discarded. Stop early keeps them instead.", { confirmLabel: "Cancel the job", danger: true }))) return;
    await act(cancelBtn, ":cancel", {}, "Cancelled.");
  });
  stopBtn.addEventListener("click", () => act(stopBtn, ":cancel", { stopEarly: true }, "Stopping after this epoch; weights are kept."));
  resumeBtn.addEventListener("click", () => act(resumeBtn, ":resume", {}, "Resumed from the last checkpoint."));
  async function act(btn, verb, body, done) {
    await busy(btn, async () => {
      try {
        const reply = await post(`/v1/${name}${verb}`, body);
        job = reply.job || job;
        paintJob();
        toast(done);
        if (verb === ":resume") followMetrics();
        refresh();
      } catch (err) {
        toast(err.message, "error");
      }
    });
    paintJob();
  }

  // metrics over SSE
  const epochs = new Map();
  const chartSet = metricCharts(charts);
  let lastId = null;
  let following = false;
  function paintEpochs() {
    const list = [...epochs.values()].sort((a, b) => a.epoch - b.epoch);
    // x spans the planned epochs while the job runs, the epochs it ran once it ended
    const planned = Number(job?.totalEpochs || list.at(-1)?.epochs || 0);
    const ended = job && !ACTIVE.has(job.state) && list.length;
    chartSet.update(list, ended ? list.at(-1).epoch : planned);
    charts.dataset.epochs = String(list.length);
    if (job) paintProgress();
    chartStatus.textContent = list.length
      ? `${list.length} epoch${list.length > 1 ? "s" : ""} received${list.at(-1).etaSeconds && ACTIVE.has(job?.state) ? `; about ${Math.round(list.at(-1).etaSeconds)} s left` : ""}.`
      : "Waiting for the first epoch…";
    const keys = [...new Set(list.flatMap((e) => Object.keys(e.values || {})))].sort();
    const table = epochBody.parentElement;
    clear(table.querySelector("thead"), h("tr", {}, h("th", { scope: "col" }, "Epoch"), keys.map((k) => h("th", { scope: "col" }, k)), h("th", { scope: "col" }, "Seconds")));
    clear(
      epochBody,
      list.map((e) =>
        h(
          "tr",
          { dataset: { epoch: String(e.epoch) }, class: e.isBest ? "best-row" : "" },
          h("th", { scope: "row" }, `${e.epoch}${e.isBest ? " (best)" : ""}`),
          keys.map((k) => h("td", { class: "num" }, fmt(e.values?.[k]))),
          h("td", { class: "num" }, fmt(e.epochSeconds)),
        ),
      ),
    );
  }
  async function followMetrics() {
    if (following) return;
    following = true;
    paintEpochs();
    for (let attempt = 0; alive && attempt < 30; attempt += 1) {
      try {
        await stream(
          `/v1/${name}:streamMetrics`,
          (msg, eventId) => {
            if (eventId) lastId = eventId;
            const m = msg.metrics;
            if (m && m.epoch) {
              epochs.set(m.epoch, { ...m, values: m.values || {} });
              paintEpochs();
            }
            if (msg.state && job && msg.state !== job.state) {
              job.state = msg.state;
              refresh();
            }
          },
          { signal: controller.signal, lastEventId: lastId },
        );
        break; // the stream ended with the job
      } catch (err) {
        if (!alive || controller.signal.aborted) break;
        if (err.httpStatus && err.httpStatus !== 200 && err.httpStatus < 500) {
          chartStatus.textContent = err.message;
          break;
        }
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
    following = false;
    if (alive) {
      paintEpochs();
      refresh();
    }
  }

  // log tail
  const lines = [];
  async function followLogs() {
    try {
      await stream(
        `/v1/${name}:streamLogs?follow=true`,
        (msg) => {
          lines.push(...(msg.lines || []));
          if (lines.length > LOG_LINES) lines.splice(0, lines.length - LOG_LINES);
          const atBottom = logPre.scrollTop + logPre.clientHeight >= logPre.scrollHeight - 8;
          logPre.textContent = lines.join("\n");
          if (atBottom) logPre.scrollTop = logPre.scrollHeight;
        },
        { signal: controller.signal },
      );
    } catch (err) {
      if (alive && !controller.signal.aborted) logPre.textContent += `\n[log stream: ${err.message}]`;
    }
  }

  // predict
  let predictPainted = false;
  let predictUrl = null;
  function paintPredict() {
    const ready = (job.checkpoints || []).some((c) => c.filename === "best.pt" || c.filename === "last.pt");
    if (!ready) {
      clear(predictSection, h("h2", { id: "predict-title" }, "Predict"), h("p", { class: "muted" }, "Available once the job has weights."));
      predictPainted = false;
      return;
    }
    if (predictPainted) return;
    predictPainted = true;
    const file = h("input", { type: "file", name: "image", accept: "image/*", id: "predict-file" });
    const which = h("select", { name: "checkpoint" }, h("option", { value: "best" }, "best.pt"), h("option", { value: "last" }, "last.pt"));
    const conf = h("input", { type: "number", name: "confidence_threshold", min: "0", max: "1", step: "any", value: "0.25" });
    const go = h("button", { type: "submit", class: "btn btn-primary" }, "Predict");
    const out = h("div", { id: "predict-result", "aria-live": "polite" });
    const form = h(
      "form",
      { class: "card", novalidate: true },
      h("div", { class: "row wrap" }, field("Image", file, { name: "image" }), field("Weights", which, { name: "checkpoint" }), field("Minimum score", conf, { name: "confidence_threshold" }), go),
      errorBox(),
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      busy(go, async () => {
        clearFormErrors(form);
        const f = file.files[0];
        if (!f) {
          showFormError(form, { message: "Choose an image first.", fieldViolations: [] });
          return;
        }
        try {
          const r = await post(`/v1/${name}:predict`, {
            image: await base64(f),
            checkpoint: which.value,
            confidenceThreshold: Number(conf.value) || 0,
          });
          if (predictUrl) URL.revokeObjectURL(predictUrl);
          predictUrl = URL.createObjectURL(f);
          const dets = r.detections || [];
          const img = h("img", { src: predictUrl, alt: `${f.name} with ${dets.length} predictions drawn`, class: "large-img" });
          const frame = h("div", { class: "frame frame-large" }, img);
          if (dets.length) frame.append(overlaySvg(r.imageWidth, r.imageHeight, dets.map(itemFromDetection), new Map()));
          const classes = r.classes || [];
          clear(
            out,
            h("p", { class: "muted" }, `${dets.length} detections${classes.length ? `, top class ${classes[0].categoryName}` : ""} in ${fmt(r.inferenceMs)} ms (${r.checkpointKey || which.value}).`),
            frame,
            classes.length
              ? h("ol", { class: "classes" }, classes.map((c) => h("li", {}, `${c.categoryName}: ${(100 * (c.score || 0)).toFixed(1)}%`)))
              : null,
            dets.length
              ? h(
                  "table",
                  { class: "table" },
                  h("caption", {}, "Detections"),
                  h("thead", {}, h("tr", {}, ["Class", "Score", "Box (x, y, w, h)"].map((t) => h("th", { scope: "col" }, t)))),
                  h(
                    "tbody",
                    {},
                    dets.slice(0, 50).map((d) =>
                      h("tr", {}, h("td", {}, d.categoryName || d.categoryId || 0), h("td", { class: "num" }, fmt(d.score || 0)), h("td", {}, d.box ? [d.box.x, d.box.y, d.box.width, d.box.height].map((v) => Math.round(v || 0)).join(", ") : "")),
                    ),
                  ),
                )
              : null,
          );
        } catch (err) {
          showFormError(form, err);
        }
      });
    });
    clear(predictSection, h("h2", { id: "predict-title" }, "Predict"), form, out);
  }

  await refresh();
  if (!job) return () => controller.abort();
  followMetrics();
  followLogs();
  return () => {
    alive = false;
    clearTimeout(pollTimer);
    exporter.stop();
    controller.abort();
    if (predictUrl) URL.revokeObjectURL(predictUrl);
  };
}

function rank(filename) {
  if (filename === "best.pt") return 0;
  if (filename === "last.pt") return 1;
  return 2 + Number((/\d+/.exec(filename) || ["0"])[0]);
}
