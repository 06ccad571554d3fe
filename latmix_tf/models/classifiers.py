"""Classifiers as ordered lists of blocks.

Both classifiers expose `blocks`, so the forward pass can be split at any block boundary:
`forward_to(x, k)` runs blocks[:k] and `forward_from(h, k)` runs blocks[k:]. Manifold mixup
(Verma et al. 2018) mixes hidden states at such a boundary (k = 0 is the input itself), and
the penultimate features (`features`) feed the Fréchet distance and the inversion loss.
"""

from __future__ import annotations

from typing import Callable, List, Sequence

import keras
import tensorflow as tf
from keras import layers

from latmix_tf.config import ModelConfig
from latmix_tf.distribute import replica_dropout


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


class ReplicaDropout(layers.Dropout):
  """Keras `Dropout` whose masks do not depend on the number of `tf.distribute` replicas.

  Keras' Dropout draws from one seed state that every replica shares, so under
  `MirroredStrategy` all replicas drop the same units of their rows; here each replica keeps
  its rows of the mask one device would draw for the global batch. With one replica it is
  bit-for-bit Keras' Dropout (same seed state, same op), so checkpoints are unchanged.
  """

  def call(self, inputs, training=False):
    if not training or self.rate == 0:
      return inputs
    seed = self.seed_generator.next()
    if seed.dtype != tf.int32:  # as keras.random: stateless ops take int32 seeds
      seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
    return replica_dropout(inputs, self.rate, seed)


def rewind_dropout(model: keras.Model) -> Callable[[], None]:
  """Records every dropout layer's seed state now; calling the result puts it back.

  Why: two training-mode passes draw independent dropout masks. A loss that compares the
  two passes' outputs (TRADES' KL between f(x) and f(x')) then also penalises what the masks
  change, and at a large weight that noise term alone pulls the network to a constant output
  (a constant has KL 0 under any mask). Rewinding between the passes gives the second pass the
  first one's seeds, hence the same masks for inputs of the same shape, so the comparison sees
  the input perturbation alone. Afterwards the seed states have advanced by one pass.

    rewind = rewind_dropout(model)
    clean = model(x, training=True)
    rewind()
    adv = model(x_adv, training=True)      # the masks of the clean pass
  """
  # Keras 3 lists nested layers (blocks, Sequentials) through `_flatten_layers`.
  gens = [l.seed_generator for l in model._flatten_layers()  # pylint: disable=protected-access
          if isinstance(l, layers.Dropout) and getattr(l, "seed_generator", None) is not None]
  saved = [tf.identity(g.state.value) for g in gens]

  def rewind() -> None:
    for gen, state in zip(gens, saved):
      gen.state.assign(state)
  return rewind


def _batch_norm(sync: bool) -> layers.BatchNormalization:
  # synchronized=True: batch statistics over the global batch (all replicas), so the update
  # does not depend on the replica count. Used only with >1 replica: on one device Keras'
  # sync path computes the same moments with a different formula (float differences).
  return layers.BatchNormalization(synchronized=sync)


def _conv_bn_relu(filters: int, name: str, pool: bool, sync_bn: bool = False
                  ) -> keras.Sequential:
  seq = [layers.Conv2D(filters, 3, padding="same", use_bias=False,
                       kernel_initializer="he_normal"),
         _batch_norm(sync_bn), layers.ReLU()]
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
               dropout: float = 0.3, num_classes: int = 10, sync_batch_norm: bool = False,
               **kwargs):
    super().__init__(**kwargs)
    self.blocks = [_conv_bn_relu(w, f"stage{i}", pool=i < 2, sync_bn=sync_batch_norm)
                   for i, w in enumerate(widths)]
    self.blocks.append(keras.Sequential([
        layers.Flatten(), ReplicaDropout(dropout), layers.Dense(dense_units),
        layers.ReLU(), ReplicaDropout(dropout)], name="dense"))
    self.blocks.append(layers.Dense(num_classes, name="head"))


class PreActBlock(layers.Layer):
  """Pre-activation residual block (He et al. 2016): BN-ReLU-conv-BN-ReLU-conv + shortcut."""

  def __init__(self, filters: int, stride: int, sync_batch_norm: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.bn1, self.bn2 = _batch_norm(sync_batch_norm), _batch_norm(sync_batch_norm)
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
               num_classes: int = 10, sync_batch_norm: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.blocks = [layers.Conv2D(widths[0], 3, padding="same", use_bias=False, name="stem")]
    for i, w in enumerate(widths):
      stage = [PreActBlock(w, 2 if (i > 0 and j == 0) else 1, sync_batch_norm)
               for j in range(blocks_per_stage)]
      self.blocks.append(keras.Sequential(stage, name=f"stage{i}"))
    self.blocks.append(keras.Sequential([_batch_norm(sync_batch_norm), layers.ReLU(),
                                         layers.GlobalAveragePooling2D()], name="pool"))
    self.blocks.append(layers.Dense(num_classes, name="head"))


def build_classifier(cfg: ModelConfig, image_shape, sync_batch_norm: bool = False
                     ) -> BlockClassifier:
  """Builds (and calls once, so variables exist) the classifier named by `cfg.arch`.

  Args:
    cfg: architecture.
    image_shape: (H, W, C).
    sync_batch_norm: batch statistics over all replicas of a `tf.distribute` strategy (pass
      `strategy.num_replicas_in_sync > 1`); the weights are the same either way, so a model
      trained with it exports and loads like any other.
  """
  if cfg.arch == "cnn":
    model = SmallCNN(cfg.widths, cfg.dense_units, cfg.dropout, cfg.num_classes,
                     sync_batch_norm=sync_batch_norm)
  elif cfg.arch == "resnet":
    model = PreActResNet(cfg.widths, num_classes=cfg.num_classes,
                         sync_batch_norm=sync_batch_norm)
  else:
    raise ValueError(f"Unknown classifier arch {cfg.arch!r}; valid: 'cnn', 'resnet'.")
  model(tf.zeros([1, *image_shape]), training=False)
  return model
