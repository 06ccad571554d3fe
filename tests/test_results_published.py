"""The README's answer is the published summaries' answer.

Why: the README opens with tables copied from `results/`, and the comparisons that feed
`results/` keep running (and rewriting it) for days. A copied number that no longer matches
the summary in git is the worst kind of error in a research artifact: it looks like evidence.
So every table row the README quotes under a heading that names `results/NAME.*` must be a
line of `results/NAME.md`, and every `results/...` or `benchmarks/results/...` file the README
names must exist.
"""

import csv
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMED = re.compile(r"`results/([A-Za-z0-9_]+)\.\*`")
PATH = re.compile(r"(?<![\w/])(?:benchmarks/)?results/[A-Za-z0-9_./*]+")


def _readme():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    return f.read().splitlines()


def _sections(lines):
  """[(heading, body lines)] for every markdown heading."""
  out, heading, body, fenced = [], None, [], False
  for line in lines:
    fenced ^= line.startswith("```")
    if not fenced and line.startswith("#"):
      if heading is not None:
        out.append((heading, body))
      heading, body = line, []
    elif heading is not None:
      body.append(line)
  if heading is not None:
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
  checked = 0
  for heading, body in _sections(_readme()):
    names = NAMED.findall(heading)
    if not names:
      continue
    published = set()
    for name in names:
      md = os.path.join(ROOT, "results", f"{name}.md")
      assert os.path.isfile(md), f"README heading {heading!r} names a missing {md}"
      with open(md, encoding="utf-8") as f:
        published |= {line.rstrip() for line in f}
    rows = _data_rows(body)
    assert rows, f"README section {heading!r} names results but quotes no table"
    stale = [r for r in rows if r not in published]
    assert not stale, (f"README section {heading!r} quotes rows that are not in "
                       f"{', '.join(names)}.md (copy them again from the summary):\n"
                       + "\n".join(stale))
    checked += len(rows)
  assert checked >= 20  # the answer's tables are under such headings, not elsewhere


def test_every_results_path_the_readme_names_exists():
  missing = []
  for line in _readme():
    for path in PATH.findall(line):
      path = path.rstrip(".")
      if not glob.glob(os.path.join(ROOT, path)):
        missing.append(path)
  assert not missing, f"README names results that are not in the repository: {missing}"


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
