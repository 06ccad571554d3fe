"""Tests of latmix_tf.attacks: known answers on a linear model, eps / box constraints,
determinism of the stateless random start, and use inside a tf.function (as in training)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from latmix_tf import attacks
from latmix_tf.losses import soft_cross_entropy


def _linear_model(num_classes=3, shape=(6, 6, 1), seed=0):
  rng = np.random.default_rng(seed)
  w = tf.constant(rng.normal(size=(int(np.prod(shape)), num_classes)), tf.float32)
  b = tf.constant(rng.normal(size=(num_classes,)), tf.float32)
  return lambda x: tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), w) + b, w, b


def _conv_model(seed=0):
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                            keras.layers.Flatten(), keras.layers.Dense(5)])
  return model


def _data(n=32, shape=(6, 6, 1), num_classes=3, seed=1):
  rng = np.random.default_rng(seed)
  x = tf.constant(rng.uniform(0, 1, size=(n, *shape)), tf.float32)
  y = tf.one_hot(rng.integers(0, num_classes, n), num_classes)
  return x, y


def _accuracy(fn, x, y):
  return float(np.mean(np.argmax(fn(x).numpy(), 1) == np.argmax(y.numpy(), 1)))


def test_fgsm_matches_analytic_sign_of_linear_model():
  fn, w, b = _linear_model()
  x, y = _data()
  eps = 0.07
  # d CE / dx = W (softmax(Wx + b) - y) for a linear model.
  p = tf.nn.softmax(fn(x))
  grad = tf.reshape(tf.matmul(p - y, w, transpose_b=True), x.shape)
  expected = np.clip(x.numpy() + eps * np.sign(grad.numpy()), 0, 1)
  np.testing.assert_allclose(attacks.fgsm(fn, x, y, eps).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("attack", ["fgsm", "fgsm_rs", "pgd"])
def test_eps_zero_is_identity_and_keeps_accuracy(attack):
  fn, _, _ = _linear_model()
  x, y = _data()
  seed = tf.constant([3, 4])
  if attack == "pgd":
    x_adv = attacks.pgd(fn, x, y, 0.0, steps=5, step_size=0.01, seed=seed)
  else:
    x_adv = attacks.fgsm(fn, x, y, 0.0, random_start=attack == "fgsm_rs", seed=seed)
  np.testing.assert_array_equal(x_adv.numpy(), x.numpy())
  assert _accuracy(fn, x_adv, y) == _accuracy(fn, x, y)


@pytest.mark.parametrize("eps", [0.03, 0.1, 0.3])
def test_perturbations_respect_eps_and_box(eps):
  model = _conv_model()
  x, y = _data(shape=(8, 8, 1), num_classes=5)
  clean_loss = tf.reduce_mean(soft_cross_entropy(y, model(x)))
  for x_adv in (attacks.fgsm(model, x, y, eps),
                attacks.fgsm(model, x, y, eps, random_start=True, seed=tf.constant([0, 1])),
                attacks.pgd(model, x, y, eps, 7, 2.5 * eps / 7, seed=tf.constant([0, 2]))):
    delta = x_adv.numpy() - x.numpy()
    assert np.abs(delta).max() <= eps + 1e-6
    assert np.abs(delta).max() > 0.5 * eps  # it moved
    assert x_adv.numpy().min() >= 0.0 and x_adv.numpy().max() <= 1.0
    adv_loss = tf.reduce_mean(soft_cross_entropy(y, model(x_adv)))
    assert float(adv_loss) > float(clean_loss)


def test_pgd_is_stronger_than_fgsm_and_random_start_is_seeded():
  fn, _, _ = _linear_model()
  x, y = _data(n=64)
  eps = 0.05
  loss = lambda z: float(tf.reduce_mean(soft_cross_entropy(y, fn(z))))
  a = attacks.pgd(fn, x, y, eps, 10, 0.0125, seed=tf.constant([1, 2]))
  b = attacks.pgd(fn, x, y, eps, 10, 0.0125, seed=tf.constant([1, 2]))
  c = attacks.pgd(fn, x, y, eps, 1, 0.0, seed=tf.constant([1, 3]))  # random start only
  d = attacks.pgd(fn, x, y, eps, 1, 0.0, seed=tf.constant([1, 4]))
  np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert not np.array_equal(c.numpy(), d.numpy())
  # For a linear model the loss is convex in x: PGD reaches at least the FGSM loss.
  assert loss(a) >= loss(attacks.fgsm(fn, x, y, eps)) - 1e-4


def test_inside_tf_function_with_tensor_eps_and_soft_labels():
  model = _conv_model()
  x, _ = _data(shape=(8, 8, 1), num_classes=5)
  soft = tf.nn.softmax(tf.random.stateless_normal([32, 5], [0, 0]))

  @tf.function
  def step(xb, yb, eps, seed):
    return attacks.pgd(lambda z: model(z, training=False), xb, yb, eps, 4, eps / 2,
                       seed=seed)

  seed = tf.constant([5, 6], tf.int64)
  compiled = step(x, soft, tf.constant(0.1), seed)
  eager = attacks.pgd(model, x, soft, 0.1, 4, 0.05, seed=seed)
  np.testing.assert_allclose(compiled.numpy(), eager.numpy(), atol=1e-6)
  step(x, soft, tf.constant(0.2), seed)  # a new eps value must not retrace
  assert step.experimental_get_tracing_count() == 1


def test_no_gradient_path_is_a_clear_error():
  x, y = _data()
  with pytest.raises(ValueError, match="no gradient"):
    attacks.fgsm(lambda z: tf.zeros([tf.shape(z)[0], 3]) + tf.stop_gradient(z[:, 0, 0, :1]),
                 x, y, 0.1)
  with pytest.raises(ValueError, match="float images"):
    attacks.fgsm(lambda z: z, tf.zeros([2, 6, 6, 1], tf.uint8), y[:2], 0.1)
