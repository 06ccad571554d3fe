"""Tests of the latent bank: round trip, resume after a kill, damage detection, key changes.

Every test builds real banks (real DCGAN handle from `latmix_tf.generative`, untrained,
tiny) through the bank stage, and reads what the build did from its stage record and its
per-chunk log lines.
"""

import glob
import os

import numpy as np
import pytest

from latmix_tf.generative.config import GeneratorConfig
from latmix_tf.latent.config import InversionConfig
from latmix_tf.generative import build_generative_model, generator_checkpoint_hash
from latmix_tf.generative.reports import write_inversion_report
from latmix_tf.latent.bank import (BankError, LatentBank, bank_stage, build_or_load_bank,
                                   chunk_indices)
from latmix_tf.latent.encoder_stage import encoder_stage

CFG = InversionConfig(steps=3, random_starts=True, batch_size=16, chunk_size=24,
                      feature_weight=0.1)
N = 70  # chunks of 24, 24, 22; batches padded


@pytest.fixture(scope="module")
def gen():
  return build_generative_model(GeneratorConfig(latent_dim=8, base_filters=8), (28, 28, 1))


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  return (rng.integers(0, 256, (N, 28, 28, 1)).astype(np.uint8),
          rng.integers(0, 10, N).astype(np.int64))


def _build(gen, data, bank_dir, key=None, cfg=CFG, **kw):
  lines = []
  result = bank_stage(gen, None, *data, cfg, str(bank_dir), key or {"generator": "g0"},
                      log=lines.append, **kw)
  _build.status = result.status
  return result.value, lines


def _count(lines, word):
  return sum(word in s for s in lines)


def _assert_same(a: LatentBank, b: LatentBank):
  for k in ("z", "labels", "mse", "psnr"):
    np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


@pytest.fixture(scope="module")
def reference(gen, data, tmp_path_factory):
  """An uninterrupted build, the answer every other build must reproduce."""
  return _build(gen, data, tmp_path_factory.mktemp("ref"))[0]


def test_chunk_indices():
  assert chunk_indices(70, 24) == [(0, 24), (24, 48), (48, 70)]
  assert chunk_indices(5, 10) == [(0, 5)]
  with pytest.raises(ValueError):
    chunk_indices(5, 0)


def test_round_trip(gen, data, reference, tmp_path):
  bank, lines = _build(gen, data, tmp_path)
  assert _count(lines, "img/s") == 3 and _count(lines, "ETA") == 3
  _assert_same(bank, reference)  # deterministic: same key, same bank
  assert bank.z.shape == (N, 8) and bank.z.dtype == np.float32
  assert np.all(np.abs(bank.z) <= 1.0)
  np.testing.assert_array_equal(bank.labels, data[1])
  np.testing.assert_allclose(bank.psnr, 10 * np.log10(1 / bank.mse), rtol=1e-5)
  # The stored MSE is the MSE of G(z) against the stored image.
  x = data[0][:5].astype(np.float32) / 255
  rec = gen.decode(bank.z[:5]).numpy()
  np.testing.assert_allclose(np.mean((rec - x) ** 2, axis=(1, 2, 3)), bank.mse[:5], rtol=1e-4)
  loaded = LatentBank.load(str(tmp_path))
  _assert_same(loaded, bank)
  assert loaded.meta["key"]["upstream"]["generator"] == "g0" and loaded.meta["n"] == N
  again, lines = _build(gen, data, tmp_path)
  assert _build.status == "cached" and _count(lines, "img/s") == 0
  _assert_same(again, bank)


def test_resume_after_kill(gen, data, reference, tmp_path):
  class Killed(Exception):
    pass

  def die_after_second_chunk(line):
    if "chunk 2/3 [" in line:
      raise Killed()
  with pytest.raises(Killed):
    build_or_load_bank(gen, None, *data, CFG, str(tmp_path), {"generator": "g0"},
                       log=die_after_second_chunk)
  assert not os.path.exists(tmp_path / "bank.npz")
  bank, lines = _build(gen, data, tmp_path)
  assert _build.status == "resumed"
  assert _count(lines, "reused") == 2 and _count(lines, "img/s") == 1
  _assert_same(bank, reference)


def test_damaged_chunks_are_recomputed(gen, data, reference, tmp_path):
  _build(gen, data, tmp_path)
  # chunk 1: flipped bytes in the middle; chunk 2: truncated; chunk 3: silently altered
  # values re-saved as a valid zip (only the checksum can catch it).
  p1, p2, p3 = (tmp_path / f"chunk-0000{i}.npz" for i in range(3))
  raw = bytearray(p1.read_bytes())
  for k in range(len(raw) // 2, len(raw) // 2 + 16):
    raw[k] ^= 0xFF
  p1.write_bytes(bytes(raw))
  p2.write_bytes(p2.read_bytes()[:200])
  with np.load(p3) as f:
    arrays = {k: f[k] for k in f.files}
  arrays["z"] = arrays["z"] + np.float32(1e-3)
  np.savez(p3, **arrays)
  os.remove(tmp_path / "bank.npz")  # also lose the final file
  bank, lines = _build(gen, data, tmp_path)
  assert _count(lines, "rejected") == 3 and _count(lines, "img/s") == 3
  assert _count(lines, "checksum") >= 1
  _assert_same(bank, reference)


def test_damaged_final_bank_is_detected_and_reassembled(gen, data, reference, tmp_path):
  _build(gen, data, tmp_path)
  path = tmp_path / "bank.npz"
  path.write_bytes(path.read_bytes()[:-100])
  with pytest.raises(BankError):
    LatentBank.load(str(tmp_path))
  bank, lines = _build(gen, data, tmp_path)
  assert _build.status == "resumed" and _count(lines, "cached result unusable") == 1
  assert _count(lines, "reused") == 3
  _assert_same(bank, reference)
  assert LatentBank.load(str(tmp_path)).meta["checksum"] == bank.meta["checksum"]


def _stale(path):
  return len(glob.glob(str(path) + ".stale-*"))


def test_key_mismatch_rebuilds(gen, data, reference, tmp_path):
  bank_dir = tmp_path / "bank"
  _build(gen, data, bank_dir)
  bank, lines = _build(gen, data, bank_dir, key={"generator": "g1"})
  assert _build.status == "built" and _count(lines, "img/s") == 3 and _stale(bank_dir) == 1
  assert bank.meta["key"]["upstream"]["generator"] == "g1"
  # Another inversion config or other data: rebuilt as well (the old bank moved aside).
  cfg = InversionConfig(**{**CFG.__dict__, "steps": 4})
  _, lines = _build(gen, data, bank_dir, key={"generator": "g1"}, cfg=cfg)
  assert _count(lines, "img/s") == 3 and _stale(bank_dir) == 2
  x2 = data[0].copy()
  x2[0, 0, 0, 0] ^= 1
  _, lines = _build(gen, (x2, data[1]), bank_dir, key={"generator": "g1"}, cfg=cfg)
  assert _build.status == "built" and _stale(bank_dir) == 3
  _, lines = _build(gen, data, bank_dir, rebuild=True)
  assert _build.status == "built" and _count(lines, "img/s") == 3


def test_encoder_stage_then_bank_and_report(gen, data, tmp_path):
  cfg = InversionConfig(encoder_epochs=1, encoder_steps_per_epoch=2, encoder_batch_size=16,
                        encoder_base_filters=4, steps=2, batch_size=32, chunk_size=40)
  lines = []
  enc = encoder_stage(gen, generator_checkpoint_hash(gen), data[0], "fp", cfg,
                      str(tmp_path / "encoder"), log=lines.append)
  assert enc.status == "built" and _count(lines, "encoder epoch 1/1") == 1
  upstream = {"generator": "g", "encoder": enc.record["key_hash"]}
  result = bank_stage(gen, enc.value, *data, cfg, str(tmp_path / "bank"), upstream,
                      log=lines.append)
  bank = result.value
  assert bank.meta["init"] == "encoder" and result.outputs["init"] == "encoder"
  assert bank.z.shape == (N, 8) and np.all(np.isfinite(bank.psnr))
  lines = []
  again = encoder_stage(gen, generator_checkpoint_hash(gen), data[0], "fp", cfg,
                        str(tmp_path / "encoder"), log=lines.append)
  cached = bank_stage(gen, again.value, *data, cfg, str(tmp_path / "bank"), upstream,
                      log=lines.append)
  assert again.status == cached.status == "cached"
  assert not any("epoch" in s or "img/s" in s for s in lines)  # nothing trained or inverted
  _assert_same(cached.value, bank)
  paths = write_inversion_report(gen, bank, data[0], str(tmp_path / "report"), n_images=10,
                                 n_pairs=3, steps=5)
  for p in paths.values():
    assert os.path.getsize(p) > 1000 and open(p, "rb").read(4) == b"\x89PNG"
