"""TF Serving's URLs: the model route grammar, and the labels /metrics files a request under.

Why one place: the connection thread reads a URL twice over - once to answer it
(`rest.ModelServer`) and once, before the body arrives, to name the model and API the answer
is counted under - and both readings must agree on what a route is. A version is ASCII
digits of int64 size, as TF Serving's version numbers; the metric labels are bounded, so a
client cannot grow /metrics with made-up model names or verbs.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Collection, NamedTuple, Optional, Tuple

from latmix_tf.serving.repository import ServingError, clip

# [0-9], not \d: a version is ASCII digits ('٣' or a full-width '３' is not version 3).
_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+)"
                    r"|/labels/(?P<label>[^/:]+))?(?P<verb>/metadata|:[A-Za-z]+)?$")
_LONG_VERSION = re.compile(r"^/v1/models/[^/:]+/versions/[0-9]{19,}")
METRICS_PATHS = ("/metrics", "/monitoring/prometheus/metrics")
MAX_VERSION_DIGITS = 18  # int64, as TF Serving's version numbers
API_LABELS = ("predict", "metadata", "status", "classify", "regress")  # else "other"


class Route(NamedTuple):
  """A parsed URL: model name, version digits or label (or neither), verb (or None)."""
  name: str
  version: Optional[str]
  label: Optional[str]
  verb: Optional[str]


def parse_route(method: str, path: str) -> Route:
  """The model route of `path`; 404 for unknown routes, 400 for a version over 18 digits."""
  path = urllib.parse.unquote(urllib.parse.urlsplit(path).path)
  if _LONG_VERSION.match(path):
    raise ServingError(400, f"Malformed request: version numbers have at most "
                            f"{MAX_VERSION_DIGITS} digits")
  match = _ROUTE.match(path)
  if not match:
    raise ServingError(404, f"Malformed request: {method} {clip(path)} (routes: /v1/models/"
                            f"NAME[/versions/V|/labels/L][/metadata|:predict], /metrics)")
  return Route(*match.group("name", "version", "label", "verb"))


def metric_labels(method: str, path: str, served: Collection[str]) -> Tuple[str, str]:
  """(model, api) that /metrics counts a request to `path` under.

  Labels are bounded: a model not in `served` is "" and a verb not in `API_LABELS` is
  "other", so an unknown model or verb is one value, not one per URL.
  """
  path = path.split("?", 1)[0]
  if path in METRICS_PATHS:
    return "", "metrics"
  model, api = "", "other"
  try:
    route = parse_route(method, path)
    model, api = route.name, (route.verb or "/status").lstrip(":/")
  except ServingError:
    pass
  return (model if model in served else ""), (api if api in API_LABELS else "other")
