"""Mixup (Zhang, Cisse, Dauphin, Lopez-Paz 2017): train on convex combinations of examples.

Each training example x_i is replaced by λ_i x_i + (1 - λ_i) x_j, where j = perm[i] is a
random partner from the same batch and λ_i ~ Beta(α, α), and is scored against the same
combination of the one-hot labels (a soft label). The paper's default α = 1 (λ uniform)
is ours. By default every example draws its own λ; `per_batch_lambda=True` reproduces the
official code (facebookresearch/mixup-cifar10), which draws one λ per batch. Mixing happens
in `prepare_batch` (before the gradient tape): the inputs are data, not a function of the
weights. The loop's accuracy metric for mixup is agreement with the dominant label.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import tensorflow as tf

from latmix_tf import mixing
from latmix_tf.training.method import Method


@dataclasses.dataclass(frozen=True)
class MixupConfig:
  """Input mixup.

  Attributes:
    alpha: λ ~ Beta(alpha, alpha); 1.0 (the paper's CIFAR-10 value) draws λ uniformly.
    per_batch_lambda: one λ for the whole batch, as in the official code.
  """
  name: str = "mixup"
  alpha: float = 1.0
  per_batch_lambda: bool = False


class Mixup(Method):
  """Mixes images and labels with a permuted partner in `prepare_batch`."""

  name = "mixup"

  def __init__(self, cfg: MixupConfig = MixupConfig()):
    if not cfg.alpha > 0:
      raise ValueError(f"MixupConfig.alpha must be > 0, got {cfg.alpha}.")
    self.cfg = cfg

  def draw(self, batch_size, seed) -> Tuple[tf.Tensor, tf.Tensor]:
    """The (λ, partner permutation) that `prepare_batch` uses for this `seed`."""
    return mixing.draw_lambda_and_partner(batch_size, self.cfg.alpha, seed,
                                          self.cfg.per_batch_lambda)

  def prepare_batch(self, model, x, y, seed):
    lam, perm = self.draw(tf.shape(x)[0], seed)
    return mixing.mix_with_partner(x, y, lam, perm)
