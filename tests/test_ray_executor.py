"""Comparison members on Ray give exactly what a sequential run gives.

Why: `--executor=ray` runs each member as a Ray task in a process of its own, possibly on
another machine. Nothing about a member's result may depend on that: these tests run a smoke
`compare_fmnist` (ERM and mixup, seeds 0 and 1) sequentially once, then
  * on a local Ray (2 CPUs, a small object store): the same CSV and SavedModel probe logits;
  * on a local Ray with one member's worker SIGKILLed mid-stage: Ray retries the member, it
    resumes from its stage records, the CSV is the same, and a rerun reads every member back;
  * on a two-node cluster (Ray's own `ray.cluster_utils.Cluster`, both nodes on this machine):
    members land on both nodes, and a Latent-Mixup member's latent bank is the same arrays.
Timing columns (`*_seconds`) are left out of the comparison: wall time differs between any
two runs. Every Ray instance is shut down in the test that starts it, and the last test checks
that no Ray process outlived its test.
"""

import csv
import dataclasses
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

import experiments
from experiments import compare
from experiments.common import RunContext
from latmix_tf import cli, cli_checks, export, stages, workdir_lock
from latmix_tf.config import config_hash
from latmix_tf.comparison import executors
from latmix_tf.comparison.executors import ExecutorConfig

METHODS, SEEDS = ("erm", "mixup"), (0, 1)
STORE = 100 << 20  # Ray's smallest object store is 75 MiB; members return a metrics dict
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One xdist worker runs this whole file (`pytest -n 2 --dist loadgroup`): the sequential
# reference run is a module fixture, built once instead of once per worker.
pytestmark = pytest.mark.xdist_group("ray_executor")


def _compare(root, data_dir, executor=None, methods=METHODS, seeds=SEEDS, log=None, name="c"):
  exp = experiments.get("compare_fmnist")
  cfg = dataclasses.replace(exp.get_config(scale="smoke", data_dir=data_dir), executor=executor)
  ctx = RunContext(workdir=os.path.join(root, name), export_root=os.path.join(root, "sm"),
                   log=log or (lambda line: None), methods=methods, seeds=seeds,
                   root=os.path.join(root, "runs"))
  return exp.run(cfg, ctx)


def _csv(out):
  """results.csv without its wall-time rows."""
  with open(out["results_csv"]) as f:
    return [r for r in csv.DictReader(f) if not r["metric"].endswith("_seconds")]


def _probe(root, method, seed):
  return export.read_metadata(os.path.join(root, "sm", f"{method}_fmnist-smoke",
                                           f"seed_{seed}"))["probe"]["logits"]


def _bank(root, seed=0):
  path = os.path.join(root, "runs", "latent_mixup_fmnist", "smoke", f"seed_{seed}", "bank",
                      "bank.npz")
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


def _descendants():
  """Processes below this one (Ray's GCS, raylets and workers are its children)."""
  parent = {}
  for stat in glob.glob("/proc/[0-9]*/stat"):
    try:
      with open(stat) as f:
        fields = f.read().rsplit(")", 1)[1].split()
      parent[int(stat.split("/")[2])] = int(fields[1])
    except (OSError, IndexError, ValueError):
      continue
  out, frontier = set(), {os.getpid()}
  while frontier:
    frontier = {p for p, pp in parent.items() if pp in frontier} - out
    out |= frontier
  return out


@pytest.fixture(scope="module")
def reference(tiny_data_dir, tmp_path_factory):
  """The sequential run every Ray run is compared with (and the children before Ray)."""
  root = str(tmp_path_factory.mktemp("sequential"))
  out = _compare(root, tiny_data_dir)
  lm = _compare(root, tiny_data_dir, methods=("latent_mixup",), seeds=(0,), name="lm")
  return {"root": root, "csv": _csv(out), "children": _descendants(),
          "runs": {**out["runs"], **lm["runs"]}}


def _metrics(runs, method, seed):
  return {k: v for k, v in runs[method][seed].items() if "seconds" not in k}


def test_flags_are_checked_before_any_work(tmp_path):
  with pytest.raises(cli_checks.UsageError, match="--ray_address applies to --executor=ray"):
    cli_checks.check_executor("compare_fmnist", "sequential", "auto", 0)
  with pytest.raises(cli_checks.UsageError, match="compare_\\* and ablation_\\* experiments only"):
    cli_checks.check_executor("erm_fmnist", "ray")
  with pytest.raises(cli_checks.UsageError, match="--concurrent_members=-1"):
    cli_checks.check_executor("ablation_fmnist", "ray", None, -1)
  cli_checks.check_executor("ablation_fmnist", "ray", "10.0.0.1:6379", 4)
  # One per GPU where the cluster has GPUs, else one per CPU; a flag value wins.
  assert executors.members_at_once(ExecutorConfig("ray"), {"CPU": 16.0, "GPU": 4.0}) == 4
  assert executors.members_at_once(ExecutorConfig("ray"), {"CPU": 2.0}) == 2
  assert executors.members_at_once(ExecutorConfig("ray", concurrent_members=3), {"CPU": 2.0}) == 3
  # Workers import the members' code from where this process does.
  assert executors.code_root(compare.run_member) == ROOT
  # A member Ray retries must resume, not rebuild again: --rebuild stays sequential.
  exp = experiments.get("compare_fmnist")
  cfg = dataclasses.replace(exp.get_config(scale="smoke"), executor=ExecutorConfig("ray"))
  with pytest.raises(ValueError, match="--rebuild=classifier with --executor=ray"):
    exp.run(cfg, RunContext(workdir=str(tmp_path / "c"), export_root=str(tmp_path / "sm"),
                            rebuild=("classifier",), log=lambda line: None))
  assert not os.listdir(tmp_path)


def test_local_ray_gives_the_sequential_csv_and_probe_logits(reference, tiny_data_dir, tmp_path):
  logs = []
  out = _compare(str(tmp_path), tiny_data_dir, ExecutorConfig("ray", num_cpus=2,
                                                              object_store_bytes=STORE),
                 log=logs.append)
  assert _csv(out) == reference["csv"]
  for method in METHODS:
    for seed in SEEDS:
      assert _probe(str(tmp_path), method, seed) == _probe(reference["root"], method, seed)
  text = "\n".join(logs)
  assert "ray: 4 members, 2 at once on 1 node(s)" in text
  assert "queued, 1 running, 3 done: ~" in text  # progress from the recorded costs
  assert text.count("classifier built, evaluation built") == 4


def test_killed_worker_is_retried_resumes_and_a_rerun_skips_everything(
    reference, tiny_data_dir, tmp_path):
  runs = tmp_path / "runs"
  killed, stop = [], threading.Event()

  def kill_one_member_mid_stage():
    # SIGKILL the process building a member's classifier; the kill counts once the record
    # still says "building" afterwards (the stage did not finish before the signal landed).
    tried = set()
    while not stop.is_set() and not killed:
      for folder in sorted(glob.glob(str(runs / "*" / "smoke" / "seed_*" / "classifier"))):
        record, info = stages.read_record(folder), workdir_lock.holder(folder)
        if folder in tried or not record or record.get("state") != "building" or not info:
          continue
        tried.add(folder)
        os.kill(info["pid"], signal.SIGKILL)
        if (stages.read_record(folder) or {}).get("state") == "building":
          killed.append(folder)
          break
      stop.wait(0.05)

  killer = threading.Thread(target=kill_one_member_mid_stage, daemon=True)
  killer.start()
  try:
    out = _compare(str(tmp_path), tiny_data_dir,
                   ExecutorConfig("ray", num_cpus=2, object_store_bytes=STORE))
  finally:
    stop.set()
    killer.join()
  assert killed, "no member was killed mid-stage"
  assert stages.read_record(killed[0])["status"] == "resumed"  # from its checkpoints
  assert _csv(out) == reference["csv"]
  logs = []  # the same command again: every member is read back, nothing is trained
  out = _compare(str(tmp_path), tiny_data_dir,
                 ExecutorConfig("ray", num_cpus=2, object_store_bytes=STORE), log=logs.append)
  assert "\n".join(logs).count(": classifier cached, evaluation cached (") == 4
  assert _csv(out) == reference["csv"]


def test_a_member_finished_under_another_recipe_goes_to_the_executor(reference, tiny_data_dir,
                                                                    tmp_path):
  """The driver reads back only members finished under their current recipe. One whose
  records hold another config is trained again on Ray, like any unfinished member, not in
  the driver (where it would hold up the members queued behind it)."""
  for part in ("runs", "sm"):  # the finished members, their records naming the copies
    shutil.copytree(os.path.join(reference["root"], part), tmp_path / part)
  for path in glob.glob(str(tmp_path / "runs" / "**" / stages.RECORD_FILE), recursive=True):
    with open(path) as f:
      text = f.read().replace(reference["root"], str(tmp_path))
    with open(path, "w") as f:
      f.write(text)
  folder = tmp_path / "runs" / "mixup_fmnist" / "smoke" / "seed_1" / "classifier"
  record = json.loads((folder / stages.RECORD_FILE).read_text())
  record["key"]["config"] = "0" * 16  # as if the recipe had changed since the member ran
  record["key_hash"] = config_hash(record["key"])
  (folder / stages.RECORD_FILE).write_text(json.dumps(record))
  logs = []
  out = _compare(str(tmp_path), tiny_data_dir,
                 ExecutorConfig("ray", num_cpus=2, object_store_bytes=STORE), log=logs.append)
  text = "\n".join(logs)
  assert text.count(": classifier cached, evaluation cached (") == 3  # read back here
  assert "ray: 1 members, " in text
  # The line after the read-back gives the work left, not a concurrency Ray has not set yet.
  left = [l for l in logs if "1 member left" in l]
  assert left and "at once" not in left[0]
  assert re.search(r"mixup seed 1: classifier built, evaluation \w+ \(\d+s on [^ ]+:", text)
  assert _csv(out) == reference["csv"]


def test_a_second_driver_on_the_workdir_is_refused(tiny_data_dir, tmp_path, capsys):
  workdir = tmp_path / "compare_fmnist" / "smoke" / "seed_0"
  workdir.mkdir(parents=True)
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from latmix_tf import workdir_lock\n"
       "with workdir_lock.hold(sys.argv[1]):\n  print('held', flush=True); time.sleep(600)",
       str(workdir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    code = cli.run_experiment(experiments.get("compare_fmnist"), "smoke", 0, tiny_data_dir,
                              str(tmp_path), str(tmp_path / "sm"), (), ["erm"], ["0"],
                              "default", lambda line: None, executor="ray")
  finally:
    holder.kill()
    holder.wait()
  assert code == 2 and f"pid {holder.pid}" in capsys.readouterr().err
  assert not (tmp_path / "erm_fmnist").exists()  # refused before any member started


def test_members_land_on_both_nodes_of_a_two_node_cluster(reference, tiny_data_dir, tmp_path):
  from ray.cluster_utils import Cluster  # pylint: disable=import-outside-toplevel
  cluster = Cluster(initialize_head=True, head_node_args={
      "num_cpus": 1, "object_store_memory": STORE, "include_dashboard": False})
  try:
    cluster.add_node(num_cpus=1, object_store_memory=STORE)
    out = _compare(str(tmp_path), tiny_data_dir, ExecutorConfig("ray", cluster.address),
                   methods=("erm", "latent_mixup"), seeds=(0,))
  finally:
    cluster.shutdown()
  nodes = {out["nodes"]["erm"][0], out["nodes"]["latent_mixup"][0]}
  assert len(nodes) == 2, nodes
  for method in ("erm", "latent_mixup"):
    assert _probe(str(tmp_path), method, 0) == _probe(reference["root"], method, 0)
  ours, theirs = _bank(str(tmp_path)), _bank(reference["root"])
  assert ours.keys() == theirs.keys()
  for k in ours:
    np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
  for method in ("erm", "latent_mixup"):
    assert _metrics(out["runs"], method, 0) == _metrics(reference["runs"], method, 0)


def test_no_ray_process_outlives_its_test(reference):
  assert _descendants() <= reference["children"]
