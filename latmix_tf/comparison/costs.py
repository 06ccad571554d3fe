"""What each member of a comparison cost, read back from its stage records.

Why from the records: a comparison that resumes over several days reuses most members
("cached"), so the wall time of the command that writes the report says nothing about the
members. Each stage's record (`latmix_tf.stages`) keeps the wall and CPU seconds of the
work and, since records carry it, the machine it ran on; our machines differ about 2x per
core, so a time without its CPU model cannot be compared with anything.

A stage adopted from another run (`"adopted_from"`) keeps its donor's seconds: it counts in a
method's pipeline cost (what the recipe costs), not in this member's own work.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from latmix_tf import stages
from latmix_tf.comparison.metrics import label

# The stages that make a latent-mixup member's recipe (`stages.ORDER` lists every stage).
GENERATIVE_STAGES = ("generator", "encoder", "bank")


def finished_records(workdir: str) -> Dict[str, Dict[str, Any]]:
  """{stage name: record} of a member's stages whose record says "done"."""
  records = {n: stages.read_record(os.path.join(workdir, n)) for n in stages.ORDER}
  return {n: r for n, r in records.items() if r and r.get("state") == "done"}


def finished_member(workdir: str, classifier_config: str, eval_config: str) -> bool:
  """Whether the member in `workdir` has its classifier and evaluation done under the
  recipe whose stage keys hold these config hashes (`runner.classifier_config_hash`,
  `evaluation.stage.eval_config_hash`), its evaluation scoring that classifier's SavedModel.

  A comparison reads such members back in its driver and hands every other one to its
  executor. Records of another config (a recipe changed since the member ran) make a member
  unfinished: read back in the driver, it would be trained again there, one at a time, while
  the executor waited. The data fingerprint is not checked (that needs the data): a member
  on other data is retrained where it runs."""
  done = finished_records(workdir)
  clf, ev = done.get("classifier"), done.get("evaluation")
  if not clf or not ev:
    return False
  saved_model = (clf.get("outputs") or {}).get("saved_model")
  return (clf["key"].get("config") == classifier_config
          and ev["key"].get("config") == eval_config
          and (ev["key"].get("upstream") or {}).get("saved_model") == saved_model)


def generative_seconds(workdir: str) -> float:
  """Recorded work of a latent-mixup member's generator, encoder and bank (0 if none),
  adopted stages included: the cost of the recipe, however this run got them."""
  done = finished_records(workdir)
  return float(sum(stage_seconds(done[n]) for n in GENERATIVE_STAGES if n in done))


def stage_seconds(record: Mapping[str, Any]) -> float:
  """A finished stage's wall seconds: its record's, but never less than the sum of the epoch
  history its outputs keep (a trained network's), which survives every resume.

  Why the floor: records written before the stage clock's heartbeat counted only the attempt
  that finished, so a stage resumed after a kill looked cheaper than it was (a PGD-AT
  classifier: 601 s recorded, 2140 s in its epochs)."""
  history = (record.get("outputs") or {}).get("history") or []
  epochs = sum(float(e.get("seconds") or 0.0) for e in history if isinstance(e, Mapping))
  return max(float(record.get("seconds") or 0.0), epochs)


def member_cost(workdir: str) -> Dict[str, Any]:
  """This member's own work per stage group, from the records of its finished stages.

  Returns {"generative_seconds", "classifier_seconds", "evaluation_seconds", "seconds",
  "cpu_seconds" (nan if any stage predates CPU accounting), "cpu" (the machines' models,
  "not recorded" for records without one), "adopted" (stage names)}.
  """
  done = finished_records(workdir)
  own = {n: r for n, r in done.items() if "adopted_from" not in r}

  def seconds(names: Sequence[str]) -> float:
    return float(sum(stage_seconds(own[n]) for n in names if n in own))
  cpu = [r.get("cpu_seconds") for r in own.values()]
  models = sorted({(r.get("host") or {}).get("cpu") or "not recorded" for r in own.values()})
  return {"generative_seconds": seconds(GENERATIVE_STAGES + ("frechet",)),
          "classifier_seconds": seconds(("classifier",)),
          "evaluation_seconds": seconds(("evaluation",)),
          "seconds": seconds(tuple(own)),
          "cpu_seconds": float(sum(cpu)) if cpu and None not in cpu else math.nan,
          "cpu": ", ".join(models) if models else "not recorded",
          "adopted": sorted(set(done) - set(own))}


def method_seconds(costs: Sequence[Mapping[str, Any]]) -> Dict[str, List[float]]:
  """{method: recorded seconds of each of its finished members}, members without a recorded
  cost left out."""
  seconds: Dict[str, List[float]] = {}
  for c in costs:
    if c.get("seconds", 0) > 0:
      seconds.setdefault(c["method"], []).append(float(c["seconds"]))
  return seconds


def remaining_seconds(costs: Sequence[Mapping[str, Any]], pending: Sequence[str]
                      ) -> Optional[float]:
  """Estimated member work still to do: each pending member (a method name) at the mean
  recorded cost of the finished members of its method, or of all finished members when none
  of its method has finished; None before any member has a recorded cost.

  Why: a full comparison runs for many hours over several sessions; the recorded costs of
  what finished (on this machine, under this load) are the best guide to what is left."""
  seconds = method_seconds(costs)
  if not seconds:
    return None
  every = [v for vs in seconds.values() for v in vs]
  return float(sum(_mean(seconds.get(m, every)) for m in pending))


def start_order(members: Sequence[Tuple[int, str]], finished: Sequence[bool],
                costs: Sequence[Mapping[str, Any]]) -> List[int]:
  """The order in which a comparison starts its members, as indices into `members`
  ((seed, method) pairs in plan order).

  Finished members come first, in plan order (they are only read back). The others go seed
  by seed, so that a partial run holds a full comparison at its first seeds; within a seed
  the longest go first, by their method's mean recorded cost in `costs`, and methods with
  none before them. Why longest first: with several members at once, a long member started
  last runs alone while the others' slots stay idle (a TRADES member costs several ERM
  members); started first, it overlaps the short ones."""
  seconds = {m: _mean(vs) for m, vs in method_seconds(costs).items()}

  def key(k: int):
    seed, method = members[k]
    if finished[k]:
      return (0, 0, 0.0)
    return (1, seed, -seconds.get(method, math.inf))
  return sorted(range(len(members)), key=key)


def _mean(values: Sequence[float]) -> float:
  return sum(values) / len(values)


def _s(v: float) -> str:
  return f"{v:.0f}" if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def _minutes(values: Sequence[float]) -> str:
  return ", ".join(f"{v / 60:.1f}" for v in values)


def method_summary(costs: Sequence[Mapping[str, Any]]) -> List[str]:
  """Markdown lines: one row per method (in order of appearance) with each seed's member wall
  in minutes, the mean split into generative / classifier / evaluation, and the CPU models.

  Why a second table: the per-member one is the record; this is the line a reader quotes
  (the README copies it verbatim, and a test checks that it still matches)."""
  by_method: Dict[str, List[Mapping[str, Any]]] = {}
  for c in costs:
    by_method.setdefault(c["method"], []).append(c)
  lines = ["| method | seeds | member wall per seed (min) | of it generative / classifier / "
           "evaluation (min, mean) | CPU model |", "|---|---|---|---|---|"]
  for method, rows in by_method.items():
    rows = sorted(rows, key=lambda c: c["seed"])
    mean = lambda k: sum(c[k] for c in rows) / len(rows) / 60  # noqa: E731
    models = "; ".join(sorted({c["cpu"] for c in rows}))
    lines.append(f"| {label(method)} | {', '.join(str(c['seed']) for c in rows)} | "
                 f"{_minutes([c['seconds'] for c in rows])} | "
                 f"{mean('generative_seconds'):.1f} / {mean('classifier_seconds'):.1f} / "
                 f"{mean('evaluation_seconds'):.1f} | {models} |")
  return lines


def cost_table(costs: Sequence[Mapping[str, Any]]) -> List[str]:
  """Markdown lines: the per-method summary, one row per member (method, seed, stage
  seconds, CPU), then the total."""
  if not costs:
    return []
  lines = ["Per method, in minutes of wall time:", ""] + method_summary(costs)
  lines += ["", "Wall seconds of each member's own stages as recorded when they ran (a cached "
            "stage keeps its original time and machine; a stage adopted from another run "
            "counts there, not here). CPU s: the process's CPU seconds over the same stages, "
            "which a machine shared with other work inflates least. Generative = generator, "
            "encoder, latent bank and the Fréchet distance.", "",
            "| method | seed | generative (s) | classifier (s) | evaluation (s) | member (s) | "
            "CPU (s) | CPU model |", "|---|---|---|---|---|---|---|---|"]
  for c in costs:
    adopted = f" (adopted: {', '.join(c['adopted'])})" if c.get("adopted") else ""
    lines.append(f"| {label(c['method'])} | {c['seed']} | {_s(c['generative_seconds'])} | "
                 f"{_s(c['classifier_seconds'])} | {_s(c['evaluation_seconds'])} | "
                 f"{_s(c['seconds'])} | {_s(c['cpu_seconds'])} | {c['cpu']}{adopted} |")
  total = sum(c["seconds"] for c in costs)
  lines += ["", f"All {len(costs)} members: {total:.0f} s of member wall time "
                f"({total / 3600:.1f} h)."]
  return lines
