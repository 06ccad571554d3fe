"""PNG figures of an evaluation: blur curve, DeepFool histogram and strip, attack curves,
reliability diagram, APGD loss and accuracy curves, accuracy per corruption.

Kept apart from the metrics so that computing numbers never depends on matplotlib state.
Figures are built with the object API (`matplotlib.figure.Figure` + the Agg canvas), never
pyplot: nothing is shown, no global figure is left open, and the backend of the caller's
session is not touched.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from latmix_tf.plotting import save_figure, show_image


def blur_curve(sigmas: Sequence[float], accuracy: Sequence[float], path: str,
               title: str = "") -> str:
  """Accuracy against the Gaussian blur sigma, with the area (mean accuracy) in the legend."""
  fig = Figure(figsize=(4.5, 3.2))
  ax = fig.add_subplot(1, 1, 1)
  ax.plot(sigmas, accuracy, "o-", label=f"area = {np.mean(accuracy):.3f}")
  ax.set(xlabel="Gaussian blur sigma (pixels)", ylabel="test accuracy", ylim=(0, 1.02),
         title=title or "Blur robustness")
  ax.grid(alpha=0.3)
  ax.legend()
  return save_figure(fig, path, dpi=100)


def deepfool_histogram(relative: np.ndarray, flipped: np.ndarray, path: str) -> str:
  """Histogram of ||r||_2 / ||x||_2; never-flipped samples drawn separately."""
  fig = Figure(figsize=(4.5, 3.2))
  ax = fig.add_subplot(1, 1, 1)
  bins = np.linspace(0, max(float(np.max(relative)), 1e-6), 40)
  ax.hist(relative[flipped], bins=bins, alpha=0.8, label=f"flipped ({int(flipped.sum())})")
  if (~flipped).any():
    ax.hist(relative[~flipped], bins=bins, alpha=0.8,
            label=f"not flipped ({int((~flipped).sum())})")
  ax.axvline(float(np.mean(relative)), color="k", ls="--",
             label=f"rho_adv = {np.mean(relative):.4f}")
  ax.set(xlabel="||r||_2 / ||x||_2", ylabel="images", title="DeepFool perturbation size")
  ax.legend(fontsize=8)
  return save_figure(fig, path, dpi=100)


def perturbation_strip(x: np.ndarray, x_adv: np.ndarray, path: str,
                       labels: Optional[Sequence[str]] = None,
                       adv_labels: Optional[Sequence[str]] = None) -> str:
  """Three rows: originals, perturbations (amplified to fill [0,1] around 0.5), adversarials."""
  n = len(x)
  if n == 0:
    raise ValueError("perturbation_strip needs at least one image.")
  fig = Figure(figsize=(1.3 * n, 4.2))
  for j in range(n):
    r = x_adv[j] - x[j]
    scale = max(float(np.abs(r).max()), 1e-12)
    rows = (x[j], 0.5 + 0.5 * r / scale, x_adv[j])
    for i, image in enumerate(rows):
      ax = fig.add_subplot(3, n, i * n + j + 1)
      show_image(ax, image)
      if i == 0 and labels is not None:
        ax.set_title(str(labels[j]), fontsize=7)
      if i == 1:
        ax.set_title(f"x{0.5 / scale:.0f}", fontsize=7)
      if i == 2 and adv_labels is not None:
        ax.set_title(str(adv_labels[j]), fontsize=7)
    if j == 0:
      for i, name in enumerate(("original", "perturbation", "adversarial")):
        fig.axes[i].set_ylabel(name, fontsize=8)
  return save_figure(fig, path, dpi=100)


def attack_curves(epsilons: Sequence[float], fgsm: Sequence[float], pgd: Sequence[float],
                  path: str, pgd_steps: Optional[int] = None) -> str:
  """FGSM and PGD accuracy against the L-inf radius eps."""
  fig = Figure(figsize=(4.5, 3.2))
  ax = fig.add_subplot(1, 1, 1)
  ax.plot(epsilons, fgsm, "o-", label="FGSM")
  ax.plot(epsilons, pgd, "s-", label=f"PGD-{pgd_steps}" if pgd_steps else "PGD")
  ax.set(xlabel="eps (L-inf, images in [0,1])", ylabel="accuracy", ylim=(0, 1.02),
         title="Adversarial accuracy")
  ax.grid(alpha=0.3)
  ax.legend()
  return save_figure(fig, path, dpi=100)


def reliability_diagram(bins_before: dict, bins_after: Optional[dict], path: str,
                        ece_before: float, ece_after: Optional[float] = None) -> str:
  """Accuracy per confidence bin (bars) against the diagonal, before / after temperature
  scaling (`calibration.reliability_bins` outputs); empty bins are not drawn."""
  panels = [("uncalibrated", bins_before, ece_before)]
  if bins_after is not None:
    panels.append(("temperature-scaled", bins_after, ece_after))
  fig = Figure(figsize=(4.0 * len(panels), 3.6))
  for i, (name, b, ece) in enumerate(panels):
    ax = fig.add_subplot(1, len(panels), i + 1)
    edges = np.asarray(b["edges"])
    width = np.diff(edges)
    filled = np.asarray(b["count"]) > 0
    ax.bar(edges[:-1][filled], np.asarray(b["accuracy"])[filled], width=width[filled],
           align="edge", edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(xlabel="confidence (max probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title=f"{name}: ECE = {ece:.4f} ({len(width)} bins)")
    ax.legend(fontsize=7, loc="upper left")
  return save_figure(fig, path, dpi=100)


def loss_curves(curves: dict, path: str, ylabel: str = "mean APGD-CE loss") -> str:
  """One line per {label: loss per iteration} (the APGD loss-vs-iteration sanity plot)."""
  fig = Figure(figsize=(4.8, 3.4))
  ax = fig.add_subplot(1, 1, 1)
  for label, curve in curves.items():
    ax.plot(np.arange(len(curve)), curve, label=label)
  ax.set(xlabel="iteration", ylabel=ylabel, title="APGD loss vs iteration")
  ax.grid(alpha=0.3)
  if curves:
    ax.legend(fontsize=7)
  return save_figure(fig, path, dpi=100)


def accuracy_curve(epsilons: Sequence[float], accuracy: Sequence[float], path: str,
                   label: str, xlabel: str = "eps (L-inf, images in [0,1])") -> str:
  """Accuracy against the budget for one attack (APGD-CE)."""
  fig = Figure(figsize=(4.5, 3.2))
  ax = fig.add_subplot(1, 1, 1)
  ax.plot(epsilons, accuracy, "o-", label=label)
  ax.set(xlabel=xlabel, ylabel="accuracy", ylim=(0, 1.02), title=f"{label} accuracy")
  ax.grid(alpha=0.3)
  ax.legend()
  return save_figure(fig, path, dpi=100)


def corruption_bars(table: dict, clean_accuracy: float, path: str) -> str:
  """Accuracy per corruption (mean over severities; dots: each severity), clean as a line."""
  names = list(table)
  fig = Figure(figsize=(max(5.0, 0.45 * len(names) + 1.5), 3.6))
  ax = fig.add_subplot(1, 1, 1)
  means = [np.mean(list(table[n].values())) for n in names]
  ax.bar(range(len(names)), means, alpha=0.7)
  for i, n in enumerate(names):
    ax.plot([i] * len(table[n]), list(table[n].values()), "k.", ms=3)
  ax.axhline(clean_accuracy, color="r", ls="--", label=f"clean {clean_accuracy:.3f}")
  ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
  ax.set(ylabel="accuracy", ylim=(0, 1.02),
         title=f"Common corruptions: mCA = {np.mean(means):.3f}")
  ax.legend(fontsize=7)
  return save_figure(fig, path, dpi=100)
