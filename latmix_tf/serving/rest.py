"""TF Serving's REST API: its routes, and the JSON of its predict requests and responses.

A client written against TensorFlow Serving must get the same answers here, so this module
follows the REST API document (tensorflow.org/tfx/serving/api_rest): a request holds either
`instances` (row format: a list with one entry per example, each the tensor itself or, per
example, an object {input name: tensor}) or `inputs` (columnar: the tensor itself or an
object {input name: batched tensor}), never both. Row requests are answered with
`{"predictions": [...]}` — one object {output name: value} per example, or the bare values
when the signature has a single output — and columnar ones with `{"outputs": ...}` — an
object {output name: batched value}, or the bare batched value for a single output.

Inputs are checked strictly before any model runs: numbers only for numeric tensors (no
strings, booleans or nulls), rectangular nesting, the signature's rank and static dimensions.
Every violation is a `ServingError(400, ...)` whose message says what was expected.
Bodies are decoded by `jsonbody`, each instance admitted against the signature's shape
before it is decoded (`instance_budget`); large batches run in chunks, and small concurrent
ones may be merged (`workers.Batcher`). Error messages echo at most `ECHO_CHARS` characters
of anything the client sent, and a 404 names what was not found but never lists what is
served (the server has no authentication).
`ModelServer` maps a method and URL to an answer and knows nothing of sockets (server.py).

Routes beyond TF Serving's model routes (the URL grammar is `routes`):
`/v1/models/NAME/labels/LABEL[...]` (version labels from the model config file, as in TF
Serving) and `/metrics` (also at TF Serving's `/monitoring/prometheus/metrics`) for Prometheus.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from latmix_tf import export
from latmix_tf.serving import jsonbody, metrics, repository, stacking, workers
from latmix_tf.serving.repository import ServingError, clip
from latmix_tf.serving.routes import METRICS_PATHS, Route, parse_route


def encode_json(answer: Dict[str, Any], rows_per_part: int = 256) -> bytes:
  """JSON bytes of an answer; long prediction lists are encoded a part at a time so that a
  10,000-row answer does not hold the GIL in one `json.dumps` call."""
  rows = answer.get("predictions")
  if not isinstance(rows, list) or len(rows) <= rows_per_part:
    return json.dumps(answer).encode("utf-8")
  parts = [json.dumps(rows[i:i + rows_per_part])[1:-1]
           for i in range(0, len(rows), rows_per_part)]
  return ('{"predictions": [' + ", ".join(parts) + "]}").encode("utf-8")


def signature_name(request: Dict[str, Any], default: str) -> str:
  name = request.get("signature_name", default)
  if not isinstance(name, str):
    raise ServingError(400, "'signature_name' must be a string")
  return name


def _shape_text(shape: tf.TensorShape) -> str:
  return "[" + ", ".join("-1" if d is None else str(d) for d in shape.as_list()) + "]"


def to_tensor(value: Any, spec: tf.TensorSpec, what: str) -> np.ndarray:
  """Converts nested JSON lists into an array of `spec`'s dtype and checks its shape.

  Raises:
    ServingError(400): ragged nesting, non-numeric values, or a shape `spec` does not admit.
  """
  if isinstance(value, jsonbody.Stacked):
    if value.columns is not None:
      raise ServingError(400, f"{what}: expected a tensor, got a list of objects")
    value = value.array if value.array is not None else []
  try:
    arr = np.asarray(value)
  except ValueError as e:  # numpy 2 refuses ragged nesting
    raise ServingError(400, f"{what}: not a rectangular tensor (ragged nested lists?): {e}") from e
  dtype = tf.as_dtype(spec.dtype)
  if dtype.is_floating:
    ok = arr.dtype.kind in "iuf"
  elif dtype.is_integer:
    ok = arr.dtype.kind in "iu"
  elif dtype.is_bool:
    ok = arr.dtype.kind == "b"
  else:
    raise ServingError(400, f"{what}: {dtype.name} inputs are not supported by this server")
  if not ok:
    got = {"U": "strings", "O": "mixed values or nulls", "b": "booleans",
           "f": "non-integer numbers"}.get(arr.dtype.kind, str(arr.dtype))
    raise ServingError(400, f"{what}: expected {dtype.name} numbers, got {got}")
  expected = spec.shape
  if not expected.is_compatible_with(arr.shape):
    raise ServingError(400, f"{what}: expected shape {_shape_text(expected)} (-1: any batch size), "
                            f"got {list(arr.shape)}")
  if arr.ndim and arr.shape[0] == 0:
    raise ServingError(400, f"{what}: empty batch; send at least one instance")
  return arr.astype(dtype.as_numpy_dtype, copy=False)


def _row_inputs(instances: Any, specs: Dict[str, tf.TensorSpec]) -> Dict[str, Any]:
  """Rows -> {input name: per-example values}."""
  if isinstance(instances, jsonbody.Stacked):
    if not instances.count:
      raise ServingError(400, "'instances' is empty; send at least one instance")
    if instances.columns is None:
      if len(specs) != 1:
        raise ServingError(400, f"the signature has {len(specs)} inputs {sorted(specs)}: each "
                                f"instance must be an object {{input name: value}}")
      return {next(iter(specs)): instances.array}
    if set(instances.columns) != set(specs):
      raise ServingError(400, f"instances have inputs {sorted(instances.columns)}, the "
                              f"signature expects {sorted(specs)}")
    return dict(instances.columns)
  if not isinstance(instances, list):
    raise ServingError(400, f"'instances' must be a list (one entry per example), got "
                            f"{type(instances).__name__}")
  if not instances:
    raise ServingError(400, "'instances' is empty; send at least one instance")
  if not all(isinstance(row, dict) for row in instances):
    if any(isinstance(row, dict) for row in instances):
      raise ServingError(400, "'instances' mixes objects and plain tensors")
    if len(specs) != 1:
      raise ServingError(400, f"the signature has {len(specs)} inputs {sorted(specs)}: each "
                              f"instance must be an object {{input name: value}}")
    return {next(iter(specs)): instances}
  columns: Dict[str, list] = {k: [] for k in specs}
  for i, row in enumerate(instances):
    if set(row) != set(specs):
      raise ServingError(400, f"instance {i} has inputs {sorted(row)}, the signature expects "
                              f"{sorted(specs)}")
    for k in specs:
      columns[k].append(row[k])
  return columns


def decode_inputs(request: Dict[str, Any],
                  specs: Dict[str, tf.TensorSpec]) -> Tuple[Dict[str, np.ndarray], bool]:
  """Extracts and checks the input tensors of a predict request.

  Returns:
    ({input name: array}, row_format) where row_format is True for `instances` requests.
  """
  has_rows, has_cols = "instances" in request, "inputs" in request
  if has_rows and has_cols:
    raise ServingError(400, "Not both 'instances' and 'inputs' can be specified in one request")
  if not (has_rows or has_cols):
    raise ServingError(400, "Missing 'inputs' or 'instances' key")
  if has_rows:
    raw = _row_inputs(request["instances"], specs)
  elif isinstance(request["inputs"], jsonbody.Stacked) and request["inputs"].columns is not None:
    raise ServingError(400, "'inputs' must be a tensor or an object {input name: tensor}, "
                            "not a list of objects (that is the row format: 'instances')")
  elif isinstance(request["inputs"], dict):
    raw = request["inputs"]
    if set(raw) != set(specs):
      raise ServingError(400, f"'inputs' has {sorted(raw)}, the signature expects {sorted(specs)}")
  elif len(specs) == 1:
    raw = {next(iter(specs)): request["inputs"]}
  else:
    raise ServingError(400, f"the signature has inputs {sorted(specs)}: 'inputs' must be an "
                            f"object {{input name: tensor}}")
  arrays = {k: to_tensor(v, specs[k], f"input {k!r}") for k, v in raw.items()}
  if has_rows and len({a.shape[0] for a in arrays.values()}) > 1:
    raise ServingError(400, "row format needs the same batch size for every input; use 'inputs'")
  return arrays, has_rows


def encode_outputs(outputs: Dict[str, np.ndarray], row_format: bool) -> Dict[str, Any]:
  """The response object for `outputs` of one signature call (see the module docstring)."""
  if row_format:
    if len(outputs) == 1:
      return {"predictions": next(iter(outputs.values())).tolist()}
    lists = {k: outputs[k].tolist() for k in sorted(outputs)}
    n = len(next(iter(lists.values())))
    return {"predictions": [{k: lists[k][i] for k in lists} for i in range(n)]}
  if len(outputs) == 1:
    return {"outputs": next(iter(outputs.values())).tolist()}
  return {"outputs": {k: outputs[k].tolist() for k in sorted(outputs)}}


class ModelServer:
  """Answers TF Serving REST requests for a fixed set of loaded servables.

  Args:
    servables: {name: {version: Servable}}.
    labels: {name: {label: version}} (TF Serving's version labels).
    max_batch_size: instances per request; more is a 413.
    chunk_size: the largest batch the model runs at once (large requests are split, batched
      small ones merged up to it).
    max_json_depth: deeper nesting in a body is a 400 before it is parsed.
    batch_timeout_s: None disables batching; else how long a small request waits for others.
  """

  def __init__(self, servables: Dict[str, Dict[int, repository.Servable]],
               labels: Optional[Dict[str, Dict[str, int]]] = None, max_batch_size: int = 10000,
               chunk_size: int = 64, max_json_depth: int = 32,
               batch_timeout_s: Optional[float] = None):
    self.servables, self.labels = servables, dict(labels or {})
    for name, table in self.labels.items():
      for label, version in table.items():
        if version not in servables.get(name, {}):
          raise ValueError(f"Label {label!r} of model {name!r} points at version {version}, "
                           f"which is not served (versions: {sorted(servables.get(name, {}))}).")
    self.max_batch_size, self.chunk_size = max_batch_size, chunk_size
    self.max_json_depth, self.batch_timeout_s = max_json_depth, batch_timeout_s
    self.metrics = metrics.Metrics()
    self._batchers: Dict[Tuple[str, int, str], workers.Batcher] = {}

  def _find(self, route: Route) -> repository.Servable:
    name, version, label = route.name, route.version, route.label
    versions = self.servables.get(name)
    if not versions:
      raise ServingError(404, f"Servable not found for request: Latest({clip(name)})")
    if label is not None:
      if label not in self.labels.get(name, {}):
        raise ServingError(404, f"Unrecognized servable version label: {clip(label)}")
      return versions[self.labels[name][label]]
    if version is None:
      return versions[max(versions)]
    if int(version) not in versions:
      raise ServingError(404, f"Servable not found for request: Specific({clip(name)}, "
                              f"{version})")
    return versions[int(version)]

  def handle(self, method: str, path: str, body) -> Tuple[int, Any]:
    """(HTTP status, JSON object or metrics text) for one request; raises ServingError.

    `body` is bytes, or a one-element list holding them (popped, so the caller's copy is
    the only other reference and the body can be freed once decoded).
    """
    if urllib.parse.urlsplit(path).path in METRICS_PATHS:
      if method != "GET":
        raise ServingError(405, f"Malformed request: {method} {path} (use GET)")
      return 200, self.metrics.render()
    route = parse_route(method, path)
    expected_method = "POST" if route.verb and route.verb.startswith(":") else "GET"
    if method != expected_method:
      raise ServingError(405, f"Malformed request: {method} {path} (use {expected_method})")
    servable = self._find(route)
    if route.verb is None:
      chosen = ([servable] if route.version or route.label else
                sorted(self.servables[route.name].values(), key=lambda s: -s.version))
      return 200, {"model_version_status": [
          {"version": str(s.version), "state": "AVAILABLE",
           "status": {"error_code": "OK", "error_message": ""}} for s in chosen]}
    if route.verb == "/metadata":
      return 200, servable.metadata()
    if route.verb != ":predict":
      raise ServingError(400 if route.verb in (":classify", ":regress") else 404,
                         f"{route.verb[1:]} is not supported by this server; use :predict")
    return 200, self.predict(servable, body.pop() if isinstance(body, list) else body)

  def predict(self, servable: repository.Servable, body) -> Dict[str, Any]:
    """Decodes, checks and runs one predict body (bytes-like) on `servable`."""

    def expect(request, name):  # what one element may hold, from the signature named so far
      sig = request.get("signature_name")
      if isinstance(sig, str) and sig in servable.input_specs:
        named = [servable.input_specs[sig]]
      else:  # not named (yet): the default's dtype, the largest instance of any signature
        named = list(servable.input_specs.values())
      specs = servable.input_specs.get(sig if isinstance(sig, str) else export.SIGNATURE) or {}
      spec = specs.get(name) if name else (next(iter(specs.values())) if len(specs) == 1 else None)
      budgets = [stacking.instance_budget(s, name) for s in named]
      values = None if None in budgets else max(v for v, _ in budgets)
      return stacking.Budget(tf.as_dtype(spec.dtype).as_numpy_dtype if spec is not None else None,
                             values, 0 if values is None else max(l for _, l in budgets))

    request = jsonbody.decode_request(body, expect, self.max_batch_size, self.max_json_depth)
    del body
    sig = signature_name(request, export.SIGNATURE)
    _, specs = servable.signature(sig)
    inputs, row_format = decode_inputs(request, specs)
    del request
    return encode_outputs(self._run(servable, sig, inputs), row_format)

  def _run(self, servable, sig, inputs) -> Dict[str, np.ndarray]:
    if self.batch_timeout_s is None:
      return servable.predict(sig, inputs, self.chunk_size)
    key = (servable.name, servable.version, sig)
    if key not in self._batchers:
      self._batchers.setdefault(key, workers.Batcher(
          lambda x, s=servable, g=sig: s.predict(g, x, self.chunk_size), self.chunk_size,
          self.batch_timeout_s))
    return self._batchers[key].run(inputs)
