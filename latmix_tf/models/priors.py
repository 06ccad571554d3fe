"""The latent priors of the generators: U[-1,1]^d ("uniform") and N(0, I) ("normal").

Kept apart from the networks because the DCGAN, the inversion encoder (whose output lies in
the prior's support) and the inversion (which clips to it) all need them.
"""

from __future__ import annotations

import tensorflow as tf

PRIORS = ("uniform", "normal")


def check_prior(prior: str) -> str:
  if prior not in PRIORS:
    raise ValueError(f"Unknown latent prior {prior!r}; valid: {', '.join(PRIORS)}.")
  return prior


def sample_prior(prior: str, n, latent_dim: int, seed) -> tf.Tensor:
  """Draws n latent codes: U[-1,1]^d ("uniform") or N(0, I) ("normal").

  Args:
    prior: "uniform" or "normal".
    n: number of codes (int or scalar tensor).
    latent_dim: d.
    seed: int, or shape-[2] int tensor (stateless ops: same seed, same codes).
  Returns:
    float32 tensor [n, d].
  """
  check_prior(prior)
  if isinstance(seed, int):
    seed = [seed, 0]
  seed = tf.cast(seed, tf.int64)
  if prior == "uniform":
    return tf.random.stateless_uniform([n, latent_dim], seed, -1.0, 1.0)
  return tf.random.stateless_normal([n, latent_dim], seed)
