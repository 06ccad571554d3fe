"""The method interface of the single training loop, and ERM, the first method.

Every training method (ERM, mixup, manifold mixup, adversarial training, GAT, latent mixup)
differs from the others only in how a batch is built and how the loss is formed, so a method
is a small object with four hooks that the one loop in `loop.py` calls:

  transform_dataset(ds, epoch, seed)   tf.data level (e.g. add latent-mixed examples)
  prepare_batch(model, x, y, seed)     before the gradient tape (e.g. mixing, attacks)
  forward(model, x, y, seed)           inside the tape: logits and the labels they are scored
                                       against (manifold mixup mixes hidden states here)
  after_step(model, x, y, seed)        after the classifier update (e.g. GAT's generator step)

Methods that consume earlier stages (latent mixup: generator, encoder, latent bank) declare
them in the registry; the runner builds those stages first and the method's factory receives
their results in `MethodInputs` (see registry.py). The method lists the consumed stages' key
hashes in `upstream`, which the classifier stage adds to its key. Two methods combine into
one - a batch source and a step - through `compose.py`.

All hooks run inside one compiled `tf.function` (and, under a `tf.distribute` strategy, in
each replica). `seed` is a shape-[2] int64 tensor, different for every step and replica,
meant for stateless random ops, so that a resumed run draws the same random numbers.
Labels are always one-hot or soft (rows sum to 1); a method that scores several copies of
a batch (clean + adversarial) may scale a copy's label rows by its loss weight w, which
weights those rows by w in the loss and in the logged metrics (see adversarial.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Tuple

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class MethodInputs:
  """What the runner hands a method's factory besides the config.

  Why so little: a method trains nothing before the loop starts. A method that consumes
  upstream stages declares them in the registry (`registry.Entry.needs`); the runner builds
  those stages (`latent/stages.py`) and passes their results here.

  Attributes:
    batch_size: the loop's global (real) batch size.
    generator: the frozen generative model (`decode(z)`), for methods that need "latent".
    bank: the latent bank of the training split (`z`, `labels`), likewise.
    upstream: key hashes of the consumed stages; the classifier stage adds them to its key.
  """
  batch_size: int = 128
  generator: Any = None
  bank: Any = None
  upstream: Mapping[str, str] = dataclasses.field(default_factory=dict)


class Method:
  """Base class: ERM behaviour for every hook. Subclasses override what they change."""

  name = "erm"
  upstream: Dict[str, str] = {}  # stage name -> key hash of the stages this method consumes

  def build(self, model, num_classes: int) -> None:
    """Creates extra state (networks, optimizers); called inside the strategy scope."""

  def checkpoint_items(self) -> Dict[str, tf.Module]:
    """Extra trackables the loop checkpoints alongside the classifier and optimizer."""
    return {}

  def transform_dataset(self, ds: tf.data.Dataset, epoch: int, seed: int) -> tf.data.Dataset:
    return ds

  def prepare_batch(self, model, x, y, seed) -> Tuple[tf.Tensor, tf.Tensor]:
    return x, y

  def forward(self, model, x, y, seed) -> Tuple[tf.Tensor, tf.Tensor]:
    return model(x, training=True), y

  def after_step(self, model, x, y, seed) -> Dict[str, tf.Tensor]:
    """Runs after the classifier update; returns extra scalar metrics (summed over replicas)."""
    return {}


@dataclasses.dataclass(frozen=True)
class ERMConfig:
  """Standard training (empirical risk minimisation) on the clean batch."""
  name: str = "erm"


class ERM(Method):
  name = "erm"

  def __init__(self, cfg: ERMConfig = ERMConfig()):
    self.cfg = cfg
