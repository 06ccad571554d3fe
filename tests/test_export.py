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


# --- verification before reuse: damaged or foreign SavedModels ------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  model = build_classifier(ModelConfig("cnn", (8, 16), 32), (28, 28, 1))
  path = str(tmp_path_factory.mktemp("sm") / "m")
  export.export_classifier(model, path, (28, 28, 1), {"run_key": "key-a", "dataset": "fashion_mnist"})
  return path


def damaged_copy(src, tmp_path, pattern, keep=0.5):
  import glob
  import shutil
  dst = str(tmp_path / "copy")
  shutil.copytree(src, dst)
  victim, = glob.glob(os.path.join(dst, pattern))
  size = os.path.getsize(victim)
  with open(victim, "r+b") as f:
    f.truncate(int(size * keep))
  return dst


def test_verify_accepts_the_intact_model_with_its_key(exported):
  assert export.verify_saved_model(exported) is None
  assert export.verify_saved_model(exported, "key-a") is None
  meta = export.read_metadata(exported)
  assert np.asarray(meta["probe"]["logits"]).shape == (4, 10)


def test_verify_rejects_truncated_variables(exported, tmp_path):
  reason = export.verify_saved_model(
      damaged_copy(exported, tmp_path, "variables/variables.data-*"), "key-a")
  assert reason and "damaged" in reason and "\n" not in reason


def test_verify_rejects_truncated_saved_model_pb(exported, tmp_path):
  reason = export.verify_saved_model(damaged_copy(exported, tmp_path, "saved_model.pb"), "key-a")
  assert reason and "damaged" in reason and "\n" not in reason


def test_verify_rejects_another_runs_model(exported):
  reason = export.verify_saved_model(exported, "key-b")
  assert reason and "another run" in reason and "key-b" in reason


def test_verify_rejects_logits_unlike_the_recorded_ones(exported, tmp_path):
  """A model that loads but computes other logits than at export (or recorded none)."""
  dst = damaged_copy(exported, tmp_path, "fingerprint.pb", keep=1.0)
  meta = export.read_metadata(dst)
  meta["probe"]["logits"] = (np.asarray(meta["probe"]["logits"]) + 0.01).tolist()
  export.write_json_atomic(os.path.join(dst, export.METADATA_FILE), meta)
  assert "differ" in export.verify_saved_model(dst, "key-a")
  del meta["probe"]
  export.write_json_atomic(os.path.join(dst, export.METADATA_FILE), meta)
  assert "no probe logits" in export.verify_saved_model(dst, "key-a")


def test_update_metadata_keeps_the_probe(exported, tmp_path):
  dst = damaged_copy(exported, tmp_path, "fingerprint.pb", keep=1.0)
  export.update_metadata(dst, {"metrics": {"test/accuracy": 0.5}})
  assert export.verify_saved_model(dst, "key-a") is None


def test_load_damaged_model_is_one_clear_error(exported, tmp_path):
  with pytest.raises(export.SavedModelError, match="damaged"):
    export.load_classifier(damaged_copy(exported, tmp_path, "variables/variables.data-*"))


def test_cli_evaluate_on_a_damaged_model_is_one_line(exported, tmp_path):
  import subprocess
  import sys
  bad = damaged_copy(exported, tmp_path, "saved_model.pb", keep=0.3)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, os.path.join(root, "main.py"), f"--evaluate={bad}",
                         f"--workdir={tmp_path / 'wd'}"], capture_output=True, text=True,
                        timeout=300)
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
  assert lines[0].startswith("error: ") and bad in lines[0] and "damaged" in lines[0]
  assert not (tmp_path / "wd").exists()
