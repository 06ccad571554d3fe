"""Latent-Mixup: train on images decoded from mixed latent codes of training pairs.

For a pair (i, j) of training images with latent codes z_i, z_j from the latent bank
(inversions of the images), λ ~ Beta(α, α) gives the code z = λ·z_i + (1−λ)·z_j, the
image G(z) from the frozen generator, and the soft label λ·y_i + (1−λ)·y_j.

Batches: each step trains on the usual real batch (B images, one-hot labels) plus
m = round(B·f / (1−f)) latent-mixed examples, f = `mixed_fraction` of the combined batch.
The loop averages the per-example loss over B (the global batch), so the rows of the
combined batch get label mass B / (B + m): the loss is the plain mean over all B + m rows
and the real data are still seen once per epoch (see training/loop.py on label mass).

Where decoding happens is a config choice (`decode_in`):
  "pipeline": a `tf.data` map decodes z -> G(z) while the previous step trains;
  "step":     the pipeline yields (z_i, z_j, λ) and the compiled train step decodes.
`benchmarks/epoch_time.py` measures both against ERM. Measured on 2 quiet CPU cores
(Fashion-MNIST, batch 128 + 32 mixed): ERM 23.0 s/epoch, decoding in the step 41.2 s
(1.80x), decoding in the pipeline 30.5 s (1.33x): tf.data decodes the next batch on the
second core while the step trains, so "pipeline" is the default.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from latmix_tf.config import LatentMixupConfig  # noqa: F401 (re-exported; defined with the configs)
from latmix_tf import mixing
from latmix_tf.training.method import Method

# "self" pairs every image with itself: z = z_i whatever λ, label one-hot - training on the
# generator's reconstructions G(z_i), the control that separates "the images are smooth
# generator outputs" from "the images interpolate between classes".
PAIRINGS = ("random", "different_class", "same_class", "self")


def num_mixed(batch_size: int, fraction: float) -> int:
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"mixed_fraction must be in [0, 1), got {fraction}.")
  return max(int(round(batch_size * fraction / (1.0 - fraction))), 1 if fraction > 0 else 0)


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


class LatentMixup(Method):
  """The Latent-Mixup method of the single training loop.

  Built by `latmix_tf.latent.build_latent_mixup`, which runs the generator, encoder and bank
  stages first; this class only needs their results.

  Args:
    cfg: `LatentMixupConfig`.
    gen: generative-model handle (`latmix_tf.generative.GenerativeModel`): `decode(z)`.
    bank: the `LatentBank` of the training split (z and labels in training-split order).
    batch_size: the real batch size B of the loop.
  """

  name = "latent_mixup"

  def __init__(self, cfg: LatentMixupConfig, gen=None, bank=None, batch_size: int = 128,
               upstream: Optional[Dict[str, str]] = None,
               reporter: Optional[Callable[["LatentMixup", str], Dict]] = None):
    if gen is None or bank is None:
      raise ValueError("LatentMixup needs the generator and the latent bank: build it with "
                       "latmix_tf.latent.build_latent_mixup, which runs those stages.")
    if cfg.decode_in not in ("pipeline", "step"):
      raise ValueError(f"decode_in must be 'pipeline' or 'step', got {cfg.decode_in!r}.")
    if cfg.input_mixup_alpha < 0:
      raise ValueError(f"input_mixup_alpha must be >= 0 (0 = off), got {cfg.input_mixup_alpha}.")
    self.cfg, self.gen, self.bank = cfg, gen, bank
    self.upstream, self._reporter = dict(upstream or {}), reporter
    self.m = num_mixed(batch_size, cfg.mixed_fraction)
    self.real_weight = batch_size / (batch_size + self.m)

  def report(self, out_dir: str) -> Dict:
    return self._reporter(self, out_dir) if self._reporter else super().report(out_dir)

  def build(self, model, num_classes: int) -> None:
    self.num_classes = num_classes
    self.sampler = PairSampler(self.bank.labels, num_classes, self.cfg.pairs)

  def mixed_stream(self, epoch: int, seed: int) -> tf.data.Dataset:
    decode = self.gen.decode if self.cfg.decode_in == "pipeline" else None
    return latent_mix_dataset(self.bank.z, self.sampler, self.num_classes, self.m,
                              self.cfg.alpha, seed, epoch, decode)

  def transform_dataset(self, ds: tf.data.Dataset, epoch: int, seed: int) -> tf.data.Dataset:
    mixed = self.mixed_stream(epoch, seed)
    key = "images" if self.cfg.decode_in == "pipeline" else "z"
    combined = tf.data.Dataset.zip((ds, mixed)).map(
        lambda real, mix: ((real[0], mix[key]), (real[1], mix["labels"])))
    return combined.prefetch(2)

  def prepare_batch(self, model, x, y, seed) -> Tuple[tf.Tensor, tf.Tensor]:
    (x_real, extra), (y_real, y_mixed) = x, y
    if self.cfg.input_mixup_alpha > 0:  # the ablation: input mixup on the real part too
      lam, perm = mixing.draw_lambda_and_partner(tf.shape(x_real)[0],
                                                 self.cfg.input_mixup_alpha, seed)
      x_real, y_real = mixing.mix_with_partner(x_real, tf.cast(y_real, tf.float32), lam, perm)
    x_mixed = extra if self.cfg.decode_in == "pipeline" else self.gen.decode(extra)
    x_all = tf.concat([x_real, tf.cast(x_mixed, x_real.dtype)], axis=0)
    y_all = tf.concat([y_real, y_mixed], axis=0) * self.real_weight
    return x_all, y_all


def mixed_examples(method: LatentMixup, n: int, seed: int = 0) -> Dict[str, np.ndarray]:
  """`n` latent-mixed examples with their sources, λ and soft labels (for reports/tests)."""
  stream = latent_mix_dataset(method.bank.z, method.sampler, method.num_classes, n,
                              method.cfg.alpha, seed, 0, method.gen.decode)
  return {k: v.numpy() for k, v in next(iter(stream)).items()}
