"""The stage mechanism and the shared epoch machinery, on their own.

Every cached step of latmix (generator, encoder, bank, classifier, evaluation, Fréchet) goes
through `stages.run_stage`, and every trained network through `training.epochs.EpochLoop`;
these tests pin down their contracts with trivial builds, so a change to either shows here
first, not as a puzzle in a pipeline test.
"""

import glob
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from latmix_tf import checkpointing, stage_clock, stages, workdir_lock
from latmix_tf.epochs import EpochLoop


class Counter:
  """A build that records how it was called and what it found on disk."""

  def __init__(self, directory):
    self.directory, self.calls = directory, []

  def build(self, resumed):
    self.calls.append(resumed)
    os.makedirs(self.directory, exist_ok=True)
    with open(os.path.join(self.directory, "artifact.txt"), "w") as f:
      f.write("42")
    return 42, {"answer": 42}

  def load(self, record):
    path = os.path.join(self.directory, "artifact.txt")
    if not os.path.isfile(path) or open(path).read() != "42":
      raise stages.StageDamaged("artifact missing or wrong")
    return record["outputs"]["answer"]


def _run(directory, key, counter, **kw):
  return stages.run_stage(stages.Stage("toy", directory, key), counter.build, counter.load,
                          log=lambda s: None, **kw)


def test_built_then_cached_then_rebuilt_on_another_key(tmp_path):
  d = str(tmp_path / "toy")
  c = Counter(d)
  first = _run(d, {"a": 1}, c)
  assert first.status == "built" and first.value == 42 and c.calls == [False]
  record = stages.read_record(d)
  assert record["state"] == "done" and record["outputs"] == {"answer": 42}
  assert set(record) >= {"stage", "key", "key_hash", "state", "status", "seconds", "outputs"}
  again = _run(d, {"a": 1}, c)
  assert again.status == "cached" and c.calls == [False]  # nothing rebuilt
  assert stages.read_record(d)["status"] == "cached"
  other = _run(d, {"a": 2}, c)
  assert other.status == "built" and c.calls == [False, False]
  stale = glob.glob(d + ".stale-*")
  assert len(stale) == 1 and json.load(open(os.path.join(stale[0], "stage.json")))["key"] == {
      "a": 1}  # the old result is kept aside, never deleted
  assert _run(d, {"a": 2}, c, rebuild=True).status == "built"
  assert len(glob.glob(d + ".stale-*")) == 2


def test_a_finished_stage_of_equal_key_is_adopted_through_the_index(tmp_path):
  index, logs = str(tmp_path / "index"), []
  donor, taker = str(tmp_path / "a" / "toy"), str(tmp_path / "b" / "toy")
  run = lambda d, key, c, **kw: stages.run_stage(  # noqa: E731
      stages.Stage("toy", d, key, index), c.build, c.load, log=logs.append, **kw)
  c_donor, c_taker = Counter(donor), Counter(taker)
  assert run(donor, {"a": 1}, c_donor).status == "built"
  got = run(taker, {"a": 1}, c_taker)
  assert got.status == "cached" and got.value == 42 and c_taker.calls == []  # copied, not built
  assert got.record["adopted_from"] == os.path.abspath(donor)
  assert open(os.path.join(taker, "artifact.txt")).read() == "42"  # a copy of its own
  assert stages.read_record(taker)["adopted_from"] == os.path.abspath(donor)
  assert not glob.glob(taker + ".adopting-*")
  # Another key, or a rebuild, is never adopted; a damaged donor is rebuilt here.
  other = str(tmp_path / "c" / "toy")
  c_other = Counter(other)
  assert run(other, {"a": 2}, c_other).status == "built" and c_other.calls == [False]
  assert run(other, {"a": 1}, c_other, rebuild=True).status == "built"
  damaged = str(tmp_path / "d" / "toy")
  os.remove(os.path.join(other, "artifact.txt"))  # the index now names `other` for {"a": 1}
  c_damaged = Counter(damaged)
  assert run(damaged, {"a": 1}, c_damaged).status == "built" and c_damaged.calls == [False]
  assert any("adopted copy is unusable" in line for line in logs)
  # Without an index nothing is shared.
  assert _run(str(tmp_path / "e" / "toy"), {"a": 1}, Counter(str(tmp_path / "e" / "toy"))
              ).status == "built"


def test_a_donor_locked_by_another_run_is_not_copied(tmp_path):
  index = str(tmp_path / "index")
  donor, taker = str(tmp_path / "a" / "toy"), str(tmp_path / "b" / "toy")
  stages.run_stage(stages.Stage("toy", donor, {"a": 1}, index), Counter(donor).build,
                   Counter(donor).load, log=lambda s: None)
  c, logs = Counter(taker), []
  holder = _hold_in_another_process(donor)  # e.g. another run rebuilding it right now
  try:
    got = stages.run_stage(stages.Stage("toy", taker, {"a": 1}, index), c.build, c.load,
                           log=logs.append)
  finally:
    holder.kill()
    holder.wait()
  assert got.status == "built" and c.calls == [False] and "adopted_from" not in got.record
  assert any("not adopting" in line for line in logs)


def test_unfinished_or_damaged_is_resumed_and_unknown_contents_are_moved_aside(tmp_path):
  d = str(tmp_path / "toy")
  c = Counter(d)

  def killed(resumed):
    raise KeyboardInterrupt  # a kill in the middle of the work
  with pytest.raises(KeyboardInterrupt):
    stages.run_stage(stages.Stage("toy", d, {"a": 1}), killed, c.load, log=lambda s: None)
  assert stages.read_record(d)["state"] == "building"
  assert _run(d, {"a": 1}, c).status == "resumed" and c.calls == [True]
  os.remove(os.path.join(d, "artifact.txt"))  # damage: load raises StageDamaged
  assert _run(d, {"a": 1}, c).status == "resumed" and c.calls == [True, True]
  with open(os.path.join(d, "stage.json"), "w") as f:
    f.write('{"truncated')  # an unreadable record: the folder's contents are unknown
  assert _run(d, {"a": 1}, c).status == "built" and len(glob.glob(d + ".stale-*")) == 1


def test_every_attempt_counts_in_the_cost_even_one_killed_without_warning(tmp_path,
                                                                           monkeypatch):
  monkeypatch.setattr(stage_clock, "HEARTBEAT_SECONDS", 0.05)
  d = str(tmp_path / "toy")
  c = Counter(d)
  seen = []
  started = time.perf_counter()  # the stage's clock starts after this

  def killed(resumed):
    # Work until a heartbeat has put at least 0.2 s into the record, however long a loaded
    # machine takes to schedule the heartbeat thread; then read what a SIGKILL would leave.
    entered = time.perf_counter()
    while time.perf_counter() - entered < 60:
      if (stages.read_record(d) or {}).get("seconds", 0.0) >= 0.2:
        break
      time.sleep(0.01)
    seen.append((stages.read_record(d), time.perf_counter() - started))
    seen.append(time.perf_counter() - entered)  # the work of this attempt
    raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    stages.run_stage(stages.Stage("toy", d, {"a": 1}), killed, c.load, log=lambda s: None)
  (beat, elapsed), worked = seen
  assert beat["state"] == "building" and 0.2 <= beat["seconds"] <= elapsed
  first = stages.read_record(d)
  assert first["state"] == "building" and first["seconds"] >= worked  # counted to the end
  assert first["cpu_seconds"] >= 0.0
  resumed = _run(d, {"a": 1}, c)
  assert resumed.status == "resumed"
  assert first["seconds"] <= resumed.record["seconds"] < first["seconds"] + 5.0
  assert stages.read_record(d)["seconds"] == resumed.record["seconds"]
  assert _run(d, {"a": 1}, c).record["seconds"] == resumed.record["seconds"]  # cached: as is


def test_downstream_rebuilds_and_rejects_unknown_stages():
  assert stages.downstream(()) == frozenset()
  assert stages.downstream(["bank"]) == {"bank", "classifier", "evaluation"}
  assert stages.downstream(["generator"]) == set(stages.ORDER)
  assert stages.downstream(["evaluation"]) == {"evaluation"}
  with pytest.raises(ValueError, match="unknown stage.*valid: generator, encoder, bank"):
    stages.downstream(["gan"])


def _hold_in_another_process(folder):
  """A child process holding `folder`'s lock (the lock is re-entrant within a process)."""
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
       "from latmix_tf import workdir_lock; workdir_lock.acquire(sys.argv[2]);"
       "print('held', flush=True); time.sleep(60)",
       os.path.dirname(os.path.dirname(os.path.abspath(__file__))), folder],
      stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "held"
  return holder


def test_a_stage_locked_by_another_process_is_not_touched(tmp_path):
  d = str(tmp_path / "toy")
  holder = _hold_in_another_process(d)
  try:
    c = Counter(d)
    with pytest.raises(workdir_lock.WorkdirLockedError, match="in use by"):
      _run(d, {"a": 1}, c)
    assert c.calls == [] and not os.path.exists(d)
  finally:
    holder.kill()
    holder.wait()
  assert _run(d, {"a": 1}, Counter(d)).status == "built"  # free once the holder is gone


def _model():
  keras.utils.set_random_seed(0)
  return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dropout(0.5),
                           keras.layers.Dense(2)])


def test_checkpoints_keep_dropout_rng_state(tmp_path):
  """The SeedGenerator question: its state is checkpointed, so a resumed run draws the same
  dropout masks as an uninterrupted one (and `model.weights`, used for hashing, omits it)."""
  model = _model()
  x = tf.ones((3, 4))
  ckpt = checkpointing.checkpoint(model=model)
  path = ckpt.save(str(tmp_path / "ckpt"))
  expected = model(x, training=True).numpy()  # advances the dropout RNG
  model(x, training=True)
  ckpt.restore(path).assert_existing_objects_matched()
  np.testing.assert_array_equal(model(x, training=True).numpy(), expected)
  assert any("seed_generator" in v.path for v in model.variables)
  assert not any("seed_generator" in v.path for v in model.weights)


def test_epoch_loop_resumes_with_history_inside_the_checkpoint(tmp_path):
  def run(directory, epochs, stop_after=None):
    model = _model()
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    loop = EpochLoop(str(directory), {"model": model, "optimizer": optimizer}, epochs,
                     log=lambda s: None, tensorboard=False)
    x = tf.constant(np.random.default_rng(0).normal(size=(16, 4)), tf.float32)

    def run_epoch(epoch):
      if stop_after is not None and epoch == stop_after:
        raise KeyboardInterrupt
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=True)))
      optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                    model.trainable_variables))
      return {"loss": float(loss)}
    return model, loop.run(run_epoch)

  ref_model, ref_history = run(tmp_path / "ref", 3)
  with pytest.raises(KeyboardInterrupt):
    run(tmp_path / "run", 3, stop_after=2)
  model, history = run(tmp_path / "run", 3)
  assert [h["epoch"] for h in history] == [1, 2, 3]
  assert [h["loss"] for h in history] == [h["loss"] for h in ref_history]
  for a, b in zip(model.get_weights(), ref_model.get_weights()):
    np.testing.assert_array_equal(a, b)
  assert json.load(open(tmp_path / "run" / "history.json")) == history
