"""Runs the real `latent_mixup_fmnist` experiment at a "drill" size, then a compare run.

Smoke scale is too short to kill a stage in the middle (one generator epoch, two bank
chunks), so this driver takes the smoke config and lengthens exactly what the drills need:
generator epochs, bank chunks, classifier epochs; evaluation is cut to the minimum. Every
stage then runs through the experiment's own code (`experiments.latent_mixup`), with its
checkpoints, chunk files and caches, exactly as `main.py --experiment=...` runs it. Then
`compare_fmnist` runs at smoke scale (ERM and mixup, seed 0) through `cli.run_experiment`,
the function behind `main.py`. One process for all four stages saves three TF start-ups
per drill.

  python tests/drill_driver.py WORKDIR DATA_DIR      (what tests/test_fault_drills.py runs)
"""

import dataclasses
import functools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 3


def drill_config(data_dir):
  """The smoke config of latent_mixup_fmnist with longer stages and a minimal evaluation."""
  import experiments  # pylint: disable=import-outside-toplevel
  from latmix_tf.config import EvalConfig  # pylint: disable=import-outside-toplevel
  cfg = experiments.get("latent_mixup_fmnist").get_config(scale="smoke", seed=SEED,
                                                           data_dir=data_dir)
  lm = cfg.method
  lm = dataclasses.replace(
      lm, generator=dataclasses.replace(lm.generator, epochs=10, steps_per_epoch=3),
      inversion=dataclasses.replace(lm.inversion, chunk_size=32, batch_size=32, steps=25))
  return dataclasses.replace(
      cfg, method=lm, train=dataclasses.replace(cfg.train, epochs=6, steps_per_epoch=3),
      eval=EvalConfig(blur_sigmas=(0.0, 1.0), deepfool_samples=4, deepfool_max_iter=3,
                      attack_epsilons=(0.0, 0.1), pgd_steps=1, attack_samples=8,
                      batch_size=64))


def run(workdir, data_dir):
  """latent_mixup_fmnist at drill size, then compare_fmnist (smoke, ERM + mixup, seed 0)."""
  import experiments  # pylint: disable=import-outside-toplevel
  from experiments.common import RunContext  # pylint: disable=import-outside-toplevel
  from latmix_tf import cli  # pylint: disable=import-outside-toplevel
  log = functools.partial(print, flush=True)
  ctx = RunContext(workdir=os.path.join(workdir, "run"),
                   export_root=os.path.join(workdir, "saved_models"), log=log)
  experiments.get("latent_mixup_fmnist").run(drill_config(data_dir), ctx)
  # What `main.py --experiment=compare_fmnist --scale=smoke --methods=erm,mixup --seeds=0
  # --strategy=default` runs.
  code = cli.run_experiment(experiments.get("compare_fmnist"), "smoke", 0, data_dir,
                            os.path.join(workdir, "compare_wd"),
                            os.path.join(workdir, "compare_sm"), (), ["erm", "mixup"], ["0"],
                            "default", log)
  assert code == 0, code


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  run(sys.argv[1], sys.argv[2])
  print("DRILL DONE", flush=True)
