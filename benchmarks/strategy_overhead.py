"""Cost of being distributable: training images/s, default strategy vs 1-replica MirroredStrategy.

Why: the one training loop always goes through `strategy.run`, `experimental_distribute_
dataset` and cross-replica reductions so that it runs unchanged on several GPUs or machines.
This measures what that costs on one device: the same loop (ERM, the full-scale Fashion-MNIST
CNN and batch size) under the default strategy and under `MirroredStrategy` holding the same
single device. Target: at most 10% fewer images/s.

Both trainers are built in one process and timed in alternation (A B A B ...), each round on
the same epoch of `--steps` batches after an untimed warm-up epoch (tracing), so that load
from other processes hits both alike; the medians are compared.

  python benchmarks/strategy_overhead.py [--data_dir=/tmp/ldata] [--steps=40] [--rounds=5]
Uses Fashion-MNIST from --data_dir when present, else random images of the same shape.
Writes benchmarks/results/strategy_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from latmix_tf.config import DataConfig, ModelConfig, TrainConfig  # pylint: disable=wrong-import-position
from latmix_tf.data import load_dataset, make_splits  # pylint: disable=wrong-import-position
from latmix_tf.data.pipeline import Splits, train_dataset  # pylint: disable=wrong-import-position
from latmix_tf.models.classifiers import build_classifier  # pylint: disable=wrong-import-position
from latmix_tf.training import ERM, Trainer  # pylint: disable=wrong-import-position

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "strategy_overhead.json")


def load_splits(data_dir, cfg: DataConfig) -> tuple:
  try:
    return make_splits(load_dataset("fashion_mnist", data_dir, allow_tfds=False), cfg), "fmnist"
  except Exception as e:  # pylint: disable=broad-except
    print(f"no Fashion-MNIST in {data_dir} ({type(e).__name__}); using random images")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6000, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, 6000).astype(np.int64)
    return Splits(x, y, x[:500], y[:500], x[:500], y[:500], 10, "random"), "random"


def make_trainer(strategy, splits, data_cfg, train_cfg, workdir):
  keras.utils.set_random_seed(0)
  with strategy.scope():
    model = build_classifier(ModelConfig("cnn", (32, 64), 128), (28, 28, 1))
  return Trainer(model, ERM(), splits, data_cfg, train_cfg, workdir, seed=0, strategy=strategy,
                 log=lambda s: None)


def time_epoch(trainer, splits, data_cfg, steps, epoch) -> float:
  """Images/s of one epoch of `steps` training batches through the loop's own `_run`."""
  ds = train_dataset(splits, data_cfg, seed=0, epoch=epoch, steps=steps)
  t0 = time.perf_counter()
  trainer._run(ds, trainer._train_step)  # pylint: disable=protected-access
  return steps * data_cfg.batch_size / (time.perf_counter() - t0)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default="/tmp/ldata")
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args()
  data_cfg = DataConfig("fashion_mnist", args.data_dir, batch_size=128, augment="flip")
  splits, data = load_splits(args.data_dir, data_cfg)
  train_cfg = TrainConfig(epochs=1000, steps_per_epoch=args.steps)
  device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
  strategies = {"default": tf.distribute.get_strategy(),
                "mirrored_1_replica": tf.distribute.MirroredStrategy([device])}
  load_before = os.getloadavg()
  with tempfile.TemporaryDirectory() as tmp:
    trainers = {k: make_trainer(s, splits, data_cfg, train_cfg, os.path.join(tmp, k))
                for k, s in strategies.items()}
    for t in trainers.values():  # warm-up: tracing and first-call costs
      time_epoch(t, splits, data_cfg, args.steps, epoch=0)
    rates = {k: [] for k in trainers}
    for r in range(args.rounds):
      order = list(trainers) if r % 2 == 0 else list(reversed(trainers))
      for k in order:
        rates[k].append(time_epoch(trainers[k], splits, data_cfg, args.steps, epoch=r + 1))
      print(f"round {r + 1}: " + "  ".join(f"{k}={v[-1]:.0f} img/s" for k, v in rates.items()),
            flush=True)
  med = {k: float(np.median(v)) for k, v in rates.items()}
  overhead = 100.0 * (1.0 - med["mirrored_1_replica"] / med["default"])
  result = {"images_per_second_median": med, "images_per_second_rounds": rates,
            "overhead_percent": overhead, "target_percent": 10.0,
            "within_target": overhead <= 10.0, "device": device, "data": data,
            "batch_size": data_cfg.batch_size, "steps_per_round": args.steps,
            "rounds": args.rounds, "model": "cnn (32, 64), dense 128, ERM, AdamW",
            "cpu_count": os.cpu_count(), "load_average_before": load_before,
            "load_average_after": os.getloadavg(), "tensorflow": tf.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M")}
  os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
  with open(RESULTS, "w") as f:
    json.dump(result, f, indent=2)
  print(f"default {med['default']:.0f} img/s, MirroredStrategy(1 replica) "
        f"{med['mirrored_1_replica']:.0f} img/s: overhead {overhead:+.1f}% "
        f"(target <= 10%) -> {RESULTS}")


if __name__ == "__main__":
  main()
