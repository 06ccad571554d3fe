"""Per-(method, metric) statistics and the conclusion sentences drawn from them.

Every number a reader sees comes from `summarize`: the mean over seeds, a 95% Student-t CI
and a paired t-test of the per-seed differences against the reference method (seeds
matched by value, so seed 1 of PGD-AT is compared with seed 1 of ERM: both saw the same
initialisation draw and batch order). Which tests answer the question is declared before
the run by a `protocol.StatsProtocol`: the primary family (the Latent-Mixup variants and the
latent-space robust methods against ERM, the robust ones also against PGD-AT, on clean
accuracy, AutoAttack, mCA, blur area and ρ_adv) is Holm-adjusted on its own; every other
test is secondary and Holm-adjusted within the secondary family, so no mark in any table
rests on an uncorrected p. Where the protocol declares a margin, a paired TOST says whether
the difference is equivalent to zero: "no cost" is worded only from that, never from
p > alpha. `conclusions` turns the rows into sentences whose strength follows the adjusted
p-values, and never words a gain under attack as robustness for a member flagged for
gradient masking (`diagnostics.masking_flags`).
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence

from latmix_tf import stats
from latmix_tf.comparison.metrics import (at_value, fmt, fmt_p, headline_metrics,
                                          higher_is_better, label, matches, report_metrics,
                                          same_eps, short_label)
from latmix_tf.comparison.protocol import DEFAULT_PROTOCOL, StatsProtocol

# Metrics the conclusion speaks about (when present): accuracy, robustness, calibration.
CONCLUSION_METRICS = ("test/accuracy", "blur/area", "deepfool/rho_adv", "pgd/acc@",
                      "autoattack/*/robust_accuracy", "corruption/mca", "calibration/ece",
                      "calibration/ece_ts", "calibration/brier")
ATTACKS = ("fgsm/", "pgd/", "apgd/", "autoattack/")  # gains here can be gradient masking
NAN = float("nan")


def _seed_values(per_seed: Mapping, key: str) -> Dict[int, float]:
  return {int(s): float(m.get(key, NAN)) for s, m in per_seed.items()}


def family_metrics(keys: Sequence[str], robust_eps: Optional[float] = None) -> List[str]:
  """The headline metrics the conclusion speaks about (primary and secondary tests alike)."""
  return [k for k in headline_metrics(keys, robust_eps)
          if any(matches(k, c) for c in CONCLUSION_METRICS)]


def _paired(values: Dict[int, float], ref: Dict[int, float]):
  common = [s for s in sorted(values) if s in ref]
  return [values[s] for s in common], [ref[s] for s in common]


def summarize(runs: Mapping[str, Mapping], reference: str = "erm", confidence: float = 0.95,
              alpha: Optional[float] = None, robust_eps: Optional[float] = None,
              protocol: Optional[StatsProtocol] = None) -> List[Dict]:
  """One row per (method, metric): mean, CI, and the paired tests against `reference`.

  Args:
    runs: {method: {seed: metrics}}.
    reference: the method every other one is tested against; its own rows (and all rows
      when it was not run) have nan test fields, family "" and n_pairs = 0.
    confidence: CI coverage.
    alpha: family-wise level of both Holm families (default: the protocol's).
    robust_eps: ε of the headline PGD metric (see `headline_metrics`).
    protocol: the declared families and margins (default `protocol.DEFAULT_PROTOCOL`).
  Returns:
    Dicts with the keys of `report.CSV_FIELDS` ("seeds" and "values" are lists):
    "diff_ci95_half_width" is the 95% half-width of the mean paired difference; "family" is
    "primary" or "secondary" for a tested row; "p_holm" is Holm-adjusted within that family
    and "significant" is p_holm < alpha; "tost_p" / "equivalent" the paired TOST against the
    protocol's margin ("margin", nan without one); the "*_vs_robust_ref" fields the primary
    tests of the protocol's robust methods against its robust reference (PGD-AT).
  """
  protocol = protocol or DEFAULT_PROTOCOL
  alpha = protocol.alpha if alpha is None else alpha
  rows = []
  keys = report_metrics(runs)
  robust_ref = protocol.robust_reference
  for method, per_seed in runs.items():
    for key in keys:
      values = _seed_values(per_seed, key)
      seeds = sorted(values)
      ci = stats.mean_ci([values[s] for s in seeds], confidence)
      test = stats.PairedTest(NAN, NAN, NAN, 0)
      diff_half, family, margin = NAN, "", protocol.margin(key)
      tost = stats.Equivalence(NAN, NAN, NAN, NAN, NAN, NAN, NAN, False, 0)
      if method != reference and reference in runs:
        a, b = _paired(values, _seed_values(runs[reference], key))
        test = stats.paired_t_test(a, b)
        diff_half = stats.mean_ci([x - y for x, y in zip(a, b)], confidence).half_width
        family = protocol.family(method, key, reference)
        if margin is not None:
          tost = stats.tost_paired(a, b, margin, alpha)
      robust = stats.PairedTest(NAN, NAN, NAN, 0)
      if (method in protocol.robust_methods and robust_ref in runs and robust_ref != reference
          and protocol.is_primary_metric(key)):
        robust = stats.paired_t_test(*_paired(values, _seed_values(runs[robust_ref], key)))
      rows.append({"method": method, "metric": key, "n": ci.n, "mean": ci.mean, "std": ci.std,
                   "ci95_half_width": ci.half_width, "ci95_low": ci.low, "ci95_high": ci.high,
                   "diff_vs_ref": test.mean_diff, "diff_ci95_half_width": diff_half,
                   "p_vs_ref": test.p, "n_pairs": test.n, "family": family,
                   "p_holm": NAN, "significant": False,
                   "margin": NAN if margin is None else margin, "tost_p": tost.p,
                   "equivalent": tost.equivalent,
                   "diff_vs_robust_ref": robust.mean_diff, "p_vs_robust_ref": robust.p,
                   "p_holm_vs_robust_ref": NAN, "significant_vs_robust_ref": False,
                   "seeds": seeds, "values": [values[s] for s in seeds]})
  # Holm within each family; the robust methods' tests against PGD-AT are primary.
  for name in ("primary", "secondary"):
    tests = [(r, "") for r in rows if r["family"] == name and math.isfinite(r["p_vs_ref"])]
    if name == "primary":
      tests += [(r, "_vs_robust_ref") for r in rows if math.isfinite(r["p_vs_robust_ref"])]
    adjusted = stats.holm_adjust([r["p" + (suffix or "_vs_ref")] for r, suffix in tests])
    for (r, suffix), p in zip(tests, adjusted):
      r[f"p_holm{suffix}"], r[f"significant{suffix}"] = p, bool(p < alpha)
  return rows


def index(rows: Sequence[Dict]) -> Dict:
  """{(method, metric): row}."""
  return {(r["method"], r["metric"]): r for r in rows}


def _equivalence(r: Dict) -> str:
  """"; equivalent within ±0.50 pp (TOST p=0.012)" or "; not shown equivalent ..." or ""."""
  if not math.isfinite(r.get("margin", NAN)):
    return ""
  margin = fmt(r["metric"], r["margin"], diff=True).lstrip("+")
  if not math.isfinite(r["tost_p"]):
    return f"; equivalence within ±{margin} not testable"
  verdict = "equivalent" if r["equivalent"] else "not shown equivalent"
  return f"; {verdict} within ±{margin} (TOST {fmt_p(r['tost_p'])})"


def _clause(r: Dict, alpha: float, masked: Sequence[float] = ()) -> str:
  """One metric's verdict; `masked`: the ε at which the method was flagged for masking."""
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
  if (key.startswith(ATTACKS) and r["diff_vs_ref"] > 0
      and any(same_eps(at_value(key), e) for e in masked)):
    better = "flagged for gradient masking: not evidence of robustness"
  holm = fmt_p(r["p_holm"]).replace("p", "Holm-adjusted p", 1)
  if r["family"] == "secondary":
    holm = holm.replace("Holm", "secondary-family Holm", 1)
  if r["p_holm"] < alpha:
    return f"significantly {direction} {name} ({diff}, {holm}; {better}){_equivalence(r)}"
  if r["p_vs_ref"] < alpha:
    return (f"{direction} {name} only before correction ({diff}, {fmt_p(r['p_vs_ref'])} "
            f"uncorrected, {holm}: not significant){_equivalence(r)}")
  return (f"no significant difference in {name} ({diff}, {fmt_p(r['p_vs_ref'])})"
          f"{_equivalence(r)}")


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


def _robust_sentence(idx: Dict, m: str, keys: Sequence[str], protocol: StatsProtocol,
                     alpha: float) -> Optional[str]:
  """The primary tests of a robust method against the protocol's robust reference."""
  rs = [idx[(m, k)] for k in keys
        if (m, k) in idx and math.isfinite(idx[(m, k)]["p_vs_robust_ref"])]
  if not rs:
    return None
  parts = []
  for r in rs:
    diff = fmt(r["metric"], r["diff_vs_robust_ref"], diff=True)
    p = fmt_p(r["p_holm_vs_robust_ref"]).replace("p", "Holm-adjusted p", 1)
    word = ("significantly " + ("higher" if r["diff_vs_robust_ref"] > 0 else "lower")
            if r["p_holm_vs_robust_ref"] < alpha else "no significant difference in")
    parts.append(f"{word} {short_label(r['metric'])} ({diff}, {p})")
  return (f"{label(m)} vs {label(protocol.robust_reference)} (primary family): " +
          "; ".join(parts) + ".")


def conclusions(rows: Sequence[Dict], reference: str = "erm", alpha: Optional[float] = None,
                robust_eps: Optional[float] = None, protocol: Optional[StatsProtocol] = None,
                masking: Sequence[Dict] = ()) -> List[str]:
  """Sentences comparing each method with the reference, as strong as the tests allow.

  Latent-Mixup variants come first. A method with fewer than 2 seeds paired with the
  reference gets "not tested"; p_holm >= alpha reads "no significant difference" (or "only
  before correction"); only p_holm < alpha (within the row's family) reads "significantly
  higher/lower", with whether that is better or worse - except a gain under attack at an ε
  where `masking` (`diagnostics.masking_flags`) flags the method, which is never called
  better (a flag at ε = 0.2 says nothing of the attacks at 0.1). Where the
  protocol declares a margin, the TOST verdict follows: only "equivalent" supports "no cost".
  """
  protocol = protocol or DEFAULT_PROTOCOL
  alpha = protocol.alpha if alpha is None else alpha
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
    masked: Dict[str, List[float]] = {}  # method -> the ε at which it was flagged
    for f in masking:
      eps = masked.setdefault(f["method"], [])
      if not any(same_eps(f["eps"], e) for e in eps):
        eps.append(f["eps"])
    for m in others:
      n = max((idx[(m, k)]["n_pairs"] for k in keys), default=0)
      if n < 2:
        out.append(f"{label(m)} vs {label(reference)}: {n} paired seed{'s' if n != 1 else ''}, "
                   f"so no difference is tested; single runs are not evidence either way.")
        continue
      clauses = [_clause(idx[(m, k)], alpha, masked.get(m, ())) for k in keys]
      out.append(f"{label(m)} vs {label(reference)} (paired t-test over n={n} seeds, "
                 f"α={alpha} family-wise): " + "; ".join(clauses) + ".")
      robust = _robust_sentence(idx, m, report_keys(rows), protocol, alpha)
      if robust:
        out.append(robust)
    n_primary = sum(1 for r in rows if r["family"] == "primary" and math.isfinite(r["p_vs_ref"]))
    n_primary += sum(1 for r in rows if math.isfinite(r["p_vs_robust_ref"]))
    n_secondary = sum(1 for r in rows
                      if r["family"] == "secondary" and math.isfinite(r["p_vs_ref"]))
    if n_primary + n_secondary > 1:
      out.append(f"Significance is judged on Holm-adjusted p-values within each declared "
                 f"family (see the protocol above): primary family Holm over {n_primary} "
                 f"test{'s' * (n_primary != 1)}, secondary family Holm over {n_secondary} "
                 f"test{'s' * (n_secondary != 1)} (every other method and metric, including "
                 f"the tables' other columns), so within each family the chance of any false "
                 f"\"significant\" is at most {alpha}.")
    if masked:
      out.append("Flagged for gradient masking (see its table): " + ", ".join(
          f"{label(m)} (ε = {', '.join(f'{e:g}' for e in sorted(masked[m]))})"
          for m in methods if m in masked) +
                 "; their accuracies under attack at those ε are not worded as robustness.")
    n_max = max((r["n_pairs"] for r in rows), default=0)
    if 2 <= n_max <= 5:
      out.append(f"With n={n_max} seeds the test has little power: \"no significant "
                 f"difference\" means the seeds cannot tell the methods apart, not that the "
                 f"methods are equal; only a TOST \"equivalent\" supports \"no cost\".")
  cost = _cost_sentence(idx, methods)
  if cost:
    out.append(cost)
  return out


def report_keys(rows: Sequence[Dict]) -> List[str]:
  return list(dict.fromkeys(r["metric"] for r in rows))
