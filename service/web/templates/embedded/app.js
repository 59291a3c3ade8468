// The merchant's jobs page (/app): every request goes to /api with a fresh App Bridge session
// token. Forms are generated from each job type's JSON schema; the list is polled with backoff
// (quickly while something moves, slower and slower while nothing does, paused when hidden).
"use strict";

const MIN_POLL_MS = 1000;
const MAX_POLL_MS = 15000;
const MAX_PAGE = 100; // the API's largest page
// `more`: older pages were loaded ("Load more"), and the poll keeps them; `version` changes
// with what the list shows (a tab, a page loaded), so an answer to an older request is dropped.
// The list: the merchant's own jobs first (`mine`, the latest MINE_SHOWN), then the others
// (`jobs`); batch children under their parent, collapsed (`expanded`: the parents opened, their
// children in `children`); filtered by status, type and who started the job.
const MINE_SHOWN = 10;
const state = { types: [], status: "", jobs: [], cursor: null, more: false, version: 0,
                delay: MIN_POLL_MS, timer: null, type: "", starter: "", mine: [],
                expanded: new Set(), children: {}, jobTypes: [] };
const $ = (selector) => document.querySelector(selector);

async function api(path, options = {}, retried = false) {
  const token = await shopify.idToken();
  const answer = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
  });
  if (answer.status === 401 && answer.headers.get("X-Shopify-Retry-Invalid-Session-Request")
      && !retried) {
    return api(path, options, true); // a token that went stale in flight: once more, fresh
  }
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const details = Array.isArray(body.details)
      ? ": " + body.details.map((d) => `${d.field} ${d.message}`).join("; ") : "";
    throw new Error((body.error || `HTTP ${answer.status}`) + details);
  }
  return body;
}

function banner(message) {
  const node = $("#banner");
  node.textContent = message || "";
  node.hidden = !message;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children);
  return node;
}

// -- forms from JSON schema ------------------------------------------------------------------

// A property's schema with `$ref` followed and `X | None` (anyOf X, null) taken as X.
function resolve(spec, defs) {
  const { $ref, anyOf, ...own } = spec;
  let base = {};
  if ($ref) base = resolve(defs[$ref.split("/").pop()] || {}, defs);
  else if (Array.isArray(anyOf)) {
    const options = anyOf.filter((option) => option.type !== "null");
    if (options.length === 1) base = resolve(options[0], defs);
  }
  return { ...base, ...own };
}

// How a field is entered: a choice, a checkbox, a number, a text, or JSON (objects, arrays).
function kind(spec) {
  if (Array.isArray(spec.enum)) return "enum";
  if (spec.type === "boolean") return "boolean";
  if (spec.type === "integer" || spec.type === "number") return "number";
  if (spec.type === "string") return "string";
  return "json";
}

function fieldFor(name, spec, required) {
  const id = `field-${name}`;
  const title = spec.title || name;
  const help = spec.description ? el("div", { class: "help", text: spec.description }) : "";
  const given = spec.default !== undefined && spec.default !== null;
  const label = el("label", { for: id, text: title + (required ? "" : " (optional)") });
  const type = kind(spec);
  if (type === "boolean") {
    const box = el("input", { type: "checkbox", id, name, checked: spec.default === true });
    return el("div", {}, el("label", { class: "check", for: id }, box, title), help);
  }
  if (type === "enum") {
    const options = spec.enum.map((value) => el("option", {
      value: JSON.stringify(value), text: String(value),
      selected: given && JSON.stringify(value) === JSON.stringify(spec.default),
    }));
    const select = el("select", { id, name, required }, el("option", { value: "", text: "" }), ...options);
    return el("div", {}, label, select, help);
  }
  if (type === "json") {
    const area = el("textarea", {
      id, name, required, rows: 3, spellcheck: "false", placeholder: "JSON",
      text: given ? JSON.stringify(spec.default) : null,
    });
    return el("div", {}, label, area, el("div", { class: "help", text: spec.description || "As JSON" }));
  }
  const numeric = type === "number";
  const input = el("input", {
    type: numeric ? "number" : "text", id, name, required,
    min: spec.minimum, max: spec.maximum, step: spec.type === "integer" ? 1 : (numeric ? "any" : null),
    maxlength: spec.maxLength, pattern: spec.pattern,
    value: given ? String(spec.default) : null,
    placeholder: spec.pattern && spec.description ? spec.description : null,
  });
  return el("div", {}, label, input, help);
}

function properties(type) {
  const defs = type.schema.$defs || {};
  return Object.entries(type.schema.properties || {}).map(([name, spec]) => [name, resolve(spec, defs)]);
}

function renderForm() {
  const form = $("#job-form");
  form.replaceChildren();
  const type = state.types.find((t) => t.name === $("#job-type").value);
  if (!type) return;
  const required = new Set(type.schema.required || []);
  for (const [name, spec] of properties(type)) {
    form.append(fieldFor(name, spec, required.has(name)));
  }
  form.append(el("div", { class: "form-actions" },
                 el("button", { type: "submit", class: "primary", text: "Start job" })));
}

// The form's values as the job's input; an Error naming the field for what cannot be read.
function formInput(type) {
  const input = {};
  for (const [name, spec] of properties(type)) {
    const field = document.getElementById(`field-${name}`);
    const title = spec.title || name;
    const how = kind(spec);
    if (how === "boolean") input[name] = field.checked;
    else if (how === "number" && field.validity.badInput) throw new Error(`${title}: not a number`);
    else if (field.value.trim() === "" && how !== "string") continue; // the default applies
    else if (field.value === "") continue; // optional and left empty: the default applies
    else if (how === "number") input[name] = Number(field.value);
    else if (how === "enum") input[name] = JSON.parse(field.value);
    else if (how === "json") {
      try {
        input[name] = JSON.parse(field.value);
      } catch {
        throw new Error(`${title}: not valid JSON`);
      }
    } else input[name] = field.value;
  }
  return input;
}

async function submitJob(event) {
  event.preventDefault();
  const type = state.types.find((t) => t.name === $("#job-type").value);
  const button = event.target.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await api("/api/jobs", { method: "POST", body: JSON.stringify({ type: type.name, input: formInput(type) }) });
    banner("");
    await refresh(true);
  } catch (error) {
    banner(error.message);
  } finally {
    button.disabled = false;
  }
}

// -- the list ----------------------------------------------------------------------------------

const STARTERS = { admin: "merchant", schedule: "schedule", webhook: "webhook", app: "app",
                   job: "app", cli: "app", proxy: "storefront" };

function row(job, kind = "") {
  const details = el("td");
  if (job.status === "processing" || job.progress > 0) {
    details.append(el("div", { text: `${job.progress}%` + (job.progressMessage ? ` · ${job.progressMessage}` : "") }),
                   el("div", { class: "bar" }, el("i", { style: `width: ${job.progress}%` })));
  }
  if (job.batch) {
    const b = job.batch;
    details.append(el("div", { class: "batch", text: `${b.total} children: ${b.completed} completed, ${b.failed} failed, ${b.processing} running, ${b.pending + b.retrying} waiting` }));
    if (b.total) {
      const open = state.expanded.has(job.jobId);
      details.append(el("button", { type: "button", class: "small", "data-action": "children",
                                    "aria-expanded": String(open), text: open ? "Hide children" : `Show children (${b.total})` }));
    }
  }
  if (job.waiting) {
    const until = job.waiting.until ? ` until ${new Date(job.waiting.until).toLocaleString()}` : "";
    details.append(el("div", { class: "muted", text: `waiting for ${job.waiting.for.replace("_", " ")}${until}` }));
  }
  if (job.error) details.append(el("div", { class: "error", text: job.error }));
  if (job.status === "completed") {
    details.append(el("code", { text: JSON.stringify(job.result).slice(0, 200) }));
  }
  const actions = el("td");
  if (job.cancellable) actions.append(el("button", { type: "button", class: "small", "data-action": "cancel", text: "Cancel" }));
  if (job.retryable) actions.append(el("button", { type: "button", class: "small", "data-action": "retry", text: "Retry" }));
  const created = new Date(job.createdAt).toLocaleString();
  const starter = STARTERS[job.source] || job.source;
  return el("tr", { "data-job-id": job.jobId, "data-status": job.status, "data-kind": kind || null,
                    "data-starter": starter, class: kind === "child" ? "child" : null },
    el("td", {}, el("div", { text: job.type }),
       el("div", { class: "muted", text: `${created} · ${kind === "mine" ? "you" : starter}` })),
    el("td", {}, el("span", { class: `badge ${job.status}`, text: job.cancelled ? "cancelled" : job.status })),
    details, actions);
}

function rowsOf(job, kind) {
  const rows = [row(job, kind)];
  if (state.expanded.has(job.jobId)) {
    for (const child of state.children[job.jobId] || []) rows.push(row(child, "child"));
  }
  return rows;
}

function renderJobs() {
  const mine = new Set(state.mine.map((j) => j.jobId));
  const others = state.jobs.filter((j) => !mine.has(j.jobId));
  $("#jobs tbody").replaceChildren(...state.mine.flatMap((j) => rowsOf(j, "mine")),
                                   ...others.flatMap((j) => rowsOf(j, "")));
  $("#empty").hidden = state.mine.length + others.length > 0;
  $("#more").hidden = !state.cursor;
}

function renderTypeFilter() {
  const select = $("#type-filter");
  const names = [...new Set([...state.jobTypes, ...(state.type ? [state.type] : [])])].sort();
  if (JSON.stringify(names) === select.dataset.names) return;
  select.dataset.names = JSON.stringify(names);
  select.replaceChildren(el("option", { value: "", text: "All types" }),
    ...names.map((name) => el("option", { value: name, text: name, selected: name === state.type })));
}

// `mine`: "1" the staff user's own jobs, "0" the others'; top-level jobs only (children are
// read per parent).
function query(cursor, limit, mine = "0") {
  const params = new URLSearchParams({ top: "1", mine });
  if (state.status) params.set("status", state.status);
  if (state.type) params.set("type", state.type);
  if (state.starter) params.set("startedBy", state.starter);
  if (cursor) params.set("cursor", cursor);
  if (limit) params.set("limit", String(limit));
  return `/api/jobs?${params}`;
}

async function loadChildren() {
  const opened = [...state.expanded];
  const pages = await Promise.all(opened.map((id) => api(`/api/jobs?parent=${id}&limit=${MAX_PAGE}`)));
  state.children = Object.fromEntries(opened.map((id, i) => [id, pages[i].jobs]));
}

// Reload the first page (as many jobs as are shown, up to the API's largest page, once older
// pages were loaded: those stay); a change (or an action: `urgent`) resets the poll to its quickest.
async function refresh(urgent = false) {
  const { more, version } = state;
  const [page, mine] = await Promise.all([
    api(query(null, more ? Math.min(MAX_PAGE, state.jobs.length) : null)),
    state.starter && state.starter !== "merchant" ? { jobs: [] } : api(query(null, MINE_SHOWN, "1")),
    loadChildren(),
  ]);
  if (version !== state.version) return schedule();
  const before = JSON.stringify([state.mine, state.jobs.slice(0, page.jobs.length)]);
  const changed = before !== JSON.stringify([mine.jobs, page.jobs]);
  state.mine = mine.jobs;
  state.jobTypes = page.types || [];
  renderTypeFilter();
  let older = [];
  if (more && page.nextCursor) {
    const seen = new Set(page.jobs.map((j) => j.jobId));
    const last = state.jobs.findIndex((j) => j.jobId === page.jobs[page.jobs.length - 1].jobId);
    older = state.jobs.slice(last + 1).filter((j) => !seen.has(j.jobId));
  }
  state.jobs = page.jobs.concat(older);
  if (!older.length) state.cursor = page.nextCursor;
  renderJobs();
  const active = state.jobs.concat(state.mine).some((j) => ["pending", "processing", "retrying"].includes(j.status));
  state.delay = urgent || (changed && active) ? MIN_POLL_MS : Math.min(state.delay * 2, MAX_POLL_MS);
  schedule();
}

function schedule() {
  clearTimeout(state.timer);
  if (document.hidden) return; // resumed by visibilitychange
  state.timer = setTimeout(() => refresh().catch((e) => { banner(e.message); schedule(); }), state.delay);
}

async function act(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const id = button.closest("tr").dataset.jobId;
  if (button.dataset.action === "children") {
    if (state.expanded.has(id)) state.expanded.delete(id);
    else state.expanded.add(id);
    await refresh(true).catch((e) => banner(e.message));
    return;
  }
  button.disabled = true;
  try {
    await api(`/api/jobs/${id}/${button.dataset.action}`, { method: "POST" });
    banner("");
  } catch (error) {
    banner(error.message);
  }
  await refresh(true).catch((e) => banner(e.message));
}

// -- the admin's bulk action ------------------------------------------------------------------
// Opened as /app/bulk/products?ids[]=1&ids[]=2 (the admin link on the list's selection): the
// types that take such an id, one batch for the selection, and its children's progress.

function selectedIds() {
  const params = new URLSearchParams(location.search);
  return [...params.getAll("ids[]"), ...params.getAll("ids")].filter((id) => id);
}

async function watchBatch(jobId) {
  const batch = await api(`/api/bulk-actions/${jobId}`);
  const counts = batch.children || { total: 0 };
  const finished = (counts.completed || 0) + (counts.failed || 0);
  const percent = counts.total ? Math.round((finished * 100) / counts.total) : 0;
  const done = batch.status === "completed" || batch.status === "failed";
  $("#bulk-status").textContent = done
    ? `Batch ${batch.status}: ${counts.completed || 0} completed, ${counts.failed || 0} failed`
    : `Running: ${finished} of ${counts.total} done`;
  $("#bulk-progress").dataset.status = batch.status;
  $("#bulk-bar").style.width = `${done ? 100 : percent}%`;
  if (!done) setTimeout(() => watchBatch(jobId).catch((e) => banner(e.message)), MIN_POLL_MS);
  else refresh(true).catch((e) => banner(e.message));
}

async function startBulk(resource) {
  const ids = selectedIds();
  $("#bulk").hidden = false;
  $("#bulk-selected").textContent = `${ids.length} ${resource}(s) selected`;
  const offered = (await api(`/api/bulk-actions?resource=${encodeURIComponent(resource)}`)).types;
  $("#bulk-type").replaceChildren(...offered.map((t) => el("option", { value: t.name, text: t.name })));
  $("#bulk-run").disabled = !ids.length || !offered.length;
  $("#bulk-run").addEventListener("click", async () => {
    $("#bulk-run").disabled = true;
    try {
      const started = await api("/api/bulk-actions", { method: "POST",
        body: JSON.stringify({ type: $("#bulk-type").value, resource, ids }) });
      banner("");
      $("#bulk-progress").hidden = false;
      $("#bulk-progress").dataset.jobId = started.jobId;
      await watchBatch(started.jobId);
    } catch (error) {
      banner(error.message);
      $("#bulk-run").disabled = false;
    }
  });
}

async function start() {
  const bulkResource = document.querySelector("main").dataset.bulkResource;
  if (bulkResource) startBulk(bulkResource).catch((e) => banner(e.message));
  try {
    state.types = (await api("/api/job-types")).types;
  } catch (error) {
    banner(error.message);
    return;
  }
  $("#job-type").replaceChildren(...state.types.map((t) => el("option", { value: t.name, text: t.name })));
  renderForm();
  $("#job-type").addEventListener("change", renderForm);
  $("#job-form").addEventListener("submit", submitJob);
  $("#jobs").addEventListener("click", act);
  $("#status-tabs").addEventListener("click", (event) => {
    const tab = event.target.closest("button[data-status]");
    if (!tab) return;
    for (const other of document.querySelectorAll("#status-tabs button")) {
      other.setAttribute("aria-pressed", String(other === tab));
    }
    state.status = tab.dataset.status;
    state.more = false;
    state.version += 1;
    refresh(true).catch((e) => banner(e.message));
  });
  for (const [selector, key] of [["#type-filter", "type"], ["#starter-filter", "starter"]]) {
    $(selector).addEventListener("change", (event) => {
      state[key] = event.target.value;
      state.more = false;
      state.version += 1;
      refresh(true).catch((e) => banner(e.message));
    });
  }
  $("#more").addEventListener("click", async () => {
    try {
      const version = state.version;
      const page = await api(query(state.cursor));
      if (version !== state.version) return;
      state.version += 1;
      state.jobs = state.jobs.concat(page.jobs);
      state.cursor = page.nextCursor;
      state.more = true;
      renderJobs();
    } catch (error) {
      banner(error.message);
    }
  });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(true).catch(() => schedule()); });
  await refresh(true).catch((e) => { banner(e.message); schedule(); });
}

start();
