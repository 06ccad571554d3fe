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

  python benchmarks/compare_throughput.py [--scale=quick|smoke] [--data_dir=DIR]
At quick scale (four members of a few minutes each on 2 cores, twice) it takes about 25 min on
an idle 2-core machine and writes benchmarks/results/compare_throughput.{json,md}; at smoke
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
sys.path.insert(0, ROOT)
from latmix_tf import hardware  # pylint: disable=wrong-import-position
from latmix_tf.comparison import costs  # pylint: disable=wrong-import-position

RESULTS = os.path.join(ROOT, "benchmarks", "results")
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


def markdown(result):
  seq, ray = result["sequential"], result["ray"]
  lines = [
      "# Comparison throughput: sequential vs Ray (2 members at once)", "",
      f"`python benchmarks/compare_throughput.py --scale={result['scale']}` on "
      f"{result['cpu']['model']} ({result['cpu']['cores']} cores).", "",
      "| executor | members | wall (s) | members per hour | load (1 min, start / end) |",
      "|---|---|---|---|---|"]
  for name, r in (("sequential", seq), (f"ray, {AT_ONCE} at once", ray)):
    lines.append(f"| {name} | {r['members']} | {r['wall_s']:.0f} | "
                 f"{r['members_per_hour']:.1f} | {r['load_1min'][0]:.2f} / "
                 f"{r['load_1min'][1]:.2f} |")
  lines += ["", f"Ray / sequential: **{result['speedup']:.2f}x** members per hour (target "
            f">= {TARGET}x: {'met' if result['speedup'] >= TARGET else 'not met'}). Results "
            f"identical (results.csv without wall-time rows, every member's metrics, SavedModel "
            f"probe logits): **{'yes' if result['identical'] else 'NO'}**.", "",
            "Where the time went (the members' stage records, summed over members; a stage "
            "run beside another member takes longer in wall time for the same work):", "",
            "| executor | wall × members at once (s) | stage wall (s): classifier / evaluation "
            "/ all | stage CPU (s) | outside stages (s) |", "|---|---|---|---|---|"]
  for name, r, slots in (("sequential", seq, 1), (f"ray, {AT_ONCE} at once", ray, AT_ONCE)):
    st = r["stages"]
    lines.append(f"| {name} | {slots * r['wall_s']:.0f} | {st['classifier_seconds']:.0f} / "
                 f"{st['evaluation_seconds']:.0f} / {st['seconds']:.0f} | "
                 f"{st['cpu_seconds']:.0f} | {slots * r['wall_s'] - st['seconds']:.0f} |")
  lines += ["", "Commands (each run in a fresh workdir):", ""]
  lines += [f"    python {r['command']}" for r in (seq, ray)]
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--scale", choices=("quick", "smoke"), default="quick")
  parser.add_argument("--data_dir", default=None, help="Data folder (default: main.py's).")
  parser.add_argument("--workdir", default=None, help="Where both runs go (default: a temp "
                      "folder, removed afterwards).")
  args = parser.parse_args()
  base = args.workdir or tempfile.mkdtemp(prefix="compare_throughput-")
  try:
    result = {"scale": args.scale, "cpu": hardware.describe(), "at_once": AT_ONCE,
              "sequential": run(args.scale, args.data_dir, base, "sequential"),
              "ray": run(args.scale, args.data_dir, base, "ray")}
  finally:
    if not args.workdir:
      shutil.rmtree(base, ignore_errors=True)
  result["speedup"] = result["ray"]["members_per_hour"] / result["sequential"]["members_per_hour"]
  result["identical"] = result["ray"].pop("identical") == result["sequential"].pop("identical")
  text = markdown(result)
  print(text)
  if args.scale == "quick":
    with open(os.path.join(RESULTS, "compare_throughput.json"), "w") as f:
      json.dump(result, f, indent=2)
    with open(os.path.join(RESULTS, "compare_throughput.md"), "w") as f:
      f.write(text)
  elif args.workdir:
    with open(os.path.join(base, "throughput.json"), "w") as f:
      json.dump(result, f, indent=2)
  return 0 if result["identical"] else 1


if __name__ == "__main__":
  sys.exit(main())
