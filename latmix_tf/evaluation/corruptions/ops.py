"""Batched image operations the corruption definitions are built from (numpy + scipy.ndimage).

Why our own: the reference generators (google-research/mnist-c, hendrycks/robustness) call
scikit-image, OpenCV and ImageMagick (through Wand) one image at a time, and the one PyPI
package wrapping them (`imagecorruptions` 1.1.2, last released 2020) no longer imports with
scikit-image >= 0.21 (`multichannel=`) or setuptools without `pkg_resources`, and is tuned for
ImageNet-sized images. Each function here reproduces what the reference calls compute (stated
per function) on a whole batch [N, H, W, C] of float64 images in [0, 1], vectorised over N.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.ndimage as ndi


def sk_gaussian(x: np.ndarray, sigma: float, axes: Sequence[int] = (1, 2),
                mode: str = "nearest") -> np.ndarray:
  """scikit-image's `filters.gaussian` (truncate 4, mode "nearest") over `axes` only."""
  sigmas = [float(sigma) if a in axes else 0.0 for a in range(x.ndim)]
  return ndi.gaussian_filter(x, sigmas, mode=mode, truncate=4.0)


def plasma_fractal(n: int, rng: np.random.Generator, mapsize: int = 256,
                   wibbledecay: float = 3.0) -> np.ndarray:
  """n diamond-square height maps [n, mapsize, mapsize] in [0, 1] (the references' fog).

  Same recursion as the references' `plasma_fractal` (wrap-around neighbours, initial
  wibble 100 divided by `wibbledecay` per level), one map per image.
  """
  if mapsize & (mapsize - 1):
    raise ValueError(f"mapsize must be a power of two, got {mapsize}.")
  maps = np.zeros((n, mapsize, mapsize))
  step, wibble = mapsize, 100.0

  def wibbled_mean(total):
    return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

  while step >= 2:
    half = step // 2
    corners = maps[:, 0::step, 0::step]
    acc = corners + np.roll(corners, -1, axis=1)
    acc = acc + np.roll(acc, -1, axis=2)
    maps[:, half::step, half::step] = wibbled_mean(acc)
    dr = maps[:, half::step, half::step]
    ul = maps[:, 0::step, 0::step]
    lt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2)
    maps[:, 0::step, half::step] = wibbled_mean(lt)
    tt = dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1)
    maps[:, half::step, 0::step] = wibbled_mean(tt)
    step //= 2
    wibble /= wibbledecay
  maps -= maps.min(axis=(1, 2), keepdims=True)
  return maps / maps.max(axis=(1, 2), keepdims=True)


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
  """Centre crop of size ceil(H / factor), zoomed back (bilinear, scipy.ndimage.zoom), cropped."""
  h = x.shape[1]
  ch = int(np.ceil(h / factor))
  top = (h - ch) // 2
  zoomed = ndi.zoom(x[:, top:top + ch, top:top + ch], (1, factor, factor, 1), order=1)
  trim = (zoomed.shape[1] - h) // 2
  return zoomed[:, trim:trim + h, trim:trim + h]


def motion_blur(x: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
  """ImageMagick's MotionBlurImage (what the references call through Wand), per-image angle.

  A one-sided Gaussian along the direction `angle` (degrees): width = 2 ceil(radius) + 1
  taps with weights exp(-i^2 / (2 sigma^2)) (normalised), tap i reads the pixel at
  (x + round(i cos a), y + round(i sin a)), edge pixels repeated outside the image.
  """
  n, h, w = x.shape[:3]
  width = int(2 * np.ceil(radius) + 1)
  taps = np.arange(width)
  kernel = np.exp(-taps ** 2 / (2.0 * sigma ** 2))
  kernel /= kernel.sum()
  rad = np.deg2rad(np.asarray(angles, np.float64))[:, None]
  dx = np.ceil(taps * np.cos(rad) - 0.5).astype(np.int64)   # [N, width]
  dy = np.ceil(taps * np.sin(rad) - 0.5).astype(np.int64)
  rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
  batch = np.arange(n)[:, None, None]
  out = np.zeros_like(x)
  for i in range(width):
    r = np.clip(rows + dy[:, i, None, None], 0, h - 1)
    c = np.clip(cols + dx[:, i, None, None], 0, w - 1)
    out += kernel[i] * x[batch, r, c]
  return out


def to_uint8_levels(x: np.ndarray) -> np.ndarray:
  """x quantised as the references' PNG round trips do: uint8(x * 255) / 255 (truncation)."""
  return np.clip(x * 255, 0, 255).astype(np.uint8) / 255.0


def warp_about_center(x: np.ndarray, inverse_xy: np.ndarray, mode: str = "constant") -> np.ndarray:
  """skimage `transform.warp(x, inverse_map=A)` with A fixing the image centre (bilinear).

  `inverse_xy` is the 2x2 linear part, in (x=column, y=row) coordinates, of the map from
  output to input coordinates; the translation keeps ((W-1)/2, (H-1)/2) fixed, as MNIST-C
  sets it. Outside the image reads 0 ("constant").
  """
  h, w = x.shape[1:3]
  (a1, a2), (b1, b2) = inverse_xy
  cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
  tx, ty = cx - a1 * cx - a2 * cy, cy - b1 * cx - b2 * cy
  # (row, col) form: in_row = b2 * row + b1 * col + ty; in_col = a2 * row + a1 * col + tx.
  matrix = np.diag([1.0, 1.0, 1.0, 1.0])
  matrix[1:3, 1:3] = [[b2, b1], [a2, a1]]
  return ndi.affine_transform(x, matrix, offset=[0.0, ty, tx, 0.0], order=1, mode=mode,
                              cval=0.0)


def canny(images: np.ndarray, sigma: float = 1.0, low: float = 0.1, high: float = 0.2,
          l1_norm: bool = False) -> np.ndarray:
  """Canny edges of [N, H, W] images, as `skimage.feature.canny` computes them.

  Gaussian smoothing (mode constant, divided by the smoothed all-ones mask, truncate 4;
  skipped when sigma = 0), Sobel gradients, non-maximum suppression interpolating the
  magnitude between the two neighbours along the gradient, the 1-pixel border excluded,
  hysteresis: 8-connected components of (magnitude >= low) that hold a pixel >= high.
  `l1_norm` uses |g_r| + |g_c| as the magnitude (OpenCV's Canny default).
  """
  x = np.asarray(images, np.float64)
  if sigma > 0:
    blur = lambda a: ndi.gaussian_filter(a, (0, sigma, sigma), mode="constant", truncate=4.0)
    x = blur(x) / (blur(np.ones_like(x)) + np.finfo(np.float64).eps)
  # Sobel per image (ndi.sobel would also smooth across the batch axis).
  smooth, deriv = [1.0, 2.0, 1.0], [-1.0, 0.0, 1.0]
  gi = ndi.correlate1d(ndi.correlate1d(x, deriv, 1, mode="reflect"), smooth, 2, mode="reflect")
  gj = ndi.correlate1d(ndi.correlate1d(x, deriv, 2, mode="reflect"), smooth, 1, mode="reflect")
  mag = np.abs(gi) + np.abs(gj) if l1_norm else np.hypot(gi, gj)
  n, h, w = x.shape
  inner = np.zeros_like(mag, bool)
  inner[:, 1:-1, 1:-1] = True
  inner &= mag > 0
  si = np.where(gi >= 0, 1, -1)
  sj = np.where(gj >= 0, 1, -1)
  ai, aj = np.abs(gi), np.abs(gj)
  rows_major = ai >= aj
  weight = np.where(rows_major, aj / np.maximum(ai, 1e-300), ai / np.maximum(aj, 1e-300))
  # Neighbours along the gradient: "straight" step on the dominant axis, "diagonal" on both.
  b, r, c = np.nonzero(inner)
  s_r = np.where(rows_major[b, r, c], si[b, r, c], 0)
  s_c = np.where(rows_major[b, r, c], 0, sj[b, r, c])
  d_r, d_c = si[b, r, c], sj[b, r, c]
  wt, m = weight[b, r, c], mag[b, r, c]
  forward = (1 - wt) * mag[b, r + s_r, c + s_c] + wt * mag[b, r + d_r, c + d_c]
  backward = (1 - wt) * mag[b, r - s_r, c - s_c] + wt * mag[b, r - d_r, c - d_c]
  local_max = np.zeros_like(inner)
  local_max[b, r, c] = (m >= forward) & (m >= backward)
  low_mask = local_max & (mag >= low)
  high_mask = local_max & (mag >= high)
  structure = np.zeros((3, 3, 3), bool)
  structure[1] = True  # 8-connected within an image, never across images
  labels, count = ndi.label(low_mask, structure)
  keep = np.zeros(count + 1, bool)
  keep[np.unique(labels[high_mask])] = True
  keep[0] = False
  return keep[labels]


def line_from_points(c0: float, r0: float, c1: float, r1: float, h: int, w: int) -> np.ndarray:
  """MNIST-C's anti-aliased line: log(1 - d / 2.3) + 1 of the vertical distance d to the line
  through (c0, r0), (c1, r1), zero left of floor(c0) and from ceil(c1) on ([h, w] in [0, 1])."""
  if c1 == c0:
    return np.zeros((h, w))
  cc, rr = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64),
                       sparse=True)
  slope = (r1 - r0) / (c1 - c0)
  dist = np.clip(np.abs(rr - (slope * (cc - c0) + r0)), 0, 2.3 - 1e-10)
  line = np.clip(np.log(1 - dist / 2.3) + 1, 0, 1)
  line[:, :int(np.floor(c0))] = 0
  line[:, int(np.ceil(c1)):] = 0
  return line


def local_shuffle(x: np.ndarray, max_delta: int, iterations: int, rng: np.random.Generator,
                  coin: bool, swap: bool) -> np.ndarray:
  """The glass-blur pixel shuffle, positions visited in the references' order (bottom-right
  to top-left), each image drawing its own offsets in [-max_delta, max_delta).

  `coin`: MNIST-C moves a pixel with probability 1/2. `swap`: MNIST-C (2-D arrays) really
  swaps; CIFAR-10-C's tuple "swap" of RGB views copies the neighbour in and leaves the
  neighbour unchanged, which is what `swap=False` reproduces.
  """
  x = x.copy()
  n, h, w = x.shape[:3]
  idx = np.arange(n)
  for _ in range(iterations):
    for r in range(h - max_delta, max_delta, -1):
      for c in range(w - max_delta, max_delta, -1):
        move = rng.random(n) < 0.5 if coin else np.ones(n, bool)
        dx, dy = rng.integers(-max_delta, max_delta, size=(2, n))
        sel, rp, cp = idx[move], r + dy[move], c + dx[move]
        here, there = x[sel, r, c].copy(), x[sel, rp, cp].copy()
        x[sel, r, c] = there
        if swap:
          x[sel, rp, cp] = here
  return x
