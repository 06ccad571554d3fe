"""The comparison report: its statistics against hand computations, the files it writes
from a synthetic results set, and `compare_fmnist` end to end at smoke scale (shared member
workdirs with single-experiment runs, caching on rerun, narrowing flags).
"""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from latmix_tf import comparison, hardware, stages, stats
from latmix_tf.comparison import costs
from latmix_tf.comparison.figures import tradeoff_figure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- statistics -------------------------------------------------------------------------

def test_t_quantile_and_cdf_match_closed_forms():
  # dof = 1 is the Cauchy distribution, dof = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2)).
  for t in (-7.0, -1.0, 0.3, 2.5, 40.0):
    assert stats.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    assert stats.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
  assert stats.t_ppf(0.975, 2) == pytest.approx(4.302652729749464, abs=1e-8)  # table: 4.303
  assert stats.t_ppf(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-9)
  assert stats.t_ppf(0.975, 1000) == pytest.approx(1.962339, abs=1e-5)  # -> normal 1.96
  assert stats.t_ppf(0.025, 4) == pytest.approx(-stats.t_ppf(0.975, 4), abs=1e-9)


def test_mean_ci_hand_example():
  ci = stats.mean_ci([1.0, 2.0, 3.0])
  # s = 1, half-width = t_{0.975, 2} * s / sqrt(3) = 4.3027 / 1.7321 = 2.4841
  assert (ci.mean, ci.std, ci.n) == (2.0, 1.0, 3)
  assert ci.half_width == pytest.approx(4.302652729749464 / math.sqrt(3), abs=1e-8)
  assert ci.half_width == pytest.approx(2.484, abs=1e-3)
  assert (ci.low, ci.high) == pytest.approx((2.0 - 2.4841377, 2.0 + 2.4841377), abs=1e-6)
  one = stats.mean_ci([0.7])
  assert one.mean == 0.7 and one.n == 1 and math.isnan(one.half_width)
  assert stats.mean_ci([0.5, float("nan"), 0.7]).n == 2  # unrecorded values are dropped


def test_paired_t_test_hand_example():
  # d = [1, 2, 3]: mean 2, s 1, t = 2 / (1 / sqrt 3) = 3.4641, dof 2;
  # two-sided p = 1 - t / sqrt(2 + t^2) = 1 - 3.4641 / 3.7417 = 0.074180.
  test = stats.paired_t_test([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
  assert test.n == 3 and test.mean_diff == pytest.approx(2.0)
  assert test.t == pytest.approx(2 * math.sqrt(3))
  assert test.p == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14), abs=1e-12)
  assert test.p == pytest.approx(0.074180, abs=1e-6)
  # Larger effect, n = 4: d = [3, 3.5, 2.5, 3] -> t = 3 / (0.408248 / 2) = 14.697, p = 6.833e-4
  strong = stats.paired_t_test([3.0, 4.5, 4.5, 7.0], [0.0, 1.0, 2.0, 4.0])
  assert strong.t == pytest.approx(14.6969, abs=1e-3)
  assert strong.p == pytest.approx(6.8328e-4, abs=1e-7)
  assert math.isnan(stats.paired_t_test([1.0], [0.0]).p)           # one pair: no test
  assert math.isnan(stats.paired_t_test([2.0, 3.0], [1.0, 2.0]).p)  # zero variance: no test
  with pytest.raises(ValueError, match="matched"):
    stats.paired_t_test([1.0, 2.0], [1.0])


# ---- the report from synthetic results ---------------------------------------------------

def _metrics(acc, rho, pgd, ece, train_seconds):
  out = {"test/accuracy": acc, "blur/area": acc - 0.2, "deepfool/rho_adv": rho,
         "deepfool/fooling_rate": 1.0, "calibration/ece": ece, "train_seconds": train_seconds,
         "run_key": {"config_hash": "x"}, "bank/mean_psnr": 21.0}  # ignored keys
  for sigma in (0.0, 1.0, 2.0):
    out[f"blur/acc@{sigma!r}"] = acc - 0.15 * sigma
  for eps in (0.0, 0.05, 0.1):
    out[f"fgsm/acc@{eps!r}"] = acc - 2 * eps
    out[f"pgd/acc@{eps!r}"] = acc if eps == 0 else pgd - eps
  return out


def _synthetic_runs():
  noise = (0.0, 0.012, -0.007)
  erm = {s: _metrics(0.90 + noise[s], 0.20 + noise[s] / 4, 0.30 + noise[s], 0.05, 100 + s)
         for s in range(3)}
  # mixup: a tiny difference, alternating sign -> not significant.
  mix = {s: _metrics(0.90 + noise[s] + (0.002, -0.003, 0.002)[s], 0.20 + noise[s] / 4,
                     0.30 + noise[s], 0.04, 101 + s) for s in range(3)}
  # Latent-Mixup: rho_adv consistently +0.05 (tiny jitter) -> significant; accuracy -1 pp.
  lm = {s: _metrics(0.89 + noise[s], 0.25 + noise[s] / 4 + (0.001, -0.001, 0.0)[s],
                    0.30 + noise[s] + (0.01, -0.02, 0.015)[s], 0.05, 150 + s)
        for s in range(3)}
  single = {0: _metrics(0.7, 0.3, 0.6, 0.1, 300)}  # one seed: CI and test n/a
  return {"erm": erm, "mixup": mix, "latent_mixup": lm, "pgd_at": single}


def test_holm_adjust_hand_example():
  # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): x4 = 0.02, x3 = 0.03, x2 = 0.06, x1 = 0.04 -> 0.06
  # (monotone); nan is not a test and does not count in m.
  adj = stats.holm_adjust([0.01, 0.04, float("nan"), 0.03, 0.005])
  assert [adj[i] for i in (0, 1, 3, 4)] == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert math.isnan(adj[2])
  assert stats.holm_adjust([0.6, 0.9]) == [1.0, 1.0] and stats.holm_adjust([]) == []


def test_summary_rows_and_significance():
  rows = comparison.summarize(_synthetic_runs())
  by = {(r["method"], r["metric"]): r for r in rows}
  keys = comparison.report_metrics(_synthetic_runs())
  assert keys[:3] == ["test/accuracy", "blur/area", "blur/acc@0.0"]
  assert "run_key" not in keys
  assert "bank/mean_psnr" in keys  # Latent-Mixup's own figure (n/a for methods without it)
  assert len(rows) == 4 * len(keys)
  rho = by[("latent_mixup", "deepfool/rho_adv")]
  assert rho["significant"] and rho["p_vs_ref"] < 0.01 and rho["diff_vs_ref"] == pytest.approx(0.05)
  runs = _synthetic_runs()
  diffs = [runs["latent_mixup"][s]["deepfool/rho_adv"] - runs["erm"][s]["deepfool/rho_adv"]
           for s in sorted(runs["erm"])]
  assert rho["diff_ci95_half_width"] == pytest.approx(stats.mean_ci(diffs).half_width)
  assert not by[("mixup", "test/accuracy")]["significant"]
  assert by[("latent_mixup", "test/accuracy")]["diff_vs_ref"] == pytest.approx(-0.01)
  assert math.isnan(by[("erm", "deepfool/rho_adv")]["p_vs_ref"])        # the reference itself
  one = by[("pgd_at", "test/accuracy")]
  assert one["n"] == 1 and math.isnan(one["ci95_half_width"]) and not one["significant"]
  erm_acc = by[("erm", "test/accuracy")]
  expect = stats.mean_ci([0.90, 0.912, 0.893])
  assert erm_acc["mean"] == pytest.approx(expect.mean)
  assert erm_acc["ci95_half_width"] == pytest.approx(expect.half_width)


def test_holm_correction_decides_the_wording():
  # Each method beats ERM by +1.0/+2.0/+1.5 pp: t = 5.196, df 2, p = 0.0351 per test. Alone
  # that is significant; three such tests Holm-adjust to 3 x 0.0351 = 0.105 each.
  base, diff = (0.90, 0.91, 0.92), (0.010, 0.020, 0.015)

  def runs(n_methods):
    out = {"erm": {s: {"test/accuracy": base[s]} for s in range(3)}}
    for i in range(n_methods):
      out[f"m{i}"] = {s: {"test/accuracy": base[s] + diff[s]} for s in range(3)}
    return out
  one = {r["method"]: r for r in comparison.summarize(runs(1))}["m0"]
  assert one["p_vs_ref"] == pytest.approx(0.0351, abs=2e-4) and one["p_holm"] == one["p_vs_ref"]
  assert one["significant"]
  rows = comparison.summarize(runs(3))
  tested = [r for r in rows if r["method"] != "erm"]
  assert all(r["p_holm"] == pytest.approx(3 * 0.0351, abs=6e-4) for r in tested)
  assert not any(r["significant"] for r in tested)
  text = " ".join(comparison.conclusions(rows))
  assert text.count("higher clean accuracy only before correction") == 3
  assert "significantly" not in text and "secondary family Holm over 3 tests" in text


def test_report_files_and_wording(tmp_path):
  grid = tmp_path / "grid.png"
  grid.write_bytes(b"\x89PNG fake")
  runs = _synthetic_runs()
  for s, m in runs["latent_mixup"].items():  # how its mixes look to the reference network
    m.update({"mix/real_confidence": 0.88, "mix/recon_confidence": 0.79,
              "mix/label_confidence": (0.55, 0.56, 0.57)[s], "mix/source_mass": 0.75,
              "mix/dominant_agreement": 0.7})
  out = comparison.write_comparison_report(
      str(tmp_path / "report"), runs, "Synthetic", "desc", robust_eps=0.1,
      sample_grid=str(grid))
  for name in ("results.csv", "results.json", "report.md", "blur_curves.png",
               "attack_curves.png", "rho_adv.png", "accuracy_vs_robustness.png",
               "latent_mixed_grid.png"):
    assert (tmp_path / "report" / name).stat().st_size > 0, name
  with open(out["csv"]) as f:
    every = list(csv.DictReader(f))
  keys = comparison.report_metrics(runs)
  # Each aggregated row (seed "all") is followed by one row per seed that has the metric.
  assert [(r["method"], r["seed"], r["metric"]) for r in every] == [
      (m, s, k) for m in ("erm", "mixup", "latent_mixup", "pgd_at") for k in keys
      for s in ["all"] + [str(s) for s in runs[m] if k in runs[m][s]]]
  rows = [r for r in every if r["seed"] == "all"]
  lm_seeds = [r for r in every if r["method"] == "latent_mixup"
              and r["metric"] == "deepfool/rho_adv" and r["seed"] != "all"]
  assert [(r["n"], r["n_pairs"]) for r in lm_seeds] == [("1", "1")] * 3
  for r in lm_seeds:  # its own value and its paired difference from ERM at the same seed
    s = int(r["seed"])
    assert float(r["mean"]) == runs["latent_mixup"][s]["deepfool/rho_adv"]
    assert float(r["diff_vs_ref"]) == pytest.approx(
        runs["latent_mixup"][s]["deepfool/rho_adv"] - runs["erm"][s]["deepfool/rho_adv"])
  assert all(r["diff_vs_ref"] == "" for r in every
             if r["method"] == "erm" and r["seed"] != "all")
  sig = {(r["method"], r["metric"]) for r in rows if r["significant"] == "True"}
  assert float(next(r for r in rows if r["method"] == "latent_mixup"
                    and r["metric"] == "deepfool/rho_adv")["p_holm"]) < 0.01
  assert ("latent_mixup", "deepfool/rho_adv") in sig
  assert not any(m in ("erm", "mixup", "pgd_at") for m, _ in sig)
  lm_rho = next(r for r in rows if r["method"] == "latent_mixup"
                and r["metric"] == "deepfool/rho_adv")
  assert lm_rho["seeds"] == "0;1;2" and int(lm_rho["n"]) == 3
  data = json.loads(open(out["json"]).read())  # strict JSON: NaN became null
  assert data["per_seed"]["pgd_at"]["0"]["test/accuracy"] == 0.7
  md = open(out["markdown"]).read()
  concl = md.split("## Conclusion")[1].split("##")[0]
  assert "Latent-Mixup (GAN) vs ERM (paired t-test over n=3 seeds" in concl
  assert "significantly higher ρ_adv (+0.0500, Holm-adjusted p<0.001; better)" in concl
  assert "no significant difference in clean accuracy" in concl.split("mixup vs ERM")[1]
  assert "PGD-AT vs ERM: 1 paired seed, so no difference is tested" in concl
  assert "little power" in concl
  main = md.split("## Main results")[1].split("##")[0]
  assert "PGD acc ε=0.1 (%)" in main and "± n/a" in main   # single-seed CI
  lm_line = next(l for l in main.splitlines() if l.startswith("| Latent-Mixup (GAN)"))
  assert lm_line.count("†") == 1                            # only ρ_adv is significant
  mixes = md.split("## Decoded mixes as the reference network sees them")[1].split("##")[0]
  assert [l for l in mixes.splitlines() if l.startswith("| ") and "---" not in l][1:] == [
      "| Latent-Mixup (GAN) | 21.0000 ± 0.0000 | 0.8800 ± 0.0000 | 0.7900 ± 0.0000 | "
      "0.5600 ± 0.0248 | 0.7500 ± 0.0000 | 70.00 ± 0.00 |"]  # only methods that mix


def test_report_without_reference_or_with_one_seed(tmp_path):
  runs = {"mixup": {0: _metrics(0.9, 0.2, 0.3, 0.05, 10)}}
  out = comparison.write_comparison_report(str(tmp_path), runs, "One")
  md = open(out["markdown"]).read()
  assert "ERM was not run" in md and "± n/a" in md and "significantly" not in md
  assert "Decoded mixes" not in md  # nothing mixes latent codes here
  with pytest.raises(ValueError, match="at least one seed"):
    comparison.write_comparison_report(str(tmp_path), {"erm": {}}, "Empty")
  with pytest.raises(FileNotFoundError, match="grid"):
    comparison.write_comparison_report(str(tmp_path), runs, "x", sample_grid="/nonexistent.png")


# ---- compare_fmnist end to end at smoke scale -------------------------------------------

def test_member_layout_and_recorded_stage_times(tmp_path):
  from experiments import compare  # pylint: disable=import-outside-toplevel
  from experiments.common import RunContext, run_workdir, runs_root  # pylint: disable=import-outside-toplevel
  from latmix_tf import stages  # pylint: disable=import-outside-toplevel
  cli = RunContext(workdir=str(tmp_path / "wd" / "compare_mnist" / "quick" / "seed_0"),
                   export_root="sm", root=str(tmp_path / "wd"))
  assert runs_root(cli) == str(tmp_path / "wd")  # the CLI says where runs live
  assert run_workdir(runs_root(cli), "pgd_at_mnist", "quick", 2) == str(
      tmp_path / "wd" / "pgd_at_mnist" / "quick" / "seed_2")
  other = RunContext(workdir=str(tmp_path / "somewhere"), export_root="sm")
  assert runs_root(other) == str(tmp_path / "somewhere" / "members")  # no root: inside
  assert compare.select_methods(("gat", "erm")) == ("erm", "gat")
  # The plain-DCGAN ablation runs only on request.
  assert "latent_mixup_dcgan_plain" not in compare.select_methods(None)
  assert compare.select_methods(("latent_mixup_dcgan_plain", "erm")) == (
      "erm", "latent_mixup_dcgan_plain")
  assert compare.select_seeds(("2", "0", "2")) == (2, 0)
  with pytest.raises(ValueError, match="valid: erm, mixup, manifold_mixup"):
    compare.select_methods(("erm", "vat"))

  member = tmp_path / "lm"  # the stages' recorded work, read from their records
  for name, seconds in (("generator", 100.0), ("encoder", 15.0), ("bank", 30.0),
                        ("classifier", 50.0), ("evaluation", 20.0)):
    stages.run_stage(stages.Stage(name, str(member / name), {"k": name}),
                     lambda resumed: (sum(i * i for i in range(200_000)), {}),
                     lambda record: None, log=lambda s: None)
    record = stages.read_record(str(member / name))
    assert record["host"]["cpu"] == hardware.cpu_info().model and record["cpu_seconds"] > 0
    record["seconds"] = seconds
    if name == "encoder":  # adopted from another run: the recipe's cost, not this member's
      record["adopted_from"] = "/elsewhere/encoder"
    (member / name / "stage.json").write_text(json.dumps(record))
  (member / "frechet").mkdir()  # a folder without a record is no work done
  assert costs.generative_seconds(str(member)) == 145.0
  assert costs.generative_seconds(str(tmp_path / "erm")) == 0.0
  cost = costs.member_cost(str(member))
  assert (cost["generative_seconds"], cost["classifier_seconds"], cost["evaluation_seconds"],
          cost["seconds"]) == (130.0, 50.0, 20.0, 200.0)
  assert cost["adopted"] == ["encoder"] and cost["cpu"] == hardware.cpu_info().model
  assert 0 < cost["cpu_seconds"] < 60
  record = stages.read_record(str(member / "bank"))  # a record from before CPU accounting
  del record["host"], record["cpu_seconds"]
  (member / "bank" / "stage.json").write_text(json.dumps(record))
  old = costs.member_cost(str(member))
  assert math.isnan(old["cpu_seconds"]) and "not recorded" in old["cpu"]
  # A classifier resumed before records kept a heartbeat: its epoch history is the floor.
  epochs = [{"epoch": e, "seconds": 30.0} for e in (1, 2, 3)]
  assert costs.stage_seconds({"seconds": 50.0, "outputs": {"history": epochs}}) == 90.0
  assert costs.stage_seconds({"seconds": 95.0, "outputs": {"history": epochs}}) == 95.0
  assert costs.stage_seconds({"seconds": None, "outputs": {}}) == 0.0
  table = costs.cost_table([dict(cost, method="latent_mixup", seed=1)])
  assert table[-3].startswith("| Latent-Mixup (GAN) | 1 | 130 | 50 | 20 | 200 | ")
  assert "(adopted: encoder)" in table[-3] and table[-1].startswith("All 1 members: 200 s")
  # What is left: a method's own mean where one finished, else the mean of every finished one.
  assert costs.remaining_seconds([], ["erm"]) is None
  done = [dict(cost, method="erm", seconds=100.0), dict(cost, method="erm", seconds=200.0),
          dict(cost, method="mixup", seconds=600.0)]
  assert costs.remaining_seconds(done, ["erm", "mixup", "gat"]) == 150.0 + 600.0 + 300.0
  # Start order: finished members first (plan order), then seed by seed, longest first by the
  # method's mean recorded cost, methods without one (gat) before any with one.
  members = [(0, "erm"), (0, "mixup"), (0, "gat"), (1, "erm"), (1, "mixup"), (1, "gat")]
  assert costs.start_order(members, [False, True, False, False, False, False], done) == [
      1, 2, 0, 5, 4, 3]
  assert costs.start_order(members, [False] * 6, []) == [0, 1, 2, 3, 4, 5]  # nothing known
  # Per method: each seed's member wall in minutes, the mean split, the CPU models once each.
  fast = dict(cost, seconds=60.0, generative_seconds=30.0, classifier_seconds=24.0,
              evaluation_seconds=6.0, cpu="Other CPU")
  summary = costs.method_summary([dict(cost, method="latent_mixup", seed=2),
                                  dict(fast, method="latent_mixup", seed=0),
                                  dict(fast, method="erm", seed=0)])
  assert summary[2] == (f"| Latent-Mixup (GAN) | 0, 2 | 1.0, 3.3 | 1.3 / 0.6 / 0.2 | "
                        f"{'; '.join(sorted({'Other CPU', cost['cpu']}))} |")
  assert summary[3] == "| ERM | 0 | 1.0 | 0.5 / 0.4 / 0.1 | Other CPU |" and len(summary) == 4
  assert summary[2] in costs.cost_table([dict(cost, method="latent_mixup", seed=2),
                                         dict(fast, method="latent_mixup", seed=0)])


def test_compare_fmnist_smoke_shares_members_and_resumes(tiny_data_dir, tmp_path):
  import experiments  # pylint: disable=import-outside-toplevel
  from experiments.common import RunContext  # pylint: disable=import-outside-toplevel
  root, sm = tmp_path / "workdirs", str(tmp_path / "saved_models")
  exp = experiments.get("compare_fmnist")
  cfg = exp.get_config(scale="smoke", seed=0, data_dir=tiny_data_dir)
  assert cfg.methods == ("erm", "mixup", "manifold_mixup", "fgsm_at", "pgd_at", "gat",
                         "latent_mixup", "latent_mixup_vae") and cfg.seeds == (0, 1, 2)
  wd = str(root / "compare_fmnist" / "smoke" / "seed_0")   # the CLI's layout

  def run(methods, seeds):
    logs = []
    ctx = RunContext(workdir=wd, export_root=sm, log=logs.append, methods=methods, seeds=seeds,
                     root=str(root))
    return exp.run(cfg, ctx), logs

  with pytest.raises(ValueError, match="Unknown method.*'adamix'.*valid: erm, mixup"):
    run(("erm", "adamix"), (0,))

  # 1. A plain single-experiment run where `main.py --experiment=erm_fmnist` would put it.
  erm = experiments.get("erm_fmnist")
  erm_wd = str(root / "erm_fmnist" / "smoke" / "seed_0")
  erm_metrics = erm.run(erm.get_config(scale="smoke", seed=0, data_dir=tiny_data_dir),
                        RunContext(workdir=erm_wd, export_root=sm, log=lambda s: None))

  # 2. The comparison at seed 0 reuses it and trains only mixup; one seed: no CI, no test.
  out, logs = run(("mixup", "erm"), (0,))
  assert "[1/2] erm seed 0: classifier cached, evaluation cached" in "\n".join(logs)
  assert any(line.startswith("[2/2] mixup seed 0: classifier built") for line in logs)
  assert out["runs"]["erm"][0]["test/accuracy"] == erm_metrics["test/accuracy"]
  assert os.path.isfile(os.path.join(sm, "mixup_fmnist-smoke", "seed_0", "saved_model.pb"))
  md = open(out["report"]).read()
  assert "± n/a" in md and "no difference is tested" in md

  # 3. "Resumed" with a second seed, asked for first: the finished seed 0 members are read
  # back (cached) and reported before seed 1 is trained.
  out, logs = run(("erm", "mixup"), (1, 0))
  text = "\n".join(logs)
  assert "[1/4] erm seed 0: classifier cached" in text
  assert "[2/4] mixup seed 0: classifier cached" in text
  assert text.index("report against erm after 2 of 4 members") < text.index("[3/4]")
  # Within seed 1, the method whose seed-0 member cost more starts first (`start_order`).
  cost = {m: costs.member_cost(str(root / f"{m}_fmnist" / "smoke" / "seed_0"))["seconds"]
          for m in ("erm", "mixup")}
  first, second = sorted(cost, key=lambda m: -cost[m])
  assert f"[3/4] {first} seed 1: classifier built" in text
  assert f"[4/4] {second} seed 1: classifier built" in text
  assert "after 1 of 4 members" not in text  # no report while finished ones are read back
  # What is left, from the recorded cost of what finished, before each member to be built.
  assert text.index("[2/4] mixup seed 0: classifier cached") < text.index(
      "compare_fmnist: 2 members left, ~") < text.index("[3/4]")
  assert text.index("compare_fmnist: 1 member left, ~") > text.index(f"[3/4] {first} seed 1")
  assert os.path.isdir(root / "mixup_fmnist" / "smoke" / "seed_1")
  with open(out["results_csv"]) as f:
    rows = list(csv.DictReader(f))
  assert {r["method"] for r in rows} == {"erm", "mixup"}
  assert all(r["n"] == "2" for r in rows if r["metric"] == "test/accuracy" and r["seed"] == "all")
  assert sorted(r["seed"] for r in rows if r["metric"] == "test/accuracy") == [
      "0", "0", "1", "1", "all", "all"]  # erm and mixup: aggregated + one row per seed
  report_dir = os.path.dirname(out["report"])
  assert out["report"] == os.path.join(wd, "report.md")
  for name in ("results.json", "blur_curves.png", "rho_adv.png", "accuracy_vs_robustness.png"):
    assert os.path.isfile(os.path.join(report_dir, name)), name
  md = open(out["report"]).read()
  assert "mixup vs ERM (paired t-test over n=2 seeds" in md
  cost_rows = md.split("## Cost per member")[1].split("## Notes")[0]
  model = hardware.cpu_info().model
  assert all(f"| {m} | {seed} | 0 | " in cost_rows for m in ("ERM", "mixup") for seed in (0, 1))
  per_method, per_member = cost_rows.split("Wall seconds of each member")
  assert per_member.count(f" | {model} |\n") == 4 and "All 4 members:" in per_member
  assert all(f"| {m} | 0, 1 | " in per_method for m in ("ERM", "mixup"))
  assert per_method.count(f" | {model} |\n") == 2
  print(md.split("## Main results")[1].split("## Paired")[0])  # shown with pytest -s

  # 3b. Without the reference among --methods: the table is still written, nothing tested.
  out, logs = run(("mixup",), (0,))
  assert "[1/1] mixup seed 0: classifier cached, evaluation cached" in "\n".join(logs)
  md = open(out["report"]).read()
  assert "ERM was not run" in md and "mixup" in md.split("## At a glance")[1]
  # The corruption section says what a one-class model scores on the images it scored.
  from latmix_tf.data import load_dataset  # pylint: disable=import-outside-toplevel
  scored = erm.get_config(scale="smoke", seed=0, data_dir=tiny_data_dir).eval.corruption_samples
  y = load_dataset("fashion_mnist", tiny_data_dir, allow_tfds=False).y_test[:scored]
  shares = np.bincount(y) / len(y)
  assert (f"scores that class's share of the scored test images: {100 * shares.min():.2f}% to "
          f"{100 * shares.max():.2f}% here.") in md

  # 4. The CLI, same layout: everything is cached now.
  env = dict(os.environ, LATMIX_OFFLINE="1")
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "main.py"), "--experiment=compare_fmnist",
       "--scale=smoke", "--methods=erm,mixup", "--seeds=0,1", f"--data_dir={tiny_data_dir}",
       f"--workdir={root}", f"--export_dir={sm}", f"--results_dir={tmp_path / 'results'}"],
      capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.count(": classifier cached, evaluation cached (") == 4, proc.stdout[-3000:]
  assert f"report: {os.path.join(wd, 'report.md')}" in proc.stdout
  assert not (tmp_path / "results").exists()  # smoke comparisons are never published


def test_scatter_names_one_point_of_a_cluster():
  from matplotlib.figure import Figure
  from latmix_tf.comparison import figures
  ax = Figure().add_subplot(1, 1, 1)
  ax.plot([0.05, 0.051, 0.25], [90.4, 90.5, 78.7], "o")
  figures._label_points(ax, [("ERM", 0.05, 90.4), ("Latent-Mixup (VAE)", 0.051, 90.5),
                             ("PGD-AT", 0.25, 78.7), ("no test", float("nan"), 80.0)])
  assert [t.get_text() for t in ax.texts] == ["ERM", "PGD-AT"]


def test_ablation_family_reports_against_erm_and_default_latent_mixup(tiny_data_dir, tmp_path):
  import experiments  # pylint: disable=import-outside-toplevel
  from experiments import compare  # pylint: disable=import-outside-toplevel
  from experiments.common import RunContext  # pylint: disable=import-outside-toplevel
  exp = experiments.get("ablation_fmnist")
  cfg = exp.get_config(scale="smoke", seed=0, data_dir=tiny_data_dir)
  assert cfg.methods == compare.ABLATION_METHODS and len(cfg.methods) == 10
  assert cfg.references == ("erm", "latent_mixup")
  with pytest.raises(ValueError, match="Unknown method.*'mixup'"):  # not in this family
    exp.run(cfg, RunContext(workdir=str(tmp_path / "x"), export_root=str(tmp_path / "sm"),
                            methods=("mixup",)))
  root = tmp_path / "wd"
  ctx = RunContext(workdir=str(root / "ablation_fmnist" / "smoke" / "seed_0"),
                   export_root=str(tmp_path / "sm"), log=lambda s: None, root=str(root),
                   methods=("erm", "latent_mixup", "latent_mixup_inmix", "latent_mixup_k0",
                            "latent_mixup_sameclass"), seeds=(0,),
                   results_root=str(tmp_path / "results"))
  out = exp.run(cfg, ctx)
  vs_default = os.path.join(ctx.workdir, "vs_latent_mixup", "report.md")
  assert out["report"] == os.path.join(ctx.workdir, "report.md")
  assert "against ERM" in open(out["report"]).read()
  assert "against Latent-Mixup (GAN)" in open(vs_default).read()
  with open(os.path.join(ctx.workdir, "vs_latent_mixup", "results.csv")) as f:
    rows = list(csv.DictReader(f))
  assert {r["method"] for r in rows} == {"erm", "latent_mixup", "latent_mixup_inmix",
                                         "latent_mixup_k0", "latent_mixup_sameclass"}
  k0 = stages.read_record(os.path.join(str(root), "latent_mixup_k0_fmnist", "smoke", "seed_0",
                                       "bank"))
  assert k0["state"] == "done" and k0["outputs"]["n"] > 0  # E(x) alone: its own bank
  # Ablations that change only the mixing adopt the default recipe's generator and bank
  # (equal stage keys) instead of training them again; K = 0 adopts the generator only.
  member = lambda name, stage: stages.read_record(os.path.join(  # noqa: E731
      str(root), name, "smoke", "seed_0", stage))
  default = os.path.join(str(root), "latent_mixup_fmnist", "smoke", "seed_0")
  for name in ("latent_mixup_inmix_fmnist", "latent_mixup_sameclass_fmnist"):
    for stage in ("generator", "bank"):
      assert member(name, stage)["adopted_from"] == os.path.join(default, stage), (name, stage)
      assert member(name, stage)["key_hash"] == member("latent_mixup_fmnist", stage)["key_hash"]
  assert member("latent_mixup_k0_fmnist", "generator")["adopted_from"] == os.path.join(
      default, "generator")
  assert "adopted_from" not in k0 and k0["status"] == "built"
  assert not (tmp_path / "results").exists()  # smoke runs are never published
  quick = exp.get_config(scale="quick", seed=0)
  assert [compare.summary_name(quick, r) for r in (None, "latent_mixup")] == [
      "ablation_fmnist_quick", "ablation_fmnist_quick_vs_latent_mixup"]
  trained = experiments.get("latent_mixup_inmix_fmnist").get_config(scale="smoke", seed=0)
  assert trained.method.input_mixup_alpha == 1.0 and trained.name == "latent_mixup_inmix_fmnist"


def test_publish_summary_copies_csv_report_and_figures(tmp_path):
  from latmix_tf.comparison import publish_summary, write_comparison_report  # pylint: disable=import-outside-toplevel
  runs = {m: {s: {"test/accuracy": 0.9 + 0.01 * s + (0.02 if m == "mixup" else 0.0),
                  "blur/acc@0.0": 0.9, "blur/acc@1.0": 0.5 + 0.01 * s, "blur/area": 0.7,
                  "deepfool/rho_adv": 0.05 + 0.001 * s, "train_seconds": 10.0}
              for s in range(3)} for m in ("erm", "mixup")}
  report = write_comparison_report(str(tmp_path / "wd"), runs, "t", reference="erm")
  md = publish_summary(report, str(tmp_path / "results"), "compare_fmnist_full")
  assert md == str(tmp_path / "results" / "compare_fmnist_full.md")
  assert (tmp_path / "results" / "compare_fmnist_full.csv").read_text() == open(
      report["csv"]).read()
  text = open(md).read()
  pngs = [os.path.basename(p) for p in report["figures"] if p.endswith(".png")]
  assert pngs and all(f"](compare_fmnist_full/{p})" in text for p in pngs)
  assert all((tmp_path / "results" / "compare_fmnist_full" / p).is_file() for p in pngs)
  assert not list((tmp_path / "results").rglob("*.tmp"))  # copies go through temp files


def test_tradeoff_figure_joins_the_pareto_front_and_marks_each_method_apart():
  y = {"ERM": (91.0, 0.3), "PGD-AT": (79.0, 0.5), "IAT": (84.0, 0.4), "TRADES": (80.0, 0.6)}
  x = {"ERM": (2.0, 0.5), "PGD-AT": (65.0, 1.0), "IAT": (63.0, 1.2), "TRADES": (61.0, 0.9)}
  fig = tradeoff_figure([{"xlabel": "ρ", "x": x, "y": y},
                         {"xlabel": "AutoAttack", "x": x, "y": y,
                          "front": ["ERM", "IAT", "PGD-AT"]}], "t")
  plain, with_front = fig.axes
  assert not [l for l in plain.get_lines() if l.get_linestyle() == "--"]
  dashed = [l for l in with_front.get_lines() if l.get_linestyle() == "--"]
  assert len(dashed) == 1  # through the front's points in order of x
  np.testing.assert_allclose(dashed[0].get_xydata(), [[2.0, 91.0], [63.0, 84.0], [65.0, 79.0]])
  assert "Pareto front (means)" in [t.get_text() for t in with_front.get_legend().get_texts()]
  markers = [c.lines[0].get_marker() for c in with_front.containers]
  assert len(set(markers)) == 4  # one marker per method, beside its colour
