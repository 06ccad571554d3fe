"""The evaluator interface: one small class per metric family, chosen by `EvalConfig.evaluators`.

Why: evaluation grows by metric families (another attack, a shift benchmark, a calibration
measure) far more often than models are retrained. Behind one interface a new family is a new
class and one line of the registry (`evaluators.EVALUATORS`); the suite, evaluation.json, the
stage record and the report take its metrics, figures and notes without being edited. This is
the design of big_vision's `evaluators/`: each is built from the predict function and the
config, and yields its metrics.

An evaluator reads an `EvalContext` (the SavedModel's logits function, the test images and
their clean logits, the config, the output folder, the log, and what the evaluators before it
measured) and returns an `EvalResult`.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from latmix_tf.config import EvalConfig
from latmix_tf.evaluation.partial import Parts


def metric_key(prefix: str, value: float) -> str:
  """Flat metric key of one point of a curve: "blur/acc@1.0", "pgd/acc@0.05"."""
  return f"{prefix}@{float(value)!r}"


def batched(fn: Callable, arrays, batch_size: int) -> np.ndarray:
  """`fn` over consecutive batches of `arrays` (numpy, same length), outputs concatenated."""
  n = len(arrays[0])
  return np.concatenate([fn(*[tf.constant(a[s:s + batch_size]) for a in arrays]).numpy()
                         for s in range(0, n, batch_size)])


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """What one evaluator measured (or, merged in run order, the whole suite).

  Attributes:
    metrics: flat "family/name" -> number; merged into evaluation.json and the stage record.
    figures: file names of the PNGs it wrote, relative to the output folder.
    notes: report lines (the sanity checks: failures first).
    record: entries of evaluation.json besides "metrics"; dict values merge one level deep
      across evaluators, so each adds its own curve under "curves".
    attack_config: hyper-parameters of the attacks it ran (`attack_config.json`).
    state: in-memory values later evaluators read (per-image masks, the DeepFool run); never
      written anywhere.
  """
  metrics: Dict[str, Any] = dataclasses.field(default_factory=dict)
  figures: List[str] = dataclasses.field(default_factory=list)
  notes: List[str] = dataclasses.field(default_factory=list)
  record: Dict[str, Any] = dataclasses.field(default_factory=dict)
  attack_config: Dict[str, Any] = dataclasses.field(default_factory=dict)
  state: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class EvalContext:
  """What every evaluator reads; `metrics` and `results` grow as the evaluators run.

  Attributes:
    logits_fn: differentiable float [N, H, W, C] images in [0, 1] -> logits (the SavedModel).
    predict: `logits_fn` compiled once for the test images' shape (batched inference).
    x_uint8, x: the test images as stored (uint8) and as the model reads them (float32).
    y: int64 labels.
    logits: the clean test logits, computed once (every clean-prediction metric reads them).
    cfg, out_dir, log: the evaluation config, where files go, the progress sink.
    x_val, y_val: uint8 validation images and labels, or None.
    cache_dir: folder of cached generated test sets (corrupted images), or None.
    class_names: the dataset's class names (from the SavedModel's metadata), or None.
    metrics: the flat metrics of the evaluators that ran, in run order.
    results: their `EvalResult`s by registry name.
    parts: where an evaluator keeps its progress within a run that may be killed
      (`partial.Parts`; AutoAttack saves it after each attack).
  """
  logits_fn: Callable
  predict: Callable
  x_uint8: np.ndarray
  x: np.ndarray
  y: np.ndarray
  logits: np.ndarray
  cfg: EvalConfig
  out_dir: str
  log: Callable[[str], None] = print
  x_val: Optional[np.ndarray] = None
  y_val: Optional[np.ndarray] = None
  cache_dir: Optional[str] = None
  class_names: Optional[Sequence[str]] = None
  metrics: Dict[str, Any] = dataclasses.field(default_factory=dict)
  results: Dict[str, EvalResult] = dataclasses.field(default_factory=dict)
  parts: Parts = dataclasses.field(default_factory=lambda: Parts(None))

  @property
  def num_classes(self) -> int:
    return int(self.logits.shape[1])

  @property
  def accuracy(self) -> float:
    """Clean test accuracy."""
    return float(np.mean(self.logits.argmax(1) == self.y))

  @property
  def image_spec(self) -> tf.TensorSpec:
    """Input signature of a compiled function of a batch of test images."""
    return tf.TensorSpec([None, *self.x.shape[1:]], tf.float32)

  def count(self, limit: Optional[int]) -> int:
    """How many of the first test images a sample limit covers (None = all)."""
    return len(self.x) if limit is None else min(limit, len(self.x))

  def predict_logits(self, x: np.ndarray) -> np.ndarray:
    """Logits of float images, in batches of `cfg.batch_size`."""
    return batched(self.predict, (x,), self.cfg.batch_size)

  def path(self, name: str) -> str:
    return os.path.join(self.out_dir, name)

  def state(self, evaluator: str, key: str, default: Any = None) -> Any:
    """A value an earlier evaluator kept in memory, or `default` when it did not run."""
    result = self.results.get(evaluator)
    return default if result is None else result.state.get(key, default)


class Evaluator(abc.ABC):
  """One metric family.

  Class attributes:
    figure_files: every PNG it may write (those it wrote are in its result's `figures`).
    required: metrics every report reads; a cached evaluation lacking one is redone.
  """
  figure_files: Tuple[str, ...] = ()
  required: Tuple[str, ...] = ()

  @abc.abstractmethod
  def run(self, ctx: EvalContext) -> EvalResult:
    """Measures the family on `ctx` and writes its figures into `ctx.out_dir`."""
