"""`build_latent_mixup`: the stages Latent-Mixup consumes, then the method itself.

The method factory of the training registry calls this with the run's `MethodContext`:

  1. "generator" stage: the DCGAN (with or without the recall term) or the VAE;
  2. "encoder" stage, only when `inversion_start` says the generator brought no encoder of
     its own (the plain DCGAN) - decided once, there;
  3. "bank" stage: every training image inverted (encoder start + latent optimisation);
  4. "frechet" stage: the generator's Fréchet distance in the features of the dataset's
     named reference network (when the context names one).
The returned `LatentMixup` lists the consumed stages' key hashes in `upstream` (so the
classifier stage is keyed by them) and writes its figures in `report`. Stage directories sit
under the run's workdir: generator/, encoder/, bank/, frechet/ (figures: generative/); with
`ctx.stage_index` set, a stage of equal key another run finished (the default recipe's
generator and bank, for an ablation that only changes the mixing) is copied, not redone.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Dict, Optional

from latmix_tf import distribute, export, reports, stages
from latmix_tf.data.sources import array_fingerprint, get_info
from latmix_tf.generative.frechet import frechet_stage
from latmix_tf.generative.reports import write_inversion_report
from latmix_tf.generative.train import generator_stage
from latmix_tf.latent.bank import bank_stage
from latmix_tf.latent.encoder import encoder_stage
from latmix_tf.latent.inversion import inversion_start
from latmix_tf.latent.method import LatentMixup, LatentMixupConfig, mixed_examples
from latmix_tf.latent.mix_quality import mix_quality
from latmix_tf.training.method import MethodContext


def build_latent_mixup(cfg: LatentMixupConfig, ctx: MethodContext) -> LatentMixup:
  """Runs (or loads) the generator, encoder, bank and Fréchet stages; returns the method."""
  if ctx.splits is None or ctx.workdir is None:
    raise ValueError("Latent-Mixup needs the data splits and a run directory in its "
                     "MethodContext (train_and_evaluate provides both).")
  splits, log, rebuild = ctx.splits, ctx.log, stages.downstream(ctx.rebuild)
  folder = lambda name: os.path.join(ctx.workdir, name)  # noqa: E731
  records = {}
  gen_result = generator_stage(cfg.generator, splits, folder("generator"), seed=ctx.seed,
                               rebuild="generator" in rebuild, log=log, strategy=ctx.strategy,
                               index=ctx.stage_index)
  gen, records["generator"] = gen_result.value, gen_result.record
  # The bank is keyed by the generator's stage key *and* its weights: a generator retrained
  # under the same key on another machine may differ in the last bits.
  upstream = {"generator": gen_result.record["key_hash"], "generator_weights": gen.checkpoint_hash}
  encoder = None
  if inversion_start(gen, cfg.inversion) == "encoder":
    enc = encoder_stage(gen, gen.checkpoint_hash, splits.x_train,
                        array_fingerprint(splits.x_train), cfg.inversion, folder("encoder"),
                        seed=ctx.seed, rebuild="encoder" in rebuild, log=log,
                        index=ctx.stage_index)
    encoder, records["encoder"] = enc.value, enc.record
    upstream["encoder"] = enc.record["key_hash"]
  bank_result = bank_stage(gen, encoder, splits.x_train, splits.y_train, cfg.inversion,
                           folder("bank"), upstream, rebuild="bank" in rebuild, log=log,
                           seed=ctx.seed, strategy=ctx.strategy, index=ctx.stage_index)
  bank, records["bank"] = bank_result.value, bank_result.record
  summary = bank.summary()
  log(f"latent bank: mean PSNR {summary['mean_psnr']:.2f} dB over {len(bank)} training images")
  if ctx.reference_network and distribute.is_chief(ctx.strategy):  # the chief's file
    records["frechet"] = frechet_stage(gen, records["generator"]["key_hash"], splits.x_test,
                                       ctx.reference_network, folder("frechet"), seed=ctx.seed,
                                       log=log, index=ctx.stage_index).record
  reporter = functools.partial(
      _report, records=records, splits=splits, seed=ctx.seed, dataset=ctx.dataset,
      reference_network=ctx.reference_network if "frechet" in records else None)
  method = LatentMixup(cfg, gen=gen, bank=bank, batch_size=ctx.batch_size,
                       upstream={"bank": bank_result.record["key_hash"]}, reporter=reporter)
  method.build(None, splits.num_classes)  # the report's mixed grid needs the pair sampler
  return method


def _report(method: LatentMixup, out_dir: str, records: Dict[str, Dict], splits, seed: int,
            dataset: str, reference_network: Optional[str] = None,
            mix_samples: int = 2000) -> Dict[str, Any]:
  """The figures of what latent mixup trained on, its stage notes and metrics (with a
  reference network: how it sees `mix_samples` training mixes, `latent.mix_quality`)."""
  cfg = method.cfg
  class_names = get_info(dataset).class_names
  figures_dir = os.path.join(out_dir, "generative")
  figures = list(write_inversion_report(method.gen, method.bank, splits.x_train, figures_dir,
                                        seed=seed, class_names=class_names).values())
  grid = reports.plot_mixed_grid(mixed_examples(method, 8, seed=seed), splits.x_train,
                                 class_names, os.path.join(figures_dir, "latent_mixed_grid.png"))
  summary = method.bank.summary()
  metrics = {f"bank/{k}": v for k, v in summary.items()}
  for name, record in records.items():
    metrics[f"stage/{name}/seconds"] = record.get("seconds", 0.0)
  notes = [f"generator: {cfg.generator.kind}"
           + (f" + recall term (w={cfg.generator.recon_weight:g})"
              if cfg.generator.recon_weight > 0 else "")
           + f", weights {method.gen.checkpoint_hash}",
           f"latent bank: {json.dumps(summary)}",
           "stages: " + ", ".join(f"{n} {r['status']} ({r.get('seconds', 0.0):.0f} s of work)"
                                  for n, r in records.items())]
  if reference_network:
    n = min(mix_samples, len(method.bank))
    quality = mix_quality(mixed_examples(method, n, seed=seed + 1), method.gen.decode_numpy,
                          method.bank.z, splits.x_train, splits.y_train,
                          functools.partial(export.predict_probabilities,
                                            export.load_classifier(reference_network)))
    metrics.update(quality)
    notes.append(
        f"decoded mixes in the reference network's eyes ({n} mixes as training draws them): "
        f"p(mixed label) {quality['mix/label_confidence']:.3f}, mass on the two source "
        f"classes {quality['mix/source_mass']:.3f}, top class = the larger-weight class "
        f"{quality['mix/dominant_agreement']:.3f}; p(true class) on the real images "
        f"{quality['mix/real_confidence']:.3f}, on their reconstructions G(z) "
        f"{quality['mix/recon_confidence']:.3f}")
  if "frechet" in records:
    fd = records["frechet"]["outputs"]
    metrics["generator/frechet_distance"] = fd["frechet_distance"]
    notes.append(f"generator Fréchet distance {fd['frechet_distance']:.2f}: {fd['num_samples']} "
                 f"samples vs as many test images, in the penultimate-layer features of the "
                 f"reference network {fd['feature_model']} (not the Inception FID)")
  return {"figures": [grid] + figures, "notes": notes, "metrics": metrics}
