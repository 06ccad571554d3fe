"""Manifold mixup (Verma et al. 2018): mixup of hidden states at a randomly chosen block.

Each step draws a block boundary k uniformly from a configured set (default {0, 1, 2};
k = 0 is the input, i.e. input mixup), runs the classifier's blocks up to k, mixes the
hidden states of the batch and of a permuted copy with λ ~ Beta(α, α) (the paper's α = 2
is the default), finishes the forward pass from k (`model.forward_from`) and scores the
logits against the same mixture of the labels. Because the mixing point depends on the
weights, this happens in `forward`, inside the gradient tape.

Compile once, one forward pass: k is drawn with a stateless op, and instead of dispatching
to one of several traced branches (`tf.switch_case`, which we measured at ~1.35x the CPU
time of an input-mixup step, against ~1.05x for this), the forward pass mixes at *every*
configured boundary with λ_k = λ where k is the drawn block and λ_k = 1 elsewhere.
λ_k = 1 is the identity exactly (1·h + 0·h_perm = h, with zero gradient into h_perm), so
this gives the same logits, labels and gradients as mixing at block k alone, and it works
for any `BlockClassifier` (SmallCNN and PreActResNet).

Boundary indices are the classifier's block indices: for SmallCNN {0, 1, 2} = input, after
conv stage 0, after conv stage 1; for PreActResNet the paper's {input, after residual
stage 1, after stage 2} is {0, 2, 3} (block 1 is the stem conv).
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import tensorflow as tf

from latmix_tf import mixing
from latmix_tf.training.method import Method


@dataclasses.dataclass(frozen=True)
class ManifoldMixupConfig:
  """Manifold mixup.

  Attributes:
    alpha: λ ~ Beta(alpha, alpha); the paper uses 2.0.
    layers: block boundaries k to mix at, drawn uniformly each step (0 = input).
    per_batch_lambda: one λ for the whole batch (as in the official code) instead of one
      per example.
  """
  name: str = "manifold_mixup"
  alpha: float = 2.0
  layers: Tuple[int, ...] = (0, 1, 2)
  per_batch_lambda: bool = False


class ManifoldMixup(Method):
  """Mixes hidden states at a random block boundary inside `forward`."""

  name = "manifold_mixup"

  def __init__(self, cfg: ManifoldMixupConfig = ManifoldMixupConfig()):
    if not cfg.alpha > 0:
      raise ValueError(f"ManifoldMixupConfig.alpha must be > 0, got {cfg.alpha}.")
    if not cfg.layers or any(int(k) != k or k < 0 for k in cfg.layers):
      raise ValueError(f"ManifoldMixupConfig.layers must be non-empty block indices >= 0, got "
                       f"{cfg.layers}.")
    self.cfg = cfg

  def build(self, model, num_classes: int) -> None:
    for attr in ("forward_to", "forward_from", "num_blocks"):
      if not hasattr(model, attr):
        raise ValueError(f"manifold mixup needs a BlockClassifier (with forward_to / "
                         f"forward_from), got {type(model).__name__}.")
    if max(self.cfg.layers) >= model.num_blocks:
      raise ValueError(f"ManifoldMixupConfig.layers {self.cfg.layers} has a boundary past the "
                       f"last block: {type(model).__name__} has {model.num_blocks} blocks, so "
                       f"k must be < {model.num_blocks}.")

  def draw(self, batch_size, seed) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(index into cfg.layers, λ, partner permutation) that `forward` uses for `seed`."""
    seeds = mixing.split_seed(seed, 2)
    k_index = tf.random.stateless_uniform([], seeds[0], 0, len(self.cfg.layers), tf.int32)
    lam, perm = mixing.draw_lambda_and_partner(batch_size, self.cfg.alpha, seeds[1],
                                               self.cfg.per_batch_lambda)
    return k_index, lam, perm

  def mixed_forward(self, model, x, y, k_index, lam, perm,
                    training: bool = True) -> Tuple[tf.Tensor, tf.Tensor]:
    """Logits of the batch mixed at boundary cfg.layers[k_index], and the mixed labels.

    Args:
      model: a BlockClassifier.
      x, y: images and one-hot / soft labels.
      k_index: scalar int32 tensor, index into `cfg.layers`.
      lam: λ, a scalar or a [N] vector.
      perm: int32 [N] partner permutation.
      training: passed to the blocks (BatchNorm / dropout mode).
    """
    layers = sorted(set(self.cfg.layers))
    chosen = tf.gather(tf.constant(self.cfg.layers, tf.int32), tf.cast(k_index, tf.int32))
    h, done = x, 0
    for k in layers:
      for block in model.blocks[done:k]:
        h = block(h, training=training)
      done = k
      lam_k = tf.where(tf.equal(chosen, k), lam, tf.ones_like(lam))  # 1 = no mixing here
      h = mixing.mix(h, tf.gather(h, perm), lam_k)
    logits = model.forward_from(h, done, training=training)
    return logits, mixing.mix_labels(y, tf.gather(y, perm), lam)

  def forward(self, model, x, y, seed):
    k_index, lam, perm = self.draw(tf.shape(x)[0], seed)
    return self.mixed_forward(model, x, y, k_index, lam, perm, training=True)
