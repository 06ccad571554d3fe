"""Seconds per training epoch: Latent-Mixup (decoding in the pipeline / in the step) vs ERM.

Same classifier, same data, same loop, one process, measured back to back:

  python benchmarks/epoch_time.py [--dataset=fashion_mnist] [--epochs=1] [--data_dir=...]

Decoding cost does not depend on the generator's weights, so an untrained generator of the
configured architecture and a bank of prior samples give the same timings as trained ones.
Writes benchmarks/results/epoch_time.json. Target (issue 5): latent mixup <= 1.5x ERM.
"""

import dataclasses
import json
import os
import sys
import tempfile
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # pylint: disable=wrong-import-position
import keras  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from experiments import get as get_experiment  # pylint: disable=wrong-import-position
from latmix_tf.data import load_dataset, make_splits  # pylint: disable=wrong-import-position
from latmix_tf.generative import build_generative_model  # pylint: disable=wrong-import-position
from latmix_tf.latent_mixup import LatentMixup  # pylint: disable=wrong-import-position
from latmix_tf.models.classifiers import build_classifier  # pylint: disable=wrong-import-position
from latmix_tf.training import ERM, train  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("experiment", "latent_mixup_fmnist", "Latent-mixup experiment to time.")
flags.DEFINE_string("data_dir", None, "Data folder.")
flags.DEFINE_integer("epochs", 1, "Epochs timed per method (after one warm-up epoch).")
flags.DEFINE_string("out", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                        "epoch_time.json"), "Result file.")


def time_method(make_method, cfg, splits, epochs):
  keras.utils.set_random_seed(0)
  model = build_classifier(cfg.model, splits.x_train.shape[1:])
  tcfg = dataclasses.replace(cfg.train, epochs=epochs + 1)
  with tempfile.TemporaryDirectory() as wd:
    history = train(model, make_method(), splits, cfg.data, tcfg, wd, 0, log=lambda s: None)
  return float(np.mean([h["epoch_seconds"] for h in history[1:]]))  # skip warm-up (tracing)


def main(_):
  cfg = get_experiment(FLAGS.experiment).get_config(scale="full", data_dir=FLAGS.data_dir)
  splits = make_splits(load_dataset(cfg.data.name, cfg.data.data_dir), cfg.data)
  gen = build_generative_model(cfg.method.generator, splits.x_train.shape[1:], seed=0)
  z = gen.sample_prior(len(splits.x_train), 0).numpy()
  bank = types.SimpleNamespace(z=z, labels=splits.y_train)
  results = {"experiment": FLAGS.experiment, "batch_size": cfg.data.batch_size,
             "train_examples": len(splits.x_train), "epochs_timed": FLAGS.epochs,
             "cpu_count": os.cpu_count(), "load_avg_at_start": os.getloadavg()[0]}
  results["erm_seconds"] = time_method(ERM, cfg, splits, FLAGS.epochs)
  print(f"ERM: {results['erm_seconds']:.1f} s/epoch", flush=True)
  for where in ("step", "pipeline"):
    lm = dataclasses.replace(cfg.method, decode_in=where)
    secs = time_method(lambda: LatentMixup(lm, gen=gen, bank=bank,
                                           batch_size=cfg.data.batch_size), cfg, splits,
                       FLAGS.epochs)
    results[f"latent_mixup_decode_in_{where}_seconds"] = secs
    results[f"ratio_decode_in_{where}"] = secs / results["erm_seconds"]
    print(f"latent mixup (decode in {where}): {secs:.1f} s/epoch = "
          f"{secs / results['erm_seconds']:.2f}x ERM", flush=True)
  results["load_avg_at_end"] = os.getloadavg()[0]
  os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
  with open(FLAGS.out, "w") as f:
    json.dump(results, f, indent=2)
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  app.run(main)
