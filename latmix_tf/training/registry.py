"""Explicit registry of training methods: config dataclass -> method class.

A method config (a frozen dataclass with a `name` field) selects its method; there is no
registration by import side effect. Adding a method = one class + one line here.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple, Type

from latmix_tf.training.adversarial import AdversarialConfig, AdversarialTraining
from latmix_tf.training.gat import GAT, GATConfig
from latmix_tf.training.manifold_mixup import ManifoldMixup, ManifoldMixupConfig
from latmix_tf.training.method import ERM, ERMConfig, Method
from latmix_tf.training.mixup import Mixup, MixupConfig

METHODS: Dict[str, Tuple[Type[Any], Type[Method]]] = {
    "erm": (ERMConfig, ERM),
    "mixup": (MixupConfig, Mixup),
    "manifold_mixup": (ManifoldMixupConfig, ManifoldMixup),
    "adversarial": (AdversarialConfig, AdversarialTraining),
    "gat": (GATConfig, GAT),
}


def build_method(cfg: Any, **context) -> Method:
  """Instantiates the method for `cfg`.

  Args:
    cfg: a method config dataclass registered in `METHODS`.
    **context: extra objects some methods need (e.g. the latent bank for latent mixup).
  Raises:
    ValueError: unknown method, listing the valid names.
  """
  name = getattr(cfg, "name", None)
  if name not in METHODS:
    raise ValueError(f"Unknown method {name!r}; valid: {', '.join(sorted(METHODS))}.")
  config_cls, method_cls = METHODS[name]
  if not isinstance(cfg, config_cls):
    raise ValueError(f"Method {name!r} expects a {config_cls.__name__}, got {type(cfg).__name__}.")
  return method_cls(cfg, **context) if context else method_cls(cfg)
