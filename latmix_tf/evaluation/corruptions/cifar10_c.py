"""The 15 CIFAR-10-C corruptions (Hendrycks & Dietterich 2019) at 5 severities, 32x32 RGB.

Parameters are those of hendrycks/robustness `ImageNet-C/create_c/make_cifar_c.py` (facts,
re-implemented on batches with numpy, scipy and Pillow). Each function maps float64
[N, H, W, 3] images in [0, 1] to the same shape and range with randomness from `rng`.

Where we differ, and why:
  * frost: the reference blends crops of six frost photographs that ship with its code; we
    do not redistribute those files, so the frost layer is a procedural ice texture (a fine
    plasma fractal with sharpened crystals) blended with the reference's weights. The
    numbers are therefore "frost-like", not CIFAR-10-C's frost.
  * OpenCV's fixed-point bilinear warp (elastic transform) and Pillow's JPEG / box resize
    versions can move single pixels by one grey level against the reference files.
  * glass blur: the reference's pixel "swap" on RGB views copies the neighbour in and leaves
    the neighbour unchanged; reproduced (`ops.local_shuffle(swap=False)`).
"""

from __future__ import annotations

import io

import numpy as np
import scipy.ndimage as ndi
from PIL import Image

from latmix_tf.evaluation.corruptions import ops


def gaussian_noise(x, severity, rng):
  c = [0.04, 0.06, .08, .09, .10][severity - 1]
  return np.clip(x + rng.normal(0.0, c, x.shape), 0, 1)


def shot_noise(x, severity, rng):
  c = [500, 250, 100, 75, 50][severity - 1]
  return np.clip(rng.poisson(x * c) / float(c), 0, 1)


def impulse_noise(x, severity, rng):
  c = [.01, .02, .03, .05, .07][severity - 1]
  flipped, salted = rng.random(x.shape) < c, rng.random(x.shape) < 0.5
  out = x.copy()
  out[flipped & salted] = 1.0
  out[flipped & ~salted] = 0.0
  return out


def _disk(radius, alias_blur):
  """Normalised disk on a 17x17 grid, anti-aliased by a 3x3 Gaussian (OpenCV, reflect-101)."""
  grid = np.arange(-8, 9)
  xx, yy = np.meshgrid(grid, grid)
  disk = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float64)
  disk /= disk.sum()
  k = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias_blur ** 2))
  k /= k.sum()
  return ndi.correlate1d(ndi.correlate1d(disk, k, 0, mode="mirror"), k, 1, mode="mirror")


def defocus_blur(x, severity, rng):
  del rng
  radius, alias = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
  kernel = _disk(radius, alias)[None, :, :, None]
  return np.clip(ndi.correlate(x, kernel, mode="mirror"), 0, 1)


def glass_blur(x, severity, rng):
  sigma, delta, iterations = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2),
                              (0.4, 1, 2)][severity - 1]
  y = ops.to_uint8_levels(ops.sk_gaussian(x, sigma))
  y = ops.local_shuffle(y, delta, iterations, rng, coin=False, swap=False)
  return np.clip(ops.sk_gaussian(y, sigma), 0, 1)


def motion_blur(x, severity, rng):
  radius, sigma = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][severity - 1]
  return ops.to_uint8_levels(ops.motion_blur(x, radius, sigma, rng.uniform(-45, 45, len(x))))


def zoom_blur(x, severity, rng):
  del rng
  top = [1.06, 1.11, 1.16, 1.21, 1.26][severity - 1]
  factors = np.arange(1, top, 0.01)
  out = x + sum(ops.clipped_zoom(x, z) for z in factors)
  return np.clip(out / (len(factors) + 1), 0, 1)


def _gray(x):
  """OpenCV's RGB2GRAY weights."""
  return x @ np.array([0.299, 0.587, 0.114])


def snow(x, severity, rng):
  loc, scale, zoom, threshold, radius, sigma, keep = [
      (0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
      (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
      (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)][severity - 1]
  n, h, w = x.shape[:3]
  layer = ops.clipped_zoom(rng.normal(loc, scale, (n, h, w, 1)), zoom)
  layer[layer < threshold] = 0
  layer = ops.to_uint8_levels(np.clip(layer, 0, 1))
  layer = ops.to_uint8_levels(ops.motion_blur(layer, radius, sigma, rng.uniform(-135, -45, n)))
  x = keep * x + (1 - keep) * np.maximum(x, _gray(x)[..., None] * 1.5 + 0.5)
  return np.clip(x + layer + np.rot90(layer, 2, axes=(1, 2)), 0, 1)


def _frost_texture(n, h, w, rng):
  """Procedural frost (stand-in for the reference's photographs): bright crystal veins."""
  field = ops.plasma_fractal(n, rng, 64, 1.3)[:, :h, :w]
  veins = 1 - np.abs(2 * field - 1)          # ridges where the fractal crosses its midpoint
  return np.clip(veins ** 3 * 1.2, 0, 1)[..., None]


def frost(x, severity, rng):
  keep, amount = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][severity - 1]
  texture = _frost_texture(len(x), x.shape[1], x.shape[2], rng)
  return np.clip(keep * x + amount * texture, 0, 1)


def fog(x, severity, rng):
  c0, decay = [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]
  h, w = x.shape[1:3]
  plasma = ops.plasma_fractal(len(x), rng, 32, decay)[:, :h, :w, None]
  max_val = x.max(axis=(1, 2, 3), keepdims=True)
  return np.clip((x + c0 * plasma) * max_val / (max_val + c0), 0, 1)


def brightness(x, severity, rng):
  """HSV value + c: every channel scales by V'/V (V = max channel), black becomes gray V'."""
  del rng
  c = [.05, .1, .15, .2, .3][severity - 1]
  v = x.max(axis=-1, keepdims=True)
  v_new = np.clip(v + c, 0, 1)
  return np.clip(np.where(v > 0, x * v_new / np.maximum(v, 1e-12), v_new), 0, 1)


def contrast(x, severity, rng):
  del rng
  c = [.75, .5, .4, .3, 0.15][severity - 1]
  means = x.mean(axis=(1, 2), keepdims=True)
  return np.clip((x - means) * c + means, 0, 1)


def _cv2_affine(pts1, pts2):
  """The 2x3 affine map sending three (x, y) points to three others (getAffineTransform)."""
  src = np.hstack([pts1, np.ones((3, 1))])
  return np.linalg.solve(src, pts2).T


def elastic_transform(x, severity, rng):
  size = x.shape[1]
  alpha, sigma, shift = [(size * 0, size * 0, size * 0.08), (size * 0.05, size * 0.2, size * 0.07),
                         (size * 0.08, size * 0.06, size * 0.06),
                         (size * 0.1, size * 0.04, size * 0.05),
                         (size * 0.1, size * 0.03, size * 0.03)][severity - 1]
  h, w = x.shape[1:3]
  center, half = np.float64([h, w]) // 2, min(h, w) // 3
  pts1 = np.array([center + half, [center[0] + half, center[1] - half], center - half])
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  out = np.empty_like(x)
  for i in range(len(x)):
    pts2 = pts1 + rng.uniform(-shift, shift, pts1.shape)
    forward = np.vstack([_cv2_affine(pts1, pts2), [0, 0, 1]])
    inv = np.linalg.inv(forward)           # warpAffine samples src = M^-1 (x, y)
    matrix = np.array([[inv[1, 1], inv[1, 0], 0], [inv[0, 1], inv[0, 0], 0], [0, 0, 1.0]])
    img = ndi.affine_transform(x[i], matrix, offset=[inv[1, 2], inv[0, 2], 0], order=1,
                               mode="mirror")
    dx = ndi.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma, mode="reflect",
                             truncate=3) * alpha
    dy = ndi.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma, mode="reflect",
                             truncate=3) * alpha
    for ch in range(x.shape[3]):
      out[i, ..., ch] = ndi.map_coordinates(img[..., ch], [rows + dy, cols + dx], order=1,
                                            mode="reflect")
  return np.clip(out, 0, 1)


def _pil_roundtrip(x, fn):
  out = np.empty_like(x)
  for i, img in enumerate(np.clip(x * 255, 0, 255).astype(np.uint8)):
    out[i] = np.asarray(fn(Image.fromarray(img)), np.float64).reshape(img.shape) / 255.0
  return out


def pixelate(x, severity, rng):
  del rng
  c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
  h, w = x.shape[1:3]
  return _pil_roundtrip(x, lambda im: im.resize((int(w * c), int(h * c)), Image.BOX)
                        .resize((w, h), Image.BOX))


def jpeg_compression(x, severity, rng):
  del rng
  quality = [80, 65, 58, 50, 40][severity - 1]

  def compress(im):
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(buf).convert(im.mode)
  return _pil_roundtrip(x, compress)


CORRUPTIONS = {f.__name__: f for f in (
    gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur, motion_blur, zoom_blur,
    snow, frost, fog, brightness, contrast, elastic_transform, pixelate, jpeg_compression)}
