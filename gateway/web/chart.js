// Line charts drawn as SVG: one chart per metric group, epoch on x, the best epoch marked.

import { clear, h, svg } from "./dom.js";

const PALETTE = ["#1f5fbf", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490", "#a16207", "#be185d"];

/** The chart a metric belongs in. */
export function groupOf(key) {
  if (key === "lr" || key.startsWith("lr/") || key.startsWith("lr")) return "Learning rate";
  if (key.includes("loss")) return "Losses";
  if (/mask_/.test(key)) return "Mask metrics";
  if (/pose_/.test(key)) return "Pose metrics";
  if (/top\d/.test(key)) return "Accuracy";
  if (/miou|pixel_accuracy|dice/.test(key)) return "Segmentation metrics";
  if (/map|precision|recall/.test(key)) return "Box metrics";
  return "Other metrics";
}

const ORDER = ["Losses", "Box metrics", "Mask metrics", "Pose metrics", "Accuracy", "Segmentation metrics", "Other metrics", "Learning rate"];

/** Charts for a growing list of epochs. `update(epochs)` redraws with every epoch so far. */
export function metricCharts(container, { totalEpochs = 0, bestMetric = "" } = {}) {
  const charts = new Map(); // group -> {el, svgEl}
  const W = 520;
  const H = 240;
  const M = { l: 52, r: 14, t: 14, b: 34 };

  function update(epochs, total = totalEpochs) {
    const keys = new Set();
    for (const e of epochs) for (const k of Object.keys(e.values || {})) keys.add(k);
    const groups = new Map();
    for (const k of [...keys].sort()) {
      const g = groupOf(k);
      if (!groups.has(g)) groups.set(g, []);
      groups.get(g).push(k);
    }
    const best = [...epochs].reverse().find((e) => e.isBest);
    for (const g of ORDER) {
      if (!groups.has(g)) continue;
      let chart = charts.get(g);
      if (!chart) {
        const id = `chart-${g.toLowerCase().replace(/\W+/g, "-")}`;
        const fig = h("figure", { class: "chart", id, dataset: { group: g } });
        chart = { fig, id };
        charts.set(g, chart);
        const after = ORDER.slice(ORDER.indexOf(g) + 1).map((x) => charts.get(x)?.fig).find(Boolean);
        if (after) container.insertBefore(fig, after);
        else container.append(fig);
      }
      draw(chart, g, groups.get(g), epochs, total, best);
    }
  }

  function draw(chart, group, series, epochs, total, best) {
    const maxEpoch = Math.max(total || 0, epochs.length ? epochs[epochs.length - 1].epoch : 1, 2);
    let lo = Infinity;
    let hi = -Infinity;
    for (const e of epochs) {
      for (const k of series) {
        const v = e.values?.[k];
        if (typeof v === "number" && Number.isFinite(v)) {
          lo = Math.min(lo, v);
          hi = Math.max(hi, v);
        }
      }
    }
    if (!Number.isFinite(lo)) {
      lo = 0;
      hi = 1;
    }
    if (group !== "Losses" && group !== "Learning rate" && lo >= 0 && hi <= 1) {
      lo = 0;
      hi = Math.max(hi, 0.05);
    }
    if (hi - lo < 1e-9) {
      const nonNegative = lo >= 0;
      hi = lo + (Math.abs(lo) || 1) * 0.1;
      lo -= (Math.abs(lo) || 1) * 0.1;
      if (nonNegative) lo = Math.max(0, lo);
    }
    const pad = (hi - lo) * 0.08;
    lo = lo >= 0 && lo - pad < 0 ? 0 : lo - pad;
    hi += pad;
    const x = (ep) => M.l + ((ep - 1) / (maxEpoch - 1)) * (W - M.l - M.r);
    const y = (v) => H - M.b - ((v - lo) / (hi - lo)) * (H - M.t - M.b);
    const titleId = `${chart.id}-title`;
    const root = svg("svg", {
      viewBox: `0 0 ${W} ${H}`,
      class: "chart-svg",
      role: "img",
      "aria-labelledby": titleId,
    });
    const last = epochs[epochs.length - 1];
    root.append(
      svg(
        "title",
        { id: titleId },
        `${group} by epoch${last ? `; epoch ${last.epoch}: ${series.map((k) => `${k} ${fmt(last.values?.[k])}`).join(", ")}` : ""}`,
      ),
    );
    // axes and grid
    const grid = svg("g", { class: "grid" });
    for (let i = 0; i <= 4; i += 1) {
      const v = lo + ((hi - lo) * i) / 4;
      grid.append(
        svg("line", { x1: M.l, x2: W - M.r, y1: y(v), y2: y(v) }),
        svg("text", { x: M.l - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, fmt(v)),
      );
    }
    const step = Math.max(1, Math.ceil(maxEpoch / 10));
    for (let ep = 1; ep <= maxEpoch; ep += step) {
      grid.append(svg("text", { x: x(ep), y: H - M.b + 16, "text-anchor": "middle", class: "tick" }, String(ep)));
    }
    grid.append(svg("text", { x: (W + M.l) / 2, y: H - 4, "text-anchor": "middle", class: "axis-label" }, "epoch"));
    root.append(grid);
    if (best) {
      root.append(
        svg(
          "g",
          { class: "best-marker", "data-epoch": String(best.epoch) },
          svg("line", { x1: x(best.epoch), x2: x(best.epoch), y1: M.t, y2: H - M.b }),
          svg(
            "text",
            {
              x: x(best.epoch) + (best.epoch > maxEpoch * 0.75 ? -4 : 4),
              y: M.t + 10,
              "text-anchor": best.epoch > maxEpoch * 0.75 ? "end" : "start",
              class: "best-label",
            },
            `best (${best.epoch})`,
          ),
        ),
      );
    }
    series.forEach((k, i) => {
      const color = PALETTE[i % PALETTE.length];
      const pts = epochs.filter((e) => typeof e.values?.[k] === "number");
      const g = svg("g", { class: "series", "data-series": k });
      if (pts.length > 1) {
        g.append(
          svg("polyline", {
            points: pts.map((e) => `${x(e.epoch)},${y(e.values[k])}`).join(" "),
            fill: "none",
            stroke: color,
            "stroke-width": 2,
          }),
        );
      }
      for (const e of pts) {
        g.append(
          svg("circle", {
            cx: x(e.epoch),
            cy: y(e.values[k]),
            r: e.isBest ? 4.5 : 3,
            fill: color,
            class: e.isBest ? "pt pt-best" : "pt",
            "data-epoch": String(e.epoch),
            "data-value": String(e.values[k]),
          }),
        );
      }
      root.append(g);
    });
    const legend = h(
      "ul",
      { class: "legend" },
      series.map((k, i) =>
        h(
          "li",
          {},
          h("span", { class: "swatch", style: { background: PALETTE[i % PALETTE.length] } }),
          ` ${k}`,
          last && typeof last.values?.[k] === "number" ? h("span", { class: "muted" }, ` ${fmt(last.values[k])}`) : null,
          k === bestMetric ? h("span", { class: "badge" }, "picks best") : null,
        ),
      ),
    );
    clear(chart.fig, h("figcaption", {}, group), root, legend);
  }

  return { update };
}

export function fmt(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.001 || a >= 100000)) return v.toExponential(2);
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return v.toFixed(2);
  return v.toFixed(3);
}
