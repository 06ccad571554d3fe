"""Tests of the baseline methods (mixup, manifold mixup, FGSM/PGD adversarial training,
GAT): each hook does what its paper says on small tensors, and every method runs two steps
through the real training loop on tiny data and changes the weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from latmix_tf.config import DataConfig, ModelConfig, TrainConfig
from latmix_tf.data import load_dataset, make_splits
from latmix_tf.models.classifiers import build_classifier
from latmix_tf.training import (METHODS, AdversarialConfig, AdversarialTraining, GAT,
                                GATConfig, ManifoldMixup, ManifoldMixupConfig, Mixup,
                                MixupConfig, build_method, train)

SEED = tf.constant([5, 1], tf.int64)


def _batch(n=12, shape=(28, 28, 1), seed=0):
  rng = np.random.default_rng(seed)
  x = tf.constant(rng.uniform(0, 1, size=(n, *shape)), tf.float32)
  y = tf.one_hot(rng.integers(0, 10, n), 10)
  return x, y


def _cnn(dropout=0.3):
  keras.utils.set_random_seed(0)
  return build_classifier(ModelConfig("cnn", (8, 16), 32, dropout=dropout), (28, 28, 1))


def _resnet():
  keras.utils.set_random_seed(0)
  return build_classifier(ModelConfig("resnet", (8, 16, 16)), (32, 32, 3))


@pytest.mark.parametrize("per_batch", [False, True])
def test_mixup_batch_equals_formula(per_batch):
  method = Mixup(MixupConfig(alpha=1.0, per_batch_lambda=per_batch))
  x, y = _batch()
  lam, perm = (t.numpy() for t in method.draw(12, SEED))
  x_mix, y_mix = (t.numpy() for t in method.prepare_batch(None, x, y, SEED))
  assert lam.shape == (() if per_batch else (12,))
  lam_x = np.reshape(lam, (-1, 1, 1, 1)) if lam.ndim else lam
  lam_y = np.reshape(lam, (-1, 1)) if lam.ndim else lam
  np.testing.assert_allclose(x_mix, lam_x * x.numpy() + (1 - lam_x) * x.numpy()[perm],
                             rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(y_mix, lam_y * y.numpy() + (1 - lam_y) * y.numpy()[perm],
                             rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(y_mix.sum(-1), 1.0, rtol=1e-6)
  assert not np.allclose(x_mix, x.numpy())  # it really mixed


@pytest.mark.parametrize("arch", ["cnn", "resnet"])
@pytest.mark.parametrize("training", [False, True])
def test_manifold_mixup_with_lambda_one_is_the_plain_forward_pass(arch, training):
  model = _cnn(dropout=0.0) if arch == "cnn" else _resnet()
  x, y = _batch(8, (28, 28, 1) if arch == "cnn" else (32, 32, 3))
  # Every boundary the classifier has, not just the default set.
  method = ManifoldMixup(ManifoldMixupConfig(layers=tuple(range(model.num_blocks))))
  method.build(model, 10)
  perm = tf.constant([3, 0, 1, 2, 7, 6, 5, 4])
  plain = model(x, training=training).numpy()
  for k_index in range(model.num_blocks):
    logits, labels = method.mixed_forward(model, x, y, tf.constant(k_index), tf.ones([8]), perm,
                                          training=training)
    np.testing.assert_array_equal(logits.numpy(), plain, err_msg=f"block k={k_index}")
    np.testing.assert_array_equal(labels.numpy(), y.numpy())
    # lambda < 1 changes the output, and equals the definition: mix at block k only.
    lam = tf.constant([0.5, 0.9, 0.1, 0.3, 0.7, 0.2, 0.6, 0.4])
    mixed, labels = method.mixed_forward(model, x, y, tf.constant(k_index), lam, perm,
                                         training=training)
    h = model.forward_to(x, k_index, training=training)
    lam_h = tf.reshape(lam, [-1] + [1] * (len(h.shape) - 1))
    reference = model.forward_from(lam_h * h + (1 - lam_h) * tf.gather(h, perm), k_index,
                                   training=training)
    np.testing.assert_allclose(mixed.numpy(), reference.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(mixed.numpy(), plain, atol=1e-4), f"block k={k_index}"
    np.testing.assert_allclose(labels.numpy(), lam.numpy()[:, None] * y.numpy() +
                               (1 - lam.numpy()[:, None]) * y.numpy()[perm.numpy()], rtol=1e-6)


def test_manifold_mixup_compiles_once_and_draws_every_block():
  model = _cnn(dropout=0.0)
  method = ManifoldMixup(ManifoldMixupConfig())
  method.build(model, 10)
  x, y = _batch(8)
  compiled = tf.function(lambda s: method.mixed_forward(
      model, x, y, method.draw(8, s)[0], tf.ones([8]), tf.range(8), training=False)[0])
  plain = model(x, training=False).numpy()
  for seed in range(3):  # one trace, any k: same logits as the plain pass (up to fusion)
    np.testing.assert_allclose(compiled(SEED + seed).numpy(), plain, rtol=1e-5, atol=1e-5)
  assert compiled.experimental_get_tracing_count() == 1
  drawn = {int(method.draw(8, SEED + s)[0]) for s in range(60)}
  assert drawn == {0, 1, 2}


def test_manifold_mixup_rejects_boundary_past_the_head():
  with pytest.raises(ValueError, match="blocks"):
    ManifoldMixup(ManifoldMixupConfig(layers=(0, 4))).build(_cnn(), 10)


@pytest.mark.parametrize("attack,eps", [("fgsm", 0.1), ("pgd", 0.1), ("pgd", 8 / 255)])
def test_adversarial_batches_respect_eps_and_box(attack, eps):
  model = _cnn()
  x, y = _batch(16)
  x = tf.clip_by_value(tf.round(x), 0.0, 1.0)  # many pixels on the box edges
  method = AdversarialTraining(AdversarialConfig(attack=attack, epsilon=eps, steps=3))
  x_adv, y_adv = method.prepare_batch(model, x, y, SEED)
  diff = np.abs(x_adv.numpy() - x.numpy())
  assert diff.max() <= eps + 1e-6
  assert diff.max() >= 0.5 * eps  # it did perturb
  assert x_adv.numpy().min() >= 0.0 and x_adv.numpy().max() <= 1.0
  np.testing.assert_array_equal(y_adv.numpy(), y.numpy())
  # The attack raises the loss of the model it was built against.
  ce = lambda images: float(tf.reduce_mean(keras.losses.categorical_crossentropy(
      y, model(images, training=False), from_logits=True)))
  assert ce(x_adv) > ce(x)


def test_adversarial_half_half_batch_weights_labels():
  model = _cnn()
  x, y = _batch(8)
  method = AdversarialTraining(AdversarialConfig(attack="fgsm", epsilon=0.1, adv_weight=0.25))
  x_cat, y_cat = method.prepare_batch(model, x, y, SEED)
  assert x_cat.shape[0] == 16
  np.testing.assert_array_equal(x_cat[:8].numpy(), x.numpy())
  np.testing.assert_allclose(y_cat[:8].numpy(), 0.75 * y.numpy())
  np.testing.assert_allclose(y_cat[8:].numpy(), 0.25 * y.numpy())
  assert float(tf.reduce_sum(y_cat)) == pytest.approx(8.0)  # label mass = examples
  assert method.step_size == pytest.approx(0.125)  # 1.25 eps (Wong et al.)
  assert AdversarialTraining(AdversarialConfig(epsilon=0.1, steps=5)).step_size == \
      pytest.approx(0.05)  # 2.5 eps / k (Madry et al.)


def test_gat_generator_perturbation_respects_its_bound():
  model = _cnn()
  method = GAT(GATConfig(epsilon=0.05))
  method.build(model, 10)
  x, y = _batch(8)
  # Blow up the last layer so tanh saturates: the bound must still hold.
  kernel = method.generator.net.layers[-1].kernel
  kernel.assign(kernel * 1e4)
  grad = method.input_gradient(model, x, y)
  delta, x_adv = method.perturb(grad, x)
  assert np.abs(delta.numpy()).max() <= 0.05 + 1e-7
  assert np.abs(delta.numpy()).max() >= 0.049  # saturated: the bound is reached, not exceeded
  assert x_adv.numpy().min() >= 0.0 and x_adv.numpy().max() <= 1.0
  assert np.abs(x_adv.numpy() - x.numpy()).max() <= 0.05 + 1e-6
  x_cat, y_cat = method.prepare_batch(model, x, y, SEED)
  assert x_cat.shape[0] == 16
  np.testing.assert_allclose((y_cat[:8] + y_cat[8:]).numpy(), y.numpy())


def test_registry_builds_every_baseline_and_rejects_bad_configs():
  expected = {"mixup": Mixup, "manifold_mixup": ManifoldMixup,
              "adversarial": AdversarialTraining, "gat": GAT}
  for cfg in (MixupConfig(), ManifoldMixupConfig(), AdversarialConfig(), GATConfig()):
    assert type(build_method(cfg)) is expected[cfg.name] and cfg.name in METHODS
  with pytest.raises(ValueError, match="attack"):
    AdversarialTraining(AdversarialConfig(attack="cw"))
  with pytest.raises(ValueError, match="adv_weight"):
    AdversarialTraining(AdversarialConfig(adv_weight=0.0))
  with pytest.raises(ValueError, match="alpha"):
    Mixup(MixupConfig(alpha=0.0))


SMOKE_METHODS = {
    "mixup": ("cnn", MixupConfig()),
    "manifold_mixup": ("cnn", ManifoldMixupConfig()),
    "manifold_mixup_resnet": ("resnet", ManifoldMixupConfig(layers=(0, 2, 3))),
    "fgsm_at": ("cnn", AdversarialConfig(attack="fgsm", epsilon=0.1)),
    "pgd_at_half": ("cnn", AdversarialConfig(attack="pgd", epsilon=0.1, steps=2,
                                             adv_weight=0.5)),
}


def _tiny_run(tiny_data_dir, dataset="fashion_mnist"):
  data_cfg = DataConfig(dataset, tiny_data_dir, batch_size=16, val_size=16, train_limit=64,
                        test_limit=16)
  return data_cfg, make_splits(load_dataset(dataset, tiny_data_dir, allow_tfds=False), data_cfg)


@pytest.mark.parametrize("key", sorted(SMOKE_METHODS))
def test_two_steps_through_the_real_loop_change_the_weights(key, tiny_data_dir, tmp_path):
  arch, cfg = SMOKE_METHODS[key]
  data_cfg, splits = _tiny_run(tiny_data_dir, "cifar10" if arch == "resnet" else "fashion_mnist")
  model = _resnet() if arch == "resnet" else _cnn()
  before = [v.numpy().copy() for v in model.trainable_variables]
  history = train(model, build_method(cfg), splits, data_cfg,
                  TrainConfig(epochs=1, steps_per_epoch=2, learning_rate=1e-2),
                  str(tmp_path), seed=0, log=lambda _: None)
  after = [v.numpy() for v in model.trainable_variables]
  changed = sum(not np.array_equal(b, a) for b, a in zip(before, after))
  assert changed >= len(before) - 2  # (a BN beta can be untouched by 2 tiny steps)
  row = history[-1]
  assert np.isfinite(row["train/loss"]) and 0.0 <= row["train/accuracy"] <= 1.0


def test_gat_trains_both_networks_and_resumes_its_generator(tiny_data_dir, tmp_path):
  """Two GAT steps change classifier and generator; a run resumed from its epoch-1
  checkpoint ends with the same classifier *and generator* as an uninterrupted one."""
  data_cfg, splits = _tiny_run(tiny_data_dir)
  cfg = GATConfig(epsilon=0.1)

  def run(epochs, workdir, init_seed=0):
    model, method = _cnn(), GAT(cfg)
    keras.utils.set_random_seed(init_seed)  # generator init (a resumed run must not need it)
    history = train(model, method, splits, data_cfg,
                    TrainConfig(epochs=epochs, steps_per_epoch=2, learning_rate=1e-2,
                                lr_schedule="constant"),  # so 1 + 1 epochs == 2 epochs
                    str(workdir), seed=3, log=lambda _: None)
    return model, method, history

  start_model, start_method = _cnn(), GAT(cfg)
  start_method.build(start_model, 10)
  generator_init = [v.numpy().copy() for v in start_method.generator.trainable_variables]
  model, method, history = run(2, tmp_path / "ref")
  moved = [not np.array_equal(a, b.numpy())
           for a, b in zip(generator_init, method.generator.trainable_variables)]
  assert all(moved) and int(method.generator_optimizer.iterations.numpy()) == 4
  row = history[-1]
  assert np.isfinite(row["train/generator_loss"])
  assert 0.0 < row["train/perturbation_l2"] <= 0.1 * 28  # ||δ||₂ <= ε sqrt(D)

  run(1, tmp_path / "run")
  resumed_model, resumed_method, _ = run(2, tmp_path / "run", init_seed=99)
  for a, b in zip(model.get_weights() + method.generator.get_weights(),
                  resumed_model.get_weights() + resumed_method.generator.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
