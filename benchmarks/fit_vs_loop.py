"""Our one training loop against `keras.Model.fit`: images per second, same everything.

Issue 16, item 3 (target: ours >= 1.0x fit). Same classifier (the main job's SmallCNN,
same initial weights), same data pipeline (`data.pipeline.train_dataset`, the same batches),
same batch size, same optimizer (`training.loop.make_optimizer`: AdamW + cosine), same loss
(softmax cross-entropy on one-hot labels). Each side gets one untimed warm-up epoch of
`--steps` steps (tracing), then rounds alternate loop / fit so a change of machine load hits
both alike. The loop's time is the training part of `run_epoch` (the `Trainer`'s own batch
loop over the method's dataset, without the validation pass); fit's is the `fit` call. fit
runs with Keras' defaults on a CPU (jit_compile "auto" resolves to no XLA without an
accelerator, steps_per_execution 1), verbose 0. A third variant, `loop_in_graph`, probes
where a difference would come from: our compiled step with the batch taken inside the
tf.function. Wall and CPU rates are both reported; on a shared machine trust the CPU one.

  python benchmarks/fit_vs_loop.py [--steps=100] [--rounds=3]
Writes benchmarks/results/fit_vs_loop.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile

from _common import RESULTS, Timer, machine, write_json

import keras  # pylint: disable=wrong-import-order
import numpy as np  # pylint: disable=wrong-import-order
import tensorflow as tf  # pylint: disable=wrong-import-order

from experiments import get as get_experiment  # pylint: disable=wrong-import-order
from latmix_tf.data import load_dataset, make_splits  # pylint: disable=wrong-import-order
from latmix_tf.data.pipeline import train_dataset  # pylint: disable=wrong-import-order
from latmix_tf.models.classifiers import build_classifier  # pylint: disable=wrong-import-order
from latmix_tf.training import ERM  # pylint: disable=wrong-import-order
from latmix_tf.training.loop import Trainer, make_optimizer  # pylint: disable=wrong-import-order


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--experiment", default="erm_fmnist")
  p.add_argument("--steps", type=int, default=100)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--out", default=os.path.join(RESULTS, "fit_vs_loop.json"))
  args = p.parse_args()
  cfg = get_experiment(args.experiment).get_config(scale="full")
  splits = make_splits(load_dataset(cfg.data.name, cfg.data.data_dir), cfg.data)
  tcfg = dataclasses.replace(cfg.train, steps_per_epoch=args.steps)
  bs = cfg.data.batch_size
  out = {"machine": machine(), "experiment": args.experiment, "batch_size": bs,
         "steps": args.steps, "loop": [], "fit": []}
  print(f"CPU {out['machine']['cpu']['model']} ({out['machine']['cpu']['isa_class']}), "
        f"load {out['machine']['load_avg']}", flush=True)

  keras.utils.set_random_seed(0)
  model = build_classifier(cfg.model, splits.x_train.shape[1:])
  wd = tempfile.mkdtemp()
  trainer = Trainer(model, ERM(), splits, cfg.data, tcfg, wd, 0, log=lambda s: None)

  keras.utils.set_random_seed(0)
  fit_model = build_classifier(cfg.model, splits.x_train.shape[1:])
  fit_model.compile(optimizer=make_optimizer(tcfg, args.steps * tcfg.epochs),
                    loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])
  out["fit_jit_compile"] = str(fit_model.jit_compile)

  def run_loop(epoch):
    # `run_epoch`'s training part, without its validation pass (fit has none here).
    ds = trainer.method.transform_dataset(
        train_dataset(splits, cfg.data, 0, epoch, args.steps), epoch, 0)
    with Timer() as t:
      trainer._run(ds, trainer._train_step, trainer.loop.advance)  # pylint: disable=protected-access
    return {"train_s": t.wall, "cpu_s": t.cpu, "load_1min": t.load,
            "images_per_s": args.steps * bs / t.wall, "images_per_cpu_s": args.steps * bs / t.cpu}

  # A probe, not our loop: the same compiled step, but the batch taken inside the
  # tf.function (`next(iterator)` in the graph, as Keras' fit and our generator stage do)
  # instead of by the Python `for` over the distributed dataset. Same per-step metric sync.
  step_on_iterator = tf.function(
      lambda it: trainer._distributed_train_step(*next(it)))  # pylint: disable=protected-access

  def run_loop_in_graph(epoch):
    ds = trainer.distribute_dataset(trainer.method.transform_dataset(
        train_dataset(splits, cfg.data, 0, epoch, args.steps), epoch, 0))
    iterator = iter(ds)
    totals = {}
    with Timer() as t:
      for _ in range(args.steps):
        for k, v in step_on_iterator(iterator).items():
          totals[k] = totals.get(k, 0.0) + float(v)
    return {"train_s": t.wall, "cpu_s": t.cpu, "load_1min": t.load,
            "images_per_s": args.steps * bs / t.wall, "images_per_cpu_s": args.steps * bs / t.cpu}

  def run_fit(epoch):
    ds = train_dataset(splits, cfg.data, 0, epoch, args.steps)
    with Timer() as t:
      fit_model.fit(ds, epochs=1, verbose=0)
    return {"train_s": t.wall, "cpu_s": t.cpu, "load_1min": t.load,
            "images_per_s": args.steps * bs / t.wall, "images_per_cpu_s": args.steps * bs / t.cpu}

  out["loop_in_graph"] = []
  run_loop(0)
  run_loop_in_graph(0)
  run_fit(0)  # warm-ups (tracing)
  for r in range(args.rounds):
    out["loop"].append(run_loop(r + 1))
    out["loop_in_graph"].append(run_loop_in_graph(r + 1))
    out["fit"].append(run_fit(r + 1))
    print(f"round {r + 1}: loop {out['loop'][-1]['images_per_s']:.0f} img/s "
          f"(cpu {out['loop'][-1]['cpu_s']:.1f}s), fit {out['fit'][-1]['images_per_s']:.0f} "
          f"img/s (cpu {out['fit'][-1]['cpu_s']:.1f}s), in-graph next() "
          f"{out['loop_in_graph'][-1]['images_per_s']:.0f} img/s "
          f"(cpu {out['loop_in_graph'][-1]['cpu_s']:.1f}s), load {out['fit'][-1]['load_1min']:.1f}",
          flush=True)
  for side in ("loop", "fit", "loop_in_graph"):
    for rate in ("images_per_s", "images_per_cpu_s"):  # per CPU-second: robust to the load
      out[f"{side}_{rate}"] = float(np.median([r[rate] for r in out[side]]))
  out["loop_over_fit"] = out["loop_images_per_s"] / out["fit_images_per_s"]
  out["loop_over_fit_cpu"] = out["loop_images_per_cpu_s"] / out["fit_images_per_cpu_s"]
  out["load_avg_end"] = list(os.getloadavg())
  write_json(args.out, out)
  print(f"loop {out['loop_images_per_s']:.0f} img/s, fit {out['fit_images_per_s']:.0f} img/s:"
        f" ours = {out['loop_over_fit']:.2f}x fit (per CPU-second: "
        f"{out['loop_over_fit_cpu']:.2f}x).  wrote {args.out}")


if __name__ == "__main__":
  main()
