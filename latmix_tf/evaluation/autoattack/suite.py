"""AutoAttack (Croce & Hein ICML 2020) as one call: the attacks in sequence, worst case per example.

Why a suite: each attack has its own blind spot (APGD-CE: badly scaled logits; APGD-T: a
target it never tries; FAB: boundary far from the linearisation; Square: no gradient, so
slow), and robust accuracy must be the per-example worst case over all of them. As in the
authors' code, every attack after the first runs only on the points still robust, so the
result equals "robust against every attack" at the cost of running the later, expensive
attacks on few points. Each attack run is one compiled `tf.function` per batch.

Versions:
  * "standard" - RobustBench's AutoAttack: APGD-CE (100 iterations, 1 restart), APGD-T
    (targeted DLR, 9 target classes x 1 restart x 100 iterations), FAB-T (9 targets x 100
    iterations), Square (5000 queries). Settings are the fields of `AutoAttackConfig`.
  * "cheap" - APGD-CE + APGD-T only: our own variant for quick-scale experiments, not one
    of the authors' versions. It keeps the two APGD attacks (the bulk of AutoAttack's
    successes on models without gradient masking) and drops FAB-T and Square, whose main
    role is to catch failures of the gradient attacks. Its robust accuracy is therefore an
    upper bound on the "standard" one; report "standard" for claims (the black-box vs
    white-box sanity check needs Square).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Dict, List, Sequence

import numpy as np
import tensorflow as tf

from latmix_tf import progress
from latmix_tf.evaluation.autoattack import apgd, common, fab, square

VERSIONS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
            "cheap": ("apgd-ce", "apgd-t")}


@dataclasses.dataclass(frozen=True)
class AutoAttackConfig:
  """Threat model and every attack hyper-parameter (defaults: AutoAttack "standard")."""
  norm: str = "Linf"                 # "Linf" | "L2"
  eps: float = 0.1
  version: str = "standard"          # "standard" | "cheap" (see module docstring)
  seed: int = 0
  batch_size: int = 500
  apgd_n_iter: int = 100
  apgd_n_restarts: int = 1           # APGD-CE restarts
  apgd_rho: float = 0.75             # step-size halving threshold
  apgd_momentum: float = 0.75
  apgd_initial_step: float = 2.0     # in units of eps
  apgd_t_n_restarts: int = 1         # per target class
  apgd_t_n_target_classes: int = 9
  fab_n_iter: int = 100
  fab_n_restarts: int = 1            # per target class (restarts > 0 start at random)
  fab_n_target_classes: int = 9
  fab_alpha_max: float = 0.1
  fab_eta: float = 1.05
  fab_beta: float = 0.9
  square_n_queries: int = 5000
  square_p_init: float = 0.8
  square_n_restarts: int = 1

  def __post_init__(self):
    common.check_norm(self.norm)
    if self.version not in VERSIONS:
      raise ValueError(f"unknown AutoAttack version {self.version!r}; valid: "
                       f"{', '.join(VERSIONS)}.")
    if not self.eps > 0:
      raise ValueError(f"eps must be > 0, got {self.eps}.")


def _predictor(logits_fn, image_shape, batch_size):
  predict = tf.function(logits_fn, input_signature=[common.image_spec(image_shape)])
  return lambda a: np.concatenate([predict(tf.constant(a[s:s + batch_size])).numpy()
                                   for s in range(0, len(a), batch_size)])


def _check_in_ball(x_adv: np.ndarray, x: np.ndarray, eps: float, norm: str, name: str):
  """Guards the threat model: a point outside the ball or the box is a bug, not a success."""
  dist = common.flat_norm(tf.constant(x_adv - x), norm).numpy()
  bound = eps + 1e-6 if norm == "Linf" else eps * (1 + 1e-5) + 1e-6
  if dist.max(initial=0.0) > bound or x_adv.min(initial=0.0) < 0 or x_adv.max(initial=1.0) > 1:
    raise RuntimeError(f"{name} returned points outside the {norm} ball of radius {eps} or "
                       f"the box [0, 1] (max distance {dist.max():.3g}).")


def _attack_plan(name: str, cfg: AutoAttackConfig, logits_fn, image_shape, num_classes):
  """(compiled fn, [(label, extra args)]) for one attack: its sequential runs."""
  if name in ("apgd-ce", "apgd-t"):
    fn = apgd.make_apgd_fn(logits_fn, image_shape, cfg.norm,
                           "ce" if name == "apgd-ce" else "dlr-targeted", cfg.apgd_n_iter,
                           cfg.apgd_rho, cfg.apgd_momentum, cfg.apgd_initial_step)
    runs = apgd.attack_runs(name, cfg.apgd_n_restarts if name == "apgd-ce"
                            else cfg.apgd_t_n_restarts, cfg.apgd_t_n_target_classes,
                            num_classes)
    return (lambda xb, yb, eps, seed, rank: fn(xb, yb, tf.constant(rank), eps, seed)), runs
  if name == "fab-t":
    fn = fab.make_fab_fn(logits_fn, image_shape, cfg.norm, cfg.fab_n_iter, cfg.fab_alpha_max,
                         cfg.fab_eta, cfg.fab_beta, stop_at_eps=True)
    n_t = min(cfg.fab_n_target_classes, num_classes - 1)
    runs = [(f"target {t} restart {r}", (t, r)) for t in range(1, n_t + 1)
            for r in range(cfg.fab_n_restarts)]
    return (lambda xb, yb, eps, seed, tr: fn(xb, yb, tf.constant(tr[0]), eps, seed,
                                             tf.constant(tr[1] > 0))), runs
  fn = square.make_square_fn(logits_fn, image_shape, cfg.norm, cfg.square_n_queries,
                             cfg.square_p_init)
  runs = [(f"restart {r}", None) for r in range(cfg.square_n_restarts)]
  return (lambda xb, yb, eps, seed, _: fn(xb, yb, eps, seed)), runs


def _prepare(x, y):
  x = np.asarray(x, np.float32)
  y = np.asarray(y).astype(np.int32)
  if x.ndim != 4 or len(x) == 0 or y.shape != (len(x),):
    raise ValueError(f"expects images [N, H, W, C] (N > 0) and labels [N]; got {x.shape}, "
                     f"{y.shape}.")
  if x.min() < 0 or x.max() > 1:
    raise ValueError("images must be float in [0, 1].")
  return x, y


def _run_batches(fn, extra, x, y, robust, x_adv, predict, cfg, name, a_i, r_i, eps, bar,
                 curve) -> None:
  """One run of one attack over the still-robust points, batch by batch (updates in place)."""
  idx = np.flatnonzero(robust)
  for b, s in enumerate(range(0, len(idx), cfg.batch_size)):
    sel = idx[s:s + cfg.batch_size]
    seed = tf.constant([cfg.seed, (a_i * 1000 + r_i) * 100000 + b], tf.int64)
    out = fn(tf.constant(x[sel]), tf.constant(y[sel]), eps, seed, extra)
    cand = out["x_adv"].numpy()
    _check_in_ball(cand, x[sel], cfg.eps, cfg.norm, name)
    success = predict(cand).argmax(1) != y[sel]
    robust[sel[success]] = False
    x_adv[sel[success]] = cand[success]
    if curve is not None:
      curve["sum"] += out["loss_curve"].numpy() * len(sel)
      curve["count"] += len(sel)
    bar.update(1, robust=float(robust.mean()))


def run_autoattack(logits_fn: Callable[[tf.Tensor], tf.Tensor], x, y, cfg: AutoAttackConfig,
                   log: Callable[[str], None] = print, parts=None, part: str = "") -> Dict:
  """Runs AutoAttack and returns the per-example worst case.

  Args:
    logits_fn: `float32 images [B, H, W, C] in [0, 1] -> logits [B, K]` (differentiable for
      the white-box attacks; Square only evaluates it).
    x: float32 [N, H, W, C] images in [0, 1].
    y: int [N] labels.
    cfg: threat model and attack settings.
    log: progress sink (one line per attack).
    parts, part: where to keep the progress after each attack (`evaluation.partial.Parts`,
      under the name `part`), and resume from it: the robust mask, the adversarials found
      and the loss curve, from which the next attack cuts the same batches and seeds as an
      uninterrupted run. None keeps nothing.
  Returns:
    {"clean_accuracy", "robust_accuracy" (robust to every attack that ran), "per_attack"
    ({attack: robust accuracy after it, cumulative}), "robust_mask" (bool [N]), "x_adv"
    (float32 [N, ...]: the first successful adversarial, the clean image where none),
    "apgd_loss_curve" (mean APGD-CE loss at the start and after each iteration, over the
    correctly classified points), "seconds", "config" (every hyper-parameter used)}.
  """
  start = time.perf_counter()
  x, y = _prepare(x, y)
  image_shape = x.shape[1:]
  predict = _predictor(logits_fn, image_shape, cfg.batch_size)
  logits = predict(x)
  num_classes = logits.shape[1]
  robust = logits.argmax(1) == y
  clean_accuracy = float(robust.mean())
  log(f"[autoattack] {cfg.version} {cfg.norm} eps={cfg.eps:g}: clean accuracy "
      f"{clean_accuracy:.4f} on {len(x)} images")
  x_adv = x.copy()
  per_attack: Dict[str, float] = {}
  curve = {"sum": np.zeros(cfg.apgd_n_iter + 1), "count": 0}
  eps = tf.constant(cfg.eps, tf.float32)
  plans, earlier = {}, 0.0
  kept = parts.get(part) if parts is not None else None
  if kept is not None and kept["config"] == cfg and kept["robust"].shape == robust.shape:
    robust, x_adv, per_attack, curve, plans = (kept[k] for k in (
        "robust", "x_adv", "per_attack", "curve", "plans"))
    earlier = kept["seconds"]
    log(f"[autoattack] resumed after {', '.join(per_attack)}: robust accuracy "
        f"{robust.mean():.4f}")
  for a_i, name in enumerate(VERSIONS[cfg.version]):
    if name in per_attack:
      continue
    t0 = time.perf_counter()
    fn, runs = _attack_plan(name, cfg, logits_fn, image_shape, num_classes)
    plans[name] = [label for label, _ in runs]
    batches = len(runs) * -(-int(robust.sum()) // cfg.batch_size)  # at most: points drop out
    with progress.bar(batches, f"[autoattack] {name} batches", log, final_line=False) as bar:
      for r_i, (_, extra) in enumerate(runs):
        _run_batches(fn, extra, x, y, robust, x_adv, predict, cfg, name, a_i, r_i, eps, bar,
                     curve if name == "apgd-ce" and r_i == 0 else None)
    per_attack[name] = float(robust.mean())
    if parts is not None:
      parts.put(part, {"config": cfg, "robust": robust, "x_adv": x_adv, "per_attack": per_attack,
                       "curve": curve, "plans": plans,
                       "seconds": earlier + time.perf_counter() - start})
    log(f"[autoattack] after {name}: robust accuracy {per_attack[name]:.4f} "
        f"({time.perf_counter() - t0:.1f}s)")
  config = dataclasses.asdict(cfg)
  config.update({"attacks": list(VERSIONS[cfg.version]), "runs": plans,
                 "num_classes": int(num_classes),
                 "apgd_checkpoints": apgd.checkpoints(cfg.apgd_n_iter),
                 "square_window_sizes": square.window_sizes(image_shape, cfg.norm,
                                                            cfg.square_p_init),
                 "square_loss": "margin", "apgd_t_loss": "targeted DLR"})
  return {"clean_accuracy": clean_accuracy, "robust_accuracy": float(robust.mean()),
          "per_attack": per_attack, "robust_mask": robust, "x_adv": x_adv,
          "apgd_loss_curve": (curve["sum"] / max(curve["count"], 1)).tolist(),
          "seconds": earlier + time.perf_counter() - start, "config": config}


def apgd_accuracy_curve(logits_fn: Callable[[tf.Tensor], tf.Tensor], x, y,
                        epsilons: Sequence[float], norm: str = "Linf", seed: int = 0,
                        n_iter: int = 100, batch_size: int = 500) -> Dict[float, float]:
  """Accuracy under APGD-CE (1 restart) at each eps: {eps: accuracy} (eps = 0: clean).

  One compiled APGD serves every eps (eps is a tensor argument), and only the correctly
  classified points are attacked.
  """
  x, y = _prepare(x, y)
  predict = _predictor(logits_fn, x.shape[1:], batch_size)
  correct = predict(x).argmax(1) == y
  fn = apgd.make_apgd_fn(logits_fn, x.shape[1:], norm, "ce", n_iter)
  curve: Dict[float, float] = {}
  for e_i, eps in enumerate(epsilons):
    robust = correct.copy()
    idx = np.flatnonzero(robust) if eps > 0 else np.zeros(0, int)
    for b, s in enumerate(range(0, len(idx), batch_size)):
      sel = idx[s:s + batch_size]
      out = fn(tf.constant(x[sel]), tf.constant(y[sel]), tf.constant(0),
               tf.constant(float(eps), tf.float32),
               tf.constant([seed, e_i * 100000 + b], tf.int64))
      cand = out["x_adv"].numpy()
      _check_in_ball(cand, x[sel], float(eps), norm, "apgd-ce")
      robust[sel[predict(cand).argmax(1) != y[sel]]] = False
    curve[float(eps)] = float(robust.mean())
  return curve


def attack_names(version: str) -> List[str]:
  """The attacks a version runs, in order."""
  return list(VERSIONS[version])
