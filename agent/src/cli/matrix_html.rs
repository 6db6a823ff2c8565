//! The matrix as one self-contained HTML page: the data `matrix -o json` prints, embedded,
//! and a small script that draws it (no external resource of any kind). Names and rules
//! reach the page only as text nodes and attributes set from the script, never as markup.

use serde_json::Value;

/// The page for the matrix `data` (as [`super::matrix::to_json`] makes it).
pub fn page(data: &Value) -> String {
    // Inside <script>, "</" could end the element early; JSON allows "<\/" for it.
    let embedded = data.to_string().replace("</", "<\\/");
    TEMPLATE.replace("@DATA@", &embedded)
}

const TEMPLATE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>palisade: who can reach whom</title>
<style>
  body { font-family: sans-serif; margin: 1.5em; color: #222; }
  h1 { font-size: 1.3em; }
  table.matrix { border-collapse: collapse; margin: 1em 0; }
  table.matrix th, table.matrix td { border: 1px solid #999; padding: 0.35em 0.7em; text-align: center; }
  table.matrix th.row { text-align: left; }
  td.cell { cursor: pointer; font-weight: bold; min-width: 4em; }
  td.allow { background: #a5d6a7; color: #1b5e20; }
  td.deny { background: #ef9a9a; color: #b71c1c; }
  td.some { background: #ffe082; color: #795548; }
  td.none { background: #e0e0e0; color: #757575; }
  td.selected { outline: 3px solid #1565c0; }
  #details { white-space: pre-wrap; font-family: monospace; background: #f5f5f5; padding: 1em; min-height: 3em; }
  .legend span { display: inline-block; padding: 0.2em 0.6em; margin-right: 0.5em; }
</style>
</head>
<body>
<h1>Who can reach whom</h1>
<p id="question"></p>
<p class="legend"><span class="allow" style="background:#a5d6a7">allow</span><span style="background:#ef9a9a">deny</span><span style="background:#ffe082">some</span><span style="background:#e0e0e0">- (itself, or no common IP version)</span> Rows are sources, columns destinations. Click a cell for the deciding rules of both directions.</p>
<table class="matrix" id="matrix"></table>
<div id="details">Click a cell.</div>
<h2>Groups</h2>
<ol id="groups"></ol>
<script type="application/json" id="matrix-data">@DATA@</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("matrix-data").textContent);
const el = (tag, text, cls) => {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
};
const names = g => g.members.map(m => m.display).join(", ");
const side = (what, s) => s ? what + ": " + s.rule : what + ": (not a workload: no policy there)";
function explain(cell) {
  if (cell.note) return [cell.note];
  if (cell.packet) return ["packet: " + cell.packet, side("egress", cell.egress), side("ingress", cell.ingress), "verdict: " + cell.verdict];
  return cell.ranges.map(r => r.packets + ": " + r.verdict + "\n  " + side("egress", r.egress) + "\n  " + side("ingress", r.ingress));
}
document.getElementById("question").textContent = "Packets: " + data.question;
const table = document.getElementById("matrix");
const head = el("tr");
head.appendChild(el("th", "from \u2193 to \u2192"));
data.groups.forEach((g, j) => {
  const th = el("th", "[" + (j + 1) + "]");
  th.title = names(g);
  head.appendChild(th);
});
table.appendChild(head);
const details = document.getElementById("details");
data.cells.forEach((row, i) => {
  const tr = el("tr");
  tr.appendChild(el("th", "[" + (i + 1) + "] " + names(data.groups[i]), "row"));
  row.forEach((cell, j) => {
    const kind = cell.reach === "-" ? "none" : cell.reach;
    const td = el("td", cell.reach, "cell " + kind);
    td.id = "cell-" + i + "-" + j;
    td.dataset.src = String(i);
    td.dataset.dst = String(j);
    td.dataset.verdict = cell.reach;
    td.title = names(data.groups[i]) + " \u2192 " + names(data.groups[j]) + "\n" + explain(cell).join("\n");
    td.addEventListener("click", () => {
      document.querySelectorAll("td.selected").forEach(c => c.classList.remove("selected"));
      td.classList.add("selected");
      details.textContent = td.title;
    });
    tr.appendChild(td);
  });
  table.appendChild(tr);
});
const list = document.getElementById("groups");
data.groups.forEach(g => {
  const labels = Object.entries(g.labels).map(([k, v]) => k + "=" + v).join(", ") || "-";
  const li = el("li", names(g) + " \u2014 profiles: " + (g.profiles.join(", ") || "-") + "; labels: " + labels);
  li.title = g.members.map(m => m.path + " " + m.addresses.join(" ")).join("\n");
  list.appendChild(li);
});
// What the reader sees: the colour each cell was drawn in.
document.querySelectorAll("td.cell").forEach(td => { td.dataset.colour = getComputedStyle(td).backgroundColor; });
document.body.dataset.rendered = "true";
</script>
</body>
</html>
"#;
