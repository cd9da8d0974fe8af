// Predict: one row per record, sortable and filterable; CSV/TSV/JSON downloads are the API's
// own answers to the same request.

import {$, bar, clear, el, int, save} from "./ui.js";

const LABELS = {nucleus: "Nucleus", cytoplasm: "Cytoplasm", extracellular_vesicle: "Extracellular vesicle"};
const ROW_LIMIT = 1000;
const TYPES = {csv: "text/csv", tsv: "text/tab-separated-values", json: "application/json"};

let last = null; // {task, params, body, raw, data, columns}
let order = {key: null, ascending: true};

function promoterColumns(data) {
  const variants = [...new Set(data.results.flatMap((r) => Object.keys(r.variant_probabilities || {})))].sort();
  return [
    {key: "id", title: "Id", text: (r) => r.id},
    {key: "length", title: "Length", number: (r) => r.length, show: (r) => int(r.length)},
    {key: "probability", title: "P(promoter)", number: (r) => r.probability,
     bar: (r) => bar(r.probability, data.threshold, "probability")},
    {key: "label", title: "Label", text: (r) => r.label ?? "not scored"},
    ...variants.map((v) => ({key: `p_${v}`, title: v, number: (r) => r.variant_probabilities?.[v] ?? null,
                             bar: (r) => bar(r.variant_probabilities?.[v] ?? null, data.threshold, v)})),
    {key: "flags", title: "Flags", text: (r) => r.flags.join(", ")},
  ];
}

function lncrnaColumns(data) {
  return [
    {key: "id", title: "Id", text: (r) => r.id},
    {key: "length", title: "Length", number: (r) => r.length, show: (r) => int(r.length)},
    ...Object.keys(LABELS).map((label) => ({
      key: label, title: LABELS[label], number: (r) => r.scores?.[label] ?? null,
      bar: (r) => bar(r.scores?.[label] ?? null, data.thresholds[label], label)})),
    {key: "locations", title: "Locations", text: (r) => r.locations.join(", ")},
    {key: "flags", title: "Flags", text: (r) => r.flags.join(", ")},
  ];
}

function labelChoices(task) {
  if (task === "promoter") {
    return [["", "all records"], ["promoter", "promoter"], ["non_promoter", "non_promoter"], ["null", "not scored"]];
  }
  return [["", "all records"], ...Object.entries(LABELS).map(([k, v]) => [k, `${v.toLowerCase()}`]),
          ["none", "no location"], ["null", "not scored"]];
}

function keep(row, text, label) {
  if (text && !row.id.toLowerCase().includes(text)) return false;
  if (!label) return true;
  const scored = last.task === "promoter" ? row.probability !== null : row.scores !== null;
  if (label === "null") return !scored;
  if (last.task === "promoter") return row.label === label;
  if (label === "none") return scored && row.locations.length === 0;
  return row.locations.includes(label);
}

function compare(column, ascending) {
  const sign = ascending ? 1 : -1;
  return (a, b) => {
    if (column.number) {
      const x = column.number(a);
      const y = column.number(b);
      if (x === null || y === null) return x === y ? 0 : x === null ? 1 : -1; // no value: last
      return sign * (x - y);
    }
    return sign * column.text(a).localeCompare(column.text(b), "en", {numeric: true});
  };
}

function header() {
  return el("thead", {}, el("tr", {}, last.columns.map((c) => {
    const sorted = order.key === c.key;
    const th = el("th", {scope: "col", class: c.number ? "numeric" : null, data: {col: c.key},
                         "aria-sort": sorted ? (order.ascending ? "ascending" : "descending") : "none"});
    th.append(el("button", {type: "button", class: "sort", on: {click: () => sortBy(c.key)},
                            "aria-label": `Sort by ${c.title}`}, c.title,
                 el("span", {class: "arrow", "aria-hidden": "true"}, sorted ? (order.ascending ? " ▲" : " ▼") : "")));
    return th;
  })));
}

function cell(column, row) {
  const td = el("td", {data: {col: column.key}});
  if (column.bar) {
    const value = column.number(row);
    if (value !== null) td.dataset.value = String(value);
    td.append(column.bar(row));
  } else if (column.number) {
    td.dataset.value = String(column.number(row));
    td.className = "numeric";
    td.append(column.show(row));
  } else {
    td.append(column.text(row));
  }
  return td;
}

function render() {
  if (!last) return;
  const text = $("predict-filter").value.trim().toLowerCase();
  const label = $("predict-label").value;
  let rows = last.data.results.filter((r) => keep(r, text, label));
  const column = last.columns.find((c) => c.key === order.key);
  if (column) rows = [...rows].sort(compare(column, order.ascending));
  const table = clear($("predict-table"));
  table.append(el("caption", {class: "visually-hidden"}, "Predictions, one row per record"), header());
  const tbody = el("tbody");
  for (const row of rows.slice(0, ROW_LIMIT)) {
    tbody.append(el("tr", {data: {id: row.id}}, last.columns.map((c) => cell(c, row))));
  }
  table.append(tbody);
  const total = last.data.results.length;
  $("predict-count").textContent = `${rows.length.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} records`
    + (rows.length > ROW_LIMIT ? `; the first ${ROW_LIMIT.toLocaleString("en-US")} shown (the downloads hold all)` : "");
}

function sortBy(key) {
  order = {key, ascending: order.key === key ? !order.ascending : key === "id" || key === "label"};
  render();
  document.querySelector(`#predict-table th[data-col="${CSS.escape(key)}"] button`)?.focus();
}

function summary(data) {
  const thresholds = data.task === "promoter"
    ? `threshold ${data.threshold}`
    : `thresholds ${Object.entries(data.thresholds).map(([k, v]) => `${k} ${v}`).join(", ")}`;
  return `${data.count.toLocaleString("en-US")} record${data.count === 1 ? "" : "s"}, model ${data.model}, ${thresholds}.`;
}

async function predict(ctx) {
  const task = ctx.task();
  const params = ctx.predictParams();
  const body = ctx.body();
  await ctx.run("Predicting", async (signal) => {
    const res = await ctx.call("POST", `/predict/${task}`, {params, body: body.data, signal});
    const raw = await res.text();
    const data = JSON.parse(raw);
    last = {task, params, body, raw, data, columns: task === "promoter" ? promoterColumns(data) : lncrnaColumns(data)};
    order = {key: null, ascending: true};
    const select = clear($("predict-label"));
    for (const [value, text] of labelChoices(task)) select.append(el("option", {value}, text));
    $("predict-filter").value = "";
    $("predict-summary").textContent = summary(data);
    $("predict-out").hidden = false;
    render();
    ctx.status(`Predicted ${data.count.toLocaleString("en-US")} record${data.count === 1 ? "" : "s"}.`);
  }, body);
}

async function download(ctx, format) {
  if (!last) return;
  const {task, params, body} = last;
  await ctx.run(`Preparing the ${format.toUpperCase()} file`, async (signal) => {
    const res = await ctx.call("POST", `/predict/${task}`, {params: {...params, format}, body: body.data, signal});
    save(await res.arrayBuffer(), `${task}_predictions.${format}`, TYPES[format]);
  }, body);
}

export function init(ctx) {
  $("predict-run").addEventListener("click", () => predict(ctx));
  $("predict-filter").addEventListener("input", render);
  $("predict-label").addEventListener("change", render);
  $("predict-csv").addEventListener("click", () => download(ctx, "csv"));
  $("predict-tsv").addEventListener("click", () => download(ctx, "tsv"));
  $("predict-json").addEventListener("click", () => last && save(last.raw, `${last.task}_predictions.json`, TYPES.json));
}
