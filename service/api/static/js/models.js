// Models: each served model's card from GET /models (what it is, its training data and split,
// and its metrics on held-out data).

import {$, clear, el, fmt, int, list} from "./ui.js";

const SPLITS = {test: "test", hl_test: "hearing-loss test", gue_test: "GUE test", dev: "dev"};
const PROMOTER_METRICS = [["n", "n"], ["accuracy", "accuracy"], ["mcc", "MCC"], ["auroc", "AUROC"], ["f1", "F1"],
                          ["precision", "precision"], ["recall", "recall"]];
const LNCRNA_LABELS = {nucleus: "nucleus", cytoplasm: "cytoplasm", extracellular_vesicle: "EV"};

function value(v, key) {
  if (v === null || v === undefined) return "n/a";
  return key === "n" || Number.isInteger(v) ? int(v) : fmt(v, 3);
}

function metricCell(split, path, v) {
  return el("td", {class: "numeric", data: {metric: `${split}.${path}`, value: v ?? ""}}, value(v, path));
}

function splitOrder(metrics) {
  const known = Object.keys(SPLITS).filter((s) => s in metrics);
  return [...known, ...Object.keys(metrics).filter((s) => !known.includes(s))];
}

function promoterTable(metrics) {
  const table = el("table", {class: "metrics"});
  table.append(el("thead", {}, el("tr", {}, el("th", {scope: "col"}, "split"),
                                  PROMOTER_METRICS.map(([, title]) => el("th", {scope: "col", class: "numeric"}, title)))));
  const tbody = el("tbody");
  for (const split of splitOrder(metrics)) {
    tbody.append(el("tr", {}, el("th", {scope: "row"}, SPLITS[split] || split),
                    PROMOTER_METRICS.map(([key]) => metricCell(split, key, metrics[split][key]))));
  }
  table.append(tbody);
  return table;
}

function lncrnaTable(metrics) {
  const table = el("table", {class: "metrics"});
  const heads = ["n", "macro AUROC", "micro AUROC", ...Object.values(LNCRNA_LABELS).map((l) => `${l} AUROC`),
                 "Hamming loss", "subset accuracy"];
  table.append(el("thead", {}, el("tr", {}, el("th", {scope: "col"}, "split"),
                                  heads.map((h) => el("th", {scope: "col", class: "numeric"}, h)))));
  const tbody = el("tbody");
  const notes = [];
  for (const split of splitOrder(metrics)) {
    const m = metrics[split];
    tbody.append(el("tr", {}, el("th", {scope: "row"}, SPLITS[split] || split),
                    metricCell(split, "n", m.n), metricCell(split, "macro_auroc", m.macro_auroc),
                    metricCell(split, "micro_auroc", m.micro_auroc),
                    Object.keys(LNCRNA_LABELS).map((l) => metricCell(split, `per_label.${l}.auroc`, m.per_label?.[l]?.auroc)),
                    metricCell(split, "hamming_loss", m.hamming_loss), metricCell(split, "subset_accuracy", m.subset_accuracy)));
    if (m.labels_without_positives?.length) {
      notes.push(`${SPLITS[split] || split}: no positive for ${list(m.labels_without_positives)} (its AUROC is undefined)`);
    }
  }
  table.append(tbody);
  return notes.length ? [table, el("p", {class: "help"}, `${notes.join("; ")}.`)] : [table];
}

function backbone(card) {
  const b = card.backbone || {};
  if (b.hidden_size) {
    return `${b.num_hidden_layers} layers, hidden size ${b.hidden_size}, ${b.num_attention_heads} attention heads, `
      + `vocabulary ${int(b.vocab_size)}`;
  }
  return Object.entries(b).map(([k, v]) => `${k.replaceAll("_", " ")} ${Array.isArray(v) ? v.join("/") : v}`).join(", ");
}

function tokens(card) {
  const t = card.tokenization || {};
  const kind = t.kind === "kmer" ? (t.k === 1 ? "one token per base" : `overlapping ${t.k}-mers`) : "BPE";
  return `${kind}, at most ${int(t.max_tokens)} tokens${t.max_nucleotides ? ` (${int(t.max_nucleotides)} nt)` : ""}`;
}

function dl(rows) {
  return el("dl", {class: "facts"}, rows.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function card(info) {
  const c = info.card || {};
  const training = c.training || {};
  const data = training.data || {};
  const sizes = data.sizes ? Object.entries(data.sizes).map(([k, v]) => `${k} ${int(v)}`).join(", ") : null;
  const status = info.ready
    ? `serving on ${info.providers.join(", ") || "?"}, ${info.precision}`
    : `not available${info.error ? `: ${info.error}` : ""}`;
  const article = el("article", {class: "card", data: {model: `${info.task}/${info.name}`},
                                 "aria-labelledby": `model-${info.task}-${info.name}`});
  article.append(
    el("h3", {id: `model-${info.task}-${info.name}`}, info.name, " ", el("span", {class: "badge"}, info.task)),
    el("p", {class: info.ready ? "help" : "notice"}, status),
    el("p", {}, c.description || ""),
    dl([["labels", (c.labels || []).join(", ")], ["head", c.head ? `${c.head.head_class}, ${int(c.head.parameters)} parameters` : null],
        ["backbone", backbone(c)], ["tokens", tokens(c)], ["initialised from", training.initialised_from]]),
    el("h4", {}, "Training data and split"),
    dl([["data set", data.name], ["split", data.split], ["sizes", sizes],
        ["files", data.files ? data.files.join(", ") : null]]),
  );
  if (c.metrics) {
    article.append(el("h4", {}, "Metrics (test: held out; dev: used to choose the model)"),
                   el("div", {class: "table-wrap"}, info.task === "promoter" ? promoterTable(c.metrics) : lncrnaTable(c.metrics)));
  }
  return article;
}

export function render(catalogue) {
  $("models-providers").textContent = `${catalogue.models.length} models; execution providers available on this server: `
    + `${catalogue.available_providers.join(", ")}; default promoter model: ${catalogue.default_promoter_model}.`;
  const box = clear($("models-list"));
  const first = (info) => (info.task === "promoter" ? 0 : 1); // promoter models first, then in the server's order
  for (const info of [...catalogue.models].sort((a, b) => first(a) - first(b))) box.append(card(info));
}
