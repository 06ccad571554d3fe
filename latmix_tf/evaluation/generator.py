"""Evaluators of a generator and of the latent mixes a run trained on, in a reference network's
eyes: the generator's Fréchet distance and the mixes' quality.

Why on the evaluation side: both measure generated images with a fixed classifier (the
dataset's named reference network, `erm_<dataset>`) and change nothing that is trained. The
runner hands them the latent stages' results and the reference network after the classifier's
evaluation; the latent stages themselves never see a reference network. Same interface as the
classifier's evaluators (an `EvalResult` of metrics, figures and notes), chosen by name.

  mix_quality  `latent.mix_quality` on `mix_samples` mixes drawn exactly as training draws
               them (the run's pairs and α);
  frechet      the "frechet" stage (`generative.frechet`): a cached, keyed stage of its own,
               since it costs minutes at full scale and depends on the generator alone.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from latmix_tf import export
from latmix_tf.evaluation.evaluator import EvalResult
from latmix_tf.generative.frechet import frechet_stage
from latmix_tf.latent.mix_quality import mix_quality

DEFAULT = ("mix_quality", "frechet")


@dataclasses.dataclass(frozen=True)
class GeneratorContext:
  """What the generator's evaluators read.

  Attributes:
    generator: the frozen generative model; generator_key: its stage's key hash.
    bank: the latent bank of the training split.
    draw: `draw(n, seed)` -> n latent mixes as training draws them (`latent.mixes`).
    x_train, y_train, x_test: the data splits' arrays (uint8 images, int labels).
    reference_network: export dir of the dataset's reference classifier.
    workdir: the run directory (the "frechet" stage folder sits below it).
    seed, log, stage_index, rebuild: as for every stage.
  """
  generator: Any
  generator_key: str
  bank: Any
  draw: Callable[[int, int], Dict[str, np.ndarray]]
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  reference_network: str
  workdir: str
  seed: int = 0
  log: Callable[[str], None] = print
  stage_index: Optional[str] = None
  rebuild: Tuple[str, ...] = ()
  mix_samples: int = 2000


def frechet(ctx: GeneratorContext) -> EvalResult:
  record = frechet_stage(ctx.generator, ctx.generator_key, ctx.x_test, ctx.reference_network,
                         os.path.join(ctx.workdir, "frechet"), seed=ctx.seed, log=ctx.log,
                         index=ctx.stage_index, rebuild="frechet" in ctx.rebuild).record
  fd = record["outputs"]
  return EvalResult(
      metrics={"generator/frechet_distance": fd["frechet_distance"],
               "stage/frechet/seconds": record.get("seconds", 0.0)},
      notes=[f"generator Fréchet distance {fd['frechet_distance']:.2f}: {fd['num_samples']} "
             f"samples vs as many test images, in the penultimate-layer features of the "
             f"reference network {fd['feature_model']} (not the Inception FID); frechet "
             f"{record['status']} ({record.get('seconds', 0.0):.0f} s of work)"])


def mix_quality_of_mixes(ctx: GeneratorContext) -> EvalResult:
  n = min(ctx.mix_samples, len(ctx.bank))
  reference = export.load_classifier(ctx.reference_network)
  quality = mix_quality(ctx.draw(n, ctx.seed + 1), ctx.generator.decode_numpy, ctx.bank.z,
                        ctx.x_train, ctx.y_train,
                        lambda x: export.predict_probabilities(reference, x))
  return EvalResult(metrics=quality, notes=[
      f"decoded mixes in the reference network's eyes ({n} mixes as training draws them): "
      f"p(mixed label) {quality['mix/label_confidence']:.3f}, mass on the two source "
      f"classes {quality['mix/source_mass']:.3f}, top class = the larger-weight class "
      f"{quality['mix/dominant_agreement']:.3f}; p(true class) on the real images "
      f"{quality['mix/real_confidence']:.3f}, on their reconstructions G(z) "
      f"{quality['mix/recon_confidence']:.3f}"])


GENERATOR_EVALUATORS: Dict[str, Callable[[GeneratorContext], EvalResult]] = {
    "frechet": frechet, "mix_quality": mix_quality_of_mixes}


def evaluate_generator(ctx: GeneratorContext, names: Sequence[str] = DEFAULT) -> EvalResult:
  """The named evaluators in order, their metrics and notes merged."""
  unknown = [n for n in names if n not in GENERATOR_EVALUATORS]
  if unknown:
    raise ValueError(f"Unknown generator evaluators {unknown}; valid: "
                     f"{', '.join(GENERATOR_EVALUATORS)}.")
  metrics, notes = {}, []
  for name in names:
    result = GENERATOR_EVALUATORS[name](ctx)
    metrics.update(result.metrics)
    notes += result.notes
  return EvalResult(metrics=metrics, notes=notes)
