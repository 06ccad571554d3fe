"""The corrupted test set (generated once, cached on disk by its key) and its accuracy metrics.

Why a cache: generating 15 corruptions of 10k images costs far more than classifying them,
and every method, seed and re-evaluation must see the *same* corrupted images for the
comparison to be paired. The set is a pure function of (suite, corruptions, severities,
seed, the clean images' fingerprint, CORRUPTION_VERSION); that key names its folder,
`<cache_dir>/<suite>-<key>/`, holding one uint8 `.npy` per (corruption, severity) and a
`manifest.json`. The folder is built under a temporary name and renamed into place, so a
reader never sees a half-written set, and two processes racing to build it agree.

Verified on every load: the manifest records the SHA-256 of each `.npy` file as written, and
a set is reused only if every file still has it (~0.2 s for the 118 MB of MNIST-C on one
core). A damaged or edited file (a zeroed `fog_s5.npy` parses fine and silently changes fog
accuracy and mCA) gets one line naming it, and the set is generated again.

Randomness: images are corrupted in fixed chunks of `CHUNK` (bounded memory), each with its
own generator seeded by (seed, corruption, severity, chunk index), so a set is a pure
function of its key.

Metrics: accuracy per (corruption, severity); per corruption the mean over severities
(`corruption/<name>/accuracy`); the mean corruption accuracy `corruption/mca` over
corruptions (Hendrycks & Dietterich 2019 report its complement, the mean corruption error).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
import zlib
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from latmix_tf.data.integrity import file_sha256
from latmix_tf.data.sources import array_fingerprint
from latmix_tf.evaluation.corruptions import registry
from latmix_tf.jsonio import read_json, write_json_atomic

CHUNK = 256
MANIFEST = "manifest.json"
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


def generate(x_uint8: np.ndarray, spec: CorruptionSpec,
             log: Callable[[str], None] = print) -> Dict[Key, np.ndarray]:
  """Corrupts `x_uint8[:spec.samples]` for every (corruption, severity) of the plan (no cache)."""
  x = np.asarray(x_uint8)[:spec.samples]
  out = {}
  for name, severity in spec.plan():
    t = time.time()
    parts = [registry.corrupt(x[s:s + CHUNK], spec.suite, name, severity,
                              _rng(spec.seed, name, severity, s // CHUNK))
             for s in range(0, len(x), CHUNK)]
    out[(name, severity)] = np.concatenate(parts)
    log(f"[corruptions] {name} s{severity}: {len(x)} images in {time.time() - t:.1f}s")
  return out


def cache_key(x_uint8: np.ndarray, spec: CorruptionSpec) -> str:
  """16 hex characters naming the set: spec, plan, code version and the clean images."""
  x = np.asarray(x_uint8)[:spec.samples]
  blob = json.dumps({"version": registry.CORRUPTION_VERSION, "spec": dataclasses.asdict(spec),
                     "plan": spec.plan(), "data": array_fingerprint(x)}, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _file(name: str, severity: int) -> str:
  return f"{name}_s{severity}.npy"


def _load(folder: str, key: str, plan: List[Key],
          log: Callable[[str], None] = print) -> Optional[Dict[Key, np.ndarray]]:
  """The cached set if its manifest has this key and every file its recorded SHA-256."""
  manifest = read_json(os.path.join(folder, MANIFEST))
  if not manifest or manifest.get("key") != key:
    return None
  recorded = manifest.get("sha256")
  if not isinstance(recorded, dict):
    log(f"[corruptions] {folder}: no file digests recorded (an older cache); regenerating")
    return None
  try:
    for n, s in plan:
      if file_sha256(os.path.join(folder, _file(n, s))) != recorded.get(_file(n, s)):
        log(f"[corruptions] {os.path.join(folder, _file(n, s))} does not match the SHA-256 "
            f"recorded when it was written (damaged or edited); regenerating the set")
        return None
    return {(n, s): np.load(os.path.join(folder, _file(n, s)), mmap_mode="r") for n, s in plan}
  except (OSError, ValueError):
    return None


def corrupted_test_set(x_uint8: np.ndarray, spec: CorruptionSpec, cache_dir: Optional[str] = None,
                       log: Callable[[str], None] = print) -> Dict[Key, np.ndarray]:
  """The corrupted images {(corruption, severity): uint8 [n, H, W, C]}, from the cache if built.

  Args:
    x_uint8: clean uint8 test images (the first `spec.samples` are used).
    spec: what to build.
    cache_dir: folder of cached sets (e.g. `<data_dir>/corrupted`); None = build in memory.
    log: progress sink.
  Returns:
    The sets in plan order (read-only memory maps when read from the cache).
  """
  plan = spec.plan()
  if cache_dir is None:
    return generate(x_uint8, spec, log)
  key = cache_key(x_uint8, spec)
  folder = os.path.join(cache_dir, f"{spec.suite}-{key}")
  cached = _load(folder, key, plan, log)
  if cached is not None:
    log(f"[corruptions] cached set {folder}")
    return cached
  os.makedirs(cache_dir, exist_ok=True)
  sets = generate(x_uint8, spec, log)
  tmp = tempfile.mkdtemp(prefix=f".{spec.suite}-{key}.", dir=cache_dir)
  try:
    for (name, severity), images in sets.items():
      np.save(os.path.join(tmp, _file(name, severity)), images)
    write_json_atomic(os.path.join(tmp, MANIFEST), {
        "sha256": {_file(n, s): file_sha256(os.path.join(tmp, _file(n, s))) for n, s in plan},
        "key": key, "spec": dataclasses.asdict(spec), "plan": plan,
        "version": registry.CORRUPTION_VERSION, "samples": int(len(next(iter(sets.values())))),
        "data_fingerprint": array_fingerprint(np.asarray(x_uint8)[:spec.samples])})
    if os.path.isdir(folder):  # a broken earlier set (no valid manifest): replace it
      shutil.rmtree(folder, ignore_errors=True)
    os.rename(tmp, folder)
    log(f"[corruptions] cached {len(plan)} sets in {folder}")
  except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
    if _load(folder, key, plan, log) is None:  # lost a race only if the winner's is complete
      raise
  return sets


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
