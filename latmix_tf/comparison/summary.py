"""Per-(method, metric) statistics and the conclusion sentences drawn from them.

Every number a reader sees comes from `summarize`: the mean over seeds, a 95% Student-t CI
and a paired t-test of the per-seed differences against the reference method (seeds
matched by value, so seed 1 of PGD-AT is compared with seed 1 of ERM: both saw the same
initialisation draw and batch order). The tests of the headline metrics (clean accuracy,
blur area, ρ_adv, PGD accuracy, AutoAttack robust accuracy per norm, mCA, ECE before and
after temperature scaling, Brier score) of every method form one family whose p-values are
Holm-adjusted: with 7 methods x 10 metrics, uncorrected tests at alpha = 0.05 would flag
three or four differences by chance. `conclusions` turns the rows into sentences whose
strength follows the adjusted p-values: "significantly higher" only when p_holm < alpha.
Tests of the other metrics (blur accuracy per σ, FGSM, ...) are exploratory and uncorrected.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence

from latmix_tf import stats
from latmix_tf.comparison.metrics import (fmt, fmt_p, headline_metrics, higher_is_better, label,
                                          matches, report_metrics, short_label)

# Metrics the conclusion tests (when present): accuracy, the robustness measures, calibration.
CONCLUSION_METRICS = ("test/accuracy", "blur/area", "deepfool/rho_adv", "pgd/acc@",
                      "autoattack/*/robust_accuracy", "corruption/mca", "calibration/ece",
                      "calibration/ece_ts", "calibration/brier")


def _seed_values(per_seed: Mapping, key: str) -> Dict[int, float]:
  return {int(s): float(m.get(key, float("nan"))) for s, m in per_seed.items()}


def family_metrics(keys: Sequence[str], robust_eps: Optional[float] = None) -> List[str]:
  """The headline metrics whose tests form the Holm family and the conclusion."""
  return [k for k in headline_metrics(keys, robust_eps)
          if any(matches(k, c) for c in CONCLUSION_METRICS)]


def summarize(runs: Mapping[str, Mapping], reference: str = "erm", confidence: float = 0.95,
              alpha: float = 0.05, robust_eps: Optional[float] = None) -> List[Dict]:
  """One row per (method, metric): mean, CI, and the paired test against `reference`.

  Args:
    runs: {method: {seed: metrics}}.
    reference: the method every other one is tested against; its own rows (and all rows
      when it was not run) have nan test fields and n_pairs = 0.
    confidence: CI coverage.
    alpha: significance level (family-wise for the headline metrics).
    robust_eps: ε of the headline PGD metric (see `headline_metrics`).
  Returns:
    Dicts with the keys of `report.CSV_FIELDS` ("seeds" and "values" are lists);
    "diff_ci95_half_width" is the 95% Student-t half-width of the mean paired difference.
    "p_holm" is the Holm-adjusted p of a headline-metric test (nan for other rows);
    "significant" is p_holm < alpha for those and the uncorrected p < alpha for the rest.
  """
  rows = []
  keys = report_metrics(runs)
  family = set(family_metrics(keys, robust_eps))
  for method, per_seed in runs.items():
    for key in keys:
      values = _seed_values(per_seed, key)
      seeds = sorted(values)
      ci = stats.mean_ci([values[s] for s in seeds], confidence)
      test = stats.PairedTest(float("nan"), float("nan"), float("nan"), 0)
      diff_half = float("nan")
      if method != reference and reference in runs:
        ref = _seed_values(runs[reference], key)
        common = [s for s in seeds if s in ref]
        test = stats.paired_t_test([values[s] for s in common], [ref[s] for s in common])
        diff_half = stats.mean_ci([values[s] - ref[s] for s in common], confidence).half_width
      rows.append({"method": method, "metric": key, "n": ci.n, "mean": ci.mean, "std": ci.std,
                   "ci95_half_width": ci.half_width, "ci95_low": ci.low, "ci95_high": ci.high,
                   "diff_vs_ref": test.mean_diff, "diff_ci95_half_width": diff_half,
                   "p_vs_ref": test.p, "n_pairs": test.n,
                   "p_holm": float("nan"), "in_family": key in family,
                   "significant": bool(math.isfinite(test.p) and test.p < alpha),
                   "seeds": seeds, "values": [values[s] for s in seeds]})
  tested = [r for r in rows if r["in_family"] and math.isfinite(r["p_vs_ref"])]
  for r, p in zip(tested, stats.holm_adjust([r["p_vs_ref"] for r in tested])):
    r["p_holm"], r["significant"] = p, bool(p < alpha)
  return rows


def index(rows: Sequence[Dict]) -> Dict:
  """{(method, metric): row}."""
  return {(r["method"], r["metric"]): r for r in rows}


def _clause(r: Dict, alpha: float) -> str:
  key, name = r["metric"], short_label(r["metric"])
  if r["n_pairs"] < 2:
    return f"{name} not tested ({r['n_pairs']} paired seed{'s' if r['n_pairs'] != 1 else ''})"
  diff = fmt(key, r["diff_vs_ref"], diff=True)
  if not math.isfinite(r["p_vs_ref"]):
    if r["diff_vs_ref"] == 0:
      return f"{name} equal on every seed (no test possible)"
    return f"{name} differs by the same {diff} on every seed (zero variance: no test possible)"
  direction = "higher" if r["diff_vs_ref"] > 0 else "lower"
  better = "better" if (r["diff_vs_ref"] > 0) == higher_is_better(key) else "worse"
  holm = fmt_p(r["p_holm"]).replace("p", "Holm-adjusted p", 1)
  if r["p_holm"] < alpha:
    return f"significantly {direction} {name} ({diff}, {holm}; {better})"
  if r["p_vs_ref"] < alpha:
    return (f"{direction} {name} only before correction ({diff}, {fmt_p(r['p_vs_ref'])} "
            f"uncorrected, {holm}: not significant)")
  return f"no significant difference in {name} ({diff}, {fmt_p(r['p_vs_ref'])})"


def _cost_sentence(idx: Dict, methods: Sequence[str]) -> Optional[str]:
  parts = []
  for m in methods:
    train = idx.get((m, "train_seconds"))
    pipe = idx.get((m, "pipeline_seconds"))
    if train is None or not math.isfinite(train["mean"]):
      continue
    extra = ""
    if pipe is not None and math.isfinite(pipe["mean"]) and pipe["mean"] > train["mean"] + 0.5:
      extra = f" (+{pipe['mean'] - train['mean']:.0f} s generator, encoder and latent bank)"
    parts.append(f"{label(m)} {train['mean']:.0f} s{extra}")
  if not parts:
    return None
  return ("Cost (mean classifier training time per seed, as recorded when each run was made): " +
          ", ".join(parts) + ".")


def conclusions(rows: Sequence[Dict], reference: str = "erm", alpha: float = 0.05,
                robust_eps: Optional[float] = None) -> List[str]:
  """Sentences comparing each method with the reference, as strong as the paired test allows.

  Latent-Mixup variants come first. A method with fewer than 2 seeds paired with the
  reference gets "not tested"; p >= alpha reads "no significant difference"; only p < alpha
  reads "significantly higher/lower" (with whether that is better or worse).
  """
  idx = index(rows)
  methods = list(dict.fromkeys(r["method"] for r in rows))
  keys = family_metrics([r["metric"] for r in rows], robust_eps)
  out = []
  if reference not in methods:
    out.append(f"{label(reference)} was not run, so no method is tested against it; the "
               f"tables give means and confidence intervals only.")
  else:
    others = sorted((m for m in methods if m != reference),
                    key=lambda m: (not m.startswith("latent_mixup"), methods.index(m)))
    for m in others:
      n = max((idx[(m, k)]["n_pairs"] for k in keys), default=0)
      if n < 2:
        out.append(f"{label(m)} vs {label(reference)}: {n} paired seed{'s' if n != 1 else ''}, "
                   f"so no difference is tested; single runs are not evidence either way.")
        continue
      clauses = [_clause(idx[(m, k)], alpha) for k in keys]
      out.append(f"{label(m)} vs {label(reference)} (paired t-test over n={n} seeds, "
                 f"α={alpha} family-wise): " + "; ".join(clauses) + ".")
    n_tests = sum(1 for r in rows if r["in_family"] and math.isfinite(r["p_vs_ref"]))
    if n_tests > 1:
      out.append(f"Significance is judged on Holm-adjusted p-values over the {n_tests} tests "
                 f"above (every method x {', '.join(short_label(k) for k in keys)}), so "
                 f"the chance of any false \"significant\" among them is at most {alpha}.")
    n_max = max((r["n_pairs"] for r in rows), default=0)
    if 2 <= n_max <= 5:
      out.append(f"With n={n_max} seeds the test has little power: \"no significant "
                 f"difference\" means the seeds cannot tell the methods apart, not that the "
                 f"methods are equal.")
  cost = _cost_sentence(idx, methods)
  if cost:
    out.append(cost)
  return out
