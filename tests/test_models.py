"""Classifier shapes and the block interface used by manifold mixup."""

import numpy as np
import pytest
import tensorflow as tf

from latmix_tf.config import ModelConfig
from latmix_tf.models.classifiers import build_classifier


@pytest.mark.parametrize("cfg,shape", [(ModelConfig("cnn", (8, 16), 32), (28, 28, 1)),
                                       (ModelConfig("resnet", (8, 16, 32)), (32, 32, 3))])
def test_shapes_and_block_split(cfg, shape):
  model = build_classifier(cfg, shape)
  x = tf.random.stateless_uniform([3, *shape], [1, 2])
  logits = model(x)
  assert logits.shape == (3, 10)
  for k in range(model.num_blocks + 1):
    h = model.forward_to(x, k)
    np.testing.assert_allclose(model.forward_from(h, k), logits, atol=1e-5)
  assert model.features(x).shape[0] == 3 and len(model.features(x).shape) == 2


def test_unknown_arch():
  with pytest.raises(ValueError, match="valid"):
    build_classifier(ModelConfig("vit"), (28, 28, 1))
