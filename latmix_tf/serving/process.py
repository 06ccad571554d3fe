"""Running the server as the process: signals, garbage collection, an honest exit code.

`serve` owns the process while it runs. On SIGTERM or SIGINT the signal handler itself
closes the listening socket (so no new connection is accepted even while the main thread
waits for the GIL), then requests in flight get `drain_timeout_s` to finish. The handlers
are installed before the socket listens, so a SIGTERM right after start-up drains too.
Each request still running after that is logged by its request line and client, and
`serve` returns 1, so a supervisor (systemd, Kubernetes, a shell script) sees that answers
were lost.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import signal
import time
from typing import Callable, Dict, Optional

_flushing_print = functools.partial(print, flush=True)  # lines appear even when piped

from latmix_tf.serving import memory
from latmix_tf.serving.server import ServerConfig, listen, load_app

MALLOC_ARENAS = 2  # glibc malloc arenas for the serving threads (see memory.py)


def serve(models: Dict[str, str], config: Optional[ServerConfig] = None,
          log: Callable[[str], None] = _flushing_print,
          model_config_file: Optional[str] = None,
          **overrides) -> int:
  """Serves until SIGTERM or SIGINT (Ctrl-C), then drains and returns the exit code.

  Arguments as in `start_server`. Must run in the main thread (signal handlers live there).
  The order: cap malloc arenas (`memory.limit_arenas`, before TensorFlow's thread pools
  start), load the models, `gc.freeze()` (TensorFlow leaves ~350k Python objects that every
  full garbage collection would walk, ~200 ms on 2 cores, stalling every request in flight
  about once a second under load; frozen, they are skipped), install the signal handlers,
  and only then open the socket and log `serving: listening on ...`, last. That line is a
  promise: a SIGTERM at any moment after it is a drain, never a kill.

  Returns:
    0 if every request was answered, 1 if some were still running at the drain deadline.
  """
  config = dataclasses.replace(config or ServerConfig(), **overrides)
  memory.limit_arenas(MALLOC_ARENAS)  # before loading: TensorFlow's thread pools start there
  app = load_app(models, config, model_config_file)
  gc.collect()
  gc.freeze()
  received, box = [], {}

  # The handler takes no lock: it runs in the main thread between two bytecodes, and
  # `threading.Event.set()` from here deadlocks when the signal lands inside the main thread's
  # own `Event.wait()` while that holds the event's lock. The main thread polls `received`.
  def on_signal(signum, _frame):
    if not received and "handle" in box:
      box["handle"].stop_accepting()
    received.append(signal.Signals(signum).name)

  previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    box["handle"] = handle = listen(app, config, log)
    if received:  # a signal came while the socket was being opened
      handle.stop_accepting()
    while not received:
      time.sleep(0.1)
    log(f"serving: {received[0]} received, listening socket closed, finishing in-flight "
        f"requests")
  finally:
    clean = box["handle"].shutdown() if "handle" in box else True
    for s, handler in previous.items():
      signal.signal(s, handler)
  for line in handle.dropped:
    log(f"serving: dropped request (still running at the drain deadline): {line}")
  log("serving: stopped" + ("" if clean else f"; {len(handle.dropped)} request(s) dropped"))
  return 0 if clean else 1
