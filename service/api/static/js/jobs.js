// Jobs: POST /jobs?kind=...&task=...&<the endpoint's query parameters, format among them> with the
// body a synchronous request would send (202 {id, url}); GET /jobs/{id} for its state and progress;
// GET /jobs/{id}/result for the answer, in the format asked for; DELETE /jobs/{id} cancels a job
// that has not finished, or deletes a finished one. The jobs of this browser tab are kept in
// sessionStorage, so a reload keeps following them.

import {ApiError} from "./api.js";
import {$, clear, el, int, save} from "./ui.js";

const FORMATS = {predict: ["json", "csv", "tsv"], scan: ["json", "bed", "bedgraph"], explain: ["json", "bedgraph"]};
const TYPES = {json: "application/json", csv: "text/csv", tsv: "text/tab-separated-values", bed: "text/x-bed",
               bedgraph: "text/x-bedgraph"};
const ACTIVE = ["queued", "running"];
const STORE = "dnabert-jobs";
const POLL_MS = 1000;

let jobs = [];
let timer = null;

function store() {
  sessionStorage.setItem(STORE, JSON.stringify(jobs.map(({id, url, kind, task, format, submitted}) => ({id, url, kind, task, format, submitted}))));
}

function fillFormats() {
  const select = clear($("job-format"));
  for (const format of FORMATS[$("job-kind").value]) select.append(el("option", {value: format}, format));
}

function queryFor(ctx, kind) {
  if (kind === "scan") return ctx.scanParams();
  if (kind === "explain") return {model: ctx.model()};
  return ctx.predictParams();
}

function unavailable(status) {
  const note = $("jobs-unavailable");
  note.textContent = `This server does not run jobs (POST /jobs answered ${status}). `
    + "Use the Predict, Scan and Explain views, or split the file into smaller ones.";
  note.hidden = false;
}

async function submit(ctx) {
  const kind = $("job-kind").value;
  const format = $("job-format").value;
  const task = ctx.task();
  const body = ctx.body();
  $("jobs-unavailable").hidden = true;
  await ctx.run("Submitting the job", async (signal) => {
    let res;
    try {
      res = await ctx.call("POST", "/jobs", {params: {kind, task, ...queryFor(ctx, kind), format}, body: body.data, signal});
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 405)) {
        unavailable(err.status);
        ctx.status("Jobs are not available on this server.");
        return;
      }
      throw err;
    }
    const answer = await res.json();
    // the job's path on this origin (the page talks to its own server only)
    const url = answer.url ? new URL(answer.url, window.location.origin).pathname : `/jobs/${encodeURIComponent(answer.id)}`;
    jobs.unshift({id: answer.id, url, kind, task, format,
                  submitted: new Date().toLocaleTimeString("en-GB"), state: "queued", progress: null, error: null});
    store();
    render(ctx);
    ctx.status(`Job ${answer.id} submitted.`);
    poll(ctx);
  }, body);
}

async function refresh(ctx, job) {
  try {
    const res = await ctx.call("GET", job.url);
    Object.assign(job, pick(await res.json()));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      job.state = "gone";
      job.error = {message: "the server no longer knows this job"};
    }
  }
}

async function poll(ctx) {
  clearTimeout(timer);
  const active = jobs.filter((j) => ACTIVE.includes(j.state) || j.state === undefined);
  await Promise.all(active.map((j) => refresh(ctx, j)));
  render(ctx);
  if (jobs.some((j) => ACTIVE.includes(j.state))) timer = setTimeout(() => poll(ctx), POLL_MS);
}

/** Cancel a job that has not finished; delete a finished one (and its files) from the server. */
async function remove(ctx, job) {
  const finished = !ACTIVE.includes(job.state);
  try {
    const res = await ctx.call("DELETE", `/jobs/${encodeURIComponent(job.id)}`);
    if (res.status === 200) Object.assign(job, pick(await res.json()));
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) {
      ctx.showError(err);
      return;
    }
  }
  if (finished) jobs = jobs.filter((j) => j !== job);
  store();
  render(ctx);
  ctx.status(finished ? `Job ${job.id} deleted.` : `Job ${job.id} cancelled.`);
}

function pick(data) {
  return {state: data.state, progress: data.progress || null, error: data.error || null};
}

async function download(ctx, job) {
  await ctx.run(`Downloading the result of job ${job.id}`, async (signal) => {
    const res = await ctx.call("GET", `/jobs/${encodeURIComponent(job.id)}/result`, {signal});
    save(await res.arrayBuffer(), `${job.task}_${job.kind}_${job.id}.${job.format}`, TYPES[job.format]);
  });
}

function progressCell(job) {
  const p = job.progress;
  if (!p) return el("td", {}, "—");
  const unit = p.unit ? ` ${p.unit}` : "";
  if (!p.total) {  // not known until the input has been read through
    return el("td", {data: {done: p.done}}, el("progress", {"aria-label": `job ${job.id} progress`}), ` ${int(p.done)}${unit}`);
  }
  const bar = el("progress", {max: p.total, value: p.done, "aria-label": `job ${job.id} progress`});
  return el("td", {data: {done: p.done, total: p.total}}, bar, ` ${int(p.done)} of ${int(p.total)}${unit}`);
}

function failure(error) {
  if (!error) return null;
  const where = [error.record_id ? `record ${error.record_id}` : "", error.line ? `line ${error.line}` : ""].filter(Boolean);
  return el("div", {class: "help"}, `${error.message || String(error)}${where.length ? ` (${where.join(", ")})` : ""}`);
}

function render(ctx) {
  const table = clear($("jobs-table"));
  if (!jobs.length) {
    table.append(el("caption", {}, "No job submitted from this browser tab."));
    return;
  }
  table.append(el("thead", {}, el("tr", {}, ["Job", "Analysis", "Submitted", "State", "Progress", "Actions"]
    .map((h) => el("th", {scope: "col"}, h)))));
  const tbody = el("tbody");
  for (const job of jobs) {
    const actions = el("td", {class: "actions"});
    if (job.state === "succeeded") {
      actions.append(el("button", {type: "button", class: "small download", on: {click: () => download(ctx, job)},
                                   "aria-label": `Download the result of job ${job.id} (${job.format})`},
                        `Download ${job.format}`));
    }
    const active = ACTIVE.includes(job.state);
    actions.append(el("button", {type: "button", class: `secondary small ${active ? "cancel" : "delete"}`,
                                 on: {click: () => remove(ctx, job)},
                                 "aria-label": `${active ? "Cancel" : "Delete"} job ${job.id}`}, active ? "Cancel" : "Delete"));
    const state = el("td", {class: `state ${job.state}`}, job.state || "…", failure(job.error));
    tbody.append(el("tr", {data: {job: job.id, state: job.state}},
                    el("td", {}, el("code", {title: job.id}, job.id.length > 12 ? `${job.id.slice(0, 8)}…` : job.id)),
                    el("td", {}, `${job.kind}, ${job.task}`),
                    el("td", {}, job.submitted), state, progressCell(job), actions));
  }
  table.append(tbody);
}

export function init(ctx) {
  fillFormats();
  $("job-kind").addEventListener("change", fillFormats);
  $("job-submit").addEventListener("click", () => submit(ctx));
  try {
    jobs = JSON.parse(sessionStorage.getItem(STORE) || "[]");
  } catch {
    jobs = [];
  }
  render(ctx);
  if (jobs.length) poll(ctx);
}
