// shopjobs.js: start a shopjobs background job from a storefront and follow it to its end.
// An ES module with no dependencies, shipped as a theme app extension asset. It talks to the
// app through Shopify's app proxy (relative URLs, so the shopper's session and origin are kept):
// POST {basePath}/process once per user action, then GET {basePath}/status?jobId= with backoff.

const FINISHED = new Set(["completed", "failed"]);
// Worth asking again: the request may work in a moment, and the idempotency key makes a
// repeated POST return the job it already created.
const TRANSIENT = new Set([408, 425, 429, 500, 502, 503, 504]);
const bindings = new WeakMap();

export class JobError extends Error {
  /** status: HTTP status (0: no answer); jobId once the job exists; job: its last status. */
  constructor(message, { status = 0, jobId = null, details = null, job = null, cause } = {}) {
    super(message, cause ? { cause } : undefined);
    this.name = "JobError";
    this.status = status;
    this.jobId = jobId;
    this.details = details;
    this.job = job;
    this.retryable = status === 0 ? !job : TRANSIENT.has(status);
    this.retryAfter = 0;
  }
}

/** The polling schedule: 500 ms, then x1.5 each time, never more than 5 s. Pure. */
export function nextDelay(previous, { initial = 500, factor = 1.5, max = 5000 } = {}) {
  return previous > 0 ? Math.min(max, previous * factor) : initial;
}

export function newIdempotencyKey() {
  const c = globalThis.crypto;
  if (c.randomUUID) return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const abort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", abort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", abort, { once: true });
  });
}

/** Resolves once the page is visible: a hidden tab does not poll. */
function visible(signal) {
  if (typeof document === "undefined" || !document.hidden) return Promise.resolve(false);
  return new Promise((resolve, reject) => {
    const done = () => {
      if (document.hidden) return;
      document.removeEventListener("visibilitychange", done);
      signal?.removeEventListener("abort", abort);
      resolve(true);
    };
    const abort = () => {
      document.removeEventListener("visibilitychange", done);
      reject(signal.reason);
    };
    document.addEventListener("visibilitychange", done);
    signal?.addEventListener("abort", abort, { once: true });
  });
}

function describe(status, body, url) {
  if (body && typeof body.error === "string") {
    const details = Array.isArray(body.details) ? body.details : [];
    const parts = details.map((d) => (d && d.field ? `${d.field}: ${d.message}` : String(d)));
    return parts.length ? `${body.error} (${parts.join("; ")})` : body.error;
  }
  if (status === 404) return `Nothing answers at ${url.split("?")[0]}: is the app installed?`;
  if (status >= 500) return `The store could not answer (HTTP ${status}). Please try again.`;
  return `The request was refused (HTTP ${status}).`;
}

async function call(url, init, signal) {
  let response;
  try {
    response = await fetch(url, { credentials: "same-origin", ...init, signal });
  } catch (cause) {
    if (signal?.aborted) throw signal.reason;
    throw new JobError("Could not reach the store. Check your connection.", { cause });
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: a gateway's error page, or the connection dropped mid-answer.
  }
  const status = response.status;
  if (response.ok && body && typeof body === "object") return body;
  if (response.ok) {
    // A storefront page (the password page, say) where the app's JSON was expected.
    throw new JobError("The store answered with a page, not the app: is the app proxy set up?", {
      status,
    });
  }
  const error = new JobError(describe(status, body, url), { status, details: body?.details });
  error.retryAfter = 1000 * (Number(response.headers.get("Retry-After")) || 0);
  throw error;
}

/**
 * Start a job and follow it. Resolves with the job's result once it completes; rejects with
 * a JobError (HTTP error, unreachable store, or the job's own error when it fails) or, when
 * `signal` aborts, with the signal's reason. Options:
 *   onProgress({jobId, status, progress, message, waiting, retrying, error}) after every answer;
 *   basePath: the app proxy path ("/apps/jobs"); idempotencyKey: one per user action
 *   (default: a new one); poll: {initial, factor, max} in ms; createAttempts (4);
 *   maxPollErrors: consecutive failed polls before giving up (30).
 */
export async function startJob(type, input = {}, options = {}) {
  const { onProgress, signal, poll = {}, createAttempts = 4, maxPollErrors = 30 } = options;
  const base = (options.basePath ?? "/apps/jobs").replace(/\/+$/, "");
  const key = options.idempotencyKey ?? newIdempotencyKey();
  const report = (state) => onProgress?.(state);
  const create = {
    method: "POST",
    headers: { "Content-Type": "application/json", "Idempotency-Key": key },
    body: JSON.stringify({ type, input }),
  };
  let job;
  for (let attempt = 1, wait = 0; !job; attempt += 1) {
    try {
      job = await call(`${base}/process`, create, signal);
    } catch (error) {
      if (!(error instanceof JobError) || !error.retryable || attempt >= createAttempts) throw error;
      wait = nextDelay(wait, poll);
      await sleep(Math.max(wait, error.retryAfter), signal);
    }
  }
  const jobId = job.jobId;
  const state = (extra) => ({
    jobId,
    status: job.status,
    progress: job.progress ?? 0,
    message: job.progressMessage ?? null,
    waiting: job.waiting ?? null,
    retrying: false,
    ...extra,
  });
  report(state());
  const statusUrl = `${base}/status?jobId=${encodeURIComponent(jobId)}`;
  // The create answer has no result: a job it reports finished (a replayed key) is read once.
  for (let wait = 0, errors = 0, read = false; !(read && FINISHED.has(job.status)); ) {
    wait = nextDelay(wait, poll);
    await sleep(wait, signal);
    if (await visible(signal)) wait = 0; // back from a hidden tab: start the schedule again
    try {
      job = await call(statusUrl, { cache: "no-store" }, signal);
      read = true;
      errors = 0;
      report(state());
    } catch (error) {
      if (error instanceof JobError) error.jobId = jobId;
      if (!(error instanceof JobError) || !error.retryable || ++errors >= maxPollErrors) throw error;
      wait = Math.max(wait, error.retryAfter);
      report(state({ retrying: true, error }));
    }
  }
  if (job.status === "failed") throw new JobError(job.error || "The job failed.", { jobId, job });
  return job.result;
}

function show(el, value) {
  if (!el) return;
  el.hidden = false;
  if (el instanceof HTMLProgressElement) {
    if (value == null) el.removeAttribute("value");
    else el.value = value;
  } else {
    el.style.width = `${value ?? 0}%`;
    el.setAttribute("aria-valuenow", String(value ?? 0));
  }
}

/** Writes a result into `el` as text (never HTML): a flat object becomes a <dl>. */
export function renderResult(el, result) {
  el.replaceChildren();
  if (result && typeof result === "object" && !Array.isArray(result)) {
    const list = document.createElement("dl");
    for (const [name, value] of Object.entries(result)) {
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = name;
      dd.textContent = typeof value === "object" && value !== null ? JSON.stringify(value) : String(value);
      list.append(dt, dd);
    }
    el.append(list);
  } else {
    el.textContent = typeof result === "string" ? result : JSON.stringify(result);
  }
}

function statusText({ status, progress, message, waiting, retrying, error }) {
  if (retrying) return error?.status ? "The store did not answer, retrying…" : "Connection lost, retrying…";
  if (status === "pending") return "Queued…";
  if (status === "retrying") return "Retrying…";
  if (waiting) return `Waiting… ${progress}%${message ? ` (${message})` : ""}`;
  return `Working… ${progress}%${message ? ` (${message})` : ""}`;
}

/**
 * Make `button` start a job: it disables itself while the job runs, and a second click joins
 * the job already running, so a double click never creates two jobs. Its idempotency key is
 * kept until the app has answered a request carrying it, so clicking again after a network
 * failure retries the same action. Options: type, input (object, or function returning one),
 * basePath, progressEl, resultEl, stateEl (gets data-shopjobs-state), onProgress, onResult,
 * onError, render(el, result). Returns {run, unbind}.
 */
export function bindJobButton(button, options) {
  const { type, input = {}, progressEl, resultEl, onResult, onError } = options;
  const render = options.render ?? renderResult;
  const stateEl = options.stateEl ?? button;
  let running = null;
  let pending = null; // {key, body} of an action whose POST got no answer yet
  const setState = (value) => stateEl.setAttribute("data-shopjobs-state", value);

  async function go() {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    setState("running");
    show(progressEl, null);
    if (resultEl) resultEl.textContent = "Starting…";
    let body;
    try {
      const value = typeof input === "function" ? input() : input;
      body = JSON.stringify([type, value]);
      const key = pending?.body === body ? pending.key : newIdempotencyKey();
      pending = { key, body };
      const result = await startJob(type, value, {
        ...options,
        idempotencyKey: key,
        onProgress(progress) {
          pending = null; // the job exists: a later click is a new action
          if (progress.status !== "pending") show(progressEl, progress.progress);
          if (resultEl) resultEl.textContent = statusText(progress);
          options.onProgress?.(progress);
        },
      });
      show(progressEl, 100);
      setState("completed");
      if (resultEl) render(resultEl, result);
      onResult?.(result);
      return result;
    } catch (error) {
      if (error?.jobId || (error instanceof JobError && !error.retryable)) pending = null;
      setState("failed");
      if (progressEl) progressEl.hidden = true;
      if (resultEl) resultEl.textContent = error?.message || String(error);
      onError?.(error);
      return undefined;
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }

  setState("idle");
  // Cleared once settled, not inside go(): an input() that throws ends go() before it returns.
  const run = () =>
    (running ??= go().finally(() => {
      running = null;
    }));
  const click = (event) => {
    event.preventDefault();
    run();
  };
  button.addEventListener("click", click);
  return { run, unbind: () => button.removeEventListener("click", click) };
}

/**
 * Bind one rendered `job_button` app block (an element with data-shopjobs-block). Its button
 * carries data-shopjobs-type, -input (JSON), -product-id (added as input.product_id) and
 * -base-path. Binding twice is a no-op.
 */
export function bindBlock(root) {
  if (!root || bindings.has(root)) return bindings.get(root);
  const button = root.querySelector("[data-shopjobs-type]");
  const data = button.dataset;
  const input = () => {
    let value;
    try {
      value = JSON.parse(data.shopjobsInput || "{}");
    } catch {
      throw new Error("This block's job input is not valid JSON.");
    }
    if (!value || typeof value !== "object" || Array.isArray(value)) {
      throw new Error("This block's job input is not a JSON object.");
    }
    if (data.shopjobsProductId) value.product_id = data.shopjobsProductId;
    return value;
  };
  const binding = bindJobButton(button, {
    type: data.shopjobsType,
    input,
    basePath: data.shopjobsBasePath || undefined,
    progressEl: root.querySelector("[data-shopjobs-progress]"),
    resultEl: root.querySelector("[data-shopjobs-result]"),
    stateEl: root,
  });
  bindings.set(root, binding);
  return binding;
}

export function bindBlocks(scope = document) {
  scope.querySelectorAll("[data-shopjobs-block]").forEach(bindBlock);
}

if (typeof document !== "undefined") {
  // The theme editor re-renders a section in place when a merchant changes a setting.
  document.addEventListener("shopify:section:load", (event) => bindBlocks(event.target));
}
