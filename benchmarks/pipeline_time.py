"""Wall and CPU seconds of each stage of the main job, and the full 3-seed comparison's time.

Issue 16, item 5. Two sources, one result file (benchmarks/results/pipeline_time.json):

* `--workdir=RUN` reads a finished run's stage records (`<RUN>/<stage>/stage.json`,
  "seconds": the work, summed over attempts; the classifier's per-epoch history; the
  evaluation's own per-part timings). Records hold wall time only.
* `--measure=main` (and `--measure=members`) runs every stage's real code at reduced size
  (a few steps after a warm-up, one chunk's worth of images) and scales the per-step /
  per-image wall and CPU seconds to the full-scale recipe (steps per epoch x epochs, all
  training images). Fixed per-epoch costs (checkpoint, sample grid) and tracing are not
  scaled, so the projection is a slight under-estimate for training and, for evaluation
  (taken from `profile_stages.py --stage=evaluation`, scaled by 1/fraction, tracing
  included), an over-estimate.
The projected `compare_fmnist` (full scale, seeds 0-2) is the sum over its members
(`experiments.compare.DEFAULT_METHODS`) of train + evaluation, + generator + bank for the
Latent-Mixup members, x 3 seeds. Every figure is printed with the CPU and the load.

  python benchmarks/pipeline_time.py --measure=main [--steps=20]
  python benchmarks/pipeline_time.py --measure=members [--steps=20]
  python benchmarks/pipeline_time.py --workdir=workdirs/latent_mixup_fmnist/full/seed_0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import types

from _common import RESULTS, Timer, machine

import keras  # pylint: disable=wrong-import-order

from experiments import get as get_experiment  # pylint: disable=wrong-import-order
from experiments.compare import DEFAULT_METHODS  # pylint: disable=wrong-import-order
from latmix_tf.data import load_dataset, make_splits  # pylint: disable=wrong-import-order

OUT = os.path.join(RESULTS, "pipeline_time.json")
STAGES = ("generator", "encoder", "bank", "frechet", "classifier", "evaluation")
SEEDS = 3


def from_records(workdir):
  """Seconds per stage from a run's stage records (missing stages are left out)."""
  out = {}
  for name in STAGES:
    path = os.path.join(workdir, name, "stage.json")
    if not os.path.exists(path):
      continue
    with open(path, encoding="utf-8") as f:
      rec = json.load(f)
    row = {"seconds": rec.get("seconds"), "state": rec.get("state"), "status": rec.get("status")}
    hist = (rec.get("outputs") or {}).get("history")
    if isinstance(hist, list) and hist:
      row["epoch_seconds"] = [round(h.get("seconds", 0.0), 1) for h in hist]
    out[name] = row
  ev = os.path.join(workdir, "evaluation", "evaluation.json")
  if os.path.exists(ev):
    with open(ev, encoding="utf-8") as f:
      out.setdefault("evaluation", {})["timings"] = json.load(f).get("timings_seconds")
  return out


def _splits(cfg):
  return make_splits(load_dataset(cfg.data.name, cfg.data.data_dir), cfg.data)


def _steps_full(n, batch):
  return n // batch


def two_point(short, long, steps):
  """(per-step, fixed) seconds from runs of `steps` and 3 x `steps` steps."""
  per_step = max((long - short) / (2 * steps), 0.0)
  return per_step, max(short - steps * per_step, 0.0)


def classifier_epoch(exp_name, steps, method_factory=None):
  """Per-step, per-epoch fixed and validation seconds of a member's classifier -> full scale.

  The training part of an epoch (the Trainer's own batch loop over the method's dataset) is
  timed at `steps` and 3 x `steps` steps, so the per-epoch fixed cost (building the epoch's
  dataset, tracing a tf.data decode function, filling the prefetch buffer) is not scaled
  with the number of steps; the validation pass is timed on its own."""
  from latmix_tf.data.pipeline import train_dataset  # pylint: disable=import-outside-toplevel
  from latmix_tf.models.classifiers import build_classifier  # pylint: disable=import-outside-toplevel
  from latmix_tf.training import build_method  # pylint: disable=import-outside-toplevel
  from latmix_tf.training.loop import Trainer  # pylint: disable=import-outside-toplevel
  cfg = get_experiment(exp_name).get_config(scale="full")
  splits = _splits(cfg)
  method = method_factory(cfg, splits) if method_factory else build_method(cfg.method)
  keras.utils.set_random_seed(0)
  model = build_classifier(cfg.model, splits.x_train.shape[1:])
  tcfg = dataclasses.replace(cfg.train, steps_per_epoch=steps)
  timers = {}
  with tempfile.TemporaryDirectory() as wd:
    trainer = Trainer(model, method, splits, cfg.data, tcfg, wd, 0, log=lambda s: None)
    trainer.run_epoch(0)  # warm-up: tracing
    for epoch, n in ((1, steps), (2, 3 * steps)):
      ds = method.transform_dataset(train_dataset(splits, cfg.data, 0, epoch, n), epoch, 0)
      with Timer() as timers[n]:
        trainer._run(ds, trainer._train_step)  # pylint: disable=protected-access
    with Timer() as val:
      trainer.evaluate(splits.x_val, splits.y_val)
  full_steps = _steps_full(len(splits.x_train), cfg.data.batch_size)
  row = {"epochs": cfg.train.epochs, "steps_full": full_steps, "load_1min": val.load}
  for k in ("wall", "cpu"):
    per_step, fixed = two_point(getattr(timers[steps], k), getattr(timers[3 * steps], k), steps)
    row.update({f"per_step_{k}": per_step, f"epoch_fixed_{k}": fixed, f"val_{k}": getattr(val, k)})
    row[f"epoch_{k}"] = full_steps * per_step + fixed + getattr(val, k)
    row[f"train_{k}"] = cfg.train.epochs * row[f"epoch_{k}"]
  return row


def _latent_factory(cfg, splits):
  from latmix_tf.generative import build_generative_model  # pylint: disable=import-outside-toplevel
  from latmix_tf.training.latent_mixup import LatentMixup  # pylint: disable=import-outside-toplevel
  gm = build_generative_model(cfg.method.generator, splits.x_train.shape[1:], seed=0)
  bank = types.SimpleNamespace(z=gm.sample_prior(len(splits.x_train), 0).numpy(),
                               labels=splits.y_train)
  return LatentMixup(cfg.method, gen=gm, bank=bank, batch_size=cfg.data.batch_size)


def generator_and_bank(exp_name, steps, images=512):
  """The generator's per-step and per-epoch cost (epoch 2 of capped runs of `steps` and
  3 x `steps` steps: checkpoint, sample grid and health checks are per-epoch costs) and the
  bank's per image."""
  from latmix_tf.generative import build_generative_model  # pylint: disable=import-outside-toplevel
  from latmix_tf.generative.train import train_generator  # pylint: disable=import-outside-toplevel
  from latmix_tf.latent.inversion import Inverter  # pylint: disable=import-outside-toplevel
  cfg = get_experiment(exp_name).get_config(scale="full")
  splits = _splits(cfg)
  gcfg = cfg.method.generator
  timers = {}
  for n in (steps, 3 * steps):
    gm = build_generative_model(dataclasses.replace(gcfg, epochs=2, steps_per_epoch=n),
                                splits.x_train.shape[1:], seed=0)
    box = {}

    def log(line, box=box):  # epoch 1 (tracing) ends: time epoch 2
      if "epoch 1/2" in line and "t" not in box:
        box["t"] = Timer().__enter__()

    with tempfile.TemporaryDirectory() as wd:
      train_generator(gm, splits.x_train, wd, 0, log=log)
    box["t"].__exit__(None)
    timers[n] = box["t"]
  full_steps = _steps_full(len(splits.x_train), gcfg.batch_size)
  gen = {"epochs": gcfg.epochs, "steps_full": full_steps, "load_1min": timers[steps].load}
  for k in ("wall", "cpu"):
    per_step, fixed = two_point(getattr(timers[steps], k), getattr(timers[3 * steps], k), steps)
    gen.update({f"per_step_{k}": per_step, f"epoch_fixed_{k}": fixed,
                k: gcfg.epochs * (full_steps * per_step + fixed)})
  inverter = Inverter(gm, cfg.method.inversion, splits.x_train.shape[1:])
  inverter.invert(splits.x_train[:inverter.batch_size])
  with Timer() as b:
    inverter.invert(splits.x_train[:images])
  n = len(splits.x_train)
  bank = {"images": n, "per_image_wall": b.wall / images, "per_image_cpu": b.cpu / images,
          "wall": n * b.wall / images, "cpu": n * b.cpu / images, "load_1min": b.load}
  return gen, bank


def evaluation_estimate():
  path = os.path.join(RESULTS, "profile_evaluation.json")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    p = json.load(f)
  return {"wall": p["wall_s"] / p["fraction"], "cpu": p["cpu_s"] / p["fraction"],
          "source": f"profile_evaluation.json x 1/{p['fraction']}", "load_1min": p["load_1min"]}


MEMBER_EXPERIMENTS = {"erm": "erm_fmnist", "mixup": "mixup_fmnist",
                      "manifold_mixup": "manifold_mixup_fmnist", "fgsm_at": "fgsm_at_fmnist",
                      "pgd_at": "pgd_at_fmnist", "gat": "gat_fmnist",
                      "latent_mixup": "latent_mixup_fmnist",
                      "latent_mixup_vae": "latent_mixup_vae_fmnist"}


def measure_main(steps):
  gen, bank = generator_and_bank("latent_mixup_fmnist", steps)
  clf = classifier_epoch("latent_mixup_fmnist", steps, _latent_factory)
  ref = classifier_epoch("erm_fmnist", steps)
  quick_epochs = get_experiment("erm_fmnist").get_config(scale="quick").train.epochs
  ev = evaluation_estimate()
  stages = {"reference_erm_quick": {"wall": quick_epochs * ref["epoch_wall"],
                                    "cpu": quick_epochs * ref["epoch_cpu"]},
            "generator": gen, "bank": bank, "classifier": clf, "evaluation": ev,
            "erm_classifier": ref}
  total = {k: sum(s[k if k in s else f"train_{k}"] for n, s in stages.items()
                  if s and n != "erm_classifier") for k in ("wall", "cpu")}
  return {"stages": stages, "main_job_projected": total}


def measure_members(steps):
  out = {}
  for m in DEFAULT_METHODS:
    exp = MEMBER_EXPERIMENTS[m]
    factory = _latent_factory if m.startswith("latent_mixup") else None
    out[m] = {"classifier": classifier_epoch(exp, steps, factory)}
    if m.startswith("latent_mixup"):
      out[m]["generator"], out[m]["bank"] = generator_and_bank(exp, steps)
    print(f"  {m}: train {out[m]['classifier']['train_wall'] / 60:.1f} min wall, "
          f"{out[m]['classifier']['train_cpu'] / 60:.1f} CPU-min "
          f"(load {out[m]['classifier']['load_1min']:.1f})", flush=True)
  return out


def project_compare(members, ev):
  per_seed = {"wall": 0.0, "cpu": 0.0}
  for m, rows in members.items():
    for k in per_seed:
      per_seed[k] += rows["classifier"][f"train_{k}"] + (ev[k] if ev else 0.0)
      for extra in ("generator", "bank"):
        if extra in rows:
          per_seed[k] += rows[extra][k]
  return {"per_seed": per_seed, "seeds": SEEDS,
          "total_hours_wall": SEEDS * per_seed["wall"] / 3600,
          "total_cpu_hours": SEEDS * per_seed["cpu"] / 3600,
          "total_hours_at_2_cores_busy": SEEDS * per_seed["cpu"] / 2 / 3600,
          "evaluation_included": ev is not None}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--measure", choices=("main", "members"), default=None)
  p.add_argument("--workdir", default=None, help="a finished run's folder (stage records)")
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--out", default=OUT)
  args = p.parse_args()
  table = {}
  if os.path.exists(args.out):
    with open(args.out, encoding="utf-8") as f:
      table = json.load(f)
  m = machine()
  print(f"CPU {m['cpu']['model']} ({m['cpu']['isa_class']}), load {m['load_avg']}", flush=True)
  if args.workdir:
    recorded = from_records(args.workdir)
    table["records"] = {"workdir": args.workdir, "machine": m, "stages": recorded,
                        "total_seconds": sum(r.get("seconds") or 0.0 for r in recorded.values())}
    print(json.dumps(table["records"]["stages"], indent=1))
  if args.measure == "main":
    table["main"] = {"machine": m, "steps": args.steps, **measure_main(args.steps)}
    for name, s in table["main"]["stages"].items():
      if s:
        w = s.get("wall", s.get("train_wall"))
        c = s.get("cpu", s.get("train_cpu"))
        print(f"  {name:20s} {w / 60:6.1f} min wall  {c / 60:6.1f} CPU-min")
    tot = table["main"]["main_job_projected"]
    print(f"main job projected: {tot['wall'] / 60:.1f} min wall, {tot['cpu'] / 60:.1f} CPU-min "
          f"({tot['cpu'] / 120:.1f} min if both cores were ours)")
  if args.measure == "members":
    table["members"] = {"machine": m, "steps": args.steps, "rows": measure_members(args.steps)}
  if "members" in table:
    table["compare_fmnist_projected"] = project_compare(table["members"]["rows"],
                                                        evaluation_estimate())
    print(json.dumps(table["compare_fmnist_projected"], indent=1))
  table["load_avg_end"] = list(os.getloadavg())
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(table, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
