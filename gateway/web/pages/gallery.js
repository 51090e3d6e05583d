// Gallery: a page of thumbnails (cursor paging, so page 200 of 10,000 images costs what page
// 1 does) with annotation overlays, class toggles, a large view, and a histogram per split.

import { fetchBlob, get } from "../api.js";
import { clear, h } from "../dom.js";
import { indexDocument, itemFromAnnotation, overlaySvg } from "../overlay.js";
import { alertText } from "../ui.js";

const THUMB = 256;

// Annotation documents by dataset, kept while the tab lives (paging and switching sections
// do not fetch them again); an import forgets its dataset's.
const documents = new Map();
export function forgetAnnotations(name) {
  documents.delete(name);
}
const PARALLEL = 8;

/** Runs `tasks` (functions returning promises) at most `limit` at a time. */
async function pool(tasks, limit, signal) {
  let next = 0;
  const worker = async () => {
    while (next < tasks.length && !signal.aborted) {
      const task = tasks[next];
      next += 1;
      await task().catch(() => {});
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
}

export function renderGallery(body, ctx) {
  let ds = ctx.dataset || {};
  let health = ds.health || {};
  const state = {
    pageSize: Number(ctx.params.get("pageSize")) || 48,
    split: ctx.params.get("split") || "",
    labeled: "",
    tokens: [""],
    page: 0,
    hidden: new Set(),
  };
  let controller = new AbortController();
  let urls = [];
  let annotations = null; // {categories, byPath}
  let annotationsPromise = null;
  let pageImages = [];

  const hideStyle = h("style", {});
  const grid = h("ul", { class: "gallery", "aria-label": "Images", "aria-busy": "true" });
  const status = h("p", { class: "muted", "aria-live": "polite" });
  const errors = h("div", {});
  const prev = h("button", { type: "button", class: "btn", disabled: true }, "Previous page");
  const next = h("button", { type: "button", class: "btn", disabled: true }, "Next page");
  const toggles = h("fieldset", { class: "class-toggles" }, h("legend", {}, "Classes shown"));
  const histogram = h("div", { class: "histogram" });

  const splitSel = h(
    "select",
    { id: "gallery-split" },
    h("option", { value: "" }, "All splits"),
    state.split ? h("option", { value: state.split, selected: true }, state.split) : null,
  );
  const datasetReady = Promise.resolve(ctx.ready).then(() => {
    ds = ctx.dataset || {};
    health = ds.health || {};
    for (const split of Object.keys(health.imagesPerSplit || {})) {
      if (split && split !== state.split) splitSel.append(h("option", { value: split }, split));
    }
    paintToggles();
    paintHistogram();
  });
  const labeledSel = h(
    "select",
    { id: "gallery-labeled" },
    h("option", { value: "" }, "All images"),
    h("option", { value: "true" }, "With annotations"),
    h("option", { value: "false" }, "Without annotations"),
  );
  const sizeSel = h(
    "select",
    { id: "gallery-size" },
    [24, 48, 96, 200].map((n) => h("option", { value: n, selected: n === state.pageSize }, n)),
  );

  function paintToggles() {
    const cats = annotations
      ? [...annotations.categories.values()]
      : (ds.categories || []).map((c) => ({ id: Number(c.id), name: c.name }));
    const counts = new Map();
    for (const c of health.classCounts || []) {
      const id = Number(c.categoryId || 0);
      counts.set(id, (counts.get(id) || 0) + Number(c.annotationCount || 0));
    }
    const present = cats.filter((c) => counts.get(c.id));
    const absent = cats.length - present.length;
    const shown = state.allClasses || !present.length ? cats : present;
    clear(
      toggles,
      h("legend", {}, "Classes shown"),
      shown.length
        ? shown.map((c) => {
            const box = h("input", {
              type: "checkbox",
              checked: !state.hidden.has(c.id),
              dataset: { cat: String(c.id) },
            });
            box.addEventListener("change", () => {
              if (box.checked) state.hidden.delete(c.id);
              else state.hidden.add(c.id);
              paintHidden();
            });
            return h(
              "label",
              { class: "toggle" },
              box,
              h("span", { class: "swatch", style: { background: c.color || "#888" } }),
              ` ${c.name}`,
              counts.has(c.id) ? h("span", { class: "muted" }, ` (${counts.get(c.id)})`) : null,
            );
          })
        : h("p", { class: "muted" }, "No classes: import annotations to see overlays."),
      absent && present.length
        ? h(
            "button",
            {
              type: "button",
              class: "btn btn-link",
              onclick: () => {
                state.allClasses = !state.allClasses;
                paintToggles();
              },
            },
            state.allClasses ? "Only classes with annotations" : `Show ${absent} classes without annotations`,
          )
        : null,
    );
  }

  function paintHidden() {
    hideStyle.textContent = [...state.hidden]
      .map((id) => `.overlay [data-cat="${id}"] { display: none; }`)
      .join("\n");
  }

  function paintHistogram() {
    const bySplit = new Map();
    for (const c of health.classCounts || []) {
      const split = c.split || "(no split)";
      if (!bySplit.has(split)) bySplit.set(split, []);
      bySplit.get(split).push(c);
    }
    if (!bySplit.size) {
      clear(histogram);
      return;
    }
    const max = Math.max(1, ...(health.classCounts || []).map((c) => Number(c.annotationCount || 0)));
    clear(
      histogram,
      h("h2", {}, "Classes per split"),
      [...bySplit.entries()].map(([split, rows]) =>
        h(
          "table",
          { class: "hist" },
          h("caption", {}, `${split} (${Number(health.imagesPerSplit?.[split === "(no split)" ? "" : split] || 0)} images)`),
          h(
            "thead",
            { class: "sr-only" },
            h("tr", {}, h("th", { scope: "col" }, "Class"), h("th", { scope: "col" }, "Annotations"), h("th", { scope: "col" }, "Images")),
          ),
          h(
            "tbody",
            {},
            rows
              .sort((a, b) => Number(b.annotationCount || 0) - Number(a.annotationCount || 0))
              .map((c) => {
                const n = Number(c.annotationCount || 0);
                const cat = annotations?.categories.get(Number(c.categoryId || 0));
                return h(
                  "tr",
                  {},
                  h("th", { scope: "row" }, c.categoryName),
                  h(
                    "td",
                    { class: "bar-cell" },
                    h("span", {
                      class: "bar",
                      style: { width: `${(75 * n) / max}%`, background: cat?.color || "#3b6fd8" },
                      "aria-hidden": "true",
                    }),
                    h("span", { class: "bar-num" }, `${n}`),
                  ),
                  h("td", { class: "num muted" }, `${Number(c.imageCount || 0)} img`),
                );
              }),
          ),
        ),
      ),
    );
  }

  /** The dataset's annotations, fetched once; `labeled` says whether any are known to exist. */
  function loadAnnotations(labeled) {
    if (!annotationsPromise && !labeled) {
      return Promise.resolve({ categories: new Map(), byPath: new Map(), sizes: new Map() });
    }
    if (!documents.has(ctx.name)) {
      const p = get(`/v1/${ctx.name}/annotations`).then((reply) =>
        indexDocument(JSON.parse(reply.document || "{}")),
      );
      documents.set(ctx.name, p);
      p.catch(() => documents.delete(ctx.name));
    }
    annotationsPromise ||= documents
      .get(ctx.name)
      .then((index) => {
        annotations = index;
        paintToggles();
        paintHistogram();
        return annotations;
      });
    annotationsPromise.catch(() => {
      annotationsPromise = null; // a later page asks again
    });
    return annotationsPromise;
  }

  function tile(img, index) {
    const thumb = h("img", {
      alt: `${img.path}${img.annotationCount ? `, ${img.annotationCount} annotations` : ""}`,
      width: THUMB,
      height: THUMB,
      decoding: "async",
    });
    const frame = h("div", { class: "frame" }, thumb);
    const button = h(
      "button",
      { type: "button", class: "tile-btn", "aria-label": `Open ${img.path} large` },
      frame,
    );
    button.addEventListener("click", () => openLarge(index));
    const li = h(
      "li",
      { class: "tile", dataset: { path: img.path, name: img.name } },
      button,
      h(
        "p",
        { class: "tile-caption", title: img.path },
        h("span", { class: "name" }, img.path.split("/").pop()),
        img.split ? h("span", { class: "chip" }, img.split) : null,
      ),
    );
    li._thumb = thumb;
    li._frame = frame;
    li._img = img;
    return li;
  }

  function drawOverlay(li) {
    if (!annotations) return;
    li._frame.querySelector(".overlay")?.remove();
    const anns = annotations.byPath.get(li._img.path) || [];
    const [w, hgt] = [li._img.width, li._img.height];
    li._frame.append(
      overlaySvg(w, hgt, anns.map(itemFromAnnotation), annotations.categories, { labels: false }),
    );
    li.dataset.annotations = String(anns.length);
  }

  async function load() {
    controller.abort();
    controller = new AbortController();
    const { signal } = controller;
    for (const u of urls) URL.revokeObjectURL(u);
    urls = [];
    grid.setAttribute("aria-busy", "true");
    delete grid.dataset.ready;
    delete grid.dataset.firstScreen;
    clear(errors);
    const filter = [];
    if (state.split) filter.push(`split=${JSON.stringify(state.split)}`);
    if (state.labeled) filter.push(`labeled=${state.labeled}`);
    let reply;
    try {
      reply = await get(
        `/v1/${ctx.name}/images`,
        { pageSize: state.pageSize, pageToken: state.tokens[state.page], filter: filter.join(" AND ") },
        { signal },
      );
    } catch (err) {
      if (!signal.aborted) clear(errors, alertText(err));
      return;
    }
    if (signal.aborted) return;
    pageImages = reply.images || [];
    // a page with annotated images needs the document: ask for it before building the tiles
    const labeled = pageImages.some((i) => Number(i.annotationCount || 0) > 0);
    const annDoc = loadAnnotations(labeled);
    annDoc.catch(() => {});
    state.tokens[state.page + 1] = reply.nextPageToken || "";
    const total = Number(reply.totalSize || 0);
    const pages = total ? Math.max(1, Math.ceil(total / state.pageSize)) : 0;
    status.textContent = pageImages.length
      ? `Page ${state.page + 1}${pages ? ` of ${pages}` : ""} · ${total.toLocaleString()} images`
      : "No images here yet: upload a folder.";
    prev.disabled = state.page === 0;
    next.disabled = !reply.nextPageToken;
    const items = pageImages.map(tile);
    clear(grid, items);
    const annP = annDoc
      .then(() => {
        if (!signal.aborted) for (const li of items) drawOverlay(li);
      })
      .catch((err) => {
        if (!signal.aborted) clear(errors, alertText(err));
      });
    // thumbnails load in page order, so the tiles on screen come first; the first screen is
    // ready once those are decoded and the overlays drawn (the rest keep loading below)
    const visible = items.filter((li) => li.getBoundingClientRect().top < window.innerHeight);
    const loaded = new Map();
    const tasks = items.map((li) => {
      let done;
      loaded.set(li, new Promise((resolve) => (done = resolve)));
      return async () => {
        try {
          const blob = await fetchBlob(`/v1/${li._img.name}:content?thumbnailSize=${THUMB}`, {
            signal,
          });
          if (signal.aborted) return;
          const url = URL.createObjectURL(blob);
          urls.push(url);
          li._thumb.src = url;
          await li._thumb.decode().catch(() => {});
        } finally {
          done();
        }
      };
    });
    const all = pool(tasks, PARALLEL, signal);
    await Promise.all([...visible.map((li) => loaded.get(li)), annP]);
    if (signal.aborted) return;
    grid.dataset.firstScreen = String(state.page + 1);
    if (!performance.getEntriesByName("vm:gallery-first-screen").length) {
      performance.mark("vm:gallery-first-screen");
    }
    await all;
    if (signal.aborted) return;
    grid.setAttribute("aria-busy", "false");
    grid.dataset.ready = String(state.page + 1);
    ctx.onFirstScreen?.();
  }

  // the large view
  const dialog = h("dialog", { class: "dialog large", "aria-labelledby": "large-title" });
  let largeUrl = null;
  let largeIndex = -1;
  async function openLarge(index) {
    const img = pageImages[index];
    if (!img) return;
    largeIndex = index;
    const title = h("h2", { id: "large-title" }, img.path);
    const picture = h("img", { alt: `${img.path} at full size`, class: "large-img" });
    const frame = h("div", { class: "frame frame-large" }, picture);
    const list = h("ul", { class: "ann-list" });
    const close = h("button", { type: "button", class: "btn", "data-close": "" }, "Close");
    close.addEventListener("click", () => dialog.close());
    const prevBtn = h("button", { type: "button", class: "btn", disabled: index === 0 }, "Previous image");
    const nextBtn = h(
      "button",
      { type: "button", class: "btn", disabled: index >= pageImages.length - 1 },
      "Next image",
    );
    prevBtn.addEventListener("click", () => openLarge(index - 1));
    nextBtn.addEventListener("click", () => openLarge(index + 1));
    clear(
      dialog,
      h("div", { class: "row spread" }, title, close),
      h(
        "p",
        { class: "muted" },
        `${img.width}×${img.height} px · ${img.split || "no split"} · ${img.annotationCount || 0} annotations`,
      ),
      frame,
      list,
      h("div", { class: "row" }, prevBtn, nextBtn),
    );
    if (!dialog.open) dialog.showModal();
    close.focus();
    await loadAnnotations(Number(img.annotationCount || 0) > 0).catch(() => null);
    const anns = annotations?.byPath.get(img.path) || [];
    frame.append(overlaySvg(img.width, img.height, anns.map(itemFromAnnotation), annotations?.categories || new Map()));
    clear(
      list,
      anns.map((a) => {
        const cat = annotations.categories.get(Number(a.category_id));
        const b = a.bbox || [];
        return h(
          "li",
          {},
          h("span", { class: "swatch", style: { background: cat?.color || "#888" } }),
          ` ${cat?.name || a.category_id}`,
          b.length === 4 ? h("span", { class: "muted" }, ` box ${b.map((v) => Math.round(v)).join(", ")}`) : null,
        );
      }),
    );
    try {
      const blob = await fetchBlob(`/v1/${img.name}:content`);
      if (largeUrl) URL.revokeObjectURL(largeUrl);
      largeUrl = URL.createObjectURL(blob);
      picture.src = largeUrl;
    } catch (err) {
      list.before(alertText(err));
    }
  }
  dialog.addEventListener("keydown", (e) => {
    if (e.key === "ArrowRight" && largeIndex < pageImages.length - 1) openLarge(largeIndex + 1);
    if (e.key === "ArrowLeft" && largeIndex > 0) openLarge(largeIndex - 1);
  });

  const restart = () => {
    state.tokens = [""];
    state.page = 0;
    load();
  };
  splitSel.addEventListener("change", () => {
    state.split = splitSel.value;
    restart();
  });
  labeledSel.addEventListener("change", () => {
    state.labeled = labeledSel.value;
    restart();
  });
  sizeSel.addEventListener("change", () => {
    state.pageSize = Number(sizeSel.value);
    restart();
  });
  // a new page shows from its first row
  const toTop = () => status.scrollIntoView({ block: "start" });
  prev.addEventListener("click", () => {
    state.page = Math.max(0, state.page - 1);
    toTop();
    load();
  });
  next.addEventListener("click", () => {
    state.page += 1;
    toTop();
    load();
  });

  body.append(
    hideStyle,
    h(
      "div",
      { class: "gallery-layout" },
      h(
        "div",
        { class: "gallery-main" },
        h(
          "div",
          { class: "row wrap toolbar" },
          h("div", { class: "field" }, h("label", { for: splitSel.id }, "Split"), splitSel),
          h("div", { class: "field" }, h("label", { for: labeledSel.id }, "Show"), labeledSel),
          h("div", { class: "field" }, h("label", { for: sizeSel.id }, "Per page"), sizeSel),
        ),
        status,
        errors,
        grid,
        h("div", { class: "row pager" }, prev, next),
      ),
      h("aside", { class: "gallery-side", "aria-label": "Classes" }, toggles, histogram),
    ),
    dialog,
  );
  load();
  return () => {
    controller.abort();
    for (const u of urls) URL.revokeObjectURL(u);
    if (largeUrl) URL.revokeObjectURL(largeUrl);
  };
}
