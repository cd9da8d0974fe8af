// Scan: POST /scan/promoter streamed as NDJSON (so the windows scored so far show the progress),
// one track plot per record with its called regions, zoom, and the BED/bedGraph/JSON answers of
// the API for downloads.

import {ApiError, lines} from "./api.js";
import {trackPlot} from "./plots.js";
import {$, clear, el, fmt, int, save} from "./ui.js";

const TYPES = {bed: "text/x-bed", bedgraph: "text/x-bedgraph", json: "application/json"};

let last = null; // {params, body, meta, results}
let view = null; // the record shown and the range: {index, from, to}

/** The Scan view's query parameters (also used for a scan job). */
export function params(ctx) {
  return {model: ctx.model(), stride: $("scan-stride").value, strand: $("scan-strand").value,
          threshold: $("threshold").value, min_windows: $("scan-min-windows").value};
}

/** Windows per strand for a record of `length` bases: every `stride` from the first base, and
 * one more aligned to the last base when the stride does not land there. */
function windowsOf(length, window, stride) {
  if (length <= window) return 1;
  const span = length - window;
  return Math.floor(span / stride) + 1 + (span % stride ? 1 : 0);
}

async function scan(ctx) {
  if (ctx.task() !== "promoter") {
    ctx.status("Scanning is for the promoter models: choose the promoter task.");
  }
  const query = params(ctx);
  const body = ctx.body();
  const lengths = ctx.inputRecords().map((r) => r.length);
  await ctx.run("Scanning", async (signal, progress) => {
    const res = await ctx.call("POST", "/scan/promoter", {params: {...query, format: "ndjson"}, body: body.data, signal});
    let meta = null;
    let total = 0;
    let scored = 0;
    let done = false;
    const windows = new Map();
    const results = [];
    for await (const line of lines(res, signal)) {
      if (line.type === "scan") {
        meta = line;
        const strands = meta.strand === "both" ? 2 : 1;
        total = lengths.reduce((sum, n) => sum + strands * windowsOf(n, meta.window, meta.stride), 0);
      } else if (line.type === "window") {
        if (!windows.has(line.id)) windows.set(line.id, []);
        windows.get(line.id).push({start: line.start, end: line.end, strand: line.strand, probability: line.probability});
        scored += 1;
      } else if (line.type === "record") {
        const {type, ...fields} = line;
        results.push({...fields, windows: windows.get(line.id) || []});
        windows.delete(line.id);
        scored += fields.skipped_windows;
      } else if (line.type === "done") {
        done = true;
      } else if (line.type === "error") {
        throw new ApiError(res.status, line.error); // the scan failed half-way
      }
      if (line.type !== "window" || scored % 50 === 0) {
        progress(`${int(scored)} of ${int(total)} windows, ${results.length} of ${lengths.length} records`, scored, total);
      }
    }
    if (!done) throw new Error("the scan stopped before its end");
    last = {params: query, body, meta, results};
    const first = results.reduce((best, r, i) => (r.windows_scored > results[best].windows_scored ? i : best), 0);
    fillRecords(first);
    $("scan-out").hidden = false;
    const regions = results.reduce((n, r) => n + r.regions.length, 0);
    $("scan-summary").textContent = `${results.length} record${results.length === 1 ? "" : "s"}, model ${meta.model}, `
      + `${meta.window} bp windows every ${meta.stride} bp, strand ${meta.strand}, threshold ${meta.threshold}: `
      + `${regions} called region${regions === 1 ? "" : "s"}. Coordinates: ${meta.coordinates}.`;
    show(first);
    ctx.status(`Scanned ${results.length} record${results.length === 1 ? "" : "s"}: ${regions} called regions.`);
  }, body);
}

function fillRecords(selected) {
  const select = clear($("scan-record"));
  last.results.forEach((r, i) => {
    select.append(el("option", {value: String(i)},
                     `${r.id} (${int(r.length)} bp, ${r.regions.length} region${r.regions.length === 1 ? "" : "s"})`));
  });
  select.value = String(selected);
}

function show(index, from, to) {
  const record = last.results[index];
  const lo = record.offset;
  const hi = record.offset + record.length;
  from = Math.max(lo, Math.min(from ?? lo, hi - 1));
  to = Math.min(hi, Math.max(to ?? hi, from + 1));
  view = {index, from, to};
  $("scan-from").value = String(from);
  $("scan-to").value = String(to);
  $("scan-from").min = $("scan-to").min = String(lo);
  $("scan-from").max = $("scan-to").max = String(hi);
  draw();
  regionTable(record);
}

function draw() {
  if (!last || !view || $("panel-scan").hidden) return;
  const record = last.results[view.index];
  trackPlot($("scan-plot"), record, last.meta, [view.from, view.to], (a, b) => show(view.index, a, b));
}

function regionTable(record) {
  const table = clear($("scan-regions"));
  if (!record.regions.length) {
    table.append(el("caption", {}, `No called region on ${record.id}.`));
    return;
  }
  const heads = ["Strand", "Start", "End", "Length", "Best window", "Mean", "Windows", ""];
  table.append(el("thead", {}, el("tr", {}, heads.map((h) => el("th", {scope: "col"}, h || el("span", {class: "visually-hidden"}, "Zoom"))))));
  const tbody = el("tbody");
  record.regions.forEach((r) => {
    const pad = Math.max(50, Math.round((r.end - r.start) / 2));
    tbody.append(el("tr", {data: {strand: r.strand, start: r.start, end: r.end}},
      el("td", {}, r.strand),
      el("td", {class: "numeric", data: {col: "start", value: r.start}}, int(r.start)),
      el("td", {class: "numeric", data: {col: "end", value: r.end}}, int(r.end)),
      el("td", {class: "numeric"}, int(r.end - r.start)),
      el("td", {class: "numeric", data: {col: "score", value: r.score}}, fmt(r.score)),
      el("td", {class: "numeric", data: {col: "mean", value: r.mean}}, fmt(r.mean)),
      el("td", {class: "numeric", data: {col: "windows", value: r.windows}}, String(r.windows)),
      el("td", {}, el("button", {type: "button", class: "secondary small",
                                 "aria-label": `Zoom to ${r.strand} ${r.start}-${r.end}`,
                                 on: {click: () => show(view.index, r.start - pad, r.end + pad)}}, "Zoom to"))));
  });
  table.append(tbody);
}

async function download(ctx, format) {
  if (!last) return;
  const {params: query, body} = last;
  await ctx.run(`Preparing the ${format === "bed" ? "BED" : format === "bedgraph" ? "bedGraph" : "JSON"} file`, async (signal) => {
    const res = await ctx.call("POST", "/scan/promoter", {params: {...query, format}, body: body.data, signal});
    save(await res.arrayBuffer(), `promoter_scan.${format === "bedgraph" ? "bedgraph" : format}`, TYPES[format]);
  }, body);
}

/** Called when the Scan tab is shown (the plot takes the width it has). */
export function shown() {
  draw();
}

export function init(ctx) {
  $("scan-run").addEventListener("click", () => scan(ctx));
  $("scan-record").addEventListener("change", (e) => show(Number(e.target.value)));
  const zoom = () => show(view.index, Number($("scan-from").value), Number($("scan-to").value));
  $("scan-zoom").addEventListener("click", zoom);
  for (const id of ["scan-from", "scan-to"]) $(id).addEventListener("keydown", (e) => e.key === "Enter" && zoom());
  $("scan-reset").addEventListener("click", () => show(view.index));
  for (const format of ["bed", "bedgraph", "json"]) $(`scan-${format}`).addEventListener("click", () => download(ctx, format));
  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(draw, 150);
  });
}
