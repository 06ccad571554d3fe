"""The explicit experiment registry: every runnable `--experiment=NAME`.

Each module defines its experiments and exports them in an `EXPERIMENTS` dict; this module
merges them. Nothing registers itself by being imported elsewhere.
"""

from typing import Dict

from experiments import ablations, baselines, compare, erm, latent_ablations, latent_mixup
from experiments.common import Experiment, RunContext

EXPERIMENTS: Dict[str, Experiment] = {}
for _module in (erm, baselines, ablations, latent_mixup, latent_ablations, compare):
  EXPERIMENTS.update(_module.EXPERIMENTS)


def get(name: str) -> Experiment:
  """Returns the experiment called `name`; raises ValueError listing the valid names."""
  if name not in EXPERIMENTS:
    raise ValueError(f"Unknown experiment {name!r}. Valid experiments: "
                     f"{', '.join(sorted(EXPERIMENTS))}.")
  return EXPERIMENTS[name]
