"""Per-run reports: training curves, prediction grid, confusion matrix, `report.md`.

Figures are `matplotlib.figure.Figure`s on the Agg canvas (no pyplot state), written by the
one figure writer `latmix_tf.plotting.save_figure`; nothing is shown. The report lists every
metric of `metrics.json` and links the PNGs that the evaluation wrote.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from latmix_tf import html_report
from latmix_tf.data.pipeline import to_float
from latmix_tf.plotting import save_figure


def plot_training_curves(history: List[Dict[str, float]], path: str) -> str:
  """Loss and accuracy per epoch, train vs validation."""
  epochs = [h["epoch"] for h in history]
  fig = Figure(figsize=(10, 3.6))
  axes = fig.subplots(1, 2)
  for ax, metric in zip(axes, ("loss", "accuracy")):
    for split, style in (("train", "-o"), ("val", "--s")):
      key = f"{split}/{metric}"
      if history and key in history[0]:
        ax.plot(epochs, [h[key] for h in history], style, label=split, markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric + (" (soft-label CE, nats)" if metric == "loss" else ""))
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle("Training curves")
  return save_figure(fig, path)


def plot_prediction_grid(images: np.ndarray, labels: np.ndarray, preds: np.ndarray,
                         class_names: Sequence[str], path: str, n: int = 32) -> str:
  """Test images with predicted (and, when wrong, true) class; wrong ones in red."""
  n = min(n, len(images))
  cols = 8
  rows = (n + cols - 1) // cols
  fig = Figure(figsize=(cols * 1.4, rows * 1.6))
  axes = fig.subplots(rows, cols)
  for i, ax in enumerate(np.atleast_1d(axes).ravel()):
    ax.axis("off")
    if i >= n:
      continue
    img = images[i]
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
    ok = preds[i] == labels[i]
    title = class_names[preds[i]] if ok else f"{class_names[preds[i]]}\n(true {class_names[labels[i]]})"
    ax.set_title(title, fontsize=6, color="black" if ok else "red")
  fig.suptitle("Test predictions of the exported SavedModel (red = wrong)")
  return save_figure(fig, path)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (labels, preds), 1)
  return cm


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str) -> str:
  fig = Figure(figsize=(6, 5.2))
  ax = fig.subplots()
  im = ax.imshow(cm, cmap="Blues")
  ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=7)
  ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
  ax.set_xlabel("predicted class")
  ax.set_ylabel("true class")
  for i in range(cm.shape[0]):
    for j in range(cm.shape[1]):
      ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
              color="white" if cm[i, j] > cm.max() / 2 else "black")
  fig.colorbar(im, ax=ax, label="test images")
  ax.set_title("Confusion matrix (test set)")
  return save_figure(fig, path)


def write_markdown(path: str, title: str, description: str, metrics: Dict[str, float],
                   figures: Sequence[str], notes: Optional[Sequence[str]] = None) -> str:
  """Writes a report.md with a metrics table and the figures (paths relative to it)."""
  base = os.path.dirname(path)
  lines = [f"# {title}", "", description.strip(), "", "## Metrics", "", "| metric | value |",
           "|---|---|"]
  for k in sorted(metrics):
    v = metrics[k]
    lines.append(f"| `{k}` | {v:.4f} |" if isinstance(v, float) else f"| `{k}` | {v} |")
  if notes:
    lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
  lines += ["", "## Figures", ""]
  for fig in figures:
    rel = os.path.relpath(fig, base)
    lines += [f"![{os.path.basename(fig)}]({rel})", ""]
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  html_report.write_html(path)  # report.html beside it: figures inlined, opens offline
  return path


def plot_mixed_grid(examples: Dict[str, np.ndarray], x_train: np.ndarray,
                    class_names: Sequence[str], path: str) -> str:
  """Latent-mixed training images with their two sources, λ and soft label.

  One row per example: source i, source j, G(λ·z_i + (1−λ)·z_j); the title gives λ and the
  two largest entries of the soft label.
  """
  n = len(examples["lam"])
  fig = Figure(figsize=(5.2, 1.75 * n))
  axes = fig.subplots(n, 3)
  axes = np.atleast_2d(axes)
  for r in range(n):
    i, j, lam = int(examples["i"][r]), int(examples["j"][r]), float(examples["lam"][r])
    label = examples["labels"][r]
    top = np.argsort(label)[::-1][:2]
    soft = ", ".join(f"{class_names[c]} {label[c]:.2f}" for c in top if label[c] > 1e-3)
    panels = [(to_float(x_train[i]), f"x_i (weight λ={lam:.2f})"),
              (to_float(x_train[j]), f"x_j (weight {1 - lam:.2f})"),
              (examples["images"][r], soft)]
    for c, (img, title) in enumerate(panels):
      ax = axes[r, c]
      ax.imshow(img[..., 0] if img.shape[-1] == 1 else np.clip(img, 0, 1), cmap="gray",
                vmin=0, vmax=1)
      ax.set_title(title, fontsize=6)
      ax.axis("off")
  fig.suptitle("Latent-mixed training images: sources, λ and soft label", fontsize=8)
  return save_figure(fig, path)
