"""Where datasets come from: local canonical files, registry copies, then tfds.

Search order for `load_dataset(name, data_dir)`:
  1. `<data_dir>/<name>/` holding the canonical files (IDX for (Fashion-)MNIST, also the
     classic `mnist.pkl.gz`; the python or binary archive, or its extracted folder, for CIFAR-10);
  2. copies installed by package registries (Debian's `dataset-fashion-mnist` puts the
     IDX files under /usr/share/datasets/fashion-mnist);
  3. tensorflow-datasets, only when a network is reachable (probed in ~2 s): offline,
     `tfds.load` would retry for minutes before failing.
Nothing found gives one `DatasetNotFoundError` naming every place looked in and the
command that fetches the data (`python main.py --fetch_data=NAME`, see `fetch.py`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from latmix_tf.data import formats, integrity

DEFAULT_DATA_DIR = os.path.join(os.path.expanduser("~"), "latmix_data")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static facts about a dataset."""
  name: str
  tfds_name: str
  image_shape: Tuple[int, int, int]
  num_classes: int
  class_names: Tuple[str, ...]
  # SHA-256 of the decoded arrays (x_train, y_train int64, x_test, y_test int64) of the
  # canonical release; None where no registry copy exists to verify against.
  sha256: Optional[str]
  registry_dirs: Tuple[str, ...] = ()
  # SHA-256 of each decoded array (same order): names the file that differs (integrity.py).
  array_sha256: Optional[Tuple[str, str, str, str]] = None


DATASETS: Dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", "mnist", (28, 28, 1), 10, tuple(str(i) for i in range(10)),
        "1e35582d42a90940c55b956deb61875c020b567ed20e3c5b174f52bf7809ed9b",
        array_sha256=("741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
                      "e474323ac02fc156161b0bbb1f8c9cfeb327a74bcd9f9680a8385269a24f566c",
                      "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
                      "2fd8de6bdb8d11780b4b96dc57847bcfe6953f7c32aa48bfcd8237c3b7847243")),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", "fashion_mnist", (28, 28, 1), 10,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
         "Sneaker", "Bag", "Ankle boot"),
        "ece172613115fb18b120bec8f6c02271af90b8b8f0a5af5c51cbd5ceed68e619",
        registry_dirs=("/usr/share/datasets/fashion-mnist",),
        array_sha256=("2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
                      "e3245b63f7c40d1c8b652835f19744d970c1613b40ddac6bcfc87b9c46e16a0b",
                      "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
                      "d51d859896c55775b9e9e219b77ff03bcec1b6ac322f313544dc3f9e7bc94fae")),
    "cifar10": DatasetInfo(
        "cifar10", "cifar10", (32, 32, 3), 10,
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
         "truck"), None),
}

# Accept a few spellings researchers type.
_ALIASES = {"fmnist": "fashion_mnist", "fashion-mnist": "fashion_mnist", "cifar-10": "cifar10",
            "cifar": "cifar10"}


class DatasetNotFoundError(FileNotFoundError):
  """No source holds the dataset; the message says where we looked and how to fetch it."""


@dataclasses.dataclass(frozen=True)
class Arrays:
  """A dataset as uint8 NHWC images and int64 labels, with its content fingerprint.

  `integrity` says what the content was checked against (see `integrity.py`): "canonical",
  "custom" (declared with --allow_custom_data) or "unverified"; record it next to the
  fingerprint in every artifact. `sha256` is the full digest computed by that check.
  """
  info: DatasetInfo
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  source: str
  sha256: Optional[str] = None
  integrity: str = "unverified"

  @property
  def fingerprint(self) -> str:
    return (self.sha256 or array_fingerprint(self.x_train, self.y_train, self.x_test,
                                             self.y_test))[:16]

  def tuple(self) -> Tuple[np.ndarray, ...]:
    return (self.x_train, self.y_train, self.x_test, self.y_test)

  @property
  def custom_data(self) -> bool:
    return self.integrity == "custom"


def array_fingerprint(*arrays: np.ndarray) -> str:
  """SHA-256 over the raw bytes of the arrays, in order (the data fingerprint)."""
  h = hashlib.sha256()
  for a in arrays:
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def get_info(name: str) -> DatasetInfo:
  """Returns the `DatasetInfo` for `name`; raises ValueError listing valid names."""
  key = _ALIASES.get(name.lower(), name.lower())
  if key not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}.")
  return DATASETS[key]


def resolve_data_dir(data_dir: Optional[str]) -> str:
  return os.path.abspath(os.path.expanduser(
      data_dir or os.environ.get("LATMIX_DATA_DIR") or DEFAULT_DATA_DIR))


def _local_layout(info: DatasetInfo, folder: str):
  """Which canonical layout `folder` holds, without decoding anything.

  Returns:
    None if absent, else (source, files to read, the file of each of the 4 arrays).
  """
  if not os.path.isdir(folder):
    return None
  if info.name == "cifar10":
    for name in ("cifar-10-python.tar.gz", "cifar-10-batches-py", "cifar-10-binary.tar.gz",
                 "cifar-10-batches-bin"):
      path = os.path.join(folder, name)
      if os.path.exists(path):
        return path, [path], [path] * 4
    return None
  if formats.find_idx_file(folder, formats.IDX_FILES["train_images"]):
    files = [formats.find_idx_file(folder, stem) for stem in formats.IDX_FILES.values()]
    return folder, [f for f in files if f], files
  pickle_path = os.path.join(folder, "mnist.pkl.gz")
  if info.name == "mnist" and os.path.isfile(pickle_path):
    return pickle_path, [pickle_path], [pickle_path] * 4
  return None


def _read_local(info: DatasetInfo, folder: str):
  """Reads `folder`'s canonical layout, if any.

  Returns:
    None if absent, else (arrays, source, files read, the file of each of the 4 arrays).
  """
  layout = _local_layout(info, folder)
  if layout is None:
    return None
  source, files, array_files = layout
  if info.name == "cifar10":
    return formats.read_cifar10(source), source, files, array_files
  if source == folder:
    return formats.read_idx_dataset(folder), source, files, array_files
  return formats.read_mnist_pickle(source), source, files, array_files


def check_dataset(name: str, data_dir: Optional[str] = None,
                  allow_custom: Optional[bool] = None,
                  log: Callable[[str], None] = logging.info) -> str:
  """Verifies the data a run will load before the run writes anything; returns its status.

  A SHA-256 of each raw file when the folder's verification cache vouches for those bytes
  (the usual case, ~0.1 s), a full `load_dataset` otherwise. Raises what `load_dataset` raises.
  """
  info = get_info(name)
  data_dir = resolve_data_dir(data_dir)
  for folder in candidate_places(info, data_dir):
    layout = _local_layout(info, folder)
    if layout is not None:
      status = integrity.cached_status(info, folder, layout[1])
      if status is not None:
        return status
      return load_dataset(name, data_dir, allow_tfds=False, log=log,
                          allow_custom=allow_custom).integrity
  if network_available():
    return "unverified"  # tfds, loaded (and checked) by the run itself
  return load_dataset(name, data_dir, allow_tfds=False, log=log).integrity  # raises not found


def declare_custom_data(name: str, data_dir: Optional[str] = None, note: str = "") -> str:
  """Declares the files in `<data_dir>/<name>/` deliberately custom (not the canonical release).

  Their digest is pinned in `custom_data.json`; loads then report them as "custom" and a later
  change to the files is an error. Returns the folder. Raises DatasetNotFoundError if empty.
  """
  info = get_info(name)
  folder = os.path.join(resolve_data_dir(data_dir), info.name)
  found = _read_local(info, folder)
  if found is None:
    raise DatasetNotFoundError(f"{folder}: no {info.name} files to declare as custom data.")
  integrity.declare_custom(folder, integrity.digests(found[0]), note=note)
  return folder


def network_available(host: str = "storage.googleapis.com", port: int = 443,
                      timeout: float = 2.0) -> bool:
  """Cheap reachability probe so the tfds route fails fast when offline."""
  if os.environ.get("LATMIX_OFFLINE", "") not in ("", "0"):
    return False
  try:
    with socket.create_connection((host, port), timeout=timeout):
      return True
  except OSError:
    return False


def _read_tfds(info: DatasetInfo, data_dir: str):
  import tensorflow_datasets as tfds  # imported lazily: slow import, only used online
  splits = tfds.load(info.tfds_name, split=["train", "test"], batch_size=-1,
                     as_supervised=True, data_dir=os.path.join(data_dir, "tfds"))
  (xtr, ytr), (xte, yte) = tfds.as_numpy(splits)
  return (xtr.astype(np.uint8), ytr.astype(np.int64), xte.astype(np.uint8),
          yte.astype(np.int64))


def candidate_places(info: DatasetInfo, data_dir: str) -> List[str]:
  return [os.path.join(data_dir, info.name)] + list(info.registry_dirs)


def load_dataset(name: str, data_dir: Optional[str] = None, allow_tfds: bool = True,
                 log: Callable[[str], None] = logging.info,
                 allow_custom: Optional[bool] = None) -> Arrays:
  """Loads a dataset as uint8 arrays from the first source that has it, verified.

  Args:
    name: dataset name (see `DATASETS`).
    data_dir: local data folder; None uses `$LATMIX_DATA_DIR` or ~/latmix_data.
    allow_tfds: try tensorflow-datasets when a network is reachable.
    log: where to say which source was used.
    allow_custom: accept non-canonical files as custom data; None reads
      `$LATMIX_ALLOW_CUSTOM_DATA` (what `--allow_custom_data` sets).
  Returns:
    `Arrays` with x as (N, H, W, C) uint8 and y as (N,) int64, and their `integrity`.
  Raises:
    DatasetNotFoundError: no source holds it (message lists places and the fetch command).
    formats.DataFormatError: a file was found but is corrupt.
    integrity.DataIntegrityError: the files decode but are not the canonical (or declared
      custom) content; the message names the file and the re-fetch command.
  """
  info = get_info(name)
  data_dir = resolve_data_dir(data_dir)
  looked = []
  for folder in candidate_places(info, data_dir):
    looked.append(folder)
    found = _read_local(info, folder)
    if found is not None:
      arrays, source, files, array_files = found
      arrays = _validated(info, arrays, source)
      digest, status = integrity.check(info, folder, files, array_files, arrays.tuple(), data_dir,
                                       allow_custom=allow_custom, log=log)
      log(f"{info.name}: loaded from {source} ({status} data)")
      return dataclasses.replace(arrays, sha256=digest, integrity=status)
  if allow_tfds:
    looked.append("tensorflow-datasets (needs network)")
    if network_available():
      log(f"{info.name}: no local copy, loading with tensorflow-datasets")
      arrays = _validated(info, _read_tfds(info, data_dir), "tfds")
      digest = integrity.digests(arrays.tuple())["sha256"]
      # tfds checks its own downloads; a different order from the canonical files is not damage.
      return dataclasses.replace(arrays, sha256=digest,
                                 integrity="canonical" if digest == info.sha256 else "unverified")
  hint = (f"python main.py --fetch_data={info.name} --data_dir={data_dir}"
          if info.name != "cifar10" else
          f"download cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) into "
          f"{os.path.join(data_dir, 'cifar10')}/, or run once with internet access (tfds)")
  raise DatasetNotFoundError(
      f"Dataset {info.name!r} not found. Looked in: {'; '.join(looked)}. To get it: {hint}.")


def _validated(info: DatasetInfo, arrays, source: str) -> Arrays:
  xtr, ytr, xte, yte = arrays
  for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
    if x.shape[1:] != info.image_shape or x.dtype != np.uint8:
      raise formats.DataFormatError(
          f"{source}: {split} images have shape {x.shape[1:]} / {x.dtype}, expected "
          f"{info.image_shape} uint8.")
    if y.min() < 0 or y.max() >= info.num_classes:
      raise formats.DataFormatError(f"{source}: {split} labels outside 0..{info.num_classes-1}.")
  return Arrays(info, xtr, ytr, xte, yte, source)
