"""Evaluation of a SavedModel as its own stage.

Why a stage of its own: evaluation grows (a new attack, a new corruption, another budget)
far more often than models are retrained. Keyed by the SavedModel's fingerprint, the
evaluation config and the data it is scored on - never by the training config - a changed
`EvalConfig` re-evaluates every existing model without retraining it, and an unchanged one
costs nothing on a rerun.

A cached evaluation is reused only after `check_cached` (as the classifier stage checks its
SavedModel): the record must list the metrics every report reads (`REQUIRED_METRICS`), and
`evaluation.json` must parse and hold the same metrics. A record emptied by hand or by a
faulty copy, or a truncated `evaluation.json`, is evaluated again, with a line saying why:
reusing it would silently drop metrics from `metrics.json` on every later run.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, Optional

import numpy as np

from latmix_tf import export, stages
from latmix_tf.config import EvalConfig, config_hash
from latmix_tf.data.sources import array_fingerprint
from latmix_tf.jsonio import read_json

EVALUATION_FILE = "evaluation.json"  # = robustness.EVALUATION_FILE, without importing it here
# What every evaluation reports and every consumer (report, comparison, README tables) reads.
REQUIRED_METRICS = ("test/accuracy", "blur/area", "deepfool/rho_adv", "calibration/ece")


def evaluation_key(export_dir: str, cfg: EvalConfig, x_test: np.ndarray, y_test: np.ndarray,
                   x_val: Optional[np.ndarray] = None, y_val: Optional[np.ndarray] = None
                   ) -> Dict[str, str]:
  """What an evaluation depends on: the model's bytes, the config and the data scored."""
  key = {"saved_model": export.saved_model_fingerprint(export_dir), "eval": config_hash(cfg),
         "test_data": array_fingerprint(x_test, y_test)}
  if x_val is not None:
    key["val_data"] = array_fingerprint(x_val, y_val)
  return key


def _numeric(metrics: Dict[str, Any]) -> Dict[str, Any]:
  return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def _same(a: Any, b: Any) -> bool:
  return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a)
                    and math.isnan(b))


def check_cached(directory: str, record: Dict[str, Any]) -> Dict[str, Any]:
  """The cached metrics of a finished evaluation record, if its files still back them.

  Raises:
    stages.StageDamaged: the record lacks required metrics, or `evaluation.json` is missing,
      unreadable or holds other metrics than the record.
  """
  outputs = record.get("outputs")
  if not isinstance(outputs, dict):
    raise stages.StageDamaged("its record holds no metrics")
  missing = [k for k in REQUIRED_METRICS if k not in outputs]
  if missing:
    raise stages.StageDamaged(f"its record lacks {', '.join(missing)} ({len(outputs)} metrics)")
  saved = read_json(os.path.join(directory, EVALUATION_FILE))
  if not isinstance(saved, dict) or not isinstance(saved.get("metrics"), dict):
    raise stages.StageDamaged(f"{EVALUATION_FILE} is missing, truncated or unreadable")
  written = _numeric(saved["metrics"])
  if written.keys() != outputs.keys() or not all(_same(written[k], outputs[k]) for k in written):
    raise stages.StageDamaged(f"{EVALUATION_FILE} holds other metrics than the stage record")
  return outputs


def evaluation_stage(export_dir: str, x_test: np.ndarray, y_test: np.ndarray, cfg: EvalConfig,
                     directory: str, log: Callable[[str], None] = print, rebuild: bool = False,
                     x_val: Optional[np.ndarray] = None, y_val: Optional[np.ndarray] = None,
                     cache_dir: Optional[str] = None) -> stages.StageResult:
  """The "evaluation" stage: `evaluate_saved_model`, cached by `evaluation_key`.

  Args:
    export_dir: the SavedModel.
    x_test, y_test: uint8 images and integer labels it is scored on.
    cfg: what to measure.
    directory: the stage's folder (stage.json, evaluation.json, PNGs).
    log: progress sink.
    rebuild: evaluate again even if a record of the same key exists.
    x_val, y_val: validation data, for metrics fitted on it (temperature scaling).
    cache_dir: where generated test sets (the corrupted images) are cached, keyed by their
      config; None generates them in memory each time.
  Returns:
    The stage result; its outputs (and value) are the flat metrics.
  """
  from latmix_tf.evaluation.robustness import evaluate_saved_model  # pylint: disable=import-outside-toplevel
  key = evaluation_key(export_dir, cfg, x_test, y_test, x_val, y_val)

  def build(resumed):
    del resumed
    metrics = evaluate_saved_model(export_dir, x_test, y_test, cfg, directory, log=log,
                                   x_val=x_val, y_val=y_val, cache_dir=cache_dir)
    metrics = _numeric(metrics)
    return metrics, metrics

  return stages.run_stage(stages.Stage("evaluation", directory, key), build,
                          lambda record: check_cached(directory, record), rebuild=rebuild,
                          log=log)
