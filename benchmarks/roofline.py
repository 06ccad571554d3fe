"""How far the training steps are from this CPU's matmul limit.

One run measures
  * the fp32 matmul peak: `tf.matmul` of n x n matrices in a compiled loop (n = 512, 1024,
    2048; the best counts), on the process's threads (2 on our machines); with native bf16
    also the bf16 peak;
  * the ERM train step of the main job's classifier (the real `Trainer` step, full-scale
    Fashion-MNIST config, batch 128) and the recall-DCGAN step (G + D + E, batch 128);
  * each step's FLOPs, counted from its traced graph (`_common.graph_flops`: Conv2D, both
    conv gradients, MatMul; the elementwise rest is memory-bound and not counted), and
    checked by hand for the classifier's forward pass.
Achieved = FLOPs / time; the ratio to the peak is the distance to the limit. Both wall and
process-CPU rates are reported: on a shared machine the CPU-time ratio (FLOPs per CPU-second
of the step over FLOPs per CPU-second of the matmul) is the one that survives the load. A
CPU-second is a core-second, so the quiet-machine peak of T threads is ~T x the per-CPU-s
figure (both steps and the matmul use the same TF thread pools).

  python benchmarks/roofline.py [--steps=60] [--out=benchmarks/results/roofline.json]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from _common import RESULTS, Timer, graph_flops, machine, write_json

import keras  # pylint: disable=wrong-import-order
import numpy as np  # pylint: disable=wrong-import-order
import tensorflow as tf  # pylint: disable=wrong-import-order

from experiments import get as get_experiment  # pylint: disable=wrong-import-order
from latmix_tf import hardware  # pylint: disable=wrong-import-order
from latmix_tf.data import load_dataset, make_splits  # pylint: disable=wrong-import-order
from latmix_tf.generative import build_generative_model  # pylint: disable=wrong-import-order
from latmix_tf.models.classifiers import build_classifier  # pylint: disable=wrong-import-order
from latmix_tf.training import ERM  # pylint: disable=wrong-import-order
from latmix_tf.training.loop import Trainer  # pylint: disable=wrong-import-order


def matmul_peak(dtype=tf.float32, sizes=(512, 1024, 2048), seconds=1.5, trials=3):
  """Best GFLOP/s (wall and per CPU-second) of square matmuls in a compiled loop.

  Each size runs `trials` timed loops of ~`seconds`; the best one counts (on a shared
  machine the best short trial is the closest to what the cores can do)."""
  best, best_wall = None, 0.0
  for n in [m for m in sizes for _ in range(trials)]:
    a = tf.random.stateless_uniform([n, n], [1, 2], dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)

    @tf.function
    def loop(k, a=a, b=b):
      acc = tf.zeros([n, n], dtype)
      for _ in tf.range(k):
        acc = tf.matmul(a, b) + acc * 0  # a data dependence keeps every product
      return acc

    loop(tf.constant(2)).numpy()
    with Timer() as t:
      loop(tf.constant(2)).numpy()
    reps = max(int(seconds / max(t.wall / 2, 1e-4)), 3)
    with Timer() as t:
      loop(tf.constant(reps)).numpy()
    flops = 2.0 * n ** 3 * reps
    row = t.record(n=n, reps=reps, gflops_wall=flops / t.wall / 1e9,
                   gflops_per_cpu_s=flops / t.cpu / 1e9)
    print(f"  matmul {dtype.name} n={n}: {row['gflops_wall']:.1f} GFLOP/s wall, "
          f"{row['gflops_per_cpu_s']:.1f} GFLOP per CPU-s (load {t.load:.1f})", flush=True)
    best_wall = max(best_wall, row["gflops_wall"])
    if best is None or row["gflops_per_cpu_s"] > best["gflops_per_cpu_s"]:
      best = row
  # per CPU-second = per core-second: the load-robust figure; x threads on a quiet machine.
  return {**best, "best_gflops_wall_any_trial": best_wall}


def time_step(fn, args, steps):
  """Wall / CPU seconds per call of a compiled step (after 3 warm-up calls)."""
  for _ in range(3):
    tf.nest.map_structure(lambda v: v.numpy(), fn(*args))
  with Timer() as t:
    for _ in range(steps):
      out = fn(*args)
    tf.nest.map_structure(lambda v: v.numpy(), out)
  return t.record(steps=steps, wall_per_step=t.wall / steps, cpu_per_step=t.cpu / steps)


def classifier_forward_flops_by_hand(cfg, image_shape, batch):
  """2 x MACs of the SmallCNN's convs and dense layers (cross-check of graph_flops)."""
  h, w, c = image_shape
  total = 0
  for i, width in enumerate(cfg.widths):
    total += 2 * h * w * width * 9 * c
    c = width
    if i < 2:
      h, w = h // 2, w // 2
  total += 2 * h * w * c * cfg.dense_units + 2 * cfg.dense_units * cfg.num_classes
  return total * batch


def classifier_step(steps, experiment="erm_fmnist", jit_compile=False):
  cfg = get_experiment(experiment).get_config(scale="full")
  splits = make_splits(load_dataset(cfg.data.name, cfg.data.data_dir), cfg.data)
  keras.utils.set_random_seed(0)
  model = build_classifier(cfg.model, splits.x_train.shape[1:])
  bs = cfg.data.batch_size
  with tempfile.TemporaryDirectory() as wd:
    trainer = Trainer(model, ERM(), splits, cfg.data, cfg.train, wd, 0, log=lambda s: None)
  step = tf.function(trainer._distributed_train_step, jit_compile=jit_compile)  # pylint: disable=protected-access
  x = tf.constant(splits.x_train[:bs].astype(np.float32) / 255.0)
  y = tf.one_hot(splits.y_train[:bs], splits.num_classes)
  flops = graph_flops(step.get_concrete_function(x, y))
  fwd = tf.function(lambda x: model(x, training=False))
  fwd_flops = graph_flops(fwd.get_concrete_function(x))["total"]
  by_hand = classifier_forward_flops_by_hand(cfg.model, splits.x_train.shape[1:], bs)
  row = time_step(step, (x, y), steps)
  return {"batch": bs, "flops": flops, "forward_flops_graph": fwd_flops,
          "forward_flops_by_hand": by_hand, **row}


def dcgan_step(steps, experiment="latent_mixup_fmnist", jit_compile=False):
  cfg = get_experiment(experiment).get_config(scale="full")
  gcfg = cfg.method.generator
  gm = build_generative_model(gcfg, (28, 28, 1), seed=0)
  x = tf.random.stateless_uniform([gcfg.batch_size, 28, 28, 1], [3, 4])
  step = tf.function(gm.trainer.train_step, jit_compile=jit_compile)
  flops = graph_flops(step.get_concrete_function(x))
  row = time_step(step, (x,), steps)
  return {"batch": gcfg.batch_size, "recon_weight": gcfg.recon_weight, "flops": flops, **row}


def achieved(step, peak):
  f = step["flops"]["total"]
  return {"gflops_wall": f / step["wall_per_step"] / 1e9,
          "gflops_per_cpu_s": f / step["cpu_per_step"] / 1e9,
          "ratio_wall": f / step["wall_per_step"] / 1e9 / peak["gflops_wall"],
          "ratio_cpu": f / step["cpu_per_step"] / 1e9 / peak["gflops_per_cpu_s"]}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--steps", type=int, default=60)
  p.add_argument("--jit_compile", action="store_true", help="XLA on both steps")
  p.add_argument("--out", default=os.path.join(RESULTS, "roofline.json"))
  args = p.parse_args()
  out = {"machine": machine(), "threads": {
      "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
      "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
      "jit_compile": args.jit_compile}
  print(f"CPU: {out['machine']['cpu']}  load {out['machine']['load_avg']}", flush=True)
  out["peak_fp32"] = matmul_peak(tf.float32)
  if hardware.cpu_info().native_bf16:
    out["peak_bf16"] = matmul_peak(tf.bfloat16, sizes=(1024, 2048))
  out["erm_step"] = classifier_step(args.steps, jit_compile=args.jit_compile)
  out["erm_step"].update(achieved(out["erm_step"], out["peak_fp32"]))
  out["dcgan_step"] = dcgan_step(max(args.steps // 3, 5), jit_compile=args.jit_compile)
  out["dcgan_step"].update(achieved(out["dcgan_step"], out["peak_fp32"]))
  out["machine"]["load_avg_end"] = list(os.getloadavg())
  write_json(args.out, out)
  pk = out["peak_fp32"]
  print(f"fp32 matmul peak: {pk['gflops_wall']:.1f} GFLOP/s wall, "
        f"{pk['gflops_per_cpu_s']:.1f} GFLOP per CPU-s (n={pk['n']})")
  for name in ("erm_step", "dcgan_step"):
    s = out[name]
    print(f"{name}: {s['flops']['total'] / 1e9:.2f} GFLOP/step, "
          f"{1000 * s['wall_per_step']:.1f} ms wall ({1000 * s['cpu_per_step']:.1f} ms CPU) "
          f"-> {s['gflops_wall']:.1f} GFLOP/s wall = {100 * s['ratio_wall']:.0f}% of peak; "
          f"{s['gflops_per_cpu_s']:.1f} GFLOP/CPU-s = {100 * s['ratio_cpu']:.0f}% of peak")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  del dataclasses
  main()
