"""The README's and the docs' numbers are the published summaries' numbers.

Why: README.md and docs/*.md quote tables copied from `results/`, and the comparisons that
feed `results/` keep running (and rewriting it) for days. A copied number that no longer
matches the summary in git is the worst kind of error in a research artifact: it looks like
evidence. So, in README.md and every docs/*.md page:
- every table row quoted under a heading that names `results/NAME.*` (or
  `benchmarks/results/NAME.md`) must be a line of that file;
- every table that quotes a result (a cell with ±, % or a number with two decimals) must sit
  under such a heading, so that nothing escapes the first check;
- every `results/...` or `benchmarks/results/...` file named must exist.
"""

import csv
import glob
import os
import re

from conftest import doc_pages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMED = re.compile(r"`((?:benchmarks/)?results/[A-Za-z0-9_]+)\.(?:\*|md)`")
PATH = re.compile(r"(?<![\w/])(?:benchmarks/)?results/[A-Za-z0-9_./*]+")
RESULT_CELL = re.compile(r"±|%|\d\.\d\d")


def _pages():
  """{path relative to the repository: lines} for README.md and docs/*.md."""
  return {rel: text.splitlines() for rel, text in doc_pages().items()}


def _sections(lines):
  """[(heading, body lines)] for every markdown heading (and the text before the first)."""
  out, heading, body, fenced = [], "(top)", [], False
  for line in lines:
    fenced ^= line.startswith("```")
    if not fenced and line.startswith("#"):
      out.append((heading, body))
      heading, body = line, []
    else:
      body.append(line)
  out.append((heading, body))
  return out


def _data_rows(body):
  """Table rows that are neither a header (the line before a |---| line) nor a separator."""
  rows = []
  for i, line in enumerate(body):
    if not line.startswith("|") or set(line) <= set("|-: "):
      continue
    if i + 1 < len(body) and set(body[i + 1]) <= set("|-: ") and body[i + 1].startswith("|"):
      continue
    rows.append(line.rstrip())
  return rows


def test_every_quoted_row_is_in_its_published_summary():
  checked = {}
  for page, lines in _pages().items():
    for heading, body in _sections(lines):
      rows = _data_rows(body)
      names = NAMED.findall(heading)
      if not names:
        quoting = [r for r in rows if RESULT_CELL.search(r)]
        assert not quoting, (f"{page}, section {heading!r}: a table quotes results, but the "
                             f"heading names no `results/NAME.*` it is checked against:\n"
                             + "\n".join(quoting[:3]))
        continue
      published = set()
      for name in names:
        md = os.path.join(ROOT, f"{name}.md")
        assert os.path.isfile(md), f"{page}: heading {heading!r} names a missing {md}"
        with open(md, encoding="utf-8") as f:
          published |= {line.rstrip() for line in f}
      assert rows, f"{page}: section {heading!r} names results but quotes no table"
      stale = [r for r in rows if r not in published]
      assert not stale, (f"{page}: section {heading!r} quotes rows that are not in "
                         f"{', '.join(names)}.md (copy them again from the summary):\n"
                         + "\n".join(stale))
      checked[page] = checked.get(page, 0) + len(rows)
  # The answer's tables are in the README and the full tables in docs/results.md.
  assert checked.get("README.md", 0) >= 18 and checked.get("docs/results.md", 0) >= 60, checked


def test_every_results_path_the_docs_name_exists():
  missing = []
  for page, lines in _pages().items():
    for line in lines:
      for path in PATH.findall(line):
        path = path.rstrip(".")
        if not glob.glob(os.path.join(ROOT, path)):
          missing.append((page, path))
  assert not missing, f"README or docs name results that are not in the repository: {missing}"


def test_published_summaries_come_in_threes():
  """Each summary is its CSV (for every method and metric the aggregated row, seed "all", and
  one row per seed), its report and its folder with results.json, as `publish_summary`
  writes them."""
  names = [os.path.basename(p)[:-4] for p in glob.glob(os.path.join(ROOT, "results", "*.csv"))]
  assert "compare_fmnist_full" in names
  for name in names:
    assert os.path.isfile(os.path.join(ROOT, "results", f"{name}.md")), name
    assert os.path.isfile(os.path.join(ROOT, "results", name, "results.json")), name
    with open(os.path.join(ROOT, "results", f"{name}.csv"), encoding="utf-8") as f:
      rows = list(csv.DictReader(f))
    assert rows and {"method", "seed", "metric", "mean"} <= set(rows[0]), name
    # The aggregated rows and one row per method x seed (read back with the same values).
    agg = {(r["method"], r["metric"]): r for r in rows if r["seed"] == "all"}
    per_seed = [r for r in rows if r["seed"] != "all"]
    assert agg and per_seed, name
    for r in per_seed:
      assert r["seed"] in agg[(r["method"], r["metric"])]["seeds"].split(";"), (name, r)


def test_every_figure_a_published_report_links_is_in_the_repository():
  missing = []
  for md in glob.glob(os.path.join(ROOT, "results", "*.md")):
    with open(md, encoding="utf-8") as f:
      for link in re.findall(r"\]\(([^)\s]+\.png)\)", f.read()):
        if not os.path.isfile(os.path.join(ROOT, "results", link)):
          missing.append((os.path.basename(md), link))
  assert not missing, f"published reports link figures that are not in results/: {missing}"
