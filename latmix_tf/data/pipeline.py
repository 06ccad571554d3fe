"""tf.data pipelines: fixed train/validation split, seeded per-epoch shuffling, augmentation.

Shuffling is done on *indices* with a permutation derived from (seed, epoch), and
augmentation uses stateless random ops keyed by (seed, epoch, batch). So epoch `e` yields
exactly the same batches whether the run started at epoch 0 or was resumed from a
checkpoint at epoch `e` — which is what makes kill-and-resume bitwise repeatable.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from latmix_tf.config import DataConfig
from latmix_tf.data.sources import Arrays
from latmix_tf.steps import epoch_order

SPLIT_SEED = 20171101
AUGMENTATIONS = ("none", "flip", "shift", "shift_flip")  # the validation split never changes with the run's seed


@dataclasses.dataclass(frozen=True)
class Splits:
  """uint8 arrays of the train / validation / test splits actually used."""
  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  fingerprint: str
  # "canonical" | "custom" | "unverified" (`Arrays.integrity`): record it with the fingerprint.
  data_integrity: str = "unverified"


def make_splits(arrays: Arrays, cfg: DataConfig) -> Splits:
  """Carves the validation set from the training set and applies smoke-scale limits."""
  n = len(arrays.x_train)
  perm = np.random.default_rng(SPLIT_SEED).permutation(n)
  val_size = min(cfg.val_size, n // 5)
  val_idx, train_idx = np.sort(perm[:val_size]), np.sort(perm[val_size:])
  if cfg.train_limit is not None:
    train_idx = train_idx[:cfg.train_limit]
    val_idx = val_idx[:max(cfg.train_limit // 4, 1)]
  test_n = len(arrays.x_test) if cfg.test_limit is None else cfg.test_limit
  return Splits(arrays.x_train[train_idx], arrays.y_train[train_idx],
                arrays.x_train[val_idx], arrays.y_train[val_idx],
                arrays.x_test[:test_n], arrays.y_test[:test_n],
                arrays.info.num_classes, arrays.fingerprint, arrays.integrity)


def to_float(images):
  """uint8 [0, 255] -> float32 [0, 1], the input convention of every model and SavedModel.

  The one image conversion of latmix: a NumPy array stays NumPy and a tensor stays a
  tensor; images that are already float are taken to be in [0, 1] and only cast.
  """
  if isinstance(images, np.ndarray):
    return (images.astype(np.float32) / np.float32(255.0) if images.dtype == np.uint8
            else images.astype(np.float32, copy=False))
  images = tf.convert_to_tensor(images)
  if images.dtype == tf.uint8:
    return tf.cast(images, tf.float32) / 255.0
  return tf.cast(images, tf.float32)


def _augment(x: tf.Tensor, seed: tf.Tensor, flip: bool, pad: int) -> tf.Tensor:
  """Random integer translation by up to `pad` pixels (reflect fill) and optional h-flip.

  One batched projective-transform op (nearest neighbour, so pixels are moved, not
  interpolated) instead of a per-image crop loop: it keeps augmentation off the critical
  path on 2 CPU cores.
  """
  n = tf.shape(x)[0]
  if pad == 0:
    coin = tf.random.stateless_uniform([n, 1, 1, 1], seed + 1) < 0.5
    return tf.where(coin, tf.reverse(x, axis=[2]), x) if flip else x
  shifts = tf.cast(tf.random.stateless_uniform([n, 2], seed, -pad, pad + 1, dtype=tf.int32),
                   tf.float32)
  ones, zeros = tf.ones([n]), tf.zeros([n])
  # Output pixel (r, c) samples input (r + dy, c + dx).
  transforms = tf.stack([ones, zeros, shifts[:, 0], zeros, ones, shifts[:, 1], zeros, zeros],
                        axis=1)
  x = tf.raw_ops.ImageProjectiveTransformV3(
      images=x, transforms=transforms, output_shape=tf.shape(x)[1:3], fill_value=0.0,
      interpolation="NEAREST", fill_mode="REFLECT")
  if flip:
    coin = tf.random.stateless_uniform([n, 1, 1, 1], seed + 1) < 0.5
    x = tf.where(coin, tf.reverse(x, axis=[2]), x)
  return x


def train_dataset(splits: Splits, cfg: DataConfig, seed: int, epoch: int,
                  steps: Optional[int] = None) -> tf.data.Dataset:
  """Batches of (float images in [0,1], one-hot labels) for one epoch.

  Args:
    splits: data splits.
    cfg: data config (batch size, augmentation).
    seed: run seed.
    epoch: epoch index; with `seed` it fixes the order and augmentation of the epoch.
    steps: optional cap on the number of batches.
  """
  n = len(splits.x_train)
  perm = epoch_order(seed, epoch, n)
  x_all = tf.constant(splits.x_train)
  y_all = tf.constant(splits.y_train)
  batch = min(cfg.batch_size, n)
  if cfg.augment not in AUGMENTATIONS:
    raise ValueError(f"Unknown augment {cfg.augment!r}; valid: {', '.join(AUGMENTATIONS)}.")
  flip = "flip" in cfg.augment
  pad = (4 if splits.x_train.shape[1] >= 32 else 2) if "shift" in cfg.augment else 0

  def load(step, idx):
    x = to_float(tf.gather(x_all, idx))
    if cfg.augment != "none":
      x = _augment(x, tf.stack([tf.cast(seed, tf.int64) * 1000003 + epoch,
                                tf.cast(step, tf.int64)]), flip, pad)
    y = tf.one_hot(tf.gather(y_all, idx), splits.num_classes)
    return x, y

  ds = tf.data.Dataset.from_tensor_slices(perm).batch(batch, drop_remainder=True)
  if steps is not None:
    ds = ds.take(steps)
  return ds.enumerate().map(load, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(x: np.ndarray, y: np.ndarray, num_classes: int,
                 batch_size: int = 500) -> tf.data.Dataset:
  """Ordered, unaugmented batches of (float images, one-hot labels)."""
  ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
  return ds.map(lambda a, b: (to_float(a), tf.one_hot(b, num_classes)),
                num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
