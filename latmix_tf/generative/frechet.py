"""Generator quality figure: Fréchet distance in the feature space of a dataset classifier.

Following Heusel et al. (2017), fit a Gaussian to the features of N generated images and of
N test images and report
    FD = |mu_g - mu_t|^2 + tr(S_g + S_t - 2 (S_g S_t)^{1/2}).
The features are the penultimate layer of a classifier trained on the *same* dataset (the
`features` signature of a SavedModel exported by `latmix_tf.export`, or any callable), NOT
Inception-v3: the numbers compare our GANs/VAEs and runs with one another, on one dataset and
one feature network, and are not comparable with published FIDs.

tr((S_g S_t)^{1/2}) is computed without scipy: with A = S_g^{1/2} (symmetric eigen-
decomposition), S_g S_t is similar to the symmetric PSD matrix A S_t A, so the trace of its
square root is the sum of the square roots of the (clipped non-negative) eigenvalues of
A S_t A. Everything is in float64, which is stable for singular covariances too.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from latmix_tf import export, stages
from latmix_tf.data.pipeline import to_float
from latmix_tf.data.sources import array_fingerprint
from latmix_tf.generative.handle import generator_checkpoint_hash

FeatureSource = Union[str, Callable[[tf.Tensor], tf.Tensor]]


def statistics(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Mean [D] and covariance [D, D] (unbiased) of features [N, D], in float64."""
  f = np.asarray(features, np.float64).reshape(len(features), -1)
  if len(f) < 2:
    raise ValueError(f"Need at least 2 feature vectors for a covariance, got {len(f)}.")
  return f.mean(axis=0), np.cov(f, rowvar=False)


def _sym_sqrt(s: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((s + s.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2)."""
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f"Shape mismatch: means {mu1.shape} vs {mu2.shape}, covariances "
                     f"{sigma1.shape} vs {sigma2.shape}.")
  root = _sym_sqrt(sigma1)
  cross = root @ sigma2 @ root
  eig = np.linalg.eigvalsh((cross + cross.T) / 2)
  tr_sqrt = np.sum(np.sqrt(np.clip(eig, 0.0, None)))
  diff = mu1 - mu2
  value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_sqrt
  return float(max(value, 0.0))


def frechet_distance_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
  """Fréchet distance between the Gaussians fitted to two feature sets [N, D]."""
  return frechet_distance(*statistics(f1), *statistics(f2))


def feature_extractor(source: FeatureSource) -> Callable[[tf.Tensor], tf.Tensor]:
  """Returns `images in [0,1] -> features [N, D]` from an export dir or a callable.

  Args:
    source: a SavedModel directory exported by `latmix_tf.export` (uses its `features`
      signature), a Keras classifier with a `features` method (penultimate layer), or any
      callable images -> features.
  Raises:
    ValueError: the SavedModel has no `features` signature.
  """
  if isinstance(source, str):
    fn = export.load_classifier(source)  # validates the directory and signature
    loaded = fn._latmix_keepalive  # pylint: disable=protected-access
    if export.FEATURES_SIGNATURE not in loaded.signatures:
      raise ValueError(f"{source}: no {export.FEATURES_SIGNATURE!r} signature (found "
                       f"{sorted(loaded.signatures)}); re-export the classifier with "
                       f"latmix_tf.export.export_classifier from a model with `features`.")
    feat = loaded.signatures[export.FEATURES_SIGNATURE]
    name, _ = export.signature_input(feat)
    return lambda images: feat(**{name: images})["features"]
  if hasattr(source, "features"):
    return tf.function(lambda images: source.features(images, training=False))
  if callable(source):
    return source
  raise ValueError(f"Cannot extract features from {type(source).__name__}: pass an export "
                   f"directory, a classifier with `features`, or a callable.")


def compute_features(extract: Callable[[tf.Tensor], tf.Tensor], images: np.ndarray,
                     batch_size: int = 500) -> np.ndarray:
  """Features [N, D] of images (uint8 [0,255] or float [0,1]), flattened, in batches."""
  out = []
  for i in range(0, len(images), batch_size):
    batch = images[i:i + batch_size]
    x = tf.constant(to_float(batch))
    out.append(np.asarray(extract(x)).reshape(len(batch), -1))
  return np.concatenate(out, axis=0)


def generator_frechet_distance(gm, test_images: np.ndarray, classifier: FeatureSource,
                               num_samples: Optional[int] = 10000, seed: int = 0,
                               batch_size: int = 500) -> float:
  """Fréchet distance between `num_samples` generated and `num_samples` test images.

  Args:
    gm: a `latmix_tf.generative.GenerativeModel` (samples = decode(prior samples)).
    test_images: uint8 [N,H,W,C] (or float in [0,1]) test images; the first
      `num_samples` are used (all of them if there are fewer).
    classifier: feature source, see `feature_extractor`.
    num_samples: N (default 10k, the usual FID sample size); None uses every test image.
    seed: seed of the prior samples.
  Returns:
    The distance (lower is better; 0 for identical feature statistics).
  """
  n = len(test_images) if num_samples is None else min(num_samples, len(test_images))
  extract = feature_extractor(classifier)
  real = compute_features(extract, test_images[:n], batch_size)
  fake = gm.decode_numpy(gm.sample_prior(n, seed).numpy(), batch_size)
  return frechet_distance_from_features(compute_features(extract, fake, batch_size), real)


def frechet_stage(gm, generator_key: str, test_images: np.ndarray, feature_model: str,
                  directory: str, num_samples: int = 10000, seed: int = 0,
                  log: Callable[[str], None] = print, index: Optional[str] = None,
                  rebuild: bool = False) -> stages.StageResult:
  """The "frechet" stage: `generator_frechet_distance` against a SavedModel's features.

  Why a stage: a rerun whose generator and feature network did not change should not spend
  ~20 s recomputing the same figure. Keyed by the generator stage's key and weights, the
  feature SavedModel's fingerprint, the test images, N and the seed; any change recomputes.
  Its outputs are {"frechet_distance", "feature_model", "num_samples"}.
  """
  n = min(num_samples, len(test_images))
  key = stages.stage_key(
      data=array_fingerprint(test_images[:n]),
      upstream={"generator": generator_key, "generator_weights": generator_checkpoint_hash(gm),
                "features": export.saved_model_fingerprint(feature_model)},
      num_samples=n, seed=int(seed))

  def build(resumed):
    del resumed
    fd = generator_frechet_distance(gm, test_images, feature_model, num_samples=n, seed=seed)
    log(f"generator Fréchet distance ({n} samples vs {n} test images, features of "
        f"{feature_model}): {fd:.2f}")
    return fd, {"frechet_distance": float(fd), "feature_model": os.path.abspath(feature_model),
                "num_samples": n}

  def load(record):
    value = record["outputs"].get("frechet_distance")
    if not isinstance(value, (int, float)) or not np.isfinite(value):
      raise stages.StageDamaged("no finite distance in the record")
    return value

  return stages.run_stage(stages.Stage("frechet", directory, key, index), build, load,
                          rebuild=rebuild, log=log)
