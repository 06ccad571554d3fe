"""Helpers shared by the speed benchmarks: the machine record, timers, FLOPs.

Why: every figure must name the CPU, its flags and the load it was measured under (our
2-core machines are shared), and a loaded machine's wall time says little, so every timer
here reports the process's CPU seconds beside the wall seconds. FLOPs are counted from the
traced graph of the very step that is timed (`graph_flops`), so a model change cannot make
the count and the timing disagree.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import sys
import time
from typing import Dict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=wrong-import-position

from latmix_tf import hardware  # pylint: disable=wrong-import-position

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def machine() -> Dict[str, object]:
  """CPU (model, ISA class, key flags), the levers `hardware.levers()` chose, load average,
  Python / TF versions, niceness."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return {"cpu": hardware.describe(), "levers_chosen": dataclasses.asdict(hardware.levers()),
          "load_avg": list(os.getloadavg()),
          "tensorflow": tf.__version__, "python": platform.python_version(),
          "nice": os.nice(0),
          "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default(on)")}


def cpu_seconds() -> float:
  """User + system CPU seconds of this process (all its threads) so far."""
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


class Timer:
  """`with Timer() as t: ...` -> t.wall, t.cpu (seconds), t.load (1-min load at the end)."""

  def __enter__(self):
    self._w, self._c = time.perf_counter(), cpu_seconds()
    return self

  def __exit__(self, *exc):
    self.wall = time.perf_counter() - self._w
    self.cpu = cpu_seconds() - self._c
    self.load = os.getloadavg()[0]
    return False

  def record(self, **extra) -> Dict[str, float]:
    return {"wall_s": self.wall, "cpu_s": self.cpu, "load_1min": self.load, **extra}


def _shape(t):
  return [int(d) if d is not None else -1 for d in t.shape.as_list()]


def _op_flops(op) -> int:
  """Multiply-add FLOPs (2 per MAC) of one matmul-class op from its static shapes."""
  kind = op.type
  if kind == "Conv2D":
    n, ho, wo, co = _shape(op.outputs[0])
    kh, kw, ci, _ = _shape(op.inputs[1])
    return 2 * n * ho * wo * co * kh * kw * ci
  if kind in ("Conv2DBackpropInput", "Conv2DBackpropFilter"):
    # inputs: (input or input_sizes, filter or filter_sizes, out_backprop)
    n, ho, wo, co = _shape(op.inputs[2])
    filt = op.outputs[0] if kind == "Conv2DBackpropFilter" else op.inputs[1]
    kh, kw, ci, _ = _shape(filt)
    return 2 * n * ho * wo * co * kh * kw * ci
  if kind == "MatMul":
    a, b = _shape(op.inputs[0]), _shape(op.inputs[1])
    m, k = (a[1], a[0]) if op.get_attr("transpose_a") else (a[0], a[1])
    n = b[0] if op.get_attr("transpose_b") else b[1]
    return 2 * m * k * n
  if kind in ("BatchMatMulV2", "BatchMatMulV3"):
    a, c = _shape(op.inputs[0]), _shape(op.outputs[0])
    k = a[-2] if op.get_attr("adj_x") else a[-1]
    return 2 * int(np.prod(c)) * k
  return 0


def graph_flops(concrete_function) -> Dict[str, int]:
  """Matmul-class FLOPs per op type of a traced function, nested function bodies included.

  Counts Conv2D, its two gradients, MatMul and BatchMatMul: on these CNNs everything else
  (bias, activations, batch norm, Adam) is memory-bound and < 5% of the arithmetic, and the
  roofline's ceiling is the matmul peak. Shapes must be static (trace with fixed batches).
  """
  seen, totals = set(), {}

  def walk(graph):
    for op in graph.get_operations():
      f = _op_flops(op)
      if f < 0:
        raise ValueError(f"dynamic shape in {op.name} ({op.type}): trace with a fixed batch")
      if f:
        totals[op.type] = totals.get(op.type, 0) + f
    for name, fn in getattr(graph, "_functions", {}).items():
      sub = getattr(fn, "graph", None)
      if sub is not None and name not in seen:
        seen.add(name)
        walk(sub)

  walk(concrete_function.graph)
  totals["total"] = sum(totals.values())
  return totals


def write_json(path: str, payload) -> None:
  import json  # pylint: disable=import-outside-toplevel
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(payload, f, indent=2)


def write_results(name: str, record, markdown_text: str) -> None:
  """benchmarks/results/<name>.json (the raw record) and <name>.md (its table)."""
  write_json(os.path.join(RESULTS, f"{name}.json"), record)
  with open(os.path.join(RESULTS, f"{name}.md"), "w", encoding="utf-8") as f:
    f.write(markdown_text)


def test_images(dataset: str, data_dir, n: int):
  """The first `n` test images as float32 in [0, 1] and their int32 labels (the benchmarks
  that compare attacks with reference libraries all score the same prefix)."""
  from latmix_tf.data import load_dataset, to_float  # pylint: disable=import-outside-toplevel
  arrays = load_dataset(dataset, data_dir)
  return to_float(arrays.x_test[:n]), arrays.y_test[:n].astype(np.int32)


def require(*modules: str) -> list:
  """Imports the reference libraries a comparison needs (returned in order), or stops with
  the install command."""
  import importlib  # pylint: disable=import-outside-toplevel
  try:
    return [importlib.import_module(name) for name in modules]
  except ImportError as e:
    raise SystemExit(f"{e}: pip install -r benchmarks/requirements.txt") from e


class ArtModel:
  """Our SavedModel's logits as the callable ART's TensorFlowV2Classifier calls:
  `model(x, training=...)` (the signature itself takes only images)."""

  def __init__(self, lf):
    self.lf = lf

  def __call__(self, x, training=False):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    del training
    return self.lf(tf.cast(x, tf.float32))
