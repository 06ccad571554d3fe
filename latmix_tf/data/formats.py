"""Parsers for the canonical on-disk formats of MNIST, Fashion-MNIST and CIFAR-10.

Each parser returns uint8 NHWC images and int64 labels and raises `DataFormatError` with
the offending path when a file is truncated or is not what its name says, so a corrupted
download is reported instead of being trained on.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from typing import Tuple

import numpy as np

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DataFormatError(ValueError):
  """A data file exists but cannot be parsed (truncated, wrong format, wrong shape)."""


def _open_maybe_gz(path: str) -> bytes:
  with open(path, "rb") as f:
    raw = f.read()
  if raw[:2] == b"\x1f\x8b":
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
      raise DataFormatError(f"{path}: corrupt gzip stream ({e}); delete it and re-fetch.")
  return raw


def read_idx(path: str) -> np.ndarray:
  """Reads one IDX file (optionally gzipped) into a uint8 array of its declared shape."""
  raw = _open_maybe_gz(path)
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
    raise DataFormatError(f"{path}: not an unsigned-byte IDX file (bad magic {raw[:4]!r}).")
  ndim = raw[3]
  header = 4 + 4 * ndim
  dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  expected = int(np.prod(dims)) + header
  if len(raw) != expected:
    raise DataFormatError(
        f"{path}: IDX header declares shape {dims} ({expected} bytes) but file has "
        f"{len(raw)} bytes; the file is truncated or corrupt. Delete it and re-fetch.")
  return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes a uint8 array as a gzipped IDX file (used by `fetch` and by the tests)."""
  array = np.ascontiguousarray(array, dtype=np.uint8)
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.tobytes())


def find_idx_file(folder: str, stem: str) -> str | None:
  for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz"):
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      return path
  return None


def read_idx_dataset(folder: str) -> Tuple[np.ndarray, ...]:
  """Reads the four canonical IDX files of (Fashion-)MNIST from `folder`."""
  paths = {k: find_idx_file(folder, v) for k, v in IDX_FILES.items()}
  missing = [IDX_FILES[k] for k, p in paths.items() if p is None]
  if missing:
    raise FileNotFoundError(f"{folder}: missing {', '.join(missing)}")
  xtr, ytr = read_idx(paths["train_images"]), read_idx(paths["train_labels"])
  xte, yte = read_idx(paths["test_images"]), read_idx(paths["test_labels"])
  if len(xtr) != len(ytr) or len(xte) != len(yte):
    raise DataFormatError(f"{folder}: image and label counts differ.")
  return (xtr[..., None], ytr.astype(np.int64), xte[..., None], yte.astype(np.int64))


def read_mnist_pickle(path: str) -> Tuple[np.ndarray, ...]:
  """Reads the classic `mnist.pkl.gz` (train 50k + valid 10k + test 10k, float32 = uint8/256).

  The 50k + 10k split is the canonical 60k training set in its original order, so the
  two are concatenated back; pixels are recovered exactly as round(x * 256).
  """
  try:
    with gzip.open(path, "rb") as f:
      train, valid, test = pickle.load(f, encoding="latin1")
  except (OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
    raise DataFormatError(f"{path}: cannot unpickle MNIST ({e}); delete it and re-fetch.")

  def to_uint8(x):
    return np.round(np.asarray(x, np.float64) * 256).clip(0, 255).astype(np.uint8)

  xtr = to_uint8(np.concatenate([train[0], valid[0]])).reshape(-1, 28, 28, 1)
  ytr = np.concatenate([train[1], valid[1]]).astype(np.int64)
  xte = to_uint8(test[0]).reshape(-1, 28, 28, 1)
  return xtr, ytr, xte, np.asarray(test[1], np.int64)


# --- CIFAR-10 -----------------------------------------------------------------------------

CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"


def _cifar_python_batch(blob: bytes, name: str) -> Tuple[np.ndarray, np.ndarray]:
  try:
    d = pickle.loads(blob, encoding="bytes")
    data = np.asarray(d[b"data"], np.uint8)
    labels = np.asarray(d[b"labels"], np.int64)
  except Exception as e:  # pickle raises many types on garbage input
    raise DataFormatError(f"CIFAR-10 batch {name}: cannot parse python batch ({e}).")
  if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
    raise DataFormatError(f"CIFAR-10 batch {name}: data shape {data.shape} is not (N, 3072).")
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _cifar_binary_batch(blob: bytes, name: str) -> Tuple[np.ndarray, np.ndarray]:
  if len(blob) % 3073:
    raise DataFormatError(f"CIFAR-10 batch {name}: {len(blob)} bytes is not a multiple of 3073.")
  rec = np.frombuffer(blob, np.uint8).reshape(-1, 3073)
  return rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), rec[:, 0].astype(np.int64)


def read_cifar10(path: str) -> Tuple[np.ndarray, ...]:
  """Reads CIFAR-10 from the python or binary archive, or from an extracted folder.

  Accepts `cifar-10-python.tar.gz`, `cifar-10-binary.tar.gz`, `cifar-10-batches-py/` or
  `cifar-10-batches-bin/` (the layouts published by the dataset's authors).
  """
  blobs = {}
  if os.path.isdir(path):
    for fn in os.listdir(path):
      with open(os.path.join(path, fn), "rb") as f:
        blobs[fn] = f.read()
  else:
    try:
      with tarfile.open(path, "r:*") as tar:
        for member in tar.getmembers():
          if member.isfile():
            blobs[os.path.basename(member.name)] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
      raise DataFormatError(f"{path}: corrupt CIFAR-10 archive ({e}); delete it and re-fetch.")
  if all(n in blobs for n in CIFAR_TRAIN_BATCHES + (CIFAR_TEST_BATCH,)):
    parse, train_names, test_name = _cifar_python_batch, CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH
  elif all(f"{n}.bin" in blobs for n in CIFAR_TRAIN_BATCHES + (CIFAR_TEST_BATCH,)):
    parse = _cifar_binary_batch
    train_names = tuple(n + ".bin" for n in CIFAR_TRAIN_BATCHES)
    test_name = CIFAR_TEST_BATCH + ".bin"
  else:
    raise DataFormatError(
        f"{path}: no complete set of CIFAR-10 batches (expected data_batch_1..5 and "
        f"test_batch, python or .bin); found {sorted(blobs)[:8]}.")
  parts = [parse(blobs[n], n) for n in train_names]
  xte, yte = parse(blobs[test_name], test_name)
  xtr = np.concatenate([p[0] for p in parts])
  ytr = np.concatenate([p[1] for p in parts])
  return np.ascontiguousarray(xtr), ytr, np.ascontiguousarray(xte), yte


def write_cifar10_python_archive(path: str, xtr, ytr, xte, yte) -> None:
  """Writes arrays as a `cifar-10-python.tar.gz` in the canonical layout (tests, tooling)."""
  def batch(x, y):
    data = np.asarray(x, np.uint8).transpose(0, 3, 1, 2).reshape(len(x), -1)
    return pickle.dumps({b"data": data, b"labels": [int(v) for v in y]})
  chunks = np.array_split(np.arange(len(xtr)), 5)
  with tarfile.open(path, "w:gz") as tar:
    items = [(f"data_batch_{i + 1}", batch(xtr[c], ytr[c])) for i, c in enumerate(chunks)]
    items.append((CIFAR_TEST_BATCH, batch(xte, yte)))
    for name, blob in items:
      info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
      info.size = len(blob)
      tar.addfile(info, io.BytesIO(blob))
