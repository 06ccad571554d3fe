"""Frozen configuration dataclasses shared by every experiment.

Configs are plain, hashable, immutable values: an experiment is fully described by one
`ExperimentConfig`, and every artifact (checkpoint, SavedModel, latent bank) records the
config that produced it, so a later run can tell whether a cached artifact still matches.
Flags are turned into these objects in `main.py` only; the library takes them as arguments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Optional, Tuple

SCALES = ("smoke", "quick", "full")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which dataset to load and how to feed it.

  Attributes:
    name: one of `latmix_tf.data.DATASETS` ("mnist", "fashion_mnist", "cifar10").
    data_dir: local folder with the canonical files; None means the default
      (`$LATMIX_DATA_DIR` or `~/latmix_data`).
    batch_size: global batch size of the training pipeline.
    val_size: examples carved from the training set (fixed split) for model selection.
    augment: "none", "flip" (horizontal), "shift" (random translation by up to 2 px, 4 for
      32x32 images, reflect fill) or "shift_flip".
    train_limit / test_limit: keep only the first N examples (smoke scale); None keeps all.
  """
  name: str = "fashion_mnist"
  data_dir: Optional[str] = None
  batch_size: int = 128
  val_size: int = 5000
  augment: str = "none"
  train_limit: Optional[int] = None
  test_limit: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Classifier architecture: "cnn" (28x28 sets) or "resnet" (pre-activation ResNet, CIFAR-10)."""
  arch: str = "cnn"
  widths: Tuple[int, ...] = (32, 64, 128)
  dense_units: int = 128
  dropout: float = 0.3
  num_classes: int = 10


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation settings of the single training loop.

  `steps_per_epoch=None` runs full epochs; smoke configs cap it. `deterministic` turns on
  TF op determinism (measured cost in README) so that reruns and resumed runs are bitwise
  comparable.
  """
  epochs: int = 15
  learning_rate: float = 2e-3
  weight_decay: float = 5e-4
  optimizer: str = "adamw"
  lr_schedule: str = "cosine"
  warmup_epochs: float = 0.0
  label_smoothing: float = 0.0
  steps_per_epoch: Optional[int] = None
  deterministic: bool = False
  keep_checkpoints: int = 2
  # Seconds between mid-epoch checkpoints (None: after each epoch only). It changes no
  # weight, so the classifier's stage key leaves it out (runner.classifier_config_hash).
  checkpoint_every_s: Optional[float] = 300.0


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Robustness evaluation settings (see `latmix_tf.evaluation`)."""
  blur_sigmas: Tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
  deepfool_samples: Optional[int] = 1000
  deepfool_max_iter: int = 50
  deepfool_overshoot: float = 0.02
  deepfool_candidates: int = 10
  attack_epsilons: Tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)
  pgd_steps: int = 10
  pgd_step_size: Optional[float] = None
  attack_samples: Optional[int] = None
  batch_size: int = 500
  ece_bins: int = 15
  deepfool_batch_size: int = 128  # images per compiled DeepFool call
  attack_seed: int = 0            # stateless seed of the PGD / FGSM random starts
  # AutoAttack (Croce & Hein 2020): ((norm, eps), ...) threat models, () = skipped; version
  # "standard" (APGD-CE, APGD-T, FAB-T, Square) or "cheap" (APGD-CE, APGD-T); on the first
  # `autoattack_samples` test images. Per-dataset budgets: `EvalConfig.for_dataset`.
  autoattack_budgets: Tuple[Tuple[str, float], ...] = (("Linf", 0.1),)
  autoattack_version: str = "standard"
  autoattack_samples: Optional[int] = 1000
  autoattack_iters: Optional[int] = None  # APGD / FAB iterations; None = the paper's 100
  # APGD-CE (L-inf) accuracy against eps; () = skipped.
  apgd_curve_epsilons: Tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)
  apgd_curve_iters: int = 100
  apgd_curve_samples: Optional[int] = 1000
  # Common corruptions (MNIST-C / CIFAR-10-C by channel count): () = all 15; severities
  # () = the benchmark's protocol; the first `corruption_samples` test images (None = all).
  corruptions: Optional[Tuple[str, ...]] = ()  # None = skipped
  corruption_severities: Tuple[int, ...] = ()
  corruption_samples: Optional[int] = None
  corruption_seed: int = 0
  # Sanity checks (Carlini et al. 2019): slack on accuracy comparisons, the unbounded attack.
  sanity_tolerance: float = 0.01
  sanity_samples: Optional[int] = 500
  sanity_unbounded_steps: int = 20
  # Which evaluators run, in this order (`latmix_tf.evaluation.evaluators.EVALUATORS`); the
  # default is the whole suite. "sanity" reads what the attack evaluators before it measured.
  evaluators: Tuple[str, ...] = ("clean", "calibration", "blur", "deepfool", "attacks",
                                 "autoattack", "apgd_curve", "corruptions", "sanity")

  @staticmethod
  def for_dataset(dataset: str, **overrides) -> "EvalConfig":
    """Full-scale defaults for a dataset's threat models (`overrides` replace fields).

    AutoAttack budgets and sources: MNIST L-inf 0.3 (Madry et al. 2018; Croce & Hein 2020,
    Table 2; its adversarial trainers train at 0.3) and 0.1; Fashion-MNIST L-inf 0.1 (its
    adversarial-training budget) and 0.2 (twice it: a stronger threat); CIFAR-10 L-inf 8/255 and L2 0.5 (RobustBench,
    Croce et al. 2021; Croce & Hein 2020). CIFAR-10 corrupts 2000 test images (75 sets).
    """
    table = {
        "mnist": dict(autoattack_budgets=(("Linf", 0.1), ("Linf", 0.3)),
                      apgd_curve_epsilons=(0.0, 0.1, 0.2, 0.3, 0.4),
                      attack_epsilons=(0.0, 0.1, 0.2, 0.3)),
        "fashion_mnist": dict(autoattack_budgets=(("Linf", 0.1), ("Linf", 0.2)),
                              apgd_curve_epsilons=(0.0, 0.05, 0.1, 0.15, 0.2, 0.3)),
        "cifar10": dict(autoattack_budgets=(("Linf", 8 / 255), ("L2", 0.5)),
                        apgd_curve_epsilons=(0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255),
                        attack_epsilons=(0.0, 2 / 255, 4 / 255, 8 / 255),
                        corruption_samples=2000)}
    if dataset not in table:
      raise ValueError(f"no evaluation defaults for dataset {dataset!r}; valid: "
                       f"{', '.join(table)}.")
    return dataclasses.replace(EvalConfig(), **{**table[dataset], **overrides})


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything one run needs. `method` is a method config dataclass (training/methods)."""
  name: str
  data: DataConfig
  model: ModelConfig
  train: TrainConfig
  method: Any
  eval: EvalConfig = EvalConfig()
  scale: str = "full"
  seed: int = 0
  description: str = ""


def to_dict(config: Any) -> Any:
  """Converts nested config dataclasses to JSON-friendly dicts (with the class name)."""
  if dataclasses.is_dataclass(config):
    out = {"__class__": type(config).__name__}
    for field in dataclasses.fields(config):
      out[field.name] = to_dict(getattr(config, field.name))
    return out
  if isinstance(config, (tuple, list)):
    return [to_dict(v) for v in config]
  if isinstance(config, dict):
    return {k: to_dict(v) for k, v in config.items()}
  return config


def config_hash(config: Any, exclude: Tuple[str, ...] = ()) -> str:
  """Stable short hash of a config, used to key cached artifacts.

  Args:
    config: any (nested) dataclass.
    exclude: field names to leave out because they do not change what is computed, top-level
      ("description") or dotted ("data.data_dir": where the bytes were read from; the data
      fingerprint already keys their content).
  Returns:
    16 hex characters of the SHA-256 of the canonical JSON form.
  """
  d = to_dict(config)
  for key in exclude:
    *parents, leaf = key.split(".")
    node = d
    for parent in parents:
      node = node.get(parent) if isinstance(node, dict) else None
    if isinstance(node, dict):
      node.pop(leaf, None)
  blob = json.dumps(d, sort_keys=True).encode()
  return hashlib.sha256(blob).hexdigest()[:16]
