"""Training the generative models (DCGAN, VAE) as the "generator" stage.

Each model owns its `train_step` and loss trackers (keras-io's generative examples); the
epochs run through the shared `epochs.EpochLoop` (resume, history inside the checkpoint,
chief/worker saves) and the steps through `steps.Steps`: chunks of `guard.check_every` steps
run in one compiled call (over `tf.range`), and between chunks the Python side checks the
run's health: a GAN can fail silently (NaNs, a discriminator that wins outright, mode
collapse) and every downstream number would then be computed on garbage, so `check_health`
(generative/health.py) stops the run with a `GeneratorTrainingError` saying what went wrong.

Distribution: `strategy` runs each step on every replica of a `tf.distribute` strategy
(global batch `cfg.batch_size`); the models make the same update on 1 or N replicas (see
models/dcgan.py). With several workers only the chief restores, records and writes files.

Caching: the "generator" stage (`latmix_tf.stages`) is keyed by the config hash, the
fingerprint of the training images and the seed; its record's outputs hold the weight hash
(`checkpoint_hash`), which a cached load must reproduce, and the per-epoch history.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from latmix_tf import distribute, stages
from latmix_tf.config import to_dict
from latmix_tf.generative.config import GeneratorConfig
from latmix_tf.data.pipeline import to_float
from latmix_tf.data.sources import array_fingerprint
from latmix_tf.generative.handle import (GenerativeModel, build_generative_model,
                                         generator_checkpoint_hash)
from latmix_tf.generative.reports import save_image_grid
from latmix_tf.generative.health import HealthGuard, check_health, pixel_diversity
from latmix_tf.epochs import EpochLoop
from latmix_tf.steps import Steps, epoch_order

SAMPLES_DIR = "samples"
GRID_SEED = 1234  # fixed noise of the per-epoch sample grids


def image_dataset(x_uint8: np.ndarray, batch_size: int, seed: int, epoch: int,
                  steps: int) -> tf.data.Dataset:
  """`steps` full batches of float images in [0,1]; order fixed by (seed, epoch).

  A capped epoch that needs more than one pass over the images reshuffles for each pass."""
  order = epoch_order(seed, epoch, len(x_uint8), steps * batch_size, reshuffle=True)
  x_all = tf.constant(x_uint8)
  ds = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=True)
  return ds.map(lambda idx: to_float(tf.gather(x_all, idx)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)


def _loop(gm: GenerativeModel, directory: str, strategy, log,
          steps: Optional[int] = None) -> EpochLoop:
  return EpochLoop(directory, gm.trainer.checkpoint_items(), gm.config.epochs, strategy, log,
                   name=f"generator {gm.kind} ", tensorboard=False, steps=steps)


def train_generator(gm: GenerativeModel, x_train: np.ndarray, directory: str, seed: int,
                    log: Callable[[str], None] = print, guard: HealthGuard = HealthGuard(),
                    strategy: Optional[tf.distribute.Strategy] = None
                    ) -> List[Dict[str, float]]:
  """Trains `gm` for `gm.config.epochs`, resuming from `<directory>/checkpoints` if present.

  Args:
    gm: a handle from `build_generative_model` (compiled).
    x_train: uint8 [N, H, W, C] training images.
    directory: checkpoints, history.json and per-epoch sample grids.
    seed: orders the batches (with the epoch) and keys the noise.
    log: progress lines (one per epoch).
    guard: health-check thresholds.
    strategy: `tf.distribute` strategy `gm` was built under (see the module docstring).
  Returns:
    The per-epoch history (tracker means, diversity, seconds) of every epoch.
  Raises:
    GeneratorTrainingError: non-finite losses or a collapsed GAN.
  """
  cfg, trainer = gm.config, gm.trainer
  strategy = strategy or tf.distribute.get_strategy()
  batch = min(cfg.batch_size, len(x_train))
  steps = cfg.steps_per_epoch or len(x_train) // batch
  loop = _loop(gm, directory, strategy, log, steps)
  # The trackers keep their own means over the epoch: `run` returns them, no sums.
  train_steps = Steps(strategy, trainer.train_step,
                      results=lambda: {m.name: m.result() for m in trainer.metrics})
  grid_z = gm.sample_prior(64, GRID_SEED)
  real_diversity = pixel_diversity(to_float(x_train[:1000]))
  samples = {}

  def after_chunk(k, results):
    check_health(gm.kind, results, int(trainer.step.numpy()), None, None, guard)
    loop.advance(k, **{name: results[name] for name in list(results)[:2]})

  def run_epoch(epoch):
    for m in trainer.metrics:
      m.reset_state()
    results = train_steps.run_chunks(image_dataset(x_train, batch, seed, epoch, steps), steps,
                                     guard.check_every, after_chunk)
    samples["grid"] = gm.decode(grid_z).numpy()
    diversity = pixel_diversity(samples["grid"])
    check_health(gm.kind, results, int(trainer.step.numpy()), diversity, real_diversity, guard)
    return {**results, "diversity": diversity}

  def save_grid(epoch, row):
    del row
    if loop.chief:
      save_image_grid(samples["grid"],
                      os.path.join(loop.directory, SAMPLES_DIR, f"epoch_{epoch + 1:03d}.png"))

  return loop.run(run_epoch, on_epoch_end=save_grid)


def _training_images(data) -> np.ndarray:
  x = data if isinstance(data, np.ndarray) else getattr(data, "x_train", None)
  if x is None or x.dtype != np.uint8 or x.ndim != 4:
    raise ValueError("Generators train on uint8 [N,H,W,C] images: pass `make_splits(...)` / "
                     "`load_dataset(...)` output (its x_train is used) or such an array.")
  return x


def generator_key(cfg: GeneratorConfig, x_train: np.ndarray, seed: int) -> Dict:
  """What a trained generator depends on: its config, the training images and the seed."""
  return stages.stage_key(config=cfg, data=array_fingerprint(x_train), seed=int(seed))


def generator_stage(cfg: GeneratorConfig, data, directory: str, seed: int = 0,
                    rebuild: bool = False, log: Callable[[str], None] = print,
                    guard: HealthGuard = HealthGuard(),
                    strategy: Optional[tf.distribute.Strategy] = None,
                    index: Optional[str] = None) -> stages.StageResult:
  """The "generator" stage: the model trained with (cfg, data, seed), trained only if needed.

  Args:
    cfg: generator config.
    data: `Splits` / `Arrays` (their uint8 `x_train` is used) or a uint8 NHWC array.
    directory: this generator's folder (stage.json, checkpoints, sample grids).
    seed: weight initialisation (via `keras.utils.set_random_seed`, which also seeds the
      global Python / NumPy / TF generators), batch order and noise.
    rebuild: ignore any cached or partial run and train from scratch.
    log: progress lines.
    guard: GAN health-check thresholds.
    strategy: train under this `tf.distribute` strategy (see `train_generator`); every
      worker returns the same weights.
    index: stage-sharing index folder (`stages.Stage.index`): an equal-key generator
      another run finished is copied, not retrained.
  Returns:
    The stage result; its value is a `GenerativeModel` with `checkpoint_hash` and
    `metadata` (the stage record) set.
  """
  x_train = _training_images(data)
  strategy = strategy or tf.distribute.get_strategy()
  stage = stages.Stage("generator", directory, generator_key(cfg, x_train, seed), index)

  def finish(gm, record):
    gm.checkpoint_hash, gm.metadata = generator_checkpoint_hash(gm), record
    return gm

  def build(resumed):
    del resumed  # the EpochLoop resumes from the checkpoints by itself
    gm = _build(cfg, x_train.shape[1:], seed, strategy)
    history = train_generator(gm, x_train, directory, seed, log, guard, strategy)
    gm.checkpoint_hash = generator_checkpoint_hash(gm)
    return gm, {"checkpoint_hash": gm.checkpoint_hash, "kind": cfg.kind,
                "config": to_dict(cfg), "image_shape": list(x_train.shape[1:]),
                "num_train": len(x_train), "history": history}

  def load(record):
    gm = _build(cfg, x_train.shape[1:], seed, strategy)
    epoch = _loop(gm, directory, strategy, log).restore(announce=False)
    if epoch != cfg.epochs or generator_checkpoint_hash(gm) != record["outputs"].get(
        "checkpoint_hash"):
      raise stages.StageDamaged(f"the final checkpoint in {directory} is unreadable or not "
                                "the recorded one")
    return gm

  def share(gm, record):  # workers take the chief's weights
    gm = gm or _build(cfg, x_train.shape[1:], seed, strategy)
    distribute.sync_variables_from_chief(strategy, distribute.variables_of(
        list(gm.trainer.checkpoint_items().values())))
    return gm

  result = stages.run_stage(stage, build, load, share=share, rebuild=rebuild, log=log,
                            strategy=strategy)
  finish(result.value, result.record)
  return result


def train_or_load_generator(cfg: GeneratorConfig, data, directory: str, seed: int = 0,
                            **kwargs) -> GenerativeModel:
  """`generator_stage(...).value`: the trained generator, for callers that need no record."""
  return generator_stage(cfg, data, directory, seed, **kwargs).value


def _build(cfg: GeneratorConfig, image_shape, seed: int, strategy) -> GenerativeModel:
  keras.utils.set_random_seed(seed)
  with strategy.scope():
    return build_generative_model(cfg, image_shape, seed,
                                  sync_batch_norm=strategy.num_replicas_in_sync > 1)
