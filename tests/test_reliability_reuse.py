"""A cached classifier is reused only if its SavedModel is intact and this run's own.

Real smoke runs of `erm_fmnist` through `cli.run_experiment` (what `main.py` calls), in this
process so TensorFlow starts once: a finished run is damaged in each way an outside test found
(truncated variables, truncated saved_model.pb, another run's model exported to the same
path) and rerun; the classifier must be rebuilt (never "cached") and the SavedModel left
behind must verify.
"""

import glob
import os

import pytest

import experiments
from latmix_tf import cli, export
from conftest import write_tiny_datasets


def run(data_dir, wd, sm, said):
  code = cli.run_experiment(experiments.get("erm_fmnist"), "smoke", 0, data_dir, str(wd),
                            str(sm), (), None, None, "default", said.append)
  assert code == 0, said[-5:]
  return export.read_json(os.path.join(wd, "erm_fmnist", "smoke", "seed_0", "metrics.json"))


def truncate(pattern, keep=0.5):
  victim, = glob.glob(pattern)
  with open(victim, "r+b") as f:
    f.truncate(int(os.path.getsize(victim) * keep))


@pytest.mark.parametrize("damage", ["variables", "saved_model_pb", "another_runs_model"])
def test_damaged_or_foreign_savedmodel_is_rebuilt(tmp_path, tiny_data_dir, damage):
  wd, sm = tmp_path / "wd", tmp_path / "sm"
  said = []
  first = run(tiny_data_dir, wd, sm, said)
  model = str(sm / "erm_fmnist-smoke" / "seed_0")
  assert export.verify_saved_model(model, first["run_key"]) is None
  if damage == "variables":
    truncate(os.path.join(model, "variables", "variables.data-*"))
  elif damage == "saved_model_pb":
    truncate(os.path.join(model, "saved_model.pb"))
  else:  # other data, same --export_dir: its model replaces ours under the same path
    other = write_tiny_datasets(str(tmp_path / "other_data"), seed=7)
    run(other, tmp_path / "other_wd", sm, [])
    assert export.read_metadata(model)["run_key"] != first["run_key"]
  said.clear()
  again = run(tiny_data_dir, wd, sm, said)
  assert again["stages"]["classifier"] != "cached", said
  assert again["run_key"] == first["run_key"]
  assert export.verify_saved_model(model, first["run_key"]) is None
  assert again["test/accuracy"] == first["test/accuracy"]  # the same run, redone
