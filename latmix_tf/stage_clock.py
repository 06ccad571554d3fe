"""A stage's clock: the wall and CPU seconds of its work, kept in its record as it runs.

Why its own module: `stages.run_stage` needs the cost of the work summed over every attempt,
and an attempt ended by SIGKILL (how sessions end) cannot report anything at its end - so
the clock reports while it runs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, Dict, Optional

# How often a building stage writes the work done so far into its record (see "seconds").
HEARTBEAT_SECONDS = 60.0


@contextlib.contextmanager
def counting(record: Dict[str, Any], write: Optional[Callable[[Dict[str, Any]], None]]):
  """Adds this attempt's wall and CPU seconds to `record` while the work runs: every
  HEARTBEAT_SECONDS and when it ends, however it ends; `write` (the chief's) persists it.

  Why a heartbeat: comparisons run for days in sessions that end with a kill, and most long
  stages resume at least once; counting only the attempt that finished under-reported a
  resumed PGD-AT classifier by 3.5x."""
  base_s, base_c = record["seconds"], record["cpu_seconds"]
  t0, c0 = time.perf_counter(), time.process_time()
  stop = threading.Event()
  guard = threading.Lock()

  def tick(persist: bool) -> None:
    with guard:
      record.update(seconds=base_s + time.perf_counter() - t0,
                    cpu_seconds=base_c + time.process_time() - c0)
      if persist and write is not None:
        write(dict(record))

  def beat() -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
      tick(persist=True)
  thread = threading.Thread(target=beat, name="stage-clock", daemon=True)
  thread.start()
  try:
    yield
  except BaseException:
    stop.set()
    thread.join()
    tick(persist=True)  # a failed or interrupted attempt keeps its cost for the resume
    raise
  stop.set()
  thread.join()
  tick(persist=False)  # the caller writes the finished record
