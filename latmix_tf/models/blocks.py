"""Building blocks shared by the DCGAN, the VAE and the inversion encoder.

The three networks that read images (the discriminator D, the VAE encoder q(z|x), the
inversion encoder E) share one strided conv stack, and the two that write images (the
generator G, the VAE decoder) share one upsampling stack: the same capacity on both sides
keeps the generators' figures and inversion PSNRs comparable, and a fix to a stack reaches
every network that uses it.

The conv stack is a list of layers, not a layer of its own: each network keeps its layers
as direct attributes (`convs`), so variable names, creation order and hence initial values
under a fixed seed, and the checkpoints written with them, are those of the networks'
own definitions.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf
from keras import layers


def plan(image_shape: Sequence[int]) -> Tuple[int, int]:
  """(start size, number of x2 resolution steps) for the supported image shapes."""
  shape = tuple(image_shape)
  if shape[:2] == (28, 28):
    return 7, 2
  if shape[:2] == (32, 32):
    return 4, 3
  raise ValueError(f"Unsupported image shape {shape}; the DCGAN/VAE support 28x28xC "
                   f"(MNIST, Fashion-MNIST) and 32x32xC (CIFAR-10).")


def strided_convs(base_filters: int, depth: int,
                  init: Optional[Callable[[int], keras.initializers.Initializer]] = None
                  ) -> List[layers.Conv2D]:
  """`depth` 4x4 stride-2 convs `conv0`, `conv1`, ...: each halves H and W, widths
  base_filters * 2**i.

  Args:
    base_filters: width of the first conv.
    depth: number of convs.
    init: conv index -> kernel initializer (seeded initialisers); None: Keras' default
      Glorot uniform, drawn from the global seed.
  """
  return [layers.Conv2D(base_filters * 2 ** i, 4, 2, padding="same", name=f"conv{i}",
                        kernel_initializer=init(i) if init else "glorot_uniform")
          for i in range(depth)]


def leaky_relu(h: tf.Tensor) -> tf.Tensor:
  """leaky_relu(h, 0.2) as max(h, 0.2 h): grappler's conv+bias+LeakyRelu fusion fails
  (noisily) on the gradient of tf.nn.leaky_relu inside a tf.while_loop, where the DCGAN's
  discriminator and its recall-term encoder run."""
  return tf.maximum(h, 0.2 * h)


def conv_features(convs: Sequence[layers.Conv2D], x: tf.Tensor,
                  activation: Callable[[tf.Tensor], tf.Tensor],
                  between: Optional[Callable[[int, tf.Tensor], tf.Tensor]] = None
                  ) -> Tuple[tf.Tensor, List[tf.Tensor]]:
  """Images in [0, 1] through the conv stack: (last output, activation of every conv).

  Inputs are centred to [-1, 1] so the first conv does not start with a large bias.

  Args:
    convs: the stack (`strided_convs`).
    x: images [N, H, W, C] in [0, 1].
    activation: applied after each conv; its outputs are the features.
    between: (conv index, activation) -> the next conv's input, e.g. D's dropout, which
      the features do not see.
  """
  h, feats = x * 2.0 - 1.0, []
  for i, conv in enumerate(convs):
    h = activation(conv(h))
    feats.append(h)
    if between is not None:
      h = between(i, h)
  return h, feats


class UpsamplingStack(keras.Model):
  """Dense projection, then stride-2 transposed convs to the image: logits [N,H,W,C].

  Shared by the DCGAN generator and the VAE decoder (same capacity, comparable figures).
  Widths halve at each upsampling, ending at `base_filters` before the output conv.
  """

  def __init__(self, image_shape, base_filters: int, batch_norm: bool,
               sync_batch_norm: bool = False, **kwargs):
    super().__init__(**kwargs)
    start, ups = plan(image_shape)
    top = base_filters * 2 ** (ups - 1)
    norm = lambda: ([layers.BatchNormalization(synchronized=sync_batch_norm)]  # noqa: E731
                    if batch_norm else [])
    self.project = keras.Sequential([
        layers.Dense(start * start * top, use_bias=not batch_norm), *norm(),
        layers.ReLU(), layers.Reshape((start, start, top))], name="project")
    self.ups = []
    for i in range(ups - 1):
      width = top // 2 ** (i + 1)
      self.ups.append(keras.Sequential([
          layers.Conv2DTranspose(width, 4, 2, padding="same", use_bias=not batch_norm),
          *norm(), layers.ReLU()], name=f"up{i}"))
    self.out = layers.Conv2DTranspose(image_shape[-1], 4, 2, padding="same", name="to_image")

  def call(self, z, training=False):
    h = self.project(z, training=training)
    for block in self.ups:
      h = block(h, training=training)
    return self.out(h)
