"""Latent-Mixup: pair sampling, soft labels, and the decoded batches of the real pipeline."""

import types

import numpy as np
import pytest
import tensorflow as tf

from latmix_tf.generative.config import GeneratorConfig
from latmix_tf.generative import build_generative_model
from latmix_tf.latent.mixes import PairSampler, latent_mix_dataset
from latmix_tf.training.latent_mixup import (LatentMixup, LatentMixupConfig, mixed_examples,
                                             num_mixed)


def _bank(n=60, d=8, seed=0):
  rng = np.random.default_rng(seed)
  return types.SimpleNamespace(z=rng.uniform(-1, 1, (n, d)).astype(np.float32),
                               labels=np.arange(n) % 10)


@pytest.fixture(scope="module")
def gen():
  cfg = GeneratorConfig(kind="dcgan", latent_dim=8, base_filters=8)
  return build_generative_model(cfg, (28, 28, 1), seed=0)


@pytest.mark.parametrize("pairs", ["random", "same_class", "different_class", "self"])
def test_pair_restrictions(pairs):
  bank = _bank()
  i, j = PairSampler(bank.labels, 10, pairs).sample(500, tf.constant([1, 2], tf.int64))
  yi, yj = bank.labels[i.numpy()], bank.labels[j.numpy()]
  assert i.numpy().min() >= 0 and j.numpy().max() < len(bank.labels)
  if pairs == "same_class":
    assert np.all(yi == yj)
  elif pairs == "self":  # reconstructions: each image with itself, every class reachable
    assert np.array_equal(i.numpy(), j.numpy()) and len(np.unique(yi)) == 10
  elif pairs == "different_class":
    assert np.all(yi != yj)
    assert len(np.unique(yj)) == 10  # every other class is reachable
  else:
    assert 0 < np.mean(yi == yj) < 0.3


def test_self_pairs_give_reconstruction_codes_and_one_hot_labels():
  bank = _bank()
  ds = latent_mix_dataset(bank.z, PairSampler(bank.labels, 10, "self"), 10, 64, 1.0, seed=3,
                          epoch=0)
  ex = {k: v.numpy() for k, v in next(iter(ds)).items()}
  assert ex["lam"].std() > 0.1  # λ is still drawn, and does not matter
  np.testing.assert_allclose(ex["z"], bank.z[ex["i"]], atol=1e-6)
  np.testing.assert_allclose(ex["labels"], np.eye(10)[bank.labels[ex["i"]]], atol=1e-6)


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


def test_input_mixup_ablation_mixes_only_the_real_part(gen):
  bank = _bank()
  rng = np.random.default_rng(0)
  x_real = tf.constant(rng.uniform(0, 1, (8, 28, 28, 1)), tf.float32)
  y_real = tf.one_hot(np.arange(8) % 10, 10)
  x_mix = tf.constant(rng.uniform(0, 1, (2, 28, 28, 1)), tf.float32)
  y_mix = tf.one_hot([1, 2], 10) * 0.5 + tf.one_hot([3, 4], 10) * 0.5
  seed = tf.constant([5, 6], tf.int64)
  batch = ((x_real, x_mix), (y_real, y_mix))
  plain = LatentMixup(LatentMixupConfig(), gen=gen, bank=bank, batch_size=8)
  mixed = LatentMixup(LatentMixupConfig(input_mixup_alpha=1.0), gen=gen, bank=bank,
                      batch_size=8)
  assert plain.m == mixed.m == 2
  x0, y0 = plain.prepare_batch(None, *batch, seed)
  x1, y1 = mixed.prepare_batch(None, *batch, seed)
  np.testing.assert_array_equal(x0[:8].numpy(), x_real.numpy())  # default: real untouched
  np.testing.assert_array_equal(x1[8:].numpy(), x0[8:].numpy())  # latent part unchanged
  assert not np.allclose(x1[:8].numpy(), x_real.numpy())
  # Each mixed real row is λ x_i + (1-λ) x_perm(i), its label the same mix: the label of a
  # row recovers λ and the partner, and the pixels must agree with them.
  w = mixed.real_weight
  labels = y1[:8].numpy() / w
  np.testing.assert_allclose(labels.sum(-1), 1.0, atol=1e-6)
  for r in range(8):
    top = np.argsort(labels[r])[::-1]
    lam, k = labels[r, r % 10], top[0] if top[0] != r % 10 else top[1]
    partner = int(k) if labels[r, k] > 0 else r
    np.testing.assert_allclose(x1[r].numpy(), lam * x_real[r].numpy() +
                               (1 - lam) * x_real[partner].numpy(), atol=1e-5)
  with pytest.raises(ValueError, match="input_mixup_alpha"):
    LatentMixup(LatentMixupConfig(input_mixup_alpha=-1.0), gen=gen, bank=bank)


def test_mix_quality_known_answers():
  """A reference that reads the class off an image's brightness (class c <-> value c/10):
  mixes that are really x_i are seen as y_i, so p(mixed label) = its weight on y_i."""
  from latmix_tf.latent.mix_quality import mix_quality  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  y = np.arange(200) % 10
  x = np.broadcast_to((y * 25)[:, None, None, None], (200, 4, 4, 1)).astype(np.uint8)
  centers = tf.constant(np.arange(10) * 25 / 255.0, tf.float32)
  predict = lambda imgs: tf.nn.softmax(-1e4 * tf.square(  # noqa: E731
      tf.reduce_mean(tf.cast(imgs, tf.float32) / (255.0 if imgs.dtype == np.uint8 else 1.0),
                     axis=[1, 2, 3])[:, None] - centers[None, :])).numpy()
  i, j = rng.integers(0, 200, 300), rng.integers(0, 200, 300)
  lam = rng.uniform(0, 1, 300).astype(np.float32)
  soft = lam[:, None] * np.eye(10)[y[i]] + (1 - lam[:, None]) * np.eye(10)[y[j]]
  mixes = {"images": x[i] / 255.0, "labels": soft, "i": i, "j": j, "lam": lam}
  z_bank = (y / 10.0)[:, None].astype(np.float32)  # a "generator" that decodes perfectly
  decode = lambda z: np.broadcast_to(  # noqa: E731
      (np.round(z[:, 0] * 10) * 25 / 255.0)[:, None, None, None], (len(z), 4, 4, 1))
  q = mix_quality(mixes, decode, z_bank, x, y, predict)
  same = y[i] == y[j]
  assert q["mix/samples"] == 300
  np.testing.assert_allclose(q["mix/label_confidence"], np.mean(np.where(same, 1.0, lam)),
                             atol=1e-6)
  np.testing.assert_allclose(q["mix/source_mass"], 1.0, atol=1e-6)
  np.testing.assert_allclose(q["mix/dominant_agreement"], np.mean(lam[~same] >= 0.5), atol=1e-9)
  assert q["mix/real_confidence"] > 0.999 and q["mix/recon_confidence"] > 0.999
  # Images that are the midpoint class (neither source) get no mass on either source.
  mid = dict(mixes, images=np.full_like(mixes["images"], 9 * 25 / 255.0))
  far = mix_quality(mid, decode, z_bank, x, y, predict)
  assert far["mix/source_mass"] < q["mix/source_mass"] and far["mix/soft_label_ce"] > 1.0
