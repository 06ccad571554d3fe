"""L-infinity gradient attacks (FGSM, PGD) shared by evaluation and adversarial training.

One implementation serves both uses, so the attack a model is trained against is exactly the
attack it is evaluated with (no "metric computed one way in training and another in
evaluation"). Both functions take any differentiable `logits_fn(images) -> logits` (a Keras
model, or `latmix_tf.export.logits_fn` of a loaded SavedModel), accept soft labels (the loss
is the soft-label cross-entropy, as in mixup training), and work eagerly and inside a caller's
`tf.function`: the PGD loop is a `tf.while_loop`, randomness is stateless (`seed`), and eps
may be a Python float or a scalar tensor. Images stay in [0, 1] and within eps of the input;
eps = 0 returns the input unchanged. The returned images carry no gradient (stop_gradient),
as adversarial training treats them as data.

FGSM: Goodfellow et al. 2015 (optionally from a random start, Wong et al. 2020).
PGD: Madry et al. 2018 (random start in the eps-ball, k signed-gradient steps of size alpha,
projection after each step).
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import tensorflow as tf

from latmix_tf.losses import soft_cross_entropy  # the one definition, shared

LogitsFn = Callable[[tf.Tensor], tf.Tensor]
Scalar = Union[float, tf.Tensor]


def input_gradient(logits_fn: LogitsFn, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
  """Gradient of the summed soft-label cross-entropy with respect to the images.

  The sum (not the mean) keeps each example's gradient independent of the batch size.

  Raises:
    ValueError: the logits do not depend on the images (no gradient path).
  """
  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = tf.reduce_sum(soft_cross_entropy(tf.cast(y, tf.float32), logits_fn(x)))
  grad = tape.gradient(loss, x)
  if grad is None:
    raise ValueError("logits_fn(images) has no gradient with respect to images; pass a "
                     "differentiable images -> logits callable (not numpy / argmax outputs).")
  return grad


def _uniform_noise(x: tf.Tensor, eps: tf.Tensor, seed: Optional[tf.Tensor]) -> tf.Tensor:
  """U(-eps, eps) noise of x's shape; stateless (reproducible) when `seed` is given."""
  if seed is None:
    unit = tf.random.uniform(tf.shape(x), -1.0, 1.0, dtype=x.dtype)
  else:
    unit = tf.random.stateless_uniform(tf.shape(x), tf.cast(seed, tf.int64), -1.0, 1.0,
                                       dtype=x.dtype)
  return eps * unit


def _project(x_adv: tf.Tensor, x: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
  """Projection onto the eps-ball around x intersected with the image box [0, 1]."""
  return tf.clip_by_value(tf.clip_by_value(x_adv, x - eps, x + eps), 0.0, 1.0)


def _prepare(x: tf.Tensor, y: tf.Tensor, eps: Scalar):
  x = tf.convert_to_tensor(x)
  if not x.dtype.is_floating:
    raise ValueError(f"attacks expect float images in [0, 1], got dtype {x.dtype}; convert "
                     "uint8 images with latmix_tf.data.to_float first.")
  y = tf.convert_to_tensor(y)
  eps = tf.cast(eps, x.dtype)
  return x, y, eps


def fgsm(logits_fn: LogitsFn, x: tf.Tensor, y_onehot: tf.Tensor, eps: Scalar,
         random_start: bool = False, seed: Optional[tf.Tensor] = None,
         step_size: Optional[Scalar] = None) -> tf.Tensor:
  """Fast gradient sign method: one signed-gradient step of the cross-entropy.

  Args:
    logits_fn: differentiable `images -> logits`.
    x: float images in [0, 1], shape [N, H, W, C].
    y_onehot: [N, num_classes] one-hot or soft labels.
    eps: L-inf radius (Python float or scalar tensor); 0 returns `x` unchanged.
    random_start: start from x + U(-eps, eps) ("FGSM-RS", Wong et al. 2020).
    seed: shape-[2] integer tensor for the stateless random start; None uses TF's stateful
      RNG (not reproducible).
    step_size: size of the signed step (default eps; Wong et al. use 1.25 eps with a
      random start). The result is always projected back into the eps-ball.
  Returns:
    Adversarial images (no gradient), within eps of `x` and inside [0, 1].
  """
  x, y, eps = _prepare(x, y_onehot, eps)
  alpha = eps if step_size is None else tf.cast(step_size, x.dtype)
  start = x
  if random_start:
    start = tf.clip_by_value(x + _uniform_noise(x, eps, seed), 0.0, 1.0)
  grad = input_gradient(logits_fn, start, y)
  x_adv = _project(start + alpha * tf.sign(grad), x, eps)
  # eps = 0 must be the identity even where the gradient is not finite.
  return tf.stop_gradient(tf.where(eps > 0, x_adv, x))


def pgd(logits_fn: LogitsFn, x: tf.Tensor, y_onehot: tf.Tensor, eps: Scalar, steps: int,
        step_size: Scalar, random_start: bool = True,
        seed: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Projected gradient descent (L-inf) on the cross-entropy (Madry et al. 2018).

  Args:
    logits_fn: differentiable `images -> logits`.
    x: float images in [0, 1], shape [N, H, W, C].
    y_onehot: [N, num_classes] one-hot or soft labels.
    eps: L-inf radius (Python float or scalar tensor); 0 returns `x` unchanged.
    steps: number of signed-gradient steps k (Python int or scalar int tensor).
    step_size: alpha, the size of each step (2.5 eps / k is the usual choice).
    random_start: start from x + U(-eps, eps), clipped to [0, 1].
    seed: shape-[2] integer tensor for the stateless random start; None uses TF's stateful
      RNG (not reproducible).
  Returns:
    Adversarial images (no gradient), within eps of `x` and inside [0, 1].
  """
  x, y, eps = _prepare(x, y_onehot, eps)
  alpha = tf.cast(step_size, x.dtype)
  x_adv = x
  if random_start:
    x_adv = tf.clip_by_value(x + _uniform_noise(x, eps, seed), 0.0, 1.0)

  def body(i, x_cur):
    grad = input_gradient(logits_fn, x_cur, y)
    return i + 1, _project(x_cur + alpha * tf.sign(grad), x, eps)

  _, x_adv = tf.while_loop(lambda i, _: i < tf.cast(steps, tf.int32), body,
                           (tf.constant(0, tf.int32), x_adv))
  return tf.stop_gradient(tf.where(eps > 0, x_adv, x))
