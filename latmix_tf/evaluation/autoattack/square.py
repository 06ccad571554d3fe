"""Square Attack (Andriushchenko et al., ECCV 2020): score-based black-box random search.

Why a black-box attack in the suite: it queries only the logits, never a gradient, so it
still works when gradients are masked or obfuscated (a model that resists APGD but falls to
Square has broken gradients - one of the sanity checks). This module never opens a
GradientTape, so `logits_fn` may be non-differentiable (e.g. a `tf.numpy_function`).

Settings of AutoAttack "standard": 5000 queries, margin loss z_y - max_{l != y} z_l, p_init =
0.8 with the fixed schedule p = p_init / 2^j, j = number of thresholds {10, 50, 200, 500,
1000, 2000, 4000, 6000, 8000} below the iteration index. Each iteration proposes, for every
still-robust example, one update of a random s x s window, s = round(sqrt(p * H * W)):
  * Linf: start at vertical stripes x +- eps (a random sign per column and channel); the
    window is set to x +- eps with one random sign per channel;
  * L2: start from a grid of 5 x 5 blocks of the "eta" pattern (two nested-rectangle halves
    of opposite sign, random orientation and sign per block); a proposal moves the mass of a
    second random window into the first, reshaped as a fresh eta pattern (s odd, >= 3), and
    rescales to ||delta||_2 = eps.
A proposal is kept when it lowers the margin (the example then stays at its best point);
an example stops once its margin is <= 0. Unlike fra31/auto-attack, which draws one window
and sign for the whole batch per iteration, each example draws its own (as in the paper's
per-image algorithm); window corners are uniform over all H - s + 1 positions.
"""

from __future__ import annotations

import math
from typing import Callable, List

import numpy as np
import tensorflow as tf

from latmix_tf.evaluation.autoattack import common

THRESHOLDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def window_sizes(image_shape, norm: str, p_init: float = 0.8) -> List[int]:
  """Window side s for each level j of the p schedule (p = p_init / 2^j)."""
  h, w, c = image_shape
  sizes = []
  for level in range(len(THRESHOLDS) + 1):
    s = int(round(math.sqrt(p_init / 2 ** level * h * w * c / c)))
    if norm == "Linf":
      s = max(s, 1)
    else:
      s = max(s, 3)
      s += 1 - s % 2  # odd
    sizes.append(min(s, h, w))
  return sizes


def _rectangles(rows: int, cols: int) -> np.ndarray:
  """Nested rectangles around the centre, weight 1 / (k + 1)^2 for the k-th ring."""
  if rows == 0:
    return np.zeros((0, cols))
  rings = max(rows // 2 + 1, cols // 2 + 1)
  tail = np.cumsum([1.0 / (k + 1) ** 2 for k in range(rings)][::-1])[::-1]  # sum_{k' >= k}
  i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
  out = tail[np.maximum(np.abs(i - rows // 2), np.abs(j - cols // 2))]
  return out / np.linalg.norm(out)


def eta_pattern(s: int) -> np.ndarray:
  """The L2 proposal shape of side s: + rectangles on top, - below, unit L2 norm."""
  out = np.concatenate([_rectangles(s // 2, s), -_rectangles(s - s // 2, s)], 0)
  return (out / np.linalg.norm(out)).astype(np.float32)


def _init_blocks(h: int, w: int) -> np.ndarray:
  """[blocks, 2, H, W]: the L2 start's eta blocks, as is and transposed, placed on the grid."""
  s = max(h // 5, 1)
  start = (h - 5 * s) // 2
  blocks = []
  for r in range(h // s):
    for q in range(w // s):
      top, left = start + r * s, start + q * s
      if top + s <= h and left + s <= w:
        placed = np.zeros((2, h, w), np.float32)
        placed[0, top:top + s, left:left + s] = eta_pattern(s)
        placed[1, top:top + s, left:left + s] = eta_pattern(s).T
        blocks.append(placed)
  return np.stack(blocks)


def _windows(n, h, w, s, seed):
  """Per-example random s x s window masks [n, H, W, 1] and their corners."""
  u = tf.random.stateless_uniform([n, 2], seed)
  corner = tf.cast(tf.floor(u * tf.cast(tf.stack([h - s + 1, w - s + 1]), tf.float32)),
                   tf.int32)
  rows = tf.range(h)[None, :, None] - corner[:, 0, None, None]
  cols = tf.range(w)[None, None, :] - corner[:, 1, None, None]
  inside = (rows >= 0) & (rows < s) & (cols >= 0) & (cols < s)
  return tf.cast(inside, tf.float32)[..., None], rows, cols


def _signs(shape, seed):
  return tf.where(tf.random.stateless_uniform(shape, seed) < 0.5, -1.0, 1.0)


def make_square_fn(logits_fn: Callable[[tf.Tensor], tf.Tensor], image_shape,
                   norm: str = "Linf", n_queries: int = 5000, p_init: float = 0.8,
                   rescale_schedule: bool = False) -> Callable:
  """Builds the compiled Square attack `fn(x, y, eps, seed) -> dict`.

  Args:
    logits_fn: `images -> logits` (only evaluated, never differentiated).
    image_shape: (H, W, C).
    norm: "Linf" or "L2".
    n_queries: iterations after the initial query.
    p_init: initial fraction of pixels changed per proposal.
    rescale_schedule: stretch the p schedule to `n_queries` (thresholds at iteration
      t * n_queries / 10000, as the Square paper's code and ART do); AutoAttack "standard"
      uses the fixed thresholds (False).
  Returns:
    A `tf.function` returning "x_adv" (the best point where it misclassifies, else the clean
    image), "fooled" [B] (margin <= 0) and "queries" [B] (model queries used).
  """
  common.check_norm(norm)
  h, w, c = (int(v) for v in image_shape)
  sizes = window_sizes(image_shape, norm, p_init)
  size_table = tf.constant(sizes, tf.int32)
  s_max = max(sizes)
  etas = np.zeros((len(sizes), s_max, s_max), np.float32)
  for level, s in enumerate(sizes):
    etas[level, :s, :s] = eta_pattern(s)
  eta_table = tf.constant(etas)
  thresholds = tf.constant(THRESHOLDS, tf.int32)

  def start(x, eps, seed):
    n = tf.shape(x)[0]
    if norm == "Linf":
      return tf.clip_by_value(x + eps * _signs([n, 1, w, c], seed), 0.0, 1.0)
    blocks = tf.constant(_init_blocks(h, w))
    seeds = tf.random.experimental.stateless_split(seed, 2)
    nb = blocks.shape[0]
    flip = tf.cast(tf.random.stateless_uniform([n, nb], seeds[0]) < 0.5, tf.int32)
    chosen = tf.gather_nd(blocks, tf.stack([tf.broadcast_to(tf.range(nb), [n, nb]), flip], -1))
    delta = tf.einsum("bkhw,bkc->bhwc", chosen, _signs([n, nb, c], seeds[1]))
    return tf.clip_by_value(x + eps * common.steepest_direction(delta, "L2"), 0.0, 1.0)

  def propose(x, x_best, eps, s, level, seed):
    n = tf.shape(x)[0]
    seeds = tf.random.experimental.stateless_split(seed, 4)
    mask1, rows, cols = _windows(n, h, w, s, seeds[0])
    sign = _signs([n, 1, 1, c], seeds[1])
    if norm == "Linf":
      return tf.clip_by_value(mask1 * (x + eps * sign) + (1.0 - mask1) * x_best, 0.0, 1.0)
    mask2, _, _ = _windows(n, h, w, s, seeds[2])
    flip = (tf.random.stateless_uniform([n, 1, 1], seeds[3]) < 0.5)
    r, q = tf.clip_by_value(rows, 0, s_max - 1), tf.clip_by_value(cols, 0, s_max - 1)
    r, q = tf.broadcast_to(r, [n, h, w]), tf.broadcast_to(q, [n, h, w])
    idx = tf.stack([tf.where(flip, q, r), tf.where(flip, r, q)], -1)
    pattern = tf.gather_nd(eta_table[level], idx)[..., None] * mask1
    delta = x_best - x
    both = tf.maximum(mask1, mask2)

    def window_norm(t):  # per example and channel, [n, 1, 1, c]
      return tf.sqrt(tf.reduce_sum(tf.square(t), axis=[1, 2], keepdims=True))

    new = pattern * sign + delta * mask1 / (1e-12 + window_norm(delta * mask1))
    budget = tf.sqrt(tf.maximum(tf.square(eps) - tf.square(common.per_example(
        common.flat_norm(delta, "L2"), x)), 0.0) / c + tf.square(window_norm(delta * both)))
    delta = delta * (1.0 - both) + new / (1e-12 + window_norm(new)) * budget
    return tf.clip_by_value(x + eps * common.steepest_direction(delta, "L2"), 0.0, 1.0)

  @tf.function(input_signature=[common.image_spec(image_shape), tf.TensorSpec([None], tf.int32),
                                tf.TensorSpec([], tf.float32), tf.TensorSpec([2], tf.int64)])
  def run(x, y, eps, seed):
    n = tf.shape(x)[0]
    x_best = start(x, eps, tf.random.experimental.stateless_fold_in(seed, 1 << 30))
    margin = common.margin(logits_fn(x_best), y)
    queries = tf.ones([n], tf.int32)

    def body(i, x_best, margin, queries):
      idx = tf.cast(tf.where(margin > 0)[:, 0], tf.int32)
      xs, xb, ys, ms = (tf.gather(t, idx) for t in (x, x_best, y, margin))
      it = (i * 10000) // n_queries if rescale_schedule else i
      level = tf.reduce_sum(tf.cast(thresholds < it, tf.int32))
      x_new = propose(xs, xb, eps, size_table[level], level,
                      tf.random.experimental.stateless_fold_in(seed, i))
      m_new = common.margin(logits_fn(x_new), ys)
      better = m_new < ms
      x_best = common.scatter_rows(x_best, idx, common.rows_where(better, x_new, xb))
      margin = common.scatter_rows(margin, idx, tf.where(better, m_new, ms))
      queries = common.scatter_rows(queries, idx, tf.gather(queries, idx) + 1)
      return i + 1, x_best, margin, queries

    def cond(i, x_best, margin, queries):
      del x_best, queries
      return tf.logical_and(i < n_queries, tf.reduce_any(margin > 0))

    _, x_best, margin, queries = tf.while_loop(
        cond, body, (tf.constant(0), x_best, margin, queries))
    fooled = margin <= 0
    return {"x_adv": common.rows_where(fooled, x_best, x), "fooled": fooled,
            "queries": queries}

  return run
