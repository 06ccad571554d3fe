"""Where the main job's time goes: a TF-profiler trace of each stage at reduced size.

Issue 16, item 1: profile before changing anything. Each stage of `latent_mixup_fmnist`
runs through its real code at reduced size, traced with `tf.profiler` after a warm-up (so
tracing / compilation is not in the figures, except for evaluation, traced whole):
  generator   one epoch of `generative.train.train_generator` (recall DCGAN), capped steps;
  bank        one chunk of `latent.inversion.Inverter.invert` (E(x) + 20 Adam steps);
  classifier  one epoch of the `Trainer` with `LatentMixup` (decoding in the pipeline);
  evaluation  `evaluation.evaluate_saved_model` of a trained SavedModel, sample counts cut.
The trace (xplane.pb) is summarised here, without TensorBoard: TF op time by op type (the
executor's "name:Type" events on the compute threads), tf.data time, and host Python (time
on the Python thread outside any TF event). Beside it: wall, process CPU and load.

  python benchmarks/profile_stages.py --stage=classifier [--steps=100] [--model=SAVEDMODEL]
Writes benchmarks/results/profile_<stage>.json (the trace itself stays in /tmp).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import shutil
import tempfile
import types

from _common import RESULTS, Timer, machine, write_json

import keras  # pylint: disable=wrong-import-order
import tensorflow as tf  # pylint: disable=wrong-import-order

from experiments import get as get_experiment  # pylint: disable=wrong-import-order
from latmix_tf.data import load_dataset, make_splits  # pylint: disable=wrong-import-order


def _union(intervals):
  total, end = 0, -1
  for s, e in sorted(intervals):
    if e <= end:
      continue
    total += e - max(s, end)
    end = e
  return total


def summarize_trace(logdir: str, top: int = 15):
  """Op time by type, tf.data time, compute-thread busy time and host-Python time (s)."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=import-outside-toplevel
  path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  host = next(p for p in space.planes if p.name == "/host:CPU")
  ops, data, busy, span, python = {}, {}, [], [None, None], 0.0
  for line in host.lines:
    ivals = []
    for e in line.events:
      name = host.event_metadata[e.metadata_id].name
      s, t = line.timestamp_ns * 1000 + e.offset_ps, e.duration_ps
      span[0] = s if span[0] is None else min(span[0], s)
      span[1] = s + t if span[1] is None else max(span[1], s + t)
      ivals.append((s, s + t))
      if ":" in name and "::" not in name and line.name != "python":
        kind = name.split(":")[-1].replace("_Mkl", "").replace("_Fused", "Fused")
        ops[kind] = ops.get(kind, 0) + t
      elif name.startswith("Iterator::") and "::" not in name[len("Iterator::"):]:
        data[name] = data.get(name, 0) + t
    if line.name == "python":
      python_line = ivals
    elif ivals:
      busy.append(_union(ivals))
  wall_ps = (span[1] - span[0]) if span[0] is not None else 0
  python = (wall_ps - _union(python_line)) / 1e12 if wall_ps else 0.0
  total_ops = sum(ops.values())
  ranked = sorted(ops.items(), key=lambda kv: -kv[1])
  return {"trace_wall_s": wall_ps / 1e12, "op_seconds": total_ops / 1e12,
          "ops_top": [{"op": k, "s": v / 1e12, "share": v / max(total_ops, 1)}
                      for k, v in ranked[:top]],
          "tfdata_iterator_s": {k: v / 1e12 for k, v in sorted(data.items())},
          "compute_threads_busy_s": [b / 1e12 for b in sorted(busy, reverse=True)[:6]],
          "host_python_s": python}


def traced(fn, logdir):
  shutil.rmtree(logdir, ignore_errors=True)
  tf.profiler.experimental.start(logdir)
  with Timer() as t:
    fn()
  tf.profiler.experimental.stop()
  return {**t.record(), **summarize_trace(logdir)}


def _cfg():
  return get_experiment("latent_mixup_fmnist").get_config(scale="full")


def stage_generator(args, logdir):
  from latmix_tf.generative import build_generative_model  # pylint: disable=import-outside-toplevel
  from latmix_tf.generative.train import train_generator  # pylint: disable=import-outside-toplevel
  cfg = _cfg()
  gcfg = dataclasses.replace(cfg.method.generator, epochs=2, steps_per_epoch=args.steps)
  splits = make_splits(load_dataset(cfg.data.name, cfg.data.data_dir), cfg.data)
  gm = build_generative_model(gcfg, (28, 28, 1), seed=0)
  box = {}

  def log(line):  # the first epoch (tracing) ends: trace the second
    if "epoch 1/2" in line and "start" not in box:
      box["start"] = Timer().__enter__()
      tf.profiler.experimental.start(logdir)

  with tempfile.TemporaryDirectory() as wd:
    train_generator(gm, splits.x_train, wd, 0, log=log)
  tf.profiler.experimental.stop()
  t = box["start"]
  t.__exit__(None)
  return {"steps": args.steps, **t.record(), **summarize_trace(logdir)}


def stage_bank(args, logdir):
  from latmix_tf.generative import build_generative_model  # pylint: disable=import-outside-toplevel
  from latmix_tf.latent.inversion import Inverter  # pylint: disable=import-outside-toplevel
  cfg = _cfg()
  inv = cfg.method.inversion
  splits = make_splits(load_dataset(cfg.data.name, cfg.data.data_dir), cfg.data)
  gm = build_generative_model(cfg.method.generator, (28, 28, 1), seed=0)
  inverter = Inverter(gm, inv, (28, 28, 1))
  inverter.invert(splits.x_train[:inv.batch_size])  # warm-up (tracing)
  n = args.images
  out = traced(lambda: inverter.invert(splits.x_train[:n], offset=0), logdir)
  return {"images": n, "batch_size": inv.batch_size, "steps": inv.steps,
          "images_per_s_wall": n / out["wall_s"], **out}


def stage_classifier(args, logdir):
  from latmix_tf.generative import build_generative_model  # pylint: disable=import-outside-toplevel
  from latmix_tf.training.latent_mixup import LatentMixup  # pylint: disable=import-outside-toplevel
  from latmix_tf.models.classifiers import build_classifier  # pylint: disable=import-outside-toplevel
  from latmix_tf.training.loop import Trainer  # pylint: disable=import-outside-toplevel
  cfg = _cfg()
  splits = make_splits(load_dataset(cfg.data.name, cfg.data.data_dir), cfg.data)
  gm = build_generative_model(cfg.method.generator, (28, 28, 1), seed=0)
  bank = types.SimpleNamespace(z=gm.sample_prior(len(splits.x_train), 0).numpy(),
                               labels=splits.y_train)
  method = LatentMixup(cfg.method, gen=gm, bank=bank, batch_size=cfg.data.batch_size)
  keras.utils.set_random_seed(0)
  model = build_classifier(cfg.model, splits.x_train.shape[1:])
  tcfg = dataclasses.replace(cfg.train, steps_per_epoch=args.steps)
  with tempfile.TemporaryDirectory() as wd:
    trainer = Trainer(model, method, splits, cfg.data, tcfg, wd, 0, log=lambda s: None)
    trainer.run_epoch(0)  # warm-up (tracing)
    out = traced(lambda: trainer.run_epoch(1), logdir)
  return {"steps": args.steps, **out}


def stage_evaluation(args, logdir):
  from latmix_tf.evaluation import evaluate_saved_model  # pylint: disable=import-outside-toplevel
  cfg = _cfg()
  arrays = load_dataset(cfg.data.name, cfg.data.data_dir)
  cut = args.eval_fraction
  ev = cfg.eval
  ev = dataclasses.replace(
      ev, deepfool_samples=int(ev.deepfool_samples * cut),
      attack_samples=int(ev.attack_samples * cut),
      autoattack_samples=int(ev.autoattack_samples * cut),
      apgd_curve_samples=int(ev.apgd_curve_samples * cut),
      corruption_samples=int((ev.corruption_samples or len(arrays.x_test)) * cut),
      sanity_samples=int(ev.sanity_samples * cut))
  n_test = int(len(arrays.x_test) * cut)
  with tempfile.TemporaryDirectory() as out_dir:
    box = {}
    out = traced(lambda: box.update(m=evaluate_saved_model(
        args.model, arrays.x_test[:n_test], arrays.y_test[:n_test], ev, out_dir,
        log=lambda s: None)), logdir)
    import json  # pylint: disable=import-outside-toplevel
    with open(os.path.join(out_dir, "evaluation.json"), encoding="utf-8") as f:
      timings = json.load(f).get("timings_seconds", {})
  return {"fraction": cut, "test_images": n_test, "model": args.model,
          "evaluation_timings_s": timings, **out}


STAGES = {"generator": stage_generator, "bank": stage_bank, "classifier": stage_classifier,
          "evaluation": stage_evaluation}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--stage", required=True, choices=sorted(STAGES))
  p.add_argument("--steps", type=int, default=100, help="generator / classifier steps")
  p.add_argument("--images", type=int, default=1024, help="bank images (one chunk)")
  p.add_argument("--model", default="saved_models/erm_fmnist-quick/seed_0",
                 help="SavedModel for the evaluation stage")
  p.add_argument("--eval_fraction", type=float, default=0.1)
  p.add_argument("--logdir", default=None)
  args = p.parse_args()
  logdir = args.logdir or os.path.join(tempfile.gettempdir(), f"latmix_profile_{args.stage}")
  result = {"stage": args.stage, "machine": machine(), **STAGES[args.stage](args, logdir),
            "trace_dir": logdir}
  result["load_avg_end"] = list(os.getloadavg())
  out = os.path.join(RESULTS, f"profile_{args.stage}.json")
  write_json(out, result)
  print({k: v for k, v in result.items() if k not in ("machine",)})
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
