"""Giving the memory of a large request back to the operating system (glibc malloc).

Why: a 32 MB predict briefly needs a few hundred MB (the body, one group of Python objects
per element group, float arrays, TensorFlow's chunk tensors), much of it allocated by the
worker and TensorFlow threads, each of which glibc gives its own arena. Freed chunks stay
in those arenas, so without help the server's RSS climbs to many times the largest body
after a few large requests and never comes down. Two settings, both cheap:

- `limit_arenas(2)` (glibc's M_ARENA_MAX, the same as the environment variable
  `MALLOC_ARENA_MAX=2`, but set from inside the process; `serve` sets it before the models
  load, because a thread keeps the arena it first got and TensorFlow's pools start there);
- `trim()` (`malloc_trim(0)`) after every request over `large_body_bytes`: returns the free
  pages of every arena to the OS; a few ms per large request.

The steady state this gives is measured in docs/serving.md ("Memory").

On a C library without these calls (musl, macOS) both do nothing and return False.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_ARENA_MAX = -8  # glibc's mallopt parameter number
try:
  _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  _MALLOPT, _TRIM = _LIBC.mallopt, _LIBC.malloc_trim
except (OSError, AttributeError):
  _MALLOPT = _TRIM = None


def limit_arenas(count: int = 2) -> bool:
  """Caps glibc's malloc arenas for threads started from now on; True if applied."""
  return bool(_MALLOPT and _MALLOPT(_M_ARENA_MAX, int(count)) == 1)


def trim() -> bool:
  """Returns free heap pages of every arena to the OS; True if glibc released any."""
  return bool(_TRIM and _TRIM(0) == 1)


def rss_bytes(pid: str = "self") -> int:
  """Resident set size of a process (Linux /proc), 0 where unavailable."""
  try:
    with open(f"/proc/{pid}/status") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return 0
