"""Copies a comparison's summary into the repository's `results/` folder.

Why: the comparison is the evidence a reader checks, so its small summary (the CSV with one
row per method x seed plus the aggregated rows, the report and its figures) belongs in git,
while workdirs and weights do not. Layout for a summary named NAME (e.g.
`compare_fmnist_full`): `results/NAME.csv`, `results/NAME.md` (figure links pointing into
the folder) and `results/NAME/` with the PNGs and `results.json`.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Dict


def _copy_atomic(src: str, dst: str) -> None:
  """Copies through a temporary file: a run killed mid-copy (the comparisons publish after
  every member, for hours) never leaves a truncated summary in the repository."""
  tmp = dst + ".tmp"
  shutil.copyfile(src, tmp)
  os.replace(tmp, dst)


def publish_summary(report: Dict, results_root: str, name: str) -> str:
  """Copies `report` (what `write_comparison_report` returned) to `results_root`; returns
  the path of the copied markdown."""
  folder = os.path.join(results_root, name)
  os.makedirs(folder, exist_ok=True)
  _copy_atomic(report["csv"], os.path.join(results_root, f"{name}.csv"))
  _copy_atomic(report["json"], os.path.join(folder, "results.json"))
  pngs = [f for f in report.get("figures", []) if f.endswith(".png") and os.path.isfile(f)]
  for path in pngs:
    _copy_atomic(path, os.path.join(folder, os.path.basename(path)))
  with open(report["markdown"]) as f:
    text = f.read()
  for path in pngs:  # links are relative file names in the workdir's report
    base = re.escape(os.path.basename(path))
    text = re.sub(rf"\]\((?:\./)?{base}\)", f"]({name}/{os.path.basename(path)})", text)
  md = os.path.join(results_root, f"{name}.md")
  tmp = md + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, md)
  return md
