"""Fréchet distance: known answers for Gaussians, sample estimates, feature sources."""

import os
import numpy as np
import pytest
import tensorflow as tf

from latmix_tf.generative import frechet
from latmix_tf.config import ModelConfig
from latmix_tf.generative.config import GeneratorConfig
from latmix_tf.export import export_classifier
from latmix_tf.generative import build_generative_model
from latmix_tf.models.classifiers import build_classifier


def _random_spd(rng, d):
  a = rng.normal(size=(d, d))
  return a @ a.T + 0.1 * np.eye(d)


def test_diagonal_gaussians_closed_form():
  # For commuting (diagonal) covariances: |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
  want = 1.0 + 0.0 + 4.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2
  assert frechet.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want)


def test_one_dimensional():
  # N(0, 1) vs N(3, 4): 9 + 1 + 4 - 2 * 2 = 10.
  assert frechet.frechet_distance([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(10.0)


def test_general_covariances_match_scipy_sqrtm():
  scipy_linalg = pytest.importorskip("scipy.linalg")
  rng = np.random.default_rng(0)
  for d in (2, 5, 16):
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    covmean = np.real(scipy_linalg.sqrtm(s1 @ s2))
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-8)


def test_identical_and_singular():
  rng = np.random.default_rng(1)
  s = _random_spd(rng, 6)
  assert frechet.frechet_distance(np.zeros(6), s, np.zeros(6), s) == pytest.approx(0, abs=1e-9)
  # Rank-deficient covariances (fewer samples than dims) stay finite and >= 0.
  f = rng.normal(size=(4, 10))
  assert frechet.frechet_distance_from_features(f, f) == pytest.approx(0.0, abs=1e-9)
  g = rng.normal(size=(4, 10)) + 1.0
  assert np.isfinite(frechet.frechet_distance_from_features(f, g))
  assert frechet.frechet_distance_from_features(f, g) > 1.0


def test_sample_estimate_converges_to_closed_form():
  rng = np.random.default_rng(2)
  d = 4
  s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
  mu1, mu2 = np.zeros(d), np.full(d, 0.5)
  exact = frechet.frechet_distance(mu1, s1, mu2, s2)
  f1 = rng.multivariate_normal(mu1, s1, size=200_000)
  f2 = rng.multivariate_normal(mu2, s2, size=200_000)
  assert frechet.frechet_distance_from_features(f1, f2) == pytest.approx(exact, rel=0.02)


def test_shape_mismatch_raises():
  with pytest.raises(ValueError, match="Shape mismatch"):
    frechet.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_generator_distance_with_exported_classifier(tmp_path):
  classifier = build_classifier(ModelConfig(widths=(4, 8), dense_units=8), (28, 28, 1))
  export_dir = export_classifier(classifier, str(tmp_path / "clf"), (28, 28, 1))
  gm = build_generative_model(GeneratorConfig(latent_dim=8, base_filters=4), (28, 28, 1))
  rng = np.random.default_rng(0)
  test = rng.integers(0, 256, size=(64, 28, 28, 1)).astype(np.uint8)
  from_dir = frechet.generator_frechet_distance(gm, test, export_dir, num_samples=50)
  from_model = frechet.generator_frechet_distance(gm, test, classifier, num_samples=50)
  assert from_dir > 0 and np.isfinite(from_dir)
  assert from_dir == pytest.approx(from_model, rel=1e-4)
  # The same images as "generated" and "test" set: distance ~0 (plain callable source).
  extract = frechet.feature_extractor(lambda x: tf.reshape(x, [tf.shape(x)[0], -1])[:, :20])
  feats = frechet.compute_features(extract, test)
  assert feats.shape == (64, 20)
  assert frechet.frechet_distance_from_features(feats, feats) == pytest.approx(0, abs=1e-9)


def test_export_without_features_signature_is_rejected(tmp_path):
  with pytest.raises(FileNotFoundError):
    frechet.feature_extractor(str(tmp_path / "nothing"))
  import keras
  plain = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(10)])
  plain(tf.zeros([1, 28, 28, 1]))
  export_dir = export_classifier(plain, str(tmp_path / "plain"), (28, 28, 1))
  with pytest.raises(ValueError, match="no 'features' signature"):
    frechet.feature_extractor(export_dir)


def test_cached_distance_is_reused_until_generator_or_features_change(tmp_path):
  classifier = build_classifier(ModelConfig(widths=(4, 8), dense_units=8), (28, 28, 1))
  export_dir = export_classifier(classifier, str(tmp_path / "clf"), (28, 28, 1))
  gm = build_generative_model(GeneratorConfig(latent_dim=8, base_filters=4), (28, 28, 1))
  test = np.random.default_rng(0).integers(0, 256, size=(40, 28, 28, 1)).astype(np.uint8)
  directory = str(tmp_path / "frechet")

  def stage(**kw):
    return frechet.frechet_stage(gm, "gkey", test, export_dir, directory, num_samples=30,
                                 log=lambda s: None, **kw)
  first = stage()
  assert first.status == "built"
  assert first.value == pytest.approx(
      frechet.generator_frechet_distance(gm, test, export_dir, num_samples=30), rel=1e-6)
  again = stage()
  assert again.status == "cached" and again.value == first.value
  other_seed = stage(seed=1)
  assert other_seed.status == "built" and other_seed.record["key"]["seed"] == 1
  # Other features (a re-exported classifier with other weights) are another key.
  classifier.set_weights([w + 0.01 for w in classifier.get_weights()])
  export_classifier(classifier, export_dir, (28, 28, 1))
  assert stage(seed=1).status == "built"
  with open(os.path.join(directory, "stage.json"), "w") as f:
    f.write("{truncated")
  assert stage(seed=1).status == "built"  # a damaged record is recomputed, not trusted
