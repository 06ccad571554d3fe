"""Per-member checks that decide how a comparison may word its numbers.

Why: two patterns make a number look better than the model is. (1) Gradient masking: an
attack that follows the gradient fails because the gradient is useless, not because the
model is robust - it shows as a gain under FGSM that PGD does not confirm (FGSM accuracy
above the reference's while PGD accuracy is not, at the same ε and seed), as the one-step
attack beating the iterative one (PGD accuracy above FGSM's), as PGD accuracy well above
AutoAttack's at the same ε, or as the black-box Square attack breaking images the
white-box attacks left (Athalye et al. 2018; Croce & Hein 2020). FGSM accuracy above the
model's own PGD accuracy is what every model shows (PGD iterates FGSM), so that alone is
no flag. A gain under attack by a
flagged member is not robustness, and the conclusions never word it as such. (2) A model
that answers one class for every image of a corruption scores that class's share of the test
set (9.74% for MNIST's "8"); such a corruption moves mCA by the share, not by robustness.
`collapsed_corruptions` names them and `with_mca_without_collapsed` adds mCA without them
beside the benchmark's mCA, which stays as the benchmark defines it (the mean over all).
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from latmix_tf.comparison.metrics import at_value, label, matches, same_eps
from latmix_tf.comparison.protocol import COLLAPSED_MARK, DEFAULT_PROTOCOL, StatsProtocol

CORRUPTION = "corruption/*/accuracy"
MCA_WITHOUT = "corruption/mca_without_collapsed"
PGD_ABOVE_AUTOATTACK = "PGD well above AutoAttack"  # a masking check's name, as flags carry it


def _autoattack_linf(metrics: Mapping, eps: float) -> Optional[str]:
  keys = [k for k in metrics if matches(k, "autoattack/Linf@*/robust_accuracy")
          and same_eps(at_value(k), eps)]
  return keys[0] if keys else None


def masking_flags(runs: Mapping[str, Mapping], reference: str = "erm",
                  protocol: StatsProtocol = DEFAULT_PROTOCOL) -> List[Dict]:
  """Gradient-masking patterns of every member (method, seed), one dict per pattern found.

  Checks, at every ε where both attacks ran: FGSM accuracy above the reference's at the
  same seed while PGD accuracy is not ("FGSM gain above PGD gain"); PGD accuracy above FGSM
  accuracy; PGD accuracy >= AutoAttack (L∞) robust accuracy + `protocol.masking_pgd_gap`;
  and in AutoAttack's
  cumulative per-attack accuracies ("autoattack/<budget>/after_<attack>", in run order),
  Square (black-box) lowering the accuracy the white-box attacks left.

  Returns:
    [{"method", "seed", "eps", "check", "detail"}], in `runs` order.
  """
  out = []
  for method, per_seed in runs.items():
    for seed in sorted(per_seed, key=int):
      m = per_seed[seed]
      ref = runs.get(reference, {}).get(seed) if method != reference else None
      found = []
      for key in sorted((k for k in m if k.startswith("pgd/acc@") and at_value(k) > 0),
                        key=at_value):
        eps, pgd = at_value(key), float(m[key])
        fgsm = m.get(f"fgsm/acc@{key.split('@', 1)[1]}")
        if fgsm is not None and ref is not None and key in ref and \
            f"fgsm/acc@{key.split('@', 1)[1]}" in ref:
          gain_fgsm = float(fgsm) - float(ref[f"fgsm/acc@{key.split('@', 1)[1]}"])
          gain_pgd = pgd - float(ref[key])
          if gain_fgsm > 0 and gain_pgd <= 0:
            found.append((eps, "FGSM gain above PGD gain",
                          f"vs {label(reference)}: FGSM {100 * gain_fgsm:+.2f} pp, "
                          f"PGD {100 * gain_pgd:+.2f} pp"))
        if fgsm is not None and pgd > float(fgsm):
          found.append((eps, "PGD above FGSM",
                        f"PGD {100 * pgd:.2f}% > FGSM {100 * float(fgsm):.2f}%"))
        aa = _autoattack_linf(m, eps)
        if aa is not None and pgd - float(m[aa]) >= protocol.masking_pgd_gap - 1e-12:
          found.append((eps, PGD_ABOVE_AUTOATTACK,
                        f"PGD {100 * pgd:.2f}% vs AutoAttack {100 * float(m[aa]):.2f}%"
                        + _image_sets(m)))
      budgets = {k.split("/")[1] for k in m if matches(k, "autoattack/*/after_square")}
      for budget in sorted(budgets):
        after = [k for k in m if k.startswith(f"autoattack/{budget}/after_")]
        i = after.index(f"autoattack/{budget}/after_square")
        if i > 0 and float(m[after[i]]) < float(m[after[i - 1]]):
          found.append((at_value(f"autoattack/{budget}/"), "black-box above white-box",
                        f"Square broke {100 * (float(m[after[i - 1]]) - float(m[after[i]])):.2f}"
                        f"% more of {budget} after the white-box attacks"))
      out += [{"method": method, "seed": int(seed), "eps": e, "check": c, "detail": d}
              for e, c, d in found]
  return out


def _image_sets(m: Mapping) -> str:
  """" (PGD on the first 2000 test images, AutoAttack on the first 500)" when the two ran
  on different image sets (the quick scale): part of such a gap is sampling, not masking."""
  n_pgd, n_aa = m.get("attacks/samples"), m.get("autoattack/samples")
  if n_pgd is None or n_aa is None or int(n_pgd) == int(n_aa):
    return ""
  return f" (PGD on the first {int(n_pgd)} test images, AutoAttack on the first {int(n_aa)})"


def attack_ladder(rows: Sequence[Dict], methods: Sequence[str], flags: Sequence[Dict],
                  cell) -> List[str]:
  """Markdown lines: at each L∞ ε where AutoAttack ran, every method's PGD-10, APGD-CE and
  AutoAttack accuracy side by side (mean ± CI over seeds, by `cell`), PGD's margin over
  AutoAttack, and the seeds flagged "PGD well above AutoAttack" there - the VarMixup lesson:
  a PGD figure far above AutoAttack's is not the model's robustness. Each attack's image
  count is its `*/samples` metric (one set at full scale; quick runs PGD on more images)."""
  idx = {(r["method"], r["metric"]): r for r in rows}
  budgets = sorted({at_value(r["metric"]) for r in rows
                    if matches(r["metric"], "autoattack/Linf@*/robust_accuracy")})
  lines = []
  for eps in budgets:
    pgd, apgd, aa = (next((k for _, k in idx if matches(k, pattern)
                           and same_eps(at_value(k), eps)), None)
                     for pattern in ("pgd/acc@", "apgd/acc@", "autoattack/Linf@*/robust_accuracy"))
    lines += [f"L∞ ε = {eps:g}:", "",
              "| method | PGD-10 | APGD-CE | AutoAttack | PGD − AutoAttack (points) | "
              "flagged (seeds) |", "|---|---|---|---|---|---|"]
    for m in methods:
      r_pgd, r_aa = idx.get((m, pgd)), idx.get((m, aa))
      diff = r_pgd["mean"] - r_aa["mean"] if r_pgd and r_aa else float("nan")
      gap = f"{100 * diff:+.2f}" if np.isfinite(diff) else "–"
      seeds = sorted({f["seed"] for f in flags if f["method"] == m and
                      f["check"] == PGD_ABOVE_AUTOATTACK and same_eps(f["eps"], eps)})
      lines.append(f"| {label(m)} | {cell(r_pgd)} | {cell(idx.get((m, apgd)))} | "
                   f"{cell(r_aa)} | {gap} | {', '.join(map(str, seeds)) or 'no'} |")
    lines.append("")
  return lines[:-1]


def masking_section(flags: Sequence[Dict], rows: Sequence[Dict], methods: Sequence[str],
                    reference: str, protocol: StatsProtocol, cell) -> List[str]:
  """The report's gradient-masking section: what is checked, the flags, and the attacks at
  each AutoAttack ε side by side (`attack_ladder`)."""
  lines = [f"Per member, at each ε where both ran: a gain over {label(reference)} (same seed) "
           "under FGSM that PGD does not show; PGD accuracy above FGSM's; PGD accuracy "
           f"≥ {100 * protocol.masking_pgd_gap:.0f} points above AutoAttack's (L∞); Square "
           "(black-box) breaking images the white-box attacks left. A flagged member's gains "
           "under attack at that ε are not worded as robustness.", ""]
  lines += masking_table(flags) or ["No member shows any of these patterns."]
  ladder = attack_ladder(rows, methods, flags, cell)
  if ladder:
    lines += ["", "### PGD-10, APGD-CE and AutoAttack at the same ε", ""] + ladder
  return lines


def masking_table(flags: Sequence[Dict]) -> List[str]:
  """Markdown lines: one row per flagged member and check (empty list when none)."""
  if not flags:
    return []
  return (["| method | seed | ε | gradient-masking pattern | values |", "|---|---|---|---|---|"] +
          [f"| {label(f['method'])} | {f['seed']} | {f['eps']:.4g} | {f['check']} | "
           f"{f['detail']} |" for f in flags])


def corruption_class_shares(dataset: str, data_dir: Optional[str], samples: Optional[int],
                            log=print) -> Optional[List[float]]:
  """Each class's share of the test images the corruption metrics score (the first
  `samples`, all when None): the accuracy of a model that answers that class everywhere.

  None (and one log line) when the comparison's driver cannot read the data (a driver
  outside the cluster that holds it): a collapse is then named only when its accuracy is
  the same on every seed."""
  from latmix_tf.data import load_dataset  # pylint: disable=import-outside-toplevel
  try:
    y = np.asarray(load_dataset(dataset, data_dir, allow_tfds=False, log=lambda line: None
                                ).y_test)
  except Exception as e:  # pylint: disable=broad-except
    log(f"class shares of the {dataset} test set unavailable here ({type(e).__name__}); a "
        f"corruption counts as collapsed only when its accuracy is equal on every seed")
    return None
  y = y[:samples] if samples else y
  return (np.bincount(y, minlength=int(y.max()) + 1) / len(y)).tolist()


def collapsed_corruptions(runs: Mapping[str, Mapping],
                          class_shares: Optional[Sequence[float]] = None,
                          protocol: StatsProtocol = DEFAULT_PROTOCOL,
                          tol: float = 1e-3) -> Dict[str, List[str]]:
  """{corruption key: [methods collapsed to one class on it]}.

  A method collapses on a corruption when its accuracy there is at most
  `protocol.collapse_ceiling` and either equals a class's share of the test set
  (`class_shares`, within `tol`) on every seed, or is the same constant on every seed (n >= 2).
  """
  out: Dict[str, List[str]] = {}
  keys = sorted({k for per in runs.values() for m in per.values() for k in m
                 if matches(k, CORRUPTION)})
  for key in keys:
    for method, per_seed in runs.items():
      v = [float(m[key]) for m in per_seed.values() if key in m]
      if not v or max(v) > protocol.collapse_ceiling:
        continue
      share = class_shares is not None and all(
          min(abs(x - c) for c in class_shares) <= tol for x in v)
      constant = len(v) >= 2 and max(v) - min(v) <= 1e-9
      if share or constant:
        out.setdefault(key, []).append(method)
  return out


def with_mca_without_collapsed(runs: Mapping[str, Mapping], collapsed: Mapping[str, Sequence]
                               ) -> Dict[str, Dict]:
  """`runs` with MCA_WITHOUT: the mean accuracy over the corruptions on which no method
  collapsed (the same set for every method, so the comparison stays paired). Without any
  collapsed corruption nothing is added (it would repeat mCA)."""
  out = {m: {s: dict(met) for s, met in per.items()} for m, per in runs.items()}
  if not collapsed:
    return out
  for per in out.values():
    for met in per.values():
      kept = [float(met[k]) for k in met if matches(k, CORRUPTION) and k not in collapsed]
      if kept:
        met[MCA_WITHOUT] = float(np.mean(kept))
  return out


def corruption_table(rows: Sequence[Dict], methods: Sequence[str],
                     collapsed: Mapping[str, Sequence], cell,
                     class_shares: Optional[Sequence[float]] = None) -> List[str]:
  """Markdown lines: per-corruption accuracy (mean ± CI) per method, ⊘ where it collapsed,
  then mCA with every corruption and without the collapsed ones; with `class_shares`, the
  accuracies a one-class model would score, so a reader can spot them too."""
  idx = {(r["method"], r["metric"]): r for r in rows}
  keys = sorted({r["metric"] for r in rows if matches(r["metric"], CORRUPTION)})
  if not keys:
    return []
  names = [k.split("/")[1] for k in collapsed]
  lines = [(f"Collapsed to one class ({COLLAPSED_MARK}): " +
            "; ".join(f"{k.split('/')[1]} ({', '.join(label(m) for m in ms)})"
                      for k, ms in collapsed.items()) +
            f". mCA below is the benchmark's (every corruption); \"mCA without collapsed\" "
            f"leaves out {', '.join(names)} for every method.") if collapsed else
           "No method collapsed to one class on any corruption."]
  if class_shares:
    lines[0] += (f" A model that answers one class for every image scores that class's share "
                 f"of the scored test images: {100 * min(class_shares):.2f}% to "
                 f"{100 * max(class_shares):.2f}% here.")
  lines += ["",
            "| corruption | " + " | ".join(label(m) for m in methods) + " |",
            "|---|" + "---|" * len(methods)]
  for k in keys + [k for k in ("corruption/mca", MCA_WITHOUT)
                   if any((m, k) in idx for m in methods)]:
    name = {"corruption/mca": "mCA", MCA_WITHOUT: "mCA without collapsed"}.get(
        k, k.split("/")[1])
    lines.append(f"| {name} | " + " | ".join(
        cell(idx.get((m, k))) + (f" {COLLAPSED_MARK}" if m in collapsed.get(k, ()) else "")
        for m in methods) + " |")
  return lines


def has_masking(flags: Sequence[Dict], method: str) -> bool:
  return any(f["method"] == method for f in flags)
