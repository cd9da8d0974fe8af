// The service's public API, as any client calls it: same origin, the API key (when the user gives
// one) as "Authorization: Bearer", FASTA bodies as text/x-fasta (gzip is recognised by its bytes).

const KEY = "dnabert-api-key";

/** The API key lives in sessionStorage: this tab only, gone when it closes. */
export const apiKey = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (key) => (key ? sessionStorage.setItem(KEY, key) : sessionStorage.removeItem(KEY)),
};

/** Fired as "unauthorized" when the server answers 401 (it needs a key, or the key is wrong). */
export const events = new EventTarget();

/** An error answer of the API: {"error": {"code", "message", "record_id", "line", "request_id"}}. */
export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = error.code || `http_${status}`;
    this.recordId = error.record_id ?? null;
    this.line = error.line ?? null;
    this.requestId = error.request_id ?? null;
  }
}

function url(path, params) {
  const out = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") out.searchParams.set(key, String(value));
  }
  return out;
}

async function errorOf(res) {
  const text = await res.text().catch(() => "");
  let error = null;
  try {
    const data = JSON.parse(text);
    error = typeof data.error === "object" && data.error ? data.error : {message: String(data.error ?? data.detail)};
  } catch {
    error = {message: text.slice(0, 300) || res.statusText};
  }
  return new ApiError(res.status, {...error, request_id: error.request_id ?? res.headers.get("X-Request-ID")});
}

/** One API call; resolves to the Response when it is 2xx, else throws an ApiError. */
export async function call(method, path, {params, body, signal, contentType = "text/x-fasta"} = {}) {
  const headers = new Headers();
  const key = apiKey.get();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  if (body !== undefined) headers.set("Content-Type", contentType);
  const res = await fetch(url(path, params), {method, headers, body, signal, cache: "no-store",
                                              credentials: "same-origin", redirect: "error"});
  if (!res.ok) {
    const error = await errorOf(res);
    if (res.status === 401) events.dispatchEvent(new CustomEvent("unauthorized", {detail: error}));
    throw error;
  }
  return res;
}

/** Read an NDJSON answer line by line as it streams in. */
export async function* lines(res, signal) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      if (signal?.aborted) throw new DOMException("cancelled", "AbortError");
      const {value, done} = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 1);
        if (line) yield JSON.parse(line);
      }
    }
    if (buffer.trim()) yield JSON.parse(buffer);
  } finally {
    reader.releaseLock();
  }
}
