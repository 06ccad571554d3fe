"""report.md / report.html and the TensorBoard HParams export, from a synthetic experiment
and comparison.

The per-run report leads with its summary table in words, then sections with their figures,
every metric key last. The HTML must stand alone (figures inlined, nothing fetched) and render
in a real browser: headless Debian chromium loads it from disk, we check the DOM it built
(title, tables) and that its screenshot is not blank. `.ci/run` installs chromium where it is
missing, so in CI this test runs; elsewhere it is skipped only when chromium is absent.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile

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


METRICS = {"test/accuracy": 0.9123, "test/samples": 10000, "epochs": 3,
           "autoattack/samples": 1000, "autoattack/Linf@0.2/robust_accuracy": 0.01,
           "autoattack/Linf@0.1/robust_accuracy": 0.25, "corruption/mca": 0.57,
           "blur/area": 0.576, "deepfool/rho_adv": 0.0392, "calibration/ece": 0.0124,
           "calibration/ece_ts": 0.0077, "bank/mean_psnr": 23.634,
           "stage/generator/seconds": 251.0, "stage/classifier/seconds": 296.0,
           "stage/evaluation/seconds": 56.0}
NOTES = ["SavedModel: saved_models/erm_fmnist/seed_0",
         "sanity check `deepfool_flips_every_image` **FAILED**: fraction = 0.001 (bound 0)",
         "sanity check `apgd_loss_increases` passed: gain = 0.5 (bound 0)"]


@pytest.fixture(scope="module")
def experiment_report(tmp_path_factory):
  out = tmp_path_factory.mktemp("experiment")
  pngs = []
  for name in ("training_curves", "attack_accuracy", "reliability_diagram"):
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1, 2], [0.5, 0.8, 0.9], "-o")
    ax.set_title(name)
    pngs.append(reports.save_figure(fig, str(out / f"{name}.png")))
  md = reports.write_markdown(str(out / "report.md"), "erm_fmnist (seed 0)",
                              "A **tiny** report with `code` & <escapes>.", METRICS, pngs,
                              notes=NOTES)
  return out, md


def test_report_opens_with_the_summary_in_words_and_ends_with_every_key(experiment_report):
  out, _ = experiment_report
  text = (out / "report.md").read_text()
  headings = [l for l in text.splitlines() if l.startswith("## ")]
  assert headings == ["## Summary", "## Robustness", "## Calibration", "## Training", "## Run",
                      "## All metrics"]
  summary = text.split("## Summary")[1].split("## ")[0]
  for row in ("| Clean accuracy (test set, 10000 images) | 91.23% |",
              "| AutoAttack robust accuracy (1000 images) | 25.00% at L∞ ε = 0.1, 1.00% at "
              "L∞ ε = 0.2 |", "| Mean corruption accuracy (mCA) | 57.00% |",
              "| ρ_adv (DeepFool, mean ‖r‖₂ / ‖x‖₂) | 0.0392 |",
              "| Expected calibration error (ECE, 15 bins) | 0.0124 (0.0077 after temperature "
              "scaling) |", "| Latent bank PSNR (mean over the inverted training images) | "
              "23.63 dB |", "| Run cost (stage work, wall) | 10.1 min: generator 251 s, "
              "classifier 296 s, evaluation 56 s |",
              "| Sanity checks (Carlini et al. 2019) | **1 FAILED**: deepfool_flips_every_image |"):
    assert row in summary, row
  robustness = text.split("## Robustness")[1].split("## ")[0]
  assert "(attack_accuracy.png)" in robustness and NOTES[1] in robustness
  assert "(reliability_diagram.png)" in text.split("## Calibration")[1].split("## ")[0]
  assert "(training_curves.png)" in text.split("## Training")[1].split("## ")[0]
  dump = text.split("## All metrics")[1]
  assert all(f"| `{k}` |" in dump for k in METRICS)
  # What a method without a bank or an evaluation says instead of a number.
  rows = dict(reports.summary_rows({"test/accuracy": 0.5}))
  assert rows["Latent bank PSNR (mean over the inverted training images)"] == (
      "no latent bank in this method")
  assert rows["AutoAttack robust accuracy"] == "not run"


def test_experiment_report_html_is_self_contained(experiment_report):
  out, _ = experiment_report
  page = (out / "report.html").read_text()
  assert "<title>erm_fmnist (seed 0)</title>" in page
  assert page.count("data:image/png;base64,") == 3 and "attack_accuracy.png" in page
  assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # nothing from the network
  assert "&lt;escapes&gt;" in page and "<strong>tiny</strong>" in page
  assert "<td><code>test/accuracy</code></td><td>0.9123</td>" in page
  assert page.index("<h2>Summary</h2>") < page.index("<h2>Robustness</h2>") < page.index(
      "<h2>All metrics</h2>")


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
  assert "<td>Clean accuracy (test set, 10000 images)</td><td>91.23%</td>" in dom
  pixels = matplotlib.image.imread(str(shot))[..., :3]
  assert pixels.shape[:2] == (900, 1000)
  dark = (pixels.mean(axis=-1) < 0.5).mean()  # text and the plotted curve
  assert 0.002 < dark < 0.5 and pixels.std() > 0.05, (dark, pixels.std())
  shutil.copy(shot, os.path.join(tempfile.gettempdir(), "latmix_report_screenshot.png"))
