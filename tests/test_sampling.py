"""Test-sampling uncertainty beside the seed CI: Wilson intervals with known answers.

Why: a comparison that reports only seed CIs hides the binomial error of accuracies measured
on a sample of the test set; the report must show both and say which is larger.
"""

import json
import math

import pytest
import scipy.stats

from latmix_tf import stats
from latmix_tf.comparison import sampling, write_comparison_report


@pytest.mark.parametrize("k,n", [(730, 1000), (0, 1000), (1000, 1000), (3, 16), (9894, 10000)])
def test_wilson_half_width_is_scipys_wilson_interval(k, n):
  ci = scipy.stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
  assert stats.wilson_half_width(k / n, n) == pytest.approx((ci.high - ci.low) / 2, rel=1e-9)


def test_the_issue_figure_about_2_8_points_at_73_percent_on_1000_images():
  assert stats.wilson_half_width(0.73, 1000) == pytest.approx(0.0275, abs=5e-4)
  assert math.isnan(stats.wilson_half_width(0.5, 0))


def _metrics(acc, aa):
  return {"test/accuracy": acc, "test/samples": 10000,
          "autoattack/Linf@0.1/robust_accuracy": aa, "autoattack/samples": 1000,
          "blur/area": 0.5, "deepfool/rho_adv": 0.1}


def test_which_uncertainty_dominates_is_named_per_metric(tmp_path):
  # Clean accuracy: seeds spread by ~1 point on 10000 images (Wilson ±0.6): seeds dominate.
  # AutoAttack: identical over seeds (seed CI 0) on 1000 images: the test images dominate.
  runs = {"erm": {s: _metrics(0.90 + 0.01 * s, 0.0) for s in range(3)},
          "pgd_at": {s: _metrics(0.84 + 0.01 * s, 0.73) for s in range(3)}}
  report = write_comparison_report(str(tmp_path), runs, "t", robust_eps=0.1)
  with open(report["json"], encoding="utf-8") as f:
    entries = json.load(f)["sampling_uncertainty"]
  by = {(e["method"], e["metric"]): e for e in entries}
  clean = by[("pgd_at", "test/accuracy")]
  assert clean["dominant"] == "seeds" and clean["images"] == [10000]
  assert clean["sampling_half_width"] == pytest.approx(
      sum(stats.wilson_half_width(0.84 + 0.01 * s, 10000) for s in range(3)) / 3)
  aa = by[("pgd_at", "autoattack/Linf@0.1/robust_accuracy")]
  assert aa["dominant"] == "test images" and aa["seed_half_width"] == 0.0
  assert aa["sampling_half_width"] == pytest.approx(stats.wilson_half_width(0.73, 1000))
  assert ("erm", "blur/area") not in by  # not a proportion of images
  text = open(report["markdown"]).read()
  assert "## Seeds or test images: which uncertainty is larger" in text
  assert ("| PGD-AT | AutoAttack acc Linf ε=0.1 (%) | 1000 | 0.00 pp | 2.75 pp | test images |"
          in text)


def test_metrics_without_an_image_count_are_left_out():
  assert sampling.samples_key("pgd/acc@0.1") == "attacks/samples"
  assert sampling.samples_key("autoattack/L2@0.5/robust_accuracy") == "autoattack/samples"
  assert sampling.samples_key("corruption/mca") is None
  assert sampling.sampling_table([]) == []
