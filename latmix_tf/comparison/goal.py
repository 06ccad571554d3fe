"""A robust-training goal declared before the run, and each candidate's verdict against it.

Why: "cheaper robust training" is only a finding if what counts as cheaper was fixed before
the numbers came in. The robust-training comparison declares it in its config (a field of
its `StatsProtocol`), and the report checks every latent-space robust method against it,
with the measured distance where a criterion is missed, so a negative is stated with the
same rigour as a positive. The goal, with PGD-AT as the baseline and ERM as the reference:

  1. robustness: AutoAttack (L∞ at the adversarial trainers' ε) within `max_autoattack_gap`
     of PGD-AT's (mean paired difference over seeds);
  2. price: a clean-accuracy cost against ERM of at most `max_cost_fraction` of PGD-AT's
     (mean differences against ERM);
  3. evidence: a clean-accuracy gain over PGD-AT that is significant in the primary family
     (paired t-test, Holm-adjusted with the other primary tests);
  4. soundness: no evaluation sanity check failed on any seed (`evaluation/sanity.py`:
     iterative ≤ single-step, black-box not above white-box, monotone in ε, ...) and no
     gradient-masking flag at the goal's ε (`diagnostics.masking_flags`): a method that
     reaches its numbers through gradient masking does not meet the goal.

A method meets the goal when all four hold. Accuracies are fractions, shown in points.

The section also names the clean-vs-AutoAttack Pareto front (`pareto_front`): the screening's
rule for which new methods go on to full scale is fixed here too, not picked from the figure.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Mapping, Optional, Sequence

from latmix_tf.comparison.metrics import autoattack_key, label, same_eps

CLEAN = "test/accuracy"
TOL = 1e-9  # accuracies are fractions: far below one image in a million


@dataclasses.dataclass(frozen=True)
class RobustGoal:
  """The declared goal (see the module docstring).

  Attributes:
    baseline: the adversarial-training method to match (the protocol's robust reference).
    max_autoattack_gap: how far below the baseline's AutoAttack accuracy a method may stay
      (fraction: 0.02 = 2 points).
    max_cost_fraction: the largest clean-accuracy cost against the reference, as a fraction
      of the baseline's cost.
  """
  baseline: str = "pgd_at"
  max_autoattack_gap: float = 0.02
  max_cost_fraction: float = 0.5

  def __post_init__(self):
    if not self.max_autoattack_gap >= 0 or not 0 < self.max_cost_fraction <= 1:
      raise ValueError(f"error: RobustGoal needs max_autoattack_gap >= 0 and 0 < "
                       f"max_cost_fraction <= 1, got {self.max_autoattack_gap} and "
                       f"{self.max_cost_fraction}.")


def unsound(runs: Mapping[str, Mapping], masking: Sequence[Dict],
            robust_eps: Optional[float]) -> Dict[str, str]:
  """method -> why its numbers are not trusted for the goal (criterion 4), for the methods
  with a failed sanity check on some seed or a masking flag at `robust_eps`."""
  found: Dict[str, Dict[str, List[int]]] = {}  # method -> reason -> seeds
  for method, per_seed in runs.items():
    for seed in sorted(per_seed, key=int):
      for k, v in per_seed[seed].items():
        if k.startswith("sanity/") and k != "sanity/failed" and v == 0.0:
          found.setdefault(method, {}).setdefault(f"fails {k.split('/', 1)[1]}",
                                                  []).append(int(seed))
  for f in masking:
    if robust_eps is not None and same_eps(f["eps"], robust_eps):
      found.setdefault(f["method"], {}).setdefault(f["check"], []).append(int(f["seed"]))

  def seeds(s: List[int]) -> str:
    s = sorted(set(s))
    return f"seed{'s' * (len(s) > 1)} {', '.join(map(str, s))}"
  return {m: "; ".join(f"{why} ({seeds(s)})" for why, s in sorted(reasons.items()))
          for m, reasons in found.items()}


def verdicts(goal: RobustGoal, rows: Sequence[Dict], candidates: Sequence[str],
             robust_eps: Optional[float],
             not_sound: Optional[Mapping[str, str]] = None) -> List[Dict]:
  """One verdict per candidate present in `rows` (the summary against the reference).

  Returns dicts with "method", "cost", "limit" and "baseline_cost" (clean-accuracy costs
  against the reference: the method's, the allowed one, the baseline's), "autoattack_gap"
  (baseline minus method, mean paired difference), "clean_gain" and "p_holm" (against the
  baseline, primary family), the four criteria, "unsound" (why criterion 4 failed, from
  `unsound`, or "") and "met". Candidates without the tests the
  goal needs are left out, and so is everything when the baseline or its difference from the
  reference is missing (a report of a partial run)."""
  idx = {(r["method"], r["metric"]): r for r in rows}
  aa = autoattack_key(robust_eps) if robust_eps is not None else None
  base_clean = idx.get((goal.baseline, CLEAN))
  if aa is None or base_clean is None or not math.isfinite(base_clean["diff_vs_ref"]):
    return []
  base_cost = -base_clean["diff_vs_ref"]
  out = []
  not_sound = not_sound or {}
  for method in candidates:
    clean, robust = idx.get((method, CLEAN)), idx.get((method, aa))
    if (clean is None or robust is None or not math.isfinite(clean["diff_vs_robust_ref"])
        or not math.isfinite(robust["diff_vs_robust_ref"])):
      continue
    cost, limit = -clean["diff_vs_ref"], goal.max_cost_fraction * base_cost
    gap = -robust["diff_vs_robust_ref"]
    # "Within 2 points" includes 2.00: a tolerance for the float error of differences of
    # accuracies (0.654 - 0.634 = 0.02000000000000001).
    criteria = {"robustness": bool(gap <= goal.max_autoattack_gap + TOL),
                "price": bool(cost <= limit + TOL),
                "evidence": bool(clean["diff_vs_robust_ref"] > 0
                                 and clean["significant_vs_robust_ref"]),
                "soundness": method not in not_sound}
    out.append({"method": method, "cost": cost, "limit": limit, "baseline_cost": base_cost,
                "autoattack_gap": gap, "clean_gain": clean["diff_vs_robust_ref"],
                "p_holm": clean["p_holm_vs_robust_ref"], **criteria,
                "unsound": not_sound.get(method, ""),
                "met": all(criteria.values())})
  return out


def pareto_front(rows: Sequence[Dict], methods: Sequence[str],
                 robust_eps: Optional[float]) -> List[str]:
  """The methods on the clean-accuracy vs AutoAttack Pareto front, in `methods` order.

  A method is on the front when no other method has a mean (over seeds) at least as high on
  both and higher on one. Means, not CIs: the front says which methods are worth the
  full-scale seeds that will then resolve them. Methods without both metrics are left out.
  """
  if robust_eps is None:
    return []
  idx = {(r["method"], r["metric"]): r for r in rows}
  aa = autoattack_key(robust_eps)
  points = {m: (idx[(m, CLEAN)]["mean"], idx[(m, aa)]["mean"]) for m in methods
            if (m, CLEAN) in idx and (m, aa) in idx
            and all(math.isfinite(idx[(m, k)]["mean"]) for k in (CLEAN, aa))}
  return [m for m, p in points.items()
          if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points.values())]


def _pts(v: float) -> str:
  return f"{100 * v:+.2f}"


def goal_lines(goal: RobustGoal, found: Sequence[Dict], reference: str,
               robust_eps: Optional[float], front: Sequence[str] = ()) -> List[str]:
  """The report's goal section: the declaration, one row per candidate, the verdict, and
  the Pareto front."""
  base = label(goal.baseline)
  eps = "n/a" if robust_eps is None else f"{robust_eps:.4g}"
  lines = [f"Declared in the comparison's config before the run: a method within "
           f"{100 * goal.max_autoattack_gap:.0f} points of {base}'s AutoAttack accuracy "
           f"(L∞ ε={eps}), at no more than {goal.max_cost_fraction:.0%} of {base}'s "
           f"clean-accuracy cost against {label(reference)}, with a clean-accuracy gain over "
           f"{base} that is significant in the primary family (paired t-test, Holm), and "
           f"sound numbers: no failed sanity check on any seed and no gradient-masking flag "
           f"at ε={eps}. Points; mean differences over seeds.", "",
           f"| method | clean cost vs {label(reference)} (limit) | AutoAttack below {base} "
           f"(limit {100 * goal.max_autoattack_gap:.0f}) | clean gain over {base} | Holm p | "
           f"goal |", "|---|---|---|---|---|---|"]
  for v in found:
    missed = [k for k in ("robustness", "price", "evidence", "soundness") if not v[k]]
    p = f"{v['p_holm']:.4f}" if math.isfinite(v["p_holm"]) else "n/a"
    verdict = "met" if v["met"] else "missed: " + ", ".join(missed)
    lines.append(f"| {label(v['method'])} | {100 * v['cost']:.2f} ({100 * v['limit']:.2f}) | "
                 f"{100 * v['autoattack_gap']:.2f} | {_pts(v['clean_gain'])} | {p} | "
                 f"{verdict} |")
  unsound_lines = [f"- {label(v['method'])}: numbers not sound ({v['unsound']})."
                   for v in found if v["unsound"]]
  lines += [""] + unsound_lines if unsound_lines else []
  met = [label(v["method"]) for v in found if v["met"]]
  lines += ["", (f"Met by: {', '.join(met)}." if met else
                 "No method meets the goal; the table gives each one's distance.")
            if found else "No candidate has the tests the goal needs yet (a partial run)."]
  if front:
    lines += ["", f"On the Pareto front of clean accuracy and AutoAttack accuracy (L∞ ε={eps}; "
              f"means over seeds, no other method at least as high on both and higher on "
              f"one): {', '.join(label(m) for m in front)}. The robust methods among them "
              f"go on to full scale."]
  return lines
