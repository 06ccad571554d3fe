"""Members per hour of a comparison: `--executor=sequential` vs `--executor=ray`, 2 at once.

Why: one TensorFlow process keeps about 1.5 of 2 cores busy, so two members at once should
finish more members per hour on the same machine; this measures how many more, and checks
that the results do not move. Target: at least 1.25x the members per hour of the
sequential run, with identical metrics.

Both runs are the real command line (`main.py --experiment=compare_fmnist`), one after the
other in this one invocation, each in a fresh workdir and export folder, so every member is
trained and evaluated from scratch:
  sequential: ... --methods=erm,mixup --seeds=0,1
  ray:        ... --methods=erm,mixup --seeds=0,1 --executor=ray --concurrent_members=2
Identical means: results.csv without its wall-time rows, each member's metrics.json without
its `*_seconds` entries, and each SavedModel's recorded probe logits. Where the time went
comes from the members' stage records: stage wall and CPU seconds summed over members, and
what the run's wall time (times the members at once) spent outside any stage.

The pair is repeated (`--repeats`, default 3, sequential and Ray alternating) because one
pair scatters: the ratio is reported per pair and pooled (all members over all wall time of
each executor), and the target is judged on the pooled ratio, with the range beside it.

  python benchmarks/compare_throughput.py [--scale=quick|smoke] [--repeats=N] [--data_dir=DIR]
At quick scale (four members of a few minutes each on 2 cores, twice per pair) it takes about
25 min per pair on an idle 2-core machine and writes
benchmarks/results/compare_throughput.{json,md}; at smoke
scale (a check of the script itself, a few minutes) it writes nothing there, only its
workdir's throughput.json. Run it on a quiet machine: the load average is recorded beside the
figures.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from _common import write_json, write_results  # pylint: disable=wrong-import-position
from latmix_tf import hardware  # pylint: disable=wrong-import-position
from latmix_tf.comparison import costs  # pylint: disable=wrong-import-position

METHODS, SEEDS, AT_ONCE, TARGET = "erm,mixup", "0,1", 2, 1.25


def command(scale, data_dir, workdir, export_dir, executor):
  cmd = [sys.executable, os.path.join(ROOT, "main.py"), "--experiment=compare_fmnist",
         f"--scale={scale}", f"--methods={METHODS}", f"--seeds={SEEDS}", f"--workdir={workdir}",
         f"--export_dir={export_dir}", "--results_dir="]
  if data_dir:
    cmd.append(f"--data_dir={data_dir}")
  if executor == "ray":
    cmd += ["--executor=ray", f"--concurrent_members={AT_ONCE}"]
  return cmd


def run(scale, data_dir, base, executor):
  """Runs the comparison; returns its wall seconds, load and what must be identical."""
  workdir, export_dir = os.path.join(base, executor, "runs"), os.path.join(base, executor, "sm")
  cmd = command(scale, data_dir, workdir, export_dir, executor)
  print(" ".join(cmd), flush=True)
  load0, t0 = os.getloadavg()[0], time.perf_counter()
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  wall = time.perf_counter() - t0
  if proc.returncode:
    sys.exit(f"error: {executor} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
  members = len(METHODS.split(",")) * len(SEEDS.split(","))
  shown = ["main.py"] + [a.replace(base, "$WORKDIR") for a in cmd[2:]]
  return {"command": " ".join(shown), "wall_s": wall, "members": members,
          "members_per_hour": members * 3600 / wall, "load_1min": [load0, os.getloadavg()[0]],
          "stages": stage_time(workdir, scale),
          "identical": identical_part(workdir, export_dir, scale)}


def stage_time(workdir, scale):
  """Where the wall time went: the members' stage seconds (wall and CPU) summed by stage
  group, from their stage records (`comparison.costs.member_cost`)."""
  total = {"classifier_seconds": 0.0, "evaluation_seconds": 0.0, "seconds": 0.0,
           "cpu_seconds": 0.0}
  members = [d for m in METHODS.split(",")
             for d in sorted(glob.glob(os.path.join(workdir, f"{m}_fmnist", scale, "seed_*")))]
  for member in members:
    cost = costs.member_cost(member)
    for key in total:
      total[key] += cost[key]
  return total


def identical_part(workdir, export_dir, scale):
  with open(os.path.join(workdir, "compare_fmnist", scale, "seed_0", "results.csv")) as f:
    rows = [r for r in csv.DictReader(f) if not r["metric"].endswith("_seconds")]
  metrics, probes = {}, {}
  for path in sorted(glob.glob(os.path.join(workdir, "*_fmnist", scale, "seed_*",
                                            "metrics.json"))):
    member = os.path.relpath(os.path.dirname(path), workdir)
    with open(path) as f:
      metrics[member] = {k: v for k, v in json.load(f).items()
                         if "seconds" not in k and k != "stages"}
  for path in sorted(glob.glob(os.path.join(export_dir, "*", "seed_*", "metadata.json"))):
    with open(path) as f:
      probes[os.path.relpath(os.path.dirname(path), export_dir)] = json.load(f)["probe"]
  return {"csv": rows, "metrics": metrics, "probes": probes}


def pooled(pairs, executor):
  """Members per hour over every pair of one executor: all members over all wall time."""
  return (sum(p[executor]["members"] for p in pairs) * 3600
          / sum(p[executor]["wall_s"] for p in pairs))


def markdown(result):
  pairs, at_once = result["pairs"], f"ray, {AT_ONCE} at once"
  ratios = [p["speedup"] for p in pairs]
  lines = [
      "# Comparison throughput: sequential vs Ray (2 members at once)", "",
      f"`python benchmarks/compare_throughput.py --scale={result['scale']} "
      f"--repeats={len(pairs)}` on {result['cpu']['model']} ({result['cpu']['cores']} cores): "
      f"{len(pairs)} pairs of runs, sequential then Ray, each in a fresh workdir.", "",
      "| pair | executor | members | wall (s) | members per hour | load (1 min, start / end) "
      "| Ray / sequential |", "|---|---|---|---|---|---|---|"]
  for i, p in enumerate(pairs, 1):
    for name, r, ratio in (("sequential", p["sequential"], ""),
                           (at_once, p["ray"], f"{p['speedup']:.2f}x")):
      lines.append(f"| {i} | {name} | {r['members']} | {r['wall_s']:.0f} | "
                   f"{r['members_per_hour']:.1f} | {r['load_1min'][0]:.2f} / "
                   f"{r['load_1min'][1]:.2f} | {ratio} |")
  lines += ["", f"Ray / sequential, pooled over the {len(pairs)} pairs: "
            f"**{result['speedup']:.2f}x** members per hour (pairs: "
            f"{min(ratios):.2f}x to {max(ratios):.2f}x; target >= {TARGET}x on the pooled "
            f"ratio: {'met' if result['speedup'] >= TARGET else 'not met'}, in "
            f"{sum(r >= TARGET for r in ratios)} of {len(pairs)} pairs). Results identical in "
            f"every pair (results.csv without wall-time rows, every member's metrics, "
            f"SavedModel probe logits): **{'yes' if result['identical'] else 'NO'}**.", "",
            "Where the time went (the members' stage records, summed over members and pairs; "
            "a stage run beside another member takes longer in wall time for the same work):",
            "", "| executor | wall × members at once (s) | stage wall (s): classifier / "
            "evaluation / all | stage CPU (s) | outside stages (s) |", "|---|---|---|---|---|"]
  for name, key, slots in (("sequential", "sequential", 1), (at_once, "ray", AT_ONCE)):
    wall = slots * sum(p[key]["wall_s"] for p in pairs)
    st = {k: sum(p[key]["stages"][k] for p in pairs) for k in pairs[0][key]["stages"]}
    lines.append(f"| {name} | {wall:.0f} | {st['classifier_seconds']:.0f} / "
                 f"{st['evaluation_seconds']:.0f} / {st['seconds']:.0f} | "
                 f"{st['cpu_seconds']:.0f} | {wall - st['seconds']:.0f} |")
  lines += ["", "Commands (each run in a fresh workdir):", ""]
  lines += [f"    python {pairs[0][k]['command']}" for k in ("sequential", "ray")]
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--scale", choices=("quick", "smoke"), default="quick")
  parser.add_argument("--data_dir", default=None, help="Data folder (default: main.py's).")
  parser.add_argument("--workdir", default=None, help="Where both runs go (default: a temp "
                      "folder, removed afterwards).")
  parser.add_argument("--repeats", type=int, default=3, help="Pairs of runs (sequential, "
                      "then Ray); the ratio is pooled over them.")
  args = parser.parse_args()
  if args.repeats < 1:
    parser.error(f"--repeats must be at least 1, got {args.repeats}.")
  base = args.workdir or tempfile.mkdtemp(prefix="compare_throughput-")
  pairs, reference = [], None
  try:
    for i in range(args.repeats):
      pair_dir = os.path.join(base, f"pair_{i}")
      pair = {k: run(args.scale, args.data_dir, pair_dir, k) for k in ("sequential", "ray")}
      pair["speedup"] = pair["ray"]["members_per_hour"] / pair["sequential"]["members_per_hour"]
      parts = [pair["sequential"].pop("identical"), pair["ray"].pop("identical")]
      reference = reference or parts[0]
      pair["identical"] = all(part == reference for part in parts)
      pairs.append(pair)
      print(f"pair {i + 1}/{args.repeats}: {pair['speedup']:.2f}x", flush=True)
  finally:
    if not args.workdir:
      shutil.rmtree(base, ignore_errors=True)
  result = {"scale": args.scale, "cpu": hardware.describe(), "at_once": AT_ONCE,
            "pairs": pairs, "speedup": pooled(pairs, "ray") / pooled(pairs, "sequential"),
            "identical": all(p["identical"] for p in pairs)}
  text = markdown(result)
  print(text)
  if args.scale == "quick":
    write_results("compare_throughput", result, text)
  elif args.workdir:
    write_json(os.path.join(base, "throughput.json"), result)
  return 0 if result["identical"] else 1


if __name__ == "__main__":
  sys.exit(main())
