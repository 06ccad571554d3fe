"""Classifiers as ordered lists of blocks.

Both classifiers expose `blocks`, so the forward pass can be split at any block boundary:
`forward_to(x, k)` runs blocks[:k] and `forward_from(h, k)` runs blocks[k:]. Manifold mixup
(Verma et al. 2018) mixes hidden states at such a boundary (k = 0 is the input itself), and
the penultimate features (`features`) feed the Fréchet distance and the inversion loss.
"""

from __future__ import annotations

from typing import List, Sequence

import keras
import tensorflow as tf
from keras import layers

from latmix_tf.config import ModelConfig


class BlockClassifier(keras.Model):
  """Base class: a classifier that is the composition of `self.blocks`."""

  blocks: List[keras.layers.Layer]

  def call(self, x, training=False):
    return self.forward_from(x, 0, training=training)

  def forward_to(self, x, k: int, training=False):
    """Hidden state after the first `k` blocks (k = 0 returns the input)."""
    for block in self.blocks[:k]:
      x = block(x, training=training)
    return x

  def forward_from(self, h, k: int, training=False):
    """Finishes the forward pass from the hidden state `h` at boundary `k`: logits."""
    for block in self.blocks[k:]:
      h = block(h, training=training)
    return h

  def features(self, x, training=False):
    """Penultimate representation (input of the final linear layer)."""
    return self.forward_to(x, len(self.blocks) - 1, training=training)

  @property
  def num_blocks(self) -> int:
    return len(self.blocks)


def _conv_bn_relu(filters: int, name: str, pool: bool) -> keras.Sequential:
  seq = [layers.Conv2D(filters, 3, padding="same", use_bias=False,
                       kernel_initializer="he_normal"),
         layers.BatchNormalization(), layers.ReLU()]
  if pool:
    seq.append(layers.MaxPooling2D())
  return keras.Sequential(seq, name=name)


class SmallCNN(BlockClassifier):
  """CNN for 28x28 images: conv-BN-ReLU stages (max-pooled), a dense block, a linear head.

  Blocks: one per conv stage, then `dense` (flatten, dropout, dense, ReLU, dropout), then
  `head` (logits). With the default widths (32, 64) the manifold-mixup boundaries
  {0, 1, 2} are the input, the 14x14x32 map and the 7x7x64 map.
  """

  def __init__(self, widths: Sequence[int] = (32, 64), dense_units: int = 128,
               dropout: float = 0.3, num_classes: int = 10, **kwargs):
    super().__init__(**kwargs)
    self.blocks = [_conv_bn_relu(w, f"stage{i}", pool=i < 2) for i, w in enumerate(widths)]
    self.blocks.append(keras.Sequential([
        layers.Flatten(), layers.Dropout(dropout), layers.Dense(dense_units),
        layers.ReLU(), layers.Dropout(dropout)], name="dense"))
    self.blocks.append(layers.Dense(num_classes, name="head"))


class PreActBlock(layers.Layer):
  """Pre-activation residual block (He et al. 2016): BN-ReLU-conv-BN-ReLU-conv + shortcut."""

  def __init__(self, filters: int, stride: int, **kwargs):
    super().__init__(**kwargs)
    self.bn1, self.bn2 = layers.BatchNormalization(), layers.BatchNormalization()
    self.conv1 = layers.Conv2D(filters, 3, stride, padding="same", use_bias=False,
                               kernel_initializer="he_normal")
    self.conv2 = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                               kernel_initializer="he_normal")
    self.filters, self.stride = filters, stride
    self.shortcut = None

  def build(self, input_shape):
    if self.stride != 1 or input_shape[-1] != self.filters:
      self.shortcut = layers.Conv2D(self.filters, 1, self.stride, use_bias=False)

  def call(self, x, training=False):
    out = tf.nn.relu(self.bn1(x, training=training))
    skip = self.shortcut(out) if self.shortcut is not None else x
    out = self.conv1(out)
    out = self.conv2(tf.nn.relu(self.bn2(out, training=training)))
    return out + skip


class PreActResNet(BlockClassifier):
  """Compact pre-activation ResNet for 32x32x3 (one residual block per stage by default).

  Blocks: stem conv, one block per stage (stride 2 from the second stage), then
  `pool` (BN-ReLU-global average pool) and `head` (logits).
  """

  def __init__(self, widths: Sequence[int] = (32, 64, 128), blocks_per_stage: int = 1,
               num_classes: int = 10, **kwargs):
    super().__init__(**kwargs)
    self.blocks = [layers.Conv2D(widths[0], 3, padding="same", use_bias=False, name="stem")]
    for i, w in enumerate(widths):
      stage = [PreActBlock(w, 2 if (i > 0 and j == 0) else 1) for j in range(blocks_per_stage)]
      self.blocks.append(keras.Sequential(stage, name=f"stage{i}"))
    self.blocks.append(keras.Sequential([layers.BatchNormalization(), layers.ReLU(),
                                         layers.GlobalAveragePooling2D()], name="pool"))
    self.blocks.append(layers.Dense(num_classes, name="head"))


def build_classifier(cfg: ModelConfig, image_shape) -> BlockClassifier:
  """Builds (and calls once, so variables exist) the classifier named by `cfg.arch`."""
  if cfg.arch == "cnn":
    model = SmallCNN(cfg.widths, cfg.dense_units, cfg.dropout, cfg.num_classes)
  elif cfg.arch == "resnet":
    model = PreActResNet(cfg.widths, num_classes=cfg.num_classes)
  else:
    raise ValueError(f"Unknown classifier arch {cfg.arch!r}; valid: 'cnn', 'resnet'.")
  model(tf.zeros([1, *image_shape]), training=False)
  return model
