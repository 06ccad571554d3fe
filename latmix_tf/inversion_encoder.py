"""Training the inversion encoder E: x -> z that starts the latent optimisation.

Why: Adam from E(x) reaches in ~20 steps what random starts need ~200 for
(`benchmarks/inversion_speed.py`), which is what makes inverting all 60k training images a
matter of minutes. E is trained with G frozen on two terms:
  * latent regression on pairs (G(z), z), z drawn from the prior: ||E(G(z)) - z||^2;
  * reconstruction of real training images: w * ||G(E(x)) - x||^2 (`encoder_recon_weight`),
    which pulls E towards codes that reproduce *real* images, not only generated ones.
One epoch is one `tf.function`; the encoder and optimiser are checkpointed per epoch under
`<workdir>/encoder-<key hash>/` with `encoder.json` (key, history), so a killed run resumes
and a changed generator, encoder config, data or seed trains a new encoder.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Dict

import keras
import numpy as np
import tensorflow as tf

from latmix_tf import checkpointing
from latmix_tf.config import InversionConfig, config_hash
from latmix_tf.data.sources import array_fingerprint
from latmix_tf.export import write_json_atomic
from latmix_tf.inversion import psnr_from_mse
from latmix_tf.models.dcgan import checkpoint_variables, sample_prior
from latmix_tf.models.encoder import InversionEncoder, build_encoder

ENCODER_FIELDS = ("encoder_epochs", "encoder_steps_per_epoch", "encoder_learning_rate",
                  "encoder_batch_size", "encoder_recon_weight", "encoder_base_filters")


def encoder_key(key: Dict, cfg: InversionConfig, x_train: np.ndarray, seed: int) -> Dict:
  """Everything the trained encoder depends on (generator key, its config, data, seed)."""
  return {**key, "encoder_config": {f: getattr(cfg, f) for f in ENCODER_FIELDS},
          "data": array_fingerprint(x_train), "seed": int(seed)}


def encoder_dir(workdir: str, key: Dict, cfg: InversionConfig, x_train: np.ndarray,
                seed: int) -> str:
  """Folder of the cached encoder (checkpoints + `encoder.json` with the training history)."""
  return os.path.join(workdir, f"encoder-{config_hash(encoder_key(key, cfg, x_train, seed))}")


def train_encoder(gen, x_train: np.ndarray, cfg: InversionConfig, workdir: str, key: Dict,
                  seed: int = 0, log: Callable[[str], None] = print) -> InversionEncoder:
  """Trains the inversion encoder (or restores it), checkpointed per epoch, resumable.

  Args:
    gen: the frozen generator (interface in the module docstring).
    x_train: uint8 training images [N, H, W, C].
    cfg: inversion config (encoder_* fields).
    workdir: folder; the encoder lives in `<workdir>/encoder-<key hash>/`.
    key: identifies the generator, e.g. {"generator": checkpoint hash}; the encoder config,
      data fingerprint and seed are added. A different key trains a new encoder.
    seed: seed of the prior draws and of the batch order.
    log: progress sink.
  Returns:
    The trained encoder.
  """
  full_key = encoder_key(key, cfg, x_train, seed)
  folder = encoder_dir(workdir, key, cfg, x_train, seed)
  encoder = build_encoder(gen.latent_dim, gen.prior, x_train.shape[1:],
                          cfg.encoder_base_filters, seed=seed)
  optimizer = keras.optimizers.Adam(cfg.encoder_learning_rate)
  optimizer.build(encoder.trainable_variables)
  epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
  # Explicit variable lists: Keras 3 models are only partly visible to TF's object tracking.
  ckpt = tf.train.Checkpoint(encoder=checkpoint_variables(encoder),
                             optimizer=checkpoint_variables(optimizer), epoch=epoch_var)
  manager = tf.train.CheckpointManager(ckpt, folder, max_to_keep=2)
  latest = checkpointing.restore_latest(
      ckpt, manager, [epoch_var, *checkpoint_variables(encoder),
                      *checkpoint_variables(optimizer)], log)
  if latest:
    log(f"encoder: restored {latest} (epoch {int(epoch_var)})")
  n, bs = len(x_train), min(cfg.encoder_batch_size, len(x_train))
  steps = cfg.encoder_steps_per_epoch or max(n // bs, 1)
  x_all = tf.constant(x_train)

  @tf.function(input_signature=[tf.TensorSpec([steps, bs], tf.int32),
                                tf.TensorSpec([], tf.int64)])
  def train_epoch(batches, epoch):
    """One epoch in one graph: `batches` holds the real-image indices of every step."""
    sums = tf.zeros([2])
    for s in tf.range(steps):
      step_seed = tf.stack([tf.constant(seed, tf.int64), epoch * 10**7 + tf.cast(s, tf.int64)])
      z = sample_prior(gen.prior, bs, gen.latent_dim, step_seed)
      x_fake = tf.stop_gradient(gen.decode(z))
      x_real = tf.cast(tf.gather(x_all, batches[s]), tf.float32) / 255.0
      with tf.GradientTape() as tape:
        latent = tf.reduce_mean(tf.square(encoder(x_fake, training=True) - z))
        recon = tf.reduce_mean(tf.square(gen.decode(encoder(x_real, training=True)) - x_real))
        loss = latent + cfg.encoder_recon_weight * recon
      grads = tape.gradient(loss, encoder.trainable_variables)
      optimizer.apply_gradients(zip(grads, encoder.trainable_variables))
      sums += tf.stack([latent, recon])
    return sums / float(steps)

  record_path = os.path.join(folder, "encoder.json")
  os.makedirs(folder, exist_ok=True)  # each epoch's record is written before its checkpoint
  history = []
  if int(epoch_var) > 0 and os.path.isfile(record_path):
    try:
      with open(record_path) as f:
        history = [h for h in json.load(f).get("history", []) if h["epoch"] <= int(epoch_var)]
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
      log(f"encoder: {record_path} unreadable; its history restarts here (weights are "
          f"from the checkpoint)")
  for epoch in range(int(epoch_var), cfg.encoder_epochs):
    t0, perm = time.time(), np.random.default_rng([seed, epoch]).permutation(n)
    batches = perm[np.arange(steps * bs) % n].reshape(steps, bs).astype(np.int32)
    lat_mean, rec_mean = (float(v) for v in train_epoch(tf.constant(batches),
                                                         tf.constant(epoch, tf.int64)))
    if not np.isfinite(lat_mean + rec_mean):
      raise FloatingPointError(
          f"encoder training diverged at epoch {epoch} (latent {lat_mean}, recon "
          f"{rec_mean}); lower encoder_learning_rate or check the generator.")
    epoch_var.assign(epoch + 1)
    # Record first, checkpoint second: a kill between the two re-runs this epoch from the
    # previous checkpoint (its entry is dropped on resume, epoch > epoch_var) instead of
    # keeping the weights and losing the epoch's entry.
    history.append({"epoch": epoch + 1, "latent_mse": lat_mean, "recon_mse": rec_mean,
                    "seconds": time.time() - t0})
    write_json_atomic(record_path, {"key": full_key, "epochs_done": epoch + 1,
                                    "history": history})
    manager.save()
    log(f"encoder epoch {epoch + 1}/{cfg.encoder_epochs}: latent MSE {lat_mean:.4f}, "
        f"recon MSE {rec_mean:.4f} (PSNR {float(psnr_from_mse(rec_mean)):.2f} dB), "
        f"{time.time() - t0:.1f} s")
  return encoder
