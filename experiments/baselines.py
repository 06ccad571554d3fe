"""The defences Latent-Mixup is compared with, trained exactly like ERM (same data, model,
optimizer, epochs, export and evaluation); only the method object differs.

  mixup_{ds}           input mixup, λ ~ Beta(1, 1) per example (Zhang et al. 2017)
  manifold_mixup_{ds}  hidden-state mixup at a random block, λ ~ Beta(2, 2) (Verma et al. 2018)
  fgsm_at_{ds}         "fast" adversarial training: FGSM from a random start, step 1.25 ε
  pgd_at_{ds}          PGD-7 adversarial training, step 2.5 ε / 7, random start (Madry et al.)
  gat_{ds}             Generative Adversarial Trainer (Lee, Han, Lee 2017), L∞ bound ε
  trades_{ds}          TRADES (Zhang et al. 2019): CE + 6·KL to a KL-PGD point, the paper's
                       inner loop at our ε (MNIST-type: 40 steps of ε/30; CIFAR-10: 10 of ε/4.43)
  mixup_at_{ds}        interpolated adversarial training (Lamb et al. 2019): mixup batch and
                       its PGD-7 adversarial examples against the soft labels, 50/50
  on_manifold_at_{ds}  on-manifold adversarial training (Stutz et al. 2019): PGD-7 on a latent
                       perturbation ‖δ‖∞ ≤ 0.1 of each bank code, decoded by latent_mixup_{ds}'s
                       generator (its generator and bank stages, shared), and the clean batch,
                       50/50 (the paper's values for a generator of all classes)
  on_manifold_pgd_at_fmnist  the same with input-space PGD-7 examples in place of the clean
                       half (the paper's combination; Fashion-MNIST only)
  latent_mixup_at_{ds} interpolated adversarial training on latent mixes: latent_mixup_{ds}'s
                       batches (real + decoded mixes, its generator and bank stages, shared)
                       and pgd_at's step, clean and adversarial rows 50/50 - a composition
                       (`training.compose`), no class of its own
  latent_mixup_vae_at_fmnist  the same on latent_mixup_vae_fmnist's VAE (Fashion-MNIST only)
with ds in {mnist, fmnist, cifar10}; ε = 0.3 on MNIST, 0.1 on Fashion-MNIST and 8/255 on
CIFAR-10 (`latmix_tf.training.adversarial.DEFAULT_EPSILON`: each dataset's standard threat
model, the budget its AutoAttack column reports).

Run:  python main.py --experiment=pgd_at_fmnist   (default scale `full`; `--scale=smoke`: seconds)
Expect (hypotheses, checked against ERM at the same scale): adversarial training
(pgd_at, fgsm_at, to a lesser degree gat) raises PGD accuracy at ε far above ERM's, at some
cost in clean accuracy; mixup and manifold mixup keep clean accuracy within ~1 point of ERM
and mostly improve calibration (ECE) and the blur curve, not PGD accuracy.
Cost of a training step relative to ERM (CPU seconds per step, Fashion-MNIST, full-scale
CNN, batch 128, measured on the shared 2-core machine): mixup 1.0x, manifold mixup 1.05x,
fgsm_at 1.4x, gat 3.6x, pgd_at 5.3x (k + 1 forward/backward passes). By the same count of
passes (no timing recorded): trades k + 1 attack passes (k = 40 on 28x28 sets) + 2 training
passes; mixup_at pgd_at's k + 1 on a batch of 2B; on_manifold_at k + 1 passes through decoder
and classifier (+ pgd_at's for on_manifold_pgd_at). Evaluation costs the same for every
method. The robust methods' knobs (β, η, weights) are the papers' values or untuned
defaults: choose them on the validation split, not the test set.
"""

import dataclasses

from latmix_tf.training.on_manifold_at import OnManifoldATConfig
from latmix_tf.training import (AdversarialConfig, ComposedConfig, GATConfig,
                                ManifoldMixupConfig, MixupConfig)
from latmix_tf.training.adversarial import DEFAULT_EPSILON
from latmix_tf.training.interpolated_at import MixupATConfig
from latmix_tf.training.trades import TradesConfig, paper_inner_loop

from experiments import latent_mixup
from experiments.common import DATASET_OF, Experiment, classifier_config, run_classifier

DATASET_KEYS = ("mnist", "fmnist", "cifar10")


def _method(kind: str, dataset_key: str, scale: str):
  """The method config of `kind` for a dataset at a scale."""
  dataset = DATASET_OF[dataset_key]
  eps = DEFAULT_EPSILON[dataset]
  if kind == "mixup":
    return MixupConfig(alpha=1.0)
  if kind == "manifold_mixup":
    # The paper's boundaries {input, after residual stage 1, after stage 2}: for the ResNet
    # (stem conv = block 1) that is blocks {0, 2, 3}; for the CNN {0, 1, 2}.
    return ManifoldMixupConfig(alpha=2.0,
                               layers=(0, 2, 3) if dataset == "cifar10" else (0, 1, 2))
  if kind == "fgsm_at":
    return AdversarialConfig(attack="fgsm", epsilon=eps)
  if kind == "pgd_at":
    return AdversarialConfig(attack="pgd", epsilon=eps, steps=2 if scale == "smoke" else 7)
  if kind == "gat":
    return GATConfig(epsilon=eps)
  if kind == "trades":
    steps, step_size = paper_inner_loop(dataset, eps)
    return TradesConfig(beta=6.0, epsilon=eps, steps=2 if scale == "smoke" else steps,
                        step_size=step_size)
  if kind == "mixup_at":
    return MixupATConfig(mixup=MixupConfig(alpha=1.0), adversarial=dataclasses.replace(
        _method("pgd_at", dataset_key, scale), adv_weight=0.5))
  if kind in ("on_manifold_at", "on_manifold_pgd_at"):
    # latent_mixup_{ds}'s generator (DCGAN + recall term) and inversion: the same stage keys.
    return OnManifoldATConfig(
        eta=0.1, steps=2 if scale == "smoke" else 7,
        clean_weight=0.0 if kind == "on_manifold_pgd_at" else 0.5,
        input_adversarial=(_method("pgd_at", dataset_key, scale)
                           if kind == "on_manifold_pgd_at" else None),
        generator=latent_mixup.generator_config("dcgan", dataset, scale),
        inversion=latent_mixup.inversion_config(scale, "dcgan"))
  if kind in ("latent_mixup_at", "latent_mixup_vae_at"):
    # IAT with the latent-mixed batch in place of input mixup: the registered Latent-Mixup
    # recipe as the batch source, mixup_at's attack and 50/50 weighting as the step.
    generator = "vae" if kind == "latent_mixup_vae_at" else "dcgan"
    source = latent_mixup.EXPERIMENTS[latent_mixup.experiment_name(generator, dataset_key)]
    return ComposedConfig(name="latent_mixup_at",
                          source=source.get_config(scale=scale).method,
                          step=_method("mixup_at", dataset_key, scale).adversarial)
  raise ValueError(f"Unknown baseline {kind!r}.")


DESCRIPTIONS = {
    "mixup": "Input mixup (Zhang et al. 2017), alpha = 1, one lambda per example.",
    "manifold_mixup": "Manifold mixup (Verma et al. 2018), alpha = 2, random block k.",
    "fgsm_at": "Fast adversarial training (Wong et al. 2020): FGSM from a random start.",
    "pgd_at": "PGD-7 adversarial training (Madry et al. 2018), random start.",
    "gat": "Generative Adversarial Trainer (Lee, Han, Lee 2017): learned perturbation generator.",
    "trades": "TRADES (Zhang et al. 2019): CE + 6 KL(f(x) || f(x')), x' by PGD on the KL.",
    "mixup_at": "Interpolated adversarial training (Lamb et al. 2019): mixup + PGD-7, 50/50.",
    "on_manifold_at": "On-manifold adversarial training (Stutz et al. 2019): PGD-7 in the "
                      "latent space of the DCGAN, ||delta||_inf <= 0.1, and the clean batch, "
                      "50/50.",
    "on_manifold_pgd_at": "On-manifold adversarial training (Stutz et al. 2019) + input-space "
                          "PGD-7, 50/50.",
    "latent_mixup_at": "Interpolated adversarial training on latent mixes: Latent-Mixup's "
                       "batches (DCGAN + recall term) and their PGD-7 examples, 50/50.",
    "latent_mixup_vae_at": "Interpolated adversarial training on latent mixes: Latent-Mixup's "
                           "batches (VAE) and their PGD-7 examples, 50/50.",
}


def _make(kind: str, dataset_key: str) -> Experiment:
  name = f"{kind}_{dataset_key}"
  description = (f"{DESCRIPTIONS[kind]} On {dataset_key}, trained like erm_{dataset_key}; "
                 f"clean accuracy, blur sweep, DeepFool rho_adv, FGSM/PGD, ECE.")

  def get_config(scale="full", seed=0, data_dir=None):
    return classifier_config(name, dataset_key, _method(kind, dataset_key, scale), scale, seed,
                             data_dir, description)
  return Experiment(name, description, get_config, run_classifier)


# The combination on-manifold + input-space PGD-AT is a config of on_manifold_at; it is
# registered for Fashion-MNIST only, the dataset of the robust-training screening (each
# registered experiment adds a smoke run to the test suite).
DATASETS_OF_KIND = {"on_manifold_pgd_at": ("fmnist",), "latent_mixup_vae_at": ("fmnist",)}

EXPERIMENTS = {e.name: e for e in (_make(kind, ds) for kind in DESCRIPTIONS
                                   for ds in DATASETS_OF_KIND.get(kind, DATASET_KEYS))}
