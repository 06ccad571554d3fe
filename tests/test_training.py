"""The single training loop: a 2-step run, and kill-and-resume equals uninterrupted."""

import numpy as np
import pytest

import keras

from latmix_tf.config import DataConfig, ModelConfig, TrainConfig
from latmix_tf.data import load_dataset, make_splits
from latmix_tf.models.classifiers import build_classifier
from latmix_tf.training import ERM, Trainer, train

DATA = DataConfig("fashion_mnist", batch_size=32, val_size=64, augment="shift_flip", train_limit=256)
MODEL = ModelConfig("cnn", (8, 16), 32, dropout=0.2)


def _splits(tiny_data_dir):
  import dataclasses
  cfg = dataclasses.replace(DATA, data_dir=tiny_data_dir)
  return cfg, make_splits(load_dataset("fashion_mnist", tiny_data_dir, allow_tfds=False), cfg)


def _model(seed=0):
  keras.utils.set_random_seed(seed)
  return build_classifier(MODEL, (28, 28, 1))


def test_two_steps_change_weights_and_log(tiny_data_dir, tmp_path):
  cfg, splits = _splits(tiny_data_dir)
  model = _model()
  before = [w.copy() for w in model.get_weights()]
  lines = []
  history = train(model, ERM(), splits, cfg, TrainConfig(epochs=1, steps_per_epoch=2),
                  str(tmp_path), seed=0, log=lines.append)
  assert len(history) == 1 and np.isfinite(history[0]["train/loss"])
  assert any(l.startswith("epoch 1/1") for l in lines)
  changed = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights())]
  assert all(changed[:2])  # the first conv kernel and BN scale moved
  assert (tmp_path / "history.json").exists() and (tmp_path / "checkpoints").exists()


class _Killed(Exception):
  pass


def test_kill_and_resume_matches_uninterrupted(tiny_data_dir, tmp_path):
  cfg, splits = _splits(tiny_data_dir)
  tcfg = TrainConfig(epochs=3, steps_per_epoch=3)
  reference = _model()
  train(reference, ERM(), splits, cfg, tcfg, str(tmp_path / "ref"), seed=5, log=lambda s: None)

  def die_in_epoch_2(line):
    if line.startswith("epoch 2/3"):  # epoch 1 is checkpointed, epoch 2 is lost
      raise _Killed()

  with pytest.raises(_Killed):
    train(_model(), ERM(), splits, cfg, tcfg, str(tmp_path / "run"), seed=5, log=die_in_epoch_2)
  resumed = _model(seed=123)  # fresh process state: weights come from the checkpoint
  lines = []
  history = train(resumed, ERM(), splits, cfg, tcfg, str(tmp_path / "run"), seed=5,
                  log=lines.append)
  assert any("resumed from" in l for l in lines)
  assert [h["epoch"] for h in history] == [1, 2, 3]
  for a, b in zip(reference.get_weights(), resumed.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("damaged", [False, True])
def test_kill_mid_epoch_resumes_at_the_step_it_reached(tiny_data_dir, tmp_path, damaged):
  """A kill inside an epoch loses at most `checkpoint_every_s` of work (here: every step
  is saved), and the resumed run ends with the uninterrupted run's weights and records. A
  damaged mid-epoch checkpoint is not trusted: the epoch is redone from its start."""
  cfg, splits = _splits(tiny_data_dir)
  tcfg = TrainConfig(epochs=2, steps_per_epoch=4, checkpoint_every_s=0.0)
  reference = _model()
  expected = train(reference, ERM(), splits, cfg, tcfg, str(tmp_path / "ref"), seed=5,
                   log=lambda s: None)
  run_dir = tmp_path / "run"
  trainer = Trainer(_model(), ERM(), splits, cfg, tcfg, str(run_dir), 5, log=lambda s: None)
  advance = trainer.loop.advance

  def advance_then_die(n=1, **kwargs):  # fault injection: the kill after step 3 of epoch 2
    advance(n, **kwargs)
    if int(trainer.loop.epoch.numpy()) == 1 and trainer.loop.step_in_epoch.numpy() == 3:
      raise _Killed()

  trainer.loop.advance = advance_then_die
  with pytest.raises(_Killed):
    trainer.fit()
  if damaged:
    for data in (run_dir / "partial").glob("*.data-*"):
      data.write_bytes(data.read_bytes()[:40])
  resumed, lines = _model(seed=123), []
  history = train(resumed, ERM(), splits, cfg, tcfg, str(run_dir), seed=5, log=lines.append)
  resumed_at = [l for l in lines if "resumed from" in l]
  if damaged:
    assert any("redoing this epoch from its start" in l for l in lines)
    assert resumed_at and "step" not in resumed_at[0]
  else:
    assert resumed_at and "step 3 of epoch 2" in resumed_at[0]
  for a, b in zip(reference.get_weights(), resumed.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for key in ("train/loss", "train/accuracy", "val/accuracy"):
    np.testing.assert_allclose([h[key] for h in history], [h[key] for h in expected],
                               rtol=1e-5)
  assert not (run_dir / "partial").exists()  # removed once the epoch's checkpoint is written


def test_finished_run_resumes_to_nothing(tiny_data_dir, tmp_path):
  cfg, splits = _splits(tiny_data_dir)
  tcfg = TrainConfig(epochs=1, steps_per_epoch=1)
  train(_model(), ERM(), splits, cfg, tcfg, str(tmp_path), seed=0, log=lambda s: None)
  trainer = Trainer(_model(), ERM(), splits, cfg, tcfg, str(tmp_path), 0, log=lambda s: None)
  assert trainer.loop.restore() == 1 and trainer.fit() == trainer.loop.history()
