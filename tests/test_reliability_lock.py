"""One writer per workdir: the lock itself, and two real CLI runs on one workdir.

The lock tests hold it from a second process (flock locks are per process), kill that process
with SIGKILL and check the kernel released it. The CLI test stops a real smoke run (SIGSTOP)
while it holds its workdir, so the overlap does not depend on timing, then starts a second
run and a concurrent `--rebuild=classifier` (both must refuse, touching nothing) and a
`--wait_for_lock` run (must wait, then reuse the first run's results).
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from latmix_tf import workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLDER = ("import sys, time; sys.path.insert(0, %r); from latmix_tf import workdir_lock; "
          "workdir_lock.acquire(sys.argv[1], command='the holder'); print('held', flush=True); "
          "time.sleep(float(sys.argv[2]))" % ROOT)


def start_holder(folder, seconds=60):
  proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(seconds)],
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_second_holder_is_refused_with_the_holders_identity(tmp_path):
  folder = tmp_path / "run"
  holder = start_holder(folder)
  try:
    with pytest.raises(workdir_lock.WorkdirLockedError) as e:
      workdir_lock.acquire(str(folder))
    assert f"pid {holder.pid}" in str(e.value) and "the holder" in str(e.value)
    assert str(folder) in str(e.value) and "--wait_for_lock" in str(e.value)
    t0 = time.monotonic()
    with pytest.raises(workdir_lock.WorkdirLockedError):
      workdir_lock.acquire(str(folder), wait=0.3, poll=0.05)
    assert time.monotonic() - t0 >= 0.3
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # SIGKILL released it: a resumed run is never blocked by a dead one's lock file.
  with workdir_lock.hold(str(folder)) as path:
    assert json.load(open(path))["pid"] == os.getpid()
  assert not folder.exists() or not os.listdir(folder)  # the lock lives beside the folder


def test_lock_survives_the_folder_being_moved_aside(tmp_path):
  folder = tmp_path / "classifier"
  folder.mkdir()
  holder = start_holder(folder)
  try:
    os.replace(folder, tmp_path / "classifier.stale-1")  # what a rebuild does
    folder.mkdir()
    with pytest.raises(workdir_lock.WorkdirLockedError):
      workdir_lock.acquire(str(folder))
  finally:
    holder.kill()
    holder.wait()


def test_reentrant_in_one_process_and_waiting_for_a_holder(tmp_path):
  folder = str(tmp_path / "stage")
  with workdir_lock.hold(folder):
    with workdir_lock.hold(folder):  # a stage locking the folder its run already holds
      assert workdir_lock.is_held_here(folder)
    assert workdir_lock.is_held_here(folder)
  assert not workdir_lock.is_held_here(folder)
  holder = start_holder(folder, seconds=1.0)
  said = []
  with workdir_lock.hold(folder, wait=None, poll=0.05, log=said.append):
    assert holder.poll() is not None  # got it only once the holder exited
  assert len(said) == 1 and "waiting" in said[0]


def _main(args, **kw):
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_two_cli_runs_on_one_workdir_including_a_concurrent_rebuild(tmp_path, tiny_data_dir):
  wd, sm = tmp_path / "wd", tmp_path / "sm"
  args = ["--experiment=erm_fmnist", "--scale=smoke", f"--workdir={wd}", f"--export_dir={sm}",
          f"--data_dir={tiny_data_dir}", "--strategy=default"]
  lock = workdir_lock.lock_path(str(wd / "erm_fmnist" / "smoke" / "seed_0"))
  first = _main(args)
  deadline = time.monotonic() + 300
  while workdir_lock.holder(str(wd / "erm_fmnist" / "smoke" / "seed_0")) is None:
    assert first.poll() is None and time.monotonic() < deadline, first.communicate()
    time.sleep(0.05)
  os.kill(first.pid, signal.SIGSTOP)  # holds the lock, does nothing: a certain overlap
  run = wd / "erm_fmnist" / "smoke" / "seed_0"
  # The lock (<parent>/.seed_0.lock) comes before the folder: the stop may land in between,
  # and then the other runs must not create the folder either.
  contents = lambda: sorted(os.listdir(run)) if run.is_dir() else None  # noqa: E731
  try:
    before = contents()
    second, rebuild = _main(args), _main(args + ["--rebuild=classifier"])
    waiter = _main(args + ["--wait_for_lock"])
    for proc in (second, rebuild):
      out, err = proc.communicate(timeout=300)
      lines = err.strip().splitlines()
      assert proc.returncode == 2 and len(lines) == 1, err
      assert f"pid {first.pid}" in lines[0] and "in use" in lines[0], lines
    assert contents() == before
    time.sleep(1.0)
    assert waiter.poll() is None  # waiting, not failed
  finally:
    os.kill(first.pid, signal.SIGCONT)
  out, err = first.communicate(timeout=600)
  assert first.returncode == 0, err[-3000:]
  out_w, err_w = waiter.communicate(timeout=600)
  assert waiter.returncode == 0, err_w[-3000:]
  assert "waiting" in out_w
  assert not [p for p in os.listdir(run) if "stale" in p]  # nobody moved a live folder aside
  metrics = json.load(open(run / "metrics.json"))
  assert metrics["stages"] == {"classifier": "cached", "evaluation": "cached"}  # the waiter's
  assert os.path.isfile(lock)


# --- --wait_for_lock on stage locks, the export folder, reported at once ---

def _run_in_process(data_dir, wd, sm, log, wait_for_lock=False):
  import experiments  # pylint: disable=import-outside-toplevel (TensorFlow)
  from latmix_tf import cli  # pylint: disable=import-outside-toplevel
  return cli.run_experiment(experiments.get("erm_fmnist"), "smoke", 0, data_dir, str(wd),
                            str(sm), (), None, None, "default", log,
                            wait_for_lock=wait_for_lock)


def test_wait_for_lock_applies_to_stage_locks(tmp_path, tiny_data_dir):
  """Another run holds the classifier stage (as erm_fmnist does beside latent_mixup_fmnist,
  whose reference network is that stage): with --wait_for_lock the run waits for it."""
  wd, sm = tmp_path / "wd", tmp_path / "sm"
  holder = start_holder(wd / "erm_fmnist" / "smoke" / "seed_0" / "classifier")
  said = []

  def log(line):
    said.append(line)
    if "waiting for it" in line and holder.poll() is None:  # the holder finishes only now
      holder.kill()
      holder.wait()
  try:
    assert _run_in_process(tiny_data_dir, wd, sm, log, wait_for_lock=True) == 0, said[-5:]
  finally:
    holder.kill()
    holder.wait()
  assert any("classifier is in use by" in line and "the holder" in line for line in said), said
  metrics = json.load(open(wd / "erm_fmnist" / "smoke" / "seed_0" / "metrics.json"))
  assert metrics["stages"]["classifier"] == "built"


def test_export_folder_is_locked(tmp_path, tiny_data_dir, capsys):
  """Two runs with different workdirs but one --export_dir: the second is refused before it
  trains, naming the holder, and the holder's SavedModel folder is left alone."""
  model = tmp_path / "sm" / "erm_fmnist-smoke" / "seed_0"
  holder = start_holder(model)
  try:
    code = _run_in_process(tiny_data_dir, tmp_path / "wd2", tmp_path / "sm", print)
  finally:
    holder.kill()
    holder.wait()
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1, err
  assert str(model) in err[0] and "the holder" in err[0] and "--export_dir" in err[0]
  assert not model.exists()
  assert not (tmp_path / "wd2" / "erm_fmnist" / "smoke" / "seed_0" / "classifier").exists()


def test_lock_conflict_is_reported_before_tensorflow_and_the_registry(tmp_path, monkeypatch,
                                                                       capsys):
  """The conflict is found before the registry (and TensorFlow) is imported, at the folder a
  `~` workdir names, and nothing is written."""
  from latmix_tf import cli  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  run = tmp_path / "home" / "wd" / "erm_fmnist" / "smoke" / "seed_0"
  holder = start_holder(run)
  before = sorted(os.listdir(run.parent))

  def load_registry():
    raise AssertionError("the registry was imported before the lock was checked")
  try:
    code = cli.main_experiment("erm_fmnist", "smoke", 0, None, "~/wd", str(tmp_path / "sm"),
                               (), None, None, "default", print,
                               registry_dir=os.path.join(ROOT, "experiments"),
                               load_registry=load_registry)
  finally:
    holder.kill()
    holder.wait()
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and f"pid {holder.pid}" in err[0], err
  assert str(run) in err[0] and "--wait_for_lock" in err[0]
  assert sorted(os.listdir(run.parent)) == before and not (tmp_path / "sm").exists()
