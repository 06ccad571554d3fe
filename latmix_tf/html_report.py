"""report.html next to every report.md: one self-contained file a browser opens offline.

Why: a report.md with PNG links needs a Markdown viewer and its folder; a report.html with
the figures inlined (base64 data URIs), plain CSS and a few lines of JavaScript to sort
tables by clicking a header can be mailed, attached to an issue or opened from a laptop
with no network. It is rendered from the report.md itself, so the two never disagree; the
converter knows exactly the Markdown our report writers emit (headings, paragraphs,
bullet lists, pipe tables, images, `code`, **bold**) and escapes everything else.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import os
import re
from typing import List

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1b1b1b;line-height:1.45}
h1{font-size:1.7em;border-bottom:2px solid #ddd;padding-bottom:.2em}h2{margin-top:1.6em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f0f3f7;cursor:pointer;user-select:none}th:hover{background:#dde6f0}
tr:nth-child(even) td{background:#fafafa}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}figure{margin:1em 0}
figcaption{color:#555;font-size:.85em}
"""

# Click a header: sort that column (numbers numerically, "n/a" and "–" last); click again:
# reverse. No network, no library.
_SCRIPT = """
document.querySelectorAll("table").forEach(function(t){
  t.querySelectorAll("th").forEach(function(th,col){
    th.addEventListener("click",function(){
      var body=t.tBodies[0],rows=Array.from(body.rows),asc=!th.classList.contains("asc");
      t.querySelectorAll("th").forEach(function(h){h.classList.remove("asc","desc");});
      th.classList.add(asc?"asc":"desc");
      function key(r){var s=r.cells[col].textContent.trim(),n=parseFloat(s.replace(/[^0-9eE.+-]/g,""));
        return isNaN(n)||!/^[-+]?[0-9.]/.test(s)?[1,s]:[0,n];}
      rows.sort(function(a,b){var x=key(a),y=key(b);if(x[0]!==y[0])return x[0]-y[0];
        var c=x[1]<y[1]?-1:x[1]>y[1]?1:0;return asc?c:-c;});
      rows.forEach(function(r){body.appendChild(r);});});});});
"""


def _inline(text: str) -> str:
  """Escapes text, then renders `code` and **bold**."""
  parts = re.split(r"(`[^`]*`)", text)
  out = []
  for part in parts:
    if part.startswith("`") and part.endswith("`") and len(part) >= 2:
      out.append(f"<code>{html.escape(part[1:-1])}</code>")
    else:
      out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part)))
  return "".join(out)


def _data_uri(path: str) -> str:
  mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
  with open(path, "rb") as f:
    return f"data:{mime};base64,{base64.b64encode(f.read()).decode('ascii')}"


def _figure(alt: str, src: str, base_dir: str) -> str:
  path = src if os.path.isabs(src) else os.path.join(base_dir, src)
  if not os.path.isfile(path):
    return f"<p><em>missing figure: {html.escape(src)}</em></p>"
  return (f'<figure><img alt="{html.escape(alt)}" src="{_data_uri(path)}">'
          f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def _cells(line: str) -> List[str]:
  return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(markdown: str, base_dir: str) -> str:
  """The body HTML of one of our report.md files (figures read from `base_dir`)."""
  lines, out, i = markdown.splitlines(), [], 0
  while i < len(lines):
    line = lines[i]
    image = re.fullmatch(r"\s*!\[([^\]]*)\]\(([^)]+)\)\s*", line)
    if not line.strip():
      i += 1
    elif m := re.match(r"(#{1,6})\s+(.*)", line):
      level = len(m.group(1))
      out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
      i += 1
    elif image:
      out.append(_figure(image.group(1), image.group(2), base_dir))
      i += 1
    elif line.lstrip().startswith("|") and i + 1 < len(lines) and re.fullmatch(
        r"\s*\|?[\s:|-]+\|?\s*", lines[i + 1]):
      head = _cells(line)
      i += 2
      rows = []
      while i < len(lines) and lines[i].lstrip().startswith("|"):
        rows.append(_cells(lines[i]))
        i += 1
      out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) +
                 "</tr></thead><tbody>" + "".join(
                     "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>"
                     for r in rows) + "</tbody></table>")
    elif re.match(r"\s*[-*]\s+", line):
      items = []
      while i < len(lines) and re.match(r"\s*[-*]\s+", lines[i]):
        items.append(re.sub(r"^\s*[-*]\s+", "", lines[i]))
        i += 1
      out.append("<ul>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + "</ul>")
    else:
      para = []
      while i < len(lines) and lines[i].strip() and not re.match(
          r"(#{1,6}\s|\s*[-*]\s+|\s*\||\s*!\[)", lines[i]):
        para.append(lines[i].strip())
        i += 1
      if not para:  # a line no rule above took (e.g. a lone "|"): keep it as text
        para, i = [line.strip()], i + 1
      out.append(f"<p>{_inline(' '.join(para))}</p>")
  return "\n".join(out)


def write_html(markdown_path: str, html_path: str = "") -> str:
  """Renders `markdown_path` into a self-contained HTML file (default: report.html beside it).

  Returns:
    The path written.
  """
  with open(markdown_path, encoding="utf-8") as f:
    markdown = f.read()
  title = next((l[2:].strip() for l in markdown.splitlines() if l.startswith("# ")), "report")
  html_path = html_path or os.path.join(os.path.dirname(markdown_path) or ".", "report.html")
  body = markdown_to_html(markdown, os.path.dirname(os.path.abspath(markdown_path)))
  page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
          f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n{body}\n"
          f"<script>{_SCRIPT}</script>\n</body></html>\n")
  tmp = html_path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(page)
  os.replace(tmp, html_path)
  return html_path
