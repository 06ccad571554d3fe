"""DCGAN (Radford et al. 2016) for 28x28x1 and 32x32x3 images, tuned to train on a CPU.

Latent mixup decodes mixed latent codes G(lam z1 + (1-lam) z2), so it needs a generator whose
range covers the training images and a latent prior with a known support (the inversion
clips z to it, Lipton & Tripathi 2017). The choices that make this GAN train in a few CPU
epochs are the usual stabilisers: the non-saturating generator loss, batch norm in G only,
LeakyReLU + dropout in D, one-sided label smoothing of the real targets, Adam(2e-4, 0.5).

The recall term (`recon_weight` > 0). Latent mixup can only mix what G reproduces, and a GAN
is trained for precision, not recall: a plain DCGAN's range misses much of the training
set (Fashion-MNIST, d = 64: inversion stalls at ~18.5 dB PSNR however long it optimises).
With the recall term the DCGAN also owns an encoder E (the inversion encoder's
architecture) and G's loss gains recon_weight * mean ||G(E(x)) - x||^2 over real batches,
E trained on the same loss - the VAE-GAN (Larsen et al. 2016) / alpha-GAN (Rosca et al.
2017) idea without their extra discriminators. G is still sampled from the prior and judged
by D; E's codes lie in the prior's support (tanh), and E(x) is where the inversion starts.
Prior codes and E(x) go through G in one call, so G's batch norm sees both.

`DCGAN` owns both networks, both optimizers and its loss trackers (keras-io
`dcgan_overriding_train_step.py` style). Unlike that example, one training step runs G once
and scores the same fakes for the D and G updates (two tapes over one forward pass, as in
the TensorFlow DCGAN tutorial): G dominates the cost on a CPU, so this halves a step.
Noise is drawn with stateless ops keyed by (seed, step counter); the counter is a variable
in the checkpoint, so a resumed run draws the same noise as an uninterrupted one.

Under a `tf.distribute` strategy `train_step` runs once per replica: each replica takes its
rows of the noise and dropout masks one device would draw for the global batch, G's batch
norm can be synchronized over replicas, and the gradients of the (local-mean) losses are
divided by the replica count before the optimizers sum them, so 1 or N replicas make the
same update (tests/test_distributed.py).
"""

from __future__ import annotations

from typing import List, Optional

import keras
import tensorflow as tf
from keras import layers

from latmix_tf.distribute import replica_dropout, replica_rows, replicas_in_sync
from latmix_tf.models.blocks import (UpsamplingStack, conv_features, leaky_relu, plan,
                                     strided_convs)
from latmix_tf.models.encoder import InversionEncoder
from latmix_tf.models.priors import PRIORS, check_prior, sample_prior  # noqa: F401 (re-exported)


class Generator(keras.Model):
  """G: z [N, d] -> images [N, H, W, C] in [0, 1] (sigmoid output)."""

  def __init__(self, latent_dim: int, image_shape, base_filters: int = 32,
               sync_batch_norm: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.latent_dim = latent_dim
    self.image_shape = tuple(image_shape)
    self.stack = UpsamplingStack(self.image_shape, base_filters, batch_norm=True,
                                 sync_batch_norm=sync_batch_norm, name="stack")

  def call(self, z, training=False):
    return tf.sigmoid(self.stack(z, training=training))


class Discriminator(keras.Model):
  """D: images in [0,1] -> real/fake logit [N]; `features` gives its hidden activations.

  Dropout is stateless, keyed by the `seed` passed in training, so that a resumed run is
  bitwise the same as an uninterrupted one (a Keras Dropout's RNG state is not a weight
  and would not be checkpointed).
  """

  def __init__(self, image_shape, base_filters: int = 32, dropout: float = 0.3, **kwargs):
    super().__init__(**kwargs)
    self.dropout = dropout
    self.convs = strided_convs(base_filters, plan(image_shape)[1])
    self.flatten = layers.Flatten()
    self.head = layers.Dense(1, name="logit")

  def _forward(self, x, training, seed):
    dropout = None
    if training and self.dropout > 0:  # = stateless_dropout on one replica
      dropout = lambda i, h: replica_dropout(  # noqa: E731
          h, self.dropout, tf.cast(seed, tf.int64) + [0, 7919 * (i + 1)])
    h, feats = conv_features(self.convs, x, leaky_relu, between=dropout)
    return self.head(self.flatten(h))[:, 0], feats

  def call(self, x, training=False, seed=None):
    if training and seed is None:
      raise ValueError("Discriminator(training=True) needs a dropout `seed` (shape [2]).")
    return self._forward(x, training, seed)[0]

  def features(self, x, training=False) -> List[tf.Tensor]:
    """LeakyReLU activations of every conv stage (the inversion's feature loss)."""
    return self._forward(x, False, None)[1]


def _bce(logits, target: float):
  return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
      labels=tf.fill(tf.shape(logits), target), logits=logits))


class DCGAN(keras.Model):
  """The adversarial game: owns G, D, their optimizers and loss trackers.

  Attributes:
    generator, discriminator: the two networks.
    prior, latent_dim: the latent distribution G is trained on.
    step: int64 variable, the number of steps taken (keys the stateless noise).
  """

  def __init__(self, latent_dim: int, image_shape, prior: str = "uniform",
               base_filters: int = 32, real_label: float = 0.9, seed: int = 0,
               sync_batch_norm: bool = False, recon_weight: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    if recon_weight < 0:
      raise ValueError(f"recon_weight must be >= 0 (0 = plain DCGAN), got {recon_weight}.")
    self.latent_dim, self.prior = latent_dim, check_prior(prior)
    self.image_shape = tuple(image_shape)
    self.real_label, self.seed = real_label, seed
    self.recon_weight = float(recon_weight)
    self.generator = Generator(latent_dim, image_shape, base_filters, sync_batch_norm,
                               name="generator")
    self.discriminator = Discriminator(image_shape, base_filters, name="discriminator")
    # The recall term's encoder E: x -> z (tanh / linear head: codes in the prior's support).
    self.encoder = (InversionEncoder(latent_dim, prior, base_filters, seed=seed,
                                     name="gan_encoder") if self.recon_weight > 0 else None)
    self.recon_tracker = keras.metrics.Mean(name="recon_mse")  # mean ||G(E(x)) - x||^2
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
    self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
    self.d_real_tracker = keras.metrics.Mean(name="d_real")   # mean D(x) on real images
    self.d_fake_tracker = keras.metrics.Mean(name="d_fake")   # mean D(G(z)) on fakes
    self.generator(tf.zeros([1, latent_dim]))
    self.discriminator(tf.zeros([1, *self.image_shape]))
    if self.encoder is not None:
      self.encoder(tf.zeros([1, *self.image_shape]))
    self.d_optimizer = self.g_optimizer = self.e_optimizer = None

  def compile(self, d_optimizer=None, g_optimizer=None, learning_rate: float = 2e-4,
              beta_1: float = 0.5, g_learning_rate: Optional[float] = None,
              encoder_learning_rate: float = 1e-3):
    """Attaches (and builds, so a checkpoint can restore their slots) the optimizers.

    Args:
      d_optimizer, g_optimizer: optimizers to use instead of Adam(learning_rate, beta_1).
      learning_rate, beta_1: Adam of D, and of G unless `g_learning_rate` is set.
      g_learning_rate: G's step size when it differs from D's (with the recall term G can
        take larger steps: its reconstruction gradient does not oscillate like the game's).
      encoder_learning_rate: the recall term's encoder, plain Adam (beta_1 0.9) like the
        inversion encoder: E is not in the adversarial game.
    """
    super().compile()
    self.d_optimizer = d_optimizer or keras.optimizers.Adam(learning_rate, beta_1=beta_1)
    self.g_optimizer = g_optimizer or keras.optimizers.Adam(g_learning_rate or learning_rate,
                                                            beta_1=beta_1)
    self.d_optimizer.build(self.discriminator.trainable_variables)
    self.g_optimizer.build(self.generator.trainable_variables)
    if self.encoder is not None:
      self.e_optimizer = keras.optimizers.Adam(encoder_learning_rate)
      self.e_optimizer.build(self.encoder.trainable_variables)

  @property
  def metrics(self):
    trackers = [self.d_loss_tracker, self.g_loss_tracker, self.d_real_tracker,
                self.d_fake_tracker]
    return trackers + ([self.recon_tracker] if self.encoder is not None else [])

  def checkpoint_items(self):
    """Everything a resumed run needs: networks, optimizers and the step counter (wrapped
    for `tf.train.Checkpoint` by `latmix_tf.checkpointing`, RNG states included)."""
    names = ("generator", "discriminator", "d_optimizer", "g_optimizer") + (
        ("encoder", "e_optimizer") if self.encoder is not None else ())
    return {name: getattr(self, name) for name in names} | {"step": self.step}

  def call(self, z, training=False):
    return self.generator(z, training=training)

  def train_step(self, data):
    real = data[0] if isinstance(data, (tuple, list)) else data
    n = tf.shape(real)[0]
    seed = tf.stack([tf.cast(self.seed, tf.int64), self.step * 3])
    z = replica_rows(lambda m: sample_prior(self.prior, m, self.latent_dim, seed), n)
    replicas = replicas_in_sync()
    with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
      if self.encoder is None:
        fake = self.generator(z, training=True)
      else:  # one G pass over prior codes and E(x): shared batch statistics, one call
        both = self.generator(tf.concat([z, self.encoder(real, training=True)], 0),
                              training=True)
        fake, recon = both[:n], both[n:]
      real_logits = self.discriminator(real, training=True, seed=seed + [0, 1])
      fake_logits = self.discriminator(fake, training=True, seed=seed + [0, 2])
      d_loss = _bce(real_logits, self.real_label) + _bce(fake_logits, 0.0)
      g_loss = _bce(fake_logits, 1.0)  # non-saturating: maximise log D(G(z))
      g_total = g_loss
      if self.encoder is not None:
        recon_mse = tf.reduce_mean(tf.square(recon - tf.cast(real, recon.dtype)))
        g_total = g_loss + self.recon_weight * recon_mse
      # The optimizers sum the replicas' gradients: each replica's mean counts 1/replicas.
      d_obj, g_obj = (d_loss / replicas, g_total / replicas) if replicas > 1 else (d_loss,
                                                                                  g_total)
    d_vars = self.discriminator.trainable_variables
    g_vars = self.generator.trainable_variables
    e_vars = self.encoder.trainable_variables if self.encoder is not None else []
    self.d_optimizer.apply_gradients(zip(d_tape.gradient(d_obj, d_vars), d_vars))
    grads = g_tape.gradient(g_obj, g_vars + e_vars)
    self.g_optimizer.apply_gradients(zip(grads[:len(g_vars)], g_vars))
    if self.encoder is not None:
      self.e_optimizer.apply_gradients(zip(grads[len(g_vars):], e_vars))
      self.recon_tracker.update_state(recon_mse)
    self.step.assign_add(1)
    self.d_loss_tracker.update_state(d_loss)
    self.g_loss_tracker.update_state(g_loss)
    self.d_real_tracker.update_state(tf.sigmoid(real_logits))
    self.d_fake_tracker.update_state(tf.sigmoid(fake_logits))
    return {m.name: m.result() for m in self.metrics}
