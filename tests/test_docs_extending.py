"""docs/extending.md's worked example of a new method works as written.

Why: a worked example that no longer runs teaches the wrong API. This test takes the two
code blocks of the page's *Add a method* section, runs them as they are, and trains the new
method through the real training loop with the smoke-scale recipe of a registered
experiment, on the tiny canonical-format data of conftest.py.
"""

import os
import re

import keras
import numpy as np
import tensorflow as tf

from latmix_tf.data import load_dataset, make_splits
from latmix_tf.models.classifiers import build_classifier
from latmix_tf.training import build_method, registry, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _section_code(heading):
  """The ```python blocks of one `## heading` section of docs/extending.md, in order."""
  with open(os.path.join(ROOT, "docs", "extending.md"), encoding="utf-8") as f:
    text = f.read()
  section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_example_method_trains_at_smoke_scale(tiny_data_dir, tmp_path):
  blocks = _section_code("Add a method")
  assert len(blocks) == 2, "the section shows the method and its experiment"
  page = {}
  try:
    for block in blocks:
      exec(compile(block, "docs/extending.md", "exec"), page)  # pylint: disable=exec-used
    experiment = page["make_label_smoothing"]("fmnist")
    cfg = experiment.get_config(scale="smoke", seed=0, data_dir=tiny_data_dir)
    assert experiment.name == cfg.name == "label_smoothing_fmnist"
    method = build_method(cfg.method)
    assert isinstance(method, page["LabelSmoothing"])
    # What the method does to a batch: the smoothed labels, rows summing to 1.
    y = tf.one_hot([0, 3], 10)
    _, smoothed = method.prepare_batch(None, tf.zeros([2, 28, 28, 1]), y, tf.constant([1, 2]))
    np.testing.assert_allclose(smoothed.numpy(), 0.9 * y.numpy() + 0.01, rtol=1e-6)
    # Trained through the one loop with the experiment's smoke-scale recipe.
    splits = make_splits(load_dataset(cfg.data.name, tiny_data_dir, allow_tfds=False), cfg.data)
    keras.utils.set_random_seed(0)
    model = build_classifier(cfg.model, splits.x_train.shape[1:])
    before = [v.numpy().copy() for v in model.trainable_variables]
    history = train(model, method, splits, cfg.data, cfg.train, str(tmp_path), seed=0,
                    log=lambda _: None)
    assert len(history) == cfg.train.epochs and np.isfinite(history[-1]["train/loss"])
    after = [v.numpy() for v in model.trainable_variables]
    assert sum(not np.array_equal(b, a) for b, a in zip(before, after)) >= len(before) - 2
  finally:
    registry.METHODS.pop("label_smoothing", None)  # the registry is shared by later tests
