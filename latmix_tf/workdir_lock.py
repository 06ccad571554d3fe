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


def acquire(folder: str, command: Optional[str] = None, wait: Optional[float] = 0.0,
            poll: float = 0.5, log=None) -> str:
  """Locks `folder` for this process; returns the lock path (pass it to `release`).

  Args:
    folder: the run or stage directory (need not exist yet; its parent is created).
    command: recorded for whoever finds the folder locked (default: this process's argv).
    wait: seconds to wait for the holder to finish; 0 fails at once, None waits forever.
    poll: seconds between attempts while waiting.
    log: optional sink told once that we are waiting.
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
        raise WorkdirLockedError(
            f"{folder} is in use by {_describe(holder(folder))}. Wait for it to finish (or "
            f"pass --wait_for_lock), or use another --workdir. Lock file: {path}")
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
         poll: float = 0.5, log=None) -> Iterator[str]:
  """Context manager form of `acquire`/`release` (same arguments); yields the lock path."""
  path = acquire(folder, command=command, wait=wait, poll=poll, log=log)
  try:
    yield path
  finally:
    release(path)


def is_held_here(folder: str) -> bool:
  """Whether this process holds `folder`'s lock (stages can assert their caller locked)."""
  with _GUARD:
    return lock_path(folder) in _HELD
