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
--seed only names that folder; member seeds come from --seeds) and tells it <root>. Member
runs live at <root>/<member>/<scale>/seed_<s> and export to
<export_dir>/<member>[-<scale>]/seed_<s>, exactly where `python main.py
--experiment=<member> --seed=<s> --scale=<scale>` puts them, so single runs and comparisons
reuse each other's cached stages (keyed by config, data and consumed stages: a changed
config retrains, a changed evaluation config only re-evaluates). Called without a root
(tests), members go under <workdir>/members/. Whether a member was trained or cached, and
what its stages cost, comes from the stage records (`latmix_tf.stages`).
Resume: rerun the same command; members finished under their current recipe are read back
first and reported at once, an unfinished one resumes from its last checkpoint, and the
report (and its --results_dir copy at quick / full scale) is rewritten after every member.
Do not repeat --rebuild.
Executors (`--executor`, docs/scaling.md): `sequential` (default, in this process) or `ray`
(each unfinished member a Ray task); members write the same stages either way.
Also here: `ablation_fmnist` (the Latent-Mixup ablation family) and `compare_robust_fmnist`
(the robust-training screening, against ERM and against PGD-AT, with its declared goal).
What the driver logs and the report it writes: `experiments/compare_report.py`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional, Sequence, Tuple

from latmix_tf import distribute
from latmix_tf.cli_checks import check_choices, parse_seeds
from latmix_tf.comparison import diagnostics, label, publish_summary
from latmix_tf.comparison.costs import (finished_member, generative_seconds, member_cost,
                                        remaining_seconds, start_order)
from latmix_tf.comparison.executors import ExecutorConfig, MemberJob, run_members
from latmix_tf.comparison.goal import RobustGoal
from latmix_tf.comparison.protocol import DEFAULT_PROTOCOL, StatsProtocol
from latmix_tf.config import SCALES
from latmix_tf.evaluation.stage import eval_config_hash
from latmix_tf.runner import classifier_config_hash
from latmix_tf.training.adversarial import DEFAULT_EPSILON

from experiments import baselines, erm, latent_ablations, latent_mixup
from experiments.common import DATASET_OF, Experiment, RunContext, run_workdir, runs_root
from experiments.compare_report import (member_summary, progress_line, summary_name,
                                       write_report)

DEFAULT_METHODS = ("erm", "mixup", "manifold_mixup", "fgsm_at", "pgd_at", "gat",
                   "latent_mixup", "latent_mixup_vae")
# The robust-training screening (`compare_robust_fmnist`: can latent mixes make robust
# training cheaper in clean accuracy?), against ERM and against PGD-AT.
ROBUST_METHODS = ("erm", "pgd_at", "fgsm_at", "trades", "mixup_at", "latent_mixup_at",
                  "latent_mixup_vae_at", "on_manifold_at", "on_manifold_pgd_at", "latent_mixup")
# Opt-in (--methods=...): the textbook DCGAN without the recall term, for the ablation, and
# every screened method (those on the screening's Pareto front join the full comparison).
METHODS = DEFAULT_METHODS + ("latent_mixup_dcgan_plain",) + tuple(
    m for m in ROBUST_METHODS if m not in DEFAULT_METHODS)
DEFAULT_SEEDS = (0, 1, 2)
# The Latent-Mixup ablation family (experiments/latent_ablations.py), compared by
# `ablation_fmnist` against ERM and against default Latent-Mixup.
ABLATION_METHODS = ("erm", "latent_mixup") + tuple(
    f"latent_mixup_{tag}" for tag in latent_ablations.ABLATIONS)
MEMBERS = {**erm.EXPERIMENTS, **baselines.EXPERIMENTS, **latent_mixup.EXPERIMENTS,
           **latent_ablations.EXPERIMENTS}


@dataclasses.dataclass(frozen=True)
class CompareConfig:
  """Which methods and seeds a comparison runs, at which scale, on which data."""
  name: str
  dataset_key: str
  scale: str = "full"
  seeds: Tuple[int, ...] = DEFAULT_SEEDS
  methods: Tuple[str, ...] = DEFAULT_METHODS
  data_dir: Optional[str] = None
  valid_methods: Tuple[str, ...] = METHODS  # what --methods may name
  references: Tuple[str, ...] = ("erm",)    # one report against each, the first in workdir
  title: str = "method comparison"
  executor: Optional[ExecutorConfig] = None  # None: sequential, in this process
  # Declared before the run: primary family, corrections, TOST margins (report header).
  protocol: StatsProtocol = DEFAULT_PROTOCOL


def select_methods(requested: Optional[Sequence[str]], default: Sequence[str] = DEFAULT_METHODS,
                   valid: Sequence[str] = METHODS) -> Tuple[str, ...]:
  """`requested` in `valid` order (`default` when None); ValueError listing the valid names."""
  return check_choices(requested, valid, "--methods") or tuple(default)


def select_seeds(requested: Optional[Sequence[int]]) -> Tuple[int, ...]:
  """`requested` without duplicates (`DEFAULT_SEEDS` when None); ValueError on a bad seed."""
  return parse_seeds(requested) or DEFAULT_SEEDS


def run_member(name: str, scale: str, seed: int, data_dir: Optional[str], workdir: str,
               export_root: str, rebuild: tuple, root: str, log, strategy=None) -> Dict:
  """One member, exactly as `main.py --experiment=<name> --seed=<seed>` would run it; the
  same call whichever executor runs it (in this process, or in a Ray worker that imports
  this module by name)."""
  member = MEMBERS[name]
  sub = RunContext(workdir=workdir, export_root=export_root, rebuild=rebuild, log=log,
                   strategy=strategy, root=root)
  return dict(member.run(member.get_config(scale=scale, seed=seed, data_dir=data_dir), sub))


def _check_executor(executor: ExecutorConfig, ctx: RunContext) -> None:
  if executor.name == "sequential":
    return
  if distribute.worker_info(ctx.strategy)[1] > 1:
    raise ValueError("--executor=ray runs each member in its own process: drop "
                     "--strategy=multi_worker (a member on GPUs takes one GPU each).")
  if ctx.rebuild:
    raise ValueError(f"--rebuild={','.join(ctx.rebuild)} with --executor=ray: a member Ray "
                     f"retries after its worker died would rebuild again instead of resuming; "
                     f"run the --rebuild sequentially, then use --executor=ray.")


def _run(cfg: CompareConfig, ctx: RunContext) -> Dict:
  methods = select_methods(ctx.methods, cfg.methods, cfg.valid_methods)
  seeds = select_seeds(ctx.seeds or cfg.seeds)
  executor = cfg.executor or ExecutorConfig()
  _check_executor(executor, ctx)
  dataset = DATASET_OF[cfg.dataset_key]
  eps = DEFAULT_EPSILON[dataset]
  root = runs_root(ctx)
  ctx.log(f"{cfg.name}: {len(methods)} methods x seeds {list(seeds)} at scale {cfg.scale}; "
          f"member workdirs under {root}; executor {executor.name}")
  runs: Dict[str, Dict[int, Dict]] = {m: {} for m in methods}
  nodes: Dict[str, Dict[int, str]] = {m: {} for m in methods}
  costs = []  # one row per finished member, for the report's "Cost per member"
  grid = None
  reports: Dict[str, Dict] = {}  # reference -> its report, rewritten as members finish
  # Seed-major (longest first within a seed: `start_order`), so a partial run already holds
  # a full comparison at seed 0 - but members finished earlier come first: a resumed run
  # reports (and publishes) everything already done before it trains anything, and never
  # replaces a published summary by a poorer one. Finished members are read back in this
  # process; the others go to the executor.
  in_process = executor.name == "sequential"
  plan = [(s, m, MEMBERS[f"{m}_{cfg.dataset_key}"].name) for s in seeds for m in methods]
  plan = [(s, m, name, distribute.worker_dir(run_workdir(root, name, cfg.scale, s),
                                             ctx.strategy if in_process else None))
          for s, m, name in plan]
  # Read back only what is done under the member's current recipe (`finished_member`).
  recipes = [MEMBERS[name].get_config(scale=cfg.scale, seed=seed, data_dir=cfg.data_dir)
             for seed, _, name, _ in plan]
  ready = [finished_member(p[3], classifier_config_hash(r), eval_config_hash(r.eval))
           for p, r in zip(plan, recipes)]
  order = start_order([(p[0], p[1]) for p in plan], ready,
                      [dict(member_cost(p[3]), method=p[1]) for p, r in zip(plan, ready) if r])
  number = {k: i for i, k in enumerate(order, 1)}  # the order members start in
  # Corruption scores of a model that answers one class (the report names such collapses).
  samples = {r.eval.corruption_samples for r in recipes}
  shares = (diagnostics.corruption_class_shares(dataset, cfg.data_dir, samples.pop(), ctx.log)
            if len(samples) == 1 else None)

  def job(k: int) -> MemberJob:
    seed, method, name, workdir = plan[k]
    kwargs = dict(name=name, scale=cfg.scale, seed=seed, data_dir=cfg.data_dir,
                  workdir=workdir, export_root=ctx.export_root, rebuild=ctx.rebuild,
                  root=root)
    if in_process or ready[k]:
      kwargs["strategy"] = ctx.strategy
    return MemberJob((method, "seed", seed), run_member, kwargs,
                     title=f"[{number[k]}/{len(plan)}] {method} seed {seed}: {name} -> {workdir}")

  def in_finish_order():  # cached members first (in this process), then the executor's
    yield from run_members([job(k) for k in order if ready[k]], ExecutorConfig(), ctx.log)
    yield from run_members([job(k) for k in order if not ready[k]], executor, ctx.log)

  for done, member in enumerate(in_finish_order(), 1):
    method, _, seed = member.job.key
    workdir = member.job.kwargs["workdir"]
    metrics = dict(member.result)
    metrics["pipeline_seconds"] = metrics["train_seconds"] + generative_seconds(workdir)
    status = metrics.pop("stages", {})
    figures = metrics.pop("figures", {})
    metrics.pop("run_key", None)
    runs[method][seed] = metrics
    nodes[method][seed] = member.node
    costs.append(dict(member_cost(workdir), method=method, seed=seed))
    where = "" if in_process else f" on {member.node}"
    ctx.log(f"[{done}/{len(plan)}] {method} seed {seed}: classifier {status.get('classifier')}, "
            f"evaluation {status.get('evaluation')} ({member.seconds:.0f}s{where})  "
            f"{member_summary(metrics, eps)}")
    pending = [m for s, m, _, _ in plan if s not in runs[m]]
    left = remaining_seconds(costs, pending)
    next_ready = done < len(plan) and ready[order[done]]
    if pending and left is not None and not next_ready:
      # After the last member read back, the executor has not started yet: its own line
      # says how many run at once, so this one gives only the work left.
      ctx.log(progress_line(cfg.name, pending, left, done, member,
                             in_process or done <= sum(ready)))
    if grid is None and "latent_mixed_grid" in figures:
      grid = os.path.join(workdir, figures["latent_mixed_grid"])
      grid = grid if os.path.isfile(grid) else None
    if next_ready:
      continue  # still reading finished members back: one report once they are all in
    finished = {m: r for m, r in runs.items() if r}
    # Against each reference that ran; with none of them among --methods, against the first
    # anyway: the report then says it was not run and tests nothing, but the table is written.
    present = [r for r in cfg.references if r in finished] or list(cfg.references[:1])
    rows = sorted(costs, key=lambda c: (methods.index(c["method"]), c["seed"]))
    for i, reference in enumerate(present):
      out_dir = ctx.workdir if i == 0 else os.path.join(ctx.workdir, f"vs_{reference}")
      reports[reference] = write_report(cfg, ctx, finished, seeds, root, eps, grid, reference,
                                         out_dir, rows, shares)
      ctx.log(f"{cfg.name}: report against {reference} after {done} of {len(plan)} members -> "
              f"{reports[reference]['markdown']}")
    if ctx.results_root and cfg.scale != "smoke":
      for i, reference in enumerate(reports):
        copied = publish_summary(reports[reference], ctx.results_root,
                                 summary_name(cfg, reference if i else None))
        ctx.log(f"{cfg.name}: summary copied to {copied}")
  report = next(iter(reports.values()))  # against the first reference
  return {"report": report["markdown"], "results_csv": report["csv"], "runs": runs,
          "nodes": nodes}


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


def _make_family(name: str, dataset_key: str, description: str, methods: Tuple[str, ...],
                 references: Tuple[str, ...], title: str,
                 protocol: StatsProtocol = DEFAULT_PROTOCOL) -> Experiment:
  """A comparison of its own method family (default scale quick), against each reference."""
  def get_config(scale="quick", seed=0, data_dir=None):
    del seed
    if scale not in SCALES:
      raise ValueError(f"Unknown scale {scale!r}; valid: {', '.join(SCALES)}.")
    return CompareConfig(name=name, dataset_key=dataset_key, scale=scale, data_dir=data_dir,
                         methods=methods, valid_methods=methods, references=references,
                         title=title, protocol=protocol)
  return Experiment(name, description, get_config, _run)


def _make_ablation(dataset_key: str) -> Experiment:
  return _make_family(
      f"ablation_{dataset_key}", dataset_key,
      f"The Latent-Mixup ablation family on {dataset_key} (experiments/latent_ablations.py): "
      f"ERM, default Latent-Mixup and one knob changed at a time, each reported against ERM "
      f"and against default Latent-Mixup.",
      ABLATION_METHODS, ("erm", "latent_mixup"), "Latent-Mixup ablation")


def _make_robust(dataset_key: str) -> Experiment:
  return _make_family(
      f"compare_robust_{dataset_key}", dataset_key,
      f"Robust training on {dataset_key}: ERM, PGD-AT, FGSM-AT, TRADES, interpolated "
      f"adversarial training on input mixes and on latent mixes (GAN, VAE), on-manifold AT "
      f"(alone and + PGD-AT) and Latent-Mixup, each reported against ERM and against PGD-AT "
      f"(clean accuracy against AutoAttack, PGD and APGD).",
      ROBUST_METHODS, ("erm", "pgd_at"), "robust training",
      dataclasses.replace(DEFAULT_PROTOCOL, goal=RobustGoal()))


EXPERIMENTS = {e.name: e for e in (_make("mnist"), _make("fmnist"), _make("cifar10"),
                                   _make_ablation("fmnist"), _make_robust("fmnist"))}
