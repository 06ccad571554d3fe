"""GAT, the Generative Adversarial Trainer (Lee, Han, Lee 2017, arXiv:1705.03387).

A generator network G learns to turn the classifier's input gradient into an adversarial
perturbation; the classifier F is trained on clean and generated-adversarial images; the
two are updated alternately, so the attack adapts to the classifier as it hardens.

The paper's terms (notation of the paper, F = classifier softmax, y = true label):
  Δ = ∇_x CE(F(x), y)                         gradient of the classifier's loss per image
  x_adv = x + G(Δ)                            G's output is bounded by a tanh output layer
  L_G = E[ F(x + G(Δ))_y ] + c_g E||G(Δ)||²   generator: lower the true-class probability,
                                              paying an L2 penalty for the perturbation size
  L_F = α CE(F(x), y) + (1 - α) CE(F(x_adv), y),   α = 0.5
One generator step and one classifier step alternate on each batch. (Verified against the
abstract and secondary summaries only - gradient-input generator, tanh-bounded output, a
c_g-weighted norm penalty, clean + adversarial classifier loss, alternating updates; the
true-class-probability form of L_G and α = 0.5 are from our reading of the full text and
could not be re-checked here.)

What this implementation chooses where the paper leaves it open:
  * G's input is [Δ / max|Δ|, x] (gradient normalised per image, concatenated with the
    image): the raw gradient shrinks by orders of magnitude as F trains, which would
    otherwise starve G of signal.
  * G is a 3-layer fully convolutional net (3x3 convs, `generator_filters` wide, ReLU); its
    output is ε·tanh(·), an L∞ bound with the same ε as FGSM/PGD training, so GAT is
    compared with the other defences at the same budget; x_adv is clipped to [0, 1].
  * The penalty is normalised: c · ||δ||² / (D ε²) (D = pixels x channels), so c = 1 costs 1
    for a perturbation saturated at ±ε everywhere; it equals the paper's c_g = c / (D ε²).
    Default c = 0.1.
  * `generator_loss="probability"` is the paper's true-class probability; "cross_entropy"
    (maximise CE instead) is offered as an option.
  * G uses Adam(1e-3, β1 = 0.5), one G step per classifier step; G's Δ and its loss use
    the classifier in inference mode (same reasoning as in adversarial.py).
  * The classifier sees [x; x_adv] as one concatenated batch with label rows scaled by α and
    1 - α, which the loop turns into the weighted loss above (see adversarial.py).
"""

from __future__ import annotations

import dataclasses
from typing import Dict

import keras
import tensorflow as tf

from latmix_tf import attacks
from latmix_tf.losses import soft_cross_entropy
from latmix_tf.training.method import Method

GENERATOR_LOSSES = ("probability", "cross_entropy")


@dataclasses.dataclass(frozen=True)
class GATConfig:
  """Generative Adversarial Trainer.

  Attributes:
    epsilon: L∞ bound of the generated perturbation (ε·tanh output).
    norm_penalty: c, weight of the normalised squared L2 norm ||δ||² / (D ε²).
    clean_weight: α in [0, 1): classifier loss α CE(clean) + (1 - α) CE(adversarial).
    generator_loss: "probability" (paper) or "cross_entropy".
    generator_filters: width of the generator's conv layers.
    generator_learning_rate: Adam step size of the generator.
  """
  name: str = "gat"
  epsilon: float = 0.1
  norm_penalty: float = 0.1
  clean_weight: float = 0.5
  generator_loss: str = "probability"
  generator_filters: int = 16
  generator_learning_rate: float = 1e-3


class PerturbationGenerator(keras.Model):
  """G: (input gradient, image) -> perturbation bounded by ε in L∞ (ε·tanh)."""

  def __init__(self, channels: int, filters: int, epsilon: float, **kwargs):
    super().__init__(**kwargs)
    self.epsilon = epsilon
    self.net = keras.Sequential([
        keras.layers.Conv2D(filters, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(filters, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(channels, 3, padding="same")], name="perturbation_net")

  def call(self, grad, x):
    scale = tf.reduce_max(tf.abs(grad), axis=[1, 2, 3], keepdims=True)
    grad = grad / tf.maximum(scale, 1e-12)
    return self.epsilon * tf.tanh(self.net(tf.concat([grad, x], axis=-1)))


def _input_channels(model) -> int:
  """Image channels of a built classifier: the input depth of its first conv kernel."""
  for v in model.trainable_variables:
    if len(v.shape) == 4:
      return int(v.shape[2])
  raise ValueError(f"GAT could not find a conv kernel in {type(model).__name__} to infer the "
                   "image channels; build the classifier (call it once) before training.")


class GAT(Method):
  """Classifier on [clean; G-perturbed] batches; G updated after each classifier step."""

  name = "gat"

  def __init__(self, cfg: GATConfig = GATConfig()):
    if not 0.0 < cfg.epsilon <= 1.0:
      raise ValueError(f"GATConfig.epsilon must be in (0, 1], got {cfg.epsilon}.")
    if not 0.0 <= cfg.clean_weight < 1.0:
      raise ValueError(f"GATConfig.clean_weight must be in [0, 1), got {cfg.clean_weight}.")
    if cfg.generator_loss not in GENERATOR_LOSSES:
      raise ValueError(f"Unknown generator_loss {cfg.generator_loss!r}; valid: "
                       f"{', '.join(GENERATOR_LOSSES)}.")
    if cfg.norm_penalty < 0:
      raise ValueError(f"GATConfig.norm_penalty must be >= 0, got {cfg.norm_penalty}.")
    self.cfg = cfg
    self.generator = None
    self.generator_optimizer = None

  def build(self, model, num_classes: int) -> None:
    channels = _input_channels(model)
    self.generator = PerturbationGenerator(channels, self.cfg.generator_filters,
                                           self.cfg.epsilon, name="gat_generator")
    zeros = tf.zeros([1, 8, 8, channels])
    self.generator(zeros, zeros)  # fully convolutional: any spatial size creates the weights
    self.generator_optimizer = keras.optimizers.Adam(self.cfg.generator_learning_rate,
                                                     beta_1=0.5)
    self.generator_optimizer.build(self.generator.trainable_variables)

  def checkpoint_items(self) -> Dict[str, tf.Module]:
    return {"gat_generator": self.generator,
            "gat_generator_optimizer": self.generator_optimizer}

  def input_gradient(self, model, x, y) -> tf.Tensor:
    """Δ: gradient of the classifier's cross-entropy w.r.t. the images (inference mode)."""
    return attacks.input_gradient(lambda images: model(images, training=False), x, y)

  def perturb(self, grad, x):
    """(δ, x_adv): the generator's perturbation for gradient `grad`, and x + δ in [0, 1]."""
    delta = self.generator(grad, x)
    return delta, tf.clip_by_value(x + delta, 0.0, 1.0)

  def prepare_batch(self, model, x, y, seed):
    _, x_adv = self.perturb(self.input_gradient(model, x, y), x)
    # Always [clean; adversarial], even for α = 0 (zero-mass rows then count for nothing but
    # BatchNorm statistics), so that after_step finds the clean half first.
    alpha, y = self.cfg.clean_weight, tf.cast(y, tf.float32)
    return (tf.concat([x, tf.stop_gradient(x_adv)], 0),
            tf.concat([alpha * y, (1.0 - alpha) * y], 0))

  def generator_losses(self, model, grad, x, y) -> Dict[str, tf.Tensor]:
    """Per-example generator loss terms for the current classifier (differentiable in G)."""
    delta, x_adv = self.perturb(grad, x)
    logits = model(x_adv, training=False)
    y = tf.cast(y, logits.dtype)
    if self.cfg.generator_loss == "probability":
      attack_term = tf.reduce_sum(tf.nn.softmax(logits) * y, axis=-1)
    else:
      attack_term = -soft_cross_entropy(y, logits)
    size = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), x.dtype)
    squared_norm = tf.reduce_sum(tf.square(delta), axis=[1, 2, 3])
    penalty = self.cfg.norm_penalty * squared_norm / (size * self.cfg.epsilon ** 2)
    return {"loss": attack_term + penalty, "attack": attack_term,
            "l2": tf.sqrt(squared_norm)}

  def after_step(self, model, x, y, seed):
    # prepare_batch put the clean images first; their label rows (weight α) plus the
    # adversarial rows (weight 1 - α) give back the original labels.
    n = tf.shape(x)[0] // 2
    x_clean, y_clean = x[:n], y[:n] + y[n:]
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    grad = self.input_gradient(model, x_clean, y_clean)  # Δ for the updated classifier
    with tf.GradientTape() as tape:
      terms = self.generator_losses(model, grad, x_clean, y_clean)
      loss = tf.reduce_mean(terms["loss"]) / replicas
    variables = self.generator.trainable_variables
    self.generator_optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    # The loop divides summed metrics by the number of examples.
    return {"generator_loss": tf.reduce_sum(terms["loss"]),
            "perturbation_l2": tf.reduce_sum(terms["l2"])}
