"""The comparison's files: results.csv, results.json, report.md and the figures.

results.csv is long format so it loads straight into a spreadsheet or pandas: for each method
and metric, the aggregated row (seed "all": mean, CI, paired test) followed by one row per
seed (its value and, where the reference ran that seed, its paired difference);
results.json adds every per-seed metric and the conclusion;
report.md is what a reader opens first: the declared statistics protocol and what each mark
means, conclusion, main table, paired tests (family, Holm, TOST), gradient-masking flags,
the per-corruption table with mCA with and without collapsed corruptions, all metrics,
figures. The JSON is written without TensorFlow so reports can be rebuilt on any machine.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import shutil
from typing import Any, Dict, List, Mapping, Optional, Sequence

from latmix_tf import html_report
from latmix_tf.comparison import diagnostics, goal
from latmix_tf.comparison.costs import cost_table
from latmix_tf.comparison.figures import comparison_figures
from latmix_tf.comparison.hparams import export_hparams
from latmix_tf.comparison.metrics import (fmt, headline_metrics, label, metric_label,
                                          report_metrics, with_relative_corruption_error)
from latmix_tf.comparison.protocol import DEFAULT_PROTOCOL, StatsProtocol, marks
from latmix_tf.comparison.sampling import sampling_table, sampling_uncertainty
from latmix_tf.comparison.summary import conclusions, index, summarize
from latmix_tf.jsonio import write_json_atomic

CSV_FIELDS = ("method", "seed", "metric", "n", "mean", "std", "ci95_half_width", "ci95_low",
              "ci95_high", "diff_vs_ref", "diff_ci95_half_width", "p_vs_ref", "n_pairs",
              "family", "p_holm", "significant", "margin", "tost_p", "equivalent",
              "diff_vs_robust_ref", "p_vs_robust_ref", "p_holm_vs_robust_ref",
              "significant_vs_robust_ref", "seeds", "values")
# The six columns of the answer (README, "At a glance"): accuracy, the strongest attack, the
# common corruptions, blur, DeepFool and calibration; "autoattack" is the headline L∞ budget.
GLANCE = ("test/accuracy", "autoattack", "corruption/mca", "blur/area", "deepfool/rho_adv",
          "calibration/ece")
GRID_FILE = "latent_mixed_grid.png"


def csv_rows(rows: Sequence[Dict], reference: str) -> List[Dict[str, Any]]:
  """The rows of results.csv: each summary row (seed "all"), then one row per seed that has
  the metric."""
  idx = index(rows)
  out = []
  for r in rows:
    out.append({**r, "seed": "all", "seeds": ";".join(map(str, r["seeds"])),
                "values": ";".join(repr(v) for v in r["values"])})
    ref = idx.get((reference, r["metric"]))
    ref_at = dict(zip(ref["seeds"], ref["values"])) if ref and r["method"] != reference else {}
    for seed, value in zip(r["seeds"], r["values"]):
      if not math.isfinite(value):  # this seed has no such metric (e.g. ERM's mix/*)
        continue
      paired = seed in ref_at and math.isfinite(ref_at[seed])
      out.append({"method": r["method"], "seed": seed, "metric": r["metric"], "n": 1,
                  "mean": value, "diff_vs_ref": value - ref_at[seed] if paired else "",
                  "n_pairs": int(paired), "family": r["family"], "seeds": seed,
                  "values": repr(value)})
  return out


def _cell(r: Optional[Dict]) -> str:
  """ "mean ± half-width" + the row's marks (`protocol.marks`); n/a CI with one seed."""
  if r is None or r["n"] == 0:
    return "–"
  half = r["ci95_half_width"]
  ci = fmt(r["metric"], half) if math.isfinite(half) else "n/a"
  return f"{fmt(r['metric'], r['mean'])} ± {ci}{marks(r)}"


def _diff_cell(r: Optional[Dict]) -> str:
  """ "difference ± half-width of its 95% CI" + the row's marks, in display units."""
  if r is None or r["n_pairs"] == 0:
    return "–"
  half = r.get("diff_ci95_half_width", float("nan"))
  ci = fmt(r["metric"], half) if math.isfinite(half) else "n/a"
  return f"{fmt(r['metric'], r['diff_vs_ref'], True)} ± {ci}{marks(r)}"


def glance_tables(rows: Sequence[Dict], methods: Sequence[str], reference: str,
                  head: Sequence[str]) -> List[str]:
  """Markdown lines of the two short tables a reader (and the README) quotes: the GLANCE
  metrics as mean ± CI per method, then each method's paired difference from `reference`."""
  idx = index(rows)
  keys = [next((h for h in head if h.startswith("autoattack/")), None) if g == "autoattack"
          else g for g in GLANCE]
  keys = [k for k in keys if k is not None and any((m, k) in idx for m in methods)]
  header = "| method | " + " | ".join(metric_label(k) for k in keys) + " |"
  lines = [header, "|---|" + "---|" * len(keys)]
  lines += [f"| {label(m)} | " + " | ".join(_cell(idx.get((m, k))) for k in keys) + " |"
            for m in methods]
  others = [m for m in methods if m != reference]
  if reference in methods and others:
    lines += ["", f"Difference from {label(reference)} (mean paired difference ± 95% CI):", "",
              header, "|---|" + "---|" * len(keys)]
    lines += [f"| {label(m)} | " + " | ".join(_diff_cell(idx.get((m, k))) for k in keys) +
              " |" for m in others]
  return lines


# The columns of `mixes_table`, in the order a mix is built: inversion, then mixing.
MIXES = ("bank/mean_psnr", "mix/real_confidence", "mix/recon_confidence",
         "mix/label_confidence", "mix/source_mass", "mix/dominant_agreement")


def mixes_table(rows: Sequence[Dict], methods: Sequence[str]) -> List[str]:
  """Markdown lines: for each latent-mixup method, how well its bank inverts the training set
  and how its decoded mixes look to the dataset's reference network (`latent.mix_quality`).

  Why in the report: whether Latent-Mixup can help depends on whether a mix looks like what
  its soft label says; the README quotes this table next to the ablation, verbatim."""
  idx = index(rows)
  mixing = [m for m in methods if idx.get((m, "mix/label_confidence"), {}).get("n")]
  if not mixing:
    return []
  return (["The dataset's reference network (the `erm` classifier the Fréchet distance also "
           "uses, trained without mixes; one network for every seed and scale) scores real "
           "training images, their bank reconstructions G(z) and 2000 mixes per run drawn as "
           "training draws them; mean ± 95% CI over seeds. With a one-hot "
           "mixed label (same-class pairs, reconstructions only) p(mixed label) is the mass "
           "on the source class and the larger-weight class is undefined (–).", "",
           "| method | bank PSNR (dB) | p(true class), real | p(true class), G(z) | "
           "p(mixed label) | mass on the source classes | top class = larger-weight (%) |",
           "|---|" + "---|" * len(MIXES)] +
          [f"| {label(m)} | " + " | ".join(_cell(idx.get((m, k))) for k in MIXES) + " |"
           for m in mixing])


def _p(v: float) -> str:
  return f"{v:.4f}" if math.isfinite(v) else "n/a"


def _paired_tests(rows, methods, reference, head, protocol, alpha) -> List[str]:
  """The paired-test table: each headline test with its family, Holm p and TOST verdict, then
  the robust methods' primary tests against the robust reference."""
  idx = index(rows)
  lines = ["| method | metric | family | mean difference ± 95% CI | p | Holm-adjusted p "
           f"(within family) | TOST p (margin) | paired seeds | significant (α={alpha}) |",
           "|---|---|---|---|---|---|---|---|---|"]
  for m in methods:
    for k in head if m != reference else ():
      r = idx[(m, k)]
      tost = (f"{_p(r['tost_p'])} (±{fmt(k, r['margin'], True).lstrip('+')})"
              if math.isfinite(r["margin"]) else "–")
      sig = "yes" if r["significant"] else "no"
      lines.append(f"| {label(m)} | {metric_label(k)} | {r['family'] or '–'} | "
                   f"{_diff_cell(dict(r, significant=False, equivalent=False))} | "
                   f"{_p(r['p_vs_ref'])} | {_p(r['p_holm'])} | {tost} | {r['n_pairs']} | "
                   f"{sig} |")
  robust = [r for r in rows if math.isfinite(r["p_vs_robust_ref"])]
  if robust:
    lines += ["", f"Primary-family tests against {label(protocol.robust_reference)}:", "",
              "| method | metric | mean difference | p | Holm-adjusted p (primary) | "
              "significant |", "|---|---|---|---|---|---|"]
    lines += [f"| {label(r['method'])} | {metric_label(r['metric'])} | "
              f"{fmt(r['metric'], r['diff_vs_robust_ref'], True)} | {_p(r['p_vs_robust_ref'])} "
              f"| {_p(r['p_holm_vs_robust_ref'])} | "
              f"{'yes' if r['significant_vs_robust_ref'] else 'no'} |" for r in robust]
  return lines


def _markdown(rows, runs, title, description, reference, alpha, robust_eps, figures, notes,
              concl, costs, protocol, masking, collapsed, found=None, front=(),
              class_shares=None) -> str:
  idx, methods = index(rows), list(runs)
  seeds = sorted({int(s) for per in runs.values() for s in per})
  lines = [f"# {title}", "", description.strip(), "",
           f"Methods: {', '.join(label(m) for m in methods)}. Seeds: "
           f"{', '.join(map(str, seeds))}. Each cell is the mean over seeds ± the half-width "
           f"of its 95% Student-t confidence interval (n-1 degrees of freedom; n/a with one "
           f"seed); tests compare with {label(reference)} by two-sided paired t-tests on the "
           f"per-seed differences. Accuracies in %.", ""]
  lines += [line for par in protocol.header(reference) for line in (par, "")]
  lines += ["## Conclusion", ""]
  lines += [f"- {c}" for c in concl]
  if found is not None:
    lines += ["", "## Goal", ""] + goal.goal_lines(protocol.goal, found, reference, robust_eps,
                                                     front)
  keys = report_metrics(runs)
  head = headline_metrics(keys, robust_eps)
  lines += ["", "## At a glance", ""] + glance_tables(rows, methods, reference, head)
  lines += ["", "## Main results", "",
            "| method | seeds | " + " | ".join(metric_label(k) for k in head) + " |",
            "|---|---|" + "---|" * len(head)]
  for m in methods:
    lines.append(f"| {label(m)} | {len(runs[m])} | " +
                 " | ".join(_cell(idx.get((m, k))) for k in head) + " |")
  if reference in runs and len(methods) > 1:
    lines += ["", f"## Paired t-tests against {label(reference)}", ""]
    lines += _paired_tests(rows, methods, reference, head, protocol, alpha)
  sampling = sampling_table(sampling_uncertainty(runs, rows, head))
  if sampling:
    lines += ["", "## Seeds or test images: which uncertainty is larger", "",
              "Each accuracy is measured on a sample of the test set; its binomial error is "
              "not in the seed CI. Both half-widths, per headline accuracy:", ""] + sampling
  lines += ["", "## Gradient-masking flags", ""] + diagnostics.masking_section(
      masking, rows, methods, reference, protocol, _cell)
  corr = diagnostics.corruption_table(rows, methods, collapsed, _cell, class_shares)
  if corr:
    lines += ["", "## Corruptions: per-corruption accuracy and collapse to one class", ""] + corr
  lines += ["", "## All metrics", "", "| metric | " + " | ".join(map(label, methods)) + " |",
            "|---|" + "---|" * len(methods)]
  for k in keys:
    lines.append(f"| {metric_label(k)} | " +
                 " | ".join(_cell(idx.get((m, k))) for m in methods) + " |")
  mixes = mixes_table(rows, methods)
  if mixes:
    lines += ["", "## Decoded mixes as the reference network sees them", ""] + mixes
  if costs:
    lines += ["", "## Cost per member", ""] + cost_table(costs)
  if notes:
    lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
  lines += ["", "## Figures", ""] + [f"![{f}]({f})\n" for f in figures]
  return "\n".join(lines) + "\n"


def write_comparison_report(out_dir: str, runs: Mapping[str, Mapping], title: str,
                            description: str = "", reference: str = "erm",
                            alpha: Optional[float] = None, robust_eps: Optional[float] = None,
                            sample_grid: Optional[str] = None,
                            notes: Sequence[str] = (),
                            member_costs: Sequence[Mapping] = (),
                            protocol: Optional[StatsProtocol] = None,
                            class_shares: Optional[Sequence[float]] = None) -> Dict[str, Any]:
  """Writes results.csv, results.json, report.md and the PNGs into `out_dir`.

  Args:
    out_dir: destination folder (created).
    runs: {method: {seed: metrics}}; the tables list methods in this order.
    title / description: report heading and its first paragraph.
    reference: the method every other one is tested against (ERM).
    alpha: family-wise level of each Holm family (default: the protocol's).
    robust_eps: ε of the headline FGSM / PGD columns (default: the largest evaluated).
    sample_grid: a latent-mixed sample PNG, copied in as `latent_mixed_grid.png`.
    notes: extra bullet points (cost caveats, provenance).
    member_costs: `costs.member_cost` rows with "method" and "seed", tabled per member.
    protocol: the declared statistics protocol (default `protocol.DEFAULT_PROTOCOL`).
    class_shares: each class's share of the test set, to name corruptions where a model
      answers one class (without it, a constant accuracy over seeds names them).
  Returns:
    {"csv": path, "json": path, "markdown": path, "figures": [paths]}.
  Raises:
    ValueError: no run at all; FileNotFoundError: `sample_grid` given but missing.
  """
  if not runs or not all(runs.values()):
    raise ValueError("write_comparison_report needs at least one seed for every method; got "
                     f"{ {m: len(v) for m, v in (runs or {}).items()} }.")
  if sample_grid and not os.path.isfile(sample_grid):
    raise FileNotFoundError(f"latent-mixed sample grid {sample_grid} does not exist; run the "
                            "latent_mixup experiment first or pass sample_grid=None.")
  os.makedirs(out_dir, exist_ok=True)
  protocol = protocol or DEFAULT_PROTOCOL
  alpha = protocol.alpha if alpha is None else alpha
  runs = with_relative_corruption_error(runs, reference)  # mCE-style ratio vs the reference
  collapsed = diagnostics.collapsed_corruptions(runs, class_shares, protocol)
  runs = diagnostics.with_mca_without_collapsed(runs, collapsed)
  masking = diagnostics.masking_flags(runs, reference, protocol)
  rows = summarize(runs, reference, alpha=alpha, robust_eps=robust_eps, protocol=protocol)
  concl = conclusions(rows, reference, alpha, robust_eps, protocol, masking)
  found = (goal.verdicts(protocol.goal, rows, [m for m in runs if m in protocol.robust_methods],
                         robust_eps, goal.unsound(runs, masking, robust_eps))
           if protocol.goal and reference != protocol.robust_reference else None)
  front = goal.pareto_front(rows, list(runs), robust_eps)  # drawn in every comparison's figure
  figs = [os.path.basename(f) for f in comparison_figures(rows, out_dir, title, reference,
                                                          robust_eps, front)]
  front = front if found is not None else []  # named in the text only beside a goal
  if sample_grid:
    shutil.copyfile(sample_grid, os.path.join(out_dir, GRID_FILE))
    figs.append(GRID_FILE)
  csv_path = os.path.join(out_dir, "results.csv")
  with open(csv_path, "w", newline="") as f:
    writer = csv.DictWriter(f, CSV_FIELDS)
    writer.writeheader()
    writer.writerows(csv_rows(rows, reference))
  json_path = os.path.join(out_dir, "results.json")
  write_json_atomic(json_path, {
      "title": title, "reference": reference, "alpha": alpha, "conclusion": concl,
      "protocol": dataclasses.asdict(protocol), "masking_flags": masking,
      "collapsed_corruptions": collapsed, "goal": found,
      "pareto_front": front,
      "sampling_uncertainty": sampling_uncertainty(runs, rows, report_metrics(runs)),
      "summary": rows,  # write_json_atomic turns nan into null
      "per_seed": {m: {str(s): {k: v for k, v in met.items() if isinstance(v, (int, float))}
                       for s, met in per.items()} for m, per in runs.items()},
      "member_costs": list(member_costs)})
  md_path = os.path.join(out_dir, "report.md")
  with open(md_path, "w") as f:
    f.write(_markdown(rows, runs, title, description, reference, alpha, robust_eps, figs,
                      notes, concl, member_costs, protocol, masking, collapsed, found,
                      front, class_shares))
  html_path = html_report.write_html(md_path)  # self-contained, sortable tables
  tensorboard_dir = export_hparams(out_dir, runs)  # HParams dashboard: trial = method config
  return {"csv": csv_path, "json": json_path, "markdown": md_path, "html": html_path,
          "tensorboard": tensorboard_dir, "figures": [os.path.join(out_dir, f) for f in figs]}
