"""The one training loop that runs every method, under any `tf.distribute` strategy.

The loop owns what all methods share: the optimizer and its schedule, the compiled step,
metric aggregation, per-epoch progress lines, TensorBoard summaries, checkpointing and
resume. What differs between methods lives in a `Method` object (see `method.py`).

Distribution follows the TF custom-training-loop guide: the per-example loss is averaged by
the *global* batch size (`tf.nn.compute_average_loss`), regularisation losses are scaled by
the number of replicas, and metrics are returned as sums and reduced across replicas, so the
same code gives the same update under the default strategy and `MirroredStrategy`.

Multi-worker (TF guide pattern): every worker saves each checkpoint, but only the chief
into `<workdir>/checkpoints`; a worker writes to its `workertemp_<i>` directory and deletes it
(`distribute.worker_dir`). On resume only the chief restores and broadcasts the values, so
workers need no shared filesystem. Batches are distributed with `AutoShardPolicy.DATA`: every
worker builds the same global batch and keeps its replicas' slices, so a global step sees the
same examples whatever the number of workers (the input is in-memory arrays, cheap to
rebuild; `distribute_datasets_from_function` would need each worker to cut its own slice).

Resume, record-then-checkpoint and chief/worker saves are `latmix_tf/epochs.EpochLoop`'s, the
compiled step and the batch distribution `latmix_tf/steps.py`'s, both shared with the
generator and encoder training. The classifier runs one compiled step per batch
(`Steps.one`): it sums its metrics per step in Python and moves the progress bar per step.
The epoch's batches are a pure function of (seed, epoch) (see data/pipeline.py) and the step
seeds of (seed, optimizer step), so a killed run restarted with the same command continues
from the last readable checkpoint and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, List, Optional

import keras
import tensorflow as tf

from latmix_tf import distribute
from latmix_tf.config import DataConfig, TrainConfig
from latmix_tf.data.pipeline import Splits, eval_dataset, train_dataset
from latmix_tf.epochs import EpochLoop
from latmix_tf.losses import soft_cross_entropy
from latmix_tf.steps import Steps, distribute_dataset
from latmix_tf.training.method import Method


def steps_per_epoch(splits: Splits, data_cfg: DataConfig, train_cfg: TrainConfig) -> int:
  full = max(len(splits.x_train) // min(data_cfg.batch_size, len(splits.x_train)), 1)
  return full if train_cfg.steps_per_epoch is None else min(full, train_cfg.steps_per_epoch)


def make_optimizer(cfg: TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
  """AdamW / SGD-momentum with an optional cosine schedule (and linear warmup)."""
  lr = cfg.learning_rate
  if cfg.lr_schedule == "cosine":
    warmup = int(cfg.warmup_epochs * total_steps / max(cfg.epochs, 1))
    if warmup:
      lr = keras.optimizers.schedules.CosineDecay(
          0.0, max(total_steps - warmup, 1), warmup_target=cfg.learning_rate,
          warmup_steps=warmup)
    else:
      lr = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, max(total_steps, 1))
  elif cfg.lr_schedule != "constant":
    raise ValueError(f"Unknown lr_schedule {cfg.lr_schedule!r}; valid: 'cosine', 'constant'.")
  if cfg.optimizer == "adamw":
    return keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay)
  if cfg.optimizer == "adam":
    return keras.optimizers.Adam(lr)
  if cfg.optimizer == "sgd":
    return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
  raise ValueError(f"Unknown optimizer {cfg.optimizer!r}; valid: 'adamw', 'adam', 'sgd'.")


class Trainer:
  """Builds the compiled steps once; `fit` runs the epochs with checkpoint/resume."""

  def __init__(self, model: keras.Model, method: Method, splits: Splits, data_cfg: DataConfig,
               train_cfg: TrainConfig, workdir: str, seed: int,
               strategy: Optional[tf.distribute.Strategy] = None,
               log: Callable[[str], None] = print):
    self.strategy = strategy or tf.distribute.get_strategy()
    self.model, self.method, self.splits = model, method, splits
    self.data_cfg, self.cfg, self.seed = data_cfg, train_cfg, seed
    self.log = log
    self.steps = steps_per_epoch(splits, data_cfg, train_cfg)
    self.global_batch = min(data_cfg.batch_size, len(splits.x_train))
    with self.strategy.scope():
      self.optimizer = make_optimizer(train_cfg, self.steps * train_cfg.epochs)
      self.optimizer.build(model.trainable_variables)
      method.build(model, splits.num_classes)
    self.loop = EpochLoop(workdir, dict(model=model, optimizer=self.optimizer,
                                        **method.checkpoint_items()),
                          train_cfg.epochs, self.strategy, log, keep=train_cfg.keep_checkpoints,
                          steps=self.steps, partial_every_s=train_cfg.checkpoint_every_s)
    self._train = Steps(self.strategy, self._replica_train_step)
    self._eval = Steps(self.strategy, self._replica_eval_step)
    self._train_step = lambda x, y: self._train.one((x, y))
    self._eval_step = lambda x, y: self._eval.one((x, y))

  # --- compiled steps -----------------------------------------------------------------
  def _replica_train_step(self, x, y):
    ctx = tf.distribute.get_replica_context()
    step = tf.cast(self.optimizer.iterations, tf.int64)
    base = tf.stack([tf.cast(self.seed, tf.int64) * 7919 + step,
                     tf.cast(ctx.replica_id_in_sync_group, tf.int64)])
    # Independent stateless seeds for the three hooks (no overlap across steps/replicas).
    seeds = tf.random.experimental.stateless_split(base, 3)
    model, method = self.model, self.method
    x, y = method.prepare_batch(model, x, y, seeds[0])
    with tf.GradientTape() as tape:
      logits, y_used = method.forward(model, x, y, seeds[1])
      per_example = soft_cross_entropy(y_used, logits)
      loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch)
      if model.losses:
        loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
    grads = tape.gradient(loss, model.trainable_variables)
    self.optimizer.apply_gradients(zip(grads, model.trainable_variables))
    extra = method.after_step(model, x, y, seeds[2])
    correct = tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(y_used, -1)), tf.float32)
    # Rows count by their label mass (1 for one-hot / soft labels). A method that scores a
    # batch twice (clean + adversarial) scales each copy's label rows by its loss weight, so
    # the masses still add up to the number of examples and the logged loss and accuracy are
    # the weighted averages the update used (see training/adversarial.py).
    mass = tf.reduce_sum(tf.cast(y_used, tf.float32), axis=-1)
    sums = {"loss": tf.reduce_sum(per_example), "accuracy": tf.reduce_sum(correct * mass),
            "count": tf.reduce_sum(mass)}
    sums.update({k: tf.cast(v, tf.float32) for k, v in extra.items()})
    return sums

  def _distributed_train_step(self, x, y):
    return self._train.distributed((x, y))

  def _replica_eval_step(self, x, y):
    logits = self.model(x, training=False)
    correct = tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(y, -1)), tf.float32)
    return {"loss": tf.reduce_sum(soft_cross_entropy(y, logits)),
            "accuracy": tf.reduce_sum(correct), "count": tf.cast(tf.shape(x)[0], tf.float32)}

  # --- Python side: one epoch; resume and checkpoints are the EpochLoop's ---------------
  def distribute_dataset(self, ds: tf.data.Dataset):
    return distribute_dataset(self.strategy, ds)

  def _run(self, ds, step_fn, advance=None, totals=None, seconds=0.0) -> Dict[str, float]:
    """Means of `step_fn`'s metrics over `ds`, and "seconds" it took.

    `totals`/`seconds`: the sums and time of the steps done before a mid-epoch resume. With
    `advance`, each step hands the loop the running sums, the state a mid-epoch checkpoint
    keeps."""
    totals = dict(totals or {})
    t0 = time.time() - seconds
    for x, y in self.distribute_dataset(ds):
      for k, v in step_fn(x, y).items():
        totals[k] = totals.get(k, 0.0) + float(v)
      if advance is not None:
        advance(1, state={"totals": totals, "seconds": time.time() - t0},
                loss=totals["loss"] / max(totals.get("count", 1.0), 1.0))
    count = max(totals.pop("count", 1.0), 1.0)
    return {**{k: v / count for k, v in totals.items()}, "seconds": time.time() - t0}

  def evaluate(self, x, y) -> Dict[str, float]:
    ds = eval_dataset(x, y, self.splits.num_classes, batch_size=self.global_batch)
    means = self._run(ds, self._eval_step)
    means.pop("seconds")
    return means

  def run_epoch(self, epoch: int) -> Dict[str, float]:
    """Trains epoch `epoch` (batches fixed by (seed, epoch)) and scores the validation split."""
    done, state = self.loop.resume_point()
    ds = train_dataset(self.splits, self.data_cfg, self.seed, epoch, self.steps)
    # Skipped at the end of the pipeline, so every transform still sees the epoch's batches
    # in order (a resumed epoch continues with exactly the batches it would have had).
    ds = self.method.transform_dataset(ds, epoch, self.seed).skip(done)
    train = self._run(ds, self._train_step, self.loop.advance, state.get("totals"),
                      state.get("seconds", 0.0))
    seconds = train.pop("seconds")
    val = self.evaluate(self.splits.x_val, self.splits.y_val)
    return {"epoch_seconds": seconds, **{f"train/{k}": v for k, v in train.items()},
            **{f"val/{k}": v for k, v in val.items()}}

  def fit(self) -> List[Dict[str, float]]:
    """Trains to `cfg.epochs`, resuming if a checkpoint exists; returns per-epoch metrics."""
    return self.loop.run(self.run_epoch)


def train(model: keras.Model, method: Method, splits: Splits, data_cfg: DataConfig,
          train_cfg: TrainConfig, workdir: str, seed: int,
          strategy: Optional[tf.distribute.Strategy] = None,
          log: Callable[[str], None] = print) -> List[Dict[str, float]]:
  """Trains `model` with `method`; see `Trainer`. Returns the per-epoch history."""
  os.makedirs(distribute.worker_dir(workdir, strategy), exist_ok=True)
  if train_cfg.deterministic:
    tf.config.experimental.enable_op_determinism()
  return Trainer(model, method, splits, data_cfg, train_cfg, workdir, seed, strategy,
                 log).fit()
