"""Makes Keras 3 objects checkpointable with `tf.train.Checkpoint`.

Keras 3 models and optimizers are not trackables of TF's object-based checkpointing: a
`tf.train.Checkpoint(model=keras_model)` silently saves *no* weights (measured: only
`save_counter` lands in the file). We therefore hand the checkpoint a `tf.Module` holding
the underlying `tf.Variable`s of each Keras object, in `.variables` order (which is fixed
by the architecture, unlike variable paths, which depend on how many models the process
built before). This covers weights, BN statistics, optimizer slots and iteration counters,
and the dropout `SeedGenerator` states, so a resumed run continues bit-for-bit.
"""

from __future__ import annotations

from typing import Any, Dict

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


def wrap_items(items: Dict[str, Any]) -> Dict[str, Any]:
  return {k: trackable(v) for k, v in items.items()}
