"""Data sources, formats and pipelines: shapes, dtypes, ranges, checksums, errors."""

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

from latmix_tf import data
from latmix_tf.config import DataConfig
from latmix_tf.data import formats, sources


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1)),
                                        ("cifar10", (32, 32, 3))])
def test_loaders_shapes_dtypes_counts(tiny_data_dir, name, shape):
  arrays = data.load_dataset(name, tiny_data_dir, allow_tfds=False)
  assert arrays.x_train.shape == (600,) + shape and arrays.x_train.dtype == np.uint8
  assert arrays.x_test.shape == (200,) + shape
  assert arrays.y_train.dtype == np.int64
  np.testing.assert_array_equal(np.bincount(arrays.y_train, minlength=10), [60] * 10)
  assert len(arrays.fingerprint) == 16


def test_cifar_archive_roundtrip_python_and_binary(tmp_path):
  rng = np.random.default_rng(1)
  xtr = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
  ytr = rng.integers(0, 10, 10)
  xte = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  yte = rng.integers(0, 10, 4)
  path = str(tmp_path / "cifar-10-python.tar.gz")
  formats.write_cifar10_python_archive(path, xtr, ytr, xte, yte)
  got = formats.read_cifar10(path)
  for a, b in zip(got, (xtr, ytr, xte, yte)):
    np.testing.assert_array_equal(a, b)
  # Binary layout: <1 label byte><3072 pixel bytes> per record, channel-major.
  bin_dir = tmp_path / "cifar-10-batches-bin"
  bin_dir.mkdir()
  def records(x, y):
    return b"".join(bytes([int(l)]) + im.transpose(2, 0, 1).tobytes() for im, l in zip(x, y))
  for i, chunk in enumerate(np.array_split(np.arange(10), 5)):
    (bin_dir / f"data_batch_{i + 1}.bin").write_bytes(records(xtr[chunk], ytr[chunk]))
  (bin_dir / "test_batch.bin").write_bytes(records(xte, yte))
  got = formats.read_cifar10(str(bin_dir))
  for a, b in zip(got, (xtr, ytr, xte, yte)):
    np.testing.assert_array_equal(a, b)


def test_truncated_idx_is_reported(tmp_path):
  path = str(tmp_path / "x.gz")
  formats.write_idx(path, np.zeros((5, 28, 28), np.uint8))
  raw = gzip.decompress(open(path, "rb").read())
  with gzip.open(path, "wb") as f:
    f.write(raw[:-100])
  with pytest.raises(formats.DataFormatError, match="truncated"):
    formats.read_idx(path)


def test_corrupt_cifar_archive_is_reported(tmp_path):
  path = tmp_path / "cifar-10-python.tar.gz"
  path.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
  with pytest.raises(formats.DataFormatError, match="corrupt"):
    formats.read_cifar10(str(path))


def test_missing_dataset_error_names_places_and_command(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as e:
    data.load_dataset("mnist", str(tmp_path), allow_tfds=False)
  msg = str(e.value)
  assert str(tmp_path / "mnist") in msg and "--fetch_data=mnist" in msg


def test_unknown_dataset_lists_valid_names():
  with pytest.raises(ValueError, match="cifar10, fashion_mnist, mnist"):
    data.get_info("svhn")


def test_checksum_mismatch_is_detected(tiny_data_dir):
  # The tiny data is not the canonical MNIST: verification must refuse it.
  with pytest.raises(data.FetchError, match="checksum mismatch"):
    data.verify(sources.DATASETS["mnist"], os.path.join(tiny_data_dir, "mnist"))


def test_real_data_checksums_verified():
  """The data fetched by the README's setup command is the canonical release."""
  root = sources.resolve_data_dir(None)
  for name in ("mnist", "fashion_mnist"):
    folder = os.path.join(root, name)
    assert os.path.isdir(folder), f"run `python main.py --fetch_data={name}` first"
    data.verify(sources.DATASETS[name], folder)
  mnist = data.load_dataset("mnist", root, allow_tfds=False)
  # Canonical MNIST label counts of the 60k training set.
  np.testing.assert_array_equal(np.bincount(mnist.y_train),
                                [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])


def test_pipeline_ranges_split_and_determinism(tiny_data_dir):
  arrays = data.load_dataset("fashion_mnist", tiny_data_dir, allow_tfds=False)
  cfg = DataConfig("fashion_mnist", tiny_data_dir, batch_size=32, val_size=100, augment="shift_flip")
  splits = data.make_splits(arrays, cfg)
  assert len(splits.x_train) + len(splits.x_val) == 600 and len(splits.x_val) == 100
  batches = list(data.train_dataset(splits, cfg, seed=3, epoch=1))
  assert len(batches) == 500 // 32
  x, y = batches[0]
  assert x.dtype == tf.float32 and x.shape == (32, 28, 28, 1)
  assert float(tf.reduce_min(x)) >= 0.0 and float(tf.reduce_max(x)) <= 1.0
  np.testing.assert_allclose(tf.reduce_sum(y, -1), 1.0)
  again = next(iter(data.train_dataset(splits, cfg, seed=3, epoch=1)))
  np.testing.assert_array_equal(x, again[0])  # same (seed, epoch) -> same batch
  other = next(iter(data.train_dataset(splits, cfg, seed=3, epoch=2)))
  assert not np.array_equal(x, other[0])
