"""The one evaluation entry point: the chosen evaluators on an exported SavedModel.

Every experiment ends with the evaluation stage (`stage.evaluation_stage`), and
`main.py --evaluate=PATH` runs it on any SavedModel with the standard signature (see
`latmix_tf.export`), so all methods - and models users bring - are measured by the same code.
`run_evaluators` loads the model, computes the clean test logits once and runs the evaluators
`EvalConfig.evaluators` names (`evaluators.EVALUATORS`), each seeing what the ones before it
measured. By default that is the whole suite: clean accuracy, calibration (before and after
temperature scaling), the Gaussian-blur sweep, DeepFool rho_adv, FGSM / PGD, AutoAttack, the
APGD-CE accuracy-vs-eps curve, common corruptions, and the sanity checks of Carlini et al.

It writes into `out_dir`: `evaluation.json` (flat metric keys such as "blur/area",
"deepfool/rho_adv", "pgd/acc@0.1", "autoattack/Linf@0.1/robust_accuracy", "corruption/mca",
"sanity/<check>"; the evaluators' curves and records; per-evaluator timings; config;
versions), `attack_config.json` (every attack's hyper-parameters), `deepfool_samples.npz`
and the evaluators' PNGs.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf

from latmix_tf import export
from latmix_tf.config import EvalConfig, to_dict
from latmix_tf.data.pipeline import to_float
from latmix_tf.data.sources import array_fingerprint, get_info
from latmix_tf.evaluation import evaluators, sanity
from latmix_tf.evaluation.adversarial import DEEPFOOL_FILE  # pylint: disable=unused-import
from latmix_tf.evaluation.evaluator import EvalContext, EvalResult, batched
from latmix_tf.evaluation.partial import Parts

EVALUATION_FILE = "evaluation.json"
ATTACK_CONFIG_FILE = "attack_config.json"
PNG_FILES = evaluators.figure_files(EvalConfig().evaluators)  # all the whole suite may write
# The closing log line: these metrics, when measured.
_SUMMARY = (("acc", "test/accuracy"), ("blur area", "blur/area"), ("rho_adv", "deepfool/rho_adv"),
            ("ece", "calibration/ece"), ("mCA", "corruption/mca"))


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


def _context(export_dir, x_test_uint8, y_test_int, cfg, out_dir, log, x_val, y_val,
             cache_dir) -> EvalContext:
  """Loads the SavedModel, checks the data against it and computes the clean logits."""
  signature = export.load_classifier(export_dir)
  x_u8, y = np.asarray(x_test_uint8), np.asarray(y_test_int).astype(np.int64)
  _check_inputs(signature, x_u8, y)
  if x_val is not None:
    _check_inputs(signature, np.asarray(x_val), np.asarray(y_val))
  os.makedirs(out_dir, exist_ok=True)
  lf = export.logits_fn(signature)
  x = to_float(x_u8)
  predict = tf.function(lf, input_signature=[tf.TensorSpec([None, *x.shape[1:]], tf.float32)])
  logits = batched(predict, (x,), cfg.batch_size)
  if y.min() < 0 or y.max() >= logits.shape[1]:
    raise ValueError(f"labels span [{y.min()}, {y.max()}] but the model has {logits.shape[1]} "
                     "outputs: wrong dataset for this SavedModel?")
  return EvalContext(lf, predict, x_u8, x, y, logits, cfg, out_dir, log, x_val, y_val, cache_dir,
                     _class_names(export_dir))


def _class_names(export_dir: str) -> Optional[List[str]]:
  """The class names of the dataset the SavedModel was trained on, if its metadata names one
  (a model a user brings may have none)."""
  dataset = (export.read_metadata(export_dir) or {}).get("dataset")
  try:
    return list(get_info(dataset).class_names) if dataset else None
  except ValueError:
    return None


def run_evaluators(export_dir: str, x_test_uint8: np.ndarray, y_test_int: np.ndarray,
                   cfg: EvalConfig = EvalConfig(), out_dir: str = None,
                   log: Callable[[str], None] = print, x_val: Optional[np.ndarray] = None,
                   y_val: Optional[np.ndarray] = None,
                   cache_dir: Optional[str] = None,
                   parts: Optional[Parts] = None) -> EvalResult:
  """`evaluate_saved_model`, returning every evaluator's output merged in run order.

  `parts` (`partial.Parts`, the evaluation stage's): each finished evaluator's result is kept
  there, and one found there is taken instead of running the evaluator again, so that a
  killed evaluation resumes where it stopped; None keeps nothing.

  Returns:
    An `EvalResult`: the flat metrics, the figures written (file names in `out_dir`), the
    notes, evaluation.json's other entries and the attacks' hyper-parameters.
  """
  if out_dir is None:
    raise ValueError("evaluate_saved_model needs out_dir (where evaluation.json goes).")
  start = time.time()
  chosen = evaluators.build(cfg.evaluators)
  ctx = _context(export_dir, x_test_uint8, y_test_int, cfg, out_dir, log, x_val, y_val,
                 cache_dir)
  ctx.parts = parts or Parts(None)
  timings, figures, notes, record, hyper = {}, [], [], {}, {}
  earlier = 0.0  # seconds the resumed evaluators took when they ran
  for name, evaluator in chosen:
    t = time.time()
    kept = ctx.parts.get(f"evaluator-{name}")
    if kept is not None and all(os.path.isfile(ctx.path(f)) for f in kept[0].figures):
      result, seconds = kept
      earlier += seconds
      log(f"[evaluate] {name}: resumed from {ctx.parts.directory} ({seconds:.1f}s when it ran)")
    else:
      result = evaluator.run(ctx)
      ctx.parts.put(f"evaluator-{name}", (result, time.time() - t))
    ctx.results[name] = result
    ctx.metrics.update(result.metrics)
    figures += result.figures
    notes += result.notes
    hyper.update(result.attack_config)
    for k, v in result.record.items():
      both = isinstance(v, dict) and isinstance(record.get(k), dict)
      record[k] = {**record[k], **v} if both else v
    timings[name] = round(time.time() - t, 2)
    log(f"[evaluate] {name}: {timings[name]:.1f}s")
  metrics = ctx.metrics
  metrics["eval_seconds"] = time.time() - start + earlier
  hyper["num_classes"] = ctx.num_classes
  export.write_json_atomic(os.path.join(out_dir, ATTACK_CONFIG_FILE), hyper)
  export.write_json_atomic(os.path.join(out_dir, EVALUATION_FILE), {
      "metrics": metrics, **record, "timings_seconds": timings,
      "export_dir": os.path.abspath(export_dir),
      "model_metadata": export.read_metadata(export_dir),
      "data_fingerprint": array_fingerprint(ctx.x_uint8, ctx.y)[:16],
      "eval_config": to_dict(cfg), "versions": export.versions()})
  ctx.parts.clear()  # evaluation.json holds everything now
  summary = [f"{label} {metrics[k]:.4f}" for label, k in _SUMMARY if k in metrics]
  if "sanity/failed" in metrics:
    summary.append(f"sanity failed {metrics['sanity/failed']:.0f}")
  log(f"[evaluate] {'  '.join(summary)}  ({metrics['eval_seconds']:.0f}s) -> {out_dir}")
  return EvalResult(metrics, figures, notes, record, hyper)


def evaluate_saved_model(export_dir: str, x_test_uint8: np.ndarray, y_test_int: np.ndarray,
                         cfg: EvalConfig = EvalConfig(), out_dir: str = None,
                         log: Callable[[str], None] = print,
                         x_val: Optional[np.ndarray] = None, y_val: Optional[np.ndarray] = None,
                         cache_dir: Optional[str] = None) -> Dict[str, float]:
  """Evaluates a SavedModel classifier with the evaluators `cfg.evaluators` names.

  Args:
    export_dir: SavedModel directory with the standard signature.
    x_test_uint8: uint8 [N, H, W, C] test images.
    y_test_int: [N] integer labels.
    cfg: what to measure (which evaluators; sigmas, attack budgets and settings,
      corruptions, sample counts).
    out_dir: where evaluation.json, attack_config.json, deepfool_samples.npz and the PNGs go.
    log: progress printer.
    x_val, y_val: uint8 validation images and labels; when given, a temperature is fitted on
      them and every calibration metric is also reported after scaling ("*_ts" keys).
    cache_dir: folder of cached corrupted test sets (e.g. `<data_dir>/corrupted`); None
      generates them in memory.
  Returns:
    The flat metrics dict also stored under "metrics" in evaluation.json.
  Raises:
    FileNotFoundError / ValueError: no SavedModel, data that does not fit it, or an unknown
      evaluator name.
  """
  return run_evaluators(export_dir, x_test_uint8, y_test_int, cfg, out_dir, log, x_val, y_val,
                        cache_dir).metrics


def sanity_notes(out_dir: str) -> List[str]:
  """Report notes of an evaluation's sanity checks (failures first, flagged **FAILED**)."""
  record = export.read_json(os.path.join(out_dir, EVALUATION_FILE)) or {}
  checks = [sanity.Check(**{**c, "value": float("nan") if c["value"] is None else c["value"]})
            for c in record.get("sanity", [])]
  return sanity.report_lines(checks)
