"""The latent bank: one latent code per training image, built once, cached on disk.

Latent mixup samples pairs of training images and decodes mixtures of their codes, so the
whole training split is inverted up front. Inverting 60k images takes minutes, so the bank
is built in chunks (`cfg.chunk_size` images), each written atomically (temp file + rename)
as soon as it finishes, with a SHA-256 checksum of its contents and the bank key inside.
A killed build resumes from the finished chunks; a chunk or bank file that is unreadable,
truncated, of the wrong shape, of another key or whose checksum does not match is
recomputed, never silently reused. The bank is the "bank" stage, keyed by the keys of the
stages it consumes (generator, encoder), the inversion config, the data and the seed.

Layout of `bank_dir`: `stage.json` (the stage record, see `latmix_tf.stages`),
`chunk-00000.npz` ... (kept, so a damaged final file is reassembled cheaply), `bank.npz`
(z [N, d] float32, labels [N] int64, mse [N], psnr [N], in index order) and `bank.json`
(key, key hash, checksum, summary); the format and its checks live in
`latmix_tf.latent.bank_store`. The split into chunks is pure
(`chunk_indices`, `invert_chunk`), which is what lets several devices share the work:

* workers (`MultiWorkerMirroredStrategy`): worker w of W inverts chunks w, w + W, ... into its
  own bank directory (the chief's is `bank_dir`, a worker's its `workertemp_<w>` sibling);
  the rows are then merged in index order by one all-reduce (each worker fills its rows,
  zeros elsewhere: exact), and only the chief writes bank.npz / bank.json. A resumed build
  reuses each worker's finished chunks; no shared filesystem is needed.
* replicas of one worker (`MirroredStrategy`, e.g. several GPUs): the batches of a chunk are
  inverted side by side, one per replica, with the seeds they get on one device.
Each batch's result depends only on its images and (seed, absolute index), so the bank is
the same whatever the number of workers or replicas (tests/test_distributed.py).
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from latmix_tf import distribute, progress, stages
from latmix_tf.latent.config import InversionConfig
from latmix_tf.data.pipeline import to_float
from latmix_tf.data.sources import array_fingerprint
from latmix_tf.latent.bank_store import (BankError, LatentBank, chunk_path, load_chunk,
                                         save_chunk)
from latmix_tf.latent.inversion import Inverter, psnr_from_mse

__all__ = ["BankError", "LatentBank", "bank_key", "bank_stage", "build_or_load_bank",
           "chunk_indices",
           "invert_chunk", "load_chunk", "save_chunk"]

def chunk_indices(n: int, chunk_size: int) -> List[Tuple[int, int]]:
  """[(start, stop), ...] covering range(n) in order, chunks of `chunk_size` (last shorter)."""
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
  return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def invert_chunk(inverter: Inverter, x_chunk: np.ndarray, start: int, seed: int,
                 strategy: Optional[tf.distribute.Strategy] = None,
                 on_batch: Optional[Callable[[int], None]] = None) -> Dict[str, np.ndarray]:
  """Inverts one chunk; pure function of (inverter, images, absolute start, seed).

  With a single-worker strategy of several replicas, the chunk's batches run side by side.
  """
  if (strategy is not None and strategy.num_replicas_in_sync > 1 and
      distribute.num_workers(strategy) == 1):
    z, mse, psnr = _invert_on_replicas(inverter, x_chunk, start, seed, strategy)
  else:
    z, mse, psnr = inverter.invert(x_chunk, seed=seed, offset=start, on_batch=on_batch)
  if not (np.all(np.isfinite(z)) and np.all(np.isfinite(mse))):
    raise FloatingPointError(f"non-finite latent codes or MSE in chunk at {start}; the "
                             "generator or encoder produces NaNs - retrain it.")
  return {"z": z, "mse": mse, "psnr": psnr}


def _invert_on_replicas(inverter: Inverter, x: np.ndarray, offset: int, seed: int,
                        strategy: tf.distribute.Strategy):
  """`inverter.invert(x, seed, offset)` with batch k of each group of R on replica k."""
  x = to_float(np.asarray(x))
  n, bs, r = len(x), inverter.batch_size, strategy.num_replicas_in_sync
  z = np.empty((n, inverter.latent_dim), np.float32)
  mse = np.empty((n,), np.float32)
  starts = list(range(0, n, bs))
  for g in range(0, len(starts), r):
    group = starts[g:g + r]
    xs, seeds = [], []
    for k in range(r):  # a spare replica repeats the group's first batch; its result is dropped
      st = group[k] if k < len(group) else group[0]
      xb = x[st:st + bs]
      if len(xb) < bs:  # fixed batch shape: pad with blank images, as Inverter.invert does
        xb = np.concatenate([xb, np.zeros((bs - len(xb),) + xb.shape[1:], np.float32)])
      xs.append(xb)
      seeds.append(np.array([seed, offset + st], np.int64))
    per_x = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(xs[ctx.replica_id_in_sync_group]))
    per_seed = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(seeds[ctx.replica_id_in_sync_group]))
    # A plain lambda: given a tf.function, MirroredStrategy.run would call it once with the
    # PerReplica values instead of once per replica.
    zs, ms = strategy.run(lambda xb, sb: inverter.invert_batch(xb, sb), args=(per_x, per_seed))
    zs, ms = strategy.experimental_local_results(zs), strategy.experimental_local_results(ms)
    for k, st in enumerate(group):
      m = min(bs, n - st)
      z[st:st + m], mse[st:st + m] = zs[k].numpy()[:m], ms[k].numpy()[:m]
  return z, mse, psnr_from_mse(mse)


def bank_key(upstream: Dict, cfg: InversionConfig, x_train: np.ndarray, y_train: np.ndarray,
             seed: int) -> Dict:
  """The bank stage's key: the consumed stages' keys + inversion config + data + seed."""
  return stages.stage_key(config=cfg, data=array_fingerprint(x_train, y_train),
                          upstream=upstream, seed=int(seed))


def _chunk(i, chunks, mine, parts, inverter, x_train, bank_dir, key_hash, seed, strategy, log,
           images_done) -> None:
  """Chunk i: reused if a valid file of this key is on disk, else inverted and saved."""
  start, stop = chunks[i]
  path = chunk_path(bank_dir, i)
  if os.path.exists(path):
    try:
      parts[i] = load_chunk(path, start, stop, key_hash, inverter.latent_dim)
      log(f"latent bank: chunk {i + 1}/{len(chunks)} reused")
      images_done.update(stop - start)
      return
    except BankError as e:
      log(f"latent bank: chunk {i + 1}/{len(chunks)} rejected ({e}); recomputing")
  t0 = time.time()
  parts[i] = invert_chunk(inverter, x_train[start:stop], start, seed, strategy,
                          on_batch=images_done.update)
  save_chunk(path, parts[i], start, stop, key_hash)
  left = sum(chunks[j][1] - chunks[j][0] for j in mine if j > i)
  rate = (stop - start) / max(time.time() - t0, 1e-9)
  log(f"latent bank: chunk {i + 1}/{len(chunks)} [{start}:{stop}] {rate:.0f} img/s, mean "
      f"PSNR {float(np.mean(parts[i]['psnr'])):.2f} dB, ETA {left / rate:.0f} s")


def _invert_all(inverter: Inverter, x_train: np.ndarray, y_train: np.ndarray, cfg,
                bank_dir: str, key: Dict, key_hash: str, seed: int, strategy,
                log: Callable[[str], None]) -> LatentBank:
  """Inverts every chunk not already on disk (valid, same key) and assembles the bank."""
  worker, workers = distribute.worker_info(strategy)
  os.makedirs(bank_dir, exist_ok=True)
  chunks = chunk_indices(len(x_train), cfg.chunk_size)
  mine = [i for i in range(len(chunks)) if i % workers == worker]
  parts: Dict[int, Dict[str, np.ndarray]] = {}
  t_start = time.time()
  with progress.bar(sum(chunks[i][1] - chunks[i][0] for i in mine), "latent bank images", log,
                    final_line=False) as images_done:
    for i in mine:
      _chunk(i, chunks, mine, parts, inverter, x_train, bank_dir, key_hash, seed, strategy, log,
             images_done)
  z = np.zeros((len(x_train), inverter.latent_dim), np.float32)
  mse, psnr = np.zeros(len(x_train), np.float32), np.zeros(len(x_train), np.float32)
  for i, part in parts.items():
    start, stop = chunks[i]
    z[start:stop], mse[start:stop], psnr[start:stop] = part["z"], part["mse"], part["psnr"]
  if workers > 1:
    z, mse, psnr = distribute.sum_over_workers(strategy, [z, mse, psnr])
  bank = LatentBank(z=z, labels=np.asarray(y_train, np.int64), mse=mse, psnr=psnr,
                    meta={"key": key, "key_hash": key_hash, "init": inverter.init,
                          "build_seconds_this_run": time.time() - t_start,
                          "workers": workers})
  bank.meta["summary"] = bank.summary()
  if worker != 0:
    log(f"latent bank: {len(bank)} codes merged from {workers} workers (the chief saves it)")
    return bank
  bank.save(bank_dir)
  s = bank.meta["summary"]
  log(f"latent bank: {s['n']} codes, mean PSNR {s['mean_psnr']:.2f} dB "
      f"(median {s['median_psnr']:.2f}), written to {bank_dir}")
  return bank


def bank_stage(gen, encoder, x_train: np.ndarray, y_train: np.ndarray, cfg: InversionConfig,
               bank_dir: str, upstream: Dict, rebuild: bool = False,
               log: Callable[[str], None] = print, seed: int = 0, feature_fn=None,
               inverter: Optional[Inverter] = None,
               strategy: Optional[tf.distribute.Strategy] = None,
               index: Optional[str] = None) -> stages.StageResult:
  """The "bank" stage: the latent bank of (x_train, y_train), loaded if a valid one exists.

  Args:
    gen: the generator (see `latmix_tf.latent.inversion`); encoder: a trained post-hoc E
      (None for a generator with its own encoder, or random starts).
    x_train: uint8 images [N, H, W, C]; y_train: int labels [N].
    cfg: inversion config.
    bank_dir: folder of this bank (created).
    upstream: the keys of the stages it consumes, e.g. {"generator": key hash}.
    rebuild: ignore everything on disk.
    log: progress sink (one line per chunk with images/s and ETA).
    seed: seed of random starts and stochastic clipping.
    feature_fn: features for the loss when cfg.feature_source == "classifier".
    inverter: a prebuilt `Inverter` (must match gen/cfg); built from the rest otherwise.
    strategy: share the chunks among workers / the batches among replicas (module
      docstring); every worker must call this with the same arguments.
    index: stage-sharing index folder (`stages.Stage.index`).
  Returns:
    The stage result; its value is the `LatentBank`, its outputs the bank's summary.
  """
  if x_train.ndim != 4 or len(x_train) == 0 or len(y_train) != len(x_train):
    raise ValueError(f"Need images [N>0, H, W, C] and N labels; got {x_train.shape} images "
                     f"and {len(y_train)} labels.")
  stage = stages.Stage("bank", bank_dir, bank_key(upstream, cfg, x_train, y_train, seed),
                       index)
  key_hash = stage.key_hash

  def load(record):
    del record
    try:
      bank = LatentBank.load(bank_dir, key_hash=key_hash)
    except (BankError, FileNotFoundError) as e:
      raise stages.StageDamaged(str(e)) from e
    log(f"latent bank: loaded {bank_dir} ({len(bank)} codes, key {key_hash})")
    return bank

  def share(bank, record):  # the chief's bank is sent to every worker
    n, d = len(x_train), record["outputs"]["latent_dim"]
    arrays = ([bank.z, bank.mse, bank.psnr] if bank is not None else
              [np.zeros((n, d), np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32)])
    z, mse, psnr = distribute.broadcast_from_chief(strategy, arrays)
    return bank if bank is not None else LatentBank(
        z=z, labels=np.asarray(y_train, np.int64), mse=mse, psnr=psnr,
        meta={"key": stage.key, "key_hash": key_hash})

  def build(resumed):
    del resumed  # valid chunks of this key are reused whatever happened before
    if distribute.num_workers(strategy) > 1:  # every worker inverts with the chief's nets
      nets = [encoder, *getattr(gen, "models", {}).values()]
      distribute.sync_variables_from_chief(strategy, distribute.variables_of(
          [n for n in nets if n is not None and hasattr(n, "variables")]))
    inv = inverter or Inverter(gen, cfg, x_train.shape[1:], encoder=encoder,
                               feature_fn=feature_fn)
    bank = _invert_all(inv, x_train, y_train, cfg, distribute.worker_dir(bank_dir, strategy),
                       stage.key, key_hash, seed, strategy, log)
    return bank, {**bank.summary(), "latent_dim": int(bank.z.shape[1]), "init": inv.init}

  return stages.run_stage(stage, build, load, share=share, rebuild=rebuild, log=log,
                          strategy=strategy)


def build_or_load_bank(*args, **kwargs) -> LatentBank:
  """`bank_stage(...).value`: the latent bank, for callers that need no record."""
  return bank_stage(*args, **kwargs).value
