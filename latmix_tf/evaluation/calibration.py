"""Calibration metrics: expected calibration error and negative log-likelihood.

Mixup-style training is known to change calibration (Thulasidasan et al. 2019), so every
evaluation reports how well the predicted confidences match the accuracy. ECE follows Guo et
al. 2017: equal-width confidence bins (lo, hi] over [0, 1] (a confidence of exactly 0 goes to
the first bin), ECE = sum_b (n_b / N) |accuracy_b - confidence_b| with the top-1 confidence.
NLL is computed from logits with a log-softmax (stable for confident models).
"""

from __future__ import annotations

from typing import Dict

import numpy as np


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray,
                               num_bins: int = 15) -> float:
  """Top-1 ECE with `num_bins` equal-width bins.

  Args:
    probabilities: [N, C] predicted class probabilities.
    labels: [N] integer labels.
    num_bins: number of confidence bins.
  Returns:
    ECE in [0, 1].
  """
  probabilities = np.asarray(probabilities, np.float64)
  labels = np.asarray(labels)
  if probabilities.ndim != 2 or len(probabilities) != len(labels) or len(labels) == 0:
    raise ValueError(f"expected probabilities [N, C] and labels [N] with N > 0, got "
                     f"{probabilities.shape} and {labels.shape}.")
  if num_bins < 1:
    raise ValueError(f"num_bins must be >= 1, got {num_bins}.")
  confidence = probabilities.max(axis=1)
  correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
  bins = np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
  conf_sum = np.bincount(bins, weights=confidence, minlength=num_bins)
  acc_sum = np.bincount(bins, weights=correct, minlength=num_bins)
  return float(np.sum(np.abs(acc_sum - conf_sum)) / len(labels))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray) -> float:
  """Mean -log p(label | x) from logits (log-softmax in float64)."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  return float(-np.mean(log_probs[np.arange(len(labels)), np.asarray(labels)]))


def calibration_metrics(logits: np.ndarray, labels: np.ndarray,
                        num_bins: int = 15) -> Dict[str, float]:
  """Flat `calibration/...` metrics from clean-test logits."""
  logits = np.asarray(logits, np.float64)
  probs = np.exp(logits - logits.max(axis=1, keepdims=True))
  probs /= probs.sum(axis=1, keepdims=True)
  return {"calibration/ece": expected_calibration_error(probs, labels, num_bins),
          "calibration/nll": negative_log_likelihood(logits, labels)}
