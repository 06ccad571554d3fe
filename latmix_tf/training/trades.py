"""TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan 2019): trade clean accuracy for robustness
through a smoothness term instead of training on adversarial examples alone.

  loss = CE(f(x), y) + β · KL(softmax f(x) ‖ softmax f(x′)),
  x′ = argmax over the L∞ ε-ball (and [0, 1]) of that KL, found by PGD.

The inner PGD follows the paper's code (yaodongyu/TRADES, `trades_loss`): start at
x + 0.001·N(0, 1), k signed-gradient steps on the KL against the (fixed) clean prediction,
projection onto the ε-ball and the image box after each step, the model in inference mode.
The paper's settings, per step count and step size relative to ε: CIFAR-10 10 steps of
0.007 at ε = 0.031 (ε / 4.43), MNIST 40 steps of 0.01 at ε = 0.3 (ε / 30); β = 6 (its
CIFAR-10 value; larger β = more robust, less accurate). `paper_inner_loop` scales those to
our ε (`adversarial.DEFAULT_EPSILON`).

How the loss goes through the one loop: the loop scores rows by soft cross-entropy, which is
linear in the label rows. With p = softmax f(x) (gradient flowing through it, as in the
paper), KL(p ‖ q) = CE(p, f(x′)) − CE(p, f(x)), so `forward` returns three row blocks,

  logits [f(x); f(x′); f(x)]   labels [y; β·p; −β·p],

whose summed CE is exactly CE(y, f(x)) + β·KL per example; label masses 1 + β − β = 1 keep
the loop's average and its logged loss right. The negative rows would make the loop's
label-mass accuracy meaningless, so `after_step` reports the clean rows' accuracy (the same
definition as ERM's) and the mean KL as `train/kl`. f(x) and f(x′) are two forward passes in
training mode, as in the paper's code (separate BatchNorm batches).

One departure from the paper's code, on by default (`shared_dropout`): f(x′) is computed with
the dropout masks of f(x) (`models.classifiers.rewind_dropout`). With independent masks the KL
also measures the dropout noise between the two passes, and a constant prediction sets it to
zero. The paper's CIFAR-10 network has no dropout, and its MNIST code pairs its dropout
network with β = 1. With β = 6 and this CNN's dropout (0.3, twice) the noise term stalled
training near chance: on Fashion-MNIST at quick scale the clean test accuracy was 21% after
3 epochs (PGD-AT: 79%). From one start, the clean-batch train accuracy over steps 151-200 is
0.32 with independent masks, 0.66 with shared masks, 0.75 without dropout
(`benchmarks/trades_start.py`, `benchmarks/results/trades_start.md`).
`shared_dropout=False` gives the paper code's behaviour.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import tensorflow as tf

from latmix_tf import attacks
from latmix_tf.models.classifiers import rewind_dropout
from latmix_tf.training.method import Method

# The paper's inner loop: (steps, step size / ε) for 28x28 digits and for CIFAR-10.
PAPER_INNER_LOOP = {"mnist": (40, 0.01 / 0.3), "fashion_mnist": (40, 0.01 / 0.3),
                    "cifar10": (10, 0.007 / 0.031)}


def paper_inner_loop(dataset: str, epsilon: float) -> Tuple[int, float]:
  """(steps, step_size) of the TRADES paper's code for `dataset`, at our `epsilon`."""
  if dataset not in PAPER_INNER_LOOP:
    raise ValueError(f"No TRADES inner-loop setting for dataset {dataset!r}; valid: "
                     f"{', '.join(sorted(PAPER_INNER_LOOP))}.")
  steps, ratio = PAPER_INNER_LOOP[dataset]
  return steps, ratio * epsilon


@dataclasses.dataclass(frozen=True)
class TradesConfig:
  """TRADES.

  Attributes:
    beta: weight β of the KL term (0 = ERM; the paper's CIFAR-10 value 6).
    epsilon: L∞ radius of x′ in [0, 1] pixel units.
    steps: PGD steps on the KL (see `paper_inner_loop`).
    step_size: PGD step size (see `paper_inner_loop`).
    init_std: std of the Gaussian start x + init_std·N(0, 1) (the paper's code: 0.001).
    shared_dropout: f(x′) sees f(x)'s dropout masks, so the KL measures the input
      perturbation alone (see the module docstring); False: independent masks.
  """
  name: str = "trades"
  beta: float = 6.0
  epsilon: float = 0.1
  steps: int = 40
  step_size: float = 0.1 / 30
  init_std: float = 0.001
  shared_dropout: bool = True


def kl_pgd(logits_fn, x: tf.Tensor, eps: float, steps: int, step_size: float,
           init_std: float, seed: Optional[tf.Tensor]) -> tf.Tensor:
  """x′ maximising Σ KL(softmax logits_fn(x) ‖ softmax logits_fn(x′)) over the ε-ball ∩ [0, 1].

  Args:
    logits_fn: differentiable images -> logits (the model in inference mode).
    x: float images in [0, 1].
    eps, steps, step_size: the L∞ radius, number and size of the signed-gradient steps.
    init_std: std of the Gaussian start around x.
    seed: shape-[2] integer seed of the start (stateless).
  Returns:
    x′ (no gradient), within eps of x and inside [0, 1].
  """
  x = tf.convert_to_tensor(x)
  eps = tf.cast(eps, x.dtype)
  log_p = tf.stop_gradient(tf.nn.log_softmax(logits_fn(x), axis=-1))
  p = tf.exp(log_p)
  noise = tf.random.stateless_normal(tf.shape(x), tf.cast(seed, tf.int64), dtype=x.dtype)
  start = x + init_std * noise

  def body(i, x_cur):
    with tf.GradientTape() as tape:
      tape.watch(x_cur)
      log_q = tf.nn.log_softmax(logits_fn(x_cur), axis=-1)
      kl = tf.reduce_sum(p * (log_p - log_q))
    x_next = x_cur + step_size * tf.sign(tape.gradient(kl, x_cur))
    # The projection (ε-ball ∩ [0, 1]) of the attacks module, shared with FGSM / PGD.
    return i + 1, attacks._project(x_next, x, eps)  # pylint: disable=protected-access

  _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), start))
  return tf.stop_gradient(x_adv)


class Trades(Method):
  """CE on the clean batch + β·KL to the prediction at the KL-adversarial point."""

  name = "trades"

  def __init__(self, cfg: TradesConfig = TradesConfig()):
    if cfg.beta < 0:
      raise ValueError(f"TradesConfig.beta must be >= 0 (0 is ERM), got {cfg.beta}.")
    if not 0.0 < cfg.epsilon <= 1.0:
      raise ValueError(f"TradesConfig.epsilon must be in (0, 1] (pixels in [0, 1]), got "
                       f"{cfg.epsilon}.")
    if cfg.steps < 1 or not cfg.step_size > 0:
      raise ValueError(f"TradesConfig needs steps >= 1 and step_size > 0, got steps="
                       f"{cfg.steps}, step_size={cfg.step_size}.")
    self.cfg = cfg
    self._stash: Dict[str, tf.Tensor] = {}

  def prepare_batch(self, model, x, y, seed):
    cfg = self.cfg
    x_adv = kl_pgd(lambda images: model(images, training=False), x, cfg.epsilon, cfg.steps,
                   cfg.step_size, cfg.init_std, seed)
    return (x, x_adv), y

  def forward(self, model, x, y, seed):
    x_clean, x_adv = x
    y = tf.cast(y, tf.float32)
    rewind = rewind_dropout(model) if self.cfg.shared_dropout else None
    clean = model(x_clean, training=True)
    if rewind:
      rewind()
    adv = model(x_adv, training=True)
    p = tf.nn.softmax(clean, axis=-1)
    beta = tf.constant(self.cfg.beta, tf.float32)
    # Read by after_step in the same compiled step (and replica): the clean accuracy and
    # the KL term, as the metrics of the update.
    self._stash = {
        "accuracy": tf.reduce_sum(tf.cast(tf.equal(tf.argmax(clean, -1), tf.argmax(y, -1)),
                                          tf.float32)),
        "kl": tf.reduce_sum(p * (tf.nn.log_softmax(clean, -1) - tf.nn.log_softmax(adv, -1)))}
    return tf.concat([clean, adv, clean], 0), tf.concat([y, beta * p, -beta * p], 0)

  def after_step(self, model, x, y, seed):
    return {k: tf.stop_gradient(v) for k, v in self._stash.items()}
