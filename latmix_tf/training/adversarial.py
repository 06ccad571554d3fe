"""Adversarial training (L∞): "fast" FGSM with a random start, and PGD-k (Madry et al.).

The classifier is trained on adversarial examples built, every step, against its current
weights by the same `latmix_tf.attacks` code that evaluation uses (one FGSM, one PGD):

  * fgsm - Wong, Rice, Kolter 2020 ("Fast is better than free"): start at x + U(-ε, ε),
    one signed-gradient step of size 1.25 ε, project onto the ε-ball and [0, 1].
  * pgd  - Madry et al. 2018: random start in the ε-ball, k signed-gradient steps of size
    2.5 ε / k, projection after each step (default k = 7, Madry's CIFAR-10 setting).

ε per dataset (`DEFAULT_EPSILON`), each dataset's standard threat model: MNIST 0.3 (Madry et
al. 2018, and AutoAttack's MNIST budget), Fashion-MNIST 0.1 (0.3 destroys its clean accuracy;
the middle of its evaluation grid), CIFAR-10 8/255. MNIST keeps the recipe otherwise (PGD-7
of step 2.5 ε / 7, FGSM of step 1.25 ε as Wong et al. ran it at 0.3); its evaluation reports
AutoAttack at 0.1 and 0.3.

Loss weighting: loss = (1 - w)·CE(clean) + w·CE(adversarial), w = `adv_weight` (1.0 =
adversarial only, as in Madry and Wong; 0.5 = Goodfellow et al.'s half/half). For 0 < w < 1
the clean and adversarial images are scored as one concatenated batch of 2B rows (one
BatchNorm batch, as in Goodfellow et al.) whose label rows are scaled by (1 - w) and w.
Cross-entropy is linear in the labels, so the loop's sum over the 2B rows divided by the
*global* batch size B is exactly the weighted mean above - not twice it - and the loop
counts rows by their label mass (see loop.py), so logged loss / accuracy are the same
weighted averages.

Attacks run in `prepare_batch`, outside the gradient tape, with the model in inference mode
(training=False) - see `AdversarialTraining.attack`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import tensorflow as tf

from latmix_tf import attacks
from latmix_tf.training.method import Method

DEFAULT_EPSILON = {"mnist": 0.3, "fashion_mnist": 0.1, "cifar10": 8 / 255}
ATTACKS = ("fgsm", "pgd")


@dataclasses.dataclass(frozen=True)
class AdversarialConfig:
  """Adversarial training.

  Attributes:
    attack: "fgsm" (fast AT, random start) or "pgd".
    epsilon: L∞ radius in [0, 1] pixel units (see DEFAULT_EPSILON).
    steps: PGD steps k (ignored by fgsm).
    step_size: None = 1.25 ε for fgsm (Wong et al.) and 2.5 ε / k for pgd (Madry et al.).
    random_start: start from a uniform point of the ε-ball.
    adv_weight: w in (0, 1]: loss = (1 - w) CE(clean) + w CE(adversarial).
  """
  name: str = "adversarial"
  attack: str = "pgd"
  epsilon: float = 0.1
  steps: int = 7
  step_size: Optional[float] = None
  random_start: bool = True
  adv_weight: float = 1.0


def clean_and_adversarial_batch(x: tf.Tensor, x_adv: tf.Tensor, y: tf.Tensor,
                                adv_weight: float) -> Tuple[tf.Tensor, tf.Tensor]:
  """The batch the classifier is trained on for loss (1 - w) CE(clean) + w CE(adv).

  w = 1 returns (x_adv, y). Otherwise returns the concatenation [x; x_adv] with labels
  [(1 - w) y; w y]: with the loop's per-example soft cross-entropy summed and divided by
  the global batch size, this is the weighted mean (each label row's mass is its weight).
  """
  if adv_weight == 1.0:
    return x_adv, y
  y = tf.cast(y, tf.float32)
  return (tf.concat([x, x_adv], 0),
          tf.concat([(1.0 - adv_weight) * y, adv_weight * y], 0))


class AdversarialTraining(Method):
  """Replaces (or complements) each batch by its FGSM / PGD adversarial examples."""

  name = "adversarial"

  def __init__(self, cfg: AdversarialConfig = AdversarialConfig()):
    if cfg.attack not in ATTACKS:
      raise ValueError(f"Unknown attack {cfg.attack!r}; valid: {', '.join(ATTACKS)}.")
    if not 0.0 < cfg.epsilon <= 1.0:
      raise ValueError(f"AdversarialConfig.epsilon must be in (0, 1] (pixels in [0, 1]), got "
                       f"{cfg.epsilon}.")
    if not 0.0 < cfg.adv_weight <= 1.0:
      raise ValueError(f"AdversarialConfig.adv_weight must be in (0, 1] (0 is ERM), got "
                       f"{cfg.adv_weight}.")
    if cfg.attack == "pgd" and cfg.steps < 1:
      raise ValueError(f"AdversarialConfig.steps must be >= 1 for pgd, got {cfg.steps}.")
    self.cfg = cfg
    self.name = f"{cfg.attack}_at"

  @property
  def step_size(self) -> float:
    if self.cfg.step_size is not None:
      return self.cfg.step_size
    if self.cfg.attack == "fgsm":
      return 1.25 * self.cfg.epsilon
    return 2.5 * self.cfg.epsilon / self.cfg.steps

  def attack(self, model, x, y, seed) -> tf.Tensor:
    """Adversarial images for (x, y) against the current weights (no gradient).

    The model runs with training=False: in training mode every forward pass of the attack
    would update BatchNorm's moving statistics with intermediate attack iterates (k + 1
    extra updates per step) and draw fresh dropout masks, so the attack would chase a
    randomly thinned network. Inference mode attacks the deterministic function that is
    exported and evaluated (evaluation attacks the SavedModel the same way).
    """
    logits_fn = lambda images: model(images, training=False)
    cfg = self.cfg
    if cfg.attack == "fgsm":
      return attacks.fgsm(logits_fn, x, y, cfg.epsilon, random_start=cfg.random_start,
                          seed=seed, step_size=self.step_size)
    return attacks.pgd(logits_fn, x, y, cfg.epsilon, cfg.steps, self.step_size,
                       random_start=cfg.random_start, seed=seed)

  def prepare_batch(self, model, x, y, seed):
    x_adv = self.attack(model, x, y, seed)
    return clean_and_adversarial_batch(x, x_adv, y, self.cfg.adv_weight)
