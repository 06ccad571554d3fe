"""VAE: shapes, the TFP terms against hand-written formulas, training steps, checkpoints."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from latmix_tf.models import vae

SHAPES = [(28, 28, 1), (32, 32, 3)]


@pytest.mark.parametrize("image_shape", SHAPES)
def test_shapes_and_ranges(image_shape):
  model = vae.VAE(6, image_shape, base_filters=4)
  x = tf.random.stateless_uniform([3, *image_shape], [0, 0])
  mean = model.encoder(x)
  assert mean.shape == (3, 6)
  posterior = model.encoder.posterior(x)
  assert isinstance(posterior, tfp.distributions.MultivariateNormalDiag)
  assert posterior.event_shape == (6,) and posterior.batch_shape == (3,)
  np.testing.assert_allclose(posterior.mean().numpy(), mean.numpy())
  images = model.decoder(mean)
  assert images.shape == (3, *image_shape)
  assert float(tf.reduce_min(images)) >= 0 and float(tf.reduce_max(images)) <= 1
  assert model(x).shape == (3, *image_shape)
  assert len(model.encoder.features(x)) == (2 if image_shape[0] == 28 else 3)


def test_loss_terms_match_closed_forms():
  model = vae.VAE(5, (28, 28, 1), base_filters=4)
  x = tf.random.stateless_uniform([4, 28, 28, 1], [0, 1])
  seed = tf.constant([3, 4], tf.int32)
  recon, kl = model.losses_per_example(x, seed)
  loc, scale = (t.numpy().astype(np.float64) for t in model.encoder.posterior_params(x))
  want_kl = 0.5 * np.sum(scale ** 2 + loc ** 2 - 1.0 - 2.0 * np.log(scale), axis=-1)
  np.testing.assert_allclose(kl.numpy(), want_kl, rtol=1e-4)
  # Reconstruction = binary cross-entropy summed over pixels at the sampled z
  # (reparameterised: mean + scale * eps, eps a stateless N(0, I) draw; see VAE docstring).
  mean, std = model.encoder.posterior_params(x)
  z = mean + std * tf.random.stateless_normal([4, 5], seed)
  logits = model.decoder.logits(z)
  bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits)
  np.testing.assert_allclose(recon.numpy(), tf.reduce_sum(bce, [1, 2, 3]).numpy(), rtol=1e-4)


@pytest.mark.parametrize("image_shape", SHAPES)
def test_train_steps_change_weights_and_reduce_loss(image_shape):
  model = vae.VAE(6, image_shape, base_filters=4, kl_weight=0.5)
  model.compile(learning_rate=3e-3)
  before = [v.numpy().copy() for v in model.trainable_variables]
  x = tf.random.stateless_uniform([16, *image_shape], [0, 2])
  step = tf.function(model.train_step)
  first = {k: float(v) for k, v in step(x).items()}
  for _ in range(20):
    step(x)
  for m in model.metrics:
    m.reset_state()
  last = {k: float(v) for k, v in step(x).items()}
  assert set(last) == {"loss", "elbo", "reconstruction", "kl"}
  assert all(np.isfinite(v) for v in last.values())
  assert last["loss"] < first["loss"]
  assert last["elbo"] == pytest.approx(-(last["reconstruction"] + last["kl"]), rel=1e-5)
  assert last["loss"] == pytest.approx(last["reconstruction"] + 0.5 * last["kl"], rel=1e-5)
  assert all(not np.allclose(a, b.numpy())
             for a, b in zip(before, model.trainable_variables) if a.ndim > 1)
  assert int(model.step.numpy()) == 22


def test_checkpoint_round_trip(tmp_path):
  model = vae.VAE(6, (28, 28, 1), base_filters=4)
  model.compile()
  x = tf.random.stateless_uniform([8, 28, 28, 1], [0, 3])
  model.train_step(x)
  path = tf.train.Checkpoint(**model.checkpoint_items()).save(str(tmp_path / "ckpt"))
  other = vae.VAE(6, (28, 28, 1), base_filters=4)
  other.compile()
  tf.train.Checkpoint(**other.checkpoint_items()).restore(path).assert_consumed()
  np.testing.assert_array_equal(model(x).numpy(), other(x).numpy())
  assert int(other.step.numpy()) == 1
