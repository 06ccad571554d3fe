"""Figures of a generator and its latent bank: what latent mixup will actually train on.

A mean PSNR hides a lot: a few classes reconstructed badly, blurry but "close" images,
interpolations that leave the data manifold. These PNGs make that visible at a glance:

* `samples.png`: G(z) for prior draws;
* `reconstructions.png`: training images (odd rows) above G(z_bank) (even rows), with the
  per-image PSNR;
* `psnr_hist.png`: distribution of the inversion PSNR over the bank, with its mean;
* `interpolations.png`: G((1 - t) z_i + t z_j), t = 0..1, between pairs of training images
  of different classes, framed by the two originals - the inputs of latent mixup.

Figures are drawn on `matplotlib.figure.Figure` objects (Agg canvas, no pyplot state, no
windows), written by `latmix_tf.plotting.save_figure`.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from latmix_tf.data.pipeline import to_float
from latmix_tf.plotting import save_figure
from latmix_tf.models.dcgan import sample_prior


def _decode(gen, z: np.ndarray, batch_size: int = 256) -> np.ndarray:
  out = [np.asarray(gen.decode(tf.constant(z[i:i + batch_size], tf.float32)))
         for i in range(0, len(z), batch_size)]
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def _show(ax, img: np.ndarray) -> None:
  img = np.clip(img, 0.0, 1.0)
  if img.shape[-1] == 1:
    ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
  else:
    ax.imshow(img)
  ax.set_xticks([])
  ax.set_yticks([])


def sample_grid(gen, path: str, n: int = 64, seed: int = 0, ncol: int = 8) -> str:
  """Writes a grid of G(z), z drawn from the generator's prior."""
  z = sample_prior(gen.prior, n, gen.latent_dim, seed)
  images = _decode(gen, z.numpy())
  rows = -(-n // ncol)
  fig = Figure(figsize=(ncol * 0.9, rows * 0.9))
  for i in range(rows * ncol):
    ax = fig.add_subplot(rows, ncol, i + 1)
    if i < n:
      _show(ax, images[i])
    else:
      ax.axis("off")
  fig.suptitle(f"samples G(z), z ~ {gen.prior} prior")
  return save_figure(fig, path, dpi=100)


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
    _show(top, x[i])
    _show(bottom, x_rec[i])
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
  images = _decode(gen, mixed.reshape(-1, z.shape[1])).reshape(len(pairs), steps,
                                                                *gen_image_shape(gen, x))
  ncol = steps + (2 if x is not None else 0)
  fig = Figure(figsize=(ncol * 0.9, len(pairs) * 1.0))
  for r, (i, j) in enumerate(pairs):
    row = list(images[r])
    if x is not None:
      row = [to_float(x[i:i + 1])[0]] + row + [to_float(x[j:j + 1])[0]]
    for c, img in enumerate(row):
      ax = fig.add_subplot(len(pairs), ncol, r * ncol + c + 1)
      _show(ax, img)
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
  rec = _decode(gen, bank.z[idx])
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
