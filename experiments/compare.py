"""The comparison the project exists for: every method × N seeds, one report with CIs.

  compare_{mnist,fmnist,cifar10}: ERM, mixup, manifold mixup, FGSM-AT, PGD-AT, GAT,
  Latent-Mixup (GAN: the DCGAN with the recall term) and Latent-Mixup (VAE) - and, on
  request, Latent-Mixup with the plain DCGAN - seeds 0, 1, 2 by default, each trained and
  evaluated by its own registered experiment (`<method>_<dataset>`) with exactly the config
  that experiment would use alone; then `latmix_tf.comparison` writes report.md,
  results.csv / results.json and the figures (blur curves and ρ_adv with 95% CIs, accuracy
  vs robustness, a latent-mixed sample grid) into this experiment's workdir.

Run:  python main.py --experiment=compare_fmnist [--scale=quick] [--methods=erm,pgd_at]
                     [--seeds=0,1]
Workdirs: the CLI gives this experiment <root>/compare_fmnist/<scale>/seed_<seed> (the
--seed only names that folder; member seeds come from --seeds). Member runs live at
<root>/<member>/<scale>/seed_<s> and export to <export_dir>/<member>[-<scale>]/seed_<s>,
exactly where `python main.py --experiment=<member> --seed=<s> --scale=<scale>` puts them,
so single runs and comparisons reuse each other's cached generators, latent banks and
classifiers (keyed by config hash and data fingerprint: a changed config retrains). A
workdir not in that layout keeps its members under <workdir>/members/ instead.
Resume: kill it and rerun the same command; finished members are reused ("cached"), an
unfinished one resumes from its last checkpoint. Do not repeat --rebuild on the rerun.
Expect: the member experiments' times summed (see their docstrings and the README).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import time
from typing import Dict, Optional, Sequence, Tuple

from latmix_tf import distribute, export
from latmix_tf.comparison import label, write_comparison_report
from latmix_tf.config import SCALES
from latmix_tf.training.adversarial import DEFAULT_EPSILON

from experiments import baselines, erm, latent_mixup
from experiments.common import DATASET_OF, Experiment, RunContext

DEFAULT_METHODS = ("erm", "mixup", "manifold_mixup", "fgsm_at", "pgd_at", "gat",
                   "latent_mixup", "latent_mixup_vae")
# Opt-in (--methods=...): the textbook DCGAN without the recall term, for the ablation.
METHODS = DEFAULT_METHODS + ("latent_mixup_dcgan_plain",)
DEFAULT_SEEDS = (0, 1, 2)
MEMBERS = {**erm.EXPERIMENTS, **baselines.EXPERIMENTS, **latent_mixup.EXPERIMENTS}
TITLES = {"mnist": "MNIST", "fmnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
GRID = os.path.join("generative", "latent_mixed_grid.png")  # written by latent_mixup's run


@dataclasses.dataclass(frozen=True)
class CompareConfig:
  """Which methods and seeds a comparison runs, at which scale, on which data."""
  name: str
  dataset_key: str
  scale: str = "full"
  seeds: Tuple[int, ...] = DEFAULT_SEEDS
  methods: Tuple[str, ...] = DEFAULT_METHODS
  data_dir: Optional[str] = None


def select_methods(requested: Optional[Sequence[str]]) -> Tuple[str, ...]:
  """`requested` in METHODS order (DEFAULT_METHODS when None); ValueError listing the valid
  names."""
  if not requested:
    return DEFAULT_METHODS
  unknown = [m for m in requested if m not in METHODS]
  if unknown:
    raise ValueError(f"Unknown method(s) {', '.join(map(repr, unknown))} for --methods; valid: "
                     f"{', '.join(METHODS)}.")
  return tuple(m for m in METHODS if m in requested)


def select_seeds(requested: Optional[Sequence[int]]) -> Tuple[int, ...]:
  if not requested:
    return DEFAULT_SEEDS
  seeds = tuple(dict.fromkeys(int(s) for s in requested))
  if any(s < 0 for s in seeds):
    raise ValueError(f"--seeds must be non-negative integers, got {list(seeds)}.")
  return seeds


def members_root(workdir: str, name: str, scale: str) -> str:
  """<root> of the CLI layout <root>/<name>/<scale>/seed_<n>; else <workdir>/members.

  A non-chief worker's <root>/<name>/<scale>/workertemp_<i>/seed_<n> maps to the same root
  (its members then go through `distribute.worker_dir` like any other run).
  """
  seed_dir = os.path.normpath(os.path.abspath(workdir))
  scale_dir = os.path.dirname(seed_dir)
  if re.fullmatch(r"workertemp_\d+", os.path.basename(scale_dir)):
    scale_dir = os.path.dirname(scale_dir)
  name_dir = os.path.dirname(scale_dir)
  if (os.path.basename(seed_dir).startswith("seed_") and os.path.basename(scale_dir) == scale
      and os.path.basename(name_dir) == name):
    return os.path.dirname(name_dir)
  return os.path.join(workdir, "members")


def member_workdir(root: str, member: str, scale: str, seed: int) -> str:
  """Where `main.py --experiment=<member> --scale=<scale> --seed=<seed>` runs."""
  return os.path.join(root, member, scale, f"seed_{seed}")


def _record(path: str) -> Dict:
  record = export.read_json(path, {})
  return record if isinstance(record, dict) else {}


def generative_seconds(workdir: str) -> float:
  """Recorded training time of a latent-mixup member's generator, encoder and bank (0 if none).

  Read from the stage records (generator.json, encoder.json, bank.json) so a cached member
  still reports what its stages cost when they ran. Only the encoder trained on the current
  generator counts (older `encoder-*` folders of replaced generators stay on disk); the
  bank's time covers its last build.
  """
  generator = _record(os.path.join(workdir, "generator", "generator.json"))
  total = float(generator.get("train_seconds", 0.0) or 0.0)
  for path in glob.glob(os.path.join(workdir, "inversion", "encoder-*", "encoder.json")):
    record = _record(path)
    if record.get("key", {}).get("generator") == generator.get("checkpoint_hash"):
      total += float(sum(h.get("seconds", 0.0) for h in record.get("history", [])))
  bank = _record(os.path.join(workdir, "bank", "bank.json"))
  if bank.get("key", {}).get("generator") == generator.get("checkpoint_hash"):
    total += float(bank.get("build_seconds_this_run", 0.0) or 0.0)
  return total


def _summary(metrics: Dict, eps: float) -> str:
  keys = [("test/accuracy", "acc"), ("blur/area", "blur_area"), ("deepfool/rho_adv", "rho_adv"),
          (f"pgd/acc@{eps!r}", f"pgd@{eps:.3g}"), ("calibration/ece", "ece")]
  parts = [f"{short}={metrics[k]:.4f}" for k, short in keys if k in metrics]
  return "  ".join(parts + [f"train={metrics.get('train_seconds', float('nan')):.0f}s"])


def _run(cfg: CompareConfig, ctx: RunContext) -> Dict:
  methods = select_methods(ctx.methods or cfg.methods)
  seeds = select_seeds(ctx.seeds or cfg.seeds)
  dataset = DATASET_OF[cfg.dataset_key]
  eps = DEFAULT_EPSILON[dataset]
  root = members_root(ctx.workdir, cfg.name, cfg.scale)
  ctx.log(f"{cfg.name}: {len(methods)} methods x seeds {list(seeds)} at scale {cfg.scale}; "
          f"member workdirs under {root}")
  runs: Dict[str, Dict[int, Dict]] = {m: {} for m in methods}
  total, done, report, grid = len(methods) * len(seeds), 0, None, None
  for seed in seeds:  # seed-major: a partial run already holds a full comparison at seed 0
    for method in methods:
      done += 1
      member = MEMBERS[f"{method}_{cfg.dataset_key}"]
      workdir = distribute.worker_dir(member_workdir(root, member.name, cfg.scale, seed),
                                      ctx.strategy)
      ctx.log(f"[{done}/{total}] {method} seed {seed}: {member.name} -> {workdir}")
      lines = []

      def sub_log(line, lines=lines):
        lines.append(line)
        ctx.log(f"    {line}")
      sub = RunContext(workdir=workdir, export_root=ctx.export_root, rebuild=ctx.rebuild,
                       log=sub_log, strategy=ctx.strategy)
      t0 = time.time()
      metrics = dict(member.run(member.get_config(scale=cfg.scale, seed=seed,
                                                  data_dir=cfg.data_dir), sub))
      metrics["pipeline_seconds"] = metrics["train_seconds"] + generative_seconds(workdir)
      runs[method][seed] = metrics
      cached = any("cached classifier found" in line for line in lines)
      ctx.log(f"[{done}/{total}] {method} seed {seed}: {'cached' if cached else 'trained'} "
              f"({time.time() - t0:.0f}s)  {_summary(metrics, eps)}")
      if grid is None and method.startswith("latent_mixup"):
        grid = os.path.join(workdir, GRID) if os.path.isfile(os.path.join(workdir, GRID)) else None
    report = _write_report(cfg, ctx, {m: r for m, r in runs.items() if r}, seeds, root, eps,
                           grid)
    ctx.log(f"{cfg.name}: report after seed {seed} -> {report['markdown']}")
  return {"report": report["markdown"], "results_csv": report["csv"], "runs": runs}


def _write_report(cfg, ctx, runs, seeds, root, eps, grid) -> Dict:
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
      ctx.workdir, runs, f"{TITLES[cfg.dataset_key]}: method comparison ({cfg.scale} scale)",
      f"Every method trained with its own experiment's recipe at scale `{cfg.scale}` "
      f"(requested seeds: {', '.join(map(str, seeds))}; the tables hold the runs finished so "
      f"far) and evaluated on its exported SavedModel.",
      reference="erm", robust_eps=eps, sample_grid=grid, notes=notes)


def _make(dataset_key: str) -> Experiment:
  name = f"compare_{dataset_key}"
  methods = ", ".join(label(m) for m in DEFAULT_METHODS)
  description = (f"All methods ({methods}) on {dataset_key} over "
                 f"seeds {', '.join(map(str, DEFAULT_SEEDS))}: mean, 95% CI and paired tests "
                 f"against ERM of clean accuracy, blur, ρ_adv, FGSM/PGD, ECE and cost.")

  def get_config(scale="full", seed=0, data_dir=None):
    del seed  # member seeds come from CompareConfig.seeds / --seeds
    if scale not in SCALES:
      raise ValueError(f"Unknown scale {scale!r}; valid: {', '.join(SCALES)}.")
    return CompareConfig(name=name, dataset_key=dataset_key, scale=scale, data_dir=data_dir)
  return Experiment(name, description, get_config, _run)


EXPERIMENTS = {e.name: e for e in (_make("mnist"), _make("fmnist"), _make("cifar10"))}
