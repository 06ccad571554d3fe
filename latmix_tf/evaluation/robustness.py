"""The one evaluation entry point: robustness and calibration of an exported SavedModel.

Every experiment ends with `evaluate_saved_model`, and `main.py --evaluate=PATH` calls it on
any SavedModel with the standard signature (see `latmix_tf.export`), so all methods - and
models users bring - are measured by the same code:
  * clean accuracy, ECE (15 bins) and NLL;
  * Gaussian-blur sweep: accuracy per sigma and the area (mean accuracy over the grid);
  * DeepFool rho_adv on the first `deepfool_samples` test images;
  * FGSM and PGD accuracy at each eps on the first `attack_samples` test images (true labels;
    PGD with a stateless random start, so reruns give identical numbers). eps = 0 is the
    clean accuracy of that subset (both attacks are the identity there, see tests).
It writes `evaluation.json` (flat metric keys such as "blur/area", "deepfool/rho_adv",
"pgd/acc@0.1"; curves; per-stage timings; config; versions), `deepfool_samples.npz` (the
per-sample DeepFool outputs) and four PNGs into `out_dir`.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, List

import numpy as np
import tensorflow as tf

from latmix_tf import attacks, export
from latmix_tf.config import EvalConfig, to_dict
from latmix_tf.data.sources import array_fingerprint
from latmix_tf.evaluation import calibration, deepfool, plots
from latmix_tf.evaluation.blur import gaussian_blur

EVALUATION_FILE = "evaluation.json"
DEEPFOOL_FILE = "deepfool_samples.npz"
PNG_FILES = ("blur_curve.png", "deepfool_histogram.png", "deepfool_strip.png",
             "attack_accuracy.png")


def _key(prefix: str, value: float) -> str:
  """Flat metric key: "blur/acc@1.0", "pgd/acc@0.05"."""
  return f"{prefix}@{float(value)!r}"


def _batched(fn: Callable, arrays, batch_size: int) -> np.ndarray:
  n = len(arrays[0])
  return np.concatenate([fn(*[tf.constant(a[s:s + batch_size]) for a in arrays]).numpy()
                         for s in range(0, n, batch_size)])


def _check_inputs(signature, x: np.ndarray, y: np.ndarray) -> None:
  _, spec = export.signature_input(signature)
  if x.dtype != np.uint8 or x.ndim != 4:
    raise ValueError(f"x_test must be uint8 [N, H, W, C] images, got {x.dtype} {x.shape}.")
  expected = tuple(spec.shape[1:])
  if any(e is not None and e != a for e, a in zip(expected, x.shape[1:])):
    raise ValueError(f"the SavedModel expects images of shape {expected}, got {x.shape[1:]}: "
                     "evaluate it on the dataset it was trained on (--dataset).")
  if y.ndim != 1 or len(y) != len(x) or len(x) == 0:
    raise ValueError(f"y_test must be [N] integer labels matching x_test's N > 0; got "
                     f"{y.shape} for {x.shape[0]} images.")


def _attack_accuracies(lf, x, y, num_classes, cfg: EvalConfig) -> Dict[str, List[float]]:
  """Accuracy under FGSM and PGD at each eps (one compiled graph per attack for all eps)."""
  spec = [tf.TensorSpec([None, *x.shape[1:]], tf.float32), tf.TensorSpec([None], tf.int64),
          tf.TensorSpec([], tf.float32), tf.TensorSpec([2], tf.int64)]
  steps = cfg.pgd_steps

  @tf.function(input_signature=spec)
  def fgsm_correct(xb, yb, eps, seed):
    x_adv = attacks.fgsm(lf, xb, tf.one_hot(yb, num_classes), eps, seed=seed)
    return tf.equal(tf.argmax(lf(x_adv), axis=1), yb)

  @tf.function(input_signature=spec)
  def pgd_correct(xb, yb, eps, seed):
    alpha = (2.5 * eps / steps if cfg.pgd_step_size is None
             else tf.constant(cfg.pgd_step_size, tf.float32))
    x_adv = attacks.pgd(lf, xb, tf.one_hot(yb, num_classes), eps, steps, alpha,
                        random_start=True, seed=seed)
    return tf.equal(tf.argmax(lf(x_adv), axis=1), yb)

  clean = None
  curves = {"fgsm": [], "pgd": []}
  for eps in cfg.attack_epsilons:
    for name, fn in (("fgsm", fgsm_correct), ("pgd", pgd_correct)):
      if eps == 0:  # both attacks are the identity at eps = 0 (tested in test_attacks)
        if clean is None:
          clean = _batched(lambda a, b: tf.equal(tf.argmax(lf(a), 1), b), (x, y),
                           cfg.batch_size).mean()
        curves[name].append(float(clean))
        continue
      correct = [fn(tf.constant(x[s:s + cfg.batch_size]), tf.constant(y[s:s + cfg.batch_size]),
                    tf.constant(eps, tf.float32),
                    tf.constant([cfg.attack_seed, s], tf.int64)).numpy()
                 for s in range(0, len(x), cfg.batch_size)]
      curves[name].append(float(np.concatenate(correct).mean()))
  return curves


def evaluate_saved_model(export_dir: str, x_test_uint8: np.ndarray, y_test_int: np.ndarray,
                         cfg: EvalConfig = EvalConfig(), out_dir: str = None,
                         log: Callable[[str], None] = print) -> Dict[str, float]:
  """Evaluates a SavedModel classifier and writes evaluation.json plus PNGs.

  Args:
    export_dir: SavedModel directory with the standard signature.
    x_test_uint8: uint8 [N, H, W, C] test images.
    y_test_int: [N] integer labels.
    cfg: what to measure (sigmas, DeepFool and attack settings, sample counts).
    out_dir: where evaluation.json, deepfool_samples.npz and the PNGs go (created).
    log: progress printer.
  Returns:
    The flat metrics dict also stored under "metrics" in evaluation.json.
  Raises:
    FileNotFoundError / ValueError: no SavedModel, or data that does not fit it.
  """
  if out_dir is None:
    raise ValueError("evaluate_saved_model needs out_dir (where evaluation.json goes).")
  start = time.time()
  signature = export.load_classifier(export_dir)
  x_u8, y = np.asarray(x_test_uint8), np.asarray(y_test_int).astype(np.int64)
  _check_inputs(signature, x_u8, y)
  os.makedirs(out_dir, exist_ok=True)
  lf = export.logits_fn(signature)
  x = x_u8.astype(np.float32) / 255.0
  spec = tf.TensorSpec([None, *x.shape[1:]], tf.float32)
  timings, metrics = {}, {}

  def lap(stage: str, t: float) -> None:
    timings[stage] = round(time.time() - t, 2)
    log(f"[evaluate] {stage}: {timings[stage]:.1f}s")

  t = time.time()
  logits = _batched(tf.function(lf, input_signature=[spec]), (x,), cfg.batch_size)
  num_classes = logits.shape[1]
  if y.min() < 0 or y.max() >= num_classes:
    raise ValueError(f"labels span [{y.min()}, {y.max()}] but the model has {num_classes} "
                     "outputs: wrong dataset for this SavedModel?")
  metrics["test/samples"] = int(len(y))
  metrics["test/accuracy"] = float(np.mean(logits.argmax(1) == y))
  metrics.update(calibration.calibration_metrics(logits, y, cfg.ece_bins))
  lap("clean", t)

  t = time.time()
  blur_acc = []
  for sigma in cfg.blur_sigmas:
    blurred_pred = tf.function(lambda a, s=float(sigma): tf.argmax(lf(gaussian_blur(a, s)), 1),
                               input_signature=[spec])
    blur_acc.append(float(np.mean(_batched(blurred_pred, (x,), cfg.batch_size) == y)))
    metrics[_key("blur/acc", sigma)] = blur_acc[-1]
  metrics["blur/area"] = float(np.mean(blur_acc))
  lap("blur", t)

  t = time.time()
  n_df = len(x) if cfg.deepfool_samples is None else min(cfg.deepfool_samples, len(x))
  df = deepfool.run_deepfool(lf, x[:n_df], num_classes, cfg.deepfool_candidates,
                         cfg.deepfool_overshoot, cfg.deepfool_max_iter, cfg.deepfool_batch_size)
  metrics.update(deepfool.summarize(df))
  metrics["deepfool/seconds_per_sample"] = (time.time() - t) / n_df
  lap("deepfool", t)

  t = time.time()
  n_att = len(x) if cfg.attack_samples is None else min(cfg.attack_samples, len(x))
  curves = _attack_accuracies(lf, x[:n_att], y[:n_att], num_classes, cfg)
  for name, accs in curves.items():
    for eps, acc in zip(cfg.attack_epsilons, accs):
      metrics[_key(f"{name}/acc", eps)] = acc
  metrics["attacks/samples"] = int(n_att)
  lap("attacks", t)

  t = time.time()
  np.savez(os.path.join(out_dir, DEEPFOOL_FILE), l2=df.l2, relative=df.relative,
           iterations=df.iterations, flipped=df.flipped, start_class=df.start_class,
           final_class=df.final_class, label=y[:n_df])
  plots.blur_curve(cfg.blur_sigmas, blur_acc, os.path.join(out_dir, PNG_FILES[0]))
  plots.deepfool_histogram(df.relative, df.flipped, os.path.join(out_dir, PNG_FILES[1]))
  shown = np.flatnonzero(df.flipped)[:8]
  if len(shown) == 0:
    shown = np.arange(min(8, n_df))
  plots.perturbation_strip(x[shown], df.x_adv[shown], os.path.join(out_dir, PNG_FILES[2]),
                           labels=[f"pred {c}" for c in df.start_class[shown]],
                           adv_labels=[f"-> {c}" for c in df.final_class[shown]])
  if cfg.attack_epsilons:
    plots.attack_curves(cfg.attack_epsilons, curves["fgsm"], curves["pgd"],
                        os.path.join(out_dir, PNG_FILES[3]), cfg.pgd_steps)
  lap("plots", t)

  metrics["eval_seconds"] = time.time() - start
  export.write_json_atomic(os.path.join(out_dir, EVALUATION_FILE), {
      "metrics": metrics,
      "curves": {"blur": {"sigma": list(cfg.blur_sigmas), "accuracy": blur_acc},
                 "attacks": {"eps": list(cfg.attack_epsilons), **curves}},
      "timings_seconds": timings,
      "export_dir": os.path.abspath(export_dir),
      "model_metadata": export.read_metadata(export_dir),
      "data_fingerprint": array_fingerprint(x_u8, y)[:16],
      "eval_config": to_dict(cfg),
      "versions": export.versions(),
  })
  log(f"[evaluate] acc {metrics['test/accuracy']:.4f}  blur area {metrics['blur/area']:.4f}  "
      f"rho_adv {metrics['deepfool/rho_adv']:.4f}  ece {metrics['calibration/ece']:.4f}  "
      f"({metrics['eval_seconds']:.0f}s) -> {out_dir}")
  return metrics
