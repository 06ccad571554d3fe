"""Sharing finished stages between runs: the index folder of `stages.Stage.index`.

An ablation that changes only the mixing keeps the generator and bank of the default recipe,
so their stage keys are equal - training them again per ablation would waste minutes per
member for a bit-identical result. A stage given an index folder (the CLI's
`<--workdir>/.stage_index`) writes `<index>/<name>-<key_hash>.json` naming its folder once
it is done; another run whose stage has the same key and nothing of its own copies that
folder (under the donor's lock, into a temporary name, then renamed) and loads it like any
cached result - `status` "cached" with `"adopted_from"` set; `seconds` stays the donor's
cost of the work. The copy keeps every run folder self-contained (deleting one experiment
never breaks another). `rebuild` never adopts.

`stages.run_stage` calls `adopt` when a stage has no result of its own, and `remember` once
a stage is done (cached results it built itself included, adopted ones not).
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Callable, Dict, Optional

from latmix_tf import workdir_lock
from latmix_tf.jsonio import read_json, write_json_atomic


def _entry(stage) -> str:
  return os.path.join(stage.index, f"{stage.name}-{stage.key_hash}.json")


def remember(stage) -> None:
  """Names this finished stage's folder in the index (chief only)."""
  if stage.index:
    os.makedirs(stage.index, exist_ok=True)
    write_json_atomic(_entry(stage), {"directory": os.path.abspath(stage.directory)})


def adopt(stage, read_record: Callable[[str], Optional[Dict[str, Any]]],
          log: Callable[[str], None]) -> Optional[Dict[str, Any]]:
  """Copies the finished stage of the same key the index names (None: nothing to adopt).

  `read_record` is `stages.read_record`, passed in because this module sits below `stages`
  in the import graph."""
  entry = read_json(_entry(stage)) if stage.index else None
  donor = entry.get("directory") if isinstance(entry, dict) else None
  if (not isinstance(donor, str) or not os.path.isdir(donor)
      or os.path.abspath(donor) == os.path.abspath(stage.directory)):
    return None
  tmp = f"{os.path.abspath(stage.directory)}.adopting-{os.getpid()}"
  try:
    with workdir_lock.hold(donor):  # nobody rebuilds or resumes the donor while we copy
      record = read_record(donor)
      if not record or record.get("key_hash") != stage.key_hash or record.get(
          "state") != "done":
        return None
      shutil.rmtree(tmp, ignore_errors=True)
      shutil.copytree(donor, tmp)
  except (workdir_lock.WorkdirLockedError, OSError) as e:
    log(f"{stage.name}: not adopting {donor} ({e}); building it here")
    shutil.rmtree(tmp, ignore_errors=True)
    return None
  os.replace(tmp, stage.directory)
  log(f"{stage.name}: adopted the finished stage of the same key from {donor}")
  return dict(record, adopted_from=os.path.abspath(donor))
