// The page: the input (FASTA text or a file), the task, model and thresholds, the API key, the
// views as tabs, one request at a time with its progress and a Cancel button, and API errors
// shown next to the input with the record and the line they name.

import {ApiError, apiKey, call, events} from "./api.js";
import {isGzip, lineSpan, readText, recordText, records} from "./fasta.js";
import * as explain from "./explain.js";
import * as jobs from "./jobs.js";
import * as models from "./models.js";
import * as predict from "./predict.js";
import * as scan from "./scan.js";
import {$, bytes, clear, el} from "./ui.js";

const TASK_NAMES = {"promoter": "Promoter", "lncrna-localization": "lncRNA localization"};
const EXAMPLES = {"promoter": "/ui/examples/promoter.fasta", "lncrna-localization": "/ui/examples/lncrna.fasta"};
const LNCRNA_LABELS = ["nucleus", "cytoplasm", "extracellular_vesicle"];
const TEXTAREA_LIMIT = 2 * 1024 * 1024; // characters shown in the text box; larger files are sent as they are
const TABS = ["predict", "scan", "explain", "jobs", "models"];

const state = {
  catalogue: null, // the answer of GET /models
  file: null, // {blob, name, gzip, text, inTextarea}: a file chosen or dropped, sent as it is
  parsed: {text: null, records: []},
  running: null, // the AbortController of the request in progress
  finished: 0, // requests run to their end (body[data-finished], for scripts driving the page)
};

// ---- the input ----------------------------------------------------------------------------------

function inputText() {
  return state.file && !state.file.inTextarea ? state.file.text : $("fasta").value;
}

function inputRecords() {
  const text = inputText();
  if (state.parsed.text !== text) state.parsed = {text, records: records(text)};
  return state.parsed.records;
}

const inputListeners = [];
function inputChanged() {
  for (const listener of inputListeners) listener();
}

function describeInput() {
  const info = $("file-info");
  const recs = inputRecords();
  const counted = `${recs.length.toLocaleString("en-US")} record${recs.length === 1 ? "" : "s"}`;
  if (!state.file) {
    info.textContent = $("fasta").value.trim() ? counted : "";
    return;
  }
  const f = state.file;
  info.textContent = `${f.name}: ${bytes(f.blob.size)}${f.gzip ? ", gzip" : ""}, ${counted}; sent as it is`
    + (f.inTextarea ? "." : " (too large to show here).");
}

async function loadFile(file) {
  if (!file) return;
  clearError();
  const gzip = await isGzip(file);
  let text = "";
  try {
    text = await readText(file, gzip);
  } catch {
    text = ""; // not readable here: the server will say what is wrong with it
  }
  state.file = {blob: file, name: file.name, gzip, text, inTextarea: text.length <= TEXTAREA_LIMIT};
  const area = $("fasta");
  area.value = state.file.inTextarea ? text : "";
  area.disabled = !state.file.inTextarea;
  describeInput();
  inputChanged();
}

function dropFile() {
  state.file = null;
  $("file").value = "";
  $("fasta").disabled = false;
}

async function loadExample() {
  await run("Loading the example", async (signal) => {
    const res = await call("GET", EXAMPLES[task()], {signal});
    dropFile();
    $("fasta").value = await res.text();
    describeInput();
    inputChanged();
    status(`The ${TASK_NAMES[task()]} example is loaded.`);
  });
}

/** What a request sends: the file as it is (gzip stays gzip), else the text box. */
function body() {
  if (state.file) return {data: state.file.blob, name: state.file.name, text: state.file.text, lineOffset: 0};
  const text = $("fasta").value;
  return {data: text, name: "sequences", text, lineOffset: 0};
}

/** One record as a request body of its own (for an explanation), its lines still counted from
 * the start of the whole input. */
function recordBody(record) {
  const text = recordText(inputText(), record);
  return {data: text, name: record.id, text: inputText(), lineOffset: record.line - 1};
}

// ---- task, model, thresholds --------------------------------------------------------------------

function task() {
  return $("task").value || "promoter";
}

function model() {
  return $("model").value;
}

function predictParams() {
  const params = {model: model()};
  if (task() === "promoter") params.threshold = $("threshold").value;
  else for (const label of LNCRNA_LABELS) params[`threshold_${label}`] = $(`threshold-${label}`).value;
  return params;
}

function fillModels() {
  const select = $("model");
  const previous = select.value;
  clear(select);
  const served = (state.catalogue?.models || []).filter((m) => m.task === task());
  if (task() === "promoter" && served.length) {
    select.append(el("option", {value: "all"}, "all (the mean of the five DNABERT-2 variants)"));
  }
  for (const m of served) {
    const label = m.ready ? m.name : `${m.name} (not available${m.error ? `: ${m.error}` : ""})`;
    select.append(el("option", {value: m.name, disabled: !m.ready}, label));
  }
  const fallback = task() === "promoter" ? state.catalogue?.default_promoter_model : served.find((m) => m.ready)?.name;
  const names = [...select.options].map((o) => o.value);
  select.value = names.includes(previous) ? previous : fallback && names.includes(fallback) ? fallback : names[0] || "";
}

function taskChanged() {
  const isPromoter = task() === "promoter";
  $("thr-promoter").hidden = !isPromoter;
  $("thr-lncrna").hidden = isPromoter;
  fillModels();
  explain.taskChanged(ctx);
}

async function loadModels() {
  try {
    const res = await call("GET", "/models");
    state.catalogue = await res.json();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return; // the key box is shown; loaded again with a key
    showError(err);
    return;
  }
  const tasks = [...new Set(state.catalogue.models.map((m) => m.task))];
  const select = $("task");
  const previous = select.value;
  clear(select);
  for (const t of Object.keys(TASK_NAMES).filter((t) => tasks.includes(t))) {
    select.append(el("option", {value: t}, TASK_NAMES[t]));
  }
  if (tasks.includes(previous)) select.value = previous;
  taskChanged();
  models.render(state.catalogue);
}

// ---- the API key ----------------------------------------------------------------------------------

function showKeyBox(message) {
  $("key-box").hidden = false;
  if (message) $("key-note").textContent = message;
}

function saveKey() {
  apiKey.set($("api-key").value.trim());
  $("api-key").value = "";
  status(apiKey.get() ? "The API key is set for this browser tab." : "No API key is set.");
  clearError();
  loadModels();
}

// ---- errors, status, the request in progress ------------------------------------------------------

function status(text) {
  $("status").textContent = text;
}

function clearError() {
  const box = $("input-error");
  clear(box);
  box.hidden = true;
}

/** An API error, next to the input: its message, code, the record and the line it names (that
 * line of the input shown, and selected in the text box on request), and the request id. */
function showError(err, input) {
  const box = clear($("input-error"));
  const api = err instanceof ApiError;
  const code = api ? ` (${err.status >= 400 ? `${err.status} ` : ""}${err.code})` : "";
  box.append(el("p", {class: "error-title"}, `Error${code}`));
  box.append(el("p", {class: "error-message"}, err.message));
  if (api && err.recordId) box.append(el("p", {}, "Record: ", el("code", {class: "error-record"}, err.recordId)));
  if (api && err.line) {
    const line = err.line + (input?.lineOffset || 0);
    const text = input?.text ?? inputText();
    const span = lineSpan(text, line);
    const shown = span ? text.slice(span[0], Math.min(span[1], span[0] + 120)) : "";
    box.append(el("p", {}, "Line ", el("span", {class: "error-line"}, String(line)),
                  shown ? el("code", {class: "line-text"}, shown) : null));
    if (span && !$("fasta").disabled && $("fasta").value === text) {
      box.append(el("button", {type: "button", class: "secondary", on: {click: () => selectLine(span)}},
                    `Show line ${line} in the input`));
    }
  }
  if (api && err.requestId) box.append(el("p", {class: "help"}, `Request id: ${err.requestId}`));
  box.hidden = false;
  box.focus({preventScroll: true});
  box.scrollIntoView({block: "nearest"});
}

function selectLine([start, end]) {
  const area = $("fasta");
  area.focus();
  area.setSelectionRange(start, end);
  const lineHeight = parseFloat(getComputedStyle(area).lineHeight) || 18;
  area.scrollTop = Math.max(0, area.value.slice(0, start).split(/\r\n|\r|\n/).length - 3) * lineHeight;
}

/** Run one request (or several, for one action) with the progress shown and a Cancel button.
 * `work(signal, progress)`; an API error is shown next to the input, relative to `input`. */
async function run(label, work, input) {
  if (state.running) {
    status("A request is in progress: wait for it, or cancel it.");
    return false;
  }
  clearError();
  const controller = new AbortController();
  state.running = controller;
  const started = performance.now();
  let note = "";
  const bar = $("busy-bar");
  bar.removeAttribute("value");
  const tick = () => {
    $("busy-text").textContent = `${label}… ${((performance.now() - started) / 1000).toFixed(1)} s${note ? `, ${note}` : ""}`;
  };
  const progress = (text, done, total) => {
    note = text;
    if (total) {
      bar.max = total;
      bar.value = Math.min(done, total);
    }
    tick();
  };
  tick();
  $("busy").hidden = false;
  const timer = setInterval(tick, 200);
  let ok = false;
  try {
    await work(controller.signal, progress);
    ok = true;
  } catch (err) {
    if (err.name === "AbortError") status(`${label}: cancelled.`);
    else {
      status(`${label}: failed.`);
      showError(err, input);
    }
  } finally {
    clearInterval(timer);
    $("busy").hidden = true;
    state.running = null;
    document.body.dataset.finished = String(++state.finished);
  }
  return ok;
}

function cancel() {
  state.running?.abort();
}

// ---- tabs ---------------------------------------------------------------------------------------------

function selectTab(name, focus = false) {
  for (const t of TABS) {
    const tab = $(`tab-${t}`);
    const on = t === name;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`panel-${t}`).hidden = !on;
    if (on && focus) tab.focus();
  }
  if (window.location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  if (name === "scan") scan.shown();
}

function tabKeys(event) {
  const current = TABS.findIndex((t) => $(`tab-${t}`).getAttribute("aria-selected") === "true");
  const moves = {ArrowRight: current + 1, ArrowLeft: current - 1, Home: 0, End: TABS.length - 1};
  if (!(event.key in moves)) return;
  event.preventDefault();
  selectTab(TABS[(moves[event.key] + TABS.length) % TABS.length], true);
}

// ---- start ------------------------------------------------------------------------------------------

const ctx = {
  task, model, predictParams, body, recordBody, inputRecords, run, status, showError,
  call, onInput: (fn) => inputListeners.push(fn),
  scanParams: () => scan.params(ctx),
};

function wire() {
  const area = $("fasta");
  let pending = null;
  area.addEventListener("input", () => {
    if (state.file) dropFile();
    clearTimeout(pending);
    pending = setTimeout(() => {
      describeInput();
      inputChanged();
    }, 250);
  });
  $("file").addEventListener("change", (e) => loadFile(e.target.files[0]));
  const drop = $("drop");
  const files = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => {
      if (!files(e)) return; // dragged text goes into the text box as usual
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    if (!files(e)) return;
    e.preventDefault();
    loadFile(e.dataTransfer.files[0]);
  });
  // a file dropped beside the box must not replace the page
  for (const ev of ["dragover", "drop"]) window.addEventListener(ev, (e) => files(e) && e.preventDefault());
  $("example").addEventListener("click", loadExample);
  $("clear").addEventListener("click", () => {
    dropFile();
    area.value = "";
    clearError();
    describeInput();
    inputChanged();
  });
  $("task").addEventListener("change", taskChanged);
  $("cancel").addEventListener("click", cancel);
  $("key-box").addEventListener("submit", (e) => {
    e.preventDefault();
    saveKey();
  });
  $("key-forget").addEventListener("click", () => {
    apiKey.set("");
    status("The API key is forgotten.");
  });
  events.addEventListener("unauthorized", () => showKeyBox(apiKey.get()
    ? "The server did not accept this API key. Enter the right one."
    : "This server needs an API key. It is kept in this browser tab only (session storage)."));
  for (const t of TABS) $(`tab-${t}`).addEventListener("click", () => selectTab(t));
  document.querySelector("[role=tablist]").addEventListener("keydown", tabKeys);
}

wire();
for (const view of [predict, scan, explain, jobs]) view.init(ctx);
if (apiKey.get()) showKeyBox("An API key is set for this browser tab.");
selectTab(TABS.includes(window.location.hash.slice(1)) ? window.location.hash.slice(1) : "predict");
loadModels().then(() => document.body.classList.add("ready"));
