"""Figures of a generator and its latent bank: what latent mixup will actually train on.

A mean PSNR hides a lot: a few classes reconstructed badly, blurry but "close" images,
interpolations that leave the data manifold. These PNGs make that visible at a glance:

* `samples.png`: G(z) for prior draws, a grid of their pixels (`save_image_grid`, which
  also writes the generator stage's per-epoch sample grids);
* `reconstructions.png`: training images (odd rows) above G(z_bank) (even rows), with the
  per-image PSNR;
* `psnr_hist.png`: distribution of the inversion PSNR over the bank, with its mean;
* `interpolations.png`: G((1 - t) z_i + t z_j), t = 0..1, between pairs of training images
  of different classes, framed by the two originals - the inputs of latent mixup.

The other figures are drawn on `matplotlib.figure.Figure` objects (Agg canvas, no pyplot
state, no windows); every PNG is written by `latmix_tf.plotting.save_figure`.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from latmix_tf.data.pipeline import to_float
from latmix_tf.plotting import save_figure, show_image
from latmix_tf.models.dcgan import sample_prior


def image_grid(images: np.ndarray, ncol: int = 8, pad: int = 1) -> np.ndarray:
  """Tiles [N,H,W,C] images in [0,1] into one uint8 [rows*(H+pad), ncol*(W+pad), C] array."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  ncol = min(ncol, n)
  rows = -(-n // ncol)
  grid = np.ones((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), np.float32)
  for i, img in enumerate(images):
    r, k = divmod(i, ncol)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h,
         pad + k * (w + pad):pad + k * (w + pad) + w] = img
  return np.round(grid * 255).astype(np.uint8)


def save_image_grid(images, path: str, ncol: int = 8, scale: int = 2) -> str:
  """Writes images in [0,1] as one PNG grid of their pixels (nearest-neighbour upscaled by
  `scale`, grey images as one channel): the generator's output as it is, not resampled."""
  grid = image_grid(images, ncol)
  if scale > 1:
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
  return save_figure(grid, path)


def sample_grid(gen, path: str, n: int = 64, seed: int = 0, ncol: int = 8) -> str:
  """Writes a grid of G(z), z drawn from the generator's prior."""
  z = sample_prior(gen.prior, n, gen.latent_dim, seed)
  return save_image_grid(gen.decode_numpy(z.numpy()), path, ncol)


def reconstruction_grid(x: np.ndarray, x_rec: np.ndarray, path: str,
                        psnr: Optional[np.ndarray] = None, ncol: int = 8) -> str:
  """Originals (odd rows) above their reconstructions G(z) (even rows), PSNR in titles."""
  x, x_rec = to_float(x), np.asarray(x_rec, np.float32)
  n = len(x)
  pairs = -(-n // ncol)
  fig = Figure(figsize=(ncol * 1.0, pairs * 2.1))
  for i in range(pairs * ncol):
    r, c = divmod(i, ncol)
    top = fig.add_subplot(2 * pairs, ncol, 2 * r * ncol + c + 1)
    bottom = fig.add_subplot(2 * pairs, ncol, (2 * r + 1) * ncol + c + 1)
    if i >= n:
      top.axis("off")
      bottom.axis("off")
      continue
    show_image(top, x[i])
    show_image(bottom, x_rec[i])
    if psnr is not None:
      bottom.set_title(f"{psnr[i]:.1f} dB", fontsize=7)
    if c == 0:
      top.set_ylabel("x", fontsize=8)
      bottom.set_ylabel("G(z)", fontsize=8)
  fig.suptitle("training images and their reconstructions from the latent bank")
  return save_figure(fig, path, dpi=100)


def psnr_histogram(psnr: np.ndarray, path: str, target: Optional[float] = 22.0) -> str:
  """Histogram of the per-image inversion PSNR with the mean (and the target) marked."""
  psnr = np.asarray(psnr, np.float64)
  fig = Figure(figsize=(6, 3.5))
  ax = fig.add_subplot(1, 1, 1)
  ax.hist(psnr, bins=60, color="tab:blue", alpha=0.8)
  ax.axvline(psnr.mean(), color="k", label=f"mean {psnr.mean():.2f} dB")
  if target is not None:
    ax.axvline(target, color="tab:red", ls="--", label=f"target {target:.0f} dB")
  ax.set_xlabel("PSNR of G(z) vs image (dB, higher is better)")
  ax.set_ylabel("images")
  ax.set_title(f"inversion quality over {len(psnr)} images "
               f"(median {np.median(psnr):.2f} dB)")
  ax.legend()
  return save_figure(fig, path, dpi=100)


def pick_pairs(labels: np.ndarray, n_pairs: int, seed: int = 0) -> np.ndarray:
  """[n_pairs, 2] random index pairs with different labels (as latent mixup draws them)."""
  rng = np.random.default_rng(seed)
  labels = np.asarray(labels)
  pairs = []
  for _ in range(100 * n_pairs):
    i, j = rng.integers(0, len(labels), 2)
    if labels[i] != labels[j] or len(np.unique(labels)) == 1:
      pairs.append((i, j))
    if len(pairs) == n_pairs:
      break
  return np.asarray(pairs, np.int64).reshape(-1, 2)


def interpolation_strips(gen, z: np.ndarray, pairs: np.ndarray, path: str,
                         x: Optional[np.ndarray] = None, steps: int = 8,
                         labels: Optional[np.ndarray] = None,
                         class_names: Optional[Sequence[str]] = None) -> str:
  """One row per pair (i, j): [x_i] G((1-t) z_i + t z_j) for t in linspace(0,1,steps) [x_j].

  Args:
    gen: the generator; z: latent bank codes [N, d]; pairs: [P, 2] indices into z.
    path: PNG path.
    x: the training images (framing originals); omitted when None.
    steps: interpolation steps including both ends.
    labels / class_names: row titles.
  """
  t = np.linspace(0.0, 1.0, steps, dtype=np.float32)
  zi, zj = z[pairs[:, 0]], z[pairs[:, 1]]
  mixed = (1.0 - t)[None, :, None] * zi[:, None, :] + t[None, :, None] * zj[:, None, :]
  images = gen.decode_numpy(mixed.reshape(-1, z.shape[1])).reshape(
      len(pairs), steps, *gen_image_shape(gen, x))
  ncol = steps + (2 if x is not None else 0)
  fig = Figure(figsize=(ncol * 0.9, len(pairs) * 1.0))
  for r, (i, j) in enumerate(pairs):
    row = list(images[r])
    if x is not None:
      row = [to_float(x[i:i + 1])[0]] + row + [to_float(x[j:j + 1])[0]]
    for c, img in enumerate(row):
      ax = fig.add_subplot(len(pairs), ncol, r * ncol + c + 1)
      show_image(ax, img)
      if r == 0 and x is not None and c in (0, ncol - 1):
        ax.set_title("x_i" if c == 0 else "x_j", fontsize=8)
      elif r == 0:
        ax.set_title(f"t={t[c - (1 if x is not None else 0)]:.2f}", fontsize=7)
    if labels is not None:
      names = class_names or [str(k) for k in range(int(np.max(labels)) + 1)]
      fig.axes[r * ncol].set_ylabel(f"{names[labels[i]]}\n-> {names[labels[j]]}", fontsize=6)
  fig.suptitle("latent interpolations G((1-t) z_i + t z_j) between training images")
  return save_figure(fig, path, dpi=100)


def gen_image_shape(gen, x: Optional[np.ndarray]) -> tuple:
  """(H, W, C) of the generator's images (from the handle, or from the data)."""
  shape = getattr(gen, "image_shape", None)
  if shape is None and x is not None:
    shape = x.shape[1:]
  if shape is None:
    shape = tuple(gen.decode(tf.zeros([1, gen.latent_dim])).shape[1:])
  return tuple(shape)


def write_inversion_report(gen, bank, x_train: np.ndarray, out_dir: str, seed: int = 0,
                           n_images: int = 32, n_pairs: int = 8, steps: int = 8,
                           class_names: Optional[Sequence[str]] = None) -> Dict[str, str]:
  """All four figures for a generator and its latent bank; returns {name: path}.

  Args:
    gen: generator; bank: `LatentBank` of `x_train` (same order); out_dir: folder.
    seed: picks the shown images and pairs.
    n_images / n_pairs / steps: sizes of the grids.
    class_names: labels for the interpolation rows.
  """
  rng = np.random.default_rng(seed)
  idx = np.sort(rng.choice(len(bank.z), min(n_images, len(bank.z)), replace=False))
  rec = gen.decode_numpy(bank.z[idx])
  pairs = pick_pairs(bank.labels, n_pairs, seed)
  return {
      "samples": sample_grid(gen, os.path.join(out_dir, "samples.png"), seed=seed),
      "reconstructions": reconstruction_grid(x_train[idx], rec,
                                             os.path.join(out_dir, "reconstructions.png"),
                                             psnr=bank.psnr[idx]),
      "psnr_hist": psnr_histogram(bank.psnr, os.path.join(out_dir, "psnr_hist.png")),
      "interpolations": interpolation_strips(
          gen, bank.z, pairs, os.path.join(out_dir, "interpolations.png"), x=x_train,
          steps=steps, labels=bank.labels, class_names=class_names),
  }
