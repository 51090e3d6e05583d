// Jobs of every trainer (GET /v1/trainers/-/jobs): state, progress, queue position.

import { get } from "../api.js";
import { clear, dataTable, formatTime, h, taskLabel } from "../dom.js";
import { alertText } from "../ui.js";

export const ACTIVE = new Set(["JOB_STATE_QUEUED", "JOB_STATE_PREPARING", "JOB_STATE_RUNNING"]);

export function stateBadge(state) {
  const s = (state || "JOB_STATE_UNSPECIFIED").replace("JOB_STATE_", "").toLowerCase();
  return h("span", { class: `badge state-${s}`, dataset: { state: s } }, s);
}

/** "#3" in the queue, or "starting" once a worker picked it (position 0). */
export function queueText(job) {
  return job.queuePosition ? `#${job.queuePosition}` : "starting";
}

export function jobHref(name) {
  const [, fw, , id] = name.split("/");
  return `#/jobs/${fw}/${id}`;
}

export function renderJobs({ main }) {
  const body = h("tbody", {});
  const status = h("div", {});
  const prev = h("button", { type: "button", class: "btn", disabled: true }, "Previous page");
  const next = h("button", { type: "button", class: "btn", disabled: true }, "Next page");
  const tokens = [""];
  let page = 0;
  let timer = null;
  let alive = true;

  async function load() {
    clearTimeout(timer);
    try {
      const reply = await get("/v1/trainers/-/jobs", { pageSize: 50, pageToken: tokens[page] });
      if (!alive) return;
      const jobs = reply.jobs || [];
      tokens[page + 1] = reply.nextPageToken || "";
      next.disabled = !reply.nextPageToken;
      prev.disabled = page === 0;
      clear(status);
      clear(
        body,
        jobs.length
          ? jobs.map(row)
          : h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No jobs yet: ", h("a", { href: "#/train" }, "start a training"), ".")),
      );
      if (jobs.some((j) => ACTIVE.has(j.state))) timer = setTimeout(load, 2000);
    } catch (err) {
      if (alive) clear(status, alertText(err));
    }
  }

  function row(job) {
    const spec = job.spec || {};
    const cur = Number(job.currentEpoch || 0);
    const total = Number(job.totalEpochs || spec.epochs || 0);
    const best = job.bestMetricName && job.bestMetrics ? job.bestMetrics[job.bestMetricName] : undefined;
    return h(
      "tr",
      { dataset: { name: job.name, state: job.state || "" } },
      h("th", { scope: "row" }, h("a", { href: jobHref(job.name) }, job.name.split("/").pop())),
      h("td", {}, job.framework || job.name.split("/")[1], " · ", spec.model || ""),
      h("td", {}, taskLabel(spec.taskType)),
      h("td", {}, (spec.dataset || "").replace(/^datasets\//, "")),
      h("td", {}, stateBadge(job.state)),
      h(
        "td",
        {},
        h("progress", { max: total || 1, value: cur, "aria-label": `Epoch ${cur} of ${total}` }),
        ` ${cur}/${total}`,
      ),
      h("td", { class: "num" }, job.state === "JOB_STATE_QUEUED" ? queueText(job) : ""),
      h("td", {}, best !== undefined ? `${job.bestMetricName} ${Number(best).toFixed(3)}` : "", h("div", { class: "muted" }, formatTime(job.createTime))),
    );
  }

  prev.addEventListener("click", () => {
    page = Math.max(0, page - 1);
    load();
  });
  next.addEventListener("click", () => {
    page += 1;
    load();
  });
  main.append(
    h("div", { class: "row spread" }, h("h1", {}, "Jobs"), h("a", { class: "btn btn-primary", href: "#/train" }, "New training")),
    status,
    dataTable(
      {
        id: "jobs-table",
        caption: "Your training jobs, newest first",
        headers: ["Job", "Model", "Task", "Dataset", "State", "Progress", "Queue", "Best"],
      },
      body,
    ),
    h("div", { class: "row pager" }, prev, next),
  );
  load();
  return () => {
    alive = false;
    clearTimeout(timer);
  };
}
