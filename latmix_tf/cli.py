"""Actions behind `main.py`'s flags, as plain functions of already-parsed values.

`main.py` only parses flags; these functions turn the values into configs and library
calls, and translate the library's expected errors (unknown names, missing or corrupt data,
bad SavedModels) into one clear line on stderr and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from typing import Callable, Optional, Sequence

from latmix_tf.data import DataFormatError, DatasetNotFoundError, FetchError

USER_ERRORS = (ValueError, FileNotFoundError, DataFormatError, DatasetNotFoundError, FetchError)


def user_errors(fn):
  """Prints expected errors as `error: ...` and returns exit code 2."""
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except USER_ERRORS as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      return 2
  return wrapper


@user_errors
def fetch(names: Sequence[str], data_dir: Optional[str], log: Callable[[str], None]) -> int:
  from latmix_tf.data import fetch as fetch_data  # pylint: disable=import-outside-toplevel
  fetch_data(names, data_dir, log=log)
  return 0


@user_errors
def run_experiment(experiment, scale: str, seed: int, data_dir: Optional[str], workdir_root: str,
                   export_root: str, rebuild: Sequence[str], methods, seeds, strategy: str,
                   log: Callable[[str], None]) -> int:
  """Configures and runs one registered experiment; prints where its report is."""
  from latmix_tf.runner import RunContext  # pylint: disable=import-outside-toplevel
  # The encoder is keyed by the generator's weights: rebuilding the generator rebuilds it.
  valid_rebuild = {"generator", "bank", "classifier"}
  if set(rebuild) - valid_rebuild:
    raise ValueError(f"--rebuild={','.join(rebuild)}: valid stages are "
                     f"{', '.join(sorted(valid_rebuild))}.")
  from latmix_tf import distribute  # pylint: disable=import-outside-toplevel
  cfg = experiment.get_config(scale=scale, seed=seed, data_dir=data_dir)
  workdir = os.path.join(os.path.abspath(workdir_root), experiment.name, scale, f"seed_{seed}")
  if isinstance(strategy, str):
    strategy = distribute.make_strategy(strategy)
  # A worker other than the chief writes under workertemp_<i> dirs (TF multi-worker guide).
  workdir = distribute.worker_dir(workdir, strategy)
  ctx = RunContext(workdir=workdir,
                   export_root=distribute.worker_dir(os.path.abspath(export_root), strategy),
                   rebuild=tuple(rebuild), log=log, strategy=strategy,
                   methods=tuple(methods) if methods else None,
                   seeds=tuple(int(s) for s in seeds) if seeds else None)
  t0 = time.time()
  log(f"{experiment.name} [{scale}, seed {seed}] -> {workdir}")
  experiment.run(cfg, ctx)
  log(f"{experiment.name}: done in {time.time() - t0:.0f}s; report: "
      f"{os.path.join(workdir, 'report.md')}")
  return 0


@user_errors
def evaluate(export_dir: str, dataset: Optional[str], data_dir: Optional[str],
             workdir_root: str, log: Callable[[str], None]) -> int:
  """Evaluates any SavedModel with our signature on a dataset's test set."""
  from latmix_tf import export  # pylint: disable=import-outside-toplevel
  from latmix_tf.config import EvalConfig  # pylint: disable=import-outside-toplevel
  from latmix_tf.data import load_dataset  # pylint: disable=import-outside-toplevel
  from latmix_tf.evaluation import evaluate_saved_model  # pylint: disable=import-outside-toplevel
  export.load_classifier(export_dir)  # fails early, with a clear message
  dataset = dataset or export.read_metadata(export_dir).get("dataset")
  if not dataset:
    raise ValueError(f"{export_dir} has no metadata.json naming its dataset: pass --dataset.")
  arrays = load_dataset(dataset, data_dir, log=log)
  name = os.path.basename(os.path.normpath(export_dir))
  out_dir = os.path.join(os.path.abspath(workdir_root), "evaluate", f"{dataset}_{name}")
  metrics = evaluate_saved_model(export_dir, arrays.x_test, arrays.y_test, EvalConfig(),
                                 out_dir, log=log)
  log(f"evaluation of {export_dir}: written to {out_dir}/evaluation.json")
  for k in sorted(metrics):
    if isinstance(metrics[k], float):
      log(f"  {k} = {metrics[k]:.4f}")
  return 0


@user_errors
def serve(model_paths: Optional[Sequence[str]], host: str, port: int,
          log: Callable[[str], None], model_config_file: Optional[str] = None,
          max_body_bytes: int = 32 << 20) -> int:
  """Serves `[NAME=]PATH` SavedModels over the TF Serving REST API until SIGTERM."""
  from latmix_tf import serving  # pylint: disable=import-outside-toplevel
  if not model_paths and not model_config_file:
    raise ValueError("--serve needs --model_base_path=[NAME=]PATH[,...] or --model_config_file.")
  models = serving.parse_model_specs(list(model_paths or []))
  serving.serve(models, host=host, port=port, max_body_bytes=max_body_bytes, log=log,
                model_config_file=model_config_file)
  return 0
