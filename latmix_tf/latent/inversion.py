"""Generator inversion: find z with G(z) close to a given image x.

Latent mixup trains on G((1 - t) z_i + t z_j), so every training image needs a code z_i
that G decodes back into (nearly) that image. Two tools, combined:

* an encoder E: x -> z (`models/encoder.py`), trained with G frozen on pairs (G(z), z),
  z from the prior (latent regression), plus ||G(E(x)) - x||^2 on real images
  (`latmix_tf.latent.encoder_stage`, a cached and resumable stage);
* latent optimisation (Lipton & Tripathi 2017): Adam on z for K steps, minimising
  pixel MSE + w * feature distance (activations of a fixed network: the GAN's discriminator
  or the dataset classifier), with *stochastic clipping*: after each step, components that
  left the prior's support are resampled, not clamped (clamping piles codes up on the
  boundary, where the generator was rarely trained). For U[-1,1]^d the support is [-1, 1];
  N(0, I) has no bounded support, so components beyond +-cfg.normal_clip (default 5, which
  the prior almost never reaches: it only stops runaway codes) are resampled from a
  standard normal truncated at 2. A tighter radius (3) hurt: a VAE's codes do use the tails
  (beta=0.1 VAE, 20 steps from the posterior mean: 24.8 dB at 3, 25.5 dB at 5 or unclipped).

The whole optimisation of a batch (initialisation, K Adam steps, best-so-far bookkeeping)
is ONE `tf.function` with a fixed input shape, traced once: the last batch is padded.
Adam is written out on the z tensor (no tf.Variable), so the loop is a plain while loop.
A generator trained with its own encoder (VAE, or DCGAN with the recall term) starts from
that encoder's codes; K > 0 refines them with the same optimiser.

Generator interface used here (provided by `latmix_tf.generative`): `gen.decode(z)` ->
images in [0, 1], `gen.latent_dim`, `gen.prior` ("uniform" | "normal"), optional
`gen.feature_fn(x) -> [feature tensors]` and `gen.encode(x)` where the generator came with
an encoder (VAE posterior mean; DCGAN trained with the recall term).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from latmix_tf.latent.config import InversionConfig
from latmix_tf.data.pipeline import to_float
from latmix_tf.models.dcgan import PRIORS, sample_prior

FeatureFn = Callable[[tf.Tensor], Sequence[tf.Tensor]]
_INIT_SALT = 2 ** 31 - 1  # fold-in value of the initial draw (steps use 0..K-1)
_ADAM_B1, _ADAM_B2, _ADAM_EPS = 0.9, 0.999, 1e-8


def psnr_from_mse(mse):
  """PSNR in dB of [0,1] images: 10 log10(1 / MSE) (MSE floored at 1e-10)."""
  return (10.0 * np.log10(1.0 / np.maximum(np.asarray(mse, np.float64), 1e-10))).astype(
      np.float32)


def stochastic_clip(z: tf.Tensor, prior: str, seed, normal_clip: float = 5.0
                    ) -> Tuple[tf.Tensor, tf.Tensor]:
  """Resamples the components of z outside the prior's support (Lipton & Tripathi 2017).

  Args:
    z: latent codes [B, d].
    prior: "uniform": components outside [-1, 1] are replaced by U[-1, 1] draws;
      "normal": components with |z_i| > normal_clip by N(0,1) draws truncated at +-2.
    seed: shape-[2] stateless seed.
    normal_clip: radius per component for the normal prior.
  Returns:
    (clipped z, boolean mask of the resampled components).
  """
  if prior == "uniform":
    out = tf.abs(z) > 1.0
    fresh = tf.random.stateless_uniform(tf.shape(z), seed, -1.0, 1.0)
  elif prior == "normal":
    out = tf.abs(z) > normal_clip
    fresh = tf.random.stateless_truncated_normal(tf.shape(z), seed)
  else:
    raise ValueError(f"Unknown prior {prior!r}; valid: {PRIORS}.")
  return tf.where(out, fresh, z), out


def classifier_feature_fn(classifier) -> FeatureFn:
  """Feature function from a `BlockClassifier`: the output of every block but the head."""
  blocks = list(classifier.blocks[:-1])

  def features(x):
    out = []
    for block in blocks:
      x = block(x, training=False)
      out.append(x)
    return out
  return features


def _pixel_mse(a, b):
  return tf.reduce_mean(tf.square(a - b), axis=[1, 2, 3])


def _feature_distance(feats, targets):
  """Mean over layers of the per-sample mean squared difference of activations."""
  dists = [tf.reduce_mean(tf.reshape(tf.square(f - t), [tf.shape(f)[0], -1]), axis=1)
           for f, t in zip(feats, targets)]
  return tf.add_n(dists) / float(len(dists))


def resolve_feature_fn(gen, cfg: InversionConfig, feature_fn: Optional[FeatureFn] = None
                       ) -> Optional[FeatureFn]:
  """The fixed network whose activations enter the loss (None when feature_weight == 0)."""
  if cfg.feature_weight == 0:
    return None
  if feature_fn is not None:
    return feature_fn
  if cfg.feature_source == "discriminator":
    fn = getattr(gen, "feature_fn", None)
    if not callable(fn):
      raise ValueError(
          "feature_source='discriminator' but the generator has no `feature_fn`. Use feature_source='classifier' with "
          "feature_fn=classifier_feature_fn(classifier), or feature_weight=0.")
    return fn
  if cfg.feature_source == "classifier":
    raise ValueError("feature_source='classifier' needs "
                     "feature_fn=classifier_feature_fn(trained_classifier).")
  raise ValueError(f"Unknown feature_source {cfg.feature_source!r}; valid: "
                   "'discriminator', 'classifier'.")


def inversion_start(gen, cfg: InversionConfig) -> str:
  """Where the latent optimisation starts - the one place this is decided.

  "random" (prior samples, `cfg.random_starts`), "model_encoder" (the generator brought its
  own encoder: a VAE's posterior mean, a recall-trained DCGAN's E) or "encoder" (a post-hoc
  encoder must be trained first: `latmix_tf.latent.encoder_stage`).
  """
  if cfg.random_starts:
    return "random"
  return "model_encoder" if callable(getattr(gen, "encode", None)) else "encoder"


class Inverter:
  """Inverts batches of images with one compiled latent optimisation.

  The starting point is E(x) (`encoder`), the generator's own encoder `gen.encode` (VAE
  posterior mean, recall-trained DCGAN) when it has one, or prior samples when
  `cfg.random_starts`. Per sample the best z seen (lowest pixel MSE, including the start
  and the final iterate) is returned.
  """

  def __init__(self, gen, cfg: InversionConfig, image_shape: Sequence[int],
               encoder: Optional[keras.Model] = None,
               feature_fn: Optional[FeatureFn] = None, batch_size: Optional[int] = None):
    if gen.prior not in PRIORS:
      raise ValueError(f"Generator prior {gen.prior!r} unknown; valid: {PRIORS}.")
    if gen.prior == "normal" and cfg.normal_clip < 2.0:
      raise ValueError(f"normal_clip must be >= 2 (resampled values reach +-2), got "
                       f"{cfg.normal_clip}.")
    if cfg.steps < 0:
      raise ValueError(f"steps must be >= 0, got {cfg.steps}.")
    self.gen, self.cfg, self.encoder = gen, cfg, encoder
    self.latent_dim = int(gen.latent_dim)
    self.batch_size = int(batch_size or cfg.batch_size)
    self.init = inversion_start(gen, cfg)
    if self.init == "encoder" and encoder is None:
      raise ValueError("No starting point for the inversion: pass the encoder from "
                       "train_encoder(...), use a generator with its own encoder (a VAE, or a "
                       "DCGAN with recon_weight > 0), or set cfg.random_starts=True.")
    self.feature_fn = resolve_feature_fn(gen, cfg, feature_fn)
    spec = [tf.TensorSpec([self.batch_size, *image_shape], tf.float32, name="images"),
            tf.TensorSpec([2], tf.int64, name="seed")]
    self.invert_batch = tf.function(self._invert_batch, input_signature=spec)

  @property
  def tracing_count(self) -> int:
    """How often the batch optimisation was traced (1 after any number of batches)."""
    return self.invert_batch.experimental_get_tracing_count()

  def _initial_latents(self, x, seed):
    if self.init == "random":
      return sample_prior(self.gen.prior, self.batch_size, self.latent_dim,
                          tf.random.experimental.stateless_fold_in(seed, _INIT_SALT))
    if self.init == "model_encoder":
      return tf.convert_to_tensor(self.gen.encode(x), tf.float32)
    return tf.convert_to_tensor(self.encoder(x, training=False), tf.float32)

  def _losses(self, z, x, targets):
    recon = self.gen.decode(z)
    mse = _pixel_mse(recon, x)
    if not targets:
      return mse, mse
    return mse + self.cfg.feature_weight * _feature_distance(self.feature_fn(recon),
                                                             targets), mse

  def _invert_batch(self, x, seed):
    cfg = self.cfg
    z = self._initial_latents(x, seed)
    targets = ([tf.stop_gradient(f) for f in self.feature_fn(x)]
               if self.feature_fn is not None else [])
    best_z, best_mse = z, tf.fill([self.batch_size], np.float32(np.inf))
    m, v = tf.zeros_like(z), tf.zeros_like(z)

    def keep_best(z, mse, best_z, best_mse):
      better = mse < best_mse
      return tf.where(better[:, None], z, best_z), tf.where(better, mse, best_mse)

    for t in tf.range(cfg.steps):
      with tf.GradientTape() as tape:
        tape.watch(z)
        loss, mse = self._losses(z, x, targets)
        # Samples are independent: the gradient of the sum is the per-sample gradient.
        total = tf.reduce_sum(loss)
      g = tape.gradient(total, z)
      best_z, best_mse = keep_best(z, mse, best_z, best_mse)
      step = tf.cast(t + 1, tf.float32)
      m = _ADAM_B1 * m + (1.0 - _ADAM_B1) * g
      v = _ADAM_B2 * v + (1.0 - _ADAM_B2) * tf.square(g)
      m_hat = m / (1.0 - tf.pow(_ADAM_B1, step))
      v_hat = v / (1.0 - tf.pow(_ADAM_B2, step))
      z = z - cfg.learning_rate * m_hat / (tf.sqrt(v_hat) + _ADAM_EPS)
      z, resampled = stochastic_clip(z, self.gen.prior,
                                     tf.random.experimental.stateless_fold_in(seed, t),
                                     cfg.normal_clip)
      # A resampled component starts afresh: its old momentum points out of the support.
      m = tf.where(resampled, 0.0, m)
    best_z, best_mse = keep_best(z, _pixel_mse(self.gen.decode(z), x), best_z, best_mse)
    return best_z, best_mse

  def invert(self, x: np.ndarray, seed: int = 0, offset: int = 0,
             on_batch: Optional[Callable[[int], None]] = None
             ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverts any number of images (uint8 [0,255] or float [0,1], NHWC).

    Args:
      x: images.
      seed: run seed; batch b draws its random numbers from (seed, offset + b * batch).
      offset: absolute index of x[0] in the dataset, so that a chunk inverted on its own
        gets the same random numbers as in a whole-set run.
      on_batch: called with the number of images after each batch (progress).
    Returns:
      (z float32 [N, d], pixel MSE float32 [N], PSNR dB float32 [N]).
    """
    x = to_float(np.asarray(x))
    n, bs = len(x), self.batch_size
    z = np.empty((n, self.latent_dim), np.float32)
    mse = np.empty((n,), np.float32)
    for start in range(0, n, bs):
      xb = x[start:start + bs]
      k = len(xb)
      if k < bs:  # fixed batch shape: pad with blank images, drop their results
        xb = np.concatenate([xb, np.zeros((bs - k,) + xb.shape[1:], np.float32)])
      zb, mb = self.invert_batch(tf.constant(xb),
                                 tf.constant([seed, offset + start], tf.int64))
      z[start:start + k], mse[start:start + k] = zb.numpy()[:k], mb.numpy()[:k]
      if on_batch is not None:
        on_batch(k)
    return z, mse, psnr_from_mse(mse)
