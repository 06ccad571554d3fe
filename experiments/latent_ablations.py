"""What makes Latent-Mixup work: one knob at a time from the default recipe.

Each ablation is `latent_mixup_fmnist` with exactly one change, registered as its own
experiment so that it runs, caches and resumes like any other:

  latent_mixup_frac05_fmnist      mixed_fraction 0.5 instead of 0.2
  latent_mixup_alpha02_fmnist     λ ~ Beta(0.2, 0.2) (mixes near the endpoints) instead of α = 1
  latent_mixup_alpha2_fmnist      λ ~ Beta(2, 2) (mixes near the middle)
  latent_mixup_diffclass_fmnist   pairs of different classes only
  latent_mixup_sameclass_fmnist   pairs of the same class only (labels stay one-hot)
  latent_mixup_k0_fmnist          inversion = E(x) alone (K = 0 refinement steps instead of
                                  20): does precise inversion matter?
  latent_mixup_inmix_fmnist       + input mixup (α = 1) on the real part of each batch
  latent_mixup_recon_fmnist       no mixing at all: every "pair" is an image with itself, so
                                  the extra examples are reconstructions G(z_i) with one-hot
                                  labels (the λ = 1 control: is the gain from interpolating,
                                  or from seeing smooth generator outputs?)

`ablation_fmnist` (in experiments/compare.py) trains ERM, default Latent-Mixup and all eight
at quick scale over seeds 0, 1, 2 and reports every row against ERM and against default
Latent-Mixup, with 95% CIs and Holm-corrected paired tests over the family.

Run:  python main.py --experiment=ablation_fmnist --scale=quick
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Tuple

from experiments import latent_mixup
from experiments.common import Experiment

# tag -> (what changes, how the default LatentMixupConfig becomes the ablation)
ABLATIONS: Dict[str, Tuple[str, Callable]] = {
    "frac05": ("mixed_fraction 0.5 (default 0.2)",
               lambda lm: dataclasses.replace(lm, mixed_fraction=0.5)),
    "alpha02": ("λ ~ Beta(0.2, 0.2) (default α = 1)",
                lambda lm: dataclasses.replace(lm, alpha=0.2)),
    "alpha2": ("λ ~ Beta(2, 2) (default α = 1)", lambda lm: dataclasses.replace(lm, alpha=2.0)),
    "diffclass": ("pairs of different classes (default: random pairs)",
                  lambda lm: dataclasses.replace(lm, pairs="different_class")),
    "sameclass": ("pairs of the same class (default: random pairs)",
                  lambda lm: dataclasses.replace(lm, pairs="same_class")),
    "k0": ("inversion = encoder guess E(x) only, K = 0 steps (default 20)",
           lambda lm: dataclasses.replace(lm, inversion=dataclasses.replace(lm.inversion,
                                                                            steps=0))),
    "inmix": ("+ input mixup (α = 1) on the real part of each batch",
              lambda lm: dataclasses.replace(lm, input_mixup_alpha=1.0)),
    "recon": ("reconstructions only: each image paired with itself, z = z_i (λ = 1 control)",
              lambda lm: dataclasses.replace(lm, pairs="self")),
}


def _make(tag: str, dataset_key: str = "fmnist") -> Experiment:
  what, change = ABLATIONS[tag]
  base = latent_mixup.EXPERIMENTS[f"latent_mixup_{dataset_key}"]
  name = f"latent_mixup_{tag}_{dataset_key}"
  description = f"Ablation of Latent-Mixup (DCGAN + recall term) on {dataset_key}: {what}."

  def get_config(scale="full", seed=0, data_dir=None):
    cfg = base.get_config(scale=scale, seed=seed, data_dir=data_dir)
    return dataclasses.replace(cfg, name=name, method=change(cfg.method),
                               description=description)
  return Experiment(name, description, get_config, base.run)


EXPERIMENTS = {e.name: e for e in (_make(tag) for tag in ABLATIONS)}
