"""Decoding a predict body without letting one request own the process.

Why not `json.loads`: a 32 MB body of 10,000 images becomes ~8 million Python floats
(~250 MB) in one C call that holds the GIL for seconds, so every other client waits and the
server's memory grows eightfold. Here the body is checked and decoded piecewise:

- `max_depth` scans the raw bytes with numpy (strings and escapes honoured) so a
  5000-deep nesting is refused with a 400 before any recursive parser sees it;
- `decode_request` walks the top-level object itself and decodes every top-level array one
  element at a time (`json.JSONDecoder.raw_decode`, still C speed), turning each small group
  of elements into a numpy array at once. Peak memory is the body text plus the final
  arrays; between elements other threads get the GIL.

A decoded top-level array is a `Stacked`: the batch as one array (plain elements) or as
{key: array} (elements that are objects, TF Serving's named row format).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from latmix_tf.serving.repository import ServingError

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_QUOTE, _BACKSLASH = 34, 92
_OPEN, _CLOSE = (91, 123), (93, 125)  # [ {  and  ] }


def max_depth(body, block: int = 1 << 20) -> int:
  """Deepest nesting of arrays/objects in a JSON text, brackets inside strings ignored.

  Vectorized over blocks of `block` bytes (bounded memory); a quote preceded by an odd run
  of backslashes is escaped.
  """
  data = np.frombuffer(body, np.uint8)
  depth, in_string, run, best = 0, 0, 0, 0
  for start in range(0, len(data), block):
    a = data[start:start + block]
    quote = a == _QUOTE
    slash = a == _BACKSLASH
    if quote.any() and (slash.any() or run):
      idx = np.arange(len(a))
      last = np.maximum.accumulate(np.where(slash, -1, idx))  # last non-backslash at or before
      q = np.flatnonzero(quote)
      prev = q - 1
      safe = np.maximum(prev, 0)
      runs = np.where(prev < 0, run,
                      np.where(last[safe] < 0, safe + 1 + run, safe - last[safe]))
      quote[q[runs % 2 == 1]] = False
    parity = (np.cumsum(quote, dtype=np.int64) + in_string) & 1
    step = (np.isin(a, _OPEN).astype(np.int32) - np.isin(a, _CLOSE))
    step[parity.astype(bool) & ~quote] = 0
    levels = np.cumsum(step) + depth
    if len(levels):
      best, depth = max(best, int(levels.max())), int(levels[-1])
      in_string = int(parity[-1])
      tail = np.flatnonzero(~slash)
      run = run + len(a) if not len(tail) else len(a) - 1 - int(tail[-1])
  return best


class Stacked:
  """A top-level JSON array decoded into numpy: `.array`, or `.columns` for object elements.

  The groups are joined on first access, i.e. after the caller has dropped the body text,
  so the text and the joined copy are never held together.
  """

  def __init__(self, key: str, plain: List[np.ndarray],
               named: Optional[Dict[str, List[np.ndarray]]], count: int):
    self._key, self._plain, self._named, self.count = key, plain, named, count
    self._array: Optional[np.ndarray] = None
    self._columns: Optional[Dict[str, np.ndarray]] = None

  @property
  def array(self) -> Optional[np.ndarray]:
    """The batch (None for object elements or an empty array)."""
    if self._array is None and self._plain:
      self._array = _concat(self._plain, f"'{self._key}'")
    return self._array

  @property
  def columns(self) -> Optional[Dict[str, np.ndarray]]:
    """{input name: batch} when the elements were objects, else None."""
    if self._named is not None and self._columns is None:
      self._columns = {}
      while self._named:
        name, parts = self._named.popitem()
        self._columns[name] = _concat(parts, f"input {name!r}")
    return self._columns


def _as_array(values: List[Any], target: Optional[np.dtype], where: str) -> np.ndarray:
  try:
    arr = np.asarray(values)
  except ValueError as e:  # numpy 2 refuses ragged nesting
    raise ServingError(400, f"{where}: not a rectangular tensor (ragged nested lists?): {e}") from e
  if target is not None and np.issubdtype(target, np.floating) and arr.dtype.kind in "iuf":
    arr = arr.astype(target, copy=False)  # float32 now: never hold the float64 copy of a batch
  return arr


def _concat(parts: List[np.ndarray], where: str) -> np.ndarray:
  """Joins groups into one array, releasing each group once copied (and emptying `parts`),
  so the join never holds two copies of the batch."""
  if len(parts) == 1:
    return parts.pop()
  if len({p.shape[1:] for p in parts}) > 1:
    raise ServingError(400, f"{where}: not a rectangular tensor (instances of different shapes)")
  out = np.empty((sum(len(p) for p in parts), *parts[0].shape[1:]), np.result_type(*parts))
  start = 0
  parts.reverse()
  while parts:
    part = parts.pop()
    out[start:start + len(part)] = part
    start += len(part)
  return out


class _ArrayReader:
  """Collects the elements of one top-level array into groups and converts each group."""

  def __init__(self, key: str, target: Callable[[Optional[str]], Optional[np.dtype]],
               max_items: int, group: int):
    self.key, self.target, self.max_items, self.group = key, target, max_items, group
    self.pending: List[Any] = []
    self.plain: List[np.ndarray] = []
    self.named: Dict[str, List[np.ndarray]] = {}
    self.names: Optional[List[str]] = None
    self.count = 0

  def add(self, element: Any):
    self.count += 1
    if self.count > self.max_items:
      raise ServingError(413, f"'{self.key}' has more than {self.max_items} instances, the "
                              f"server's max_batch_size; split the request")
    self.pending.append(element)
    if len(self.pending) >= self.group:
      self.flush()

  def flush(self):
    group, self.pending = self.pending, []
    if not group:
      return
    objects = [isinstance(g, dict) for g in group]
    first = self.count - len(group)
    if any(objects) and not all(objects) or (any(objects) and self.plain) or (
        not any(objects) and self.names is not None):
      raise ServingError(400, f"'{self.key}' mixes objects and plain tensors")
    if not any(objects):
      self.plain.append(_as_array(group, self.target(None), f"'{self.key}'"))
      return
    for i, g in enumerate(group):
      names = sorted(g)
      if self.names is None:
        self.names = names
      elif names != self.names:
        raise ServingError(400, f"instance {first + i} has inputs {names}, instance 0 has "
                                f"{self.names}")
    for name in self.names:
      self.named.setdefault(name, []).append(
          _as_array([g[name] for g in group], self.target(name), f"input {name!r}"))

  def result(self) -> Stacked:
    self.flush()
    return Stacked(self.key, self.plain, self.named if self.names is not None else None,
                   self.count)


def _skip(text: str, i: int) -> int:
  return _WS.match(text, i).end()


def _read_array(text: str, i: int, reader: _ArrayReader) -> int:
  """Decodes the array starting at text[i] == '[' into `reader`; returns the index after it."""
  i = _skip(text, i + 1)
  if text[i] == "]":
    return i + 1
  while True:
    element, i = _DECODER.raw_decode(text, i)
    reader.add(element)
    i = _skip(text, i)
    if text[i] == "]":
      return i + 1
    if text[i] != ",":
      raise ValueError(f"Expecting ',' delimiter: char {i}")
    i = _skip(text, i + 1)


def decode_request(text: str, target: Callable[[Optional[str]], Optional[np.dtype]],
                   max_items: int, group: int = 64) -> Dict[str, Any]:
  """Parses a request object; every top-level array (and every array value of a top-level
  object) becomes a `Stacked`.

  Args:
    text: the body as a string.
    target: input name (None: the only input) -> numpy dtype that floats are stored in, as
      far as the signature is known; None keeps numpy's choice.
    max_items: more elements in any array -> 413 (the per-request instance cap).
    group: elements converted to numpy at a time.
  Raises:
    ServingError(400) for malformed JSON or a non-object body, (413) over `max_items`.
  """
  try:
    i = _skip(text, 0)
    if not text[i:i + 1] == "{":
      value, end = _DECODER.raw_decode(text, i)
      if _skip(text, end) != len(text):
        raise ValueError(f"Extra data: char {end}")
      raise ServingError(400, f"JSON Value: request body must be a JSON object, got "
                              f"{type(value).__name__}")
    request: Dict[str, Any] = {}
    i = _skip(text, i + 1)
    if text[i] == "}":
      i += 1
    else:
      while True:
        if text[i] != '"':
          raise ValueError(f"Expecting property name enclosed in double quotes: char {i}")
        key, i = _DECODER.raw_decode(text, i)
        i = _skip(text, i)
        if text[i] != ":":
          raise ValueError(f"Expecting ':' delimiter: char {i}")
        i = _skip(text, i + 1)
        request[key], i = _read_value(text, i, key, target, max_items, group)
        i = _skip(text, i)
        if text[i] == "}":
          i += 1
          break
        if text[i] != ",":
          raise ValueError(f"Expecting ',' delimiter: char {i}")
        i = _skip(text, i + 1)
    if _skip(text, i) != len(text):
      raise ValueError(f"Extra data: char {i}")
    return request
  except (ValueError, IndexError, RecursionError) as e:
    if isinstance(e, IndexError):
      e = ValueError("Unexpected end of the JSON text")
    raise ServingError(400, f"JSON Parse error: {e}") from e


def _read_value(text, i, key, target, max_items, group):
  if text[i] == "[":
    reader = _ArrayReader(key, target, max_items, group)
    i = _read_array(text, i, reader)
    return reader.result(), i
  if text[i] == "{" and key == "inputs":  # columnar {input name: batched tensor}
    out, i = {}, _skip(text, i + 1)
    if text[i] == "}":
      return out, i + 1
    while True:
      name, i = _DECODER.raw_decode(text, i)
      i = _skip(text, i)
      if text[i] != ":":
        raise ValueError(f"Expecting ':' delimiter: char {i}")
      i = _skip(text, i + 1)
      if text[i] == "[":
        reader = _ArrayReader(f"inputs.{name}", lambda _n, name=name: target(name),
                              max_items, group)
        i = _read_array(text, i, reader)
        out[name] = reader.result()
      else:
        out[name], i = _DECODER.raw_decode(text, i)
      i = _skip(text, i)
      if text[i] == "}":
        return out, i + 1
      if text[i] != ",":
        raise ValueError(f"Expecting ',' delimiter: char {i}")
      i = _skip(text, i + 1)
  return _DECODER.raw_decode(text, i)
