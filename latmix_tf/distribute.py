"""What latmix needs from `tf.distribute` beyond `strategy.run`: roles, paths, agreement, RNG.

Every long stage (classifier, GAN/VAE, latent bank) runs under any strategy: the default one
(one device), `MirroredStrategy` (several local GPUs, or logical CPU devices in tests) or
`MultiWorkerMirroredStrategy` (machines configured by `TF_CONFIG`). The TF multi-worker
guide's rules are implemented here once:

* **Roles.** The *chief* is the worker holding replica 0 (task `chief:0`, or `worker:0` when
  the cluster has no chief). It writes the real artifacts; any other worker writes to a
  `workertemp_<i>` sibling directory (`worker_dir`, the guide's `write_filepath`), so workers
  on a shared filesystem never write the same file.
* **Agreement without a shared filesystem.** Workers need not see the chief's files: a
  resumed run restores the chief's checkpoint and `broadcast_from_chief` sends the values to
  every worker (one all-reduce where only replica 0 contributes, bit-exact), and decisions
  such as "this stage is cached" are the chief's, sent with `broadcast_json`, so that no
  worker waits in a collective the others skipped.
* **Randomness that does not depend on the number of replicas.** A replica's random numbers
  (dropout masks, GAN noise, VAE samples) are its rows of the draw the whole global batch
  would get on one device (`replica_rows`), so 1, 2 or 8 replicas train on the same numbers;
  the alternative, one seed per replica, makes results depend on the replica count.
"""

from __future__ import annotations

import json
import os
import re
from typing import Callable, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
_WORKER_TEMP = "workertemp_"


def make_strategy(name: str) -> tf.distribute.Strategy:
  """Maps `--strategy` to a strategy (auto: mirrored when more than one GPU is visible).

  `multi_worker` reads the cluster from the `TF_CONFIG` environment variable (see
  docs/scaling.md); it must be created before any other TensorFlow operation runs.
  """
  if name == "auto":
    name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                       "(cluster and this task); see docs/scaling.md.")
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f"Unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}.")


def worker_info(strategy: tf.distribute.Strategy = None) -> Tuple[int, int]:
  """(index of this worker, number of workers); the chief has index 0."""
  strategy = strategy or tf.distribute.get_strategy()
  resolver = getattr(strategy, "cluster_resolver", None)
  spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
  if not spec:
    return 0, 1
  chiefs, workers = len(spec.get("chief", [])), len(spec.get("worker", []))
  if resolver.task_type == "chief":
    return int(resolver.task_id), chiefs + workers
  if resolver.task_type == "worker":
    return chiefs + int(resolver.task_id), chiefs + workers
  raise ValueError(f"Task type {resolver.task_type!r} in TF_CONFIG cannot train; latmix runs "
                   f"'chief' and 'worker' tasks only.")


def is_chief(strategy: tf.distribute.Strategy = None) -> bool:
  return worker_info(strategy)[0] == 0


def num_workers(strategy: tf.distribute.Strategy = None) -> int:
  return worker_info(strategy)[1]


def worker_dir(path: str, strategy: tf.distribute.Strategy = None) -> str:
  """`path` on the chief; `<parent>/workertemp_<i>/<name>` on worker i (idempotent)."""
  index, _ = worker_info(strategy)
  if index == 0:
    return path
  path = os.path.normpath(path)
  parent, name = os.path.split(path)
  if re.fullmatch(_WORKER_TEMP + r"\d+", os.path.basename(parent)):
    return path  # already a worker path
  return os.path.join(parent, f"{_WORKER_TEMP}{index}", name)


def _multi_worker(strategy) -> bool:
  return num_workers(strategy) > 1


def sum_over_workers(strategy: tf.distribute.Strategy, arrays: Sequence[np.ndarray]
                     ) -> List[np.ndarray]:
  """Element-wise sums of every worker's `arrays` (each worker counted once), on every worker.

  Every worker must call this with arrays of the same shapes and dtypes. Values travel as
  float64 (ints too: exact below 2**53) in one all-reduce. A worker that fills only its own
  rows and leaves zeros elsewhere gets the merged array, bit-exact (x + 0 == x).
  """
  arrays = [np.asarray(a) for a in arrays]
  if not _multi_worker(strategy) or not arrays:
    return arrays
  flat = tf.constant(np.concatenate([a.astype(np.float64).ravel() for a in arrays]))
  out = strategy.experimental_local_results(_sum_fn(strategy)(flat))[0].numpy()
  result, start = [], 0
  for a in arrays:
    result.append(out[start:start + a.size].astype(a.dtype).reshape(a.shape))
    start += a.size
  return result


_SUM_FNS = {}


def _sum_fn(strategy):
  """One compiled all-reduce per strategy (any length: `reduce_retracing`) in which the
  first local replica of each worker contributes its worker's value, the others zeros."""
  if id(strategy) not in _SUM_FNS:
    local_ids = tf.function(lambda: strategy.run(
        lambda: tf.distribute.get_replica_context().replica_id_in_sync_group))
    first_local = min(int(i) for i in strategy.experimental_local_results(local_ids()))

    def replica_fn(x):
      ctx = tf.distribute.get_replica_context()
      mine = tf.where(tf.equal(ctx.replica_id_in_sync_group, first_local), x, tf.zeros_like(x))
      return ctx.all_reduce(tf.distribute.ReduceOp.SUM, mine)

    @tf.function(reduce_retracing=True)
    def total(x):
      return strategy.run(replica_fn, args=(x,))
    _SUM_FNS[id(strategy)] = (strategy, total)  # holds the strategy: ids stay unique
  return _SUM_FNS[id(strategy)][1]


def broadcast_from_chief(strategy: tf.distribute.Strategy, arrays: Sequence[np.ndarray]
                         ) -> List[np.ndarray]:
  """The chief's values of `arrays` on every worker (no-op with a single worker).

  Every worker must call this with arrays of the same shapes and dtypes; only the chief's
  values count (the others contribute zeros to `sum_over_workers`).
  """
  arrays = [np.asarray(a) for a in arrays]
  if not is_chief(strategy):
    arrays = [np.zeros_like(a) for a in arrays]
  return sum_over_workers(strategy, arrays)


def broadcast_json(strategy: tf.distribute.Strategy, obj):
  """The chief's `obj` (any JSON value) on every worker; e.g. its metrics or cache decision."""
  if not _multi_worker(strategy):
    return obj
  blob = np.frombuffer(json.dumps(obj, default=str).encode(), np.uint8) if is_chief(
      strategy) else np.zeros(0, np.uint8)
  n = int(broadcast_from_chief(strategy, [np.array(len(blob), np.int64)])[0])
  buf = np.zeros(n, np.uint8)
  buf[:len(blob)] = blob[:n]
  return json.loads(bytes(broadcast_from_chief(strategy, [buf])[0]).decode())


def variables_of(obj) -> List[tf.Variable]:
  """The tf.Variables behind a Keras object, tf.Module, variable or (nested) list of them."""
  if isinstance(obj, (list, tuple)):
    return [v for o in obj for v in variables_of(o)]
  if isinstance(obj, tf.Variable):
    return [obj]
  if hasattr(obj, "variables"):
    return [getattr(v, "value", v) for v in obj.variables]
  return [getattr(obj, "value", obj)]


def sync_variables_from_chief(strategy: tf.distribute.Strategy, variables: Sequence) -> None:
  """Assigns the chief's values of `variables` on every worker (after a chief-only restore)."""
  if not _multi_worker(strategy):
    return
  values = broadcast_from_chief(strategy, [v.numpy() for v in variables])
  for v, value in zip(variables, values):
    v.assign(value)


def replicas_in_sync() -> int:
  """Replicas of the current replica context (1 outside any strategy or in cross-replica)."""
  ctx = tf.distribute.get_replica_context()
  return ctx.num_replicas_in_sync if ctx is not None else 1


def replica_rows(draw: Callable[[tf.Tensor], tf.Tensor], n) -> tf.Tensor:
  """This replica's `n` rows of `draw(n * num_replicas)`: a draw over the global batch.

  Args:
    draw: rows -> tensor [rows, ...], a stateless random draw whose first k rows do not
      depend on how many rows are drawn (true of `tf.random.stateless_*`).
    n: rows of this replica's batch (all replicas hold equally many rows).
  Returns:
    `draw(n)` with one replica; otherwise the slice of the global draw that belongs to this
    replica (`experimental_distribute_dataset` gives replica r the r-th slice of a batch).
  """
  ctx = tf.distribute.get_replica_context()
  replicas = ctx.num_replicas_in_sync if ctx is not None else 1
  if replicas == 1:
    return draw(n)
  start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * tf.cast(n, tf.int32)
  return tf.gather(draw(n * replicas), tf.range(start, start + tf.cast(n, tf.int32)))


def replica_dropout(x: tf.Tensor, rate: float, seed) -> tf.Tensor:
  """`tf.nn.experimental.stateless_dropout` with masks that do not depend on the replica count.

  One replica: exactly `stateless_dropout(x, rate, seed)`. Several: each replica keeps its
  rows of the mask a single device would draw for the global batch.
  """
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return tf.nn.experimental.stateless_dropout(x, rate, seed=seed)
  shape = tf.shape(x)
  uniform = replica_rows(lambda m: tf.random.stateless_uniform(
      tf.concat([[m], shape[1:]], 0), seed, dtype=x.dtype), shape[0])
  return x * (1.0 / (1.0 - rate)) * tf.cast(uniform >= rate, x.dtype)
