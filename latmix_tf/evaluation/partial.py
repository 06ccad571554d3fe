"""Finished parts of an evaluation, kept on disk so that a killed evaluation resumes from them.

Why: an evaluation is one stage, and a stage that was killed resumes by calling its build
again. Without parts, that redoes the whole suite: for an adversarially trained model the
evaluation is an hour or more on a CPU (AutoAttack's APGD-T alone took 26 minutes on 1000
MNIST images, at one of two budgets), and long runs are killed whenever their session ends.
So the suite keeps each finished evaluator's result, and AutoAttack its progress after each
attack of each budget, in `<stage folder>/partial/`; a resumed build reads them back and
runs only what is missing.

The results do not depend on where a run resumed: every attack draws its randomness from
stateless seeds fixed by the attack, the run and the batch (never from a global generator
that earlier evaluators would have advanced), and AutoAttack's batches are cut from the
robust mask it saved. `tests/test_evaluators.py` checks that an evaluation interrupted after
DeepFool and after APGD-CE gives the metrics of one that ran through.

Each part is a pickle of {"key": the evaluation stage's key hash, "value": ...}, written
atomically; a part of another key, or one that does not load (a truncated write, a class
that changed since), is ignored and its work done again. The folder is removed once the
evaluation has written `evaluation.json`.
"""

from __future__ import annotations

import os
import pickle
import shutil
from typing import Any, Callable, Optional

PARTIAL_DIR = "partial"


class Parts:
  """The parts of one evaluation: `get(name)` (None when absent) and `put(name, value)`.

  `Parts(None, ...)` keeps nothing: an evaluation outside a stage (`evaluate_saved_model`
  without a stage folder) has nothing to resume from.
  """

  def __init__(self, out_dir: Optional[str], key: str = "",
               log: Callable[[str], None] = print):
    self.directory = os.path.join(out_dir, PARTIAL_DIR) if out_dir else None
    self.key, self.log = key, log

  def _path(self, name: str) -> str:
    return os.path.join(self.directory, f"{name}.pkl")

  def get(self, name: str) -> Optional[Any]:
    if not self.directory or not os.path.isfile(self._path(name)):
      return None
    try:
      with open(self._path(name), "rb") as f:
        saved = pickle.load(f)
    except Exception as e:  # pylint: disable=broad-except (any unreadable part is redone)
      self.log(f"[evaluate] the saved part {name} does not load ({type(e).__name__}: {e}); "
               f"redoing it")
      return None
    if not isinstance(saved, dict) or saved.get("key") != self.key:
      return None
    return saved.get("value")

  def put(self, name: str, value: Any) -> None:
    if not self.directory:
      return
    os.makedirs(self.directory, exist_ok=True)
    tmp = f"{self._path(name)}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
      pickle.dump({"key": self.key, "value": value}, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, self._path(name))

  def clear(self) -> None:
    if self.directory:
      shutil.rmtree(self.directory, ignore_errors=True)
