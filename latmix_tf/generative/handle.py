"""The `GenerativeModel` handle: one interface over the DCGAN and the VAE.

Inversion, the latent bank and latent mixup only need "decode z", "sample z", "features of
a fixed network" and, for the VAE, "encode to the posterior mean"; this handle provides
exactly those (see the package docstring for the full contract), so they work unchanged
whichever generator an experiment picks.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from latmix_tf.generative.config import GeneratorConfig
from latmix_tf.models import dcgan, vae

KINDS = ("dcgan", "vae")


class GenerativeModel:
  """A trained (or fresh) DCGAN or VAE behind the common generator interface."""

  def __init__(self, trainer: keras.Model, config: GeneratorConfig):
    self.trainer = trainer
    self.config = config
    self.kind = config.kind
    self.latent_dim = trainer.latent_dim
    self.prior = trainer.prior
    self.prior_bound: Optional[float] = 1.0 if self.prior == "uniform" else None
    self.image_shape = tuple(trainer.image_shape)
    self.checkpoint_hash: Optional[str] = None
    self.metadata: Dict = {}
    self._decode_fn = None  # compiled once, on first use by decode_numpy
    if isinstance(trainer, dcgan.DCGAN):
      self.generator = trainer.generator
      self.models = {"generator": trainer.generator, "discriminator": trainer.discriminator}
      self._features = lambda x: trainer.discriminator.features(x, training=False)
      if trainer.encoder is not None:  # trained with G by the recall term (recon_weight)
        self.models["encoder"] = trainer.encoder
    else:
      self.generator = trainer.decoder
      self.models = {"encoder": trainer.encoder, "decoder": trainer.decoder}
      self._features = trainer.encoder.features
    # The encoder trained with the generator (VAE: posterior mean), if any, starts inversion.
    self.encode: Optional[Callable[[tf.Tensor], tf.Tensor]] = (
        (lambda x: trainer.encoder(x, training=False)) if trainer.encoder is not None else None)

  def decode(self, z: tf.Tensor) -> tf.Tensor:
    """Latent codes [N, d] -> images [N, H, W, C] in [0, 1] (inference mode)."""
    return self.generator(z, training=False)

  def sample_prior(self, n, seed) -> tf.Tensor:
    """n codes from the prior; `seed` is an int or a shape-[2] int tensor (stateless)."""
    return dcgan.sample_prior(self.prior, n, self.latent_dim, seed)

  def sample(self, n, seed) -> tf.Tensor:
    return self.decode(self.sample_prior(n, seed))

  def feature_fn(self, x: tf.Tensor) -> List[tf.Tensor]:
    """Activations of the fixed feature network (D for the GAN, E for the VAE)."""
    return self._features(x)

  def decode_numpy(self, z: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Decodes a large array of codes in batches (one compiled function), float32 numpy."""
    if self._decode_fn is None:
      self._decode_fn = tf.function(self.decode, reduce_retracing=True)
    fn = self._decode_fn
    out = [fn(tf.constant(z[i:i + batch_size], tf.float32)).numpy()
           for i in range(0, len(z), batch_size)]
    return np.concatenate(out, axis=0)

  def __repr__(self):
    return (f"GenerativeModel(kind={self.kind!r}, latent_dim={self.latent_dim}, "
            f"prior={self.prior!r}, image_shape={self.image_shape}, "
            f"checkpoint_hash={self.checkpoint_hash!r})")


def build_generative_model(cfg: GeneratorConfig, image_shape, seed: int = 0,
                           sync_batch_norm: bool = False) -> GenerativeModel:
  """Builds and compiles the (untrained) model named by `cfg.kind`.

  Args:
    cfg: generator config; for the VAE `cfg.prior` is ignored (always N(0, I)).
    image_shape: (H, W, C), 28x28xC or 32x32xC.
    seed: keys the training noise (weights are initialised from Keras' global seed).
    sync_batch_norm: DCGAN: G's batch statistics over all replicas (pass
      `strategy.num_replicas_in_sync > 1` when building under `strategy.scope()`).
  Raises:
    ValueError: unknown kind / prior, or an unsupported image shape.
  """
  if cfg.kind == "dcgan":
    trainer = dcgan.DCGAN(cfg.latent_dim, image_shape, cfg.prior, cfg.base_filters, seed=seed,
                          sync_batch_norm=sync_batch_norm, recon_weight=cfg.recon_weight)
    trainer.compile(learning_rate=cfg.learning_rate, beta_1=cfg.beta_1,
                    g_learning_rate=cfg.g_learning_rate,
                    encoder_learning_rate=cfg.encoder_learning_rate)
  elif cfg.kind == "vae":
    dcgan.check_prior(cfg.prior)
    if cfg.recon_weight:
      raise ValueError(f"recon_weight={cfg.recon_weight} is a DCGAN option (its recall term); "
                       "the VAE's ELBO has its own reconstruction term: set recon_weight=0.")
    trainer = vae.VAE(cfg.latent_dim, image_shape, cfg.base_filters, cfg.kl_weight, seed=seed)
    trainer.compile(learning_rate=cfg.learning_rate, beta_1=cfg.beta_1)
  else:
    raise ValueError(f"Unknown generator kind {cfg.kind!r}; valid: {', '.join(KINDS)}.")
  return GenerativeModel(trainer, cfg)


def generator_checkpoint_hash(gm_or_models) -> str:
  """Identity of a trained generator: SHA-256 (16 hex) of the weights of its models.

  Layer names are left out (Keras numbers them per process), so the same weights give the
  same hash in any process; RNG states are left out too (`model.weights`, unlike
  `model.variables`, excludes SeedGenerator states: they are not part of what G computes). Artifacts derived from a generator
  (the latent bank) store this and are rebuilt when it changes.

  Args:
    gm_or_models: a `GenerativeModel` or a dict name -> keras.Model.
  """
  models = gm_or_models.models if isinstance(gm_or_models, GenerativeModel) else gm_or_models
  h = hashlib.sha256()
  for name in sorted(models):
    h.update(name.encode())
    for w in models[name].weights:
      value = np.ascontiguousarray(w.value.numpy())
      h.update(str((value.shape, value.dtype.str)).encode())
      h.update(value.tobytes())
  return h.hexdigest()[:16]
