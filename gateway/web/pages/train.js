// Training: a form built from the trainers' GetCapabilities (models filtered by task,
// hyperparameters with their defaults, bounds and descriptions), and the chat box that
// turns a sentence into a prefilled form (AssistantService.ParseTrainingCommand).

import { capabilities, get, newRequestId, post } from "../api.js";
import { clear, enumLabel, field, h, TASKS, taskLabel, uid } from "../dom.js";
import { busy, clearFormErrors, errorBox, navigate, showFormError, toast } from "../ui.js";

const camel = (s) => s.replace(/_([a-z])/g, (_, c) => c.toUpperCase());

export async function renderTrain({ main, params }) {
  main.append(h("h1", {}, "Train a model"));
  const loading = h("p", { class: "muted" }, "Asking the trainers what they can train…");
  main.append(loading);
  const [caps, datasets] = await Promise.all([
    capabilities({ refresh: true }),
    listDatasets(),
  ]);
  loading.remove();
  const usable = caps.filter((c) => !c.error && (c.models || []).length);

  // -- the chat box ----------------------------------------------------------------------
  const sentence = h("input", {
    type: "text",
    name: "text",
    maxLength: 1000,
    placeholder: "train yolo11n on shapes for 30 epochs",
    autocomplete: "off",
  });
  const parseBtn = h("button", { type: "submit", class: "btn btn-primary" }, "Fill the form");
  const chatOut = h("div", { id: "chat-result", "aria-live": "polite" });
  const chat = h(
    "form",
    { class: "card chat", "aria-labelledby": "chat-title" },
    h("h2", { id: "chat-title" }, "Say what to train"),
    h(
      "p",
      { class: "muted" },
      "A sentence in English or Korean, e.g. “seg-coco32 데이터셋으로 yolo11n-seg 학습시작 epochs 20”. It fills the form below; nothing starts until you confirm.",
    ),
    h("div", { class: "row wrap" }, field("Sentence", sentence, { name: "text" }), parseBtn),
    errorBox(),
    chatOut,
  );

  // -- the form ----------------------------------------------------------------------------
  const dataset = h(
    "select",
    { name: "dataset", required: true },
    h("option", { value: "" }, "Choose a dataset"),
    datasets.map((d) =>
      h("option", { value: d.name }, `${d.displayName} (${Number(d.imageCount || 0)} images)`),
    ),
  );
  const tasksOffered = TASKS.filter((t) => usable.some((c) => c.models.some((m) => (m.taskTypes || []).includes(t))));
  const task = h(
    "select",
    { name: "task_type" },
    tasksOffered.map((t) => h("option", { value: t }, taskLabel(t))),
  );
  const model = h("select", { name: "model" });
  const modelHint = h("p", { class: "hint", id: uid("model-hint") });
  const compatLine = h("p", { class: "muted", id: "compat-line", "aria-live": "polite" });
  const hpBox = h("div", { class: "hp-grid", id: "hyperparameters" });
  const extrasBox = h("div", { class: "hp-grid" });
  const extrasDetails = h("details", { class: "extras" }, h("summary", {}, "Framework options"), extrasBox);
  const deviceLine = h("p", { class: "muted" });
  const initFrom = h("select", { name: "init_from", id: "init-from" }, h("option", { value: "" }, "Nothing: the model's pretrained weights or scratch"));
  const start = h("button", { type: "submit", class: "btn btn-primary" }, "Start training");
  const form = h(
    "form",
    { class: "card", id: "train-form", "aria-labelledby": "form-title", novalidate: true },
    h("h2", { id: "form-title" }, "Training"),
    h(
      "div",
      { class: "row wrap" },
      field("Dataset", dataset, { name: "dataset" }),
      field("Task", task, { name: "task_type" }),
      field("Model", model, { name: "model" }),
    ),
    modelHint,
    compatLine,
    deviceLine,
    h(
      "div",
      { class: "row wrap" },
      field("Initialize from", initFrom, {
        name: "init_from",
        hint: "Fine-tune from one of your finished jobs of this trainer and task, or from weights uploaded with `vmesh pretrained upload`.",
      }),
    ),
    h("h3", {}, "Hyperparameters"),
    hpBox,
    extrasDetails,
    errorBox(),
    h("div", { class: "row" }, start),
  );
  model.setAttribute("aria-describedby", `${modelHint.id} ${model.getAttribute("aria-describedby")}`);

  if (!usable.length) {
    main.append(
      h(
        "p",
        { role: "alert", class: "error-text" },
        "No trainer answers right now: ",
        caps.map((c) => `${c.framework}: ${c.error || "no models"}`).join("; ") || "none configured",
      ),
    );
  }

  let inputs = []; // {hp, el}

  function paintModels(selected) {
    const t = task.value;
    clear(
      model,
      usable.map((c) => {
        const ms = c.models.filter((m) => (m.taskTypes || []).includes(t));
        return ms.length
          ? h(
              "optgroup",
              { label: c.framework },
              ms.map((m) => h("option", { value: `${c.framework}/${m.name}` }, m.name)),
            )
          : null;
      }),
    );
    if (selected && [...model.options].some((o) => o.value === selected)) model.value = selected;
    paintModelInfo();
  }

  function currentCaps() {
    const fw = model.value.split("/")[0];
    return usable.find((c) => c.framework === fw);
  }

  function paintModelInfo() {
    const c = currentCaps();
    if (!c) {
      modelHint.textContent = "No model trains this task.";
      clear(hpBox);
      clear(extrasBox);
      return;
    }
    const name = model.value.slice(c.framework.length + 1);
    const m = c.models.find((x) => x.name === name);
    modelHint.textContent = m
      ? `${c.framework} ${c.frameworkVersion || ""} · ${m.family || ""} ${m.description ? `· ${m.description}` : ""}${m.pretrainedAvailable ? " · pretrained weights available" : ""}`
      : "";
    deviceLine.textContent = c.device ? `Runs on ${c.device}; ${c.maxConcurrentJobs || 1} job(s) at a time, queue of ${c.queueCapacity || 0}.` : "";
    paintHyperparameters(c);
    paintInitFrom(c.framework, task.value);
    checkCompat();
  }

  // "Initialize from": the caller's finished jobs of this trainer and task, and the trainer's
  // uploaded weights for the task (ListJobs, ListWeights)
  let initFor = "";
  let initSeq = 0;
  const initCache = new Map();
  async function paintInitFrom(fw, t) {
    if (initFor === `${fw} ${t}`) return;
    initFor = `${fw} ${t}`;
    const mine = ++initSeq;
    const keep = initFrom.value;
    if (!initCache.has(fw)) {
      initCache.set(
        fw,
        Promise.all([
          get(`/v1/trainers/${fw}/jobs`, { pageSize: 200, filter: "state=JOB_STATE_SUCCEEDED" }).then((r) => r.jobs || [], () => []),
          get(`/v1/trainers/${fw}/weights`, { pageSize: 200 }).then((r) => r.weights || [], () => []),
        ]),
      );
    }
    const [jobs, weights] = await initCache.get(fw);
    if (mine !== initSeq) return;
    const js = jobs.filter((j) => j.spec?.taskType === t);
    const ws = weights.filter((w) => !w.taskType || w.taskType === t);
    clear(
      initFrom,
      initFrom.options[0],
      js.length
        ? h(
            "optgroup",
            { label: "Finished jobs" },
            js.map((j) => h("option", { value: j.name }, `${j.name.split("/").pop()} · ${j.spec?.model || ""} on ${j.spec?.dataset || ""}${j.bestMetricName ? ` · ${j.bestMetricName} ${Number(j.bestMetrics?.[j.bestMetricName] || 0).toFixed(3)}` : ""}`)),
          )
        : null,
      ws.length
        ? h(
            "optgroup",
            { label: "Uploaded weights" },
            ws.map((w) => h("option", { value: w.name }, `${w.model || w.name.split("/").pop()} (uploaded)`)),
          )
        : null,
    );
    if ([...initFrom.options].some((o) => o.value === keep)) initFrom.value = keep;
  }

  let paintedFor = "";
  function paintHyperparameters(c) {
    if (paintedFor === c.framework) return;
    const keep = new Map(inputs.map((i) => [i.hp.name, value(i)]));
    paintedFor = c.framework;
    inputs = [];
    const typed = [];
    const extras = [];
    for (const hp of c.hyperparameters || []) {
      const el = control(hp);
      if (keep.has(hp.name) && keep.get(hp.name) !== undefined) setValue({ hp, el }, keep.get(hp.name));
      inputs.push({ hp, el });
      const bounds = [hp.minValue ? `min ${hp.minValue}` : "", hp.maxValue ? `max ${hp.maxValue}` : ""].filter(Boolean).join(", ");
      const hint = [hp.description, hp.defaultValue !== undefined && hp.defaultValue !== "" ? `default ${hp.defaultValue}` : "", bounds].filter(Boolean).join(" · ");
      const wrap =
        hp.type === "bool"
          ? checkField(hp.name, el, hint, hp.extra ? `spec.extra[${hp.name}]` : hp.name)
          : field(hp.name.replaceAll("_", " "), el, { hint, name: hp.extra ? `spec.extra[${hp.name}]` : hp.name });
      (hp.extra ? extras : typed).push(wrap);
    }
    clear(hpBox, typed);
    clear(extrasBox, extras);
    extrasDetails.hidden = !extras.length;
  }

  let compatSeq = 0;
  async function checkCompat() {
    const mine = ++compatSeq;
    compatLine.textContent = "";
    if (!dataset.value || !task.value) return;
    try {
      const r = await post(`/v1/${dataset.value}:checkCompatibility`, {
        taskType: task.value,
        model: model.value.split("/").slice(1).join("/"),
      });
      if (mine !== compatSeq) return;
      const rep = r.report || {};
      compatLine.textContent = rep.compatible
        ? `This dataset can train it: ${enumLabel(rep.conversion, "CONVERSION_").toLowerCase()}${rep.lossy ? " (lossy)" : ""}, ${Number(rep.usableImageCount || 0)} of ${Number(rep.totalImageCount || 0)} images usable.`
        : `This dataset cannot train it: ${(rep.errors || []).join("; ")}`;
      compatLine.className = rep.compatible ? "ok-text" : "error-text";
    } catch (err) {
      if (mine === compatSeq) {
        compatLine.textContent = err.message;
        compatLine.className = "error-text";
      }
    }
  }

  let taskTouched = false;
  task.addEventListener("change", (e) => {
    if (e.isTrusted) taskTouched = true;
    paintModels(model.value);
  });
  model.addEventListener("change", paintModelInfo);
  // choosing a dataset moves the task to one it can train (native first) when the current
  // one cannot be trained from its annotations
  dataset.addEventListener("change", async () => {
    const chosen = dataset.value;
    checkCompat();
    if (!chosen) return;
    try {
      const reports = (await get(`/v1/${chosen}:summarizeCompatibility`)).reports || [];
      if (dataset.value !== chosen) return;
      const ok = reports.filter((r) => r.compatible && tasksOffered.includes(r.taskType));
      const current = ok.find((r) => r.taskType === task.value);
      const best = ok.find((r) => r.conversion === "CONVERSION_NATIVE") || ok[0];
      // keep a task the user chose if it works; else prefer one that converts nothing
      if (!best || (current && (taskTouched || !current.lossy))) return;
      task.value = best.taskType;
      paintModels(model.value);
    } catch {
      /* the compatibility line says why */
    }
  });

  function specFromForm() {
    const c = currentCaps();
    const spec = {
      dataset: dataset.value,
      taskType: task.value,
      model: model.value.slice(c.framework.length + 1),
    };
    const extra = {};
    for (const i of inputs) {
      const v = value(i);
      if (v === undefined) continue;
      if (i.hp.extra) {
        if (String(v) !== String(i.hp.defaultValue ?? "")) extra[i.hp.name] = String(v);
      } else if (i.hp.type === "int" || i.hp.type === "float") {
        spec[camel(i.hp.name)] = v === "" ? undefined : Number(v);
      } else if (i.hp.type === "bool") {
        spec[camel(i.hp.name)] = v === "true";
      } else spec[camel(i.hp.name)] = v;
    }
    if (Object.keys(extra).length) spec.extra = extra;
    if (initFrom.value) spec.initFrom = initFrom.value;
    return { framework: c.framework, spec };
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(start, async () => {
      clearFormErrors(form);
      if (!dataset.value) {
        showFormError(form, { message: "Choose a dataset.", fieldViolations: [] });
        return;
      }
      try {
        const { framework, spec } = specFromForm();
        const reply = await post(`/v1/trainers/${framework}/jobs`, { requestId: newRequestId(), spec });
        const job = reply.job || reply;
        toast(`Job ${job.name} queued.`);
        const [, fw, , id] = job.name.split("/");
        navigate(`#/jobs/${fw}/${id}`);
      } catch (err) {
        showFormError(form, err);
      }
    });
  });

  // the chat box fills the form
  chat.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(parseBtn, async () => {
      clearFormErrors(chat);
      clear(chatOut);
      try {
        const r = await post("/v1/assistant:parseTrainingCommand", { text: sentence.value });
        const filled = applySpec(r.spec || {});
        const unparsed = r.unparsed || [];
        const notes = r.notes || [];
        clear(
          chatOut,
          h(
            "div",
            { class: "callout" },
            h(
              "p",
              {},
              r.complete
                ? "Understood. Check the form below and start the training when it looks right."
                : "Understood in part: complete the form below.",
            ),
            filled.length ? h("p", {}, "Filled: ", filled.join(", "), ".") : null,
            unparsed.length
              ? h(
                  "p",
                  { class: "warn-text", id: "chat-unparsed" },
                  "Not understood: ",
                  unparsed.map((w, i) => [i ? ", " : "", h("q", {}, w)]),
                )
              : null,
            notes.length ? h("ul", { class: "notes" }, notes.map((n) => h("li", {}, n))) : null,
          ),
        );
        start.focus();
      } catch (err) {
        showFormError(chat, err);
      }
    });
  });

  function applySpec(spec) {
    const filled = [];
    if (spec.dataset) {
      if (![...dataset.options].some((o) => o.value === spec.dataset)) {
        dataset.append(h("option", { value: spec.dataset }, spec.dataset));
      }
      dataset.value = spec.dataset;
      filled.push(`dataset ${dataset.selectedOptions[0]?.textContent || spec.dataset}`);
    }
    if (spec.taskType && [...task.options].some((o) => o.value === spec.taskType)) {
      task.value = spec.taskType;
      filled.push(`task ${taskLabel(spec.taskType)}`);
    }
    let wanted = "";
    if (spec.model) {
      const owner = usable.find((c) => c.models.some((m) => m.name === spec.model && (!spec.taskType || (m.taskTypes || []).includes(spec.taskType))));
      if (owner) wanted = `${owner.framework}/${spec.model}`;
    }
    paintModels(wanted || model.value);
    if (wanted && model.value === wanted) filled.push(`model ${spec.model}`);
    for (const i of inputs) {
      const key = camel(i.hp.name);
      const v = i.hp.extra ? spec.extra?.[i.hp.name] : spec[key];
      if (v === undefined || v === null || v === "" || v === 0 || v === "0" || v === false) continue;
      setValue(i, v);
      filled.push(`${i.hp.name} ${v}`);
    }
    checkCompat();
    return filled;
  }

  main.append(chat, form);
  paintModels();
  const pre = {
    dataset: params.get("dataset"),
    taskType: params.get("task"),
  };
  if (pre.dataset || pre.taskType) applySpec(pre);
  return null;
}

async function listDatasets() {
  try {
    const out = [];
    let token = "";
    do {
      const reply = await get("/v1/datasets", { pageSize: 1000, pageToken: token, orderBy: "display_name" });
      out.push(...(reply.datasets || []));
      token = reply.nextPageToken || "";
    } while (token && out.length < 5000);
    return out;
  } catch {
    return [];
  }
}

function control(hp) {
  const id = uid("hp");
  if (hp.type === "bool") {
    return h("input", { type: "checkbox", id, name: hp.name, checked: /^(1|true|yes)$/i.test(hp.defaultValue || "") });
  }
  if ((hp.choices || []).length) {
    return h(
      "select",
      { id, name: hp.name },
      hp.choices.map((c) => h("option", { value: c, selected: c === hp.defaultValue }, c)),
    );
  }
  if (hp.type === "int" || hp.type === "float") {
    return h("input", {
      type: "number",
      id,
      name: hp.name,
      step: hp.type === "int" ? "1" : "any",
      min: hp.minValue || undefined,
      max: hp.maxValue || undefined,
      value: hp.defaultValue ?? "",
      inputMode: hp.type === "int" ? "numeric" : "decimal",
    });
  }
  return h("input", { type: "text", id, name: hp.name, value: hp.defaultValue ?? "" });
}

function checkField(label, el, hint, name) {
  const hintEl = h("p", { class: "hint", id: `${el.id}-hint` }, hint);
  const error = h("p", { class: "field-error", id: `${el.id}-error`, hidden: true });
  el.setAttribute("aria-describedby", `${hintEl.id} ${error.id}`);
  return h(
    "div",
    { class: "field field-check", dataset: { field: name } },
    h("div", { class: "row" }, el, h("label", { for: el.id }, label.replaceAll("_", " "))),
    hintEl,
    error,
  );
}

function value({ hp, el }) {
  if (hp.type === "bool") return el.checked ? "true" : "false";
  return el.value.trim();
}

function setValue({ hp, el }, v) {
  if (hp.type === "bool") el.checked = /^(1|true|yes)$/i.test(String(v));
  else el.value = String(v);
}
