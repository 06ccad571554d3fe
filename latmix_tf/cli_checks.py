"""Command-line checks that run before any work and before TensorFlow is imported.

Why: a run must never train for minutes and then fail on one of its arguments (an export
folder that is a file, a read-only workdir), nor make a user wait for TensorFlow's start-up
(5 s idle, minutes on a loaded machine) to hear that an experiment name is misspelt. Everything
here is standard library only and writes nothing that stays (the write probe removes its file).

Experiment names: the registry (`experiments/`) imports TensorFlow, so the names are read
from a small cache derived from it (`NameCache`), keyed by the SHA-256 of the registry's
source files. The registry stays the one source of truth: the cache is rewritten from it on
every run that imports it, and a stale or missing cache is never trusted (the caller then
imports the registry). User errors are `UsageError` with a one-line message.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import re
import tempfile
from typing import Dict, List, Optional, Sequence

from latmix_tf import jsonio

SEED_MAX = 2**31 - 1  # keras.utils.set_random_seed and the int32 stateless seeds


class UsageError(ValueError):
  """A bad flag value; the message names the flag and what is wrong."""


def check_seed(seed: int, flag: str = "--seed") -> int:
  if not 0 <= seed <= SEED_MAX:
    raise UsageError(f"{flag}={seed}: a seed must be an integer in 0..{SEED_MAX}.")
  return seed


def parse_seeds(values: Optional[Sequence[str]]) -> Optional[tuple]:
  """`--seeds=0,1,2` -> (0, 1, 2) (duplicates dropped); None when not given."""
  if not values:
    return None
  out = []
  for v in values:
    try:
      seed = int(str(v).strip())
    except ValueError:
      raise UsageError(f"--seeds={','.join(map(str, values))}: {v!r} is not an integer; "
                       f"pass seeds like --seeds=0,1,2.") from None
    out.append(check_seed(seed, "--seeds"))
  return tuple(dict.fromkeys(out))


def check_choices(values: Optional[Sequence[str]], valid: Sequence[str],
                  flag: str) -> Optional[tuple]:
  """`--methods=gat,erm` -> the named choices in `valid` order; None when not given."""
  if not values:
    return None
  unknown = [v for v in values if v not in valid]
  if unknown:
    raise UsageError(f"Unknown {flag.lstrip('-')} {', '.join(map(repr, unknown))} in "
                     f"{flag}={','.join(values)}; valid: {', '.join(valid)}.")
  return tuple(v for v in valid if v in values)


def check_writable_dir(path: str, flag: str) -> str:
  """Checks that `path` is, or can be created as, a folder we can write in; returns it absolute.

  Nothing is created: the nearest existing ancestor is checked and probed with a temporary
  file that is removed at once (permission bits alone miss read-only mounts and root).
  """
  if not path:
    raise UsageError(f"{flag} is empty: pass a folder.")
  check_encodable(path, flag)
  full = expand_path(path)
  probe = full
  while not os.path.exists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  if not os.path.isdir(probe):
    where = "is a file" if probe == full else f"cannot be created: {probe} is a file"
    raise UsageError(f"{flag}={path}: {where}, not a folder.")
  check_name_lengths(full, probe, flag)
  try:
    fd, tmp = tempfile.mkstemp(prefix=".latmix-write-test-", dir=probe)
    os.close(fd)
    os.unlink(tmp)
  except OSError as e:
    what = "is not writable" if probe == full else f"cannot be created in {probe}"
    raise UsageError(f"{flag}={path}: {what} ({e.strerror}).") from None
  return full


def expand_path(path: str) -> str:
  """`path` absolute, with a leading `~` expanded: the folder checked is the folder written
  (a quoted `--workdir='~/wd'` reaches us unexpanded by the shell)."""
  return os.path.abspath(os.path.expanduser(path))


def _printable(text: str) -> str:
  return text.encode("utf-8", "backslashreplace").decode("utf-8")


def check_encodable(value: str, flag: str) -> None:
  """A value whose bytes are not UTF-8 (Python keeps them as surrogates) cannot be written
  into records, logs or SavedModel metadata: refuse it up front, naming the flag."""
  try:
    value.encode("utf-8")
  except UnicodeEncodeError:
    raise UsageError(f"{flag}={_printable(value)}: not valid UTF-8 (undecodable bytes shown as "
                     f"\\udcXX); rename the folder or pass a UTF-8 path.") from None


def check_argv(args: Sequence[str]) -> None:
  """Every command-line argument is UTF-8; otherwise the error names its flag."""
  previous = ""
  for arg in args:
    if arg.startswith("-"):
      flag, _, value = arg.partition("=")
    else:  # `--workdir PATH`: the value of the flag before it
      flag, value = (previous if previous.startswith("-") and "=" not in previous
                     else "argument"), arg
    check_encodable(value, flag)
    previous = arg


def check_no_positional(rest: Sequence[str]) -> None:
  """absl returns the words that are not flags; main.py takes none, so each is a mistake
  (a missing `--`, a space after `=`) that must not be silently ignored."""
  if rest:
    raise UsageError(f"unexpected argument {_printable(rest[0])!r}: main.py takes only "
                     f"--flags (did you mean --{_printable(rest[0]).lstrip('-')}=...?); see "
                     f"`python main.py --help`.")


# Room left under PATH_MAX for what runs append (<experiment>/<scale>/seed_<n>/<stage>/...).
_APPENDED = 256


def check_name_lengths(full: str, existing: str, flag: str) -> None:
  """Each folder name fits the file system's NAME_MAX and the path leaves room for what runs
  append, so a long name fails now, not after training."""
  try:
    name_max = os.pathconf(existing, "PC_NAME_MAX")
    path_max = os.pathconf(existing, "PC_PATH_MAX")
  except (OSError, ValueError):
    name_max, path_max = 255, 4096
  size = lambda text: len(text.encode("utf-8", "surrogateescape"))  # noqa: E731
  for part in (p for p in full.split(os.sep) if size(p) > name_max):
    raise UsageError(f"{flag}: the folder name {part[:40]}... is {size(part)} bytes long; this "
                     f"file system allows {name_max}. Pass a shorter {flag}.")
  if size(full) + _APPENDED > path_max:
    raise UsageError(f"{flag}: the path is {size(full)} bytes long; runs add up to {_APPENDED} "
                     f"more and the file system allows {path_max}. Pass a shorter {flag}.")


def check_data_dir(data_dir: Optional[str]) -> None:
  """An explicit `--data_dir` must be an existing folder (a typo is answered before
  TensorFlow starts, not after); None means the default folder, checked with the data."""
  if data_dir is None:
    return
  check_encodable(data_dir, "--data_dir")
  full = expand_path(data_dir)
  if not os.path.isdir(full):
    what = "is a file" if os.path.exists(full) else "does not exist"
    raise UsageError(f"--data_dir={data_dir}: {what}; fetch the data into it with `python "
                     f"main.py --fetch_data=fashion_mnist,mnist --data_dir={data_dir}`, or leave "
                     f"--data_dir out (default $LATMIX_DATA_DIR or ~/latmix_data).")


# What each `--serve` limit must be: (lowest value, its meaning).
_POSITIVE = (1, "a positive number")
SERVE_LIMITS = {"port": (0, "a TCP port 0..65535 (0 = any free port)"),
                "request_timeout_s": (1e-3, "a positive number of seconds"),
                "drain_timeout_s": (0, "zero or more seconds"),
                "batch_timeout_micros": (0, "zero or more microseconds"),
                **{k: _POSITIVE for k in ("max_body_bytes", "max_batch_size", "num_workers",
                                          "queue_size", "max_connections",
                                          "max_connections_per_client", "chunk_size")}}


def check_serve_limits(limits: Dict[str, object]) -> None:
  """`--serve` flag values, before the server (and TensorFlow) is imported."""
  for name, value in limits.items():
    if name not in SERVE_LIMITS or isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    low, meaning = SERVE_LIMITS[name]
    if value < low or (name == "port" and value > 65535):
      raise UsageError(f"--{name}={value}: must be {meaning}.")


# --- experiment names without TensorFlow ----------------------------------------------------

def _cache_root() -> str:
  return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                      "latmix")


class NameCache:
  """Registry facts (experiment names, compare methods) keyed by the registry's sources."""

  def __init__(self, registry_dir: str, cache_file: Optional[str] = None):
    self.registry_dir = registry_dir
    self.path = cache_file or os.path.join(_cache_root(), "registry_names.json")

  def stamp(self) -> str:
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(self.registry_dir, "**", "*.py"), recursive=True)):
      with open(path, "rb") as f:
        h.update(path.encode() + b"\0" + f.read())
    return h.hexdigest()

  def read(self) -> Optional[Dict[str, List[str]]]:
    """The cached facts if they were derived from the current sources, else None."""
    cached = jsonio.read_json(self.path)
    if isinstance(cached, dict) and cached.get("stamp") == self.stamp():
      return cached
    return None

  def write(self, experiments: Sequence[str], methods: Sequence[str]) -> None:
    """Records the registry's facts (called with the real registry in hand)."""
    try:
      os.makedirs(os.path.dirname(self.path), exist_ok=True)
      jsonio.write_json_atomic(self.path, {"stamp": self.stamp(), "experiments": sorted(experiments),
                                           "methods": list(methods)})
    except OSError:
      pass  # a read-only home: the next run imports the registry to check names, nothing else


def check_experiment(name: str, facts: Dict[str, List[str]]) -> None:
  if name not in facts["experiments"]:
    raise UsageError(f"Unknown experiment {name!r}. Valid experiments: "
                     f"{', '.join(facts['experiments'])}.")


def check_compare_flags(name: str, methods: Optional[Sequence[str]],
                        seeds: Optional[Sequence[str]], facts: Optional[dict]) -> None:
  """--methods/--seeds apply to the many-member experiments (compare_*, ablation_*) only;
  --methods names must be known methods (which family accepts which, the experiment says)."""
  if not re.match(r"(compare|ablation)_", name) and (methods or seeds):
    flag = "--methods" if methods else "--seeds"
    raise UsageError(f"{flag} applies to compare_* and ablation_* experiments only; {name} "
                     f"runs one method and one --seed.")
  if methods and facts and facts.get("methods"):
    check_choices(methods, facts["methods"], "--methods")


def check_executor(name: str, executor: str = "sequential", ray_address: Optional[str] = None,
                   concurrent_members: int = 0) -> None:
  """--executor=ray (and its --ray_address, --concurrent_members) applies to the many-member
  experiments only, and needs Ray installed."""
  if executor == "sequential" and (ray_address or concurrent_members):
    flag = "--ray_address" if ray_address else "--concurrent_members"
    raise UsageError(f"{flag} applies to --executor=ray only; add --executor=ray.")
  if concurrent_members < 0:
    raise UsageError(f"--concurrent_members={concurrent_members}: pass 0 (one per GPU, else one "
                     f"per CPU core of the cluster) or a positive number of members at once.")
  if executor != "sequential" and not re.match(r"(compare|ablation)_", name):
    raise UsageError(f"--executor={executor} applies to compare_* and ablation_* experiments "
                     f"only; {name} is one run (spread it over devices with --strategy).")
  if executor == "ray" and importlib.util.find_spec("ray") is None:
    raise UsageError("--executor=ray needs Ray: pip install -r requirements.txt (it pins ray).")


def check_run_flags(seed: int, seeds, workdir: str,
                    export_dir: Optional[str]) -> Optional[tuple]:
  """All checks of a run's flags that need neither TensorFlow nor the registry."""
  check_seed(seed)
  parsed = parse_seeds(seeds)
  check_writable_dir(workdir, "--workdir")
  if export_dir is not None:
    check_writable_dir(export_dir, "--export_dir")
  return parsed
