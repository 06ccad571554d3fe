"""A tiny, smooth, randomly initialised generator with the `latmix_tf.generative` interface.

The inversion tests need a generator where inversion is well posed (G injective and smooth
near the true code), so that "invert G(z*) and recover z*" is a known answer rather than a
hope; an untrained DCGAN (ReLU, batch norm) is not that. This one is a 2-layer tanh MLP
decoder d -> 7x7x8 -> 28x28x1 with a sigmoid, plus a fixed random conv layer standing in
for the discriminator features.
"""

import keras
import tensorflow as tf
from keras import layers


class TinyGenerator:
  """`decode`, `latent_dim`, `prior`, `image_shape`, `feature_fn` and `encode`."""

  def __init__(self, latent_dim=8, prior="uniform", seed=0, vae=False):
    keras.utils.set_random_seed(seed)
    self.latent_dim, self.prior, self.image_shape = latent_dim, prior, (28, 28, 1)
    init = keras.initializers.RandomNormal
    # Weights large enough that images span [0, 1] and differ clearly between codes.
    self.net = keras.Sequential([
        keras.Input((latent_dim,)),
        layers.Dense(7 * 7 * 8, activation="tanh", kernel_initializer=init(stddev=0.5)),
        layers.Reshape((7, 7, 8)),
        layers.Conv2DTranspose(8, 4, 2, padding="same", activation="tanh",
                               kernel_initializer=init(stddev=0.4)),
        layers.Conv2DTranspose(1, 4, 2, padding="same", kernel_initializer=init(stddev=0.6))])
    self.disc = keras.Sequential([keras.Input((28, 28, 1)),
                                  layers.Conv2D(4, 3, 2, padding="same", activation="tanh")])
    self.encode = None
    if vae:  # a fixed linear "posterior mean" (any deterministic map will do for the tests)
      self.enc = keras.Sequential([keras.Input((28, 28, 1)), layers.Flatten(),
                                   layers.Dense(latent_dim)])
      self.encode = lambda x: self.enc(x, training=False)

  def decode(self, z):
    return tf.sigmoid(self.net(z, training=False))

  def feature_fn(self, x):
    return [self.disc(x, training=False)]
