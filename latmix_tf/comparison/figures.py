"""Figures of the multi-seed method comparison, sized and labelled for a paper.

Every figure shows the mean over seeds with its 95% Student-t confidence interval (bands
for curves, error bars for bars and points) so a reader sees at a glance which gaps are
larger than the seed-to-seed noise. Built with the object API (`Figure` + Agg canvas) like
`latmix_tf.evaluation.plots`: nothing is shown and no pyplot state is left behind.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure

from latmix_tf.plotting import save_figure

from latmix_tf.comparison.metrics import at_value, autoattack_key, headline_metrics
from latmix_tf.comparison.metrics import label as method_label
from latmix_tf.comparison.protocol import PRIMARY_MARK, SECONDARY_MARK, marks

# (x values, mean, CI half-width) of one method's curve; half-widths may be nan (n = 1).
Curve = Tuple[Sequence[float], Sequence[float], Sequence[float]]


def _colors(labels: Sequence[str]) -> Dict[str, tuple]:
  import matplotlib  # pylint: disable=import-outside-toplevel
  cmap = matplotlib.colormaps["tab10"]
  return {label: cmap(i % 10) for i, label in enumerate(labels)}


MARKERS = "osD^vP*Xh<>p"  # with the colours, so a method stays identifiable in grey print


def _zero_nan(values) -> np.ndarray:
  v = np.asarray(values, np.float64)
  return np.where(np.isfinite(v), v, 0.0)


def curves_with_bands(curves: Dict[str, Curve], path: str, xlabel: str, ylabel: str,
                      title: str, percent: bool = True, ax_titles: Sequence[str] = ("",),
                      panels: Sequence[Dict[str, Curve]] = ()) -> str:
  """One line per method (mean) with a shaded 95% CI band; several panels share a legend.

  Args:
    curves: {method label: (x, mean, half-width)} of the first panel.
    path: PNG path.
    xlabel / ylabel / title: axis labels (with units) and the figure title.
    percent: plot values as percentages (accuracies are stored as fractions).
    ax_titles: one title per panel.
    panels: further panels ({label: curve}) drawn right of the first.
  """
  all_panels = [curves, *panels]
  fig = Figure(figsize=(5.2 * len(all_panels), 3.8))
  colors = _colors(list(curves))
  scale = 100.0 if percent else 1.0
  for k, panel in enumerate(all_panels):
    ax = fig.add_subplot(1, len(all_panels), k + 1)
    for label, (x, mean, half) in panel.items():
      x, mean, half = (np.asarray(v, np.float64) for v in (x, mean, half))
      ax.plot(x, mean * scale, "o-", color=colors.get(label), label=label, markersize=3,
              linewidth=1.4)
      if np.isfinite(half).any():
        h = _zero_nan(half)
        ax.fill_between(x, (mean - h) * scale, (mean + h) * scale, color=colors.get(label),
                        alpha=0.15, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(ax_titles[k] if k < len(ax_titles) else "", fontsize=9)
    if percent:
      ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
  fig.axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
  fig.suptitle(title, fontsize=10)
  return save_figure(fig, path, dpi=150)


def bars_with_ci(labels: Sequence[str], means: Sequence[float], halves: Sequence[float],
                 bar_marks: Sequence[str], path: str, ylabel: str, title: str) -> str:
  """A bar per method with 95% CI error bars and its report marks (†, ‡, ≈) above it."""
  fig = Figure(figsize=(max(4.5, 0.75 * len(labels) + 1.5), 3.8))
  ax = fig.add_subplot(1, 1, 1)
  colors = _colors(labels)
  x = np.arange(len(labels))
  means_a, halves_a = np.asarray(means, np.float64), _zero_nan(halves)
  ax.bar(x, means_a, yerr=halves_a, capsize=4, color=[colors[l] for l in labels],
         edgecolor="black", linewidth=0.5)
  for i, mark in enumerate(bar_marks):
    if mark.strip():
      ax.text(x[i], means_a[i] + halves_a[i], mark.strip(), ha="center", va="bottom",
              fontsize=11)
  top = np.nanmax(means_a + halves_a) if len(labels) else 1.0
  ax.set_ylim(0, 1.15 * top if np.isfinite(top) and top > 0 else 1.0)
  ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3, axis="y")
  return save_figure(fig, path, dpi=150)


def _label_points(ax, points, min_gap=(0.14, 0.06)) -> None:
  """Names each point beside it unless that would overprint an earlier name.

  Methods with near-equal results (ERM and both Latent-Mixup variants, typically) sit on top
  of each other; their names would print as one smudge, so only the first of a cluster is
  named there and the legend identifies the rest by colour. Gaps are in axes fractions.
  """
  (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
  placed = []
  for label, x, y in points:
    if not (np.isfinite(x) and np.isfinite(y)):
      continue
    fx, fy = (x - x0) / ((x1 - x0) or 1.0), (y - y0) / ((y1 - y0) or 1.0)
    if any(abs(fx - px) < min_gap[0] and abs(fy - py) < min_gap[1] for px, py in placed):
      continue
    placed.append((fx, fy))
    right = fx > 0.65  # names of points near the right edge go to their left, inside the axes
    ax.annotate(label, (x, y), textcoords="offset points", xytext=(-4 if right else 4, 4),
                ha="right" if right else "left", fontsize=7)


def tradeoff_scatter(points: List[Dict], path: str, title: str) -> str:
  """Clean accuracy (y) against each robustness measure (x), one panel per measure, saved to
  `path` (see `tradeoff_figure` for the arguments)."""
  return save_figure(tradeoff_figure(points, title), path, dpi=150)


def tradeoff_figure(points: List[Dict], title: str) -> Figure:
  """The figure of `tradeoff_scatter`.

  Args:
    points: one dict per panel: {"xlabel": str, "x": {label: (mean, half)},
      "y": {label: (mean, half)}} with accuracies already in the unit of the labels, and
      optionally "front": the labels on that panel's Pareto front, joined by a dashed line.
    title: figure title.
  """
  fig = Figure(figsize=(5.0 * len(points), 4.0))
  labels = list(points[0]["y"]) if points else []
  colors = _colors(labels)
  markers = {label: MARKERS[i % len(MARKERS)] for i, label in enumerate(labels)}
  for k, panel in enumerate(points):
    ax = fig.add_subplot(1, len(points), k + 1)
    shown = [label for label in labels if label in panel["x"]]
    front = sorted((panel["x"][label][0], panel["y"][label][0])
                   for label in panel.get("front", ()) if label in shown)
    if len(front) > 1:
      ax.plot(*zip(*front), linestyle="--", color="0.5", linewidth=1, zorder=0,
              label="Pareto front (means)")
    for label in shown:
      (xm, xh), (ym, yh) = panel["x"][label], panel["y"][label]
      ax.errorbar([xm], [ym], xerr=[_zero_nan([xh])[0]], yerr=[_zero_nan([yh])[0]],
                  fmt=markers[label], color=colors[label], capsize=3, label=label)
    _label_points(ax, [(label, panel["x"][label][0], panel["y"][label][0]) for label in shown])
    ax.set_xlabel(panel["xlabel"])
    ax.set_ylabel(panel.get("ylabel", "clean test accuracy (%)"))
    ax.grid(alpha=0.3)
  if fig.axes:
    # The legend of the panel with the most entries (the front's line is in one panel).
    ax = max(fig.axes, key=lambda a: len(a.get_legend_handles_labels()[1]))
    handles, names = ax.get_legend_handles_labels()
    fig.axes[-1].legend(handles, names, fontsize=7, loc="center left",
                        bbox_to_anchor=(1.02, 0.5))
  fig.suptitle(title, fontsize=10)
  return fig


def _curves(rows: Sequence[Dict], prefix: str) -> Dict[str, Curve]:
  out = {}
  for m in dict.fromkeys(r["method"] for r in rows):
    rs = sorted((r for r in rows if r["method"] == m and r["metric"].startswith(prefix)),
                key=lambda r: at_value(r["metric"]))
    if rs:
      out[method_label(m)] = ([at_value(r["metric"]) for r in rs], [r["mean"] for r in rs],
                       [r["ci95_half_width"] for r in rs])
  return out


def comparison_figures(rows: Sequence[Dict], out_dir: str, title: str, reference: str,
                       robust_eps: Optional[float] = None,
                       front: Sequence[str] = ()) -> List[str]:
  """Writes the comparison's PNGs into `out_dir` from `summary.summarize` rows.

  blur_curves.png (accuracy vs σ, CI bands), attack_curves.png (FGSM and PGD accuracy vs ε),
  rho_adv.png (bars with CI error bars and the report's marks) and
  accuracy_vs_robustness.png (clean accuracy against ρ_adv, PGD accuracy and AutoAttack
  accuracy at `robust_eps`, one panel each, 95% CI crosses over seeds; the methods of
  `front`, the clean-vs-AutoAttack Pareto front, joined in the AutoAttack panel). A figure
  whose metrics no run recorded is skipped. Returns the paths written.
  """
  idx = {(r["method"], r["metric"]): r for r in rows}
  methods = list(dict.fromkeys(r["method"] for r in rows))
  n = max((r["n"] for r in rows), default=0)
  band = "bands: 95% CI over seeds" if n > 1 else "one seed: no CI"
  figs = []
  blur = _curves(rows, "blur/acc@")
  if blur:
    figs.append(curves_with_bands(blur, os.path.join(out_dir, "blur_curves.png"),
                                  "Gaussian blur σ (pixels)", "test accuracy (%)",
                                  f"{title}\naccuracy under Gaussian blur ({band})"))
  attack = [(name, c) for name, c in (("FGSM", _curves(rows, "fgsm/acc@")),
                                      ("PGD", _curves(rows, "pgd/acc@"))) if c]
  if attack:
    figs.append(curves_with_bands(
        attack[0][1], os.path.join(out_dir, "attack_curves.png"),
        "L∞ budget ε (pixel values in [0, 1])", "accuracy under attack (%)",
        f"{title}\naccuracy under L∞ attacks ({band})", ax_titles=[a[0] for a in attack],
        panels=[a[1] for a in attack[1:]]))
  if all((m, "deepfool/rho_adv") in idx for m in methods):
    rs = [idx[(m, "deepfool/rho_adv")] for m in methods]
    figs.append(bars_with_ci(
        [method_label(m) for m in methods], [r["mean"] for r in rs],
        [r["ci95_half_width"] for r in rs],
        [marks(r) for r in rs], os.path.join(out_dir, "rho_adv.png"),
        "ρ_adv = mean ‖r‖₂ / ‖x‖₂ (DeepFool)",
        f"{title}\nDeepFool robustness (error bars: 95% CI over seeds;\n"
        f"vs {method_label(reference)}, paired t-test, Holm-adjusted p < α: "
        f"{PRIMARY_MARK} primary family, {SECONDARY_MARK} secondary)"))
  pgd = [k for k in headline_metrics([r["metric"] for r in rows], robust_eps)
         if k.startswith("pgd/")]
  # The Pareto view of robust training: clean accuracy against AutoAttack at the budget the
  # adversarial trainers train with (the worst case, where PGD alone can be masked).
  autoattack = autoattack_key(robust_eps) if robust_eps is not None else None
  panels = []
  for key, xlabel, scale in (("deepfool/rho_adv", "ρ_adv (DeepFool ‖r‖₂ / ‖x‖₂)", 1.0),
                             (pgd[0] if pgd else None,
                              f"PGD accuracy at ε={pgd[0].split('@')[1] if pgd else ''} (%)",
                              100.0),
                             (autoattack, f"AutoAttack accuracy at L∞ ε={robust_eps:.4g} (%)"
                              if robust_eps is not None else "", 100.0)):
    if key is None or not all((m, key) in idx and (m, "test/accuracy") in idx
                              for m in methods):
      continue
    panels.append({"xlabel": xlabel,
                   "front": [method_label(m) for m in front] if key == autoattack else [],
                   "x": {method_label(m): (scale * idx[(m, key)]["mean"],
                                           scale * idx[(m, key)]["ci95_half_width"])
                         for m in methods},
                   "y": {method_label(m): (100 * idx[(m, "test/accuracy")]["mean"],
                                           100 * idx[(m, "test/accuracy")]["ci95_half_width"])
                         for m in methods}})
  if panels:
    figs.append(tradeoff_scatter(
        panels, os.path.join(out_dir, "accuracy_vs_robustness.png"),
        f"{title}\nclean accuracy vs robustness (error bars: 95% CI over seeds)"))
  return figs
