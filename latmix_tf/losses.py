"""The loss every side of latmix scores against: cross-entropy with soft labels.

Why its own module: training (every method's rows), the attacks of the evaluation and the
latent-space searches all maximise or minimise the same per-example loss, and none of them
should import another side's modules to get it.
"""

from __future__ import annotations

import tensorflow as tf


def soft_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Per-example cross-entropy against soft labels: -sum_c y_c log softmax(logits)_c."""
  return -tf.reduce_sum(labels * tf.nn.log_softmax(logits, axis=-1), axis=-1)
