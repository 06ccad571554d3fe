"""One writer per folder: an advisory `fcntl.flock` lock beside a run or stage directory.

Why: two runs on one workdir used to both train every stage, write the same checkpoints and
bank chunks, and a concurrent `--rebuild` moved the other run's live folder aside. With this
lock the second run stops at once with a message naming the holder (pid, host, command), or
waits for it when asked.

Why the lock file sits *beside* the folder (`<parent>/.<name>.lock`), not inside it: a stale or
rebuilt folder is moved aside with `os.replace` and recreated; a lock file inside would travel
with the old folder and a second run would lock a fresh file in the new one. Beside it, the
lock survives the move and the folder itself stays exactly what the run wrote.

`flock` locks belong to an open file, so the kernel drops them when the process dies (SIGKILL,
pre-emption): a lock file left behind never blocks a resume. Within one process the lock is
re-entrant (a run that holds its workdir may lock it again, e.g. a compare member that is also
the run itself). NFS: `flock` is emulated with `fcntl` byte-range locks on Linux NFSv4, which
is what clusters' shared home folders use; on filesystems without locking, `lock` raises
`OSError` rather than pretend.

What is locked: a run's workdir (by the CLI), every stage folder (by `stages.run_stage`) and
every SavedModel export folder (by the runner: two runs with different workdirs but one
`--export_dir` would otherwise overwrite each other's model). `--wait_for_lock` applies to all
of them: the CLI sets `LATMIX_WAIT_FOR_LOCK=1` (`WAIT_ENV`, inherited by worker processes) and
the stage and export locks read it through `default_wait()`. Reported at once: `check_free`
looks at a run's workdir lock before TensorFlow is imported (it creates nothing), so a second
run hears within a second that the folder is taken, not after TensorFlow's start-up.

  with workdir_lock.hold(workdir, command=" ".join(sys.argv)):
    ...   # stages write here
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from typing import Dict, Iterator, Optional

_HELD: Dict[str, list] = {}  # lock path -> [fd, depth]; this process's locks
_GUARD = threading.Lock()
WAIT_ENV = "LATMIX_WAIT_FOR_LOCK"


def default_wait() -> Optional[float]:
  """The `wait` of stage and export locks: None (forever) under --wait_for_lock, else 0."""
  return None if os.environ.get(WAIT_ENV, "") not in ("", "0") else 0.0


@contextlib.contextmanager
def waiting(wait: bool) -> Iterator[None]:
  """Sets what `default_wait` answers (and worker processes inherit) for the duration."""
  previous = os.environ.get(WAIT_ENV)
  os.environ[WAIT_ENV] = "1" if wait else "0"
  try:
    yield
  finally:
    if previous is None:
      os.environ.pop(WAIT_ENV, None)
    else:
      os.environ[WAIT_ENV] = previous


class WorkdirLockedError(RuntimeError):
  """Another process holds the folder; the message names it and what to do."""


def lock_path(folder: str) -> str:
  """The lock file of `folder`: `<parent>/.<name>.lock`."""
  folder = os.path.abspath(folder).rstrip(os.sep) or os.sep
  parent, name = os.path.split(folder)
  return os.path.join(parent, f".{name or 'root'}.lock")


def holder(folder: str) -> Optional[dict]:
  """What the current or last holder recorded (pid, host, command, since), if readable."""
  try:
    with open(lock_path(folder)) as f:
      return json.loads(f.read() or "null")
  except (OSError, ValueError):
    return None


def _describe(info: Optional[dict]) -> str:
  if not info:
    return "another process (it has not recorded itself yet)"
  since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
  return (f"pid {info.get('pid')} on {info.get('host')} since {since} "
          f"(`{info.get('command', '?')}`)")


def _try_flock(fd: int) -> bool:
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True
  except OSError as e:
    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      return False
    raise


def _locked_error(folder: str, flag: str) -> WorkdirLockedError:
  return WorkdirLockedError(
      f"{folder} is in use by {_describe(holder(folder))}. Wait for it to finish (or pass "
      f"--wait_for_lock), or use another {flag}. Lock file: {lock_path(folder)}")


def check_free(folder: str, flag: str = "--workdir") -> None:
  """Raises `WorkdirLockedError` if another process holds `folder`'s lock; creates nothing.

  A probe, not a lock: the caller still `acquire`s before writing (the holder may change).
  """
  path = lock_path(folder)
  with _GUARD:
    if path in _HELD:
      return
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return  # no lock file: nobody holds it (or we cannot tell; acquire will)
  try:
    if not _try_flock(fd):
      raise _locked_error(folder, flag)
    fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)


def acquire(folder: str, command: Optional[str] = None, wait: Optional[float] = 0.0,
            poll: float = 0.5, log=None, flag: str = "--workdir") -> str:
  """Locks `folder` for this process; returns the lock path (pass it to `release`).

  Args:
    folder: the run or stage directory (need not exist yet; its parent is created).
    command: recorded for whoever finds the folder locked (default: this process's argv).
    wait: seconds to wait for the holder to finish; 0 fails at once, None waits forever.
    poll: seconds between attempts while waiting.
    log: optional sink told once that we are waiting.
    flag: the flag that chose the folder, named in the message (`--workdir`, `--export_dir`).
  Raises:
    WorkdirLockedError: still held by another process after `wait`.
    OSError: the parent folder cannot be created or the lock file written.
  """
  path = lock_path(folder)
  with _GUARD:
    if path in _HELD:
      _HELD[path][1] += 1
      return path
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  deadline = None if wait is None else time.monotonic() + wait
  told = False
  try:
    while not _try_flock(fd):
      if deadline is not None and time.monotonic() >= deadline:
        raise _locked_error(folder, flag)
      if log is not None and not told:
        log(f"{folder} is in use by {_describe(holder(folder))}; waiting for it")
        told = True
      time.sleep(poll)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
              "command": command if command is not None else " ".join(sys.argv),
              "folder": os.path.abspath(folder)}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
  except BaseException:
    os.close(fd)
    raise
  with _GUARD:
    _HELD[path] = [fd, 1]
  return path


def release(path: str) -> None:
  """Undoes one `acquire` of this lock path; the last one unlocks and closes it."""
  with _GUARD:
    entry = _HELD.get(path)
    if entry is None:
      return
    entry[1] -= 1
    if entry[1] > 0:
      return
    del _HELD[path]
  # The file stays: unlinking it would let a waiter lock an inode nobody else can see.
  fcntl.flock(entry[0], fcntl.LOCK_UN)
  os.close(entry[0])


@contextlib.contextmanager
def hold(folder: str, command: Optional[str] = None, wait: Optional[float] = 0.0,
         poll: float = 0.5, log=None, flag: str = "--workdir") -> Iterator[str]:
  """Context manager form of `acquire`/`release` (same arguments); yields the lock path."""
  path = acquire(folder, command=command, wait=wait, poll=poll, log=log, flag=flag)
  try:
    yield path
  finally:
    release(path)


def is_held_here(folder: str) -> bool:
  """Whether this process holds `folder`'s lock (stages can assert their caller locked)."""
  with _GUARD:
    return lock_path(folder) in _HELD
