"""The one evaluation entry point: robustness and calibration of an exported SavedModel.

Every experiment ends with `evaluate_saved_model`, and `main.py --evaluate=PATH` calls it on
any SavedModel with the standard signature (see `latmix_tf.export`), so all methods - and
models users bring - are measured by the same code:
  * clean accuracy; calibration (ECE with 15 equal-width max-probability bins, NLL, Brier),
    before and after temperature scaling fitted on the validation split when one is given;
  * Gaussian-blur sweep: accuracy per sigma and the area (mean accuracy over the grid);
  * DeepFool rho_adv on the first `deepfool_samples` test images;
  * FGSM and PGD accuracy at each eps on the first `attack_samples` test images (true labels;
    PGD with a stateless random start, so reruns give identical numbers). eps = 0 is the
    clean accuracy of that subset (both attacks are the identity there, see tests);
  * AutoAttack robust accuracy per threat model, and the APGD-CE accuracy-vs-eps curve;
  * common corruptions (MNIST-C / CIFAR-10-C): accuracy per corruption, mCA, and the
    calibration metrics on the pooled corrupted images (calibration under shift);
  * the sanity checks of Carlini et al. 2019 (`sanity`), flagged when they fail.
It writes `evaluation.json` (flat metric keys such as "blur/area", "deepfool/rho_adv",
"pgd/acc@0.1", "autoattack/Linf@0.1/robust_accuracy", "corruption/mca", "sanity/<check>";
curves; sanity records; per-stage timings; config; versions), `attack_config.json` (every
attack's hyper-parameters), `deepfool_samples.npz` and the PNGs into `out_dir`.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf

from latmix_tf import attacks, export
from latmix_tf.config import EvalConfig, to_dict
from latmix_tf.data.pipeline import to_float
from latmix_tf.data.sources import array_fingerprint
from latmix_tf.evaluation import autoattack, calibration, corruptions, deepfool, plots, sanity
from latmix_tf.evaluation.blur import gaussian_blur

EVALUATION_FILE = "evaluation.json"
ATTACK_CONFIG_FILE = "attack_config.json"
DEEPFOOL_FILE = "deepfool_samples.npz"
PNG_FILES = ("blur_curve.png", "deepfool_histogram.png", "deepfool_strip.png",
             "attack_accuracy.png", "reliability_diagram.png", "apgd_loss_curve.png",
             "apgd_accuracy_curve.png", "corruption_accuracy.png")


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


def _attack_accuracies(lf, x, y, num_classes, cfg: EvalConfig) -> Dict[str, List[np.ndarray]]:
  """Per-image correctness under FGSM and PGD at each eps (one compiled graph per attack)."""
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
                           cfg.batch_size)
        curves[name].append(clean)
        continue
      correct = [fn(tf.constant(x[s:s + cfg.batch_size]), tf.constant(y[s:s + cfg.batch_size]),
                    tf.constant(eps, tf.float32),
                    tf.constant([cfg.attack_seed, s], tf.int64)).numpy()
                 for s in range(0, len(x), cfg.batch_size)]
      curves[name].append(np.concatenate(correct))
  return curves


def _autoattack(lf, x, y, cfg: EvalConfig, log) -> Dict[str, Dict]:
  """run_autoattack per (norm, eps) budget of cfg, on the first `autoattack_samples` images."""
  n = len(x) if cfg.autoattack_samples is None else min(cfg.autoattack_samples, len(x))
  results = {}
  for norm, eps in cfg.autoattack_budgets:
    iters = {} if cfg.autoattack_iters is None else {"apgd_n_iter": cfg.autoattack_iters,
                                                      "fab_n_iter": cfg.autoattack_iters}
    aa_cfg = autoattack.AutoAttackConfig(norm=norm, eps=float(eps), version=cfg.autoattack_version,
                                         seed=cfg.attack_seed, batch_size=cfg.batch_size, **iters)
    results[f"{norm}@{float(eps)!r}"] = autoattack.run_autoattack(lf, x[:n], y[:n], aa_cfg, log)
  return results


def _corruptions(lf, x_u8, y, cfg: EvalConfig, cache_dir, log):
  """(metrics, table, pooled logits, pooled labels, spec) of the corrupted test set."""
  spec = corruptions.CorruptionSpec(corruptions.suite_for(x_u8.shape), tuple(cfg.corruptions),
                                    tuple(cfg.corruption_severities), cfg.corruption_samples,
                                    cfg.corruption_seed)
  sets = corruptions.corrupted_test_set(x_u8, spec, cache_dir, log)
  predict = tf.function(lf, input_signature=[tf.TensorSpec([None, *x_u8.shape[1:]], tf.float32)])
  logits = lambda a: _batched(predict, (to_float(a),), cfg.batch_size)
  return (*corruptions.corruption_metrics(logits, sets, y), spec)


def _attack_config(cfg: EvalConfig, aa: Dict[str, Dict], num_classes: int) -> Dict:
  """Every attack's hyper-parameters, as run (written next to the report)."""
  return {
      "fgsm": {"norm": "Linf", "epsilons": list(cfg.attack_epsilons), "loss": "cross-entropy",
               "random_start": False, "samples": cfg.attack_samples},
      "pgd": {"norm": "Linf", "epsilons": list(cfg.attack_epsilons), "steps": cfg.pgd_steps,
              "step_size": cfg.pgd_step_size or "2.5 * eps / steps", "random_start": True,
              "restarts": 1, "loss": "cross-entropy", "seed": cfg.attack_seed,
              "samples": cfg.attack_samples},
      "deepfool": {"norm": "L2", "max_iter": cfg.deepfool_max_iter,
                   "overshoot": cfg.deepfool_overshoot, "candidates": cfg.deepfool_candidates,
                   "min_step": 1e-4, "samples": cfg.deepfool_samples},
      "autoattack": {budget: {**r["config"], "samples": len(r["robust_mask"])}
                     for budget, r in aa.items()},
      "apgd_curve": {"attack": "apgd-ce", "norm": "Linf", "epsilons":
                     list(cfg.apgd_curve_epsilons), "n_iter": cfg.apgd_curve_iters,
                     "restarts": 1, "seed": cfg.attack_seed, "samples": cfg.apgd_curve_samples},
      "sanity_unbounded_pgd": {"norm": "Linf", "eps": 1.0, "steps": cfg.sanity_unbounded_steps,
                               "step_size": 2.5 / cfg.sanity_unbounded_steps,
                               "random_start": True, "samples": cfg.sanity_samples},
      "num_classes": num_classes}


def evaluate_saved_model(export_dir: str, x_test_uint8: np.ndarray, y_test_int: np.ndarray,
                         cfg: EvalConfig = EvalConfig(), out_dir: str = None,
                         log: Callable[[str], None] = print,
                         x_val: Optional[np.ndarray] = None, y_val: Optional[np.ndarray] = None,
                         cache_dir: Optional[str] = None) -> Dict[str, float]:
  """Evaluates a SavedModel classifier and writes evaluation.json plus PNGs.

  Args:
    export_dir: SavedModel directory with the standard signature.
    x_test_uint8: uint8 [N, H, W, C] test images.
    y_test_int: [N] integer labels.
    cfg: what to measure (sigmas, attack budgets and settings, corruptions, sample counts).
    out_dir: where evaluation.json, attack_config.json, deepfool_samples.npz and the PNGs go.
    log: progress printer.
    x_val, y_val: uint8 validation images and labels; when given, a temperature is fitted on
      them and every calibration metric is also reported after scaling ("*_ts" keys).
    cache_dir: folder of cached corrupted test sets (e.g. `<data_dir>/corrupted`); None
      generates them in memory.
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
  if x_val is not None:
    _check_inputs(signature, np.asarray(x_val), np.asarray(y_val))
  os.makedirs(out_dir, exist_ok=True)
  lf = export.logits_fn(signature)
  x = to_float(x_u8)
  spec = tf.TensorSpec([None, *x.shape[1:]], tf.float32)
  predict = tf.function(lf, input_signature=[spec])
  timings, metrics, extra = {}, {}, {}

  def lap(stage: str, t: float) -> None:
    timings[stage] = round(time.time() - t, 2)
    log(f"[evaluate] {stage}: {timings[stage]:.1f}s")

  t = time.time()
  logits = _batched(predict, (x,), cfg.batch_size)
  num_classes = logits.shape[1]
  if y.min() < 0 or y.max() >= num_classes:
    raise ValueError(f"labels span [{y.min()}, {y.max()}] but the model has {num_classes} "
                     "outputs: wrong dataset for this SavedModel?")
  metrics["test/samples"] = int(len(y))
  metrics["test/accuracy"] = float(np.mean(logits.argmax(1) == y))
  temperature = None
  if x_val is not None:
    val_logits = _batched(predict, (to_float(np.asarray(x_val)),),
                          cfg.batch_size)
    temperature = calibration.fit_temperature(val_logits, np.asarray(y_val).astype(np.int64))
    metrics["calibration/temperature"] = temperature
  metrics.update(calibration.calibration_metrics(logits, y, cfg.ece_bins, temperature))
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
  acc_curves = {k: [float(np.mean(c)) for c in v] for k, v in curves.items()}
  for name, accs in acc_curves.items():
    for eps, acc in zip(cfg.attack_epsilons, accs):
      metrics[_key(f"{name}/acc", eps)] = acc
  metrics["attacks/samples"] = int(n_att)
  lap("attacks", t)

  t = time.time()
  aa = _autoattack(lf, x, y, cfg, log)
  for budget, res in aa.items():
    metrics[f"autoattack/{budget}/robust_accuracy"] = res["robust_accuracy"]
    metrics[f"autoattack/{budget}/clean_accuracy"] = res["clean_accuracy"]
    for attack, acc in res["per_attack"].items():
      metrics[f"autoattack/{budget}/after_{attack}"] = acc
    metrics["autoattack/samples"] = int(len(res["robust_mask"]))
  lap("autoattack", t)

  t = time.time()
  apgd_curve = {}
  if cfg.apgd_curve_epsilons:
    n = len(x) if cfg.apgd_curve_samples is None else min(cfg.apgd_curve_samples, len(x))
    apgd_curve = autoattack.apgd_accuracy_curve(lf, x[:n], y[:n], cfg.apgd_curve_epsilons,
                                                "Linf", cfg.attack_seed, cfg.apgd_curve_iters,
                                                cfg.batch_size)
    metrics.update({_key("apgd/acc", e): a for e, a in apgd_curve.items()})
    metrics["apgd/samples"] = int(n)
  lap("apgd_curve", t)

  t = time.time()
  table = {}
  if cfg.corruptions is not None:
    c_metrics, table, c_logits, c_labels, c_spec = _corruptions(lf, x_u8, y, cfg, cache_dir, log)
    metrics.update(c_metrics)
    metrics.update(calibration.calibration_metrics(c_logits, c_labels, cfg.ece_bins, temperature,
                                                   prefix="calibration/corrupted_"))
    extra["corruptions"] = {"suite": c_spec.suite, "plan": c_spec.plan(),
                            "key": corruptions.benchmark.cache_key(x_u8, c_spec),
                            "accuracy": {n: {str(k): v for k, v in lv.items()}
                                         for n, lv in table.items()}}
  lap("corruptions", t)

  t = time.time()
  checks = sanity.evaluation_checks(lf, x, y, num_classes, cfg, metrics, curves, aa,
                                     apgd_curve, deepfool_result=df)
  metrics.update(sanity.as_metrics(checks))
  for line in sanity.report_lines(checks):
    if "FAILED" in line:
      log(f"[evaluate] {line}")
  lap("sanity", t)

  t = time.time()
  np.savez(os.path.join(out_dir, DEEPFOOL_FILE), l2=df.l2, relative=df.relative,
           iterations=df.iterations, flipped=df.flipped, start_class=df.start_class,
           final_class=df.final_class, label=y[:n_df])
  png = lambda i: os.path.join(out_dir, PNG_FILES[i])
  plots.blur_curve(cfg.blur_sigmas, blur_acc, png(0))
  plots.deepfool_histogram(df.relative, df.flipped, png(1))
  shown = np.flatnonzero(df.flipped)[:8]
  if len(shown) == 0:
    shown = np.arange(min(8, n_df))
  plots.perturbation_strip(x[shown], df.x_adv[shown], png(2),
                           labels=[f"pred {c}" for c in df.start_class[shown]],
                           adv_labels=[f"-> {c}" for c in df.final_class[shown]])
  if cfg.attack_epsilons:
    plots.attack_curves(cfg.attack_epsilons, acc_curves["fgsm"], acc_curves["pgd"], png(3),
                        cfg.pgd_steps)
  probs = calibration.softmax(logits)
  plots.reliability_diagram(
      calibration.reliability_bins(probs, y, cfg.ece_bins),
      None if temperature is None else calibration.reliability_bins(
          calibration.softmax(logits / temperature), y, cfg.ece_bins), png(4),
      metrics["calibration/ece"], metrics.get("calibration/ece_ts"))
  if aa:
    plots.loss_curves({f"APGD-CE {b}": r["apgd_loss_curve"] for b, r in aa.items()}, png(5))
  if apgd_curve:
    plots.accuracy_curve(list(apgd_curve), list(apgd_curve.values()), png(6),
                         f"APGD-CE ({cfg.apgd_curve_iters} iterations)")
  if table:
    plots.corruption_bars(table, metrics["test/accuracy"], png(7))
  lap("plots", t)

  metrics["eval_seconds"] = time.time() - start
  export.write_json_atomic(os.path.join(out_dir, ATTACK_CONFIG_FILE),
                           _attack_config(cfg, aa, num_classes))
  export.write_json_atomic(os.path.join(out_dir, EVALUATION_FILE), {
      "metrics": metrics,
      "curves": {"blur": {"sigma": list(cfg.blur_sigmas), "accuracy": blur_acc},
                 "attacks": {"eps": list(cfg.attack_epsilons), **acc_curves},
                 "apgd": {"eps": list(apgd_curve), "accuracy": list(apgd_curve.values())},
                 "apgd_loss": {b: r["apgd_loss_curve"] for b, r in aa.items()}},
      "sanity": sanity.as_records(checks),
      **extra,
      "timings_seconds": timings,
      "export_dir": os.path.abspath(export_dir),
      "model_metadata": export.read_metadata(export_dir),
      "data_fingerprint": array_fingerprint(x_u8, y)[:16],
      "eval_config": to_dict(cfg),
      "versions": export.versions(),
  })
  log(f"[evaluate] acc {metrics['test/accuracy']:.4f}  blur area {metrics['blur/area']:.4f}  "
      f"rho_adv {metrics['deepfool/rho_adv']:.4f}  ece {metrics['calibration/ece']:.4f}  "
      f"mCA {metrics.get('corruption/mca', float('nan')):.4f}  sanity failed "
      f"{metrics['sanity/failed']:.0f}  ({metrics['eval_seconds']:.0f}s) -> {out_dir}")
  return metrics


def sanity_notes(out_dir: str) -> List[str]:
  """Report notes of an evaluation's sanity checks (failures first, flagged **FAILED**)."""
  record = export.read_json(os.path.join(out_dir, EVALUATION_FILE)) or {}
  checks = [sanity.Check(**{**c, "value": float("nan") if c["value"] is None else c["value"]})
            for c in record.get("sanity", [])]
  return sanity.report_lines(checks)
