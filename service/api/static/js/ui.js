// Small DOM helpers shared by the views. Every element is built with createElement and text
// nodes (never innerHTML), so record ids and server messages are always shown as text.

export const $ = (id) => document.getElementById(id);

const SVG_NS = "http://www.w3.org/2000/svg";

function apply(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.setAttribute("class", value);
    else if (key === "text") node.textContent = value;
    else if (key === "data") for (const [k, v] of Object.entries(value)) node.dataset[k] = String(v);
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An HTML element: el("td", {class: "num", data: {value: 1}}, "text", otherNode). */
export function el(tag, attrs, ...children) {
  return append(apply(document.createElement(tag), attrs), children);
}

/** An SVG element. */
export function svg(tag, attrs, ...children) {
  return append(apply(document.createElementNS(SVG_NS, tag), attrs), children);
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

/** A probability or score as shown in tables: four decimals, an em dash for no value. */
export function fmt(value, digits = 4) {
  return value === null || value === undefined ? "—" : Number(value).toFixed(digits);
}

export function int(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString("en-US");
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** A horizontal bar for a value in [0, 1], with the threshold marked; the exact value is in
 * data-value (the number as the API sent it) and the four-decimal text beside the bar. */
export function bar(value, threshold, name) {
  const cell = el("div", {class: "barcell"});
  if (value === null || value === undefined) {
    cell.append(el("span", {class: "muted"}, "not scored"));
    return cell;
  }
  const track = el("div", {class: "bar", role: "img", "aria-label": `${name} ${fmt(value)}`});
  const fill = el("span", {class: value >= threshold ? "fill on" : "fill"});
  fill.style.width = `${Math.max(0, Math.min(1, value)) * 100}%`;
  track.append(fill);
  if (threshold !== null && threshold !== undefined) {
    const tick = el("i", {class: "tick", title: `threshold ${threshold}`});
    tick.style.left = `${threshold * 100}%`;
    track.append(tick);
  }
  cell.append(track, el("span", {class: "num"}, fmt(value)));
  return cell;
}

/** Save text or bytes (an ArrayBuffer: an answer of the API, as it came) as a file. */
export function save(data, name, type = "text/plain") {
  const blob = new Blob([data], {type});
  const url = URL.createObjectURL(blob);
  const link = el("a", {href: url, download: name, class: "hidden-link"});
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
}

/** "A, B and C". */
export function list(items) {
  if (items.length < 2) return items.join("");
  return `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}
