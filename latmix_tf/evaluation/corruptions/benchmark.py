"""The corrupted test set (generated once, cached on disk as a stage) and its accuracy metrics.

Why a cache: generating 15 corruptions of 10k images costs far more than classifying them,
and every method, seed and re-evaluation must see the *same* corrupted images for the
comparison to be paired. The set is a pure function of its stage key (`set_key`: the spec,
its plan, CORRUPTION_VERSION and the clean images' fingerprint). Each set is a stage
(`latmix_tf.stages`) in its own folder of the shared cache, `<cache_dir>/<suite>-<key_hash>/`,
holding one uint8 `.npy` per (corruption, severity), `manifest.json` (the SHA-256 of each
`.npy` as written) and the stage record `stage.json`. `run_stage` decides between reuse
and work, under the lock of the cache folder: a second process waits for the set being
generated and then reads it.

Resumable: each `.npy` is written under a temporary name, renamed into place and its digest
added to the manifest, so a killed generation continues with the (corruption, severity)
files it finished. Verified on every load: a set is reused only if every file still has its
recorded SHA-256 (~0.2 s for the 118 MB of MNIST-C on one core). A damaged or edited file (a
zeroed `fog_s5.npy` parses fine and silently changes fog accuracy and mCA) makes the load
fail (`StageDamaged`), gets one line naming it, and is generated again; the intact ones stay.

Randomness: images are corrupted in fixed chunks of `CHUNK` (bounded memory), each with its
own generator seeded by (seed, corruption, severity, chunk index), so a set is a pure
function of its key, cached or not.

Metrics: accuracy per (corruption, severity); per corruption the mean over severities
(`corruption/<name>/accuracy`); the mean corruption accuracy `corruption/mca` over
corruptions (Hendrycks & Dietterich 2019 report its complement, the mean corruption error).
"""

from __future__ import annotations

import dataclasses
import os
import time
import zlib
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from latmix_tf import stages, workdir_lock
from latmix_tf.config import config_hash
from latmix_tf.data.integrity import file_sha256
from latmix_tf.data.sources import array_fingerprint
from latmix_tf.evaluation.corruptions import registry
from latmix_tf.jsonio import read_json, write_json_atomic

CHUNK = 256
MANIFEST = "manifest.json"
STAGE = "corrupted_set"
Key = Tuple[str, int]


@dataclasses.dataclass(frozen=True)
class CorruptionSpec:
  """Which corrupted set to build.

  Attributes:
    suite: "mnist_c" or "cifar10_c" (`registry.suite_for(image_shape)`).
    names: corruptions to include; () = all 15 of the suite.
    severities: levels 1..5 for every corruption; () = the benchmark's protocol (MNIST-C:
      its one level per corruption; CIFAR-10-C: 1-5).
    samples: corrupt the first N clean images; None = all.
    seed: base seed of every generator.
  """
  suite: str
  names: Tuple[str, ...] = ()
  severities: Tuple[int, ...] = ()
  samples: Optional[int] = None
  seed: int = 0

  def plan(self) -> List[Key]:
    """(corruption, severity) pairs in generation order."""
    chosen = self.names or registry.names(self.suite)
    out = []
    for name in chosen:
      levels = self.severities or registry.protocol_severities(self.suite, name)
      registry.get(self.suite, name)
      out += [(name, int(s)) for s in levels]
    return out


def _rng(seed: int, name: str, severity: int, chunk: int) -> np.random.Generator:
  return np.random.default_rng([int(seed), zlib.crc32(name.encode()), severity, chunk])


def _corrupt(x: np.ndarray, spec: CorruptionSpec, name: str, severity: int,
             log: Callable[[str], None]) -> np.ndarray:
  """One (corruption, severity) set of the clean images `x`, chunk by chunk."""
  t = time.time()
  parts = [registry.corrupt(x[s:s + CHUNK], spec.suite, name, severity,
                            _rng(spec.seed, name, severity, s // CHUNK))
           for s in range(0, len(x), CHUNK)]
  log(f"[corruptions] {name} s{severity}: {len(x)} images in {time.time() - t:.1f}s")
  return np.concatenate(parts)


def generate(x_uint8: np.ndarray, spec: CorruptionSpec,
             log: Callable[[str], None] = print) -> Dict[Key, np.ndarray]:
  """Corrupts `x_uint8[:spec.samples]` for every (corruption, severity) of the plan (no cache)."""
  x = np.asarray(x_uint8)[:spec.samples]
  return {(name, severity): _corrupt(x, spec, name, severity, log)
          for name, severity in spec.plan()}


def set_key(x_uint8: np.ndarray, spec: CorruptionSpec) -> Dict[str, Any]:
  """The set's stage key: spec, plan, code version and the clean images it corrupts."""
  x = np.asarray(x_uint8)[:spec.samples]
  return stages.stage_key(config=spec, data=array_fingerprint(x),
                          plan=[list(p) for p in spec.plan()],
                          version=registry.CORRUPTION_VERSION)


def cache_key(x_uint8: np.ndarray, spec: CorruptionSpec) -> str:
  """16 hex characters naming the set: the hash of its stage key."""
  return config_hash(set_key(x_uint8, spec))


def _file(name: str, severity: int) -> str:
  return f"{name}_s{severity}.npy"


def _digests(folder: str) -> Optional[Dict[str, str]]:
  """{file: SHA-256 as written} from the folder's manifest (None if unreadable)."""
  manifest = read_json(os.path.join(folder, MANIFEST))
  digests = manifest.get("sha256") if isinstance(manifest, dict) else None
  return digests if isinstance(digests, dict) else None


def _intact(path: str, digest: Optional[str]) -> bool:
  try:
    return digest is not None and file_sha256(path) == digest
  except OSError:
    return False


def _load(folder: str, plan: List[Key], log: Callable[[str], None]) -> Dict[Key, np.ndarray]:
  """The finished set as read-only memory maps, if every file has its recorded SHA-256.

  Raises:
    stages.StageDamaged: the manifest is unreadable, or a file is missing or differs.
  """
  digests = _digests(folder)
  if digests is None:
    raise stages.StageDamaged(f"no readable {MANIFEST} of file digests")
  for n, s in plan:
    if not _intact(os.path.join(folder, _file(n, s)), digests.get(_file(n, s))):
      raise stages.StageDamaged(f"{_file(n, s)} is missing or does not match its recorded "
                                f"SHA-256")
  try:
    sets = {(n, s): np.load(os.path.join(folder, _file(n, s)), mmap_mode="r") for n, s in plan}
  except (OSError, ValueError) as e:
    raise stages.StageDamaged(str(e)) from e
  log(f"[corruptions] cached set {folder}")
  return sets


def _build(x: np.ndarray, spec: CorruptionSpec, folder: str, log: Callable[[str], None]
           ) -> Tuple[Dict[Key, np.ndarray], Dict[str, Any]]:
  """Generates every file of the plan the folder lacks intact; returns (sets, outputs).

  A file whose digest the manifest records and still matches is kept (a killed or damaged
  build continues from what is intact); every other one is generated, written under a
  temporary name, renamed into place and its digest recorded.
  """
  digests = _digests(folder) or {}
  sets, kept = {}, []
  for name, severity in spec.plan():
    file = _file(name, severity)
    path = os.path.join(folder, file)
    if _intact(path, digests.get(file)):
      sets[(name, severity)] = np.load(path, mmap_mode="r")
      kept.append(file)
      continue
    if file in digests:
      log(f"[corruptions] {path} does not match the SHA-256 recorded when it was written "
          f"(damaged or edited); regenerating it")
    images = _corrupt(x, spec, name, severity, log)
    partial = os.path.join(folder, f".{file}.partial")
    with open(partial, "wb") as f:
      np.save(f, images)
    os.replace(partial, path)
    digests[file] = file_sha256(path)
    write_json_atomic(os.path.join(folder, MANIFEST), {"sha256": digests})
    sets[(name, severity)] = images
  if kept:
    log(f"[corruptions] kept {len(kept)} intact sets of an earlier attempt: {', '.join(kept)}")
  log(f"[corruptions] cached {len(sets)} sets in {folder}")
  return sets, {"spec": dataclasses.asdict(spec), "plan": spec.plan(), "samples": len(x)}


def corrupted_test_set(x_uint8: np.ndarray, spec: CorruptionSpec, cache_dir: Optional[str] = None,
                       log: Callable[[str], None] = print) -> Dict[Key, np.ndarray]:
  """The corrupted images {(corruption, severity): uint8 [n, H, W, C]}, from the cache if built.

  Call it outside any multi-worker strategy scope (the evaluation runs on the chief alone):
  the stage then has one worker, and concurrent processes take turns on the cache's lock.

  Args:
    x_uint8: clean uint8 test images (the first `spec.samples` are used).
    spec: what to build.
    cache_dir: folder of cached sets (e.g. `<data_dir>/corrupted`); None = build in memory.
    log: progress sink.
  Returns:
    The sets in plan order (read-only memory maps when read from the cache).
  """
  if cache_dir is None:
    return generate(x_uint8, spec, log)
  x = np.asarray(x_uint8)[:spec.samples]
  key = set_key(x_uint8, spec)
  folder = os.path.join(cache_dir, f"{spec.suite}-{config_hash(key)}")
  stage = stages.Stage(STAGE, folder, key, lock=cache_dir)
  plan = spec.plan()
  # Always wait for the holder: it is generating a set of this shared cache, which every
  # run reads, and lock order is safe (a holder takes no other lock while it generates).
  with workdir_lock.hold(cache_dir, wait=None, log=log):
    return stages.run_stage(stage, lambda resumed: _build(x, spec, folder, log),
                            lambda record: _load(folder, plan, log), log=log).value


def corruption_metrics(predict_logits: Callable[[np.ndarray], np.ndarray],
                       sets: Dict[Key, np.ndarray], labels: np.ndarray
                       ) -> Tuple[Dict[str, float], Dict[str, Dict[int, float]], np.ndarray,
                                  np.ndarray]:
  """Accuracy on every corrupted set.

  Args:
    predict_logits: uint8 images [n, H, W, C] -> logits [n, K] (numpy).
    sets: {(corruption, severity): uint8 images}, all of the same n.
    labels: [>= n] integer labels of the clean images (the first n are used).
  Returns:
    (metrics, table, logits, labels): flat `corruption/...` metrics; {corruption:
    {severity: accuracy}}; the logits of all sets stacked and their labels (for calibration
    under shift).
  """
  if not sets:
    raise ValueError("corruption_metrics needs at least one corrupted set.")
  table: Dict[str, Dict[int, float]] = {}
  all_logits, all_labels = [], []
  n = len(next(iter(sets.values())))
  y = np.asarray(labels)[:n]
  for (name, severity), images in sets.items():
    logits = predict_logits(np.asarray(images))
    table.setdefault(name, {})[severity] = float(np.mean(logits.argmax(1) == y))
    all_logits.append(logits)
    all_labels.append(y)
  metrics = {f"corruption/{name}/accuracy": float(np.mean(list(levels.values())))
             for name, levels in table.items()}
  metrics["corruption/mca"] = float(np.mean([metrics[f"corruption/{k}/accuracy"] for k in table]))
  metrics["corruption/samples"] = int(n)
  return metrics, table, np.concatenate(all_logits), np.concatenate(all_labels)
