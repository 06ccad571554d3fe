"""The generator handle, the training loop, resume after a kill, caching and health checks."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from latmix_tf.config import DataConfig
from latmix_tf.generative.config import GeneratorConfig
from latmix_tf.data import load_dataset, make_splits
from latmix_tf import stages
from latmix_tf.generative import (GeneratorTrainingError, HealthGuard, build_generative_model,
                                  generator_stage,
                                  check_health, generator_checkpoint_hash, train_generator,
                                  train_or_load_generator)
from latmix_tf.generative import train as train_lib

TINY = {"dcgan": GeneratorConfig(kind="dcgan", latent_dim=8, base_filters=4, epochs=2,
                                 batch_size=16, steps_per_epoch=3),
        "vae": GeneratorConfig(kind="vae", latent_dim=8, prior="normal", base_filters=4,
                               epochs=2, batch_size=16, steps_per_epoch=3, learning_rate=1e-3)}
TINY["dcgan_recall"] = GeneratorConfig(**{**TINY["dcgan"].__dict__, "recon_weight": 10.0})


@pytest.fixture(scope="module")
def splits(tiny_data_dir):
  arrays = load_dataset("fashion_mnist", tiny_data_dir, allow_tfds=False, log=lambda s: None)
  return make_splits(arrays, DataConfig(train_limit=128))


class Interrupt(Exception):
  pass


def _lines():
  lines = []
  return lines, lines.append


@pytest.mark.parametrize("kind", ["dcgan", "vae", "dcgan_recall"])
def test_handle_interface(kind):
  gm = build_generative_model(TINY[kind], (28, 28, 1))
  z = gm.sample_prior(5, seed=1)
  assert z.shape == (5, 8) and gm.latent_dim == 8
  np.testing.assert_array_equal(z.numpy(), gm.sample_prior(5, seed=1).numpy())
  assert gm.prior == ("normal" if kind == "vae" else "uniform")
  assert gm.prior_bound == (None if kind == "vae" else 1.0)

  @tf.function
  def grad_of_decode(z):  # decode must work (and be differentiable) inside a tf.function
    with tf.GradientTape() as tape:
      tape.watch(z)
      x = gm.decode(z)
      loss = tf.reduce_mean(x) + sum(tf.reduce_mean(f) for f in gm.feature_fn(x))
    return x, tape.gradient(loss, z)

  x, g = grad_of_decode(z)
  assert x.shape == (5, 28, 28, 1) and 0 <= float(tf.reduce_min(x))
  assert float(tf.reduce_max(x)) <= 1 and float(tf.reduce_sum(tf.abs(g))) > 0
  assert gm.decode_numpy(z.numpy(), batch_size=2).shape == (5, 28, 28, 1)
  if kind == "vae":
    assert gm.encode(x).shape == (5, 8)
    assert set(gm.models) == {"encoder", "decoder"}
  elif kind == "dcgan_recall":  # the recall term's encoder starts the inversion, in support
    codes = gm.encode(x)
    assert codes.shape == (5, 8) and float(tf.reduce_max(tf.abs(codes))) <= 1.0
    assert set(gm.models) == {"generator", "discriminator", "encoder"}
  else:
    assert gm.encode is None
    assert set(gm.models) == {"generator", "discriminator"}


def test_unknown_kind_raises():
  with pytest.raises(ValueError, match="dcgan, vae"):
    build_generative_model(GeneratorConfig(kind="flow"), (28, 28, 1))
  with pytest.raises(ValueError, match="DCGAN option"):
    build_generative_model(GeneratorConfig(kind="vae", prior="normal", recon_weight=1.0),
                           (28, 28, 1))


def _record(workdir):
  return stages.read_record(workdir)


@pytest.mark.parametrize("kind", ["dcgan", "vae"])
def test_cache_hit_and_miss(kind, splits, tmp_path):
  cfg, workdir = TINY[kind], str(tmp_path / kind)
  lines, log = _lines()
  result = generator_stage(cfg, splits, workdir, seed=0, log=log)
  gm = result.value
  assert result.status == "built" and sum("epoch" in s for s in lines) == 2
  assert os.path.isfile(os.path.join(workdir, "samples", "epoch_002.png"))
  png = tf.io.decode_png(tf.io.read_file(os.path.join(workdir, "samples", "epoch_002.png")))
  assert png.shape[-1] == 1 and png.shape[0] > 8 * 28
  record = _record(workdir)
  assert record["state"] == "done" and record["status"] == "built"
  assert [h["epoch"] for h in record["outputs"]["history"]] == [1, 2]
  assert record["outputs"]["checkpoint_hash"] == gm.checkpoint_hash == generator_checkpoint_hash(gm)

  lines, log = _lines()
  again = generator_stage(cfg, splits, workdir, seed=0, log=log)
  assert again.status == "cached" and not any("epoch" in s for s in lines)
  assert _record(workdir)["status"] == "cached"
  assert again.value.checkpoint_hash == gm.checkpoint_hash
  z = gm.sample_prior(4, 0)
  np.testing.assert_array_equal(gm.decode(z).numpy(), again.value.decode(z).numpy())

  # A different seed, config or training set is another key: built anew, the old run
  # moved aside (never deleted).
  other = generator_stage(cfg, splits, workdir, seed=1, log=lambda s: None)
  assert other.status == "built" and other.value.checkpoint_hash != gm.checkpoint_hash
  assert other.record["key"]["seed"] == 1
  one_epoch = cfg.__class__(**{**cfg.__dict__, "epochs": 1})
  lines, log = _lines()
  changed = generator_stage(one_epoch, splits, workdir, seed=1, log=log)
  assert changed.status == "built" and sum("epoch" in s for s in lines) == 1
  assert changed.record["key"]["config"] != other.record["key"]["config"]
  fewer = generator_stage(one_epoch, splits.x_train[:64], workdir, seed=1, log=lambda s: None)
  assert fewer.status == "built" and fewer.record["key"]["data"] != changed.record["key"]["data"]
  assert len(glob.glob(str(tmp_path / kind) + ".stale-*")) == 3


def test_tampered_checkpoint_is_not_reused(splits, tmp_path):
  cfg, workdir = TINY["vae"], str(tmp_path / "vae")
  generator_stage(cfg, splits, workdir, seed=0, log=lambda s: None)
  record = _record(workdir)
  record["outputs"]["checkpoint_hash"] = "0" * 16
  json.dump(record, open(os.path.join(workdir, stages.RECORD_FILE), "w"))
  lines, log = _lines()
  again = generator_stage(cfg, splits, workdir, seed=0, log=log)
  assert any("not the recorded one" in s for s in lines)
  assert again.status == "resumed"  # redone from what is left: the checkpoints' weights
  assert again.record["outputs"]["checkpoint_hash"] == generator_checkpoint_hash(again.value)


@pytest.mark.parametrize("kind", ["dcgan", "vae", "dcgan_recall"])
def test_resume_after_kill_matches_uninterrupted_run(kind, splits, tmp_path):
  cfg = GeneratorConfig(**{**TINY[kind].__dict__, "epochs": 3})
  full = train_or_load_generator(cfg, splits, str(tmp_path / "full"), seed=0, log=lambda s: None)

  def killing_log(line):  # dies right after epoch 2's checkpoint, like a SIGKILL would
    if "epoch 2/3" in line:
      raise Interrupt(line)

  workdir = str(tmp_path / "killed")
  with pytest.raises(Interrupt):
    generator_stage(cfg, splits, workdir, seed=0, log=killing_log)
  assert _record(workdir)["state"] == "building"
  lines, log = _lines()
  resumed = generator_stage(cfg, splits, workdir, seed=0, log=log)
  assert resumed.status == "resumed"
  assert any("resumed" in s and "epoch 2/3" in s for s in lines)
  trained = [s for s in lines if " epoch " in s]
  assert len(trained) == 1 and "epoch 3/3" in trained[0]  # only epoch 3 was trained again
  assert [h["epoch"] for h in resumed.record["outputs"]["history"]] == [1, 2, 3]
  resumed = resumed.value
  assert int(resumed.trainer.step.numpy()) == 9
  z = full.sample_prior(4, 0)
  np.testing.assert_allclose(resumed.decode(z).numpy(), full.decode(z).numpy(), atol=1e-5)
  if full.encode is not None:  # the recall term's encoder resumes too
    x = splits.x_train[:4] / 255.0
    np.testing.assert_allclose(resumed.encode(x).numpy(), full.encode(x).numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", ["dcgan", "vae"])
def test_nan_guard_raises(kind, splits, tmp_path):
  gm = build_generative_model(TINY[kind], (28, 28, 1))
  weight = gm.generator.trainable_variables[0]
  weight.assign(tf.fill(weight.shape, np.nan))
  with pytest.raises(GeneratorTrainingError, match="non-finite"):
    train_generator(gm, splits.x_train, str(tmp_path), seed=0, log=lambda s: None)


def test_collapse_guard_raises_on_constant_generator(splits, tmp_path):
  gm = build_generative_model(TINY["dcgan"], (28, 28, 1))
  for v in gm.generator.trainable_variables:  # G(z) = sigmoid(0) for every z, and stays so
    v.assign(tf.zeros_like(v))
  with pytest.raises(GeneratorTrainingError, match="mode collapse"):
    train_generator(gm, splits.x_train, str(tmp_path), seed=0, log=lambda s: None,
                    guard=HealthGuard(min_steps=0))


def test_check_health_thresholds():
  ok = {"d_loss": 1.2, "g_loss": 0.9, "d_real": 0.6, "d_fake": 0.4}
  check_health("dcgan", ok, 1000, 0.2, 0.3)
  check_health("dcgan", {**ok, "d_fake": 1e-5}, 10, 0.2, 0.3)  # too early to judge
  with pytest.raises(GeneratorTrainingError, match="wins outright"):
    check_health("dcgan", {**ok, "d_fake": 1e-5}, 1000, 0.2, 0.3)
  with pytest.raises(GeneratorTrainingError, match="mode collapse"):
    check_health("dcgan", ok, 1000, 0.01, 0.3)
  check_health("vae", {"loss": 200.0}, 1000, 0.0, 0.3)  # no collapse check for the VAE
  with pytest.raises(GeneratorTrainingError, match="non-finite"):
    check_health("vae", {"loss": float("inf")}, 1, None, None)


def test_bad_training_data_is_rejected(tmp_path):
  with pytest.raises(ValueError, match="uint8"):
    train_or_load_generator(TINY["vae"], np.zeros((4, 28, 28, 1), np.float32), str(tmp_path))


def test_image_dataset_is_seeded_and_fills_capped_epochs():
  x = np.arange(10 * 28 * 28, dtype=np.int64).reshape(10, 28, 28, 1).astype(np.uint8)
  a = [b.numpy() for b in train_lib.image_dataset(x, 4, seed=0, epoch=1, steps=5)]
  b = [b.numpy() for b in train_lib.image_dataset(x, 4, seed=0, epoch=1, steps=5)]
  c = [b.numpy() for b in train_lib.image_dataset(x, 4, seed=0, epoch=2, steps=5)]
  assert len(a) == 5 and a[0].shape == (4, 28, 28, 1) and a[0].dtype == np.float32
  np.testing.assert_array_equal(np.stack(a), np.stack(b))
  assert not np.array_equal(np.stack(a), np.stack(c))
