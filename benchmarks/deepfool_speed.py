"""Speed and agreement of our batched DeepFool against foolbox 3.3.4 and ART 1.20.1.

Why: rho_adv is reported for every method, so our DeepFool must be both right (same rho as
the reference libraries) and fast enough to run on 1000 test images at the end of every
experiment. All three attacks run on the same SavedModel (the standard signature loaded with
`latmix_tf.export.load_classifier`), the same images and the same settings: L2, 50 steps,
top-10 candidate classes, overshoot 0.02, start class = the model's prediction.

  * ours:    latmix_tf.evaluation.run_deepfool (one tf.function per batch of 128);
  * foolbox: L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02) with
             Misclassification(predicted labels), TensorFlowModel(bounds=(0, 1)), batches of 128;
  * ART:     DeepFool(max_iter=50, epsilon=0.02, nb_grads=10) on a TensorFlowV2Classifier
             (clip_values=(0, 1)) with batch_size=1 (ART's default) and 128.
Each method gets one untimed warm-up call on 8 images (tracing, first-call overheads), then
is timed on all images. foolbox and ART are listed in benchmarks/requirements.txt, not in the
runtime requirements.

Run:
  pip install -r benchmarks/requirements.txt
  python benchmarks/deepfool_speed.py --model=saved_models/erm_fmnist/seed_0 --n=1000 \
      --data_dir=~/latmix_data [--art1_n=100]
On 2 shared CPU cores ART at batch size 1 takes seconds per image (1000 images: over an hour)
and ART / foolbox at 128 about 0.3-1.6 s per image, so `--art1_n` times ART's default on a
prefix; its rho is then compared with ours on the same prefix.
Writes benchmarks/results/deepfool_speed.json (with the CPU model / ISA class, the load and each
method's process CPU seconds) and prints the table and the three rho_adv.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from latmix_tf import export, hardware  # pylint: disable=wrong-import-position
import _common  # noqa: E402  pylint: disable=wrong-import-position
from latmix_tf.evaluation import run_deepfool  # pylint: disable=wrong-import-position

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "deepfool_speed.json")


def summarize(x, x_adv, start_class, logits_fn, seconds, extra=None):
  """rho_adv, fooling rate and time per sample of one method's adversarials."""
  n = len(x)
  final = np.argmax(logits_fn(tf.constant(x_adv, tf.float32)).numpy(), 1)
  l2 = np.linalg.norm((x_adv - x).reshape(n, -1), axis=1)
  out = {"n": n, "seconds": seconds, "ms_per_sample": 1000 * seconds / n,
         "rho_adv": float(np.mean(l2 / np.linalg.norm(x.reshape(n, -1), axis=1))),
         "fooling_rate": float(np.mean(final != start_class))}
  out.update(extra or {})
  return out


def run_ours(lf, x, num_classes, batch_size):
  run_deepfool(lf, x[:8], num_classes, batch_size=batch_size)  # warm-up (tracing)
  start = time.perf_counter()
  res = run_deepfool(lf, x, num_classes, candidates=10, overshoot=0.02, max_iter=50,
                     batch_size=batch_size)
  seconds = time.perf_counter() - start
  return res.x_adv, seconds, {"median_iterations": float(np.median(res.iterations)),
                              "not_flipped": int((~res.flipped).sum())}


def run_foolbox(lf, x, pred, batch_size):
  import foolbox as fb  # pylint: disable=import-outside-toplevel
  model = fb.TensorFlowModel(lf, bounds=(0, 1))
  attack = fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)

  def attack_all(xs, ps):
    outs = []
    for s in range(0, len(xs), batch_size):
      criterion = fb.criteria.Misclassification(tf.constant(ps[s:s + batch_size]))
      _, clipped, _ = attack(model, tf.constant(xs[s:s + batch_size]), criterion,
                             epsilons=None)
      outs.append(clipped.numpy())
    return np.concatenate(outs)

  attack_all(x[:8], pred[:8])
  start = time.perf_counter()
  x_adv = attack_all(x, pred)
  return x_adv, time.perf_counter() - start, {"batch_size": batch_size}


def run_art(lf, x, num_classes, batch_size):
  from art.attacks.evasion import DeepFool  # pylint: disable=import-outside-toplevel
  from art.estimators.classification import (  # pylint: disable=import-outside-toplevel
      TensorFlowV2Classifier)
  clf = TensorFlowV2Classifier(_common.ArtModel(lf), nb_classes=num_classes,
                               input_shape=x.shape[1:], clip_values=(0.0, 1.0))
  attack = DeepFool(clf, max_iter=50, epsilon=0.02, nb_grads=10, batch_size=batch_size,
                    verbose=False)
  attack.generate(x[:8])
  start = time.perf_counter()
  x_adv = attack.generate(x)
  return x_adv, time.perf_counter() - start, {"batch_size": batch_size}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", required=True, help="SavedModel directory")
  parser.add_argument("--n", type=int, default=1000, help="test images")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--dataset", default="fashion_mnist")
  parser.add_argument("--batch_size", type=int, default=128,
                      help="batch of ours, foolbox and the batched ART run")
  parser.add_argument("--art1_n", type=int, default=None,
                      help="images for ART at batch_size=1 (default: all n; it is slow)")
  parser.add_argument("--out", default=RESULTS)
  args = parser.parse_args(argv)
  art, foolbox = _common.require("art", "foolbox")

  x, _ = _common.test_images(args.dataset, args.data_dir, args.n)
  lf = export.logits_fn(export.load_classifier(args.model))
  logits = lf(tf.constant(x)).numpy()
  num_classes, pred = logits.shape[1], logits.argmax(1)
  n1 = len(x) if args.art1_n is None else min(args.art1_n, len(x))
  load_before = os.getloadavg()

  results = {}
  for name, fn, xs in (
      ("ours", lambda xs: run_ours(lf, xs, num_classes, args.batch_size), x),
      ("foolbox", lambda xs: run_foolbox(lf, xs, pred[:len(xs)], args.batch_size), x),
      (f"art_bs{args.batch_size}",
       lambda xs: run_art(lf, xs, num_classes, args.batch_size), x),
      ("art_bs1", lambda xs: run_art(lf, xs, num_classes, 1), x[:n1])):
    cpu0 = time.process_time()
    x_adv, seconds, extra = fn(xs)
    # Process CPU seconds of the whole call (warm-up on 8 images included): on a shared
    # machine the wall-clock ratio moves with the load, the CPU ratio much less.
    extra = {**extra, "cpu_seconds_with_warmup": time.process_time() - cpu0,
             "load_1min": os.getloadavg()[0]}
    results[name] = summarize(xs, x_adv, pred[:len(xs)], lf, seconds, extra)
    print(f"{name:>10}: {results[name]['ms_per_sample']:8.2f} ms/sample  "
          f"rho_adv {results[name]['rho_adv']:.5f}  fooled {results[name]['fooling_rate']:.3f}"
          f"  (n={len(xs)}, {seconds:.1f}s)", flush=True)
    if name == "ours":
      ours_adv = x_adv

  ours = results["ours"]
  comparison = {}
  for name, r in results.items():
    if name == "ours":
      continue
    # Compare rho on the same images (ART at batch size 1 may run on a prefix).
    ours_rho = summarize(x[:r["n"]], ours_adv[:r["n"]], pred[:r["n"]], lf, 0.0)["rho_adv"]
    comparison[name] = {"speedup_per_sample": r["ms_per_sample"] / ours["ms_per_sample"],
                        "rho_rel_diff": (ours_rho - r["rho_adv"]) / r["rho_adv"],
                        "ours_rho_same_images": ours_rho}
    print(f"ours vs {name:>10}: {comparison[name]['speedup_per_sample']:6.1f}x faster, "
          f"rho differs by {100 * comparison[name]['rho_rel_diff']:+.2f}%")
  art_rho = results[f"art_bs{args.batch_size}"]["rho_adv"]
  print(f"rho_adv  ours {ours['rho_adv']:.5f}  foolbox {results['foolbox']['rho_adv']:.5f}  "
        f"ART {art_rho:.5f}")

  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  export.write_json_atomic(args.out, {
      "model": os.path.abspath(args.model), "dataset": args.dataset, "n": len(x),
      "settings": {"steps": 50, "candidates": 10, "overshoot": 0.02,
                   "batch_size": args.batch_size},
      "results": results, "comparison": comparison,
      "machine": {"cpus": os.cpu_count(), "cpu": hardware.describe(),
                  "loadavg_before": load_before,
                  "loadavg_after": os.getloadavg()},
      "versions": {**export.versions(), "foolbox": foolbox.__version__, "art": art.__version__},
  })
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
