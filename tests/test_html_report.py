"""report.html and the TensorBoard HParams export, from a synthetic experiment and comparison.

The HTML must stand alone (figures inlined, nothing fetched) and render in a real browser:
headless Debian chromium loads it from disk, we check the DOM it built (title, sortable
tables) and that its screenshot is not blank. Skipped only when chromium is not installed.
"""

import json
import os
import re
import shutil
import subprocess

import matplotlib

matplotlib.use("Agg")
import matplotlib.image  # pylint: disable=wrong-import-position
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader  # pylint: disable=wrong-import-position
from tensorboard.plugins.hparams import metadata as hp_metadata  # pylint: disable=wrong-import-position

from latmix_tf import html_report, reports  # pylint: disable=wrong-import-position
from latmix_tf.comparison import write_comparison_report  # pylint: disable=wrong-import-position
from latmix_tf.comparison.hparams import trial_hash  # pylint: disable=wrong-import-position

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _runs():
  rng = np.random.default_rng(0)
  def metrics(acc):
    return {"test/accuracy": acc, "deepfool/rho_adv": 0.2 + acc / 10, "calibration/ece": 0.05,
            "fgsm/acc@0.1": acc - 0.2, "train_seconds": 10.0, "run_key": {"config_hash": "x"}}
  return {"erm": {s: metrics(0.90 + rng.normal(0, 0.01)) for s in range(3)},
          "latent_mixup": {s: metrics(0.88 + rng.normal(0, 0.01)) for s in range(3)}}


@pytest.fixture(scope="module")
def experiment_report(tmp_path_factory):
  out = tmp_path_factory.mktemp("experiment")
  fig, ax = plt.subplots(figsize=(4, 3))
  ax.plot([0, 1, 2], [0.5, 0.8, 0.9], "-o")
  ax.set_title("training curve")
  png = reports.save_figure(fig, str(out / "curves.png"))
  md = reports.write_markdown(str(out / "report.md"), "erm_fmnist (seed 0)",
                              "A **tiny** report with `code` & <escapes>.",
                              {"test/accuracy": 0.9123, "epochs": 3}, [png], notes=["a note"])
  return out, md


def test_experiment_report_html_is_self_contained(experiment_report):
  out, _ = experiment_report
  page = (out / "report.html").read_text()
  assert "<title>erm_fmnist (seed 0)</title>" in page
  assert page.count("data:image/png;base64,") == 1 and "curves.png" in page
  assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # nothing from the network
  assert "&lt;escapes&gt;" in page and "<strong>tiny</strong>" in page
  assert "<td><code>test/accuracy</code></td><td>0.9123</td>" in page


def test_comparison_writes_html_and_hparams_trials(tmp_path):
  files = write_comparison_report(str(tmp_path), _runs(), "compare_tiny", "Synthetic.")
  page = open(files["html"]).read()
  assert files["html"] == str(tmp_path / "report.html")
  assert "<th>method</th>" in page and page.count("data:image/png;base64,") == len(files["figures"])
  sessions = {}
  for root, _, names in os.walk(files["tensorboard"]):
    for name in names:
      for event in EventFileLoader(os.path.join(root, name)).Load():
        for value in event.summary.value:
          if value.metadata.plugin_data.plugin_name == hp_metadata.PLUGIN_NAME:
            content = value.metadata.plugin_data.content
            if value.tag == hp_metadata.SESSION_START_INFO_TAG:
              info = hp_metadata.parse_session_start_info_plugin_data(content)
              sessions[os.path.relpath(root, files["tensorboard"])] = (
                  info.group_name, info.hparams["method"].string_value)
  assert len(sessions) == 6  # 2 methods x 3 seeds, one run each
  for method in ("erm", "latent_mixup"):
    trial = trial_hash({"method": method})
    assert sorted(k for k, v in sessions.items() if v == (trial, method)) == [
        f"{method}-{trial}/seed_{s}" for s in range(3)]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(experiment_report, tmp_path):
  out, _ = experiment_report
  url = "file://" + str(out / "report.html")
  common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
  shot = tmp_path / "report.png"
  subprocess.run(common + [f"--screenshot={shot}", "--window-size=1000,900", url],
                 check=True, timeout=120, capture_output=True)
  dom = subprocess.run(common + ["--dump-dom", url], check=True, timeout=120,
                       capture_output=True, text=True).stdout
  assert "<title>erm_fmnist (seed 0)</title>" in dom and "<th>metric</th>" in dom
  pixels = matplotlib.image.imread(str(shot))[..., :3]
  assert pixels.shape[:2] == (900, 1000)
  dark = (pixels.mean(axis=-1) < 0.5).mean()  # text and the plotted curve
  assert 0.002 < dark < 0.5 and pixels.std() > 0.05, (dark, pixels.std())
  os.makedirs("/tmp/h17", exist_ok=True)
  shutil.copy(shot, "/tmp/h17/report_screenshot.png")  # for a human look; not asserted
