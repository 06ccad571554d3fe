"""Actions behind `main.py`'s flags, as plain functions of already-parsed values.

`main.py` only parses flags; these functions check every value first (`cli_checks`, before
TensorFlow is imported, so a bad command line is answered in a fraction of a second and
nothing is written), then turn them into configs and library calls. Each action is wrapped
in `cli_errors.user_errors`: a user's mistake, the machine's state or an interruption ends
it with one `error: ...` line and an exit code, a bug with its traceback.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tempfile
import time
from typing import Callable, Optional, Sequence

from latmix_tf import cli_checks, stages, workdir_lock
from latmix_tf.cli_errors import doing, handle_interrupts, tracked, user_errors
from latmix_tf.data import check_dataset
from latmix_tf.data.integrity import ALLOW_ENV


def quiet_tensorflow_import(write: Callable[[str], None]) -> None:
  """Imports TensorFlow and probes devices with fd 2 captured, then replays what matters.

  TF 2.21 prints ~7 lines (absl pre-init warning, oneDNN notice, "Could not find cuda
  drivers", a cuInit failure) from C++ before any log level applies; on a machine without a
  GPU they bury the one line that matters. Lines that are not this start-up noise (a real
  import error, a warning of ours) are written through `write`.
  """
  noise = re.compile(
      r"^(WARNING: All log messages before absl::InitializeLog|To enable the following "
      r"instructions|[IW]\d{4} [\d:. ]+\d+ \w+\.cc:\d+\]|E\d{4} [\d:. ]+\d+ "
      r"(cuda_\w+|cudart_stub|gpu_\w+)\.cc:\d+\])")
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      tf.config.list_physical_devices("GPU")  # the cuInit probe happens here
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      for line in captured.read().decode(errors="replace").splitlines():
        if line.strip() and not noise.match(line):
          write(line)


def _import_tensorflow() -> None:
  quiet_tensorflow_import(lambda line: print(line, file=sys.stderr, flush=True))


@user_errors
def fetch(names: Sequence[str], data_dir: Optional[str], log: Callable[[str], None]) -> int:
  handle_interrupts()
  from latmix_tf.data import fetch as fetch_data  # pylint: disable=import-outside-toplevel
  from latmix_tf.data import get_info, resolve_data_dir  # pylint: disable=import-outside-toplevel
  for name in names:
    get_info(name)  # every name checked before the first download
  cli_checks.check_writable_dir(resolve_data_dir(data_dir), "--data_dir")
  doing(f"fetching {', '.join(names)}")
  fetch_data(names, data_dir, log=tracked(log))
  return 0


def check_rebuild(rebuild: Sequence[str]) -> None:
  """`--rebuild` names known stages (each also rebuilds the stages downstream of it);
  TensorFlow-free, so it runs before any work."""
  try:
    stages.downstream(rebuild)
  except ValueError as e:
    raise cli_checks.UsageError(f"--rebuild={','.join(rebuild)}: {e}") from None


@user_errors
def main_experiment(name: str, scale: str, seed: int, data_dir: Optional[str],
                    workdir_root: str, export_root: str, rebuild: Sequence[str], methods,
                    seeds, strategy: str, log: Callable[[str], None], registry_dir: str,
                    load_registry: Callable[[], object], wait_for_lock: bool = False,
                    allow_custom_data: bool = False, results_root: Optional[str] = None,
                    **executor) -> int:
  """`main.py --experiment=NAME`: every check first, then `run_experiment`.

  Args:
    name ... log: the flags' values, as `run_experiment` takes them.
    registry_dir: the registry's source folder (`experiments/`), which keys the name cache.
    load_registry: imports and returns the registry module (imports TensorFlow).
    wait_for_lock: wait for another run holding the workdir instead of exiting.
    allow_custom_data: accept (and record) data that is not the canonical release.
    results_root: where comparisons publish their summaries (`--results_dir`).
    executor: `executor`, `ray_address`, `concurrent_members` (compare_*/ablation_*).
  """
  handle_interrupts()
  doing(f"checking the command line of --experiment={name}")
  cli_checks.check_run_flags(seed, seeds, workdir_root, export_root)
  cli_checks.check_data_dir(data_dir)
  check_rebuild(rebuild)
  cli_checks.check_executor(name, **executor)
  names = cli_checks.NameCache(registry_dir)
  facts = names.read()
  if facts is not None:  # a stale cache is never trusted: the registry decides below
    cli_checks.check_experiment(name, facts)
    cli_checks.check_compare_flags(name, methods, seeds, facts)
  # A run holding this workdir is reported now, not after TensorFlow's start-up (multi-worker
  # runs are left to `acquire`: each worker locks a folder of its own).
  if not wait_for_lock and strategy != "multi_worker":
    workdir_lock.check_free(os.path.join(cli_checks.expand_path(workdir_root), name, scale,
                                         f"seed_{seed}"))
  if allow_custom_data:
    os.environ[ALLOW_ENV] = "1"  # read by data.load_dataset, inherited by worker processes
  doing("importing TensorFlow and the experiment registry")
  _import_tensorflow()
  registry = load_registry()
  compare = getattr(registry, "compare", None)
  names.write(registry.EXPERIMENTS, tuple(dict.fromkeys(
      getattr(compare, "METHODS", ()) + getattr(compare, "ABLATION_METHODS", ()))))
  experiment = registry.get(name)
  if facts is None:
    cli_checks.check_compare_flags(name, methods, seeds, names.read())
  return run_experiment(experiment, scale, seed, data_dir, workdir_root, export_root, rebuild,
                        methods, seeds, strategy, log, wait_for_lock=wait_for_lock,
                        results_root=results_root, **executor)


@user_errors
def run_experiment(experiment, scale: str, seed: int, data_dir: Optional[str], workdir_root: str,
                   export_root: str, rebuild: Sequence[str], methods, seeds, strategy: str,
                   log: Callable[[str], None], wait_for_lock: bool = False,
                   results_root: Optional[str] = None, executor: str = "sequential",
                   ray_address: Optional[str] = None, concurrent_members: int = 0) -> int:
  """Configures and runs one registered experiment, holding its workdir's lock.

  `results_root` is where a comparison at quick or full scale copies its summary (the
  repository's `results/`); None publishes nothing. `executor`, `ray_address` and
  `concurrent_members` say where a comparison's members run (`comparison.executors`).
  """
  handle_interrupts()
  doing(f"checking the command line of --experiment={experiment.name}")
  seeds = cli_checks.check_run_flags(seed, seeds, workdir_root, export_root)
  cli_checks.check_data_dir(data_dir)
  workdir_root, export_root = map(cli_checks.expand_path, (workdir_root, export_root))
  results_root = cli_checks.expand_path(results_root) if results_root else None
  from latmix_tf.runner import RunContext  # pylint: disable=import-outside-toplevel
  check_rebuild(rebuild)
  from latmix_tf import distribute  # pylint: disable=import-outside-toplevel
  cfg = experiment.get_config(scale=scale, seed=seed, data_dir=data_dir)
  cli_checks.check_executor(experiment.name, executor, ray_address, concurrent_members)
  if executor != "sequential":
    from latmix_tf.comparison.executors import ExecutorConfig  # pylint: disable=import-outside-toplevel
    cfg = dataclasses.replace(cfg, executor=ExecutorConfig(executor, ray_address or None,
                                                           concurrent_members))
  if methods and getattr(cfg, "valid_methods", None):  # this family's names, before any folder
    cli_checks.check_choices(methods, cfg.valid_methods, "--methods")
  workdir = os.path.join(os.path.abspath(workdir_root), experiment.name, scale, f"seed_{seed}")
  if isinstance(strategy, str):
    strategy = distribute.make_strategy(strategy)
  # A worker other than the chief writes under workertemp_<i> dirs (TF multi-worker guide).
  workdir = distribute.worker_dir(workdir, strategy)
  log = tracked(log)
  data = getattr(cfg, "data", None)  # a comparison's members check their data themselves
  if data is not None:
    doing(f"checking the {data.name} data files")
    check_dataset(data.name, data.data_dir, log=lambda line: None)  # before anything is written
  ctx = RunContext(workdir=workdir,
                   export_root=distribute.worker_dir(os.path.abspath(export_root), strategy),
                   rebuild=tuple(rebuild), log=log, strategy=strategy,
                   methods=tuple(methods) if methods else None,
                   seeds=seeds, root=os.path.abspath(workdir_root),
                   results_root=os.path.abspath(results_root) if results_root else None)
  doing(f"locking {workdir}")
  # Stage and export locks (workdir_lock.default_wait) follow --wait_for_lock too.
  with workdir_lock.waiting(wait_for_lock), workdir_lock.hold(
      workdir, wait=None if wait_for_lock else 0.0, log=log):
    t0 = time.time()
    doing(f"running {experiment.name} [{scale}, seed {seed}] in {workdir}")
    log(f"{experiment.name} [{scale}, seed {seed}] -> {workdir}")
    experiment.run(cfg, ctx)
    log(f"{experiment.name}: done in {time.time() - t0:.0f}s; report: "
        f"{os.path.join(workdir, 'report.md')}")
  return 0


@user_errors
def evaluate(export_dir: str, dataset: Optional[str], data_dir: Optional[str],
             workdir_root: str, log: Callable[[str], None]) -> int:
  """Evaluates any SavedModel with our signature on a dataset's test set.

  A SavedModel that recorded probe logits at export must reproduce them, so a damaged one
  is one error line, never a traceback or silently wrong numbers.
  """
  handle_interrupts()
  doing(f"checking --evaluate={export_dir}")
  cli_checks.check_encodable(export_dir, "--evaluate")
  workdir_root = cli_checks.check_writable_dir(workdir_root, "--workdir")
  cli_checks.check_data_dir(data_dir)
  export_dir = cli_checks.expand_path(export_dir)
  if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
    raise FileNotFoundError(
        f"No SavedModel at {export_dir!r} (no saved_model.pb). Export one with an experiment "
        f"(`python main.py --experiment=...`) or pass the directory that holds saved_model.pb.")
  doing("importing TensorFlow")
  _import_tensorflow()
  from latmix_tf import export  # pylint: disable=import-outside-toplevel
  from latmix_tf.config import DataConfig, EvalConfig  # pylint: disable=import-outside-toplevel
  from latmix_tf.data import load_dataset, make_splits  # pylint: disable=import-outside-toplevel
  from latmix_tf.evaluation.stage import evaluation_stage  # pylint: disable=import-outside-toplevel
  from latmix_tf.runner import corrupted_cache_dir  # pylint: disable=import-outside-toplevel
  doing(f"loading the SavedModel {export_dir}")
  fn = export.load_classifier(export_dir)  # a damaged model fails here, with a clear message
  meta = export.read_metadata(export_dir)
  if meta.get("probe"):
    reason = export.check_probe(fn, meta)
    if reason:
      raise export.SavedModelError(f"{export_dir}: {reason}; re-export it.")
  dataset = dataset or meta.get("dataset")
  if not dataset:
    raise ValueError(f"{export_dir} has no metadata.json naming its dataset: pass --dataset.")
  log = tracked(log)
  arrays = load_dataset(dataset, data_dir, log=log)
  # The validation split the experiments carve (fixed seed) fits the temperature; the
  # whole suite runs on all test images, AutoAttack ("cheap": APGD-CE + APGD-T) on 1000.
  splits = make_splits(arrays, DataConfig(dataset, data_dir))
  cfg = EvalConfig.for_dataset(dataset, autoattack_version="cheap", attack_samples=None)
  path = os.path.normpath(os.path.abspath(export_dir))
  name = f"{os.path.basename(os.path.dirname(path))}_{os.path.basename(path)}"
  out_dir = os.path.join(os.path.abspath(workdir_root), "evaluate", f"{dataset}_{name}")
  doing(f"evaluating {export_dir} into {out_dir}")
  result = evaluation_stage(export_dir, splits.x_test, splits.y_test, cfg, out_dir, log,
                            x_val=splits.x_val, y_val=splits.y_val,
                            cache_dir=corrupted_cache_dir(data_dir))
  metrics = result.value
  log(f"evaluation of {export_dir} ({result.status}): written to {out_dir}/evaluation.json")
  for k in sorted(metrics):
    if isinstance(metrics[k], float):
      log(f"  {k} = {metrics[k]:.4f}")
  return 0


@user_errors
def drill(name: str, scale: str, seed: int, workdir_root: str, data_dir: Optional[str],
          main_py: str, log: Callable[[str], None], registry_dir: Optional[str] = None,
          kill_seed: int = 0) -> int:
  """`main.py --drill=NAME`: kill a run in every stage, resume it, compare with a clean run."""
  from latmix_tf import drill as fault_drill  # pylint: disable=import-outside-toplevel
  handle_interrupts()
  doing(f"checking the command line of --drill={name}")
  cli_checks.check_seed(seed)
  cli_checks.check_data_dir(data_dir)
  root = cli_checks.check_writable_dir(workdir_root, "--workdir")
  facts = cli_checks.NameCache(registry_dir).read() if registry_dir else None
  if facts is not None:
    cli_checks.check_experiment(name, facts)
  doing(f"running the fault drill of {name}")
  ok = fault_drill.run_drill(name, scale, seed, os.path.join(root, "drill"), main_py,
                             data_dir=data_dir, log=tracked(log), kill_seed=kill_seed)
  return 0 if ok else 1


@user_errors
def serve(model_paths: Optional[Sequence[str]], log: Callable[[str], None],
          model_config_file: Optional[str] = None, **limits) -> int:
  """Serves `[NAME=]PATH` SavedModels over the TF Serving REST API until SIGTERM.

  `limits` are `serving.ServerConfig` fields (host, port, max_body_bytes, ...). Returns
  serve's exit code: 1 when requests were still running at the drain deadline.
  """
  cli_checks.check_serve_limits(limits)  # before the server and TensorFlow are imported
  from latmix_tf import serving  # pylint: disable=import-outside-toplevel
  if not model_paths and not model_config_file:
    raise ValueError("--serve needs --model_base_path=[NAME=]PATH[,...] or --model_config_file.")
  models = serving.parse_model_specs(list(model_paths or []))
  return serving.serve(models, serving.ServerConfig(**limits), log=log,
                       model_config_file=model_config_file)
