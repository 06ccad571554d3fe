"""latmix_tf.stats against scipy's reference and against values computed by hand.

The hand-computed cases live in tests/test_comparison.py; here the same functions are
checked on edge cases the comparison report relies on (nan pairs, zero variance, one seed).
"""

import math

import numpy as np
import pytest
import scipy.stats

from latmix_tf import stats


def test_t_distribution_matches_closed_forms_and_scipy():
  for t in (-7.0, -1.0, 0.0, 0.3, 2.5, 40.0, math.inf, -math.inf):
    assert stats.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
  assert stats.t_ppf(0.975, 2) == pytest.approx(4.302652729749464, abs=1e-8)
  assert stats.regularized_beta(0.3, 2.0, 3.0) == pytest.approx(
      scipy.stats.beta(2.0, 3.0).cdf(0.3), abs=1e-14)
  with pytest.raises(ValueError, match="dof"):
    stats.t_cdf(1.0, 0)
  with pytest.raises(ValueError, match="0 < q < 1"):
    stats.t_ppf(1.0, 3)


def test_paired_test_drops_unrecorded_pairs_and_refuses_zero_variance():
  a, b = [2.0, 4.0, float("nan"), 6.0], [1.0, 2.0, 5.0, 3.0]
  test = stats.paired_t_test(a, b)
  want = scipy.stats.ttest_rel([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
  assert test.n == 3 and test.p == pytest.approx(want.pvalue, abs=1e-12)
  assert test.t == pytest.approx(want.statistic)
  same = stats.paired_t_test([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])  # identical reruns shifted
  assert math.isnan(same.p) and same.mean_diff == pytest.approx(0.1)
  assert stats.paired_t_test([], []).n == 0


def test_mean_ci_coverage_is_nominal():
  # 2000 samples of n = 3 from N(0, 1): the 95% interval covers 0 about 95% of the time.
  rng = np.random.default_rng(0)
  covered = [abs(c.mean) <= c.half_width
             for c in (stats.mean_ci(rng.normal(size=3)) for _ in range(2000))]
  assert 0.93 < np.mean(covered) < 0.97


# ---- TOST: known answers against scipy's one-sided paired t-tests --------------------------

def _scipy_tost(a, b, delta):
  a, b = np.asarray(a), np.asarray(b)
  lower = scipy.stats.ttest_rel(a, b - delta, alternative="greater").pvalue  # d > -delta
  upper = scipy.stats.ttest_rel(a, b + delta, alternative="less").pvalue     # d < +delta
  return lower, upper


def test_tost_equivalent_case_matches_scipy():
  # Differences 0.1, -0.1, 0.0, 0.05, -0.05 (points): mean 0, s = 0.0791, se = 0.0354.
  # Margin 0.5: t = ±14.1 at 4 dof, both one-sided p ~ 7e-5 -> equivalent.
  b = np.array([90.0, 91.0, 89.5, 90.2, 90.8])
  a = b + np.array([0.1, -0.1, 0.0, 0.05, -0.05])
  tost = stats.tost_paired(a, b, delta=0.5)
  lower, upper = _scipy_tost(a, b, 0.5)
  assert tost.p_lower == pytest.approx(lower, rel=1e-9)
  assert tost.p_upper == pytest.approx(upper, rel=1e-9)
  assert tost.p == pytest.approx(max(lower, upper), rel=1e-9) and tost.p < 1e-3
  assert tost.equivalent and tost.n == 5 and tost.mean_diff == pytest.approx(0.0, abs=1e-12)
  # 90% CI = mean ± t_{0.95, 4} s / √n, inside ±0.5.
  se = np.std(a - b, ddof=1) / math.sqrt(5)
  assert (tost.ci_low, tost.ci_high) == pytest.approx(
      (-scipy.stats.t.ppf(0.95, 4) * se, scipy.stats.t.ppf(0.95, 4) * se), abs=1e-12)
  assert -0.5 < tost.ci_low < tost.ci_high < 0.5


def test_tost_not_equivalent_case_matches_scipy():
  # A consistent cost of ~0.6 points lies below -delta: "d <= -0.5" is not rejected, so there
  # is no equivalence (while a plain t-test calls the cost significant).
  b = np.array([90.0, 91.0, 89.5])
  a = b - np.array([0.55, 0.65, 0.6])
  tost = stats.tost_paired(a, b, delta=0.5)
  lower, upper = _scipy_tost(a, b, 0.5)
  assert (tost.p_lower, tost.p_upper) == pytest.approx((lower, upper), rel=1e-9)
  assert lower > 0.95 and upper < 1e-3 and not tost.equivalent
  assert tost.p == pytest.approx(lower, rel=1e-9) and tost.ci_low < -0.5
  # Non-significance is not equivalence: a noisy sample with mean 0 is neither.
  noisy = stats.tost_paired(b + np.array([2.0, -2.0, 0.0]), b, delta=0.5)
  assert stats.paired_t_test(b + np.array([2.0, -2.0, 0.0]), b).p > 0.05
  assert not noisy.equivalent and noisy.p == pytest.approx(max(_scipy_tost(
      b + np.array([2.0, -2.0, 0.0]), b, 0.5)), rel=1e-9)


def test_tost_at_the_limit_where_the_ci_touches_the_margin():
  b = np.array([90.0, 91.0, 89.5, 90.5])
  a = b + np.array([0.2, 0.4, 0.1, 0.3])
  touching = stats.tost_paired(a, b, delta=1.0).ci_high  # the 90% CI's upper end
  at = stats.tost_paired(a, b, delta=touching)
  assert at.ci_high == pytest.approx(touching) and at.p_upper == pytest.approx(0.05, abs=1e-9)
  assert at.p == pytest.approx(max(_scipy_tost(a, b, touching)), abs=1e-12)
  assert stats.tost_paired(a, b, delta=touching * (1 + 1e-6)).equivalent
  assert not stats.tost_paired(a, b, delta=touching * (1 - 1e-6)).equivalent


def test_tost_refuses_what_it_cannot_test():
  assert not stats.tost_paired([1.0, 2.0], [0.9, 1.9], delta=0.5).equivalent  # zero variance
  assert math.isnan(stats.tost_paired([1.0], [1.0], delta=0.5).p)
  with pytest.raises(ValueError, match="delta > 0"):
    stats.tost_paired([1.0, 2.0], [1.0, 2.5], delta=0.0)
