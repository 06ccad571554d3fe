"""The statistics protocol a comparison declares before it runs: which tests answer the question.

Why: with every method tested against ERM on every metric, a report runs hundreds of tests,
and which of them "count" must not be chosen after the numbers are in. The protocol fixes
it in the comparison's config: the primary family (the question - the Latent-Mixup variants
and the latent-space robust methods against ERM, the robust ones also against PGD-AT - on
the metrics that answer it) is Holm-corrected on its own; every other test is secondary,
Holm-corrected within the secondary family and marked with a different sign; a "no cost" /
"same as" claim needs a TOST equivalence test against a margin declared here. Each mark has
one meaning in every table of the report (`MARKS`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Dict, List, Optional, Tuple

from latmix_tf.comparison.goal import RobustGoal
from latmix_tf.comparison.metrics import fmt, label, matches, metric_label

# One meaning per mark, in every table of the comparison report.
PRIMARY_MARK, SECONDARY_MARK, EQUIVALENT_MARK, COLLAPSED_MARK = "†", "‡", "≈", "⊘"


@dataclasses.dataclass(frozen=True)
class StatsProtocol:
  """The declared statistics of a comparison (frozen: it is part of the comparison's config).

  Attributes:
    primary_methods: method names (fnmatch patterns) whose tests against the reference
      belong to the primary family.
    robust_methods: those of them also tested against `robust_reference` (primary family).
    robust_reference: the adversarial-training baseline the robust methods must match.
    primary_metrics: metric keys or patterns of the primary family ("prefix@" curves and
      "*" patterns as in `metrics.FAMILIES`).
    alpha: family-wise level of each family (Holm) and level of each TOST one-sided test.
    margins: (metric key, margin) pairs of the TOST equivalence tests, in the metric's stored
      units (accuracies are fractions: 0.005 is 0.5 points).
    masking_pgd_gap: PGD accuracy this far above AutoAttack's at the same ε flags gradient
      masking (fraction: 0.05 = 5 points).
    collapse_ceiling: a corruption accuracy at or below this, equal on every seed or equal to
      a class's share of the test set, is a collapse to one class (10 balanced classes: 0.1).
    goal: a robust-training goal the robust methods are checked against (`goal.py`), None
      for a comparison that declares none.
  """
  primary_methods: Tuple[str, ...] = ("latent_mixup*", "on_manifold_at", "on_manifold_pgd_at")
  robust_methods: Tuple[str, ...] = ("latent_mixup_at", "latent_mixup_vae_at", "on_manifold_at",
                                     "on_manifold_pgd_at")
  robust_reference: str = "pgd_at"
  primary_metrics: Tuple[str, ...] = ("test/accuracy", "autoattack/*/robust_accuracy",
                                      "corruption/mca", "blur/area", "deepfool/rho_adv")
  alpha: float = 0.05
  margins: Tuple[Tuple[str, float], ...] = (("test/accuracy", 0.005), ("corruption/mca", 0.01),
                                            ("blur/area", 0.01))
  masking_pgd_gap: float = 0.05
  collapse_ceiling: float = 0.2
  goal: Optional[RobustGoal] = None

  def __post_init__(self):
    if not 0.0 < self.alpha < 0.5:
      raise ValueError(f"error: StatsProtocol.alpha must lie in (0, 0.5), got {self.alpha}.")
    bad = [k for k, d in self.margins if not d > 0]
    if bad:
      raise ValueError(f"error: StatsProtocol.margins must be > 0; fix the margin of "
                       f"{', '.join(bad)}.")
    if self.goal is not None and self.goal.baseline != self.robust_reference:
      raise ValueError(f"error: StatsProtocol.goal.baseline {self.goal.baseline!r} must be the "
                       f"robust_reference {self.robust_reference!r} (the goal reads the "
                       f"primary tests against it).")
    stray = [m for m in self.robust_methods if not self.is_primary_method(m)]
    if stray:
      raise ValueError(f"error: StatsProtocol.robust_methods {', '.join(stray)} are not in "
                       f"primary_methods; add them there or drop them.")

  def is_primary_method(self, method: str) -> bool:
    return any(fnmatch.fnmatchcase(method, p) for p in self.primary_methods)

  def is_primary_metric(self, key: str) -> bool:
    return any(matches(key, p) for p in self.primary_metrics)

  def family(self, method: str, key: str, reference: str) -> str:
    """"primary" or "secondary" for the test of `method` against `reference` on `key`; ""
    for a run's cost (`*_seconds`): wall time is a measurement of the machine, not a
    hypothesis, and a Holm family that held it would make every other row's adjusted p
    depend on how loaded the machine was."""
    if key.endswith("seconds"):
      return ""
    return ("primary" if self.is_primary_method(method) and self.is_primary_metric(key)
            and (reference != self.robust_reference or method in self.robust_methods)
            else "secondary")

  def margin(self, key: str) -> Optional[float]:
    return dict(self.margins).get(key)

  def header(self, reference: str) -> List[str]:
    """The report header's protocol paragraph: family, correction, margins, marks."""
    methods = ", ".join(label(m) if "*" not in m else f"the methods matching `{m}`"
                        for m in self.primary_methods)
    metrics = ", ".join(metric_label(k) if "*" not in k else f"every `{k}` evaluated"
                        for k in self.primary_metrics)
    robust = ", ".join(label(m) for m in self.robust_methods)
    margins = "; ".join(f"{metric_label(k)} ±{fmt(k, d, diff=True).lstrip('+')}"
                        for k, d in self.margins) or "none declared"
    return [
        f"Statistics protocol (declared in the comparison's config before the run). Primary "
        f"family: {methods} against {label(reference)}"
        + (f", and {robust} also against {label(self.robust_reference)}" if robust else "")
        + f", on {metrics}; Holm-adjusted within this family at α={self.alpha}. Every other "
        f"test (other methods, other metrics) is secondary: Holm-adjusted within the "
        f"secondary family at α={self.alpha}, exploratory. \"No cost\" / \"same as\" claims "
        f"come only from a paired TOST equivalence test (two one-sided paired t-tests at "
        f"α={self.alpha}, i.e. the {100 - 200 * self.alpha:.0f}% CI of the difference inside "
        f"the margin), with margins: {margins}.",
        f"Marks (one meaning each, in every table): {PRIMARY_MARK} = primary family, "
        f"Holm-adjusted p < {self.alpha}; {SECONDARY_MARK} = secondary family, Holm-adjusted "
        f"p < {self.alpha}; {EQUIVALENT_MARK} = TOST-equivalent to {label(reference)} within "
        f"the declared margin; {COLLAPSED_MARK} = collapsed to one class (corruption table).",
    ]


DEFAULT_PROTOCOL = StatsProtocol()


def marks(row: Dict) -> str:
  """The marks of one summary row (" †", " ‡ ≈", ""), from its family, Holm p and TOST."""
  out = []
  if row.get("significant"):
    out.append(PRIMARY_MARK if row.get("family") == "primary" else SECONDARY_MARK)
  if row.get("equivalent"):
    out.append(EQUIVALENT_MARK)
  return "".join(f" {m}" for m in out)
