"""Evaluation of a SavedModel as its own stage.

Why a stage of its own: evaluation grows (a new attack, a new corruption, another budget)
far more often than models are retrained. Keyed by the SavedModel's fingerprint, the
evaluation config and the data it is scored on - never by the training config - a changed
`EvalConfig` re-evaluates every existing model without retraining it, and an unchanged one
costs nothing on a rerun.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np

from latmix_tf import export, stages
from latmix_tf.config import EvalConfig, config_hash
from latmix_tf.data.sources import array_fingerprint


def evaluation_key(export_dir: str, cfg: EvalConfig, x_test: np.ndarray, y_test: np.ndarray,
                   x_val: Optional[np.ndarray] = None, y_val: Optional[np.ndarray] = None
                   ) -> Dict[str, str]:
  """What an evaluation depends on: the model's bytes, the config and the data scored."""
  key = {"saved_model": export.saved_model_fingerprint(export_dir), "eval": config_hash(cfg),
         "test_data": array_fingerprint(x_test, y_test)}
  if x_val is not None:
    key["val_data"] = array_fingerprint(x_val, y_val)
  return key


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
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    return metrics, metrics

  return stages.run_stage(stages.Stage("evaluation", directory, key), build,
                          lambda record: record["outputs"], rebuild=rebuild, log=log)
