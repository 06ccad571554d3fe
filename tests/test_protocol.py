"""The declared statistics protocol of a comparison, on constructed per-seed results.

Each case is built so its answer is known: which tests fall in the primary family and what
Holm gives there, which mark a cell carries, when TOST calls a difference equivalent, which
member shows a gradient-masking pattern, and on which corruption a model answers one class.
"""

import math

import pytest

from latmix_tf import stats
from latmix_tf.comparison import diagnostics, goal, summarize, write_comparison_report
from latmix_tf.comparison.protocol import DEFAULT_PROTOCOL, StatsProtocol
from latmix_tf.comparison.summary import conclusions

BASE = (0.900, 0.910, 0.905)


def _member(acc, pgd, fgsm, aa=None, brightness=0.5, fog=0.6, square=None):
  m = {"test/accuracy": acc, "pgd/acc@0.1": pgd, "fgsm/acc@0.1": fgsm,
       "corruption/brightness/accuracy": brightness, "corruption/fog/accuracy": fog,
       "corruption/mca": (brightness + fog) / 2}
  if aa is not None:
    m["autoattack/Linf@0.1/robust_accuracy"] = aa
    if square is not None:  # AutoAttack's cumulative accuracy after each attack, in run order
      m.update({"autoattack/Linf@0.1/after_apgd-ce": aa + square,
                "autoattack/Linf@0.1/after_apgd-t": aa + square,
                "autoattack/Linf@0.1/after_square": aa})
  return m


def _runs():
  erm = {s: _member(BASE[s], 0.10 + 0.01 * s, 0.40 + 0.01 * s, aa=0.08 + 0.01 * s,
                    brightness=0.0974) for s in range(3)}
  # Latent-Mixup: clean accuracy within ±0.1 pp of ERM's (equivalent at the 0.5 pp margin);
  # a consistent FGSM gain (+5 pp) while PGD falls (-1 pp): the masking pattern.
  lm = {s: _member(BASE[s] + (0.0005, -0.0008, 0.0002)[s], 0.09 + 0.01 * s + 0.001 * s,
                   0.45 + 0.01 * s + (0.001, -0.002, 0.0)[s], aa=0.08 + 0.01 * s,
                   brightness=0.30 + 0.01 * s) for s in range(3)}
  # mixup: clean accuracy +1.0/+2.0/+1.5 pp (uncorrected p = 0.035), a secondary test, and a
  # brightness accuracy that scatters around ERM's (a secondary p > 0.035).
  mix = {s: _member(BASE[s] + (0.010, 0.020, 0.015)[s], 0.10 + 0.01 * s, 0.40 + 0.01 * s,
                    aa=0.08 + 0.01 * s, brightness=0.0974 + (0.05, -0.06, 0.02)[s])
         for s in range(3)}
  # PGD-AT: PGD 30 points above AutoAttack, and Square breaks 2% more after white-box.
  pgd = {s: _member(0.85 + 0.01 * s, 0.60 + 0.012 * s, 0.70 + 0.01 * s, aa=0.30 + 0.01 * s,
                    square=0.02, brightness=0.35 + 0.01 * s) for s in range(3)}
  # on-manifold AT: a latent-space robust method, tested against ERM and against PGD-AT.
  oma = {s: _member(0.88 + 0.012 * s, 0.50 + 0.02 * s, 0.65 + 0.011 * s, aa=0.48 + 0.013 * s,
                    brightness=0.33 + 0.015 * s) for s in range(3)}
  return {"erm": erm, "mixup": mix, "latent_mixup": lm, "pgd_at": pgd, "on_manifold_at": oma}


def test_primary_and_secondary_families_are_holm_adjusted_separately():
  rows = summarize(_runs(), robust_eps=0.1)
  by = {(r["method"], r["metric"]): r for r in rows}
  assert by[("latent_mixup", "test/accuracy")]["family"] == "primary"
  assert by[("latent_mixup", "autoattack/Linf@0.1/robust_accuracy")]["family"] == "primary"
  assert by[("latent_mixup", "pgd/acc@0.1")]["family"] == "secondary"   # not a primary metric
  assert by[("mixup", "test/accuracy")]["family"] == "secondary"         # not a primary method
  assert by[("erm", "test/accuracy")]["family"] == ""                    # the reference
  primary = [(r, "p_vs_ref") for r in rows if r["family"] == "primary"
             and math.isfinite(r["p_vs_ref"])]
  primary += [(r, "p_vs_robust_ref") for r in rows if math.isfinite(r["p_vs_robust_ref"])]
  # The robust method's tests against PGD-AT are primary; nobody else gets them.
  assert {r["method"] for r, k in primary if k == "p_vs_robust_ref"} == {"on_manifold_at"}
  want = stats.holm_adjust([r[k] for r, k in primary])
  got = [r["p_holm" if k == "p_vs_ref" else "p_holm_vs_robust_ref"] for r, k in primary]
  assert got == pytest.approx(want)
  secondary = [r for r in rows if r["family"] == "secondary" and math.isfinite(r["p_vs_ref"])]
  assert [r["p_holm"] for r in secondary] == pytest.approx(
      stats.holm_adjust([r["p_vs_ref"] for r in secondary]))
  # mixup's +1.5 pp has uncorrected p = 0.035 but is one of many secondary tests: no mark.
  acc = by[("mixup", "test/accuracy")]
  assert acc["p_vs_ref"] == pytest.approx(0.0351, abs=2e-4) and not acc["significant"]


def test_every_mark_has_one_meaning_and_the_header_declares_the_protocol(tmp_path):
  out = write_comparison_report(str(tmp_path), _runs(), "Protocol", "desc", robust_eps=0.1)
  md = open(out["markdown"]).read()
  head = md.split("## Conclusion")[0]
  assert "Primary family: the methods matching `latent_mixup*`, on-manifold AT" in head
  assert "also against PGD-AT" in head and "clean accuracy (%) ±0.50 pp" in head
  assert "secondary family at α=0.05" in head
  assert "† = primary family, Holm-adjusted p < 0.05; ‡ = secondary family" in head
  assert "≈ = TOST-equivalent to ERM within the declared margin" in head
  main = md.split("## Main results")[1].split("##")[0]
  # No mark from an uncorrected p: mixup's accuracy (p = 0.035 uncorrected) is unmarked.
  mix_line = next(l for l in main.splitlines() if l.startswith("| mixup |"))
  assert "†" not in mix_line and "‡" not in mix_line
  lm_line = next(l for l in main.splitlines() if l.startswith("| Latent-Mixup (GAN) |"))
  assert lm_line.split(" | ")[2].endswith(" ≈")  # clean accuracy: equivalent within 0.5 pp
  # FGSM is a secondary metric: its Holm-significant gain carries ‡, never † (which once also
  # marked uncorrected p < 0.05 outside the family).
  fgsm = main.splitlines()[2].split(" | ").index("FGSM acc ε=0.1 (%)")
  assert lm_line.split(" | ")[fgsm].endswith(" ‡")
  assert "- on-manifold AT vs PGD-AT (primary family): significantly higher clean" in md
  assert "Primary-family tests against PGD-AT" in md


def test_no_cost_is_worded_only_from_tost():
  rows = summarize(_runs(), robust_eps=0.1)
  by = {(r["method"], r["metric"]): r for r in rows}
  lm = by[("latent_mixup", "test/accuracy")]
  runs = _runs()
  a = [runs["latent_mixup"][s]["test/accuracy"] for s in range(3)]
  b = [runs["erm"][s]["test/accuracy"] for s in range(3)]
  want = stats.tost_paired(a, b, 0.005)
  assert lm["equivalent"] and lm["tost_p"] == pytest.approx(want.p) and lm["margin"] == 0.005
  text = " ".join(conclusions(rows, robust_eps=0.1))
  assert "no significant difference in clean accuracy" in text
  assert "equivalent within ±0.50 pp (TOST p=" in text
  # mixup's +1.5 pp is neither significant after Holm nor equivalent within 0.5 pp.
  mix = text.split("mixup vs ERM")[1]
  assert "not shown equivalent within ±0.50 pp" in mix.split(";")[1]


def test_gradient_masking_flags_and_wording():
  runs = _runs()
  flags = diagnostics.masking_flags(runs)
  found = {(f["method"], f["check"]) for f in flags}
  assert ("latent_mixup", "FGSM gain above PGD gain") in found
  assert ("pgd_at", "PGD well above AutoAttack") in found
  gap = next(f["detail"] for f in flags if f["check"] == "PGD well above AutoAttack")
  assert gap == "PGD 60.00% vs AutoAttack 30.00%"  # same image set (or counts unknown)
  quick = {"pgd_at": {0: dict(runs["pgd_at"][0], **{"attacks/samples": 2000.0,
                                                    "autoattack/samples": 500.0})}}
  assert next(f["detail"] for f in diagnostics.masking_flags(quick)
              if f["check"] == "PGD well above AutoAttack") == (
                  "PGD 60.00% vs AutoAttack 30.00% (PGD on the first 2000 test images, "
                  "AutoAttack on the first 500)")
  assert ("pgd_at", "black-box above white-box") in found
  assert not any(m in ("erm", "mixup", "on_manifold_at") for m, _ in found)
  assert len([f for f in flags if f["method"] == "latent_mixup"]) == 3  # every seed
  # A gain under attack of a flagged member is never worded "better".
  rows = summarize(runs, robust_eps=0.1)
  sentences = conclusions(rows, robust_eps=0.1, masking=flags)
  pgd_at = next(c for c in sentences if c.startswith("PGD-AT vs ERM"))
  assert "significantly higher PGD acc ε=0.1 (+50.20 pp, secondary-family Holm-adjusted " \
      "p<0.001; flagged for gradient masking: not evidence of robustness)" in pgd_at
  oma = next(c for c in sentences if c.startswith("on-manifold AT vs ERM"))
  assert "significantly higher PGD acc ε=0.1" in oma and "better" in oma  # not flagged
  assert "Flagged for gradient masking (see its table): Latent-Mixup (GAN) (ε = 0.1), " \
      "PGD-AT (ε = 0.1);" in " ".join(sentences)
  unflagged = " ".join(conclusions(rows, robust_eps=0.1))
  assert "not evidence of robustness" not in unflagged
  # A flag holds at its own ε: flagged at 0.2 only, PGD-AT's gain at 0.1 is worded "better".
  elsewhere = [dict(f, eps=0.2) if f["method"] == "pgd_at" else f for f in flags]
  sentences = conclusions(rows, robust_eps=0.1, masking=elsewhere)
  pgd_at = next(c for c in sentences if c.startswith("PGD-AT vs ERM"))
  assert "significantly higher PGD acc ε=0.1 (+50.20 pp, secondary-family Holm-adjusted " \
      "p<0.001; better)" in pgd_at
  assert "PGD-AT (ε = 0.2);" in " ".join(sentences)


def test_attack_ladder_puts_pgd_apgd_and_autoattack_side_by_side_with_the_flags():
  runs = _runs()
  for s in range(3):  # APGD-CE for PGD-AT only: 5 points below its PGD-10
    runs["pgd_at"][s]["apgd/acc@0.1"] = runs["pgd_at"][s]["pgd/acc@0.1"] - 0.05
  rows = summarize(runs, robust_eps=0.1)
  lines = diagnostics.attack_ladder(rows, list(runs), diagnostics.masking_flags(runs),
                                    lambda r: "–" if r is None or not r["n"] else
                                    f"{100 * r['mean']:.2f}")
  assert lines[0] == "L∞ ε = 0.1:"
  by = {line.split(" | ")[0][2:]: line for line in lines if line.startswith("| ")}
  # PGD-AT: PGD 0.60 + 0.012 s, AutoAttack 0.30 + 0.01 s, flagged on every seed.
  assert by["PGD-AT"] == "| PGD-AT | 61.20 | 56.20 | 31.00 | +30.20 | 0, 1, 2 |"
  assert by["ERM"] == "| ERM | 11.00 | – | 9.00 | +2.00 | no |"
  assert diagnostics.attack_ladder(summarize({"erm": {0: _member(0.9, 0.1, 0.4)}}), ["erm"],
                                   [], str) == []  # no AutoAttack: no table


def test_collapsed_corruption_is_named_and_mca_reported_with_and_without(tmp_path):
  runs = _runs()
  collapsed = diagnostics.collapsed_corruptions(runs)
  assert collapsed == {"corruption/brightness/accuracy": ["erm"]}  # 9.74% on every seed
  # By class share: a single seed at a class's share is named too; a seed off it is not.
  one = {"erm": {0: {"corruption/fog/accuracy": 0.1135}}, "x": {0: {
      "corruption/fog/accuracy": 0.1500}}}
  assert diagnostics.collapsed_corruptions(one, class_shares=[0.098, 0.1135]) == {
      "corruption/fog/accuracy": ["erm"]}
  assert diagnostics.collapsed_corruptions(one) == {}  # one seed, no shares: not named
  # The shares of the scored images come from the test labels; a driver without the data
  # says so and falls back to the equal-on-every-seed rule.
  lines = []
  assert diagnostics.corruption_class_shares("cifar10", str(tmp_path / "no_data"), 100,
                                             log=lines.append) is None
  assert "class shares of the cifar10 test set unavailable" in lines[0]
  derived = diagnostics.with_mca_without_collapsed(runs, collapsed)
  for m, per in derived.items():
    for s, met in per.items():
      assert met["corruption/mca"] == runs[m][s]["corruption/mca"]  # benchmark's mCA kept
      assert met[diagnostics.MCA_WITHOUT] == runs[m][s]["corruption/fog/accuracy"]
  out = write_comparison_report(str(tmp_path), runs, "Collapse", robust_eps=0.1)
  md = open(out["markdown"]).read()
  table = md.split("## Corruptions: per-corruption accuracy and collapse to one class")[1]
  table = table.split("\n## ")[0]
  assert "Collapsed to one class (⊘): brightness (ERM)" in table
  bright = next(l for l in table.splitlines() if l.startswith("| brightness |"))
  assert bright.split(" | ")[1].endswith("⊘") and bright.count("⊘") == 1
  assert any(l.startswith("| mCA |") for l in table.splitlines())
  assert any(l.startswith("| mCA without collapsed |") for l in table.splitlines())


def test_protocol_is_frozen_and_checks_its_fields():
  assert DEFAULT_PROTOCOL.family("latent_mixup_vae", "corruption/mca", "erm") == "primary"
  assert DEFAULT_PROTOCOL.family("latent_mixup", "test/accuracy", "pgd_at") == "secondary"
  assert DEFAULT_PROTOCOL.family("on_manifold_at", "test/accuracy", "pgd_at") == "primary"
  with pytest.raises(Exception):
    DEFAULT_PROTOCOL.alpha = 0.1  # frozen
  with pytest.raises(ValueError, match="error: StatsProtocol.margins.*test/accuracy"):
    StatsProtocol(margins=(("test/accuracy", 0.0),))
  with pytest.raises(ValueError, match="error: StatsProtocol.robust_methods trades"):
    StatsProtocol(robust_methods=("trades",))


def test_the_declared_goal_gives_each_robust_method_its_verdict_and_distance(tmp_path):
  import json  # pylint: disable=import-outside-toplevel
  from latmix_tf.comparison.goal import RobustGoal  # pylint: disable=import-outside-toplevel
  from latmix_tf.comparison.metrics import label  # pylint: disable=import-outside-toplevel
  runs = _runs()
  # A latent-space robust method that misses every criterion: 5.5 points of clean accuracy
  # below ERM (PGD-AT's cost is 4.5), AutoAttack 5 points below PGD-AT's, 1 point less clean
  # accuracy than PGD-AT.
  runs["latent_mixup_at"] = {s: _member(0.84 + 0.01 * s, 0.5, 0.6, aa=0.25 + 0.01 * s)
                             for s in range(3)}
  protocol = StatsProtocol(goal=RobustGoal())
  out = write_comparison_report(str(tmp_path / "erm"), runs, "Goal", "desc", robust_eps=0.1,
                                protocol=protocol)
  found = {v["method"]: v for v in json.load(open(out["json"]))["goal"]}
  assert set(found) == {"on_manifold_at", "latent_mixup_at"}
  oma, lma = found["on_manifold_at"], found["latent_mixup_at"]
  # ERM 0.905, PGD-AT 0.860: PGD-AT costs 4.5 points, half of it is the limit.
  assert oma["baseline_cost"] == pytest.approx(0.045) and oma["limit"] == pytest.approx(0.0225)
  assert oma["cost"] == pytest.approx(0.905 - 0.892)
  assert oma["autoattack_gap"] == pytest.approx(-0.183)     # 18.3 points above PGD-AT
  assert oma["clean_gain"] == pytest.approx(0.032) and oma["p_holm"] < 0.05
  assert oma["met"] and oma["robustness"] and oma["price"] and oma["evidence"]
  assert lma["cost"] == pytest.approx(0.055) and lma["autoattack_gap"] == pytest.approx(0.05)
  assert lma["clean_gain"] == pytest.approx(-0.01)
  assert not (lma["met"] or lma["robustness"] or lma["price"] or lma["evidence"])
  # The Pareto front of (clean, AutoAttack) means: mixup (0.920, 0.09) dominates ERM and
  # Latent-Mixup (about 0.905, 0.09); on-manifold AT (0.892, 0.493) dominates PGD-AT
  # (0.860, 0.31) and latent_mixup_at (0.850, 0.26).
  assert json.load(open(out["json"]))["pareto_front"] == ["mixup", "on_manifold_at"]
  text = open(out["markdown"]).read()
  assert (f"(L∞ ε=0.1; means over seeds, no other method at least as high on both and higher "
          f"on one): {label('mixup')}, {label('on_manifold_at')}.") in text
  assert "## Goal" in text and f"Met by: {label('on_manifold_at')}." in text
  assert "| missed: robustness, price, evidence, soundness |" in text
  assert (f"- {label('latent_mixup_at')}: numbers not sound (PGD well above AutoAttack "
          f"(seeds 0, 1, 2)).") in text
  # At the limit is within it: AutoAttack 0.654 vs 0.634 is a gap of 0.02000000000000001.
  edge = {m: dict(per) for m, per in runs.items()}
  edge["latent_mixup_at"] = {s: _member(0.89 + 0.01 * s, 0.5, 0.6,
                                        aa=runs["pgd_at"][s]["autoattack/Linf@0.1/robust_accuracy"]
                                        - 0.02) for s in range(3)}
  at_limit = goal.verdicts(protocol.goal, summarize(edge, robust_eps=0.1, protocol=protocol),
                           ["latent_mixup_at"], 0.1)[0]
  assert at_limit["autoattack_gap"] > 0.02 and at_limit["robustness"]
  # Soundness: the same on-manifold AT numbers with a failed sanity check on seed 1, or
  # with Square breaking what the white-box attacks left at the goal's ε, miss the goal;
  # a flag at another ε does not count against it.
  rows = summarize(runs, robust_eps=0.1, protocol=protocol)
  failing = {m: dict(per) for m, per in runs.items()}
  failing["on_manifold_at"][1] = dict(runs["on_manifold_at"][1], **{
      "sanity/deepfool_flips_every_image": 0.0, "sanity/pgd_monotone_in_eps": 1.0,
      "sanity/failed": 1.0})
  square = [{"method": "on_manifold_at", "seed": 0, "eps": eps, "check": "black-box above "
             "white-box", "detail": ""} for eps in (0.1, 0.2)]
  for case, why in (((failing, []), "fails deepfool_flips_every_image (seed 1)"),
                    ((runs, square), "black-box above white-box (seed 0)"),
                    ((runs, square[1:]), "")):
    v = next(v for v in goal.verdicts(protocol.goal, rows, ["on_manifold_at"], 0.1,
                                      goal.unsound(*case, 0.1)))
    assert v["unsound"] == why and v["soundness"] == (not why) and v["met"] == (not why)
    assert v["robustness"] and v["price"] and v["evidence"]
  lines = goal.goal_lines(protocol.goal, [v for v in goal.verdicts(
      protocol.goal, rows, ["on_manifold_at"], 0.1, goal.unsound(failing, [], 0.1))],
                          "erm", 0.1)
  assert "| missed: soundness |" in "\n".join(lines)
  assert (f"- {label('on_manifold_at')}: numbers not sound (fails "
          f"deepfool_flips_every_image (seed 1)).") in lines
  # The report against PGD-AT, and a comparison that declares no goal, have no goal section.
  vs_pgd = write_comparison_report(str(tmp_path / "pgd"), runs, "Goal", "desc",
                                   reference="pgd_at", robust_eps=0.1, protocol=protocol)
  plain = write_comparison_report(str(tmp_path / "plain"), runs, "Goal", "desc", robust_eps=0.1)
  for report in (vs_pgd, plain):
    assert "## Goal" not in open(report["markdown"]).read()
    assert json.load(open(report["json"]))["goal"] is None
    assert json.load(open(report["json"]))["pareto_front"] == []
  with pytest.raises(ValueError, match="goal.baseline 'trades' must be the robust_reference"):
    StatsProtocol(goal=RobustGoal(baseline="trades"))
