"""Tests of latmix_tf.evaluation.autoattack against answers known in closed form.

An affine classifier f(x) = W x + b has exact robustness: with clipping to [0, 1] never
binding, x (class k) is robust at eps iff (f_k - f_l)(x) > eps ||w_k - w_l||_dual for every
l != k (dual norm: L1 for Linf, L2 for L2), and its distance to the boundary is
min_l (f_k - f_l)(x) / ||w_k - w_l||_dual. AutoAttack must reproduce the exact robust set,
FAB the distance. On a small conv net, APGD must be at least as strong as PGD-10, Square
(gradient-free) no stronger than the white-box attacks, and every point in the ball and box.
"""

import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf
import keras

from latmix_tf import attacks
from latmix_tf.evaluation import autoattack
from latmix_tf.evaluation.autoattack import apgd, common

SHAPE = (8, 8, 1)
K = 10
DUAL = {"Linf": 1, "L2": 2}
EPS = {"Linf": 0.06, "L2": 0.4}


def _affine(seed=0):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(int(np.prod(SHAPE)), K)).astype(np.float32)
  b = rng.normal(size=(K,)).astype(np.float32)
  wt, bt = tf.constant(w), tf.constant(b)
  return (lambda x: tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), wt) + bt), w, b


def _affine_data(w, b, n=120, seed=1):
  """Images in [0.3, 0.7] (clipping never binds); 90% labelled with the model's class."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.3, 0.7, size=(n, *SHAPE)).astype(np.float32)
  y = (x.reshape(n, -1) @ w + b).argmax(1)
  wrong = rng.random(n) < 0.1
  y[wrong] = rng.integers(0, K, wrong.sum())
  return x, y.astype(np.int32)


def _exact(w, b, x, y, norm):
  """(margin_l / ||w_k - w_l||_dual) for l != k, minimum over l; -inf if misclassified."""
  logits = x.reshape(len(x), -1) @ w + b
  dist = np.full(len(x), -np.inf)
  for i, k in enumerate(y):
    if logits[i].argmax() != k:
      continue
    others = [l for l in range(K) if l != k]
    dist[i] = min((logits[i, k] - logits[i, l]) / np.linalg.norm(w[:, k] - w[:, l], DUAL[norm])
                  for l in others)
  return dist


def _in_ball(x_adv, x, eps, norm):
  d = common.flat_norm(tf.constant(x_adv - x), norm).numpy()
  return d.max() <= eps * (1 + 1e-5) + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_affine_robust_accuracy_is_exact(norm):
  fn, w, b = _affine()
  x, y = _affine_data(w, b)
  eps = EPS[norm]
  dist = _exact(w, b, x, y, norm)
  # Drop the few examples within 2% of the threshold: float rounding must not decide.
  keep = np.abs(dist - eps) > 0.02 * eps
  x, y, dist = x[keep], y[keep], dist[keep]
  finite = np.isfinite(dist)
  expected = dist > eps
  assert 0.2 < expected.mean() < 0.8  # a non-trivial case
  cfg = autoattack.AutoAttackConfig(norm=norm, eps=eps, square_n_queries=300, batch_size=64)
  res = autoattack.run_autoattack(fn, x, y, cfg, log=lambda _: None)
  np.testing.assert_array_equal(res["robust_mask"], expected)
  assert res["robust_accuracy"] == pytest.approx(expected.mean())
  assert res["clean_accuracy"] == pytest.approx(np.isfinite(dist).mean())
  accs = [res["per_attack"][a] for a in autoattack.attack_names("standard")]
  assert accs == sorted(accs, reverse=True) and accs[-1] == res["robust_accuracy"]
  assert _in_ball(res["x_adv"], x, eps, norm)
  fooled = ~res["robust_mask"] & finite
  logits_adv = fn(tf.constant(res["x_adv"])).numpy()
  assert np.all(logits_adv[fooled].argmax(1) != y[fooled])
  assert res["config"]["apgd_n_iter"] == 100 and res["config"]["square_n_queries"] == 300
  assert len(res["apgd_loss_curve"]) == 101


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_fab_finds_the_distance_to_the_boundary_of_an_affine_model(norm):
  fn, w, b = _affine()
  x, y = _affine_data(w, b, n=40)
  dist = _exact(w, b, x, y, norm)
  ok = np.isfinite(dist)
  x, y, dist = x[ok], y[ok], dist[ok]
  fab_fn = autoattack.make_fab_fn(fn, SHAPE, norm, stop_at_eps=False)
  found = np.min([fab_fn(tf.constant(x), tf.constant(y), tf.constant(rank), tf.constant(1e3),
                         tf.constant([0, rank], tf.int64), tf.constant(False))["distance"]
                  for rank in range(1, K)], axis=0)
  assert np.all(found >= dist * (1 - 1e-4))   # never closer than the exact boundary
  assert np.all(found <= dist * 1.01)          # and within 1% of it


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_box_hyperplane_step_is_the_optimum(norm):
  rng = np.random.default_rng(3)
  n, d = 6, 12
  p = rng.uniform(0, 1, (n, d)).astype(np.float32)
  w = rng.normal(size=(n, d)).astype(np.float32)
  w[0, :3] = 0.0
  c = (rng.normal(size=n) * np.array([1, 1, 1, 1, 9, 9])).astype(np.float32)
  step = autoattack.box_hyperplane_step(tf.constant(p), tf.constant(w), tf.constant(c),
                                        norm).numpy()
  assert np.all(p + step >= -1e-6) and np.all(p + step <= 1 + 1e-6)
  cases = set()
  for i in range(n):
    room = np.where(w[i] * c[i] > 0, 1 - p[i], p[i])
    reachable = np.sum(np.abs(w[i]) * room) >= abs(c[i])
    cases.add(bool(reachable))
    if not reachable:  # the box corner that gets closest to the hyperplane
      np.testing.assert_allclose(step[i], np.sign(w[i] * c[i]) * room, atol=1e-6)
      continue
    np.testing.assert_allclose(w[i] @ step[i], c[i], rtol=1e-4, atol=1e-5)
    if norm == "Linf":  # LP: min t s.t. w.d = c, |d_j| <= t, box
      res = scipy.optimize.linprog(np.r_[np.zeros(d), 1.0],
                                   A_ub=np.block([[np.eye(d), -np.ones((d, 1))],
                                                  [-np.eye(d), -np.ones((d, 1))]]),
                                   b_ub=np.zeros(2 * d), A_eq=np.r_[w[i], 0.0][None],
                                   b_eq=[c[i]], bounds=[(-p[i, j], 1 - p[i, j])
                                                        for j in range(d)] + [(0, None)])
      assert np.abs(step[i]).max() == pytest.approx(res.fun, rel=1e-4)
    else:  # KKT: d = clip(mu w, -p, 1 - p) for the mu with w.d = c (bisection in numpy)
      lo, hi = -1e3, 1e3
      for _ in range(200):
        mu = 0.5 * (lo + hi)
        lo, hi = (mu, hi) if w[i] @ np.clip(mu * w[i], -p[i], 1 - p[i]) < c[i] else (lo, mu)
      np.testing.assert_allclose(step[i], np.clip(mu * w[i], -p[i], 1 - p[i]), atol=1e-4)
  assert cases == {True, False}  # both branches exercised


def _conv_model():
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input(SHAPE), keras.layers.Conv2D(8, 3, activation="relu"),
                            keras.layers.Flatten(), keras.layers.Dense(K)])
  rng = np.random.default_rng(5)
  x = rng.uniform(0, 1, (96, *SHAPE)).astype(np.float32)
  x[:, 0, :, :] = 0.0   # pixels on the box faces, so clipping binds
  x[:, -1, :, :] = 1.0
  y = model(x).numpy().argmax(1).astype(np.int32)
  return model, x, y


def test_apgd_is_never_weaker_than_pgd10_and_square_never_stronger_than_white_box():
  model, x, y = _conv_model()
  eps = 0.03
  y1h = tf.one_hot(y, K)
  pgd_acc = np.mean(model(attacks.pgd(model, x, y1h, eps, steps=10, step_size=2.5 * eps / 10,
                                      seed=tf.constant([0, 1]))).numpy().argmax(1) == y)
  curve = autoattack.apgd_accuracy_curve(model, x, y, [0.0, eps], batch_size=50)
  assert curve[0.0] == 1.0
  assert curve[eps] <= pgd_acc
  assert 0.05 < pgd_acc < 0.95  # the attack budget is neither trivial nor overwhelming
  quiet = lambda _: None
  white = autoattack.run_autoattack(model, x, y, autoattack.AutoAttackConfig(
      eps=eps, version="cheap", batch_size=50), log=quiet)
  assert white["per_attack"]["apgd-ce"] <= pgd_acc
  square_fn = autoattack.make_square_fn(model, SHAPE, "Linf", n_queries=500)
  out = square_fn(tf.constant(x), tf.constant(y), tf.constant(eps), tf.constant([0, 0], tf.int64))
  assert _in_ball(out["x_adv"].numpy(), x, eps, "Linf")
  assert 1 - np.mean(out["fooled"].numpy()) >= white["robust_accuracy"]


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_square_uses_no_gradient_and_stays_in_the_ball(norm):
  model, x, y = _conv_model()
  x, y = x[:24], y[:24]
  eps = {"Linf": 0.05, "L2": 0.5}[norm]
  # A forward pass TF cannot differentiate: Square runs on it, APGD refuses it.
  opaque = lambda t: tf.numpy_function(lambda a: model(a).numpy(), [t], tf.float32)
  args = (tf.constant(x), tf.constant(y), tf.constant(eps), tf.constant([4, 2], tf.int64))
  blind = autoattack.make_square_fn(opaque, SHAPE, norm, n_queries=200)(*args)
  plain = autoattack.make_square_fn(model, SHAPE, norm, n_queries=200)(*args)
  np.testing.assert_allclose(blind["x_adv"].numpy(), plain["x_adv"].numpy(), atol=1e-6)
  assert _in_ball(blind["x_adv"].numpy(), x, eps, norm)
  assert blind["fooled"].numpy().any()
  fooled = blind["fooled"].numpy()
  assert np.all(model(blind["x_adv"]).numpy()[fooled].argmax(1) != y[fooled])
  with pytest.raises(ValueError, match="gradient"):
    autoattack.make_apgd_fn(opaque, SHAPE, norm, n_iter=2)(
        args[0], args[1], tf.constant(0), args[2], args[3])


def test_standard_suite_on_conv_model_stays_in_ball_and_is_deterministic():
  model, x, y = _conv_model()
  x, y = x[:40], y[:40]
  cfg = autoattack.AutoAttackConfig(norm="L2", eps=0.3, square_n_queries=100, batch_size=16,
                                    apgd_n_iter=20, fab_n_iter=20)
  first = autoattack.run_autoattack(model, x, y, cfg, log=lambda _: None)
  again = autoattack.run_autoattack(model, x, y, cfg, log=lambda _: None)
  np.testing.assert_array_equal(first["x_adv"], again["x_adv"])
  assert _in_ball(first["x_adv"], x, 0.3, "L2")
  assert first["robust_accuracy"] == min(first["per_attack"].values())
  assert first["robust_mask"].dtype == bool and first["x_adv"].dtype == np.float32


def test_apgd_checkpoints_and_losses_match_the_paper():
  assert apgd.checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
  z = tf.constant([[4.0, 3.0, 1.0, 0.5, -1.0]])
  y, t = tf.constant([1]), tf.constant([2])
  # DLR = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3) = -(3 - 4) / (4 - 1).
  assert apgd.dlr_loss(z, y, t).numpy()[0] == pytest.approx(1 / 3)
  # Targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) = -(3 - 1) / (4 - 0.75).
  assert apgd.targeted_dlr_loss(z, y, t).numpy()[0] == pytest.approx(-2 / 3.25)
  # Both are invariant to shifting and positively rescaling the logits.
  for loss in (apgd.dlr_loss, apgd.targeted_dlr_loss):
    assert loss(3 * z + 7, y, t).numpy()[0] == pytest.approx(loss(z, y, t).numpy()[0])


def test_config_rejects_unknown_names():
  with pytest.raises(ValueError, match="Linf, L2"):
    autoattack.AutoAttackConfig(norm="L1")
  with pytest.raises(ValueError, match="standard, cheap"):
    autoattack.AutoAttackConfig(version="plus")
  with pytest.raises(ValueError, match="eps"):
    autoattack.AutoAttackConfig(eps=0.0)
