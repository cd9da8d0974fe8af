// Reading what the user gives: a file (plain or gzip, told apart by its first bytes, as the
// server does) and the record headers of FASTA text, to list the records and find their lines.
// The records themselves are checked by the server; nothing here judges a sequence.

/** Whether a Blob starts with the gzip magic bytes. */
export async function isGzip(blob) {
  const head = new Uint8Array(await blob.slice(0, 2).arrayBuffer());
  return head.length === 2 && head[0] === 0x1f && head[1] === 0x8b;
}

/** The text of a file, gunzipped when it is gzip (the browser's own DecompressionStream). */
export async function readText(blob, gzip) {
  if (!gzip) return blob.text();
  return new Response(blob.stream().pipeThrough(new DecompressionStream("gzip"))).text();
}

const LINE_BREAK = /\r\n|\r|\n/;

/** The records of FASTA text: id, header line (1-based, as the server counts lines), the line
 * after the record, and the number of sequence characters (whitespace left out). */
export function records(text) {
  const lines = text.split(LINE_BREAK);
  const out = [];
  let current = null;
  lines.forEach((raw, i) => {
    const line = i === 0 ? raw.replace(/^\ufeff/, "") : raw;
    if (line.startsWith(">")) {
      if (current) current.end = i + 1;
      const id = line.slice(1).trim().split(/\s+/)[0] || "";
      current = {id, line: i + 1, end: lines.length + 1, length: 0};
      out.push(current);
    } else if (current && !line.startsWith(";")) {
      current.length += line.replace(/\s+/g, "").length;
    }
  });
  return out;
}

/** The lines of one record (header and sequence), as FASTA text of its own. */
export function recordText(text, record) {
  return text.split(LINE_BREAK).slice(record.line - 1, record.end - 1).join("\n") + "\n";
}

/** Character offsets [start, end) of a 1-based line in the text (null past its end). */
export function lineSpan(text, line) {
  const breaks = /\r\n|\r|\n/g;
  let start = 0;
  for (let n = 1; n < line; n++) {
    const found = breaks.exec(text);
    if (!found) return null;
    start = found.index + found[0].length;
  }
  breaks.lastIndex = start;
  const end = breaks.exec(text);
  return [start, end ? end.index : text.length];
}
