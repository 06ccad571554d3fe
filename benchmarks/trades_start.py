"""Does TRADES leave the constant-prediction start under the shared recipe? A training probe.

Why: every method of a comparison is trained by one recipe (AdamW, lr 2e-3, cosine, weight
decay 5e-4: `experiments/common.train_config`). TRADES at the issue's β = 6 then sits near
a constant prediction for its whole quick-scale budget (the screening member's log: train
accuracy 0.154 and 0.175 after epochs 1 and 2 on Fashion-MNIST), while PGD-AT on the same
recipe is at 0.56 after epoch 1. This probe says where that comes from, by training the quick
Fashion-MNIST classifier for a few hundred TRADES steps from the same start under:

  recipe        β = 6, the shared AdamW recipe (what `trades_fmnist` runs)
  recipe β=1    β = 1 (the TRADES code's MNIST default), the shared AdamW recipe
  sgd           β = 6, SGD at lr 0.01 (the TRADES code's optimizer and rate; latmix's `sgd`
                has Nesterov momentum 0.9 where the TRADES code has plain momentum 0.9)

Each row is the clean-batch train accuracy and the KL term, averaged over windows of 50
steps. The inner KL-PGD uses 10 steps of ε/4 instead of the recipe's 40 of ε/30 to keep the
probe to minutes (the screening member shows the 40-step recipe stalling the same way). The
numbers are deterministic for a seed; a loaded machine changes only the time.

  python benchmarks/trades_start.py [--steps=200] [--data_dir=DIR]

Writes benchmarks/results/trades_start.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import _common  # pylint: disable=unused-import  (puts the repository on sys.path)
from _common import RESULTS, machine

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
VARIANTS = {  # name -> (beta, TrainConfig overrides)
    "recipe": (6.0, {}),
    "recipe β=1": (1.0, {}),
    "sgd": (6.0, {"optimizer": "sgd", "learning_rate": 0.01}),
}


def probe(x, y, beta, overrides, steps, seed=0):
  """Windowed clean train accuracy and KL of `steps` TRADES updates from a seeded start."""
  keras.utils.set_random_seed(seed)
  model = build_classifier(model_config("fashion_mnist", "quick"), x.shape[1:])
  total = EPOCHS["fashion_mnist"]["quick"] * (len(x) // BATCH)  # the quick run's schedule
  optimizer = make_optimizer(train_config("fashion_mnist", "quick", **overrides), total)
  method = Trades(TradesConfig(beta=beta, epsilon=EPSILON, steps=INNER_STEPS,
                               step_size=EPSILON / 4))

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
  lines = ["# TRADES from a fresh start: the shared recipe vs the TRADES code's settings", "",
           f"`python benchmarks/trades_start.py --steps={result['steps']}` on "
           f"{result['machine']['cpu']['model']} ({result['machine']['cpu']['cores']} cores); "
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
      f"{name}: β = {v['beta']}, {v['optimizer']}" for name, v in result["variants"].items())
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
  for name, (beta, overrides) in VARIANTS.items():
    print(f"{name}: beta {beta}, {overrides or 'shared recipe'}", flush=True)
    t0 = time.perf_counter()
    cfg = train_config("fashion_mnist", "quick", **overrides)
    result["variants"][name] = {
        "beta": beta, "optimizer": f"{cfg.optimizer} lr {cfg.learning_rate:g}",
        "rows": probe(x, y, beta, overrides, args.steps),
        "wall_s": time.perf_counter() - t0}
  text = markdown(result)
  print(text)
  with open(os.path.join(RESULTS, "trades_start.json"), "w") as f:
    json.dump(result, f, indent=2)
  with open(os.path.join(RESULTS, "trades_start.md"), "w") as f:
    f.write(text)


if __name__ == "__main__":
  main()
