"""Known-answer tests of latmix_tf.evaluation: blur = scipy, DeepFool on an affine classifier,
DeepFool on a small trained CNN, ECE / NLL, and the end-to-end SavedModel evaluation."""

import json
import os

import keras
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from latmix_tf import export
from latmix_tf.config import EvalConfig
from latmix_tf.data import load_dataset
from latmix_tf.evaluation import (ATTACK_CONFIG_FILE, EVALUATION_FILE, PNG_FILES, calibration,
                                  evaluate_saved_model, gaussian_blur, run_deepfool, sanity_notes,
                                  summarize)

# ---------------------------------------------------------------- blur


@pytest.mark.parametrize("shape", [(2, 9, 7, 1), (2, 8, 8, 3)])
@pytest.mark.parametrize("sigma", [0.0, 0.5, 1.0, 1.7, 3.0, 6.0])
def test_blur_equals_scipy_reflect(shape, sigma):
  x = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
  expected = scipy.ndimage.gaussian_filter(x.astype(np.float64), sigma=(0, sigma, sigma, 0),
                                           mode="reflect", truncate=3.0)
  ours = gaussian_blur(tf.constant(x), sigma).numpy()
  np.testing.assert_allclose(ours, expected, atol=1e-4)  # sigma = 6: radius 18 > image
  if sigma == 0:
    np.testing.assert_array_equal(ours, x)


# ---------------------------------------------------------------- DeepFool, affine


def _affine_problem(num_classes, n=12, seed=0):
  """A linear classifier on 32x32x3 images whose boundaries are 1.3-3.5 away from the data.

  Class 0 is predicted (bias gaps of 4). With 12 classes, class 11 has the lowest logit but
  the nearest boundary (distance ~1.5), so the top-10 candidate rule must skip it.
  """
  dim = 32 * 32 * 3
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(dim, num_classes)) / np.sqrt(dim)
  b = -4.0 * np.arange(num_classes)
  if num_classes > 10:
    v = rng.normal(size=dim)
    v -= v.mean()
    w[:, -1] = w[:, 0] + 100 * v / np.linalg.norm(v)
    b[-1] = -150.0
  x = rng.uniform(0.4, 0.6, size=(n, 32, 32, 3)).astype(np.float32)
  w_t, b_t = tf.constant(w, tf.float32), tf.constant(b, tf.float32)
  fn = lambda z: tf.matmul(tf.reshape(z, [tf.shape(z)[0], -1]), w_t) + b_t
  return fn, w, b, x


def _nearest_boundary(w, b, x, candidates):
  """Analytic L2 distance to the nearest boundary among the top-`candidates` classes."""
  f = x.reshape(len(x), -1).astype(np.float64) @ w + b
  out = []
  for fi in f:
    top = np.argsort(-fi)[:candidates]
    out.append(min(abs(fi[k] - fi[top[0]]) / np.linalg.norm(w[:, k] - w[:, top[0]])
                   for k in top[1:]))
  return np.array(out)


@pytest.mark.parametrize("num_classes,candidates", [(5, 10), (12, 10), (12, 12)])
def test_deepfool_affine_is_exact_in_one_iteration(num_classes, candidates):
  eta = 0.02
  fn, w, b, x = _affine_problem(num_classes)
  expected = _nearest_boundary(w, b, x, min(candidates, num_classes))
  assert expected.min() > 1.0  # so min_step = 1e-4 changes ||r|| by < 1e-4 relative
  if num_classes == 12:  # the candidate rule matters here
    nearest_any = _nearest_boundary(w, b, x, 12)
    assert (nearest_any < 0.9 * _nearest_boundary(w, b, x, 10)).all()
  for min_step in (0.0, 1e-4):
    res = run_deepfool(fn, x, num_classes, candidates, eta, max_iter=50, min_step=min_step)
    assert 0.05 < res.x_adv.min() and res.x_adv.max() < 0.95  # the box was never touched
    np.testing.assert_array_equal(res.iterations, 1)
    assert res.flipped.all()
    np.testing.assert_allclose(res.l2, (1 + eta) * (expected + min_step), rtol=1e-5)
    np.testing.assert_allclose(res.l2, (1 + eta) * expected, rtol=1e-4)


def test_deepfool_never_flipped_samples_are_counted_not_dropped():
  # Logits that do not depend on the image: DeepFool cannot move, nothing flips.
  fn = lambda x: tf.zeros([tf.shape(x)[0], 3]) + 0.0 * tf.reduce_sum(x) + [1.0, 0.0, -1.0]
  x = np.random.default_rng(0).uniform(size=(6, 5, 5, 1)).astype(np.float32)
  res = run_deepfool(fn, x, 3, max_iter=4)
  summary = summarize(res)
  assert summary["deepfool/not_flipped"] == 6 and summary["deepfool/samples"] == 6
  assert summary["deepfool/fooling_rate"] == 0.0
  assert summary["deepfool/rho_adv"] == 0.0 and np.isnan(summary["deepfool/rho_adv_flipped"])
  np.testing.assert_array_equal(res.iterations, 4)


# ---------------------------------------------------------------- a small trained CNN


@pytest.fixture(scope="module")
def trained_cnn(tiny_data_dir):
  keras.utils.set_random_seed(0)
  arrays = load_dataset("fashion_mnist", tiny_data_dir, allow_tfds=False)
  # No batch norm: its moving averages would not settle in a few steps.
  model = keras.Sequential([
      keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
      keras.layers.MaxPooling2D(), keras.layers.Conv2D(16, 3, activation="relu"),
      keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(10)])
  model.compile(keras.optimizers.Adam(3e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(arrays.x_train / 255.0, arrays.y_train, batch_size=64, epochs=3, verbose=0)
  return model, arrays


def test_deepfool_adversarials_of_trained_cnn_are_misclassified(trained_cnn):
  model, arrays = trained_cnn
  # conftest draws the tiny test split from other class templates; use training images.
  x = arrays.x_train[:48].astype(np.float32) / 255.0
  res = run_deepfool(lambda z: model(z, training=False), x, 10, batch_size=20)
  pred = np.argmax(model(res.x_adv, training=False).numpy(), 1)
  clean = np.argmax(model(x, training=False).numpy(), 1)
  np.testing.assert_array_equal(res.start_class, clean)
  assert res.flipped.all(), f"{(~res.flipped).sum()} images not flipped"
  assert (pred != clean).all()
  correct = clean == arrays.y_train[:48]
  assert correct.mean() > 0.5 and (pred[correct] != arrays.y_train[:48][correct]).all()
  assert res.x_adv.min() >= 0.0 and res.x_adv.max() <= 1.0
  np.testing.assert_allclose(res.l2, np.linalg.norm((res.x_adv - x).reshape(48, -1), axis=1),
                             rtol=1e-5)
  np.testing.assert_allclose(res.relative, res.l2 / np.linalg.norm(x.reshape(48, -1), axis=1))
  assert (res.iterations >= 1).all() and (res.iterations <= 50).all()


# ---------------------------------------------------------------- calibration


def _calibrated_predictions(n, num_classes, rng):
  conf = rng.uniform(1.0 / num_classes, 1.0, n)
  labels = rng.integers(0, num_classes, n)
  correct = rng.uniform(size=n) < conf
  wrong = (labels + rng.integers(1, num_classes, n)) % num_classes
  pred = np.where(correct, labels, wrong)
  probs = np.repeat(((1 - conf) / (num_classes - 1))[:, None], num_classes, axis=1)
  probs[np.arange(n), pred] = conf
  return probs, labels


def test_ece_of_calibrated_predictor_is_zero_and_of_overconfident_is_the_gap():
  rng = np.random.default_rng(0)
  probs, labels = _calibrated_predictions(200_000, 10, rng)
  assert calibration.expected_calibration_error(probs, labels, 15) < 0.005
  # Always 90% confident but right half of the time: ECE = 0.4.
  probs = np.full((10_000, 2), 0.1)
  probs[:, 0] = 0.9
  labels = np.arange(10_000) % 2
  assert calibration.expected_calibration_error(probs, labels, 15) == pytest.approx(0.4)


def test_nll_known_answers():
  labels = np.array([0, 1, 2, 1])
  assert calibration.negative_log_likelihood(np.zeros((4, 3)), labels) == pytest.approx(np.log(3))
  logits = np.array([[1000.0, 0.0, 0.0]])  # stable for very confident logits
  assert calibration.negative_log_likelihood(logits, np.array([0])) == pytest.approx(0.0)
  assert calibration.negative_log_likelihood(logits, np.array([1])) == pytest.approx(1000.0)


# ---------------------------------------------------------------- end to end


def test_evaluate_saved_model_end_to_end(trained_cnn, tmp_path):
  model, arrays = trained_cnn
  export_dir = export.export_classifier(model, str(tmp_path / "model"), (28, 28, 1))
  x, y = arrays.x_train[:64], arrays.y_train[:64]
  cfg = EvalConfig(blur_sigmas=(0.0, 1.0, 2.0), deepfool_samples=16, attack_epsilons=(0.0, 0.1),
                   pgd_steps=3, batch_size=32, deepfool_batch_size=8,
                   autoattack_budgets=(("Linf", 0.1), ("L2", 1.0)), autoattack_version="cheap",
                   autoattack_samples=16, autoattack_iters=10,
                   apgd_curve_epsilons=(0.0, 0.05, 0.1),
                   apgd_curve_iters=5, apgd_curve_samples=16,
                   corruptions=("shot_noise", "rotate", "stripe"), corruption_samples=24,
                   sanity_samples=16, sanity_unbounded_steps=5)
  out, cache = str(tmp_path / "eval"), str(tmp_path / "corrupted")
  logs = []
  metrics = evaluate_saved_model(export_dir, x, y, cfg, out, log=logs.append,
                                 x_val=arrays.x_train[64:128], y_val=arrays.y_train[64:128],
                                 cache_dir=cache)
  with open(os.path.join(out, EVALUATION_FILE)) as f:
    record = json.load(f)
  assert record["metrics"] == pytest.approx(metrics, nan_ok=True)
  for name in PNG_FILES:
    assert os.path.getsize(os.path.join(out, name)) > 1000, name
  direct = float(np.mean(np.argmax(model(x / 255.0).numpy(), 1) == y))
  assert metrics["test/accuracy"] == pytest.approx(direct)
  assert metrics["blur/acc@0.0"] == metrics["test/accuracy"] == metrics["fgsm/acc@0.0"]
  assert metrics["blur/area"] == pytest.approx(np.mean(
      [metrics["blur/acc@0.0"], metrics["blur/acc@1.0"], metrics["blur/acc@2.0"]]))
  assert metrics["pgd/acc@0.1"] <= metrics["fgsm/acc@0.0"]
  assert metrics["deepfool/samples"] == 16 and 0 < metrics["deepfool/rho_adv"] < 1
  assert 0 <= metrics["calibration/ece"] <= 1 and metrics["calibration/nll"] > 0
  assert record["curves"]["attacks"]["eps"] == [0.0, 0.1] and logs
  # AutoAttack: per budget, the worst case is below the clean accuracy of the same images.
  for budget in ("Linf@0.1", "L2@1.0"):
    robust = metrics[f"autoattack/{budget}/robust_accuracy"]
    assert robust <= metrics[f"autoattack/{budget}/clean_accuracy"]
    assert robust == metrics[f"autoattack/{budget}/after_apgd-t"]
  assert metrics["apgd/acc@0.0"] >= metrics["apgd/acc@0.1"]
  # Corruptions: 3 MNIST-C sets at MNIST-C's own severity; mCA is their mean.
  names = ("shot_noise", "rotate", "stripe")
  assert metrics["corruption/mca"] == pytest.approx(
      np.mean([metrics[f"corruption/{n}/accuracy"] for n in names]))
  assert metrics["corruption/samples"] == 24 and len(os.listdir(cache)) == 1
  # Calibration before / after temperature scaling, clean and corrupted.
  for key in ("ece", "nll", "brier", "ece_ts", "nll_ts", "brier_ts", "corrupted_ece",
              "corrupted_ece_ts", "corrupted_brier"):
    assert np.isfinite(metrics[f"calibration/{key}"]), key
  assert 0.01 <= metrics["calibration/temperature"] <= 100
  # Sanity checks: every check that ran has a 0/1 key and a record; Square did not run.
  ran = [c for c in record["sanity"] if c["passed"] is not None]
  assert {f"sanity/{c['name']}" for c in ran} <= set(metrics)
  assert metrics["sanity/failed"] == sum(not c["passed"] for c in ran)
  assert "sanity/black_box_not_stronger" not in metrics
  assert "sanity/input_gradients_nonzero" in metrics and "sanity/apgd_loss_increases" in metrics
  with open(os.path.join(out, ATTACK_CONFIG_FILE)) as f:
    hyper = json.load(f)
  assert hyper["pgd"]["steps"] == 3 and hyper["autoattack"]["Linf@0.1"]["apgd_n_iter"] == 10
  assert len(sanity_notes(out)) == len(record["sanity"])
  with pytest.raises(ValueError, match="expects images of shape"):
    evaluate_saved_model(export_dir, np.zeros((4, 32, 32, 3), np.uint8), y[:4], cfg, out)
  with pytest.raises(FileNotFoundError):
    evaluate_saved_model(str(tmp_path / "missing"), x, y, cfg, out)


# ---------------------------------------------------------------- comparison columns


def _suite_metrics(acc, aa_linf, aa_l2, mca, brier, ece_ts, corr):
  return {"test/accuracy": acc, "pgd/acc@0.1": aa_linf + 0.05,
          "autoattack/Linf@0.1/robust_accuracy": aa_linf,
          "autoattack/Linf@0.2/robust_accuracy": aa_linf / 2,
          "autoattack/L2@0.5/robust_accuracy": aa_l2, "corruption/mca": mca,
          "calibration/brier": brier, "calibration/ece": 2 * ece_ts,
          "calibration/ece_ts": ece_ts, "corruption/fog/accuracy": corr[0],
          "corruption/rotate/accuracy": corr[1], "autoattack/samples": 16}


def test_comparison_tests_the_new_headline_columns_and_the_relative_corruption_error(tmp_path):
  from latmix_tf.comparison import metrics as cm, summary, write_comparison_report
  erm = {s: _suite_metrics(0.9 + 0.01 * s, 0.1, 0.2, 0.7, 0.15, 0.02, (0.8 - 0.01 * s, 0.6))
         for s in range(3)}
  pgd_at = {s: _suite_metrics(0.85 + 0.01 * s, 0.5 + 0.003 * s, 0.4 + 0.01 * s ** 2,
                              0.6 + 0.02 * s ** 2, 0.25 - 0.01 * s, 0.03 + 0.004 * s ** 2,
                              (0.6, 0.2 + 0.01 * s)) for s in range(3)}
  runs = {"erm": erm, "pgd_at": pgd_at}
  keys = cm.report_metrics(runs)
  head = cm.headline_metrics(keys, robust_eps=0.1)
  assert head == ["test/accuracy", "pgd/acc@0.1", "autoattack/L2@0.5/robust_accuracy",
                  "autoattack/Linf@0.1/robust_accuracy", "corruption/mca",
                  "calibration/ece", "calibration/ece_ts", "calibration/brier"]
  assert cm.metric_label("autoattack/Linf@0.1/robust_accuracy") == "AutoAttack acc Linf ε=0.1 (%)"
  headline = ["test/accuracy", "pgd/acc@0.1", "calibration/ece", "calibration/ece_ts",
              "calibration/brier", "calibration/brier_ts", "calibration/corrupted_ece",
              "calibration/corrupted_ece_ts", "autoattack/Linf@0.1/robust_accuracy"]
  shorts = [cm.short_label(k) for k in headline]
  assert len(set(shorts)) == len(shorts), shorts  # the conclusions never name two alike
  assert cm.short_label("calibration/ece_ts") == "ECE (temperature-scaled)"
  assert cm.short_label("pgd/acc@0.1") == "PGD acc ε=0.1"
  assert cm.at_value("autoattack/L2@0.5/robust_accuracy") == 0.5
  assert not cm.higher_is_better("calibration/brier") and cm.higher_is_better("corruption/mca")
  family = summary.family_metrics(keys, robust_eps=0.1)
  assert set(family) == set(head)  # every headline column is in the Holm family
  rows = summary.summarize(runs, robust_eps=0.1)
  tested = [r for r in rows if r["family"] and np.isfinite(r["p_vs_ref"])]
  assert {r["metric"] for r in tested} >= {"autoattack/Linf@0.1/robust_accuracy",
                                            "calibration/brier", "corruption/mca"}
  assert all(r["p_holm"] >= r["p_vs_ref"] for r in tested)
  # mCE-style ratio: ERM's per-corruption error averaged over seeds is the denominator.
  derived = cm.with_relative_corruption_error(runs, "erm")
  ref_err = {"fog": np.mean([0.2 + 0.01 * s for s in range(3)]), "rotate": 0.4}
  for s in range(3):
    expected = np.mean([0.4 / ref_err["fog"], (0.8 - 0.01 * s) / ref_err["rotate"]])
    assert derived["pgd_at"][s]["corruption/mce_vs_ref"] == pytest.approx(expected)
  assert np.mean([derived["erm"][s]["corruption/mce_vs_ref"] for s in range(3)]) == \
      pytest.approx(1.0)
  out = write_comparison_report(str(tmp_path), runs, "t", robust_eps=0.1)
  text = open(out["markdown"]).read()
  assert "AutoAttack acc Linf ε=0.1 (%)" in text and "mCA (%)" in text
  assert "corruption error / reference's" in text
