"""SavedModel export: signature, metadata, round trip against the Keras model."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from latmix_tf import export
from latmix_tf.config import ModelConfig
from latmix_tf.models.classifiers import build_classifier


@pytest.mark.parametrize("cfg,shape", [(ModelConfig("cnn", (8, 16), 32), (28, 28, 1)),
                                       (ModelConfig("resnet", (8, 16, 32)), (32, 32, 3))])
def test_savedmodel_round_trip(tmp_path, cfg, shape):
  model = build_classifier(cfg, shape)
  path = export.export_classifier(model, str(tmp_path / "m"), shape, {"dataset": "x"})
  fn = export.load_classifier(path)
  x = tf.random.stateless_uniform([5, *shape], [3, 4])
  out = fn(images=x)
  np.testing.assert_allclose(out["logits"], model(x, training=False), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(tf.reduce_sum(out["probabilities"], -1), 1.0, rtol=1e-5)
  loaded = tf.saved_model.load(path)
  np.testing.assert_allclose(loaded.signatures["features"](images=x)["features"],
                             model.features(x), rtol=1e-5, atol=1e-5)
  meta = json.load(open(os.path.join(path, "metadata.json")))
  assert meta["dataset"] == "x" and "tensorflow" in meta["versions"]
  assert not os.path.exists(path + ".partial")


def test_load_missing_savedmodel_is_clear(tmp_path):
  with pytest.raises(FileNotFoundError, match="No SavedModel"):
    export.load_classifier(str(tmp_path))


def test_read_json_treats_missing_or_truncated_records_as_absent(tmp_path):
  path = str(tmp_path / "record.json")
  assert export.read_json(path, {}) == {}
  export.write_json_atomic(path, {"a": 1, "b": [1.5, 2]})
  assert export.read_json(path) == {"a": 1, "b": [1.5, 2]}
  with open(path) as f:
    text = f.read()
  with open(path, "w") as f:
    f.write(text[:len(text) // 2])  # a write killed halfway
  assert export.read_json(path) is None
  assert export.read_json(path, {"default": True}) == {"default": True}
