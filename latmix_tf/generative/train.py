"""Training, checkpointing, health checks and caching of the generative models.

One loop serves both the DCGAN and the VAE: each owns a `train_step` and its trackers, the
loop runs chunks of steps inside one compiled `tf.function` (over `tf.range`) and does the
Python-side work between chunks: health checks, logging, sample grids, checkpoints.

A GAN can fail silently (NaNs, a discriminator that wins outright, mode collapse) and every
downstream number would then be computed on garbage; `check_health` (generative/health.py)
stops the run with a `GeneratorTrainingError` saying what went wrong instead.

Distribution: `strategy` runs each step on every replica of a `tf.distribute` strategy
(global batch `cfg.batch_size`); the models make the same update on 1 or N replicas (see
models/dcgan.py). With several workers only the chief restores, records and writes files.

Caching: `<workdir>/generator.json` records the config hash, the fingerprint of the training
images and the seed; the checkpoints live in `<workdir>/checkpoints/`. Same key -> resume
(unfinished) or load (finished, "cached"); a different key -> retrain from scratch.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Callable, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from latmix_tf import checkpointing, distribute
from latmix_tf.config import GeneratorConfig, config_hash, to_dict
from latmix_tf.data.sources import array_fingerprint
from latmix_tf.export import read_json, versions, write_json_atomic
from latmix_tf.generative.handle import (GenerativeModel, build_generative_model,
                                         generator_checkpoint_hash, save_image_grid)
from latmix_tf.generative.health import HealthGuard, check_health, pixel_diversity

META_FILE = "generator.json"
CKPT_DIR = "checkpoints"
SAMPLES_DIR = "samples"
GRID_SEED = 1234  # fixed noise of the per-epoch sample grids


def image_dataset(x_uint8: np.ndarray, batch_size: int, seed: int, epoch: int,
                  steps: int) -> tf.data.Dataset:
  """`steps` full batches of float images in [0,1]; order fixed by (seed, epoch)."""
  n = len(x_uint8)
  reps = -(-steps * batch_size // n)  # a capped epoch may need more than one pass
  perm = np.concatenate([np.random.default_rng([seed, epoch, r]).permutation(n)
                         for r in range(reps)])[:steps * batch_size]
  x_all = tf.constant(x_uint8)
  ds = tf.data.Dataset.from_tensor_slices(perm).batch(batch_size, drop_remainder=True)
  return ds.map(lambda idx: tf.cast(tf.gather(x_all, idx), tf.float32) / 255.0,
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)


def _format(results: Dict[str, float]) -> str:
  return " ".join(f"{k}={v:.4g}" for k, v in results.items())


def train_generator(gm: GenerativeModel, x_train: np.ndarray, workdir: str, seed: int,
                    log: Callable[[str], None] = print, guard: HealthGuard = HealthGuard(),
                    on_epoch_end: Optional[Callable[[Dict], None]] = None,
                    strategy: Optional[tf.distribute.Strategy] = None
                    ) -> List[Dict[str, float]]:
  """Trains `gm` for `gm.config.epochs`, resuming from `<workdir>/checkpoints` if present.

  Args:
    gm: a handle from `build_generative_model` (compiled).
    x_train: uint8 [N, H, W, C] training images.
    workdir: folder for checkpoints and per-epoch sample grids.
    seed: orders the batches (with the epoch) and keys the noise.
    log: progress lines (one per epoch).
    guard: health-check thresholds.
    on_epoch_end: called with each epoch's history entry, just before its checkpoint is saved.
    strategy: `tf.distribute` strategy `gm` was built under (global batch `cfg.batch_size`,
      split over replicas; see models/dcgan.py). With several workers only the chief
      restores (the others receive its values) and writes checkpoints and sample grids.
  Returns:
    Per-epoch history (tracker means, seconds, diversity) of the epochs run in this call.
  Raises:
    GeneratorTrainingError: non-finite losses or a collapsed GAN.
  """
  cfg, trainer = gm.config, gm.trainer
  strategy = strategy or tf.distribute.get_strategy()
  chief, workers = distribute.is_chief(strategy), distribute.num_workers(strategy)
  workdir = distribute.worker_dir(workdir, strategy)  # the chief's is unchanged
  batch = min(cfg.batch_size, len(x_train))
  steps = cfg.steps_per_epoch or len(x_train) // batch
  epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
  items = trainer.checkpoint_items()
  variables = distribute.variables_of([epoch_var, *items.values()])
  ckpt = tf.train.Checkpoint(epoch=epoch_var, **items)
  ckpt_dir = os.path.join(workdir, CKPT_DIR)
  manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=2)
  latest = checkpointing.restore_latest(ckpt, manager, variables, log) if (
      chief or workers == 1) else None
  distribute.sync_variables_from_chief(strategy, variables)
  if latest:
    log(f"generator {gm.kind}: resumed from {latest} "
        f"(epoch {int(epoch_var.numpy())}/{cfg.epochs})")
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA

  @tf.function
  def run_steps(iterator, n):
    for _ in tf.range(n):
      strategy.run(trainer.train_step, args=(next(iterator),))
    return {m.name: m.result() for m in trainer.metrics}

  grid_z = gm.sample_prior(64, GRID_SEED)
  real_diversity = pixel_diversity(x_train[:1000] / 255.0)
  history = []
  for epoch in range(int(epoch_var.numpy()), cfg.epochs):
    start = time.time()
    for m in trainer.metrics:
      m.reset_state()
    iterator = iter(strategy.experimental_distribute_dataset(
        image_dataset(x_train, batch, seed, epoch, steps).with_options(options)))
    done = 0
    while done < steps:
      k = min(guard.check_every, steps - done)
      results = {k_: float(v) for k_, v in run_steps(iterator, tf.constant(k)).items()}
      done += k
      check_health(gm.kind, results, int(trainer.step.numpy()), None, None, guard)
    samples = gm.decode(grid_z).numpy()
    diversity = pixel_diversity(samples)
    check_health(gm.kind, results, int(trainer.step.numpy()), diversity, real_diversity, guard)
    epoch_var.assign(epoch + 1)
    seconds = time.time() - start
    history.append({"epoch": epoch + 1, **results, "diversity": diversity, "seconds": seconds})
    # Record first, checkpoint second: a kill between the two re-runs this epoch from the
    # previous checkpoint and replaces its entry, instead of keeping the weights and
    # losing the epoch's entry (found by the SIGKILL drill).
    if on_epoch_end is not None and chief:
      on_epoch_end(history[-1])
    if chief:
      save_image_grid(samples, os.path.join(workdir, SAMPLES_DIR, f"epoch_{epoch + 1:03d}.png"))
      manager.save(checkpoint_number=epoch + 1)
    else:  # TF multi-worker guide: every worker saves; a worker's copy is temporary
      ckpt.write(os.path.join(ckpt_dir, f"ckpt-{epoch + 1}"))
      shutil.rmtree(ckpt_dir, ignore_errors=True)
    log(f"generator {gm.kind} epoch {epoch + 1}/{cfg.epochs}: {_format(results)} "
        f"diversity={diversity:.3f} ({seconds:.1f} s, {steps} steps)")
  return history


def _training_images(data) -> np.ndarray:
  x = data if isinstance(data, np.ndarray) else getattr(data, "x_train", None)
  if x is None or x.dtype != np.uint8 or x.ndim != 4:
    raise ValueError("Generators train on uint8 [N,H,W,C] images: pass `make_splits(...)` / "
                     "`load_dataset(...)` output (its x_train is used) or such an array.")
  return x


def _load_meta(workdir: str) -> Optional[Dict]:
  # An unreadable record is treated as absent, so the model is retrained.
  meta = read_json(os.path.join(workdir, META_FILE))
  return meta if isinstance(meta, dict) else None


def _wipe(workdir: str) -> None:
  for name in (CKPT_DIR, SAMPLES_DIR):
    shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
  if os.path.exists(os.path.join(workdir, META_FILE)):
    os.remove(os.path.join(workdir, META_FILE))


def train_or_load_generator(cfg: GeneratorConfig, data, workdir: str, seed: int = 0,
                            rebuild: bool = False, log: Callable[[str], None] = print,
                            guard: HealthGuard = HealthGuard(),
                            strategy: Optional[tf.distribute.Strategy] = None
                            ) -> GenerativeModel:
  """Returns the generator trained with (cfg, data, seed), training it only if needed.

  Args:
    cfg: generator config.
    data: `Splits` / `Arrays` (their uint8 `x_train` is used) or a uint8 NHWC array.
    workdir: this generator's folder (checkpoints, sample grids, generator.json).
    seed: weight initialisation (via `keras.utils.set_random_seed`, which also seeds the
      global Python / NumPy / TF generators), batch order and noise.
    rebuild: ignore any cached or partial run and train from scratch.
    log: progress lines; says "cached" when nothing had to be trained.
    guard: GAN health-check thresholds.
    strategy: train under this `tf.distribute` strategy (see `train_generator`). With
      several workers the chief decides (cached or not) and keeps the record; every worker
      returns the same weights.
  Returns:
    A `GenerativeModel` with `checkpoint_hash` and `metadata` set.
  """
  x_train = _training_images(data)
  strategy = strategy or tf.distribute.get_strategy()
  if not distribute.is_chief(strategy):
    return _follow_chief(cfg, x_train, workdir, seed, log, guard, strategy)
  key = {"config_hash": config_hash(cfg), "data_fingerprint": array_fingerprint(x_train)[:16],
         "seed": seed}
  os.makedirs(workdir, exist_ok=True)
  meta = _load_meta(workdir)
  same = meta is not None and all(meta.get(k) == v for k, v in key.items())
  if rebuild or not same:
    if meta is not None or os.path.isdir(os.path.join(workdir, CKPT_DIR)):
      why = "rebuild requested" if rebuild else (
          "no readable record" if meta is None else
          "changed " + ", ".join(k for k, v in key.items() if meta.get(k) != v))
      log(f"generator {cfg.kind}: discarding the run in {workdir} ({why}); training anew")
    _wipe(workdir)
    meta = None
  gm = _build(cfg, x_train.shape[1:], seed, strategy)
  if meta is not None and meta.get("status") == "complete":
    epoch_var, items = tf.Variable(0, dtype=tf.int64), gm.trainer.checkpoint_items()
    ckpt = tf.train.Checkpoint(epoch=epoch_var, **items)
    manager = tf.train.CheckpointManager(ckpt, os.path.join(workdir, CKPT_DIR), max_to_keep=2)
    newest = checkpointing.checkpoint_candidates(manager)[:1]
    path = checkpointing.restore_latest(
        ckpt, manager, distribute.variables_of([epoch_var, *items.values()]), log)
    if path is not None and generator_checkpoint_hash(gm) == meta.get("checkpoint_hash"):
      gm.checkpoint_hash, gm.metadata = meta["checkpoint_hash"], meta
      log(f"generator {cfg.kind}: cached ({workdir}, checkpoint {gm.checkpoint_hash})")
      distribute.broadcast_json(strategy, {"cached": meta})  # workers take these weights
      distribute.sync_variables_from_chief(strategy, _variables(gm))
      return gm
    gm = _build(cfg, x_train.shape[1:], seed, strategy)
    if path is not None and path != newest[0]:  # the final checkpoint is damaged: redo
      log(f"generator {cfg.kind}: final checkpoint {newest[0]} unreadable; retraining the "
          f"epochs after {path}")
      meta["status"] = "training"
    else:
      log(f"generator {cfg.kind}: checkpoint in {workdir} missing or not the recorded one; "
          f"training anew")
      _wipe(workdir)
      meta = None
  if meta is None:
    meta = {**key, "config": to_dict(cfg), "kind": cfg.kind, "status": "training",
            "image_shape": list(x_train.shape[1:]), "num_train": len(x_train),
            "history": [], "versions": versions()}
    write_json_atomic(os.path.join(workdir, META_FILE), meta)

  def record(entry):  # the record survives a kill: a resumed run keeps the earlier epochs
    meta["history"] = [h for h in meta["history"] if h["epoch"] < entry["epoch"]] + [entry]
    meta["train_seconds"] = sum(h["seconds"] for h in meta["history"])
    write_json_atomic(os.path.join(workdir, META_FILE), meta)

  distribute.broadcast_json(strategy, {"cached": None})  # workers train along
  train_generator(gm, x_train, workdir, seed, log, guard, on_epoch_end=record,
                  strategy=strategy)
  gm.checkpoint_hash = generator_checkpoint_hash(gm)
  meta.update(status="complete", checkpoint_hash=gm.checkpoint_hash)
  write_json_atomic(os.path.join(workdir, META_FILE), meta)
  gm.metadata = distribute.broadcast_json(strategy, meta)
  return gm


def _build(cfg: GeneratorConfig, image_shape, seed: int, strategy) -> GenerativeModel:
  keras.utils.set_random_seed(seed)
  with strategy.scope():
    return build_generative_model(cfg, image_shape, seed,
                                  sync_batch_norm=strategy.num_replicas_in_sync > 1)


def _variables(gm: GenerativeModel) -> list:
  return distribute.variables_of(list(gm.trainer.checkpoint_items().values()))


def _follow_chief(cfg, x_train, workdir, seed, log, guard, strategy) -> GenerativeModel:
  """A worker's side of `train_or_load_generator`: the chief decides, caches and records."""
  gm = _build(cfg, x_train.shape[1:], seed, strategy)
  cached = distribute.broadcast_json(strategy, None)["cached"]
  if cached is None:
    train_generator(gm, x_train, workdir, seed, log, guard, strategy=strategy)
    meta = distribute.broadcast_json(strategy, None)
  else:
    distribute.sync_variables_from_chief(strategy, _variables(gm))
    meta = cached
  gm.checkpoint_hash, gm.metadata = generator_checkpoint_hash(gm), meta
  return gm
