"""Robust training methods (TRADES, interpolated adversarial training, on-manifold adversarial
training): each method's limit case gives the plain method's loss and gradient to float
tolerance, the inner maximisations stay in their balls and raise their objectives, and every
method runs two steps through the real training loop. (Each registered experiment also runs
end to end at smoke scale in test_experiments.py.)"""

import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from latmix_tf.config import DataConfig, ModelConfig, TrainConfig
from latmix_tf.generative.config import GeneratorConfig
from latmix_tf.data import load_dataset, make_splits
from latmix_tf.generative import build_generative_model
from latmix_tf.training.on_manifold_at import OnManifoldAT, OnManifoldATConfig, latent_pgd
from latmix_tf.models.classifiers import build_classifier
from latmix_tf import mixing
from latmix_tf.losses import soft_cross_entropy
from latmix_tf.training import (METHODS, ERM, AdversarialConfig, AdversarialTraining, Mixup,
                                MixupConfig, build_method, train)
from latmix_tf.training.interpolated_at import MixupAT, MixupATConfig
from latmix_tf.training.trades import Trades, TradesConfig, kl_pgd, paper_inner_loop
from experiments import baselines

SEED = tf.constant([5, 1], tf.int64)
TOL = dict(rtol=1e-5, atol=1e-6)


def _batch(n=12, seed=0):
  rng = np.random.default_rng(seed)
  return (tf.constant(rng.uniform(0, 1, size=(n, 28, 28, 1)), tf.float32),
          tf.one_hot(rng.integers(0, 10, n), 10))


def _cnn(dropout=0.0):
  keras.utils.set_random_seed(0)  # no dropout: two forward passes must see the same network
  return build_classifier(ModelConfig("cnn", (8, 16), 32, dropout=dropout), (28, 28, 1))


def _loss_and_grads(method, model, x, y, seed=SEED):
  """One step's loss and gradient as the loop forms them (summed rows / real batch size).

  BatchNorm's moving statistics (which the training-mode passes update and the attacks, in
  inference mode, read) are put back, so that every call sees the same network.
  """
  state = [v.numpy() for v in model.non_trainable_variables]
  batch = int(tf.shape(y)[0]) if not isinstance(y, tuple) else int(tf.shape(y[0])[0])
  x, y = method.prepare_batch(model, x, y, seed)
  with tf.GradientTape() as tape:
    logits, labels = method.forward(model, x, y, seed)
    loss = tf.reduce_sum(soft_cross_entropy(labels, logits)) / batch
  grads = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
  for v, value in zip(model.non_trainable_variables, state):
    v.assign(value)
  return loss.numpy(), grads


def _assert_same(a, b):
  np.testing.assert_allclose(a[0], b[0], **TOL)
  for g_a, g_b in zip(a[1], b[1]):
    np.testing.assert_allclose(g_a, g_b, **TOL)


def _differs(a, b):
  return not np.isclose(a[0], b[0], rtol=1e-4) or any(
      not np.allclose(g_a, g_b, rtol=1e-4, atol=1e-6) for g_a, g_b in zip(a[1], b[1]))


# --- TRADES --------------------------------------------------------------------------------
def test_trades_with_beta_zero_is_erm_loss_and_gradient():
  model, (x, y) = _cnn(), _batch()
  erm = _loss_and_grads(ERM(), model, x, y)
  _assert_same(_loss_and_grads(Trades(TradesConfig(beta=0.0, steps=3, step_size=0.02)),
                               model, x, y), erm)
  assert _differs(_loss_and_grads(Trades(TradesConfig(beta=1.0, steps=3, step_size=0.02)),
                                  model, x, y), erm)


def test_trades_loss_is_ce_plus_beta_kl():
  """Known answer: the rows' summed CE = mean CE(y, f(x)) + β mean KL(f(x) ‖ f(x′)), gradient
  included (the KL's gradient flows through the clean prediction too)."""
  model, (x, y) = _cnn(), _batch()
  method = Trades(TradesConfig(beta=2.5, epsilon=0.1, steps=3, step_size=0.03))
  got = _loss_and_grads(method, model, x, y)
  (x_clean, x_adv), _ = method.prepare_batch(model, x, y, SEED)
  with tf.GradientTape() as tape:
    clean, adv = model(x_clean, training=True), model(x_adv, training=True)
    p, log_p = tf.nn.softmax(clean), tf.nn.log_softmax(clean)
    kl = tf.reduce_sum(p * (log_p - tf.nn.log_softmax(adv)), -1)
    direct = tf.reduce_mean(-tf.reduce_sum(y * log_p, -1) + 2.5 * kl)
  expected = (direct.numpy(), [g.numpy() for g in tape.gradient(direct,
                                                                model.trainable_variables)])
  _assert_same(got, expected)


def test_trades_compares_its_two_passes_under_the_same_dropout_masks():
  """With x′ = x, the KL of two training-mode passes is the dropout noise alone: zero with
  shared masks (the default), positive with independent masks (the paper's code)."""
  model, (x, y) = _cnn(dropout=0.3), _batch()
  kls = {}
  for shared in (True, False):
    method = Trades(TradesConfig(shared_dropout=shared))
    method.forward(model, (x, x), y, SEED)
    kls[shared] = float(method.after_step(model, x, y, SEED)["kl"])
  assert kls[True] == pytest.approx(0.0, abs=1e-6) and kls[False] > 1e-3


def test_kl_pgd_stays_in_the_ball_and_raises_the_kl():
  model, (x, _) = _cnn(), _batch()
  logits_fn = lambda images: model(images, training=False)  # noqa: E731
  x_adv = kl_pgd(logits_fn, x, 0.1, 5, 0.03, 0.001, SEED).numpy()
  assert np.abs(x_adv - x.numpy()).max() <= 0.1 + 1e-6
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0

  def kl(images):
    p = tf.nn.softmax(logits_fn(x))
    return float(tf.reduce_sum(p * (tf.math.log(p) - tf.nn.log_softmax(logits_fn(images)))))
  start = x + 0.001 * tf.random.stateless_normal(tf.shape(x), SEED)
  assert kl(x_adv) > 10 * kl(start) and kl(x_adv) > 0


def test_trades_paper_inner_loop_scales_to_our_epsilon():
  assert paper_inner_loop("mnist", 0.3) == (40, pytest.approx(0.01))
  assert paper_inner_loop("cifar10", 0.031) == (10, pytest.approx(0.007))
  assert paper_inner_loop("fashion_mnist", 0.1) == (40, pytest.approx(0.1 / 30))
  with pytest.raises(ValueError, match="beta"):
    Trades(TradesConfig(beta=-1.0))


# --- Interpolated adversarial training -----------------------------------------------------
def test_mixup_at_without_mixing_is_pgd_at():
  model, (x, y) = _cnn(), _batch()
  adv = AdversarialConfig(attack="pgd", epsilon=0.1, steps=3, adv_weight=0.5)
  _assert_same(_loss_and_grads(MixupAT(MixupATConfig(mixup=None, adversarial=adv)), model, x, y),
               _loss_and_grads(AdversarialTraining(adv), model, x, y))


def test_mixup_at_attacks_the_mixed_batch_and_without_a_step_is_mixup():
  model, (x, y) = _cnn(), _batch()
  adv = AdversarialConfig(attack="pgd", epsilon=0.1, steps=3, adv_weight=0.5)
  method = MixupAT(MixupATConfig(mixup=MixupConfig(alpha=1.0), adversarial=adv))
  mix_seed = mixing.split_seed(SEED, 2)[0]
  x_mix, y_mix = Mixup(MixupConfig(alpha=1.0)).prepare_batch(model, x, y, mix_seed)
  x_cat, y_cat = method.prepare_batch(model, x, y, SEED)
  np.testing.assert_allclose(x_cat[:12].numpy(), x_mix.numpy())  # the clean half: mixup's
  np.testing.assert_allclose(y_cat.numpy(), np.concatenate([0.5 * y_mix, 0.5 * y_mix]))
  x_adv = AdversarialTraining(adv).attack(model, x_mix, y_mix, SEED).numpy()
  np.testing.assert_allclose(x_cat[12:].numpy(), x_adv)  # the PGD of the mixed batch
  assert np.abs(x_adv - x_mix.numpy()).max() > 0.05  # soft labels: a real attack
  # An attack of zero length (ε-ball limit): the batch is the mixed batch twice, so the loss
  # and gradient are mixup's on the same mixed batch.
  still = AdversarialConfig(attack="pgd", epsilon=0.1, steps=1, step_size=0.0,
                            random_start=False, adv_weight=0.5)
  mixup_loss = _loss_and_grads(ERM(), model, x_mix, y_mix)
  _assert_same(_loss_and_grads(MixupAT(MixupATConfig(adversarial=still)), model, x, y),
               mixup_loss)
  assert _differs(_loss_and_grads(method, model, x, y), mixup_loss)


def test_mixup_at_attack_then_mix_order():
  model, (x, y) = _cnn(), _batch()
  method = MixupAT(MixupATConfig(order="attack_then_mix", adversarial=AdversarialConfig(
      epsilon=0.1, steps=2, adv_weight=0.5)))
  x_cat, y_cat = method.prepare_batch(model, x, y, SEED)
  assert x_cat.shape[0] == 24 and np.allclose(y_cat.numpy().sum(-1), 0.5)
  with pytest.raises(ValueError, match="order"):
    MixupAT(MixupATConfig(order="sideways"))


# --- On-manifold adversarial training ------------------------------------------------------
@pytest.fixture(scope="module")
def gen():
  return build_generative_model(GeneratorConfig(kind="dcgan", latent_dim=8, base_filters=8),
                                (28, 28, 1), seed=0)


def _bank(n=40):
  rng = np.random.default_rng(1)
  return types.SimpleNamespace(z=rng.uniform(-1, 1, (n, 8)).astype(np.float32),
                               labels=np.arange(n) % 10)


def test_on_manifold_at_with_eta_zero_is_erm_on_the_reconstructions(gen):
  model, (x, y) = _cnn(), _batch()
  bank = _bank()
  z, y_bank = tf.constant(bank.z[:12]), tf.one_hot(bank.labels[:12], 10)
  method = OnManifoldAT(OnManifoldATConfig(eta=0.0, steps=3, clean_weight=0.0), gen=gen,
                        bank=bank, batch_size=12)
  method.build(model, 10)
  on_manifold = _loss_and_grads(method, model, (x, z), (y, y_bank))
  _assert_same(on_manifold, _loss_and_grads(ERM(), model, gen.decode(z), y_bank))
  moved = OnManifoldAT(OnManifoldATConfig(eta=0.5, steps=3, clean_weight=0.0), gen=gen,
                       bank=bank, batch_size=12)
  assert _differs(_loss_and_grads(moved, model, (x, z), (y, y_bank)), on_manifold)


def test_on_manifold_at_trains_half_on_the_clean_batch_by_default(gen):
  """The paper's setting for one generator of all classes: η = 0.1, and each batch half
  decoded latent adversarials, half clean images (each half half of the label mass)."""
  model, (x, y) = _cnn(), _batch()
  bank = _bank()
  z, y_bank = tf.constant(bank.z[:12]), tf.one_hot(bank.labels[:12], 10)
  assert OnManifoldATConfig().eta == 0.1
  method = OnManifoldAT(OnManifoldATConfig(steps=2), gen=gen, bank=bank, batch_size=12)
  x_cat, y_cat = method.prepare_batch(model, (x, z), (y, y_bank), SEED)
  np.testing.assert_allclose(x_cat[12:].numpy(), x.numpy())
  np.testing.assert_allclose(y_cat.numpy(), np.concatenate([0.5 * y_bank, 0.5 * y]))
  assert 0 < np.abs(x_cat[:12].numpy() - gen.decode(z).numpy()).max()
  recipe = {kind: baselines._method(kind, "fmnist", "full")  # pylint: disable=protected-access
            for kind in ("on_manifold_at", "on_manifold_pgd_at")}
  assert (recipe["on_manifold_at"].eta, recipe["on_manifold_at"].clean_weight) == (0.1, 0.5)
  assert recipe["on_manifold_pgd_at"].clean_weight == 0.0
  assert recipe["on_manifold_pgd_at"].input_adversarial is not None


def test_latent_pgd_stays_in_the_ball_and_raises_the_loss(gen):
  model, bank = _cnn(), _bank()
  z, y = tf.constant(bank.z[:12]), tf.one_hot(bank.labels[:12], 10)
  logits_fn = lambda images: model(images, training=False)  # noqa: E731
  delta = latent_pgd(logits_fn, gen.decode, z, y, 0.3, 5, 0.1, False, SEED).numpy()
  assert np.abs(delta).max() <= 0.3 + 1e-6 and np.abs(delta).max() > 0.2

  def loss(d):
    return float(tf.reduce_sum(soft_cross_entropy(y, logits_fn(gen.decode(z + d)))))
  assert loss(delta) > loss(tf.zeros_like(z))


def test_on_manifold_combined_with_input_pgd_at(gen):
  model, (x, y) = _cnn(), _batch()
  bank = _bank()
  z, y_bank = tf.constant(bank.z[:12]), tf.one_hot(bank.labels[:12], 10)
  adv = AdversarialConfig(attack="pgd", epsilon=0.1, steps=2)
  method = OnManifoldAT(OnManifoldATConfig(eta=0.0, steps=1, input_adversarial=adv,
                                           clean_weight=0.0,
                                           input_weight=0.5), gen=gen, bank=bank, batch_size=12)
  x_cat, y_cat = method.prepare_batch(model, (x, z), (y, y_bank), SEED)
  np.testing.assert_allclose(x_cat[:12].numpy(), gen.decode(z).numpy(), **TOL)
  np.testing.assert_allclose(y_cat.numpy(), np.concatenate([0.5 * y_bank, 0.5 * y]))
  x_in = AdversarialTraining(adv).attack(model, x, y, mixing.split_seed(SEED, 2)[1]).numpy()
  np.testing.assert_allclose(x_cat[12:].numpy(), x_in)
  with pytest.raises(ValueError, match="clean_weight"):
    OnManifoldAT(OnManifoldATConfig(clean_weight=0.6, input_adversarial=adv), gen=gen,
                 bank=bank)
  with pytest.raises(ValueError, match="build_on_manifold_at"):
    OnManifoldAT(OnManifoldATConfig())


# --- through the real loop -----------------------------------------------------------------
def _tiny_run(tiny_data_dir):
  data_cfg = DataConfig("fashion_mnist", tiny_data_dir, batch_size=16, val_size=16,
                        train_limit=64, test_limit=16)
  return data_cfg, make_splits(load_dataset("fashion_mnist", tiny_data_dir, allow_tfds=False),
                               data_cfg)


def _train(method, tiny_data_dir, workdir, steps=2, optimizer="adamw", dropout=0.0):
  data_cfg, splits = _tiny_run(tiny_data_dir)
  model = _cnn(dropout)
  history = train(model, method, splits, data_cfg,
                  TrainConfig(epochs=1, steps_per_epoch=steps, learning_rate=1e-2,
                              optimizer=optimizer, lr_schedule="constant"),
                  str(workdir), seed=0, log=lambda _: None)
  return model, history[-1]


def test_trades_beta_zero_takes_erm_steps_in_the_real_loop(tiny_data_dir, tmp_path):
  """One SGD step of the real loop: the same logged loss and the same update as ERM."""
  erm_model, erm_row = _train(ERM(), tiny_data_dir, tmp_path / "erm", 1, "sgd")
  model, row = _train(Trades(TradesConfig(beta=0.0, steps=2, step_size=0.03)), tiny_data_dir,
                      tmp_path / "trades", 1, "sgd")
  assert row["train/loss"] == pytest.approx(erm_row["train/loss"], rel=1e-5)
  assert row["train/accuracy"] == erm_row["train/accuracy"] and row["train/kl"] >= 0
  for a, b in zip(model.trainable_variables, erm_model.trainable_variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), **TOL)


def test_trades_beta_zero_on_a_dropout_network_takes_erm_steps(tiny_data_dir, tmp_path):
  """Two SGD steps with dropout: shared masks leave the seed states where ERM's one pass
  leaves them, so β = 0 gives ERM's network; independent masks draw other masks at step 2."""
  erm, _ = _train(ERM(), tiny_data_dir, tmp_path / "erm", 2, "sgd", dropout=0.3)
  runs = {shared: _train(Trades(TradesConfig(beta=0.0, steps=2, step_size=0.03,
                                             shared_dropout=shared)),
                         tiny_data_dir, tmp_path / f"trades_{shared}", 2, "sgd", dropout=0.3)[0]
          for shared in (True, False)}
  for a, b in zip(runs[True].trainable_variables, erm.trainable_variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), **TOL)
  assert any(not np.allclose(a.numpy(), b.numpy(), **TOL)
             for a, b in zip(runs[False].trainable_variables, erm.trainable_variables))


@pytest.mark.parametrize("name", ["trades", "mixup_at", "on_manifold_at"])
def test_two_steps_through_the_real_loop(name, tiny_data_dir, tmp_path, gen):
  if name == "on_manifold_at":
    method = OnManifoldAT(OnManifoldATConfig(eta=0.3, steps=2, clean_weight=0.25,
                                             input_adversarial=AdversarialConfig(steps=2)),
                          gen=gen, bank=_bank(64), batch_size=16)
  else:
    cfg = {"trades": TradesConfig(steps=2, step_size=0.03),
           "mixup_at": MixupATConfig(adversarial=AdversarialConfig(steps=2, adv_weight=0.5))}
    method = build_method(cfg[name])
    assert name in METHODS and type(method) is {"trades": Trades, "mixup_at": MixupAT}[name]
  before = [v.numpy().copy() for v in _cnn().trainable_variables]
  model, row = _train(method, tiny_data_dir, tmp_path)
  changed = sum(not np.array_equal(b, a.numpy()) for b, a in zip(before,
                                                                model.trainable_variables))
  assert changed >= len(before) - 2
  assert np.isfinite(row["train/loss"]) and 0.0 <= row["train/accuracy"] <= 1.0
