"""Tests of the inversion encoder, stochastic clipping and the compiled latent optimisation.

Known answers come from `TinyGenerator` (smooth, injective near z*): images that ARE G(z*)
must be inverted back to z* with ~0 error, from random starts and from the encoder. One
test runs the real DCGAN handle of `latmix_tf.generative` through the same code.
"""


import numpy as np
import pytest
import tensorflow as tf

from latmix_tf.config import ModelConfig
from latmix_tf.generative.config import GeneratorConfig
from latmix_tf.latent.config import InversionConfig
from latmix_tf.generative import build_generative_model
from latmix_tf.latent.inversion import (Inverter, classifier_feature_fn, psnr_from_mse,
                                 stochastic_clip)
from latmix_tf.latent.encoder_stage import encoder_stage, train_encoder
from latmix_tf.models.classifiers import build_classifier
from latmix_tf.models.encoder import build_encoder
from tiny_generator import TinyGenerator


def _targets(gen, n, seed=0, scale=0.8):
  z_true = np.random.default_rng(seed).uniform(-scale, scale, (n, gen.latent_dim))
  z_true = z_true.astype(np.float32)
  return z_true, gen.decode(tf.constant(z_true)).numpy()


@pytest.mark.parametrize("shape,prior", [((28, 28, 1), "uniform"), ((32, 32, 3), "normal")])
def test_encoder_shapes_and_support(shape, prior):
  enc = build_encoder(16, prior, shape, base_filters=8)
  z = enc(tf.random.uniform([5, *shape]) * 50.0).numpy()  # large inputs: saturate tanh
  assert z.shape == (5, 16) and np.all(np.isfinite(z))
  if prior == "uniform":
    assert np.all(np.abs(z) <= 1.0)


def test_stochastic_clip_resamples_not_clamps():
  z = np.zeros((200, 50), np.float32)
  z[:, :25] = np.linspace(-0.99, 0.99, 25)   # inside: must be kept
  z[:, 25:] = np.where(np.arange(25) % 2, 3.0, -1.5)  # outside: must be resampled
  out, mask = stochastic_clip(tf.constant(z), "uniform", tf.constant([1, 2], tf.int64))
  out, mask = out.numpy(), mask.numpy()
  np.testing.assert_array_equal(out[:, :25], z[:, :25])
  assert mask[:, 25:].all() and not mask[:, :25].any()
  fresh = out[:, 25:]
  assert np.all(np.abs(fresh) <= 1.0)
  # Clamping would give exactly +-1; resampling gives U[-1,1]: mean ~0, std ~0.577.
  assert np.mean(np.abs(fresh) > 0.999) < 0.01
  assert abs(fresh.mean()) < 0.05 and abs(fresh.std() - 1 / np.sqrt(3)) < 0.03


def test_stochastic_clip_normal_prior():
  z = tf.constant([[0.5, -2.9, 3.5, -10.0]] * 100)
  out, mask = stochastic_clip(z, "normal", tf.constant([0, 0], tf.int64), normal_clip=3.0)
  out = out.numpy()
  np.testing.assert_array_equal(out[:, :2], z.numpy()[:, :2])
  assert np.all(np.abs(out[:, 2:]) <= 2.0) and np.std(out[:, 2:]) > 0.5


def test_random_starts_recover_known_code():
  gen = TinyGenerator()
  z_true, x = _targets(gen, 64)
  cfg = InversionConfig(steps=300, learning_rate=0.05, random_starts=True, batch_size=64,
                        feature_weight=0.1)
  start_z, start_mse, _ = Inverter(gen, InversionConfig(steps=0, random_starts=True,
                                                        batch_size=64),
                                   x.shape[1:]).invert(x, seed=1)
  z, mse, psnr = Inverter(gen, cfg, x.shape[1:]).invert(x, seed=1)
  assert np.median(np.abs(start_z - z_true)) > 0.2  # the starts were far away
  assert np.median(start_mse) > 1e-3
  ok = np.max(np.abs(z - z_true), axis=1) < 1e-2
  assert ok.mean() >= 0.95, f"recovered {ok.mean():.2f} of the codes"
  assert np.median(mse) < 1e-8 and np.median(psnr) > 80
  np.testing.assert_allclose(psnr, psnr_from_mse(mse))
  assert np.all(np.abs(z) <= 1.0)


def test_returns_best_so_far_and_consistent_mse():
  gen = TinyGenerator()
  _, x = _targets(gen, 32)
  base = Inverter(gen, InversionConfig(steps=0, random_starts=True, batch_size=32),
                  x.shape[1:])
  _, mse0, _ = base.invert(x, seed=3)
  # A huge step size makes the iterates jump around; the best one must still be returned.
  wild = Inverter(gen, InversionConfig(steps=20, learning_rate=3.0, random_starts=True,
                                       batch_size=32, feature_weight=0.0), x.shape[1:])
  z, mse, _ = wild.invert(x, seed=3)
  assert np.all(mse <= mse0 + 1e-7)
  recon = gen.decode(tf.constant(z)).numpy()
  np.testing.assert_allclose(np.mean((recon - x) ** 2, axis=(1, 2, 3)), mse, rtol=1e-4,
                             atol=1e-7)


def test_compiled_once_across_batches():
  gen = TinyGenerator()
  _, x = _targets(gen, 50)
  inv = Inverter(gen, InversionConfig(steps=3, random_starts=True, batch_size=16),
                 x.shape[1:])
  z_a, _, _ = inv.invert(x, seed=0)               # 4 batches, the last padded
  inv.invert(x[:7], seed=0)                       # a short call
  inv.invert((x[:20] * 255).astype(np.uint8))     # uint8 input
  assert inv.tracing_count == 1
  # Random draws are keyed by the absolute index: a chunk inverted alone matches.
  z_b, _, _ = inv.invert(x[16:32], seed=0, offset=16)
  np.testing.assert_allclose(z_b, z_a[16:32], atol=1e-6)


def test_encoder_training_and_encoder_init(tmp_path):
  gen = TinyGenerator()
  z_true, x = _targets(gen, 256, seed=5)
  x_u8 = np.round(x * 255).astype(np.uint8)
  cfg = InversionConfig(encoder_epochs=3, encoder_steps_per_epoch=60, encoder_batch_size=64,
                        encoder_base_filters=8, encoder_learning_rate=2e-3, steps=0,
                        batch_size=128, feature_weight=0.0)
  enc = train_encoder(gen, x_u8, cfg, str(tmp_path), log=lambda s: None)
  z_enc, mse_enc, _ = Inverter(gen, cfg, x.shape[1:], encoder=enc).invert(x)
  _, mse_rand, _ = Inverter(gen, InversionConfig(steps=0, random_starts=True, batch_size=128),
                            x.shape[1:]).invert(x)
  # The encoder's guess is far better than a prior draw, and K steps from it finish the job.
  assert np.mean(mse_enc) < 0.3 * np.mean(mse_rand)
  assert np.mean(np.abs(z_enc - z_true)) < 0.2
  refined = Inverter(gen, cfg.__class__(**{**cfg.__dict__, "steps": 100}), x.shape[1:],
                     encoder=enc)
  z, mse, _ = refined.invert(x)
  assert np.median(mse) < 1e-6 and np.median(np.abs(z - z_true)) < 1e-2


def test_train_encoder_resumes_after_kill(tmp_path):
  gen = TinyGenerator()
  _, x = _targets(gen, 64, seed=2)
  x_u8 = np.round(x * 255).astype(np.uint8)
  cfg = InversionConfig(encoder_epochs=2, encoder_steps_per_epoch=3, encoder_batch_size=16,
                        encoder_base_filters=4)

  def stage(directory, log):
    return encoder_stage(gen, "tiny", x_u8, "fp", cfg, str(directory), log=log)

  class Killed(Exception):
    pass

  def kill_after_first_epoch(line):
    if line.startswith("encoder epoch 1/"):
      raise Killed()
  with pytest.raises(Killed):
    stage(tmp_path / "a", kill_after_first_epoch)
  lines = []
  resumed = stage(tmp_path / "a", lines.append)
  assert resumed.status == "resumed"
  assert any("resumed from" in s and "epoch 1/2" in s for s in lines)
  assert sum(s.startswith("encoder epoch") for s in lines) == 1  # only epoch 2 ran
  straight = stage(tmp_path / "b", lambda s: None)
  assert straight.status == "built"
  for a, b in zip(resumed.value.weights, straight.value.weights):
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
  lines = []
  cached = stage(tmp_path / "a", lines.append)
  assert cached.status == "cached" and not any("epoch" in s for s in lines)


def test_vae_mean_is_the_inversion_and_refinement_helps():
  gen = TinyGenerator(vae=True, prior="normal")
  _, x = _targets(gen, 32)
  inv0 = Inverter(gen, InversionConfig(steps=0, batch_size=32), x.shape[1:])
  assert inv0.init == "model_encoder"
  z0, mse0, _ = inv0.invert(x)
  np.testing.assert_allclose(z0, gen.encode(tf.constant(x)).numpy(), atol=1e-6)
  inv = Inverter(gen, InversionConfig(steps=50, batch_size=32, learning_rate=0.05,
                                      normal_clip=3.0), x.shape[1:])
  z, mse, _ = inv.invert(x)
  assert np.mean(mse) < 0.5 * np.mean(mse0)
  assert np.all(np.abs(z) <= 3.0)  # the normal prior's per-component radius


def test_feature_sources():
  gen = TinyGenerator()
  gen.feature_fn = None  # no discriminator (like a VAE without features)
  with pytest.raises(ValueError, match="classifier"):
    Inverter(gen, InversionConfig(random_starts=True), (28, 28, 1))
  with pytest.raises(ValueError, match="No starting point"):
    Inverter(gen, InversionConfig(feature_weight=0.0), (28, 28, 1))
  clf = build_classifier(ModelConfig(widths=(4, 8), dense_units=8), (28, 28, 1))
  cfg = InversionConfig(steps=30, random_starts=True, batch_size=8, feature_weight=1.0,
                        feature_source="classifier")
  _, x = _targets(gen, 8)
  _, mse0, _ = Inverter(gen, InversionConfig(steps=0, random_starts=True, batch_size=8,
                                             feature_weight=0.0), x.shape[1:]).invert(x)
  inv = Inverter(gen, cfg, x.shape[1:], feature_fn=classifier_feature_fn(clf))
  _, mse, _ = inv.invert(x)
  assert np.mean(mse) < np.mean(mse0)


def test_real_dcgan_handle_through_inversion(tmp_path):
  gm = build_generative_model(GeneratorConfig(latent_dim=8, base_filters=8), (28, 28, 1))
  z_true = gm.sample_prior(16, 7).numpy() * 0.5
  x = gm.decode(tf.constant(z_true)).numpy()
  cfg = InversionConfig(steps=40, batch_size=16, random_starts=True, feature_weight=0.1)
  inv = Inverter(gm, cfg, (28, 28, 1))  # features: the real discriminator's conv stages
  _, mse0, _ = Inverter(gm, InversionConfig(steps=0, random_starts=True, batch_size=16),
                        (28, 28, 1)).invert(x, seed=4)
  z, mse, _ = inv.invert(x, seed=4)
  assert z.shape == (16, 8) and np.all(np.abs(z) <= 1.0)
  assert np.mean(mse) < np.mean(mse0) and inv.tracing_count == 1
