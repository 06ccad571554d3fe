"""The 15 MNIST-C corruptions (Mu & Gilmer 2019) for 28x28 grayscale images.

Parameters are those of google-research/mnist-c `corruptions.py` (facts, re-implemented on
batches with numpy/scipy). MNIST-C uses ONE severity per corruption, the default argument of
its function, which `PROTOCOL_SEVERITY` records; the 5-level tables of that file are kept so
that severity can be swept (tests check that higher levels move images further). Stripe,
dotted line, zigzag and Canny edges have no severity (every level is the same transform).

Every function maps float64 [N, H, W, 1] images in [0, 1] to the same shape and range, and
draws all randomness from `rng`. Faithfulness notes: MNIST-C calls scikit-image's
`gaussian(..., multichannel=True)` on 2-D arrays, so its glass blur smooths along the
vertical axis only - reproduced here; motion blur follows ImageMagick's kernel (see
`ops.motion_blur`) and is quantised to 8 bits as the PNG round trip does.
"""

from __future__ import annotations

import numpy as np

from latmix_tf.evaluation.corruptions import ops

# MNIST-C's own choice of level for each corruption (the default `severity=` argument).
PROTOCOL_SEVERITY = {"shot_noise": 5, "impulse_noise": 4, "glass_blur": 1, "motion_blur": 1,
                     "shear": 2, "scale": 3, "rotate": 2, "brightness": 5, "translate": 3,
                     "stripe": 1, "fog": 5, "spatter": 4, "dotted_line": 1, "zigzag": 1,
                     "canny_edges": 1}


def shot_noise(x, severity, rng):
  """Poisson photon noise: Poisson(x * c) / c."""
  c = [60, 25, 12, 5, 3][severity - 1]
  return np.clip(rng.poisson(x * c) / float(c), 0, 1)


def impulse_noise(x, severity, rng):
  """Salt and pepper: a fraction c of pixels set to 0 or 1 with equal probability."""
  c = [.03, .06, .09, .17, .27][severity - 1]
  flipped = rng.random(x.shape) < c
  salted = rng.random(x.shape) < 0.5
  out = x.copy()
  out[flipped & salted] = 1.0
  out[flipped & ~salted] = 0.0
  return out


def glass_blur(x, severity, rng):
  """Blur, locally shuffle pixels, blur again (vertical-only blur, as MNIST-C computes it)."""
  sigma, delta, iterations = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2),
                              (1.5, 4, 2)][severity - 1]
  y = ops.to_uint8_levels(ops.sk_gaussian(x, sigma, axes=(1,)))
  y = ops.local_shuffle(y, delta, iterations, rng, coin=True, swap=True)
  return np.clip(ops.sk_gaussian(y, sigma, axes=(1,)), 0, 1)


def motion_blur(x, severity, rng):
  """ImageMagick motion blur of radius r, sigma s, angle ~ U(-45, 45) degrees."""
  radius, sigma = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)][severity - 1]
  angles = rng.uniform(-45, 45, len(x))
  return ops.to_uint8_levels(ops.motion_blur(x, radius, sigma, angles))


def _affine(x, matrix):
  return np.clip(ops.warp_about_center(x, np.asarray(matrix, np.float64)), 0, 1)


def _signs(n, rng):
  return rng.choice(np.array([-1.0, 1.0]), n)


def _per_sign(x, rng, make_matrix):
  """Applies make_matrix(+c) or make_matrix(-c) per image (MNIST-C flips the sign at random)."""
  signs = _signs(len(x), rng)
  out = np.empty_like(x)
  for s in (-1.0, 1.0):
    sel = signs == s
    if sel.any():
      out[sel] = _affine(x[sel], make_matrix(s))
  return out


def shear(x, severity, rng):
  """Shear about the centre: inverse map [[1, -sin c], [0, cos c]] (x, y), sign at random."""
  c = [0.2, 0.4, 0.6, 0.8, 1.0][severity - 1]
  return _per_sign(x, rng, lambda s: [[1.0, -np.sin(s * c)], [0.0, np.cos(s * c)]])


def rotate(x, severity, rng):
  """Rotation by c radians about the centre, direction at random."""
  c = [0.2, 0.4, 0.6, 0.8, 1.0][severity - 1]
  return _per_sign(x, rng, lambda s: [[np.cos(s * c), -np.sin(s * c)],
                                      [np.sin(s * c), np.cos(s * c)]])


def scale(x, severity, rng):
  """Shrink about the centre by a factor 0.9 ... 0.5 (inverse map scales by 1 / factor)."""
  del rng
  c = 1.0 / [0.9, 0.8, 0.7, 0.6, 0.5][severity - 1]
  return _affine(x, [[c, 0.0], [0.0, c]])


def brightness(x, severity, rng):
  """HSV value + c; on grayscale images exactly clip(x + c, 0, 1)."""
  del rng
  c = [.1, .2, .3, .4, .5][severity - 1]
  return np.clip(x + c, 0, 1)


def translate(x, severity, rng):
  """Shift by c pixels along each axis, each direction at random, zero fill."""
  c = [1, 2, 3, 4, 5][severity - 1]
  signs = rng.choice(np.array([-1, 1]), (len(x), 2))
  out = np.zeros_like(x)
  h, w = x.shape[1:3]
  for i, (sx, sy) in enumerate(signs):
    dx, dy = c * sx, c * sy  # output(r, col) = input(r + dy, col + dx)
    out[i, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
        x[i, max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
  return out


def stripe(x, severity, rng):
  """Inverts the left and right quarters (columns [0, W/4) and [3W/4, W))."""
  del severity, rng
  out = x.copy()
  q = x.shape[2] // 4
  out[:, :, :q] = 1 - x[:, :, :q]
  out[:, :, x.shape[2] - q:] = 1 - x[:, :, x.shape[2] - q:]
  return out


def fog(x, severity, rng):
  """Adds c0 x a plasma fractal (256x256 map, top-left crop), rescaled by max / (max + c0)."""
  c0, decay = [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)][severity - 1]
  h, w = x.shape[1:3]
  plasma = ops.plasma_fractal(len(x), rng, 256, decay)[:, :h, :w, None]
  max_val = x.max(axis=(1, 2, 3), keepdims=True)
  return np.clip((x + c0 * plasma) * max_val / (max_val + c0), 0, 1)


def spatter(x, severity, rng):
  """Mud blots: thresholded blurred Gaussian noise, softened, pixel value 63/255 (MNIST-C
  draws every level with this "mud" branch)."""
  loc, scale_, sigma, threshold, soft, _ = [
      (0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
      (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)][severity - 1]
  liquid = ops.sk_gaussian(rng.normal(loc, scale_, x.shape), sigma)
  liquid[liquid < threshold] = 0
  mask = ops.sk_gaussian((liquid > threshold).astype(np.float64), soft)
  mask[mask < 0.8] = 0
  return np.clip(x * (1 - mask) + 63 / 255.0 * mask, 0, 1)


def dotted_line(x, severity, rng):
  """A line across the image between random rows, drawn in alternate 2-column dashes."""
  del severity
  h, w = x.shape[1:3]
  out = np.empty_like(x)
  for i in range(len(x)):
    r0, r1 = rng.integers(0, h - 1, size=2)
    line = ops.line_from_points(0, r0, w - 1, r1, h, w)
    for start in range(0, w + 2, 4):  # blocks [0,2), [4,6), ... are off
      line[:, start:start + 2] = 0
    out[i] = np.clip(x[i] + line[..., None], 0, 1)
  return out


def _zigzag_points(r0, r1, c0=2, c1=25, a=2.0, b=2.0):
  """MNIST-C's zigzag polyline: teeth of length a and height b along (c0, r0) -> (c1, r1)."""
  theta = np.arctan((r1 - r0) / (c1 - c0))
  d = (c1 - c0) / np.cos(theta)
  points = [(0.0, 0.0)]
  r_i = 0.0
  for i in range(int((d - a) // (2 * a)) + 1):
    r_i = (-1) ** i * b
    points.append(((2 * i + 1) * a, r_i))
  max_c = (2 * a) * (d // (2 * a))
  if d != max_c:
    points.append((d, r_i / (2 * (d - max_c))))
  rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
  cs, rs = rot @ np.array(points).T
  return cs + c0, rs + r0


def zigzag(x, severity, rng):
  """A zigzag line added across the image at a random height and tilt."""
  del severity
  h, w = x.shape[1:3]
  out = np.empty_like(x)
  for i in range(len(x)):
    r0 = int(rng.integers(0, h - 1))
    r1 = r0 + int(rng.integers(-5, 5))
    cs, rs = _zigzag_points(r0, r1)
    img = x[i, ..., 0].copy()
    for j in range(1, len(cs)):
      img = np.clip(img + ops.line_from_points(cs[j - 1], rs[j - 1], cs[j], rs[j], h, w), 0, 1)
    out[i, ..., 0] = img
  return out


def canny_edges(x, severity, rng):
  """Binary Canny edge map (sigma 1, thresholds 0.1 / 0.2), scikit-image's defaults."""
  del severity, rng
  return ops.canny(x[..., 0]).astype(np.float64)[..., None]


CORRUPTIONS = {f.__name__: f for f in (
    shot_noise, impulse_noise, glass_blur, motion_blur, shear, scale, rotate, brightness,
    translate, stripe, fog, spatter, dotted_line, zigzag, canny_edges)}
