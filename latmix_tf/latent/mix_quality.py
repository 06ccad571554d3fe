"""How far the decoded latent mixes are from real images, as an independent classifier sees them.

Why: Latent-Mixup trains on x̃ = G(λ·z_i + (1−λ)·z_j) labelled ỹ = λ·y_i + (1−λ)·y_j. Whether
that can help depends on whether x̃ looks like what ỹ says. The bank's PSNR measures only the
endpoints (how well G(z_i) reconstructs x_i); this measures the mixes themselves, in the eyes
of the dataset's named reference network (the `erm_<dataset>` classifier the Fréchet distance
also uses, trained without any mixes), on `n` mixes drawn exactly as training draws them
(same pair sampler, same α):

  mix/label_confidence    mean Σ_c ỹ_c · p(c | x̃): the reference's probability of the mixed
                          label (for a one-hot label: its confidence in the true class);
  mix/source_mass         mean p(y_i | x̃) + p(y_j | x̃) (counted once when y_i = y_j): how
                          much of its belief stays on the two source classes;
  mix/dominant_agreement  over pairs of different classes with λ ≠ 1/2: the fraction whose
                          top class is the class with the larger weight;
  mix/soft_label_ce       mean −Σ_c ỹ_c log p(c | x̃): the loss the reference would pay on
                          the mixes, i.e. how far training on them is from what it learnt;
  mix/real_confidence     mean p(y | x) on `n` real training images (the same indices i):
                          the ceiling the two figures above are read against;
  mix/recon_confidence    mean p(y | G(z)) on their bank codes (λ = 1, no mixing): what the
                          generator alone loses before any mixing.
"""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np


def mix_quality(mixes: Dict[str, np.ndarray], decode_numpy: Callable[[np.ndarray], np.ndarray],
                z_bank: np.ndarray, x_train: np.ndarray, y_train: np.ndarray,
                predict: Callable[[np.ndarray], np.ndarray]) -> Dict[str, float]:
  """The `mix/...` figures of the module docstring.

  Args:
    mixes: `latent.mixes.mixed_examples` output: "images" [n, H, W, C] in [0, 1], "labels"
      [n, K] (soft), "i", "j" (training indices), "lam" [n].
    decode_numpy: the generator's `codes -> images in [0, 1]` (numpy, batched).
    z_bank: the bank's codes, training-split order; x_train / y_train: that split.
    predict: the reference classifier, images (uint8 or float in [0, 1]) -> class
      probabilities (`export.predict_probabilities` on its loaded SavedModel).
  Returns:
    Flat metrics (floats), plus "mix/samples".
  """
  i, j = np.asarray(mixes["i"]), np.asarray(mixes["j"])
  lam, soft = np.asarray(mixes["lam"], np.float64), np.asarray(mixes["labels"], np.float64)
  y_i, y_j = np.asarray(y_train)[i], np.asarray(y_train)[j]
  rows = np.arange(len(i))
  probs = lambda images: np.asarray(predict(images), np.float64)  # noqa: E731
  p = probs(np.asarray(mixes["images"], np.float32))
  same = y_i == y_j
  source_mass = p[rows, y_i] + np.where(same, 0.0, p[rows, y_j])
  major = np.where(lam >= 0.5, y_i, y_j)
  decided = (~same) & (np.abs(lam - 0.5) > 1e-6)
  p_real = probs(np.asarray(x_train)[i])
  p_recon = probs(decode_numpy(np.asarray(z_bank)[i]))
  return {
      "mix/samples": int(len(i)),
      "mix/label_confidence": float(np.mean(np.sum(soft * p, axis=1))),
      "mix/source_mass": float(np.mean(source_mass)),
      "mix/dominant_agreement": (float(np.mean(np.argmax(p[decided], 1) == major[decided]))
                                 if decided.any() else float("nan")),
      "mix/soft_label_ce": float(np.mean(-np.sum(soft * np.log(p + 1e-12), axis=1))),
      "mix/real_confidence": float(np.mean(p_real[rows, y_i])),
      "mix/recon_confidence": float(np.mean(p_recon[rows, y_i])),
  }
