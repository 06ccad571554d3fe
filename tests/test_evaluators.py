"""Evaluators behind one interface: registered by name, chosen by `EvalConfig.evaluators`.

A toy metric registered by the test reaches the evaluation stage's record (metrics, figures,
notes); a chosen subset runs alone; the sanity checks run without the attack evaluators they
usually read; an unknown name fails before any work; a record of flat metrics alone is reused
with its figures and notes found in the stage folder, and a record whose figure is gone is
evaluated again; docs/extending.md's example metric runs as written; an evaluation killed
partway resumes from its finished evaluators and AutoAttack attacks with the same metrics.
"""

import dataclasses
import json
import os
from typing import Tuple

import numpy as np
import pytest

from conftest import export_tiny_classifier
from test_docs_extending import _section_code
from latmix_tf import stages
from latmix_tf.config import EvalConfig
from latmix_tf.data import load_dataset
from latmix_tf.evaluation import (EVALUATION_FILE, EVALUATORS, EvalResult, Evaluator,
                                  evaluate_saved_model, plots, stage)

TINY = dict(blur_sigmas=(0.0, 1.0), deepfool_samples=4, deepfool_max_iter=3,
            attack_epsilons=(0.0, 0.1), pgd_steps=2, batch_size=32, deepfool_batch_size=4,
            autoattack_budgets=(), apgd_curve_epsilons=(), corruptions=None, sanity_samples=8,
            sanity_unbounded_steps=2)


class ConstantShift(Evaluator):
  """A toy metric with a known answer: the clean accuracy of the images shifted by +0."""
  figure_files = ("toy_curve.png",)
  required = ("toy/accuracy",)

  def run(self, ctx):
    pred = ctx.predict_logits(np.clip(ctx.x + 0.0, 0, 1)).argmax(1)
    acc = float(np.mean(pred == ctx.y))
    plots.accuracy_curve([0.0, 1.0], [acc, acc], ctx.path(self.figure_files[0]), "toy")
    return EvalResult({"toy/accuracy": acc, "toy/seen_clean": float("test/accuracy" in
                                                                     ctx.metrics)},
                      list(self.figure_files), [f"toy note: accuracy {acc:.3f}"])


@pytest.fixture(scope="module")
def model_and_data(tiny_data_dir, tmp_path_factory):
  export_dir = export_tiny_classifier(str(tmp_path_factory.mktemp("m") / "model"), seed=0)
  arrays = load_dataset("fashion_mnist", tiny_data_dir, allow_tfds=False)
  return export_dir, arrays.x_test[:32], arrays.y_test[:32]


@pytest.fixture
def toy():
  EVALUATORS["toy"] = ConstantShift
  try:
    yield
  finally:
    EVALUATORS.pop("toy", None)  # the registry is shared by later tests


def test_a_registered_evaluator_reaches_the_stage_record(model_and_data, tmp_path, toy):
  export_dir, x, y = model_and_data
  cfg = EvalConfig(**TINY, evaluators=("clean", "toy"))
  directory = str(tmp_path / "evaluation")
  ev = stage.evaluation_stage(export_dir, x, y, cfg, directory, log=lambda _: None)
  assert ev.status == "built"
  found = stage.metrics(ev.record)
  assert found == ev.value and found["toy/accuracy"] == found["test/accuracy"]
  assert found["toy/seen_clean"] == 1.0  # it ran after "clean" and saw its metrics
  figures = ["predictions.png", "confusion_matrix.png", "toy_curve.png"]  # clean's, then toy's
  assert stage.figures(ev.record) == figures
  assert os.path.isfile(os.path.join(directory, "toy_curve.png"))
  assert stage.notes(ev.record) == [f"toy note: accuracy {found['toy/accuracy']:.3f}"]
  on_disk = stages.read_record(directory)
  assert on_disk["outputs"]["figures"] == figures
  assert on_disk["outputs"]["metrics"] == found
  again = stage.evaluation_stage(export_dir, x, y, cfg, directory, log=lambda _: None)
  assert again.status == "cached" and again.value == found
  assert stage.figures(again.record) == figures


def test_a_chosen_subset_runs_only_those_evaluators(model_and_data, tmp_path):
  export_dir, x, y = model_and_data
  out = str(tmp_path / "eval")
  metrics = evaluate_saved_model(export_dir, x, y, EvalConfig(**TINY, evaluators=("blur",)),
                                 out, log=lambda _: None)
  assert {k.split("/")[0] for k in metrics} == {"blur", "eval_seconds"}
  assert metrics["blur/acc@0.0"] == pytest.approx(float(np.mean(
      _predicted(export_dir, x) == y)))
  with open(os.path.join(out, EVALUATION_FILE)) as f:
    record = json.load(f)
  assert list(record["timings_seconds"]) == ["blur"] and "sanity" not in record
  assert sorted(f for f in os.listdir(out) if f.endswith(".png")) == ["blur_curve.png"]


def test_sanity_checks_run_without_the_attack_evaluators(model_and_data, tmp_path):
  export_dir, x, y = model_and_data
  cfg = EvalConfig(**TINY, evaluators=("clean", "sanity"))
  ev = stage.evaluation_stage(export_dir, x, y, cfg, str(tmp_path / "e"), log=lambda _: None)
  found = stage.metrics(ev.record)
  assert "sanity/deepfool_flips_every_image" in found and "sanity/failed" in found
  assert "sanity/iterative_at_least_single_step" not in found  # FGSM / PGD did not run
  assert not any(k.startswith(("deepfool/", "pgd/")) for k in found)
  assert stage.notes(ev.record)  # sanity writes notes, no figure: only clean's figures
  assert stage.figures(ev.record) == ["predictions.png", "confusion_matrix.png"]


def test_an_unknown_evaluator_fails_before_any_work(model_and_data, tmp_path):
  export_dir, x, y = model_and_data
  with pytest.raises(ValueError, match="unknown evaluator 'nois'; valid: clean, calibration"):
    evaluate_saved_model(export_dir, x, y, EvalConfig(**TINY, evaluators=("clean", "nois")),
                         str(tmp_path / "e"), log=lambda _: None)
  assert not os.path.exists(tmp_path / "e")


def test_lost_figures_are_evaluated_again_and_flat_metric_records_reused(model_and_data,
                                                                       tmp_path):
  export_dir, x, y = model_and_data
  cfg = EvalConfig(**TINY)
  directory = tmp_path / "evaluation"
  first = stage.evaluation_stage(export_dir, x, y, cfg, str(directory), log=lambda _: None)
  figures, notes = stage.figures(first.record), stage.notes(first.record)
  assert "blur_curve.png" in figures and any("sanity check" in n for n in notes)
  (directory / "blur_curve.png").unlink()
  said = []
  redone = stage.evaluation_stage(export_dir, x, y, cfg, str(directory), log=said.append)
  assert redone.status == "resumed" and any("blur_curve.png is missing" in s for s in said)
  assert (directory / "blur_curve.png").is_file() and redone.value.keys() == first.value.keys()
  record = json.loads((directory / "stage.json").read_text())
  record["outputs"] = record["outputs"]["metrics"]  # outputs of flat metrics alone
  (directory / "stage.json").write_text(json.dumps(record))
  flat = stage.evaluation_stage(export_dir, x, y, cfg, str(directory), log=lambda _: None)
  assert flat.status == "cached" and flat.value == redone.value
  assert sorted(stage.figures(flat.record)) == sorted(figures)
  assert stage.notes(flat.record) == notes


def test_the_example_metric_of_the_docs_runs_in_the_suite(model_and_data, tmp_path):
  blocks = _section_code("Add an evaluator")
  assert len(blocks) == 1, "the section shows one evaluator"
  export_dir, x, y = model_and_data

  @dataclasses.dataclass(frozen=True)
  class NoiseEvalConfig(EvalConfig):  # the two fields the page adds to EvalConfig
    noise_sigmas: Tuple[float, ...] = (0.0, 0.1, 0.2)
    noise_seed: int = 0

  try:
    exec(compile(blocks[0], "docs/extending.md", "exec"), {})  # pylint: disable=exec-used
    cfg = NoiseEvalConfig(**TINY, evaluators=("clean", "noise"))
    ev = stage.evaluation_stage(export_dir, x, y, cfg, str(tmp_path / "e"), log=lambda _: None)
  finally:
    EVALUATORS.pop("noise", None)  # the registry is shared by later tests
  found = stage.metrics(ev.record)
  assert found["noise/acc@0.0"] == found["test/accuracy"]
  assert found["noise/area"] == pytest.approx(np.mean([found["noise/acc@0.0"],
                                                       found["noise/acc@0.1"],
                                                       found["noise/acc@0.2"]]))
  assert stage.figures(ev.record) == ["predictions.png", "confusion_matrix.png",
                                      "noise_curve.png"]


def _predicted(export_dir, x):
  from latmix_tf import export  # pylint: disable=import-outside-toplevel
  return export.predict_probabilities(export.load_classifier(export_dir), x, 32).argmax(1)


class Killed(Exception):
  """Stands for the kill at a session's end: raised from the log sink at a chosen line."""


def test_a_killed_evaluation_resumes_from_its_finished_parts_with_the_same_metrics(
    model_and_data, tmp_path):
  export_dir, x, y = model_and_data
  # Two AutoAttack budgets small enough that points survive the first attack, so the second
  # attack's work after the resume is real.
  cfg = EvalConfig(**{**TINY, "autoattack_budgets": (("Linf", 0.002), ("Linf", 0.01)),
                      "autoattack_version": "cheap", "autoattack_iters": 5},
                   evaluators=("clean", "deepfool", "autoattack", "sanity"))
  through = stage.evaluation_stage(export_dir, x, y, cfg, str(tmp_path / "through"),
                                   log=lambda _: None)
  assert through.value["autoattack/Linf@0.002/after_apgd-ce"] > 0  # points left to attack

  seen = []

  def kill_at_second_budget(line):
    seen.append(line)
    if sum(l.startswith("[autoattack] after apgd-ce") for l in seen) == 2:
      raise Killed(line)

  directory = tmp_path / "killed"
  with pytest.raises(Killed):
    stage.evaluation_stage(export_dir, x, y, cfg, str(directory), log=kill_at_second_budget)
  assert stages.read_record(str(directory))["state"] == "building"
  said = []
  resumed = stage.evaluation_stage(export_dir, x, y, cfg, str(directory), log=said.append)
  assert resumed.status == "resumed"
  text = "\n".join(said)
  for name in ("clean", "deepfool"):
    assert f"[evaluate] {name}: resumed from" in text
  assert "[autoattack] resumed after apgd-ce, apgd-t:" in text  # the first budget, finished
  assert "[autoattack] resumed after apgd-ce:" in text          # the second, one attack in
  assert text.count("[autoattack] after apgd-t") == 1           # only the second budget's
  assert "[evaluate] autoattack: resumed" not in text and "sanity: resumed" not in text
  timeless = lambda m: {k: v for k, v in m.items() if "seconds" not in k}
  assert timeless(resumed.value) == timeless(through.value)
  assert not os.path.exists(directory / "partial")  # the parts go once evaluation.json is in
