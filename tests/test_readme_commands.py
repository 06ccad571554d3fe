"""Every command the README and docs quote is one that works.

Why: the README promises one command that sets up and passes the tests, and `.ci/run` is
what CI executes; when one of them changes (new flags such as `-n 2`, a new data set to
fetch) and the other does not, the promise silently breaks for whoever follows the README.
The two may spell the interpreter differently (`python` vs `python3`, `pip` vs
`python3 -m pip -q`); every step and every argument must otherwise agree. `.ci/run` may
install Debian's chromium first (so the report-rendering test runs in a real browser) and
nothing else.

Beyond that one command, every `python main.py ...`, `python benchmarks/...` and pytest
command quoted in README.md or any docs/*.md page (code blocks and inline code) must be
either run by a named test at smoke scale (`RUN_IN_TESTS`) or named in `LONG` (hours, a real
data set, several machines). Both kinds are checked to parse with the CLI: every flag is
defined and takes the value given, the experiment (or drill) is registered, `--methods`
names methods that comparison accepts, `--fetch_data` names datasets that exist. A new page
or a new command fails this test until it is added to one of the two lists.
"""

import json
import os
import re
import subprocess
import sys

import experiments
from experiments import compare
from latmix_tf.data.sources import DATASETS
from conftest import doc_pages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "main.py")
CHROMIUM_STEP = ("command -v chromium >/dev/null || { apt-get update -qq && "
                 "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }")

# Commands the test suite runs at smoke scale, and the test that runs them.
SMOKE_TEST = "tests/test_experiments.py::test_smoke"  # every non-comparison experiment
RUN_IN_TESTS = {
    "python main.py --experiment=latent_mixup_fmnist": SMOKE_TEST,
    "python main.py --experiment=erm_cifar10 --scale=smoke": SMOKE_TEST,
    "python main.py --experiment=erm_fmnist --scale=smoke": SMOKE_TEST,
    "python main.py --fetch_data=fashion_mnist,mnist": "tests/test_data.py::"
                                                      "test_refetch_replaces_a_corrupt_copy",
    "python main.py --experiment=nope": "tests/test_experiments.py::"
                                        "test_cli_unknown_experiment_lists_valid_names",
    "python main.py --evaluate=saved_models/erm_fmnist/seed_0": "tests/test_experiments.py::"
                                                               "test_cli_smoke_run_and_evaluate",
    "python -m pytest -q -n 2 --dist=loadgroup tests": ".ci/run",
}
# Long commands: checked to parse, not run.
LONG = {
    "python main.py --experiment=compare_fmnist --methods=erm,mixup,manifold_mixup,fgsm_at,"
    "pgd_at,gat,latent_mixup,latent_mixup_vae,latent_mixup_dcgan_plain",
    "python main.py --experiment=compare_mnist --methods=erm,mixup,manifold_mixup,fgsm_at,"
    "pgd_at,gat,latent_mixup,latent_mixup_vae,latent_mixup_dcgan_plain",
    "python main.py --experiment=compare_fmnist --scale=quick",
    "python benchmarks/trades_start.py",
    "python benchmarks/mnist_eps03_recipe.py --workdir=DIR --variants=24:pgd7 "
    "--baseline_run=RUN",
    "python benchmarks/on_manifold_start.py",
    "python main.py --experiment=ablation_fmnist --scale=quick",
    "python main.py --experiment=compare_fmnist --methods=erm,mixup,manifold_mixup,fgsm_at,"
    "pgd_at,gat --seeds=0",
    "python main.py --experiment=compare_cifar10 --scale=quick",
    "python main.py --experiment=compare_cifar10",
    "python main.py --experiment=latent_mixup_fmnist --strategy=mirrored",
    "python main.py --experiment=erm_cifar10 --strategy=mirrored",
    "python main.py --experiment=erm_fmnist --strategy=multi_worker --data_dir=$HOME/latmix_data",
    "python main.py --serve --model_base_path=erm=saved_models/erm_fmnist/seed_0 --port=8501",
    "python main.py --serve --model_base_path=erm=saved_models/erm_fmnist,"
    "lm=saved_models/latent_mixup_fmnist",
    "python main.py --drill=latent_mixup_fmnist",
    "python main.py --experiment=label_smoothing_fmnist --scale=smoke",  # docs/extending.md's
    "python benchmarks/deepfool_speed.py --model=saved_models/erm_fmnist/seed_0 --n=1000 "
    "--art1_n=50",
    "python benchmarks/roofline.py --steps=60",
    "python benchmarks/fit_vs_loop.py --steps=100 --rounds=3",
    "python benchmarks/epoch_time.py",
    "python benchmarks/levers.py --lever=NAME",
    "python benchmarks/profile_stages.py",
    "python benchmarks/pipeline_time.py --measure=members --steps=20",
    "python benchmarks/cifar10_epoch_time.py",
    "python benchmarks/autoattack_speed.py",
    "python benchmarks/serving_load.py",
    "python main.py --experiment=compare_fmnist --executor=ray",
    "python main.py --experiment=compare_fmnist --executor=ray --concurrent_members=2",
    "python main.py --experiment=compare_fmnist --executor=ray --ray_address=auto "
    "--workdir=/shared/latmix/workdirs --export_dir=/shared/latmix/saved_models "
    "--data_dir=/shared/latmix_data",
    "python benchmarks/compare_throughput.py --scale=quick",
    "python benchmarks/integrity_cost.py",
}
# Experiments a page defines as an example rather than registers.
EXAMPLE_EXPERIMENTS = {"label_smoothing_fmnist"}
RUNNABLE = re.compile(r"(?:^|\s)(python3? (?:main\.py|benchmarks/\S+\.py|-m pytest)\b.*)")


def _pages():
  return doc_pages()


def _normalise(command):
  command = re.sub(r"\s+#.*$", "", command).strip()
  return re.sub(r"\s+", " ", re.sub(r"\bpython3\b", "python", command))


def quoted_commands(text):
  """Every python/pytest command in a page's code blocks and inline code, one per step."""
  pieces = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
  outside = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
  pieces += [re.sub(r"\s+", " ", c) for c in re.findall(r"`([^`]+)`", outside)]  # may wrap
  found = []
  for piece in pieces:
    for line in piece.replace("\\\n", " ").splitlines():
      for step in re.split(r"&&|;", line):
        m = RUNNABLE.search(step)
        if m and not re.search(r"[\[<…]|\bNAME\b|=PATH\b", m.group(1)):
          found.append(_normalise(m.group(1)))
  return found


def test_every_quoted_command_is_run_in_the_tests_or_listed_as_long():
  unlisted = {}
  for page, text in _pages().items():
    for command in quoted_commands(text):
      if command not in RUN_IN_TESTS and command not in LONG:
        unlisted.setdefault(command, page)
  assert not unlisted, ("commands quoted in README/docs that no test runs and LONG does not "
                        "list (add each to RUN_IN_TESTS or LONG):\n" + "\n".join(
                            f"{p}: {c}" for c, p in unlisted.items()))


def test_the_tests_named_for_quoted_commands_exist():
  for command, node in RUN_IN_TESTS.items():
    if node == ".ci/run":
      continue
    path, name = node.split("::")
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
      assert re.search(rf"^def {name}\(", f.read(), re.M), (command, node)
  smoke = [c for c, node in RUN_IN_TESTS.items() if node == SMOKE_TEST]
  for command in smoke:  # test_smoke runs every experiment but the comparisons and ablations
    name = re.search(r"--experiment=(\w+)", command).group(1)
    assert name in experiments.EXPERIMENTS and not name.startswith(("compare_", "ablation_"))


def _parse_with_main(argvs):
  """Parses each argv with main.py's absl flags in a fresh interpreter (no TensorFlow)."""
  script = (
      "import importlib.util, json, sys\n"
      f"spec = importlib.util.spec_from_file_location('latmix_main', {MAIN!r})\n"
      "main = importlib.util.module_from_spec(spec); spec.loader.exec_module(main)\n"
      "out = []\n"
      "for argv in json.load(sys.stdin):\n"
      "  main.FLAGS.unparse_flags()\n"
      "  try:\n"
      "    main.FLAGS(['main.py'] + argv)\n"
      "    out.append({k: main.FLAGS[k].value for k in ('experiment', 'methods', 'drill', "
      "'fetch_data', 'rebuild')})\n"
      "  except Exception as e:  # absl's flags.Error: unknown flag or bad value\n"
      "    out.append({'error': str(e)})\n"
      "print(json.dumps(out))\n")
  proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(argvs), text=True,
                        capture_output=True, timeout=120, cwd=ROOT, check=True)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_listed_main_command_parses_with_the_cli():
  commands = [c for c in list(RUN_IN_TESTS) + sorted(LONG) if c.startswith("python main.py")]
  argvs = [c.split()[2:] for c in commands]
  valid_methods = set(compare.METHODS) | set(getattr(compare, "ABLATION_METHODS", ()))
  for command, parsed in zip(commands, _parse_with_main(argvs)):
    assert "error" not in parsed, (command, parsed)
    for name in filter(None, (parsed["experiment"], parsed["drill"])):
      if name != "nope":  # the README's way to list the experiments
        assert name in experiments.EXPERIMENTS or name in EXAMPLE_EXPERIMENTS, (command, name)
    assert set(parsed["methods"] or ()) <= valid_methods, command
    assert set(parsed["fetch_data"] or ()) <= set(DATASETS), command


def test_every_listed_benchmark_and_pytest_command_names_real_files_and_flags():
  for command in list(RUN_IN_TESTS) + sorted(LONG):
    words = command.split()
    if words[1].startswith("benchmarks/"):
      with open(os.path.join(ROOT, words[1]), encoding="utf-8") as f:
        source = f.read()
      for flag in re.findall(r"--(\w+)", command):
        assert f'"--{flag}"' in source or f"'--{flag}'" in source, (command, flag)
    elif words[1:3] == ["-m", "pytest"]:
      for path in [w for w in words[3:] if not w.startswith("-") and not w.isdigit()]:
        assert os.path.exists(os.path.join(ROOT, path)), (command, path)


def _steps(command):
  """The `&&`-separated steps of a shell command, with the interpreter spelling unified."""
  steps = []
  for step in command.split("&&"):
    words = ["python" if w == "python3" else w for w in step.split()]
    if words[:3] == ["python", "-m", "pip"]:
      words = ["pip"] + words[3:]
    if words[0] == "pip":  # quiet or not, the same install
      words = [w for w in words if w != "-q"]
    steps.append(words)
  return steps


def test_ci_runs_the_readme_test_command():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  block = re.search(r"Set up and run the tests.*?```bash\n(.+?)\n```", readme, re.S)
  assert block, "the README's 'Set up and run the tests' code block is missing"
  assert readme[:block.start()].count("\n") < 40, "the set-up commands must come before line 40"
  with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
    ci = [line for line in f.read().splitlines() if line and not line.startswith("#")
          and not line.startswith(("set ", "cd "))]
  if ci and ci[0] == CHROMIUM_STEP:  # installs the browser the report test renders in
    ci = ci[1:]
  assert len(ci) == 1, ci
  steps = _steps(ci[0])
  assert steps == _steps(block.group(1).strip())
  assert "pytest" in steps[-1]


def test_readme_is_short_and_starts_with_what_a_newcomer_needs():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    lines = f.read().splitlines()
  assert len(lines) <= 220, len(lines)
  setup = next(i for i, l in enumerate(lines) if "pip install -r requirements.txt" in l)
  assert setup < 40, setup
