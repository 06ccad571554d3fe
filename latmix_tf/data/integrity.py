"""Is this the data the paper's numbers come from? Checked by its bytes on every load.

Why: a dataset file with one flipped byte parses fine and trains fine; only its fingerprint
changes, so a run silently reports numbers on other data. Every load therefore hashes the
decoded arrays it returns (SHA-256, ~0.1 s for the 55 MB of (Fashion-)MNIST on one core) and
compares the digest with the canonical release's (`DatasetInfo.sha256`, the same digest
`--fetch_data` checks), naming the file that differs with the command that re-fetches it.
The digest a run records is always that of the bytes it used: nothing is trusted on a file's
size or modification time, which a rewrite can keep (see docs/reliability.md for the timing).

`<folder>/.latmix_verified.json` only spares the CLI's check before a run (`check_dataset`,
before TensorFlow starts) from decoding: it maps each data file's size, mtime *and SHA-256 of
its raw bytes* to the verified digest of the decoded arrays. Hashing the raw files costs about
what hashing the arrays does, decoding costs 0.3-1.8 s; a file whose bytes changed never
matches. A folder we cannot write (Debian's copy) is simply decoded again.

A deliberately different dataset (a user's own files, the tests' tiny synthetic sets) is
*declared*: `declare_custom` (or a run with `--allow_custom_data`, which sets
`LATMIX_ALLOW_CUSTOM_DATA=1`) pins its digest in `<folder>/custom_data.json`. Declared data loads
with status "custom", which every artifact recording the data fingerprint records too, and a
later change to those files is caught like a corrupted canonical file. CIFAR-10 has no canonical
digest we could verify against (no registry copy), so undeclared CIFAR-10 loads as "unverified".

Statuses: "canonical" (matches the release), "custom" (declared), "unverified" (nothing to
check against: CIFAR-10, or a tfds copy that differs in order from the canonical files).
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from latmix_tf import jsonio
from latmix_tf.data.formats import DataFormatError

VERIFIED_FILE = ".latmix_verified.json"
CUSTOM_FILE = "custom_data.json"
ALLOW_ENV = "LATMIX_ALLOW_CUSTOM_DATA"
ARRAY_NAMES = ("train images", "train labels", "test images", "test labels")


class DataIntegrityError(DataFormatError):
  """Data files decode fine but are not the data they claim to be (canonical or declared)."""


def allow_custom_from_env() -> bool:
  """What `--allow_custom_data` asked (main.py sets the variable; subprocesses inherit it)."""
  return os.environ.get(ALLOW_ENV, "") not in ("", "0")


def digests(arrays: Sequence[np.ndarray]) -> Dict[str, object]:
  """SHA-256 of all arrays in order (the data fingerprint) and of each array, in one pass."""
  total = hashlib.sha256()
  each = []
  for a in arrays:
    blob = memoryview(np.ascontiguousarray(a)).cast("B")
    total.update(blob)
    each.append(hashlib.sha256(blob).hexdigest())
  return {"sha256": total.hexdigest(), "arrays": each}


def file_sha256(path: str) -> str:
  """SHA-256 of a file's bytes, read in 1 MiB blocks (the data files, cached test sets)."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def file_stamps(files: Sequence[str]) -> Dict[str, list]:
  """{path: [size, mtime_ns, SHA-256 of the raw bytes]} of every data file (directories
  contribute their files). The content hash is what makes the stamp trustworthy: size and
  mtime alone survive a rewrite that keeps them."""
  out = {}
  for path in files:
    paths = ([os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs]
             if os.path.isdir(path) else [path])
    for p in sorted(paths):
      st = os.stat(p)
      out[os.path.abspath(p)] = [st.st_size, st.st_mtime_ns, file_sha256(p)]
  return out


def cached_digests(folder: str, files: Sequence[str],
                   arrays: Sequence[np.ndarray]) -> Dict[str, object]:
  """`digests(arrays)`, always computed from the arrays; the folder's cache is refreshed so
  that `cached_status` can vouch for these exact files later."""
  found = digests(arrays)
  path = os.path.join(folder, VERIFIED_FILE)
  try:
    stamps = file_stamps(files)
    cache = jsonio.read_json(path)
    if not (isinstance(cache, dict) and cache.get("stamps") == stamps
            and cache.get("digests") == found):
      jsonio.write_json_atomic(path, {"stamps": stamps, "digests": found})
  except OSError:
    pass  # a read-only folder (a registry copy): decoded again next time, nothing else changes
  return found


def cached_status(info, folder: str, files: Sequence[str]) -> Optional[str]:
  """"canonical" or "custom" when the cache vouches for these files (same size, mtime and
  raw-byte SHA-256 as when their decoded arrays were verified), else None."""
  cache = jsonio.read_json(os.path.join(folder, VERIFIED_FILE))
  try:
    if not isinstance(cache, dict) or cache.get("stamps") != file_stamps(files):
      return None
  except OSError:
    return None
  digest = (cache.get("digests") or {}).get("sha256")
  if info.sha256 and digest == info.sha256:
    return "canonical"
  custom = jsonio.read_json(os.path.join(folder, CUSTOM_FILE))
  if isinstance(custom, dict) and digest and custom.get("sha256") == digest:
    return "custom"
  return None


def declare_custom(folder: str, found: Dict[str, object], note: str = "") -> None:
  """Pins `found` (from `digests`) as the deliberately custom content of `folder`."""
  jsonio.write_json_atomic(os.path.join(folder, CUSTOM_FILE),
                           {"sha256": found["sha256"], "arrays": found["arrays"],
                            "declared": time.strftime("%Y-%m-%d %H:%M:%S"), "note": note})


def _differing_files(canonical: Optional[Tuple[str, ...]], found: Dict[str, object],
                     array_files: Sequence[str]) -> List[str]:
  if not canonical:
    return sorted(set(array_files))
  bad = [array_files[i] for i, (want, got) in enumerate(zip(canonical, found["arrays"]))
         if want != got]
  return list(dict.fromkeys(bad)) or sorted(set(array_files))


def check(info, folder: str, files: Sequence[str], array_files: Sequence[str],
          arrays: Sequence[np.ndarray], data_dir: str, allow_custom: Optional[bool] = None,
          log: Callable[[str], None] = print) -> Tuple[str, str]:
  """Verifies decoded `arrays` loaded from `files` in `folder`.

  Args:
    info: the dataset's `DatasetInfo` (canonical digests).
    folder: where the files live (the cache and a custom declaration go here).
    files: every data file read (stamped for the cache).
    array_files: for each of the four arrays, the file it came from (named in errors).
    arrays: (x_train, y_train, x_test, y_test) as decoded.
    data_dir: the data root, for the re-fetch command in the message.
    allow_custom: accept (and pin) non-canonical content; None reads `LATMIX_ALLOW_CUSTOM_DATA`.
    log: where to say that custom data was accepted.
  Returns:
    (full SHA-256 of the arrays, status "canonical" | "custom" | "unverified").
  Raises:
    DataIntegrityError: the content is neither canonical nor the declared custom content.
  """
  found = cached_digests(folder, files, arrays)
  digest = found["sha256"]
  if info.sha256 and digest == info.sha256:
    return digest, "canonical"
  custom = jsonio.read_json(os.path.join(folder, CUSTOM_FILE))
  declared = isinstance(custom, dict) and custom.get("sha256")
  if declared == digest:
    return digest, "custom"
  allow = allow_custom_from_env() if allow_custom is None else allow_custom
  if allow:
    try:
      declare_custom(folder, found, note="accepted by --allow_custom_data")
      where = f"pinned in {os.path.join(folder, CUSTOM_FILE)}"
    except OSError as e:
      where = f"not pinned: {e.strerror} writing in {folder}"
    log(f"{info.name}: {folder} is not the canonical release; using it as custom data as "
        f"--allow_custom_data asks ({where})")
    return digest, "custom"
  if not info.sha256 and not declared:
    return digest, "unverified"
  refetch = f"python main.py --fetch_data={info.name} --data_dir={data_dir}"
  if declared:
    bad = _differing_files(custom.get("arrays"), found, array_files)
    raise DataIntegrityError(
        f"{info.name}: {', '.join(bad)} changed since this folder was declared custom data "
        f"({os.path.join(folder, CUSTOM_FILE)}); restore the files, or pass --allow_custom_data "
        f"to accept the new content.")
  bad = _differing_files(info.array_sha256, found, array_files)
  raise DataIntegrityError(
      f"{info.name}: {', '.join(bad)} does not match the canonical release (SHA-256 of the "
      f"decoded arrays {digest[:12]}… != {info.sha256[:12]}…): the file is corrupt or not the "
      f"canonical one. Re-fetch it: `{refetch}`; to train on your own files deliberately, "
      f"pass --allow_custom_data.")
