"""The inversion's config: the post-hoc encoder and the latent optimisation of every image.

Why beside the latent stages: it keys the "encoder" and "bank" stages; the methods that consume
the bank carry it in their own configs (`LatentMixupConfig.inversion`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class InversionConfig:
  """Encoder initialisation + latent optimisation (Lipton & Tripathi 2017).

  Attributes:
    encoder_epochs / encoder_steps_per_epoch: training of the encoder E: x -> z.
    steps: K Adam steps of latent optimisation per batch (0 = encoder guess only).
    learning_rate: Adam step size on z.
    feature_weight: w in loss = pixel MSE + w * feature distance.
    feature_source: "discriminator" or "classifier" (features of a fixed network).
    random_starts: start from prior samples instead of E(x) (the slow baseline).
    batch_size: images inverted together (one tf.function call).
    chunk_size: bank chunk written to disk at a time (resume granularity).
    encoder_learning_rate / encoder_batch_size: Adam on the encoder's weights.
    encoder_recon_weight: weight of the pixel reconstruction loss ||G(E(x)) - x||^2 on real
      images, next to the latent regression loss ||E(G(z)) - z||^2 on prior samples.
    encoder_base_filters: width of the encoder's conv stack.
    normal_clip: for the N(0, I) prior, components with |z_i| > normal_clip are resampled
      (standard normal truncated at 2) - the analogue of stochastic clipping; must be >= 2.
      5 only stops runaway codes: at 3 it cut a beta=0.1 VAE's PSNR by 0.6 dB.
  """
  encoder_epochs: int = 5
  encoder_steps_per_epoch: Optional[int] = None
  steps: int = 50
  learning_rate: float = 0.05
  feature_weight: float = 0.1
  feature_source: str = "discriminator"
  random_starts: bool = False
  batch_size: int = 512
  chunk_size: int = 4096
  encoder_learning_rate: float = 1e-3
  encoder_batch_size: int = 128
  encoder_recon_weight: float = 10.0
  encoder_base_filters: int = 32
  normal_clip: float = 5.0
