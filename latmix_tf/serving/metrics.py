"""Prometheus metrics of the server: requests per model and status, latency histograms.

TF Serving exposes its metrics at `/monitoring/prometheus/metrics` when monitoring is on; we
answer there and at the usual `/metrics`, in Prometheus' text exposition format 0.0.4,
written here (a few lines) rather than pulling in a client library.
"""

from __future__ import annotations

import bisect
import threading
from typing import Callable, Dict, Tuple

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _labels(**kv) -> str:
  esc = {k: str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
         for k, v in kv.items()}
  return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


class Metrics:
  """Thread-safe counters and histograms; `render()` gives the exposition text."""

  def __init__(self):
    self._lock = threading.Lock()
    self._count: Dict[Tuple[str, str, int], int] = {}
    self._hist: Dict[Tuple[str, str], list] = {}  # (model, api) -> [bucket counts, sum, count]
    self.gauges: Dict[str, Tuple[str, Callable[[], float]]] = {}

  def observe(self, model: str, api: str, code: int, seconds: float):
    """Records one answered request (every status, errors included)."""
    with self._lock:
      key = (model, api, code)
      self._count[key] = self._count.get(key, 0) + 1
      h = self._hist.setdefault((model, api), [[0] * (len(BUCKETS) + 1), 0.0, 0])
      h[0][bisect.bisect_left(BUCKETS, seconds)] += 1
      h[1] += seconds
      h[2] += 1

  def render(self) -> str:
    with self._lock:
      counts = sorted(self._count.items())
      hists = sorted((k, [list(v[0]), v[1], v[2]]) for k, v in self._hist.items())
    out = ["# HELP latmix_serving_requests_total Requests answered, by model, API and HTTP "
           "status code.", "# TYPE latmix_serving_requests_total counter"]
    out += [f"latmix_serving_requests_total{_labels(model=m, api=a, code=c)} {n}"
            for (m, a, c), n in counts]
    out += ["# HELP latmix_serving_request_latency_seconds Time from the request's arrival to "
            "its answer, by model and API.",
            "# TYPE latmix_serving_request_latency_seconds histogram"]
    for (m, a), (buckets, total, n) in hists:
      running = 0
      for le, c in zip([*map(repr, BUCKETS), "+Inf"], buckets):
        running += c
        out.append(f"latmix_serving_request_latency_seconds_bucket"
                   f"{_labels(model=m, api=a, le=le)} {running}")
      out.append(f"latmix_serving_request_latency_seconds_sum{_labels(model=m, api=a)} {total!r}")
      out.append(f"latmix_serving_request_latency_seconds_count{_labels(model=m, api=a)} {n}")
    for name, (help_text, read) in sorted(self.gauges.items()):
      out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {read()}"]
    return "\n".join(out) + "\n"
