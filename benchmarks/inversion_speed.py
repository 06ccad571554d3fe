"""Inversion speed: random starts + 200 Adam steps vs encoder init + K steps.

Why: the latent bank inverts the whole training set (55k-60k images), so inversion must be
both good (mean PSNR of G(z) vs the image; target >= 22 dB) and fast (target:
the full bank in <= 5 min on 2 cores). Latent optimisation from random prior draws (Lipton &
Tripathi 2017) is the reference; an encoder guess E(x) refined by K steps should reach the
same MSE in >= 8x less time. Both run on the same first `--n` images of the Fashion-MNIST
training split, with the same compiled optimiser (`latmix_tf.latent.inversion.Inverter`), the
same learning rate and batch size; only the start and the number of steps differ:

  (a) random starts, `--random_steps` (200) Adam steps;
  (b) E(x) (the generator's own encoder where it has one: VAE posterior mean, recall-trained
      DCGAN), then K = `--steps` Adam steps.

Each is warmed up (tracing) on one batch, then timed `--repeats` times; the fastest run is
reported (the machine is shared), as wall time and as process CPU time (the speed-up
target is checked on the smaller of the two ratios). The encoder's
one-off training time is reported separately (from its cache record). The projection for
the full set is (b)'s time per image times 60000.

The generator comes from `latmix_tf.generative.train_or_load_generator` in
`--generator_dir` (a run's `generator/` folder); its config and seed are read from the stage
record (`stage.json`) there, so a cached generator is loaded, never retrained or moved aside
(a data mismatch stops with an error).

Run (~2-4 min on 2 CPU cores with a cached generator; encoder training adds ~2 min once):
  python benchmarks/inversion_speed.py --generator_dir=/tmp/gen/dcgan --data_dir=~/latmix_data
Writes benchmarks/results/inversion_speed.json and prints the comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
from latmix_tf.config import DataConfig
from latmix_tf.generative.config import GeneratorConfig
from latmix_tf.latent.config import InversionConfig
from latmix_tf.data import load_dataset, make_splits
from latmix_tf.data.sources import array_fingerprint
from latmix_tf import stages
from latmix_tf.export import write_json_atomic
from latmix_tf.generative import generator_stage
from latmix_tf.latent.encoder_stage import encoder_stage
from latmix_tf.latent.inversion import Inverter, inversion_start

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "inversion_speed.json")
FULL_SET = 60000


def load_generator(generator_dir, x_train, log):
  """The cached generator of `generator_dir` (config and seed from its stage record)."""
  record = stages.read_record(generator_dir)
  if record is None or record.get("state") != "done":
    raise FileNotFoundError(f"No finished generator stage in {generator_dir!r}: train one "
                            "first (e.g. python main.py --experiment=latent_mixup_fmnist).")
  if record["key"].get("data") != array_fingerprint(x_train)[:16]:
    raise ValueError(f"{generator_dir} was trained on other data (fingerprint "
                     f"{record['key'].get('data')}); pass the matching --data_dir.")
  fields = {f.name for f in dataclasses.fields(GeneratorConfig)}
  cfg = GeneratorConfig(**{k: v for k, v in record["outputs"]["config"].items() if k in fields})
  result = generator_stage(cfg, x_train, generator_dir, seed=record["key"]["seed"], log=log)
  if result.status != "cached":
    raise RuntimeError(f"{generator_dir}: the generator was {result.status}, not loaded")
  return result.value


def timed(inverter, x, repeats):
  """Warm-up on one batch, then the fastest of `repeats` timed runs."""
  inverter.invert(x[:inverter.batch_size])
  best = None
  for _ in range(repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    z, mse, psnr = inverter.invert(x)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if best is None or wall < best["seconds"]:
      best = {"seconds": wall, "cpu_seconds": cpu}
  best.update(n=len(x), steps=inverter.cfg.steps, init=inverter.init,
              ms_per_image=1000 * best["seconds"] / len(x),
              mean_mse=float(np.mean(mse)), mean_psnr=float(np.mean(psnr)),
              median_psnr=float(np.median(psnr)), p10_psnr=float(np.percentile(psnr, 10)))
  return best


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--generator_dir", required=True)
  p.add_argument("--data_dir", default=None)
  p.add_argument("--workdir", default="/tmp/latmix_inversion_bench",
                 help="encoder cache (trained once per generator)")
  p.add_argument("--n", type=int, default=1024)
  p.add_argument("--random_steps", type=int, default=200)
  p.add_argument("--steps", type=int, default=25, help="K of (b)")
  p.add_argument("--learning_rate", type=float, default=0.1, help="Adam step size on z")
  p.add_argument("--random_learning_rate", type=float, default=None,
                 help="step size of (a) when it differs from (b)'s: each start has its best "
                 "(a far-off random start wants larger steps than a close encoder guess)")
  p.add_argument("--feature_weight", type=float, default=0.0)
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--encoder_epochs", type=int, default=3)
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default=RESULTS)
  args = p.parse_args()

  splits = make_splits(load_dataset("fashion_mnist", args.data_dir),
                       DataConfig(data_dir=args.data_dir))
  gen = load_generator(args.generator_dir, splits.x_train, print)
  x = splits.x_train[:args.n]
  cfg = InversionConfig(steps=args.steps, learning_rate=args.learning_rate,
                        feature_weight=args.feature_weight, batch_size=args.batch_size,
                        encoder_epochs=args.encoder_epochs)
  encoder, encoder_seconds = None, 0.0
  if inversion_start(gen, cfg) == "encoder":
    enc = encoder_stage(gen, gen.checkpoint_hash, splits.x_train,
                        array_fingerprint(splits.x_train), cfg,
                        os.path.join(args.workdir, "encoder"), seed=args.seed)
    encoder, encoder_seconds = enc.value, enc.record["seconds"]
  cfg_a = dataclasses.replace(cfg, steps=args.random_steps, random_starts=True,
                              learning_rate=args.random_learning_rate or args.learning_rate)
  a = timed(Inverter(gen, cfg_a, x.shape[1:]), x, args.repeats)
  print(f"(a) random starts + {args.random_steps} steps: {a['seconds']:.1f} s "
        f"(cpu {a['cpu_seconds']:.1f} s), MSE {a['mean_mse']:.5f}, PSNR {a['mean_psnr']:.2f} dB")
  b = timed(Inverter(gen, cfg, x.shape[1:], encoder=encoder), x, args.repeats)
  print(f"(b) {b['init']} + {args.steps} steps: {b['seconds']:.1f} s "
        f"(cpu {b['cpu_seconds']:.1f} s), MSE {b['mean_mse']:.5f}, PSNR {b['mean_psnr']:.2f} dB")
  projected = b["seconds"] / len(x) * FULL_SET
  result = {
      "generator": {"dir": args.generator_dir, "kind": getattr(gen, "kind", None),
                    "checkpoint_hash": gen.checkpoint_hash, "latent_dim": gen.latent_dim},
      "n": len(x), "batch_size": args.batch_size, "learning_rate": args.learning_rate,
      "random_learning_rate": cfg_a.learning_rate,
      "feature_weight": args.feature_weight, "a_random_starts": a, "b_encoder_init": b,
      "encoder_train_seconds": encoder_seconds,  # 0: the generator brought its own encoder
      "speedup_wall": a["seconds"] / b["seconds"],
      "speedup_cpu": a["cpu_seconds"] / b["cpu_seconds"],
      "mse_ratio_b_over_a": b["mean_mse"] / a["mean_mse"],
      "projected_full_set_seconds": projected,
      "targets": {"psnr_b_ge_22db": b["mean_psnr"] >= 22.0,
                  "mse_b_le_a": b["mean_mse"] <= a["mean_mse"],
                  # conservative on a shared machine: the smaller of the two ratios
                  "speedup_ge_8x": min(a["seconds"] / b["seconds"],
                                       a["cpu_seconds"] / b["cpu_seconds"]) >= 8.0,
                  "full_set_le_300s": projected <= 300.0},
      "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
  }
  print(f"speed-up (a)/(b): {result['speedup_wall']:.1f}x wall, {result['speedup_cpu']:.1f}x "
        f"cpu; MSE (b)/(a): {result['mse_ratio_b_over_a']:.3f}; projected {FULL_SET} images: "
        f"{projected:.0f} s (+ {encoder_seconds:.0f} s encoder training, once)")
  print("targets:", result["targets"])
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  write_json_atomic(args.out, result)
  print("wrote", args.out)


if __name__ == "__main__":
  main()
