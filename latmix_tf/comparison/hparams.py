"""A comparison as a TensorBoard HParams experiment: one trial per config, one run per seed.

Why: the HParams dashboard lets a reader sort and filter methods by any metric and see the
seed-to-seed spread, which a static table cannot. Each method is one trial, identified by
its config hash (the hash of its hyperparameters, seed excluded), and each seed of it is a
run (session) in that trial, so TensorBoard aggregates the seeds of a method. The files are
written with tensorboard's own protos and event writer - no TensorFlow - like the rest of
the comparison report, so they can be rebuilt on any machine:

  tensorboard --logdir <comparison dir>/tensorboard      # then open the HPARAMS tab
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from typing import Any, Dict, Mapping, Optional

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.summary.writer.event_file_writer import EventFileWriter

DIR = "tensorboard"


def trial_hash(hparams: Mapping[str, Any]) -> str:
  """16 hex characters of the SHA-256 of the canonical JSON of a trial's hyperparameters."""
  text = json.dumps(dict(hparams), sort_keys=True, default=str)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _numeric(metrics: Mapping[str, Any]) -> Dict[str, float]:
  return {k: float(v) for k, v in metrics.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _write(logdir: str, summaries) -> None:
  os.makedirs(logdir, exist_ok=True)
  writer = EventFileWriter(logdir)
  for step, summary in summaries:
    writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
  writer.close()


def export_hparams(out_dir: str, runs: Mapping[str, Mapping], hparams: Optional[
    Mapping[str, Mapping[str, Any]]] = None) -> str:
  """Writes `out_dir/tensorboard/`: the experiment config and one run per (method, seed).

  Args:
    out_dir: the comparison folder.
    runs: {method: {seed: metrics}} as given to the comparison report.
    hparams: optional {method: {name: value}} beyond the method name (e.g. alpha).
  Returns:
    The log directory to point TensorBoard at.
  """
  logdir = os.path.join(out_dir, DIR)
  hparams = {m: {"method": m, **dict((hparams or {}).get(m, {}))} for m in runs}
  metric_keys = sorted({k for per in runs.values() for met in per.values()
                        for k in _numeric(met)})
  domains: Dict[str, set] = {}
  for values in hparams.values():
    for k, v in values.items():
      domains.setdefault(k, set()).add(v)
  infos = []
  for name, values in sorted(domains.items()):
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if all(isinstance(v, str) for v in values) or (numeric and len(values) == 1):
      infos.append(hp.HParam(name, hp.Discrete(sorted(values))))
    elif numeric:
      infos.append(hp.HParam(name, hp.RealInterval(float(min(values)), float(max(values)))))
    else:
      infos.append(hp.HParam(name))
  config = hp.hparams_config_pb(infos, [hp.Metric(k) for k in metric_keys])
  _write(logdir, [(0, config)])
  for method, per_seed in runs.items():
    trial = trial_hash(hparams[method])
    for seed, metrics in sorted(per_seed.items(), key=lambda kv: int(kv[0])):
      values = _numeric(metrics)
      scalars = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=v)
                                           for k, v in sorted(values.items())])
      _write(os.path.join(logdir, f"{method}-{trial}", f"seed_{seed}"),
             [(0, hp.hparams_pb(hparams[method], trial_id=trial)), (0, scalars)])
  return logdir
