"""Carlini et al. 2019 sanity checks: each passes on a sound evaluation and fails on the
constructed symptom it exists to catch; the model measurements on known models."""

import numpy as np
import pytest
import tensorflow as tf

from latmix_tf.config import EvalConfig
from latmix_tf.evaluation import deepfool, sanity

TOL = 0.01


def test_iterative_vs_single_step():
  eps = [0.0, 0.1, 0.2]
  assert sanity.iterative_at_least_single_step(eps, [0.9, 0.5, 0.3], [0.9, 0.2, 0.0], TOL).passed
  bad = sanity.iterative_at_least_single_step(eps, [0.9, 0.5, 0.3], [0.9, 0.6, 0.0], TOL)
  assert bad.passed is False and bad.value == pytest.approx(0.1)
  assert sanity.iterative_at_least_single_step([0.0], [0.9], [0.9], TOL).passed is None


def test_monotone_in_eps_any_order_of_eps():
  assert sanity.monotone_in_eps("m", [0.2, 0.0, 0.1], [0.1, 0.9, 0.5], TOL).passed
  bad = sanity.monotone_in_eps("m", [0.0, 0.1, 0.2], [0.9, 0.5, 0.7], TOL)
  assert bad.passed is False and bad.value == pytest.approx(0.2)


def test_unbounded_at_chance_and_stronger_not_weaker():
  assert sanity.unbounded_at_chance(0.05, 10, TOL).passed
  assert not sanity.unbounded_at_chance(0.3, 10, TOL).passed
  assert sanity.stronger_attack_not_weaker("aa", 0.4, 0.35, TOL).passed
  assert not sanity.stronger_attack_not_weaker("aa", 0.4, 0.45, TOL).passed


def test_black_box_not_stronger_reads_the_cumulative_accuracies():
  ok = {"apgd-ce": 0.40, "apgd-t": 0.38, "fab-t": 0.38, "square": 0.375}
  assert sanity.black_box_not_stronger(ok, TOL).passed
  masked = {"apgd-ce": 0.80, "apgd-t": 0.78, "fab-t": 0.78, "square": 0.10}
  check = sanity.black_box_not_stronger(masked, TOL)
  assert check.passed is False and check.value == pytest.approx(0.68)
  assert sanity.black_box_not_stronger({"apgd-ce": 0.4, "apgd-t": 0.3}, TOL).passed is None


def test_deepfool_gradient_and_loss_checks():
  assert sanity.deepfool_flips_every_image(1000, 1, 0, 50, 500).passed
  assert "all 16 flipped within 10" in sanity.deepfool_flips_every_image(16, 0, 0, 10, 0).detail
  bad = sanity.deepfool_flips_every_image(1000, 3, 2, 50, 500)
  assert bad.passed is False and bad.value == pytest.approx(0.002)
  assert sanity.gradients_nonzero(np.array([0.1, 2.0, 0.3]), TOL).passed
  assert not sanity.gradients_nonzero(np.array([0.0, 2.0, 0.3]), TOL).passed
  assert sanity.apgd_loss_increases([0.1, 0.5, 0.9]).passed
  assert not sanity.apgd_loss_increases([0.9, 0.5]).passed
  assert sanity.apgd_loss_increases([]).passed is None


def test_metrics_records_and_report_lines():
  checks = [sanity.deepfool_flips_every_image(10, 5, 5, 50, 500),
            sanity.apgd_loss_increases([0.0, 1.0]),
            sanity.apgd_loss_increases([])]
  assert sanity.as_metrics(checks) == {"sanity/deepfool_flips_every_image": 0.0,
                                       "sanity/apgd_loss_increases": 1.0, "sanity/failed": 1.0}
  lines = sanity.report_lines(checks)
  assert "**FAILED**" in lines[0] and "deepfool" in lines[0] and "skipped" in lines[2]
  assert sanity.as_records(checks)[0]["name"] == "deepfool_flips_every_image"


def _linear(num_classes=3, dim=12, seed=0):
  w = tf.constant(np.random.default_rng(seed).normal(size=(dim, num_classes)), tf.float32)
  return lambda x: tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), w)


def test_input_gradient_norms_of_a_linear_model_and_of_a_masked_one():
  x = np.random.default_rng(1).uniform(0.2, 0.8, (6, 2, 2, 3)).astype(np.float32)
  y = np.array([0, 1, 2, 0, 1, 2])
  lf = _linear()
  norms = sanity.input_gradient_norms(lf, x, y, batch_size=4)
  with tf.GradientTape() as tape:
    xt = tf.constant(x)
    tape.watch(xt)
    loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, lf(xt)))
  expected = np.linalg.norm(tape.gradient(loss, xt).numpy().reshape(6, -1), axis=1)
  np.testing.assert_allclose(norms, expected, rtol=1e-5)
  assert sanity.gradients_nonzero(norms, TOL).passed
  # A model that rounds its input has zero gradient everywhere: the check must fail.
  rounded = lambda z: lf(z + tf.stop_gradient(tf.round(z) - z)) * 0 + tf.stop_gradient(lf(z))
  zero = sanity.input_gradient_norms(rounded, x, y)
  assert (zero == 0).all() and not sanity.gradients_nonzero(zero, TOL).passed


def test_unbounded_pgd_reaches_zero_accuracy_on_a_linear_model():
  x = np.random.default_rng(2).uniform(0.3, 0.7, (30, 2, 2, 3)).astype(np.float32)
  lf = _linear()
  y = np.argmax(lf(tf.constant(x)).numpy(), 1)  # all correct to begin with
  acc = sanity.unbounded_accuracy(lf, x, y, 3, steps=20)
  assert acc <= 1 / 3 and sanity.unbounded_at_chance(acc, 3, TOL).passed


def _wavy(num_classes=3, dim=12, seed=0):
  """A smooth non-linear model: DeepFool's linearisation needs several steps to cross."""
  rng = np.random.default_rng(seed)
  w = tf.constant(rng.normal(size=(dim, num_classes)), tf.float32)
  v = tf.constant(3 * rng.normal(size=(dim, num_classes)), tf.float32)
  def lf(x):
    flat = tf.reshape(x, [tf.shape(x)[0], -1])
    return tf.matmul(flat, w) + tf.matmul(tf.sin(6 * flat), v)
  return lf


def test_deepfool_check_passes_a_correct_attack_stopped_by_its_iteration_limit():
  """An image DeepFool has not flipped when its iterations run out is not a failure (the old
  check, fooling rate = 1, flagged exactly this): continued, a correct DeepFool flips it."""
  x = np.random.default_rng(0).uniform(0.2, 0.8, (64, 2, 2, 3)).astype(np.float32)
  cfg = EvalConfig(deepfool_max_iter=1, deepfool_candidates=3)
  lf = _wavy()
  result = deepfool.run_deepfool(lf, x, 3, 3, cfg.deepfool_overshoot, cfg.deepfool_max_iter)
  assert 0 < np.sum(~result.flipped) < len(x)  # the iteration limit left some unflipped
  counts = sanity.continue_deepfool(lf, result, 3, cfg)
  assert counts["unflipped_at_budget"] == np.sum(~result.flipped)
  assert counts["continued_iter"] == sanity.DEEPFOOL_CONTINUE_FACTOR
  check = sanity.deepfool_flips_every_image(**counts)
  assert check.passed is True and check.value == 0.0


def test_deepfool_check_fails_where_no_amount_of_deepfool_flips():
  """A model whose input gradient is zero (a masked one) never moves DeepFool: FAILED."""
  x = np.random.default_rng(1).uniform(0.2, 0.8, (8, 2, 2, 3)).astype(np.float32)
  lf = _linear()
  masked = lambda z: lf(z + tf.stop_gradient(tf.round(z) - z)) * 0 + tf.stop_gradient(lf(z))
  cfg = EvalConfig(deepfool_max_iter=2, deepfool_candidates=3)
  result = deepfool.run_deepfool(masked, x, 3, 3, cfg.deepfool_overshoot, cfg.deepfool_max_iter)
  check = sanity.deepfool_flips_every_image(**sanity.continue_deepfool(masked, result, 3, cfg))
  assert check.passed is False and check.value == 1.0
  assert "8 of 8 unflipped after 2 iterations, 8 still unflipped after 20 more" in check.detail
