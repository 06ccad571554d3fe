"""Pieces every AutoAttack member shares: threat-model geometry, margins and batch bookkeeping.

Why one module: APGD, FAB and Square must agree on what "inside the eps-ball" and "fooled"
mean, or the per-example worst case over attacks would mix incompatible threat models. All
functions are pure TF ops on batches and are called inside the attacks' `tf.function`s.
Images are float32 [B, H, W, C] in [0, 1]; norms are taken over all of H, W, C.
"""

from __future__ import annotations

import tensorflow as tf

NORMS = ("Linf", "L2")
_TINY = 1e-12


def check_norm(norm: str) -> str:
  if norm not in NORMS:
    raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}.")
  return norm


def image_spec(image_shape) -> tf.TensorSpec:
  return tf.TensorSpec([None, *image_shape], tf.float32)


def flat_norm(d: tf.Tensor, norm: str) -> tf.Tensor:
  """Per-example Lp norm of d [B, ...] -> [B]."""
  flat = tf.reshape(d, [tf.shape(d)[0], -1])
  if norm == "Linf":
    return tf.reduce_max(tf.abs(flat), axis=1)
  return tf.sqrt(tf.reduce_sum(tf.square(flat), axis=1))


def per_example(v: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
  """Reshapes a [B] vector to broadcast against a [B, H, W, C] tensor."""
  return tf.reshape(v, tf.concat([tf.shape(v), tf.ones([tf.rank(like) - 1], tf.int32)], 0))


def rows_where(cond: tf.Tensor, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
  """Per-example select: a where cond [B] holds, b elsewhere."""
  return tf.where(per_example(cond, a), a, b)


def project(x_adv: tf.Tensor, x: tf.Tensor, eps: tf.Tensor, norm: str) -> tf.Tensor:
  """Projection onto the eps-ball around x, then onto the box [0, 1].

  Clipping to the box after the ball never leaves the ball: each clipped coordinate moves
  towards x (x itself is in the box), so every |delta_i| and hence the norm can only shrink.
  """
  if norm == "Linf":
    x_adv = tf.clip_by_value(x_adv, x - eps, x + eps)
  else:
    delta = x_adv - x
    scale = tf.minimum(1.0, eps / (flat_norm(delta, norm) + _TINY))
    x_adv = x + delta * per_example(scale, delta)
  return tf.clip_by_value(x_adv, 0.0, 1.0)


def steepest_direction(grad: tf.Tensor, norm: str) -> tf.Tensor:
  """Unit-norm steepest-ascent direction: sign(g) for Linf, g / ||g||_2 for L2."""
  if norm == "Linf":
    return tf.sign(grad)
  return grad / per_example(flat_norm(grad, "L2") + _TINY, grad)


def random_start(x: tf.Tensor, eps: tf.Tensor, norm: str, seed: tf.Tensor,
                 radius: float = 1.0) -> tf.Tensor:
  """x plus a random point on the sphere of radius `radius * eps` of the norm, in [0, 1].

  Linf: U(-1, 1) noise rescaled to unit Linf norm; L2: Gaussian noise rescaled to unit L2
  norm (the starting points of APGD, Croce & Hein 2020, and of FAB's restarts).
  """
  if norm == "Linf":
    t = tf.random.stateless_uniform(tf.shape(x), seed, -1.0, 1.0)
  else:
    t = tf.random.stateless_normal(tf.shape(x), seed)
  t = t / per_example(flat_norm(t, norm) + _TINY, t)
  return tf.clip_by_value(x + radius * eps * t, 0.0, 1.0)


def margin(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
  """z_y - max_{l != y} z_l: positive iff the example is classified as y."""
  k = tf.shape(logits)[1]
  z_y = tf.gather(logits, y, axis=1, batch_dims=1)
  others = tf.where(tf.one_hot(y, k, on_value=True, off_value=False),
                    tf.constant(-float("inf"), logits.dtype), logits)
  return z_y - tf.reduce_max(others, axis=1)


def predicted(logits: tf.Tensor) -> tf.Tensor:
  return tf.argmax(logits, axis=1, output_type=tf.int32)


def target_classes(logits: tf.Tensor, rank: tf.Tensor) -> tf.Tensor:
  """The class with the (rank + 1)-th largest logit: rank 1 = runner-up (APGD-T, FAB-T)."""
  order = tf.math.top_k(logits, k=tf.shape(logits)[1]).indices
  return tf.gather(order, rank, axis=1)


def scatter_rows(full: tf.Tensor, idx: tf.Tensor, part: tf.Tensor) -> tf.Tensor:
  """full with rows idx [A] replaced by part [A, ...]."""
  return tf.tensor_scatter_nd_update(full, idx[:, None], part)
