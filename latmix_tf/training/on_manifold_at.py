"""On-manifold adversarial training (Stutz, Hein & Schiele, CVPR 2019): adversarial examples
searched in a generator's latent space, so that they stay on the data manifold.

For a training image with inverted code z (the latent bank) and label y, k PGD steps on a
latent perturbation δ, ‖δ‖∞ ≤ η (latent units), maximise CE(y, f(G(z + δ))) with the classifier
in inference mode and the generator frozen; the classifier then trains on G(z + δ) with the
image's own label y. η = 0 trains on the reconstructions G(z) (the tested limit). The paper's
combination with input-space adversarial training is the same method with
`input_adversarial` set: the real batch is attacked by `AdversarialTraining` (the same PGD as
evaluation) and those rows take `input_weight` of the loss; `clean_weight` > 0 adds the clean
real batch. Row weights scale the label rows (masses sum to one per example, see loop.py).

The generator and bank are the runner's latent stages (`latent/stages.py`), declared as this
method's needs in the registry as Latent-Mixup's are: the same stage keys, so runs share
them. Each step's bank examples come from the same stateless stream as Latent-Mixup's
reconstructions (`latent.mixes.latent_mix_dataset` with j = i): B codes drawn uniformly from the bank, independently of
the real batch (whose images are augmented and so have no stored code).

The defaults are the paper's for one generator of all classes (its "data manifold"): η = 0.1
and half of each batch clean (its training code attacks half of each batch and averages the
two halves' losses). Its η = 0.3 is for class-specific generators, where no latent step can
leave the class. With one generator and a 64-dimensional U[-1, 1] code, η = 0.3 decodes
images of other classes under the original label: trained on them alone, the quick
Fashion-MNIST classifier stayed at chance (validation accuracy 10% after 200 steps, against
82% on the reconstructions, η = 0; `benchmarks/on_manifold_start.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional

import tensorflow as tf

from latmix_tf import mixing
from latmix_tf.generative.config import GeneratorConfig
from latmix_tf.latent.config import InversionConfig
from latmix_tf.latent.mixes import PairSampler, latent_mix_dataset
from latmix_tf.losses import soft_cross_entropy
from latmix_tf.training.adversarial import AdversarialTraining
from latmix_tf.training.method import Method


@dataclasses.dataclass(frozen=True)
class OnManifoldATConfig:
  """On-manifold adversarial training (Stutz, Hein & Schiele 2019).

  Attributes: eta, the L∞ radius of the latent perturbation δ in latent units (0: train on
  G(z); the paper's 0.1 for a generator of all classes); steps k and step_size (None:
  2.5 η / k) of its PGD, from a uniform random_start; clean_weight, the loss share of the
  clean real batch (the paper's 0.5); input_adversarial, an
  `AdversarialConfig` for the paper's combination with input-space adversarial training
  (None: off), whose rows get input_weight of the loss; generator and inversion as for
  Latent-Mixup (the same stages).
  """
  name: str = "on_manifold_at"
  eta: float = 0.1
  steps: int = 7
  step_size: Optional[float] = None
  random_start: bool = True
  clean_weight: float = 0.5
  input_adversarial: Any = None
  input_weight: float = 0.5
  generator: GeneratorConfig = GeneratorConfig()
  inversion: InversionConfig = InversionConfig()


def latent_pgd(logits_fn: Callable, decode: Callable, z: tf.Tensor, y: tf.Tensor, eta: float,
               steps: int, step_size: float, random_start: bool,
               seed: Optional[tf.Tensor]) -> tf.Tensor:
  """δ maximising Σ CE(y, logits_fn(decode(z + δ))) over ‖δ‖∞ ≤ eta (signed steps, projected).

  Returns δ (no gradient); eta = 0 returns zeros.
  """
  z = tf.convert_to_tensor(z, tf.float32)
  y = tf.cast(y, tf.float32)
  eta = tf.cast(eta, tf.float32)
  delta = tf.zeros_like(z)
  if random_start:
    delta = eta * tf.random.stateless_uniform(tf.shape(z), tf.cast(seed, tf.int64), -1.0, 1.0)

  def body(i, d):
    with tf.GradientTape() as tape:
      tape.watch(d)
      loss = tf.reduce_sum(soft_cross_entropy(y, logits_fn(decode(z + d))))
    grad = tape.gradient(loss, d)
    return i + 1, tf.clip_by_value(d + step_size * tf.sign(grad), -eta, eta)

  _, delta = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), delta))
  return tf.stop_gradient(delta)


class OnManifoldAT(Method):
  """Trains on decoded latent adversarials G(z + δ) (and optionally input-space ones)."""

  name = "on_manifold_at"

  def __init__(self, cfg: OnManifoldATConfig, gen=None, bank=None, batch_size: int = 128,
               upstream: Optional[Dict[str, str]] = None):
    if gen is None or bank is None:
      raise ValueError("OnManifoldAT needs the generator and the latent bank: build it with "
                       "latmix_tf.training.registry.build_on_manifold_at and the inputs of the "
                       "runner's latent stages (latmix_tf.latent.stages).")
    if cfg.eta < 0 or cfg.steps < 0:
      raise ValueError(f"OnManifoldATConfig needs eta >= 0 and steps >= 0, got eta={cfg.eta}, "
                       f"steps={cfg.steps}.")
    self.input_weight = cfg.input_weight if cfg.input_adversarial is not None else 0.0
    self.manifold_weight = 1.0 - cfg.clean_weight - self.input_weight
    if min(cfg.clean_weight, self.input_weight) < 0 or not self.manifold_weight > 0:
      raise ValueError(f"OnManifoldATConfig: clean_weight ({cfg.clean_weight}) and input_weight "
                       f"({self.input_weight}) must be >= 0 and leave the on-manifold rows a "
                       f"positive share (their sum < 1).")
    self.cfg, self.gen, self.bank, self.batch_size = cfg, gen, bank, batch_size
    self.upstream = dict(upstream or {})
    self.input_attack = (AdversarialTraining(cfg.input_adversarial)
                         if cfg.input_adversarial is not None else None)

  @property
  def step_size(self) -> float:
    if self.cfg.step_size is not None:
      return self.cfg.step_size
    return 2.5 * self.cfg.eta / max(self.cfg.steps, 1)

  def build(self, model, num_classes: int) -> None:
    self.num_classes = num_classes
    self.sampler = PairSampler(self.bank.labels, num_classes, "self")

  def transform_dataset(self, ds: tf.data.Dataset, epoch: int, seed: int) -> tf.data.Dataset:
    codes = latent_mix_dataset(self.bank.z, self.sampler, self.num_classes, self.batch_size,
                               1.0, seed, epoch)  # "self" pairs: z = z_i, one-hot y_i
    return tf.data.Dataset.zip((ds, codes)).map(
        lambda real, bank: ((real[0], bank["z"]), (real[1], bank["labels"]))).prefetch(2)

  def manifold_adversarial(self, model, z, y, seed) -> tf.Tensor:
    """G(z + δ) for the latent PGD's δ against the current weights (no gradient)."""
    cfg = self.cfg
    delta = latent_pgd(lambda images: model(images, training=False), self.gen.decode, z, y,
                       cfg.eta, cfg.steps, self.step_size, cfg.random_start, seed)
    return tf.stop_gradient(self.gen.decode(z + delta))

  def prepare_batch(self, model, x, y, seed):
    (x_real, z), (y_real, y_bank) = x, y
    seeds = mixing.split_seed(seed, 2)
    x_m = tf.cast(self.manifold_adversarial(model, z, y_bank, seeds[0]), x_real.dtype)
    xs, ys = [x_m], [self.manifold_weight * tf.cast(y_bank, tf.float32)]
    y_real = tf.cast(y_real, tf.float32)
    if self.cfg.clean_weight > 0:
      xs.append(x_real)
      ys.append(self.cfg.clean_weight * y_real)
    if self.input_attack is not None:
      x_in, y_in = self.input_attack.prepare_batch(model, x_real, y_real, seeds[1])
      xs.append(x_in)
      ys.append(self.input_weight * tf.cast(y_in, tf.float32))
    if len(xs) == 1:
      return x_m, ys[0]
    return tf.concat(xs, 0), tf.concat(ys, 0)
