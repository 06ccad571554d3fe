"""Instances decoded element by element, stacked into numpy batches a group at a time.

Why: converting each small group of decoded elements at once keeps the Python objects alive
at any moment to one group's (a few MB), and storing floats in the signature's dtype at once
means the float64 copy of a batch never exists. The groups are joined only after the
request body has been dropped, so the body and the joined batch are never held together.

What one element may hold (`Budget`, from the signature by `instance_budget`) is defined
here, beside the stacking that stores it in the budget's dtype, and checked by `jsonbody`'s
scanner before the element is decoded at all.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from latmix_tf.serving.repository import ServingError

UNKNOWN_SHAPE_BYTES = 1 << 20  # per element when the signature has a dimension of any size
BYTES_PER_ITEM = 64         # per number or array of an instance (indented JSON fits)


class Stacked:
  """A top-level JSON array decoded into numpy: `.array`, or `.columns` for object elements.

  The groups are joined on first access, i.e. after the caller has dropped the body,
  so the body and the joined copy are never held together.
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
  """Joins groups into one array, releasing each group once copied (and emptying `parts`)."""
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


class ArrayReader:
  """Collects the decoded elements of one top-level array into groups and converts each.

  Args:
    key: the request key (for messages).
    target: input name (None: the element itself) -> dtype floats are stored in, or None.
    max_items: more elements -> 413 (the per-request instance cap).
    group, group_bytes: a group is converted at this many elements or this much JSON text.
  """

  def __init__(self, key: str, target: Callable[[Optional[str]], Optional[np.dtype]],
               max_items: int, group: int = 64, group_bytes: int = 1 << 20):
    self.key, self.target, self.max_items = key, target, max_items
    self.group, self.group_bytes, self.pending_bytes = group, group_bytes, 0
    self.pending: List[Any] = []
    self.plain: List[np.ndarray] = []
    self.named: Dict[str, List[np.ndarray]] = {}
    self.names: Optional[List[str]] = None
    self.count = 0

  def check_count(self):
    """413 once the array holds more than `max_items` elements (called before decoding)."""
    if self.count >= self.max_items:
      raise ServingError(413, f"'{self.key}' has more than {self.max_items} instances, the "
                              f"server's max_batch_size; split the request")

  def add(self, element: Any, nbytes: int):
    self.check_count()
    self.count += 1
    self.pending.append(element)
    self.pending_bytes += nbytes
    if len(self.pending) >= self.group or self.pending_bytes >= self.group_bytes:
      self.flush()

  def flush(self):
    group, self.pending, self.pending_bytes = self.pending, [], 0
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


def instance_budget(specs: Dict[str, Any],
                    name: Optional[str]) -> Optional[Tuple[int, int]]:
  """(numbers, arrays) in one instance of input `name` (None: of all inputs together, as a
  row instance holds them), the batch dimension excluded; None if a size is not fixed."""
  chosen = [specs[name]] if name in specs else list(specs.values())
  values = lists = 0
  for spec in chosen:
    if spec.shape.rank is None or None in spec.shape.as_list()[1:]:
      return None
    dims, count = spec.shape.as_list()[1:], 1
    for d in dims:  # one array per index prefix: 1 + d1 + d1*d2 + ...
      lists, count = lists + count, count * d
    values += count
  return values, lists


class Budget(NamedTuple):
  """What one element of an instance array may hold: its numbers and arrays (None: any
  number, a dimension of the signature has no fixed size) and the dtype floats go to."""
  dtype: Optional[np.dtype]
  values: Optional[int]
  lists: int = 0

  def limits(self) -> Tuple[int, int, int]:
    """(bytes, arrays or objects, commas) one element may have."""
    if self.values is None:
      return UNKNOWN_SHAPE_BYTES, UNKNOWN_SHAPE_BYTES, UNKNOWN_SHAPE_BYTES
    items = self.values + self.lists
    return BYTES_PER_ITEM * items + 4096, self.lists + 1, items + 16
