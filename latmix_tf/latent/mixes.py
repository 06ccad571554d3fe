"""Latent mixes of a bank of codes: pair sampling, λ, the mixed code and its soft label.

Why here, on the latent side: the training method that trains on the mixes
(`training/latent_mixup.py`), on-manifold adversarial training's stream of bank codes and the
measurements of what the mixes look like (`latent/report.py`, `latent/mix_quality.py`) draw
the very same pairs from the very same stateless stream, and none of the measuring code may
depend on the training side.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import tensorflow as tf

from latmix_tf import mixing

# "self" pairs every image with itself: z = z_i whatever λ, label one-hot - training on the
# generator's reconstructions G(z_i), the control that separates "the images are smooth
# generator outputs" from "the images interpolate between classes".
PAIRINGS = ("random", "different_class", "same_class", "self")


class PairSampler:
  """Stateless sampling of index pairs (i, j) from a labelled bank.

  Pairs restricted by class use per-class index tables: j is drawn uniformly within the
  class of i ("same_class"), or within a class drawn uniformly among the other classes
  ("different_class"); "self" returns j = i (reconstructions only).
  """

  def __init__(self, labels: np.ndarray, num_classes: int, pairs: str = "random"):
    if pairs not in PAIRINGS:
      raise ValueError(f"Unknown pairs {pairs!r}; valid: {', '.join(PAIRINGS)}.")
    labels = np.asarray(labels, np.int64)
    self.pairs, self.n, self.num_classes = pairs, len(labels), num_classes
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=num_classes)
    present = counts > 0
    if pairs == "different_class" and present.sum() < 2:
      raise ValueError("pairs='different_class' needs at least two classes in the bank.")
    self.labels = tf.constant(labels)
    self.order = tf.constant(order)
    self.counts = tf.constant(counts)
    self.starts = tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]))
    self.present = tf.constant(np.flatnonzero(present))

  def _within(self, classes, u):
    pos = tf.cast(tf.floor(u * tf.cast(tf.gather(self.counts, classes), tf.float32)), tf.int64)
    pos = tf.minimum(pos, tf.gather(self.counts, classes) - 1)
    return tf.gather(self.order, tf.gather(self.starts, classes) + pos)

  def sample(self, m: int, seed) -> Tuple[tf.Tensor, tf.Tensor]:
    """Returns int64 [m] indices i and j."""
    s = mixing.split_seed(seed, 3)
    i = tf.random.stateless_uniform([m], s[0], 0, self.n, dtype=tf.int64)
    if self.pairs == "random":
      return i, tf.random.stateless_uniform([m], s[1], 0, self.n, dtype=tf.int64)
    if self.pairs == "self":
      return i, i
    yi = tf.gather(self.labels, i)
    if self.pairs == "same_class":
      classes = yi
    else:
      k = tf.cast(tf.size(self.present), tf.int64)
      # Uniform over the present classes other than y_i: draw among k-1 and skip y_i.
      r = tf.random.stateless_uniform([m], s[1], 0, k - 1, dtype=tf.int64)
      rank_yi = tf.argmax(tf.cast(tf.equal(self.present[None, :], yi[:, None]), tf.int64), 1)
      classes = tf.gather(self.present, tf.where(r >= rank_yi, r + 1, r))
    return i, self._within(classes, tf.random.stateless_uniform([m], s[2]))


def latent_mix_dataset(z_bank: np.ndarray, sampler: PairSampler, num_classes: int, m: int,
                       alpha: float, seed: int, epoch: int, decode=None) -> tf.data.Dataset:
  """An endless stream of latent-mixed examples, one element per training step.

  Each element is a dict with the pair indices "i", "j", "lam", the soft "labels" and,
  when `decode` is given (decode_in="pipeline"), the decoded "images"; otherwise the
  mixed code "z" for the train step to decode. Element s of epoch e depends only on
  (seed, e, s), so resumed runs draw the same pairs.
  """
  z_all = tf.constant(np.asarray(z_bank, np.float32))
  labels = sampler.labels

  def make(step):
    base = tf.stack([tf.cast(seed, tf.int64) * 1000003 + epoch, 7 * step + 3])
    s = mixing.split_seed(base, 2)
    i, j = sampler.sample(m, s[0])
    lam = mixing.sample_lambda([m], alpha, s[1])
    z = mixing.mix(tf.gather(z_all, i), tf.gather(z_all, j), lam)
    y = mixing.mix_labels(tf.one_hot(tf.gather(labels, i), num_classes),
                          tf.one_hot(tf.gather(labels, j), num_classes), lam)
    out = {"i": i, "j": j, "lam": lam, "labels": y, "z": z}
    if decode is not None:
      out["images"] = decode(z)
    return out

  return tf.data.Dataset.range(1 << 40).map(make, num_parallel_calls=1)


def mixed_examples(gen, bank, sampler: PairSampler, num_classes: int, n: int, alpha: float,
                   seed: int = 0) -> Dict[str, np.ndarray]:
  """`n` decoded latent mixes with their sources, λ and soft labels (reports, tests): the first
  element of epoch 0's stream, as training would draw it."""
  stream = latent_mix_dataset(bank.z, sampler, num_classes, n, alpha, seed, 0, gen.decode)
  return {k: v.numpy() for k, v in next(iter(stream)).items()}
