"""Two methods in one run: a batch source and a step, composed once, here.

Every method of the one loop plays one of two roles (or is ERM, which plays both as the
identity):
  * a *batch source* decides which rows a step sees - the real batch, input mixup's mixed
    batch, Latent-Mixup's real + decoded latent mixes, on-manifold adversarials. It may
    change the dataset (`transform_dataset`) and the batch (`prepare_batch`), never the loss.
  * a *step* decides how those rows are scored and what else is updated - cross-entropy,
    an adversarial inner maximisation (FGSM / PGD), TRADES' regulariser, manifold mixup's
    hidden-state mixing, GAT's generator step. It may change the batch (`prepare_batch`,
    after the source), the forward pass, `after_step` and extra checkpointed state, never
    the dataset.

`Composed(source, step)` runs the source's batch through the step. Where both change the
batch, the source draws with `split_seed(seed, 2)[0]` and the step with the step's own
seed, so the step's random start is the one it would draw alone. `compose` reduces a
composition with ERM on either side to the other method itself: each of the plain methods
is its own composition with ERM, with its numbers unchanged. A new combination is a
`ComposedConfig` (e.g. `latent_mixup_at`: Latent-Mixup's batches, PGD-AT's step) and no new
class; `registry.METHODS` builds it and takes the union of what its parts need.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

import tensorflow as tf

from latmix_tf import mixing
from latmix_tf.training.method import ERM, ERMConfig, Method

SOURCE_HOOKS = ("transform_dataset", "prepare_batch")
STEP_ONLY_HOOKS = ("forward", "after_step", "checkpoint_items")


@dataclasses.dataclass(frozen=True)
class ComposedConfig:
  """A batch source's config and a step's config, trained as one method.

  Attributes:
    name: the method's name in reports and comparisons (a registered name).
    source: config of the method that builds the batches (ERMConfig: the real batch).
    step: config of the method that scores them (ERMConfig: cross-entropy).
  """
  name: str = "composed"
  source: Any = ERMConfig()
  step: Any = ERMConfig()


def overrides(method: Method, hook: str) -> bool:
  """Whether `method`'s class changes `hook` from ERM's behaviour (the base class's)."""
  return getattr(type(method), hook) is not getattr(Method, hook)


class Composed(Method):
  """The source's batches, scored by the step."""

  def __init__(self, source: Method, step: Method, name: Optional[str] = None):
    for hook in STEP_ONLY_HOOKS:
      if overrides(source, hook):
        raise ValueError(f"{type(source).__name__} cannot be the batch source of a composed "
                         f"method: it changes {hook}, which is a step's; compose it as the "
                         f"step.")
    if overrides(step, "transform_dataset"):
      raise ValueError(f"{type(step).__name__} cannot be the step of a composed method: it "
                       f"changes the dataset, which is a batch source's; compose it as the "
                       f"source.")
    self.source, self.step = source, step
    self.name = name or f"{source.name}+{step.name}"
    self.upstream = {**source.upstream, **step.upstream}

  def build(self, model, num_classes: int) -> None:
    self.source.build(model, num_classes)
    self.step.build(model, num_classes)

  def checkpoint_items(self) -> Dict[str, tf.Module]:
    return self.step.checkpoint_items()

  def transform_dataset(self, ds: tf.data.Dataset, epoch: int, seed: int) -> tf.data.Dataset:
    return self.source.transform_dataset(ds, epoch, seed)

  def prepare_batch(self, model, x, y, seed):
    if not overrides(self.source, "prepare_batch"):
      return self.step.prepare_batch(model, x, y, seed)
    if not overrides(self.step, "prepare_batch"):
      return self.source.prepare_batch(model, x, y, seed)
    x, y = self.source.prepare_batch(model, x, y, mixing.split_seed(seed, 2)[0])
    return self.step.prepare_batch(model, x, y, seed)

  def forward(self, model, x, y, seed):
    return self.step.forward(model, x, y, seed)

  def after_step(self, model, x, y, seed) -> Dict[str, tf.Tensor]:
    return self.step.after_step(model, x, y, seed)


def is_identity(method: Method) -> bool:
  """ERM: the identity source (the real batch) and the identity step (cross-entropy)."""
  return type(method) is ERM


def compose(source: Method, step: Method, name: Optional[str] = None) -> Method:
  """`Composed(source, step)`, or the other side itself where one side is ERM."""
  if is_identity(step) and (name is None or name == source.name):
    return source
  if is_identity(source) and (name is None or name == step.name):
    return step
  return Composed(source, step, name)
