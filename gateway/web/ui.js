// Shared UI pieces: navigation, toasts, confirmation dialogs, errors shown by their field.

import { ApiError } from "./api.js";
import { clear, h } from "./dom.js";

export function navigate(hash) {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = hash;
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const el = h("div", { class: `toast toast-${kind}` }, message);
  box.append(el);
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => el.remove(), 4000);
}

/** A modal <dialog> asking to confirm; resolves true or false. */
export function confirmDialog(title, text, { confirmLabel = "Confirm", danger = false } = {}) {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { class: "dialog", "aria-labelledby": "confirm-title" },
      h("h2", { id: "confirm-title" }, title),
      h("p", {}, text),
      h(
        "form",
        { method: "dialog", class: "row" },
        h("button", { value: "cancel", class: "btn", type: "submit" }, "Cancel"),
        h(
          "button",
          { value: "ok", class: danger ? "btn btn-danger" : "btn btn-primary", type: "submit" },
          confirmLabel,
        ),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/**
 * Shows an error inside `form`: each BadRequest field violation next to the field whose
 * data-field matches its path (the last path segment, camelCase or snake_case), the rest
 * (and the gateway's message) in the form's alert box.
 */
export function showFormError(form, err) {
  clearFormErrors(form);
  const box = form.querySelector(".form-error");
  const leftovers = [];
  const violations = err instanceof ApiError ? err.fieldViolations : [];
  for (const v of violations) {
    const el = findField(form, v.field);
    if (el) {
      const p = el.querySelector(".field-error");
      p.hidden = false;
      p.textContent = v.description || err.message;
      const control = el.querySelector("input, select, textarea");
      control?.setAttribute("aria-invalid", "true");
    } else {
      leftovers.push(v);
    }
  }
  if (box) {
    clear(
      box,
      h("p", {}, err.message),
      leftovers.length
        ? h(
            "ul",
            { class: "problems" },
            leftovers.map((v) =>
              h("li", {}, h("code", {}, v.field || "(request)"), " ", v.description),
            ),
          )
        : null,
    );
    box.hidden = false;
  }
  const first = form.querySelector("[aria-invalid=true]");
  if (first) first.focus();
}

export function clearFormErrors(form) {
  for (const p of form.querySelectorAll(".field-error")) {
    p.hidden = true;
    p.textContent = "";
  }
  for (const c of form.querySelectorAll("[aria-invalid]")) c.removeAttribute("aria-invalid");
  const box = form.querySelector(".form-error");
  if (box) {
    box.hidden = true;
    clear(box);
  }
}

const snake = (s) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

function findField(form, path) {
  if (!path) return null;
  const candidates = [path, snake(path)];
  const tail = path.split(".").pop().replace(/\[.*$/, "");
  candidates.push(tail, snake(tail));
  for (const c of candidates) {
    const el = form.querySelector(`[data-field="${CSS.escape(c)}"]`);
    if (el) return el;
  }
  return null;
}

export function errorBox() {
  return h("div", { class: "form-error", role: "alert", hidden: true });
}

/** A status line that reads errors aloud. */
export function alertText(err) {
  return h("p", { class: "error-text", role: "alert" }, err?.message || String(err));
}

/** Runs fn with the button disabled and a busy label. */
export async function busy(button, fn) {
  const label = button.textContent;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await fn();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    button.textContent = label;
  }
}

/** A small tab strip (role=tablist); onSelect(key). */
export function tabs(items, selected, hrefFor) {
  return h(
    "nav",
    { class: "tabs", "aria-label": "Sections" },
    h(
      "ul",
      {},
      items.map(([key, label]) =>
        h(
          "li",
          {},
          h(
            "a",
            { href: hrefFor(key), "aria-current": key === selected ? "page" : undefined },
            label,
          ),
        ),
      ),
    ),
  );
}
