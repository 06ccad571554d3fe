"""Shared experiment plumbing: the `Experiment` record, per-dataset defaults at each scale.

Scales: `full` is the default and the one the README's figures come from; `quick` is a
shorter run of the same recipe (minutes); `smoke` exercises every code path on a few
hundred examples in seconds (the tests run every experiment at this scale).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Optional

from latmix_tf.config import (SCALES, DataConfig, EvalConfig, ExperimentConfig, ModelConfig,
                              TrainConfig)
from latmix_tf.runner import RunContext, train_and_evaluate  # RunContext re-exported


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A registered experiment: how to configure it and how to run it."""
  name: str
  description: str
  get_config: Callable[..., Any]
  run: Callable[[Any, RunContext], Dict]


def export_dir_for(root: str, name: str, scale: str, seed: int) -> str:
  """saved_models/<experiment>/seed_<n> (non-default scales get a `-<scale>` suffix)."""
  folder = name if scale == "full" else f"{name}-{scale}"
  return os.path.join(root, folder, f"seed_{seed}")


# Under the CLI's `--workdir` root: where runs share finished upstream stages of equal key
# (an ablation reuses the default recipe's generator and bank; `latmix_tf.stages`).
STAGE_INDEX = ".stage_index"
DATASET_OF = {"mnist": "mnist", "fmnist": "fashion_mnist", "cifar10": "cifar10"}


def data_config(dataset: str, scale: str, data_dir: Optional[str]) -> DataConfig:
  if scale not in SCALES:
    raise ValueError(f"Unknown scale {scale!r}; valid: {', '.join(SCALES)}.")
  cifar = dataset == "cifar10"
  if scale == "smoke":
    return DataConfig(dataset, data_dir, batch_size=32, val_size=64,
                      augment="shift_flip" if cifar else "none", train_limit=256, test_limit=64)
  return DataConfig(dataset, data_dir, batch_size=128, val_size=5000, augment=AUGMENT[dataset])


def model_config(dataset: str, scale: str) -> ModelConfig:
  if dataset == "cifar10":
    return ModelConfig("resnet", (16, 32, 64) if scale == "smoke" else (32, 64, 128))
  return ModelConfig("cnn", (8, 16) if scale == "smoke" else (32, 64, 128),
                     32 if scale == "smoke" else 128)


# Label-preserving augmentation per dataset (digits must not be flipped).
AUGMENT = {"mnist": "shift", "fashion_mnist": "flip", "cifar10": "shift_flip"}

# Epochs at each scale. Measured on 2 CPU cores: see README "Figures".
EPOCHS = {"mnist": {"full": 8, "quick": 2}, "fashion_mnist": {"full": 12, "quick": 3},
          "cifar10": {"full": 30, "quick": 3}}


def train_config(dataset: str, scale: str, **overrides) -> TrainConfig:
  if scale == "smoke":
    base = TrainConfig(epochs=2, steps_per_epoch=2, learning_rate=1e-3)
  else:
    base = TrainConfig(epochs=EPOCHS[dataset][scale], learning_rate=2e-3, weight_decay=5e-4)
  return dataclasses.replace(base, **overrides)


ATTACK_IMAGES = 1000  # the first test images every attack metric runs on at full scale


def eval_config(dataset: str, scale: str) -> EvalConfig:
  """The evaluation suite at each scale; per-dataset threat models (and their sources) are
  `EvalConfig.for_dataset`. Smoke keeps every code path on a handful of images: AutoAttack
  "cheap" (10 iterations) on 16, a 3-point APGD curve of 10 iterations, all 15 corruptions
  on 32 images (CIFAR-10-C at severities 1 and 5)."""
  base = EvalConfig.for_dataset(dataset)
  eps = base.attack_epsilons
  if scale == "smoke":
    return dataclasses.replace(
        base, blur_sigmas=(0.0, 1.0, 2.0), deepfool_samples=16, deepfool_max_iter=10,
        attack_epsilons=eps[:3], pgd_steps=3, attack_samples=32, batch_size=64,
        autoattack_version="cheap", autoattack_samples=16, autoattack_iters=10,
        apgd_curve_epsilons=base.apgd_curve_epsilons[:3], apgd_curve_iters=10,
        apgd_curve_samples=16, corruption_samples=32,
        corruption_severities=(1, 5) if dataset == "cifar10" else (),
        sanity_samples=32, sanity_unbounded_steps=10)
  if scale == "quick":
    return dataclasses.replace(base, deepfool_samples=500, attack_samples=2000,
                               autoattack_version="cheap", autoattack_samples=500,
                               apgd_curve_samples=500, corruption_samples=2000)
  # One image set for every attack metric: FGSM / PGD, APGD, AutoAttack and DeepFool on the
  # first ATTACK_IMAGES test images. 1000 is the floor: standard AutoAttack on 1000 images
  # already took ~20 of an adversarially trained member's 25-75 min on 2 cores
  # (results/compare_fmnist_full.md, cost per member). `main.py --evaluate` runs FGSM / PGD
  # on all 10k.
  return dataclasses.replace(base, deepfool_samples=ATTACK_IMAGES, attack_samples=ATTACK_IMAGES,
                             autoattack_samples=ATTACK_IMAGES, apgd_curve_samples=ATTACK_IMAGES)


def classifier_config(name: str, dataset_key: str, method: Any, scale: str, seed: int,
                      data_dir: Optional[str], description: str,
                      train_overrides: Optional[Dict[str, Any]] = None) -> ExperimentConfig:
  """The standard classifier experiment config for a dataset, method and scale."""
  dataset = DATASET_OF[dataset_key]
  return ExperimentConfig(
      name=name, data=data_config(dataset, scale, data_dir),
      model=model_config(dataset, scale),
      train=train_config(dataset, scale, **(train_overrides or {})), method=method,
      eval=eval_config(dataset, scale), scale=scale, seed=seed, description=description)


def run_classifier(cfg: ExperimentConfig, ctx: RunContext,
                   reference_network: Optional[str] = None) -> Dict:
  """Runs a classifier experiment (any registered method, latent mixup included) end to end."""
  return train_and_evaluate(
      cfg, ctx.workdir, export_dir_for(ctx.export_root, cfg.name, cfg.scale, cfg.seed),
      log=ctx.log, strategy=ctx.strategy, rebuild=ctx.rebuild,
      reference_network=reference_network,
      stage_index=os.path.join(ctx.root, STAGE_INDEX) if ctx.root else None)


def runs_root(ctx: RunContext) -> str:
  """Where runs of other experiments live: the CLI's `--workdir` root, else
  `<workdir>/members` (a workdir given directly, as tests do)."""
  return ctx.root or os.path.join(ctx.workdir, "members")


def run_workdir(root: str, name: str, scale: str, seed: int) -> str:
  """Where `main.py --experiment=<name> --scale=<scale> --seed=<seed>` runs."""
  return os.path.join(root, name, scale, f"seed_{seed}")
