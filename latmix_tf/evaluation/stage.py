"""Evaluation of a SavedModel as its own stage.

Why a stage of its own: evaluation grows (a new attack, a new corruption, another budget)
far more often than models are retrained. Keyed by the SavedModel's fingerprint, the
evaluation config and the data it is scored on - never by the training config - a changed
`EvalConfig` re-evaluates every existing model without retraining it, and an unchanged one
costs nothing on a rerun.

The record's outputs are what every consumer (the runner's report and metrics.json,
`--evaluate`, the comparison) reads, through `metrics`, `figures` and `notes`, never the
stage's files: {"metrics": flat metrics, "figures": PNG file names relative to the stage
folder, "notes": report lines (the sanity checks, failures first)}. A record whose outputs are
the flat metrics alone is reused too: its figures are the suite's PNGs present in the folder
and its notes are read from `evaluation.json`.

A cached evaluation is reused only after `check_cached` (as the classifier stage checks its
SavedModel): the record must list the metrics every report reads (`Evaluator.required` of the
chosen evaluators), `evaluation.json` must parse and hold the same metrics, and every figure
the record lists must exist. A record emptied by hand or by a faulty copy, a truncated
`evaluation.json` or a deleted figure is evaluated again, with a line saying why: reusing it
would silently drop metrics from `metrics.json` (or figures from the report) on every later
run.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from latmix_tf import export, stages
from latmix_tf.config import EvalConfig, config_hash
from latmix_tf.data.sources import array_fingerprint
from latmix_tf.evaluation import evaluators, suite
from latmix_tf.evaluation.partial import Parts
from latmix_tf.jsonio import read_json

# What the whole suite promises every report (`Evaluator.required`).
REQUIRED_METRICS = evaluators.required_metrics(EvalConfig().evaluators)

def eval_config_hash(cfg: EvalConfig) -> str:
  """The config's hash; the whole suite in its standard order (the default `evaluators`)
  hashes as the measurement settings alone, so choosing it by name or by default is one key."""
  whole = cfg.evaluators == EvalConfig().evaluators
  return config_hash(cfg, exclude=("evaluators",) if whole else ())


def evaluation_key(export_dir: str, cfg: EvalConfig, x_test: np.ndarray, y_test: np.ndarray,
                   x_val: Optional[np.ndarray] = None, y_val: Optional[np.ndarray] = None
                   ) -> Dict[str, Any]:
  """What an evaluation depends on: the model's bytes, the config and the data scored."""
  data = {"test": array_fingerprint(x_test, y_test)}
  if x_val is not None:
    data["val"] = array_fingerprint(x_val, y_val)
  return stages.stage_key(config=eval_config_hash(cfg), data=data,
                          upstream={"saved_model": export.saved_model_fingerprint(export_dir)})


def _numeric(metrics: Dict[str, Any]) -> Dict[str, Any]:
  return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def _same(a: Any, b: Any) -> bool:
  return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a)
                    and math.isnan(b))


def metrics(record: Dict[str, Any]) -> Dict[str, Any]:
  """The flat metrics of an evaluation stage record ({} if it holds none)."""
  outputs = record.get("outputs")
  if not isinstance(outputs, dict):
    return {}
  return outputs["metrics"] if isinstance(outputs.get("metrics"), dict) else outputs


def figures(record: Dict[str, Any]) -> List[str]:
  """The figures of an evaluation stage record: PNG file names relative to the stage folder."""
  return list((record.get("outputs") or {}).get("figures", []))


def notes(record: Dict[str, Any]) -> List[str]:
  """The report notes of an evaluation stage record (sanity checks, failures first)."""
  return list((record.get("outputs") or {}).get("notes", []))


def check_cached(directory: str, record: Dict[str, Any],
                 required: Sequence[str] = REQUIRED_METRICS) -> Dict[str, Any]:
  """The outputs of a finished evaluation record, if its files still back them.

  Args:
    directory: the stage's folder.
    record: its stage record.
    required: metrics the record must hold (those of the evaluators the config chose).
  Returns:
    {"metrics", "figures", "notes"}; for a record of flat metrics only, the figures and notes
    are found in `directory`.
  Raises:
    stages.StageDamaged: the record lacks required metrics, `evaluation.json` is missing,
      unreadable or holds other metrics than the record, or a listed figure is missing.
  """
  outputs = record.get("outputs")
  if not isinstance(outputs, dict):
    raise stages.StageDamaged("its record holds no metrics")
  found = metrics(record)
  missing = [k for k in required if k not in found]
  if missing:
    raise stages.StageDamaged(f"its record lacks {', '.join(missing)} ({len(found)} metrics)")
  saved = read_json(os.path.join(directory, suite.EVALUATION_FILE))
  if not isinstance(saved, dict) or not isinstance(saved.get("metrics"), dict):
    raise stages.StageDamaged(f"{suite.EVALUATION_FILE} is missing, truncated or unreadable")
  written = _numeric(saved["metrics"])
  if written.keys() != found.keys() or not all(_same(written[k], found[k]) for k in written):
    raise stages.StageDamaged(f"{suite.EVALUATION_FILE} holds other metrics than the stage record")
  if found is outputs:  # flat metrics only: the figures and notes are in the folder
    return {"metrics": found, "notes": suite.sanity_notes(directory), "figures": [
        f for f in suite.PNG_FILES if os.path.isfile(os.path.join(directory, f))]}
  lost = [f for f in figures(record) if not os.path.isfile(os.path.join(directory, f))]
  if lost:
    raise stages.StageDamaged(f"its figure {lost[0]} is missing")
  return {"metrics": found, "figures": figures(record), "notes": notes(record)}


def evaluation_stage(export_dir: str, x_test: np.ndarray, y_test: np.ndarray, cfg: EvalConfig,
                     directory: str, log: Callable[[str], None] = print, rebuild: bool = False,
                     x_val: Optional[np.ndarray] = None, y_val: Optional[np.ndarray] = None,
                     cache_dir: Optional[str] = None) -> stages.StageResult:
  """The "evaluation" stage: the evaluators `cfg.evaluators` names, cached by `evaluation_key`.

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
    The stage result: its value is the flat metrics; its record's outputs hold the metrics,
    figures and notes (read them with `metrics`, `figures`, `notes`).
  Raises:
    ValueError: `cfg.evaluators` names an unknown evaluator.
  """
  required = evaluators.required_metrics(cfg.evaluators)
  stage = stages.Stage("evaluation", directory,
                       evaluation_key(export_dir, cfg, x_test, y_test, x_val, y_val))

  def build(resumed):
    del resumed  # a fresh stage folder holds no parts; a resumed one keeps those of its key
    result = suite.run_evaluators(export_dir, x_test, y_test, cfg, directory, log=log,
                                  x_val=x_val, y_val=y_val, cache_dir=cache_dir,
                                  parts=Parts(directory, stage.key_hash, log))
    outputs = {"metrics": _numeric(result.metrics), "figures": list(result.figures),
               "notes": list(result.notes)}
    return outputs, outputs

  result = stages.run_stage(stage, build,
                            lambda record: check_cached(directory, record, required),
                            rebuild=rebuild, log=log)
  # A reused record of flat metrics only is completed in memory with what check_cached found.
  record = dict(result.record, outputs=result.value)
  return dataclasses.replace(result, record=record, value=result.value["metrics"])
