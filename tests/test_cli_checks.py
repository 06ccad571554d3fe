"""Bad command lines: one `error:` line, exit code 2, nothing written, before TensorFlow.

Each case runs the real `main.py` in a subprocess (the checks run before TensorFlow is
imported, so a case costs ~0.5 s) and asserts the exit code, that stderr is exactly one line
naming the flag or path, and that neither the workdir nor the export folder was created.
The error translation of `cli.user_errors` is tested in-process on real OSErrors.
"""

import errno
import os
import resource
import subprocess
import sys

import pytest

from latmix_tf import cli, cli_checks, cli_errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "main.py")


def run_main(args, tmp_path, timeout=120, **extra_env):
  """Runs main.py; returns the process and the CPU seconds it used (user + system).

  Why CPU seconds, not wall: "fails fast" means it did little work (no TensorFlow start-up, no
  registry import once the names are cached); on a loaded machine the wall time of the same
  work grows with the load, its CPU time barely does."""
  env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="2",
             **extra_env)
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  proc = subprocess.run([sys.executable, MAIN, *args], capture_output=True, text=True,
                        env=env, timeout=timeout, cwd=str(tmp_path))
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  return proc, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def assert_one_error_line(proc, *needles):
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr + proc.stdout
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])
  return lines[0]


@pytest.fixture
def dirs(tmp_path):
  wd, sm = tmp_path / "wd", tmp_path / "sm"
  yield wd, sm, [f"--workdir={wd}", f"--export_dir={sm}"]
  assert not wd.exists() and not sm.exists(), "a rejected command line wrote its folders"


def test_unknown_experiment_fast_once_registry_names_are_cached(tmp_path, dirs):
  _, _, paths = dirs
  cold, _ = run_main(["--experiment=nope", *paths], tmp_path)  # imports the registry once
  assert_one_error_line(cold, "'nope'", "erm_fmnist")
  warm, seconds = run_main(["--experiment=nope", *paths], tmp_path)
  assert_one_error_line(warm, "'nope'", "latent_mixup_fmnist")
  assert seconds < 2.0, seconds
  assert (tmp_path / "cache" / "latmix" / "registry_names.json").is_file()


def test_stale_name_cache_is_not_trusted(tmp_path):
  reg = tmp_path / "reg"
  reg.mkdir()
  (reg / "a.py").write_text("X = 1\n")
  cache = cli_checks.NameCache(str(reg), str(tmp_path / "names.json"))
  cache.write(["erm_fmnist"], ["erm"])
  assert cache.read()["experiments"] == ["erm_fmnist"]
  (reg / "a.py").write_text("X = 2\n")  # the registry changed: its names may have too
  assert cache.read() is None


@pytest.mark.parametrize("args,needles", [
    (["--experiment=erm_fmnist", "--seed=-1"], ["--seed=-1"]),
    (["--experiment=erm_fmnist", "--seed=4294967296"], ["--seed="]),
    (["--experiment=compare_fmnist", "--seeds=0,abc"], ["--seeds", "'abc'"]),
    (["--experiment=compare_fmnist", "--seeds=-2"], ["--seeds=-2"]),
    (["--experiment=erm_fmnist", "--seeds=0,1"], ["--seeds", "compare_* and ablation_*"]),
    (["--experiment=erm_fmnist", "--scale=huge"], ["--scale=huge"]),
    (["--experiment=erm_fmnist", "--seed=abc"], ["--seed=abc"]),
    (["--evaluate=/nonexistent/model"], ["/nonexistent/model", "No SavedModel"]),
    ([], ["--experiment"]),
])
def test_bad_flag_values(tmp_path, dirs, args, needles):
  _, _, paths = dirs
  proc, seconds = run_main([*args, *paths], tmp_path)
  assert_one_error_line(proc, *needles)
  assert seconds < 10


def test_unknown_method_for_compare(tmp_path, dirs):
  _, _, paths = dirs
  run_main(["--experiment=nope", *paths], tmp_path)  # primes the name cache
  proc, seconds = run_main(["--experiment=compare_fmnist", "--methods=erm,bogus", *paths],
                           tmp_path)
  assert_one_error_line(proc, "--methods", "'bogus'", "pgd_at")
  assert seconds < 2.0
  # The ablation family takes --methods too; a method of another family is refused by name.
  proc, _ = run_main(["--experiment=ablation_fmnist", "--methods=erm,bogus", *paths], tmp_path)
  assert_one_error_line(proc, "--methods", "'bogus'", "latent_mixup_k0")
  proc, _ = run_main(["--experiment=ablation_fmnist", "--methods=erm,pgd_at", *paths], tmp_path)
  assert_one_error_line(proc, "'pgd_at'", "valid: erm, latent_mixup, latent_mixup_")


def test_workdir_or_export_dir_that_is_a_file(tmp_path):
  afile = tmp_path / "afile"
  afile.write_text("keep me")
  for flag, other in (("--workdir", "--export_dir"), ("--export_dir", "--workdir")):
    for value in (str(afile), str(afile / "sub")):
      proc, _ = run_main(["--experiment=erm_fmnist", f"{flag}={value}",
                          f"{other}={tmp_path / 'other'}"], tmp_path)
      assert_one_error_line(proc, f"{flag}={value}", "is a file")
  assert afile.read_text() == "keep me" and not (tmp_path / "other").exists()


def read_only_dir(tmp_path):
  """A folder this process cannot write in (chmod, or /sys when running as root)."""
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o555)
  try:
    (ro / "probe").write_text("")
  except OSError:
    return str(ro)
  (ro / "probe").unlink()
  if os.geteuid() == 0 and os.path.isdir("/sys"):  # root writes anywhere but in sysfs
    return "/sys"
  pytest.skip("no read-only folder available")


def test_read_only_workdir_and_export_dir(tmp_path):
  ro = read_only_dir(tmp_path)
  for flag, other in (("--workdir", "--export_dir"), ("--export_dir", "--workdir")):
    target = os.path.join(ro, "latmix_run")
    proc, _ = run_main(["--experiment=erm_fmnist", f"{flag}={target}",
                        f"{other}={tmp_path / 'other'}"], tmp_path)
    assert_one_error_line(proc, f"{flag}={target}", "cannot be created")
    assert not os.path.exists(target) and not (tmp_path / "other").exists()


def test_disk_full_is_one_line_naming_what_was_being_written(capsys):
  @cli.user_errors
  def write_to_full_disk():
    cli.doing("writing the report into /somewhere/run")
    with open("/dev/full", "w") as f:
      f.write("x" * 10)
  if not os.path.exists("/dev/full"):
    pytest.skip("no /dev/full")
  assert write_to_full_disk() == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "no space left on device" in err[0], err
  assert "/somewhere/run" in err[0]


def test_not_a_directory_names_the_path(tmp_path, capsys):
  (tmp_path / "f").write_text("")

  @cli.user_errors
  def makedirs_under_a_file():
    os.makedirs(tmp_path / "f" / "sub")
  assert makedirs_under_a_file() == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and str(tmp_path / "f" / "sub") in err[0] and "not a folder" in err[0]


def test_internal_error_keeps_traceback_after_one_context_line(capsys):
  @cli.user_errors
  def buggy(log):
    cli.doing("building the latent bank")
    cli.tracked(log)("latent bank: chunk 1/2")
    raise KeyError("oops")
  with pytest.raises(KeyError):
    buggy(lambda line: None)
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "internal error while building the latent bank" in err[0]
  assert "chunk 1/2" in err[0] and "KeyError" in err[0]


def test_environment_error_classification():
  assert cli_errors.environment_error(OSError(errno.EROFS, "Read-only file system", "/x"))
  assert cli_errors.environment_error(OSError(errno.EIO, "I/O error", "/x")) is None
  assert cli_errors.environment_error(RuntimeError("No space left on device")) is None


def test_quiet_tensorflow_start_leaves_the_error_as_the_only_line(tmp_path):
  """A failure after TensorFlow's import (a data error) is still the only stderr line."""
  proc, _ = run_main(["--experiment=erm_fmnist", "--scale=smoke", f"--workdir={tmp_path}/wd",
                      f"--export_dir={tmp_path}/sm", f"--data_dir={tmp_path}/nodata"],
                     tmp_path, timeout=300)
  assert_one_error_line(proc, "fashion_mnist", "--fetch_data=fashion_mnist")


def test_flipped_byte_in_the_data_stops_the_run_before_it_writes(tmp_path):
  import gzip
  import shutil
  from latmix_tf.data import formats, sources
  src = os.path.join(sources.resolve_data_dir(None), "fashion_mnist")
  if not os.path.isdir(src):
    pytest.skip("run `python main.py --fetch_data=fashion_mnist` first")
  dst = tmp_path / "data" / "fashion_mnist"
  dst.mkdir(parents=True)
  for stem in formats.IDX_FILES.values():
    path = formats.find_idx_file(src, stem)
    if "t10k-labels" in stem:
      raw = bytearray(gzip.decompress(open(path, "rb").read()))
      raw[8] = (raw[8] + 3) % 10  # the first label (after the 8-byte header), still valid
      with gzip.open(dst / os.path.basename(path), "wb") as f:
        f.write(bytes(raw))
    else:
      os.symlink(path, dst / os.path.basename(path))
  wd, sm = tmp_path / "wd", tmp_path / "sm"
  proc, _ = run_main(["--experiment=erm_fmnist", "--scale=smoke", f"--workdir={wd}",
                      f"--export_dir={sm}", f"--data_dir={tmp_path / 'data'}"], tmp_path,
                     timeout=300)
  assert_one_error_line(proc, "t10k-labels-idx1-ubyte.gz", "--fetch_data=fashion_mnist",
                        "canonical")
  assert not wd.exists() and not sm.exists()


def test_nested_actions_report_an_internal_error_once(capsys):
  @cli.user_errors
  def inner():
    cli.doing("training the classifier")
    raise ZeroDivisionError("x")

  @cli.user_errors
  def outer():
    return inner()
  with pytest.raises(ZeroDivisionError):
    outer()
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "while training the classifier" in err[0]


@pytest.mark.parametrize("args,needles", [
    (["--experiment=erm_fmnist", "stray_word"], ["'stray_word'"]),
    (["--experiment=erm_fmnist", "--workdir=/tmp/latmix-\udcff-wd"], ["--workdir=", "UTF-8"]),
    (["--experiment=erm_fmnist", "--workdir", "/tmp/latmix-\udcff-wd"], ["--workdir=", "UTF-8"]),
    (["--experiment=erm_fmnist", "--data_dir=/nonexistent/latmix-data"],
     ["--data_dir=/nonexistent/latmix-data", "--fetch_data"]),
    (["--experiment=erm_fmnist", "--export_dir=/tmp/" + "x" * 300], ["--export_dir", "255"]),
    (["--serve", "--port=-5", "--model_base_path=/nonexistent/m"], ["--port=-5"]),
    (["--serve", "--port=70000", "--model_base_path=/nonexistent/m"], ["--port=70000"]),
    (["--serve", "--num_workers=0", "--model_base_path=/nonexistent/m"], ["--num_workers=0"]),
])
def test_cli_edges_are_one_line_naming_the_flag_before_any_work(tmp_path, dirs, args, needles):
  """Issue 29 item 14: each edge was silently ignored, misdirected or reported late (after
  TensorFlow's start-up noise, a traceback or a training run); now one line, exit 2, nothing
  written, and no TensorFlow import (its start-up alone takes seconds)."""
  _, _, paths = dirs
  shim = tmp_path / "no_tensorflow" / "tensorflow"  # importing TensorFlow fails the case
  shim.mkdir(parents=True)
  (shim / "__init__.py").write_text("raise ImportError('tensorflow was imported')\n")
  proc, _ = run_main([*paths, *args], tmp_path, PYTHONPATH=str(shim.parent))
  assert_one_error_line(proc, *needles)
  assert "tensorflow was imported" not in proc.stderr


def test_check_name_lengths_and_serve_limits_in_process(tmp_path):
  with pytest.raises(cli_checks.UsageError, match="--export_dir: the folder name"):
    cli_checks.check_writable_dir(str(tmp_path / ("y" * 256) / "sub"), "--export_dir")
  assert cli_checks.check_writable_dir(str(tmp_path / ("y" * 255)), "--export_dir")
  cli_checks.check_serve_limits({"port": 0, "drain_timeout_s": 0.0, "host": "127.0.0.1"})
  with pytest.raises(cli_checks.UsageError, match="--max_body_bytes=0"):
    cli_checks.check_serve_limits({"max_body_bytes": 0})
