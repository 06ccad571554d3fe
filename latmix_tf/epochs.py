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
* progress: a bar within each epoch (`latmix_tf.progress`: redrawn in place on a terminal,
  a plain heartbeat line every `progress_s` seconds when piped), fed by `run_epoch` through
  `advance`; one summary line per epoch through `log`; TensorBoard scalars.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Callable, Dict, List, Optional

import tensorflow as tf

from latmix_tf import checkpointing, distribute, progress
from latmix_tf.jsonio import write_json_atomic

HISTORY_FILE = "history.json"
CKPT_DIR = "checkpoints"


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
  """

  def __init__(self, directory: str, items: Dict[str, Any], epochs: int,
               strategy: Optional[tf.distribute.Strategy] = None,
               log: Callable[[str], None] = print, name: str = "", keep: int = 2,
               tensorboard: bool = True, steps: Optional[int] = None,
               progress_s: float = 10.0):
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

  def restore(self, announce: bool = True) -> int:
    """Restores the newest readable checkpoint (chief), syncs workers; returns its epoch.

    `announce=False` keeps quiet about it (loading a finished stage is no resume)."""
    if self.chief or distribute.num_workers(self.strategy) == 1:
      latest = checkpointing.restore_latest(self.checkpoint, self.manager,
                                            self._variables + [self.history_json], self.log)
      if latest and announce:
        self.log(f"{self.name}resumed from {latest} (epoch {int(self.epoch.numpy())}/"
                 f"{self.epochs})")
    distribute.sync_variables_from_chief(self.strategy, self._variables)
    return int(self.epoch.numpy())

  def history(self) -> List[Dict[str, Any]]:
    """The per-epoch records of the restored / trained epochs."""
    done = int(self.epoch.numpy())
    return [h for h in json.loads(self.history_json.numpy().decode()) if h["epoch"] <= done]

  def advance(self, n: int = 1, **metrics) -> None:
    """Called by `run_epoch` as its steps finish: moves the epoch's progress bar."""
    if self._bar is not None:
      self._bar.update(n, **metrics)

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
      t0 = time.time()
      with progress.bar(self.steps, f"{self.name}[{epoch + 1}/{self.epochs}] steps", self.log,
                        interval_s=self.progress_s, final_line=False) as self._bar:
        row = {"epoch": epoch + 1, **run_epoch(epoch)}
      self._bar = None
      row["seconds"] = time.time() - t0
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
      self.log(f"{self.name}epoch {epoch + 1}/{self.epochs}  " + "  ".join(
          f"{k}={v:.4g}" for k, v in row.items()
          if k != "epoch" and "seconds" not in k and isinstance(v, (int, float)))
          + f"  ({row['seconds']:.1f}s)")
    writer.flush()
    return history
