// Tiny DOM helpers: h() builds elements, no framework and no build step.

export function h(tag, attrs, ...children) {
  const el = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "class") {
      el.setAttribute("class", value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "style" && typeof value === "object") {
      Object.assign(el.style, value);
    } else if (key in el && !tag.startsWith("svg:") && typeof value !== "string") {
      el[key] = value;
    } else if (key === "value" && "value" in el) {
      el.value = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function svg(tag, attrs, ...children) {
  return h(`svg:${tag}`, attrs, ...children);
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let idCounter = 0;
export function uid(prefix = "id") {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** A labelled form field: <div class="field"><label/><control/><p hint/><p error/></div>. */
export function field(label, control, { hint, name } = {}) {
  control.id ||= uid("f");
  const described = [];
  const error = h("p", { class: "field-error", id: `${control.id}-error`, hidden: true });
  let hintEl = null;
  if (hint) {
    hintEl = h("p", { class: "hint", id: `${control.id}-hint` }, hint);
    described.push(hintEl.id);
  }
  described.push(error.id);
  control.setAttribute("aria-describedby", described.join(" "));
  const wrap = h(
    "div",
    { class: "field", dataset: { field: name || control.name || "" } },
    h("label", { for: control.id }, label),
    control,
    hintEl,
    error,
  );
  return wrap;
}

// A data table in its scrolling wrapper: a caption for screen readers, column headers
// (a string, or a node such as a visually hidden "Actions"), and the body element.
export function dataTable({ id, className = "table", caption, headers }, body) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: className, id },
      h("caption", { class: "sr-only" }, caption),
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      body,
    ),
  );
}

export function formatBytes(n) {
  const v = Number(n || 0);
  if (v < 1024) return `${v} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let x = v / 1024;
  let i = 0;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i += 1;
  }
  return `${x.toFixed(x < 10 ? 1 : 0)} ${units[i]}`;
}

export function formatTime(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toLocaleString();
}

export function enumLabel(value, prefix) {
  if (!value) return "";
  const s = String(value).replace(prefix, "").toLowerCase().replaceAll("_", " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

export const TASKS = [
  "TASK_TYPE_IMAGE_CLASSIFICATION",
  "TASK_TYPE_OBJECT_DETECTION",
  "TASK_TYPE_INSTANCE_SEGMENTATION",
  "TASK_TYPE_SEMANTIC_SEGMENTATION",
  "TASK_TYPE_POSE_ESTIMATION",
];

export const taskLabel = (t) => enumLabel(t, "TASK_TYPE_");

/** Distinct, readable colours per class id (golden-angle hues). */
export function classColor(id) {
  const hue = (Number(id) * 137.508 + 20) % 360;
  return `hsl(${hue.toFixed(1)}, 85%, 45%)`;
}
