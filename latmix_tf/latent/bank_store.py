"""On-disk format of the latent bank: checksummed, atomically written chunks and bank files.

Why a module of its own: what makes a cached bank trustworthy (every file carries its key and
a SHA-256 of its contents; writes are temp file + fsync + rename) is independent of how the
codes are computed (`latmix_tf.latent.bank`). Any unreadable, truncated, mis-shaped,
other-key or checksum-mismatched file raises `BankError`, which the builder answers by
recomputing; nothing here ever returns damaged data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from typing import Any, Dict, Optional

import numpy as np

from latmix_tf.jsonio import write_json_atomic

BANK_FILE, META_FILE = "bank.npz", "bank.json"
_ARRAYS = ("z", "labels", "mse", "psnr")


class BankError(ValueError):
  """A bank or chunk file is missing, damaged or belongs to another key."""


def _checksum(**arrays: np.ndarray) -> str:
  h = hashlib.sha256()
  for name in sorted(arrays):
    a = np.ascontiguousarray(arrays[name])
    h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _save_npz_atomic(path: str, **arrays: np.ndarray) -> None:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(buf.getvalue())
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _read_npz(path: str, names) -> Dict[str, np.ndarray]:
  """Reads the named arrays (fully: a bad zip CRC or truncation raises here)."""
  try:
    with np.load(path, allow_pickle=False) as data:
      return {k: np.array(data[k]) for k in names}
  except Exception as e:  # zipfile.BadZipFile, zlib.error, EOFError, KeyError, OSError...
    raise BankError(f"{path}: unreadable ({type(e).__name__}: {e})") from e


def chunk_path(bank_dir: str, i: int) -> str:
  return os.path.join(bank_dir, f"chunk-{i:05d}.npz")


def save_chunk(path: str, arrays: Dict[str, np.ndarray], start: int, stop: int,
               key_hash: str) -> None:
  """Writes a chunk atomically with its range, bank key and checksum inside."""
  meta = {"start": np.int64(start), "stop": np.int64(stop), "key_hash": np.array(key_hash)}
  _save_npz_atomic(path, checksum=np.array(_checksum(**arrays, **meta)), **arrays, **meta)


def load_chunk(path: str, start: int, stop: int, key_hash: str, latent_dim: int
               ) -> Dict[str, np.ndarray]:
  """Reads and validates a chunk; raises BankError on any mismatch or damage."""
  data = _read_npz(path, ("z", "mse", "psnr", "start", "stop", "key_hash", "checksum"))
  checksum = str(data.pop("checksum"))
  if _checksum(**data) != checksum:
    raise BankError(f"{path}: checksum mismatch (file damaged)")
  if str(data["key_hash"]) != key_hash or (int(data["start"]), int(data["stop"])) != (
      start, stop):
    raise BankError(f"{path}: belongs to another bank key or range")
  n = stop - start
  if data["z"].shape != (n, latent_dim) or data["mse"].shape != (n,) or \
     data["psnr"].shape != (n,):
    raise BankError(f"{path}: wrong shapes {data['z'].shape}, expected ({n}, {latent_dim})")
  return {k: data[k] for k in ("z", "mse", "psnr")}


@dataclasses.dataclass
class LatentBank:
  """Latent codes of the training split, in index order, with per-sample inversion quality."""
  z: np.ndarray        # float32 [N, d]
  labels: np.ndarray   # int64 [N]
  mse: np.ndarray      # float32 [N], pixel MSE of G(z) vs the image, [0,1] scale
  psnr: np.ndarray     # float32 [N], dB
  meta: Dict[str, Any]

  def __len__(self) -> int:
    return len(self.z)

  def save(self, bank_dir: str) -> None:
    """Writes bank.npz then bank.json (both atomic; the JSON holds the checksum)."""
    arrays = {k: getattr(self, k) for k in _ARRAYS}
    self.meta = dict(self.meta, checksum=_checksum(**arrays), n=len(self.z),
                     latent_dim=int(self.z.shape[1]))
    _save_npz_atomic(os.path.join(bank_dir, BANK_FILE), **arrays)
    write_json_atomic(os.path.join(bank_dir, META_FILE), self.meta)

  @classmethod
  def load(cls, path: str, key_hash: Optional[str] = None) -> "LatentBank":
    """Loads and validates a bank (directory or its bank.npz).

    Raises:
      FileNotFoundError: no bank there.
      BankError: damaged files, wrong shapes, checksum or key (if given) mismatch.
    """
    bank_dir = os.path.dirname(path) if path.endswith(".npz") else path
    npz, meta_path = os.path.join(bank_dir, BANK_FILE), os.path.join(bank_dir, META_FILE)
    if not (os.path.isfile(npz) and os.path.isfile(meta_path)):
      raise FileNotFoundError(f"No latent bank in {bank_dir!r} (need {BANK_FILE} and "
                              f"{META_FILE}); build one with latmix_tf.latent.bank.bank_stage(...).")
    try:
      with open(meta_path) as f:
        meta = json.load(f)
    except (OSError, ValueError) as e:
      raise BankError(f"{meta_path}: unreadable ({e})") from e
    if key_hash is not None and meta.get("key_hash") != key_hash:
      raise BankError(f"{bank_dir}: bank key {meta.get('key_hash')} != expected {key_hash}")
    data = _read_npz(npz, _ARRAYS)
    if _checksum(**data) != meta.get("checksum"):
      raise BankError(f"{npz}: checksum mismatch (file damaged or from another build)")
    n, d = meta.get("n"), meta.get("latent_dim")
    shapes = [data["z"].shape, data["labels"].shape, data["mse"].shape, data["psnr"].shape]
    if shapes != [(n, d), (n,), (n,), (n,)]:
      raise BankError(f"{npz}: shapes {shapes} do not match n={n}, latent_dim={d}")
    return cls(meta=meta, **data)

  def summary(self) -> Dict[str, float]:
    return {"n": len(self.z), "mean_mse": float(np.mean(self.mse)),
            "mean_psnr": float(np.mean(self.psnr)),
            "median_psnr": float(np.median(self.psnr)),
            "psnr_below_20db": float(np.mean(self.psnr < 20.0))}
