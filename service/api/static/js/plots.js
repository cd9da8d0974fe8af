// The plots, drawn as SVG by this page: the scan track (probability along a record, both strands,
// called regions) and the importance plot of an explanation (bars, substitution grid, sequence).

import {clear, el, fmt, svg} from "./ui.js";

const STRAND_NAMES = {"+": "plus", "-": "minus"};

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * power >= raw) return Math.max(1, m * power);
  return Math.max(1, 10 * power);
}

let clipCount = 0;

/** The scan track of one record between genome positions `from` and `to`: each strand's window
 * probabilities (at the window centres), the threshold, and the called regions shaded.
 * Dragging across the plot calls `onZoom(start, end)`. */
export function trackPlot(container, record, meta, [from, to], onZoom) {
  clear(container);
  const width = Math.max(300, Math.floor(container.clientWidth || 800));
  const height = width < 500 ? 220 : 260;
  const m = {l: 44, r: 26, t: 16, b: 40};
  const iw = width - m.l - m.r;
  const ih = height - m.t - m.b;
  const x = (g) => m.l + ((g - from) / (to - from)) * iw;
  const y = (p) => m.t + (1 - p) * ih;
  const clip = `track-clip-${++clipCount}`;
  const root = svg("svg", {
    class: "track", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `Promoter probability along ${record.id} from ${from} to ${to}, `
      + `${record.regions.length} called region${record.regions.length === 1 ? "" : "s"}`,
  });
  root.append(svg("defs", {}, svg("clipPath", {id: clip}, svg("rect", {x: m.l, y: 0, width: iw, height}))));
  root.append(svg("rect", {class: "plot-area", x: m.l, y: m.t, width: iw, height: ih}));

  const regions = svg("g", {class: "regions", "clip-path": `url(#${clip})`});
  for (const r of record.regions) {
    if (r.end < from || r.start > to) continue;
    const cls = `region ${STRAND_NAMES[r.strand]}`;
    const x0 = x(Math.max(r.start, from));
    const w = Math.max(1, x(Math.min(r.end, to)) - x0);
    regions.append(svg("rect", {class: cls, x: x0, y: m.t, width: w, height: ih},
                       svg("title", {}, `${r.strand} ${r.start}-${r.end}: best ${fmt(r.score)}, mean ${fmt(r.mean)}`)));
    regions.append(svg("rect", {class: `${cls} band`, x: x0, y: r.strand === "+" ? m.t : m.t + ih - 5, width: w, height: 5}));
  }
  root.append(regions);

  const axes = svg("g", {class: "axes"});
  for (const p of [0, 0.25, 0.5, 0.75, 1]) {
    axes.append(svg("line", {class: "grid", x1: m.l, x2: m.l + iw, y1: y(p), y2: y(p)}));
    axes.append(svg("text", {x: m.l - 6, y: y(p) + 4, "text-anchor": "end"}, p.toFixed(2)));
  }
  const step = niceStep(to - from, Math.floor(iw / 90));
  for (let g = Math.ceil(from / step) * step; g <= to; g += step) {
    axes.append(svg("line", {class: "tick", x1: x(g), x2: x(g), y1: m.t + ih, y2: m.t + ih + 5}));
    axes.append(svg("text", {x: x(g), y: m.t + ih + 18, "text-anchor": "middle"}, g.toLocaleString("en-US")));
  }
  axes.append(svg("text", {class: "axis-title", x: m.l + iw / 2, y: height - 4, "text-anchor": "middle"},
                  `${record.chrom}, 0-based position`));
  axes.append(svg("text", {class: "axis-title", x: 12, y: m.t + ih / 2, "text-anchor": "middle",
                           transform: `rotate(-90 12 ${m.t + ih / 2})`}, "P(promoter)"));
  root.append(axes);

  root.append(svg("line", {class: "threshold", x1: m.l, x2: m.l + iw, y1: y(meta.threshold), y2: y(meta.threshold)},
                  svg("title", {}, `threshold ${meta.threshold}`)));

  for (const strand of ["+", "-"]) {
    const windows = record.windows.filter((w) => w.strand === strand);
    if (!windows.length) continue;
    const visible = windows.filter((w) => (w.start + w.end) / 2 >= from && (w.start + w.end) / 2 <= to);
    const group = svg("g", {class: `strand ${STRAND_NAMES[strand]}`, "clip-path": `url(#${clip})`,
                            data: {strand, windows: windows.length, visible: visible.length}});
    let points = [];
    let previous = null;
    const flush = () => {
      if (points.length > 1) group.append(svg("polyline", {points: points.join(" ")}));
      points = [];
    };
    for (const w of windows) {
      const c = (w.start + w.end) / 2;
      if (previous !== null && c - previous > 1.5 * meta.stride) flush(); // skipped windows: a gap
      points.push(`${x(c).toFixed(1)},${y(w.probability).toFixed(1)}`);
      previous = c;
    }
    flush();
    if (visible.length <= iw / 7) { // markers while they stay apart
      for (const w of visible) {
        group.append(svg("circle", {cx: x((w.start + w.end) / 2), cy: y(w.probability), r: 3},
                         svg("title", {}, `${strand} ${w.start}-${w.end}: ${fmt(w.probability)}`)));
      }
    }
    root.append(group);
  }

  const selection = svg("rect", {class: "selection", x: 0, y: m.t, width: 0, height: ih, visibility: "hidden"});
  root.append(selection);
  const toPlot = (event) => {
    const box = root.getBoundingClientRect();
    return Math.min(m.l + iw, Math.max(m.l, (event.clientX - box.left) * (width / box.width)));
  };
  let start = null;
  root.addEventListener("pointerdown", (event) => {
    start = toPlot(event);
    root.setPointerCapture(event.pointerId);
    selection.setAttribute("visibility", "visible");
    selection.setAttribute("x", start);
    selection.setAttribute("width", 0);
  });
  root.addEventListener("pointermove", (event) => {
    if (start === null) return;
    const now = toPlot(event);
    selection.setAttribute("x", Math.min(start, now));
    selection.setAttribute("width", Math.abs(now - start));
  });
  root.addEventListener("pointerup", (event) => {
    if (start === null) return;
    const end = toPlot(event);
    selection.setAttribute("visibility", "hidden");
    const [a, b] = [Math.min(start, end), Math.max(start, end)];
    start = null;
    const g = (px) => Math.round(from + ((px - m.l) / iw) * (to - from));
    if (b - a > 6) onZoom(g(a), g(b));
  });
  container.append(root);
  return root;
}

const BASES = ["A", "C", "G", "T"];
const CELL = 14;

function heat(value, maxAbs) {
  const t = Math.min(1, Math.abs(value) / maxAbs);
  const [r, g, b] = value >= 0 ? [202, 0, 32] : [5, 113, 176];
  const mix = (c) => Math.round(255 + (c - 255) * t);
  return `rgb(${mix(r)},${mix(g)},${mix(b)})`;
}

/** The importance plot of one explained record (for lncRNA: of one label): a bar per position
 * (its importance, the largest change a substitution there makes), the 4 x L grid of changes,
 * and the sequence, one readable letter per column. Returns the legend's numbers. */
export function importancePlot(container, result, label) {
  clear(container);
  const pick = (v) => (label ? v?.[label] : v);
  const importance = pick(result.importance);
  const changes = pick(result.changes);
  const mean = pick(result.mean_change);
  const seq = result.sequence;
  const n = seq.length;
  const maxImportance = Math.max(...importance, 1e-12);
  const maxAbs = Math.max(...changes.flat().map(Math.abs), 1e-12);
  const barTop = 10;
  const barHeight = 110;
  const heatTop = barTop + barHeight + 10;
  const seqTop = heatTop + 4 * CELL + 8;
  const axisTop = seqTop + 30;
  const height = axisTop + 8;
  const labels = svg("svg", {class: "explain-labels", width: 84, height, viewBox: `0 0 84 ${height}`, "aria-hidden": "true"});
  labels.append(svg("text", {x: 78, y: barTop + 10, "text-anchor": "end"}, fmt(maxImportance)));
  labels.append(svg("text", {x: 78, y: barTop + barHeight, "text-anchor": "end"}, "0"));
  labels.append(svg("text", {class: "axis-title", x: 78, y: barTop + barHeight / 2 + 4, "text-anchor": "end"}, "importance"));
  BASES.forEach((b, j) => labels.append(svg("text", {x: 78, y: heatTop + j * CELL + 11, "text-anchor": "end"}, `→ ${b}`)));
  labels.append(svg("text", {x: 78, y: seqTop + 13, "text-anchor": "end"}, "sequence"));
  labels.append(svg("text", {x: 78, y: axisTop, "text-anchor": "end"}, "position"));

  const width = n * CELL + 8;
  const plot = svg("svg", {class: "explain", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                           "aria-label": `Importance of each of the ${n} positions of ${result.id}, and the sequence`});
  const bars = svg("g", {class: "bars"});
  const grid = svg("g", {class: "grid"});
  const letters = svg("g", {class: "seq"});
  for (let i = 0; i < n; i++) {
    const x0 = i * CELL;
    const ref = seq[i];
    const h = (importance[i] / maxImportance) * barHeight;
    const detail = BASES.map((b, j) => (b === ref ? null : `${b} ${changes[i][j] >= 0 ? "+" : ""}${fmt(changes[i][j])}`))
      .filter(Boolean).join(", ");
    const title = `position ${i + 1} (${ref}): importance ${fmt(importance[i])}; substitutions ${detail}`;
    bars.append(svg("rect", {class: mean[i] > 0 ? "up" : "down", x: x0 + 1, y: barTop + barHeight - h, width: CELL - 2,
                             height: Math.max(h, 0.5), data: {pos: i, value: importance[i]}}, svg("title", {}, title)));
    BASES.forEach((b, j) => {
      grid.append(svg("rect", {class: b === ref ? "ref" : null, x: x0, y: heatTop + j * CELL, width: CELL, height: CELL,
                               fill: b === ref ? "#ffffff" : heat(changes[i][j], maxAbs), data: {pos: i, base: b, value: changes[i][j]}},
                      svg("title", {}, `position ${i + 1}: ${ref} → ${b}: ${changes[i][j] >= 0 ? "+" : ""}${fmt(changes[i][j])}`)));
    });
    letters.append(svg("text", {class: `base base-${ref}`, x: x0 + CELL / 2, y: seqTop + 13, "text-anchor": "middle"}, ref));
    if ((i + 1) % 10 === 0 || i === 0) {
      letters.append(svg("text", {class: "pos", x: x0 + CELL / 2, y: axisTop, "text-anchor": "middle"}, String(i + 1)));
    }
  }
  plot.append(bars, grid, letters);
  const scroller = el("div", {class: "explain-scroll", tabindex: 0, role: "region",
                              "aria-label": `Importance plot and sequence of ${result.id}; scroll sideways with the arrow keys`});
  scroller.append(plot);
  container.append(el("div", {class: "explain-wrap"}, labels, scroller));
  return {maxImportance, maxAbs};
}

/** The legend of the importance plot, as HTML. */
export function importanceLegend(node, {maxImportance, maxAbs}, what) {
  clear(node);
  const swatch = (cls) => el("span", {class: `swatch ${cls}`, "aria-hidden": "true"});
  node.append(
    el("span", {}, swatch("down"), `bar: mutations there lower ${what} on average`),
    el("span", {}, swatch("up"), `bar: they raise it (tallest bar ${fmt(maxImportance)})`),
    el("span", {}, swatch("heat-neg"), swatch("heat-pos"), `grid: change of ${what} for each substitution, `
      + `from −${fmt(maxAbs)} (blue) to +${fmt(maxAbs)} (red); white: the base itself`),
  );
}
