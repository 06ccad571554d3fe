"""Auto-PGD (APGD, Croce & Hein ICML 2020): step-size-free PGD with momentum, CE / DLR losses.

Why APGD and not more PGD steps: fixed-step PGD either overshoots (large steps) or stalls
(small steps) and a weak attack overstates robustness. APGD starts at step 2*eps and halves
it at checkpoints when progress stalls, restarting from the best point found, so one budget
(100 iterations) works for every model and eps. Settings follow the paper and the authors'
"standard" AutoAttack (fra31/auto-attack); the code is our own TF implementation:
  * start: x + eps * u / ||u|| (u uniform for Linf, Gaussian for L2), clipped to [0, 1];
  * step: z = P(x_k + eta_k * s(g_k)), x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)
    (x_k - x_{k-1})), alpha = 0.75 (1 at the first step), s = sign (Linf) or g / ||g||_2
    (L2), P = projection onto the eps-ball and [0, 1];
  * checkpoints w_j = ceil(p_j N): p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} -
    0.03, 0.06). At each one the step halves for an example when (1) the loss increased in
    at most rho = 0.75 of the steps since the previous checkpoint, or (2) the step was not
    halved at the previous checkpoint and the best loss has not improved since; a halved
    example restarts from its best (highest-loss) point and gradient;
  * losses: CE; DLR = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3); targeted DLR =
    -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) (pi = logits sorted descending), which
    is invariant to shifts and rescaling of the logits.
Batching: one `tf.function` runs the whole iteration loop (`tf.while_loop`) for a batch. An
example stops being attacked once an iterate misclassifies it (its robust status cannot
change any more) - every later step gathers only the still-robust examples, so a weak model
costs a few iterations, not 100. The returned loss curve averages the current loss over
the batch, fooled examples keeping the loss at which they were fooled.
"""

from __future__ import annotations

import math
from typing import Callable, List, Tuple

import tensorflow as tf

from latmix_tf.evaluation.autoattack import common

LOSSES = ("ce", "dlr", "dlr-targeted")


def checkpoints(n_iter: int, p1: float = 0.22, decrement: float = 0.03,
                min_fraction: float = 0.06) -> List[int]:
  """APGD checkpoints w_j = ceil(p_j * n_iter) (iteration counts, increasing, < n_iter)."""
  p = [0.0, p1]
  while True:
    nxt = p[-1] + max(p[-1] - p[-2] - decrement, min_fraction)
    if nxt > 1.0:
      break
    p.append(nxt)
  ws = sorted({int(math.ceil(q * n_iter - 1e-9)) for q in p[1:]})
  return [w for w in ws if 0 < w < n_iter]


def dlr_loss(logits: tf.Tensor, y: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
  """Difference-of-logits ratio (untargeted); `target` is unused."""
  del target
  top = tf.math.top_k(logits, k=3).values
  return -common.margin(logits, y) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr_loss(logits: tf.Tensor, y: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
  """Targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)."""
  top = tf.math.top_k(logits, k=4).values
  z_y = tf.gather(logits, y, axis=1, batch_dims=1)
  z_t = tf.gather(logits, target, axis=1, batch_dims=1)
  return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def ce_loss(logits: tf.Tensor, y: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
  del target
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)


_LOSS_FNS = {"ce": ce_loss, "dlr": dlr_loss, "dlr-targeted": targeted_dlr_loss}


def make_apgd_fn(logits_fn: Callable[[tf.Tensor], tf.Tensor], image_shape, norm: str = "Linf",
                 loss: str = "ce", n_iter: int = 100, rho: float = 0.75,
                 momentum: float = 0.75, initial_step: float = 2.0) -> Callable:
  """Builds the compiled APGD `fn(x, y, target_rank, eps, seed) -> dict`.

  Args:
    logits_fn: differentiable `images -> logits`.
    image_shape: (H, W, C).
    norm: "Linf" or "L2".
    loss: "ce", "dlr" or "dlr-targeted" (the target is the class of logit rank
      `target_rank`, 1 = runner-up, on the clean image).
    n_iter: iterations N.
    rho: oscillation threshold of the step-size halving condition.
    momentum: alpha of the momentum step.
    initial_step: initial step size in units of eps.
  Returns:
    A `tf.function` (one trace for every batch size and eps) returning "x_adv" (the first
    iterate that misclassifies, else the start point), "fooled" [B] and "loss_curve"
    [n_iter + 1] (mean loss of the start point and after each iteration).
  """
  common.check_norm(norm)
  if loss not in _LOSS_FNS:
    raise ValueError(f"unknown APGD loss {loss!r}; valid: {', '.join(LOSSES)}.")
  loss_fn = _LOSS_FNS[loss]
  marks = checkpoints(n_iter)
  is_check = tf.constant([i + 1 in marks for i in range(n_iter)])
  # Steps since the previous checkpoint, i.e. the window the oscillation count covers.
  window = tf.constant([(i + 1) - max([0] + [m for m in marks if m < i + 1])
                        for i in range(n_iter)], tf.float32)

  def loss_and_grad(x, y, t):
    with tf.GradientTape() as tape:
      tape.watch(x)
      logits = logits_fn(x)
      values = loss_fn(logits, y, t)
      total = tf.reduce_sum(values)
    grad = tape.gradient(total, x)
    if grad is None:
      raise ValueError("logits_fn has no gradient with respect to the images; APGD and FAB "
                       "need a differentiable images -> logits callable (Square does not).")
    return logits, values, grad

  @tf.function(input_signature=[common.image_spec(image_shape), tf.TensorSpec([None], tf.int32),
                                tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32),
                                tf.TensorSpec([2], tf.int64)])
  def run(x, y, target_rank, eps, seed):
    target = y
    if loss == "dlr-targeted":
      target = common.target_classes(logits_fn(x), target_rank)
    x0 = common.random_start(x, eps, norm, seed)
    logits, loss0, grad0 = loss_and_grad(x0, y, target)
    n = tf.shape(x)[0]
    fooled = tf.not_equal(common.predicted(logits), y)
    state = {
        "x_cur": x0, "x_prev": x0, "grad": grad0, "x_best": x0, "grad_best": grad0,
        "x_adv": x0, "loss": loss0, "loss_best": loss0, "loss_best_last": loss0,
        "step": tf.fill([n], initial_step) * eps, "inc": tf.zeros([n]),
        "reduced_last": tf.ones([n], tf.bool), "fooled": fooled}
    curve = tf.TensorArray(tf.float32, size=n_iter + 1).write(0, tf.reduce_mean(loss0))

    def body(i, state, curve):
      idx = tf.cast(tf.where(~state["fooled"])[:, 0], tf.int32)
      s = {k: tf.gather(v, idx) for k, v in state.items()}
      xs, ys, ts = tf.gather(x, idx), tf.gather(y, idx), tf.gather(target, idx)
      a = tf.where(i > 0, momentum, 1.0)
      z = common.project(s["x_cur"] + common.per_example(s["step"], xs) *
                         common.steepest_direction(s["grad"], norm), xs, eps, norm)
      x_new = common.project(s["x_cur"] + a * (z - s["x_cur"]) +
                             (1.0 - a) * (s["x_cur"] - s["x_prev"]), xs, eps, norm)
      logits, values, grad = loss_and_grad(x_new, ys, ts)
      mis = tf.not_equal(common.predicted(logits), ys)
      s["x_adv"] = common.rows_where(mis, x_new, s["x_adv"])
      s["fooled"] = mis
      s["inc"] = s["inc"] + tf.cast(values > s["loss"], tf.float32)
      s["loss"] = values
      better = values > s["loss_best"]
      s["x_best"] = common.rows_where(better, x_new, s["x_best"])
      s["grad_best"] = common.rows_where(better, grad, s["grad_best"])
      s["loss_best"] = tf.where(better, values, s["loss_best"])
      # Checkpoint: halve the step where progress stalled and restart from the best point.
      check = is_check[i]
      oscillating = s["inc"] <= rho * window[i]
      stuck = tf.logical_and(~s["reduced_last"], s["loss_best_last"] >= s["loss_best"])
      reduce = tf.logical_and(check, tf.logical_or(oscillating, stuck))
      s["step"] = tf.where(reduce, 0.5 * s["step"], s["step"])
      x_new = common.rows_where(reduce, s["x_best"], x_new)
      s["grad"] = common.rows_where(reduce, s["grad_best"], grad)
      s["reduced_last"] = tf.where(check, reduce, s["reduced_last"])
      s["loss_best_last"] = tf.where(check, s["loss_best"], s["loss_best_last"])
      s["inc"] = tf.where(check, tf.zeros_like(s["inc"]), s["inc"])
      s["x_prev"], s["x_cur"] = s["x_cur"], x_new
      state = {k: common.scatter_rows(state[k], idx, s[k]) for k in state}
      return i + 1, state, curve.write(i + 1, tf.reduce_mean(state["loss"]))

    def cond(i, state, curve):
      del curve
      return tf.logical_and(i < n_iter, tf.reduce_any(~state["fooled"]))

    i, state, curve = tf.while_loop(cond, body, (tf.constant(0), state, curve))
    # Early exit (all fooled): the remaining curve entries repeat the final mean loss.
    last = tf.reduce_mean(state["loss"])
    curve = tf.while_loop(lambda j, c: j < n_iter, lambda j, c: (j + 1, c.write(j + 1, last)),
                          (i, curve))[1]
    return {"x_adv": state["x_adv"], "fooled": state["fooled"], "loss_curve": curve.stack()}

  return run


def attack_runs(name: str, n_restarts: int, n_target_classes: int,
                num_classes: int) -> List[Tuple[str, int]]:
  """(label, target_rank) of each sequential run of an APGD variant, as AutoAttack orders them.

  APGD-CE / APGD-DLR: `n_restarts` runs (target_rank unused, 0). APGD-T: the targets are
  the classes ranked 2nd .. (n_target_classes + 1)-th by the clean logits, one run each per
  restart; capped at num_classes - 1 targets (the targeted DLR needs >= 4 classes).
  """
  if name != "apgd-t":
    return [(f"restart {r}", 0) for r in range(n_restarts)]
  if num_classes < 4:
    raise ValueError(f"APGD-T's targeted DLR loss needs >= 4 classes, got {num_classes}.")
  n_t = min(n_target_classes, num_classes - 1)
  return [(f"target {t} restart {r}", t) for t in range(1, n_t + 1) for r in range(n_restarts)]
