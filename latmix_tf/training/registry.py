"""Explicit registry of training methods: config dataclass -> method factory.

A method config (a frozen dataclass with a `name` field) selects its method; there is no
registration by import side effect. Adding a method = one class + one line here. Every
method, latent mixup included, is built here: a factory takes the config and the run's
`MethodContext` (plain methods ignore the context; latent mixup runs the stages it consumes).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple, Type

from latmix_tf.config import LatentMixupConfig, OnManifoldATConfig
from latmix_tf.training.adversarial import AdversarialConfig, AdversarialTraining
from latmix_tf.training.gat import GAT, GATConfig
from latmix_tf.training.interpolated_at import MixupAT, MixupATConfig
from latmix_tf.training.manifold_mixup import ManifoldMixup, ManifoldMixupConfig
from latmix_tf.training.method import ERM, ERMConfig, Method, MethodContext
from latmix_tf.training.mixup import Mixup, MixupConfig
from latmix_tf.training.trades import Trades, TradesConfig

Factory = Callable[[Any, MethodContext], Method]


def _plain(cls: Type[Method]) -> Factory:
  return lambda cfg, ctx: cls(cfg)


def _latent_mixup(cfg, ctx: MethodContext) -> Method:
  from latmix_tf.latent import build_latent_mixup  # pylint: disable=import-outside-toplevel
  return build_latent_mixup(cfg, ctx)  # resolved late: it pulls in the generative stack


def _on_manifold_at(cfg, ctx: MethodContext) -> Method:
  from latmix_tf.latent import build_on_manifold_at  # pylint: disable=import-outside-toplevel
  return build_on_manifold_at(cfg, ctx)  # the generator and bank stages, as latent mixup's


METHODS: Dict[str, Tuple[Type[Any], Factory]] = {
    "erm": (ERMConfig, _plain(ERM)),
    "mixup": (MixupConfig, _plain(Mixup)),
    "manifold_mixup": (ManifoldMixupConfig, _plain(ManifoldMixup)),
    "adversarial": (AdversarialConfig, _plain(AdversarialTraining)),
    "gat": (GATConfig, _plain(GAT)),
    "latent_mixup": (LatentMixupConfig, _latent_mixup),
    "trades": (TradesConfig, _plain(Trades)),
    "mixup_at": (MixupATConfig, _plain(MixupAT)),
    "on_manifold_at": (OnManifoldATConfig, _on_manifold_at),
}


def build_method(cfg: Any, ctx: Optional[MethodContext] = None) -> Method:
  """Instantiates the method for `cfg`.

  Args:
    cfg: a method config dataclass registered in `METHODS`.
    ctx: what the factory may use besides the config (data, run directory, ...).
  Raises:
    ValueError: unknown method, listing the valid names.
  """
  name = getattr(cfg, "name", None)
  if name not in METHODS:
    raise ValueError(f"Unknown method {name!r}; valid: {', '.join(sorted(METHODS))}.")
  config_cls, factory = METHODS[name]
  if not isinstance(cfg, config_cls):
    raise ValueError(f"Method {name!r} expects a {config_cls.__name__}, got {type(cfg).__name__}.")
  return factory(cfg, ctx or MethodContext())
