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

import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from latmix_tf import mixing
from latmix_tf.generative.config import GeneratorConfig
from latmix_tf.latent.config import InversionConfig
from latmix_tf.latent import mixes
from latmix_tf.latent.mixes import PairSampler, latent_mix_dataset
from latmix_tf.training.method import Method


@dataclasses.dataclass(frozen=True)
class LatentMixupConfig:
  """Latent-Mixup hyper-parameters, and the generator / inversion that feed it.

  Attributes:
    alpha: Beta(α, α) concentration of λ.
    mixed_fraction: share f of latent-mixed examples in each (real + mixed) batch.
    pairs: "random" (any pair, the method's default), "different_class", "same_class" or
      "self" (j = i: the decoded reconstructions G(z_i) with one-hot labels, the λ = 1 control).
    decode_in: "pipeline" (tf.data decodes) or "step" (the train step decodes).
    generator: the generative model (DCGAN or VAE).
    inversion: how training images are turned into latent codes.
    input_mixup_alpha: > 0 also mixes the *real* part of each batch in pixel space (input
      mixup, Zhang et al. 2017, λ ~ Beta(a, a), partners within the batch): the ablation
      "Latent-Mixup + mixup"; 0 (default) leaves the real images as they are.
  """
  name: str = "latent_mixup"
  alpha: float = 1.0
  mixed_fraction: float = 0.2
  pairs: str = "random"
  decode_in: str = "pipeline"
  generator: GeneratorConfig = GeneratorConfig()
  inversion: InversionConfig = InversionConfig()
  input_mixup_alpha: float = 0.0


def num_mixed(batch_size: int, fraction: float) -> int:
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"mixed_fraction must be in [0, 1), got {fraction}.")
  return max(int(round(batch_size * fraction / (1.0 - fraction))), 1 if fraction > 0 else 0)


class LatentMixup(Method):
  """The Latent-Mixup method of the single training loop.

  A batch source (see `training/compose.py`): it adds rows to the batch and leaves the loss
  to the step it is composed with (cross-entropy alone, or an adversarial step). It declares
  that it consumes the generator and the latent bank (`registry.METHODS`); the runner builds
  those stages first (`latent/stages.py`) and the registry's factory hands them over.

  Args:
    cfg: `LatentMixupConfig`.
    gen: generative-model handle (`latmix_tf.generative.GenerativeModel`): `decode(z)`.
    bank: the `LatentBank` of the training split (z and labels in training-split order).
    batch_size: the real batch size B of the loop.
  """

  name = "latent_mixup"

  def __init__(self, cfg: LatentMixupConfig, gen=None, bank=None, batch_size: int = 128,
               upstream: Optional[Dict[str, str]] = None):
    if gen is None or bank is None:
      raise ValueError("LatentMixup needs the generator and the latent bank: build it with "
                       "latmix_tf.training.build_method and the inputs of the runner's latent "
                       "stages (latmix_tf.latent.stages.build_latent_stages).")
    if cfg.decode_in not in ("pipeline", "step"):
      raise ValueError(f"decode_in must be 'pipeline' or 'step', got {cfg.decode_in!r}.")
    if cfg.input_mixup_alpha < 0:
      raise ValueError(f"input_mixup_alpha must be >= 0 (0 = off), got {cfg.input_mixup_alpha}.")
    self.cfg, self.gen, self.bank = cfg, gen, bank
    self.upstream = dict(upstream or {})
    self.m = num_mixed(batch_size, cfg.mixed_fraction)
    self.real_weight = batch_size / (batch_size + self.m)

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
  """`n` latent-mixed examples of `method`'s pairs and α (`latent.mixes.mixed_examples`)."""
  return mixes.mixed_examples(method.gen, method.bank, method.sampler, method.num_classes, n,
                              method.cfg.alpha, seed)
