"""How a command-line action ends when it cannot finish: one line on stderr and an exit code.

Why: a user who misspells a name or runs out of disk must read what to do, not a traceback;
a bug must keep its traceback, with one line saying what the program was doing. Every
action in `cli` is wrapped in `user_errors`; nothing here imports TensorFlow.

Errors: a user's mistake or the machine's state (unknown names, missing or corrupt data, a
damaged SavedModel, a folder that is a file or read-only, a full disk, a workdir locked by
another run) is one `error: ...` line on stderr and exit code 2, never a traceback. Anything
else is a bug: one line says what the program was doing (the action and its last progress
line), then the traceback follows.

Interruptions: during a run, `--evaluate`, `--fetch_data` or `--drill`, SIGTERM (a scheduler, a
session's end) and Ctrl-C raise `Interrupted` in the main thread. It unwinds through every
`with` and `finally` like any exception - a building stage writes its record and clock, locks
are released, checkpoints and bank chunks stay as the last completed write left them (the same
states a SIGKILL drill resumes from) - and is reported as one line naming what was
interrupted and saying that the same command resumes; exit code 128 + the signal (143 for
SIGTERM, 130 for Ctrl-C), no traceback. `--serve` keeps its own handlers (drain on SIGTERM).
"""

from __future__ import annotations

import errno
import functools
import signal
import sys
import threading
from typing import Callable, Optional

from latmix_tf import workdir_lock
from latmix_tf.data import DataFormatError, DatasetNotFoundError, FetchError

USER_ERRORS = (ValueError, FileNotFoundError, DataFormatError, DatasetNotFoundError, FetchError,
               workdir_lock.WorkdirLockedError)
_DOING = {"what": "starting", "last": ""}  # for the one line before an internal traceback


# --- what an OSError means to a user ------------------------------------------------------

# The environment's fault, not the program's: reported as one line, no traceback.
USER_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted", errno.ENOTDIR: "not a folder",
               errno.EISDIR: "is a folder", errno.ENOENT: "no such file or folder",
               errno.ENAMETOOLONG: "name too long", errno.EEXIST: "already exists"}
_TF_FS_ERRORS = ("No space left on device", "Read-only file system", "Permission denied",
                 "Not a directory", "Disk quota exceeded")


def environment_error(e: BaseException, doing: str = "") -> Optional[str]:
  """A one-line message if `e` is a filesystem problem of the user's machine, else None.

  Covers Python's OSError (errno above; with its path, or `doing` when the writer gave none,
  as PIL does on a full disk) and TensorFlow's file errors (checkpoint or SavedModel writes).
  """
  if isinstance(e, OSError) and e.errno in USER_ERRNOS:
    path = " -> ".join(str(p) for p in (e.filename, e.filename2) if p)
    where = path or (f"while {doing}" if doing else "")
    return f"{where}: {USER_ERRNOS[e.errno]} ({e.strerror or e})".lstrip(": ")
  if type(e).__module__.startswith("tensorflow"):
    text = str(e).strip()
    if any(s in text for s in _TF_FS_ERRORS):
      return text.splitlines()[0][:300]
  return None


class Interrupted(BaseException):
  """SIGTERM or SIGINT arrived during an action (a BaseException: no `except Exception` in the
  library swallows it)."""

  def __init__(self, signum: int):
    super().__init__(signum)
    self.signum = signum


def _raise_interrupted(signum, frame) -> None:
  del frame
  raise Interrupted(signum)


def handle_interrupts() -> None:
  """SIGTERM and SIGINT raise `Interrupted` from now on (main thread only; a no-op else)."""
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _raise_interrupted)
    signal.signal(signal.SIGINT, _raise_interrupted)


def _error(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)


def doing(what: str) -> None:
  """Records what the program is doing, for the line printed before an internal traceback."""
  _DOING.update(what=what, last="")


def tracked(log: Callable[[str], None]) -> Callable[[str], None]:
  """`log` that also remembers its last line (the progress shown with an internal error)."""
  def sink(line: str) -> None:
    _DOING["last"] = str(line)
    log(line)
  return sink


def user_errors(fn):
  """Expected errors -> `error: ...` and exit code 2; others -> a context line, then traceback.
  The action's signal handlers (`handle_interrupts`) are the caller's again once it returns."""
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    main = threading.current_thread() is threading.main_thread()
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
      return reported(*args, **kwargs)
    finally:
      for signum, handler in saved.items():
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)

  def reported(*args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except Interrupted as e:
      name = "Ctrl-C (SIGINT)" if e.signum == signal.SIGINT else signal.Signals(e.signum).name
      _error(f"interrupted by {name} while {_DOING['what']}; what was finished is saved: run "
             f"the same command again to resume.")
      return 128 + e.signum
    except USER_ERRORS as e:
      _error(str(e))
      return 2
    except Exception as e:  # pylint: disable=broad-except  (re-raised unless environmental)
      if getattr(e, "_latmix_reported", False):  # an inner action already said what it was
        raise
      message = environment_error(e, _DOING["what"])
      if message is not None:
        _error(message)
        return 2
      last = f" (last progress line: {_DOING['last']!r})" if _DOING["last"] else ""
      _error(f"internal error while {_DOING['what']}{last}: {type(e).__name__}; this is a "
             f"bug, the traceback follows.")
      try:
        e._latmix_reported = True  # pylint: disable=protected-access
      except AttributeError:
        pass
      raise
  return wrapper
