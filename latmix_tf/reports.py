"""Per-run reports: training curves, prediction grid, confusion matrix, `report.md`.

Figures are `matplotlib.figure.Figure`s on the Agg canvas (no pyplot state), written by the
one figure writer `latmix_tf.plotting.save_figure`; nothing is shown.

Why `report.md` is laid out as it is: a reader opens it to learn how good the classifier is,
not to scan ~110 metric keys. It opens with one summary table in words (clean accuracy,
AutoAttack, mCA, blur area, rho_adv, ECE, the latent bank's PSNR, the run's cost, the sanity
checks), then one section per subject (robustness, corruptions, calibration, the generator
and its mixes, training) with that subject's figures, and ends with every key of
`metrics.json`, so nothing is hidden. `report.html` is rendered from it.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from latmix_tf import html_report
from latmix_tf.data.pipeline import to_float
from latmix_tf.plotting import save_figure, show_image


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


def _pct(v: float) -> str:
  return f"{100 * v:.2f}%"


def _budgets(metrics: Dict) -> List[str]:
  """AutoAttack budgets ("Linf@0.1", ...) in the metrics, in ε order per norm."""
  found = {k.split("/")[1] for k in metrics
           if k.startswith("autoattack/") and k.endswith("/robust_accuracy")}
  return sorted(found, key=lambda b: (b.split("@")[0], float(b.split("@")[1])))


def summary_rows(metrics: Dict, notes: Sequence[str] = ()) -> List[tuple]:
  """(what, value) rows of the report's opening table; absent metrics say why."""
  m, rows = metrics, []
  def row(label, key, fmt, missing):
    rows.append((label, fmt(m[key]) if isinstance(m.get(key), (int, float)) else missing))
  n = m.get("test/samples")
  row(f"Clean accuracy (test set{f', {n} images' if n else ''})", "test/accuracy", _pct,
      "not evaluated")
  budgets = _budgets(m)
  aa_n = m.get("autoattack/samples")
  def budget(b):
    norm, eps = b.split("@")
    return f"{'L∞' if norm == 'Linf' else norm} ε = {float(eps):.4g}"
  rows.append((f"AutoAttack robust accuracy{f' ({aa_n} images)' if aa_n else ''}",
               ", ".join(f"{_pct(m[f'autoattack/{b}/robust_accuracy'])} at {budget(b)}"
                         for b in budgets) or "not run"))
  row("Mean corruption accuracy (mCA)", "corruption/mca", _pct, "not run")
  row("Blur area (mean accuracy over the Gaussian-blur sweep)", "blur/area", _pct, "not run")
  row("ρ_adv (DeepFool, mean ‖r‖₂ / ‖x‖₂)", "deepfool/rho_adv", lambda v: f"{v:.4f}", "not run")
  ece = m.get("calibration/ece")
  ts = m.get("calibration/ece_ts")
  rows.append(("Expected calibration error (ECE, 15 bins)",
               "not run" if not isinstance(ece, float) else f"{ece:.4f}" + (
                   f" ({ts:.4f} after temperature scaling)" if isinstance(ts, float) else "")))
  row("Latent bank PSNR (mean over the inverted training images)", "bank/mean_psnr",
      lambda v: f"{v:.2f} dB", "no latent bank in this method")
  stage_s = {k.split("/")[1]: v for k, v in m.items()
             if k.startswith("stage/") and k.endswith("/seconds") and isinstance(v, (int, float))}
  rows.append(("Run cost (stage work, wall)", (
      f"{sum(stage_s.values()) / 60:.1f} min: " +
      ", ".join(f"{k} {v:.0f} s" for k, v in stage_s.items())) if stage_s else "not recorded"))
  failed = [n.split("`")[1] for n in notes if "**FAILED**" in n and "`" in n]
  ran = [n for n in notes if n.startswith("sanity check ") and " skipped" not in n]
  rows.append(("Sanity checks (Carlini et al. 2019)",
               (f"**{len(failed)} FAILED**: " + ", ".join(failed)) if failed else
               f"all {len(ran)} passed" if ran else "not run"))
  return rows


# Report sections after the summary: (heading, figure-name prefixes placed in it).
SECTIONS = (
    ("Robustness", ("attack_accuracy", "apgd_", "deepfool_")),
    ("Corruptions and blur", ("corruption_", "blur_")),
    ("Calibration", ("reliability_",)),
    ("The generator and its mixes", ("latent_mixed", "samples", "reconstructions", "psnr_hist",
                                     "interpolations", "epoch_")),
    ("Training", ("training_curves", "predictions", "confusion_matrix")),
)


def _value(v) -> str:
  return f"{v:.4f}" if isinstance(v, float) else str(v)


def write_markdown(path: str, title: str, description: str, metrics: Dict[str, float],
                   figures: Sequence[str], notes: Optional[Sequence[str]] = None) -> str:
  """Writes report.md (and report.html beside it): summary, sections, every metric.

  Args:
    path: the report.md to write.
    title, description: its heading and opening paragraph.
    metrics: flat metrics (every key appears in the closing table).
    figures: PNG paths; each goes to the section whose figure prefixes match its name.
    notes: lines about the run; "sanity check ..." lines go to the robustness section.
  Returns:
    `path`.
  """
  base, notes = os.path.dirname(path), list(notes or ())
  lines = [f"# {title}", "", description.strip(), "", "## Summary", "", "| what | value |",
           "|---|---|"] + [f"| {a} | {b} |" for a, b in summary_rows(metrics, notes)]
  placed, checks = set(), [n for n in notes if n.startswith("sanity check ")]
  for heading, prefixes in SECTIONS:
    figs = [f for f in figures if os.path.basename(f).startswith(prefixes) and f not in placed]
    if not figs and not (heading == "Robustness" and checks):
      continue
    lines += ["", f"## {heading}", ""]
    if heading == "Robustness":
      lines += [f"- {n}" for n in checks] + [""]
    for fig in figs:
      placed.add(fig)
      lines += [f"![{os.path.basename(fig)}]({os.path.relpath(fig, base)})", ""]
  rest = [f for f in figures if f not in placed]
  if rest:
    lines += ["", "## Other figures", ""]
    lines += [f"![{os.path.basename(f)}]({os.path.relpath(f, base)})\n" for f in rest]
  other = [n for n in notes if n not in checks]
  if other:
    lines += ["", "## Run", ""] + [f"- {n}" for n in other]
  lines += ["", "## All metrics", "", "| metric | value |", "|---|---|"]
  lines += [f"| `{k}` | {_value(metrics[k])} |" for k in sorted(metrics)]
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
      show_image(ax, img)
      ax.set_title(title, fontsize=6)
      ax.axis("off")
  fig.suptitle("Latent-mixed training images: sources, λ and soft label", fontsize=8)
  return save_figure(fig, path)
