// Sign in / register. The token lives in sessionStorage for this browser tab's session.

import { get, post, session } from "../api.js";
import { field, h } from "../dom.js";
import { busy, clearFormErrors, errorBox, navigate, showFormError, toast } from "../ui.js";

export function renderLogin({ main, params }) {
  let mode = params.get("mode") === "register" ? "register" : "login";
  const username = h("input", {
    name: "username",
    autocomplete: "username",
    required: true,
    minLength: 3,
    maxLength: 64,
  });
  const password = h("input", {
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const title = h("h1", {});
  const submit = h("button", { type: "submit", class: "btn btn-primary" });
  const switchBtn = h("button", { type: "button", class: "btn btn-link" });
  const form = h(
    "form",
    { class: "card narrow", "aria-labelledby": "login-title", novalidate: true },
    field("Username", username, { name: "username" }),
    field("Password", password, { name: "password" }),
    errorBox(),
    h("div", { class: "row" }, submit, switchBtn),
  );
  title.id = "login-title";

  const paint = () => {
    title.textContent = mode === "login" ? "Sign in" : "Create an account";
    submit.textContent = mode === "login" ? "Sign in" : "Register";
    switchBtn.textContent = mode === "login" ? "New here? Create an account" : "I have an account";
    password.autocomplete = mode === "login" ? "current-password" : "new-password";
    password.minLength = mode === "login" ? 0 : 8;
  };
  switchBtn.addEventListener("click", () => {
    mode = mode === "login" ? "register" : "login";
    clearFormErrors(form);
    paint();
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(submit, async () => {
      clearFormErrors(form);
      const creds = { username: username.value.trim(), password: password.value };
      try {
        if (mode === "register") {
          await post("/v1/auth:register", creds);
          toast(`Account ${creds.username} created.`);
        }
        const reply = await post("/v1/auth:login", creds);
        session.set(reply.accessToken, reply.user || { username: creds.username });
        if (!reply.user) {
          const who = await get("/v1/auth:whoami");
          session.set(reply.accessToken, who.user);
        }
        const next = params.get("next");
        navigate(next && next.startsWith("#/") ? next : "#/datasets");
      } catch (err) {
        showFormError(form, err);
      }
    });
  });
  paint();
  main.append(h("section", { class: "login" }, title, form));
  username.focus();
}
