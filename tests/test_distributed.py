"""tf.distribute: several replicas or workers give what one device gives.

* MirroredStrategy over 2 logical CPU devices vs the default strategy, same global batch:
  classifier (batch norm + dropout), DCGAN and VAE weights after the same steps, and the
  latent bank built with 2 replicas (all in one subprocess: logical devices must be set
  before TensorFlow starts, see tests/distributed_driver.py).
* MultiWorkerMirroredStrategy with 2 workers as local processes on 127.0.0.1: the latent
  bank split over the workers equals the one-process bank, a DCGAN trained on both workers
  matches one trained on one device, and `erm_fmnist` at smoke scale (2 epochs) leaves one
  SavedModel, the chief's, that evaluates like a single-worker model.
"""

import glob
import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import experiments
from latmix_tf import export
from latmix_tf.data import load_dataset, make_splits, to_float
from latmix_tf.models.classifiers import build_classifier
from latmix_tf.training import build_method, train

from distributed_driver import build_bank, generator_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "tests", "distributed_driver.py")


def _env(**extra):
  return dict(os.environ, LATMIX_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3", **extra)


@pytest.fixture(scope="module")
def mirrored(tiny_data_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("mirrored")
  proc = subprocess.run([sys.executable, DRIVER, "mirrored", str(out), tiny_data_dir],
                        capture_output=True, text=True, env=_env(), timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  with open(out / "mirrored.json") as f:
    meta = json.load(f)
  assert meta["replicas"] == 2
  return dict(np.load(out / "mirrored.npz")), meta


def _weights(result, prefix):
  out, i = [], 0
  while f"{prefix}_{i}" in result:
    out.append(result[f"{prefix}_{i}"])
    i += 1
  return out


@pytest.mark.parametrize("model", ["clf", "dcgan", "vae"])
def test_mirrored_two_replicas_match_default_strategy(mirrored, model):
  result, meta = mirrored
  one, two = _weights(result, f"{model}_default"), _weights(result, f"{model}_mirrored")
  assert len(one) == len(two) > 4
  for a, b in zip(one, two):
    # Float tolerance: synchronized batch norm sums E[x], E[x^2] across replicas where one
    # device computes the moments directly, gradients are summed in another order, and Adam
    # turns a ~1e-9 difference in a near-zero gradient into up to a step (lr = 1e-3) on that
    # weight; measured worst case 2.5e-5 in 25k weights, typical 1e-7.
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
    assert np.mean(np.abs(b - a) <= 1e-6 + 1e-5 * np.abs(a)) > 0.999
  histories = meta[f"{model}_default_history"], meta[f"{model}_mirrored_history"]
  assert len(histories[0]) == len(histories[1]) >= 1
  for h1, h2 in zip(*histories):  # losses and metrics, reduced over the replicas
    for k, v in h1.items():
      if "seconds" not in k:
        assert h2[k] == pytest.approx(v, rel=1e-4, abs=1e-5), k


def test_bank_built_by_two_replicas_equals_bank_built_by_one(mirrored):
  result, _ = mirrored
  for k in ("z", "mse", "psnr"):
    np.testing.assert_array_equal(result[f"bank_mirrored_{k}"], result[f"bank_default_{k}"])


def _free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def _single_worker_reference(data_dir, workdir):
  """erm_fmnist at smoke scale trained exactly as the runner does, on one device."""
  cfg = experiments.get("erm_fmnist").get_config(scale="smoke", seed=0, data_dir=data_dir)
  splits = make_splits(load_dataset(cfg.data.name, data_dir, allow_tfds=False), cfg.data)
  keras.utils.set_random_seed(cfg.seed)
  model = build_classifier(cfg.model, (28, 28, 1))
  train(model, build_method(cfg.method), splits, cfg.data, cfg.train, workdir, cfg.seed,
        log=lambda s: None)
  return model, splits


def test_two_workers_share_the_bank_and_the_chief_exports_the_model(tiny_data_dir, tmp_path):
  ports = _free_ports(2)
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  procs = []
  for i in range(2):
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
    log = open(tmp_path / f"worker{i}.log", "w")  # pylint: disable=consider-using-with
    procs.append(subprocess.Popen(
        [sys.executable, DRIVER, "multi_worker", str(tmp_path), tiny_data_dir],
        stdout=log, stderr=subprocess.STDOUT, env=_env(TF_CONFIG=tf_config)))
  try:  # the single-device answers, computed while the workers run
    ref_bank = build_bank(tiny_data_dir, str(tmp_path / "ref_bank"))
    ref_gan, _ = generator_weights("dcgan", tiny_data_dir, str(tmp_path / "ref_gan"),
                                    tf.distribute.get_strategy())
    ref_model, splits = _single_worker_reference(tiny_data_dir, str(tmp_path / "ref_wd"))
    for i, p in enumerate(procs):
      assert p.wait(timeout=600) == 0, (tmp_path / f"worker{i}.log").read_text()[-4000:]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  reports = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]
  assert [r["code"] for r in reports] == [0, 0] and reports[0]["workers"] == 2

  # The bank: worker 0 inverted chunks 0 and 2, worker 1 chunk 1; both hold all of it.
  for i in range(2):
    bank = np.load(tmp_path / f"bank_worker{i}.npz")
    assert str(bank["gen_hash"]) == str(ref_bank["gen_hash"])
    for k in ("z", "mse", "psnr"):
      np.testing.assert_array_equal(bank[k], ref_bank[k])
  assert os.path.isfile(tmp_path / "bank" / "bank.npz")  # the chief's
  assert not glob.glob(str(tmp_path / "workertemp_1" / "bank" / "bank.npz"))
  assert len(glob.glob(str(tmp_path / "workertemp_1" / "bank" / "chunk-*.npz"))) == 1

  # The DCGAN trained by both workers: the same weights on each, and as on one device
  # (float tolerance: synchronized batch norm); only the chief kept checkpoints and a record.
  gans = [np.load(tmp_path / f"gan_worker{i}.npz") for i in range(2)]
  for k, want in enumerate(ref_gan):
    np.testing.assert_array_equal(gans[1][f"arr_{k}"], gans[0][f"arr_{k}"])
    np.testing.assert_allclose(gans[0][f"arr_{k}"], want, rtol=1e-4, atol=1e-5)
  records = [json.loads((tmp_path / f"gan_worker{i}.json").read_text()) for i in range(2)]
  assert records[0] == records[1] and records[0]["state"] == "done"
  assert glob.glob(str(tmp_path / "gan" / "checkpoints" / "ckpt-1.index"))
  assert not glob.glob(str(tmp_path / "workertemp_1" / "gan" / "checkpoints" / "*"))

  # The classifier: one SavedModel (the chief's), which predicts like the 1-worker model.
  saved = glob.glob(str(tmp_path / "**" / "saved_model.pb"), recursive=True)
  assert saved == [str(tmp_path / "sm" / "erm_fmnist-smoke" / "seed_0" / "saved_model.pb")]
  assert not glob.glob(str(tmp_path / "wd" / "**" / "workertemp_*"), recursive=True)
  serving = export.load_classifier(os.path.dirname(saved[0]))
  x = to_float(splits.x_test)
  got = serving(images=x)["logits"].numpy()
  want = ref_model(x, training=False).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  metrics = reports[0]["metrics"]
  assert reports[1]["metrics"] == metrics  # the worker returns the chief's metrics
  ref_accuracy = float(np.mean(want.argmax(-1) == splits.y_test))
  assert metrics["test/accuracy"] == pytest.approx(ref_accuracy, abs=1.5 / len(x))
