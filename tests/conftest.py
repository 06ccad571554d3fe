"""Shared fixtures: tiny datasets written in the canonical on-disk formats.

Tests never need the real data: they write small IDX files and a small CIFAR-10 python
archive into a temporary data folder and point `data_dir` at it, so the real loaders
(parsing, validation, fingerprinting) run on every test.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("LATMIX_OFFLINE", "1")  # never let a test wait on tfds' network retries

import numpy as np
import pytest

from latmix_tf.data import formats, sources


_BASES = {}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def doc_pages():
  """{path relative to the repository: text} of README.md and every docs/*.md page: what
  the README/docs tests read."""
  import glob  # pylint: disable=import-outside-toplevel
  paths = ["README.md"] + sorted(os.path.relpath(p, REPO)
                                 for p in glob.glob(os.path.join(REPO, "docs", "*.md")))
  out = {}
  for rel in paths:
    with open(os.path.join(REPO, rel), encoding="utf-8") as f:
      out[rel] = f.read()
  return out


def make_images(rng, n, shape, num_classes=10):
  """Class-dependent images, so a tiny model can learn something in a few steps.

  Each class has one fixed base pattern per image shape (shared by the train and test
  splits), plus per-image noise.
  """
  y = np.arange(n) % num_classes
  rng.shuffle(y)
  if shape not in _BASES:
    _BASES[shape] = np.random.default_rng(1234).integers(0, 256, size=(num_classes,) + shape)
  base = _BASES[shape]
  noise = rng.integers(-40, 41, size=(n,) + shape)
  x = np.clip(base[y] + noise, 0, 255).astype(np.uint8)
  return x, y.astype(np.int64)


def write_tiny_datasets(root, n_train=600, n_test=200, seed=0):
  rng = np.random.default_rng(seed)
  for name in ("mnist", "fashion_mnist"):
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    xtr, ytr = make_images(rng, n_train, (28, 28))
    xte, yte = make_images(rng, n_test, (28, 28))
    for stem, arr in ((formats.IDX_FILES["train_images"], xtr),
                      (formats.IDX_FILES["train_labels"], ytr),
                      (formats.IDX_FILES["test_images"], xte),
                      (formats.IDX_FILES["test_labels"], yte)):
      formats.write_idx(os.path.join(folder, stem + ".gz"), arr)
  folder = os.path.join(root, "cifar10")
  os.makedirs(folder, exist_ok=True)
  xtr, ytr = make_images(rng, n_train, (32, 32, 3))
  xte, yte = make_images(rng, n_test, (32, 32, 3))
  formats.write_cifar10_python_archive(
      os.path.join(folder, "cifar-10-python.tar.gz"), xtr, ytr, xte, yte)
  # Synthetic, so not the canonical release: declared custom, exactly as a user's own files
  # are (`--allow_custom_data`); loads report "custom" and a later change is still caught.
  for name in ("mnist", "fashion_mnist", "cifar10"):
    sources.declare_custom_data(name, root, note="tests/conftest.py synthetic data")
  return root


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """A data folder holding tiny mnist / fashion_mnist (IDX) and cifar10 (python archive)."""
  return write_tiny_datasets(str(tmp_path_factory.mktemp("data")))


def export_tiny_classifier(path, seed):
  """A tiny untrained SmallCNN exported with our signature (the serving tests' models)."""
  import keras  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from latmix_tf import export  # pylint: disable=import-outside-toplevel
  from latmix_tf.models.classifiers import SmallCNN  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(seed)
  model = SmallCNN(widths=(4, 8), dense_units=16, dropout=0.0)
  model(tf.zeros([1, 28, 28, 1]))
  return export.export_classifier(model, path, (28, 28, 1))
