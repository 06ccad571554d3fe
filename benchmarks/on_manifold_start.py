"""On-manifold adversarial training's radius η and clean share: a training probe.

Why: `on_manifold_at` first trained only on decoded latent adversarials G(z + δ) with
‖δ‖∞ ≤ 0.3, the value Stutz et al. use with one generator per class. latmix has one generator
of all classes (64-dimensional U[-1, 1] codes), and its quick Fashion-MNIST screening member
stayed near chance (train accuracy 0.138 after 2 epochs). This probe trains the quick
classifier for a few hundred steps of the real loop from one start, with the generator and
latent bank of a quick `latent_mixup_fmnist` run, under:

  η = 0.3, clean 0    the first recipe
  η = 0,   clean 0    the reconstructions G(z) alone (the method's limit case)
  η = 0.1, clean 0    the paper's radius for a generator of all classes ("data manifold")
  η = 0.3, clean 0.5  the class-manifold radius with half of each batch clean
  η = 0.1, clean 0.5  the paper's data-manifold setting (the default now)

If η = 0.3 stays at chance while η = 0 trains, the latent steps leave the class: the decoded
images carry labels they no longer show. Each row is the last training window's accuracy on
the rows trained on (label-mass weighted) and the accuracy on the validation split.

  python benchmarks/on_manifold_start.py --latent_workdir=RUN [--steps=200] [--data_dir=DIR]

RUN is a run folder with `generator/` and `bank/` stages of the quick recipe, e.g.
`<workdir>/latent_mixup_fmnist/quick/seed_0`; missing stages are built there first (about
half an hour on 2 cores). Writes benchmarks/results/on_manifold_start.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import time

import _common  # pylint: disable=unused-import  (puts the repository on sys.path)
from _common import machine, write_results

import keras  # pylint: disable=wrong-import-order

from experiments import baselines
from experiments.common import data_config, model_config, train_config
from latmix_tf.data import load_dataset, make_splits
from latmix_tf.latent.stages import build_latent_stages
from latmix_tf.models.classifiers import build_classifier
from latmix_tf.training import MethodInputs, build_method, registry
from latmix_tf.training.loop import train

VARIANTS = ((0.3, 0.0), (0.0, 0.0), (0.1, 0.0), (0.3, 0.5), (0.1, 0.5))  # (η, clean share)


def probe(splits, data_cfg, latent, eta, clean, steps, seed=0):
  """Last-window train metrics and validation accuracy after `steps` updates."""
  cfg = dataclasses.replace(baselines._method("on_manifold_at", "fmnist", "quick"),  # pylint: disable=protected-access
                            eta=eta, clean_weight=clean)
  method = build_method(cfg, MethodInputs(batch_size=data_cfg.batch_size,
                                          generator=latent.generator, bank=latent.bank,
                                          upstream=latent.upstream))
  keras.utils.set_random_seed(seed)
  model = build_classifier(model_config("fashion_mnist", "quick"), (28, 28, 1))
  train_cfg = dataclasses.replace(train_config("fashion_mnist", "quick"), epochs=1,
                                  steps_per_epoch=steps)
  workdir = tempfile.mkdtemp(prefix="on_manifold_start_")
  try:
    row = train(model, method, splits, data_cfg, train_cfg, workdir, seed=seed,
                log=lambda _: None)[-1]
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  return {"eta": eta, "clean_weight": clean, "train_accuracy": row["train/accuracy"],
          "train_loss": row["train/loss"], "val_accuracy": row["val/accuracy"]}


def markdown(result):
  lines = ["# On-manifold adversarial training: latent radius η and clean share", "",
           f"`python benchmarks/on_manifold_start.py --latent_workdir=RUN "
           f"--steps={result['steps']}` on "
           f"{result['machine']['cpu']['model']} ({result['machine']['cpu']['cores']} cores, "
           f"load {result['machine']['load_avg'][0]:.1f} at the start); quick Fashion-MNIST "
           f"classifier, batch 128, {result['steps']} steps of the shared recipe from seed 0, "
           f"latent PGD-7 on the bank codes of a quick `latent_mixup_fmnist` run's DCGAN "
           f"(RUN).", "",
           "| η | clean share | train accuracy | train loss | validation accuracy |",
           "|---|---|---|---|---|"]
  for r in result["variants"]:
    lines.append(f"| {r['eta']:g} | {r['clean_weight']:g} | {r['train_accuracy']:.3f} | "
                 f"{r['train_loss']:.3f} | {r['val_accuracy']:.3f} |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--latent_workdir", required=True)
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--data_dir", default=None)
  args = parser.parse_args()
  data_cfg = data_config("fashion_mnist", "quick", args.data_dir)
  splits = make_splits(load_dataset("fashion_mnist", args.data_dir), data_cfg)
  recipe = baselines._method("on_manifold_at", "fmnist", "quick")  # pylint: disable=protected-access
  latent = build_latent_stages(*registry.latent_recipe(recipe), splits, args.latent_workdir,
                               seed=0, log=print)
  result = {"steps": args.steps, "machine": machine(), "variants": []}
  for eta, clean in VARIANTS:
    t0 = time.perf_counter()
    row = probe(splits, data_cfg, latent, eta, clean, args.steps)
    row["wall_s"] = time.perf_counter() - t0
    print(f"eta {eta:g}, clean {clean:g}: train accuracy {row['train_accuracy']:.3f}, "
          f"validation accuracy {row['val_accuracy']:.3f} ({row['wall_s']:.0f} s)", flush=True)
    result["variants"].append(row)
  text = markdown(result)
  print(text)
  write_results("on_manifold_start", result, text)


if __name__ == "__main__":
  main()
