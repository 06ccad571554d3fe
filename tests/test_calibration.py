"""Calibration metrics against closed-form answers: Brier, temperature scaling, reliability
bins, and the "_ts" / corrupted metric keys."""

import numpy as np
import pytest

from latmix_tf.evaluation import calibration


def test_brier_known_answers():
  labels = np.array([0, 1])
  assert calibration.brier_score(np.eye(2), labels) == 0.0
  assert calibration.brier_score(np.eye(2)[::-1], labels) == 2.0  # the maximum
  assert calibration.brier_score(np.full((2, 4), 0.25), labels) == pytest.approx(0.75)


def _tempered_problem(n, true_t, seed=0):
  """Labels drawn from softmax(z / true_t): the NLL-optimal temperature is true_t."""
  rng = np.random.default_rng(seed)
  z = rng.normal(0, 3, (n, 5))
  p = calibration.softmax(z / true_t)
  labels = (rng.uniform(size=(n, 1)) > np.cumsum(p, 1)).sum(1)
  return z, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_temperature_recovers_the_generating_temperature(true_t):
  z, y = _tempered_problem(60_000, true_t)
  t = calibration.fit_temperature(z, y)
  assert t == pytest.approx(true_t, rel=0.03)
  # It is the NLL minimum: nudging T either way raises the NLL.
  nll = lambda temp: calibration.negative_log_likelihood(z / temp, y)
  assert nll(t) <= min(nll(t * 1.05), nll(t / 1.05))


def test_temperature_scaling_fixes_an_overconfident_model():
  z, y = _tempered_problem(20_000, 3.0)  # model logits 3x too sharp
  t = calibration.fit_temperature(z, y)
  m = calibration.calibration_metrics(z, y, 15, temperature=t)
  assert m["calibration/ece_ts"] < 0.3 * m["calibration/ece"]
  assert m["calibration/nll_ts"] < m["calibration/nll"]
  assert m["calibration/brier_ts"] < m["calibration/brier"]
  assert set(m) == {f"calibration/{k}{s}" for k in ("ece", "nll", "brier") for s in ("", "_ts")}


def test_temperature_is_bounded_when_validation_is_perfectly_separated():
  z = np.array([[5.0, 0.0], [0.0, 5.0]])
  assert calibration.fit_temperature(z, np.array([0, 1])) == calibration.T_MIN
  assert calibration.fit_temperature(z, np.array([1, 0])) == calibration.T_MAX


def test_reliability_bins_are_the_ece_bins():
  rng = np.random.default_rng(0)
  probs = calibration.softmax(rng.normal(0, 2, (5000, 10)))
  y = rng.integers(0, 10, 5000)
  b = calibration.reliability_bins(probs, y, 15)
  assert b["count"].sum() == 5000 and len(b["edges"]) == 16
  filled = b["count"] > 0
  ece = np.sum(b["count"][filled] * np.abs(b["accuracy"] - b["confidence"])[filled]) / 5000
  assert calibration.expected_calibration_error(probs, y, 15) == pytest.approx(ece)
  lo, hi = b["edges"][:-1][filled], b["edges"][1:][filled]
  assert ((b["confidence"][filled] > lo - 1e-12) & (b["confidence"][filled] <= hi + 1e-12)).all()


def test_prefix_names_the_corrupted_metrics():
  z, y = _tempered_problem(500, 1.0)
  m = calibration.calibration_metrics(z, y, prefix="calibration/corrupted_")
  assert set(m) == {"calibration/corrupted_ece", "calibration/corrupted_nll",
                    "calibration/corrupted_brier"}
