"""`train_and_evaluate`: needs -> method -> classifier stage -> evaluation stage -> report.

Every classifier experiment (any method) goes through this one function, top to bottom:
  1. the stages the method declares it needs (`training.registry.needs`): for "latent", the
     generator / encoder / bank stages (`latent.stages.build_latent_stages`);
  2. the method, built by the registry's factory from its config and those stages' results
     (`MethodInputs`); a factory trains nothing;
  3. the "classifier" stage trains with the one loop and exports the SavedModel; it is keyed
     by the config (minus the evaluation config), the data fingerprint and the key hashes of
     the stages the method consumed; a cached one is reused only if its SavedModel is the
     recorded one;
  4. the "evaluation" stage scores the *exported SavedModel* (what a user downloads), keyed
     by its fingerprint and the evaluation config; with latent stages and the dataset's
     reference network, the generator's evaluators too (`evaluation.generator`);
  5. the report (`report.md`) and `metrics.json`, from the stages' records.
Stage directories: `<workdir>/classifier/` (checkpoints, history, TensorBoard) and
`<workdir>/evaluation/`; see `latmix_tf.stages` for the record every stage writes.
The chief holds the export folder's lock (`workdir_lock`, beside it) from the first stage to
the last metadata update: two runs with different workdirs but one `--export_dir` must not
overwrite each other's SavedModel, nor evaluate the other's.

Several workers (`MultiWorkerMirroredStrategy`): all train; only the chief touches `workdir`
and `export_dir`, exports, evaluates and writes the report, and the others return the
chief's metrics (broadcast, so no shared filesystem is needed). The model is exported from a
single-device copy of the trained weights, so the SavedModel is the same whatever strategy
trained it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
from typing import Any, Callable, Dict, Optional, Sequence

import keras
import tensorflow as tf

from latmix_tf import distribute, export, reports, stages, workdir_lock
from latmix_tf.config import ExperimentConfig, config_hash, to_dict
from latmix_tf.data import get_info, load_dataset, make_splits
from latmix_tf.data.pipeline import Splits
from latmix_tf.data.sources import resolve_data_dir
from latmix_tf.evaluation import stage as evaluation
from latmix_tf.evaluation.generator import GeneratorContext, evaluate_generator
from latmix_tf.evaluation.suite import ATTACK_CONFIG_FILE
from latmix_tf.latent.report import latent_report, mix_drawer
from latmix_tf.latent.stages import LatentStages, build_latent_stages
from latmix_tf.models.classifiers import build_classifier
from latmix_tf.training import Method, MethodInputs, build_method, registry, train


@dataclasses.dataclass(frozen=True)
class RunContext:
  """What the CLI passes to an experiment's `run` (all paths absolute).

  Lives in the library (not experiments/) so `latmix_tf.cli` builds it without importing
  experiments/; `experiments.common` re-exports it. `root` is the `--workdir` root under
  which every run has its `<experiment>/<scale>/seed_<n>` folder (a comparison finds its
  members there); None puts them under `<workdir>/members`. `results_root`, if set, is where
  a comparison at quick or full scale copies its summary (the repository's `results/`).
  """
  workdir: str
  export_root: str
  rebuild: tuple = ()
  log: Callable[[str], None] = print
  strategy: Any = None
  methods: Optional[tuple] = None
  seeds: Optional[tuple] = None
  root: Optional[str] = None
  results_root: Optional[str] = None


METRICS_FILE = "metrics.json"
_INTEGRITY = {"canonical": "the canonical release, checksum verified",
              "custom": "the user's own files, declared with --allow_custom_data",
              "unverified": "no canonical checksum to verify against"}
CLASSIFIER_DIR, EVALUATION_DIR = "classifier", "evaluation"


def run_key(cfg: ExperimentConfig, fingerprint: str,
            upstream: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
  """The classifier stage's key: the config that changes the trained weights + the data +
  the stages the method consumed.

  `data.data_dir` is left out (the same bytes from Debian's copy, a `--data_dir` folder or
  tfds give the same fingerprint), and so is `eval`: evaluation is a stage of its own.
  """
  return stages.stage_key(config=classifier_config_hash(cfg), data=fingerprint,
                          upstream=dict(upstream or {}))


def classifier_config_hash(cfg: ExperimentConfig) -> str:
  """The `config` entry of the classifier stage's key (see `run_key`)."""
  return config_hash(cfg, exclude=("description", "data.data_dir", "eval",
                                    "train.checkpoint_every_s"))


def classifier_stage(cfg: ExperimentConfig, method: Method, splits: Splits, directory: str,
                     export_dir: str, strategy, log: Callable[[str], None],
                     rebuild: bool = False) -> stages.StageResult:
  """The "classifier" stage: train with the one loop, export the SavedModel."""
  key = run_key(cfg, splits.fingerprint, method.upstream)
  stage = stages.Stage("classifier", directory, key)
  info = get_info(cfg.data.name)
  chief = distribute.is_chief(strategy)

  def build(resumed):
    del resumed  # the loop resumes from the checkpoints by itself
    keras.utils.set_random_seed(cfg.seed)
    with strategy.scope():
      model = build_classifier(cfg.model, info.image_shape,
                               sync_batch_norm=strategy.num_replicas_in_sync > 1)
    history = train(model, method, splits, cfg.data, cfg.train, directory, cfg.seed, strategy,
                    log)
    train_seconds = float(sum(h.get("seconds", 0.0) for h in history))
    if not chief:  # the worker's temp folders go (TF guide); the chief exports
      shutil.rmtree(_outermost_worker_temp(distribute.worker_dir(directory, strategy)),
                    ignore_errors=True)
      return None, {}
    if strategy.num_replicas_in_sync > 1 or distribute.num_workers(strategy) > 1:
      model = single_device_copy(model, cfg, info.image_shape)
    metadata = {"experiment": cfg.name, "config": to_dict(cfg), "run_key": stage.key_hash,
                "dataset": info.name, "data_fingerprint": splits.fingerprint,
                "data_integrity": splits.data_integrity, "method": method.name,
                "history": history}
    export.export_classifier(model, export_dir, info.image_shape, metadata)
    log(f"exported SavedModel to {export_dir}")
    final = history[-1] if history else {}
    return None, {"export_dir": os.path.abspath(export_dir),
                  "data_integrity": splits.data_integrity,
                  "saved_model": export.saved_model_fingerprint(export_dir),
                  "history": history, "train_seconds": train_seconds,
                  "final/train_accuracy": final.get("train/accuracy", float("nan")),
                  "final/val_accuracy": final.get("val/accuracy", float("nan"))}

  def load(record):
    outputs = record["outputs"]
    if os.path.abspath(export_dir) != outputs.get("export_dir"):
      raise stages.StageDamaged(f"the model was exported to {outputs.get('export_dir')}, "
                                f"not {export_dir}")
    if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
      raise stages.StageDamaged(f"no SavedModel in {export_dir}")
    if export.saved_model_fingerprint(export_dir) != outputs.get("saved_model"):
      raise stages.StageDamaged(f"the SavedModel in {export_dir} is not the one exported")
    verify = getattr(export, "verify_saved_model", None)  # probe logits + run key
    reason = verify(export_dir, stage.key_hash) if verify is not None else None
    if reason:
      raise stages.StageDamaged(reason)
    return None

  with export_lock(export_dir, strategy, log):
    return stages.run_stage(stage, build, load, rebuild=rebuild, log=log, strategy=strategy)


def export_lock(export_dir: str, strategy, log: Callable[[str], None]):
  """The chief's lock on a SavedModel folder (re-entrant; waits under --wait_for_lock)."""
  if not distribute.is_chief(strategy):
    return contextlib.nullcontext()
  return workdir_lock.hold(export_dir, wait=workdir_lock.default_wait(), log=log,
                           flag="--export_dir")


def train_and_evaluate(cfg: ExperimentConfig, workdir: str, export_dir: str,
                       log: Callable[[str], None] = print,
                       strategy: Optional[tf.distribute.Strategy] = None,
                       splits: Optional[Splits] = None, rebuild: Sequence[str] = (),
                       reference_network: Optional[str] = None,
                       stage_index: Optional[str] = None) -> Dict:
  """Builds the method, trains and exports the classifier, evaluates it, writes the report.

  Args:
    cfg: the experiment config.
    workdir: the run directory (stage folders, report.md, metrics.json, figures).
    export_dir: where the SavedModel goes (e.g. saved_models/<experiment>/seed_<n>).
    log: progress sink.
    strategy: tf.distribute strategy (default: the current/default one).
    splits: prebuilt data splits (default: loaded from `cfg.data`).
    rebuild: stage names to redo (and everything downstream of them).
    reference_network: export dir of the dataset's reference classifier, for methods that
      measure generated images in its features (latent mixup's Fréchet distance).
    stage_index: folder through which runs share the method's upstream stages of equal key
      (`stages.Stage.index`; the CLI uses `<--workdir>/.stage_index`); None: no sharing.
  Returns:
    The metrics dict (also written to `<workdir>/metrics.json`).
  """
  with export_lock(export_dir, strategy or tf.distribute.get_strategy(), log):
    return _train_and_evaluate(cfg, workdir, export_dir, log, strategy, splits, rebuild,
                               reference_network, stage_index)


def _train_and_evaluate(cfg, workdir, export_dir, log, strategy, splits, rebuild,
                        reference_network, stage_index) -> Dict:
  rebuild = stages.downstream(rebuild)
  if splits is None:
    splits = make_splits(load_dataset(cfg.data.name, cfg.data.data_dir, log=log), cfg.data)
  strategy = strategy or tf.distribute.get_strategy()
  chief = distribute.is_chief(strategy)
  latent = None
  if registry.LATENT in registry.needs(cfg.method):
    latent = build_latent_stages(*registry.latent_recipe(cfg.method), splits, workdir,
                                 seed=cfg.seed, strategy=strategy, log=log,
                                 rebuild=tuple(rebuild), stage_index=stage_index)
  method = build_method(cfg.method, MethodInputs(
      batch_size=cfg.data.batch_size, generator=latent and latent.generator,
      bank=latent and latent.bank, upstream=latent.upstream if latent else {}))
  clf = classifier_stage(cfg, method, splits, os.path.join(workdir, CLASSIFIER_DIR),
                         export_dir, strategy, log, rebuild="classifier" in rebuild)
  if not chief:
    return distribute.broadcast_json(strategy, None)
  ev = evaluation.evaluation_stage(
      export_dir, splits.x_test, splits.y_test, cfg.eval, os.path.join(workdir, EVALUATION_DIR),
      log, rebuild="evaluation" in rebuild, x_val=splits.x_val, y_val=splits.y_val,
      cache_dir=corrupted_cache_dir(cfg.data.data_dir))
  out = clf.outputs
  extra = _latent_report(cfg, latent, workdir, splits, reference_network, log, rebuild,
                         stage_index)
  metrics = {"train_seconds": out["train_seconds"],
             "final/train_accuracy": out["final/train_accuracy"],
             "final/val_accuracy": out["final/val_accuracy"],
             **evaluation.metrics(ev.record), **extra["metrics"],
             "stage/classifier/seconds": clf.record["seconds"],
             "stage/evaluation/seconds": ev.record["seconds"]}
  log(f"{cfg.name}: classifier {clf.status}, evaluation {ev.status}; " + "  ".join(
      f"{k}={metrics[k]:.4f}" for k in ("test/accuracy", "blur/area", "deepfool/rho_adv")
      if k in metrics))
  _write_report(cfg, workdir, export_dir, splits, metrics, out["history"], extra, ev.record)
  export.update_metadata(export_dir, {"metrics": metrics})
  result = {**metrics, "run_key": clf.record["key_hash"],
            "stages": {"classifier": clf.status, "evaluation": ev.status},
            # What a comparison may show of a member, by name ("latent_mixed_grid"), relative
            # to the run directory (so a run's record is the same wherever it ran).
            "figures": {os.path.splitext(os.path.basename(p))[0]: os.path.relpath(p, workdir)
                        for p in extra["figures"]}}
  export.write_json_atomic(os.path.join(workdir, METRICS_FILE), result)
  return distribute.broadcast_json(strategy, result)


def _latent_report(cfg: ExperimentConfig, latent: Optional[LatentStages], workdir: str,
                   splits: Splits, reference_network: Optional[str], log, rebuild,
                   stage_index: Optional[str]) -> Dict[str, Any]:
  """The latent stages' figures, notes and metrics, and, given the dataset's reference
  network, the evaluators of the generator and of the mixes the run drew."""
  if latent is None:
    return {"figures": [], "notes": [], "metrics": {}}
  mixer = registry.latent_mixup_part(cfg.method)
  draw = mix_drawer(latent, splits.num_classes, mixer.pairs if mixer else "self",
                    mixer.alpha if mixer else 1.0)
  extra = latent_report(latent, workdir, splits, cfg.seed, cfg.data.name, draw)
  if reference_network:
    measured = evaluate_generator(GeneratorContext(
        latent.generator, latent.records["generator"]["key_hash"], latent.bank, draw,
        splits.x_train, splits.y_train, splits.x_test, reference_network, workdir, cfg.seed,
        log, stage_index, tuple(rebuild)))
    extra["metrics"].update(measured.metrics)
    extra["notes"] += measured.notes
  return extra


def _write_report(cfg, workdir, export_dir, splits, metrics, history, extra,
                  eval_record) -> None:
  figs = [reports.plot_training_curves(history, os.path.join(workdir, "training_curves.png"))]
  eval_dir = os.path.join(workdir, EVALUATION_DIR)
  figs += sorted(os.path.join(eval_dir, f) for f in evaluation.figures(eval_record))
  reports.write_markdown(os.path.join(workdir, "report.md"), f"{cfg.name} (seed {cfg.seed})",
                         cfg.description, metrics, list(extra["figures"]) + figs,
                         notes=[f"SavedModel: {export_dir}",
                                f"data: {splits.fingerprint} ({splits.data_integrity}: "
                                f"{_INTEGRITY[splits.data_integrity]})",
                                f"every attack's hyper-parameters: "
                                f"{os.path.join(EVALUATION_DIR, ATTACK_CONFIG_FILE)}",
                                *evaluation.notes(eval_record), *extra["notes"]])


def corrupted_cache_dir(data_dir: Optional[str]) -> Optional[str]:
  """`<data folder>/corrupted`, where the corrupted test sets are cached (keyed by their
  config), if the data folder is writable; else None (generated in memory each time)."""
  root = resolve_data_dir(data_dir)
  return os.path.join(root, "corrupted") if os.access(root, os.W_OK) else None


def _outermost_worker_temp(path: str) -> str:
  """The highest `workertemp_<i>` folder on `path` (a worker's run may sit inside one)."""
  parts = os.path.normpath(path).split(os.sep)
  for i, part in enumerate(parts):
    if re.fullmatch(r"workertemp_\d+", part):
      return os.sep.join(parts[:i + 1]) or os.sep
  return path


def single_device_copy(model: keras.Model, cfg: ExperimentConfig, image_shape) -> keras.Model:
  """The trained weights in a classifier built outside any strategy (for export/evaluation)."""
  copy = build_classifier(cfg.model, image_shape)  # called outside strategy.scope()
  copy.set_weights(model.get_weights())
  return copy
