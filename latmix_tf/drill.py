"""Fault drill: SIGKILL a real run in each of its stages, resume it, compare with a clean run.

Why: researchers on shared clusters get pre-empted. This shows, on their machine and with the
public command line only (`python main.py --experiment=...` in a subprocess, nothing
imported from the run), that resuming after a kill gives the same artifacts as a run that was
never interrupted.

How: an uninterrupted reference run is watched from outside (the filesystem is polled every
20 ms) to learn each stage's window: a stage starts when its folder appears and ends when its
`stage.json` says "done"; the export window is the life of the `<export_dir>.partial` folder.
Then, for each stage, a fresh run is started, killed (SIGKILL, whole process group) at a
random moment inside that stage's window, rerun to completion with the same command, and its
artifacts are compared with the reference's (`artifacts`). Kill moments are drawn from
`kill_seed`, so a drill is repeatable; the stage actually running at the kill is reported (a
stage shorter than one poll may already be over).

No TensorFlow is imported here: the drill is a supervisor of other processes.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from latmix_tf import jsonio
from latmix_tf.stages import RECORD_FILE

POLL = 0.02


def artifacts(workdir: str, export_root: str) -> Dict[str, str]:
  """What must not change when a run is killed and resumed, as short digests.

  The one place that knows where artifacts live (adapt it when the layout changes):
  final metrics (`<workdir>/metrics.json`, minus wall-clock timings and the stage statuses,
  which say how a result was obtained), the latent bank arrays (any `bank.npz` under the
  workdir) and the logits every SavedModel gave on the probe images at export
  (`metadata.json["probe"]`). The SavedModel's files are not compared byte for byte: TF's
  checkpoint bytes differ between two exports of the same weights.
  """
  def digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()[:12]

  out = {}
  metrics = jsonio.read_json(os.path.join(workdir, "metrics.json"))
  if isinstance(metrics, dict):
    kept = {k: v for k, v in metrics.items()
            if "second" not in k and "time" not in k and k != "stages"}
    out["metrics"] = digest(json.dumps(kept, sort_keys=True, default=str).encode())
  for path in sorted(glob.glob(os.path.join(workdir, "**", "bank.npz"), recursive=True)):
    with np.load(path) as z:
      out["bank"] = digest(b"".join(np.ascontiguousarray(z[k]).tobytes() for k in sorted(z)))
  probes = [(jsonio.read_json(p) or {}).get("probe") for p in
            sorted(glob.glob(os.path.join(export_root, "**", "metadata.json"), recursive=True))]
  if any(probes):
    out["probe_logits"] = digest(json.dumps([p and p["logits"] for p in probes]).encode())
  return out


def _stage_states(workdir: str, export_root: str) -> Dict[str, str]:
  """{stage: "running" | "done"} now, from the stage folders and the export's .partial folder."""
  states = {}
  for folder in glob.glob(os.path.join(workdir, "*", "")):
    name = os.path.basename(os.path.dirname(folder))
    record = jsonio.read_json(os.path.join(folder, RECORD_FILE))
    if record is not None or os.path.isdir(folder):
      states[name] = "done" if isinstance(record, dict) and record.get("state") == "done" \
          else "running"
  for pb in glob.glob(os.path.join(export_root, "**", "saved_model.pb"), recursive=True):
    folder = os.path.relpath(os.path.dirname(pb), export_root)
    if folder.endswith(".partial"):
      states[f"export {folder[:-len('.partial')]}"] = "running"
    else:
      states.setdefault(f"export {folder}", "done")
  for folder in glob.glob(os.path.join(export_root, "**", "*.partial"), recursive=True):
    states[f"export {os.path.relpath(folder, export_root)[:-len('.partial')]}"] = "running"
  return states


def _start(cmd: Sequence[str], log_path: str) -> subprocess.Popen:
  return subprocess.Popen(list(cmd), stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
                          start_new_session=True)  # own process group: kill takes it all


def watch_reference(cmd: Sequence[str], workdir: str, export_root: str,
                    log_path: str) -> Tuple[int, Dict[str, Tuple[float, float]], float]:
  """Runs `cmd` to the end; returns (rc, {stage: (start, end) seconds}, total seconds)."""
  windows: Dict[str, List[float]] = {}
  t0 = time.monotonic()
  proc = _start(cmd, log_path)
  while proc.poll() is None:
    now = time.monotonic() - t0
    for stage, state in _stage_states(workdir, export_root).items():
      span = windows.setdefault(stage, [now, None])
      if state == "done" and span[1] is None:
        span[1] = now
    time.sleep(POLL)
  total = time.monotonic() - t0
  # Folders that never got a record (figures, TensorBoard) are not stages.
  stages = {s: (a, b if b is not None else total) for s, (a, b) in windows.items()
            if s.startswith("export ") or os.path.isfile(os.path.join(workdir, s, RECORD_FILE))}
  return proc.returncode, stages, total


def kill_in_stage(cmd: Sequence[str], workdir: str, export_root: str, stage: str,
                  window: Tuple[float, float], fraction: float, log_path: str,
                  timeout: float = 1800) -> Tuple[Optional[float], str]:
  """Starts `cmd` and SIGKILLs it `fraction` of the way through `stage`; returns (t, running).

  The reference's stage duration is scaled by how much slower or faster this run reached the
  stage (a shared machine's load changes from run to run).
  """
  t0 = time.monotonic()
  proc = _start(cmd, log_path)
  kill_at = None
  while proc.poll() is None and time.monotonic() - t0 < timeout:
    states = _stage_states(workdir, export_root)
    now = time.monotonic()
    if kill_at is None and stage in states:
      speed = min(max((now - t0) / max(window[0], 1.0), 0.5), 3.0)
      kill_at = now + fraction * (window[1] - window[0]) * speed
      if kill_at - now < POLL:  # a stage shorter than one poll (an export): kill at once
        kill_at = now
    if kill_at is not None and (now >= kill_at or states.get(stage) == "done"):
      running = [s for s, st in states.items() if st == "running"]
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
      return now - t0, ",".join(running) or "between stages"
    time.sleep(POLL)
  proc.wait()
  return None, "finished first"


def _records(workdir: str) -> str:
  out = []
  for path in sorted(glob.glob(os.path.join(workdir, "*", RECORD_FILE))):
    record = jsonio.read_json(path) or {}
    out.append(f"{os.path.basename(os.path.dirname(path))}:{record.get('status', '?')}")
  return " ".join(out)


def run_drill(name: str, scale: str, seed: int, root: str, main_py: str,
              data_dir: Optional[str] = None, log: Callable[[str], None] = print,
              kill_seed: int = 0, python: str = sys.executable) -> bool:
  """Runs the drill of experiment `name` under `root`; logs a table; True if all identical."""
  rng = random.Random(kill_seed)
  root = os.path.join(os.path.abspath(root), name, scale)

  def paths(label):
    base = os.path.join(root, label)
    return base, os.path.join(base, "workdirs"), os.path.join(base, "saved_models")

  def command(label):
    _, wd, sm = paths(label)
    cmd = [python, main_py, f"--experiment={name}", f"--scale={scale}", f"--seed={seed}",
           f"--workdir={wd}", f"--export_dir={sm}"]
    return cmd + ([f"--data_dir={data_dir}"] if data_dir else [])

  def run_dir(label):
    return os.path.join(paths(label)[1], name, scale, f"seed_{seed}")

  base, _, ref_sm = paths("reference")
  shutil.rmtree(base, ignore_errors=True)
  os.makedirs(base)
  log(f"drill {name} [{scale}, seed {seed}]: uninterrupted reference run ({' '.join(command('reference'))})")
  rc, windows, total = watch_reference(command("reference"), run_dir("reference"), ref_sm,
                                       os.path.join(base, "log.txt"))
  if rc != 0:
    log(f"drill: the reference run failed (rc {rc}); see {os.path.join(base, 'log.txt')}")
    return False
  reference = artifacts(run_dir("reference"), ref_sm)
  log(f"reference: {total:.0f} s; stages " + ", ".join(
      f"{s} {a:.1f}-{b:.1f}s" for s, (a, b) in sorted(windows.items(), key=lambda kv: kv[1])))
  keys = sorted(reference)
  rows = [("reference", "-", "-", "0", _records(run_dir("reference")),
           *(reference[k] for k in keys))]
  all_same = True
  for stage, (start, end) in sorted(windows.items(), key=lambda kv: kv[1]):
    label = "kill_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", stage)
    base, _, sm = paths(label)
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    log_path = os.path.join(base, "log.txt")
    fraction = rng.uniform(0.05, 0.8)
    for attempt in range(3):  # a stage can end before its kill moment: try earlier in it
      if attempt:
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
      at, running = kill_in_stage(command(label), run_dir(label), sm, stage, (start, end),
                                  fraction, log_path)
      if stage in running.split(","):
        break
      log(f"{label}: missed the stage (killed while {running} ran); again, earlier in it")
      fraction /= 3
    proc = subprocess.run(command(label), stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)
    got = artifacts(run_dir(label), sm)
    same = [("same" if got.get(k) == reference[k] else f"DIFF {got.get(k)}") for k in keys]
    all_same &= proc.returncode == 0 and all(s == "same" for s in same)
    rows.append((label, f"{at:.1f}s" if at is not None else "-", running, str(proc.returncode),
                 _records(run_dir(label)), *same))
    log(f"{label}: killed at {rows[-1][1]} while {running} ran; resumed rc {proc.returncode}")
  header = ("run", "killed at", "running at kill", "resume rc", "stage status after resume",
            *keys)
  widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
  for row in [header, tuple("-" * w for w in widths)] + rows:
    log("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")
  log(f"drill: {'every resumed run matches the reference' if all_same else 'MISMATCH'}; "
      f"logs and workdirs under {root}")
  return all_same
