"""Small-sample statistics for multi-seed comparisons: Student t CIs, paired t-tests, Holm.

A comparison over 3 seeds is only worth publishing with honest error bars, and those need
the Student t distribution at n-1 degrees of freedom (a normal 1.96 would understate the
width by 2x at n = 3). scipy is not a runtime dependency, so the t CDF is computed here from
the regularized incomplete beta function (Lentz's continued fraction, Numerical Recipes
6.4) and its quantile by bisection; the tests check both against closed forms.
"""

from __future__ import annotations

import math
from typing import List, NamedTuple, Sequence

import numpy as np


def _beta_continued_fraction(a: float, b: float, x: float, max_iter: int = 300,
                             eps: float = 1e-15) -> float:
  """Continued fraction of I_x(a, b) (modified Lentz), converges for x < (a+1)/(a+b+2)."""
  tiny = 1e-300
  qab, qap, qam = a + b, a + 1.0, a - 1.0
  c, d = 1.0, 1.0 - qab * x / qap
  d = 1.0 / (d if abs(d) > tiny else tiny)
  h = d
  for m in range(1, max_iter + 1):
    m2 = 2 * m
    aa = m * (b - m) * x / ((qam + m2) * (a + m2))
    for coef in (aa, -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
      d = 1.0 + coef * d
      d = 1.0 / (d if abs(d) > tiny else tiny)
      c = 1.0 + coef / c
      c = c if abs(c) > tiny else tiny
      h *= d * c
    if abs(d * c - 1.0) < eps:
      break
  return h


def regularized_beta(x: float, a: float, b: float) -> float:
  """The regularized incomplete beta function I_x(a, b) for 0 <= x <= 1, a, b > 0."""
  if not 0.0 <= x <= 1.0:
    raise ValueError(f"regularized_beta needs 0 <= x <= 1, got {x}.")
  if x in (0.0, 1.0):
    return x
  log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) +
               b * math.log1p(-x))
  if x < (a + 1.0) / (a + b + 2.0):
    return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
  return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, dof: float) -> float:
  """P(T <= t) for Student's t with `dof` degrees of freedom."""
  if dof <= 0:
    raise ValueError(f"Student t needs dof > 0, got {dof}.")
  if math.isinf(t):
    return 1.0 if t > 0 else 0.0
  t2 = t * t
  if t2 < dof:  # near the centre: |cdf - 1/2| = I_{t²/(dof+t²)}(1/2, dof/2) / 2 keeps precision
    half_mass = 0.5 * regularized_beta(t2 / (dof + t2), 0.5, dof / 2.0)
    return 0.5 + half_mass if t > 0 else 0.5 - half_mass
  tail = 0.5 * regularized_beta(dof / (dof + t2), dof / 2.0, 0.5)  # P(T > |t|)
  return 1.0 - tail if t > 0 else tail


def t_ppf(q: float, dof: float) -> float:
  """The q-quantile of Student's t (bisection on `t_cdf`, |error| < 1e-10)."""
  if not 0.0 < q < 1.0:
    raise ValueError(f"t_ppf needs 0 < q < 1, got {q}.")
  lo, hi = -1.0, 1.0
  while t_cdf(lo, dof) > q:
    lo *= 2.0
  while t_cdf(hi, dof) < q:
    hi *= 2.0
  while hi - lo > 1e-10 * max(1.0, abs(lo)):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if t_cdf(mid, dof) < q else (lo, mid)
  return 0.5 * (lo + hi)


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

  Args:
    a, b: equally long sequences, entry i of both from the same seed.
  Returns:
    `PairedTest`; p is nan when no test is possible: fewer than 2 pairs, or differences
    that are all equal (zero variance: the t statistic is undefined, not infinitely
    significant - identical reruns must not read as a discovery).
  """
  if len(a) != len(b):
    raise ValueError(f"paired_t_test needs matched samples, got {len(a)} and {len(b)} values.")
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  d = d[np.isfinite(d)]
  n = len(d)
  if n == 0:
    return PairedTest(float("nan"), float("nan"), float("nan"), 0)
  mean = float(d.mean())
  if n < 2:
    return PairedTest(mean, float("nan"), float("nan"), n)
  s = float(np.std(d, ddof=1))
  if s <= 1e-12 * max(1.0, abs(mean)):
    return PairedTest(mean, float("nan"), float("nan"), n)
  t = mean / (s / math.sqrt(n))
  dof = n - 1
  p = regularized_beta(dof / (dof + t * t), dof / 2.0, 0.5)  # = 2 P(T > |t|), no cancellation
  return PairedTest(mean, t, min(max(p, 0.0), 1.0), n)


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
