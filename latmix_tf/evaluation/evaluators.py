"""The registry of evaluators: `EvalConfig.evaluators` names the ones that run, in order.

A new metric family is a class of `evaluator.Evaluator` and one line here (see
docs/extending.md, "Add an evaluator"). Order matters only where an evaluator reads an earlier
one's results: "sanity" checks what the attack evaluators before it measured, and
"corruptions" scales by the temperature "calibration" fitted.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Type

from latmix_tf.evaluation import adversarial, natural
from latmix_tf.evaluation.evaluator import Evaluator

EVALUATORS: Dict[str, Type[Evaluator]] = {
    "clean": natural.CleanAccuracy,
    "calibration": natural.Calibration,
    "blur": natural.Blur,
    "deepfool": adversarial.DeepFool,
    "attacks": adversarial.FgsmPgd,
    "autoattack": adversarial.AutoAttack,
    "apgd_curve": adversarial.ApgdCurve,
    "corruptions": natural.Corruptions,
    "sanity": adversarial.SanityChecks,
}


def get(name: str) -> Type[Evaluator]:
  """The evaluator class registered as `name`.

  Raises:
    ValueError: no such evaluator (the message lists the valid names).
  """
  if name not in EVALUATORS:
    raise ValueError(f"unknown evaluator {name!r}; valid: {', '.join(EVALUATORS)}.")
  return EVALUATORS[name]


def build(names: Sequence[str]) -> List[Tuple[str, Evaluator]]:
  """(name, evaluator) for each name, in order; every name is checked before any is built."""
  classes = [get(name) for name in names]
  if len(set(names)) != len(names):
    raise ValueError(f"evaluators named twice in {tuple(names)}.")
  return [(name, cls()) for name, cls in zip(names, classes)]


def required_metrics(names: Sequence[str]) -> Tuple[str, ...]:
  """The metrics the chosen evaluators promise every report (`Evaluator.required`)."""
  return tuple(k for name in names for k in get(name).required)


def figure_files(names: Sequence[str]) -> Tuple[str, ...]:
  """Every PNG the chosen evaluators may write, in run order."""
  return tuple(f for name in names for f in get(name).figure_files)
