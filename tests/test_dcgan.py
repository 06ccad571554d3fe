"""DCGAN: shapes and ranges for both image shapes, priors, training steps, checkpoints."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from latmix_tf import checkpointing
from latmix_tf.models import dcgan

SHAPES = [(28, 28, 1), (32, 32, 3)]


@pytest.mark.parametrize("image_shape", SHAPES)
def test_generator_and_discriminator_shapes(image_shape):
  g = dcgan.Generator(8, image_shape, base_filters=4)
  d = dcgan.Discriminator(image_shape, base_filters=4)
  z = dcgan.sample_prior("uniform", 5, 8, seed=0)
  x = g(z)
  assert x.shape == (5, *image_shape)
  assert float(tf.reduce_min(x)) >= 0.0 and float(tf.reduce_max(x)) <= 1.0
  assert d(x).shape == (5,)
  feats = d.features(x)
  size = image_shape[0]
  assert [f.shape[1:3] for f in feats] == [(size // 2 ** (i + 1),) * 2 for i in range(len(feats))]
  assert len(feats) == (2 if size == 28 else 3)


def test_unsupported_shape_and_prior_raise():
  with pytest.raises(ValueError, match="28x28xC"):
    dcgan.Generator(8, (64, 64, 3))
  with pytest.raises(ValueError, match="uniform, normal"):
    dcgan.sample_prior("laplace", 2, 3, seed=0)


def test_priors_support_and_determinism():
  u = dcgan.sample_prior("uniform", 4000, 16, seed=3).numpy()
  assert u.min() >= -1.0 and u.max() <= 1.0 and abs(u.mean()) < 0.02
  n = dcgan.sample_prior("normal", 4000, 16, seed=3).numpy()
  assert abs(n.std() - 1.0) < 0.02 and n.max() > 2.5
  np.testing.assert_array_equal(u, dcgan.sample_prior("uniform", 4000, 16, seed=3).numpy())
  assert not np.array_equal(u, dcgan.sample_prior("uniform", 4000, 16, seed=4).numpy())


def test_discriminator_training_needs_a_seed():
  d = dcgan.Discriminator((28, 28, 1), base_filters=4)
  with pytest.raises(ValueError, match="seed"):
    d(tf.zeros([2, 28, 28, 1]), training=True)


@pytest.mark.parametrize("image_shape", SHAPES)
def test_train_steps_change_both_networks_and_stay_finite(image_shape):
  gan = dcgan.DCGAN(8, image_shape, base_filters=4)
  gan.compile()
  before_g = [v.numpy().copy() for v in gan.generator.trainable_variables]
  before_d = [v.numpy().copy() for v in gan.discriminator.trainable_variables]
  real = tf.random.stateless_uniform([8, *image_shape], [0, 1])
  step = tf.function(gan.train_step)
  for _ in range(3):
    out = step(real)
  assert set(out) == {"d_loss", "g_loss", "d_real", "d_fake"}
  assert all(np.isfinite(float(v)) for v in out.values())
  assert int(gan.step.numpy()) == 3
  assert all(not np.allclose(a, b.numpy())
             for a, b in zip(before_g, gan.generator.trainable_variables) if a.ndim > 1)
  assert all(not np.allclose(a, b.numpy())
             for a, b in zip(before_d, gan.discriminator.trainable_variables) if a.ndim > 1)
  assert [m.name for m in gan.metrics] == ["d_loss", "g_loss", "d_real", "d_fake"]


def test_checkpoint_restores_everything_including_batchnorm_statistics(tmp_path):
  # tf.train.Checkpoint(model=keras_model) saves no weights under Keras 3; the one checkpoint
  # mechanism (`checkpointing.checkpoint`) wraps each Keras object's variables, BN statistics
  # and RNG states included. Same step after restore == same result.
  gan = dcgan.DCGAN(8, (28, 28, 1), base_filters=4)
  gan.compile()
  real = tf.random.stateless_uniform([8, 28, 28, 1], [0, 2])
  gan.train_step(real)
  path = checkpointing.checkpoint(**gan.checkpoint_items()).save(str(tmp_path / "ckpt"))
  other = dcgan.DCGAN(8, (28, 28, 1), base_filters=4)
  other.compile()
  checkpointing.checkpoint(**other.checkpoint_items()).restore(path).assert_consumed()
  z = dcgan.sample_prior("uniform", 4, 8, seed=1)
  np.testing.assert_array_equal(gan.generator(z).numpy(), other.generator(z).numpy())
  for m in gan.metrics:
    m.reset_state()
  out_a, out_b = gan.train_step(real), other.train_step(real)
  for key in out_a:
    np.testing.assert_allclose(float(out_a[key]), float(out_b[key]), rtol=1e-6)
  np.testing.assert_allclose(gan.generator(z).numpy(), other.generator(z).numpy(), atol=1e-6)


def test_recon_weight_must_be_non_negative():
  with pytest.raises(ValueError, match="recon_weight"):
    dcgan.DCGAN(8, (28, 28, 1), base_filters=4, recon_weight=-1.0)


def _patterns(n=8):
  """n clearly different smooth 28x28 images (plane waves): reconstructable, unlike noise."""
  g = np.linspace(0.0, 1.0, 28)
  waves = [0.5 + 0.5 * np.sin(2 * np.pi * ((k // 4 + 1) * g[:, None]
                                            + 0.5 * (k % 4 + 1) * g[None, :] + k / n))
           for k in range(n)]
  return tf.constant(np.stack(waves)[..., None].astype(np.float32))


def test_recall_term_trains_the_encoder_and_pulls_reconstructions_to_the_images():
  # With recon_weight > 0 the DCGAN owns an encoder E; G and E learn G(E(x)) ~ x next to the
  # adversarial game. Known answer on 8 fixed, different images: after 60 steps the
  # reconstruction error is well below that of the best single image (the batch mean),
  # so G(E(x)) tells the images apart; and every network's weights move.
  keras.utils.set_random_seed(0)
  gan = dcgan.DCGAN(8, (28, 28, 1), base_filters=4, recon_weight=50.0)
  gan.compile(learning_rate=2e-3)
  real = _patterns()
  mean_image_mse = float(tf.reduce_mean(tf.square(real - tf.reduce_mean(real, 0))))
  before = {name: [v.numpy().copy() for v in getattr(gan, name).trainable_variables]
            for name in ("generator", "discriminator", "encoder")}
  step = tf.function(gan.train_step)
  for _ in range(60):
    gan.recon_tracker.reset_state()
    out = step(real)
  assert set(out) == {"d_loss", "g_loss", "d_real", "d_fake", "recon_mse"}
  assert all(np.isfinite(float(v)) for v in out.values())
  assert float(out["recon_mse"]) < 0.4 * mean_image_mse, (float(out["recon_mse"]),
                                                          mean_image_mse)
  for name, old in before.items():
    assert all(not np.allclose(a, b.numpy()) for a, b in
               zip(old, getattr(gan, name).trainable_variables) if a.ndim > 1), name
  # The encoder's codes stay in the uniform prior's support.
  assert float(tf.reduce_max(tf.abs(gan.encoder(real)))) <= 1.0


def test_recall_term_checkpoint_holds_the_encoder_and_its_optimizer(tmp_path):
  plain = dcgan.DCGAN(8, (28, 28, 1), base_filters=4)
  plain.compile()
  assert set(plain.checkpoint_items()) == {"generator", "discriminator", "d_optimizer",
                                           "g_optimizer", "step"}
  gan = dcgan.DCGAN(8, (28, 28, 1), base_filters=4, recon_weight=5.0)
  gan.compile()
  real = tf.random.stateless_uniform([8, 28, 28, 1], [0, 4])
  gan.train_step(real)
  path = tf.train.Checkpoint(**gan.checkpoint_items()).save(str(tmp_path / "ckpt"))
  other = dcgan.DCGAN(8, (28, 28, 1), base_filters=4, recon_weight=5.0)
  other.compile()
  tf.train.Checkpoint(**other.checkpoint_items()).restore(path).assert_consumed()
  np.testing.assert_array_equal(gan.encoder(real).numpy(), other.encoder(real).numpy())
  gan.recon_tracker.reset_state()
  out_a, out_b = gan.train_step(real), other.train_step(real)
  np.testing.assert_allclose(float(out_a["recon_mse"]), float(out_b["recon_mse"]), rtol=1e-6)
