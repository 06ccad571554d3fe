"""Issue 16, item 4: each speed lever measured on this CPU, on the step it would change.

  python benchmarks/levers.py --lever=xla     # jit_compile: classifier / GAN / inversion steps
  python benchmarks/levers.py --lever=bf16    # mixed_bfloat16: classifier step, G + dL/dz
  python benchmarks/levers.py --lever=env     # oneDNN off, intra/inter-op threads (children)
  python benchmarks/levers.py --lever=tfdata  # the input pipeline alone vs the step it feeds
  python benchmarks/levers.py --lever=bank_batch   # inversion batch size (images / s)
  python benchmarks/levers.py --lever=attack_batch --model=SAVEDMODEL  # DeepFool / PGD batch
  python benchmarks/levers.py --lever=d_batch      # the GAN's D on real + fake: 2 calls or 1

Every variant is timed back to back with its baseline in the same process (env levers:
one child process per setting, baseline included) after warm-up calls, in alternating
rounds; per-step wall *and* process-CPU time are reported (the machine is shared, so the
CPU time is the figure to trust), with the load average. Results are appended under the
lever's name to benchmarks/results/levers.json; the table is benchmarks/results/levers.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile

from _common import RESULTS, Timer, machine

import keras  # pylint: disable=wrong-import-order
import numpy as np  # pylint: disable=wrong-import-order
import tensorflow as tf  # pylint: disable=wrong-import-order

from experiments import get as get_experiment  # pylint: disable=wrong-import-order
from latmix_tf.data import load_dataset, make_splits  # pylint: disable=wrong-import-order

OUT = os.path.join(RESULTS, "levers.json")


def _fmnist():
  cfg = get_experiment("latent_mixup_fmnist").get_config(scale="full")
  return cfg, make_splits(load_dataset(cfg.data.name, cfg.data.data_dir), cfg.data)


def per_call(fn, args, calls, warm=2):
  for _ in range(warm):
    tf.nest.map_structure(lambda v: np.asarray(v), fn(*args))
  with Timer() as t:
    for _ in range(calls):
      out = fn(*args)
    tf.nest.map_structure(lambda v: np.asarray(v), out)
  return {"wall_ms": 1000 * t.wall / calls, "cpu_ms": 1000 * t.cpu / calls,
          "load_1min": t.load}


def compare(variants, calls, rounds=2):
  """{name: (fn, args)} timed in alternating rounds; the median round per variant."""
  rows = {k: [] for k in variants}
  for _ in range(rounds):
    for name, (fn, args) in variants.items():
      rows[name].append(per_call(fn, args, calls))
  out = {}
  for name, rs in rows.items():
    out[name] = {k: float(np.median([r[k] for r in rs])) for k in rs[0]}
    print(f"  {name:28s} {out[name]['wall_ms']:8.1f} ms wall {out[name]['cpu_ms']:8.1f} ms CPU"
          f"  (load {out[name]['load_1min']:.1f})", flush=True)
  return out


def classifier_step(cfg, splits, jit=False):
  from latmix_tf.models.classifiers import build_classifier  # pylint: disable=import-outside-toplevel
  from latmix_tf.training import ERM  # pylint: disable=import-outside-toplevel
  from latmix_tf.training.loop import Trainer  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(0)
  model = build_classifier(cfg.model, splits.x_train.shape[1:])
  with tempfile.TemporaryDirectory() as wd:
    trainer = Trainer(model, ERM(), splits, cfg.data, cfg.train, wd, 0, log=lambda s: None)
  bs = cfg.data.batch_size
  x = tf.constant(splits.x_train[:bs].astype(np.float32) / 255.0)
  y = tf.one_hot(splits.y_train[:bs], splits.num_classes)
  fn = tf.function(trainer._distributed_train_step, jit_compile=jit)  # pylint: disable=protected-access
  return fn, (x, y)


def gan_step(cfg, jit=False):
  from latmix_tf.generative import build_generative_model  # pylint: disable=import-outside-toplevel
  gm = build_generative_model(cfg.method.generator, (28, 28, 1), seed=0)
  x = tf.random.stateless_uniform([cfg.method.generator.batch_size, 28, 28, 1], [3, 4])
  return tf.function(gm.trainer.train_step, jit_compile=jit), (x,), gm


def lever_xla(args):
  cfg, splits = _fmnist()
  from latmix_tf.latent.inversion import Inverter  # pylint: disable=import-outside-toplevel
  out = {}
  print("classifier ERM step (batch 128):")
  out["classifier_step"] = compare({"graph": classifier_step(cfg, splits, False),
                                    "xla": classifier_step(cfg, splits, True)}, args.calls)
  print("recall-DCGAN step (batch 128):")
  g0, a0, gm = gan_step(cfg, False)
  g1, a1, _ = gan_step(cfg, True)
  out["dcgan_step"] = compare({"graph": (g0, a0), "xla": (g1, a1)}, max(args.calls // 2, 5))
  print("inversion batch (256 images, 20 steps):")
  inv = cfg.method.inversion
  base = Inverter(gm, inv, (28, 28, 1))
  xla = Inverter(gm, inv, (28, 28, 1))
  xla.invert_batch = tf.function(xla._invert_batch, jit_compile=True,  # pylint: disable=protected-access
                                 input_signature=base.invert_batch.input_signature)
  xb = tf.constant(splits.x_train[:inv.batch_size].astype(np.float32) / 255.0)
  seed = tf.constant([0, 0], tf.int64)
  out["inversion_batch"] = compare({"graph": (base.invert_batch, (xb, seed)),
                                    "xla": (xla.invert_batch, (xb, seed))},
                                   max(args.calls // 10, 3))
  za, ma = base.invert_batch(xb, seed)
  zb, mb = xla.invert_batch(xb, seed)
  out["inversion_batch"]["max_abs_dz"] = float(tf.reduce_max(tf.abs(za - zb)))
  out["inversion_batch"]["mean_psnr_graph_vs_xla"] = [
      float(np.mean(10 * np.log10(1 / ma.numpy()))), float(np.mean(10 * np.log10(1 / mb.numpy())))]
  return out


class _Float32Logits(keras.Model):
  """The classifier with float32 logits, as a mixed-precision model must end (Keras guide)."""

  def __init__(self, inner, **kwargs):
    super().__init__(**kwargs)
    self.inner = inner

  def call(self, x, training=False):
    return tf.cast(self.inner(x, training=training), tf.float32)


def lever_bf16(args):
  """mixed_bfloat16 on the classifier step and on G's forward + input gradient (inversion).

  The GAN step itself would need code changes to run mixed (float32 labels meet bf16
  logits in its losses), so the generator side is timed on the inversion's inner work.
  """
  from latmix_tf.generative import build_generative_model  # pylint: disable=import-outside-toplevel
  from latmix_tf.models.classifiers import build_classifier  # pylint: disable=import-outside-toplevel
  from latmix_tf.training import ERM  # pylint: disable=import-outside-toplevel
  from latmix_tf.training.loop import Trainer  # pylint: disable=import-outside-toplevel
  cfg, splits = _fmnist()
  bs = cfg.data.batch_size
  x = tf.constant(splits.x_train[:bs].astype(np.float32) / 255.0)
  y = tf.one_hot(splits.y_train[:bs], splits.num_classes)
  z = tf.random.stateless_uniform([256, cfg.method.generator.latent_dim], [5, 6], -1, 1)
  target = tf.random.stateless_uniform([256, 28, 28, 1], [7, 8])
  steps = {}
  for policy in ("float32", "mixed_bfloat16"):
    keras.mixed_precision.set_global_policy(policy)
    try:
      keras.utils.set_random_seed(0)
      model = _Float32Logits(build_classifier(cfg.model, splits.x_train.shape[1:]),
                             name="float32_logits")
      model(x)
      with tempfile.TemporaryDirectory() as wd:
        trainer = Trainer(model, ERM(), splits, cfg.data, cfg.train, wd, 0, log=lambda s: None)
      gm = build_generative_model(cfg.method.generator, (28, 28, 1), seed=0)

      def inv_step(z, target, gm=gm):
        with tf.GradientTape() as tape:
          tape.watch(z)
          loss = tf.reduce_sum(tf.square(tf.cast(gm.decode(z), tf.float32) - target))
        return tape.gradient(loss, z)

      steps[policy] = ((tf.function(trainer._distributed_train_step), (x, y)),  # pylint: disable=protected-access
                       (tf.function(inv_step), (z, target)))
    finally:
      keras.mixed_precision.set_global_policy("float32")
  print("classifier ERM step (batch 128):")
  out = {"classifier_step": compare({k: v[0] for k, v in steps.items()}, args.calls)}
  print("G forward + dL/dz (256 codes, the inversion's inner step):")
  out["generator_inversion_step"] = compare({k: v[1] for k, v in steps.items()}, args.calls)
  return out


ENV_SETTINGS = {
    "default": {},
    "onednn_off": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "intra1_inter1": {"LATMIX_INTRA": "1", "LATMIX_INTER": "1"},
    "intra2_inter1": {"LATMIX_INTRA": "2", "LATMIX_INTER": "1"},
    "intra2_inter2": {"LATMIX_INTRA": "2", "LATMIX_INTER": "2"},
}


def lever_env_child(args):
  intra, inter = int(os.environ.get("LATMIX_INTRA", 0)), int(os.environ.get("LATMIX_INTER", 0))
  tf.config.threading.set_intra_op_parallelism_threads(intra)
  tf.config.threading.set_inter_op_parallelism_threads(inter)
  cfg, splits = _fmnist()
  g, ga, _ = gan_step(cfg)
  out = {"classifier_step": per_call(*classifier_step(cfg, splits), args.calls),
         "dcgan_step": per_call(g, ga, max(args.calls // 2, 5))}
  print(json.dumps(out))


def lever_env(args):
  out = {}
  for rnd in range(2):
    for name, env in ENV_SETTINGS.items():
      proc = subprocess.run([sys.executable, __file__, "--lever=env_child",
                             f"--calls={args.calls}"], env={**os.environ, **env},
                            capture_output=True, text=True, check=True)
      res = json.loads(proc.stdout.strip().splitlines()[-1])
      out.setdefault(name, []).append(res)
      print(f"  round {rnd} {name:16s} classifier {res['classifier_step']['cpu_ms']:.1f} ms CPU"
            f" {res['classifier_step']['wall_ms']:.1f} wall; dcgan "
            f"{res['dcgan_step']['cpu_ms']:.1f} CPU {res['dcgan_step']['wall_ms']:.1f} wall "
            f"(load {res['dcgan_step']['load_1min']:.1f})", flush=True)
  return {name: {step: {k: float(np.median([r[step][k] for r in rs]))
                        for k in rs[0][step]} for step in rs[0]} for name, rs in out.items()}


def lever_tfdata(args):
  from latmix_tf.data.pipeline import train_dataset  # pylint: disable=import-outside-toplevel
  cfg, splits = _fmnist()
  steps = args.calls
  ds = train_dataset(splits, cfg.data, 0, 0, steps)
  for _ in ds.take(2):
    pass
  with Timer() as t:
    for _ in train_dataset(splits, cfg.data, 0, 1, steps):
      pass
  step = per_call(*classifier_step(cfg, splits), min(steps, 40))
  out = {"pipeline_ms_per_batch_wall": 1000 * t.wall / steps,
         "pipeline_ms_per_batch_cpu": 1000 * t.cpu / steps, "erm_step": step,
         "load_1min": t.load}
  print(json.dumps(out, indent=1))
  return out


def lever_bank_batch(args):
  from latmix_tf.generative import build_generative_model  # pylint: disable=import-outside-toplevel
  from latmix_tf.latent.inversion import Inverter  # pylint: disable=import-outside-toplevel
  cfg, splits = _fmnist()
  gm = build_generative_model(cfg.method.generator, (28, 28, 1), seed=0)
  out = {}
  n = 1024
  inverters = {bs: Inverter(gm, dataclasses.replace(cfg.method.inversion, batch_size=bs),
                            (28, 28, 1)) for bs in (128, 256, 512, 1024)}
  for inv in inverters.values():
    inv.invert(splits.x_train[:inv.batch_size])
  for rnd in range(2):
    for bs, inv in inverters.items():
      with Timer() as t:
        inv.invert(splits.x_train[:n])
      out.setdefault(str(bs), []).append({"images_per_s_wall": n / t.wall,
                                          "images_per_cpu_s": n / t.cpu, "load_1min": t.load})
      print(f"  round {rnd} batch {bs}: {n / t.wall:.0f} img/s wall, {n / t.cpu:.0f} img per "
            f"CPU-s (load {t.load:.1f})", flush=True)
  return {k: {m: float(np.median([r[m] for r in v])) for m in v[0]} for k, v in out.items()}


def lever_attack_batch(args):
  from latmix_tf import attacks, export  # pylint: disable=import-outside-toplevel
  from latmix_tf.evaluation import run_deepfool  # pylint: disable=import-outside-toplevel
  _, splits = _fmnist()
  lf = export.logits_fn(export.load_classifier(args.model))
  x = splits.x_test[:512].astype(np.float32) / 255.0
  y = tf.one_hot(splits.y_test[:512], 10)
  out = {"deepfool": {}, "pgd": {}}
  for bs in (64, 128, 256, 512):
    run_deepfool(lf, x[:8], 10, batch_size=bs)
    with Timer() as t:
      run_deepfool(lf, x, 10, batch_size=bs)
    out["deepfool"][str(bs)] = {"ms_per_image_wall": 1000 * t.wall / len(x),
                                "ms_per_image_cpu": 1000 * t.cpu / len(x), "load_1min": t.load}
    print(f"  deepfool batch {bs}: {out['deepfool'][str(bs)]}", flush=True)
  pgd = tf.function(lambda xb, yb: attacks.pgd(lf, xb, yb, 0.1, 10, 0.025,
                                               seed=tf.constant([0, 0], tf.int64)))
  for bs in (128, 256, 512):
    pgd(tf.constant(x[:bs]), y[:bs])
    with Timer() as t:
      for s in range(0, len(x), bs):
        pgd(tf.constant(x[s:s + bs]), y[s:s + bs]).numpy()
    out["pgd"][str(bs)] = {"ms_per_image_wall": 1000 * t.wall / len(x),
                           "ms_per_image_cpu": 1000 * t.cpu / len(x), "load_1min": t.load}
    print(f"  pgd-10 batch {bs}: {out['pgd'][str(bs)]}", flush=True)
  return out


def lever_d_batch(args):
  """D's forward + backward on real and fake: two calls of 128 vs one call of 256."""
  cfg, _ = _fmnist()
  from latmix_tf.models.dcgan import Discriminator  # pylint: disable=import-outside-toplevel
  d = Discriminator((28, 28, 1), cfg.method.generator.base_filters)
  real = tf.random.stateless_uniform([128, 28, 28, 1], [1, 1])
  fake = tf.random.stateless_uniform([128, 28, 28, 1], [1, 2])
  seed = tf.constant([0, 0], tf.int64)

  @tf.function
  def two(real, fake):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(d(real, training=True, seed=seed + [0, 1])) + tf.reduce_mean(
          d(fake, training=True, seed=seed + [0, 2]))
    return tape.gradient(loss, d.trainable_variables)

  @tf.function
  def one(real, fake):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(d(tf.concat([real, fake], 0), training=True, seed=seed))
    return tape.gradient(loss, d.trainable_variables)

  return compare({"two_calls": (two, (real, fake)), "one_call": (one, (real, fake))},
                 args.calls)


LEVERS = {"xla": lever_xla, "bf16": lever_bf16, "env": lever_env, "tfdata": lever_tfdata,
          "bank_batch": lever_bank_batch, "attack_batch": lever_attack_batch,
          "d_batch": lever_d_batch}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--lever", required=True, choices=sorted(LEVERS) + ["env_child"])
  p.add_argument("--calls", type=int, default=30)
  p.add_argument("--model", default="saved_models/erm_fmnist/seed_0")
  args = p.parse_args()
  if args.lever == "env_child":
    return lever_env_child(args)
  m = machine()
  print(f"CPU {m['cpu']['model']} ({m['cpu']['isa_class']}), load {m['load_avg']}", flush=True)
  result = {"machine": m, "calls": args.calls, **LEVERS[args.lever](args),
            "load_avg_end": list(os.getloadavg())}
  table = {}
  if os.path.exists(OUT):
    with open(OUT, encoding="utf-8") as f:
      table = json.load(f)
  table[args.lever] = result
  os.makedirs(RESULTS, exist_ok=True)
  with open(OUT, "w", encoding="utf-8") as f:
    json.dump(table, f, indent=2)
  print(f"wrote {OUT} [{args.lever}]")
  return None


if __name__ == "__main__":
  main()
