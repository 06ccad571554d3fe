"""Fault drills: every long stage survives SIGKILL, and damaged files are redone, not trusted.

The drill runs a real command as a subprocess (`tests/drill_driver.py`: the latent-mixup
experiment with its smoke config's stages lengthened, then `compare_fmnist` at smoke scale
with ERM and mixup through `cli.run_experiment`, i.e. what main.py runs) and kills it with
SIGKILL at a random moment after the first checkpoint / chunk of a stage appears: in
generator training, in the latent-bank build, in classifier training, and in the compare
run (anywhere after its first member's first checkpoint); then the same command runs to
the end. Its artifacts must equal those of an uninterrupted run of the same command (run
alongside): generator weights (hash), bank arrays, classifier weights, metrics, per-epoch
history, the comparison's per-seed results and its members' weights.

The damage tests write truncated checkpoints, bank chunks and metrics files the way a kill
or a full disk could leave them, and check that the next run detects them and redoes the
work (with the same result), instead of reading them as valid.
"""

import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from latmix_tf.config import DataConfig, ModelConfig, TrainConfig
from latmix_tf.generative.config import GeneratorConfig
from latmix_tf.latent.config import InversionConfig
from latmix_tf.data import load_dataset, make_splits
from latmix_tf import stages
from latmix_tf.generative import generator_stage, train_or_load_generator
from latmix_tf.latent.bank import LatentBank, build_or_load_bank
from latmix_tf.models.classifiers import build_classifier
from latmix_tf.training import ERM, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "tests", "drill_driver.py")
TIMING = ("seconds",)  # keys holding wall times differ between any two runs
COMPARE_RESULTS = "compare_fmnist/smoke/seed_0/results.json"


def _start(workdir, data_dir, log_path):
  env = dict(os.environ, LATMIX_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3")
  out = open(log_path, "w")  # pylint: disable=consider-using-with
  return subprocess.Popen([sys.executable, DRIVER, str(workdir), str(data_dir)], stdout=out,
                          stderr=subprocess.STDOUT, env=env, cwd=str(workdir))


def _kill_after(proc, probe, rng, max_delay=0.3, timeout=240):
  """Polls until `probe()` is true, waits a random moment, SIGKILLs `proc`."""
  t0 = time.time()
  while not probe():
    assert proc.poll() is None, "the run ended before the stage it should be killed in"
    assert time.time() - t0 < timeout, "stage never started"
    time.sleep(0.02)
  time.sleep(rng.uniform(0.0, max_delay))
  proc.send_signal(signal.SIGKILL)
  proc.wait()


def _without_timing(d):
  if isinstance(d, dict):
    return {k: _without_timing(v) for k, v in d.items() if not any(t in k for t in TIMING)}
  if isinstance(d, list):
    return [_without_timing(v) for v in d]
  return d


def _assert_close(a, b, path=""):
  """Nested dicts / lists equal, floats within 1e-6 (metrics of two runs of one seed)."""
  if isinstance(a, dict):
    assert sorted(a) == sorted(b), path
    for k in a:
      _assert_close(a[k], b[k], f"{path}/{k}")
  elif isinstance(a, list):
    assert len(a) == len(b), path
    for i, (x, y) in enumerate(zip(a, b)):
      _assert_close(x, y, f"{path}[{i}]")
  elif isinstance(a, float) or isinstance(b, float):
    assert a == pytest.approx(b, abs=1e-6, nan_ok=True), path
  else:
    assert a == b, path


def _state(directory):
  record = stages.read_record(str(directory))
  return record["state"] if record else None


def _json(path):
  with open(path) as f:
    return json.load(f)


def _checkpoint_tensors(ckpt_dir):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(ckpt_dir))
  names = [n for n in reader.get_variable_to_shape_map() if "OPTIMIZER_SLOT" not in n]
  return {n: reader.get_tensor(n) for n in names if n != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def test_sigkill_in_every_stage_then_resume_equals_uninterrupted(tiny_data_dir, tmp_path):
  ref_dir, run_dir = tmp_path / "ref", tmp_path / "drill"
  ref_dir.mkdir()
  run_dir.mkdir()
  reference = _start(ref_dir, tiny_data_dir, tmp_path / "ref.log")  # runs alongside
  rng = np.random.default_rng(0)
  wd, cmp = run_dir / "run", run_dir / "compare_wd"
  drills = [  # (what to wait for, what must still be unfinished at the kill)
      ("generator", lambda: glob.glob(str(wd / "generator/checkpoints/ckpt-*.index")),
       lambda: _state(wd / "generator") != "done"),
      ("bank", lambda: glob.glob(str(wd / "bank/chunk-*.npz")),
       lambda: _state(wd / "bank") != "done"),
      ("classifier", lambda: glob.glob(str(wd / "classifier/checkpoints/ckpt-*.index")),
       lambda: _state(wd / "classifier") != "done"),
      ("compare", lambda: glob.glob(
          str(cmp / "erm_fmnist/smoke/seed_0/classifier/checkpoints/*.index")),
       lambda: not (cmp / COMPARE_RESULTS).exists()),
  ]
  statuses = []  # after each killed run: the record of the stage the previous kill hit
  for i, (name, probe, unfinished) in enumerate(drills):
    proc = _start(run_dir, tiny_data_dir, tmp_path / f"drill{i}.log")
    # The compare run is short per member: anywhere up to the end of its second member.
    _kill_after(proc, probe, rng, max_delay=2.0 if name == "compare" else 0.2)
    assert proc.returncode == -signal.SIGKILL
    assert unfinished(), f"the kill came after the {name} stage had finished"
    if i:
      statuses.append(stages.read_record(str(wd / drills[i - 1][0]))["status"])
  final = _start(run_dir, tiny_data_dir, tmp_path / "final.log")
  assert final.wait(timeout=300) == 0, (tmp_path / "final.log").read_text()[-3000:]
  assert reference.wait(timeout=300) == 0, (tmp_path / "ref.log").read_text()[-3000:]
  # Each rerun continued the killed stage instead of starting it over: the generator, bank
  # and classifier records say "resumed"; the compare member killed in training was
  # resumed (or finished, if the kill came during the next member) - never built anew.
  assert statuses == ["resumed", "resumed", "resumed"]
  member = stages.read_record(str(cmp / "erm_fmnist/smoke/seed_0/classifier"))
  assert member["status"] in ("resumed", "cached") and member["state"] == "done"

  ref, run = ref_dir / "run", wd
  gen_ref, gen_run = (stages.read_record(str(d / "generator"))["outputs"] for d in (ref, run))
  assert gen_run["checkpoint_hash"] == gen_ref["checkpoint_hash"]  # bitwise equal weights
  assert _without_timing(gen_run["history"]) == _without_timing(gen_ref["history"])
  bank_ref, bank_run = LatentBank.load(str(ref / "bank")), LatentBank.load(str(run / "bank"))
  for k in ("z", "labels", "mse", "psnr"):
    np.testing.assert_array_equal(getattr(bank_run, k), getattr(bank_ref, k))
  w_ref = _checkpoint_tensors(str(ref / "classifier/checkpoints"))
  w_run = _checkpoint_tensors(str(run / "classifier/checkpoints"))
  assert sorted(w_ref) == sorted(w_run)
  for name, value in w_ref.items():
    if isinstance(value, np.ndarray) and value.dtype.kind in "fi":  # not the history string
      np.testing.assert_allclose(w_run[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
  m_ref, m_run = _json(ref / "metrics.json"), _json(run / "metrics.json")
  m_ref.pop("stages"), m_run.pop("stages")
  _assert_close(_without_timing(m_run), _without_timing(m_ref))
  h_ref, h_run = _json(ref / "classifier/history.json"), _json(run / "classifier/history.json")
  _assert_close(_without_timing(h_run), _without_timing(h_ref))
  c_ref, c_run = _json(ref_dir / "compare_wd" / COMPARE_RESULTS), _json(cmp / COMPARE_RESULTS)
  _assert_close(_without_timing(c_run["per_seed"]), _without_timing(c_ref["per_seed"]))
  for member in ("erm_fmnist", "mixup_fmnist"):
    w_ref = _checkpoint_tensors(
        str(ref_dir / "compare_wd" / member / "smoke/seed_0/classifier/checkpoints"))
    w_run = _checkpoint_tensors(str(cmp / member / "smoke/seed_0/classifier/checkpoints"))
    for name, value in w_ref.items():
      if isinstance(value, np.ndarray) and value.dtype.kind in "fi":
        np.testing.assert_allclose(w_run[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


# --- damaged files are detected and redone -------------------------------------------------
def _truncate(path, keep=0.5):
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(int(size * keep))


DATA = DataConfig("fashion_mnist", batch_size=32, val_size=64, train_limit=128)
MODEL = ModelConfig("cnn", (4, 8), 16, dropout=0.2)


@pytest.fixture(scope="module")
def splits(tiny_data_dir):
  cfg = dataclasses.replace(DATA, data_dir=tiny_data_dir)
  return cfg, make_splits(load_dataset("fashion_mnist", tiny_data_dir, allow_tfds=False), cfg)


def _train(splits, workdir, lines=None):
  cfg, sp = splits
  keras.utils.set_random_seed(0)
  model = build_classifier(MODEL, (28, 28, 1))
  history = train(model, ERM(), sp, cfg, TrainConfig(epochs=3, steps_per_epoch=2), str(workdir),
                  seed=1, log=(lines.append if lines is not None else lambda s: None))
  return model, history


def test_truncated_classifier_checkpoints_are_skipped(splits, tmp_path):
  ref_model, ref_history = _train(splits, tmp_path / "ref")
  _train(splits, tmp_path / "pristine")
  for damage in ("newest_data", "state_file", "all_data"):
    run = tmp_path / damage
    shutil.copytree(tmp_path / "pristine", run)
    ckpts = run / "checkpoints"
    if damage == "newest_data":
      _truncate(glob.glob(str(ckpts / "ckpt-3.data-*"))[0])
    elif damage == "state_file":
      _truncate(ckpts / "checkpoint", 0.3)
    else:
      for path in glob.glob(str(ckpts / "ckpt-*.data-*")):
        _truncate(path)
    lines = []
    model, history = _train(splits, run, lines)
    if damage == "newest_data":
      assert any("ckpt-3 is unreadable" in s for s in lines)
      assert any("resumed from" in s and "ckpt-2" in s for s in lines)  # epoch 3 redone
    elif damage == "state_file":
      assert any("resumed from" in s and "ckpt-3" in s for s in lines)  # found without it
    else:
      assert any("starting this stage from scratch" in s for s in lines)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    _assert_close(_without_timing(history), _without_timing(ref_history))
    for a, b in zip(ref_model.get_weights(), model.get_weights()):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_truncated_generator_checkpoint_and_bank_files_are_redone(splits, tmp_path):
  _, sp = splits
  gcfg = GeneratorConfig(latent_dim=8, base_filters=8, epochs=2, batch_size=32,
                         steps_per_epoch=2)
  gen = train_or_load_generator(gcfg, sp, str(tmp_path / "gen"), seed=0, log=lambda s: None)
  final = glob.glob(str(tmp_path / "gen/checkpoints/ckpt-2.data-*"))[0]
  _truncate(final)
  lines = []
  again = generator_stage(gcfg, sp, str(tmp_path / "gen"), seed=0, log=lines.append)
  assert any("unreadable" in s for s in lines) and again.status == "resumed"
  assert any("resumed from" in s and "ckpt-1" in s for s in lines)
  assert again.value.checkpoint_hash == gen.checkpoint_hash  # epoch 2 redone, same weights

  icfg = InversionConfig(steps=2, random_starts=True, batch_size=16, chunk_size=32)
  args = (gen, None, sp.x_train, sp.y_train, icfg, str(tmp_path / "bank"), {"g": "x"})
  ref = build_or_load_bank(*args, log=lambda s: None)
  _truncate(tmp_path / "bank/chunk-00001.npz")
  _truncate(tmp_path / "bank/bank.npz")
  lines = []
  bank = build_or_load_bank(*args, log=lines.append)
  assert any("chunk 2/4 rejected" in s for s in lines)
  assert sum("reused" in s for s in lines) == 3
  for k in ("z", "labels", "mse", "psnr"):
    np.testing.assert_array_equal(getattr(bank, k), getattr(ref, k))


def test_truncated_stage_record_is_not_trusted(splits, tmp_path):
  from latmix_tf.config import EvalConfig, ExperimentConfig  # pylint: disable=import-outside-toplevel
  from latmix_tf.runner import METRICS_FILE, train_and_evaluate  # pylint: disable=import-outside-toplevel
  from latmix_tf.training import ERMConfig  # pylint: disable=import-outside-toplevel
  data_cfg, sp = splits
  cfg = ExperimentConfig(
      name="erm_drill", data=data_cfg, model=MODEL,
      train=TrainConfig(epochs=1, steps_per_epoch=2), method=ERMConfig(),
      eval=EvalConfig(blur_sigmas=(0.0,), deepfool_samples=2, deepfool_max_iter=2,
                      attack_epsilons=(0.0,), pgd_steps=1, attack_samples=4, batch_size=64))
  args = (cfg, str(tmp_path / "wd"), str(tmp_path / "sm"))
  first = train_and_evaluate(*args, log=lambda s: None, splits=sp)
  _truncate(tmp_path / "wd" / "classifier" / stages.RECORD_FILE)
  _truncate(tmp_path / "wd" / METRICS_FILE)
  second = train_and_evaluate(*args, log=lambda s: None, splits=sp)
  # An unreadable record is no record: the folder is kept aside and the stage redone, with
  # the same result. (The re-exported SavedModel's graph differs in function names, so its
  # fingerprint - and with it the evaluation's key - changes: it is evaluated again.)
  assert second.pop("stages")["classifier"] == "built"
  assert len(list((tmp_path / "wd").glob("classifier.stale-*"))) == 1
  first.pop("stages")
  _assert_close(_without_timing(second), _without_timing(first))
  written = _json(tmp_path / "wd" / METRICS_FILE)
  written.pop("stages")
  _assert_close(_without_timing(written), _without_timing(first))
