"""What verifying data by its bytes costs: decode vs SHA-256 of the arrays, the pre-run check.

Why: the data fingerprint a run records must describe the bytes it trained on, so every load
hashes the decoded arrays (no size/mtime cache on the load path). This measures whether that
is worth caching at all: decode time next to hash time for each canonical dataset, the CLI's
pre-run `check_dataset` with a current cache, and hashing one cached corrupted-set `.npy` of
the size of the 15 MNIST-C sets. Best of `--rounds`; writes
`benchmarks/results/integrity_cost.{json,md}` with the CPU and load.

  python benchmarks/integrity_cost.py
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time

import numpy as np

from _common import machine, write_results  # pylint: disable=import-error

from latmix_tf.data import integrity, sources  # pylint: disable=wrong-import-order


def best(fn, rounds):
  times = []
  for _ in range(rounds):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return min(times)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args(argv)
  root = sources.resolve_data_dir(args.data_dir)
  rows = []
  for name in ("fashion_mnist", "mnist"):
    info = sources.get_info(name)
    folder = os.path.join(root, name)
    arrays = sources._read_local(info, folder)[0]  # pylint: disable=protected-access
    rows.append({
        "dataset": name,
        "decoded_mb": sum(np.asarray(a).nbytes for a in arrays) / 1e6,
        "decode_s": best(lambda: sources._read_local(info, folder), args.rounds),  # pylint: disable=protected-access,cell-var-from-loop
        "sha256_s": best(lambda: integrity.digests(arrays), args.rounds),  # pylint: disable=cell-var-from-loop
        "check_dataset_s": best(lambda: sources.check_dataset(name, root, log=lambda s: None), args.rounds),  # pylint: disable=cell-var-from-loop
    })
  images = np.random.default_rng(0).integers(0, 256, (150_000, 28, 28, 1), dtype=np.uint8)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "set.npy")
    np.save(path, images)
    size = os.path.getsize(path) / 1e6

    def hash_file():
      with open(path, "rb") as f:
        hashlib.sha256(f.read()).hexdigest()
    npy_s = best(hash_file, args.rounds)
  record = {"machine": machine(), "rounds": args.rounds, "datasets": rows,
            "corrupted_npy": {"mb": size, "sha256_s": npy_s}}
  m = record["machine"]
  lines = ["# Data integrity: what hashing by the bytes costs", "",
           f"`python benchmarks/integrity_cost.py`, best of {args.rounds}. CPU: "
           f"{m['cpu']['model']} ({m['cpu']['cores']} cores); load average "
           f"{m['load_avg'][0]:.2f} at the end.", "",
           "| dataset | decoded | decode | SHA-256 of the arrays | pre-run check (cached) |",
           "|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['dataset']} | {r['decoded_mb']:.1f} MB | {r['decode_s']:.3f} s | "
                 f"{r['sha256_s']:.3f} s | {r['check_dataset_s']:.3f} s |")
  lines += ["", "| corrupted-set file | size | SHA-256 |", "|---|---|---|",
            f"| 150 000 28×28 uint8 images (`.npy`, the size of the 15 MNIST-C sets) | "
            f"{size:.0f} MB | {npy_s:.3f} s |"]
  write_results("integrity_cost", record, "\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
