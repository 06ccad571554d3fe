"""What the latent stages contribute to a run's report: figures, notes and metrics.

Why apart from the stages: the figures (the inversion report, a grid of latent mixes) and the
bank's summary are read after the classifier's run, from the stages' results and records;
none of it changes what is trained. The mixes are drawn exactly as training draws them
(`latent.mixes`, the run's pairs and α), by `mix_drawer`, which the generator's evaluators
(`evaluation.generator`) use as well.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict

import numpy as np

from latmix_tf import reports
from latmix_tf.data.sources import get_info
from latmix_tf.generative.reports import write_inversion_report
from latmix_tf.latent.mixes import PairSampler, mixed_examples
from latmix_tf.latent.stages import LatentStages

GRID = os.path.join("generative", "latent_mixed_grid.png")


def mix_drawer(latent: LatentStages, num_classes: int, pairs: str = "random",
               alpha: float = 1.0) -> Callable[[int, int], Dict[str, np.ndarray]]:
  """`draw(n, seed)`: n decoded latent mixes of the run's pairs and α, as training draws them."""
  sampler = PairSampler(latent.bank.labels, num_classes, pairs)
  return lambda n, seed: mixed_examples(latent.generator, latent.bank, sampler, num_classes,
                                        n, alpha, seed)


def latent_report(latent: LatentStages, out_dir: str, splits, seed: int, dataset: str,
                  draw: Callable[[int, int], Dict[str, np.ndarray]]) -> Dict[str, Any]:
  """The figures of what the run trained on, the stages' notes and metrics."""
  gen, bank, records = latent.generator, latent.bank, latent.records
  generator_cfg = latent.generator_config
  class_names = get_info(dataset).class_names
  figures = list(write_inversion_report(gen, bank, splits.x_train,
                                        os.path.join(out_dir, "generative"), seed=seed,
                                        class_names=class_names).values())
  grid = reports.plot_mixed_grid(draw(8, seed), splits.x_train, class_names,
                                 os.path.join(out_dir, GRID))
  summary = bank.summary()
  metrics = {f"bank/{k}": v for k, v in summary.items()}
  for name, record in records.items():
    metrics[f"stage/{name}/seconds"] = record.get("seconds", 0.0)
  notes = [f"generator: {generator_cfg.kind}"
           + (f" + recall term (w={generator_cfg.recon_weight:g})"
              if generator_cfg.recon_weight > 0 else "")
           + f", weights {gen.checkpoint_hash}",
           f"latent bank: {json.dumps(summary)}",
           "stages: " + ", ".join(f"{n} {r['status']} ({r.get('seconds', 0.0):.0f} s of work)"
                                  for n, r in records.items())]
  return {"figures": [grid] + figures, "notes": notes, "metrics": metrics}
