"""Every registered method runs end to end at smoke scale (on Fashion-MNIST; on the other
datasets where its code depends on the data's shapes); the CLI fails clearly.

Each smoke run goes through the real path: data loading (tiny canonical files), the
training loop, SavedModel export, evaluation from the SavedModel and the report.
"""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

import experiments
from experiments import latent_ablations
from latmix_tf import stages
from latmix_tf.training.latent_mixup import LatentMixupConfig
from experiments.common import RunContext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# compare_* / ablation_* experiments run many members: they have their own tests. The
# Latent-Mixup ablations are latent_mixup_fmnist with one knob changed: the knob is checked
# for each below, and ablation_fmnist's test runs the ones whose code paths differ (input
# mixup, K = 0, same-class pairs) end to end.
# Every method runs end to end on Fashion-MNIST. On another dataset a method is the same
# method config on that dataset's data, model and evaluation (checked below), and those parts
# run end to end in the smoke runs kept there: on MNIST (the same 28x28x1 shapes as
# Fashion-MNIST) ERM, PGD-AT and Latent-Mixup; on CIFAR-10 every method whose code depends
# on the shapes (ERM, manifold mixup on the ResNet's blocks, GAT's perturbation network, the
# three generators at 32x32x3), while the input-space methods (mixup, FGSM-AT, PGD-AT) and the
# robust-training methods are checked as configs.
ROBUST_KINDS = ("trades", "mixup_at", "on_manifold_at", "latent_mixup_at")
ELSEWHERE = sorted({f"{k}_{ds}" for k in ROBUST_KINDS for ds in ("mnist", "cifar10")}
                   | {f"{k}_mnist" for k in ("mixup", "manifold_mixup", "fgsm_at", "gat",
                                             "latent_mixup_dcgan_plain", "latent_mixup_vae")}
                   | {f"{k}_cifar10" for k in ("mixup", "fgsm_at", "pgd_at")})
SMOKE = sorted(n for n in experiments.EXPERIMENTS
               if not n.startswith(("compare_", "ablation_"))
               and n not in latent_ablations.EXPERIMENTS and n not in ELSEWHERE)


@pytest.mark.parametrize("name", ELSEWHERE)
def test_method_on_another_dataset_is_the_fmnist_method_on_that_dataset(name):
  kind, ds = name.rsplit("_", 1)
  cfg = experiments.get(name).get_config(scale="smoke", seed=0)
  ref = experiments.get(f"{kind}_fmnist").get_config(scale="smoke", seed=0)
  same = experiments.get(f"pgd_at_{ds}").get_config(scale="smoke", seed=0)
  assert type(cfg.method) is type(ref.method) and cfg.method.name == ref.method.name
  assert (cfg.data, cfg.model, cfg.eval) == (same.data, same.model, same.eval)
  assert cfg.name == name and cfg.data != ref.data


def test_each_latent_mixup_ablation_changes_exactly_its_knob():
  base = experiments.get("latent_mixup_fmnist").get_config(scale="quick", seed=1)
  changed = {"frac05": ("mixed_fraction", 0.5), "alpha02": ("alpha", 0.2),
             "alpha2": ("alpha", 2.0), "diffclass": ("pairs", "different_class"),
             "sameclass": ("pairs", "same_class"), "inmix": ("input_mixup_alpha", 1.0),
             "recon": ("pairs", "self"),
             "k0": ("inversion", dataclasses.replace(base.method.inversion, steps=0))}
  assert set(changed) == set(latent_ablations.ABLATIONS)
  from latmix_tf.comparison import METHOD_LABELS  # pylint: disable=import-outside-toplevel
  assert all(f"latent_mixup_{tag}" in METHOD_LABELS for tag in changed)  # named in reports
  for tag, (field, value) in changed.items():
    cfg = experiments.get(f"latent_mixup_{tag}_fmnist").get_config(scale="quick", seed=1)
    assert cfg.name == f"latent_mixup_{tag}_fmnist" and cfg.seed == 1
    assert dataclasses.replace(cfg.method, **{field: getattr(base.method, field)}) == base.method
    assert getattr(cfg.method, field) == value != getattr(base.method, field)
    assert (cfg.data, cfg.model, cfg.train, cfg.eval) == (base.data, base.model, base.train,
                                                         base.eval)


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
  """Where runs other experiments need live (latent mixup's reference `erm_<ds>`), shared
  by the smoke tests so each dataset's reference network is trained once."""
  return tmp_path_factory.mktemp("runs")


@pytest.mark.parametrize("name", SMOKE)
def test_smoke(name, tiny_data_dir, tmp_path, shared_root):
  exp = experiments.get(name)
  cfg = exp.get_config(scale="smoke", seed=0, data_dir=tiny_data_dir)
  ctx = RunContext(workdir=str(tmp_path / "wd"), export_root=str(shared_root / "sm"),
                   log=lambda s: None, root=str(shared_root))
  metrics = exp.run(cfg, ctx)
  assert 0.0 <= metrics["test/accuracy"] <= 1.0
  for key in ("blur/area", "deepfool/rho_adv", "calibration/ece", "corruption/mca",
              "calibration/brier", "calibration/ece_ts", "calibration/corrupted_ece"):
    assert key in metrics, key
  if isinstance(cfg.method, LatentMixupConfig):  # its mixes, as the reference network sees them
    assert 0.0 <= metrics["mix/label_confidence"] <= metrics["mix/source_mass"] <= 1.0 + 1e-6
    assert 0.0 < metrics["mix/real_confidence"] <= 1.0 and metrics["bank/mean_psnr"] > 0
  # The whole evaluation suite at smoke size: AutoAttack at every budget of the dataset.
  budgets = {k.split("/")[1] for k in metrics if k.startswith("autoattack/")
             and k.endswith("/robust_accuracy")}
  assert budgets == {f"{norm}@{eps!r}" for norm, eps in cfg.eval.autoattack_budgets}, budgets
  report = tmp_path / "wd" / "report.md"
  assert report.exists() and "test/accuracy" in report.read_text()
  export_dir = shared_root / "sm" / f"{name}-smoke" / "seed_0"
  meta = json.loads((export_dir / "metadata.json").read_text())
  assert meta["experiment"] == name and meta["metrics"]["test/accuracy"] == metrics["test/accuracy"]


def test_second_run_is_cached(tiny_data_dir, tmp_path):
  exp = experiments.get("erm_mnist")
  cfg = exp.get_config(scale="smoke", seed=0, data_dir=tiny_data_dir)
  logs = []
  ctx = RunContext(workdir=str(tmp_path / "wd"), export_root=str(tmp_path / "sm"),
                   log=logs.append)
  first = exp.run(cfg, ctx)
  assert first.pop("stages") == {"classifier": "built", "evaluation": "built"}
  logs.clear()
  second = exp.run(cfg, ctx)
  assert second.pop("stages") == {"classifier": "cached", "evaluation": "cached"}
  assert not any(line.startswith("epoch") for line in logs) and second == first
  for stage in ("classifier", "evaluation"):
    assert stages.read_record(str(tmp_path / "wd" / stage))["status"] == "cached"


def test_changed_evaluation_config_reevaluates_without_retraining(tiny_data_dir, tmp_path):
  exp = experiments.get("erm_fmnist")
  cfg = exp.get_config(scale="smoke", seed=0, data_dir=tiny_data_dir)
  ctx = RunContext(workdir=str(tmp_path / "wd"), export_root=str(tmp_path / "sm"),
                   log=lambda s: None)
  first = exp.run(cfg, ctx)
  ckpt = tmp_path / "wd" / "classifier" / "checkpoints"
  weights_before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
  saved_model = (tmp_path / "sm" / "erm_fmnist-smoke" / "seed_0" / "saved_model.pb").read_bytes()
  wider = dataclasses.replace(cfg, eval=dataclasses.replace(
      cfg.eval, blur_sigmas=cfg.eval.blur_sigmas + (3.0,)))
  second = exp.run(wider, ctx)
  assert second["stages"] == {"classifier": "cached", "evaluation": "built"}
  assert "blur/acc@3.0" in second and "blur/acc@3.0" not in first
  assert second["test/accuracy"] == first["test/accuracy"]
  assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == weights_before  # not retrained
  assert (tmp_path / "sm" / "erm_fmnist-smoke" / "seed_0" / "saved_model.pb").read_bytes() \
      == saved_model
  assert len(list((tmp_path / "wd").glob("evaluation.stale-*"))) == 1  # old one kept aside


def _main(*args):
  env = dict(os.environ, LATMIX_OFFLINE="1")
  return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args],
                        capture_output=True, text=True, env=env, timeout=300)


def test_cli_unknown_experiment_lists_valid_names():
  proc = _main("--experiment=nope")
  assert proc.returncode == 2
  assert "Unknown experiment 'nope'" in proc.stderr and "erm_fmnist" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_cli_missing_dataset_is_one_clear_error(tmp_path):
  proc = _main("--experiment=erm_mnist", "--scale=smoke", f"--data_dir={tmp_path}",
               f"--workdir={tmp_path / 'wd'}", f"--export_dir={tmp_path / 'sm'}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "--fetch_data=mnist" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_smoke_run_and_evaluate(tiny_data_dir, tmp_path):
  common = [f"--data_dir={tiny_data_dir}", f"--workdir={tmp_path / 'wd'}",
            f"--export_dir={tmp_path / 'sm'}"]
  proc = _main("--experiment=erm_fmnist", "--scale=smoke", *common)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "epoch 1/" in proc.stdout and "report:" in proc.stdout
  model = tmp_path / "sm" / "erm_fmnist-smoke" / "seed_0"
  proc = _main(f"--evaluate={model}", *common)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = tmp_path / "wd" / "evaluate" / "fashion_mnist_erm_fmnist-smoke_seed_0"
  metrics = json.loads((out / "evaluation.json").read_text())["metrics"]
  for key in ("deepfool/rho_adv", "autoattack/Linf@0.1/robust_accuracy", "corruption/mca",
              "calibration/brier", "calibration/ece_ts", "calibration/corrupted_ece"):
    assert key in metrics, key  # the whole suite, at --evaluate's own budgets
  assert stages.read_record(str(out))["status"] == "built"
  again = _main(f"--evaluate={model}", *common)  # an evaluation stage: the second is cached
  assert again.returncode == 0 and stages.read_record(str(out))["status"] == "cached"
  bad = _main(f"--evaluate={tmp_path}", *common)
  assert bad.returncode == 2 and "No SavedModel" in bad.stderr


def test_run_key_ignores_where_the_data_came_from_but_not_what_is_computed():
  """A run with --data_dir must reuse the cached run made from the registry copy."""
  from latmix_tf.runner import run_key
  base = experiments.get("erm_fmnist").get_config(scale="full", seed=0, data_dir=None)
  moved = experiments.get("erm_fmnist").get_config(scale="full", seed=0, data_dir="/data/x")
  assert run_key(base, "fp") == run_key(moved, "fp")
  other = experiments.get("erm_fmnist").get_config(scale="quick", seed=0, data_dir=None)
  assert run_key(base, "fp") != run_key(other, "fp")
  assert run_key(base, "fp") != run_key(base, "other-data")
  # Evaluation is a stage of its own: its config does not key the trained classifier.
  cheaper = dataclasses.replace(base, eval=dataclasses.replace(base.eval, pgd_steps=1))
  assert run_key(base, "fp") == run_key(cheaper, "fp")
  assert run_key(base, "fp") != run_key(base, "fp", {"bank": "other"})


def test_library_never_imports_experiments_or_flags():
  """STYLE: latmix_tf/ is importable without experiments/ and never reads absl flags."""
  import ast
  offenders = []
  for folder, _, files in os.walk(os.path.join(ROOT, "latmix_tf")):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.join(folder, name)
      with open(path) as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                   [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        offenders += [f"{os.path.relpath(path, ROOT)}: {m}" for m in modules
                      if m.split(".")[0] == "experiments" or m.startswith("absl.flags")
                      or (isinstance(node, ast.ImportFrom) and m == "absl"
                          and any(a.name == "flags" for a in node.names))]
  assert not offenders, offenders
