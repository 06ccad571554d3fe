"""The fault drill's bookkeeping: stage windows seen from outside, artifact digests.

The drill itself runs real experiments (minutes; `python main.py --drill=...`, output in the
README); here its two pure parts are checked on folders laid out like a run's.
"""

import json
import os

import numpy as np

from latmix_tf import drill


def make_run(tmp_path, accuracy=0.5, seconds=3.0):
  wd, sm = tmp_path / "wd", tmp_path / "sm"
  (wd / "generator").mkdir(parents=True, exist_ok=True)
  (wd / "bank").mkdir(exist_ok=True)
  (wd / "generative").mkdir(exist_ok=True)  # figures: not a stage
  (wd / "generator" / "stage.json").write_text(json.dumps({"state": "done", "status": "built"}))
  (wd / "bank" / "stage.json").write_text(json.dumps({"state": "building"}))
  np.savez(wd / "bank" / "bank.npz", codes=np.arange(6.0).reshape(2, 3))
  (wd / "metrics.json").write_text(json.dumps({
      "test/accuracy": accuracy, "train_seconds": seconds,
      "stages": {"classifier": "built" if seconds < 5 else "resumed"}}))
  model = sm / "exp-smoke" / "seed_0"
  (model / "variables").mkdir(parents=True, exist_ok=True)
  (model / "saved_model.pb").write_bytes(b"pb")
  (model / "variables" / "variables.data-00000-of-00001").write_bytes(b"weights")
  (model / "metadata.json").write_text(json.dumps({"probe": {"logits": [[1.0, 2.0]]}}))
  (sm / "other-smoke" / "seed_0.partial").mkdir(parents=True, exist_ok=True)
  return str(wd), str(sm)


def test_stage_states_from_folders_records_and_partial_exports(tmp_path):
  wd, sm = make_run(tmp_path)
  states = drill._stage_states(wd, sm)  # pylint: disable=protected-access
  assert states["generator"] == "done" and states["bank"] == "running"
  assert states["export exp-smoke/seed_0"] == "done"
  assert states["export other-smoke/seed_0"] == "running"


def test_artifacts_ignore_timings_and_see_every_change(tmp_path):
  a = drill.artifacts(*make_run(tmp_path / "a"))
  assert set(a) == {"metrics", "bank", "probe_logits"}
  assert drill.artifacts(*make_run(tmp_path / "b", seconds=9.0)) == a  # wall time differs
  c = drill.artifacts(*make_run(tmp_path / "c", accuracy=0.6))
  assert c["metrics"] != a["metrics"] and c["bank"] == a["bank"]
  wd, sm = make_run(tmp_path / "d")
  np.savez(os.path.join(wd, "bank", "bank.npz"), codes=np.arange(6.0).reshape(2, 3) + 1e-7)
  assert drill.artifacts(wd, sm)["bank"] != a["bank"]
