"""Latent-Mixup: pair sampling, soft labels, and the decoded batches of the real pipeline."""

import types

import numpy as np
import pytest
import tensorflow as tf

from latmix_tf.config import GeneratorConfig
from latmix_tf.generative import build_generative_model
from latmix_tf.latent_mixup import (LatentMixup, LatentMixupConfig, PairSampler,
                                    latent_mix_dataset, mixed_examples, num_mixed)


def _bank(n=60, d=8, seed=0):
  rng = np.random.default_rng(seed)
  return types.SimpleNamespace(z=rng.uniform(-1, 1, (n, d)).astype(np.float32),
                               labels=np.arange(n) % 10)


@pytest.fixture(scope="module")
def gen():
  cfg = GeneratorConfig(kind="dcgan", latent_dim=8, base_filters=8)
  return build_generative_model(cfg, (28, 28, 1), seed=0)


@pytest.mark.parametrize("pairs", ["random", "same_class", "different_class"])
def test_pair_restrictions(pairs):
  bank = _bank()
  i, j = PairSampler(bank.labels, 10, pairs).sample(500, tf.constant([1, 2], tf.int64))
  yi, yj = bank.labels[i.numpy()], bank.labels[j.numpy()]
  assert i.numpy().min() >= 0 and j.numpy().max() < len(bank.labels)
  if pairs == "same_class":
    assert np.all(yi == yj)
  elif pairs == "different_class":
    assert np.all(yi != yj)
    assert len(np.unique(yj)) == 10  # every other class is reachable
  else:
    assert 0 < np.mean(yi == yj) < 0.3


def test_labels_are_the_mix_of_the_sources_and_sum_to_one():
  bank = _bank()
  ds = latent_mix_dataset(bank.z, PairSampler(bank.labels, 10), 10, 64, 1.0, seed=3, epoch=0)
  ex = {k: v.numpy() for k, v in next(iter(ds)).items()}
  np.testing.assert_allclose(ex["labels"].sum(-1), 1.0, rtol=1e-6)
  lam = ex["lam"]
  expected = (lam[:, None] * np.eye(10)[bank.labels[ex["i"]]] +
              (1 - lam[:, None]) * np.eye(10)[bank.labels[ex["j"]]])
  np.testing.assert_allclose(ex["labels"], expected, atol=1e-6)
  np.testing.assert_allclose(ex["z"], lam[:, None] * bank.z[ex["i"]] +
                             (1 - lam[:, None]) * bank.z[ex["j"]], atol=1e-6)


def test_stream_is_a_function_of_seed_and_epoch():
  bank = _bank()
  sampler = PairSampler(bank.labels, 10)
  a = next(iter(latent_mix_dataset(bank.z, sampler, 10, 16, 1.0, 0, 4)))
  b = next(iter(latent_mix_dataset(bank.z, sampler, 10, 16, 1.0, 0, 4)))
  c = next(iter(latent_mix_dataset(bank.z, sampler, 10, 16, 1.0, 0, 5)))
  np.testing.assert_array_equal(a["i"], b["i"])
  assert not np.array_equal(a["i"], c["i"])


@pytest.mark.parametrize("decode_in", ["pipeline", "step"])
def test_training_batches_are_exactly_decoded_mixes(gen, decode_in):
  """The images the classifier trains on are G(λ z_i + (1-λ) z_j) for the recorded pairs."""
  bank = _bank()
  method = LatentMixup(LatentMixupConfig(decode_in=decode_in, mixed_fraction=0.2), gen=gen,
                       bank=bank, batch_size=16)
  method.build(None, 10)
  assert method.m == num_mixed(16, 0.2) == 4
  real = tf.data.Dataset.from_tensors((tf.zeros([16, 28, 28, 1]), tf.one_hot(tf.range(16) % 10, 10)))
  (x, y), = list(method.transform_dataset(real, epoch=2, seed=7).take(1))
  x_all, y_all = method.prepare_batch(None, x, y, tf.constant([0, 0], tf.int64))
  assert x_all.shape == (20, 28, 28, 1)
  np.testing.assert_allclose(tf.reduce_sum(y_all), 16.0, rtol=1e-6)  # label mass = real batch
  rec = next(iter(method.mixed_stream(epoch=2, seed=7)))
  z = (rec["lam"].numpy()[:, None] * bank.z[rec["i"].numpy()] +
       (1 - rec["lam"].numpy()[:, None]) * bank.z[rec["j"].numpy()])
  np.testing.assert_allclose(x_all[16:], gen.decode(tf.constant(z)), atol=1e-5)
  np.testing.assert_allclose(y_all[16:] / method.real_weight, rec["labels"], atol=1e-6)


def test_mixed_examples_for_reports(gen):
  method = LatentMixup(LatentMixupConfig(), gen=gen, bank=_bank(), batch_size=8)
  method.build(None, 10)
  ex = mixed_examples(method, 5)
  assert ex["images"].shape == (5, 28, 28, 1) and ex["lam"].shape == (5,)


def test_bad_configs_are_rejected(gen):
  with pytest.raises(ValueError, match="decode_in"):
    LatentMixup(LatentMixupConfig(decode_in="gpu"), gen=gen, bank=_bank())
  with pytest.raises(ValueError, match="pairs"):
    PairSampler(np.arange(10), 10, "nearest")
  with pytest.raises(ValueError, match="needs the generator"):
    LatentMixup(LatentMixupConfig())
