"""Registry of the corruption suites: names, protocol severities and the `corrupt` entry.

Kept apart from `__init__` so that `benchmark` can import it without a cycle.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np

from latmix_tf.evaluation.corruptions import cifar10_c, mnist_c

# Bump when any corruption's definition changes: it is part of every cache key.
CORRUPTION_VERSION = 1
SUITES: Dict[str, Dict[str, Callable]] = {"mnist_c": mnist_c.CORRUPTIONS,
                                          "cifar10_c": cifar10_c.CORRUPTIONS}
SEVERITIES = (1, 2, 3, 4, 5)


def suite_for(image_shape) -> str:
  """"mnist_c" for grayscale images, "cifar10_c" for RGB."""
  channels = int(image_shape[-1])
  if channels == 1:
    return "mnist_c"
  if channels == 3:
    return "cifar10_c"
  raise ValueError(f"no corruption suite for images with {channels} channels (need 1 or 3).")


def names(suite: str) -> Tuple[str, ...]:
  if suite not in SUITES:
    raise ValueError(f"unknown corruption suite {suite!r}; valid: {', '.join(SUITES)}.")
  return tuple(SUITES[suite])


def get(suite: str, name: str) -> Callable:
  """The corruption function `fn(x_float[N,H,W,C], severity, rng) -> x_float`."""
  table = SUITES[suite] if suite in SUITES else names(suite)
  if name not in table:
    raise ValueError(f"unknown {suite} corruption {name!r}; valid: {', '.join(table)}.")
  return table[name]


def protocol_severities(suite: str, name: str) -> Tuple[int, ...]:
  """The benchmark's own levels: MNIST-C's single level per corruption; CIFAR-10-C's 1-5."""
  get(suite, name)
  return (mnist_c.PROTOCOL_SEVERITY[name],) if suite == "mnist_c" else SEVERITIES


def corrupt(images: np.ndarray, suite: str, name: str, severity: int,
            rng: np.random.Generator) -> np.ndarray:
  """Corrupts uint8 [N, H, W, C] images; returns uint8 (values truncated as the references do).

  Args:
    images: uint8 images.
    suite: "mnist_c" or "cifar10_c".
    name: a corruption of that suite.
    severity: 1..5.
    rng: the source of all randomness (seed it for reproducible sets).
  """
  if severity not in SEVERITIES:
    raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}.")
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f"expected uint8 [N, H, W, C] images, got {images.dtype} {images.shape}.")
  out = get(suite, name)(images.astype(np.float64) / 255.0, int(severity), rng)
  return np.clip(out * 255.0, 0, 255).astype(np.uint8)

