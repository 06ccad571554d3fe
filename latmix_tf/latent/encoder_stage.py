"""The post-hoc inversion encoder E: x -> z, for a generator that did not bring one.

Why: Adam from E(x) reaches in ~20 steps what random starts need ~200 for
(`benchmarks/inversion_speed.py`), which makes inverting all 60k training images a matter of
minutes. Only the plain DCGAN needs this stage: the VAE's posterior mean and the recall-
trained DCGAN's own E start the inversion themselves (`inversion.inversion_start` decides).
E is trained with G frozen on two terms:
  * latent regression on pairs (G(z), z), z drawn from the prior: ||E(G(z)) - z||^2;
  * reconstruction of real training images: w * ||G(E(x)) - x||^2 (`encoder_recon_weight`),
    which pulls E towards codes that reproduce *real* images, not only generated ones.
One epoch is one compiled call over its steps (`steps.Steps.run`, the step style of the
generator); the epochs run through the shared `epochs.EpochLoop` (resume, history in the
checkpoint), and the whole training is the "encoder" stage, keyed by the generator stage, the
encoder fields, the data and the seed. The network itself is `models/encoder.py`'s.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from latmix_tf import stages
from latmix_tf.latent.config import InversionConfig
from latmix_tf.data.pipeline import to_float
from latmix_tf.latent.inversion import psnr_from_mse
from latmix_tf.models.dcgan import sample_prior
from latmix_tf.models.encoder import InversionEncoder, build_encoder
from latmix_tf.epochs import EpochLoop
from latmix_tf.steps import Steps, epoch_order

ENCODER_FIELDS = ("encoder_epochs", "encoder_steps_per_epoch", "encoder_learning_rate",
                  "encoder_batch_size", "encoder_recon_weight", "encoder_base_filters")


def encoder_key(generator_key: str, cfg: InversionConfig, data_fingerprint: str,
                seed: int) -> Dict:
  """Everything the trained encoder depends on."""
  return stages.stage_key(config={f: getattr(cfg, f) for f in ENCODER_FIELDS},
                          data=data_fingerprint, upstream={"generator": generator_key},
                          seed=int(seed))


def _build(gen, cfg: InversionConfig, image_shape, seed: int):
  encoder = build_encoder(gen.latent_dim, gen.prior, image_shape, cfg.encoder_base_filters,
                          seed=seed)
  optimizer = keras.optimizers.Adam(cfg.encoder_learning_rate)
  optimizer.build(encoder.trainable_variables)
  return encoder, optimizer


def train_encoder(gen, x_train: np.ndarray, cfg: InversionConfig, directory: str,
                  seed: int = 0, log: Callable[[str], None] = print) -> InversionEncoder:
  """Trains E (resuming from `<directory>/checkpoints`); returns it.

  Args:
    gen: the frozen generator (`decode`, `latent_dim`, `prior`).
    x_train: uint8 training images [N, H, W, C].
    cfg: inversion config (encoder_* fields).
    directory: checkpoints and history.json.
    seed: seed of the prior draws and of the batch order.
    log: progress sink.
  Raises:
    FloatingPointError: the losses became non-finite.
  """
  encoder, optimizer = _build(gen, cfg, x_train.shape[1:], seed)
  loop = EpochLoop(directory, {"encoder": encoder, "optimizer": optimizer},
                   cfg.encoder_epochs, log=log, name="encoder ", tensorboard=False)
  n, bs = len(x_train), min(cfg.encoder_batch_size, len(x_train))
  steps = cfg.encoder_steps_per_epoch or max(n // bs, 1)
  x_all = tf.constant(x_train)

  def replica_step(idx):
    # The images are converted here, in the compiled step, not in tf.data: the graph
    # optimizer multiplies by 1/255 where tf.data divides, which moves the last bit of some
    # pixels, and with it the trained weights.
    x_real = to_float(tf.gather(x_all, idx))
    # Step s of epoch e draws its prior codes with the key (seed, e * 10**7 + s), read off
    # the optimizer's step counter, which the checkpoint restores with the weights.
    it = tf.cast(optimizer.iterations, tf.int64)
    step_seed = tf.stack([tf.constant(seed, tf.int64), it // steps * 10**7 + it % steps])
    z = sample_prior(gen.prior, bs, gen.latent_dim, step_seed)
    x_fake = tf.stop_gradient(gen.decode(z))
    with tf.GradientTape() as tape:
      latent = tf.reduce_mean(tf.square(encoder(x_fake, training=True) - z))
      recon = tf.reduce_mean(tf.square(gen.decode(encoder(x_real, training=True)) - x_real))
      loss = latent + cfg.encoder_recon_weight * recon
    grads = tape.gradient(loss, encoder.trainable_variables)
    optimizer.apply_gradients(zip(grads, encoder.trainable_variables))
    return {"latent_mse": latent, "recon_mse": recon}

  train_steps = Steps(loop.strategy, replica_step,
                      sums=("latent_mse", "recon_mse"), mean_of=steps)

  def run_epoch(epoch):
    # One pass order, repeated if the capped epoch needs more images than there are.
    order = epoch_order(seed, epoch, n, steps * bs, reshuffle=False).astype(np.int32)
    batches = tf.data.Dataset.from_tensor_slices(order).batch(bs, drop_remainder=True)
    means = train_steps.run_chunks(batches, steps,
                                   after=lambda k, means: loop.advance(k, **means))
    latent, recon = means["latent_mse"], means["recon_mse"]
    if not np.isfinite(latent + recon):
      raise FloatingPointError(
          f"encoder training diverged at epoch {epoch} (latent {latent}, recon {recon}); "
          "lower encoder_learning_rate or check the generator.")
    return {"latent_mse": latent, "recon_mse": recon,
            "recon_psnr": float(psnr_from_mse(recon))}

  loop.run(run_epoch)
  return encoder


def encoder_stage(gen, generator_key: str, x_train: np.ndarray, data_fingerprint: str,
                  cfg: InversionConfig, directory: str, seed: int = 0, rebuild: bool = False,
                  log: Callable[[str], None] = print,
                  index: Optional[str] = None) -> stages.StageResult:
  """The "encoder" stage: `train_encoder`, cached by `encoder_key` in `directory` (shared
  through `index` with other runs, see `stages.Stage.index`)."""
  stage = stages.Stage("encoder", directory, encoder_key(generator_key, cfg, data_fingerprint,
                                                         seed), index)

  def build(resumed):
    del resumed  # the EpochLoop resumes from the checkpoints by itself
    encoder = train_encoder(gen, x_train, cfg, directory, seed, log)
    return encoder, {"epochs": cfg.encoder_epochs}

  def load(record):
    del record
    encoder, optimizer = _build(gen, cfg, x_train.shape[1:], seed)
    loop = EpochLoop(directory, {"encoder": encoder, "optimizer": optimizer},
                     cfg.encoder_epochs, log=log, name="encoder ", tensorboard=False)
    if loop.restore(announce=False) != cfg.encoder_epochs:
      raise stages.StageDamaged(f"no readable final checkpoint in {os.path.join(directory)}")
    return encoder

  return stages.run_stage(stage, build, load, rebuild=rebuild, log=log)
