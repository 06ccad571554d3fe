"""Runs latmix's stages under real `tf.distribute` strategies, for tests/test_distributed.py.

A strategy needs a fresh process: logical CPU devices must be configured before TensorFlow
initialises its devices, and `MultiWorkerMirroredStrategy` must be created before any other
op runs. So the test starts this script, which writes what each stage produced to `OUT`:

  python tests/distributed_driver.py mirrored OUT DATA_DIR
      Two logical CPU devices. Trains the classifier (BN + dropout), a DCGAN and a VAE for a
      few steps under the default strategy and under MirroredStrategy over both devices with
      the same global batch, and builds a latent bank with 1 and with 2 replicas.
  TF_CONFIG=... python tests/distributed_driver.py multi_worker OUT DATA_DIR
      One worker of a MultiWorkerMirroredStrategy cluster: builds a latent bank split over
      the workers, trains a DCGAN for a few steps on all workers, then runs `erm_fmnist` at
      smoke scale through `cli.run_experiment`.
"""

import dataclasses
import functools
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BANK_N = 72  # chunks of 24 (3 chunks: split 2 + 1 over two workers), batches of 16 (padded)


def bank_inputs(data_dir):
  """(generator, images, labels, inversion config): the same in every process."""
  import keras  # pylint: disable=import-outside-toplevel
  from latmix_tf.generative.config import GeneratorConfig  # pylint: disable=C0415
  from latmix_tf.latent.config import InversionConfig  # pylint: disable=C0415
  from latmix_tf.data import load_dataset  # pylint: disable=import-outside-toplevel
  from latmix_tf.generative import build_generative_model  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(0)
  gen = build_generative_model(GeneratorConfig(latent_dim=8, base_filters=8), (28, 28, 1))
  arrays = load_dataset("fashion_mnist", data_dir, allow_tfds=False)
  cfg = InversionConfig(steps=3, random_starts=True, batch_size=16, chunk_size=24)
  return gen, arrays.x_train[:BANK_N], arrays.y_train[:BANK_N], cfg


def build_bank(data_dir, bank_dir, strategy=None):
  import numpy as np  # pylint: disable=import-outside-toplevel
  from latmix_tf.generative import generator_checkpoint_hash  # pylint: disable=import-outside-toplevel
  from latmix_tf.latent.bank import build_or_load_bank  # pylint: disable=import-outside-toplevel
  gen, x, y, cfg = bank_inputs(data_dir)
  bank = build_or_load_bank(gen, None, x, y, cfg, bank_dir, {"generator": "test"}, seed=1,
                            strategy=strategy, log=functools.partial(print, flush=True))
  return {"z": bank.z, "mse": bank.mse, "psnr": bank.psnr,
          "gen_hash": np.array(generator_checkpoint_hash(gen))}


def classifier_weights(data_dir, workdir, strategy):
  import keras  # pylint: disable=import-outside-toplevel
  from latmix_tf.config import DataConfig, ModelConfig, TrainConfig  # pylint: disable=import-outside-toplevel
  from latmix_tf.data import load_dataset, make_splits  # pylint: disable=import-outside-toplevel
  from latmix_tf.models.classifiers import build_classifier  # pylint: disable=import-outside-toplevel
  from latmix_tf.training import ERM, train  # pylint: disable=import-outside-toplevel
  cfg = DataConfig("fashion_mnist", data_dir, batch_size=32, val_size=64, augment="flip",
                   train_limit=256)
  splits = make_splits(load_dataset("fashion_mnist", data_dir, allow_tfds=False), cfg)
  keras.utils.set_random_seed(0)
  with strategy.scope():
    model = build_classifier(ModelConfig("cnn", (8, 16), 32, dropout=0.3), (28, 28, 1),
                             sync_batch_norm=strategy.num_replicas_in_sync > 1)
  history = train(model, ERM(), splits, cfg, TrainConfig(epochs=2, steps_per_epoch=2),
                  workdir, seed=0, strategy=strategy, log=lambda s: None)
  return model.get_weights(), history


def generator_weights(kind, data_dir, workdir, strategy):
  from latmix_tf.generative.config import GeneratorConfig  # pylint: disable=C0415
  from latmix_tf.data import load_dataset  # pylint: disable=import-outside-toplevel
  from latmix_tf.generative import train_or_load_generator  # pylint: disable=import-outside-toplevel
  x = load_dataset("fashion_mnist", data_dir, allow_tfds=False).x_train[:128]
  cfg = GeneratorConfig(kind=kind, latent_dim=8, base_filters=8, epochs=1, batch_size=32,
                        steps_per_epoch=3, prior="normal" if kind == "vae" else "uniform")
  gm = train_or_load_generator(cfg, x, workdir, seed=0, strategy=strategy, log=lambda s: None)
  return [w for m in sorted(gm.models) for w in gm.models[m].get_weights()], gm.metadata


def run_mirrored(out, data_dir):
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  strategies = {"default": tf.distribute.get_strategy(),
                "mirrored": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])}
  result, meta = {}, {}
  for name, strategy in strategies.items():
    weights, history = classifier_weights(data_dir, os.path.join(out, f"clf_{name}"), strategy)
    result.update({f"clf_{name}_{i}": w for i, w in enumerate(weights)})
    meta[f"clf_{name}_history"] = history
    for kind in ("dcgan", "vae"):
      weights, gmeta = generator_weights(kind, data_dir, os.path.join(out, f"{kind}_{name}"),
                                          strategy)
      result.update({f"{kind}_{name}_{i}": w for i, w in enumerate(weights)})
      meta[f"{kind}_{name}_history"] = gmeta["outputs"]["history"]
    bank = build_bank(data_dir, os.path.join(out, f"bank_{name}"), strategy)
    result.update({f"bank_{name}_{k}": v for k, v in bank.items()})
  meta["replicas"] = strategies["mirrored"].num_replicas_in_sync
  np.savez(os.path.join(out, "mirrored.npz"), **result)
  with open(os.path.join(out, "mirrored.json"), "w") as f:
    json.dump(meta, f, default=str)


def run_multi_worker(out, data_dir):
  import numpy as np  # pylint: disable=import-outside-toplevel
  from latmix_tf import cli, distribute  # pylint: disable=import-outside-toplevel
  import experiments  # pylint: disable=import-outside-toplevel
  strategy = distribute.make_strategy("multi_worker")
  index, workers = distribute.worker_info(strategy)
  bank = build_bank(data_dir, os.path.join(out, "bank"), strategy)
  np.savez(os.path.join(out, f"bank_worker{index}.npz"), **bank)
  weights, gmeta = generator_weights("dcgan", data_dir, os.path.join(out, "gan"), strategy)
  np.savez(os.path.join(out, f"gan_worker{index}.npz"), *weights)
  with open(os.path.join(out, f"gan_worker{index}.json"), "w") as f:
    json.dump(gmeta, f, default=str)
  returned = {}
  log = functools.partial(print, flush=True)
  base = experiments.get("erm_fmnist")  # keeps what `run` returned on this worker
  exp = dataclasses.replace(base, run=lambda cfg, ctx: returned.update(base.run(cfg, ctx)))
  code = cli.run_experiment(exp, "smoke", 0, data_dir, os.path.join(out, "wd"),
                            os.path.join(out, "sm"), (), None, None, strategy, log)
  with open(os.path.join(out, f"worker{index}.json"), "w") as f:
    json.dump({"code": code, "workers": workers, "metrics": returned}, f)


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  mode, out_dir, data = sys.argv[1:4]
  {"mirrored": run_mirrored, "multi_worker": run_multi_worker}[mode](out_dir, data)
  print("DRIVER DONE", flush=True)
