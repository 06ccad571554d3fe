"""How much of a comparison's uncertainty comes from the test images, not from the seeds.

Why: the seed CI of a metric measures how much training varies between seeds on the same
test images; it leaves out that the images themselves are a sample. An accuracy measured on
n images carries a binomial error of its own (about ±2.8 points at 73% on 1000 images),
as large as many seed CIs. For every accuracy whose evaluator recorded its image count
(`<family>/samples`), the report puts the Wilson 95% half-width (the mean over the seeds)
beside the seed CI's half-width and says which is larger.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from latmix_tf import stats
from latmix_tf.comparison.metrics import fmt, label, matches, metric_label

# Accuracy metrics and the key of the image count they were measured on.
SAMPLE_COUNTS = (("test/accuracy", "test/samples"), ("fgsm/acc@", "attacks/samples"),
                 ("pgd/acc@", "attacks/samples"), ("apgd/acc@", "apgd/samples"),
                 ("autoattack/*/robust_accuracy", "autoattack/samples"))


def samples_key(metric: str) -> Optional[str]:
  """The `<family>/samples` key `metric` was measured on, or None (not a plain accuracy)."""
  return next((count for pattern, count in SAMPLE_COUNTS if matches(metric, pattern)), None)


def sampling_uncertainty(runs: Mapping[str, Mapping], rows: Sequence[Dict],
                         metrics: Sequence[str]) -> List[Dict]:
  """One dict per (method, metric) of `metrics` with an image count: "seed_half_width" (the
  row's 95% CI over seeds), "sampling_half_width" (mean Wilson 95% half-width over the
  seeds), "images" and "dominant" ("seeds" or "test images")."""
  idx = {(r["method"], r["metric"]): r for r in rows}
  out = []
  for method, per_seed in runs.items():
    for metric in metrics:
      count, row = samples_key(metric), idx.get((method, metric))
      if count is None or row is None:
        continue
      widths = [stats.wilson_half_width(float(m[metric]), int(m[count]))
                for m in per_seed.values() if metric in m and m.get(count)]
      if not widths:
        continue
      sampling, seeds = float(np.mean(widths)), float(row["ci95_half_width"])
      out.append({"method": method, "metric": metric, "seed_half_width": seeds,
                  "sampling_half_width": sampling,
                  "images": sorted({int(m[count]) for m in per_seed.values() if m.get(count)}),
                  "dominant": ("seeds" if math.isfinite(seeds) and seeds > sampling
                               else "test images")})
  return out


def sampling_table(entries: Sequence[Dict]) -> List[str]:
  """The report's table of `sampling_uncertainty` entries."""
  if not entries:
    return []
  lines = ["| method | metric | test images | ± over seeds (95% t) | ± test sampling (95% "
           "Wilson) | larger |", "|---|---|---|---|---|---|"]
  for e in entries:
    k = e["metric"]
    lines.append(f"| {label(e['method'])} | {metric_label(k)} | "
                 f"{', '.join(map(str, e['images']))} | "
                 f"{fmt(k, e['seed_half_width'], True).lstrip('+')} | "
                 f"{fmt(k, e['sampling_half_width'], True).lstrip('+')} | {e['dominant']} |")
  return lines
