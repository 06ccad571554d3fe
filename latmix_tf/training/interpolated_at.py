"""Interpolated Adversarial Training (Lamb, Verma, Kawaguchi et al. 2019): adversarial training
inside mixup, to keep robustness at a smaller cost in clean accuracy.

The method is the composition (`compose.Composed`) of two existing ones, not a new loop:
`Mixup` is the batch source (x̃, ỹ) (λ ~ Beta(α, α), partners within the batch),
`AdversarialTraining` the step that attacks it against the soft labels ỹ with the same FGSM /
PGD code evaluation uses, and the classifier trains on the clean mixed batch and its
adversarial examples, 50/50:

  loss = (1 − w)·CE(ỹ, f(x̃)) + w·CE(ỹ, f(x̃_adv)),   w = adversarial.adv_weight = 0.5.

Both halves are one concatenated batch with label rows scaled by (1 − w) and w
(`adversarial.clean_and_adversarial_batch`). `order="attack_then_mix"` is the variant that
attacks the unmixed images against their own labels and mixes the clean and the adversarial
images with independent draws of λ and partners (the form of IAT's public re-implementations).

Limits, tested: `mixup=None` is `AdversarialTraining` with the same config (same random start:
the attack uses the step's seed as `AdversarialTraining` does; mixing uses seeds split from
it); the clean half is exactly `Mixup`'s batch, and with an attack that leaves it unchanged the
loss and gradient are mixup's.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import tensorflow as tf

from latmix_tf import mixing
from latmix_tf.training.adversarial import AdversarialConfig, AdversarialTraining
from latmix_tf.training.compose import Composed
from latmix_tf.training.method import ERM
from latmix_tf.training.mixup import Mixup, MixupConfig

ORDERS = ("mix_then_attack", "attack_then_mix")


@dataclasses.dataclass(frozen=True)
class MixupATConfig:
  """Interpolated adversarial training with input mixup.

  Attributes:
    mixup: the mixing (None: no mixing, which is plain adversarial training).
    adversarial: the attack and the adversarial share w of the loss (the paper: 0.5).
    order: "mix_then_attack" (adversarial examples of the mixed images) or
      "attack_then_mix" (mix the adversarial examples of the real images).
  """
  name: str = "mixup_at"
  mixup: Optional[MixupConfig] = MixupConfig()
  adversarial: AdversarialConfig = AdversarialConfig(adv_weight=0.5)
  order: str = "mix_then_attack"


class MixupAT(Composed):
  """Mixup's batch, attacked by adversarial training's step: clean + adversarial halves."""

  name = "mixup_at"

  def __init__(self, cfg: MixupATConfig = MixupATConfig()):
    if cfg.order not in ORDERS:
      raise ValueError(f"Unknown MixupATConfig.order {cfg.order!r}; valid: {', '.join(ORDERS)}.")
    self.cfg = cfg
    self.adversarial = AdversarialTraining(cfg.adversarial)
    self.mixup = Mixup(cfg.mixup) if cfg.mixup is not None else None
    super().__init__(self.mixup or ERM(), self.adversarial, name="mixup_at")

  def prepare_batch(self, model, x, y, seed):
    y = tf.cast(y, tf.float32)
    if self.mixup is None or self.cfg.order == "mix_then_attack":
      return super().prepare_batch(model, x, y, seed)
    w = self.cfg.adversarial.adv_weight
    mix_seeds = mixing.split_seed(seed, 2)
    x_adv = self.adversarial.attack(model, x, y, seed)
    x_mix, y_mix = self.mixup.prepare_batch(model, x, y, mix_seeds[0])
    x_adv_mix, y_adv_mix = self.mixup.prepare_batch(model, x_adv, y, mix_seeds[1])
    if w == 1.0:
      return x_adv_mix, y_adv_mix
    return (tf.concat([x_mix, x_adv_mix], 0),
            tf.concat([(1.0 - w) * y_mix, w * y_adv_mix], 0))
