"""What a CIFAR-10 run costs on this machine, measured without the data.

CIFAR-10 is in no package registry this project can reach, so its experiments cannot be run
here end to end at full size. The *cost* of an epoch does not depend on the pixels, though:
this times the registered full-scale recipes' training steps on random 32x32x3 images of the
real split sizes (45,000 train / 5,000 validation), through the real loop and models, and
projects the seconds per epoch and per run:

  * the classifier step of `erm_cifar10` (pre-activation ResNet, widths 32-64-128, batch
    128, shift+flip augmentation) - the same network every baseline trains;
  * the generator step of `latent_mixup_cifar10` (recall-term DCGAN, latent 128).

  python benchmarks/cifar10_epoch_time.py [--steps=40]
Writes benchmarks/results/cifar10_epoch_time.json (CPU model and flags, load average, wall
and process-CPU seconds per step, projected seconds per epoch and per run).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _common  # noqa: E402  pylint: disable=wrong-import-position
import experiments  # noqa: E402  pylint: disable=wrong-import-position
from latmix_tf.data.pipeline import Splits  # noqa: E402  pylint: disable=wrong-import-position
from latmix_tf.generative import build_generative_model, train_generator  # noqa: E402  pylint: disable=wrong-import-position
from latmix_tf.models.classifiers import build_classifier  # noqa: E402  pylint: disable=wrong-import-position
from latmix_tf.training import ERM, train  # noqa: E402  pylint: disable=wrong-import-position

RESULTS = os.path.join(_common.RESULTS, "cifar10_epoch_time.json")
TRAIN, VAL = 45000, 5000


def _random_splits(n_train: int) -> Splits:
  rng = np.random.default_rng(0)
  images = lambda n: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # noqa: E731
  labels = lambda n: rng.integers(0, 10, n).astype(np.int64)  # noqa: E731
  return Splits(images(n_train), labels(n_train), images(512), labels(512), images(512),
                labels(512), 10, "random")


def _timed(run, steps: int):
  """(wall, CPU) seconds per step of `run(steps)` after a warm-up call of 2 steps."""
  run(2)
  cpu0, t0 = _common.cpu_seconds(), time.perf_counter()
  run(steps)
  return (time.perf_counter() - t0) / steps, (_common.cpu_seconds() - cpu0) / steps


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--steps", type=int, default=40, help="timed steps of each model")
  p.add_argument("--out", default=RESULTS)
  args = p.parse_args(argv)
  load_before = os.getloadavg()
  clf_cfg = experiments.get("erm_cifar10").get_config(scale="full")
  lm_cfg = experiments.get("latent_mixup_cifar10").get_config(scale="full")
  splits = _random_splits(clf_cfg.data.batch_size * (args.steps + 2))
  work = os.path.join("/tmp", f"cifar10_epoch_time_{os.getpid()}")

  def classifier_steps(n):
    model = build_classifier(clf_cfg.model, (32, 32, 3))
    train(model, ERM(), splits, clf_cfg.data, dataclasses.replace(
        clf_cfg.train, epochs=1, steps_per_epoch=n), os.path.join(work, f"clf{n}"), 0,
          log=lambda s: None)

  gcfg = lm_cfg.method.generator

  def generator_steps(n):
    gm = build_generative_model(dataclasses.replace(gcfg, epochs=1, steps_per_epoch=n),
                                (32, 32, 3))
    train_generator(gm, splits.x_train, os.path.join(work, f"gen{n}"), 0, log=lambda s: None)

  rows = {}
  for name, fn, steps_per_epoch, epochs in (
      ("classifier (erm_cifar10 ResNet)", classifier_steps, TRAIN // clf_cfg.data.batch_size,
       clf_cfg.train.epochs),
      ("generator (recall DCGAN, latent 128)", generator_steps, (TRAIN + VAL) // gcfg.batch_size,
       gcfg.epochs)):
    wall, cpu = _timed(fn, args.steps)
    rows[name] = {"wall_seconds_per_step": wall, "cpu_seconds_per_step": cpu,
                  "steps_per_epoch": steps_per_epoch,
                  "projected_wall_seconds_per_epoch": wall * steps_per_epoch,
                  "projected_cpu_seconds_per_epoch": cpu * steps_per_epoch,
                  "epochs_full_scale": epochs,
                  "projected_wall_minutes_full_scale": wall * steps_per_epoch * epochs / 60}
    print(f"{name}: {wall * 1000:.0f} ms/step wall, {cpu * 1000:.0f} ms CPU -> "
          f"{wall * steps_per_epoch:.0f} s/epoch, {epochs} epochs = "
          f"{wall * steps_per_epoch * epochs / 60:.0f} min", flush=True)
  _common.write_json(args.out, {"machine": _common.machine(), "loadavg_before": load_before,
                                "loadavg_after": os.getloadavg(), "timed_steps": args.steps,
                                "models": rows})
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
