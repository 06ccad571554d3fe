"""The generator stage's config: which generative model of the training set, and its training.

Why beside the generator's code: it is the key of the "generator" stage and the one input of
`build_generative_model`; the methods that consume the generator carry it in their own
configs (`LatentMixupConfig.generator`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
  """A generative model of the training set (DCGAN or VAE) and how to train it.

  Attributes:
    kind: "dcgan" or "vae".
    latent_dim: d (default 64 for 28x28 sets, 128 for CIFAR-10).
    prior: "uniform" (U[-1,1]^d) or "normal" (N(0,I)); the VAE always uses "normal".
    base_filters: width multiplier of generator / discriminator / VAE conv stacks.
    epochs, batch_size, learning_rate, beta_1: optimisation (Adam, DCGAN defaults 2e-4 / 0.5).
    steps_per_epoch: cap (smoke scale); None runs full epochs over the training split.
    kl_weight: VAE only, beta of the beta-ELBO (< 1: sharper reconstructions).
    recon_weight: DCGAN only; > 0 trains an encoder E with G and adds
      recon_weight * ||G(E(x)) - x||^2 on real images to G's loss (0 = plain DCGAN).
    g_learning_rate: DCGAN only; G's Adam step size if not `learning_rate` (D's).
    encoder_learning_rate: DCGAN with recon_weight > 0: Adam step size of E (beta_1 0.9).
  """
  kind: str = "dcgan"
  latent_dim: int = 64
  prior: str = "uniform"
  base_filters: int = 32
  epochs: int = 10
  batch_size: int = 128
  learning_rate: float = 2e-4
  beta_1: float = 0.5
  steps_per_epoch: Optional[int] = None
  kl_weight: float = 1.0
  recon_weight: float = 0.0
  g_learning_rate: Optional[float] = None
  encoder_learning_rate: float = 1e-3
