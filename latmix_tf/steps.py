"""The steps inside an epoch, the same for every network latmix trains.

`epochs.EpochLoop` owns what happens around the epochs; this module owns what happens within
one, for the classifier (`training/loop.py`), the DCGAN / VAE (`generative/train.py`) and the
post-hoc inversion encoder (`latent/encoder_stage.py`):

* the order of the examples: `epoch_order` is a pure function of (seed, epoch[, pass]), which
  is what lets a resumed run replay epoch `e` batch for batch (see `epochs.py`);
* the distribution of a batch stream: `distribute_dataset` with `AutoShardPolicy.DATA`, so
  every worker builds the same global batches and keeps its replicas' slices (the inputs are
  in-memory arrays, cheap to rebuild on every worker);
* the step: `Steps` wraps a per-replica step function once. `one(batch)` runs it on a
  distributed batch and sums its outputs over the replicas (the classifier: per-step sums,
  a progress bar per step); `run(iterator, n)` runs `n` steps of an iterator in one compiled
  graph (over `tf.range`) and returns the totals of the named sums and the model's tracker
  results (the generator: a health check every k steps; the encoder: one call per epoch).
  `run_chunks` is the Python side of `run`: an epoch's steps in chunks, a callback after each.

A step keys its noise by the optimizer step (or a step counter in the checkpoint), never by a
Python-side counter, so the same step draws the same noise whether or not the run resumed.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf


def epoch_order(seed: int, epoch: int, n: int, count: Optional[int] = None,
                reshuffle: bool = True) -> np.ndarray:
  """The example indices of epoch `epoch`, in the order its batches take them.

  Args:
    seed: the run's seed.
    epoch: 0-based epoch; with `seed` it fixes the order.
    n: number of examples.
    count: indices wanted; None gives one permutation of the n examples. A capped epoch may
      want more than n: it makes further passes over the examples.
    reshuffle: with `count`, every pass takes its own order, keyed by (seed, epoch, pass)
      (the generator); otherwise the (seed, epoch) order repeats (the inversion encoder).
  """
  if count is None or not reshuffle:
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order if count is None else order[np.arange(count) % n]
  passes = -(-count // n)
  return np.concatenate([np.random.default_rng([seed, epoch, p]).permutation(n)
                         for p in range(passes)])[:count]


def distribute_dataset(strategy: tf.distribute.Strategy, ds: tf.data.Dataset):
  """`ds` split over the replicas of `strategy`, sharded by data (see the module docstring)."""
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  return strategy.experimental_distribute_dataset(ds.with_options(options))


def _args(batch):
  return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)


class Steps:
  """A per-replica step function, compiled once and run under a `tf.distribute` strategy.

  `one(batch)` runs one step on a distributed batch; `run(iterator, n)` runs n steps of a
  distributed iterator in one graph; `run_chunks` drives `run` over an epoch.

  Args:
    strategy: the strategy the step's variables were built under.
    replica_step: `replica_step(*batch) -> {name: scalar}` on one replica's slice of a batch
      (a tuple batch is unpacked into arguments); sums are per replica, `one` and `run` add
      them over the replicas.
    sums: the float32 outputs that `run` totals over its steps (the others are left alone:
      a Keras `train_step` returns its trackers' running means).
    results: called in the compiled `run` after its steps; its dict joins the totals (the
      model's trackers, which carry their own means over the epoch).
    mean_of: `run` divides the totals by this many steps, a constant of the compiled graph
      (the encoder runs its whole epoch in one call); None returns the totals.
  """

  def __init__(self, strategy: tf.distribute.Strategy, replica_step: Callable[..., Dict],
               sums: Sequence[str] = (), results: Optional[Callable[[], Dict]] = None,
               mean_of: Optional[int] = None):
    self.strategy, self.replica_step = strategy, replica_step
    self.sums, self.results, self.mean_of = tuple(sums), results, mean_of
    self.one = tf.function(self.distributed)
    self.run = tf.function(self._run)

  def _sum(self, value):
    return self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)

  def distributed(self, batch) -> Dict[str, tf.Tensor]:
    """One step on a distributed batch; every output summed over the replicas."""
    out = self.strategy.run(self.replica_step, args=_args(batch))
    return {k: self._sum(v) for k, v in out.items()}

  def _run(self, iterator, n):
    totals = {k: tf.zeros([], tf.float32) for k in self.sums}
    for _ in tf.range(n):
      out = self.strategy.run(self.replica_step, args=_args(next(iterator)))
      totals = {k: totals[k] + self._sum(out[k]) for k in self.sums}
    if self.mean_of is not None:
      # A constant divisor, not `n`: the graph optimizer turns it into a multiplication by
      # its reciprocal, and the encoder's recorded means are that product, to the last bit.
      totals = {k: v / float(self.mean_of) for k, v in totals.items()}
    return {**totals, **(self.results() if self.results is not None else {})}

  def run_chunks(self, ds: tf.data.Dataset, steps: int, chunk: Optional[int] = None,
                 after: Optional[Callable[[int, Dict[str, float]], None]] = None
                 ) -> Dict[str, float]:
    """Runs `steps` steps over `ds` (distributed) in compiled chunks of `chunk` steps.

    Args:
      ds: the epoch's batches (at least `steps` of them).
      steps: steps to run.
      chunk: steps per compiled call (None: all in one).
      after: `after(k, results)` after each chunk of k steps (a health check, the progress
        bar); it may raise to stop the run.
    Returns:
      The results of the last chunk, as Python floats.
    """
    iterator = iter(distribute_dataset(self.strategy, ds))
    done, results = 0, {}
    while done < steps:
      k = min(chunk or steps, steps - done)
      results = {name: float(v) for name, v in self.run(iterator, tf.constant(k)).items()}
      done += k
      if after is not None:
        after(k, results)
    return results
