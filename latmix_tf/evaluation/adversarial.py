"""Evaluators of the model under attack, and the sanity checks of those attacks.

  deepfool    DeepFool rho_adv on the first `deepfool_samples` test images (and its samples).
  attacks     FGSM and PGD accuracy at each eps on the first `attack_samples` test images (true
              labels; PGD with a stateless random start, so reruns give identical numbers).
              eps = 0 is the clean accuracy of that subset (both attacks are the identity).
  autoattack  AutoAttack robust accuracy per threat model (`autoattack_budgets`).
  apgd_curve  APGD-CE (L-inf) accuracy against eps.
  sanity      the checks of Carlini et al. 2019 (`sanity`), on what the evaluators before it
              measured (their metrics, per-image masks and DeepFool run); failures are flagged.

Each reports the hyper-parameters of what it ran (`EvalResult.attack_config`).
"""

from __future__ import annotations

import time
from typing import Dict, List

import numpy as np
import tensorflow as tf

from latmix_tf import attacks
from latmix_tf.config import EvalConfig
from latmix_tf.evaluation import autoattack, deepfool, plots, sanity
from latmix_tf.evaluation.evaluator import (EvalContext, EvalResult, Evaluator, batched,
                                            metric_key)

DEEPFOOL_FILE = "deepfool_samples.npz"


class DeepFool(Evaluator):
  """deepfool/{rho_adv, fooling_rate, ...}; the histogram, the strip and `DEEPFOOL_FILE`."""
  figure_files = ("deepfool_histogram.png", "deepfool_strip.png")
  required = ("deepfool/rho_adv",)

  def run(self, ctx: EvalContext) -> EvalResult:
    cfg, start = ctx.cfg, time.time()
    n = ctx.count(cfg.deepfool_samples)
    df = deepfool.run_deepfool(ctx.logits_fn, ctx.x[:n], ctx.num_classes, cfg.deepfool_candidates,
                               cfg.deepfool_overshoot, cfg.deepfool_max_iter,
                               cfg.deepfool_batch_size)
    metrics = deepfool.summarize(df)
    metrics["deepfool/seconds_per_sample"] = (time.time() - start) / n
    np.savez(ctx.path(DEEPFOOL_FILE), l2=df.l2, relative=df.relative, iterations=df.iterations,
             flipped=df.flipped, start_class=df.start_class, final_class=df.final_class,
             label=ctx.y[:n])
    histogram, strip = self.figure_files
    plots.deepfool_histogram(df.relative, df.flipped, ctx.path(histogram))
    shown = np.flatnonzero(df.flipped)[:8]
    if len(shown) == 0:
      shown = np.arange(min(8, n))
    plots.perturbation_strip(ctx.x[shown], df.x_adv[shown], ctx.path(strip),
                             labels=[f"pred {c}" for c in df.start_class[shown]],
                             adv_labels=[f"-> {c}" for c in df.final_class[shown]])
    return EvalResult(metrics, list(self.figure_files), state={"result": df}, attack_config={
        "deepfool": {"norm": "L2", "max_iter": cfg.deepfool_max_iter,
                     "overshoot": cfg.deepfool_overshoot, "candidates": cfg.deepfool_candidates,
                     "min_step": 1e-4, "samples": cfg.deepfool_samples}})


def _attack_accuracies(lf, x, y, num_classes, cfg: EvalConfig) -> Dict[str, List[np.ndarray]]:
  """Per-image correctness under FGSM and PGD at each eps (one compiled graph per attack)."""
  spec = [tf.TensorSpec([None, *x.shape[1:]], tf.float32), tf.TensorSpec([None], tf.int64),
          tf.TensorSpec([], tf.float32), tf.TensorSpec([2], tf.int64)]
  steps = cfg.pgd_steps

  @tf.function(input_signature=spec)
  def fgsm_correct(xb, yb, eps, seed):
    x_adv = attacks.fgsm(lf, xb, tf.one_hot(yb, num_classes), eps, seed=seed)
    return tf.equal(tf.argmax(lf(x_adv), axis=1), yb)

  @tf.function(input_signature=spec)
  def pgd_correct(xb, yb, eps, seed):
    alpha = (2.5 * eps / steps if cfg.pgd_step_size is None
             else tf.constant(cfg.pgd_step_size, tf.float32))
    x_adv = attacks.pgd(lf, xb, tf.one_hot(yb, num_classes), eps, steps, alpha,
                        random_start=True, seed=seed)
    return tf.equal(tf.argmax(lf(x_adv), axis=1), yb)

  clean = None
  curves = {"fgsm": [], "pgd": []}
  for eps in cfg.attack_epsilons:
    for name, fn in (("fgsm", fgsm_correct), ("pgd", pgd_correct)):
      if eps == 0:  # both attacks are the identity at eps = 0 (tested in test_attacks)
        if clean is None:
          clean = batched(lambda a, b: tf.equal(tf.argmax(lf(a), 1), b), (x, y), cfg.batch_size)
        curves[name].append(clean)
        continue
      correct = [fn(tf.constant(x[s:s + cfg.batch_size]), tf.constant(y[s:s + cfg.batch_size]),
                    tf.constant(eps, tf.float32),
                    tf.constant([cfg.attack_seed, s], tf.int64)).numpy()
                 for s in range(0, len(x), cfg.batch_size)]
      curves[name].append(np.concatenate(correct))
  return curves


class FgsmPgd(Evaluator):
  """fgsm/acc@<eps>, pgd/acc@<eps>, attacks/samples; the attack curves."""
  figure_files = ("attack_accuracy.png",)

  def run(self, ctx: EvalContext) -> EvalResult:
    cfg = ctx.cfg
    n = ctx.count(cfg.attack_samples)
    correct = _attack_accuracies(ctx.logits_fn, ctx.x[:n], ctx.y[:n], ctx.num_classes, cfg)
    accuracy = {k: [float(np.mean(c)) for c in v] for k, v in correct.items()}
    metrics = {metric_key(f"{name}/acc", eps): acc for name, accs in accuracy.items()
               for eps, acc in zip(cfg.attack_epsilons, accs)}
    metrics["attacks/samples"] = int(n)
    figures = []
    if cfg.attack_epsilons:
      plots.attack_curves(cfg.attack_epsilons, accuracy["fgsm"], accuracy["pgd"],
                          ctx.path(self.figure_files[0]), cfg.pgd_steps)
      figures.append(self.figure_files[0])
    return EvalResult(
        metrics, figures, state={"correct": correct},
        record={"curves": {"attacks": {"eps": list(cfg.attack_epsilons), **accuracy}}},
        attack_config={
            "fgsm": {"norm": "Linf", "epsilons": list(cfg.attack_epsilons),
                     "loss": "cross-entropy", "random_start": False,
                     "samples": cfg.attack_samples},
            "pgd": {"norm": "Linf", "epsilons": list(cfg.attack_epsilons),
                    "steps": cfg.pgd_steps, "step_size": cfg.pgd_step_size or "2.5 * eps / steps",
                    "random_start": True, "restarts": 1, "loss": "cross-entropy",
                    "seed": cfg.attack_seed, "samples": cfg.attack_samples}})


class AutoAttack(Evaluator):
  """autoattack/<budget>/{robust_accuracy, clean_accuracy, after_<attack>}; APGD loss curves."""
  figure_files = ("apgd_loss_curve.png",)

  def run(self, ctx: EvalContext) -> EvalResult:
    cfg, results, metrics = ctx.cfg, {}, {}
    n = ctx.count(cfg.autoattack_samples)
    iters = {} if cfg.autoattack_iters is None else {"apgd_n_iter": cfg.autoattack_iters,
                                                      "fab_n_iter": cfg.autoattack_iters}
    for norm, eps in cfg.autoattack_budgets:
      aa_cfg = autoattack.AutoAttackConfig(norm=norm, eps=float(eps),
                                           version=cfg.autoattack_version, seed=cfg.attack_seed,
                                           batch_size=cfg.batch_size, **iters)
      budget = f"{norm}@{float(eps)!r}"
      results[budget] = autoattack.run_autoattack(
          ctx.logits_fn, ctx.x[:n], ctx.y[:n], aa_cfg, ctx.log, ctx.parts, f"autoattack-{budget}")
    for budget, res in results.items():
      metrics[f"autoattack/{budget}/robust_accuracy"] = res["robust_accuracy"]
      metrics[f"autoattack/{budget}/clean_accuracy"] = res["clean_accuracy"]
      for attack, acc in res["per_attack"].items():
        metrics[f"autoattack/{budget}/after_{attack}"] = acc
      metrics["autoattack/samples"] = int(len(res["robust_mask"]))
    loss = {b: r["apgd_loss_curve"] for b, r in results.items()}
    figures = []
    if results:
      plots.loss_curves({f"APGD-CE {b}": c for b, c in loss.items()},
                        ctx.path(self.figure_files[0]))
      figures.append(self.figure_files[0])
    return EvalResult(metrics, figures, state={"results": results},
                      record={"curves": {"apgd_loss": loss}},
                      attack_config={"autoattack": {b: {**r["config"],
                                                        "samples": len(r["robust_mask"])}
                                                    for b, r in results.items()}})


class ApgdCurve(Evaluator):
  """apgd/acc@<eps>, apgd/samples; the accuracy-vs-eps curve. Skipped for no epsilons."""
  figure_files = ("apgd_accuracy_curve.png",)

  def run(self, ctx: EvalContext) -> EvalResult:
    cfg, curve, metrics, figures = ctx.cfg, {}, {}, []
    if cfg.apgd_curve_epsilons:
      n = ctx.count(cfg.apgd_curve_samples)
      curve = autoattack.apgd_accuracy_curve(ctx.logits_fn, ctx.x[:n], ctx.y[:n],
                                             cfg.apgd_curve_epsilons, "Linf", cfg.attack_seed,
                                             cfg.apgd_curve_iters, cfg.batch_size)
      metrics = {metric_key("apgd/acc", e): a for e, a in curve.items()}
      metrics["apgd/samples"] = int(n)
      plots.accuracy_curve(list(curve), list(curve.values()), ctx.path(self.figure_files[0]),
                           f"APGD-CE ({cfg.apgd_curve_iters} iterations)")
      figures.append(self.figure_files[0])
    return EvalResult(metrics, figures, state={"curve": curve},
                      record={"curves": {"apgd": {"eps": list(curve),
                                                  "accuracy": list(curve.values())}}},
                      attack_config={"apgd_curve": {
                          "attack": "apgd-ce", "norm": "Linf",
                          "epsilons": list(cfg.apgd_curve_epsilons),
                          "n_iter": cfg.apgd_curve_iters, "restarts": 1,
                          "seed": cfg.attack_seed, "samples": cfg.apgd_curve_samples}})


class SanityChecks(Evaluator):
  """sanity/<check> (1 pass, 0 fail) and sanity/failed; one note per check, failures first.

  Reads the evaluators before it: the metrics gathered so far, the per-image FGSM / PGD
  masks, the AutoAttack results, the APGD curve and the DeepFool run. A check whose inputs
  were not measured is skipped; the DeepFool check runs DeepFool itself when "deepfool" did
  not run before it.
  """

  def run(self, ctx: EvalContext) -> EvalResult:
    cfg = ctx.cfg
    checks = sanity.evaluation_checks(
        ctx.logits_fn, ctx.x, ctx.y, ctx.num_classes, cfg, ctx.metrics,
        ctx.state("attacks", "correct", {}), ctx.state("autoattack", "results", {}),
        ctx.state("apgd_curve", "curve", {}),
        deepfool_result=ctx.state("deepfool", "result"))
    notes = sanity.report_lines(checks)
    for line in notes:
      if "FAILED" in line:
        ctx.log(f"[evaluate] {line}")
    return EvalResult(sanity.as_metrics(checks), notes=notes,
                      record={"sanity": sanity.as_records(checks)}, attack_config={
                          "sanity_unbounded_pgd": {
                              "norm": "Linf", "eps": 1.0, "steps": cfg.sanity_unbounded_steps,
                              "step_size": 2.5 / cfg.sanity_unbounded_steps,
                              "random_start": True, "samples": cfg.sanity_samples}})
