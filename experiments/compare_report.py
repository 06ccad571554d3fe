"""What a comparison says while and after it runs: the per-member line, the line of work
left, the report it rewrites after every member and the name of its published summary.

Split from `experiments/compare.py`, which plans and runs the members; nothing here trains.
"""

from __future__ import annotations

from typing import Dict, Optional

from latmix_tf.comparison import label, write_comparison_report

TITLES = {"mnist": "MNIST", "fmnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def member_summary(metrics: Dict, eps: float) -> str:
  """The headline metrics of one finished member, for its log line."""
  keys = [("test/accuracy", "acc"), ("blur/area", "blur_area"), ("deepfool/rho_adv", "rho_adv"),
          (f"pgd/acc@{eps!r}", f"pgd@{eps:.3g}"), ("calibration/ece", "ece")]
  parts = [f"{short}={metrics[k]:.4f}" for k, short in keys if k in metrics]
  return "  ".join(parts + [f"train={metrics.get('train_seconds', float('nan')):.0f}s"])


def progress_line(name: str, pending, left: float, done: int, member, work_only: bool) -> str:
  """What is left, from the recorded cost of the finished members; unless `work_only`,
  also how many members run and wait, and the projected wall hours."""
  line = (f"{name}: {len(pending)} member{'s' * (len(pending) > 1)} left, "
          f"~{left / 3600:.1f} h of member work at the recorded cost of the finished ones "
          f"(their method's mean where one finished, else the mean of all)")
  if work_only:
    return line
  return (f"{line}; {member.queued} queued, {member.running} running, {done} done: "
          f"~{left / member.at_once / 3600:.1f} h left at {member.at_once} at once")


def summary_name(cfg, reference: Optional[str] = None) -> str:
  """Name of a published summary in results/: `<experiment>_<scale>` for the report against
  the first reference, `..._vs_<reference>` for each further one (the ablation family's
  report against default Latent-Mixup)."""
  return f"{cfg.name}_{cfg.scale}" + (f"_vs_{reference}" if reference else "")


def write_report(cfg, ctx, runs, seeds, root, eps, grid, reference, out_dir, costs,
                 class_shares) -> Dict:
  """The comparison's report against `reference` in `out_dir`, from the members finished
  so far (`runs`), with the notes a reader needs to trace each number to its run."""
  notes = [f"Member runs: {root}/<method>_{cfg.dataset_key}/{cfg.scale}/seed_<s>; SavedModels "
           f"under {ctx.export_root}.",
           f"Headline FGSM / PGD columns at ε={eps:.4g}, the budget FGSM-AT, PGD-AT and GAT "
           f"train with.",
           "train time = classifier training only, as recorded when each member ran (a cached "
           "member keeps its original time and hardware). pipeline time adds the latent-mixup "
           "generator, inversion encoder and latent bank from their stage records.",
           "ρ_adv: mean over DeepFool samples of ‖r‖₂/‖x‖₂ (never-flipped samples counted)."]
  if grid is None:
    notes.append("No latent-mixed sample grid: no latent-mixup method was run.")
  return write_comparison_report(
      out_dir, runs, f"{TITLES[cfg.dataset_key]}: {cfg.title} ({cfg.scale} scale, "
                     f"against {label(reference)})",
      f"Every method trained with its own experiment's recipe at scale `{cfg.scale}` "
      f"(requested seeds: {', '.join(map(str, seeds))}; the tables hold the runs finished so "
      f"far) and evaluated on its exported SavedModel.",
      reference=reference, robust_eps=eps, sample_grid=grid, notes=notes, member_costs=costs,
      protocol=cfg.protocol, class_shares=class_shares)
