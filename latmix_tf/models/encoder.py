"""The inversion encoder E: x -> z, a fast first guess of the latent code of an image.

Latent optimisation (Lipton & Tripathi 2017) from random starts needs hundreds of steps per
image; starting it from a learned guess E(x) needs a few. E is trained (`inversion_encoder.py`) on
pairs (G(z), z) drawn from the prior and on the reconstruction error of real images, with
the generator frozen. Its output lies in the prior's support: `tanh` for the uniform prior
U[-1,1]^d, unbounded (linear) for N(0, I). No batch normalisation: E sees batches of
generated and of real images, whose statistics differ, and must behave identically on both.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from latmix_tf.models.blocks import conv_features, leaky_relu, strided_convs
from latmix_tf.models.priors import PRIORS


class InversionEncoder(keras.Model):
  """Strided conv stack -> dense -> latent code, for 28x28xC or 32x32xC images in [0, 1].

  Spatial size halves three times (28 -> 14 -> 7 -> 4, or 32 -> 16 -> 8 -> 4), widths
  base, 2*base, 4*base, then a hidden dense layer and the linear head of size `latent_dim`.
  """

  def __init__(self, latent_dim: int, prior: str = "uniform", base_filters: int = 32,
               hidden_units: int = 256, seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    if prior not in PRIORS:
      raise ValueError(f"Unknown prior {prior!r}; valid: {PRIORS}.")
    if latent_dim < 1:
      raise ValueError(f"latent_dim must be >= 1, got {latent_dim}.")
    self.latent_dim, self.prior = latent_dim, prior
    # Seeded initialisers: the same seed gives the same encoder in any process, so a run
    # resumed from a checkpoint and an uninterrupted one agree.
    init = lambda i: keras.initializers.GlorotUniform(seed=seed * 10 + i)  # noqa: E731
    self.convs = strided_convs(base_filters, 3, init)
    self.flatten = layers.Flatten()
    self.hidden = layers.Dense(hidden_units, name="hidden", kernel_initializer=init(3))
    self.head = layers.Dense(latent_dim, name="head", kernel_initializer=init(4))

  def call(self, x, training=False):
    h, _ = conv_features(self.convs, x, leaky_relu)
    h = leaky_relu(self.hidden(self.flatten(h)))
    z = self.head(h)
    return tf.tanh(z) if self.prior == "uniform" else z


def build_encoder(latent_dim: int, prior: str, image_shape, base_filters: int = 32,
                  seed: int = 0) -> InversionEncoder:
  """Builds the encoder and calls it once so its variables exist (for checkpoint restore)."""
  encoder = InversionEncoder(latent_dim, prior, base_filters, seed=seed)
  encoder(tf.zeros([1, *image_shape]))
  return encoder
