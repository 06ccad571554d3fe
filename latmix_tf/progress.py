"""Progress a user can follow: a flushed log sink and progress bars for long loops.

Why: `print` buffers when stdout is a pipe (`python main.py ... | tee log`, CI, nohup), so a
run looked dead for minutes, and an epoch of 1-3 minutes showed no sign of life inside.

- `log_sink()` returns the `log(msg)` callable the library takes everywhere. It writes
  through Python's `logging` (logger "latmix", its own handler on stdout, the message
  alone) and `logging.StreamHandler` flushes after every record, so each line leaves the
  process when it is logged, piped or not. absl's handler is not involved, so lines do not
  repeat with absl's prefix.
- `bar(total, desc, log)` wraps a long loop. On a terminal it redraws one line in place
  (`\r`, like tqdm or Keras' Progbar); elsewhere (pipe, file, CI) it logs a plain line at
  most every `interval_s` seconds and once at the end, so a log file gets a heartbeat
  instead of thousands of carriage returns:

    with progress.bar(len(batches), "epoch 3", log) as b:
      for batch in batches:
        ...
        b.update(1, loss=float(loss))
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Callable, Iterator, Optional, TextIO

LOGGER = "latmix"


class _StdoutHandler(logging.StreamHandler):
  """StreamHandler on whatever `sys.stdout` is at emit time (pytest and tools swap it)."""

  def emit(self, record):
    if self.stream is not sys.stdout:
      self.setStream(sys.stdout)
    super().emit(record)  # writes the line and flushes


def log_sink(timestamps: bool = False) -> Callable[[str], None]:
  """The `log(msg)` callable: one logging record per line, flushed as it is written.

  Args:
    timestamps: prefix each line with the wall-clock time (HH:MM:SS).
  Returns:
    A function taking a message; multi-line messages stay one record.
  """
  logger = logging.getLogger(LOGGER)
  logger.setLevel(logging.INFO)
  logger.propagate = False  # absl's root handler would print it again, to stderr
  handler = next((h for h in logger.handlers if isinstance(h, _StdoutHandler)), None)
  if handler is None:
    handler = _StdoutHandler(sys.stdout)
    logger.addHandler(handler)
  handler.setFormatter(logging.Formatter("%(asctime)s %(message)s" if timestamps
                                         else "%(message)s", datefmt="%H:%M:%S"))
  return lambda msg: logger.info("%s", msg)


def _fmt_seconds(s: float) -> str:
  s = int(round(s))
  return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Bar:
  """Progress of one loop; see `bar` (the context manager to use)."""

  def __init__(self, total: Optional[int], desc: str, log: Callable[[str], None],
               stream: TextIO, tty: bool, interval_s: float, width: int = 30,
               final_line: bool = True, start: int = 0):
    self.total, self.desc, self._log, self._stream = total, desc, log, stream
    self._final = final_line
    self._tty, self._interval, self._width = tty, interval_s, width
    # `start`: steps already done before this process (a resumed epoch); the rate counts
    # only the steps seen here.
    self.done, self._start_done, self.metrics = start, start, {}
    self._start = self._last = time.monotonic()
    self._logged_at = -1

  def _text(self) -> str:
    elapsed = time.monotonic() - self._start
    rate = (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0
    parts = [f"{self.desc}:"]
    if self.total:
      frac = min(1.0, self.done / self.total)
      if self._tty:
        fill = int(frac * self._width)
        parts.append("[" + "=" * fill + (">" if fill < self._width else "") +
                     "." * max(0, self._width - fill - 1) + "]")
      parts.append(f"{self.done}/{self.total} ({100 * frac:.0f}%)")
      if 0 < self.done < self.total and rate > 0:
        parts.append(f"eta {_fmt_seconds((self.total - self.done) / rate)}")
    else:
      parts.append(str(self.done))
    parts.append(f"{rate:.3g}/s, {_fmt_seconds(elapsed)} elapsed")
    parts += [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
              for k, v in self.metrics.items()]
    return " ".join(parts)

  def update(self, n: int = 1, **metrics):
    """Advances by `n` steps; `metrics` (latest values) are shown with the count."""
    self.done += n
    self.metrics.update(metrics)
    now = time.monotonic()
    if self._tty:
      if now - self._last >= 0.1 or (self.total and self.done >= self.total):
        self._stream.write("\r" + self._text() + "\033[K")
        self._stream.flush()
        self._last = now
    elif now - self._last >= self._interval:
      self._log(self._text())
      self._last, self._logged_at = now, self.done

  def close(self):
    """Final state: the finished line on a terminal, a last log line elsewhere."""
    if self._tty:
      self._stream.write("\r" + self._text() + "\033[K\n")
      self._stream.flush()
    elif self._logged_at != self.done and (self._final or self._logged_at >= 0):
      self._log(self._text())
      self._logged_at = self.done


@contextlib.contextmanager
def bar(total: Optional[int], desc: str, log: Optional[Callable[[str], None]] = None,
        stream: Optional[TextIO] = None, interval_s: float = 10.0,
        tty: Optional[bool] = None, final_line: bool = True, start: int = 0) -> Iterator[Bar]:
  """A progress bar for a loop of `total` steps (None: unknown).

  Args:
    total: number of steps the loop will report through `update`.
    desc: what is progressing ("epoch 3/20", "latent bank", "PGD eps=0.1").
    log: the plain-line sink (default: `log_sink()`); used when the stream is not a TTY.
    stream: where a TTY bar is drawn (default: sys.stdout at entry).
    interval_s: seconds between plain lines when not on a TTY.
    tty: force the mode; default `stream.isatty()`.
    final_line: when not a TTY, log the final state even if no interim line was due (off
      for loops whose caller logs its own summary line, e.g. each epoch).
    start: steps done before (an epoch resumed mid-way starts its bar there).
  Yields:
    The `Bar`; call `.update(n, **metrics)`.
  """
  stream = stream or sys.stdout
  is_tty = tty if tty is not None else bool(getattr(stream, "isatty", lambda: False)())
  b = Bar(total, desc, log or log_sink(), stream, is_tty, interval_s, final_line=final_line,
          start=start)
  try:
    yield b
  finally:
    b.close()
