"""A cached evaluation is reused only when its record and `evaluation.json` still back it.

Real smoke runs of `erm_fmnist` through `cli.run_experiment` (what `main.py` calls), in this
process so TensorFlow starts once. A finished run's evaluation stage is damaged in the two ways
found from outside: the record's outputs emptied (`"outputs": {}`), and `evaluation.json`
truncated. Either way the rerun must evaluate again (never "cached") and `metrics.json` must
come back whole, equal to the undamaged run's.
"""

import json
import os

import experiments
from latmix_tf import cli, export


def run(data_dir, wd, sm, said):
  code = cli.run_experiment(experiments.get("erm_fmnist"), "smoke", 0, data_dir, str(wd),
                            str(sm), (), None, None, "default", said.append)
  assert code == 0, said[-5:]
  return export.read_json(os.path.join(wd, "erm_fmnist", "smoke", "seed_0", "metrics.json"))


def test_damaged_cached_evaluation_is_evaluated_again(tmp_path, tiny_data_dir):
  wd, sm = tmp_path / "wd", tmp_path / "sm"
  first = run(tiny_data_dir, wd, sm, [])
  assert "test/accuracy" in first
  evaluation = wd / "erm_fmnist" / "smoke" / "seed_0" / "evaluation"
  record = json.loads((evaluation / "stage.json").read_text())
  record["outputs"] = {}
  (evaluation / "stage.json").write_text(json.dumps(record))
  said = []
  again = run(tiny_data_dir, wd, sm, said)
  assert again["stages"] == {"classifier": "cached", "evaluation": "resumed"}, said
  assert any("evaluation: cached result unusable" in line for line in said), said
  assert again.keys() == first.keys() and again["test/accuracy"] == first["test/accuracy"]

  path = evaluation / "evaluation.json"
  path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
  said.clear()
  third = run(tiny_data_dir, wd, sm, said)
  assert third["stages"]["evaluation"] == "resumed", said
  assert third.keys() == first.keys() and third["test/accuracy"] == first["test/accuracy"]
  assert run(tiny_data_dir, wd, sm, [])["stages"]["evaluation"] == "cached"  # whole again
