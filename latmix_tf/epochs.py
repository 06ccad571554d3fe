"""The epoch machinery every trained network of latmix runs through.

The classifier, the DCGAN / VAE and the post-hoc inversion encoder differ in their step (each
model owns its `train_step` and metrics, as in keras-io's generative examples), not in what
happens around the epochs. `EpochLoop` is that part, written once:

* resume: the newest readable checkpoint is restored (a damaged one is skipped, see
  `checkpointing.restore_latest`); with several workers only the chief reads it and the
  others receive its values, so no shared filesystem is needed;
* record-then-checkpoint in one write: the per-epoch history travels *inside* the checkpoint
  (a string variable), so the weights and the records of the epochs that made them can never
  disagree, whatever moment a kill comes at;
  `history.json` beside it is a human-readable copy written after the checkpoint;
* chief / worker saves (TF multi-worker guide): every worker writes each checkpoint, the
  chief into `<dir>/checkpoints`, a worker into its `workertemp_<i>` copy, deleted at once;
* seeding: `run_epoch(epoch)` must be a pure function of (seed, epoch) and the restored state
  (the callers take each epoch's order from `steps.epoch_order(seed, epoch, ...)` and key
  step noise by the optimizer step), so a resumed run ends bit-for-bit where an
  uninterrupted one does; what runs within an epoch (the compiled step, the distribution of
  the batches) is `latmix_tf/steps.py`'s;
* mid-epoch checkpoints (opt-in, `partial_every_s`): a loop whose epochs take an hour (an
  adversarial trainer on CPU) would lose up to that hour to every kill. A caller that hands
  `advance` its running sums (`state=`) gets, every `partial_every_s` seconds, a checkpoint of
  the whole state at that step in `partial/`, and on resume `resume_point()` tells it where
  to pick the epoch up: the step to continue from and the sums so far. Because the epoch's
  batches and step seeds are pure functions of (seed, epoch, step), skipping the done steps
  and continuing gives the uninterrupted run's weights and records. One process per run
  only: with several workers, time-based saves would fire at different steps, so they are
  off there;
* progress: a bar within each epoch (`latmix_tf.progress`: redrawn in place on a terminal,
  a plain heartbeat line every `progress_s` seconds when piped), fed by `run_epoch` through
  `advance`; one summary line per epoch through `log`; TensorBoard scalars.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import tensorflow as tf

from latmix_tf import checkpointing, distribute, progress
from latmix_tf.jsonio import read_json, write_json_atomic

HISTORY_FILE = "history.json"
CKPT_DIR = "checkpoints"
PARTIAL_DIR = "partial"
PARTIAL_RECORD = "latest.json"


class EpochLoop:
  """Runs `epochs` epochs of a caller-supplied `run_epoch`, checkpointing after each.

  Args:
    directory: where `checkpoints/`, `history.json` and `tensorboard/` go (a non-chief
      worker uses its `workertemp_<i>` sibling, see `distribute.worker_dir`).
    items: name -> Keras model / optimizer / tf.Variable / trackable: the whole state a
      resumed run needs (wrapped by `checkpointing.checkpoint`).
    epochs: the number of epochs to reach.
    strategy: `tf.distribute` strategy the items were built under.
    log: progress sink; `name` prefixes its lines ("generator dcgan ", "encoder ").
    keep: checkpoints kept on disk.
    tensorboard: write per-epoch scalars under `<directory>/tensorboard`.
    steps: steps per epoch, the total of the progress bar (None: unknown).
    progress_s: seconds between heartbeat lines when the output is not a terminal.
    partial_every_s: seconds between mid-epoch checkpoints (None: only after each epoch);
      only callers that pass `state=` to `advance` and honour `resume_point` get them.
  """

  def __init__(self, directory: str, items: Dict[str, Any], epochs: int,
               strategy: Optional[tf.distribute.Strategy] = None,
               log: Callable[[str], None] = print, name: str = "", keep: int = 2,
               tensorboard: bool = True, steps: Optional[int] = None,
               progress_s: float = 10.0, partial_every_s: Optional[float] = None):
    self.strategy = strategy or tf.distribute.get_strategy()
    self.chief = distribute.is_chief(self.strategy)
    self.directory = distribute.worker_dir(directory, self.strategy)
    self.epochs, self.log, self.name, self.tensorboard = epochs, log, name, tensorboard
    self.steps, self.progress_s, self._bar = steps, progress_s, None
    with self.strategy.scope():
      self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    self.history_json = tf.Variable("[]", dtype=tf.string, trainable=False, name="history")
    self.checkpoint = checkpointing.checkpoint(epoch=self.epoch, history=self.history_json,
                                               **items)
    self._variables = distribute.variables_of([self.epoch, *items.values()])
    self.ckpt_dir = os.path.join(self.directory, CKPT_DIR)
    self.manager = tf.train.CheckpointManager(self.checkpoint, self.ckpt_dir, max_to_keep=keep)
    # The mid-epoch checkpoint is a separate object (and folder), so the epoch checkpoints
    # keep their layout and stay readable by runs that never save partials.
    self.partial_every_s = (partial_every_s
                            if distribute.num_workers(self.strategy) == 1 else None)
    self.partial_dir = os.path.join(self.directory, PARTIAL_DIR)
    self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
    self.partial_state = tf.Variable("{}", dtype=tf.string, trainable=False, name="state")
    self._partial = checkpointing.checkpoint(epoch=self.epoch, history=self.history_json,
                                             step_in_epoch=self.step_in_epoch,
                                             epoch_state=self.partial_state, **items)
    self._resume: tuple = (0, {}, 0.0)   # (step, caller state, seconds) of the epoch to resume
    self._done, self._epoch_t0, self._last_partial = 0, 0.0, 0.0

  def restore(self, announce: bool = True) -> int:
    """Restores the newest readable checkpoint (chief), syncs workers; returns its epoch.

    `announce=False` keeps quiet about it (loading a finished stage is no resume)."""
    if self.chief or distribute.num_workers(self.strategy) == 1:
      latest = checkpointing.restore_latest(self.checkpoint, self.manager,
                                            self._variables + [self.history_json], self.log)
      partial = self._restore_partial()
      if (latest or partial) and announce:
        where = (f", step {partial[0]} of epoch {int(self.epoch.numpy()) + 1}" if partial
                 else "")
        self.log(f"{self.name}resumed from {partial[1] if partial else latest} (epoch "
                 f"{int(self.epoch.numpy())}/{self.epochs}{where})")
    distribute.sync_variables_from_chief(self.strategy, self._variables)
    return int(self.epoch.numpy())

  def _restore_partial(self) -> Optional[tuple]:
    """Restores the mid-epoch checkpoint of the epoch after the restored one, if any.

    Returns (step, path), and sets `resume_point`; None when there is none for that epoch,
    saves are off, or it is damaged (then the epoch is redone from its start)."""
    self._resume = (0, {}, 0.0)
    record = read_json(os.path.join(self.partial_dir, PARTIAL_RECORD))
    if (self.partial_every_s is None or not isinstance(record, dict)
        or record.get("epoch") != int(self.epoch.numpy())):
      return None
    path = os.path.join(self.partial_dir, record["prefix"])
    if not checkpointing.restore_one(self._partial, path,
                                     self._variables + [self.history_json], self.log,
                                     then="redoing this epoch from its start"):
      return None
    saved = json.loads(self.partial_state.numpy().decode())
    step = int(self.step_in_epoch.numpy())
    self._resume = (step, saved["state"], float(saved["seconds"]))
    return step, path

  def resume_point(self) -> Tuple[int, Dict[str, Any]]:
    """(steps of this epoch already done, the `state` passed with the last of them).

    (0, {}) except in the first epoch after a restore from a mid-epoch checkpoint: `run_epoch`
    then skips that many batches and continues its sums from the state."""
    return self._resume[0], self._resume[1]

  def history(self) -> List[Dict[str, Any]]:
    """The per-epoch records of the restored / trained epochs."""
    done = int(self.epoch.numpy())
    return [h for h in json.loads(self.history_json.numpy().decode()) if h["epoch"] <= done]

  def advance(self, n: int = 1, state: Optional[Dict[str, Any]] = None, **metrics) -> None:
    """Called by `run_epoch` as its steps finish: moves the epoch's progress bar.

    `state`: the JSON-able running sums after these steps; with it, a mid-epoch checkpoint
    is written when `partial_every_s` have passed since the last one."""
    self._done += n
    if (state is not None and self.partial_every_s is not None
        and time.time() - self._last_partial >= self.partial_every_s):
      self._save_partial(state)
    if self._bar is not None:
      self._bar.update(n, **metrics)

  def _save_partial(self, state: Dict[str, Any]) -> None:
    """Writes the state after `self._done` steps of the running epoch, then points
    `latest.json` at it and deletes the older one (a kill at any moment leaves one readable
    pair: the record is replaced atomically, and only after its checkpoint is complete)."""
    epoch = int(self.epoch.numpy())
    self.step_in_epoch.assign(self._done)
    self.partial_state.assign(json.dumps(
        {"state": state, "seconds": self._resume[2] + time.time() - self._epoch_t0}))
    prefix = f"epoch{epoch}-step{self._done}"
    # `write` (unlike a manager's `save`) leaves out the lazily made save counter, which a
    # restore then finds unmatched: make it first so it is written too.
    _ = self._partial.save_counter
    self._partial.write(os.path.join(self.partial_dir, prefix))
    write_json_atomic(os.path.join(self.partial_dir, PARTIAL_RECORD),
                      {"epoch": epoch, "step": self._done, "prefix": prefix})
    for f in glob.glob(os.path.join(self.partial_dir, "epoch*")):
      if not os.path.basename(f).startswith(prefix + "."):
        os.remove(f)
    self._last_partial = time.time()

  def _save(self, epoch: int) -> None:
    if self.chief:
      self.manager.save(checkpoint_number=epoch)
    else:  # TF multi-worker guide: every worker saves; a worker's copy is temporary
      self.checkpoint.write(os.path.join(self.ckpt_dir, f"ckpt-{epoch}"))
      shutil.rmtree(self.ckpt_dir, ignore_errors=True)

  def run(self, run_epoch: Callable[[int], Dict[str, float]],
          on_epoch_end: Optional[Callable[[int, Dict[str, Any]], None]] = None,
          ) -> List[Dict[str, Any]]:
    """Resumes, then trains the remaining epochs; returns the history of all epochs.

    Args:
      run_epoch: `run_epoch(epoch) -> {metric: float}` trains epoch `epoch` (0-based).
      on_epoch_end: `(epoch, record)` before the checkpoint of that epoch is written (e.g.
        a health check that may raise, or the chief's sample grid).
    """
    start = self.restore()
    history = self.history()
    writer = (tf.summary.create_file_writer(os.path.join(self.directory, "tensorboard"))
              if self.chief and self.tensorboard else tf.summary.create_noop_writer())
    for epoch in range(start, self.epochs):
      t0 = self._epoch_t0 = self._last_partial = time.time()
      self._done = self._resume[0]
      with progress.bar(self.steps, f"{self.name}[{epoch + 1}/{self.epochs}] steps", self.log,
                        interval_s=self.progress_s, final_line=False,
                        start=self._done) as self._bar:
        row = {"epoch": epoch + 1, **run_epoch(epoch)}
      self._bar = None
      row["seconds"] = self._resume[2] + time.time() - t0
      self._resume = (0, {}, 0.0)
      if on_epoch_end is not None:
        on_epoch_end(epoch, row)
      history.append(row)
      with writer.as_default(step=epoch + 1):
        for k, v in row.items():
          if k != "epoch" and isinstance(v, (int, float)):
            tf.summary.scalar(k, v)
      self.epoch.assign(epoch + 1)
      self.history_json.assign(json.dumps(history))
      self._save(epoch + 1)
      if self.chief:
        write_json_atomic(os.path.join(self.directory, HISTORY_FILE), history)
      shutil.rmtree(self.partial_dir, ignore_errors=True)
      self.log(f"{self.name}epoch {epoch + 1}/{self.epochs}  " + "  ".join(
          f"{k}={v:.4g}" for k, v in row.items()
          if k != "epoch" and "seconds" not in k and isinstance(v, (int, float)))
          + f"  ({row['seconds']:.1f}s)")
    writer.flush()
    return history
