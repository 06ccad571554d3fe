"""Why TRADES stalled at a constant prediction under the shared recipe: a training probe.

Why: every method of a comparison is trained by one recipe (AdamW, lr 2e-3, cosine, weight
decay 5e-4: `experiments/common.train_config`). TRADES at the issue's β = 6, with the
independent dropout masks of the TRADES code's two training-mode passes, sat near a constant
prediction for its whole quick-scale budget (train accuracy 0.154, 0.175 and 0.184 after the
3 epochs of the Fashion-MNIST screening member; clean test accuracy 21%), while PGD-AT on the
same recipe reached 79%. This probe trains the quick Fashion-MNIST classifier (dropout 0.3,
twice) for a few hundred TRADES steps from the same start under:

  independent   β = 6, independent dropout masks in f(x) and f(x′) (the TRADES code)
  shared        β = 6, f(x′) with f(x)'s masks (`TradesConfig.shared_dropout`, the default)
  no dropout    β = 6, the same network without dropout
  β=1           β = 1 (the TRADES code's MNIST value), independent masks
  sgd           β = 6, independent masks, SGD at lr 0.01 (the TRADES code's optimizer and
                rate; latmix's `sgd` has Nesterov momentum 0.9, the TRADES code plain 0.9)

If the shared masks train like the network without dropout while independent masks stall,
the stall is the KL between two dropout draws, which a constant prediction sets to zero, and
not the optimizer. Each row is the clean-batch train accuracy and the KL term, averaged over
windows of 50 steps. The inner KL-PGD uses 10 steps of ε/4 instead of the recipe's 40 of
ε/30 to keep the probe to minutes. The numbers are deterministic for a seed; a loaded machine
changes only the time.

  python benchmarks/trades_start.py [--steps=200] [--data_dir=DIR]

Writes benchmarks/results/trades_start.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import _common  # pylint: disable=unused-import  (puts the repository on sys.path)
from _common import machine, write_results

import numpy as np  # pylint: disable=wrong-import-order
import tensorflow as tf  # pylint: disable=wrong-import-order
import keras  # pylint: disable=wrong-import-order

from experiments.common import EPOCHS, model_config, train_config
from latmix_tf.data.sources import load_dataset
from latmix_tf.losses import soft_cross_entropy
from latmix_tf.models.classifiers import build_classifier
from latmix_tf.training.loop import make_optimizer
from latmix_tf.training.trades import Trades, TradesConfig

BATCH, WINDOW, INNER_STEPS, EPSILON = 128, 50, 10, 0.1
VARIANTS = {  # name -> (beta, shared dropout masks, dropout rate or None, TrainConfig overrides)
    "independent": (6.0, False, None, {}),
    "shared": (6.0, True, None, {}),
    "no dropout": (6.0, True, 0.0, {}),
    "β=1": (1.0, False, None, {}),
    "sgd": (6.0, False, None, {"optimizer": "sgd", "learning_rate": 0.01}),
}


def probe(x, y, beta, shared, dropout, overrides, steps, seed=0):
  """Windowed clean train accuracy and KL of `steps` TRADES updates from a seeded start."""
  keras.utils.set_random_seed(seed)
  model_cfg = model_config("fashion_mnist", "quick")
  if dropout is not None:
    model_cfg = dataclasses.replace(model_cfg, dropout=dropout)
  model = build_classifier(model_cfg, x.shape[1:])
  total = EPOCHS["fashion_mnist"]["quick"] * (len(x) // BATCH)  # the quick run's schedule
  optimizer = make_optimizer(train_config("fashion_mnist", "quick", **overrides), total)
  method = Trades(TradesConfig(beta=beta, epsilon=EPSILON, steps=INNER_STEPS,
                               step_size=EPSILON / 4, shared_dropout=shared))

  @tf.function
  def step(xb, yb, s):
    inputs, labels = method.prepare_batch(model, xb, yb, s)
    with tf.GradientTape() as tape:
      logits, rows = method.forward(model, inputs, labels, s)
      loss = tf.reduce_sum(soft_cross_entropy(rows, logits)) / BATCH
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    stats = method.after_step(model, inputs, labels, s)
    return stats["accuracy"] / BATCH, stats["kl"] / BATCH

  rng = np.random.default_rng(seed)
  acc, kl, rows = [], [], []
  for i in range(steps):
    idx = rng.integers(0, len(x), BATCH)
    a, k = step(tf.constant(x[idx]), tf.constant(y[idx]), tf.constant([seed, i], tf.int64))
    acc.append(float(a))
    kl.append(float(k))
    if (i + 1) % WINDOW == 0:
      rows.append({"steps": i + 1, "accuracy": float(np.mean(acc[-WINDOW:])),
                   "kl": float(np.mean(kl[-WINDOW:]))})
      print(f"  step {i + 1}: train accuracy {rows[-1]['accuracy']:.3f}  "
            f"KL {rows[-1]['kl']:.4f}", flush=True)
  return rows


def markdown(result):
  lines = ["# TRADES from a fresh start: dropout masks, β and optimizer", "",
           f"`python benchmarks/trades_start.py --steps={result['steps']}` on "
           f"{result['machine']['cpu']['model']} ({result['machine']['cpu']['cores']} cores, "
           f"load {result['machine']['load_avg'][0]:.1f} at the start); "
           f"quick Fashion-MNIST classifier, batch {BATCH}, ε = {EPSILON}, inner KL-PGD "
           f"{INNER_STEPS} steps of ε/4, seed 0. Clean-batch train accuracy (KL term), mean "
           f"over each {WINDOW} steps.", "",
           "| steps | " + " | ".join(result["variants"]) + " |",
           "|---|" + "---|" * len(result["variants"])]
  for i, row in enumerate(next(iter(result["variants"].values()))["rows"]):
    cells = [f"{v['rows'][i]['accuracy']:.3f} ({v['rows'][i]['kl']:.4f})"
             for v in result["variants"].values()]
    lines.append(f"| {row['steps']} | " + " | ".join(cells) + " |")
  lines += ["", "Variants: " + "; ".join(
      f"{name}: β = {v['beta']}, {v['masks']} dropout masks, dropout {v['dropout']}, "
      f"{v['optimizer']}" for name, v in result["variants"].items())
      + "."]
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--data_dir", default=None)
  args = parser.parse_args()
  arrays = load_dataset("fashion_mnist", args.data_dir)
  x = arrays.x_train.astype("float32") / 255.0
  y = np.eye(10, dtype="float32")[arrays.y_train]
  result = {"steps": args.steps, "machine": machine(), "variants": {}}
  default_dropout = model_config("fashion_mnist", "quick").dropout
  for name, (beta, shared, dropout, overrides) in VARIANTS.items():
    print(f"{name}: beta {beta}, shared masks {shared}, dropout {dropout}, "
          f"{overrides or 'shared recipe'}", flush=True)
    t0 = time.perf_counter()
    cfg = train_config("fashion_mnist", "quick", **overrides)
    result["variants"][name] = {
        "beta": beta, "masks": "shared" if shared else "independent",
        "dropout": default_dropout if dropout is None else dropout,
        "optimizer": f"{cfg.optimizer} lr {cfg.learning_rate:g}",
        "rows": probe(x, y, beta, shared, dropout, overrides, args.steps),
        "wall_s": time.perf_counter() - t0}
  text = markdown(result)
  print(text)
  write_results("trades_start", result, text)


if __name__ == "__main__":
  main()
