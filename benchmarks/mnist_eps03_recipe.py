"""MNIST PGD-AT at ε = 0.3: is the registered recipe trained long enough? A recipe probe.

Why: MNIST's adversarial trainers train at its standard threat model, L∞ ε = 0.3 (Madry et
al.), with the recipe of the other datasets: 8 epochs at full scale, PGD-7 of step 2.5ε/7,
AdamW at 2e-3 on a cosine schedule. Its full-scale PGD-AT member (seed 0) ends at 95.6% clean
test accuracy with its adversarial train accuracy still rising over the last epochs, and its
attacks disagree: PGD-10 leaves 85.6% at ε = 0.3, APGD-CE 61.3%, and AutoAttack's black-box
Square attack takes it to 48.1%, below every white-box attack. A black-box attack beating the
gradient attacks is the gradient-masking pattern. Madry et al. train for about 83 epochs with
PGD-40 of step 0.01; Wong et al. ("Fast is better than free") train 10 epochs with a cyclic
schedule. This probe trains the same recipe with more epochs, everything else unchanged
(model, optimizer, inner attack, seed), and scores it with the attacks that decide the
question, on the same first 1000 test images as the full-scale evaluation: PGD-10 and
standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square, each step's robust accuracy).

  python benchmarks/mnist_eps03_recipe.py --workdir=DIR [--epochs=24]
      [--baseline_run=RUN] [--data_dir=DIR] [--scale=smoke]

Each variant is a run of the real pipeline (`runner.train_and_evaluate`: cached, resumable
stages, mid-epoch checkpoints), so a killed probe resumes when rerun with the same command.
RUN is a finished full-scale `pgd_at_mnist` run folder (e.g.
`<workdir>/pgd_at_mnist/full/seed_0`) whose metrics give the registered 8-epoch row; without
it that row is trained here too. About 2 CPU-hours per 24-epoch variant on a 2-core Xeon.
Writes benchmarks/results/mnist_eps03_recipe.{json,md} once every variant has finished;
`--scale=smoke` (a check of the script, a minute; cheap AutoAttack, so no FAB-T or Square
column) writes nothing there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import _common  # pylint: disable=unused-import  (puts the repository on sys.path)
from _common import machine, write_results

import experiments  # pylint: disable=wrong-import-order
from latmix_tf import progress, runner

EPS = 0.3
STEPS = ("apgd-ce", "apgd-t", "fab-t", "square")


def probe_config(epochs: int, data_dir, scale: str = "full"):
  """The registered `pgd_at_mnist` recipe at `scale` with `epochs`, scored by clean accuracy,
  FGSM / PGD-10 and AutoAttack at ε = 0.3 only (on the full evaluation's images)."""
  cfg = experiments.get("pgd_at_mnist").get_config(scale=scale, seed=0, data_dir=data_dir)
  ev = dataclasses.replace(cfg.eval, evaluators=("clean", "attacks", "autoattack"),
                           attack_epsilons=(0.0, EPS), autoattack_budgets=(("Linf", EPS),))
  return dataclasses.replace(cfg, name=f"pgd_at_mnist_epochs{epochs}",
                             train=dataclasses.replace(cfg.train, epochs=epochs), eval=ev)


def row(epochs: int, metrics, history, source: str):
  aa = f"autoattack/Linf@{EPS}"
  out = {"epochs": epochs, "source": source,
         "clean_accuracy": metrics["test/accuracy"],
         "adv_train_accuracy_last_epoch": history[-1]["train/accuracy"] if history else None,
         "val_accuracy_last_epoch": history[-1]["val/accuracy"] if history else None,
         "pgd10": metrics[f"pgd/acc@{EPS}"],
         "autoattack_clean": metrics[f"{aa}/clean_accuracy"],
         **{step: metrics.get(f"{aa}/after_{step}", float("nan")) for step in STEPS},
         "autoattack": metrics[f"{aa}/robust_accuracy"],
         "train_seconds": metrics.get("train_seconds")}
  out["pgd_minus_autoattack"] = out["pgd10"] - out["autoattack"]
  out["square_gain"] = out["fab-t"] - out["square"]  # what the black-box step took (nan: not run)
  return out


def markdown(rows, command: str, record) -> str:
  lines = ["# MNIST PGD-AT at ε = 0.3: epochs of the registered recipe", "",
           f"`{command}` on {record['machine']['cpu']['model']} "
           f"(load {record['machine']['load_avg'][0]:.2f} at the start). Seed 0; attacks on "
           "the first 1000 test images; accuracies in %.", "",
           "| epochs | clean (10k) | adv. train acc. (last epoch) | PGD-10 | APGD-CE | "
           "+APGD-T | +FAB-T | +Square = AutoAttack | PGD − AA | Square's share |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['epochs']} | {100 * r['clean_accuracy']:.2f} | "
        f"{100 * r['adv_train_accuracy_last_epoch']:.1f} | {100 * r['pgd10']:.1f} | "
        f"{100 * r['apgd-ce']:.1f} | {100 * r['apgd-t']:.1f} | {100 * r['fab-t']:.1f} | "
        f"{100 * r['autoattack']:.1f} | {100 * r['pgd_minus_autoattack']:+.1f} | "
        f"{100 * r['square_gain']:.1f} |")
  lines += ["", "Each AutoAttack column is the robust accuracy after that attack and the ones "
            "before it (AutoAttack runs them in turn on what is still classified right). "
            "Square's share: the points the black-box attack took after the three white-box "
            "ones; a large share means the gradients misled the white-box attacks.", ""]
  return "\n".join(lines)


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True, help="where the variants' runs go")
  ap.add_argument("--epochs", default="24", help="comma-separated epoch counts to train")
  ap.add_argument("--baseline_run", default=None,
                  help="a finished full-scale pgd_at_mnist run folder (the 8-epoch row)")
  ap.add_argument("--data_dir", default=None)
  ap.add_argument("--scale", default="full", choices=("full", "smoke"))
  args = ap.parse_args()
  log = progress.log_sink()
  record = {"machine": machine()}
  rows = []
  if args.baseline_run:
    with open(os.path.join(args.baseline_run, "metrics.json")) as f:
      metrics = json.load(f)
    with open(os.path.join(args.baseline_run, "classifier", "history.json")) as f:
      history = json.load(f)
    rows.append(row(8, metrics, history, f"registered run {args.baseline_run}"))
  for epochs in sorted({int(e) for e in args.epochs.split(",")}):
    cfg = probe_config(epochs, args.data_dir, args.scale)
    run = os.path.join(args.workdir, cfg.name, "seed_0")
    metrics = runner.train_and_evaluate(cfg, run, os.path.join(args.workdir, "sm", cfg.name),
                                        log=log)
    with open(os.path.join(run, "classifier", "history.json")) as f:
      history = json.load(f)
    rows.append(row(epochs, metrics, history, run))
    log(json.dumps(rows[-1]))
  record["rows"] = rows
  command = ("python benchmarks/mnist_eps03_recipe.py --workdir=DIR "
             f"--epochs={args.epochs}" + (" --baseline_run=RUN" if args.baseline_run else ""))
  text = markdown(rows, command, record)
  print(text)
  if args.scale == "full":
    write_results("mnist_eps03_recipe", record, text)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
