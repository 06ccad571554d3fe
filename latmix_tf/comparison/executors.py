"""Where a comparison's members run: one after another in this process, or as Ray tasks.

Why Ray and not a scheduler of our own: members are independent jobs (each has its own
stages, records and locks), a TensorFlow process keeps about 1.5 of 2 cores busy, and a
research group's machines form a cluster Ray already knows how to drive. Ray starts a local
cluster on one machine with no set-up, and the same code runs on `ray start` clusters.

What a member needs from an executor is small: run `fn(**kwargs)` somewhere that sees the
shared workdir, and hand back its result. Everything that makes a result trustworthy stays
where it was: a member writes its stages into the shared workdir exactly as in a sequential
run, a stage is reused or resumed from its record (`latmix_tf.stages`), and each stage
folder is locked by the process that builds it. So a member whose worker dies is simply run
again (Ray's task retries): it resumes from its stage records, and its metrics, bank and
SavedModel are the ones a sequential run makes.

  for done in run_members(jobs, ExecutorConfig("ray"), log):
    done.job.key, done.result, done.node, done.queued, done.running

Ray is imported only when the Ray executor runs, so the sequential path needs no Ray.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import time
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

from latmix_tf import workdir_lock

EXECUTORS = ("sequential", "ray")
# On CPU, members at once per core of the cluster. One TensorFlow process keeps about 1.5 of
# 2 cores busy (147% CPU over a member), so two members share two cores with little left
# idle; benchmarks/compare_throughput.py measures what that buys in members per hour.
MEMBERS_PER_CPU = 1.0
# Members hand back a metrics dict; a local Ray needs no large object store.
LOCAL_OBJECT_STORE_BYTES = 256 << 20
# Environment a member's process must share with the driver (data folder, offline mode,
# custom-data consent, TensorFlow's log level); Ray workers on other nodes start without it.
PASSED_ENV_PREFIXES = ("LATMIX_", "TF_CPP_", "TFDS_")


@dataclasses.dataclass(frozen=True)
class ExecutorConfig:
  """How members run (the flags `--executor`, `--ray_address`, `--concurrent_members`).

  name: "sequential" (in this process, one after another) or "ray" (a Ray task each).
  ray_address: a running cluster ("auto", "HOST:PORT", "ray://HOST:10001"); None starts a
    local Ray with this machine's cores, and stops it when the comparison ends.
  concurrent_members: members at once; 0 = one per GPU of the cluster where it has GPUs,
    else `MEMBERS_PER_CPU` per CPU of the cluster.
  max_retries: how often Ray reruns a member whose worker died.
  num_cpus, object_store_bytes: a local Ray's size (tests make it small).
  """
  name: str = "sequential"
  ray_address: Optional[str] = None
  concurrent_members: int = 0
  max_retries: int = 3
  num_cpus: Optional[int] = None
  object_store_bytes: int = LOCAL_OBJECT_STORE_BYTES

  def __post_init__(self):
    if self.name not in EXECUTORS:
      raise ValueError(f"--executor={self.name}: unknown executor; valid: "
                       f"{', '.join(EXECUTORS)}.")
    if self.concurrent_members < 0:
      raise ValueError(f"--concurrent_members={self.concurrent_members}: pass 0 (one per GPU, "
                       f"else per CPU core of the cluster) or a positive number.")
    if self.ray_address and self.name != "ray":
      raise ValueError("--ray_address applies to --executor=ray only; add --executor=ray.")


@dataclasses.dataclass(frozen=True)
class MemberJob:
  """One member: `fn(**kwargs, log=...)` returns its result. `fn` must be importable by
  name (a module-level function) so that a Ray worker can unpickle it."""
  key: Tuple[Any, ...]
  fn: Callable[..., Any]
  kwargs: Dict[str, Any]
  title: str = ""  # logged when the member starts


@dataclasses.dataclass(frozen=True)
class Finished:
  """A member that finished, where it ran, and the comparison's state at that moment."""
  job: MemberJob
  result: Any
  node: str
  seconds: float
  done: int
  running: int
  queued: int
  at_once: int


def run_members(jobs: Sequence[MemberJob], config: ExecutorConfig,
                log: Callable[[str], None]) -> Iterator[Finished]:
  """Runs `jobs` and yields each as it finishes (in order for "sequential"); a member that
  fails for good (its error, or Ray's after `max_retries` dead workers) raises here."""
  if not jobs:
    return
  if config.name == "sequential":
    yield from _sequential(jobs, log)
  else:
    yield from _ray(jobs, config, log)


def _sequential(jobs, log) -> Iterator[Finished]:
  host = socket.gethostname()
  for i, job in enumerate(jobs):
    if job.title:
      log(job.title)
    t0 = time.time()
    result = job.fn(**job.kwargs, log=lambda line: log(f"    {line}"))
    yield Finished(job, result, host, time.time() - t0, i + 1, 0, len(jobs) - i - 1, 1)


def _member_task(fn, kwargs, prefix):
  """What a Ray worker runs: the member, with its log lines prefixed (Ray forwards a worker's
  stdout to the driver), and the node it ran on.

  Members at once share upstream stages (Latent-Mixup's reference network is ERM seed 0's
  classifier; an ablation adopts the default recipe's generator and bank): the first builds
  such a stage under its lock, the others wait for the lock and then find the stage cached,
  exactly as they would have found it in a sequential run."""
  import ray  # pylint: disable=import-outside-toplevel
  with workdir_lock.waiting(True):
    result = fn(**kwargs, log=lambda line: print(f"{prefix}{line}", flush=True))
  return result, f"{socket.gethostname()}:{ray.get_runtime_context().get_node_id()[:8]}"


def code_root(fn: Callable) -> str:
  """The folder from which `fn`'s top-level package imports (what workers put on sys.path)."""
  top = sys.modules[fn.__module__.split(".")[0]]
  path = os.path.abspath(getattr(top, "__file__", None) or next(iter(top.__path__)))
  return os.path.dirname(os.path.dirname(path)) if path.endswith("__init__.py") else (
      os.path.dirname(path))


def worker_env(fn: Callable) -> Dict[str, str]:
  """The environment each member's worker gets: the code on PYTHONPATH, the driver's
  LATMIX_* / TF_CPP_* / TFDS_* variables."""
  env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV_PREFIXES)}
  paths = [code_root(fn)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
  env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
  return env


def members_at_once(config: ExecutorConfig, resources: Dict[str, float]) -> int:
  """`concurrent_members`, or one per GPU, or `MEMBERS_PER_CPU` per CPU of the cluster."""
  if config.concurrent_members:
    return config.concurrent_members
  if resources.get("GPU", 0) >= 1:
    return int(resources["GPU"])
  return max(1, int(resources.get("CPU", 1) * MEMBERS_PER_CPU))


def _ray(jobs, config, log) -> Iterator[Finished]:
  import ray  # pylint: disable=import-outside-toplevel
  started, running = False, {}
  if not ray.is_initialized():
    runtime_env = {"env_vars": worker_env(jobs[0].fn)}
    if config.ray_address:
      ray.init(address=config.ray_address, runtime_env=runtime_env, log_to_driver=True)
    else:
      ray.init(num_cpus=config.num_cpus or os.cpu_count(), include_dashboard=False,
               object_store_memory=config.object_store_bytes, runtime_env=runtime_env,
               log_to_driver=True)
    started = True
  try:
    resources = ray.cluster_resources()
    at_once = members_at_once(config, resources)
    gpus = 1 if resources.get("GPU", 0) >= 1 else 0
    # A member asks for one GPU where there are any, else one CPU (less when more members
    # than cores are asked for at once, so that they all run); at most `at_once` are in
    # flight, and SPREAD puts them on different nodes first.
    cpus = 1.0 if gpus else min(1.0, resources.get("CPU", 1.0) / at_once)
    task = ray.remote(_member_task).options(
        num_cpus=cpus, num_gpus=gpus, max_retries=config.max_retries, retry_exceptions=False,
        scheduling_strategy="SPREAD")
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    log(f"ray: {len(jobs)} members, {at_once} at once on {nodes} node(s) "
        f"({resources.get('CPU', 0):.0f} CPUs, {resources.get('GPU', 0):.0f} GPUs; one "
        f"{'GPU' if gpus else 'CPU'} requested per member)")
    queued, done = list(jobs), 0
    while queued or running:
      while queued and len(running) < at_once:
        job = queued.pop(0)
        prefix = f"    [{' '.join(map(str, job.key))}] "
        running[task.remote(job.fn, job.kwargs, prefix)] = (job, time.time())
        if job.title:
          log(f"{job.title} (started)")
      ready, _ = ray.wait(list(running), num_returns=1)
      job, t0 = running.pop(ready[0])
      result, node = ray.get(ready[0])
      done += 1
      yield Finished(job, result, node, time.time() - t0, done, len(running), len(queued),
                     at_once)
  finally:
    for ref in running:  # the driver stopped early (an error, Ctrl-C): stop its members
      ray.cancel(ref, force=True)
    if started:
      ray.shutdown()
