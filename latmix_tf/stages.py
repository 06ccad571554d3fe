"""The one stage mechanism: how every cached, resumable step of latmix decides what to do.

Why one mechanism: the generator, the post-hoc encoder, the latent bank, the classifier, its
evaluation, the Fréchet distance and the corrupted test sets are all "expensive work whose
result is keyed by what it was computed from". Each is a `Stage`, its key comes from
`stage_key`, and `run_stage` is the only code that decides between reuse and work.

A stage has a name, a directory and a *key*: a JSON dict of everything its result depends
on, in one shape for every stage (`stage_key`): its config, the data fingerprint, the key
hashes of the stages it consumes (so a new generator invalidates its bank and everything
downstream without anyone comparing weights) and any other named input (seed, sample
count). Its record, `<directory>/stage.json` (`RECORD_FILE`), has one schema for every stage:

  {"stage": name, "key": {...}, "key_hash": 16 hex, "state": "building" | "done",
   "status": "cached" | "resumed" | "built",  # how the most recent run got the result
   "seconds": wall seconds of the work, summed over every attempt: a building stage writes
     its clock into the record every `stage_clock.HEARTBEAT_SECONDS`, so an attempt killed
     by SIGKILL (a session's end; it cannot be caught) still counts, at most one heartbeat
     short,
   "cpu_seconds": this process's CPU seconds over the same attempts (all its threads), the
     cost a loaded machine inflates least,
   "host": {"cpu": lscpu model, "isa": ISA class, "cores": usable cores} of the last attempt,
   "outputs": {...},                          # what consumers may read (JSON)
   "versions": {...}, "updated": "YYYY-mm-dd HH:MM:SS"}

A member's stages (`ORDER`, with what each consumes in `CONSUMES`) live in folders of those
names in its run directory; `--rebuild` names them, and the comparison's cost table and the
fault drill read their records. The corrupted test sets are stages too, outside any run: one
folder per key in the data folder's shared cache (`evaluation.corruptions.benchmark`).

`run_stage` then:
  * same key, state "done" and `load(record)` succeeds          -> "cached";
  * same key, state "building" (a killed run), or `load` raised
    `StageDamaged` (a truncated artifact)                       -> `build(resumed=True)`, which
    continues from the checkpoints / chunks already in the directory -> "resumed";
  * no record, another key, or a rebuild was asked for          -> the directory is moved aside
    (`<dir>.stale-<time>`, never deleted) and `build(resumed=False)` -> "built".
A directory with files but no readable record (an old layout, or unknown contents) counts
as "another key": it is never reused silently.

Sharing between runs (`Stage.index`): a run adopts a finished stage of equal key from another
run's folder instead of building it (`latmix_tf.stage_index`).

Concurrency: the chief holds the stage folder's lock (`latmix_tf.workdir_lock`; or that of
the folder `Stage.lock` names) while it decides and builds, so two runs never write the same
checkpoints or chunks: the second one stops with a message naming the first, or, under
`--wait_for_lock` (`workdir_lock.default_wait()`), waits for it and then finds its result
cached.

The module imports no TensorFlow (`distribute` is imported when a stage runs), so the CLI can
check `--rebuild` names against `ORDER` before TensorFlow starts.

Several workers (`MultiWorkerMirroredStrategy`): the chief alone reads and writes records and
decides; the decision is broadcast, every worker builds (they train together) or, for a
cached result, takes part in `share` (e.g. receives the chief's weights).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from latmix_tf import hardware, stage_clock, stage_index, workdir_lock
from latmix_tf.config import config_hash
from latmix_tf.jsonio import read_json, write_json_atomic

RECORD_FILE = "stage.json"
STATUSES = ("cached", "resumed", "built")
# Every stage of a member, in the order a run reaches them, and the stages whose results it
# consumes ("frechet" scores the generator; the classifier consumes what its method
# declares). `--rebuild` names these; a rebuilt stage makes every consumer of it stale.
CONSUMES = {
    "generator": (),
    "encoder": ("generator",),
    "bank": ("generator", "encoder"),
    "frechet": ("generator",),
    "classifier": ("generator", "encoder", "bank"),
    "evaluation": ("classifier",),
}
ORDER = tuple(CONSUMES)


def downstream(names) -> frozenset:
  """The named stages and every stage that consumes them, directly or not
  (`--rebuild=generator` retrains the encoder, bank, classifier and evaluation on top of the
  new generator and scores it again).

  Raises:
    ValueError: an unknown stage name, listing the valid ones.
  """
  unknown = sorted(set(names) - set(ORDER))
  if unknown:
    raise ValueError(f"unknown stage(s) {', '.join(unknown)} to rebuild; valid: "
                     f"{', '.join(ORDER)}.")
  out = set(names)
  for name in ORDER:  # pipeline order: what a stage consumes comes before it
    if out.intersection(CONSUMES[name]):
      out.add(name)
  return frozenset(out)


def stage_key(config: Any = None, data: Any = None,
              upstream: Optional[Mapping[str, str]] = None, **extra: Any) -> Dict[str, Any]:
  """A stage's key, in the one shape every stage uses.

  Why one builder: a reader of any `stage.json` finds the same fields, and a stage cannot
  forget a kind of input (the data, or what it consumes) without it showing as null.

  Args:
    config: a config dataclass (stored as its `config_hash`), or a dict / hash string given
      as is (a subset of a config's fields, a hash with exclusions); None: the stage has none.
    data: the fingerprint of the data the result is computed from (`array_fingerprint`), or
      {name: fingerprint} for several sets.
    upstream: {consumed stage or artifact: its key hash or content hash}.
    **extra: every other input the result depends on (seed, sample count, code version),
      JSON values.
  Returns:
    {"config": ..., "data": ..., "upstream": {...}, **extra}.
  """
  if dataclasses.is_dataclass(config):
    config = config_hash(config)
  return {"config": config, "data": data, "upstream": dict(upstream or {}), **extra}


class StageDamaged(Exception):
  """Raised by a stage's `load` when its artifacts are missing or damaged (redo them)."""


@dataclasses.dataclass(frozen=True)
class Stage:
  """A named unit of cached work in `directory`, keyed by `key` (JSON-serialisable).

  `index`: the folder through which runs share finished stages of equal key (None: no
  sharing; see the module docstring).
  `lock`: the folder whose lock guards the stage (None: `directory`). A cache holding one
  stage folder per key (the corrupted test sets) locks the cache folder, so that its own
  listing holds nothing but those folders.
  """
  name: str
  directory: str
  key: Dict[str, Any]
  index: Optional[str] = None
  lock: Optional[str] = None

  @property
  def key_hash(self) -> str:
    return config_hash(self.key)

  @property
  def record_path(self) -> str:
    return os.path.join(self.directory, RECORD_FILE)


@dataclasses.dataclass
class StageResult:
  """What `run_stage` returns: the record (status of this run) and the stage's value."""
  record: Dict[str, Any]
  value: Any

  @property
  def status(self) -> str:
    return self.record["status"]

  @property
  def outputs(self) -> Dict[str, Any]:
    return self.record.get("outputs", {})


def read_record(directory: str) -> Optional[Dict[str, Any]]:
  """The stage record in `directory` (None if absent or unreadable). Consumers such as the
  comparison read other stages only through this."""
  record = read_json(os.path.join(directory, RECORD_FILE))
  return record if isinstance(record, dict) and "key_hash" in record else None


def _write(stage: Stage, record: Dict[str, Any]) -> None:
  record["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
  write_json_atomic(stage.record_path, record)


def _move_aside(directory: str, why: str, log: Callable[[str], None]) -> None:
  stale = f"{directory.rstrip('/')}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
  n = 0
  while os.path.exists(stale + (f"-{n}" if n else "")):
    n += 1
  stale += f"-{n}" if n else ""
  os.replace(directory, stale)
  log(f"{os.path.basename(directory)}: {why}; moved to {stale}")


def _decide(stage: Stage, load: Callable[[Dict], Any], rebuild: bool,
            log: Callable[[str], None]) -> Tuple[Optional[Dict], Any, bool]:
  """Chief side: (cached record or None, loaded value, resume?)."""
  record = read_record(stage.directory)
  present = os.path.isdir(stage.directory) and bool(os.listdir(stage.directory))
  if rebuild or record is None or record.get("key_hash") != stage.key_hash:
    if present:
      why = ("rebuild requested" if rebuild else "no readable stage record (old layout?)"
             if record is None else f"it holds another key ({record.get('key_hash')}, now "
             f"{stage.key_hash})")
      _move_aside(stage.directory, why, log)
    record = None if rebuild else stage_index.adopt(stage, read_record, log)
    if record is None:
      return None, None, False
    try:
      return record, load(record), False
    except StageDamaged as e:
      _move_aside(stage.directory, f"the adopted copy is unusable ({e})", log)
      return None, None, False
  if record.get("state") == "done":
    try:
      return record, load(record), False
    except StageDamaged as e:
      log(f"{stage.name}: cached result unusable ({e}); redoing it from what is left")
  else:
    log(f"{stage.name}: unfinished run of the same key found in {stage.directory}; resuming")
  return None, None, True


def run_stage(stage: Stage, build: Callable[[bool], Tuple[Any, Dict[str, Any]]],
              load: Callable[[Dict[str, Any]], Any],
              share: Optional[Callable[[Any, Dict[str, Any]], Any]] = None,
              rebuild: bool = False, log: Callable[[str], None] = print,
              strategy=None) -> StageResult:
  """Loads the stage's result if its record matches, else builds (or resumes) it.

  Args:
    stage: name, directory and key.
    build: `build(resumed) -> (value, outputs)`; must continue from whatever valid partial
      work its directory holds (checkpoints, chunks). Runs on every worker.
    load: `load(record) -> value` from a finished record (chief only); raises
      `StageDamaged` if the artifacts cannot be trusted.
    share: several workers only: `share(value_or_None, record) -> value` runs on every
      worker after a cached decision (the chief passes its loaded value, the others None).
      Default: the chief's value, or the record's outputs on the other workers.
    rebuild: ignore any record and partial work (the old directory is moved aside).
    log: progress sink.
    strategy: `tf.distribute` strategy (default: the current one).
  Returns:
    A `StageResult` whose record says how this run got the value.
  """
  from latmix_tf import distribute  # pylint: disable=import-outside-toplevel (TensorFlow)
  chief = distribute.is_chief(strategy)
  with (workdir_lock.hold(stage.lock or stage.directory, wait=workdir_lock.default_wait(),
                          log=log)
        if chief else contextlib.nullcontext()):
    return _run_locked(stage, build, load, share, rebuild, log, strategy, chief)


def _run_locked(stage, build, load, share, rebuild, log, strategy, chief) -> StageResult:
  from latmix_tf import distribute  # pylint: disable=import-outside-toplevel
  multi = distribute.num_workers(strategy) > 1
  cached, value, resume = (_decide(stage, load, rebuild, log) if chief else (None, None, False))
  if multi:
    decision = distribute.broadcast_json(
        strategy, {"cached": cached, "resume": resume} if chief else None)
    cached, resume = decision["cached"], decision["resume"]
  if cached is not None:
    record = dict(cached, status="cached")
    if chief:
      _write(stage, record)
      if "adopted_from" not in record:  # the index names the folders where work was done
        stage_index.remember(stage)
      log(f"{stage.name}: cached ({stage.directory}, key {stage.key_hash})")
    if multi:
      value = (share or (lambda v, r: v if v is not None else r.get("outputs")))(value, record)
    return StageResult(record, value)
  old = read_record(stage.directory) if (chief and resume) else None
  status = "resumed" if resume else "built"
  record = {"stage": stage.name, "key": stage.key, "key_hash": stage.key_hash,
            "state": "building", "status": status,
            "seconds": float((old or {}).get("seconds", 0.0) or 0.0),
            "cpu_seconds": float((old or {}).get("cpu_seconds", 0.0) or 0.0), "outputs": {},
            "versions": _versions(), "host": _host()}
  # The clock starts before the "building" record is first written: a signal that lands once
  # a reader can see "building" is inside the clock, so the attempt's cost is always kept.
  with stage_clock.counting(record, (lambda r: _write(stage, r)) if chief else None):
    if chief:
      os.makedirs(stage.directory, exist_ok=True)
      _write(stage, record)
    value, outputs = build(resume)
  record.update(state="done", outputs=outputs)
  if chief:
    _write(stage, record)
    stage_index.remember(stage)
  if multi:  # every worker returns the chief's record (its outputs: the exported files)
    record = distribute.broadcast_json(strategy, record if chief else None)
  return StageResult(record, value)


def _versions() -> Dict[str, str]:
  from latmix_tf.export import versions  # pylint: disable=import-outside-toplevel
  return versions()


def _host() -> Dict[str, Any]:
  """The machine a stage's time was measured on: our machines differ ~2x per core."""
  info = hardware.cpu_info()
  return {"cpu": info.model, "isa": info.isa_class, "cores": info.cores}
