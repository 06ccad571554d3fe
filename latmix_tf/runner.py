"""`train_and_evaluate`: data -> classifier -> training loop -> SavedModel -> evaluation -> report.

Every classifier experiment (any method) goes through this one function. Evaluation always
reads the *exported SavedModel*, never the in-memory Keras model, so what is reported is
what a user downloads.

Caching (STYLE pattern 5): the workdir records the hash of the experiment config and the
data fingerprint. A finished run with the same key is reused (`compare_*` relies on this);
a workdir left by a *different* config is moved aside (never deleted) before training, so a
stale checkpoint is never resumed into a new experiment.

Several workers (`MultiWorkerMirroredStrategy`): all train; only the chief touches `workdir`
and `export_dir`, exports, evaluates and writes the report. Workers follow the chief's cache
decision and return the chief's metrics (both broadcast, so no shared filesystem is needed).
The model is exported from a single-device copy of the trained weights, so the SavedModel is
the same whatever strategy trained it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from typing import Any, Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from latmix_tf import distribute, export, reports
from latmix_tf.config import ExperimentConfig, config_hash, to_dict
from latmix_tf.data import get_info, load_dataset, make_splits, to_float
from latmix_tf.data.pipeline import Splits
from latmix_tf.models.classifiers import build_classifier
from latmix_tf.training import Method, build_method, train

@dataclasses.dataclass(frozen=True)
class RunContext:
  """What the CLI passes to an experiment's `run` (all paths absolute).

  Lives in the library (not experiments/) so `latmix_tf.cli` builds it without importing
  experiments/; `experiments.common` re-exports it.
  """
  workdir: str
  export_root: str
  rebuild: tuple = ()
  log: Callable[[str], None] = print
  strategy: Any = None
  methods: Optional[tuple] = None
  seeds: Optional[tuple] = None


KEY_FILE = "run_key.json"
METRICS_FILE = "metrics.json"


def run_key(cfg: ExperimentConfig, fingerprint: str) -> Dict[str, str]:
  """What a cached classifier run is keyed by: the config that changes the result + the data.

  `data.data_dir` is left out: the same bytes from Debian's copy, a `--data_dir` folder or
  tfds give the same fingerprint and must reuse the same run.
  """
  return {"config_hash": config_hash(cfg, exclude=("description", "data.data_dir")),
          "data_fingerprint": fingerprint}


def prepare_workdir(workdir: str, key: Dict[str, str], log: Callable[[str], None],
                    fresh: bool = False) -> None:
  """Claims `workdir` for `key`; moves aside a workdir of another config (or any, if `fresh`)."""
  path = os.path.join(workdir, KEY_FILE)
  old = export.read_json(path)
  if os.path.isdir(workdir) and os.listdir(workdir) and (fresh or old != key):
    stale = f"{workdir.rstrip('/')}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
    why = "rebuild requested" if fresh else f"it holds a run of another config/data ({old})"
    log(f"workdir {workdir}: {why}; moved to {stale}")
    os.replace(workdir, stale)
  os.makedirs(workdir, exist_ok=True)
  export.write_json_atomic(path, key)


def predict_probabilities(serving_fn, x_uint8: np.ndarray, batch_size: int = 500) -> np.ndarray:
  """Runs a loaded SavedModel signature over uint8 images in batches."""
  name, _ = export.signature_input(serving_fn)
  out = [serving_fn(**{name: to_float(x_uint8[i:i + batch_size])})["probabilities"].numpy()
         for i in range(0, len(x_uint8), batch_size)]
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def cached_result(workdir: str, export_dir: str, key: Dict[str, str]) -> Optional[Dict]:
  """The metrics of a finished run with this key, if its SavedModel is still there."""
  metrics = export.read_json(os.path.join(workdir, METRICS_FILE))
  if (metrics and metrics.get("run_key") == key and
      os.path.isfile(os.path.join(export_dir, "saved_model.pb"))):
    return metrics
  return None


def train_and_evaluate(cfg: ExperimentConfig, workdir: str, export_dir: str,
                       log: Callable[[str], None] = print,
                       strategy: Optional[tf.distribute.Strategy] = None,
                       method: Optional[Method] = None, splits: Optional[Splits] = None,
                       rebuild: bool = False, report_figures=(), report_notes=()) -> Dict:
  """Trains the classifier of `cfg`, exports it, evaluates the SavedModel and writes a report.

  Args:
    cfg: the experiment config.
    workdir: run directory (checkpoints, history, TensorBoard, report, metrics.json).
    export_dir: where the SavedModel goes (e.g. saved_models/<experiment>/seed_<n>).
    log: progress sink.
    strategy: tf.distribute strategy (default: the current/default one).
    method: a prebuilt method object (latent mixup passes one holding its bank);
      default builds `cfg.method` from the registry.
    splits: prebuilt data splits (default: loaded from `cfg.data`).
    rebuild: retrain even if a finished run with the same key exists.
    report_figures / report_notes: extra figures and notes for the report.
  Returns:
    The metrics dict (also written to `<workdir>/metrics.json`).
  """
  if splits is None:
    splits = make_splits(load_dataset(cfg.data.name, cfg.data.data_dir, log=log), cfg.data)
  key = run_key(cfg, splits.fingerprint)
  strategy = strategy or tf.distribute.get_strategy()
  chief = distribute.is_chief(strategy)
  cached = None if rebuild or not chief else cached_result(workdir, export_dir, key)
  cached = distribute.broadcast_json(strategy, cached)  # workers follow the chief
  if cached is not None:
    log(f"{cfg.name}: cached classifier found in {workdir} (same config and data); reusing it")
    return cached
  if chief:
    prepare_workdir(workdir, key, log, fresh=rebuild)
  info = get_info(cfg.data.name)
  keras.utils.set_random_seed(cfg.seed)
  with strategy.scope():
    model = build_classifier(cfg.model, info.image_shape,
                             sync_batch_norm=strategy.num_replicas_in_sync > 1)
  method = method or build_method(cfg.method)
  t0 = time.time()
  history = train(model, method, splits, cfg.data, cfg.train, workdir, cfg.seed, strategy, log)
  train_seconds = time.time() - t0
  if not chief:  # the worker's temp dir goes; it waits for the chief's metrics
    temp = distribute.worker_dir(workdir, strategy)
    shutil.rmtree(temp, ignore_errors=True)
    if os.path.isdir(os.path.dirname(temp)) and not os.listdir(os.path.dirname(temp)):
      os.rmdir(os.path.dirname(temp))
    return distribute.broadcast_json(strategy, None)
  if strategy.num_replicas_in_sync > 1 or distribute.num_workers(strategy) > 1:
    model = single_device_copy(model, cfg, info.image_shape)

  metadata = {"experiment": cfg.name, "config": to_dict(cfg), "run_key": key,
              "dataset": info.name, "data_fingerprint": splits.fingerprint,
              "method": method.name, "history": history}
  export.export_classifier(model, export_dir, info.image_shape, metadata)
  log(f"exported SavedModel to {export_dir}")

  serving_fn = export.load_classifier(export_dir)
  probs = predict_probabilities(serving_fn, splits.x_test, cfg.eval.batch_size)
  preds = probs.argmax(-1)
  metrics = {"test/accuracy": float(np.mean(preds == splits.y_test)),
             "train_seconds": train_seconds,
             "final/train_accuracy": history[-1]["train/accuracy"] if history else float("nan"),
             "final/val_accuracy": history[-1]["val/accuracy"] if history else float("nan")}
  from latmix_tf.evaluation import evaluate_saved_model  # pylint: disable=import-outside-toplevel
  robustness = evaluate_saved_model(export_dir, splits.x_test, splits.y_test, cfg.eval,
                                    os.path.join(workdir, "evaluation"), log=log)
  metrics.update({k: v for k, v in robustness.items() if isinstance(v, (int, float))})
  log(f"{cfg.name}: " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))

  figs = [reports.plot_training_curves(history, os.path.join(workdir, "training_curves.png")),
          reports.plot_prediction_grid(splits.x_test[:32], splits.y_test[:32], preds[:32],
                                       info.class_names, os.path.join(workdir, "predictions.png")),
          reports.plot_confusion_matrix(
              reports.confusion_matrix(splits.y_test, preds, info.num_classes),
              info.class_names, os.path.join(workdir, "confusion_matrix.png"))]
  eval_dir = os.path.join(workdir, "evaluation")
  figs += sorted(os.path.join(eval_dir, f) for f in os.listdir(eval_dir) if f.endswith(".png"))
  reports.write_markdown(os.path.join(workdir, "report.md"), f"{cfg.name} (seed {cfg.seed})",
                         cfg.description, metrics, list(report_figures) + figs,
                         notes=[f"SavedModel: {export_dir}", f"data: {splits.fingerprint}",
                                *report_notes])
  metadata["metrics"] = metrics
  export.write_json_atomic(os.path.join(export_dir, export.METADATA_FILE), metadata)
  export.write_json_atomic(os.path.join(workdir, METRICS_FILE), {**metrics, "run_key": key})
  return distribute.broadcast_json(strategy, {**metrics, "run_key": key})


def single_device_copy(model: keras.Model, cfg: ExperimentConfig, image_shape) -> keras.Model:
  """The trained weights in a classifier built outside any strategy (for export/evaluation)."""
  copy = build_classifier(cfg.model, image_shape)  # called outside strategy.scope()
  copy.set_weights(model.get_weights())
  return copy
