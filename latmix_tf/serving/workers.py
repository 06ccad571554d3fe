"""Bounded work: a worker pool with a finite queue, and batching of small predicts.

Why: without a bound, every connection computes at once; four 32 MB requests then hold four
copies of their batches and a one-image request waits behind all of them. Here model work
runs on `num_workers` threads fed by a queue of `queue_size` entries; a request that finds
the queue full is answered at once with 503 and `Retry-After` instead of waiting unseen.

`Batcher` is TF Serving's `--enable_batching` for this server: concurrent small predicts
on the same signature are merged into one model call of at most `max_batch` instances,
waiting at most `timeout_s` (TF Serving's `batch_timeout_micros`) for company.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Dict, List, Optional

import numpy as np

from latmix_tf.serving.repository import ServingError


class WorkerPool:
  """`num_workers` daemon threads running submitted calls from a queue of `queue_size`."""

  def __init__(self, num_workers: int, queue_size: int, retry_after_s: int = 1):
    if num_workers < 1 or queue_size < 1:
      raise ValueError(f"num_workers and queue_size must be >= 1, got {num_workers}, "
                       f"{queue_size}.")
    self._queue: "queue.Queue" = queue.Queue(queue_size)
    self._retry_after = retry_after_s
    self._busy = 0
    self._lock = threading.Lock()
    self._threads = [threading.Thread(target=self._work, name=f"latmix-serving-worker-{i}",
                                      daemon=True) for i in range(num_workers)]
    for t in self._threads:
      t.start()

  @property
  def queued(self) -> int:
    return self._queue.qsize()

  @property
  def busy(self) -> int:
    return self._busy

  def submit(self, fn: Callable, *args) -> Future:
    """Queues fn(*args); raises ServingError(503, retry_after) when the queue is full."""
    future: Future = Future()
    try:
      self._queue.put_nowait((future, fn, args))
    except queue.Full:
      raise ServingError(503, f"Server busy: {self._queue.maxsize} requests already queued; "
                              f"retry later", retry_after=self._retry_after) from None
    return future

  def _work(self):
    while True:
      item = self._queue.get()
      if item is None:
        return
      future, fn, args = item
      if not future.set_running_or_notify_cancel():
        continue
      with self._lock:
        self._busy += 1
      try:
        future.set_result(fn(*args))
      except BaseException as e:  # pylint: disable=broad-except  (handed to the waiting thread)
        future.set_exception(e)
      finally:
        with self._lock:
          self._busy -= 1
        item = future = fn = args = None  # do not keep the last answer alive until the next

  def close(self, timeout: float = 1.0):
    """Stops idle workers (running calls finish on their own; the threads are daemons)."""
    for _ in self._threads:
      try:
        self._queue.put_nowait(None)
      except queue.Full:
        break
    deadline = time.monotonic() + timeout
    for t in self._threads:
      t.join(max(0.0, deadline - time.monotonic()))


class _Batch:
  def __init__(self):
    self.items: List[Dict[str, np.ndarray]] = []
    self.size = 0
    self.done = threading.Event()
    self.results: Optional[List[Dict[str, np.ndarray]]] = None
    self.error: Optional[BaseException] = None


class Batcher:
  """Merges concurrent calls of `run(inputs)` into one call of `fn` on the concatenation.

  The first request of a batch leads: it waits until the batch holds `max_batch` instances
  or `timeout_s` passed, runs `fn` once, and hands every member its rows. Requests of
  `max_batch` instances or more run alone at once.
  """

  def __init__(self, fn: Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]],
               max_batch: int, timeout_s: float):
    self._fn, self._max, self._timeout = fn, max_batch, timeout_s
    self._cond = threading.Condition()
    self._open: Optional[_Batch] = None
    self.batches_run = 0  # tests and metrics: how many model calls the batcher made

  def run(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    n = len(next(iter(inputs.values())))
    if n >= self._max:
      return self._fn(inputs)
    with self._cond:
      batch = self._open
      leader = batch is None or batch.size + n > self._max
      if leader:
        batch = self._open = _Batch()
      index = len(batch.items)
      batch.items.append(inputs)
      batch.size += n
      if batch.size >= self._max:
        self._open = None
        self._cond.notify_all()
      if leader:
        deadline = time.monotonic() + self._timeout
        while self._open is batch and (left := deadline - time.monotonic()) > 0:
          self._cond.wait(left)
        if self._open is batch:
          self._open = None
    if leader:
      self._execute(batch)
    else:
      batch.done.wait()
    if batch.error is not None:
      raise batch.error
    return batch.results[index]

  def _execute(self, batch: _Batch):
    try:
      merged = {k: np.concatenate([item[k] for item in batch.items]) for k in batch.items[0]}
      outputs = self._fn(merged)
      self.batches_run += 1
      sizes = np.cumsum([len(next(iter(item.values()))) for item in batch.items])[:-1]
      split = {k: np.split(v, sizes) for k, v in outputs.items()}
      batch.results = [{k: split[k][i] for k in split} for i in range(len(batch.items))]
    except BaseException as e:  # pylint: disable=broad-except  (every member must learn of it)
      batch.error = e
    finally:
      batch.done.set()
