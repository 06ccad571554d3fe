"""Latent-Mixup end to end: generator -> encoder -> latent bank -> classifier -> evaluation.

Run:  python main.py --experiment=latent_mixup_fmnist          (the project's main job)
      python main.py --experiment=latent_mixup_vae_fmnist      (VAE instead of the DCGAN)
Stages, each cached in the workdir and keyed by its config, data fingerprint and (for the
bank) the generator's weight hash; a second run skips straight to the classifier, and
`--rebuild=generator,bank` forces the expensive stages:
  1. train the generative model (DCGAN or VAE) on the training split;
  2. train the inversion encoder E (only for a generator without its own encoder: the VAE's
     posterior mean and the recall-trained DCGAN's E(x) start the inversion themselves);
  3. invert every training image (encoder guess + K Adam steps, stochastic clipping);
  4. train the classifier on real + latent-mixed batches (the one training loop);
  5. export, evaluate the SavedModel (blur, DeepFool, FGSM/PGD, ECE), write the report.
Expect (2 CPU cores, full scale, Fashion-MNIST): see README "Latent-Mixup" for the times
and figures measured per stage.
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict


from latmix_tf import export, frechet, generative_reports, reports
from latmix_tf.data.sources import get_info
from latmix_tf.config import GeneratorConfig, InversionConfig
from latmix_tf.data import load_dataset, make_splits
from latmix_tf.generative import train_or_load_generator
from latmix_tf.inversion_encoder import train_encoder
from latmix_tf.latent_bank import build_or_load_bank
from latmix_tf.latent_mixup import LatentMixup, LatentMixupConfig, mixed_examples
from latmix_tf.runner import train_and_evaluate

from experiments.common import (DATASET_OF, Experiment, RunContext, classifier_config,
                                export_dir_for)


# Generator variants: "dcgan" is the DCGAN trained with the recall term (an encoder E and
# RECALL_WEIGHT * ||G(E(x)) - x||^2 beside the adversarial loss); "dcgan_plain" the textbook
# DCGAN, inverted by a post-hoc encoder; "vae" the beta-VAE.
KINDS = ("dcgan", "dcgan_plain", "vae")
# ~ the per-image sum of squared errors (784 pixels) against a per-image adversarial loss,
# the scale VAE-GAN / alpha-GAN give reconstruction. Measured on Fashion-MNIST, 3 epochs,
# first 1024 training images, E(x) + 20 steps, G/D/E lr 2e-4: w = 0 (random starts, the
# plain DCGAN's best) 17.1 dB, w = 10: 15.5, 50: 18.8, 200: 20.1, 1000: 21.2 dB; w = 3000
# did not lower the training reconstruction error below w = 1000's (0.0118 at epoch 3).
RECALL_WEIGHT = 1000.0
# What did: faster steps for G and E (D stays at 2e-4). Same probe, w = 1000: E at 1e-3
# 21.6 dB; E at 1e-3 and G at 5e-4 22.9 dB, with the game more balanced (D(G(z)) 0.37).
RECALL_G_LEARNING_RATE = 5e-4


def generator_config(kind: str, dataset: str, scale: str) -> GeneratorConfig:
  d = 128 if dataset == "cifar10" else 64
  recon = RECALL_WEIGHT if kind == "dcgan" else 0.0
  base = "vae" if kind == "vae" else "dcgan"
  if scale == "smoke":
    return GeneratorConfig(kind=base, latent_dim=8, base_filters=8, epochs=1, batch_size=32,
                           steps_per_epoch=3, recon_weight=recon)
  epochs = {"full": 8 if base == "dcgan" else 10, "quick": 2}[scale]
  if kind == "vae":
    return GeneratorConfig(kind="vae", latent_dim=d, prior="normal", base_filters=32,
                           epochs=epochs, learning_rate=1e-3, beta_1=0.9, kl_weight=0.1)
  return GeneratorConfig(kind="dcgan", latent_dim=d, prior="uniform", base_filters=32,
                         epochs=epochs, recon_weight=recon,
                         g_learning_rate=RECALL_G_LEARNING_RATE if recon else None)


def inversion_config(scale: str, kind: str = "dcgan") -> InversionConfig:
  if scale == "smoke":
    return InversionConfig(encoder_epochs=1, encoder_steps_per_epoch=3, steps=3,
                           batch_size=64, chunk_size=128, encoder_batch_size=32)
  # Measured (benchmarks/inversion_speed.py): the feature loss costs 2-4.5x per step and
  # did not raise pixel PSNR for either generator, so the full recipe uses pixel MSE only;
  # 20 steps at lr 0.1 match 200 random-start steps (smoke keeps w > 0 to test that path).
  # From the recall-trained DCGAN's own E(x), lr 0.1 overshoots: 0.01 gave 21.2 dB where
  # 0.05 gave 20.95 (w = 1000, 3 epochs, first 1024 images).
  return InversionConfig(encoder_epochs=3 if scale == "full" else 1, steps=20,
                         learning_rate=0.01 if kind == "dcgan" else 0.1, feature_weight=0.0,
                         batch_size=256, chunk_size=8192)


def _run(cfg, ctx: RunContext, dataset_key: str) -> Dict:
  log, stages = ctx.log, {}
  lm: LatentMixupConfig = cfg.method
  t = time.time()
  splits = make_splits(load_dataset(cfg.data.name, cfg.data.data_dir, log=log), cfg.data)
  stages["data_seconds"] = time.time() - t

  t = time.time()
  gen = train_or_load_generator(lm.generator, splits, os.path.join(ctx.workdir, "generator"),
                                seed=cfg.seed, rebuild="generator" in ctx.rebuild, log=log,
                                strategy=ctx.strategy)
  stages["generator_seconds"] = time.time() - t
  key = {"generator": gen.checkpoint_hash}
  t = time.time()
  encoder = None
  if gen.encode is None and not lm.inversion.random_starts:
    encoder = train_encoder(gen, splits.x_train, lm.inversion,
                            os.path.join(ctx.workdir, "inversion"), key, seed=cfg.seed, log=log)
  stages["encoder_seconds"] = time.time() - t
  t = time.time()
  bank = build_or_load_bank(gen, encoder, splits.x_train, splits.y_train, lm.inversion,
                            os.path.join(ctx.workdir, "bank"), key,
                            rebuild="bank" in ctx.rebuild, log=log, seed=cfg.seed,
                            strategy=ctx.strategy)
  stages["bank_seconds"] = time.time() - t
  summary = bank.summary()
  log(f"latent bank: mean PSNR {summary['mean_psnr']:.2f} dB over "
      f"{len(bank)} training images")

  method = LatentMixup(lm, gen=gen, bank=bank, batch_size=cfg.data.batch_size)
  method.build(None, splits.num_classes)
  figures_dir = os.path.join(ctx.workdir, "generative")
  class_names = get_info(cfg.data.name).class_names
  figures = list(generative_reports.write_inversion_report(
      gen, bank, splits.x_train, figures_dir, seed=cfg.seed, class_names=class_names).values())
  grid = reports.plot_mixed_grid(mixed_examples(method, 8, seed=cfg.seed), splits.x_train,
                                 class_names,
                                 os.path.join(figures_dir, "latent_mixed_grid.png"))
  t = time.time()
  metrics = train_and_evaluate(
      cfg, os.path.join(ctx.workdir, "classifier"),
      export_dir_for(ctx.export_root, cfg.name, cfg.scale, cfg.seed), log=log,
      strategy=ctx.strategy, method=method, splits=splits,
      rebuild="classifier" in ctx.rebuild, report_figures=[grid] + figures,
      report_notes=[f"generator: {lm.generator.kind}"
                    + (f" + recall term (w={lm.generator.recon_weight:g})"
                       if lm.generator.recon_weight > 0 else "")
                    + f", weights {gen.checkpoint_hash}",
                    f"latent bank: {json.dumps(summary)}"])
  stages["classifier_and_eval_seconds"] = time.time() - t
  fd = _frechet(gen, splits, ctx, cfg, dataset_key, figures_dir)
  out = {**metrics, **{f"bank/{k}": v for k, v in summary.items()},
         "generator/frechet_distance": fd["frechet_distance"],
         **{f"stage/{k}": v for k, v in stages.items()}}
  export.write_json_atomic(os.path.join(ctx.workdir, "stages.json"), out)
  clf_dir = os.path.join(ctx.workdir, "classifier")
  clf_figs = sorted(os.path.join(root, f) for root, _, files in os.walk(clf_dir)
                    for f in files if f.endswith(".png"))
  reports.write_markdown(
      os.path.join(ctx.workdir, "report.md"), f"{cfg.name} (seed {cfg.seed})",
      cfg.description + "\n\nStages: generator -> encoder -> latent bank -> classifier -> "
      "evaluation (classifier details: classifier/report.md). Generator Fréchet distance: "
      f"{fd['num_samples']} samples vs as many test images, in the penultimate-layer features "
      f"of {fd['feature_model']} (not the Inception FID).", out, [grid] + figures + clf_figs)
  log("stages: " + "  ".join(f"{k}={v:.0f}s" for k, v in stages.items()))
  return out


def _frechet(gen, splits, ctx: RunContext, cfg, dataset_key: str, out_dir: str) -> Dict:
  """The generator's Fréchet distance (10k samples vs 10k test images, issue #4).

  Feature network: the penultimate layer of the ERM classifier of the same dataset and scale
  (seed 0) when it has been exported - one fixed network, so GAN, VAE and runs of every seed
  are comparable - else this run's own classifier (recorded in the result, so a reader
  knows which). Not the Inception FID: see latmix_tf/frechet.py.
  """
  reference = export_dir_for(ctx.export_root, f"erm_{dataset_key}", cfg.scale, 0)
  own = export_dir_for(ctx.export_root, cfg.name, cfg.scale, cfg.seed)
  features = reference if os.path.isfile(os.path.join(reference, "saved_model.pb")) else own
  return frechet.cached_generator_frechet_distance(
      gen, splits.x_test, features, os.path.join(out_dir, "frechet.json"), seed=cfg.seed,
      log=ctx.log)


def _make(kind: str, dataset_key: str) -> Experiment:
  name = f"latent_mixup_{'' if kind == 'dcgan' else kind + '_'}{dataset_key}"
  label = {"dcgan": "DCGAN + recall term", "dcgan_plain": "plain DCGAN", "vae": "VAE"}[kind]
  description = (
      f"Latent-Mixup ({label}) on {dataset_key}: the classifier trains on real batches "
      f"plus images G(λ·z_i + (1−λ)·z_j) decoded from mixed latent codes of training pairs, "
      f"labelled λ·y_i + (1−λ)·y_j, λ ~ Beta(α, α).")

  def get_config(scale="full", seed=0, data_dir=None):
    dataset = DATASET_OF[dataset_key]
    method = LatentMixupConfig(generator=generator_config(kind, dataset, scale),
                               inversion=inversion_config(scale, kind))
    return classifier_config(name, dataset_key, method, scale, seed, data_dir, description)
  return Experiment(name, description, get_config,
                    lambda cfg, ctx: _run(cfg, ctx, dataset_key))


EXPERIMENTS = {e.name: e for e in (_make(k, d) for k in KINDS
                                   for d in ("mnist", "fmnist", "cifar10"))}
