"""Latent-Mixup: everything between a trained generator and the classifier's batches.

  inversion.py    encoder start + latent optimisation (Lipton & Tripathi 2017), and the one
                  decision of where the inversion starts (`inversion_start`)
  encoder.py      the post-hoc inversion encoder, for a generator without its own (stage)
  bank.py         the latent bank: every training image inverted, chunked, resumable (stage)
  bank_store.py   the bank's checksummed on-disk format
  method.py       `LatentMixup`: pair sampling, latent mixing, the method of the one loop
  pipeline.py     `build_latent_mixup`: the stages above (and the generator's) -> the method
  on_manifold.py  on-manifold adversarial training (Stutz et al. 2019) on the same stages

The training registry builds the method through `build_latent_mixup`, like every other
method through its factory.
"""

from latmix_tf.latent.method import LatentMixup, LatentMixupConfig, PairSampler


def __getattr__(name):
  # `build_latent_mixup` pulls in the generative stack, which itself uses the training
  # package that registers this method: resolved on first use, not at import (PEP 562).
  if name == "build_latent_mixup":
    from latmix_tf.latent.pipeline import build_latent_mixup  # pylint: disable=import-outside-toplevel
    return build_latent_mixup
  if name == "build_on_manifold_at":
    from latmix_tf.latent.on_manifold import build_on_manifold_at  # pylint: disable=C0415
    return build_on_manifold_at
  raise AttributeError(f"module 'latmix_tf.latent' has no attribute {name!r}")
