"""Seconds per training epoch: Latent-Mixup (decoding in the pipeline / in the step) vs ERM.

Same classifier, same data, same loop, one process, measured back to back:

  python benchmarks/epoch_time.py [--dataset=fashion_mnist] [--epochs=1] [--data_dir=...]
                                  [--steps=N]   (cap steps per epoch: a shorter probe)

Decoding cost does not depend on the generator's weights, so an untrained generator of the
configured architecture and a bank of prior samples give the same timings as trained ones.
Writes benchmarks/results/epoch_time.json with the CPU (model, ISA class), the load average and,
beside each epoch's wall seconds, the process CPU seconds of the timed epochs (on a shared
machine the wall ratio is distorted by the load; "pipeline" decoding overlaps the step on the
second core, so its CPU ratio is higher than its wall ratio on a quiet machine).
Targets: latent mixup <= 1.5x ERM, and <= 1.2x as the stretch goal.
"""

import dataclasses
import json
import os
import resource
import sys
import tempfile
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # pylint: disable=wrong-import-position
import keras  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from experiments import get as get_experiment  # pylint: disable=wrong-import-position
from latmix_tf import hardware  # pylint: disable=wrong-import-position
from latmix_tf.data import load_dataset, make_splits  # pylint: disable=wrong-import-position
from latmix_tf.generative import build_generative_model  # pylint: disable=wrong-import-position
from latmix_tf.training.latent_mixup import LatentMixup  # pylint: disable=wrong-import-position
from latmix_tf.models.classifiers import build_classifier  # pylint: disable=wrong-import-position
from latmix_tf.training import ERM, train  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("experiment", "latent_mixup_fmnist", "Latent-mixup experiment to time.")
flags.DEFINE_string("data_dir", None, "Data folder.")
flags.DEFINE_integer("epochs", 1, "Epochs timed per method (after one warm-up epoch).")
flags.DEFINE_integer("steps", None, "Cap on steps per epoch (None: full epochs).")
flags.DEFINE_string("out", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                        "epoch_time.json"), "Result file.")


def _cpu_seconds():
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def time_method(make_method, cfg, splits, epochs, steps=None):
  """(wall s per epoch, CPU s per epoch) of the timed epochs, after one warm-up epoch.

  The CPU seconds are those of the whole timed epochs (validation pass included), read
  when the warm-up epoch's progress line arrives and at the end."""
  keras.utils.set_random_seed(0)
  model = build_classifier(cfg.model, splits.x_train.shape[1:])
  tcfg = dataclasses.replace(cfg.train, epochs=epochs + 1, steps_per_epoch=steps)
  marks = []

  def log(line):
    if not marks and f"epoch 1/{epochs + 1}" in line:
      marks.append(_cpu_seconds())

  with tempfile.TemporaryDirectory() as wd:
    history = train(model, make_method(), splits, cfg.data, tcfg, wd, 0, log=log)
  cpu = (_cpu_seconds() - marks[0]) / epochs if marks else float("nan")
  return float(np.mean([h["epoch_seconds"] for h in history[1:]])), cpu  # skip warm-up


def main(_):
  cfg = get_experiment(FLAGS.experiment).get_config(scale="full", data_dir=FLAGS.data_dir)
  splits = make_splits(load_dataset(cfg.data.name, cfg.data.data_dir), cfg.data)
  gen = build_generative_model(cfg.method.generator, splits.x_train.shape[1:], seed=0)
  z = gen.sample_prior(len(splits.x_train), 0).numpy()
  bank = types.SimpleNamespace(z=z, labels=splits.y_train)
  results = {"experiment": FLAGS.experiment, "batch_size": cfg.data.batch_size,
             "train_examples": len(splits.x_train), "epochs_timed": FLAGS.epochs,
             "steps_per_epoch": FLAGS.steps, "cpu": hardware.describe(),
             "cpu_count": os.cpu_count(), "load_avg_at_start": os.getloadavg()[0]}
  results["erm_seconds"], results["erm_cpu_seconds"] = time_method(
      ERM, cfg, splits, FLAGS.epochs, FLAGS.steps)
  print(f"ERM: {results['erm_seconds']:.1f} s/epoch ({results['erm_cpu_seconds']:.1f} CPU-s)",
        flush=True)
  for where in ("step", "pipeline"):
    lm = dataclasses.replace(cfg.method, decode_in=where)
    secs, cpu = time_method(lambda: LatentMixup(lm, gen=gen, bank=bank,
                                                batch_size=cfg.data.batch_size), cfg, splits,
                            FLAGS.epochs, FLAGS.steps)
    results[f"latent_mixup_decode_in_{where}_seconds"] = secs
    results[f"latent_mixup_decode_in_{where}_cpu_seconds"] = cpu
    results[f"ratio_decode_in_{where}"] = secs / results["erm_seconds"]
    results[f"cpu_ratio_decode_in_{where}"] = cpu / results["erm_cpu_seconds"]
    print(f"latent mixup (decode in {where}): {secs:.1f} s/epoch = "
          f"{secs / results['erm_seconds']:.2f}x ERM (CPU: {cpu:.1f} s = "
          f"{results[f'cpu_ratio_decode_in_{where}']:.2f}x)", flush=True)
  results["load_avg_at_end"] = os.getloadavg()[0]
  os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
  with open(FLAGS.out, "w") as f:
    json.dump(results, f, indent=2)
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  app.run(main)
