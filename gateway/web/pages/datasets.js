// Datasets: search, sort, visibility filter, paging; create; public/private; delete.

import { api, get, post, session } from "../api.js";
import { clear, dataTable, field, formatTime, h } from "../dom.js";
import {
  alertText,
  busy,
  clearFormErrors,
  confirmDialog,
  errorBox,
  showFormError,
  toast,
} from "../ui.js";

const SORTS = [
  ["create_time desc", "Newest first"],
  ["create_time", "Oldest first"],
  ["display_name", "Name A-Z"],
  ["display_name desc", "Name Z-A"],
  ["image_count desc", "Most images"],
  ["annotation_count desc", "Most annotations"],
];

export function isOwner(ds) {
  const me = session.user;
  return !!me && ds.owner === (me.name || `users/${me.username}`);
}

export function renderDatasets({ main, params }) {
  const state = {
    search: params.get("q") || "",
    orderBy: params.get("sort") || SORTS[0][0],
    visibility: params.get("visibility") || "",
    labeled: params.get("labeled") || "",
    tokens: [""],
    page: 0,
    pageSize: 25,
  };
  let seq = 0;

  const search = h("input", { type: "search", name: "search", value: state.search });
  const sort = h(
    "select",
    { name: "sort" },
    SORTS.map(([v, l]) => h("option", { value: v, selected: v === state.orderBy }, l)),
  );
  const visibility = h(
    "select",
    { name: "visibility" },
    h("option", { value: "" }, "Any"),
    h("option", { value: "VISIBILITY_PUBLIC" }, "Public"),
    h("option", { value: "VISIBILITY_PRIVATE" }, "Private"),
  );
  visibility.value = state.visibility;
  const labeled = h(
    "select",
    { name: "labeled" },
    h("option", { value: "" }, "Any"),
    h("option", { value: "true" }, "Labeled"),
    h("option", { value: "false" }, "Unlabeled"),
  );
  labeled.value = state.labeled;
  const body = h("tbody", {});
  const summary = h("p", { class: "muted", "aria-live": "polite" });
  const prev = h("button", { type: "button", class: "btn", disabled: true }, "Previous page");
  const next = h("button", { type: "button", class: "btn", disabled: true }, "Next page");
  const status = h("div", {});

  function filter() {
    const terms = [];
    if (state.search) terms.push(`display_name:${JSON.stringify(state.search)}`);
    if (state.visibility) terms.push(`visibility=${state.visibility}`);
    if (state.labeled) terms.push(`labeled=${state.labeled}`);
    return terms.join(" AND ");
  }

  async function load() {
    const mine = ++seq;
    clear(status);
    try {
      const reply = await get("/v1/datasets", {
        pageSize: state.pageSize,
        pageToken: state.tokens[state.page],
        filter: filter(),
        orderBy: state.orderBy,
      });
      if (mine !== seq) return;
      const rows = reply.datasets || [];
      clear(body, rows.length ? rows.map(row) : emptyRow());
      const total = Number(reply.totalSize || 0);
      const first = state.page * state.pageSize;
      summary.textContent = rows.length
        ? `Showing ${first + 1}-${first + rows.length}${total ? ` of ${total}` : ""} datasets`
        : "No datasets match.";
      state.tokens[state.page + 1] = reply.nextPageToken || "";
      next.disabled = !reply.nextPageToken;
      prev.disabled = state.page === 0;
    } catch (err) {
      if (mine === seq) clear(status, alertText(err));
    }
  }

  const emptyRow = () =>
    h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No datasets yet: create one above."));

  function row(ds) {
    const id = ds.name.split("/")[1];
    const owner = isOwner(ds);
    const pub = ds.visibility === "VISIBILITY_PUBLIC";
    const toggle = h(
      "button",
      {
        type: "button",
        class: "btn btn-small",
        hidden: !owner,
      },
      pub ? "Make private" : "Make public",
      h("span", { class: "sr-only" }, ` ${ds.displayName}`),
    );
    toggle.addEventListener("click", () =>
      busy(toggle, async () => {
        try {
          const want = pub ? "VISIBILITY_PRIVATE" : "VISIBILITY_PUBLIC";
          await api("PATCH", `/v1/${ds.name}?updateMask=visibility`, {
            name: ds.name,
            visibility: want,
          });
          toast(`${ds.displayName} is now ${want === "VISIBILITY_PUBLIC" ? "public" : "private"}.`);
          load();
        } catch (err) {
          toast(err.message, "error");
        }
      }),
    );
    const del = h(
      "button",
      {
        type: "button",
        class: "btn btn-small btn-danger",
        "aria-label": `Delete ${ds.displayName}`,
        hidden: !owner,
      },
      "Delete",
    );
    del.addEventListener("click", async () => {
      const ok = await confirmDialog(
        `Delete ${ds.displayName}?`,
        `Its ${ds.imageCount || 0} images, annotations and snapshots go with it. This cannot be undone.`,
        { confirmLabel: "Delete", danger: true },
      );
      if (!ok) return;
      try {
        await api("DELETE", `/v1/${ds.name}`);
        toast(`Deleted ${ds.displayName}.`);
        load();
      } catch (err) {
        toast(err.message, "error");
      }
    });
    return h(
      "tr",
      { dataset: { name: ds.name } },
      h(
        "th",
        { scope: "row" },
        h(
          "a",
          {
            href: `#/datasets/${id}`,
            onclick: () => sessionStorage.setItem(`visionmesh.${ds.name}`, JSON.stringify(ds)),
          },
          ds.displayName || id,
        ),
      ),
      h(
        "td",
        { class: "vis" },
        h("span", { class: pub ? "badge ok" : "badge", dataset: { visibility: pub ? "public" : "private" } }, pub ? "Public" : "Private"),
        " ",
        toggle,
      ),
      h("td", { class: "num" }, Number(ds.imageCount || 0).toLocaleString()),
      h("td", { class: "num" }, Number(ds.annotationCount || 0).toLocaleString()),
      h("td", {}, ds.labeled ? "Labeled" : "Unlabeled"),
      h("td", {}, (ds.owner || "").replace(/^users\//, "")),
      h("td", {}, formatTime(ds.updateTime || ds.createTime)),
      h("td", {}, del),
    );
  }

  // create
  const name = h("input", { name: "displayName", required: true, maxLength: 200 });
  const description = h("input", { name: "description" });
  const vis = h(
    "select",
    { name: "visibility" },
    h("option", { value: "VISIBILITY_PRIVATE" }, "Private"),
    h("option", { value: "VISIBILITY_PUBLIC" }, "Public"),
  );
  const createBtn = h("button", { type: "submit", class: "btn btn-primary" }, "Create dataset");
  const create = h(
    "form",
    { class: "card inline-form", "aria-label": "Create a dataset" },
    h("h2", {}, "New dataset"),
    h(
      "div",
      { class: "row wrap" },
      field("Name", name, { name: "display_name" }),
      field("Description", description, { name: "description" }),
      field("Visibility", vis, { name: "visibility" }),
      createBtn,
    ),
    errorBox(),
  );
  create.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(createBtn, async () => {
      clearFormErrors(create);
      try {
        const reply = await post("/v1/datasets", {
          displayName: name.value.trim(),
          description: description.value.trim(),
          visibility: vis.value,
        });
        const ds = reply.dataset || reply;
        toast(`Created ${ds.displayName}.`);
        location.hash = `#/datasets/${ds.name.split("/")[1]}`;
      } catch (err) {
        showFormError(create, err);
      }
    });
  });

  let timer = null;
  const restart = () => {
    state.tokens = [""];
    state.page = 0;
    load();
  };
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      state.search = search.value.trim();
      restart();
    }, 250);
  });
  sort.addEventListener("change", () => {
    state.orderBy = sort.value;
    restart();
  });
  visibility.addEventListener("change", () => {
    state.visibility = visibility.value;
    restart();
  });
  labeled.addEventListener("change", () => {
    state.labeled = labeled.value;
    restart();
  });
  prev.addEventListener("click", () => {
    state.page = Math.max(0, state.page - 1);
    load();
  });
  next.addEventListener("click", () => {
    state.page += 1;
    load();
  });

  main.append(
    h("h1", {}, "Datasets"),
    create,
    h(
      "div",
      { class: "row wrap toolbar", role: "search" },
      field("Search by name", search),
      field("Sort", sort),
      field("Filter by visibility", visibility),
      field("Filter by labels", labeled),
    ),
    summary,
    status,
    dataTable(
      {
        id: "datasets-table",
        caption: "Datasets you can see",
        headers: [
          ...["Name", "Visibility", "Images", "Annotations", "Labels", "Owner", "Updated"],
          h("span", { class: "sr-only" }, "Actions"),
        ],
      },
      body,
    ),
    h("div", { class: "row pager" }, prev, next),
  );
  load();
  return () => clearTimeout(timer);
}
