// The gateway's REST API (routes derived from the protos' google.api.http options):
// proto3 JSON in and out, google.rpc.Status errors, SSE streams, byte downloads.

const TOKEN_KEY = "visionmesh.token";
const USER_KEY = "visionmesh.user";

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  },
  get user() {
    try {
      return JSON.parse(sessionStorage.getItem(USER_KEY) || "null");
    } catch {
      return null;
    }
  },
  set(token, user) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(USER_KEY, JSON.stringify(user || null));
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
  },
};

/** An error answered by the gateway: its google.rpc.Status message and details. */
export class ApiError extends Error {
  constructor(httpStatus, status) {
    super(status?.message || `HTTP ${httpStatus}`);
    this.httpStatus = httpStatus;
    this.code = status?.code ?? 0;
    this.details = status?.details || [];
    this.fieldViolations = [];
    for (const d of this.details) {
      for (const v of d.fieldViolations || d.field_violations || []) {
        this.fieldViolations.push({ field: v.field || "", description: v.description || "" });
      }
    }
  }
}

let onUnauthenticated = () => {};
export function setUnauthenticatedHandler(fn) {
  onUnauthenticated = fn;
}

function headers(extra = {}) {
  const out = { ...extra };
  if (session.token) out.Authorization = `Bearer ${session.token}`;
  return out;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "" || v === false) continue;
    for (const item of Array.isArray(v) ? v : [v]) q.append(k, String(item));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

async function failure(res) {
  let status = null;
  const text = await res.text();
  try {
    status = JSON.parse(text);
  } catch {
    status = { message: text.trim() || res.statusText };
  }
  const err = new ApiError(res.status, status);
  if (res.status === 401) onUnauthenticated(err);
  return err;
}

/** Calls one REST route; returns the parsed JSON reply ({} for an empty body). */
export async function api(method, path, body, { signal } = {}) {
  const init = { method, headers: headers({ Accept: "application/json" }), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (!res.ok) throw await failure(res);
  const text = await res.text();
  return text ? JSON.parse(text) : {};
}

export const get = (path, params, opts) => api("GET", path + query(params), undefined, opts);
export const post = (path, body, opts) => api("POST", path, body ?? {}, opts);

/** Fetches raw bytes (downloads, thumbnails) with the token; returns a Blob. */
export async function fetchBlob(path, { signal } = {}) {
  const res = await fetch(path, { headers: headers(), signal });
  if (!res.ok) throw await failure(res);
  return res.blob();
}

/** Downloads a route's bytes as a file named `filename`. */
export async function download(path, filename) {
  const blob = await fetchBlob(path);
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return blob;
}

/**
 * Reads a server stream (Server-Sent Events, or NDJSON when the gateway answers so) and calls
 * onMessage(data, id) per message. Resolves when the stream ends; rejects with ApiError for
 * an error status or an `error` event. `lastEventId` resumes after a reconnect.
 */
export async function stream(path, onMessage, { signal, lastEventId } = {}) {
  const h = headers({ Accept: "text/event-stream" });
  if (lastEventId) h["Last-Event-ID"] = String(lastEventId);
  const res = await fetch(path, { headers: h, signal, cache: "no-store" });
  if (!res.ok) throw await failure(res);
  const ndjson = !(res.headers.get("content-type") || "").includes("text/event-stream");
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = { id: "", name: "", data: [] };
  const dispatch = () => {
    if (!event.data.length) {
      event = { id: "", name: "", data: [] };
      return;
    }
    const text = event.data.join("\n");
    const data = JSON.parse(text);
    const e = event;
    event = { id: "", name: "", data: [] };
    if (e.name === "error" || (data && data.error && !data.result && data.code === undefined)) {
      throw new ApiError(200, data.error || data);
    }
    onMessage(data.result ?? data, e.id || null);
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buffer += decoder.decode(value, { stream: true });
    let nl = buffer.indexOf("\n");
    while (nl >= 0) {
      const line = buffer.slice(0, nl).replace(/\r$/, "");
      buffer = buffer.slice(nl + 1);
      if (ndjson) {
        if (line.trim()) {
          const data = JSON.parse(line);
          if (data.error) throw new ApiError(200, data.error);
          onMessage(data.result ?? data, null);
        }
      } else if (line === "") {
        dispatch();
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const key = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (key === "data") event.data.push(val);
        else if (key === "id") event.id = val;
        else if (key === "event") event.name = val;
      }
      nl = buffer.indexOf("\n");
    }
    if (done) break;
  }
  if (!ndjson) dispatch();
}

/**
 * Uploads files (multipart/form-data, each part's filename its relative path) with progress.
 * XMLHttpRequest because fetch() reports no upload progress.
 */
export function uploadFiles(path, files, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const { file, path: rel } of files) form.append("files", file, rel);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    if (session.token) xhr.setRequestHeader("Authorization", `Bearer ${session.token}`);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress?.(e.loaded, e.total);
    };
    xhr.onerror = () => reject(new ApiError(0, { message: "The upload failed: network error" }));
    xhr.onload = () => {
      let body = {};
      try {
        body = xhr.responseText ? JSON.parse(xhr.responseText) : {};
      } catch {
        body = { message: xhr.responseText };
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        const err = new ApiError(xhr.status, body);
        if (xhr.status === 401) onUnauthenticated(err);
        reject(err);
      }
    };
    xhr.send(form);
  });
}

/** Base64 of a File or Blob (proto3 JSON `bytes`). */
export function base64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export function newRequestId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) =>
    b.toString(16).padStart(2, "0"),
  ).join("");
}

/** Frameworks the gateway routes to (from /healthz), in a stable order. */
let frameworksPromise = null;
export function frameworks() {
  frameworksPromise ||= (async () => {
    try {
      const res = await fetch("/healthz", { headers: headers({ Accept: "application/json" }) });
      const body = await res.json();
      const names = new Set();
      const walk = (obj, key) => {
        if (!obj || typeof obj !== "object") return;
        for (const [k, v] of Object.entries(obj)) {
          const m = /^trainers?[/:.]([\w-]+)$/.exec(k) || /^trainers[/]([\w-]+)/.exec(String(v));
          if (m) names.add(m[1]);
          if (key === "trainers" && /^[\w-]+$/.test(k)) names.add(k);
          walk(v, k);
        }
      };
      walk(body, "");
      if (names.size) return [...names].sort();
    } catch {
      /* fall through */
    }
    return [];
  })();
  return frameworksPromise;
}

/** GetCapabilities of every trainer that answers: [{framework, models, hyperparameters,...}]. */
let capsPromise = null;
export function capabilities({ refresh = false } = {}) {
  if (refresh) capsPromise = null;
  capsPromise ||= (async () => {
    const names = await frameworks();
    const replies = await Promise.all(
      names.map((fw) =>
        get(`/v1/trainers/${encodeURIComponent(fw)}:capabilities`).then(
          (caps) => ({ ...caps, framework: caps.framework || fw }),
          (err) => ({ framework: fw, error: err.message, models: [], hyperparameters: [] }),
        ),
      ),
    );
    return replies;
  })();
  return capsPromise;
}
