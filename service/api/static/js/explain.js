// Explain: the in-silico mutagenesis of one chosen record (POST /explain/<task> with that record
// alone), drawn as its importance plot with the sequence readable under it.

import {importanceLegend, importancePlot} from "./plots.js";
import {$, clear, el, fmt, int, save} from "./ui.js";

let last = null; // {task, params, body, raw, data}

function fillRecords(ctx) {
  const select = $("explain-record");
  const previous = select.value;
  clear(select);
  const recs = ctx.inputRecords();
  recs.forEach((r, i) => select.append(el("option", {value: String(i)}, `${r.id || "(no id)"} (${int(r.length)} nt)`)));
  if (!recs.length) select.append(el("option", {value: ""}, "no record in the input"));
  select.disabled = !recs.length;
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
}

/** The task changed: the label choice is for lncRNA only. */
export function taskChanged(ctx) {
  $("explain-label-field").hidden = ctx.task() === "promoter";
}

function render() {
  const result = last.data.results[0];
  const label = last.task === "promoter" ? null : $("explain-label").value;
  const reference = label ? result.reference?.[label] : result.reference;
  const what = label ? `the ${label.replace("_", " ")} score` : "P(promoter)";
  const summary = $("explain-summary");
  clear(summary);
  summary.append(el("strong", {}, result.id), `: ${int(result.length)} nt, model ${last.data.model}, `,
                 `${int(result.mutants)} mutants scored. ${label ? `Score (${label.replace("_", " ")})` : "P(promoter)"} `,
                 `of the sequence: `, el("span", {class: "reference", data: {value: reference ?? ""}}, fmt(reference)),
                 result.flags.length ? `. Flags: ${result.flags.join(", ")}` : "", ".");
  const plot = $("explain-plot");
  if (result.importance === null) {
    clear(plot).append(el("p", {class: "notice"}, "This record has no A, C, G or T: it is not scored."));
    clear($("explain-legend"));
    return;
  }
  const scale = importancePlot(plot, result, label);
  importanceLegend($("explain-legend"), scale, what);
}

async function explain(ctx) {
  const recs = ctx.inputRecords();
  const chosen = recs[Number($("explain-record").value)];
  const task = ctx.task();
  const params = {model: ctx.model()};
  // the chosen record alone (all of the input when it holds no record: the server says why)
  const body = chosen ? ctx.recordBody(chosen) : ctx.body();
  await ctx.run("Explaining", async (signal) => {
    const res = await ctx.call("POST", `/explain/${task}`, {params, body: body.data, signal});
    const raw = await res.text();
    last = {task, params, body, raw, data: JSON.parse(raw)};
    $("explain-out").hidden = false;
    render();
    ctx.status(`Explained ${last.data.results[0].id}: ${int(last.data.results[0].mutants)} mutants.`);
  }, body);
}

async function bedgraph(ctx) {
  if (!last) return;
  const {task, params, body} = last;
  await ctx.run("Preparing the bedGraph file", async (signal) => {
    const res = await ctx.call("POST", `/explain/${task}`, {params: {...params, format: "bedgraph"}, body: body.data, signal});
    save(await res.arrayBuffer(), `${task}_importance.bedgraph`, "text/x-bedgraph");
  }, body);
}

export function init(ctx) {
  ctx.onInput(() => fillRecords(ctx));
  fillRecords(ctx);
  $("explain-run").addEventListener("click", () => explain(ctx));
  $("explain-label").addEventListener("change", () => last && last.task !== "promoter" && render());
  $("explain-json").addEventListener("click", () => last && save(last.raw, `${last.task}_explanation.json`, "application/json"));
  $("explain-bedgraph").addEventListener("click", () => bedgraph(ctx));
}
