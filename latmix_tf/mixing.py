"""Mixing primitives shared by mixup, manifold mixup and latent mixup.

All three methods do the same thing in a different space - pixels (Zhang et al. 2017),
hidden states of the classifier (Verma et al. 2018), or latent codes of a generator - so
the pieces live here once: λ ~ Beta(α, α), a partner permutation within the batch, convex
combinations of tensors of any rank, and the matching soft labels.

Every random draw is *stateless*: it takes a shape-[2] integer seed (the training loop
gives each step and replica its own, see `training/method.py`), so a resumed run draws the
same λ and partners, and the functions work unchanged inside a compiled step and in every
replica of a `tf.distribute` strategy.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import tensorflow as tf

Shape = Union[Sequence[int], tf.Tensor]


def split_seed(seed: tf.Tensor, num: int) -> tf.Tensor:
  """`num` independent shape-[2] int64 seeds derived from `seed` (a [num, 2] tensor)."""
  return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num)


def _tfp_seed(seed: tf.Tensor) -> tf.Tensor:
  # TFP's stateless samplers want an int32 pair; hash the int64 seed into one (full range).
  return tf.random.stateless_uniform([2], tf.cast(seed, tf.int64), minval=None, maxval=None,
                                     dtype=tf.int32)


def sample_lambda(shape: Shape, alpha: float, seed: tf.Tensor) -> tf.Tensor:
  """Mixing coefficients λ ~ Beta(α, α) (float32), stateless.

  Args:
    shape: sample shape: `[]` for one λ per batch, `[N]` for one per example.
    alpha: the Beta concentration α > 0 (1 = uniform on [0, 1]; larger = nearer 1/2).
    seed: shape-[2] integer seed.
  Returns:
    A float32 tensor of `shape` with values in [0, 1].
  Raises:
    ValueError: alpha <= 0.
  """
  if not alpha > 0:
    raise ValueError(f"alpha must be > 0 for Beta(alpha, alpha), got {alpha}.")
  # Imported here: TFP takes seconds to import and only the mixing methods need it.
  import tensorflow_probability as tfp  # pylint: disable=import-outside-toplevel
  beta = tfp.distributions.Beta(tf.constant(alpha, tf.float32), tf.constant(alpha, tf.float32))
  return beta.sample(shape, seed=_tfp_seed(seed))


def sample_permutation(n: Union[int, tf.Tensor], seed: tf.Tensor) -> tf.Tensor:
  """A uniformly random permutation of range(n) (int32), stateless."""
  keys = tf.random.stateless_uniform(tf.reshape(n, [1]), tf.cast(seed, tf.int64))
  return tf.argsort(keys, stable=True)


def mix(a: tf.Tensor, b: tf.Tensor, lam: tf.Tensor) -> tf.Tensor:
  """Convex combination λ·a + (1 - λ)·b, with λ broadcast over the trailing dimensions.

  Args:
    a, b: tensors of the same shape [N, ...] (images, hidden states, latent codes, labels).
    lam: a scalar (one λ for the batch) or a [N] vector (one λ per example).
  Returns:
    The mixed tensor, shape and dtype of `a`. λ = 1 returns `a` exactly (for finite `b`).
  """
  lam = tf.cast(lam, a.dtype)
  if lam.shape.rank == 1:
    lam = tf.reshape(lam, tf.concat([tf.shape(lam), tf.ones([tf.rank(a) - 1], tf.int32)], 0))
  elif lam.shape.rank not in (0, None):
    raise ValueError(f"lam must be a scalar or a [N] vector, got shape {lam.shape}.")
  return lam * a + (1.0 - lam) * b


def mix_labels(y_a: tf.Tensor, y_b: tf.Tensor, lam: tf.Tensor) -> tf.Tensor:
  """Soft labels of a mixed example: λ·y_a + (1 - λ)·y_b (rows still sum to 1)."""
  return mix(tf.cast(y_a, tf.float32), tf.cast(y_b, tf.float32), lam)


def mix_with_partner(x: tf.Tensor, y: tf.Tensor, lam: tf.Tensor,
                     perm: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """Mixes each example i with its partner perm[i] in the same batch: (x̃, ỹ).

  x̃_i = λ_i x_i + (1 - λ_i) x_perm[i],   ỹ_i = λ_i y_i + (1 - λ_i) y_perm[i].
  """
  return (mix(x, tf.gather(x, perm), lam), mix_labels(y, tf.gather(y, perm), lam))


def draw_lambda_and_partner(batch_size: tf.Tensor, alpha: float, seed: tf.Tensor,
                            per_batch: bool = False) -> Tuple[tf.Tensor, tf.Tensor]:
  """Draws the λ's and the partner permutation of one mixing step.

  Args:
    batch_size: N (Python int or scalar int tensor).
    alpha: Beta concentration.
    seed: shape-[2] integer seed; λ and the permutation use independent sub-seeds.
    per_batch: one λ shared by the batch (the official mixup code) instead of one per example.
  Returns:
    (lam, perm): lam of shape [] or [N], perm an int32 [N] permutation.
  """
  seeds = split_seed(seed, 2)
  lam = sample_lambda([] if per_batch else tf.reshape(batch_size, [1]), alpha, seeds[0])
  return lam, sample_permutation(batch_size, seeds[1])
