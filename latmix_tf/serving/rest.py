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
`ModelServer` maps a method and URL to an answer and knows nothing of sockets (server.py).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from latmix_tf import export
from latmix_tf.serving import repository
from latmix_tf.serving.repository import ServingError

_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
                    r"(?P<verb>/metadata|:[A-Za-z]+)?$")


def decode_json(body: bytes) -> Dict[str, Any]:
  """Parses a request body into a JSON object; 400 for anything else."""
  try:
    request = json.loads(body.decode("utf-8"))
  except (UnicodeDecodeError, ValueError) as e:
    raise ServingError(400, f"JSON Parse error: {e}") from e
  if not isinstance(request, dict):
    raise ServingError(400, f"JSON Value: request body must be a JSON object, got "
                            f"{type(request).__name__}")
  return request


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
  """Rows -> {input name: list of per-example values}."""
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
  """Answers TF Serving REST requests for a fixed set of loaded servables."""

  def __init__(self, servables: Dict[str, Dict[int, repository.Servable]]):
    self.servables = servables

  def _find(self, name: str, version: Optional[str]) -> repository.Servable:
    versions = self.servables.get(name)
    if not versions:
      raise ServingError(404, f"Servable not found for request: Latest({name}) "
                              f"(models served: {sorted(self.servables)})")
    if version is None:
      return versions[max(versions)]
    if int(version) not in versions:
      raise ServingError(404, f"Servable not found for request: Specific({name}, {version}) "
                              f"(versions served: {sorted(versions)})")
    return versions[int(version)]

  def handle(self, method: str, path: str, body: Optional[bytes]) -> Tuple[int, dict]:
    """(HTTP status, JSON object) for one request; raises ServingError for refusals."""
    match = _ROUTE.match(urllib.parse.unquote(urllib.parse.urlsplit(path).path))
    if not match:
      raise ServingError(404, f"Malformed request: {method} {path} (routes: /v1/models/NAME"
                              f"[/versions/V][/metadata|:predict])")
    name, version, verb = match.group("name", "version", "verb")
    expected_method = "POST" if verb and verb.startswith(":") else "GET"
    if method != expected_method:
      raise ServingError(405, f"Malformed request: {method} {path} (use {expected_method})")
    servable = self._find(name, version)
    if verb is None:
      chosen = [servable] if version else sorted(self.servables[name].values(),
                                                 key=lambda s: -s.version)
      return 200, {"model_version_status": [
          {"version": str(s.version), "state": "AVAILABLE",
           "status": {"error_code": "OK", "error_message": ""}} for s in chosen]}
    if verb == "/metadata":
      return 200, servable.metadata()
    if verb != ":predict":
      raise ServingError(400 if verb in (":classify", ":regress") else 404,
                         f"{verb[1:]} is not supported by this server; use :predict")
    request = decode_json(body or b"")
    sig = signature_name(request, export.SIGNATURE)
    _, specs = servable.signature(sig)
    inputs, row_format = decode_inputs(request, specs)
    return 200, encode_outputs(servable.predict(sig, inputs), row_format)
