"""Latent-Mixup end to end: generator -> encoder -> latent bank -> classifier -> evaluation.

Run:  python main.py --experiment=latent_mixup_fmnist          (the project's main job)
      python main.py --experiment=latent_mixup_vae_fmnist      (VAE instead of the DCGAN)
What runs (`latmix_tf.runner`: `latent.stages` then the method), each step a cached
stage keyed by its config, the data and the stages it consumes; a second run skips
straight to the report, and `--rebuild=generator` (or encoder, bank, classifier,
evaluation) redoes a stage and everything downstream of it:
  1. the generative model (DCGAN or VAE) on the training split;
  2. the inversion encoder E, only for a generator without its own (the plain DCGAN);
  3. every training image inverted (encoder guess + K Adam steps, stochastic clipping);
  4. the classifier on real + latent-mixed batches (the one training loop), exported;
  5. the SavedModel evaluated, the generator's Fréchet distance in the features of the
     dataset's reference network (`erm_<dataset>`, seed 0, quick scale: trained on demand),
     and the report.
Expect (2 CPU cores, full scale, Fashion-MNIST): see README "Latent-Mixup" for the times
and figures measured per stage.
"""

from __future__ import annotations

import os
from typing import Dict

import tensorflow as tf

from latmix_tf.generative.config import GeneratorConfig
from latmix_tf.latent.config import InversionConfig
from latmix_tf.data import load_dataset, make_splits
from latmix_tf.training.latent_mixup import LatentMixupConfig
from latmix_tf.runner import CLASSIFIER_DIR, classifier_stage
from latmix_tf.training import build_method

from experiments import erm
from experiments.common import (DATASET_OF, Experiment, RunContext, classifier_config,
                                export_dir_for, run_classifier, run_workdir, runs_root)


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


# The named feature network of every generator Fréchet distance on a dataset: the
# `erm_<dataset>` classifier of seed 0 at quick scale (smoke at smoke scale), built on demand
# through its classifier stage. One fixed network per dataset makes the distances of GANs,
# VAEs, seeds and scales comparable, whatever ran first.
REFERENCE = {"experiment": "erm", "seed": 0, "scale": {"smoke": "smoke", "quick": "quick",
                                                       "full": "quick"}}


def reference_network(dataset_key: str, scale: str, data_dir, ctx: RunContext) -> str:
  """The export dir of the dataset's reference classifier, trained if it is not cached."""
  ref = erm.EXPERIMENTS[f"{REFERENCE['experiment']}_{dataset_key}"]
  ref_scale, seed = REFERENCE["scale"][scale], REFERENCE["seed"]
  cfg = ref.get_config(scale=ref_scale, seed=seed, data_dir=data_dir)
  workdir = run_workdir(runs_root(ctx), ref.name, ref_scale, seed)
  export_dir = export_dir_for(ctx.export_root, ref.name, ref_scale, seed)
  ctx.log(f"reference network for the Fréchet distance: {ref.name} [{ref_scale}, seed {seed}]"
          f" -> {export_dir}")
  splits = make_splits(load_dataset(cfg.data.name, data_dir, log=ctx.log), cfg.data)
  classifier_stage(cfg, build_method(cfg.method), splits, os.path.join(workdir, CLASSIFIER_DIR),
                   export_dir, ctx.strategy or tf.distribute.get_strategy(), ctx.log)
  return export_dir


def _run(cfg, ctx: RunContext, dataset_key: str) -> Dict:
  reference = reference_network(dataset_key, cfg.scale, cfg.data.data_dir, ctx)
  return run_classifier(cfg, ctx, reference_network=reference)


def experiment_name(kind: str, dataset_key: str) -> str:
  return f"latent_mixup_{'' if kind == 'dcgan' else kind + '_'}{dataset_key}"


def _make(kind: str, dataset_key: str) -> Experiment:
  name = experiment_name(kind, dataset_key)
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
