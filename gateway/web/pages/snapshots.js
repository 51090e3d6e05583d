// Snapshots: list, create, diff two (or a snapshot against the current head).

import { get, post } from "../api.js";
import { clear, dataTable, field, formatTime, h } from "../dom.js";
import { alertText, busy, clearFormErrors, errorBox, showFormError, toast } from "../ui.js";

export async function renderSnapshots(body, ctx) {
  const list = h("tbody", {});
  const status = h("div", {});
  const base = h("select", { name: "base" });
  const target = h("select", { name: "target" });
  const diffOut = h("div", { id: "diff-result", "aria-live": "polite" });
  let snapshots = [];

  async function load() {
    clear(status);
    try {
      snapshots = [];
      let token = "";
      do {
        const reply = await get(`/v1/${ctx.name}/snapshots`, { pageSize: 200, pageToken: token });
        snapshots.push(...(reply.snapshots || []));
        token = reply.nextPageToken || "";
      } while (token && snapshots.length < 2000);
    } catch (err) {
      clear(status, alertText(err));
      return;
    }
    clear(
      list,
      snapshots.length
        ? snapshots.map((s) =>
            h(
              "tr",
              { dataset: { name: s.name } },
              h("th", { scope: "row" }, s.versionName || h("span", { class: "muted" }, s.name.split("/").pop())),
              h("td", {}, s.automatic ? `automatic: ${s.reason || ""}` : s.description || ""),
              h("td", { class: "num" }, Number(s.imageCount || 0).toLocaleString()),
              h("td", { class: "num" }, Number(s.annotationCount || 0).toLocaleString()),
              h("td", {}, (s.creator || "").replace(/^users\//, "")),
              h("td", {}, formatTime(s.createTime)),
            ),
          )
        : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No snapshots yet.")),
    );
    const label = (s) => `${s.versionName || s.name.split("/").pop()} (${formatTime(s.createTime)})`;
    clear(base, snapshots.map((s) => h("option", { value: s.name }, label(s))));
    clear(
      target,
      h("option", { value: ctx.name }, "Current dataset (head)"),
      snapshots.map((s) => h("option", { value: s.name }, label(s))),
    );
    if (snapshots.length > 1) {
      base.value = snapshots[1].name;
      target.value = snapshots[0].name;
    }
  }

  // create
  const version = h("input", { name: "versionName", maxLength: 100 });
  const description = h("input", { name: "description" });
  const createBtn = h("button", { type: "submit", class: "btn btn-primary" }, "Create snapshot");
  const create = h(
    "form",
    { class: "card", "aria-labelledby": "snap-title" },
    h("h2", { id: "snap-title" }, "New snapshot"),
    h(
      "div",
      { class: "row wrap" },
      field("Version name", version, { name: "version_name" }),
      field("Description", description, { name: "description" }),
      createBtn,
    ),
    errorBox(),
  );
  create.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(createBtn, async () => {
      clearFormErrors(create);
      try {
        const reply = await post(`/v1/${ctx.name}/snapshots`, {
          versionName: version.value.trim(),
          description: description.value.trim(),
        });
        const snap = reply.snapshot || reply;
        toast(`Snapshot ${snap.versionName || snap.name} created.`);
        version.value = "";
        description.value = "";
        await load();
      } catch (err) {
        showFormError(create, err);
      }
    });
  });
  if (!ctx.owner) create.hidden = true;

  // diff
  const diffBtn = h("button", { type: "submit", class: "btn" }, "Compare");
  const diffForm = h(
    "form",
    { class: "card", "aria-labelledby": "diff-title" },
    h("h2", { id: "diff-title" }, "Compare two versions"),
    h("div", { class: "row wrap" }, field("From (base)", base), field("To (target)", target), diffBtn),
    errorBox(),
  );
  diffForm.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(diffBtn, async () => {
      clearFormErrors(diffForm);
      clear(diffOut);
      if (!base.value) {
        clear(diffOut, alertText(new Error("Create a snapshot first.")));
        return;
      }
      try {
        const d = await get(`/v1/${base.value}:diff`, { target: target.value });
        clear(diffOut, diffView(d));
      } catch (err) {
        showFormError(diffForm, err);
      }
    });
  });

  body.append(
    create,
    h("h2", {}, "Snapshots"),
    status,
    dataTable(
      {
        id: "snapshots-table",
        caption: "Snapshots of the dataset, newest first",
        headers: ["Version", "Description", "Images", "Annotations", "By", "Created"],
      },
      list,
    ),
    diffForm,
    diffOut,
  );
  await load();
  return null;
}

function diffView(d) {
  const added = d.addedImages || [];
  const removed = d.removedImages || [];
  const changed = d.changedImages || [];
  const classes = d.classChanges || [];
  const imgList = (title, items) =>
    items.length
      ? h(
          "details",
          {},
          h("summary", {}, `${title}: ${items.length}`),
          h("ul", { class: "paths" }, items.slice(0, 500).map((p) => h("li", {}, h("code", {}, p)))),
        )
      : h("p", {}, `${title}: 0`);
  return h(
    "div",
    { class: "card" },
    h("h3", {}, "Changes"),
    imgList("Images added", added),
    imgList("Images removed", removed),
    imgList("Images changed (same path, other bytes)", changed),
    h(
      "p",
      {},
      `Annotations: +${d.addedAnnotationCount || 0} added, −${d.removedAnnotationCount || 0} removed, ${d.changedAnnotationCount || 0} changed`,
    ),
    classes.length
      ? h(
          "table",
          { class: "table" },
          h("caption", {}, "Annotations per class"),
          h("thead", {}, h("tr", {}, ["Class", "Before", "After", "Change"].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            classes.map((c) => {
              const b = Number(c.baseCount || 0);
              const t = Number(c.targetCount || 0);
              return h(
                "tr",
                {},
                h("th", { scope: "row" }, c.categoryName),
                h("td", { class: "num" }, b),
                h("td", { class: "num" }, t),
                h("td", { class: "num" }, t - b > 0 ? `+${t - b}` : `${t - b}`),
              );
            }),
          ),
        )
      : null,
  );
}
