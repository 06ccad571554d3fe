"""Automatic sanity checks of an adversarial evaluation (Carlini et al. 2019, "On Evaluating
Adversarial Robustness", its checklist of evaluation pitfalls).

Why automatic: a weak or broken attack overstates robustness, and the symptoms are
well known - a single-step attack beating an iterative one, accuracy that rises with the
budget, an unbounded attack that cannot reach chance, a black-box attack beating the
white-box ones, a minimal-perturbation attack that cannot flip an image however long it
runs, zero input gradients (gradient masking). Every evaluation computes them; a failure
does not stop the evaluation, it is recorded (`sanity/<check>` = 1 pass, 0 fail) and flagged
in the report. Each check passes on a correct evaluation, so FAILED always names a problem.

Each check is a pure function of numbers the evaluation already has, so each can be tested
on a constructed failing case; `input_gradient_norms` and `unbounded_accuracy` measure the
two quantities no other stage computes, and `continue_deepfool` gives the images DeepFool
left unflipped within its budget ten times that budget more, from where each stopped. An
image left unflipped at an iteration limit is not a symptom (with 50 iterations a correct
DeepFool leaves about 1 image in 1000 on a well-trained CNN, and several percent on mixup's
small-margin models); one that no amount of DeepFool flips is. A check whose inputs were not
evaluated (e.g. no Square attack in AutoAttack's "cheap" version) is skipped (passed = None,
no metric key).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from latmix_tf import attacks
from latmix_tf.evaluation import deepfool

# Continued DeepFool runs this many times the configured iterations on the unflipped images.
DEEPFOOL_CONTINUE_FACTOR = 10


@dataclasses.dataclass(frozen=True)
class Check:
  """One sanity check: its outcome (None = skipped), the measured value and the bound."""
  name: str
  passed: Optional[bool]
  value: float
  threshold: float
  detail: str


def iterative_at_least_single_step(epsilons: Sequence[float], single: Sequence[float],
                                   iterative: Sequence[float], tol: float) -> Check:
  """PGD accuracy <= FGSM accuracy + tol at every eps (same images)."""
  gaps = [i - s for e, s, i in zip(epsilons, single, iterative) if e > 0]
  worst = max(gaps, default=float("nan"))
  return Check("iterative_at_least_single_step", None if not gaps else bool(worst <= tol),
               worst, tol, "max over eps of acc(PGD) - acc(FGSM)")


def stronger_attack_not_weaker(name: str, weaker_acc: float, stronger_acc: float,
                               tol: float) -> Check:
  """acc(stronger attack) <= acc(weaker attack) + tol (e.g. AutoAttack vs PGD-10)."""
  gap = stronger_acc - weaker_acc
  return Check(name, bool(gap <= tol), gap, tol, "acc(stronger) - acc(weaker)")


def monotone_in_eps(name: str, epsilons: Sequence[float], accuracy: Sequence[float],
                    tol: float) -> Check:
  """Accuracy never rises by more than tol as eps grows."""
  order = np.argsort(np.asarray(epsilons, np.float64), kind="stable")
  acc = np.asarray(accuracy, np.float64)[order]
  rise = float(np.max(np.diff(acc))) if len(acc) > 1 else float("nan")
  return Check(name, None if len(acc) < 2 else bool(rise <= tol), rise, tol,
               "largest increase of accuracy between consecutive eps")


def unbounded_at_chance(accuracy: float, num_classes: int, tol: float) -> Check:
  """With eps = 1 (L-inf: any image) the attack must bring accuracy to chance (1/K) or below."""
  bound = 1.0 / num_classes + tol
  return Check("unbounded_attack_at_chance", bool(accuracy <= bound), accuracy, bound,
               "accuracy under PGD with eps = 1 (L-inf)")


def black_box_not_stronger(per_attack: Mapping[str, float], tol: float) -> Check:
  """Square (run last, on what the white-box attacks left) may break at most tol of the images.

  `per_attack` is AutoAttack's cumulative robust accuracy after each attack, in run order.
  """
  names = list(per_attack)
  if "square" not in names or names.index("square") == 0:
    return Check("black_box_not_stronger", None, float("nan"), tol,
                 "skipped: Square did not run after white-box attacks")
  before = per_attack[names[names.index("square") - 1]]
  extra = before - per_attack["square"]
  return Check("black_box_not_stronger", bool(extra <= tol), extra, tol,
               "fraction of images only Square broke")


def deepfool_flips_every_image(samples: int, unflipped_at_budget: int, unflipped_continued: int,
                               max_iter: int, continued_iter: int) -> Check:
  """DeepFool (unbounded, minimal perturbation) flips every image, given the time to.

  An image left unflipped after `max_iter` iterations is an iteration limit, not a failure;
  the check fails only if some image stays unflipped after DeepFool continued from where it
  stopped for `continued_iter` more iterations.

  Args:
    samples: images DeepFool ran on.
    unflipped_at_budget: of them, not flipped within `max_iter` iterations.
    unflipped_continued: of those, still not flipped after `continued_iter` more.
    max_iter, continued_iter: the two iteration budgets (for the report line).
  """
  frac = unflipped_continued / samples if samples else float("nan")
  how = (f"all {samples} flipped within {max_iter} iterations" if not unflipped_at_budget else
         f"{unflipped_at_budget} of {samples} unflipped after {max_iter} iterations, "
         f"{unflipped_continued} still unflipped after {continued_iter} more")
  return Check("deepfool_flips_every_image", None if not samples else unflipped_continued == 0,
               frac, 0.0, f"fraction of images DeepFool cannot flip ({how})")


def gradients_nonzero(norms: np.ndarray, tol: float) -> Check:
  """At most a fraction tol of the images may have an exactly zero input gradient."""
  zero = float(np.mean(np.asarray(norms) == 0)) if len(norms) else float("nan")
  return Check("input_gradients_nonzero", None if not len(norms) else bool(zero <= tol), zero,
               tol, "fraction of images whose cross-entropy input gradient is exactly 0")


def apgd_loss_increases(curve: Sequence[float]) -> Check:
  """APGD maximises the loss: the last mean loss must not be below the first."""
  if len(curve) < 2:
    return Check("apgd_loss_increases", None, float("nan"), 0.0, "skipped: no APGD loss curve")
  gain = float(curve[-1] - curve[0])
  return Check("apgd_loss_increases", bool(gain >= 0), gain, 0.0,
               "APGD-CE mean loss: last iteration - start")


def input_gradient_norms(logits_fn: Callable, x: np.ndarray, y: np.ndarray,
                         batch_size: int = 256) -> np.ndarray:
  """L2 norm of d CE / d x per image (float64 norms of the float32 gradient)."""
  spec = [tf.TensorSpec([None, *x.shape[1:]], tf.float32), tf.TensorSpec([None], tf.int64)]

  @tf.function(input_signature=spec)
  def grad(xb, yb):
    with tf.GradientTape() as tape:
      tape.watch(xb)
      logits = logits_fn(xb)
      loss = tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits)
    return tf.reshape(tape.gradient(loss, xb), [tf.shape(xb)[0], -1])

  out = []
  for s in range(0, len(x), batch_size):
    g = grad(tf.constant(x[s:s + batch_size], tf.float32),
             tf.constant(y[s:s + batch_size], tf.int64)).numpy().astype(np.float64)
    out.append(np.linalg.norm(g, axis=1))
  return np.concatenate(out) if out else np.zeros(0)


def unbounded_accuracy(logits_fn: Callable, x: np.ndarray, y: np.ndarray, num_classes: int,
                       steps: int, seed: int = 0, batch_size: int = 256) -> float:
  """Accuracy under L-inf PGD with eps = 1 (the whole image box), step 2.5 / steps."""
  spec = [tf.TensorSpec([None, *x.shape[1:]], tf.float32), tf.TensorSpec([None], tf.int64),
          tf.TensorSpec([2], tf.int64)]

  @tf.function(input_signature=spec)
  def correct(xb, yb, s):
    x_adv = attacks.pgd(logits_fn, xb, tf.one_hot(yb, num_classes), 1.0, steps, 2.5 / steps,
                        random_start=True, seed=s)
    return tf.equal(tf.argmax(logits_fn(x_adv), 1), yb)

  hits = [correct(tf.constant(x[s:s + batch_size], tf.float32),
                  tf.constant(y[s:s + batch_size], tf.int64),
                  tf.constant([seed, s], tf.int64)).numpy()
          for s in range(0, len(x), batch_size)]
  return float(np.concatenate(hits).mean())


def continue_deepfool(lf, result: deepfool.DeepFoolResult, num_classes: int,
                      cfg) -> Dict[str, int]:
  """Continues DeepFool on the images it left unflipped, from the point each one reached.

  The prediction at that point is still the start class, so DeepFool restarted there with
  DEEPFOOL_CONTINUE_FACTOR times the configured iterations (same candidates, overshoot and
  min_step) looks for the same thing: a change of the original prediction.

  Returns:
    {"samples", "unflipped_at_budget", "unflipped_continued", "max_iter", "continued_iter"},
    the arguments of `deepfool_flips_every_image`.
  """
  left = ~np.asarray(result.flipped)
  steps = DEEPFOOL_CONTINUE_FACTOR * cfg.deepfool_max_iter
  still = 0
  if left.any():
    more = deepfool.run_deepfool(lf, result.x_adv[left], num_classes, cfg.deepfool_candidates,
                                 cfg.deepfool_overshoot, steps, cfg.deepfool_batch_size)
    still = int(np.sum(more.final_class == result.start_class[left]))
  return {"samples": int(len(left)), "unflipped_at_budget": int(left.sum()),
          "unflipped_continued": still, "max_iter": int(cfg.deepfool_max_iter),
          "continued_iter": steps}


def evaluation_checks(lf, x, y, num_classes, cfg, metrics, curves, aa, apgd_curve,
                      deepfool_result: Optional[deepfool.DeepFoolResult] = None) -> List[Check]:
  """Every check on one evaluation's results (the "sanity" evaluator, `adversarial.py`).

  Args:
    lf: differentiable logits function; x, y: float test images and labels.
    num_classes: K.
    cfg: the EvalConfig (tolerance, sample counts, attack settings).
    metrics: flat metrics so far ("deepfool/fooling_rate" is read when present).
    curves: {"fgsm" | "pgd": per-eps boolean "still correct" arrays}; {} = FGSM / PGD did not
      run (their checks are left out).
    aa: {budget "Linf@0.1": run_autoattack result}.
    apgd_curve: {eps: APGD-CE accuracy}.
    deepfool_result: the evaluation's DeepFool run (None: run here on the first
      `cfg.deepfool_samples` images unless the metrics say every image flipped).
  """
  tol, checks = cfg.sanity_tolerance, []
  eps = list(cfg.attack_epsilons) if curves else []
  acc = {k: [float(np.mean(c)) for c in v] for k, v in curves.items()}
  if eps:
    checks.append(iterative_at_least_single_step(eps, acc["fgsm"], acc["pgd"], tol))
    checks.append(monotone_in_eps("pgd_monotone_in_eps", eps, acc["pgd"], tol))
  if apgd_curve:
    checks.append(monotone_in_eps("apgd_monotone_in_eps", list(apgd_curve),
                                         list(apgd_curve.values()), tol))
  for budget, res in aa.items():
    norm, e = budget.split("@")
    if norm == "Linf" and float(e) in [float(v) for v in eps]:
      pgd_ok = curves["pgd"][[float(v) for v in eps].index(float(e))]
      m = min(len(pgd_ok), len(res["robust_mask"]))
      checks.append(stronger_attack_not_weaker(
          f"autoattack_not_weaker_than_pgd@{e}", float(np.mean(pgd_ok[:m])),
          float(np.mean(res["robust_mask"][:m])), tol))
  squares = [black_box_not_stronger(r["per_attack"], tol) for r in aa.values()]
  ran = [c for c in squares if c.passed is not None]
  checks.append(max(ran, key=lambda c: c.value) if ran else squares[0] if squares else
                black_box_not_stronger({}, tol))
  if deepfool_result is None and metrics.get("deepfool/fooling_rate", 0.0) < 1.0:
    n_df = len(x) if cfg.deepfool_samples is None else min(cfg.deepfool_samples, len(x))
    deepfool_result = deepfool.run_deepfool(
        lf, x[:n_df], num_classes, cfg.deepfool_candidates, cfg.deepfool_overshoot,
        cfg.deepfool_max_iter, cfg.deepfool_batch_size)
  if deepfool_result is None:  # every image flipped within the budget
    n = int(metrics.get("deepfool/samples", 1))
    checks.append(deepfool_flips_every_image(n, 0, 0, cfg.deepfool_max_iter, 0))
  else:
    checks.append(deepfool_flips_every_image(
        **continue_deepfool(lf, deepfool_result, num_classes, cfg)))
  n = len(x) if cfg.sanity_samples is None else min(cfg.sanity_samples, len(x))
  checks.append(gradients_nonzero(input_gradient_norms(lf, x[:n], y[:n]), tol))
  checks.append(unbounded_at_chance(unbounded_accuracy(
      lf, x[:n], y[:n], num_classes, cfg.sanity_unbounded_steps, cfg.attack_seed), num_classes,
      tol))
  loss = next((r["apgd_loss_curve"] for r in aa.values() if r["apgd_loss_curve"]), [])
  checks.append(apgd_loss_increases(loss))
  return checks


def as_metrics(checks: Sequence[Check]) -> Dict[str, float]:
  """`sanity/<check>` = 1.0 / 0.0 for every check that ran, and `sanity/failed` (count)."""
  ran = [c for c in checks if c.passed is not None]
  out = {f"sanity/{c.name}": float(c.passed) for c in ran}
  out["sanity/failed"] = float(sum(not c.passed for c in ran))
  return out


def as_records(checks: Sequence[Check]) -> List[Dict]:
  return [dataclasses.asdict(c) for c in checks]


def report_lines(checks: Sequence[Check]) -> List[str]:
  """Report notes: failures first, flagged; then the passes and skips, one line each."""
  def line(c):
    if c.passed is None:
      return f"sanity check `{c.name}` skipped: {c.detail.removeprefix('skipped: ')}"
    state = "passed" if c.passed else "**FAILED**"
    return f"sanity check `{c.name}` {state}: {c.detail} = {c.value:.4g} (bound {c.threshold:.4g})"
  return ([line(c) for c in checks if c.passed is False] +
          [line(c) for c in checks if c.passed is not False])
