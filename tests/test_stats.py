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
