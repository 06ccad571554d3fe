"""Decoding a predict body with its work and memory bounded per element and per request.

Why not `json.loads`: a 32 MB body becomes millions of Python objects in one C call that
holds the GIL for seconds. Decoding a top-level array one element at a time is not enough
either: `{"instances": [[[], [], ... 10 million ...]]}` is ONE element, and one
`raw_decode` of it holds the GIL for seconds and builds ~1 GB of lists. So nothing here is
decoded before its size is known and admitted:

- the raw bytes are scanned with numpy a block at a time (strings and escapes honoured) to
  find where each element of `instances` / `inputs` ends and how many arrays, objects and
  commas it holds. Each count is checked against what one instance of the signature can
  hold (`stacking.Budget`, e.g. 784 numbers in 813 arrays for a 28x28x1 image) *while
  scanning*, so an oversized element is refused with a 400 after at most one block
  (256 KiB), before any of it is decoded; nesting deeper than `max_depth` is refused the
  same way;
- each admitted element (a few KB) is decoded alone (`json`, C speed) and every small group
  is turned into a numpy array at once, so other threads get the GIL between elements and
  the Python objects alive at any moment are one group's;
- any other value (a key, `signature_name`) may hold at most `MAX_VALUE_BYTES`, and a request
  at most `MAX_KEYS` keys.

Peak memory is the body bytes plus the final arrays (the body is never copied into a `str`).
A decoded instance array is a `stacking.Stacked`: the batch as one array (plain elements)
or as {key: array} (elements that are objects, TF Serving's named row format).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from latmix_tf.serving.repository import ServingError
from latmix_tf.serving.stacking import ArrayReader, Budget, Stacked

BLOCK = 1 << 18             # bytes scanned at a time: the most read before an element is refused
MAX_VALUE_BYTES = 64 << 10  # a value outside the instance arrays (key, signature_name, ...)
MAX_KEYS = 16               # keys of the request object (and of a columnar `inputs` object)
MAX_GAP = 64 << 10          # whitespace between two tokens outside the instance arrays

_WS = re.compile(rb"[ \t\n\r]{0,%d}" % MAX_GAP)
_SCALAR = re.compile(rb"[^ \t\n\r,\]\}]*")
_DECODER = json.JSONDecoder()
_QUOTE, _BACKSLASH, _COMMA = 34, 92, 44
_WS_BYTES = np.frombuffer(b" \t\n\r", np.uint8)


def _scan(a: np.ndarray, in_string: int, run: int):
  """Structure of one block of bytes, given the state at its start (inside a string? the
  length of the backslash run before it). Returns (inside, step, quote, state after):
  `inside` marks string bytes (quotes included), `step` is +1 at [ {, -1 at ] }, else 0."""
  quote = a == _QUOTE
  slash = a == _BACKSLASH
  if quote.any() and (slash.any() or run):  # a quote after an odd backslash run is escaped
    idx = np.arange(len(a))
    last = np.maximum.accumulate(np.where(slash, -1, idx))  # last non-backslash at or before
    q = np.flatnonzero(quote)
    prev = q - 1
    safe = np.maximum(prev, 0)
    runs = np.where(prev < 0, run,
                    np.where(last[safe] < 0, safe + 1 + run, safe - last[safe]))
    quote[q[runs % 2 == 1]] = False
  parity = (np.cumsum(quote, dtype=np.int64) + in_string) & 1
  inside = parity.astype(bool) | quote
  step = ((a == 91) | (a == 123)).astype(np.int32) - ((a == 93) | (a == 125))
  step[inside] = 0
  tail = np.flatnonzero(~slash)
  run = run + len(a) if not len(tail) else len(a) - 1 - int(tail[-1])
  return inside, step, quote, (int(parity[-1]) if len(a) else in_string, run)


def max_depth(body, block: int = 1 << 20) -> int:
  """Deepest nesting of arrays/objects in a JSON text, brackets inside strings ignored."""
  data = np.frombuffer(body, np.uint8)
  depth, state, best = 0, (0, 0), 0
  for start in range(0, len(data), block):
    _, step, _, state = _scan(data[start:start + block], *state)
    levels = np.cumsum(step) + depth
    if len(levels):
      best, depth = max(best, int(levels.max())), int(levels[-1])
  return best


def _too_deep(depth: int, limit: int):
  raise ServingError(400, f"JSON nesting depth over the limit of {limit}")


class _Body:
  """The body bytes with a cursor-free API: skip whitespace, bound and decode one value."""

  def __init__(self, body, max_depth_: int):
    self.buf, self.data, self.max_depth = body, np.frombuffer(body, np.uint8), max_depth_
    self.view = memoryview(self.data)

  def skip(self, i: int) -> int:
    j = _WS.match(self.buf, i).end()
    if j - i == MAX_GAP and j < len(self.data) and int(self.data[j]) in b" \t\n\r":
      raise ServingError(400, f"JSON Parse error: more than {MAX_GAP} bytes of whitespace")
    return j

  def char(self, i: int) -> str:
    if i >= len(self.data):
      raise ValueError("Unexpected end of the JSON text")
    return chr(self.data[i])

  def text(self, start: int, end: int) -> str:
    return str(self.view[start:end], "utf-8")

  def value_end(self, i: int, depth: int, what: str) -> int:
    """End of the value at i (scanning windows growing to MAX_VALUE_BYTES); 400 beyond."""
    c, n = self.char(i), len(self.data)
    if c not in "[{\"":
      end = _SCALAR.match(self.buf, i, min(n, i + MAX_VALUE_BYTES + 1)).end()
      if end - i > MAX_VALUE_BYTES:
        raise ServingError(400, f"{what} is longer than {MAX_VALUE_BYTES} bytes")
      return end
    w = 256
    while True:
      inside, step, quote, _ = _scan(self.data[i:i + w], 0, 0)
      if c == '"':
        q = np.flatnonzero(quote)
        if len(q) >= 2:
          return i + int(q[1]) + 1
      else:
        levels = np.cumsum(step)
        ends = np.flatnonzero(levels == 0)
        top = int(levels[:ends[0]].max()) if len(ends) else int(levels.max())
        if depth + top > self.max_depth:
          _too_deep(depth + top, self.max_depth)
        if len(ends):
          return i + int(ends[0]) + 1
      if i + w >= n:
        raise ValueError("Unexpected end of the JSON text")
      if w >= MAX_VALUE_BYTES:
        raise ServingError(400, f"{what} is longer than {MAX_VALUE_BYTES} bytes")
      w = min(w * 8, MAX_VALUE_BYTES + 1)

  def value(self, i: int, depth: int, what: str) -> Tuple[Any, int]:
    end = self.value_end(i, depth, what)
    return _DECODER.decode(self.text(i, end)), end

  def elements(self, p: int, depth: int, budget: Budget, key: str):
    """Yields (start, end) of each element of the array at p, each checked against `budget`
    before it is yielded; `self.end` is then the index after the closing bracket."""
    max_bytes, max_opens, max_commas = budget.limits()
    data, level, state, pos = self.data, 0, (0, 0), p
    start, base, first, count = p + 1, [0, 0], True, 0  # base: opens, commas before `start`
    total = [0, 0]
    while True:
      a = data[pos:pos + BLOCK]
      if not len(a):
        raise ValueError("Unexpected end of the JSON text")
      inside, step, _, state = _scan(a, *state)
      levels = np.cumsum(step, dtype=np.int64) + level
      ends = np.flatnonzero(levels <= 0)
      stop = int(ends[0]) if len(ends) else len(a)
      top = int(levels[:stop].max()) if stop else level
      if depth + top > self.max_depth:
        _too_deep(depth + top, self.max_depth)
      comma = (a[:stop] == _COMMA) & ~inside[:stop]
      deep = levels[:stop] >= 2
      opens = np.cumsum((step[:stop] > 0) & deep)
      commas = np.cumsum(comma & deep)
      bounds = np.flatnonzero(comma & ~deep).tolist() + ([stop] if len(ends) else [])
      for b in bounds:
        o = total[0] + (int(opens[b - 1]) if b else 0) - base[0]
        k = total[1] + (int(commas[b - 1]) if b else 0) - base[1]
        end = pos + b
        self._check(end - start, o, k, max_bytes, max_opens, max_commas, key, count, budget)
        if not (first and b == stop and len(ends) and not bytes(self.view[start:end]).strip()):
          yield start, end
          count += 1
        first, start = False, end + 1
        base = [total[0] + (int(opens[b - 1]) if b else 0),
                total[1] + (int(commas[b - 1]) if b else 0)]
      if len(ends):
        self.end = pos + stop + 1
        return
      total = [total[0] + (int(opens[-1]) if len(opens) else 0),
               total[1] + (int(commas[-1]) if len(commas) else 0)]
      self._check(pos + len(a) - start, total[0] - base[0], total[1] - base[1], max_bytes,
                  max_opens, max_commas, key, count, budget)
      level, pos = int(levels[-1]), pos + len(a)

  @staticmethod
  def _check(size, opens, commas, max_bytes, max_opens, max_commas, key, index, budget):
    if size > max_bytes or opens > max_opens or commas > max_commas:
      what = (f"{budget.values} numbers in {budget.lists} arrays" if budget.values is not None
              else f"{max_bytes} bytes")
      raise ServingError(400, f"'{key}' element {index} is larger than one instance of the "
                              f"signature can be ({what}); check the input shape")


Expect = Callable[[Dict[str, Any], Optional[str]], Budget]


def decode_request(body, expect: Expect, max_items: int, max_depth_: int = 32,
                   group: int = 64) -> Dict[str, Any]:
  """Parses a request object; the arrays of `instances` and `inputs` (and the arrays of a
  columnar `inputs` object) become `Stacked` batches, every other value plain JSON.

  Args:
    body: the body bytes (bytes or bytearray; not copied).
    expect: (request so far, input name or None for a whole instance) -> `Budget` of one
      element; the request so far lets it use a `signature_name` sent before the instances.
    max_items: more elements in an instance array -> 413 (the per-request instance cap).
    max_depth_: deeper nesting -> 400, found while scanning.
    group: elements converted to numpy at a time.
  Raises:
    ServingError(400) for malformed JSON, a non-object body, an element larger than its
    budget, a value or whitespace run over its limit; (413) over `max_items`.
  """
  b = _Body(body, max_depth_)
  try:
    i = b.skip(0)
    if i >= len(b.data) or b.char(i) != "{":
      value, end = b.value(i, 0, "the request body")
      if b.skip(end) != len(b.data):
        raise ValueError(f"Extra data: char {end}")
      raise ServingError(400, f"JSON Value: request body must be a JSON object, got "
                              f"{type(value).__name__}")
    request: Dict[str, Any] = {}
    i = _object(b, i, 1, lambda key, j: _member(b, request, key, j, expect, max_items, group),
                "the request object")
    if i != len(b.data) and not np.isin(b.data[i:], _WS_BYTES).all():
      raise ValueError(f"Extra data: char {i}")
    return request
  except (ValueError, RecursionError, UnicodeDecodeError) as e:
    raise ServingError(400, f"JSON Parse error: {e}") from e


def _object(b: _Body, i: int, depth: int, member: Callable[[str, int], int], what: str) -> int:
  """Walks the object at i, calling member(key, index of its value) -> index after the value;
  returns the index after the closing brace."""
  i, keys = b.skip(i + 1), 0
  if b.char(i) == "}":
    return i + 1
  while True:
    if b.char(i) != '"':
      raise ValueError(f"Expecting property name enclosed in double quotes: char {i}")
    keys += 1
    if keys > MAX_KEYS:
      raise ServingError(400, f"{what} has more than {MAX_KEYS} keys")
    key, i = b.value(i, depth, "a key")
    i = b.skip(i)
    if b.char(i) != ":":
      raise ValueError(f"Expecting ':' delimiter: char {i}")
    i = b.skip(member(key, b.skip(i + 1)))
    if b.char(i) == "}":
      return i + 1
    if b.char(i) != ",":
      raise ValueError(f"Expecting ',' delimiter: char {i}")
    i = b.skip(i + 1)


def _member(b, request, key, i, expect, max_items, group) -> int:
  if key in ("instances", "inputs") and b.char(i) == "[":
    request[key] = _array(b, i, 1, key, lambda n: expect(request, n), max_items, group)
    return b.end
  if key == "inputs" and b.char(i) == "{":  # columnar {input name: batched tensor}
    out = request[key] = {}

    def column(name, j):
      if b.char(j) == "[":
        out[name] = _array(b, j, 2, f"inputs.{name}", lambda _n: expect(request, name),
                           max_items, group)
        return b.end
      out[name], j = b.value(j, 2, f"'inputs.{name}'")
      return j

    return _object(b, i, 2, column, "'inputs'")
  request[key], i = b.value(i, 1, f"the value of {key[:64]!r}")
  return i


def _array(b: _Body, i: int, depth: int, key: str, expect_one, max_items: int,
           group: int) -> Stacked:
  reader = ArrayReader(key, lambda name: expect_one(name).dtype, max_items, group)
  for start, end in b.elements(i, depth, expect_one(None), key):
    reader.check_count()
    reader.add(_DECODER.decode(b.text(start, end)), end - start)
  return reader.result()
