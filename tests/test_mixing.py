"""Tests of latmix_tf.mixing: the Beta(α, α) draws have the right distribution, draws are
stateless (same seed, same numbers), mixing broadcasts λ correctly and mixed labels are
distributions."""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from latmix_tf import mixing

SEED = tf.constant([3, 11], tf.int64)


@pytest.mark.parametrize("alpha", [0.4, 1.0, 2.0])
def test_lambda_follows_beta_alpha_alpha(alpha):
  n = 20000
  lam = mixing.sample_lambda([n], alpha, SEED).numpy()
  assert lam.shape == (n,) and lam.dtype == np.float32
  assert lam.min() >= 0.0 and lam.max() <= 1.0
  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)).
  var = 1.0 / (4.0 * (2.0 * alpha + 1.0))
  assert abs(lam.mean() - 0.5) < 4.0 * np.sqrt(var / n)
  assert abs(lam.var() - var) < 0.05 * var
  # And the whole distribution: a KS test against scipy's Beta (fixed seed: deterministic).
  assert scipy.stats.kstest(lam, scipy.stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_lambda_alpha_changes_the_distribution():
  # A test that can fail: alpha = 2 concentrates near 1/2 much more than alpha = 0.4.
  wide = mixing.sample_lambda([5000], 0.4, SEED).numpy()
  narrow = mixing.sample_lambda([5000], 2.0, SEED).numpy()
  assert narrow.var() < 0.5 * wide.var()


def test_draws_are_stateless_and_seed_dependent():
  a = mixing.sample_lambda([64], 1.0, SEED).numpy()
  b = mixing.sample_lambda([64], 1.0, SEED).numpy()
  c = mixing.sample_lambda([64], 1.0, SEED + 1).numpy()
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  compiled = tf.function(lambda s: mixing.sample_lambda([64], 1.0, s))
  np.testing.assert_array_equal(compiled(SEED).numpy(), a)


def test_sample_lambda_rejects_nonpositive_alpha():
  with pytest.raises(ValueError, match="alpha"):
    mixing.sample_lambda([4], 0.0, SEED)


def test_permutation_is_a_permutation_and_seeded():
  perm = mixing.sample_permutation(50, SEED).numpy()
  np.testing.assert_array_equal(np.sort(perm), np.arange(50))
  assert not np.array_equal(perm, np.arange(50))
  np.testing.assert_array_equal(perm, mixing.sample_permutation(50, SEED).numpy())
  assert not np.array_equal(perm, mixing.sample_permutation(50, SEED + 1).numpy())


def test_mix_broadcasts_per_example_and_per_batch_lambda():
  rng = np.random.default_rng(0)
  a = rng.uniform(size=(5, 4, 3, 2)).astype(np.float32)
  b = rng.uniform(size=(5, 4, 3, 2)).astype(np.float32)
  lam = rng.uniform(size=5).astype(np.float32)
  expected = lam[:, None, None, None] * a + (1 - lam[:, None, None, None]) * b
  np.testing.assert_allclose(mixing.mix(a, b, lam).numpy(), expected, rtol=1e-6)
  np.testing.assert_allclose(mixing.mix(a, b, 0.3).numpy(), 0.3 * a + 0.7 * b, rtol=1e-6)
  # Rank-2 tensors (latent codes) work the same way.
  z1, z2 = a.reshape(5, -1), b.reshape(5, -1)
  np.testing.assert_allclose(mixing.mix(z1, z2, lam).numpy(),
                             lam[:, None] * z1 + (1 - lam[:, None]) * z2, rtol=1e-6)
  # lambda = 1 returns the first argument exactly.
  np.testing.assert_array_equal(mixing.mix(a, b, np.ones(5, np.float32)).numpy(), a)


def test_mixed_labels_are_distributions():
  y = tf.one_hot([0, 1, 2, 3, 4, 5, 6, 7], 10)
  lam, perm = mixing.draw_lambda_and_partner(8, 1.0, SEED)
  x = tf.random.stateless_uniform([8, 6, 6, 1], SEED)
  x_mix, y_mix = mixing.mix_with_partner(x, y, lam, perm)
  y_mix = y_mix.numpy()
  np.testing.assert_allclose(y_mix.sum(-1), np.ones(8), rtol=1e-6)
  assert y_mix.min() >= 0.0
  lam, perm = lam.numpy(), perm.numpy()
  for i in range(8):
    assert y_mix[i, i] == pytest.approx(lam[i] + (1 - lam[i]) * (perm[i] == i), abs=1e-6)
    assert y_mix[i, perm[i]] == pytest.approx((1 - lam[i]) + lam[i] * (perm[i] == i), abs=1e-6)
  assert x_mix.shape == x.shape


def test_per_batch_lambda_is_a_scalar():
  lam, perm = mixing.draw_lambda_and_partner(16, 1.0, SEED, per_batch=True)
  assert lam.shape == () and perm.shape == (16,)
