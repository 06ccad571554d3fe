"""Small-sample statistics for multi-seed comparisons: Student t CIs, paired t-tests, Holm.

A comparison over 3 seeds is only worth publishing with honest error bars, and those need
the Student t distribution at n-1 degrees of freedom (a normal 1.96 would understate the
width by 2x at n = 3). The distribution and the paired test come from `scipy.stats` (a
runtime dependency, pinned in requirements.txt), so they are the implementations every
reviewer already trusts; this module only adds what a comparison needs around them: nan
handling (a metric a run did not record), "no test possible" instead of a spurious
p = 0 for identical reruns, the Holm correction over a family of tests, and the paired TOST
equivalence test: "costs no accuracy" is a claim that a difference lies inside a margin
declared before the run, which a non-significant t-test does not show (Schuirmann 1987).
"""

from __future__ import annotations

import math
from typing import List, NamedTuple, Sequence

import numpy as np
import scipy.special
import scipy.stats


def regularized_beta(x: float, a: float, b: float) -> float:
  """The regularized incomplete beta function I_x(a, b) for 0 <= x <= 1, a, b > 0."""
  if not 0.0 <= x <= 1.0:
    raise ValueError(f"regularized_beta needs 0 <= x <= 1, got {x}.")
  return float(scipy.special.betainc(a, b, x))


def t_cdf(t: float, dof: float) -> float:
  """P(T <= t) for Student's t with `dof` degrees of freedom."""
  if dof <= 0:
    raise ValueError(f"Student t needs dof > 0, got {dof}.")
  return float(scipy.stats.t.cdf(t, dof))


def t_ppf(q: float, dof: float) -> float:
  """The q-quantile of Student's t with `dof` degrees of freedom."""
  if not 0.0 < q < 1.0:
    raise ValueError(f"t_ppf needs 0 < q < 1, got {q}.")
  if dof <= 0:
    raise ValueError(f"Student t needs dof > 0, got {dof}.")
  return float(scipy.stats.t.ppf(q, dof))


class MeanCI(NamedTuple):
  """Mean of n values and the half-width of its two-sided CI (nan when n < 2)."""
  mean: float
  half_width: float
  std: float
  n: int

  @property
  def low(self) -> float:
    return self.mean - self.half_width

  @property
  def high(self) -> float:
    return self.mean + self.half_width


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> MeanCI:
  """Mean and Student-t confidence interval: mean ± t_{(1+c)/2, n-1} · s / √n.

  Args:
    values: one number per seed (nan entries are dropped: a metric a run did not record).
    confidence: coverage of the interval.
  Returns:
    `MeanCI`; with one value the half-width and std are nan (no interval can be given), with
    none everything is nan and n = 0.
  """
  v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
  n = len(v)
  if n == 0:
    return MeanCI(float("nan"), float("nan"), float("nan"), 0)
  if n == 1:
    return MeanCI(float(v[0]), float("nan"), float("nan"), 1)
  s = float(np.std(v, ddof=1))
  half = t_ppf(0.5 + confidence / 2.0, n - 1) * s / math.sqrt(n)
  return MeanCI(float(v.mean()), half, s, n)


class PairedTest(NamedTuple):
  """Two-sided paired t-test of a - b over matched seeds."""
  mean_diff: float
  t: float
  p: float
  n: int


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> PairedTest:
  """Paired t-test on per-seed differences a_i - b_i (H0: mean difference 0).

  `scipy.stats.ttest_rel` on the pairs where both values are finite.

  Args:
    a, b: equally long sequences, entry i of both from the same seed.
  Returns:
    `PairedTest`; p is nan when no test is possible: fewer than 2 pairs, or differences
    that are all equal (zero variance: the t statistic is undefined, not infinitely
    significant - identical reruns must not read as a discovery).
  """
  if len(a) != len(b):
    raise ValueError(f"paired_t_test needs matched samples, got {len(a)} and {len(b)} values.")
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  keep = np.isfinite(a - b)
  a, b = a[keep], b[keep]
  n = len(a)
  if n == 0:
    return PairedTest(float("nan"), float("nan"), float("nan"), 0)
  d = a - b
  mean = float(d.mean())
  if n < 2 or float(np.std(d, ddof=1)) <= 1e-12 * max(1.0, abs(mean)):
    return PairedTest(mean, float("nan"), float("nan"), n)
  result = scipy.stats.ttest_rel(a, b)
  return PairedTest(mean, float(result.statistic), min(max(float(result.pvalue), 0.0), 1.0), n)


def holm_adjust(pvalues: Sequence[float]) -> List[float]:
  """Holm-Bonferroni adjusted p-values (family-wise error control, Holm 1979).

  The comparison tests every method against ERM on several metrics; at alpha = 0.05 one
  in twenty true nulls would read "significant" by chance, so the conclusion speaks from
  these adjusted values. Sorted ascending, p_(i) becomes max_{j<=i} min(1, (m - j + 1) p_(j));
  nan entries (no test possible) stay nan and do not count in m.
  """
  p = [float(v) for v in pvalues]
  finite = sorted((v, i) for i, v in enumerate(p) if math.isfinite(v))
  out, running, m = [float("nan")] * len(p), 0.0, len(finite)
  for rank, (v, i) in enumerate(finite):
    running = max(running, min(1.0, (m - rank) * v))
    out[i] = running
  return out


class Equivalence(NamedTuple):
  """Paired TOST of a - b against the margin ±delta (Schuirmann's two one-sided tests)."""
  mean_diff: float
  delta: float
  p_lower: float     # H0: mean difference <= -delta (rejected: it is above -delta)
  p_upper: float     # H0: mean difference >= +delta (rejected: it is below +delta)
  p: float           # max(p_lower, p_upper): the TOST p-value
  ci_low: float      # the (1 - 2 alpha) CI of the mean difference, 90% at alpha = 0.05
  ci_high: float
  equivalent: bool   # both one-sided nulls rejected at alpha: the CI lies inside ±delta
  n: int


def tost_paired(a: Sequence[float], b: Sequence[float], delta: float,
                alpha: float = 0.05) -> Equivalence:
  """Paired TOST equivalence test of the per-seed differences a_i - b_i within ±delta.

  Two one-sided paired t-tests at n-1 dof: t_lower = (d̄ + delta) / (s/√n) against
  "d̄ <= -delta" and t_upper = (d̄ - delta) / (s/√n) against "d̄ >= +delta". The difference
  is equivalent to zero within the margin iff both reject at `alpha`, which is the same as
  the (1 - 2 alpha) CI d̄ ± t_{1-alpha, n-1} s/√n lying strictly inside (-delta, +delta); a CI
  that touches the margin has p = alpha and is not equivalent.

  Args:
    a, b: equally long sequences, entry i of both from the same seed (non-finite pairs dropped).
    delta: the equivalence margin (> 0), in the metric's own units.
    alpha: level of each one-sided test.
  Returns:
    `Equivalence`; p-values and CI are nan and `equivalent` False when no test is possible
    (fewer than 2 pairs, or every difference the same: zero variance).
  """
  if not delta > 0:
    raise ValueError(f"tost_paired needs a margin delta > 0, got {delta}.")
  if not 0.0 < alpha < 0.5:
    raise ValueError(f"tost_paired needs 0 < alpha < 0.5, got {alpha}.")
  if len(a) != len(b):
    raise ValueError(f"tost_paired needs matched samples, got {len(a)} and {len(b)} values.")
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  d = d[np.isfinite(d)]
  n, nan = len(d), float("nan")
  mean = float(d.mean()) if n else nan
  s = float(np.std(d, ddof=1)) if n >= 2 else 0.0
  if n < 2 or s <= 1e-12 * max(1.0, abs(mean)):
    return Equivalence(mean, float(delta), nan, nan, nan, nan, nan, False, n)
  se = s / math.sqrt(n)
  p_lower = t_cdf(-(mean + delta) / se, n - 1)  # = 1 - F(t_lower), without cancellation
  p_upper = t_cdf((mean - delta) / se, n - 1)
  half = t_ppf(1.0 - alpha, n - 1) * se
  p = max(p_lower, p_upper)
  return Equivalence(mean, float(delta), p_lower, p_upper, p, mean - half, mean + half,
                     bool(p < alpha), n)


def wilson_half_width(p: float, n: int, confidence: float = 0.95) -> float:
  """Half the width of the Wilson score interval of a proportion `p` measured on `n` trials.

  Why Wilson: it keeps its coverage near 0 and 1, where robust accuracies sit (0.0% under
  AutoAttack), and unlike the normal approximation it is never zero-width there.
  """
  if n <= 0 or not math.isfinite(p):
    return float("nan")
  z = float(scipy.stats.norm.ppf(0.5 + confidence / 2))
  return z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
