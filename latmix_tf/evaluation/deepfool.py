"""Batched L2 DeepFool (Moosavi-Dezfooli et al. 2016) and its rho_adv summary.

rho_adv = mean over the evaluated images of ||r(x)||_2 / ||x||_2, where r(x) is the small
perturbation DeepFool finds that changes the model's prediction. It is computed for every
method from the exported SavedModel, so the same code measures every classifier.

Algorithm (multi-class, paper-faithful defaults):
  * start class k0 = the model's *prediction* on x (not the label); candidate classes = the
    `candidates` classes with the largest initial logits (all classes when fewer);
  * each iteration linearises the logit differences f_k - f_k0 at the current point, moves
    to the nearest linearised boundary plus `min_step`,
    r_i = (|f'_l| / ||w'_l|| + min_step) * w'_l / ||w'_l||, and accumulates r_tot += r_i;
    the current point is x_i = clip(x + (1 + overshoot) * r_tot, 0, 1): the overshoot is
    applied to the accumulated perturbation (as in the authors' reference code and foolbox),
    and iteration stops once k(x_i) != k0 or after `max_iter` steps.
  * Images stay in [0, 1] by clipping x_i to the box; the linearisation is redone at the
    clipped point, so clipping only costs extra iterations. Clipping also shrinks every step
    (clipped pixels do not move), so without `min_step` the iterates approach the boundary
    geometrically and may never cross it: with min_step = 0, 31% of 512 Fashion-MNIST test
    images were not flipped in 50 iterations (a 2-epoch SmallCNN). min_step = 1e-4 (an L2
    length; the authors' code and foolbox add the same constant) fixes that, and changes
    ||r|| by 1e-4 per iteration. The reported perturbation is the *actual* one,
    r = x_adv - x (after clipping), so ||r|| is the distance to the returned adversarial.
Batching: one `tf.function` runs the whole loop (`tf.while_loop`) on a batch with a per-sample
"still correct" mask; each iteration gathers only the still-active samples (finished ones
cost nothing), runs ONE forward pass on them under a persistent tape and takes one
vector-Jacobian product per candidate boundary on that shared forward graph (cotangent
e_l - e_k0 gives grad(f_l - f_k0) for all samples at once), then scatters the steps back.
Measured on a Fashion-MNIST CNN: 2.4x faster than replicating each image (candidates - 1)
times for a single backward pass, and faster than `batch_jacobian` (pfor).
Samples that never flip within `max_iter` are counted (`deepfool/not_flipped`) and stay in
rho_adv with the perturbation reached at `max_iter` (foolbox and ART do the same); we also
report rho over the flipped samples only (`deepfool/rho_adv_flipped`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict

import numpy as np
import tensorflow as tf

_TINY = 1e-8


@dataclasses.dataclass(frozen=True)
class DeepFoolResult:
  """Per-sample DeepFool outputs (numpy arrays over the evaluated images)."""
  x_adv: np.ndarray          # [N, H, W, C] final images (adversarial where `flipped`)
  l2: np.ndarray             # ||x_adv - x||_2
  relative: np.ndarray       # ||x_adv - x||_2 / ||x||_2
  iterations: np.ndarray     # DeepFool steps taken (int)
  flipped: np.ndarray        # prediction(x_adv) != prediction(x)
  start_class: np.ndarray    # k0 = prediction(x)
  final_class: np.ndarray    # prediction(x_adv)


def make_deepfool_fn(logits_fn: Callable[[tf.Tensor], tf.Tensor], image_shape,
                     num_classes: int, candidates: int = 10, overshoot: float = 0.02,
                     max_iter: int = 50,
                     min_step: float = 1e-4) -> Callable[[tf.Tensor], Dict[str, tf.Tensor]]:
  """Builds the compiled batched DeepFool: `fn(images[N,H,W,C]) -> dict of tensors`.

  Args:
    logits_fn: differentiable `images -> logits` (e.g. `latmix_tf.export.logits_fn`).
    image_shape: (H, W, C).
    num_classes: number of logits.
    candidates: classes considered per sample (top by initial logit, incl. k0).
    overshoot: eta; the point tested is x + (1 + eta) * r_tot.
    max_iter: maximum DeepFool steps per sample.
    min_step: L2 length added to every step (see module docstring).
  Returns:
    A `tf.function` (traced once for any batch size) returning x_adv, iterations,
    start_class and final_class.
  """
  num_classes = int(num_classes)
  k = min(int(candidates), num_classes)
  if k < 2:
    raise ValueError(f"DeepFool needs >= 2 candidate classes, got candidates={candidates}, "
                     f"num_classes={num_classes}.")
  eta = float(overshoot)
  spec = tf.TensorSpec([None, *image_shape], tf.float32)

  def step(x_act, cand):
    """One linearisation for the active samples: returns (still_correct, r_step)."""
    n_act = tf.shape(x_act)[0]
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(x_act)
      logits = logits_fn(x_act)                            # ONE forward pass
    origin = tf.one_hot(cand[:, 0], num_classes, dtype=logits.dtype)
    # One vector-Jacobian product per candidate on the shared forward graph:
    # grad of (f_l - f_k0) for every active sample at once.
    grads = tf.stack([
        tf.reshape(tape.gradient(logits, x_act, output_gradients=tf.one_hot(
            cand[:, j], num_classes, dtype=logits.dtype) - origin), [n_act, -1])
        for j in range(1, k)], axis=1)                     # [A, k - 1, D]
    del tape
    diff = (tf.gather(logits, cand[:, 1:], axis=1, batch_dims=1) -
            tf.gather(logits, cand[:, :1], axis=1, batch_dims=1))  # f_l - f_k0, [A, k-1]
    still = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), cand[:, 0])
    norms = tf.norm(grads, axis=-1)
    best = tf.argmin(tf.abs(diff) / (norms + _TINY), axis=1, output_type=tf.int32)
    f_best = tf.gather(diff, best, axis=1, batch_dims=1)
    w_best = tf.gather(grads, best, axis=1, batch_dims=1)  # [A, D]
    n_best = tf.gather(norms, best, axis=1, batch_dims=1)
    r = ((tf.abs(f_best) / (n_best + _TINY) + min_step) / (n_best + _TINY))[:, None] * w_best
    r = tf.where(still[:, None], r, tf.zeros_like(r))
    return still, tf.reshape(r, tf.shape(x_act))

  @tf.function(input_signature=[spec])
  def run(x0):
    logits0 = logits_fn(x0)
    cand = tf.math.top_k(logits0, k=k).indices           # [N, k], cand[:, 0] = k0
    n = tf.shape(x0)[0]

    def cond(i, r_tot, x_cur, active, iters):
      return tf.logical_and(i < max_iter, tf.reduce_any(active))

    def body(i, r_tot, x_cur, active, iters):
      idx = tf.where(active)                               # [A, 1]
      still, r = step(tf.gather_nd(x_cur, idx), tf.gather_nd(cand, idx))
      r_tot = tf.tensor_scatter_nd_add(r_tot, idx, r)
      iters = tf.tensor_scatter_nd_add(iters, idx, tf.cast(still, tf.int32))
      active = tf.tensor_scatter_nd_update(active, idx, still)
      x_cur = tf.clip_by_value(x0 + (1.0 + eta) * r_tot, 0.0, 1.0)
      return i + 1, r_tot, x_cur, active, iters

    init = (tf.constant(0), tf.zeros_like(x0), x0, tf.ones([n], tf.bool),
            tf.zeros([n], tf.int32))
    _, _, x_adv, _, iters = tf.while_loop(cond, body, init)
    final = tf.argmax(logits_fn(x_adv), axis=1, output_type=tf.int32)
    return {"x_adv": x_adv, "iterations": iters, "start_class": cand[:, 0],
            "final_class": final}

  return run


def run_deepfool(logits_fn: Callable[[tf.Tensor], tf.Tensor], images: np.ndarray,
             num_classes: int, candidates: int = 10, overshoot: float = 0.02,
             max_iter: int = 50, batch_size: int = 128,
             min_step: float = 1e-4) -> DeepFoolResult:
  """Runs batched DeepFool over float images in [0, 1].

  Args:
    logits_fn: differentiable `images -> logits`.
    images: float32 [N, H, W, C] in [0, 1].
    num_classes: number of logits.
    candidates, overshoot, max_iter, min_step: DeepFool parameters (module docstring).
    batch_size: images per compiled call; memory grows with batch_size * (candidates - 1).
  Returns:
    A `DeepFoolResult` with per-sample outputs.
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or len(images) == 0:
    raise ValueError(f"deepfool expects a non-empty [N, H, W, C] batch, got {images.shape}.")
  run = make_deepfool_fn(logits_fn, images.shape[1:], num_classes, candidates, overshoot,
                         max_iter, min_step)
  parts = [run(tf.constant(images[s:s + batch_size]))
           for s in range(0, len(images), batch_size)]
  out = {key: np.concatenate([p[key].numpy() for p in parts]) for key in parts[0]}
  flat_x = images.reshape(len(images), -1)
  l2 = np.linalg.norm((out["x_adv"] - images).reshape(len(images), -1), axis=1)
  return DeepFoolResult(
      x_adv=out["x_adv"], l2=l2, relative=l2 / np.linalg.norm(flat_x, axis=1),
      iterations=out["iterations"], flipped=out["final_class"] != out["start_class"],
      start_class=out["start_class"], final_class=out["final_class"])


def summarize(result: DeepFoolResult) -> Dict[str, float]:
  """Flat `deepfool/...` metrics; never-flipped samples are counted, not dropped."""
  flipped = result.flipped
  return {
      "deepfool/samples": int(len(flipped)),
      "deepfool/rho_adv": float(np.mean(result.relative)),
      "deepfool/rho_adv_flipped": (float(np.mean(result.relative[flipped]))
                                   if flipped.any() else float("nan")),
      "deepfool/mean_l2": float(np.mean(result.l2)),
      "deepfool/fooling_rate": float(np.mean(flipped)),
      "deepfool/not_flipped": int(np.sum(~flipped)),
      "deepfool/median_iterations": float(np.median(result.iterations)),
      "deepfool/mean_iterations": float(np.mean(result.iterations)),
  }
