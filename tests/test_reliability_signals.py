"""SIGTERM and Ctrl-C during a run: one line, exit 128 + signal, and the same command resumes.

A real smoke run of `main.py` is stopped (SIGSTOP) once its classifier stage is building, so
the moment does not depend on the machine's speed; the signal is sent and the run continued.
It must end with exit code 143 (SIGTERM) or 130 (SIGINT), one `error:` line saying what was
interrupted and that the same command resumes, no traceback, and a readable stage record;
rerunning the same command must resume the classifier stage and finish. Also here: a quoted
`--workdir='~/wd'` is written where it is checked, under $HOME.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _wait_building(record_path, proc, deadline_s=600):
  deadline = time.monotonic() + deadline_s
  while True:
    assert proc.poll() is None, proc.communicate()
    assert time.monotonic() < deadline, "the classifier stage never started"
    try:
      if json.load(open(record_path)).get("state") == "building":
        return
    except (OSError, ValueError):
      pass
    time.sleep(0.05)


@pytest.mark.parametrize("signum,code,name", [(signal.SIGTERM, 143, "SIGTERM"),
                                              (signal.SIGINT, 130, "Ctrl-C")])
def test_signal_during_a_run_is_one_line_and_the_same_command_resumes(
    tmp_path, tiny_data_dir, signum, code, name):
  wd, sm = tmp_path / "wd", tmp_path / "sm"
  cmd = [sys.executable, os.path.join(ROOT, "main.py"), "--experiment=erm_fmnist",
         "--scale=smoke", f"--workdir={wd}", f"--export_dir={sm}", f"--data_dir={tiny_data_dir}",
         "--strategy=default"]
  env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  run = wd / "erm_fmnist" / "smoke" / "seed_0"
  _wait_building(run / "classifier" / "stage.json", proc)
  os.kill(proc.pid, signal.SIGSTOP)
  os.kill(proc.pid, signum)
  os.kill(proc.pid, signal.SIGCONT)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == code, (proc.returncode, err[-3000:])
  assert "Traceback" not in out + err, err[-3000:]
  errors = [line for line in err.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and f"interrupted by {name}" in errors[0], err[-3000:]
  assert "same command" in errors[0] and "erm_fmnist" in errors[0]
  record = json.load(open(run / "classifier" / "stage.json"))
  assert record["state"] == "building" and record["seconds"] > 0
  again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  metrics = json.load(open(run / "metrics.json"))
  assert metrics["stages"] == {"classifier": "resumed", "evaluation": "built"}


def test_interrupted_action_returns_128_plus_signal_and_restores_handlers(capsys):
  from latmix_tf import cli  # pylint: disable=import-outside-toplevel
  before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

  @cli.user_errors
  def action(signum):
    cli.handle_interrupts()
    cli.doing("training the classifier")
    signal.raise_signal(signum)
    raise AssertionError("the signal did not interrupt the action")
  assert action(signal.SIGTERM) == 143 and action(signal.SIGINT) == 130
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 2 and all("while training the classifier" in line for line in err), err
  assert "SIGTERM" in err[0] and "Ctrl-C" in err[1]
  assert {s: signal.getsignal(s) for s in before} == before  # the caller's handlers again


def test_quoted_tilde_workdir_is_written_under_home(tmp_path, tiny_data_dir, monkeypatch):
  import experiments  # pylint: disable=import-outside-toplevel (TensorFlow)
  from latmix_tf import cli  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  (tmp_path / "cwd").mkdir()
  monkeypatch.chdir(tmp_path / "cwd")
  code = cli.run_experiment(experiments.get("erm_fmnist"), "smoke", 0, tiny_data_dir, "~/wd",
                            "~/sm", (), None, None, "default", lambda line: None)
  assert code == 0
  assert (tmp_path / "home" / "wd" / "erm_fmnist" / "smoke" / "seed_0" / "metrics.json").is_file()
  assert (tmp_path / "home" / "sm" / "erm_fmnist-smoke" / "seed_0" / "saved_model.pb").is_file()
  assert not os.listdir(tmp_path / "cwd")  # nothing under ./~
