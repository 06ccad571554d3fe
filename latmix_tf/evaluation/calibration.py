"""Calibration metrics: ECE, NLL, Brier score, reliability diagram data, temperature scaling.

Mixup-style training is known to change calibration (Thulasidasan et al. 2019), so every
evaluation reports how well the predicted confidences match the accuracy, on clean and on
corrupted test images (calibration under shift, Ovadia et al. 2019), before and after
temperature scaling.
  * ECE (Guo et al. 2017): 15 equal-width bins (lo, hi] of the top-1 probability (max-prob)
    over [0, 1] (a confidence of exactly 0 goes to the first bin);
    ECE = sum_b (n_b / N) |accuracy_b - confidence_b|.
  * NLL: mean -log p(label | x), from logits with a log-softmax (stable for confident models).
  * Brier score (Brier 1950), multi-class form: mean over images of sum_k (p_k - 1[k = y])^2,
    in [0, 2]; a proper scoring rule, unlike ECE it cannot be gamed by a constant predictor.
  * Temperature scaling (Guo et al. 2017): logits / T with the one scalar T minimising the
    NLL on the *validation* split. NLL(beta = 1/T) is convex, its derivative
    mean(E_p[z] - z_y) increases in beta, so T is found by bisection on that derivative
    (no optimiser, exact to 1e-6 relative). T is kept in [0.01, 100]: on a validation set the
    model classifies perfectly the NLL keeps falling as T -> 0.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

T_MIN, T_MAX = 0.01, 100.0


def softmax(logits: np.ndarray) -> np.ndarray:
  logits = np.asarray(logits, np.float64)
  e = np.exp(logits - logits.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def _check(probabilities: np.ndarray, labels: np.ndarray) -> None:
  if probabilities.ndim != 2 or len(probabilities) != len(labels) or len(labels) == 0:
    raise ValueError(f"expected probabilities [N, C] and labels [N] with N > 0, got "
                     f"{probabilities.shape} and {labels.shape}.")


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray,
                     num_bins: int = 15) -> Dict[str, np.ndarray]:
  """Per-bin count, mean confidence and accuracy of the top-1 prediction (the ECE's bins).

  Returns:
    {"edges": [num_bins + 1], "count", "confidence", "accuracy": [num_bins]} (empty bins
    have nan confidence and accuracy).
  """
  probabilities = np.asarray(probabilities, np.float64)
  labels = np.asarray(labels)
  _check(probabilities, labels)
  if num_bins < 1:
    raise ValueError(f"num_bins must be >= 1, got {num_bins}.")
  confidence = probabilities.max(axis=1)
  correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
  bins = np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
  count = np.bincount(bins, minlength=num_bins).astype(np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    conf = np.bincount(bins, weights=confidence, minlength=num_bins) / count
    acc = np.bincount(bins, weights=correct, minlength=num_bins) / count
  return {"edges": np.linspace(0, 1, num_bins + 1), "count": count, "confidence": conf,
          "accuracy": acc}


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
  b = reliability_bins(probabilities, labels, num_bins)
  gaps = np.nan_to_num(np.abs(b["accuracy"] - b["confidence"])) * b["count"]
  return float(gaps.sum() / len(labels))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray) -> float:
  """Mean -log p(label | x) from logits (log-softmax in float64)."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  return float(-np.mean(log_probs[np.arange(len(labels)), np.asarray(labels)]))


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
  """Multi-class Brier score: mean_i sum_k (p_ik - 1[k = y_i])^2, in [0, 2]."""
  probabilities = np.asarray(probabilities, np.float64)
  labels = np.asarray(labels)
  _check(probabilities, labels)
  onehot = np.eye(probabilities.shape[1])[labels]
  return float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, iterations: int = 100) -> float:
  """The temperature T minimising the NLL of softmax(logits / T) (validation logits).

  Bisection on log(beta), beta = 1 / T, for the zero of the NLL's derivative
  d/dbeta = mean_i (sum_k p_ik z_ik - z_{i, y_i}), which increases with beta.
  """
  z = np.asarray(logits, np.float64)
  y = np.asarray(labels)
  _check(z, y)
  z_true = z[np.arange(len(y)), y]

  def slope(beta):
    return float(np.mean(np.sum(softmax(beta * z) * z, axis=1) - z_true))

  lo, hi = np.log(1 / T_MAX), np.log(1 / T_MIN)
  if slope(np.exp(hi)) <= 0:
    return T_MIN
  if slope(np.exp(lo)) >= 0:
    return T_MAX
  for _ in range(iterations):
    mid = 0.5 * (lo + hi)
    if slope(np.exp(mid)) > 0:
      hi = mid
    else:
      lo = mid
  return float(1.0 / np.exp(0.5 * (lo + hi)))


def calibration_metrics(logits: np.ndarray, labels: np.ndarray, num_bins: int = 15,
                        temperature: Optional[float] = None,
                        prefix: str = "calibration/") -> Dict[str, float]:
  """Flat calibration metrics of logits: ece, nll, brier (+ *_ts after temperature scaling).

  Args:
    logits: [N, C] logits.
    labels: [N] integer labels.
    num_bins: ECE bins.
    temperature: a fitted T; when given, the same three metrics of logits / T are added
      with a "_ts" suffix.
    prefix: key prefix ("calibration/" or "calibration/corrupted_").
  """
  logits = np.asarray(logits, np.float64)
  out = {}
  for suffix, t in (("", 1.0), ("_ts", temperature)):
    if t is None:
      continue
    probs = softmax(logits / t)
    out[f"{prefix}ece{suffix}"] = expected_calibration_error(probs, labels, num_bins)
    out[f"{prefix}nll{suffix}"] = negative_log_likelihood(logits / t, labels)
    out[f"{prefix}brier{suffix}"] = brier_score(probs, labels)
  return out
