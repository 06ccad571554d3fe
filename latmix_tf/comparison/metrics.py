"""Which metrics the comparison reports, and how each is named, scaled and judged.

One table (`FAMILIES`) decides the report's metric order, display units (accuracies stored
as fractions, shown in %) and whether higher is better, so the tables, the figures and
the conclusion's "better" / "worse" never disagree. A family key is an exact metric key, a
prefix ending in "@" (a curve: "pgd/acc@0.1") or a pattern with "*" ("autoattack/*/
robust_accuracy", "*" standing for "Linf@0.1").

`with_relative_corruption_error` derives the mCE-style ratio (Hendrycks & Dietterich 2019
normalise by AlexNet's errors; we normalise by the reference method's, ERM's) from the
per-corruption accuracies of every run.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

METHOD_LABELS = {"erm": "ERM", "mixup": "mixup", "manifold_mixup": "manifold mixup",
                 "fgsm_at": "FGSM-AT", "pgd_at": "PGD-AT", "gat": "GAT",
                 "latent_mixup": "Latent-Mixup (GAN)", "latent_mixup_vae": "Latent-Mixup (VAE)",
                 "latent_mixup_dcgan_plain": "Latent-Mixup (plain GAN)",
                 # Robust training (experiments/baselines.py):
                 "trades": "TRADES", "mixup_at": "IAT (mixup + PGD-AT)",
                 "latent_mixup_at": "IAT (latent mixes, GAN)",
                 "latent_mixup_vae_at": "IAT (latent mixes, VAE)",
                 "on_manifold_at": "on-manifold AT", "on_manifold_pgd_at": "on-manifold AT + PGD-AT",
                 # The ablation family (experiments/latent_ablations.py), one knob each:
                 "latent_mixup_frac05": "LM: mixed fraction 0.5",
                 "latent_mixup_alpha02": "LM: α = 0.2", "latent_mixup_alpha2": "LM: α = 2",
                 "latent_mixup_diffclass": "LM: different-class pairs",
                 "latent_mixup_sameclass": "LM: same-class pairs",
                 "latent_mixup_k0": "LM: E(x) only (K = 0)",
                 "latent_mixup_inmix": "LM: + input mixup",
                 "latent_mixup_recon": "LM: reconstructions only"}
# Metric families in report order: (key, or prefix ending in "@"; label; unit; higher better).
FAMILIES = (("test/accuracy", "clean accuracy", "%", True),
            ("blur/area", "blur area", "%", True),
            ("blur/acc@", "blur acc σ=", "%", True),
            ("deepfool/rho_adv", "ρ_adv", "", True),
            ("deepfool/fooling_rate", "DeepFool fooling rate", "%", False),
            ("fgsm/acc@", "FGSM acc ε=", "%", True),
            ("pgd/acc@", "PGD acc ε=", "%", True),
            ("autoattack/*/robust_accuracy", "AutoAttack acc ", "%", True),
            ("apgd/acc@", "APGD-CE acc ε=", "%", True),
            ("corruption/mca", "mCA", "%", True),
            ("corruption/mca_without_collapsed", "mCA without collapsed corruptions", "%", True),
            ("corruption/mce_vs_ref", "corruption error / reference's", "", False),
            ("corruption/*/accuracy", "corrupted acc: ", "%", True),
            ("calibration/ece", "ECE", "", False),
            ("calibration/ece_ts", "ECE (temperature-scaled)", "", False),
            ("calibration/brier", "Brier", "", False),
            ("calibration/brier_ts", "Brier (temperature-scaled)", "", False),
            ("calibration/nll", "NLL", "", False),
            ("calibration/corrupted_ece", "ECE on corrupted", "", False),
            ("calibration/corrupted_ece_ts", "ECE on corrupted (temperature-scaled)", "", False),
            # Latent-Mixup's own figures (absent, hence n/a, for the other methods):
            ("bank/mean_psnr", "bank PSNR", "dB", True),
            ("generator/frechet_distance", "generator Fréchet distance", "", False),
            ("mix/label_confidence", "reference's p(mixed label)", "", True),
            ("mix/source_mass", "reference's mass on the source classes", "", True),
            ("mix/dominant_agreement", "reference's top class = larger-weight class", "%",
             True),
            ("mix/recon_confidence", "reference's p(true class) on G(z)", "", True),
            ("mix/real_confidence", "reference's p(true class) on the real images", "", True),
            ("train_seconds", "train time", "s", False),
            ("pipeline_seconds", "pipeline time", "s", False))


def label(method: str) -> str:
  """Display name of a method ("pgd_at" -> "PGD-AT"); unknown names pass through."""
  return METHOD_LABELS.get(method, method)


def autoattack_key(eps: float) -> str:
  """The AutoAttack robust-accuracy metric at L∞ `eps` (as the evaluation writes it)."""
  return f"autoattack/Linf@{eps!r}/robust_accuracy"


def matches(key: str, pattern: str) -> bool:
  """Whether a metric key belongs to a family key (exact, "prefix@" or "*" pattern)."""
  if "*" in pattern:
    return fnmatch.fnmatchcase(key, pattern)
  return key == pattern or (pattern.endswith("@") and key.startswith(pattern))


def family(key: str) -> Optional[tuple]:
  for fam in FAMILIES:
    if matches(key, fam[0]):
      return fam
  return None


def at_value(key: str) -> float:
  """The σ or ε of a curve key ("pgd/acc@0.1" -> 0.1, "autoattack/L2@0.5/..." -> 0.5); 0 for
  scalar keys."""
  return float(key.split("@", 1)[1].split("/", 1)[0]) if "@" in key else 0.0


def same_eps(a: float, b: float) -> bool:
  """Whether two budgets are the same ε (a key's "@0.1" and a config's 0.1 parse apart by
  float rounding at most)."""
  return abs(float(a) - float(b)) < 1e-9


def metric_label(key: str) -> str:
  """Readable name with unit: "PGD acc ε=0.1 (%)", "AutoAttack acc Linf ε=0.1 (%)", "ρ_adv"."""
  fam = family(key)
  if fam is None:
    return key
  if "*" in fam[0]:
    head, tail = fam[0].split("*")
    middle = key[len(head):len(key) - len(tail)]
    if "@" in middle:
      norm, eps = middle.split("@", 1)
      middle = f"{norm} ε={float(eps):.4g}"
    name = fam[1] + middle
  else:
    name = fam[1] + (key.split("@", 1)[1] if fam[0].endswith("@") else "")
  return f"{name} ({fam[2]})" if fam[2] else name


def short_label(key: str) -> str:
  """`metric_label` without its unit ("PGD acc ε=0.1", "ECE (temperature-scaled)"): only the
  unit suffix is cut, so two metrics never share a short label in the conclusions."""
  fam = family(key)
  full = metric_label(key)
  return full[:-len(f" ({fam[2]})")] if fam is not None and fam[2] else full


def higher_is_better(key: str) -> bool:
  fam = family(key)
  return True if fam is None else fam[3]


def is_percent(key: str) -> bool:
  fam = family(key)
  return fam is not None and fam[2] == "%"


def fmt(key: str, value: Optional[float], diff: bool = False) -> str:
  """A value in the metric's display unit (accuracies in %, differences in points)."""
  if value is None or not math.isfinite(value):
    return "n/a"
  fam = family(key)
  unit = fam[2] if fam else ""
  if unit == "%":
    return f"{100 * value:+.2f} pp" if diff else f"{100 * value:.2f}"
  if unit == "s":
    return f"{value:+.0f} s" if diff else f"{value:.0f}"
  return f"{value:+.4f}" if diff else f"{value:.4f}"


def fmt_p(p: float) -> str:
  if not math.isfinite(p):
    return "n/a"
  return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def report_metrics(runs: Mapping[str, Mapping]) -> List[str]:
  """Metric keys of the report present in any run, in family order (σ / ε ascending)."""
  present = {k for per_seed in runs.values() for m in per_seed.values() for k in m
             if isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool)
             and family(k) is not None}
  order: Dict[str, int] = {fam[0]: i for i, fam in enumerate(FAMILIES)}
  return sorted(present, key=lambda k: (order[family(k)[0]], at_value(k), k))


def with_relative_corruption_error(runs: Mapping[str, Mapping], reference: str = "erm"
                                   ) -> Dict[str, Dict]:
  """`runs` with "corruption/mce_vs_ref" added where the reference has corruption results.

  For method m and seed s: mean over corruptions c of E_c(m, s) / mean_s' E_c(ref, s'),
  E_c = 1 - corruption/<c>/accuracy (already averaged over severities). Normalising by the
  reference's mean over its seeds keeps each seed's value, so the reference itself gets a
  CI around 1 and the paired test against it is well defined. Corruptions the reference
  did not evaluate, or where its error is 0, are left out.
  """
  out = {m: {s: dict(met) for s, met in per.items()} for m, per in runs.items()}
  if reference not in runs:
    return out
  pattern = "corruption/*/accuracy"
  ref_err = {}
  # Sorted: a set's order changes with the hash seed, and so would the sum's last bits.
  for key in sorted({k for met in runs[reference].values() for k in met if matches(k, pattern)}):
    errs = [1 - float(met[key]) for met in runs[reference].values() if key in met]
    if errs and np.mean(errs) > 0:
      ref_err[key] = float(np.mean(errs))
  if not ref_err:
    return out
  for per in out.values():
    for met in per.values():
      ratios = [(1 - float(met[k])) / e for k, e in ref_err.items() if k in met]
      if len(ratios) == len(ref_err):
        met["corruption/mce_vs_ref"] = float(np.mean(ratios))
  return out


def headline_metrics(keys: Sequence[str], robust_eps: Optional[float] = None) -> List[str]:
  """The few metrics the main table and the conclusion speak about.

  Args:
    keys: the available metric keys.
    robust_eps: ε of the FGSM / PGD column (the budget adversarial training used); when
      None or not evaluated, the largest ε evaluated.
  """
  keys = list(dict.fromkeys(keys))

  def pick(prefix):
    cands = [k for k in keys if k.startswith(prefix) and at_value(k) > 0]
    if not cands:
      return []
    if robust_eps is not None:
      exact = [k for k in cands if same_eps(at_value(k), robust_eps)]
      if exact:
        return exact
    return [max(cands, key=at_value)]
  def pick_autoattack():
    """One AutoAttack budget per norm: L-inf at robust_eps if evaluated, else the largest."""
    by_norm: Dict[str, List[str]] = {}
    for k in keys:
      if matches(k, "autoattack/*/robust_accuracy"):
        by_norm.setdefault(k.split("/")[1].split("@")[0], []).append(k)
    out = []
    for norm, cands in sorted(by_norm.items()):
      exact = [k for k in cands if norm == "Linf" and robust_eps is not None
               and same_eps(at_value(k), robust_eps)]
      out.append(exact[0] if exact else max(cands, key=at_value))
    return out
  main = ["test/accuracy", "blur/area", "deepfool/rho_adv", "deepfool/fooling_rate"]
  tail = ["corruption/mca", "calibration/ece", "calibration/ece_ts", "calibration/brier",
          "train_seconds", "pipeline_seconds"]
  return ([k for k in main if k in keys] + pick("fgsm/acc@") + pick("pgd/acc@") +
          pick_autoattack() + [k for k in tail if k in keys])
