"""CI runs exactly the README's test command.

Why: the README promises one command that sets up and passes the tests, and `.ci/run` is
what CI executes. When one of them changes (new flags such as `-n 2`, a new data set to
fetch) and the other does not, the promise silently breaks for whoever follows the README.
The two may spell the interpreter differently (`python` vs `python3`, `pip` vs
`python3 -m pip -q`); every step and every argument must otherwise agree.
"""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
  block = re.search(r"Set up and run the tests[^\n]*\n+```bash\n(.+?)\n```", readme, re.S)
  assert block, "the README's 'Set up and run the tests' code block is missing"
  with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
    ci = [line for line in f.read().splitlines() if line and not line.startswith("#")
          and not line.startswith(("set ", "cd "))]
  assert len(ci) == 1, ci
  steps = _steps(ci[0])
  assert steps == _steps(block.group(1).strip())
  assert "pytest" in steps[-1]
