"""Makes Keras 3 objects checkpointable with `tf.train.Checkpoint`.

Keras 3 models and optimizers are not trackables of TF's object-based checkpointing: a
`tf.train.Checkpoint(model=keras_model)` silently saves *no* weights (measured: only
`save_counter` lands in the file). We therefore hand the checkpoint a `tf.Module` holding
the underlying `tf.Variable`s of each Keras object, in `.variables` order (which is fixed
by the architecture, unlike variable paths, which depend on how many models the process
built before). This covers weights, BN statistics, optimizer slots and iteration counters,
and the dropout `SeedGenerator` states, so a resumed run continues bit-for-bit.

`restore_latest` is how every resumable stage (classifier, GAN/VAE, inversion encoder) reads
its checkpoints: a checkpoint damaged by a kill, a full disk or a bad copy (TF's tensor
bundles carry CRC32C checksums, so truncation or corruption fails loudly on read) is skipped
for the next older one, and if none is readable the variables go back to their values before
the attempt, so the stage is redone from the start rather than continued from garbage.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any, Callable, List, Optional, Sequence

import numpy as np
import tensorflow as tf


class VariableBag(tf.Module):
  """A trackable list of the tf.Variables behind a Keras object."""

  def __init__(self, obj: Any):
    super().__init__()
    self.vars = [getattr(v, "value", v) for v in obj.variables]


def trackable(obj: Any) -> Any:
  """`obj` itself if TF can track it, else a `VariableBag` of its variables."""
  return VariableBag(obj) if _is_keras(obj) else obj


def _is_keras(obj: Any) -> bool:
  return type(obj).__module__.startswith("keras") or any(
      c.__module__.startswith("keras") for c in type(obj).__mro__)


def checkpoint(**items: Any) -> tf.train.Checkpoint:
  """A `tf.train.Checkpoint` over `items`, wrapping Keras objects (models, optimizers)."""
  return tf.train.Checkpoint(**{k: trackable(v) for k, v in items.items()})


def checkpoint_candidates(manager: tf.train.CheckpointManager) -> List[str]:
  """Checkpoint prefixes of `manager`, newest first: its state file's list, plus any
  `ckpt-N.index` in the directory (the state file itself may be the damaged part)."""
  found = {p for p in manager.checkpoints}
  for index in glob.glob(os.path.join(manager.directory, "*.index")):
    found.add(index[:-len(".index")])

  def number(path):
    m = re.search(r"-(\d+)$", path)
    return int(m.group(1)) if m else -1
  return sorted(found, key=number, reverse=True)


def restore_latest(checkpoint: tf.train.Checkpoint, manager: tf.train.CheckpointManager,
                   variables: Sequence[tf.Variable],
                   log: Callable[[str], None] = print) -> Optional[str]:
  """Restores the newest readable checkpoint of `manager`; returns its path or None.

  Args:
    checkpoint: the checkpoint object to restore into.
    manager: its manager (directory and known checkpoints).
    variables: every variable the checkpoint restores (reset after each damaged checkpoint,
      so a failed partial restore leaves no trace).
    log: receives one line per damaged checkpoint skipped.
  """
  candidates = checkpoint_candidates(manager)
  if not candidates:
    return None
  for path in candidates:
    if restore_one(checkpoint, path, variables, log, then="trying an older one"):
      return path
  log(f"no readable checkpoint in {manager.directory}; starting this stage from scratch")
  return None


def restore_one(checkpoint: tf.train.Checkpoint, path: str,
                variables: Sequence[tf.Variable] = (), log: Callable[[str], None] = print,
                then: str = "") -> bool:
  """Restores `path` into `checkpoint`; False (and one log line) if it is damaged.

  A failed restore may have assigned some of the variables before failing: `variables` are
  reset to their values from before the call, so a damaged file leaves no trace in them."""
  snapshot = [np.array(v.numpy()) for v in variables]
  try:
    checkpoint.restore(path).assert_existing_objects_matched()
    return True
  except Exception as e:  # pylint: disable=broad-except
    # A damaged file fails in many ways (tf.errors.DataLossError, IndexError "read less
    # bytes", protobuf DecodeError, AssertionError on missing objects): all mean "unusable".
    log(f"checkpoint {path} is unreadable or incomplete ({type(e).__name__}: "
        f"{str(e).splitlines()[0][:160] if str(e) else ''}){'; ' + then if then else ''}")
    for v, value in zip(variables, snapshot):
      v.assign(value)
    return False
