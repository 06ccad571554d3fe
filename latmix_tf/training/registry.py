"""Explicit registry of training methods: config dataclass -> factory, and what it needs.

A method config (a frozen dataclass with a `name` field) selects its method; there is no
registration by import side effect. Adding a method = one class + one entry here.

An entry also declares the upstream stages the method consumes (`needs`). The runner reads
them before anything is built (`needs`, `latent_recipe`), builds those stages
(`latent/stages.py`) and calls the factory with their results in `MethodInputs`; no factory
trains anything. A `ComposedConfig` needs what its source and step need.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

from latmix_tf.training.adversarial import AdversarialConfig, AdversarialTraining
from latmix_tf.training.compose import ComposedConfig, compose
from latmix_tf.training.gat import GAT, GATConfig
from latmix_tf.training.interpolated_at import MixupAT, MixupATConfig
from latmix_tf.training.latent_mixup import LatentMixup, LatentMixupConfig
from latmix_tf.training.manifold_mixup import ManifoldMixup, ManifoldMixupConfig
from latmix_tf.training.method import ERM, ERMConfig, Method, MethodInputs
from latmix_tf.training.mixup import Mixup, MixupConfig
from latmix_tf.training.on_manifold_at import OnManifoldAT, OnManifoldATConfig
from latmix_tf.training.trades import Trades, TradesConfig

Factory = Callable[[Any, MethodInputs], Method]
# The generator (and, for a generator without its own encoder, the inversion encoder) and
# the latent bank of the training split: `latent.stages.build_latent_stages`.
LATENT = "latent"


class Entry(NamedTuple):
  """A registered method: its config class, its factory and the upstream stages it needs."""
  config: type
  factory: Factory
  needs: Tuple[str, ...] = ()


def _plain(cls) -> Factory:
  return lambda cfg, inputs: cls(cfg)


def build_latent_mixup(cfg: LatentMixupConfig, inputs: MethodInputs) -> LatentMixup:
  return LatentMixup(cfg, gen=inputs.generator, bank=inputs.bank,
                     batch_size=inputs.batch_size, upstream=inputs.upstream)


def build_on_manifold_at(cfg: OnManifoldATConfig, inputs: MethodInputs) -> OnManifoldAT:
  return OnManifoldAT(cfg, gen=inputs.generator, bank=inputs.bank,
                      batch_size=inputs.batch_size, upstream=inputs.upstream)


def build_composed(cfg: ComposedConfig, inputs: MethodInputs) -> Method:
  return compose(build_method(cfg.source, inputs), build_method(cfg.step, inputs), cfg.name)


METHODS: Dict[str, Entry] = {
    "erm": Entry(ERMConfig, _plain(ERM)),
    "mixup": Entry(MixupConfig, _plain(Mixup)),
    "manifold_mixup": Entry(ManifoldMixupConfig, _plain(ManifoldMixup)),
    "adversarial": Entry(AdversarialConfig, _plain(AdversarialTraining)),
    "gat": Entry(GATConfig, _plain(GAT)),
    "latent_mixup": Entry(LatentMixupConfig, build_latent_mixup, (LATENT,)),
    "trades": Entry(TradesConfig, _plain(Trades)),
    "mixup_at": Entry(MixupATConfig, _plain(MixupAT)),
    "on_manifold_at": Entry(OnManifoldATConfig, build_on_manifold_at, (LATENT,)),
    # Compositions: any ComposedConfig; named ones are compared under their own name.
    "composed": Entry(ComposedConfig, build_composed),
    "latent_mixup_at": Entry(ComposedConfig, build_composed),
}


def _entry(cfg: Any) -> Entry:
  name = getattr(cfg, "name", None)
  if name not in METHODS:
    raise ValueError(f"Unknown method {name!r}; valid: {', '.join(sorted(METHODS))}.")
  entry = Entry(*METHODS[name])
  if not isinstance(cfg, entry.config):
    raise ValueError(f"Method {name!r} expects a {entry.config.__name__}, got "
                     f"{type(cfg).__name__}.")
  return entry


def _parts(cfg: Any) -> Tuple[Any, ...]:
  """`cfg` and, for a composition, its parts (recursively)."""
  if isinstance(cfg, ComposedConfig):
    return (cfg,) + _parts(cfg.source) + _parts(cfg.step)
  return (cfg,)


def needs(cfg: Any) -> Tuple[str, ...]:
  """The upstream stages the method of `cfg` (and each part of a composition) consumes."""
  found = []
  for part in _parts(cfg):
    found += [n for n in _entry(part).needs if n not in found]
  return tuple(found)


def latent_recipe(cfg: Any) -> Optional[Tuple[Any, Any]]:
  """(GeneratorConfig, InversionConfig) of the latent stages `cfg` needs, or None.

  Raises:
    ValueError: two parts of a composition ask for different generators or inversions (one
      run has one latent bank).
  """
  recipes = {(p.generator, p.inversion) for p in _parts(cfg) if LATENT in _entry(p).needs}
  if len(recipes) > 1:
    raise ValueError(f"Method {cfg.name!r} composes parts with different generators or "
                     f"inversions; one run has one latent bank: give them the same "
                     f"`generator` and `inversion` configs.")
  return next(iter(recipes), None)


def latent_mixup_part(cfg: Any) -> Optional[LatentMixupConfig]:
  """The Latent-Mixup part of `cfg` (itself, or a part of a composition), if any: its pairs
  and α are the mixes the run's report draws."""
  return next((p for p in _parts(cfg) if isinstance(p, LatentMixupConfig)), None)


def build_method(cfg: Any, inputs: Optional[MethodInputs] = None) -> Method:
  """Instantiates the method for `cfg`.

  Args:
    cfg: a method config dataclass registered in `METHODS`.
    inputs: the batch size and the results of the stages `needs(cfg)` names.
  Raises:
    ValueError: unknown method, listing the valid names; a config of the wrong class.
  """
  return _entry(cfg).factory(cfg, inputs or MethodInputs())
