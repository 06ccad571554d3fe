"""Evaluators of the model without an adversary: clean accuracy, calibration, blur, corruptions.

  clean        test accuracy (from the clean logits every evaluator shares).
  calibration  ECE (15 equal-width max-probability bins), NLL and Brier, before and after
               temperature scaling fitted on the validation split when one is given ("*_ts").
  blur         accuracy per Gaussian-blur sigma and the area (mean accuracy over the grid).
  corruptions  MNIST-C / CIFAR-10-C: accuracy per corruption, mCA, and the calibration metrics
               on the pooled corrupted images (calibration under shift; scaled by the
               temperature "calibration" fitted, when it ran before).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from latmix_tf import reports
from latmix_tf.data.pipeline import to_float
from latmix_tf.evaluation import calibration, corruptions, plots
from latmix_tf.evaluation.blur import gaussian_blur
from latmix_tf.evaluation.evaluator import (EvalContext, EvalResult, Evaluator, batched,
                                            metric_key)


class CleanAccuracy(Evaluator):
  """test/samples and test/accuracy; a grid of predictions and the confusion matrix (from the
  clean logits, so the report never reloads the model to draw them)."""
  figure_files = ("predictions.png", "confusion_matrix.png")
  required = ("test/accuracy",)

  def run(self, ctx: EvalContext) -> EvalResult:
    preds = ctx.logits.argmax(1)
    names = ctx.class_names or [str(c) for c in range(ctx.num_classes)]
    reports.plot_prediction_grid(ctx.x_uint8[:32], ctx.y[:32], preds[:32], names,
                                 ctx.path(self.figure_files[0]))
    reports.plot_confusion_matrix(reports.confusion_matrix(ctx.y, preds, ctx.num_classes),
                                  names, ctx.path(self.figure_files[1]))
    return EvalResult({"test/samples": int(len(ctx.y)), "test/accuracy": ctx.accuracy},
                      list(self.figure_files))


class Calibration(Evaluator):
  """calibration/{ece, nll, brier}[_ts], calibration/temperature; the reliability diagram."""
  figure_files = ("reliability_diagram.png",)
  required = ("calibration/ece",)

  def run(self, ctx: EvalContext) -> EvalResult:
    bins, metrics, temperature = ctx.cfg.ece_bins, {}, None
    if ctx.x_val is not None:
      val_logits = ctx.predict_logits(to_float(np.asarray(ctx.x_val)))
      temperature = calibration.fit_temperature(val_logits, np.asarray(ctx.y_val).astype(np.int64))
      metrics["calibration/temperature"] = temperature
    metrics.update(calibration.calibration_metrics(ctx.logits, ctx.y, bins, temperature))
    scaled = None if temperature is None else calibration.reliability_bins(
        calibration.softmax(ctx.logits / temperature), ctx.y, bins)
    plots.reliability_diagram(
        calibration.reliability_bins(calibration.softmax(ctx.logits), ctx.y, bins), scaled,
        ctx.path(self.figure_files[0]), metrics["calibration/ece"],
        metrics.get("calibration/ece_ts"))
    return EvalResult(metrics, list(self.figure_files))


class Blur(Evaluator):
  """blur/acc@<sigma> and blur/area; the blur curve."""
  figure_files = ("blur_curve.png",)
  required = ("blur/area",)

  def run(self, ctx: EvalContext) -> EvalResult:
    cfg, accuracy, metrics = ctx.cfg, [], {}
    for sigma in cfg.blur_sigmas:
      blurred_pred = tf.function(
          lambda a, s=float(sigma): tf.argmax(ctx.logits_fn(gaussian_blur(a, s)), 1),
          input_signature=[ctx.image_spec])
      accuracy.append(float(np.mean(batched(blurred_pred, (ctx.x,), cfg.batch_size) == ctx.y)))
      metrics[metric_key("blur/acc", sigma)] = accuracy[-1]
    metrics["blur/area"] = float(np.mean(accuracy))
    plots.blur_curve(cfg.blur_sigmas, accuracy, ctx.path(self.figure_files[0]))
    return EvalResult(metrics, list(self.figure_files), record={
        "curves": {"blur": {"sigma": list(cfg.blur_sigmas), "accuracy": accuracy}}})


class Corruptions(Evaluator):
  """corruption/<name>/accuracy, corruption/mca, calibration/corrupted_*; the bar chart.

  Skipped when `cfg.corruptions` is None. The corrupted sets are cached in `ctx.cache_dir`.
  """
  figure_files = ("corruption_accuracy.png",)

  def run(self, ctx: EvalContext) -> EvalResult:
    cfg = ctx.cfg
    if cfg.corruptions is None:
      return EvalResult()
    spec = corruptions.CorruptionSpec(corruptions.suite_for(ctx.x_uint8.shape),
                                      tuple(cfg.corruptions), tuple(cfg.corruption_severities),
                                      cfg.corruption_samples, cfg.corruption_seed)
    sets = corruptions.corrupted_test_set(ctx.x_uint8, spec, ctx.cache_dir, ctx.log)
    found, table, logits, labels = corruptions.corruption_metrics(
        lambda a: ctx.predict_logits(to_float(a)), sets, ctx.y)
    metrics = dict(found)
    metrics.update(calibration.calibration_metrics(
        logits, labels, cfg.ece_bins, ctx.metrics.get("calibration/temperature"),
        prefix="calibration/corrupted_"))
    figures = []
    if table:
      plots.corruption_bars(table, ctx.accuracy, ctx.path(self.figure_files[0]))
      figures.append(self.figure_files[0])
    return EvalResult(metrics, figures, record={"corruptions": {
        "suite": spec.suite, "plan": spec.plan(),
        "key": corruptions.benchmark.cache_key(ctx.x_uint8, spec),
        "accuracy": {n: {str(k): v for k, v in lv.items()} for n, lv in table.items()}}})
