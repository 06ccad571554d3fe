"""Strict, atomic JSON records: the one reader and writer of every cache and result file.

Why a module of its own: run keys, metrics, stage records, generator and Fréchet records and
the comparison's results.json all go through these two functions, and the comparison report
must be rebuildable on a machine without TensorFlow, so this imports only the standard
library (`latmix_tf.export` re-exports both for the TensorFlow side).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any


def strict(obj: Any) -> Any:
  """NaN/inf -> None (recursively), so the file is strict JSON that any parser reads."""
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, dict):
    return {k: strict(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [strict(v) for v in obj]
  return obj


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes strict JSON via a temp file + fsync + rename: readers never see a truncated file."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(strict(obj), f, indent=2, sort_keys=True, default=str, allow_nan=False)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_json(path: str, default: Any = None) -> Any:
  """The JSON record at `path`, or `default` when it is missing, unreadable or truncated.

  Every cache record here is advisory: an unreadable one must mean "recompute", never a
  crash and never a silently reused half-written file (writers go through write_json_atomic).
  """
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return default
