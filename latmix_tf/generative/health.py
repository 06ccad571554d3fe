"""Health checks of generator training: stop a failed GAN/VAE run instead of using it.

Why: a GAN can fail silently - non-finite losses, a discriminator that wins outright (the
generator gets no gradient), mode collapse - and every latent code, mixed image and accuracy
computed downstream would then be garbage. The training loop (generative/train.py) calls
`check_health` after every compiled chunk of steps; it raises `GeneratorTrainingError`
with what went wrong and what to change.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import numpy as np


class GeneratorTrainingError(RuntimeError):
  """Training diverged (non-finite losses) or the GAN collapsed; the message says which."""


@dataclasses.dataclass(frozen=True)
class HealthGuard:
  """Thresholds of `check_health`.

  Attributes:
    min_steps: collapse checks start after this many steps (a fresh G is near-constant).
    min_diversity_ratio: collapse if the per-pixel std across fixed-noise samples falls
      below this fraction of the same statistic on real images.
    d_fake_floor: D "wins outright" if the epoch mean of D(G(z)) is below this.
    check_every: steps per compiled chunk; losses are checked for NaN/inf after each.
  """
  min_steps: int = 300
  min_diversity_ratio: float = 0.1
  d_fake_floor: float = 1e-3
  check_every: int = 100


def check_health(kind: str, results: Dict[str, float], step: int, diversity: Optional[float],
                 real_diversity: Optional[float], guard: HealthGuard = HealthGuard()) -> None:
  """Raises `GeneratorTrainingError` if the tracked losses or samples show a failed run.

  Args:
    kind: "dcgan" or "vae".
    results: tracker name -> value (epoch means so far).
    step: steps taken so far.
    diversity / real_diversity: mean per-pixel std across generated / real images; None
      skips the collapse check.
    guard: thresholds.
  """
  bad = {k: v for k, v in results.items() if not np.isfinite(v)}
  if bad:
    raise GeneratorTrainingError(
        f"{kind} training diverged at step {step}: non-finite {bad}. Lower the learning rate "
        f"or change the seed; the last good checkpoint is kept for inspection.")
  if kind != "dcgan" or step < guard.min_steps:
    return
  if results.get("d_fake", 1.0) < guard.d_fake_floor:
    raise GeneratorTrainingError(
        f"dcgan failed at step {step}: the discriminator wins outright (mean D(G(z)) = "
        f"{results['d_fake']:.2e} < {guard.d_fake_floor}); the generator gets no signal. "
        f"Lower the discriminator's learning rate or restart with another seed.")
  if diversity is not None and real_diversity and diversity < (
      guard.min_diversity_ratio * real_diversity):
    raise GeneratorTrainingError(
        f"dcgan mode collapse at step {step}: sample diversity {diversity:.4f} < "
        f"{guard.min_diversity_ratio} x real diversity {real_diversity:.4f}. Restart with "
        f"another seed or a smaller learning rate.")


def pixel_diversity(images) -> float:
  """Mean over pixels of the std across images (0 for identical images)."""
  return float(np.mean(np.std(np.asarray(images, np.float32), axis=0)))
